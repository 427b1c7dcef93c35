"""What a version is made of, file by file: the record a pull checks every downloaded byte against."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    files: dict[str, dict[str, Any]]
    """Path relative to the version's directory -> {"sha256", "size"}."""
    metadata: dict[str, Any]
    """The version's metadata as the store holds it (format, signature, source and its sha256, ...)."""

    @property
    def sha256(self) -> str:
        """One digest over every file's path, size and hash: the version's identity across replicas."""
        listing = "\n".join(f"{p}\t{f['size']}\t{f['sha256']}" for p, f in sorted(self.files.items()))
        return hashlib.sha256(listing.encode()).hexdigest()

    @property
    def size(self) -> int:
        return sum(f["size"] for f in self.files.values())

    @classmethod
    def of_directory(cls, name: str, version: str, root: Path, metadata: dict[str, Any]) -> Manifest:
        files = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.is_symlink():
                raise ValueError(f"{name}:{version}: {path} is a symlink; a repository version holds plain files")
            files[path.relative_to(root).as_posix()] = {"sha256": sha256_of(path), "size": path.stat().st_size}
        return cls(name, version, files, metadata)

    def to_json(self) -> bytes:
        return orjson.dumps({"name": self.name, "version": self.version, "sha256": self.sha256, "size": self.size,
                             "files": self.files, "metadata": self.metadata}, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        doc = orjson.loads(raw)
        manifest = cls(doc["name"], doc["version"], doc["files"], doc.get("metadata", {}))
        for path in manifest.files:
            if path.startswith("/") or ".." in path.split("/"):
                raise ValueError(f"manifest of {manifest.name}:{manifest.version} names a path outside the version: {path!r}")
        if doc.get("sha256") != manifest.sha256:
            raise ValueError(f"manifest of {manifest.name}:{manifest.version} does not match its own digest")
        return manifest

    def check(self, root: Path) -> None:
        """Raise ValueError unless `root` holds exactly these files with these hashes."""
        found = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
        if found != set(self.files):
            raise ValueError(f"{self.name}:{self.version}: files {sorted(found ^ set(self.files))} differ from the manifest")
        for rel, expected in self.files.items():
            actual = sha256_of(root / rel)
            if actual != expected["sha256"]:
                raise ValueError(f"{self.name}:{self.version}: {rel} has SHA-256 {actual[:12]}..., "
                                 f"the manifest says {expected['sha256'][:12]}...")
