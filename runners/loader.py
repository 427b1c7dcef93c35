"""Build the right runner for a tag: the registry of runner classes by the version's format.

| format (metadata)                                                  | runner                                         |
|--------------------------------------------------------------------|------------------------------------------------|
| onnx                                                               | `OnnxRunner`: session options per version      |
| skops, pickle                                                      | `SklearnRunner`: linear pipelines folded       |
| xgboost, lightgbm, torchscript, torch_export, torch_pickle, custom, torch_aoti | `FileRunner`: the format's own reader |
| ensemble (framework; saved by `demo.build`, not imported)          | `EnsembleRunner`: a soft vote of served models |

Every runner implements the interface in `runners.base`; a new format needs a reader in
`models.formats` and a runner class naming it in `formats`, added to `RUNNERS`.
"""

from __future__ import annotations

from collections.abc import Callable

import bentoml
import psutil

from core.errors import LoadFailed
from runners.base import Runner, resolve_device
from runners.ensemble_runner import EnsembleRunner
from runners.file_runner import FileRunner
from runners.onnx_runner import OnnxRunner
from runners.sklearn_runner import SklearnRunner

RUNNERS: dict[str, type[Runner]] = {f: r for r in (SklearnRunner, OnnxRunner, FileRunner) for f in r.formats}
"""Format -> runner class. An ensemble records no format and is looked up by its framework."""


class UnsupportedModel(Exception):
    pass


def format_of(metadata: dict) -> str | None:
    return metadata.get("format") or metadata.get("framework")


def check_memory(tag: str, needed_mb: float | None) -> None:
    """Refuse to load a version whose probe measured more memory than this machine has free."""
    available = psutil.virtual_memory().available / 2**20
    if needed_mb is not None and needed_mb > available:
        raise LoadFailed(f"{tag} needs {needed_mb:.0f} MB (measured by its probe load); {available:.0f} MB are free")


def load_runner(tag: str, device: str = "auto", cache: dict[str, Runner] | None = None,
                threads_of: Callable[[bentoml.Model], int | None] | None = None) -> Runner:
    """Load `tag` from the BentoML store; `cache` shares member runners between ensembles and direct serving.
    `threads_of` says a stored model's own `intra_op_threads` (None, or no `threads_of`: the worker's), for an
    ensemble's members too, so a member runs with the same threads whichever loads it first."""
    cache = {} if cache is None else cache
    if tag in cache:
        return cache[tag]
    model = bentoml.models.get(tag)
    check_memory(str(model.tag), model.info.metadata.get("memory_mb"))
    fmt = format_of(model.info.metadata)
    resolved = resolve_device(model.info.metadata.get("device", device))
    threads = threads_of(model) if threads_of is not None else None
    if fmt in EnsembleRunner.formats:
        runner: Runner = EnsembleRunner(model, resolved, lambda t: load_runner(t, device, cache, threads_of), threads)
    elif fmt in RUNNERS:
        runner = RUNNERS[fmt](model, resolved, threads=threads)
    else:
        raise UnsupportedModel(f"{tag}: no runner for format {fmt!r} (module {model.info.module!r}); "
                               "models saved by BentoML's own savers are served once imported (models.importer)")
    cache[str(model.tag)] = runner
    return runner
