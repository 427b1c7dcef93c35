"""Triton's repository load with files: `config` plus `file:<version>/<name>` contents, deployed through
the one deploy path (pipeline/deploy.py), as tritonclient's `load_model(name, config=..., files=...)` sends them.

    versions = await load_with_files(deployer, "iris", {"config": "{...}"}, {"file:1/model.onnx": b"..."})

The files are written to a fresh temporary folder, each path checked first (relative, under a numeric
version folder, no `.`, `..` or empty parts, no backslashes). Triton's version folders keep their
number as the version name, so folder `1` is served as version "1" (`model_version="1"` works). The
config's version_policy picks the folders to deploy (Triton's default: the newest one); each is deployed,
oldest first, as NAME:VERSION with its config mapped to a model.yaml (pipeline/triton_config.py). A
version folder holding one file is that file (its name need not say the format: the config does);
one holding several is read as a directory (an ONNX model with external data). Versions are never
replaced: a name and version already in the store answers 409.

A refused config or path changes nothing. Versions deploy one after another: when a later one is refused,
those before it stay deployed (the error names them). A load that outlasts its request (the request
timeout, RTSERVE_LIMIT_REQUEST_TIMEOUT_S) is answered 504 and goes on to the end, as a repository load
does: the index shows how far it got.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from core.errors import BadRequest, ServingError, shown
from models.importer import ImportOptions
from pipeline.deploy import Deployer
from pipeline.triton_config import LoadPlan, read_config

log = logging.getLogger(__name__)

FILE_PREFIX = "file:"
MAX_DEPTH = 8
"""Most folders a file may sit under, inside its version folder."""
VERSION_FOLDER = re.compile(r"[1-9][0-9]{0,17}")


def split_files(parameters: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the `file:` parameters, the others)."""
    files = {k: v for k, v in parameters.items() if k.startswith(FILE_PREFIX)}
    return files, {k: v for k, v in parameters.items() if k not in files}


async def load_with_files(
    deployer: Deployer, name: str, parameters: Mapping[str, Any], files: Mapping[str, bytes]
) -> list[str]:
    """Deploy the versions the files hold (those the config's version_policy picks); the versions deployed."""
    unknown = set(parameters) - {"config"}
    if unknown:
        raise BadRequest(f"unknown parameter(s) {shown(sorted(unknown))} with files; accepted: config, file:<version>/<name>")
    if "config" not in parameters:
        raise BadRequest("a load with files needs parameters.config, the model configuration (as Triton requires)")
    plan = read_config(name, parameters["config"])
    paths = {key: _path(key) for key in files}
    chosen = plan.choose(sorted({p.parts[0] for p in paths.values()}))
    task = asyncio.ensure_future(_write_and_deploy(deployer, name, plan, {paths[k]: v for k, v in files.items()}, chosen))
    _running.add(task)
    task.add_done_callback(_finished)
    return await asyncio.shield(task)


_running: set[asyncio.Task[list[str]]] = set()
"""Loads in progress: one whose request timed out goes on to the end, as a repository load does."""


def _finished(task: asyncio.Task[list[str]]) -> None:
    _running.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None and not isinstance(exc, ServingError):
        log.error("load with files failed", exc_info=exc)


async def _write_and_deploy(deployer: Deployer, name: str, plan: LoadPlan, files: Mapping[PurePosixPath, bytes],
                            versions: list[str]) -> list[str]:
    folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="rtserve-triton-load-"))
    try:
        await asyncio.to_thread(_write, folder, files)
        return await _deploy(deployer, name, plan, folder, versions)
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)


def _path(key: str) -> PurePosixPath:
    """`file:<version>/<path>` as a safe relative path; BadRequest otherwise."""
    raw = key[len(FILE_PREFIX):]
    parts = raw.split("/")
    if (not raw or "\\" in raw or "\0" in raw or any(p in ("", ".", "..") for p in parts)
            or len(parts) < 2 or len(parts) > MAX_DEPTH + 2):
        raise BadRequest(f"file name {shown(key)} is not allowed: use file:<version>/<name>, a relative path without "
                         "'.', '..', empty parts or backslashes")
    if not VERSION_FOLDER.fullmatch(parts[0]):
        raise BadRequest(f"file name {shown(key)}: files go in a numeric version folder (file:1/model.onnx); "
                         "the configuration comes in parameters.config")
    return PurePosixPath(*parts)


def _write(folder: Path, files: Mapping[PurePosixPath, bytes]) -> None:
    for rel, content in files.items():
        target = folder.joinpath(*rel.parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("xb") as f:
                f.write(content)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise BadRequest(f"file name {shown(str(rel))} is both a file and a folder") from None


async def _deploy(deployer: Deployer, name: str, plan: LoadPlan, folder: Path, versions: list[str]) -> list[str]:
    done: list[str] = []
    for version in versions:
        source = folder / version
        files = [p for p in source.rglob("*") if p.is_file()]
        config = folder / f"model-{version}.yaml"
        config.write_text(yaml.safe_dump(plan.declared.model_dump(exclude_none=True)))
        options = ImportOptions(allow_code=plan.allow_code, trust=plan.trust, config=config, origin="triton")
        try:
            await deployer.deploy(name, version, files[0] if len(files) == 1 else source, options)
        except ServingError as exc:
            if done:
                exc.message = f"{exc.message} (version(s) {done} were deployed before it)"
            raise
        done.append(version)
    return done
