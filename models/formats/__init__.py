"""Model formats behind one reader interface (`models.formats.base.ModelFormat`), chosen by name.

| format        | files                            | runs code on load | signature from                      |
|---------------|----------------------------------|-------------------|-------------------------------------|
| onnx          | `.onnx` (+ external data)        | no                | the graph                           |
| xgboost       | `.json`, `.ubj`                  | no                | feature count, names, objective     |
| lightgbm      | LightGBM text (`.txt`)           | no                | feature count, names, objective     |
| skops         | `.skops` (trusted types only)    | no                | the fitted estimator                |
| pickle        | `.joblib`, `.pkl`, `.pickle`     | yes (opt-in)      | the fitted estimator                |
| torchscript   | `.pt` with TorchScript code      | yes (opt-in)      | model.yaml or a sample input        |
| torch_export  | `.pt2` from torch.export.save    | yes (opt-in)      | the ExportedProgram                 |
| torch_pickle  | BentoML pytorch saves            | yes (opt-in)      | model.yaml or a sample input        |
| custom        | `implementation` in model.yaml   | yes (opt-in)      | model.yaml (+ a sample call)        |
| torch_aoti    | AOTInductor package (`.pt2`)     | native code       | the source version (made here only) |

Models in the BentoML store saved by BentoML's own savers are read by the `module` their
`model.yaml` names, not by the file's extension (BentoML's LightGBM saver writes LightGBM text
into a `.ubj` file): see `BENTOML_MODULES`.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import ModelRefused
from models.formats.base import ModelFormat
from models.formats.boosters import LightGBMFormat, XGBoostFormat
from models.formats.custom import CustomFormat
from models.formats.onnx import OnnxFormat
from models.formats.sklearn import PickleFormat, SkopsFormat
from models.formats.torch import TorchAotiFormat, TorchExportFormat, TorchPickleFormat, TorchScriptFormat

FORMATS: dict[str, ModelFormat] = {
    f.name: f
    for f in (OnnxFormat(), XGBoostFormat(), LightGBMFormat(), SkopsFormat(), PickleFormat(), TorchScriptFormat(),
              TorchExportFormat(), TorchPickleFormat(), CustomFormat(), TorchAotiFormat())
}

BENTOML_MODULES: dict[str, tuple[str, str]] = {
    "bentoml.onnx": ("onnx", "saved_model.onnx"),
    "bentoml.xgboost": ("xgboost", "saved_model.ubj"),
    "bentoml.lightgbm": ("lightgbm", "saved_model.ubj"),
    "bentoml.sklearn": ("pickle", "saved_model.pkl"),
    "bentoml.pytorch": ("torch_pickle", "saved_model.pt"),
    "bentoml.torchscript": ("torchscript", "saved_model.pt"),
}
"""BentoML saver module -> (format, the file it writes)."""


def get(name: str) -> ModelFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ModelRefused(f"unknown model format '{name}'; known: {sorted(FORMATS)}") from None


def detect(file: Path) -> ModelFormat:
    """The format a file's name (and, for `.pt`, its archive) says; ModelRefused naming the known ones otherwise."""
    for fmt in FORMATS.values():
        if fmt.matches(file):
            return fmt
    if file.name.lower().endswith((".pt", ".pth")):
        raise ModelRefused(f"{file.name} is not TorchScript (no code inside the archive): a state dict or a pickled "
                           "module cannot be served; save with torch.jit.script/trace or torch.export")
    suffixes = sorted({s for f in FORMATS.values() for s in f.suffixes})
    raise ModelRefused(f"{file.name}: unknown model format; known file types: {suffixes} "
                       "(or name `format` in a model.yaml)")
