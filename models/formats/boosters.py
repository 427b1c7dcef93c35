"""Gradient-boosted trees: XGBoost (`.json`, `.ubj`) and LightGBM (text) boosters.

Both formats are data, not code, so they load without asking. The signature comes from the
booster: the feature count, the feature names (LightGBM's default `Column_N` names count as
none) and the objective, which says the task.

XGBoost is installed as `xgboost-cpu` (the same `xgboost` module, without the NCCL download).
BentoML's `bentoml.xgboost.save_model` records the version of the distribution named `xgboost`
and fails with `PackageNotFoundError: xgboost` where only `xgboost-cpu` is installed. The server
never calls BentoML's xgboost module (it reads `saved_model.ubj` itself), so serving is not
affected; to save with BentoML's saver in such an environment, call `alias_xgboost_cpu()` first:
it answers that lookup with `xgboost-cpu`'s metadata.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ModelRefused
from core.threads import intra_op_threads
from models.formats.base import Described, ModelFormat
from models.signature import TensorSpec

FEATURES = "features"


def _task_of(objective: str) -> str:
    if objective in ("multi:softprob", "binary:logistic", "multiclass", "multiclassova", "binary"):
        return "classification"
    if objective.startswith(("reg:", "count:", "survival:", "regression", "huber", "fair", "poisson", "quantile",
                             "mape", "gamma", "tweedie", "cross_entropy")):
        return "regression"
    return "tensors"


@dataclass
class Booster:
    """A loaded booster and the task its objective says, read once at load rather than per batch."""

    model: Any
    objective: str
    n_classes: int
    threads: int | None = None
    """This model's own intra-op threads (serving.yaml's per-model `intra_op_threads`); None: the worker's."""

    def use_threads(self, threads: int) -> None:
        """Run this booster's calls on `threads` threads, whatever the rest of the process uses."""
        self.threads = threads
        if hasattr(self.model, "set_param"):  # XGBoost keeps nthread on the booster; LightGBM takes it per predict
            self.model.set_param({"nthread": threads})

    @property
    def task(self) -> str:
        return _task_of(self.objective)

    def output(self, out: np.ndarray) -> dict[str, np.ndarray]:
        return {"scores" if self.task == "classification" else "predictions": out}


def _described(n_features: int, names: list[str] | None, objective: str, n_classes: int) -> Described:
    task = _task_of(objective)
    out = "scores" if task == "classification" else "predictions"
    width = (-1, n_classes) if n_classes > 1 else (-1,)
    return Described(
        inputs=(TensorSpec(FEATURES, "FP32", (-1, n_features)),),
        outputs=(TensorSpec(out, "FP32", width),),
        task=task,
        feature_names=list(names) if names else None,
        notes=[f"objective {objective}"],
    )


class XGBoostFormat(ModelFormat):
    name = "xgboost"
    framework = "xgboost"
    suffixes = (".json", ".ubj")

    def load(self, file: Path, metadata: Mapping[str, Any], device: str = "cpu") -> Any:
        import xgboost as xgb

        try:
            booster = xgb.Booster(model_file=str(file))
        except xgb.core.XGBoostError as exc:
            raise ModelRefused(f"{file.name}: not an XGBoost model: {str(exc).splitlines()[0]}") from None
        booster.set_param({"nthread": intra_op_threads()})
        config = json.loads(booster.save_config())["learner"]
        n_classes = int(config["learner_model_param"].get("num_class", "0") or 0)
        return Booster(booster, config["objective"]["name"], n_classes)

    def describe(self, model: Booster, file: Path) -> Described:
        return _described(model.model.num_features(), model.model.feature_names, model.objective, model.n_classes)

    def predict(self, model: Booster, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        (x,) = inputs.values()
        return model.output(model.model.inplace_predict(x, validate_features=False))


class LightGBMFormat(ModelFormat):
    name = "lightgbm"
    framework = "lightgbm"
    suffixes = (".txt", ".lgb", ".lightgbm")

    def load(self, file: Path, metadata: Mapping[str, Any], device: str = "cpu") -> Any:
        import lightgbm as lgb

        try:
            booster = lgb.Booster(model_file=str(file))
        except (lgb.basic.LightGBMError, UnicodeDecodeError, ValueError) as exc:
            raise ModelRefused(f"{file.name}: not a LightGBM text model: {str(exc).splitlines()[0]}") from None
        objective = str(booster.params.get("objective") or _header_objective(file)).split()[0]
        return Booster(booster, objective, booster.num_model_per_iteration())

    def describe(self, model: Booster, file: Path) -> Described:
        names = model.model.feature_name()
        if all(re.fullmatch(r"Column_\d+", n) for n in names):
            names = None
        return _described(model.model.num_feature(), names, model.objective, model.n_classes)

    def predict(self, model: Booster, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        (x,) = inputs.values()
        return model.output(model.model.predict(x, num_threads=model.threads or intra_op_threads()))


def _header_objective(file: Path) -> str:
    """The `objective=` line of a LightGBM text model's header (before the first tree)."""
    with file.open("rb") as f:
        for line in f:
            if line.startswith(b"objective="):
                return line[len(b"objective="):].decode().strip()
            if line.startswith(b"Tree="):
                break
    return "regression"


class _XGBoostCpuAlias(importlib.metadata.DistributionFinder):
    """Answers `importlib.metadata` lookups of `xgboost` with the installed `xgboost-cpu`."""

    def find_spec(self, *args: Any, **kwargs: Any) -> None:
        return None

    def find_distributions(self, context: Any = None) -> Any:
        if context is None or context.name != "xgboost":
            return iter(())
        return iter(importlib.metadata.distributions(name="xgboost-cpu"))


def alias_xgboost_cpu() -> None:
    """Let BentoML's xgboost saver find its framework version where `xgboost-cpu` is what is installed."""
    try:
        importlib.metadata.version("xgboost")
    except importlib.metadata.PackageNotFoundError:
        sys.meta_path.append(_XGBoostCpuAlias())
