"""What a stream, authenticated once at its start, may do afterwards: nothing past its token's expiry, nothing
after an idle spell (gRPC, as HTTP), and no free items: one that fails to decode still counts against the rate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
import orjson
import pytest
import pytest_asyncio
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from frontends.grpc.server import GrpcFrontend
from frontends.grpc.settings import GrpcSettings
from gateway.ratelimit import RateLimitSettings, TierLimit
from gateway.tokens import mint
from loadtest.servers import free_port
from tests.inprocess import InProcess, serve_in_process

pytestmark = pytest.mark.asyncio(loop_scope="module")

PATH = "/v2/models/digits-sklearn/infer/stream"
ROW = [float(v % 17) for v in range(64)]
BURST = 3
MAX_LINE = 4096
IDLE_S = 2.0  # the gRPC streams' idle timeout: longer than the one-second tokens below live


def item(item_id: str) -> bytes:
    return orjson.dumps({"id": item_id, "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW}]})


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(model_store, tmp_path_factory) -> AsyncIterator[InProcess]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RTSERVE_STREAM_IDLE_TIMEOUT_S", "30")  # longer than any test here: what ends a stream is the token
        env.setenv("RTSERVE_STREAM_MAX_LINE_BYTES", str(MAX_LINE))
        ratelimit = RateLimitSettings(enabled=True, rate=1000, burst=1000, tiers={"tiny": TierLimit(rate=0.001, burst=BURST)},
                                      tenants={"tiny-tenant": "tiny"})
        async with serve_in_process(tmp_path_factory.mktemp("streams"), ratelimit=ratelimit) as s:
            yield s


async def stream(served: InProcess, token: str, receive) -> list[dict]:
    """The stream route with a scripted client; the answer's lines, once the server has ended the response."""
    scope = {"type": "http", "method": "POST", "path": PATH, "root_path": "", "query_string": b"",
             "headers": [(b"authorization", f"Bearer {token}".encode())]}
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(served.app(scope, receive, send), timeout=15)
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    return [orjson.loads(m["body"]) for m in sent if m["type"] == "http.response.body" and m["body"]]


def expiring_token(served: InProcess, ttl_s: int = 1) -> tuple[str, float]:
    """A token valid for at most `ttl_s` seconds, and its `exp` (whole seconds, as mint makes it)."""
    token = mint(served.auth, subject="short-lived", scopes="predict", tenant="acme", ttl_s=ttl_s)
    return token, float(int(time.time()) + ttl_s)


async def test_an_http_stream_serves_no_item_past_its_tokens_expiry(served):
    token, expires = expiring_token(served)
    client_gone = asyncio.Event()
    script = [{"type": "http.request", "body": item("before") + b"\n", "more_body": True}]

    async def receive() -> dict:
        if script:
            return script.pop(0)
        if time.time() < expires + 0.2:  # the next item comes after the token expired
            await asyncio.sleep(expires + 0.2 - time.time())
            return {"type": "http.request", "body": item("after") + b"\n", "more_body": True}
        await client_gone.wait()  # the client would go on sending; the server ends the stream
        return {"type": "http.disconnect"}

    answers = await stream(served, token, receive)
    assert [a.get("id") for a in answers][:1] == ["before"] and "outputs" in answers[0]
    assert answers[-1]["code"] == "unauthorized" and "expired" in answers[-1]["error"], answers
    assert all(a.get("id") != "after" for a in answers)


async def test_an_idle_http_stream_ends_when_its_token_expires(served):
    token, expires = expiring_token(served)
    script = [{"type": "http.request", "body": item("only") + b"\n", "more_body": True}]
    never = asyncio.Event()

    async def receive() -> dict:
        if script:
            return script.pop(0)
        await never.wait()
        return {"type": "http.disconnect"}

    answers = await stream(served, token, receive)
    assert time.time() < expires + 5  # at the expiry, not at the 30 s idle timeout
    assert answers[0]["id"] == "only" and answers[-1]["code"] == "unauthorized"


async def test_items_that_fail_to_decode_count_against_the_rate_limit(served):
    bad = [b"{not json", b'{"inputs": 7}', b'{"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "NOPE", "data": []}]}',
           b"[]", b"{}"]
    too_long = b'{"pad": "' + b"x" * (2 * MAX_LINE)  # a line over the limit, cut off while it arrives
    script = [{"type": "http.request", "body": b"\n".join(bad) + b"\n", "more_body": True},
              {"type": "http.request", "body": too_long, "more_body": True},
              {"type": "http.request", "body": b'"}\n', "more_body": False}]

    async def receive() -> dict:
        return script.pop(0) if script else {"type": "http.disconnect"}

    answers = await stream(served, served.token(tenant="tiny-tenant", sub="decoder"), receive)
    codes = sorted(a["code"] for a in answers)
    assert len(codes) == len(bad) + 1 and codes.count("rate_limited") == len(bad) + 1 - BURST, codes


# -- gRPC


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def grpc_stub(served) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    frontend = GrpcFrontend(served.runtime.parts, GrpcSettings(host="127.0.0.1", port=free_port(), stream_idle_timeout_s=IDLE_S))
    port = await frontend.start(shared=False)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.GRPCInferenceServiceStub(channel)
    finally:
        await channel.close()
        await frontend.stop()


def grpc_item(item_id: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="digits-sklearn", id=item_id)
    request.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(np.asarray(ROW, np.float32).tobytes())
    return request


async def one_item_then_silence(never: asyncio.Event) -> AsyncIterator[pb.ModelInferRequest]:
    yield grpc_item("first")
    await never.wait()


async def read_stream(call) -> tuple[list[pb.ModelStreamInferResponse], grpc.StatusCode, str]:
    responses = []
    started = time.monotonic()
    try:
        async for response in call:
            responses.append(response)
    except grpc.aio.AioRpcError as exc:
        return responses, exc.code(), exc.details() or ""
    pytest.fail(f"the stream ended without an error after {time.monotonic() - started:.1f} s")


async def test_an_idle_grpc_stream_ends_after_its_idle_timeout(served, grpc_stub):
    never = asyncio.Event()
    started = time.monotonic()
    call = grpc_stub.ModelStreamInfer(one_item_then_silence(never), metadata=(("authorization", f"Bearer {served.token()}"),))
    responses, code, details = await asyncio.wait_for(read_stream(call), timeout=15)
    assert [r.infer_response.id for r in responses] == ["first"] and not responses[0].error_message
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "no item" in details, (code, details)
    assert time.monotonic() - started < 10


async def test_a_grpc_stream_ends_when_its_token_expires(served, grpc_stub):
    token, expires = expiring_token(served)
    never = asyncio.Event()

    async def items() -> AsyncIterator[pb.ModelInferRequest]:
        yield grpc_item("before")
        await asyncio.sleep(max(0.0, expires + 0.2 - time.time()))
        yield grpc_item("after")
        await never.wait()

    call = grpc_stub.ModelStreamInfer(items(), metadata=(("authorization", f"Bearer {token}"),))
    responses, code, details = await asyncio.wait_for(read_stream(call), timeout=15)
    assert [r.infer_response.id for r in responses] == ["before"]
    assert code == grpc.StatusCode.UNAUTHENTICATED and "expired" in details, (code, details)
