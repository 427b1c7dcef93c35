"""A worker process killed under a steady load: BentoML starts a new one; requests that reach it
before its models are warm are refused with 503 and Retry-After, never failed or answered wrong;
only the requests in flight on the killed worker are lost."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from tests.faults.load import SteadyLoad, wait_for


def worker_pids(server) -> set[int]:
    """The API worker processes of a `bentoml serve`: its children running BentoML's worker module."""
    pids = set()
    for p in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "_bentoml_impl.worker.service" in p.cmdline():
                pids.add(p.pid)
        except psutil.Error:  # gone, or a zombie not reaped yet
            pass
    return pids


def test_killed_worker_is_replaced_and_only_its_in_flight_requests_are_lost(fault_gateway, digits):
    rows, expected = digits
    server = fault_gateway.server
    before = wait_for(lambda: (p := worker_pids(server)) and len(p) == 2 and p, 10, "two workers")
    clients = 4
    with SteadyLoad(
        fault_gateway.url, fault_gateway.headers(ttl=3600), rows, expected, rate=200, clients=clients, fresh_connections=True
    ) as load:
        # Fresh connections land on both workers; their request-id prefixes tell them apart.
        old = wait_for(
            lambda: (w := {a.worker for a in load.answers if a.worker}) and len(w) == 2 and w, 30, "both workers answering"
        )
        victim = min(before)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: (p := worker_pids(server)) and len(p) == 2 and victim not in p, 60, "a new worker process")
        respawned = time.monotonic() - killed
        newcomer = wait_for(
            lambda: {a.worker for a in load.answers if a.worker and a.started > killed} - old, 120, "the new worker answering"
        )
        first = min(a.started for a in load.answers if a.worker in newcomer) - killed
        load.wait_for_answers(200)  # a second or more with the new worker in the mix
    s = load.summary(since=killed)
    mine = [a for a in load.answers if a.worker in newcomer]
    not_ok = [a for a in load.answers if a.started >= killed and a.status != 200]
    print(
        f"\nworker killed: process replaced after {respawned:.1f} s, first answer from it after {first:.1f} s; {s}; "
        f"answered by the new worker: {len(mine)}, of them not 200: {sum(a.status != 200 for a in mine)}"
    )
    print(s.row("one of two workers SIGKILLed"))
    for a in not_ok:
        print(f"  +{a.started - killed:.3f} s: {a.status} {a.code} retry-after={a.retry_after} worker={a.worker}")
    assert s.wrong == 0
    assert s.lost <= clients, "more requests lost than could have been in flight on the killed worker"
    assert all(a.status == 503 and a.retry_after for a in not_ok), "only 503 + Retry-After while the new worker warms up"


def test_versions_not_loaded_yet_answer_503_not_404(model_store):
    """What a new worker answers between accepting connections and its loader reaching a version."""
    from runners.registry import ModelRegistry
    from runners.settings import ServingConfig

    registry = ModelRegistry(ServingConfig.model_validate({"models": {"digits-sklearn": {"versions": ["v1", "v2"]}}}))
    with pytest.raises(Exception) as refused:
        registry.serving("digits-sklearn", "v2")
    assert (refused.value.status, refused.value.code) == (503, "model_not_ready")
    assert refused.value.headers["Retry-After"]
