"""The serving configuration: which models to load and how to batch each one.

One YAML file (`serving.yaml` at the project root, or the path in `RTSERVE_CONFIG`)
with a `defaults` block and per-model overrides; the field docstrings are the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from models.batching import BatchOverrides, BatchSettings, SuggestedBatching
from models.versions import version_problem

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "serving.yaml"


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    versions: list[str] = Field(min_length=1)
    """Versions (tag version parts, e.g. v1) loaded at start-up."""
    weights: dict[str, float] = {}
    """Initial route weights; empty means the last listed version takes all traffic."""
    batching: BatchOverrides = BatchOverrides()
    """Overrides of the `defaults` batching fields for this model (same names, see BatchSettings); they win over
    what a version's model.yaml suggests under its `batching`."""

    @model_validator(mode="after")
    def _weights_name_loaded_versions(self) -> ModelConfig:
        for version in self.versions:
            if (problem := version_problem(version)) is not None:
                raise ValueError(f"version {version!r} {problem}")
        unknown = set(self.weights) - set(self.versions)
        if unknown:
            raise ValueError(f"weights name versions that are not loaded: {sorted(unknown)}")
        return self


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: BatchSettings = BatchSettings()
    intra_op_threads: int = Field(1, ge=1, validation_alias=AliasChoices("intra_op_threads", "torch_threads"))
    """Threads one model call may use in a worker, for every framework together (torch, OpenMP and BLAS,
    onnxruntime, XGBoost, LightGBM: `core.threads`). 1: on a small CPU, more workers beat more threads per
    worker (docs/benchmarks.md, "Heavy models"). A model may have its own under its `batching`
    (`BatchSettings.intra_op_threads`). `torch_threads`, its former name, is still read."""
    models: dict[str, ModelConfig]

    @model_validator(mode="after")
    def _priorities_fit_each_model(self) -> ServingConfig:
        if self.defaults.intra_op_threads is not None:
            raise ValueError("defaults.intra_op_threads: the threads of every model are the top-level intra_op_threads; "
                             "set intra_op_threads per model under models.NAME.batching")
        for name in self.models:
            settings = self.batch_settings(name)
            if settings.default_priority > settings.priority_levels:
                raise ValueError(f"models.{name}.batching: default_priority {settings.default_priority} "
                                 f"is past the last level ({settings.priority_levels})")
        return self

    def batch_settings(self, name: str, suggested: Mapping[str, Any] | None = None) -> BatchSettings:
        """A version's settings: the `defaults`, then what its model.yaml suggests (`suggested`, the version's
        `batch_settings` metadata), then this file's block for the model: the operator has the last word."""
        cfg = self.models.get(name)
        overrides = cfg.batching.model_dump(exclude_none=True) if cfg else {}
        own = SuggestedBatching.model_validate(suggested).model_dump(exclude_none=True) if suggested else {}
        return self.defaults.model_copy(update={**own, **overrides})

    def initial_weights(self, name: str) -> dict[str, float]:
        cfg = self.models[name]
        return dict(cfg.weights) or {cfg.versions[-1]: 100.0}
