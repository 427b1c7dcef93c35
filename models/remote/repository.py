"""Push a version from this replica's store to object storage; pull one into it, verified, with retries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import bentoml

from models.remote import install
from models.remote.manifest import Manifest
from models.remote.settings import ModelRepositorySettings

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class PullFailed(Exception):
    """The version could not be pulled before the deadline (the last attempt's error says why)."""


class NotInRepository(PullFailed):
    """The storage answered and holds no such version: nothing to wait for."""


class Mismatch(Exception):
    """The repository already holds this name and version with other files."""


class ObjectRepository:
    def __init__(self, settings: ModelRepositorySettings) -> None:
        if settings.url is None:
            raise ValueError("no model repository configured (RTSERVE_MODEL_REPOSITORY)")
        self.settings = settings

    @classmethod
    def from_settings(cls, settings: ModelRepositorySettings) -> ObjectRepository | None:
        return cls(settings) if settings.url is not None else None

    @property
    def url(self) -> str:
        assert self.settings.url is not None
        return self.settings.url

    def _fs(self):
        """A client of its own per operation: no listing cache to go stale, nothing shared across a fork."""
        import s3fs

        s = self.settings
        client: dict = {"region_name": s.region} if s.region else {}
        config = {"connect_timeout": s.timeout_s, "read_timeout": s.timeout_s, "retries": {"max_attempts": 1}}
        return s3fs.S3FileSystem(key=s.access_key_id, secret=s.secret_access_key, endpoint_url=s.endpoint_url,
                                 client_kwargs=client, config_kwargs=config, skip_instance_cache=True,
                                 use_listings_cache=False)

    def _dir(self, name: str, version: str) -> str:
        return f"{self.settings.root}/{name}/{version}"

    def manifest(self, name: str, version: str, fs=None) -> Manifest | None:
        """The version's manifest, or None when the repository does not hold it (yet)."""
        fs = fs or self._fs()
        try:
            return Manifest.from_json(fs.cat_file(f"{self._dir(name, version)}/{MANIFEST}"))
        except FileNotFoundError:
            return None

    def versions(self, name: str) -> list[str]:
        """The versions of `name` the repository holds (a manifest each)."""
        fs = self._fs()
        try:
            found = fs.glob(f"{self.settings.root}/{name}/*/{MANIFEST}")
        except FileNotFoundError:
            return []
        return sorted(p.rsplit("/", 2)[-2] for p in found)

    def push(self, tag: str) -> Manifest:
        """Write NAME:VERSION from the local store: every file, then the manifest. Pushing the same files again
        does nothing; other files under a name and version the repository holds raise Mismatch."""
        model = bentoml.models.get(tag)
        name, version = model.tag.name, str(model.tag.version)
        local = Manifest.of_directory(name, version, Path(model.path), dict(model.info.metadata))
        fs = self._fs()
        remote = self.manifest(name, version, fs)
        if remote is not None:
            if remote.sha256 != local.sha256:
                raise Mismatch(f"{self.url} already holds {name}:{version} with other files "
                               f"(SHA-256 {remote.sha256[:12]}..., this one {local.sha256[:12]}...); deploy a new version")
            return remote
        base = self._dir(name, version)
        start = time.perf_counter()
        fs.makedirs(self.settings.root.split("/", 1)[0], exist_ok=True)
        for rel in local.files:
            fs.put_file(str(Path(model.path) / rel), f"{base}/files/{rel}")
        fs.pipe_file(f"{base}/{MANIFEST}", local.to_json())
        log.info("pushed %s (%d files, %.1f MB) to %s in %.2f s", tag, len(local.files), local.size / 2**20, self.url,
                 time.perf_counter() - start)
        return local

    def pull(self, name: str, version: str, on_retry: Callable[[int, Exception], None] | None = None) -> bool:
        """Make NAME:VERSION present in the local store; False when it already was. Retried with backoff until
        `pull_deadline_s` (the storage may be down or a copy corrupt), then PullFailed; NotInRepository at once
        when the storage answers that it holds no such version.
        `on_retry(attempt, error)` is told of each failed attempt."""
        deadline = time.monotonic() + self.settings.pull_deadline_s
        wait = self.settings.backoff_s
        attempt = 0
        with install.version_lock(name, version):
            while True:
                if _in_store(f"{name}:{version}"):
                    return attempt > 0
                attempt += 1
                try:
                    self._pull_once(name, version)
                    return True
                except NotInRepository:
                    raise
                except Exception as exc:
                    if on_retry is not None:
                        on_retry(attempt, exc)
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise PullFailed(f"pulling {name}:{version} from {self.url} failed {attempt} time(s); "
                                         f"last: {_why(exc)}") from exc
                    log.warning("pull %s:%s attempt %d failed (%s); retrying in %.1f s", name, version, attempt,
                                _why(exc), min(wait, left))
                    time.sleep(min(wait, left))
                    wait = min(wait * 2, self.settings.backoff_max_s)

    def _pull_once(self, name: str, version: str) -> None:
        fs = self._fs()
        manifest = self.manifest(name, version, fs)
        if manifest is None:
            raise NotInRepository(f"{self.url} holds no {name}:{version} (no {MANIFEST})")
        if (manifest.name, manifest.version) != (name, version):
            raise ValueError(f"the manifest at {name}/{version} describes {manifest.name}:{manifest.version}")
        start = time.perf_counter()
        base = self._dir(name, version)
        with install.staging(name, version) as staged:
            for rel in manifest.files:
                (staged / rel).parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(f"{base}/files/{rel}", str(staged / rel))
            manifest.check(staged)
            staged.chmod(0o755)
            install.install(name, version, staged)
        log.info("pulled %s:%s (%.1f MB) from %s in %.2f s", name, version, manifest.size / 2**20, self.url,
                 time.perf_counter() - start)


def _in_store(tag: str) -> bool:
    from models.store import exists

    return exists(tag)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
