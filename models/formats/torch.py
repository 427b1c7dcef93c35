"""PyTorch files: TorchScript, `torch.export` programs (`.pt2`), and BentoML's pytorch saves.

All three can run code when loaded (PyTorch's own documentation says never to load untrusted
files), so they are opt-in. TorchScript and pickled modules carry no input shapes or dtypes: a
`model.yaml` declares them (or a sample input is run once to record the outputs). A `.pt2`
program carries its user inputs and their shapes: a symbolic first dimension is the batch, a
fixed one turns batching off. AOTInductor packages, `.pt2` archives with compiled native code
inside, are refused, detected by what the archive holds: the one exception is a package the server
compiled itself (`torch_aoti`, made by `rtserve optimize --to compiled` from a version the operator
let in), which no deploy can bring.
"""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ModelRefused
from models.formats.base import Described, ModelFormat, Trust, fixed
from models.signature import TensorSpec, datatype_of

NATIVE = (".so", ".dll", ".dylib", ".o", ".cpp", ".cubin", ".ptx", ".a")


def is_aoti_package(names: list[str]) -> list[str]:
    """The native files (or AOTInductor entries) an archive holds: any makes it an AOTInductor package."""
    return [n for n in names if n.lower().endswith(NATIVE) or "aotinductor" in n.lower()]


def archive_names(file: Path) -> list[str]:
    try:
        with zipfile.ZipFile(file) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelRefused(f"{file.name}: not a PyTorch archive (a zip file): {exc}") from None


def _tensors(inputs: dict[str, np.ndarray], device: str) -> list[Any]:
    import torch

    return [torch.from_numpy(np.ascontiguousarray(v)).to(device) for v in inputs.values()]


def _named(out: Any, names: list[str] | None) -> dict[str, np.ndarray]:
    """The module's return value (a tensor, a tuple or list of them, or a dict) as named arrays."""
    import torch

    if isinstance(out, dict):
        items = list(out.items())
    else:
        values = list(out) if isinstance(out, (tuple, list)) else [out]
        keys = names if names and len(names) == len(values) else [f"output_{i}" for i in range(len(values))]
        items = list(zip(keys, values))
    return {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in items}


class TorchModule:
    """A loaded module, the device it runs on and the names its outputs are served under."""

    def __init__(self, module: Any, device: str, output_names: list[str] | None) -> None:
        self.module, self.device, self.output_names = module, device, output_names

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            return _named(self.module(*_tensors(inputs, self.device)), self.output_names)


def _output_names(metadata: Mapping[str, Any]) -> list[str] | None:
    """The raw output names recorded for the version (`model_outputs`), or declared in its model.yaml."""
    outputs = metadata.get("model_outputs") or metadata.get("declared_outputs")
    return [o["name"] for o in outputs] if outputs else None


class _TorchFormat(ModelFormat):
    framework = "pytorch"
    runs_code = True

    def describe(self, model: TorchModule, file: Path) -> Described:
        return Described()

    def predict(self, model: TorchModule, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return model(inputs)


class TorchScriptFormat(_TorchFormat):
    name = "torchscript"
    suffixes = (".pt", ".pth", ".torchscript", ".ptc")

    def matches(self, file: Path) -> bool:
        """TorchScript archives hold the module's code (`*/code/`); other `.pt` zips are plain pickles."""
        return super().matches(file) and zipfile.is_zipfile(file) and any("/code/" in n for n in archive_names(file))

    def check(self, file: Path, trust: Trust) -> dict[str, Any]:
        archive_names(file)
        return {}

    def load(self, file: Path, metadata: Mapping[str, Any], device: str = "cpu") -> TorchModule:
        import torch

        try:
            module = torch.jit.load(str(file), map_location=device).eval()
        except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError and others for a damaged archive
            raise ModelRefused(f"{file.name}: not a TorchScript module: {type(exc).__name__}: {str(exc)[:300]}") from None
        return TorchModule(module, device, _output_names(metadata))


_EXPORT_LOAD = threading.Lock()
"""`torch.export.load` keeps its deserializer in a module global (`_CURRENT_DESERIALIZER`): two loads at once
in one process (two `.pt2` versions deployed together reach a worker's load threads together) fail with
"already set". One load at a time per process."""


class TorchExportFormat(_TorchFormat):
    name = "torch_export"
    suffixes = (".pt2",)

    def check(self, file: Path, trust: Trust) -> dict[str, Any]:
        native = is_aoti_package(archive_names(file))
        if native:
            raise ModelRefused(f"{file.name} is an AOTInductor package (compiled native code inside: {native[:3]}); "
                               "native code is not loaded. Save the program with torch.export.save instead")
        return {}

    def load(self, file: Path, metadata: Mapping[str, Any], device: str = "cpu") -> Any:
        import torch

        try:
            with _EXPORT_LOAD:
                program = torch.export.load(str(file))
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds of error for a damaged archive
            raise ModelRefused(f"{file.name}: not a torch.export program: {type(exc).__name__}: {str(exc)[:300]}") from None
        model = TorchModule(program.module().to(device), device, _output_names(metadata) or self._output_names(program))
        model.program = program
        return model

    @staticmethod
    def _output_names(program: Any) -> list[str]:
        specs = [s for s in program.graph_signature.output_specs if s.kind.name == "USER_OUTPUT"]
        return ["output" if len(specs) == 1 else f"output_{i}" for i in range(len(specs))]

    def describe(self, model: TorchModule, file: Path) -> Described:
        program = model.program
        user = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        placeholders = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
        inputs = tuple(self._spec(name, placeholders[name]) for name in user)
        (output_node,) = [n for n in program.graph.nodes if n.op == "output"]
        values = [a.meta.get("val") for a in output_node.args[0]]
        names = model.output_names or self._output_names(program)
        outputs = tuple(self._spec(name, v) for name, v in zip(names, values))
        batch_dims = {spec.shape[0] for spec in inputs if spec.shape}
        batching = batch_dims == {-1}
        fixed_batch = (f"the batch dimension is fixed ({sorted(batch_dims)}): served with batching off; "
                       "export with a torch.export.Dim on dimension 0 to batch requests")
        notes = [] if batching else [fixed_batch]
        return Described(inputs, outputs, batching=batching, notes=notes)

    @staticmethod
    def _spec(name: str, value: Any) -> TensorSpec:
        import torch

        if not isinstance(value, torch.Tensor):
            raise ModelRefused(f"'{name}' is not a tensor ({type(value).__name__}); only tensor inputs and outputs are served")
        dtype = torch.empty((), dtype=value.dtype).numpy().dtype
        return TensorSpec(name, datatype_of(dtype), tuple(fixed(d) if isinstance(d, int) else -1 for d in value.shape))


class TorchPickleFormat(_TorchFormat):
    """A whole module saved with `torch.save` (BentoML's pytorch saver does so with cloudpickle)."""

    name = "torch_pickle"
    suffixes = ()

    def load(self, file: Path, metadata: Mapping[str, Any], device: str = "cpu") -> TorchModule:
        import torch

        try:
            module = torch.load(str(file), map_location=device, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - unpickling a damaged file raises anything
            raise ModelRefused(f"{file.name}: cannot be loaded by torch: {type(exc).__name__}: {str(exc)[:300]}") from None
        if not isinstance(module, torch.nn.Module):
            raise ModelRefused(f"{file.name} holds a {type(module).__name__}, not a module (a state dict has no "
                               "architecture: save the module with torch.jit.script or torch.export)")
        return TorchModule(module.eval(), device, _output_names(metadata))


class TorchAotiFormat(_TorchFormat):
    """An AOTInductor package (`torch._inductor.aoti_compile_and_package`): a program compiled to native code.

    Only `rtserve optimize --to compiled` writes one (`made_here_only`), from a PyTorch version the operator let
    in; its signature is the source version's, declared in the model.yaml the optimizer writes."""

    name = "torch_aoti"
    suffixes = ()
    made_here_only = True

    def check(self, file: Path, trust: Trust) -> dict[str, Any]:
        if not is_aoti_package(archive_names(file)):
            raise ModelRefused(f"{file.name} is not an AOTInductor package (no compiled code inside)")
        return {}

    def load(self, file: Path, metadata: Mapping[str, Any], device: str = "cpu") -> TorchModule:
        import torch._inductor

        try:
            runner = torch._inductor.aoti_load_package(str(file))
        except Exception as exc:  # noqa: BLE001 - a damaged package fails in the loader or in dlopen
            raise ModelRefused(f"{file.name}: not a loadable AOTInductor package: {type(exc).__name__}: {str(exc)[:300]}") from None
        return TorchModule(runner, device, _output_names(metadata))
