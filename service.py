"""The BentoML service: models run in-process behind our adaptive batcher.

The Open Inference Protocol API is a raw ASGI app mounted at the root (see gateway/http.py);
`/predict` is a regular BentoML endpoint, so it shows in the Swagger UI. BentoML keeps what it
is good at: the model store, the server and its workers, `bentoml build`.
"""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any

import bentoml

from gateway.errors import ServingError
from gateway.http import InferenceApp
from gateway.runtime import Runtime
from gateway.simple import outputs_to_json, rows_to_inputs
from observability.context import start_request
from observability.logs import LogSettings, setup_logging

oip_app = InferenceApp()


@bentoml.asgi_app(oip_app, path="/")
@bentoml.service(
    name="rtserve",
    workers=int(os.environ.get("RTSERVE_WORKERS", "1")),
    # Each pending request keeps a timer for this long; short keeps the heap (and GC pauses) small.
    traffic={"timeout": 10},
    # Our own Prometheus metrics replace BentoML's per-request middleware metrics.
    metrics={"enabled": False},
    logging={"access": {"enabled": False}},
    # Our own spans (observability/tracing.py) cover these paths; BentoML's middleware would open a span
    # per request and per send, which costs more than the model.
    tracing={"excluded_urls": ["/v2", "/admin", "/metrics", "/predict"], "sample_rate": 0.0},
)
class InferenceService:
    def __init__(self) -> None:
        setup_logging(LogSettings())
        # Fewer, cheaper collections: the long-lived heap is frozen once the models are loaded.
        gc.set_threshold(50_000, 50, 100)
        self.runtime = Runtime.from_environment()
        oip_app.bind(self.runtime)
        self.runtime.start()

    @bentoml.on_startup
    async def start_routing(self) -> None:
        """Shared routes and the canary controller start once the models are loaded, in the worker's loop."""
        self._routing = asyncio.get_running_loop().create_task(self.runtime.start_routing())

    @bentoml.on_shutdown
    async def stop_routing(self) -> None:
        await self.runtime.stop_routing()

    def __is_ready__(self) -> bool:
        return self.runtime.ready

    @bentoml.api(route="/predict")
    async def predict(self, model: str, inputs: list[Any], version: str | None = None, ctx: bentoml.Context = None) -> dict:
        """Predict with a model by name: `inputs` is a list of rows (64 pixel values 0-16, or token ids)."""
        headers = ctx.request.headers
        labels = start_request()
        try:
            admitted = await self.runtime.admission.admit(
                _header(headers, "authorization"), _header(headers, "x-user-id"), "predict"
            )
            entry = self.runtime.resolve(model, version, admitted.user)
            tensors = rows_to_inputs(entry.runner.input_spec, inputs)
            outputs, hit = await self.runtime.infer(entry, tensors, use_cache="no-cache" not in headers.get("cache-control", ""))
        except ServingError as exc:
            ctx.response.status_code = exc.status.value
            for key, value in exc.headers.items():
                ctx.response.headers[key] = value
            return exc.body()
        finally:
            labels.release()
        for key, value in admitted.headers:
            ctx.response.headers[key.decode()] = value.decode()
        ctx.response.headers["X-Model-Version"] = entry.version
        ctx.response.headers["X-Cache"] = "hit" if hit else "miss"
        return {"model": model, "version": entry.version, "outputs": outputs_to_json(outputs)}


def _header(headers: Any, name: str) -> bytes | None:
    value = headers.get(name)
    return value.encode("latin-1") if value is not None else None
