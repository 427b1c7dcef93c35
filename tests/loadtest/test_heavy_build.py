"""The heavy-model builder at stand-in size: the same code as `make heavy-models`, through the importer,
and what the store then serves equals the framework's own answer."""

from __future__ import annotations

import shutil
from pathlib import Path

import bentoml
import numpy as np
import pytest
import torch

from app.config import load_serving
from core.errors import ModelRefused
from loadtest.heavy.bench import HEAVY_CONFIG
from loadtest.heavy.build import BUILDERS, TINY, bert, build_all, resnet, tree_data
from models.importer import ImportOptions, import_model
from runners.loader import load_runner


@pytest.fixture(scope="module")
def heavy_store() -> dict[str, float]:
    return build_all(TINY, log=lambda line: None)


def test_every_heavy_model_comes_in_through_the_importer(heavy_store):
    assert set(heavy_store) == {f"{n}:tiny" for n in ("heavy-resnet-onnx", "heavy-resnet-torch", "heavy-bert-onnx",
                                                       "heavy-trees-xgb")}
    for tag in heavy_store:
        meta = bentoml.models.get(tag).info.metadata
        assert meta["source"]["origin"] == "heavy" and meta["seed"] == 28
        assert meta["memory_mb"] > 0


@pytest.mark.parametrize("tag", ["heavy-resnet-onnx:tiny", "heavy-resnet-torch:tiny"])
def test_vision_models_answer_as_the_network_does(heavy_store, tag):
    pixels = np.random.default_rng(0).normal(size=(3, *TINY.image)).astype(np.float32)
    with torch.inference_mode():
        expected = torch.softmax(resnet(TINY)(torch.from_numpy(pixels)), -1).numpy()
    out = load_runner(tag, "cpu").run(pixels)
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    assert (out["label"] == expected.argmax(-1)).all()


def test_text_model_serves_strings_padded_per_batch(heavy_store):
    from tokenizers import Tokenizer

    runner = load_runner("heavy-bert-onnx:tiny", "cpu")
    assert [(s.name, s.datatype) for s in runner.signature.inputs] == [("text", "BYTES")]
    texts = np.array(["def f(x):\n    return x + 1", b"import os", "a much longer line " * 60], dtype=object)
    batched = runner.run(texts)["embedding"]
    tokenizer = Tokenizer.from_file(str(Path(runner.model.path) / "tokenizer.json"))
    for i, text in enumerate(texts):
        ids = tokenizer.encode(text.decode() if isinstance(text, bytes) else text).ids
        assert len(ids) <= 128  # truncated to the declared max_length
        t = torch.tensor([ids])
        with torch.inference_mode():
            expected = bert(TINY)(t, torch.ones_like(t)).numpy()
        np.testing.assert_allclose(runner.run(texts[i:i + 1])["embedding"], expected, atol=1e-5)
        np.testing.assert_allclose(batched[i:i + 1], expected, atol=1e-5)  # padding is masked out
    longest = max(len(tokenizer.encode(t.decode() if isinstance(t, bytes) else t).ids) for t in texts)
    assert runner.varies and runner.work(texts) == 3 * longest  # the batcher counts the batch's tokens
    assert runner.work(runner.sample(2, 40)) == 80  # warm-up texts of the length asked for


def test_tree_ensemble_answers_as_xgboost_does(heavy_store):
    import xgboost as xgb

    runner = load_runner("heavy-trees-xgb:tiny", "cpu")
    x, _ = tree_data(TINY)
    booster = xgb.Booster(model_file=str(Path(runner.model.path) / "model.json"))
    assert booster.num_boosted_rounds() == TINY.trees
    np.testing.assert_allclose(runner.run(x[:50])["probabilities"][:, 1], booster.predict(xgb.DMatrix(x[:50])), atol=1e-6)


def test_a_declared_tokenizer_must_come_with_the_model(heavy_store, tmp_path):
    folder = tmp_path / "bert"
    shutil.copytree(bentoml.models.get("heavy-bert-onnx:tiny").path, folder)
    config = tmp_path / "model.yaml"
    config.write_text("task: tensors\ntokenizer: {file: tokenizer.json}\n")
    with pytest.raises(ModelRefused, match="'tokenizer.json' is not deployed with the model"):
        import_model("bert-file-only", "v1", folder / "model.onnx", ImportOptions(config=config))
    (folder / "tokenizer.json").unlink()
    (folder / "model.yaml").write_text("task: tensors\ntokenizer: {file: vocab/tokenizer.json}\n")
    with pytest.raises(ModelRefused, match="'vocab/tokenizer.json' is missing"):
        import_model("bert-no-tokenizer", "v1", folder, ImportOptions())
    (folder / "model.yaml").write_text("task: tensors\ntokenizer: {file: ../tokenizer.json}\n")
    with pytest.raises(ModelRefused, match="outside the model's folder"):
        import_model("bert-outside", "v1", folder, ImportOptions())


def test_every_heavy_model_has_its_batching_set_for_its_cost():
    """The default 50 ms budget is shorter than one call of the networks: each has a budget of its own."""
    config = load_serving(HEAVY_CONFIG)
    assert set(config.models) == set(BUILDERS) and config.intra_op_threads == 2  # the networks: threads
    assert config.batch_settings("heavy-trees-xgb").intra_op_threads == 1  # the trees: workers
    for name in BUILDERS:
        assert config.models[name].batching.max_latency_ms is not None
    for name in ("heavy-resnet-onnx", "heavy-resnet-torch", "heavy-bert-onnx"):
        assert config.batch_settings(name).max_latency_ms >= 1000
