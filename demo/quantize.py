"""Optimized variants of the digits networks: torch dynamic int8 quantization and offline graph optimization
(the ONNX int8 variant is `models.quantize`, which `rtserve optimize` uses too).

Dynamic quantization stores weights as int8 and quantizes activations on each call, so it needs
no calibration data and keeps the float original's inputs and outputs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
from torch import nn

# torch's dynamic quantization has kernels for Linear (and RNN cells) only; convolutions stay float.
TORCH_QUANTIZED_TYPES: set[type[nn.Module]] = {nn.Linear}
# ONNX: models.quantize (MatMul and Gemm only).


def quantize_torch(module: nn.Module) -> nn.Module:
    """Dynamic int8 of `module`'s Linear layers (`torch.ao.quantization.quantize_dynamic`, deprecated but present)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated")
        return torch.ao.quantization.quantize_dynamic(module, TORCH_QUANTIZED_TYPES, dtype=torch.qint8)


def torch_quantized_layers(module: nn.Module) -> list[str]:
    """Names of the layers that run in int8, for the model's metadata."""
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    return [f"{name} (Linear {m.in_features}->{m.out_features})" for name, m in module.named_modules() if isinstance(m, dynamic_linear)]


def optimize_onnx(src: Path, dst: Path, level: str) -> list[str]:
    """The graph as onnxruntime rewrites it at `level`, saved so sessions start from it; returns its op types."""
    from runners.onnx_runner import OPTIMIZATION_LEVELS

    options = ort.SessionOptions()
    options.graph_optimization_level = OPTIMIZATION_LEVELS[level]
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(dst)).graph.node]
