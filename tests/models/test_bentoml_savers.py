"""Models saved by BentoML's own savers are imported by the `module` in their model.yaml (not the file's
extension) and served with the answers of their framework; the pickled ones only when code is allowed."""

from __future__ import annotations

from pathlib import Path

import bentoml
import numpy as np
import pytest

from core.errors import CodeFormatNotAllowed
from models.formats.boosters import alias_xgboost_cpu
from models.importer import ImportOptions, import_model
from runners.loader import load_runner
from tests.models import makers
from tests.models.test_formats import assert_same

PLAIN = ImportOptions()


def imported(name, saved, settings, options=PLAIN):
    model = import_model(name, "v1", str(saved.tag), options, settings)
    return model.info.metadata, load_runner(f"{name}:v1", "cpu")


def test_lightgbm_text_in_a_ubj_file(tmp_path, name, settings):
    import lightgbm as lgb

    made = makers.wine_lightgbm(tmp_path)
    saved = bentoml.lightgbm.save_model(f"{name}-src", lgb.Booster(model_file=str(made.path)))
    assert sorted(p.name for p in Path(saved.path).iterdir()) == ["model.yaml", "saved_model.ubj"]
    meta, runner = imported(name, saved, settings)
    assert meta["format"] == "lightgbm" and meta["source"]["module"] == "bentoml.lightgbm"
    assert_same(runner.run(made.x), made.expected)


def test_xgboost_saver_with_xgboost_cpu(tmp_path, name, settings):
    import xgboost as xgb

    made = makers.cancer_xgboost(tmp_path)
    alias_xgboost_cpu()  # BentoML's saver asks for the `xgboost` distribution by name
    saved = bentoml.xgboost.save_model(f"{name}-src", xgb.Booster(model_file=str(made.path)))
    meta, runner = imported(name, saved, settings)
    assert meta["format"] == "xgboost"
    assert_same(runner.run(made.x), made.expected)


def test_onnx_and_torchscript_savers(tmp_path, name, settings):
    import onnx
    import torch

    made = makers.iris_onnx_two_by_two(tmp_path)
    saved = bentoml.onnx.save_model(f"{name}-onnx", onnx.load(str(made.path)))
    _, runner = imported(name + "-onnx", saved, settings)
    assert_same(runner.run(made.x), made.expected)
    script = makers.iris_torchscript(tmp_path)
    saved = bentoml.torchscript.save_model(f"{name}-ts", torch.jit.load(str(script.path)))
    options = ImportOptions(allow_code=True, config=tmp_path / "model.yaml")
    meta, runner = imported(name + "-ts", saved, settings, options)
    assert meta["format"] == "torchscript"
    assert_same(runner.run(script.x), script.expected)


def test_sklearn_and_pytorch_savers_are_pickles(tmp_path, name, settings):
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    x_tr, x_te, y_tr, _ = makers.split(load_breast_cancer)
    model = LogisticRegression(max_iter=5000).fit(x_tr, y_tr)
    saved = bentoml.sklearn.save_model(f"{name}-sk", model)
    with pytest.raises(CodeFormatNotAllowed):
        imported(name + "-sk", saved, settings)
    meta, runner = imported(name + "-sk", saved, settings, ImportOptions(allow_code=True))
    assert meta["format"] == "pickle" and meta["sha256"]["saved_model.pkl"]
    assert_same(runner.run(x_te[:10]), {"probabilities": model.predict_proba(x_te[:10]), "label": model.predict(x_te[:10])})
    net, x = makers.iris_mlp()
    saved = bentoml.pytorch.save_model(f"{name}-pt", net)
    (tmp_path / "net.yaml").write_text("inputs:\n  - {name: x, datatype: FP32, shape: [-1, 4]}\ntask: classification\nsoftmax: true\n")
    meta, runner = imported(name + "-pt", saved, settings, ImportOptions(allow_code=True, config=tmp_path / "net.yaml"))
    import torch

    with torch.inference_mode():
        probs = torch.softmax(net(torch.from_numpy(x)), -1).numpy()
    assert meta["format"] == "torch_pickle"
    assert_same(runner.run(x), {"probabilities": probs, "label": probs.argmax(1)})
    assert np.isclose(runner.run(x)["probabilities"].sum(1), 1).all()
