"""Optimized variants: each loads through the real runner, keeps its float original's accuracy, and batches correctly."""

from __future__ import annotations

from pathlib import Path

import bentoml
import numpy as np
import onnx
import pytest
import torch
import yaml

from demo import data
from runners.loader import load_runner
from runners.settings import ServingConfig

VARIANTS = {"digits-torch:v2-int8": "digits-torch:v2", "digits-onnx:v2-int8": "digits-onnx:v2", "digits-onnx:v2-opt": "digits-onnx:v2"}
MAX_ACCURACY_LOSS = 0.01  # one percentage point on the held-out digits
# Dynamic quantization scales activations by the range of the whole batch, so an int8 row's
# probabilities move a little with its batch-mates; measured up to 0.017 on the held-out rows.
INT8_BATCH_TOLERANCE = 0.03
DYNAMIC_INT8_LINEAR = f"{torch.ao.nn.quantized.dynamic.Linear.__module__}.Linear"


def held_out(runner) -> tuple[np.ndarray, np.ndarray]:
    split = data.digits()
    return split.x_test.reshape(len(split.x_test), *runner.input_spec.row_shape), split.y_test


@pytest.mark.parametrize("tag", VARIANTS)
def test_variant_keeps_the_accuracy_of_its_float_original(model_store, tag):
    runner = load_runner(tag, "cpu")
    x, y = held_out(runner)
    accuracy = float((runner.run(x)["label"] == y).mean())
    original = float((load_runner(VARIANTS[tag], "cpu").run(x)["label"] == y).mean())
    assert accuracy >= original - MAX_ACCURACY_LOSS
    assert runner.metadata["derived_from"] == VARIANTS[tag]
    assert runner.metadata["accuracy"] == pytest.approx(accuracy, abs=1e-3)
    assert runner.metadata["accuracy_delta"] == pytest.approx(accuracy - original, abs=2e-3)


@pytest.mark.parametrize("tag", VARIANTS)
def test_batched_result_equals_row_by_row(model_store, tag):
    runner = load_runner(tag, "cpu")
    x, _ = held_out(runner)
    batched = runner.run(runner.collate([x[:7], x[7:8], x[8:]]))
    single = [runner.run(x[i : i + 1]) for i in range(len(x))]
    np.testing.assert_array_equal(batched["label"], np.concatenate([s["label"] for s in single]))
    tolerance = INT8_BATCH_TOLERANCE if runner.metadata.get("quantization") else 1e-6
    np.testing.assert_allclose(batched["probabilities"], np.concatenate([s["probabilities"] for s in single]), atol=tolerance)


def test_torch_int8_runs_its_linear_layers_in_int8(model_store):
    runner = load_runner("digits-torch:v2-int8", "auto")
    module = runner.loaded.module  # TorchScript: layers are known by the qualified name of their class
    quantized = [name for name, m in module.named_modules() if m._c._type().qualified_name().endswith(DYNAMIC_INT8_LINEAR)]
    assert quantized == ["head.2"] and runner.metadata["quantized_layers"] == ["head.2 (Linear 768->10)"]
    assert runner.device == "cpu"  # quantized kernels exist for the CPU only, whatever `auto` finds
    x, _ = held_out(runner)
    assert not np.allclose(runner.run(x)["probabilities"], load_runner("digits-torch:v2", "cpu").run(x)["probabilities"], atol=1e-7)


def test_onnx_variants_carry_the_rewritten_graphs(model_store):
    def ops(tag: str) -> list[str]:
        return [n.op_type for n in onnx.load(bentoml.models.get(tag).path_of("model.onnx")).graph.node]

    assert "MatMulInteger" in ops("digits-onnx:v2-int8") and "ConvInteger" not in ops("digits-onnx:v2-int8")
    assert "FusedConv" in ops("digits-onnx:v2-opt") and "FusedConv" not in ops("digits-onnx:v2")
    runner = load_runner("digits-onnx:v2-opt", "cpu")
    assert runner.settings.graph_optimization_level == runner.metadata["session_options"]["graph_optimization_level"]


def test_serving_config_loads_variants_next_to_their_originals_without_traffic():
    config = ServingConfig.model_validate(yaml.safe_load((Path(__file__).parents[2] / "serving.yaml").read_text()))
    for tag, original in VARIANTS.items():
        name, version = tag.split(":")
        assert {version, original.split(":")[1]} <= set(config.models[name].versions)
        assert config.initial_weights(name).get(version, 0) == 0
