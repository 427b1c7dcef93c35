"""ONNX graphs, run by onnxruntime; any number of named inputs and outputs.

Weights stored as external data must lie inside the model's own folder: a location that is
absolute, climbs out with `..`, or passes through a symlink is refused before anything opens it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ModelRefused
from models.formats.base import Described, ModelFormat, Trust, fixed
from models.signature import TensorSpec

ONNX_TYPES = {
    "tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
    "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL", "tensor(string)": "BYTES",
}


def external_locations(file: Path) -> list[str]:
    """Where the graph's external tensors say their data lies; the graph is parsed, nothing is run."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnx.external_data_helper import _get_all_tensors

    try:
        graph = onnx.load(str(file), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise ModelRefused(f"{file.name}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    return [
        entry.value
        for tensor in _get_all_tensors(graph)
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    ]


def check_inside(folder: Path, location: str, what: str) -> None:
    """Refuse a path that is absolute, leaves `folder`, passes through a symlink or does not exist."""
    path = Path(location)
    if path.is_absolute() or ".." in path.parts:
        raise ModelRefused(f"{what} '{location}' is outside the model's folder")
    current = folder
    for part in path.parts:
        current = current / part
        if current.is_symlink():
            raise ModelRefused(f"{what} '{location}' is a symlink; symlinks are refused")
    if not current.is_file():
        raise ModelRefused(f"{what} '{location}' is missing from the model's folder")


class OnnxFormat(ModelFormat):
    name = "onnx"
    framework = "onnx"
    suffixes = (".onnx",)

    def check(self, file: Path, trust: Trust) -> dict[str, Any]:
        for location in external_locations(file):
            check_inside(file.parent, location, "external data")
        return {}

    def load(self, file: Path, metadata: Mapping[str, Any], device: str = "cpu", options: Any = None) -> Any:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            return ort.InferenceSession(str(file), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad graphs
            raise ModelRefused(f"{file.name}: onnxruntime cannot load it: {exc}") from None

    def describe(self, model: Any, file: Path) -> Described:
        return Described(
            inputs=tuple(self._spec(arg, "input") for arg in model.get_inputs()),
            outputs=tuple(self._spec(arg, "output") for arg in model.get_outputs()),
        )

    @staticmethod
    def _spec(arg: Any, kind: str) -> TensorSpec:
        if arg.type not in ONNX_TYPES:
            raise ModelRefused(f"{kind} '{arg.name}' has type {arg.type}, which is not a tensor served here "
                               "(a scikit-learn export with a ZipMap: convert it with zipmap=False)")
        return TensorSpec(arg.name, ONNX_TYPES[arg.type], tuple(fixed(d) for d in (arg.shape or [None])))

    def predict(self, model: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in model.get_outputs()]
        return dict(zip(names, model.run(names, {k: np.ascontiguousarray(v) for k, v in inputs.items()})))
