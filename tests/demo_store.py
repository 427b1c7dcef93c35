"""The demo models for test sessions: built once for each state of the code that makes them, then copied.

Every pytest session works on a model store of its own (tests add and delete versions in it), and
`make test` runs three sessions: the suite, its cache-off rerun and the container test. Training and
importing the twelve demo models costs about a minute of two cores each time; copying them, milliseconds.
So the build (`python -m demo.build`, as `make setup` runs it) goes into `build/test-models/<key>/`, where
the key hashes everything that decides what it makes: the project's packages the build runs (the demo's
training, the importer and its probe, the runners the ensembles load), the Python version and every
installed distribution's version. A change to any of them builds again; older builds are removed then.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "test-models"
BUILT_BY = ("core", "demo", "models", "observability", "runners")
"""The project's packages `demo.build` imports, in this process and in the probes it starts."""
SOURCE_SUFFIXES = {".py", ".yaml", ".yml", ".json", ".txt"}


def build_key() -> str:
    """A hash of the code and the environment the build runs with."""
    digest = hashlib.sha256(sys.version.encode())
    for package in BUILT_BY:
        for path in sorted((ROOT / package).rglob("*")):
            if path.suffix in SOURCE_SUFFIXES and "__pycache__" not in path.parts and path.is_file():
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    versions = sorted({f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()})
    digest.update("\n".join(versions).encode())
    return digest.hexdigest()[:16]


def seed(home: Path) -> Path:
    """Copy the demo models into the store at `home`, building them first when no build has this key.

    Sessions in the same checkout wait for each other's build (a file lock) rather than build twice."""
    key = build_key()
    built = CACHE / key
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (built / "models").is_dir():
            _build(built)
            for old in CACHE.iterdir():
                if old.is_dir() and old.name != key:
                    shutil.rmtree(old, ignore_errors=True)
        shutil.copytree(built / "models", home / "models", symlinks=True, dirs_exist_ok=True)
    return built


def _build(target: Path) -> None:
    """`python -m demo.build` into a store of its own, moved into place only once every model is in it."""
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    log = partial / "build.log"
    try:
        with log.open("wb") as out:
            done = subprocess.run([sys.executable, "-m", "demo.build"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "BENTOML_HOME": str(partial)}, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"building the demo models failed (exit {done.returncode}):\n"
                               f"{log.read_text(errors='replace')[-3000:]}")
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # a build that failed or was interrupted leaves nothing behind
