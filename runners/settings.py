"""The serving configuration: which models to load and how to batch each one.

One YAML file (`serving.yaml` at the project root, or the path in `RTSERVE_CONFIG`)
with a `defaults` block and per-model overrides; the field docstrings are the reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, create_model, model_validator

from models.versions import version_problem

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "serving.yaml"


class BatchSettings(BaseModel):
    """How requests for one model version are coalesced and run."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(64, ge=1)
    """Most rows in one model call; a single request with more rows runs alone."""
    max_latency_ms: float = Field(50.0, gt=0)
    """Budget from enqueue to result. A request whose budget cannot be met is refused (503) at once."""
    max_queue_rows: int = Field(4096, ge=1)
    """Rows waiting per model version before new requests are refused with 503 and Retry-After."""
    inline_max_ms: float = Field(0.25, ge=0)
    """Batches expected to take at most this long run on the event loop instead of a thread; 0 never."""
    warmup_lengths: list[Annotated[int, Field(ge=1)]] = Field([32, 128], min_length=1)
    """Lengths warm-up gives a model whose cost grows with its inputs' length (a sequence's variable dimension,
    a text's tokens), so the batcher's cost model learns that growth before the first request: your requests'
    typical and longest lengths. Models of fixed-size inputs ignore it."""
    workers: int = Field(1, ge=1)
    """Threads running batches of this version; 1 keeps batches large on a small CPU."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto` picks CUDA when torch or onnxruntime can see a GPU, else the CPU."""
    priority_levels: int = Field(3, ge=1, le=16)
    """Priority levels of the queue (Triton's convention: 1 is the highest); a request's
    `parameters.priority` picks one, 0 or a level past the last means `default_priority`."""
    default_priority: int = Field(2, ge=1, le=16)
    """The level of requests that name no priority; with the default 3 levels a client can go above or below it."""
    intra_op_threads: int | None = Field(None, ge=1)
    """Threads one call of this model may use, in place of the worker's top-level `intra_op_threads`: e.g. 2 for a
    latency-bound model while the rest keep 1. Per model only, and only where the runtime has a per-model setting
    (an onnxruntime session, an XGBoost booster, a LightGBM predict); torch, scikit-learn (BLAS, OpenMP), ensembles
    and runtimes of your own have one pool per process, so their load fails with a value other than the worker's."""

    @model_validator(mode="after")
    def _default_priority_is_a_level(self) -> BatchSettings:
        if self.default_priority > self.priority_levels:
            raise ValueError(f"default_priority {self.default_priority} is past the last level ({self.priority_levels})")
        return self


def _overrides_of(settings: type[BaseModel], name: str) -> type[BaseModel]:
    """`settings`' fields, each optional (None: keep the default) with its own type and bounds."""
    fields: dict[str, Any] = {
        field: (Annotated[(info.annotation, *info.metadata)] | None if info.metadata else info.annotation | None, None)
        for field, info in settings.model_fields.items()
    }
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


BatchOverrides = _overrides_of(BatchSettings, "BatchOverrides")
"""Per-model changes to the `defaults` batching fields; a field not named here keeps the default."""


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    versions: list[str] = Field(min_length=1)
    """Versions (tag version parts, e.g. v1) loaded at start-up."""
    weights: dict[str, float] = {}
    """Initial route weights; empty means the last listed version takes all traffic."""
    batching: BatchOverrides = BatchOverrides()
    """Overrides of the `defaults` batching fields for this model (same names, see BatchSettings)."""

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

    def batch_settings(self, name: str) -> BatchSettings:
        cfg = self.models.get(name)
        overrides = cfg.batching.model_dump(exclude_none=True) if cfg else {}
        return self.defaults.model_copy(update=overrides)

    def initial_weights(self, name: str) -> dict[str, float]:
        cfg = self.models[name]
        return dict(cfg.weights) or {cfg.versions[-1]: 100.0}
