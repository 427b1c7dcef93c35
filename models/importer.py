"""One way in for a user's model: a file, a directory, or a model already in the BentoML store.

    import_model("iris", "v1", Path("iris.skops"))
    import_model("net", "v1", Path("net.pt"), ImportOptions(allow_code=True, config=Path("model.yaml")))
    import_model("bento-iris", "v1", "iris-from-bentoml:latest")       # saved by bentoml.sklearn.save_model

In order, before anything is written to the store:
1. the name and version are checked (no path characters) and must not exist yet;
2. the format is chosen: `implementation` or `format` in the model.yaml, else the `module` of a
   BentoML model's own model.yaml, else the file's name (`models.formats.detect`);
3. formats that can run code are refused unless the operator allows them
   (`RTSERVE_IMPORT_ALLOW_CODE_FORMATS`) and the deploy asks (`allow_code`); symlinks are refused;
   a format only the server makes (AOTInductor packages of `rtserve optimize`) is refused unless it made
   these files;
4. every file's SHA-256 is taken;
5. the probe load runs in a throw-away process (`models.probe`, forked by `models.fork_server`): the
   format's own checks first (skops' trusted types, ONNX external data, AOTInductor archives), then
   signature, one sample call, outputs checked, memory measured;
6. the files are copied into the store as NAME:VERSION with the metadata every runner reads:
   format, framework, task, signature, the model's own outputs, source, sha256, trusted types,
   memory, batching (and the batch settings the model.yaml suggests), modes.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bentoml
import yaml

from core.errors import CodeFormatNotAllowed, Conflict, Forbidden, ModelRefused
from models import formats, store
from models.declared import Declared
from models.formats.base import ModelFormat
from models.formats.onnx import check_inside
from models.names import check_name
from models.probe import run_probe
from models.settings import ImportSettings
from models.versions import version_problem

CONFIG_NAMES = ("model.yaml", "model.yml")


@dataclass(frozen=True)
class ImportOptions:
    """What one deploy asks for, within what the operator's `ImportSettings` allow."""

    allow_code: bool = False
    """Accept a format that can run code when loaded (the operator must allow it too)."""
    trust: tuple[str, ...] = ()
    """Extra skops types to trust (the operator must allow deploys to trust types)."""
    config: Path | None = None
    """A model.yaml (see `models.declared`); a directory's own model.yaml is read when this is None."""
    sample: Path | None = None
    """A sample input (.npy, or .npz by input name) run once to record the outputs."""
    origin: str = "deploy"
    """Where the deploy came from, recorded in the version's `source` (deploy, triton, bentoml, demo)."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Further metadata to record as given (e.g. the demo's held-out accuracy); what the import sets wins."""
    made_here: bool = False
    """The files were written by this server itself (`rtserve optimize`), never uploaded: only such an import may
    bring a format no deploy can (`ModelFormat.made_here_only`: AOTInductor packages)."""


@dataclass(frozen=True)
class Located:
    """What to import: the model file, the files to copy (relative to `root`), and a BentoML module if any."""

    root: Path
    file: Path
    files: tuple[Path, ...]
    source: dict[str, Any]
    module: str | None = None


def import_model(
    name: str, version: str, source: Path | str, options: ImportOptions = ImportOptions(),
    settings: ImportSettings | None = None,
) -> bentoml.Model:
    """Probe `source` and save it as NAME:VERSION; ModelRefused (or a subclass), CodeFormatNotAllowed,
    Forbidden or Conflict when it cannot be."""
    settings = settings or ImportSettings()
    check_name("model name", name)
    check_name("version", version)
    if (problem := version_problem(version)) is not None:
        raise ModelRefused(f"version '{version}' {problem}")
    tag = f"{name}:{version}"
    if store.exists(tag):
        raise Conflict(f"{tag} already exists; deploy a new version")
    if options.trust and not settings.allow_deploy_trust:
        raise Forbidden("this server does not let a deploy trust types; the operator keeps the list "
                        "(RTSERVE_IMPORT_TRUSTED_TYPES, RTSERVE_IMPORT_ALLOW_DEPLOY_TRUST)")
    declared = _declared(options, source)
    located = locate(source, declared.named_files())
    fmt = choose_format(located, declared)
    if fmt.made_here_only and not options.made_here:
        raise ModelRefused(f"{located.file.name}: the {fmt.name} format holds native code and is only made by this server "
                           "(rtserve optimize --to compiled); it is never accepted from a deploy")
    allow_code = settings.allow_code_formats and options.allow_code
    if fmt.runs_code and not allow_code:
        where = "the operator has not turned them on (RTSERVE_IMPORT_ALLOW_CODE_FORMATS)" \
            if not settings.allow_code_formats else "this deploy did not ask for it (--allow-code)"
        raise CodeFormatNotAllowed(f"{located.file.name}: the {fmt.name} format can run code when loaded, and {where}. "
                                   "Formats that load without running code: ONNX, XGBoost, LightGBM, skops")
    trust = {"allow_code": allow_code, "trusted_types": [*settings.trusted_types, *options.trust]}
    _check_named_files(located, declared)
    hashes = {str(p): sha256(located.root / p) for p in located.files}
    partial = {"implementation": declared.implementation} if declared.implementation else {}
    request = {"format": fmt.name, "file": str(located.file), "metadata": partial, "trust": trust,
               "declared": declared.model_dump(exclude_none=True), "sample": str(options.sample) if options.sample else None}
    probed = run_probe(request, settings.probe_timeout_s, settings.probe_memory_mb)
    metadata = {
        **options.metadata,
        **probed,
        **partial,
        "framework": fmt.framework,
        "format": fmt.name,
        "file": str(located.file.relative_to(located.root)),
        "sha256": hashes,
        "source": {**located.source, "origin": options.origin},
        "declared": declared.model_dump(exclude_none=True),
    }
    if options.trust:
        metadata["trusted_by_deploy"] = sorted(options.trust)
    return store.create(tag, metadata, lambda d: _copy(located, d))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate(source: Path | str, named: tuple[str, ...] = ()) -> Located:
    """The model file and the files that go with it, from a path or a BentoML store tag. `named`: files the
    model.yaml names (a tokenizer), which go with the model but are never taken for the model file."""
    path = Path(source)
    if isinstance(source, str) and not path.exists() and ":" in source:
        return _from_store(source)
    if path.is_symlink():
        raise ModelRefused(f"{path.name} is a symlink; symlinks are refused")
    if path.is_file():
        return Located(path.parent, path, (Path(path.name),), {"kind": "file", "name": path.name})
    if not path.is_dir():
        raise ModelRefused(f"{source}: no such file or directory")
    files = []
    for p in sorted(path.rglob("*")):
        if p.is_symlink():
            raise ModelRefused(f"{p.relative_to(path)} is a symlink; symlinks are refused")
        if p.is_file():
            files.append(p.relative_to(path))
    module = _bentoml_module(path)
    if module:
        return _bentoml_layout(path, module, {"kind": "directory", "name": path.name})
    candidates = [f for f in files if f.name not in CONFIG_NAMES and str(f) not in named and _format_of(path / f) is not None]
    if len(candidates) != 1:
        raise ModelRefused(f"{path.name}: expected one model file in the directory, found "
                           f"{[str(c) for c in candidates] or 'none'}")
    return Located(path, path / candidates[0], tuple(f for f in files if f.name not in CONFIG_NAMES),
                   {"kind": "directory", "name": path.name})


def _format_of(file: Path) -> ModelFormat | None:
    try:
        return formats.detect(file)
    except ModelRefused:
        return None


def _from_store(tag: str) -> Located:
    try:
        model = bentoml.models.get(tag)
    except (bentoml.exceptions.NotFound, ValueError) as exc:
        raise ModelRefused(f"{tag}: not in the BentoML model store ({exc})") from None
    module = model.info.module
    if module not in formats.BENTOML_MODULES:
        raise ModelRefused(f"{tag} was saved by '{module}', which is not served here; "
                           f"served: {sorted(formats.BENTOML_MODULES)}")
    return _bentoml_layout(Path(model.path), module, {"kind": "bentoml", "name": str(model.tag)})


def _bentoml_module(folder: Path) -> str | None:
    """The `module` of a BentoML model folder's own model.yaml (a user's model.yaml has none)."""
    config = folder / "model.yaml"
    if not config.is_file():
        return None
    try:
        data = yaml.safe_load(config.read_text())
    except yaml.YAMLError:
        return None
    module = data.get("module") if isinstance(data, dict) else None
    return module if isinstance(module, str) and module.startswith("bentoml.") else None


def _bentoml_layout(folder: Path, module: str, source: dict[str, Any]) -> Located:
    if module not in formats.BENTOML_MODULES:
        raise ModelRefused(f"a model saved by '{module}' is not served; served: {sorted(formats.BENTOML_MODULES)}")
    _, filename = formats.BENTOML_MODULES[module]
    file = folder / filename
    if file.is_symlink() or not file.is_file():
        raise ModelRefused(f"{source['name']}: {filename} is missing (or a symlink)")
    return Located(folder, file, (Path(filename),), {**source, "module": module}, module)


def _declared(options: ImportOptions, source: Path | str) -> Declared:
    """The deploy's model.yaml, else a directory's own (a BentoML model folder's model.yaml is BentoML's)."""
    if options.config is not None:
        return Declared.read(options.config)
    path = Path(source)
    if path.is_dir() and not path.is_symlink() and _bentoml_module(path) is None:
        for name in CONFIG_NAMES:
            if (path / name).is_file():
                return Declared.read(path / name)
    return Declared()


def _check_named_files(located: Located, declared: Declared) -> None:
    """Files the model.yaml names must be among the files deployed with the model, inside its folder."""
    for name in declared.named_files():
        check_inside(located.root, name, "the declared file")
        if Path(name) not in located.files:
            raise ModelRefused(f"the declared file '{name}' is not deployed with the model: deploy the folder that holds both")


def choose_format(located: Located, declared: Declared) -> ModelFormat:
    if declared.implementation:
        return formats.get("custom")
    if declared.format:
        return formats.get(declared.format)
    if located.module:
        return formats.get(formats.BENTOML_MODULES[located.module][0])
    return formats.detect(located.file)


def _copy(located: Located, target: Path) -> None:
    for rel in located.files:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(located.root / rel, target / rel)
