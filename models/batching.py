"""How one model version's requests are batched: the fields serving.yaml and a model's model.yaml share.

serving.yaml sets them (`defaults`, and per model in `runners.settings`); a model.yaml may suggest some of them
for its own model (`models.declared`). The field docstrings are the reference.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator


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


def _overrides_of(settings: type[BaseModel], name: str, only: tuple[str, ...] | None = None) -> type[BaseModel]:
    """`settings`' fields (or `only` these), each optional (None: keep the default) with its own type and bounds."""
    fields: dict[str, Any] = {
        field: (Annotated[(info.annotation, *info.metadata)] | None if info.metadata else info.annotation | None, None)
        for field, info in settings.model_fields.items()
        if only is None or field in only
    }
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


BatchOverrides = _overrides_of(BatchSettings, "BatchOverrides")
"""Per-model changes to the `defaults` batching fields; a field not named here keeps the default."""


SUGGESTED_FIELDS = ("max_batch_size", "max_latency_ms", "max_queue_rows", "inline_max_ms", "warmup_lengths", "workers",
                    "intra_op_threads")
"""What a model's author may suggest in its model.yaml: how the model batches and what one call costs. The device
has its own model.yaml field; the queue's priority levels are the operator's policy for clients."""

SuggestedBatching = _overrides_of(BatchSettings, "SuggestedBatching", SUGGESTED_FIELDS)
"""A model.yaml's `batching` mapping: the serving.yaml fields of `SUGGESTED_FIELDS`, with the same bounds."""
