"""A model's folder from an uploaded tar, extracted only when every member is a plain file or folder inside it.

    root = extract(Path("upload/iris.tar.gz"), Path("upload/model"), max_bytes=2**31, max_files=1000)

Refused before anything is written: absolute names, '..', links (symbolic or hard), devices and fifos,
more than `max_files` members, more than `max_bytes` once extracted (a small gzip can hold a huge file).
A tar whose only member at the top is one folder (`tar czf m.tgz mymodel/`) gives that folder.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

from core.errors import ModelRefused, PayloadTooLarge

SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_archive(filename: str) -> bool:
    return filename.lower().endswith(SUFFIXES)


def stem(filename: str) -> str:
    """The archive's name without its suffix: the model folder's name (`iris.tar.gz` -> `iris`)."""
    return next((filename[: -len(s)] for s in SUFFIXES if filename.lower().endswith(s)), filename)


def extract(archive: Path, target: Path, *, max_bytes: int, max_files: int) -> Path:
    """Extract `archive` into `target` (created); the model's folder."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _checked(tar, archive.name, max_bytes, max_files)
            target.mkdir(parents=True)
            tar.extractall(target, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ModelRefused(f"{archive.name} is not a readable tar archive ({type(exc).__name__}: {exc})") from None
    entries = list(target.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else target


def _checked(tar: tarfile.TarFile, name: str, max_bytes: int, max_files: int) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    size = 0
    for member in tar:
        if len(members) >= max_files:
            raise ModelRefused(f"{name} holds more than {max_files} files (RTSERVE_IMPORT_MAX_UPLOAD_FILES)")
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts:
            raise ModelRefused(f"{name}: member '{member.name}' points outside the model's folder")
        if member.issym() or member.islnk():
            raise ModelRefused(f"{name}: member '{member.name}' is a link; links are refused")
        if not (member.isfile() or member.isdir()):
            raise ModelRefused(f"{name}: member '{member.name}' is not a file or a folder")
        size += member.size
        if size > max_bytes:
            raise PayloadTooLarge(f"{name} holds more than {max_bytes} bytes once extracted (RTSERVE_IMPORT_MAX_UPLOAD_BYTES)")
        members.append(member)
    if not any(m.isfile() for m in members):
        raise ModelRefused(f"{name} holds no files")
    return members
