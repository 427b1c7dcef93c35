"""A Triton model config read into a deploy's plan, and a load's file names checked, without a server."""

from __future__ import annotations

import json

import pytest

from core.errors import BadRequest
from pipeline.triton_config import read_config
from pipeline.triton_files import _path, split_files


def fp32(name: str, dims: list[int]) -> dict:
    return {"name": name, "data_type": "TYPE_FP32", "dims": dims}


@pytest.mark.parametrize(
    ("config", "fmt"),
    [
        ({"platform": "onnxruntime_onnx"}, "onnx"),
        ({"backend": "onnxruntime"}, "onnx"),
        ({"platform": "pytorch_libtorch", "backend": "pytorch"}, "torchscript"),
        ({"platform": "pytorch", "parameters": {"model_type": {"string_value": "torchscript"}}}, "torchscript"),
        ({"platform": "pytorch_libtorch", "parameters": {"model_type": {"string_value": "torch_export"}}}, "torch_export"),
        ({"backend": "fil", "parameters": {"model_type": {"string_value": "xgboost_json"}}}, "xgboost"),
        ({"backend": "fil", "parameters": {"model_type": {"string_value": "xgboost_ubj"}}}, "xgboost"),
        ({"backend": "fil", "parameters": {"model_type": "lightgbm"}}, "lightgbm"),
        ({"backend": "sklearn"}, "skops"),
        ({"backend": "sklearn", "parameters": {"model_type": {"string_value": "pickle"}}}, "pickle"),
    ],
)
def test_platform_or_backend_picks_the_format(config, fmt):
    plan = read_config("m", json.dumps(config))
    assert plan.format == fmt and plan.declared.format == fmt


def test_dims_get_the_batch_dimension_when_batching_and_types_map():
    config = {"name": "m", "platform": "onnxruntime_onnx", "max_batch_size": 8,
              "input": [fp32("x", [4]), {"name": "ids", "data_type": "TYPE_INT64", "dims": [-1]}],
              "output": [{"name": "text", "data_type": "TYPE_STRING", "dims": [1]}]}
    declared = read_config("m", json.dumps(config)).declared
    assert [(t.name, t.datatype, t.shape) for t in declared.inputs] == [("x", "FP32", [-1, 4]), ("ids", "INT64", [-1, -1])]
    assert [(t.datatype, t.shape) for t in declared.outputs] == [("BYTES", [-1, 1])]
    assert declared.batching is None  # the model's own (on unless its shapes are fixed)

    unbatched = read_config("m", {"platform": "onnxruntime_onnx", "input": [fp32("x", [2, 4])]}).declared
    assert unbatched.batching is False and unbatched.inputs[0].shape == [2, 4]


def test_parameters_become_the_model_yaml_and_the_opt_ins():
    plan = read_config("m", {"backend": "pytorch", "parameters": {
        "allow_code": {"string_value": "true"}, "task": {"string_value": "classification"},
        "class_names": {"string_value": "a, b,c"}, "softmax": {"string_value": "true"}}})
    assert plan.allow_code and plan.declared.task == "classification" and plan.declared.softmax
    assert plan.declared.class_names == ["a", "b", "c"]
    assert not read_config("m", {"backend": "pytorch"}).allow_code


@pytest.mark.parametrize(
    ("policy", "chosen"),
    [
        (None, ["10"]),  # Triton's default: the newest, by number
        ({"latest": {"num_versions": 2}}, ["2", "10"]),
        ({"all": {}}, ["1", "2", "10"]),
        ({"specific": {"versions": [1, "10"]}}, ["1", "10"]),
    ],
)
def test_version_policy_picks_version_folders(policy, chosen):
    config = {"platform": "onnxruntime_onnx", **({"version_policy": policy} if policy else {})}
    assert read_config("m", config).choose(["1", "10", "2"]) == chosen


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"platform": "tensorflow_savedmodel"}, "served: fil, onnxruntime"),
        ({"backend": "python"}, "not served here"),
        ({}, "must name a platform or backend"),
        ({"platform": "onnxruntime_onnx", "backend": "pytorch"}, "differ"),
        ({"backend": "fil"}, "model_type"),
        ({"backend": "fil", "parameters": {"model_type": "treelite_checkpoint"}}, "model_type"),
        ({"platform": "pytorch", "parameters": {"model_type": "aot_inductor"}}, r"model_type \['torch_export', 'torchscript'\]"),
        ({"platform": "onnxruntime_onnx", "parameters": {"model_type": "onnx"}}, "not onnx"),
        ({"name": "other", "platform": "onnxruntime_onnx"}, "not the model's name"),
        ({"platform": "onnxruntime_onnx", "sequence_batching": {}}, "honoured:"),
        ({"platform": "onnxruntime_onnx", "parameters": {"threads": "2"}}, "known: model_type"),
        ({"platform": "onnxruntime_onnx", "input": [{"name": "x", "data_type": "TYPE_BF16", "dims": [4]}]}, "TYPE_BF16"),
        ({"platform": "onnxruntime_onnx", "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [0]}]}, "dims"),
        ({"platform": "onnxruntime_onnx", "input": [{**fp32("x", [4]), "reshape": {"shape": [2, 2]}}]}, "reshape"),
        ({"backend": "fil", "parameters": {"model_type": "lightgbm"}, "output": [fp32("output__0", [1])]}, "leave output out"),
        ({"platform": "onnxruntime_onnx", "max_batch_size": -1}, "max_batch_size"),
        ({"platform": "onnxruntime_onnx", "version_policy": {"latest": {"num_versions": 0}}}, "version_policy"),
        ({"platform": "onnxruntime_onnx", "version_policy": {"specific": {"versions": ["v1"]}}}, "version_policy"),
        ({"platform": "onnxruntime_onnx", "parameters": {"allow_code": "yes"}}, "allow_code"),
    ],
)
def test_what_is_not_served_is_a_clear_bad_request(config, says):
    with pytest.raises(BadRequest, match=says):
        read_config("m", json.dumps(config))


def test_a_policy_naming_versions_without_files_is_refused():
    with pytest.raises(BadRequest, match="no files"):
        read_config("m", {"platform": "onnxruntime_onnx", "version_policy": {"specific": {"versions": [3]}}}).choose(["1"])


@pytest.mark.parametrize("key", ["file:../1/model.onnx", "file:1/../../etc/passwd", "file:/1/model.onnx", "file:1//m",
                                 "file:1/./m", "file:1\\m", "file:", "file:1", "file:config.pbtxt", "file:v1/model.onnx",
                                 "file:0/model.onnx", "file:1/m\0"])
def test_unsafe_or_misplaced_file_names_are_refused(key):
    with pytest.raises(BadRequest, match="file name"):
        _path(key)


def test_file_names_keep_their_folders():
    assert str(_path("file:12/sub/model.onnx_data")) == "12/sub/model.onnx_data"
    assert split_files({"config": "{}", "file:1/a": b"x"}) == ({"file:1/a": b"x"}, {"config": "{}"})
