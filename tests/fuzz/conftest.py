"""Fixtures for fuzzing the HTTP API with schemathesis against real servers with auth on.

The Open Inference Protocol, /predict and the open endpoints are fuzzed against the session's
`gateway` server (two workers, Redis, auth, rate limits, cache). The admin API changes routes,
so it gets a server of its own with its own Redis prefix, whose routing state is put back to
serving.yaml's whenever a fuzzed request changed it.

RTSERVE_FUZZ_EXAMPLES sets the generated inputs per operation (each is sent with a full token,
without one and with one lacking the scope); RTSERVE_FUZZ_REPORT names a file for the tally.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis

from fuzz import seeds
from tests.fuzz.contract import error_contract, refusal_problem
from tests.fuzz.tally import TALLY
from tests.helpers import REDIS_URL, Gateway, running_gateway


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: object, value: object) -> bytes:
    """Stream bodies, which the document gives as text (one infer request per line); anything else as one JSON line."""
    return value.encode() if isinstance(value, str) else json.dumps(value).encode() + b"\n"

# Schema-valid inputs the server may still refuse: the document cannot say that `data` must fill
# `shape`, or which names a model's signature takes.
EXCLUDED_CHECKS = [schemathesis.checks.positive_data_acceptance]
STREAM_EXCLUDED_CHECKS = [*EXCLUDED_CHECKS, schemathesis.checks.negative_data_rejection]
"""A stream answers 200 once it has an item and fails a bad item inline, by contract; the error contract still
checks every refusal before the stream starts."""


def pytest_terminal_summary(terminalreporter) -> None:
    if not TALLY.inputs:
        return
    terminalreporter.write_sep("-", "fuzzing: inputs tried, requests sent, statuses")
    terminalreporter.write_line(TALLY.table())
    report = os.environ.get("RTSERVE_FUZZ_REPORT")
    if report:
        TALLY.write(Path(report))


class Fuzzer:
    """Sends each generated case three times (full token, no token, token without the scope) and
    checks every response: schemathesis' conformance checks, the error contract, and refusals."""

    def __init__(self, gateway: Gateway, wrong_scope: str) -> None:
        self.url = gateway.url
        self.session = requests.Session()
        self.session.hooks["response"].append(lambda r, *args, **kwargs: TALLY.response(r.status_code))
        self.credentials = {
            "full": gateway.headers(scopes="predict admin batch", sub="fuzzer", tenant="fuzz", ttl=7200),
            "none": {},
            "scope": gateway.headers(scopes=wrong_scope, sub="fuzzer", tenant="fuzz", ttl=7200),
        }

    def run(self, case: schemathesis.Case) -> None:
        TALLY.input(case.operation.label)
        try:
            for name, headers in self.credentials.items():
                response = case.call_and_validate(
                    base_url=self.url,
                    session=self.session, headers=headers, additional_checks=[error_contract],
                    excluded_checks=STREAM_EXCLUDED_CHECKS if case.operation.path.endswith("/infer/stream") else EXCLUDED_CHECKS,
                )
                sent = response.request.headers.get("Authorization")
                # Negative cases may drop or replace the token on purpose; judge refusals only on what we sent.
                if name != "full" and sent == headers.get("Authorization"):
                    problem = refusal_problem(case, response.status_code, response.content, name)
                    assert problem is None, f"{problem}\n{case.as_curl_command()}"
        except BaseException:
            TALLY.failure(case.operation.label)
            raise


@pytest.fixture(scope="session")
def served(model_store) -> list[seeds.ServedModel]:
    """The demo models in the session's store, with their versions and input signatures."""
    return seeds.served_models()


@pytest.fixture(scope="session")
def oip_fuzzer(gateway) -> Fuzzer:
    return Fuzzer(gateway, wrong_scope="admin")


class RoutingReset:
    """Puts the admin server's routes back to what they were at start, straight into its Redis state,
    and waits until the worker has applied them (versions loaded and ready again)."""

    def __init__(self, gateway: Gateway, routes_prefix: str) -> None:
        self.client = httpx.Client(base_url=gateway.url, headers=gateway.headers(scopes="admin", ttl=7200), timeout=30)
        self.routes_prefix = routes_prefix
        self.initial = self._state()

    def _state(self) -> dict[str, dict]:
        r = self.client.get("/admin/models")
        r.raise_for_status()
        return {
            name: {"loaded": sorted(m["loaded"]), "weights": m["weights"], "experiment": m["experiment"], "shadow": m["shadow"],
                   "canary": m["canary"], "ready": sorted(v for v, s in m["versions"].items() if s["state"] == "ready")}
            for name, m in r.json().items()
        }

    def ensure_initial(self) -> None:
        if self._state() == self.initial:
            return
        asyncio.run(self._write_initial())
        TALLY.resets += 1
        deadline = time.monotonic() + 60
        while (state := self._state()) != self.initial:
            if time.monotonic() > deadline:
                raise TimeoutError(f"routing state not back to the initial one: {state}")
            time.sleep(0.05)

    async def _write_initial(self) -> None:
        from redis.asyncio import Redis

        from routing.document import ModelRoutes
        from routing.stores import RedisStateStore

        client = Redis.from_url(REDIS_URL)
        try:
            store = RedisStateStore(client, self.routes_prefix)
            for name, s in self.initial.items():
                await store.put(name, ModelRoutes(loaded=s["loaded"], weights=s["weights"]))
        finally:
            await client.aclose()


@pytest.fixture(scope="session")
def admin_gateway(model_store, tmp_path_factory) -> Iterator[Gateway]:
    """A one-worker server of the admin fuzzer's own: its routes change under fuzzing, nobody else's."""
    with running_gateway(tmp_path_factory.mktemp("fuzz-admin"), workers=1, label="rtserve-fuzz") as gw:
        yield gw


@pytest.fixture(scope="session")
def admin_fuzzer(admin_gateway) -> Fuzzer:
    return Fuzzer(admin_gateway, wrong_scope="predict")


@pytest.fixture(scope="session")
def routing_reset(admin_gateway) -> RoutingReset:
    return RoutingReset(admin_gateway, f"{admin_gateway.prefix}routes:")
