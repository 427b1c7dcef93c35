"""Where the route documents are kept: in Redis, or without Redis in one local file.

Every write bumps one global revision in the same atomic step, so a reader only has to
compare a number to know whether anything changed (see routing/watcher.py). Both stores sit
behind `StateStore`, which says all a consumer needs to know about where the state lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import WatchError

from routing.document import ModelRoutes, Updater, stamped


class StateStore(Protocol):
    """Where the route documents live; the watcher, the admin API and the controller see only this."""

    source: str
    """Where the state lives, for log lines."""
    remote: bool
    """Whether the state lives on a server that may be unreachable for a while: the watcher then
    backs off through a Redis breaker instead of retrying every poll (a local file needs no back-off)."""

    async def get(self, model: str) -> ModelRoutes | None: ...
    async def get_all(self) -> dict[str, ModelRoutes]: ...
    async def snapshot(self) -> tuple[int, dict[str, ModelRoutes]]: ...
    async def put(self, model: str, routes: ModelRoutes) -> int: ...
    async def update(self, model: str, fn: Updater) -> ModelRoutes: ...
    async def revision(self) -> int: ...
    async def initialize(self, defaults: dict[str, ModelRoutes]) -> list[str]: ...
    async def merge(self, decide: Merge) -> dict[str, ModelRoutes]: ...
    async def remove(self, model: str, when: Callable[[ModelRoutes | None], bool]) -> bool: ...
    def changes(self) -> AsyncIterator[None] | None: ...


Merge = Callable[[dict[str, ModelRoutes]], dict[str, ModelRoutes]]
"""Every document -> the ones to write, in one transaction (routing/reconcile.py at start-up)."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStateStore:
    """Documents in one hash, a revision counter bumped in the same MULTI/EXEC, and a change channel.

    Writes WATCH the hash and the counter, so concurrent writers retry instead of overwriting
    each other, and the revision a document carries is exactly the one its write created.
    """

    def __init__(self, redis: Redis, prefix: str = "rtserve:routes:") -> None:
        self.redis = redis
        self.docs_key = f"{prefix}docs"
        self.revision_key = f"{prefix}revision"
        self.channel = f"{prefix}changes"
        self.source = f"Redis ({prefix}*)"
        self.remote = True

    async def get(self, model: str) -> ModelRoutes | None:
        raw = await self.redis.hget(self.docs_key, model)
        return None if raw is None else ModelRoutes.model_validate_json(raw)

    async def get_all(self) -> dict[str, ModelRoutes]:
        return (await self.snapshot())[1]

    async def snapshot(self) -> tuple[int, dict[str, ModelRoutes]]:
        """All documents and the revision they belong to, read in one transaction."""
        async with self.redis.pipeline(transaction=True) as pipe:
            raw, rev = await pipe.hgetall(self.docs_key).get(self.revision_key).execute()
        return int(rev or 0), {_text(k): ModelRoutes.model_validate_json(v) for k, v in raw.items()}

    async def revision(self) -> int:
        return int(await self.redis.get(self.revision_key) or 0)

    async def put(self, model: str, routes: ModelRoutes) -> int:
        written = await self._transact(lambda current: {model: routes}, [])
        return written[model].revision

    async def update(self, model: str, fn: Updater) -> ModelRoutes:
        """Read, apply `fn`, write; retried from the read if anyone wrote in between (no lost edits)."""
        written = await self._transact(lambda current: {model: fn(current.get(model))}, [model])
        return written[model]

    async def initialize(self, defaults: dict[str, ModelRoutes]) -> list[str]:
        """Write the models that have no document yet; returns their names (empty when all exist)."""
        names = list(defaults)
        written = await self._transact(lambda current: {m: defaults[m] for m in names if current.get(m) is None}, names)
        return sorted(written)

    async def merge(self, decide: Merge) -> dict[str, ModelRoutes]:
        """Read every document, write what `decide` returns; retried from the read if anyone wrote in between."""
        return await self._transact(decide, None)

    async def remove(self, model: str, when: Callable[[ModelRoutes | None], bool]) -> bool:
        """Delete the model's document if `when` holds for it (read in the same transaction); True when deleted."""
        return bool(await self._transact(lambda current: {model: None} if when(current.get(model)) else {}, [model]))

    async def _transact(
        self, decide: Callable[[dict[str, ModelRoutes | None]], dict[str, ModelRoutes]], read: list[str] | None
    ) -> dict[str, ModelRoutes]:
        """`read`: the documents `decide` sees; None: all of them."""
        attempt = 0
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self.docs_key, self.revision_key)
                    rev = int(await pipe.get(self.revision_key) or 0)
                    if read is None:
                        current = {_text(m): ModelRoutes.model_validate_json(r) for m, r in (await pipe.hgetall(self.docs_key)).items()}
                    else:
                        raws = await pipe.hmget(self.docs_key, read) if read else []
                        current = {m: None if r is None else ModelRoutes.model_validate_json(r) for m, r in zip(read, raws)}
                    docs = {m: None if r is None else stamped(r, rev + 1) for m, r in decide(current).items()}
                    if not docs:
                        await pipe.unwatch()
                        return {}
                    pipe.multi()
                    pipe.incr(self.revision_key)
                    if written := {m: d.model_dump_json() for m, d in docs.items() if d is not None}:
                        pipe.hset(self.docs_key, mapping=written)
                    if deleted := [m for m, d in docs.items() if d is None]:
                        pipe.hdel(self.docs_key, *deleted)
                    pipe.publish(self.channel, orjson.dumps({"revision": rev + 1, "models": sorted(docs)}))
                    await pipe.execute()
                    return docs
                except WatchError:
                    attempt += 1
                    await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * attempt)))

    def changes(self) -> AsyncIterator[None]:
        return self._listen()

    async def _listen(self) -> AsyncIterator[None]:
        """Yields once when subscribed (messages may have been missed before) and once per announcement."""
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            async for message in pubsub.listen():
                if message["type"] in ("subscribe", "message"):
                    yield None
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()


class FileStateStore:
    """All models in one JSON file with a revision, for the worker processes of one machine.

    Readers never lock: a write goes to a temporary file that replaces the state file in one
    rename, so a reader sees the old or the new file, never half of one. Writers serialise on
    an `flock` of a sibling lock file, which the kernel releases if a writer dies.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.source = f"state file {self.path}"
        self.remote = False

    async def get(self, model: str) -> ModelRoutes | None:
        return (await self.get_all()).get(model)

    async def get_all(self) -> dict[str, ModelRoutes]:
        return (await self.snapshot())[1]

    async def snapshot(self) -> tuple[int, dict[str, ModelRoutes]]:
        rev, raw = await asyncio.to_thread(self._read)
        return rev, {m: ModelRoutes.model_validate(d) for m, d in raw.items()}

    async def revision(self) -> int:
        return (await asyncio.to_thread(self._read))[0]

    async def put(self, model: str, routes: ModelRoutes) -> int:
        return (await asyncio.to_thread(self._transact, lambda current: {model: routes}))[model].revision

    async def update(self, model: str, fn: Updater) -> ModelRoutes:
        """`fn` runs on a worker thread under the file lock: keep it a pure function of the document."""
        return (await asyncio.to_thread(self._transact, lambda current: {model: fn(current.get(model))}))[model]

    async def initialize(self, defaults: dict[str, ModelRoutes]) -> list[str]:
        written = await asyncio.to_thread(self._transact, lambda current: {m: r for m, r in defaults.items() if m not in current})
        return sorted(written)

    async def merge(self, decide: Merge) -> dict[str, ModelRoutes]:
        return await asyncio.to_thread(self._transact, decide)

    async def remove(self, model: str, when: Callable[[ModelRoutes | None], bool]) -> bool:
        return bool(await asyncio.to_thread(self._transact, lambda current: {model: None} if when(current.get(model)) else {}))

    def changes(self) -> None:
        return None  # nothing pushes; the watcher polls the revision

    def _read(self) -> tuple[int, dict[str, dict]]:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return 0, {}
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{self.path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{self.path} must hold a JSON object with 'revision' and 'models'")
        revision, models = data.get("revision", 0), data.get("models", {})
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise ValueError(f"{self.path}: 'revision' must be a non-negative integer")
        if not isinstance(models, dict) or not all(isinstance(d, dict) for d in models.values()):
            raise ValueError(f"{self.path}: 'models' must map model names to route documents")
        return revision, dict(models)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _transact(self, decide: Callable[[dict[str, ModelRoutes]], dict[str, ModelRoutes]]) -> dict[str, ModelRoutes]:
        with self._locked():
            rev, raw = self._read()
            current = {m: ModelRoutes.model_validate(d) for m, d in raw.items()}
            docs = {m: None if r is None else stamped(r, rev + 1) for m, r in decide(current).items()}
            if docs:
                raw = {m: d for m, d in raw.items() if docs.get(m, True) is not None}  # None: the document is removed
                raw |= {m: d.model_dump(mode="json") for m, d in docs.items() if d is not None}
                self._replace(orjson.dumps({"revision": rev + 1, "models": raw}, option=orjson.OPT_INDENT_2))
            return docs

    def _replace(self, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)
