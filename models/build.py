"""Train the demo models and save them, with versions and metadata, to the BentoML store.

    python -m models.build            # build what is missing
    python -m models.build --force    # rebuild everything

Nothing is downloaded: digits ship inside scikit-learn and sequences come from the rule
in `models.data`. Optimized variants (`v2-int8`, `v2-opt`) derive from a saved float version
and record which one, and their held-out accuracy delta against it, in their metadata.
Every version declares its inference modes; all three except the ensembles (no batch jobs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import bentoml
import joblib
import numpy as np
import onnxruntime as ort
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from torch import nn

from models import data, store
from models.nets import ARCHITECTURES
from models.quantize import optimize_onnx, quantize_onnx, quantize_torch, torch_quantized_layers
from models.signature import Signature, TensorSpec, classifier_outputs

DIGITS_ROW = TensorSpec("pixels", "FP32", (-1, 64), min_value=0.0, max_value=16.0)
DIGITS_IMAGE = TensorSpec("pixels", "FP32", (-1, 1, 8, 8), min_value=0.0, max_value=16.0)
SEQ_TOKENS = TensorSpec("tokens", "INT64", (-1, -1), min_value=0, max_value=data.SEQ_VOCAB)
ENSEMBLE_WEIGHTS = {"digits-sklearn": 0.3, "digits-torch": 0.35, "digits-onnx": 0.35}
ENSEMBLE_MODES = ("real_time", "streaming")
"""A batch job on an ensemble would run all three members flat out at once; bulk work goes to a member."""


@dataclass(frozen=True)
class TorchRecipe:
    arch: str
    arch_args: dict
    epochs: int
    lr: float
    seed: int


DIGITS_TORCH = {
    "v1": TorchRecipe("DigitsCNN", {"channels": 16, "dropout": 0.0}, epochs=40, lr=3e-3, seed=1),
    "v2": TorchRecipe("DigitsCNN", {"channels": 24, "dropout": 0.2}, epochs=60, lr=2e-3, seed=2),
}
SEQ_TORCH = {"v1": TorchRecipe("SeqClassifier", {"dim": 32, "hidden": 64}, epochs=12, lr=3e-3, seed=3)}


def sklearn_pipeline(version: str) -> Pipeline:
    """v1: logistic regression on min-max scaled pixels; v2: standardised, PCA to 40 components, stronger regularisation."""
    if version == "v1":
        return make_pipeline(MinMaxScaler(), LogisticRegression(C=1.0, max_iter=2000))
    return make_pipeline(StandardScaler(), PCA(n_components=40, random_state=0), LogisticRegression(C=0.1, max_iter=2000))


def train_torch(recipe: TorchRecipe, x: np.ndarray, y: np.ndarray) -> nn.Module:
    torch.manual_seed(recipe.seed)
    model = ARCHITECTURES[recipe.arch](**recipe.arch_args)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(recipe.seed)
    model.train()
    for _ in range(recipe.epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model.logits(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return model.eval()


def torch_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.inference_mode():
        return float((model(torch.from_numpy(x)).argmax(-1).numpy() == y).mean())


def save_torch(tag: str, recipe: TorchRecipe, model: nn.Module, task: str, sig: Signature, acc: float) -> None:
    store.save(
        tag,
        framework="pytorch",
        task=task,
        signature=sig,
        accuracy=acc,
        write=lambda d: torch.save(model.state_dict(), d / "state_dict.pt"),
        extra={"architecture": recipe.arch, "arch_args": recipe.arch_args},
    )


def build_sklearn(version: str) -> float:
    split = data.digits()
    pipe = sklearn_pipeline(version).fit(split.x_train, split.y_train)
    acc = float(pipe.score(split.x_test, split.y_test))
    sig = Signature((DIGITS_ROW,), classifier_outputs(10))
    store.save(
        f"digits-sklearn:{version}",
        framework="sklearn",
        task="classification",
        signature=sig,
        accuracy=acc,
        write=lambda d: joblib.dump(pipe, d / "model.joblib"),
    )
    return acc


def _digit_images(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, 1, 8, 8)


def build_torch(version: str) -> float:
    split = data.digits()
    recipe = DIGITS_TORCH[version]
    model = train_torch(recipe, _digit_images(split.x_train), split.y_train)
    acc = torch_accuracy(model, _digit_images(split.x_test), split.y_test)
    save_torch(f"digits-torch:{version}", recipe, model, "classification", Signature((DIGITS_IMAGE,), classifier_outputs(10)), acc)
    return acc


def build_onnx(version: str) -> float:
    """The digits-torch network of the same version, exported to ONNX with a dynamic batch axis."""
    import onnxruntime as ort

    from runners.torch_runner import load_torch_module

    split = data.digits()
    model = load_torch_module(f"digits-torch:{version}", "cpu")
    sig = Signature((DIGITS_IMAGE,), classifier_outputs(10))

    with tempfile.TemporaryDirectory(prefix="rtserve-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            model,
            (torch.zeros(2, 1, 8, 8),),
            str(path),
            input_names=["pixels"],
            output_names=["probabilities"],
            dynamic_axes={"pixels": {0: "batch"}, "probabilities": {0: "batch"}},
            dynamo=False,
        )
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        probs = session.run(None, {"pixels": _digit_images(split.x_test)})[0]
        acc = float((probs.argmax(-1) == split.y_test).mean())
        store.save(
            f"digits-onnx:{version}",
            framework="onnx",
            task="classification",
            signature=sig,
            accuracy=acc,
            write=lambda d: shutil.copyfile(path, d / "model.onnx"),
            extra={"exported_from": f"digits-torch:{version}"},
        )
    return acc


def _derived_from(tag: str, accuracy: float) -> dict:
    """Metadata of an optimized variant: its float original and the held-out accuracy it gained or lost."""
    original = bentoml.models.get(tag).info.metadata["accuracy"]
    return {"derived_from": tag, "accuracy_delta": round(accuracy - original, 4) + 0.0}  # + 0.0: no "-0.0"


def build_torch_int8(version: str) -> float:
    """`digits-torch:<base>-int8`: Linear layers in dynamic int8, saved as the quantized module's state dict."""
    from runners.torch_runner import load_torch_module

    split = data.digits()
    base = f"digits-torch:{version.split('-')[0]}"
    original = bentoml.models.get(base).info.metadata
    model = quantize_torch(load_torch_module(base, "cpu"))
    acc = torch_accuracy(model, _digit_images(split.x_test), split.y_test)
    store.save(
        f"digits-torch:{version}",
        framework="pytorch",
        task="classification",
        signature=Signature.from_metadata(original),
        accuracy=acc,
        write=lambda d: torch.save(model.state_dict(), d / "state_dict.pt"),
        extra={"architecture": original["architecture"], "arch_args": original["arch_args"], "quantization": "dynamic-int8",
               "quantized_layers": torch_quantized_layers(model), **_derived_from(base, acc)},
    )
    return acc


def build_onnx_variant(version: str) -> float:
    """`digits-onnx:<base>-int8`: dynamic int8 weights from onnxruntime's quantizer. `<base>-opt`: the graph after
    onnxruntime's portable (extended) rewrites, saved, with the session options the runner measured best."""
    from runners.onnx_runner import SessionSettings

    split = data.digits()
    base, kind = version.split("-")
    base_tag = f"digits-onnx:{base}"
    with tempfile.TemporaryDirectory(prefix="rtserve-onnx-") as tmp:
        src, path = Path(bentoml.models.get(base_tag).path_of("model.onnx")), Path(tmp) / "model.onnx"
        if kind == "int8":
            extra = {"quantization": "dynamic-int8", "quantized_layers": quantize_onnx(src, path)}
        else:
            extra = {"graph_optimization": "extended, offline", "graph_ops": optimize_onnx(src, path, "extended"),
                     "session_options": asdict(SessionSettings())}
        session = ort.InferenceSession(str(path), SessionSettings.for_model(extra).to_ort(), providers=["CPUExecutionProvider"])
        acc = float((session.run(None, {"pixels": _digit_images(split.x_test)})[0].argmax(-1) == split.y_test).mean())
        store.save(
            f"digits-onnx:{version}",
            framework="onnx",
            task="classification",
            signature=Signature.from_metadata(bentoml.models.get(base_tag).info.metadata),
            accuracy=acc,
            write=lambda d: shutil.copyfile(path, d / "model.onnx"),
            extra={**extra, **_derived_from(base_tag, acc)},
        )
    return acc


def build_ensemble(version: str) -> float:
    """Soft vote of the three digits models of the same version; members are served models."""
    from runners.loader import load_runner

    split = data.digits()
    members = {f"{name}:{version}": weight for name, weight in ENSEMBLE_WEIGHTS.items()}
    probs = 0.0
    for tag, weight in members.items():
        runner = load_runner(tag)
        probs = probs + weight * runner.run(split.x_test.reshape(-1, *runner.input_spec.row_shape))["probabilities"]
    acc = float((np.asarray(probs).argmax(-1) == split.y_test).mean())
    store.save(
        f"digits-ensemble:{version}",
        framework="ensemble",
        task="classification",
        signature=Signature((DIGITS_ROW,), classifier_outputs(10)),
        accuracy=acc,
        write=lambda d: (d / "ensemble.json").write_text(json.dumps({"members": members}, indent=2)),
        extra={"members": members},
        modes=ENSEMBLE_MODES,
    )
    return acc


def build_seq(version: str) -> float:
    recipe = SEQ_TORCH[version]
    x_tr, y_tr = data.sequences(12000, seed=10)
    x_te, y_te = data.sequences(2000, seed=11)
    model = train_torch(recipe, x_tr, y_tr)
    acc = torch_accuracy(model, x_te, y_te)
    sig = Signature((SEQ_TOKENS,), classifier_outputs(data.SEQ_GROUPS))
    save_torch(f"seq-torch:{version}", recipe, model, "sequence-classification", sig, acc)
    return acc


# Order matters: ONNX exports a saved torch model, variants derive from saved versions, the ensemble loads saved members.
BUILDERS: list[tuple[str, Callable[[str], float]]] = [
    *[(f"digits-sklearn:{v}", build_sklearn) for v in ("v1", "v2")],
    *[(f"digits-torch:{v}", build_torch) for v in ("v1", "v2")],
    *[(f"digits-onnx:{v}", build_onnx) for v in ("v1", "v2")],
    ("digits-torch:v2-int8", build_torch_int8),
    *[(f"digits-onnx:{v}", build_onnx_variant) for v in ("v2-int8", "v2-opt")],
    *[(f"digits-ensemble:{v}", build_ensemble) for v in ("v1", "v2")],
    ("seq-torch:v1", build_seq),
]


def build_all(force: bool = False, log: Callable[[str], None] = print) -> dict[str, float]:
    """Build every demo model that is not in the store yet; returns tag -> held-out accuracy."""
    torch.set_num_threads(1)  # small networks: one thread is as fast, and immune to a busy machine
    results: dict[str, float] = {}
    for i, (tag, builder) in enumerate(BUILDERS, 1):
        prefix = f"[{i}/{len(BUILDERS)}] {tag:<22}"
        if store.exists(tag):
            if not force:
                log(f"{prefix} already in the store, skipped")
                continue
            store.delete(tag)
        start = time.perf_counter()
        acc = builder(tag.split(":")[1])
        results[tag] = acc
        log(f"{prefix} held-out accuracy {acc:.4f}  ({time.perf_counter() - start:.1f} s)")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild models that already exist")
    args = parser.parse_args(argv)
    build_all(force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
