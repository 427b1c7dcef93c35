"""The runner interface: a loaded model version that runs batches of named inputs.

A runner serves one version from the BentoML store. Subclasses implement `predict`: named
input arrays in, the model's own named outputs out. `run` makes the served outputs of them
for the version's task (probabilities and label, predictions, or the raw tensors: see
`models.outputs`) and checks every one against the version's signature, so a mismatch is a
`model_error` naming the output. Runners take and return arrays only; HTTP, queues and routing
live elsewhere. `runners.loader` chooses the runner class by the version's format; a new format
needs a runner class listing it in `formats` and a reader in `models.formats`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import bentoml
import numpy as np

from core.errors import LoadFailed
from core.threads import intra_op_threads
from models.outputs import Head
from models.signature import Signature, TensorSpec
from models.spec import sample_inputs
from models.tokenize import Tokenize
from runners.rows import NamedRows, Rows

Inputs = dict[str, np.ndarray]
UNTIMED_CALLS = 2
"""Warm-up calls of each batch size before the timed ones."""
SLOW_CALL_S = 1.0
"""A warm-up call slower than this is timed once, not three times: one is precise enough, and a heavy model's
warm-up stays within its load-time target."""


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"


class Runner(ABC):
    formats: ClassVar[tuple[str, ...]]
    """The version formats (metadata `format`, or `framework` for versions saved before formats) it runs."""

    def __init__(self, model: bentoml.Model, device: str = "cpu", threads: int | None = None) -> None:
        self.model = model
        self.tag = str(model.tag)
        self.name = model.tag.name
        self.version = model.tag.version or ""
        self.metadata: dict = dict(model.info.metadata)
        self.signature = Signature.from_metadata(self.metadata)
        self.device = device
        self.head = Head(self.metadata, self.signature)
        self.feature_names: list[str] | None = self.metadata.get("feature_names")
        """The columns of the one tabular input by name, when the model was fitted with names (a DataFrame)."""
        self.tokenize = Tokenize.of(self.metadata, Path(model.path))
        """Strings to the model's token ids, when the version declares a tokenizer."""
        self._variable = next((i for i, s in enumerate(self.signature.inputs) if -1 in s.row_shape), None)
        """The first input with a variable dimension (a sequence): what a batch's cost grows with besides its rows."""
        self.threads = threads if threads is not None else intra_op_threads()
        """Threads one call may use: the model's own `intra_op_threads` (serving.yaml), else the worker's."""
        if self.threads != intra_op_threads() and (why := self.threads_refused) is not None:
            raise LoadFailed(f"{self.tag}: intra_op_threads {self.threads} cannot apply to this model alone ({why}); "
                             f"leave it out or set it to the worker's {intra_op_threads()}")

    @property
    def threads_refused(self) -> str | None:
        """Why this model's calls cannot use a thread count of their own, or None where its runtime takes one per model."""
        return "its runtime's thread pools are one per process: torch.set_num_threads, and OpenMP and BLAS"

    @property
    def framework(self) -> str:
        """The framework the version was made with (sklearn, pytorch, onnx, xgboost, lightgbm, ...)."""
        return str(self.metadata.get("framework", "unknown"))

    @property
    def input_spec(self) -> TensorSpec:
        """The first input: the only one of a single-input model."""
        return self.signature.inputs[0]

    @property
    def batching(self) -> bool:
        """False when the model takes a fixed batch size: each request is then run on its own."""
        return bool(self.metadata.get("batching", True))

    @abstractmethod
    def predict(self, inputs: Inputs) -> dict[str, np.ndarray]:
        """The model's own named outputs for a collated batch of named inputs."""

    def collate(self, arrays: list[np.ndarray] | list[NamedRows] | list[Inputs]) -> np.ndarray | Inputs:
        """Stack requests into one batch (per input name for several inputs)."""
        if isinstance(arrays[0], np.ndarray):
            return self._stack(arrays)
        named = [a.arrays if isinstance(a, NamedRows) else a for a in arrays]
        return {name: self._stack([a[name] for a in named]) for name in named[0]}

    @staticmethod
    def _stack(arrays: list[np.ndarray]) -> np.ndarray:
        """Concatenate; numeric variable dimensions are right-padded with 0. Strings (object arrays) are never padded:
        the batcher gives a model call only strings of one row shape (runners/batcher.py `joins`)."""
        if len(arrays) == 1:
            return arrays[0]
        if all(a.shape[1:] == arrays[0].shape[1:] for a in arrays):
            return np.concatenate(arrays)
        if arrays[0].dtype == object:
            raise ValueError("string inputs of different shapes cannot share a batch")
        dims = tuple(max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim))
        out = np.zeros((sum(len(a) for a in arrays), *dims), dtype=arrays[0].dtype)
        start = 0
        for a in arrays:
            out[(slice(start, start + len(a)), *(slice(0, s) for s in a.shape[1:]))] = a
            start += len(a)
        return out

    def run(self, batch: np.ndarray | Inputs) -> dict[str, np.ndarray]:
        """The served outputs for a batch: one array (a single-input model) or named arrays."""
        inputs = batch if isinstance(batch, dict) else {self.input_spec.name: batch}
        rows = len(next(iter(inputs.values())))
        return self.head(self.predict(self.tokenize(inputs) if self.tokenize else inputs), rows)

    @property
    def varies(self) -> bool:
        """Whether a row's cost depends on its length (a sequence, a text) and not on the row count alone."""
        return self.tokenize is not None or self._variable is not None

    def work(self, batch: Rows | Inputs) -> int:
        """What a batch of these inputs costs in the batcher's cost model: its rows for fixed-size inputs; for a
        text, rows times the longest text's tokens; for a sequence, rows times its padded variable dimensions
        (a batch is padded to its longest row, so that is what runs)."""
        rows = len(batch) if not isinstance(batch, dict) else len(next(iter(batch.values())))
        if not self.varies:
            return rows
        arrays = batch if isinstance(batch, dict) else batch.arrays if isinstance(batch, NamedRows) else None
        if self.tokenize is not None:
            texts = arrays[self.tokenize.input] if arrays is not None else batch
            return max(self.tokenize.tokens(texts), rows)
        spec = self.signature.inputs[self._variable]
        array = arrays[spec.name] if arrays is not None else batch
        return rows * int(np.prod([array.shape[d] for d, size in enumerate(spec.shape) if d and size < 0]))

    def sample(self, n: int, length: int = 8) -> np.ndarray | Inputs:
        """A valid input of n rows (or the fixed batch size), for warm-up: variable dimensions of `length`, texts
        of `length` tokens."""
        inputs = sample_inputs(self.signature.inputs, n, length)
        if self.tokenize is not None:
            inputs[self.tokenize.input] = np.full(n, self.tokenize.sample_text(length), dtype=object)
        return inputs if len(inputs) > 1 else next(iter(inputs.values()))

    def warmup(self, sizes: tuple[int, ...], lengths: tuple[int, ...] = (8,)) -> list[tuple[int, float]]:
        """Run a few batches so first requests pay no lazy initialisation; returns (work, seconds) per timed call
        (`work`: see `work`). A model whose cost grows with its inputs' length is warmed at each of `lengths`.

        The first calls of each size are not timed: they pay that initialisation (TorchScript profiles its
        graph on the first call and optimizes it on the second: 170 ms for the digits network, against
        0.4 ms after), which would teach the batcher's cost model a latency no later batch has."""
        timings: list[tuple[int, float]] = []
        fixed = self.input_spec.shape[0]
        for length in lengths if self.varies else (8,):
            for n in (fixed,) if fixed > 0 else sizes:
                batch = self.sample(n, length)
                work = self.work(batch)
                slow = False
                for _ in range(UNTIMED_CALLS):
                    start = time.perf_counter()
                    self.run(batch)
                    if time.perf_counter() - start > SLOW_CALL_S:
                        slow = True
                        break
                for _ in range(1 if slow else 3):
                    start = time.perf_counter()
                    self.run(batch)
                    timings.append((work, time.perf_counter() - start))
        return timings
