"""ONNX models run by onnxruntime, on the CUDA provider when the device is a GPU and it is installed;
any number of named inputs and outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import bentoml
import numpy as np
import onnxruntime as ort

from core.threads import intra_op_threads
from models.formats.onnx import OnnxFormat
from runners.base import Inputs, Runner

OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
EXECUTION_MODES = {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL, "parallel": ort.ExecutionMode.ORT_PARALLEL}


@dataclass(frozen=True)
class SessionSettings:
    """onnxruntime session options. The defaults won a one-option-at-a-time measurement on the
    digits networks at batch 1 and 64 (`python -m loadtest.runner_timing --onnx-options`); a model's
    metadata may override them under `session_options`."""

    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    intra_op_num_threads: int = 0
    """0: the model's `intra_op_threads` in serving.yaml, else the worker's, the cap shared by every framework
    (`core.threads`)."""
    inter_op_num_threads: int = 1
    enable_cpu_mem_arena: bool = True
    execution_mode: Literal["sequential", "parallel"] = "sequential"

    @classmethod
    def for_model(cls, metadata: dict[str, Any]) -> SessionSettings:
        return cls(**(metadata.get("session_options") or {}))

    def to_ort(self, threads: int | None = None) -> ort.SessionOptions:
        """The session's options; `threads`, where given, is the model's own `intra_op_threads` (serving.yaml), which an
        operator sets for this deployment and so wins over the count the model's metadata names."""
        options = ort.SessionOptions()
        options.graph_optimization_level = OPTIMIZATION_LEVELS[self.graph_optimization_level]
        options.intra_op_num_threads = threads or self.intra_op_num_threads or intra_op_threads()
        options.inter_op_num_threads = self.inter_op_num_threads
        options.enable_cpu_mem_arena = self.enable_cpu_mem_arena
        options.execution_mode = EXECUTION_MODES[self.execution_mode]
        return options


class OnnxRunner(Runner):
    formats = ("onnx",)

    def __init__(self, model: bentoml.Model, device: str = "cpu", settings: SessionSettings | None = None,
                 threads: int | None = None) -> None:
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            device = "cpu"
        super().__init__(model, device, threads)
        self.settings = settings or SessionSettings.for_model(self.metadata)
        file = Path(model.path) / self.metadata.get("file", "model.onnx")
        options = self.settings.to_ort(threads)
        self.session = OnnxFormat().load(file, self.metadata, device, options)
        self.threads = options.intra_op_num_threads
        self._outputs = [o.name for o in self.session.get_outputs()]

    @property
    def threads_refused(self) -> str | None:
        return None  # each session has its own intra-op pool

    def predict(self, inputs: Inputs) -> dict[str, np.ndarray]:
        values = self.session.run(self._outputs, {k: np.ascontiguousarray(v) for k, v in inputs.items()})
        return dict(zip(self._outputs, values))
