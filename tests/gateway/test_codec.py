from __future__ import annotations

import json
import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frontends.oip_codec import decode_infer, encode_infer
from core.errors import BadRequest, InvalidInput, ServingError
from gateway.settings import LimitSettings
from gateway.validate import check_inputs
from demo.build import DIGITS_ROW, SEQ_TOKENS
from models.signature import Signature, classifier_outputs

DIGITS = Signature((DIGITS_ROW,), classifier_outputs(10))
SEQ = Signature((SEQ_TOKENS,), classifier_outputs(4))
LIMITS = LimitSettings()


def body(**inp) -> bytes:
    tensor = {"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 64, **inp}
    return orjson.dumps({"inputs": [tensor]})


def test_flat_and_nested_data_decode_alike():
    flat = decode_infer(body(shape=[2, 64], data=[3] * 128), LIMITS).inputs["pixels"][1]
    nested = decode_infer(body(shape=[2, 64], data=[[3.0] * 64] * 2), LIMITS).inputs["pixels"][1]
    assert flat.dtype == np.float32 and flat.shape == (2, 64)
    np.testing.assert_array_equal(flat, nested)


def test_binary_extension_round_trip():
    x = np.arange(128, dtype=np.float32).reshape(2, 64) % 17
    header = orjson.dumps({"inputs": [{"name": "pixels", "shape": [2, 64], "datatype": "FP32",
                                       "parameters": {"binary_data_size": x.nbytes}}],
                           "parameters": {"binary_data_output": True}})
    req = decode_infer(header + x.tobytes(), LIMITS, len(header))
    np.testing.assert_array_equal(req.inputs["pixels"][1], x)
    out, json_len = encode_infer("m", "v1", None, {"probabilities": x}, req.binary_outputs)
    doc = orjson.loads(out[:json_len])
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == x.nbytes
    np.testing.assert_array_equal(np.frombuffer(out[json_len:], np.float32).reshape(2, 64), x)


@pytest.mark.parametrize(
    ("raw", "error", "words"),
    [
        (b"{", BadRequest, "not valid JSON"),
        (b"[]", BadRequest, "JSON object"),
        (b'{"inputs": []}', BadRequest, "non-empty"),
        (body(shape=[1, 63]), InvalidInput, "do not fill shape"),
        (body(shape=[2, 64], data=[[1.0] * 64, [1.0] * 3]), InvalidInput, "ragged"),
        (body(data=["a"] * 64), InvalidInput, "numbers"),
        (body(datatype="STRING"), InvalidInput, "unsupported datatype"),
        (body(datatype="BYTES"), InvalidInput, "must be strings"),
        (body(shape="1,64"), BadRequest, "shape"),
        (body(data=None), InvalidInput, "numbers"),
        # empty, and a zero beside a dimension no array can have: refused before any reshape
        (body(shape=[0, 64], data=[]), InvalidInput, "empty tensor"),
        (body(shape=[1, 0, 2**63 - 1], data=[]), InvalidInput, "empty tensor"),
        (body(shape=[2**40, 2**40, 2**40]), InvalidInput, "over the limit"),
    ],
)
def test_malformed_requests_are_client_errors(raw, error, words):
    with pytest.raises(error, match=words):
        decode_infer(raw, LIMITS)


@pytest.mark.parametrize(
    ("tensor", "words"),
    [
        ({"shape": [1, 1, 8, 8], "data": [1.0] * 64}, "does not match"),
        ({"datatype": "INT32", "data": [1] * 64}, "datatype INT32"),
        ({"name": "x"}, "unknown input"),
        ({"data": [17.0] * 64}, "<= 16"),
        ({"data": [-1.0] * 64}, ">= 0"),
    ],
)
def test_inputs_that_do_not_fit_the_signature_are_named(tensor, words):
    req = decode_infer(body(**tensor), LIMITS)
    with pytest.raises(InvalidInput, match=words):
        check_inputs(DIGITS, req.inputs, LIMITS)


def test_non_finite_binary_values_are_rejected():
    x = np.full((1, 64), np.nan, dtype=np.float32)
    header = orjson.dumps({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32",
                                       "parameters": {"binary_data_size": x.nbytes}}]})
    req = decode_infer(header + x.tobytes(), LIMITS, len(header))
    with pytest.raises(InvalidInput, match="NaN"):
        check_inputs(DIGITS, req.inputs, LIMITS)


def test_integer_inputs_refuse_fractions_and_out_of_vocabulary_tokens():
    tok = {"name": "tokens", "shape": [1, 3], "datatype": "INT64"}
    with pytest.raises(InvalidInput, match="integers"):
        decode_infer(orjson.dumps({"inputs": [{**tok, "data": [1.5, 2, 3]}]}), LIMITS)
    req = decode_infer(orjson.dumps({"inputs": [{**tok, "data": [1, 2, 99]}]}), LIMITS)
    with pytest.raises(InvalidInput, match="<= 20"):
        check_inputs(SEQ, req.inputs, LIMITS)


def test_limits_apply():
    tight = LimitSettings(max_rows=2, max_sequence_length=4)
    req = decode_infer(body(shape=[3, 64], data=[1.0] * 192), LIMITS)
    with pytest.raises(InvalidInput, match="rows"):
        check_inputs(DIGITS, req.inputs, tight)
    req = decode_infer(orjson.dumps({"inputs": [{"name": "tokens", "shape": [1, 5], "datatype": "INT64", "data": [1] * 5}]}), LIMITS)
    with pytest.raises(InvalidInput, match="length 5"):
        check_inputs(SEQ, req.inputs, tight)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)
tensors = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["pixels", "tokens", "x"]) | json_values,
        "shape": st.lists(st.integers(-2, 70), max_size=4) | json_values,
        "datatype": st.sampled_from(["FP32", "INT64", "BOOL", "FP16", "BYTES", "nope"]) | json_values,
        "data": st.lists(st.floats(-1e6, 1e6) | st.integers(-(2**70), 2**70), max_size=70) | json_values,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-5, 300)}) | json_values,
    },
)
bodies = st.fixed_dictionaries({}, optional={"inputs": st.lists(tensors, max_size=3) | json_values, "id": json_values,
                                             "outputs": json_values, "parameters": json_values}) | json_values


@settings(max_examples=400, deadline=None)
@given(doc=bodies, sig=st.sampled_from([DIGITS, SEQ]))
def test_any_json_body_is_accepted_or_a_client_error(doc, sig):
    try:
        req = decode_infer(json.dumps(doc).encode(), LIMITS)
        arr = check_inputs(sig, req.inputs, LIMITS)
    except ServingError as exc:
        assert 400 <= exc.status < 500
    else:
        assert arr.shape[0] >= 1 and math.prod(arr.shape) == arr.size
