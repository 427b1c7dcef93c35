"""The conversions `rtserve optimize` makes, each from a loaded source version into a folder of files.

| target   | from                                          | into                                                     |
|----------|-----------------------------------------------|----------------------------------------------------------|
| onnx     | torchscript, torch_pickle (`torch.onnx.export`, the TorchScript-based exporter) | ONNX, the batch dimension dynamic |
| onnx     | torch_export (`torch.onnx.export`, the dynamo exporter, the program's own dynamic dimensions) | ONNX |
| onnx     | skops, pickle (skl2onnx), xgboost, lightgbm (onnxmltools), where the converter knows the model | ONNX |
| int8     | onnx, or any of the above through onnx first  | ONNX with dynamic int8 MatMul/Gemm (`models.quantize`)    |
| compiled | torch_export, torch_pickle                    | an AOTInductor package (`torch_aoti`), batch dynamic     |
| compiled | torchscript (torch.export cannot read it)     | frozen TorchScript (`torch.jit.freeze`)                  |

Everything else is refused with `OptimizationRefused`, naming what is supported. Runs in the optimizer's
throw-away subprocess (`models.optimize.job`), never in a serving worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import OptimizationRefused
from models.signature import TensorSpec

TARGETS = ("onnx", "int8", "compiled")
TORCH = ("torchscript", "torch_pickle", "torch_export")
TABULAR = ("skops", "pickle", "xgboost", "lightgbm")
SOURCES: dict[str, tuple[str, ...]] = {
    "onnx": (*TORCH, *TABULAR),
    "int8": ("onnx", *TORCH, *TABULAR),
    "compiled": TORCH,
}
"""Target -> the source formats it converts from."""
ONNX_ML_OPSET = 15
"""onnxmltools' boosters converters support opsets up to 15."""
TORCH_OPSET = 17
FROZEN_NOTE = "TorchScript cannot be read by torch.export, so it is frozen (weights folded in as constants), not compiled to native code"


@dataclass
class Converted:
    """What a conversion wrote: its model file (relative to the folder), its format, and how it was made."""

    file: str
    format: str
    method: str
    notes: list[str] = field(default_factory=list)


def check_supported(target: str, source_format: str) -> None:
    """OptimizationRefused when `target` cannot be made from a version of `source_format`; cheap, so the server
    asks before it starts a subprocess."""
    if target not in SOURCES:
        raise OptimizationRefused(f"unknown target '{target}'; targets: {list(TARGETS)}")
    if source_format == "onnx" and target == "onnx":
        raise OptimizationRefused("the version is ONNX already; --to int8 quantizes it")
    if source_format not in SOURCES[target]:
        raise OptimizationRefused(f"--to {target} is not made from {source_format} models; it takes "
                                  f"{list(SOURCES[target])}")


def convert(target: str, source_format: str, loaded: Any, meta: dict[str, Any], example: dict[str, np.ndarray],
            out: Path) -> Converted:
    """Write the `target` version of the loaded source (its metadata `meta`, an input `example`) into `out`."""
    check_supported(target, source_format)
    if target == "compiled":
        return _compile(source_format, loaded, meta, example, out)
    if target == "onnx":
        return to_onnx(source_format, loaded, meta, example, out / "model.onnx")
    from models.quantize import quantizable, quantize_onnx

    if source_format == "onnx":
        src, made = Path(meta["_file"]), Converted("model.onnx", "onnx", "onnxruntime dynamic int8")
    else:
        made = to_onnx(source_format, loaded, meta, example, out / "float.onnx")
        src, made.file, made.method = out / "float.onnx", "model.onnx", f"{made.method}, then onnxruntime dynamic int8"
    if not quantizable(src):
        raise OptimizationRefused("nothing to quantize: the graph has no MatMul or Gemm (only fully connected layers are "
                                  "quantized; tree ensembles, linear models converted to ONNX-ML operators and "
                                  "convolutions stay float, where int8 does not pay)")
    int8 = quantize_onnx(src, out / "model.onnx")
    if src.parent == out:
        src.unlink()
    made.notes.append(f"int8 nodes: {', '.join(int8[:8])}" + (f" and {len(int8) - 8} more" if len(int8) > 8 else ""))
    return made


def to_onnx(source_format: str, loaded: Any, meta: dict[str, Any], example: dict[str, np.ndarray], path: Path) -> Converted:
    if source_format in TORCH:
        return _torch_to_onnx(source_format, loaded, meta, example, path)
    inputs = [TensorSpec.from_metadata(t) for t in meta["inputs"]]
    if len(inputs) != 1 or inputs[0].datatype != "FP32" or len(inputs[0].shape) != 2:
        raise OptimizationRefused(f"--to onnx converts {source_format} models with one FP32 input of [rows, features]; "
                                  f"this one takes {[f'{s.name} {s.datatype} {list(s.shape)}' for s in inputs]}")
    spec = inputs[0]
    if source_format in ("skops", "pickle"):
        graph, how = _sklearn_to_onnx(loaded, spec), "skl2onnx"
    else:
        graph, how = _booster_to_onnx(source_format, loaded.model, spec), "onnxmltools"
    own = meta["model_outputs"][0]["name"]
    _keep_one_output(graph, "probabilities" if meta["task"] == "classification" else None, own)
    import onnx

    onnx.save(graph, str(path))
    return Converted(path.name, "onnx", how)


def _sklearn_to_onnx(estimator: Any, spec: TensorSpec) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
    try:
        return convert_sklearn(estimator, initial_types=[(spec.name, FloatTensorType([None, spec.shape[1]]))],
                               options=options)
    except Exception as exc:  # noqa: BLE001 - skl2onnx raises its own errors (and others) for what it cannot convert
        raise OptimizationRefused(f"skl2onnx cannot convert {type(estimator).__name__}: {type(exc).__name__}: "
                                  f"{str(exc)[:300]}") from None


def _booster_to_onnx(source_format: str, booster: Any, spec: TensorSpec) -> Any:
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    types = [(spec.name, FloatTensorType([None, spec.shape[1]]))]
    try:
        if source_format == "xgboost":
            return onnxmltools.convert_xgboost(booster, initial_types=types, target_opset=ONNX_ML_OPSET)
        return onnxmltools.convert_lightgbm(booster, initial_types=types, target_opset=ONNX_ML_OPSET, zipmap=False)
    except Exception as exc:  # noqa: BLE001 - the converters raise many kinds of error for what they do not know
        raise OptimizationRefused(f"onnxmltools cannot convert this {source_format} booster: {type(exc).__name__}: "
                                  f"{str(exc)[:300]}") from None


def _keep_one_output(graph: Any, keep: str | None, name: str) -> None:
    """The graph's one served output under the source's own name: a converted classifier also outputs `label`,
    which the server derives itself, so only its probabilities stay."""
    outputs = list(graph.graph.output)
    chosen = next((o for o in outputs if o.name == keep), outputs[-1]) if keep else outputs[0]
    for other in outputs:
        if other is not chosen:
            graph.graph.output.remove(other)
    old = chosen.name
    if old == name:
        return
    for node in graph.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    chosen.name = name


def _torch_to_onnx(source_format: str, loaded: Any, meta: dict[str, Any], example: dict[str, np.ndarray],
                   path: Path) -> Converted:
    import torch

    args = tuple(torch.from_numpy(np.ascontiguousarray(example[t["name"]])) for t in meta["inputs"])
    try:
        with torch.no_grad():  # a module's parameters may require grad; nothing is trained here
            how = _export_onnx(source_format, loaded, meta, args, path)
    except Exception as exc:  # noqa: BLE001 - the exporters raise many kinds of error for what they cannot trace
        raise OptimizationRefused(f"torch.onnx.export cannot export this {source_format} model: {type(exc).__name__}: "
                                  f"{str(exc)[:400]}") from None
    return Converted(path.name, "onnx", how)


def _export_onnx(source_format: str, loaded: Any, meta: dict[str, Any], args: tuple[Any, ...], path: Path) -> str:
    import torch

    inputs = [t["name"] for t in meta["inputs"]]
    outputs = [t["name"] for t in meta["model_outputs"]]
    if source_format == "torch_export":
        torch.onnx.export(loaded.program, args, str(path), input_names=inputs, output_names=outputs, dynamo=True,
                          external_data=False, verbose=False)
        return "torch.onnx.export (dynamo exporter, the program's own dynamic dimensions)"
    axes = {t["name"]: {i: f"{t['name']}_{i}" if i else "batch" for i, d in enumerate(t["shape"]) if d < 0}
            for t in (*meta["inputs"], *meta["model_outputs"])}
    torch.onnx.export(loaded.module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                      opset_version=TORCH_OPSET, dynamo=False)
    return "torch.onnx.export (TorchScript exporter), dynamic batch"


def _compile(source_format: str, loaded: Any, meta: dict[str, Any], example: dict[str, np.ndarray], out: Path) -> Converted:
    import torch

    inputs = [t["name"] for t in meta["inputs"]]
    args = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in inputs)
    try:
        if source_format == "torchscript":
            # Frozen only: optimize_for_inference's MKLDNN rewrites of convolutions do not load back once saved.
            torch.jit.freeze(loaded.module.eval()).save(str(out / "model.pt"))
            return Converted("model.pt", "torchscript", "torch.jit.freeze", [FROZEN_NOTE])
        program = loaded.program if source_format == "torch_export" else _export(loaded.module, args, meta)
        import torch._inductor

        torch._inductor.aoti_compile_and_package(program, package_path=str(out / "model.pt2"))
    except Exception as exc:  # noqa: BLE001 - export and the compiler raise many kinds of error
        raise OptimizationRefused(f"{source_format} cannot be compiled: {type(exc).__name__}: {str(exc)[:400]}") from None
    return Converted("model.pt2", "torch_aoti", "torch.export + torch._inductor.aoti_compile_and_package (CPU)")


def _export(module: Any, args: tuple[Any, ...], meta: dict[str, Any]) -> Any:
    """An ExportedProgram of a pickled module, its batch dimension dynamic when the version batches."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=65536)
    shapes = tuple({0: batch} if t["shape"][0] < 0 else None for t in meta["inputs"])
    return torch.export.export(module, args, dynamic_shapes=shapes)
