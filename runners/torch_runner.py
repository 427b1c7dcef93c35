"""The demo's PyTorch modules, stored as architecture name, constructor arguments and a state dict (float, or dynamic int8)."""

from __future__ import annotations

import bentoml
import numpy as np
import torch

from models.nets import ARCHITECTURES
from models.quantize import quantize_torch
from runners.base import Inputs, Runner


def load_torch_module(model: bentoml.Model | str, device: str) -> torch.nn.Module:
    """Rebuild the module from the store; weights_only loading never runs pickled code."""
    if isinstance(model, str):
        model = bentoml.models.get(model)
    meta = model.info.metadata
    module = ARCHITECTURES[meta["architecture"]](**meta["arch_args"])
    if meta.get("quantization") == "dynamic-int8":  # same layers swapped for int8 ones, then their packed weights load
        module = quantize_torch(module.eval())
    state = torch.load(model.path_of("state_dict.pt"), map_location=device, weights_only=True)
    module.load_state_dict(state)
    return module.to(device).eval()


class TorchRunner(Runner):
    formats = ("pytorch",)

    def __init__(self, model: bentoml.Model, device: str = "cpu") -> None:
        if model.info.metadata.get("quantization"):
            device = "cpu"  # torch's quantized kernels run on the CPU only
        super().__init__(model, device)
        self.module = load_torch_module(model, device)

    def predict(self, inputs: Inputs) -> dict[str, np.ndarray]:
        (batch,) = inputs.values()
        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(batch)).to(self.device))
            return {"probabilities": out.to(torch.float32).cpu().numpy()}
