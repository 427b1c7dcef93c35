"""Tensor signatures stored in model metadata and enforced at the HTTP edge.

The model store carries each model's input and output signature, so the server needs no
per-model code to validate requests or describe models in the Open Inference Protocol.
Signatures are read from the model itself where its format carries them (see
`models.formats`); `models.config` declares or overrides what it does not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Open Inference Protocol datatype -> numpy dtype.
OIP_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
NUMPY_TO_OIP: dict[np.dtype, str] = {v: k for k, v in OIP_TO_NUMPY.items()}
SPEC_DTYPES: dict[str, np.dtype] = {**OIP_TO_NUMPY, "BYTES": np.dtype(object)}
"""Every datatype a signature may declare: the numeric ones, and BYTES (strings) held as numpy object arrays."""


def datatype_of(dtype: np.dtype) -> str:
    """The signature datatype of a numpy dtype; strings, bytes and objects are BYTES."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OUS":
        return "BYTES"
    try:
        return NUMPY_TO_OIP[dtype]
    except KeyError:
        raise ValueError(f"no Open Inference Protocol datatype for numpy {dtype}") from None


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor; -1 in `shape` marks a variable dimension (the first is the batch)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    # Inclusive value range, for integer inputs such as token ids.
    min_value: float | None = None
    max_value: float | None = None

    @property
    def dtype(self) -> np.dtype:
        return SPEC_DTYPES[self.datatype]

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    def to_metadata(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = list(self.shape)
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_metadata(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(
            name=data["name"],
            datatype=data["datatype"],
            shape=tuple(int(d) for d in data["shape"]),
            min_value=data.get("min_value"),
            max_value=data.get("max_value"),
        )

    def describe(self) -> dict[str, Any]:
        """The Open Inference Protocol's tensor metadata."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> Signature:
        return cls(
            inputs=tuple(TensorSpec.from_metadata(t) for t in metadata["inputs"]),
            outputs=tuple(TensorSpec.from_metadata(t) for t in metadata["outputs"]),
        )

    def to_metadata(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_metadata() for t in self.inputs],
            "outputs": [t.to_metadata() for t in self.outputs],
        }


def classifier_outputs(n_classes: int, label_datatype: str = "INT64") -> tuple[TensorSpec, ...]:
    """A classifier's outputs: probabilities first, then the label (the class of the arg-max; BYTES when
    classes are named by strings)."""
    return (
        TensorSpec("probabilities", "FP32", (-1, n_classes)),
        TensorSpec("label", label_datatype, (-1,)),
    )


def regressor_outputs(n_targets: int = 1) -> tuple[TensorSpec, ...]:
    """A regressor's one output: a value per row, or a row of values for several targets."""
    return (TensorSpec("predictions", "FP32", (-1,) if n_targets == 1 else (-1, n_targets)),)
