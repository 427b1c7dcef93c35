"""A version's serving metadata from what the model says (`Described`) and what its model.yaml declares.

Declared values win. Outputs the deployer did not declare and the format does not carry are recorded
from one call on a sample input (`record_outputs`). The served outputs follow the task:

- classification: `probabilities` [n, classes] and `label` (the class of the arg-max: the class
  names when known, as BYTES for strings; the class index otherwise). Softmax only when declared.
- regression: `predictions` [n] (or [n, targets]).
- tensors: the model's own outputs, by their own names (an embedding, several heads).

Whatever cannot be settled is named in a `SignatureRequired` error that says what to declare.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.errors import ModelRefused, SignatureRequired
from models.declared import MODES, Declared
from models.formats.base import Described
from models.signature import Signature, TensorSpec, classifier_outputs, datatype_of, regressor_outputs
from models.tokenize import TokenizerDecl

SAMPLE_TEXT = "a sample text"
HOW_TO_DECLARE = ("declare it in a model.yaml beside the file, e.g.\n"
                  "  inputs:\n    - {name: x, datatype: FP32, shape: [-1, 4]}\n"
                  "  task: classification   # or regression, tensors")


def resolve(described: Described, declared: Declared, what: str) -> dict[str, Any]:
    """Metadata for the version except the served outputs when the model's own outputs are not known yet."""
    inputs = tuple(d.spec() for d in declared.inputs) if declared.inputs else described.inputs
    if declared.tokenizer and not declared.inputs:
        inputs = _text_inputs(declared.tokenizer, described.inputs or ())
    if not inputs:
        raise SignatureRequired(f"{what} carries no input signature (names, datatypes, shapes): {HOW_TO_DECLARE}")
    model_outputs = tuple(d.spec() for d in declared.outputs) if declared.outputs else described.outputs
    batching = declared.batches()
    batching = batching if batching is not None else described.batching
    if any(spec.shape[0] != -1 for spec in inputs):
        batching = False
    meta: dict[str, Any] = {
        "task": declared.task or described.task or "tensors",
        "inputs": [s.to_metadata() for s in inputs],
        "batching": batching,
        "softmax": bool(declared.softmax),
        "modes": list(declared.modes or MODES),
    }
    if model_outputs:
        meta["model_outputs"] = [s.to_metadata() for s in model_outputs]
    class_names = declared.class_names or described.class_names
    if class_names:
        meta["class_names"] = list(class_names)
    if described.feature_names:
        meta["feature_names"] = described.feature_names
    if declared.device:
        meta["device"] = declared.device
    if suggested := declared.batch_settings():
        meta["batch_settings"] = suggested
    if described.notes:
        meta["notes"] = described.notes
    if declared.tokenizer:
        meta["tokenizer"] = declared.tokenizer.model_dump(exclude_none=True)
    return meta


def _text_inputs(decl: TokenizerDecl, model_inputs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """The served inputs of a model fed by a tokenizer: the text, then any model input it does not fill."""
    filled = {n for n in (decl.ids, decl.mask, decl.type_ids) if n}
    names = {spec.name for spec in model_inputs}
    if model_inputs and not filled <= names:
        raise ModelRefused(f"the tokenizer fills {sorted(filled)}, but the model takes {sorted(names)}: "
                           "name its inputs under `tokenizer` (ids, mask, type_ids)")
    return (TensorSpec(decl.input, "BYTES", (-1,)), *(spec for spec in model_inputs if spec.name not in filled))


def record_outputs(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The model's own output specs from one call: dtypes as returned, the first dimension the batch."""
    specs = []
    for name, arr in outputs.items():
        arr = np.asarray(arr)
        if arr.ndim == 0:
            raise ModelRefused(f"output '{name}' is a scalar, not one value per row")
        specs.append(TensorSpec(name, datatype_of(arr.dtype), (-1, *arr.shape[1:])).to_metadata())
    return specs


def served_outputs(meta: dict[str, Any]) -> Signature:
    """The signature served for `meta`: its inputs and the outputs its task makes of the model's own."""
    inputs = tuple(TensorSpec.from_metadata(t) for t in meta["inputs"])
    model_outputs = [TensorSpec.from_metadata(t) for t in meta.get("model_outputs", ())]
    task = meta["task"]
    if task == "tensors":
        return Signature(inputs, tuple(model_outputs))
    if len(model_outputs) != 1:
        raise SignatureRequired(f"a {task} model must have one output, this one has "
                                f"{[o.name for o in model_outputs]}: declare `task: tensors`, or the one `outputs` to use")
    (scores,) = model_outputs
    if task == "regression":
        width = scores.shape[1] if len(scores.shape) == 2 else 1
        return Signature(inputs, regressor_outputs(width if width > 0 else 1))
    class_names = meta.get("class_names")
    n_classes = 2 if len(scores.shape) == 1 else scores.shape[-1]
    if n_classes < 0:
        if not class_names:
            raise SignatureRequired(f"output '{scores.name}' has no fixed number of classes: declare `class_names`")
        n_classes = len(class_names)
    if class_names and len(class_names) != n_classes:
        raise ModelRefused(f"{len(class_names)} class names for {n_classes} classes in output '{scores.name}'")
    label = "BYTES" if class_names and np.asarray(class_names).dtype.kind in "OUS" else "INT64"
    return Signature(inputs, classifier_outputs(n_classes, label))


def sample_inputs(inputs: tuple[TensorSpec, ...], rows: int = 2, length: int = 8) -> dict[str, np.ndarray]:
    """A valid input for every spec: variable dimensions of `length`, values inside the declared range."""
    out = {}
    for spec in inputs:
        n = spec.shape[0] if spec.shape[0] > 0 else rows
        shape = (n, *(length if d < 0 else d for d in spec.row_shape))
        if spec.datatype == "BYTES":
            out[spec.name] = np.full(shape, SAMPLE_TEXT, dtype=object)
            continue
        low = spec.min_value if spec.min_value is not None else 0.0
        high = spec.max_value if spec.max_value is not None else max(low, 1.0)
        out[spec.name] = np.full(shape, (low + high) / 2 if spec.dtype.kind == "f" else max(low, min(1, high)), dtype=spec.dtype)
    return out
