"""Unloading a version gives its memory back to the system: the worker's resident memory falls to where it was."""

from __future__ import annotations

import gc

import psutil

from models.importer import ImportOptions, import_model
from runners import registry as registry_module
from runners.registry import ModelRegistry, VersionState
from runners.settings import ServingConfig
from tests.models.makers import tables_onnx


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


async def test_an_unloaded_models_memory_leaves_the_worker(model_store, tmp_path, monkeypatch):
    # 50 MB of weights in 50 tables: allocations glibc keeps in the process when they are freed, as a network's layers
    import_model("unload-tables", "v1", tables_onnx(tmp_path, 50, 50).path, ImportOptions())
    served = ModelRegistry(ServingConfig.model_validate({"models": {"unload-tables": {"versions": ["v1"]}}}))
    trims: list[bool] = []
    trim = registry_module.trim_heap
    monkeypatch.setattr(registry_module, "trim_heap", lambda: trims.append(trim()) or trims[-1])
    assert served.load("unload-tables", "v1").state is VersionState.READY  # what the first load alone brings in
    await served.unload("unload-tables", "v1")
    await served.trimming
    gc.collect()
    before = rss_mb()
    assert served.load("unload-tables", "v1").state is VersionState.READY
    loaded = rss_mb()
    await served.unload("unload-tables", "v1")
    assert await served.trimming  # run in the background; awaited here to measure what it gave back
    kept = rss_mb() - before
    assert trims == [True, True]  # once per unload, where the C library has malloc_trim (glibc)
    assert loaded - before > 40, "the model's weights were not resident"
    assert kept < (loaded - before) / 2, f"unloading kept {kept:.0f} of {loaded - before:.0f} MB"
