"""Build the right runner for a tag from the framework named in its metadata."""

from __future__ import annotations

import bentoml

from runners.base import Runner, resolve_device
from runners.ensemble_runner import EnsembleRunner
from runners.onnx_runner import OnnxRunner
from runners.sklearn_runner import SklearnRunner
from runners.torch_runner import TorchRunner

RUNNERS: dict[str, type[Runner]] = {r.framework: r for r in (SklearnRunner, TorchRunner, OnnxRunner)}


class UnsupportedModel(Exception):
    pass


def load_runner(tag: str, device: str = "auto", cache: dict[str, Runner] | None = None) -> Runner:
    """Load `tag` from the BentoML store; `cache` shares member runners between ensembles and direct serving."""
    cache = {} if cache is None else cache
    if tag in cache:
        return cache[tag]
    model = bentoml.models.get(tag)
    framework = model.info.metadata.get("framework")
    resolved = resolve_device(device)
    if framework == EnsembleRunner.framework:
        runner: Runner = EnsembleRunner(model, resolved, lambda t: load_runner(t, device, cache))
    elif framework in RUNNERS:
        runner = RUNNERS[framework](model, resolved)
    else:
        raise UnsupportedModel(f"{tag}: no runner for framework {framework!r}")
    cache[str(model.tag)] = runner
    return runner
