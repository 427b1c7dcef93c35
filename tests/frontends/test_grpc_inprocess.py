"""The gRPC front end in this process, over real models: what needs a model held still to be seen.

A stalled model (the one injected fault) keeps requests queued, so the deadline, a client that
leaves mid-stream, the stream's bound on items in flight and a full queue can be checked exactly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import grpc
import numpy as np
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from frontends.grpc.server import GrpcFrontend
from frontends.grpc.settings import GrpcSettings
from loadtest.servers import free_port
from runners.registry import LoadedVersion
from tests.inprocess import serve_in_process

pytestmark = pytest.mark.asyncio(loop_scope="module")

BOUND = 4  # items in flight per stream
MODELS = {
    # Batches on the version's thread (never inline), so a stalled model stalls only that thread;
    # a budget no queue here can break, and a short queue to fill.
    "digits-sklearn": {"versions": ["v1"], "batching": {"inline_max_ms": 0, "max_latency_ms": 60_000, "max_queue_rows": 8}},
}
ROW = (np.arange(64) % 17).astype(np.float32).reshape(1, 64)


class Served:
    def __init__(self, runtime, stub: pb_grpc.GRPCInferenceServiceStub, channel: grpc.aio.Channel, metadata) -> None:
        self.runtime = runtime
        self.stub = stub
        self.channel = channel
        self.metadata = metadata

    @property
    def entry(self) -> LoadedVersion:
        return self.runtime.registry.get("digits-sklearn", "v1")

    @contextmanager
    def stalled(self) -> Iterator[threading.Event]:
        """The model blocks in every batch until the event is set (at the latest when the block ends)."""
        runner = self.entry.runner
        release = threading.Event()

        def run(batch, _run=runner.run):
            release.wait(30)
            return _run(batch)

        runner.run = run
        try:
            yield release
        finally:
            release.set()
            del runner.run


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(model_store, tmp_path_factory) -> AsyncIterator[Served]:
    async with serve_in_process(tmp_path_factory.mktemp("grpc"), MODELS) as s:
        frontend = GrpcFrontend(s.runtime.parts, GrpcSettings(host="127.0.0.1", port=free_port(), stream_max_in_flight=BOUND))
        port = await frontend.start(shared=False)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            yield Served(
                s.runtime, pb_grpc.GRPCInferenceServiceStub(channel), channel,
                # identical requests must each reach the batcher, which the cache (on, as in production) would answer
                (("authorization", f"Bearer {s.token()}"), ("cache-control", "no-cache")),
            )
        finally:
            await channel.close()
            await frontend.stop()


def infer_request(request_id: str = "") -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name="digits-sklearn",
        id=request_id,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=[1, 64])],
        raw_input_contents=[ROW.tobytes()],
    )


async def until(check, timeout: float = 10.0) -> None:
    """Poll the loop until `check()` holds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


async def test_the_grpc_deadline_is_the_requests_deadline(served):
    batcher = served.entry.batcher
    before = (batcher.stats.batches, batcher.stats.rows)
    with served.stalled() as release:
        first = asyncio.ensure_future(served.stub.ModelInfer(infer_request("first"), metadata=served.metadata))
        await until(lambda: batcher.running == 1)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await served.stub.ModelInfer(infer_request("late"), metadata=served.metadata, timeout=0.3)
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        await until(lambda: served.entry.active == 1)  # the late request let go of the version
        release.set()
        assert (await first).id == "first"
    await batcher.drain()
    assert (batcher.stats.batches, batcher.stats.rows) == (before[0] + 1, before[1] + 1), "the expired request never ran"


async def test_a_full_queue_is_unavailable_with_retry_after(served):
    with served.stalled():
        running = asyncio.ensure_future(served.stub.ModelInfer(infer_request(), metadata=served.metadata))
        await until(lambda: served.entry.batcher.running == 1)
        queued = [asyncio.ensure_future(served.stub.ModelInfer(infer_request(), metadata=served.metadata)) for _ in range(8)]
        await until(lambda: served.entry.batcher.queued_rows == 8)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await served.stub.ModelInfer(infer_request(), metadata=served.metadata)
    await asyncio.gather(running, *queued)
    error = caught.value
    assert error.code() is grpc.StatusCode.UNAVAILABLE and "queue is full" in error.details()
    trailing = dict(error.trailing_metadata())
    assert trailing["x-error-code"] == "queue_full" and trailing["retry-after"] == "1"


async def test_a_stream_holds_at_most_its_bound_of_items_in_flight(served):
    items = 3 * BOUND
    most = 0

    async def requests():
        for i in range(items):
            yield infer_request(f"item-{i}")

    with served.stalled() as release:
        call = served.stub.ModelStreamInfer(requests(), metadata=served.metadata)
        answers = asyncio.ensure_future(_collect(call, items))

        async def watch() -> None:
            nonlocal most
            while not answers.done():
                most = max(most, served.entry.active)
                if most == BOUND:
                    release.set()
                await asyncio.sleep(0)

        await asyncio.gather(watch(), answers)
    responses = answers.result()
    assert most == BOUND, f"{most} items in flight at once"
    assert sorted(r.infer_response.id for r in responses) == sorted(f"item-{i}" for i in range(items))
    assert all(r.error_message == "" for r in responses)


async def test_a_client_that_leaves_mid_stream_frees_its_queued_items(served):
    batcher = served.entry.batcher
    before = batcher.stats.batches
    sent = asyncio.Event()

    async def requests():
        for i in range(BOUND):
            yield infer_request(f"item-{i}")
        sent.set()
        await asyncio.Event().wait()  # the stream stays open until the client cancels it

    with served.stalled() as release:
        call = served.stub.ModelStreamInfer(requests(), metadata=served.metadata)
        await until(lambda: served.entry.active == BOUND and batcher.queued_rows == BOUND - 1)
        call.cancel()
        await until(lambda: served.entry.active == 0)  # every item's task was cancelled and let go
        release.set()
    await batcher.drain()
    assert batcher.stats.batches == before + 1, "only the batch already running when the client left was run"
    assert sent.is_set()


async def test_health_follows_readiness(served):
    health = health_pb2_grpc.HealthStub(served.channel)

    async def status(service: str) -> int:
        return (await health.Check(health_pb2.HealthCheckRequest(service=service))).status

    for service in ("", "inference.GRPCInferenceService"):
        assert await status(service) == health_pb2.HealthCheckResponse.SERVING
    served.runtime.draining = True  # what SIGTERM does (app/drain.py): not ready while in-flight requests finish
    try:
        async with asyncio.timeout(10):
            while await status("inference.GRPCInferenceService") != health_pb2.HealthCheckResponse.NOT_SERVING:
                await asyncio.sleep(0.05)
        assert not (await served.stub.ServerReady(pb.ServerReadyRequest())).ready
    finally:
        served.runtime.draining = False


async def _collect(call, n: int) -> list[pb.ModelStreamInferResponse]:
    responses = []
    async for response in call:
        responses.append(response)
        if len(responses) == n:
            break
    call.cancel()
    return responses
