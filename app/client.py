"""Deploying a model from Python into the running server: the calls `rtserve deploy` makes.

    from app.client import deploy_canary, deploy_model
    deploy_model("iris", "iris.skops")                    # the next vN; a new model takes all its traffic
    deploy_model("net", "net_dir/", allow_code=True)      # a folder goes as a tar (its model.yaml inside)
    deploy_model("bento-iris", "bentoml:iris:latest")     # a model in this machine's BentoML store
    deploy_canary("iris", "iris-v2.skops", "v2", 10)      # a canary from 10 %, then the canary steps above it
    optimize_model("iris", "v1", "int8")                  # iris:v1-int8, served with no traffic, and its report

The server is RTSERVE_URL; the token RTSERVE_TOKEN, or one minted with an admin scope from the configured
key (app/cli_client.py). The upload is streamed from disk (a folder is packed into a temporary tar first).
The answer is the server's: the version's metadata, the import and load seconds and the routes.
A refusal raises CommandError with the server's status and message.
"""

from __future__ import annotations

import contextlib
import os
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Self

import orjson

from app.cli_client import CommandError, request
from models.names import NAME

Progress = Callable[[int, int], None]
"""Called with (bytes sent, bytes in all) as the upload goes."""
BENTOML_PREFIX = "bentoml:"
DEPLOY_TIMEOUT_S = 900.0
"""How long a deploy may take to answer: the upload, the probe load, the load in every worker."""
OPTIMIZE_TIMEOUT_S = 1800.0
"""How long an optimization may take to answer: the conversion (a compile takes minutes), then a deploy."""


def deploy_model(
    model_id: str,
    model_path: str | os.PathLike[str],
    version: str | None = None,
    *,
    config: str | os.PathLike[str] | None = None,
    sample: str | os.PathLike[str] | None = None,
    trust: tuple[str, ...] | list[str] = (),
    allow_code: bool = False,
    weight: float | None = None,
    shadow: float | None = None,
    canary: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Upload `model_path` (a file, a folder, or `bentoml:TAG`) as MODEL_ID:VERSION (default: the next vN)
    and serve it in every worker; `weight`, `shadow` (percent) or `canary` ({"percent": ..., canary options})
    give it traffic."""
    for kind, value in (("model name", model_id), ("version", version)):
        if value is not None and not NAME.fullmatch(value):  # a path would not even reach the model's route
            raise CommandError(f"{kind} '{value}' is not allowed: use lowercase letters, digits, '_', '-' and '.'")
    version = version or next_version(model_id)
    options = {"allow_code": allow_code, "trust": list(trust), "weight": weight, "shadow": shadow, "canary": canary}
    with _packed(str(model_path)) as (file, name), contextlib.ExitStack() as stack:
        files: dict[str, tuple[str, IO[bytes], str]] = {
            "model": (name, stack.enter_context(_Reading(file, progress)), "application/octet-stream")}
        for part, path in (("config", config), ("sample", sample)):
            if path is not None:
                files[part] = (Path(path).name, stack.enter_context(open(path, "rb")), "application/octet-stream")
        data = {"options": orjson.dumps({k: v for k, v in options.items() if v is not None}).decode()}
        r = request("PUT", f"/admin/models/{model_id}/versions/{version}", scopes="admin predict", tenant="admin",
                    ttl_s=3600, timeout=DEPLOY_TIMEOUT_S, files=files, data=data)
    return r.json()


def deploy_canary(
    model_id: str,
    new_model_path: str | os.PathLike[str],
    version: str,
    percent: float,
    *,
    steps: list[float] | None = None,
    hold_s: float | None = None,
    min_requests: int | None = None,
    mirror_fraction: float = 0.0,
    stable: str | None = None,
    max_disagreement: float | None = None,
    **deploy: Any,
) -> dict[str, Any]:
    """Deploy MODEL_ID:VERSION and start a canary at `percent`, then the canary steps above it (`steps`, else
    the server's), judged against `stable` (default: the version with the most traffic)."""
    canary: dict[str, Any] = {"percent": percent, "steps": steps, "hold_s": hold_s, "min_requests": min_requests,
                              "mirror_fraction": mirror_fraction, "stable": stable,
                              "thresholds": {"max_disagreement": max_disagreement} if max_disagreement is not None else None}
    return deploy_model(model_id, new_model_path, version,
                        canary={k: v for k, v in canary.items() if v is not None}, **deploy)


def optimize_model(
    model_id: str,
    version: str,
    to: str,
    *,
    new_version: str | None = None,
    sample: str | os.PathLike[str] | None = None,
    min_agreement: float | None = None,
    tolerance: float | None = None,
) -> dict[str, Any]:
    """MODEL_ID:NEW_VERSION (default `<version>-<to>`) made from MODEL_ID:VERSION by `to` (onnx, int8, compiled),
    measured beside it on `sample` (default: the server's seeded rows) and served with no traffic; the answer holds
    the report. Refused (CommandError, the report's numbers in its message) under `min_agreement`."""
    for kind, value in (("model name", model_id), ("version", version), ("version", new_version)):
        if value is not None and not NAME.fullmatch(value):
            raise CommandError(f"{kind} '{value}' is not allowed: use lowercase letters, digits, '_', '-' and '.'")
    options = {k: v for k, v in {"to": to, "version": new_version, "min_agreement": min_agreement,
                                 "tolerance": tolerance}.items() if v is not None}
    path = f"/admin/models/{model_id}/versions/{version}/optimize"
    call = {"scopes": "admin predict", "tenant": "admin", "ttl_s": 3600, "timeout": OPTIMIZE_TIMEOUT_S}
    if sample is None:
        return request("POST", path, json=options, **call).json()
    with open(sample, "rb") as f:
        return request("POST", path, files={"sample": (Path(sample).name, f, "application/octet-stream")},
                       data={"options": orjson.dumps(options).decode()}, **call).json()


def next_version(model_id: str) -> str:
    """v(N+1) after the model's highest vN in the server's store; v1 for a new model."""
    index = request("POST", "/v2/repository/index", scopes="admin", tenant="admin", ttl_s=300, timeout=30, json={}).json()
    numbers = [int(m.group(1)) for e in index if e.get("name") == model_id
               and (m := re.fullmatch(r"v(\d+)", str(e.get("version"))))]
    return f"v{max(numbers, default=0) + 1}"


@contextlib.contextmanager
def _packed(source: str) -> Iterator[tuple[Path, str]]:
    """(the file to send, its name): a file as it is; a folder, or a BentoML model's folder, as a temporary tar."""
    if source.startswith(BENTOML_PREFIX):
        import bentoml

        try:
            model = bentoml.models.get(source[len(BENTOML_PREFIX):])
        except (bentoml.exceptions.NotFound, ValueError) as exc:
            raise CommandError(f"{source}: not in this machine's BentoML store ({exc})") from None
        folder, name = Path(model.path), f"{model.tag.name}.tar"
    else:
        folder, name = Path(source), Path(source).name
        if folder.is_file():
            yield folder, folder.name
            return
        if not folder.is_dir():
            raise CommandError(f"{source}: no such file or folder")
        name = f"{name}.tar"
    with tempfile.TemporaryDirectory(prefix="rtserve-deploy-") as tmp:
        archive = Path(tmp) / name
        with tarfile.open(archive, "w") as tar:
            for path in sorted(folder.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
        yield archive, name


class _Reading:
    """A file read by the upload, reporting its progress."""

    def __init__(self, path: Path, progress: Progress | None) -> None:
        self.file = path.open("rb")
        self.total = path.stat().st_size
        self.sent = 0
        self.progress = progress

    def read(self, size: int = -1) -> bytes:
        chunk = self.file.read(size)
        self.sent += len(chunk)
        if self.progress is not None and (chunk or self.sent == 0):
            self.progress(self.sent, self.total)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        if offset == 0 and whence == 0:
            self.sent = 0
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def fileno(self) -> int:
        return self.file.fileno()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()
