"""The model store a served Bento writes: deploys and pulls need one, and the Bento's own is read-only.

`bentoml serve` of a Bento (what its container runs) reads models from the Bento's own store,
`$BENTO_PATH/models`: part of the image, read-only under `readOnlyRootFilesystem`, and part of an immutable
release everywhere else. A deploy and a pull from the model repository write versions into the store, so
the service switches to BentoML's home store (`$BENTOML_HOME/models`, a sized emptyDir on Kubernetes) with
every version of the Bento linked into it: those are still read from the image, take no space, and count
as the store's own; deployed and pulled versions are written beside them. Served from a checkout, the store
is already the home store and nothing changes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

LATEST = "latest"


def use_writable_store() -> Path:
    """Make BentoML's model store a writable one, as above; the store in use afterwards.

    Safe to run in every worker at once. When the home store cannot be written either, the Bento's store
    stays in use (serving works; deploys and pulls then fail with the filesystem's error) and a warning says so."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models.model import ModelStore

    chosen = Path(BentoMLContainer.model_store.get()._path)
    home = Path(BentoMLContainer.model_store_dir.get())
    if _same(chosen, home):
        return chosen
    try:
        linked = link_versions(chosen, home)
    except OSError as exc:
        log.warning("model store: %s cannot be written (%s); serving the Bento's read-only store %s, where deploys "
                    "and pulls from the model repository fail", home, exc, chosen)
        return chosen
    BentoMLContainer.model_store.set(ModelStore(str(home)))
    log.info("model store: %s (writable), with %d version(s) of the Bento linked from %s", home, linked, chosen)
    return home


def link_versions(source: Path, target: Path) -> int:
    """Link every version in the store at `source` into the store at `target` (created if needed); a version
    `target` already holds is kept. Returns how many versions are linked from `source` now."""
    target.mkdir(parents=True, exist_ok=True)
    linked = 0
    for name in sorted(p for p in source.iterdir() if p.is_dir()):
        versions = [v for v in name.iterdir() if (v / "model.yaml").is_file()]
        if not versions:
            continue
        (target / name.name).mkdir(exist_ok=True)
        for version in versions:
            linked += _link(version, target / name.name / version.name)
        _copy_latest(name / LATEST, target / name.name / LATEST)
    return linked


def is_linked(version_path: Path) -> bool:
    """Whether a version of the store is one of a Bento's, linked in (removing it removes the link only)."""
    return version_path.is_symlink()


def _link(version: Path, link: Path) -> int:
    if link.is_symlink() and not link.exists():  # a link into a Bento that is gone (a new image): point anew
        link.unlink()
    try:
        link.symlink_to(version.resolve(), target_is_directory=True)
    except FileExistsError:  # another worker linked it, or the store holds its own copy: kept
        pass
    return int(link.is_symlink() and link.resolve() == version.resolve())


def _copy_latest(source: Path, target: Path) -> None:
    """The model's `latest` as the Bento has it, unless the store already names one (written whole, once)."""
    if target.exists() or not source.is_file():
        return
    partial = target.with_name(f".{LATEST}.{os.getpid()}")
    partial.write_text(source.read_text())
    try:
        os.link(partial, target)  # fails when another worker wrote it first: theirs is the same
    except FileExistsError:
        pass
    finally:
        partial.unlink()


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
