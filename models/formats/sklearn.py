"""scikit-learn estimators and pipelines: skops files (no code runs on load), or joblib/pickle (opt-in).

skops loads only the types it trusts. Its defaults leave out scikit-learn's own tree structures,
so the operator keeps an allow-list (`RTSERVE_IMPORT_TRUSTED_TYPES`) and may let a deploy trust
more; a file holding any other type is refused with the list of them, and the version's metadata
records what was trusted. The signature comes from the fitted estimator: `n_features_in_`,
`feature_names_in_`, `classes_`, and whether it has `predict_proba`. A pipeline that starts with a
text vectorizer takes strings (BYTES), one per row.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ModelRefused
from models.formats.base import Described, ModelFormat, Trust
from models.signature import TensorSpec

FEATURES = "features"
TEXT = "text"
SCORES = "scores"
"""The model's own output of a classifier: `predict_proba`."""


def _first_step(estimator: Any) -> Any:
    steps = getattr(estimator, "steps", None)
    return _first_step(steps[0][1]) if steps else estimator


def describe_estimator(estimator: Any) -> Described:
    from sklearn.feature_extraction.text import _VectorizerMixin

    if not hasattr(estimator, "predict"):
        raise ModelRefused(f"{type(estimator).__name__} has no predict method: not a model that can be served")
    notes: list[str] = []
    names = getattr(estimator, "feature_names_in_", None)
    if isinstance(_first_step(estimator), _VectorizerMixin):
        inputs: tuple[TensorSpec, ...] | None = (TensorSpec(TEXT, "BYTES", (-1,)),)
        notes.append("text input: one string per row")
    elif hasattr(estimator, "n_features_in_"):
        inputs = (TensorSpec(FEATURES, "FP32", (-1, int(estimator.n_features_in_))),)
    else:
        inputs = None
    classes = getattr(estimator, "classes_", None)
    if classes is not None and hasattr(estimator, "predict_proba") and np.ndim(classes) == 1:
        return Described(inputs, (TensorSpec(SCORES, "FP32", (-1, len(classes))),), "classification",
                         class_names=np.asarray(classes).tolist(), feature_names=_names(names), notes=notes)
    n_targets = int(getattr(estimator, "n_outputs_", 1) or 1)
    return Described(inputs, (TensorSpec("predictions", "FP32", (-1,) if n_targets == 1 else (-1, n_targets)),),
                     "regression", feature_names=_names(names), notes=notes)


def _names(names: Any) -> list[str] | None:
    return None if names is None else [str(n) for n in names]


def predict_estimator(estimator: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    (x,) = inputs.values()
    if hasattr(estimator, "predict_proba") and getattr(estimator, "classes_", None) is not None:
        return {SCORES: estimator.predict_proba(x)}
    return {"predictions": estimator.predict(x)}


class SklearnFormat(ModelFormat):
    """What both scikit-learn file formats share once the object is open."""

    framework = "sklearn"

    def describe(self, model: Any, file: Path) -> Described:
        return describe_estimator(model)

    def predict(self, model: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return predict_estimator(model, inputs)


class SkopsFormat(SklearnFormat):
    name = "skops"
    suffixes = (".skops",)

    def check(self, file: Path, trust: Trust) -> dict[str, Any]:
        from models.formats.skops_io import sio

        if not zipfile.is_zipfile(file):
            raise ModelRefused(f"{file.name}: not a skops file (skops files are zip archives; a pickle saved "
                               "under a skops name is refused: pickles load only as joblib/pickle, when allowed)")
        try:
            found = sio.get_untrusted_types(file=file)
        except Exception as exc:  # noqa: BLE001 - skops raises many kinds of error for a damaged schema
            raise ModelRefused(f"{file.name}: not a readable skops file: {type(exc).__name__}: {exc}") from None
        untrusted = sorted(set(found) - set(trust.trusted_types))
        if untrusted:
            raise ModelRefused(f"{file.name} holds types that are not trusted: {untrusted}. Ask the operator to add "
                               "them to RTSERVE_IMPORT_TRUSTED_TYPES, or deploy with --trust TYPE where allowed")
        return {"trusted_types": sorted(found)}

    def load(self, file: Path, metadata: Mapping[str, Any], device: str = "cpu") -> Any:
        from models.formats.skops_io import sio

        try:
            return sio.load(file, trusted=list(metadata.get("trusted_types", ())))
        except Exception as exc:  # noqa: BLE001 - skops raises many kinds of error for a damaged file
            raise ModelRefused(f"{file.name}: skops cannot load it: {type(exc).__name__}: {exc}") from None


class PickleFormat(SklearnFormat):
    """joblib and plain pickle files, and BentoML's sklearn saves (a joblib file): they run code on load."""

    name = "pickle"
    runs_code = True
    suffixes = (".joblib", ".pkl", ".pickle")

    def load(self, file: Path, metadata: Mapping[str, Any], device: str = "cpu") -> Any:
        import joblib

        try:
            return joblib.load(file)
        except Exception as exc:  # noqa: BLE001 - unpickling a damaged file raises anything
            raise ModelRefused(f"{file.name}: cannot be unpickled: {type(exc).__name__}: {exc}") from None

