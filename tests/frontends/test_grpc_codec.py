"""The gRPC tensor codec on its own: typed and raw contents, the limits checked before anything is made."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from core.errors import BadRequest, InvalidInput
from frontends.grpc.codec import decode_request, encode_response
from gateway.settings import LimitSettings
from pipeline.dataplane import select_outputs

LIMITS = LimitSettings()
Tensor = pb.ModelInferRequest.InferInputTensor


def typed(name: str, datatype: str, shape: list[int], **contents) -> Tensor:
    return Tensor(name=name, datatype=datatype, shape=shape, contents=pb.InferTensorContents(**contents))


def test_typed_contents_become_arrays_of_the_declared_type_and_shape():
    request = pb.ModelInferRequest(
        inputs=[typed("x", "FP32", [2, 2], fp32_contents=[1.5, 2, 3, 4]), typed("t", "INT8", [3], int_contents=[-128, 0, 127])]
    )
    decoded = decode_request(request, LIMITS)
    datatype, x = decoded.inputs["x"]
    assert datatype == "FP32" and x.dtype == np.float32 and x.tolist() == [[1.5, 2.0], [3.0, 4.0]]
    assert decoded.inputs["t"][1].dtype == np.int8 and decoded.inputs["t"][1].tolist() == [-128, 0, 127]
    assert decoded.raw is False and decoded.outputs is None


def test_raw_contents_are_read_in_input_order_and_copied():
    a = np.arange(6, dtype=np.int64).reshape(2, 3)
    b = np.array([True, False])
    request = pb.ModelInferRequest(
        inputs=[Tensor(name="a", datatype="INT64", shape=[2, 3]), Tensor(name="b", datatype="BOOL", shape=[2])],
        raw_input_contents=[a.tobytes(), b.tobytes()],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="label")],
    )
    decoded = decode_request(request, LIMITS)
    assert decoded.raw and decoded.outputs == ["label"]
    np.testing.assert_array_equal(decoded.inputs["a"][1], a)
    np.testing.assert_array_equal(decoded.inputs["b"][1], b)
    assert decoded.inputs["a"][1].flags.writeable  # a model may write into its input


@pytest.mark.parametrize(
    ("request_", "error", "words"),
    [
        (pb.ModelInferRequest(), BadRequest, "non-empty"),
        (pb.ModelInferRequest(inputs=[typed("x", "FP32", [2], fp32_contents=[1.0])]), InvalidInput, "do not fill shape [2]"),
        (pb.ModelInferRequest(inputs=[typed("x", "FP32", [1], int_contents=[1])]), InvalidInput, "fp32_contents"),
        (pb.ModelInferRequest(inputs=[typed("x", "INT8", [1], int_contents=[300])]), InvalidInput, "out of range"),
        (pb.ModelInferRequest(inputs=[typed("x", "FP16", [1], fp32_contents=[1.0])]), InvalidInput, "raw_input_contents"),
        (pb.ModelInferRequest(inputs=[typed("x", "STRING", [1], bytes_contents=[b"a"])]), InvalidInput, "unsupported datatype"),
        (pb.ModelInferRequest(inputs=[typed("x", "BYTES", [1], int_contents=[1])]), InvalidInput, "bytes_contents"),
        (pb.ModelInferRequest(inputs=[typed("x", "BYTES", [1], bytes_contents=[b"\xff"])]), InvalidInput, "UTF-8"),
        (pb.ModelInferRequest(inputs=[typed("x", "BYTES", [2], bytes_contents=[b"a"])]), InvalidInput, "do not fill shape"),
        (pb.ModelInferRequest(inputs=[typed("x", "FP32", [1], fp32_contents=[1])] * 2), BadRequest, "appears twice"),
        (
            pb.ModelInferRequest(inputs=[Tensor(name="x", datatype="FP32", shape=[2])], raw_input_contents=[b"\0" * 4]),
            InvalidInput,
            "4 bytes of raw_input_contents do not fill shape [2] (8 bytes)",
        ),
        (
            pb.ModelInferRequest(inputs=[Tensor(name="x", datatype="BOOL", shape=[1])], raw_input_contents=[b"\2"]),
            InvalidInput,
            "0 or 1",
        ),
        (
            pb.ModelInferRequest(
                inputs=[Tensor(name="x", datatype="FP32", shape=[1]), Tensor(name="y", datatype="FP32", shape=[1])],
                raw_input_contents=[b"\0" * 4],
            ),
            BadRequest,
            "one per input",
        ),
        (pb.ModelInferRequest(inputs=[typed("x", "FP32", [-1], fp32_contents=[1.0])]), BadRequest, "non-negative"),
        # a zero keeps the element count at 0 whatever the huge dimension claims: refused, never a reshape error
        (pb.ModelInferRequest(inputs=[typed("x", "FP32", [1, 0, 2**63 - 1])]), InvalidInput, "empty tensor"),
        (pb.ModelInferRequest(inputs=[Tensor(name="x", datatype="FP32", shape=[0, 2**63 - 1])], raw_input_contents=[b""]),
         InvalidInput, "empty tensor"),
        (pb.ModelInferRequest(inputs=[typed("x", "FP32", [2**40, 2**40, 2**40])]), InvalidInput, "over the limit"),
    ],
)
def test_malformed_tensors_are_client_errors_naming_the_problem(request_, error, words):
    with pytest.raises(error) as caught:
        decode_request(request_, LIMITS)
    assert words in caught.value.message


def test_a_declared_shape_over_the_limits_is_refused_before_anything_is_allocated():
    raw = np.zeros(64, np.float32).tobytes()
    request = pb.ModelInferRequest(inputs=[Tensor(name="x", datatype="FP32", shape=[10**12, 64])], raw_input_contents=[raw])
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput, match="limit"):
            decode_request(request, LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    too_many_dims = pb.ModelInferRequest(inputs=[typed("x", "FP32", [1] * 9, fp32_contents=[1.0])])
    with pytest.raises(InvalidInput, match="dimensions"):
        decode_request(too_many_dims, LIMITS)


@pytest.mark.parametrize("raw", [True, False])
def test_a_response_carries_its_outputs_raw_or_typed_as_the_request_did(raw):
    outputs = {"probabilities": np.array([[0.25, 0.75]], np.float32), "label": np.array([1], np.int64)}
    response = encode_response("m", "v2", "id-7", outputs, raw)
    assert (response.model_name, response.model_version, response.id) == ("m", "v2", "id-7")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("probabilities", "FP32", [1, 2]),
        ("label", "INT64", [1]),
    ]
    if raw:
        assert np.frombuffer(response.raw_output_contents[0], np.float32).tolist() == [0.25, 0.75]
        assert np.frombuffer(response.raw_output_contents[1], np.int64).tolist() == [1]
        assert not response.outputs[0].HasField("contents")
    else:
        assert list(response.outputs[0].contents.fp32_contents) == [0.25, 0.75]
        assert list(response.outputs[1].contents.int64_contents) == [1]
        assert not response.raw_output_contents


def test_requested_outputs_are_selected_and_unknown_ones_refused():
    outputs = {"probabilities": np.zeros((1, 2)), "label": np.zeros(1)}
    assert list(select_outputs(outputs, ["label"])) == ["label"]
    assert select_outputs(outputs, None) is outputs
    with pytest.raises(BadRequest, match="unknown output"):
        select_outputs(outputs, ["logits"])


def test_schedule_parameters_are_read_as_tritonclient_sends_them():
    request = pb.ModelInferRequest(inputs=[typed("x", "FP32", [1], fp32_contents=[1.0])])
    assert (decode_request(request, LIMITS).priority, decode_request(request, LIMITS).timeout_us) == (0, None)
    request.parameters["priority"].uint64_param = 1
    request.parameters["timeout"].int64_param = 250_000
    decoded = decode_request(request, LIMITS)
    assert (decoded.priority, decoded.timeout_us) == (1, 250_000)
    request.parameters["timeout"].string_param = "soon"
    with pytest.raises(BadRequest, match="parameters.timeout must be an integer"):
        decode_request(request, LIMITS)
    request.parameters["timeout"].int64_param = -1
    with pytest.raises(BadRequest, match="parameters.timeout"):
        decode_request(request, LIMITS)
