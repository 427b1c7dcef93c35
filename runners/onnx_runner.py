"""ONNX models run by onnxruntime, on the CUDA provider when the device is a GPU and it is installed."""

from __future__ import annotations

import bentoml
import numpy as np
import onnxruntime as ort

from runners.base import Runner


class OnnxRunner(Runner):
    framework = "onnx"
    intra_op_threads = 1

    def __init__(self, model: bentoml.Model, device: str = "cpu") -> None:
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        else:
            device = "cpu"
        super().__init__(model, device)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model.path_of("model.onnx"), options, providers=providers)
        self._input_name = self.session.get_inputs()[0].name

    def predict_rows(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input_name: np.ascontiguousarray(batch)})[0].astype(np.float32, copy=False)
