"""The store a served Bento writes (models/writable_store.py), on real BentoML stores in folders of the test's
own: the Bento's store made read-only, as it is in the pod, and BentoML's home store beside it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bentoml
import pytest
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models.model import ModelStore

from models import store
from models.remote import install
from models.retention import size_of, store_bytes
from models.writable_store import use_writable_store

NAME = "bento-iris"
VERSIONS = ("v1", "v2")


def _save(tag: str, payload: bytes) -> None:
    store.create(tag, {"framework": "test", "task": "classification"}, lambda d: (d / "weights.bin").write_bytes(payload))


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its size and mtime: what "unchanged" means for the Bento."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


def _read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@dataclass
class Served:
    bento: Path
    """The Bento's own store ($BENTO_PATH/models), read-only."""
    home: Path
    """BentoML's home store ($BENTOML_HOME/models)."""


@pytest.fixture
def served_bento(tmp_path) -> Iterator[Served]:
    """BentoML's state when it serves a Bento: the store in use is the Bento's, with two versions of a model;
    the home store is another folder. The session's own store is put back afterwards."""
    session_store, session_dir = BentoMLContainer.model_store.get(), BentoMLContainer.model_store_dir.get()
    served = Served(tmp_path / "bento" / "models", tmp_path / "home" / "models")
    served.bento.mkdir(parents=True)
    try:
        BentoMLContainer.model_store.set(ModelStore(str(served.bento)))
        for i, version in enumerate(VERSIONS):
            _save(f"{NAME}:{version}", bytes([i]) * 1000)
        _read_only(served.bento)
        BentoMLContainer.model_store.set(ModelStore(str(served.bento)))  # as `bentoml serve` of a Bento sets it
        BentoMLContainer.model_store_dir.set(str(served.home))
        yield served
    finally:
        BentoMLContainer.model_store.set(session_store)
        BentoMLContainer.model_store_dir.set(session_dir)
        for path in [served.bento, *served.bento.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_a_served_bento_writes_the_home_store_with_its_versions_linked(served_bento):
    before = _files(served_bento.bento)
    assert use_writable_store() == served_bento.home
    assert install.store_root() == served_bento.home  # where pulls install, and deploys import
    assert install.staging_root().parent == served_bento.home.parent  # staging on the same filesystem

    # The Bento's versions are served as they were, from the Bento's files.
    assert sorted(m.tag.version for m in bentoml.models.list(NAME)) == sorted(VERSIONS)
    model = bentoml.models.get(f"{NAME}:v1")
    assert Path(model.path).resolve() == (served_bento.bento / NAME / "v1").resolve()
    assert (Path(model.path) / "weights.bin").read_bytes() == bytes([0]) * 1000
    assert bentoml.models.get(f"{NAME}:latest").tag.version == bentoml.models.get(f"{NAME}:v2").tag.version
    assert store_bytes() == 0  # linked versions take none of the home store's space

    # A deployed or pulled version lands in the home store, beside the linked ones.
    _save(f"{NAME}:v3", b"\3" * 500)
    assert (served_bento.home / NAME / "v3" / "weights.bin").is_file()
    assert not (served_bento.bento / NAME / "v3").exists()
    assert store_bytes() == size_of(served_bento.home / NAME / "v3") > 500  # its files and model.yaml

    # Removing a linked version removes its link only; the model's latest is set anew by BentoML.
    store.delete(f"{NAME}:v2")
    assert not store.exists(f"{NAME}:v2")
    assert (served_bento.bento / NAME / "v2" / "weights.bin").read_bytes() == bytes([1]) * 1000
    assert bentoml.models.get(f"{NAME}:latest").tag.version == "v3"
    store.delete(f"{NAME}:v3")
    assert not (served_bento.home / NAME / "v3").exists()

    assert _files(served_bento.bento) == before, "the Bento's store was written"


def test_every_worker_links_the_same_versions_once(served_bento):
    use_writable_store()
    listing = sorted(str(p.relative_to(served_bento.home)) for p in served_bento.home.rglob("*"))
    BentoMLContainer.model_store.set(ModelStore(str(served_bento.bento)))  # the next worker starts as the first did
    assert use_writable_store() == served_bento.home
    assert sorted(str(p.relative_to(served_bento.home)) for p in served_bento.home.rglob("*")) == listing
    assert sorted(m.tag.version for m in bentoml.models.list(NAME)) == sorted(VERSIONS)


def test_a_version_the_home_store_holds_itself_is_kept(served_bento):
    """A container restarted in its pod finds the versions it pulled before, and the links, in its emptyDir."""
    own = served_bento.home / NAME / "v1"
    own.mkdir(parents=True)
    for f in (served_bento.bento / NAME / "v1").iterdir():
        (own / f.name).write_bytes(f.read_bytes())
    use_writable_store()
    assert not own.is_symlink()
    assert (served_bento.home / NAME / "v2").is_symlink()


def test_a_home_store_that_cannot_be_written_keeps_the_bentos(served_bento, tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    BentoMLContainer.model_store_dir.set(str(blocker / "models"))
    assert use_writable_store() == served_bento.bento
    assert "cannot be written" in caplog.text
    assert store.exists(f"{NAME}:v1")


def test_served_from_a_checkout_the_store_is_left_alone():
    in_use = BentoMLContainer.model_store.get()
    assert use_writable_store() == Path(os.environ["BENTOML_HOME"]) / "models"
    assert BentoMLContainer.model_store.get() is in_use
