"""A steady load for fault tests: client threads sending inferences at a modest rate for the
duration of a fault, recording every answer, so a test can count what failed and how."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Self

import httpx
import numpy as np

MODEL = "digits-sklearn"


def digits_rows(n: int = 200) -> np.ndarray:
    """Real handwritten digits (scikit-learn's bundled set): fixed inputs with known answers."""
    from sklearn.datasets import load_digits

    return load_digits().data[:n].astype(np.float32)


def expected_labels(rows: np.ndarray, versions: tuple[str, ...] = ("v1", "v2")) -> dict[str, np.ndarray]:
    """What each version answers for `rows`, computed in this process from the same store."""
    from runners.loader import load_runner

    return {v: load_runner(f"{MODEL}:{v}", "cpu").run(rows)["label"] for v in versions}


def infer_body(row: np.ndarray) -> dict:
    return {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row.tolist()}]}


@dataclass(frozen=True)
class Answer:
    started: float  # time.monotonic() when sent
    seconds: float
    status: int  # 0: no HTTP answer (connection refused, reset, timed out)
    code: str  # the error body's code, or the exception's class name
    retry_after: str | None
    correct: bool | None  # for 200: whether the label matches the answering version's
    worker: str = ""  # the generated request id's per-process prefix: which worker process answered


@dataclass
class Summary:
    sent: int
    ok: int
    failed: int  # an HTTP error answer
    lost: int  # no HTTP answer
    wrong: int  # 200 with a label the version would not give
    by_status: dict[str, int]

    def row(self, fault: str) -> str:
        """One line of the README's fault table."""
        return f"| {fault} | {self.sent} | {self.ok} | {self.failed} | {self.lost} | {self.wrong} |"


@dataclass
class SteadyLoad:
    """`clients` threads, each sending `rate / clients` requests/s (closed loop, paced), until stopped.

    With `fresh_connections` every request opens a new connection, so requests spread over all
    worker processes (the kernel hands each connection to whichever worker accepts first)."""

    url: str
    headers: dict[str, str]
    rows: np.ndarray
    expected: dict[str, np.ndarray]
    rate: float = 40.0
    clients: int = 2
    fresh_connections: bool = False
    timeout_s: float = 10.0
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Self:
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.clients)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(self.timeout_s + 5)

    def wait_for_answers(self, n: int, timeout: float = 30.0) -> None:
        """Block until `n` more answers have come in (the load is really flowing)."""
        target = len(self.answers) + n
        deadline = time.monotonic() + timeout
        while len(self.answers) < target:
            assert time.monotonic() < deadline, f"steady load: fewer than {n} answers in {timeout} s"
            time.sleep(0.05)

    def _run(self, index: int) -> None:
        gap = self.clients / self.rate
        limits = httpx.Limits(max_keepalive_connections=0) if self.fresh_connections else httpx.Limits()
        i = index
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=self.timeout_s, limits=limits) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                answer = self._send(client, i % len(self.rows))
                with self._lock:
                    self.answers.append(answer)
                i += self.clients
                next_at = max(next_at + gap, time.monotonic() - gap)  # no catch-up burst after a stall
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _send(self, client: httpx.Client, k: int) -> Answer:
        started = time.monotonic()
        try:
            r = client.post(f"/v2/models/{MODEL}/infer", json=infer_body(self.rows[k]))
        except httpx.HTTPError as exc:
            return Answer(started, time.monotonic() - started, 0, type(exc).__name__, None, None)
        seconds = time.monotonic() - started
        if r.status_code != 200:
            try:
                code = r.json().get("code", "")
            except ValueError:
                code = "not-json"
            return Answer(started, seconds, r.status_code, code, r.headers.get("retry-after"), None, _worker(r))
        doc = r.json()
        label = next(o["data"][0] for o in doc["outputs"] if o["name"] == "label")
        expected = self.expected.get(doc["model_version"])
        return Answer(started, seconds, 200, "", None, expected is not None and label == int(expected[k]), _worker(r))

    def summary(self, since: float = 0.0) -> Summary:
        got = [a for a in self.answers if a.started >= since]
        statuses = Counter(f"{a.status} {a.code}".strip() if a.status != 200 else "200" for a in got)
        return Summary(
            sent=len(got),
            ok=sum(1 for a in got if a.status == 200 and a.correct),
            failed=sum(1 for a in got if a.status not in (0, 200)),
            lost=sum(1 for a in got if a.status == 0),
            wrong=sum(1 for a in got if a.status == 200 and not a.correct),
            by_status=dict(statuses),
        )


def _worker(r: httpx.Response) -> str:
    """Generated request ids are a random per-process prefix and a counter (frontends/request_ids.py)."""
    return r.headers.get("x-request-id", "")[:8]


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of the metrics at `url` (a server's `metrics_url`): (name, labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url, timeout=10).text
    return {(s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in scrape(url).items() if n == name and want <= ls)


def wait_for_workers_ready(url: str, workers: int, timeout: float = 180.0) -> set[str]:
    """Readiness is per worker process: poll it over fresh connections until `workers` distinct
    processes (request-id prefixes) have said ready."""
    ready: set[str] = set()

    def more() -> bool:
        try:
            r = httpx.get(url + "/v2/health/ready", timeout=5)
        except httpx.HTTPError:
            return False
        if r.status_code == 200:
            ready.add(_worker(r))
        return len(ready) >= workers

    wait_for(more, timeout, f"{workers} ready worker processes", every=0.05)
    return ready


def wait_for(predicate, timeout: float, what: str, every: float = 0.1):
    """Poll until `predicate()` is truthy; its value, or an assertion error naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(every)
