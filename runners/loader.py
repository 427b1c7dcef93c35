"""Build the right runner for a tag: the registry of runner classes by the version's format."""

from __future__ import annotations

import bentoml

from runners.base import Runner, resolve_device
from runners.ensemble_runner import EnsembleRunner
from runners.file_runner import FileRunner
from runners.onnx_runner import OnnxRunner
from runners.sklearn_runner import SklearnRunner
from runners.torch_runner import TorchRunner

RUNNERS: dict[str, type[Runner]] = {f: r for r in (SklearnRunner, TorchRunner, OnnxRunner, FileRunner) for f in r.formats}
"""Format -> runner class. Versions saved before formats were recorded are looked up by their framework."""


class UnsupportedModel(Exception):
    pass


def format_of(metadata: dict) -> str | None:
    return metadata.get("format") or metadata.get("framework")


def load_runner(tag: str, device: str = "auto", cache: dict[str, Runner] | None = None) -> Runner:
    """Load `tag` from the BentoML store; `cache` shares member runners between ensembles and direct serving."""
    cache = {} if cache is None else cache
    if tag in cache:
        return cache[tag]
    model = bentoml.models.get(tag)
    fmt = format_of(model.info.metadata)
    resolved = resolve_device(model.info.metadata.get("device", device))
    if fmt in EnsembleRunner.formats:
        runner: Runner = EnsembleRunner(model, resolved, lambda t: load_runner(t, device, cache))
    elif fmt in RUNNERS:
        runner = RUNNERS[fmt](model, resolved)
    else:
        raise UnsupportedModel(f"{tag}: no runner for format {fmt!r} (module {model.info.module!r}); "
                               "models saved by BentoML's own savers are served once imported (models.importer)")
    cache[str(model.tag)] = runner
    return runner
