"""Dynamic int8 quantization of an ONNX graph's fully connected ops (onnxruntime's quantizer).

Dynamic quantization stores weights as int8 and quantizes activations on each call, so it needs
no calibration data and keeps the float original's inputs and outputs. Only MatMul and Gemm are
quantized: quantizing Conv as well (ConvInteger) made a small convolutional network 4-15x slower on
the CPUs measured, since onnxruntime has no fast int8 kernel for it.
"""

from __future__ import annotations

import logging
from pathlib import Path

ONNX_QUANTIZED_OPS = ["MatMul", "Gemm"]
ONNX_INT8_OPS = {"MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "QLinearMatMul", "QLinearConv"}


def quantizable(path: Path) -> bool:
    """Whether the graph has an op the quantizer would make int8 (a graph of ONNX-ML operators has none)."""
    import onnx

    return any(n.op_type in ONNX_QUANTIZED_OPS for n in onnx.load(str(path), load_external_data=False).graph.node)


def quantize_onnx(src: Path, dst: Path) -> list[str]:
    """Dynamic int8 weights for the ONNX graph's fully connected ops; returns the int8 nodes as `name (op)`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer advises pre-processing through the root logger on every call
    try:
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=ONNX_QUANTIZED_OPS)
    finally:
        root.setLevel(level)
    return [f"{n.name} ({n.op_type})" for n in onnx.load(str(dst)).graph.node if n.op_type in ONNX_INT8_OPS]
