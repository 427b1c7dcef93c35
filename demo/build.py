"""Train the demo models and bring them into the BentoML store through the importer, as a user's model comes in.

    python -m demo.build            # build what is missing
    python -m demo.build --force    # rebuild everything

Each model is written to a file in a served format (the scikit-learn pipelines as skops, the PyTorch
networks as TorchScript, their exports as ONNX) beside a model.yaml that declares what the file does
not say (input names, value ranges, the task), then imported with `models.importer.import_model`:
the same checks, probe load and metadata as a user's deploy, with `source.origin: demo`. The operator
builds these files, so the TorchScript format (which can run code when loaded) is allowed for them.
TorchScript rather than `.pt2`: it runs the digits network faster, and dynamic int8 modules do not export.

Nothing is downloaded: digits ship inside scikit-learn and sequences come from the rule in
`demo.data`. Optimized variants (`v2-int8`, `v2-opt`) derive from a stored float version and record
which one, and their held-out accuracy delta against it, in their metadata. Every version declares
its inference modes; all three except the ensembles (no batch jobs). A demo version in the store that
did not come through the importer was saved by an earlier build, in a layout no runner reads any
more, and is rebuilt.

Imports run one at a time on a background thread while the next model trains: each probe load is a
subprocess, so on two cores the probes overlap the training instead of adding to it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import bentoml
import numpy as np
import onnxruntime as ort
import torch
import yaml
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from torch import nn

from demo import data
from demo.nets import ARCHITECTURES
from demo.quantize import optimize_onnx, quantize_torch, torch_quantized_layers
from models import store
from models.importer import ImportOptions, import_model
from models.quantize import quantize_onnx
from models.settings import ImportSettings
from models.signature import Signature, TensorSpec, classifier_outputs

DIGITS_ROW = TensorSpec("pixels", "FP32", (-1, 64), min_value=0.0, max_value=16.0)
DIGITS_IMAGE = TensorSpec("pixels", "FP32", (-1, 1, 8, 8), min_value=0.0, max_value=16.0)
SEQ_TOKENS = TensorSpec("tokens", "INT64", (-1, -1), min_value=0, max_value=data.SEQ_VOCAB)
SKOPS_FILE, TORCHSCRIPT_FILE, ONNX_FILE = "model.skops", "model.pt", "model.onnx"
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


class Importer:
    """Imports demo models one at a time on a background thread. A model built in this run is read from its
    own folder, so the next one never waits for an import; loading a stored version waits for its import."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.settings = ImportSettings(allow_code_formats=True)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="demo-import")
        self._pending: dict[str, Future[bentoml.Model]] = {}
        self._built: dict[str, tuple[Path, dict[str, Any]]] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._pool.shutdown(wait=True, cancel_futures=exc is not None)

    def folder(self, tag: str) -> Path:
        """An empty folder for the files of `tag`."""
        path = self.workdir / tag.replace(":", "-")
        path.mkdir()
        return path

    def submit(self, tag: str, folder: Path, declared: dict[str, Any], accuracy: float, extra: dict[str, Any] | None = None) -> None:
        """Write `declared` as the folder's model.yaml and import the folder as `tag`."""
        (folder / "model.yaml").write_text(yaml.safe_dump(declared, sort_keys=False))
        name, version = tag.split(":")
        metadata = {"accuracy": round(float(accuracy), 4), **(extra or {})}
        options = ImportOptions(allow_code=True, origin="demo", metadata=metadata)
        self._built[tag] = (folder, metadata)
        self._pending[tag] = self._pool.submit(import_model, name, version, folder, options, self.settings)

    def file(self, tag: str, name: str) -> Path:
        """A file of `tag`: from its folder when built in this run, else from the store."""
        built = self._built.get(tag)
        return built[0] / name if built else Path(bentoml.models.get(tag).path_of(name))

    def metadata(self, tag: str) -> dict[str, Any]:
        """What this build records about `tag` (accuracy, architecture, ...), or its stored metadata."""
        built = self._built.get(tag)
        return built[1] if built else dict(bentoml.models.get(tag).info.metadata)

    def get(self, tag: str) -> bentoml.Model:
        """The stored version, once its import (if one is running) is done."""
        pending = self._pending.get(tag)
        return pending.result() if pending is not None else bentoml.models.get(tag)

    def wait(self) -> None:
        """Every import done; the first failure is raised, naming its version."""
        for tag, pending in self._pending.items():
            try:
                pending.result()
            except Exception as exc:
                raise RuntimeError(f"importing the demo model {tag} failed: {exc}") from exc


def classifier(inputs: TensorSpec, n_classes: int | None = None, **more: Any) -> dict[str, Any]:
    """A classifier's model.yaml: its input with names and value range, and the model's own output when
    the file does not say it (TorchScript)."""
    declared: dict[str, Any] = {"task": "classification", "inputs": [inputs.to_metadata()]}
    if n_classes is not None:
        declared["outputs"] = [{"name": "probabilities", "datatype": "FP32", "shape": [-1, n_classes]}]
    return {**declared, **more}


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


def save_torchscript(importer: Importer, tag: str, model: nn.Module, declared: dict[str, Any], acc: float,
                     extra: dict[str, Any]) -> None:
    folder = importer.folder(tag)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated")  # torch.jit: TorchScript is still the faster format here
        torch.jit.script(model).save(str(folder / TORCHSCRIPT_FILE))
    importer.submit(tag, folder, declared, acc, extra)


def eager_module(importer: Importer, tag: str) -> nn.Module:
    """The stored network as its Python class again (export and quantization need it): the architecture its
    metadata names, with the TorchScript file's weights."""
    meta = importer.metadata(tag)
    module = ARCHITECTURES[meta["architecture"]](**meta["arch_args"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated")
        module.load_state_dict(torch.jit.load(importer.file(tag, TORCHSCRIPT_FILE), map_location="cpu").state_dict())
    return module.eval()


def build_sklearn(importer: Importer, version: str) -> float:
    from models.formats.skops_io import sio  # imports every scikit-learn module: only when a pipeline is saved

    split = data.digits()
    pipe = sklearn_pipeline(version).fit(split.x_train, split.y_train)
    acc = float(pipe.score(split.x_test, split.y_test))
    tag = f"digits-sklearn:{version}"
    folder = importer.folder(tag)
    sio.dump(pipe, folder / SKOPS_FILE)
    importer.submit(tag, folder, classifier(DIGITS_ROW), acc)
    return acc


def _digit_images(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, 1, 8, 8)


def build_torch(importer: Importer, version: str) -> float:
    split = data.digits()
    recipe = DIGITS_TORCH[version]
    model = train_torch(recipe, _digit_images(split.x_train), split.y_train)
    acc = torch_accuracy(model, _digit_images(split.x_test), split.y_test)
    save_torchscript(importer, f"digits-torch:{version}", model, classifier(DIGITS_IMAGE, 10), acc,
                     {"architecture": recipe.arch, "arch_args": recipe.arch_args})
    return acc


def build_onnx(importer: Importer, version: str) -> float:
    """The digits-torch network of the same version, exported to ONNX with a dynamic batch axis."""
    split = data.digits()
    model = eager_module(importer, f"digits-torch:{version}")
    tag = f"digits-onnx:{version}"
    path = importer.folder(tag) / ONNX_FILE
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
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
    importer.submit(tag, path.parent, classifier(DIGITS_IMAGE), acc, {"exported_from": f"digits-torch:{version}"})
    return acc


def _derived_from(importer: Importer, tag: str, accuracy: float) -> dict:
    """Metadata of an optimized variant: its float original and the held-out accuracy it gained or lost."""
    original = importer.metadata(tag)["accuracy"]
    return {"derived_from": tag, "accuracy_delta": round(accuracy - original, 4) + 0.0}  # + 0.0: no "-0.0"


def build_torch_int8(importer: Importer, version: str) -> float:
    """`digits-torch:<base>-int8`: Linear layers in dynamic int8, served on the CPU (torch has int8 kernels there only)."""
    split = data.digits()
    base = f"digits-torch:{version.split('-')[0]}"
    original = importer.metadata(base)
    model = quantize_torch(eager_module(importer, base))
    acc = torch_accuracy(model, _digit_images(split.x_test), split.y_test)
    extra = {"architecture": original["architecture"], "arch_args": original["arch_args"], "quantization": "dynamic-int8",
             "quantized_layers": torch_quantized_layers(model), **_derived_from(importer, base, acc)}
    save_torchscript(importer, f"digits-torch:{version}", model, classifier(DIGITS_IMAGE, 10, device="cpu"), acc, extra)
    return acc


def build_onnx_variant(importer: Importer, version: str) -> float:
    """`digits-onnx:<base>-int8`: dynamic int8 weights from onnxruntime's quantizer. `<base>-opt`: the graph after
    onnxruntime's portable (extended) rewrites, saved, with the session options the runner measured best."""
    from runners.onnx_runner import SessionSettings

    split = data.digits()
    base, kind = version.split("-")
    base_tag, tag = f"digits-onnx:{base}", f"digits-onnx:{version}"
    src, path = importer.file(base_tag, ONNX_FILE), importer.folder(tag) / ONNX_FILE
    if kind == "int8":
        extra = {"quantization": "dynamic-int8", "quantized_layers": quantize_onnx(src, path)}
    else:
        extra = {"graph_optimization": "extended, offline", "graph_ops": optimize_onnx(src, path, "extended"),
                 "session_options": asdict(SessionSettings())}
    session = ort.InferenceSession(str(path), SessionSettings.for_model(extra).to_ort(), providers=["CPUExecutionProvider"])
    acc = float((session.run(None, {"pixels": _digit_images(split.x_test)})[0].argmax(-1) == split.y_test).mean())
    importer.submit(tag, path.parent, classifier(DIGITS_IMAGE), acc, {**extra, **_derived_from(importer, base_tag, acc)})
    return acc


def build_ensemble(importer: Importer, version: str) -> float:
    """Soft vote of the three digits models of the same version; members are served models.

    Saved to the store directly, not imported: an ensemble is no model file but a list of served
    versions, which the importer's probe (a subprocess that opens one file, with no access to the
    store) cannot load, and which `runners.ensemble_runner` runs through the members' own runners.
    """
    from runners.loader import load_runner

    split = data.digits()
    members = {f"{name}:{version}": weight for name, weight in ENSEMBLE_WEIGHTS.items()}
    probs = 0.0
    for tag, weight in members.items():
        importer.get(tag)
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


def build_seq(importer: Importer, version: str) -> float:
    recipe = SEQ_TORCH[version]
    x_tr, y_tr = data.sequences(12000, seed=10)
    x_te, y_te = data.sequences(2000, seed=11)
    model = train_torch(recipe, x_tr, y_tr)
    acc = torch_accuracy(model, x_te, y_te)
    save_torchscript(importer, f"seq-torch:{version}", model, classifier(SEQ_TOKENS, data.SEQ_GROUPS), acc,
                     {"architecture": recipe.arch, "arch_args": recipe.arch_args})
    return acc


# Order matters: ONNX exports a torch model built before it, variants derive from versions built before them,
# the ensemble loads stored members (the one wait for imports).
BUILDERS: list[tuple[str, Callable[[Importer, str], float]]] = [
    *[(f"digits-sklearn:{v}", build_sklearn) for v in ("v1", "v2")],
    *[(f"digits-torch:{v}", build_torch) for v in ("v1", "v2")],
    ("seq-torch:v1", build_seq),
    *[(f"digits-onnx:{v}", build_onnx) for v in ("v1", "v2")],
    ("digits-torch:v2-int8", build_torch_int8),
    *[(f"digits-onnx:{v}", build_onnx_variant) for v in ("v2-int8", "v2-opt")],
    *[(f"digits-ensemble:{v}", build_ensemble) for v in ("v1", "v2")],
]


def is_current(tag: str) -> bool:
    """In the store as this build makes it: imported as a demo model, or an ensemble (saved directly)."""
    if not store.exists(tag):
        return False
    meta = bentoml.models.get(tag).info.metadata
    return meta.get("framework") == "ensemble" or (meta.get("source") or {}).get("origin") == "demo"


def build_all(force: bool = False, log: Callable[[str], None] = print) -> dict[str, float]:
    """Build every demo model that is not in the store yet; returns tag -> held-out accuracy."""
    torch.set_num_threads(1)  # small networks: one thread is as fast, and immune to a busy machine
    results: dict[str, float] = {}
    start_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rtserve-demo-") as tmp, Importer(Path(tmp)) as importer:
        for i, (tag, builder) in enumerate(BUILDERS, 1):
            prefix = f"[{i}/{len(BUILDERS)}] {tag:<22}"
            if is_current(tag) and not force:
                log(f"{prefix} already in the store, skipped")
                continue
            if store.exists(tag):
                store.delete(tag)
            log(f"{prefix} training, then importing in the background ...")
            start = time.perf_counter()
            acc = builder(importer, tag.split(":")[1])
            results[tag] = acc
            log(f"{prefix} held-out accuracy {acc:.4f}  ({time.perf_counter() - start:.1f} s)")
        if results:
            log("waiting for the last imports (each is probed in a subprocess first) ...")
        importer.wait()
    if results:
        log(f"built and imported {len(results)} models in {time.perf_counter() - start_all:.1f} s")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild models that already exist")
    args = parser.parse_args(argv)
    build_all(force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
