"""`rtserve backup FILE` and `rtserve restore FILE`: the routes and the stored versions they name, through the
admin API (scope admin, recorded in the audit log); pipeline/backup.py says what a backup holds."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from app.cli_client import CommandError, command, request

TIMEOUT_S = 300.0  # exporting or importing a large store takes a while


def register(sub: argparse._SubParsersAction) -> None:
    b = command(sub, "backup", _backup, "write every model's routes (weights, experiments, canaries, shadows) and the "
                "stored versions they name to FILE: the files with a local store, references with an object-storage repository")
    b.add_argument("file", type=Path, help="where to write the backup (JSON); replaced if it exists")
    r = command(sub, "restore", _restore, "import FILE's versions the model store lacks, then put its routes back; models "
                "it does not name are left as they are")
    r.add_argument("file", type=Path, help="a file `rtserve backup` wrote")


def _call(method: str, path: str, **kwargs) -> bytes:
    r = request(method, path, scopes="admin", tenant="admin", ttl_s=600, timeout=TIMEOUT_S, **kwargs)
    return r.content


def _backup(a: argparse.Namespace) -> None:
    started = time.perf_counter()
    body = _call("GET", "/admin/backup")
    doc = json.loads(body)
    tmp = a.file.with_name(a.file.name + ".partial")
    try:
        tmp.write_bytes(body)
        tmp.replace(a.file)
    except OSError as exc:
        raise CommandError(f"{a.file}: {exc.strerror}") from None
    print(f"backup: {len(doc['routes'])} models, {len(doc['versions'])} stored versions, {len(body) / 1e6:.1f} MB "
          f"to {a.file} in {time.perf_counter() - started:.1f} s")


def _restore(a: argparse.Namespace) -> None:
    started = time.perf_counter()
    try:
        body = a.file.read_bytes()
    except OSError as exc:
        raise CommandError(f"{a.file}: {exc.strerror}") from None
    done = json.loads(_call("POST", "/admin/restore", content=body, headers={"Content-Type": "application/json"}))
    print(f"restore: routes of {len(done['models'])} models; imported {len(done['imported'])} versions, "
          f"{len(done['present'])} already stored; in {time.perf_counter() - started:.1f} s")
