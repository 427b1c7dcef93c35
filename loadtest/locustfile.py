"""Locust scenarios for a deployed rtserve: the benchmark's request mix, with tokens and A/B users.

    locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 60s --host http://localhost:3000

Each simulated user has its own subject in its token, so a running experiment assigns it one
variant for the whole run (sticky A/B). Tokens are signed with the server's development key
(`.dev/jwt-secret`, what `make serve` uses) or RTSERVE_AUTH_HS256_SECRET_FILE; RTSERVE_TOKEN
overrides both (then every user shares that token's subject).
"""

from __future__ import annotations

import os
import random
import uuid

from locust import FastHttpUser, between, events, task

PIXELS = [[(i * 7 + j) % 17 for j in range(64)] for i in range(32)]


def _token(subject: str) -> str:
    if os.environ.get("RTSERVE_TOKEN"):
        return os.environ["RTSERVE_TOKEN"]
    from gateway.auth import AuthSettings
    from gateway.tokens import DEV_SECRET_FILE, mint

    settings = AuthSettings()
    if settings.hs256_secret is None and settings.hs256_secret_file is None:
        settings = settings.model_copy(update={"hs256_secret_file": DEV_SECRET_FILE})
    return mint(settings, subject=subject, scopes="predict", tenant=os.environ.get("RTSERVE_TENANT", "loadtest"), ttl_s=86400)


def _pixels(shape: list[int], rows: list[list[float]]) -> dict:
    return {"inputs": [{"name": "pixels", "shape": shape, "datatype": "FP32", "data": [v for r in rows for v in r]}]}


def _random_row() -> list[float]:
    return [float(random.randint(0, 16)) for _ in range(64)]


class InferenceUser(FastHttpUser):
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.subject = f"user-{uuid.uuid4().hex[:12]}"
        self.headers = {"Authorization": f"Bearer {_token(self.subject)}", "Content-Type": "application/json"}

    def _infer(self, model: str, body: dict, name: str) -> None:
        with self.client.post(f"/v2/models/{model}/infer", json=body, headers=self.headers, name=name, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
            elif r.headers.get("X-Model-Version") is None:
                r.failure("no X-Model-Version header")

    @task(5)
    def sklearn_unique(self) -> None:
        self._infer("digits-sklearn", _pixels([1, 64], [_random_row()]), "digits-sklearn 1 row (miss)")

    @task(2)
    def sklearn_repeated(self) -> None:
        self._infer("digits-sklearn", _pixels([1, 64], [random.choice(PIXELS)]), "digits-sklearn 1 row (hit)")

    @task(2)
    def torch_unique(self) -> None:
        self._infer("digits-torch", _pixels([1, 1, 8, 8], [_random_row()]), "digits-torch 1 row")

    @task(2)
    def seq_random_length(self) -> None:
        length = random.randint(1, 64)
        tokens = [random.randint(1, 20) for _ in range(length)]
        body = {"inputs": [{"name": "tokens", "shape": [1, length], "datatype": "INT64", "data": tokens}]}
        self._infer("seq-torch", body, "seq-torch 1-64 tokens")

    @task(1)
    def sklearn_64_rows(self) -> None:
        self._infer("digits-sklearn", _pixels([64, 64], [_random_row() for _ in range(64)]), "digits-sklearn 64 rows")


@events.quitting.add_listener
def _fail_on_errors(environment, **_kwargs) -> None:
    """Headless runs exit non-zero when any request failed, so CI can use them."""
    if environment.stats.total.fail_ratio > 0:
        environment.process_exit_code = 1
