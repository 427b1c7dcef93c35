"""Soft-vote ensembles whose members are themselves served models, each run by its own runner."""

from __future__ import annotations

from collections.abc import Callable

import bentoml
import numpy as np

from runners.base import Inputs, Runner


class EnsembleRunner(Runner):
    formats = ("ensemble",)

    def __init__(self, model: bentoml.Model, device: str, member_runner: Callable[[str], Runner],
                 threads: int | None = None) -> None:
        super().__init__(model, device, threads)
        members: dict[str, float] = self.metadata["members"]
        total = sum(members.values())
        self.members = [(member_runner(tag), weight / total) for tag, weight in members.items()]

    @property
    def threads_refused(self) -> str | None:
        return "an ensemble runs its members' models: set intra_op_threads on their entries"

    def predict(self, inputs: Inputs) -> dict[str, np.ndarray]:
        (batch,) = inputs.values()
        probs = None
        for runner, weight in self.members:
            # Members may want another layout of the same pixels (e.g. [n, 1, 8, 8] against [n, 64]).
            part = weight * runner.run(batch.reshape(len(batch), *runner.input_spec.row_shape))["probabilities"]
            probs = part if probs is None else probs + part
        return {"probabilities": probs.astype(np.float32, copy=False)}
