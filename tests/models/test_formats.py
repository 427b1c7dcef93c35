"""Every format that is served: imported through the one import path (probe included), loaded by its
runner, answering what its framework answers. Tolerances: probabilities to 1e-5 absolute (served as
FP32), regression predictions to 1e-5 relative (FP32), labels exactly."""

from __future__ import annotations

import numpy as np
import pytest

from models.importer import ImportOptions, import_model
from models.signature import Signature
from runners.loader import load_runner
from tests.models import makers

CODE = ImportOptions(allow_code=True)
PLAIN = ImportOptions()


def served(name: str, made: makers.Made, settings, options: ImportOptions = PLAIN):
    model = import_model(name, "v1", made.path, options, settings)
    runner = load_runner(f"{name}:v1", "cpu")
    return model.info.metadata, runner, runner.run(made.x)


def assert_same(outputs: dict, expected: dict) -> None:
    assert set(outputs) == set(expected)
    for key, want in expected.items():
        got = outputs[key]
        if key == "label":
            assert got.tolist() == np.asarray(want).tolist(), key
        elif key == "predictions":
            np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=key)
        else:
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=key)


def test_skops_classifier_signature_from_the_estimator(tmp_path, name, settings):
    made = makers.iris_skops(tmp_path)
    meta, _runner, out = served(name, made, settings)
    assert_same(out, made.expected)
    sig = Signature.from_metadata(meta)
    assert [(s.name, s.datatype, s.shape) for s in sig.inputs] == [("features", "FP32", (-1, 4))]
    assert [(s.name, s.datatype, s.shape) for s in sig.outputs] == [("probabilities", "FP32", (-1, 3)), ("label", "INT64", (-1,))]
    assert meta["format"] == "skops" and meta["task"] == "classification" and meta["class_names"] == [0, 1, 2]
    assert meta["sha256"] == {"iris.skops": __import__("models.importer").importer.sha256(made.path)}
    assert meta["source"] == {"kind": "file", "name": "iris.skops", "origin": "deploy"}
    assert meta["memory_mb"] >= 0 and meta["trusted_types"] == []


def test_skops_tree_model_trusted_by_the_operator_list(tmp_path, name, settings):
    made = makers.wine_forest_skops(tmp_path)
    meta, _, out = served(name, made, settings)
    assert_same(out, made.expected)
    assert meta["trusted_types"] == ["sklearn.tree._tree.Tree"]


def test_skops_regressor_serves_predictions(tmp_path, name, settings):
    made = makers.diabetes_ridge(tmp_path)
    meta, runner, out = served(name, made, settings)
    assert_same(out, made.expected)
    assert meta["task"] == "regression" and [s.describe() for s in runner.signature.outputs] == [
        {"name": "predictions", "datatype": "FP32", "shape": [-1]}]


def test_text_classifier_takes_strings_and_names_its_classes(tmp_path, name, settings):
    made = makers.text_classifier(tmp_path)
    _meta, runner, out = served(name, made, settings)
    assert_same(out, made.expected)
    assert out["label"].tolist() == ["sport", "finance", "tech"]
    assert runner.input_spec.describe() == {"name": "text", "datatype": "BYTES", "shape": [-1]}
    assert runner.signature.outputs[1].datatype == "BYTES"
    # Requests of different lengths share a batch without padding: strings are concatenated as they are.
    batch = runner.collate([made.x[:1], made.x[1:]])
    assert batch.dtype == object and batch.tolist() == made.x.tolist()


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_xgboost_binary_classifier(tmp_path, name, settings, suffix):
    made = makers.cancer_xgboost(tmp_path, suffix)
    meta, runner, out = served(name, made, settings)
    assert_same(out, made.expected)
    assert meta["format"] == "xgboost" and runner.input_spec.shape == (-1, 30)


def test_lightgbm_multiclass_and_regression(tmp_path, name, settings):
    made = makers.wine_lightgbm(tmp_path)
    meta, _runner, out = served(name, made, settings)
    assert_same(out, made.expected)
    assert meta["format"] == "lightgbm" and "feature_names" not in meta  # Column_N defaults count as none
    reg = makers.diabetes_lightgbm(tmp_path)
    meta, _, out = served(name + "-reg", reg, settings)
    assert_same(out, reg.expected)
    assert meta["task"] == "regression"


def test_onnx_two_inputs_two_outputs(tmp_path, name, settings):
    made = makers.iris_onnx_two_by_two(tmp_path)
    meta, runner, out = served(name, made, settings)
    assert_same(out, made.expected)
    assert meta["task"] == "tensors"
    assert [s.describe() for s in runner.signature.inputs] == [
        {"name": "measurements", "datatype": "FP32", "shape": [-1, 4]}, {"name": "scale", "datatype": "FP32", "shape": [-1, 1]}]
    assert [s.name for s in runner.signature.outputs] == ["scores", "embedding"]
    # Two requests collate per input name.
    both = runner.run(runner.collate([{k: v[:2] for k, v in made.x.items()}, {k: v[2:] for k, v in made.x.items()}]))
    np.testing.assert_allclose(both["embedding"], made.expected["embedding"], atol=1e-5)


def test_onnx_external_data_inside_the_folder(tmp_path, name, settings):
    import onnx

    made = makers.iris_onnx_two_by_two(tmp_path)
    folder = tmp_path / "external"
    folder.mkdir()
    onnx.save_model(onnx.load(str(made.path)), str(folder / "two.onnx"), save_as_external_data=True,
                    location="weights.bin", size_threshold=0)
    model = import_model(name, "v1", folder, ImportOptions(), settings)
    assert sorted(model.info.metadata["sha256"]) == ["two.onnx", "weights.bin"]
    assert_same(load_runner(f"{name}:v1", "cpu").run(made.x), made.expected)


def test_torchscript_with_model_yaml_declares_input_softmax_and_classes(tmp_path, name, settings):
    made = makers.iris_torchscript(tmp_path)
    meta, runner, out = served(name, made, settings, ImportOptions(allow_code=True, config=tmp_path / "model.yaml"))
    assert_same(out, made.expected)
    assert meta["format"] == "torchscript" and meta["softmax"] is True
    assert meta["model_outputs"] == [{"name": "output_0", "datatype": "FP32", "shape": [-1, 3]}]  # recorded from a sample call
    assert runner.signature.outputs[1].datatype == "BYTES"


def test_torchscript_from_a_sample_input(tmp_path, name, settings):
    """With no model.yaml, a sample input says the input's datatype and shape; one call records the outputs."""
    made = makers.iris_torchscript(tmp_path)
    np.save(tmp_path / "sample.npy", made.x[:3])
    meta, runner, out = served(name, made, settings, ImportOptions(allow_code=True, sample=tmp_path / "sample.npy"))
    assert runner.input_spec.describe() == {"name": "input", "datatype": "FP32", "shape": [-1, 4]}
    assert meta["task"] == "tensors" and list(out) == ["output_0"]  # raw logits, no softmax undeclared
    logits = out["output_0"]
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(1, keepdims=True), made.expected["probabilities"], atol=1e-5)


def test_torch_export_programs_dynamic_and_fixed_batch(tmp_path, name, settings):
    made = makers.wine_pt2(tmp_path)
    meta, runner, out = served(name, made, settings, CODE)
    assert_same(out, made.expected)
    assert meta["format"] == "torch_export" and meta["batching"] is True
    assert runner.input_spec.describe() == {"name": "input", "datatype": "FP32", "shape": [-1, 13]}
    fixed = makers.wine_pt2(tmp_path, dynamic=False)
    meta, runner, out = served(name + "-fixed", fixed, settings, CODE)
    assert_same(out, fixed.expected)
    assert meta["batching"] is False and runner.input_spec.shape == (4, 13) and "batching off" in meta["notes"][0]
    assert [n for n, _ in runner.warmup((1, 64))] == [4, 4, 4]  # warmed up at its one batch size


def test_torch_export_programs_load_in_several_threads_at_once(tmp_path):
    """Two `.pt2` versions deployed together reach one worker's load threads together: torch.export.load keeps
    its deserializer in a global, so unguarded loads at once fail with "_CURRENT_DESERIALIZER is already set"."""
    import threading

    from models.formats.torch import TorchExportFormat

    made = makers.wine_pt2(tmp_path)
    errors: list[str] = []
    loaded: list[object] = []

    def load_five() -> None:
        try:
            for _ in range(5):
                loaded.append(TorchExportFormat().load(made.path, {}))
        except Exception as exc:  # noqa: BLE001 - the test reports every failure
            errors.append(repr(exc)[:200])

    threads = [threading.Thread(target=load_five) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(loaded) == 20


def test_joblib_when_allowed_records_its_hash(tmp_path, name, settings):
    made = makers.diabetes_ridge(tmp_path, "joblib")
    meta, _, out = served(name, made, settings, CODE)
    assert_same(out, made.expected)
    assert meta["format"] == "pickle" and len(meta["sha256"]["diabetes.joblib"]) == 64


def test_own_runtime_by_import_string(tmp_path, name, settings, runtimes_importable):
    np.save(tmp_path / "weights.npy", np.array([1.0, 2.0, 3.0], dtype=np.float32))
    (tmp_path / "model.yaml").write_text("implementation: tests.models.runtimes:WeightedSum\ntask: regression\n"
                                         "inputs:\n  - {name: x, datatype: FP32, shape: [-1, 3]}\n")
    made = makers.Made(tmp_path / "weights.npy", np.eye(3, dtype=np.float32), {"predictions": np.array([1.0, 2.0, 3.0])})
    meta, _, out = served(name, made, settings, ImportOptions(allow_code=True, config=tmp_path / "model.yaml"))
    assert_same(out, made.expected)
    assert meta["format"] == "custom" and meta["implementation"] == "tests.models.runtimes:WeightedSum"


async def test_strings_of_different_widths_share_no_model_call_and_are_never_padded(tmp_path, name, settings,
                                                                                    runtimes_importable):
    """Rows of 2 and of 3 tokens queued together: the batcher gives each width its own model call (a 0 padded
    among strings would be a token nobody sent); requests of one width still share one."""
    import asyncio

    from tests.runners.test_batcher import Gated, make, until

    (tmp_path / "tokens.bin").write_bytes(b"")
    (tmp_path / "model.yaml").write_text("implementation: tests.models.runtimes:TokenCount\ntask: tensors\n"
                                         "inputs:\n  - {name: tokens, datatype: BYTES, shape: [-1, -1]}\n")
    import_model(name, "v1", tmp_path / "tokens.bin", ImportOptions(allow_code=True, config=tmp_path / "model.yaml"),
                 settings)
    model = Gated(load_runner(f"{name}:v1", "cpu"))
    batcher = make(model, max_batch_size=64)
    model.gate.clear()
    first = asyncio.create_task(batcher.submit(np.array([["held"]], dtype=object)))
    await until(model.entered.is_set)
    rows = [["a", "bb"], ["ccc", "d"], ["eeee", "f", "gg"], ["h", "ii"]]
    waiting = [asyncio.create_task(batcher.submit(np.array([r], dtype=object))) for r in rows]
    await until(lambda: batcher._queued == len(rows))
    model.gate.set()
    answers = await asyncio.gather(first, *waiting)
    assert [a["tokens"].tolist() for a in answers[1:]] == [[2], [2], [3], [2]]
    assert [a["chars"].tolist() for a in answers[1:]] == [[3], [4], [7], [3]]
    assert model.calls == [1, 2, 1, 1]  # the held one; both rows of 2; the row of 3 leads a call alone; the last
    batcher.close()


def test_a_changed_file_is_not_loaded(tmp_path, name, settings):
    from pathlib import Path

    from core.errors import LoadFailed

    made = makers.diabetes_ridge(tmp_path, "joblib")
    model = import_model(name, "v1", made.path, CODE, settings)
    (Path(model.path) / "diabetes.joblib").write_bytes(made.path.read_bytes() + b"\0")
    with pytest.raises(LoadFailed, match="SHA-256"):
        load_runner(f"{name}:v1", "cpu")


def test_a_version_needing_more_memory_than_is_free_is_not_loaded(tmp_path, name, settings):
    import shutil
    from pathlib import Path

    from core.errors import LoadFailed
    from models import store

    made = makers.iris_skops(tmp_path)
    model = import_model(name, "v1", made.path, PLAIN, settings)
    huge = {**model.info.metadata, "memory_mb": 10**9}
    store.create(f"{name}:v2", huge, lambda d: shutil.copyfile(Path(model.path) / "iris.skops", d / "iris.skops"))
    with pytest.raises(LoadFailed, match="needs 1000000000 MB"):
        load_runner(f"{name}:v2", "cpu")
