"""Real model files made from scikit-learn's bundled data sets (iris, wine, breast cancer, diabetes),
each with the framework's own predictions on held-out rows to compare the served answers with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.model_selection import train_test_split

TEXTS = {
    0: ["the striker scored a late goal", "the keeper saved the penalty", "a hat trick in the derby", "the league match ended in a draw"],
    1: ["the central bank raised interest rates", "shares fell on weak earnings", "the market rallied after the report", "bond yields rose again"],
    2: ["the new phone has a faster chip", "the software update fixes the bug", "a laptop with a brighter screen", "the app crashed on start"],
}
CLASS_NAMES = ["sport", "finance", "tech"]


@dataclass
class Made:
    """A model file (or folder), rows to send it and what its framework answers for them."""

    path: Path
    x: Any
    expected: dict[str, np.ndarray]
    model: Any = None
    """The fitted estimator or network itself, for the savers that take one (BentoML's)."""


def split(loader) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = loader(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x.astype(np.float32), y, test_size=0.2, random_state=0)
    return x_tr, x_te, y_tr, y_te


def _scaled_logistic_skops(folder: Path, load: Callable, file: str, max_iter: int) -> Made:
    """A classifier as users export them from scikit-learn: scaling and logistic regression in one pipeline."""
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_tr, x_te, y_tr, _ = split(load)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter)).fit(x_tr, y_tr)
    path = folder / file
    sio.dump(model, path)
    return Made(path, x_te[:10], {"probabilities": model.predict_proba(x_te[:10]), "label": model.predict(x_te[:10])}, model)


def iris_skops(folder: Path) -> Made:
    return _scaled_logistic_skops(folder, load_iris, "iris.skops", 500)


def wine_forest_skops(folder: Path) -> Made:
    """A tree model: skops does not trust sklearn.tree._tree.Tree by default."""
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    x_tr, x_te, y_tr, _ = split(load_wine)
    model = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(x_tr, y_tr)
    path = folder / "wine.skops"
    sio.dump(model, path)
    return Made(path, x_te[:10], {"probabilities": model.predict_proba(x_te[:10]), "label": model.predict(x_te[:10])}, model)


def cancer_skops(folder: Path) -> Made:
    """A binary classifier on breast cancer."""
    return _scaled_logistic_skops(folder, load_breast_cancer, "cancer.skops", 1000)


def diabetes_ridge(folder: Path, fmt: str = "skops") -> Made:
    from sklearn.linear_model import Ridge

    x_tr, x_te, y_tr, _ = split(load_diabetes)
    model = Ridge().fit(x_tr, y_tr)
    path = folder / f"diabetes.{fmt}"
    if fmt == "skops":
        import skops.io as sio

        sio.dump(model, path)
    else:
        import joblib

        joblib.dump(model, path)
    return Made(path, x_te[:10], {"predictions": model.predict(x_te[:10])}, model)


def text_classifier(folder: Path) -> Made:
    """TF-IDF + logistic regression on short texts; classes are named by strings."""
    import skops.io as sio
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts = [t for c in TEXTS for t in TEXTS[c]]
    labels = [CLASS_NAMES[c] for c in TEXTS for _ in TEXTS[c]]
    model = make_pipeline(TfidfVectorizer(), LogisticRegression(C=10.0, max_iter=500)).fit(texts, labels)
    path = folder / "topics.skops"
    sio.dump(model, path)
    x = np.array(["the goal in the match", "interest rates and shares", "a faster laptop chip"], dtype=object)
    return Made(path, x, {"probabilities": model.predict_proba(x), "label": model.predict(x)}, model)


def cancer_xgboost(folder: Path, suffix: str = ".json") -> Made:
    import xgboost as xgb

    x_tr, x_te, y_tr, _ = split(load_breast_cancer)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                        xgb.DMatrix(x_tr, label=y_tr), num_boost_round=10)
    path = folder / f"cancer{suffix}"
    booster.save_model(str(path))
    p = booster.predict(xgb.DMatrix(x_te[:10]))
    return Made(path, x_te[:10], {"probabilities": np.stack([1 - p, p], axis=1), "label": (p > 0.5).astype(np.int64)})


def wine_lightgbm(folder: Path) -> Made:
    import lightgbm as lgb

    x_tr, x_te, y_tr, _ = split(load_wine)
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5},
                        lgb.Dataset(x_tr, y_tr), num_boost_round=10)
    path = folder / "wine.txt"
    booster.save_model(str(path))
    p = booster.predict(x_te[:10])
    return Made(path, x_te[:10], {"probabilities": p, "label": p.argmax(1)})


def diabetes_lightgbm(folder: Path) -> Made:
    import lightgbm as lgb

    x_tr, x_te, y_tr, _ = split(load_diabetes)
    booster = lgb.train({"objective": "regression", "verbose": -1, "num_threads": 1}, lgb.Dataset(x_tr, y_tr), num_boost_round=10)
    path = folder / "diabetes.txt"
    booster.save_model(str(path))
    return Made(path, x_te[:10], {"predictions": booster.predict(x_te[:10])})


def iris_mlp():
    import torch

    torch.manual_seed(0)
    x_tr, x_te, y_tr, _ = split(load_iris)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net.eval(), x_te[:10]


def iris_torchscript(folder: Path) -> Made:
    """An MLP that returns logits; its model.yaml declares the input, the class names and softmax."""
    import torch

    net, x = iris_mlp()
    path = folder / "iris_mlp.pt"
    torch.jit.script(net).save(str(path))
    with torch.inference_mode():
        probs = torch.softmax(net(torch.from_numpy(x)), -1).numpy()
    (folder / "model.yaml").write_text(
        "task: classification\nsoftmax: true\nclass_names: [setosa, versicolor, virginica]\n"
        "inputs:\n  - {name: measurements, datatype: FP32, shape: [-1, 4]}\n")
    names = np.array(["setosa", "versicolor", "virginica"], dtype=object)
    return Made(path, x, {"probabilities": probs, "label": names[probs.argmax(1)]})


def wine_pt2(folder: Path, dynamic: bool = True) -> Made:
    """A torch.export program of an MLP on wine with a dynamic (or a fixed) batch dimension."""
    import torch

    torch.manual_seed(0)
    x_tr, x_te, _, _ = split(load_wine)
    net = torch.nn.Sequential(torch.nn.Linear(13, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    shapes = {"input": {0: torch.export.Dim("batch", min=1, max=1024)}} if dynamic else None
    program = torch.export.export(net, (torch.from_numpy(x_tr[:4]),), dynamic_shapes=shapes)
    path = folder / ("wine.pt2" if dynamic else "wine_fixed.pt2")
    torch.export.save(program, str(path))
    x = x_te[:4]
    with torch.inference_mode():
        return Made(path, x, {"output": net(torch.from_numpy(x)).numpy()}, net)


def iris_onnx(folder: Path) -> Made:
    """An MLP exported to ONNX with one input and its logits as the one output (served as a tensor)."""
    import torch

    net, x = iris_mlp()
    path = folder / "iris.onnx"
    torch.onnx.export(net, (torch.zeros(2, 4),), str(path), input_names=["measurements"], output_names=["logits"],
                      dynamic_axes={"measurements": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    with torch.inference_mode():
        return Made(path, x, {"logits": net(torch.from_numpy(x)).numpy()})


class TwoByTwo:
    """A network with two inputs (measurements, a scale) and two outputs (scores, an embedding)."""

    @staticmethod
    def make():
        import torch

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encode = torch.nn.Linear(4, 6)
                self.head = torch.nn.Linear(6, 3)

            def forward(self, measurements, scale):
                embedding = torch.tanh(self.encode(measurements * scale))
                return self.head(embedding), embedding

        torch.manual_seed(0)
        return Net().eval()


def iris_onnx_two_by_two(folder: Path) -> Made:
    import torch

    net = TwoByTwo.make()
    _, x_te, _, _ = split(load_iris)
    path = folder / "two.onnx"
    torch.onnx.export(net, (torch.zeros(2, 4), torch.ones(2, 1)), str(path), input_names=["measurements", "scale"],
                      output_names=["scores", "embedding"], dynamic_axes={n: {0: "batch"} for n in ("measurements", "scale", "scores", "embedding")},
                      dynamo=False)
    x = {"measurements": x_te[:5], "scale": np.full((5, 1), 0.5, dtype=np.float32)}
    with torch.inference_mode():
        scores, embedding = net(torch.from_numpy(x["measurements"]), torch.from_numpy(x["scale"]))
    return Made(path, x, {"scores": scores.numpy(), "embedding": embedding.numpy()})


def pickle_bomb(folder: Path, gigabytes: float = 10.0, name: str = "bomb.joblib") -> Path:
    """A pickle that allocates `gigabytes` of memory when it is loaded."""
    import pickle

    class Bomb:
        def __reduce__(self):
            return (np.ones, ((int(gigabytes * 2**30) // 8,),))

    path = folder / name
    path.write_bytes(pickle.dumps(Bomb()))
    return path


def pickle_calling(folder: Path, func, args: tuple, name: str) -> Path:
    """A pickle that calls `func(*args)` when it is loaded (a crash, a hang, a peek at the environment)."""
    import pickle

    class Call:
        def __reduce__(self):
            return (func, args)

    path = folder / name
    path.write_bytes(pickle.dumps(Call()))
    return path


def tables_onnx(folder: Path, mb: float, tables: int) -> Made:
    """An ONNX graph whose weights are `tables` lookup tables of `mb` MB in all, each row 16 floats: its memory is its
    weights, held in allocations of a network layer's size. One float input per row, truncated to the row it picks
    (negative values count from the end)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rows = max(1, int(mb * 2**20) // (4 * 16 * tables))
    weights = [np.random.default_rng(k).normal(size=(rows, 16)).astype(np.float32) for k in range(tables)]
    nodes = [helper.make_node("Cast", ["x"], ["index"], to=TensorProto.INT64)]
    nodes += [helper.make_node("Gather", [f"table{k}", "index"], [f"row{k}"], axis=0) for k in range(tables)]
    nodes += [helper.make_node("Sum", [f"row{k}" for k in range(tables)], ["summed"]),
              helper.make_node("Flatten", ["summed"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "tables", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
                              [numpy_helper.from_array(w, f"table{k}") for k, w in enumerate(weights)])
    path = folder / "tables.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = np.array([[0.0], [1.5], [-1.0]], dtype=np.float32)
    return Made(path, x, {"y": sum(w[x[:, 0].astype(np.int64)] for w in weights)})
