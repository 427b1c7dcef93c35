"""The routing state every worker and replica must agree on, where it is kept, and the canary lease.

One JSON document per model (which versions are loaded, their weights, the experiment, the
shadow and the canary) lives in Redis, or without Redis in one local file that the worker
processes of one machine share. Every write bumps one global revision in the same atomic
step, so a worker only has to compare a number to know whether anything changed; a
`StateWatcher` per worker does that (pushed by pub/sub, and polled so a lost message costs
at most one interval). A `Lease` lets exactly one canary controller act at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import logging
import math
import os
import random
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Literal, Protocol, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator
from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError

from core.redis_breaker import RedisBreaker
from observability.health import BackgroundHealth

log = logging.getLogger(__name__)


# -- the document


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _check_weights(weights: dict[str, float], what: str) -> None:
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"{what} must not be negative: {weights}")
    if not any(w > 0 for w in weights.values()):
        raise ValueError(f"{what} need at least one positive weight: {weights}")


class Experiment(_Doc):
    """An A/B test: users are split across variants by a salted hash, so each user sticks to one."""

    name: str = Field(min_length=1)
    variants: dict[str, float]
    control: str
    salt: str
    mirror_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """Share of control requests also sent to the other variants, answers discarded."""
    started_at: float

    @model_validator(mode="after")
    def _valid(self) -> Experiment:
        _check_weights(self.variants, "experiment variants")
        if self.control not in self.variants:
            raise ValueError(f"control '{self.control}' is not one of the variants {sorted(self.variants)}")
        return self


class Shadow(_Doc):
    """A version that sees a copy of live traffic; its answers are compared, never returned."""

    version: str
    fraction: float = Field(gt=0.0, le=1.0)


class CanaryThresholds(_Doc):
    """How much worse than stable a canary may be before it is rolled back."""

    max_error_rate_increase: float = Field(0.001, ge=0.0)
    max_p95_ratio: float = Field(1.2, gt=0.0)
    p95_slack_ms: float = Field(2.0, ge=0.0)
    """Absolute p95 allowance, so sub-millisecond noise on a fast model does not fail the ratio."""
    max_disagreement: float | None = Field(None, ge=0.0, le=1.0)


class CanaryDecision(_Doc):
    """One step of the controller's reasoning, kept in the document so any replica can show it."""

    at: float
    action: Literal["start", "advance", "hold", "promote", "rollback", "abort"]
    step: int = Field(ge=0)
    weight: float = Field(ge=0.0, le=100.0)
    """Canary traffic in percent when the decision was made."""
    reason: str
    numbers: dict[str, float] = {}


class Canary(_Doc):
    """A rollout that moves traffic from `stable` to `version` step by step, or back."""

    version: str
    stable: str
    steps: list[float] = Field(min_length=1)
    """Canary traffic in percent, increasing, each in (0, 100]."""
    step: int = Field(ge=0)
    step_started_at: float
    status: Literal["running", "promoted", "rolled_back", "aborted"]
    decisions: list[CanaryDecision] = []
    started_at: float
    hold_s: float = Field(ge=0.0)
    min_requests: int = Field(ge=0)
    thresholds: CanaryThresholds = CanaryThresholds()

    @model_validator(mode="after")
    def _valid(self) -> Canary:
        if self.version == self.stable:
            raise ValueError(f"canary and stable are the same version '{self.version}'")
        if any(not 0.0 < s <= 100.0 for s in self.steps):
            raise ValueError(f"canary steps must lie in (0, 100]: {self.steps}")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:])):
            raise ValueError(f"canary steps must increase: {self.steps}")
        if self.step >= len(self.steps):
            raise ValueError(f"canary step {self.step} is past the last of {len(self.steps)} steps")
        return self


class ModelRoutes(_Doc):
    """Everything about one model's routing that all workers must agree on."""

    loaded: list[str] = Field(min_length=1)
    weights: dict[str, float]
    experiment: Experiment | None = None
    shadow: Shadow | None = None
    canary: Canary | None = None
    revision: int = Field(0, ge=0)
    """The store's global revision when this document was last written; set by the store."""

    @model_validator(mode="after")
    def _valid(self) -> ModelRoutes:
        if len(set(self.loaded)) != len(self.loaded):
            raise ValueError(f"loaded versions repeat: {self.loaded}")
        _check_weights(self.weights, "weights")
        named = {f"weight '{v}'": v for v in self.weights}
        if self.experiment is not None:
            named |= {f"experiment variant '{v}'": v for v in self.experiment.variants}
        if self.shadow is not None:
            named[f"shadow '{self.shadow.version}'"] = self.shadow.version
        if self.canary is not None and self.canary.status == "running":  # a finished canary's versions may be gone
            named[f"canary '{self.canary.version}'"] = self.canary.version
            named[f"canary stable '{self.canary.stable}'"] = self.canary.stable
        unknown = sorted(what for what, v in named.items() if v not in self.loaded)
        if unknown:
            raise ValueError(f"not loaded ({self.loaded}): {', '.join(unknown)}")
        return self


def _stamped(routes: ModelRoutes, revision: int) -> ModelRoutes:
    """Validated again on the way out: `model_copy` and in-place edits bypass validation."""
    return ModelRoutes.model_validate({**routes.model_dump(), "revision": revision})


Updater = Callable[[ModelRoutes | None], ModelRoutes]


# -- stores


class StateStore(Protocol):
    source: str
    """Where the state lives, for log lines."""

    async def get(self, model: str) -> ModelRoutes | None: ...
    async def get_all(self) -> dict[str, ModelRoutes]: ...
    async def snapshot(self) -> tuple[int, dict[str, ModelRoutes]]: ...
    async def put(self, model: str, routes: ModelRoutes) -> int: ...
    async def update(self, model: str, fn: Updater) -> ModelRoutes: ...
    async def revision(self) -> int: ...
    async def initialize(self, defaults: dict[str, ModelRoutes]) -> list[str]: ...
    def changes(self) -> AsyncIterator[None] | None: ...


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
        written = await self._transact(lambda current: {model: routes})
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

    async def _transact(
        self, decide: Callable[[dict[str, ModelRoutes | None]], dict[str, ModelRoutes]], read: list[str] | None = None
    ) -> dict[str, ModelRoutes]:
        read, attempt = read or [], 0
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self.docs_key, self.revision_key)
                    rev = int(await pipe.get(self.revision_key) or 0)
                    raws = await pipe.hmget(self.docs_key, read) if read else []
                    current = {m: None if r is None else ModelRoutes.model_validate_json(r) for m, r in zip(read, raws)}
                    docs = {m: _stamped(r, rev + 1) for m, r in decide(current).items()}
                    if not docs:
                        await pipe.unwatch()
                        return {}
                    pipe.multi()
                    pipe.incr(self.revision_key)
                    pipe.hset(self.docs_key, mapping={m: d.model_dump_json() for m, d in docs.items()})
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
            docs = {m: _stamped(r, rev + 1) for m, r in decide(current).items()}
            if docs:
                raw |= {m: d.model_dump(mode="json") for m, d in docs.items()}
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


# -- the watcher

WATCHER_TASK = "route_watcher"


OnChange = Callable[[dict[str, ModelRoutes]], Awaitable[None] | None]


class StateWatcher:
    """Keeps one worker's view of the routing state within `interval_s` of the store's.

    Pub/sub (where the store has it) makes changes arrive in milliseconds; polling the
    revision every `interval_s` catches what pub/sub lost. A failing store never ends the
    task: the last known state stays in force, the outage is logged once, and polling goes
    on. If the store comes back without documents this worker knew (Redis restarted empty,
    state file deleted), the worker writes its last known ones back; the first to do so wins.
    """

    def __init__(
        self,
        store: StateStore,
        on_change: OnChange,
        interval_s: float = 0.5,
        timeout_s: float = 2.0,
        health: BackgroundHealth | None = None,
    ) -> None:
        self.store = store
        self.health = health or BackgroundHealth()
        self.on_change = on_change
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.routes: dict[str, ModelRoutes] = {}
        self.revision: int | None = None
        self._breaker = RedisBreaker("routing state watcher", interval_s, "keeping the last known routes")
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> Self:
        """Read the state once (so the worker starts with it when the store answers), then keep watching."""
        await self.refresh()
        self._tasks.append(asyncio.create_task(self._poll(), name="routing-state-poll"))
        stream = self.store.changes()
        if stream is not None:
            self._tasks.append(asyncio.create_task(self._listen(stream), name="routing-state-listen"))
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def refresh(self) -> bool:
        """Apply the store's state if its revision moved; True when on_change was called."""
        async with self._lock:
            redis_store = isinstance(self.store, RedisStateStore)
            if redis_store and not self._breaker.attempt():
                return False
            sent_while_down, rev = self._breaker.down, None
            try:
                async with asyncio.timeout(self.timeout_s):
                    rev = await self.store.revision()
                    if rev == self.revision:
                        self._recovered(sent_while_down)
                        return False
                    rev, docs = await self.store.snapshot()
                    lost = {m: r for m, r in self.routes.items() if m not in docs}
                    if lost and await self.store.initialize(lost):
                        log.warning(
                            "routing state: %s had lost %s; restored this worker's last known copy",
                            self.store.source,
                            sorted(lost),
                        )
                        rev, docs = await self.store.snapshot()
            except (RedisError, OSError, TimeoutError) as exc:
                self._failed(exc, redis_store)
                return False
            except ValueError as exc:  # a document that does not validate: keep the last good state
                self._breaker.succeeded(sent_while_down)
                self.health.failed(WATCHER_TASK, f"{self.store.source} holds an invalid document at revision {rev}: {exc}")
                return False
            self._breaker.succeeded(sent_while_down)
            self.routes = docs
            try:
                result = self.on_change(dict(docs))
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - a consumer's bug must not stop the watching; retried next poll
                log.debug("routing state: applying revision %s failed", rev, exc_info=True)
                self.health.failed(WATCHER_TASK, f"applying revision {rev} failed: {type(exc).__name__}: {exc}")
                return True
            self.revision = rev
            self.health.ok(WATCHER_TASK)
            return True

    def _failed(self, exc: BaseException, redis_store: bool) -> None:
        if redis_store:
            self._breaker.failed(exc, self.timeout_s * 1000)
        self.health.failed(WATCHER_TASK, f"{self.store.source} unreadable ({type(exc).__name__}: {exc}); keeping the last known routes")

    def _recovered(self, sent_while_down: bool) -> None:
        self._breaker.succeeded(sent_while_down)
        self.health.ok(WATCHER_TASK)

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - whatever the store holds, watching goes on
                self.health.failed(WATCHER_TASK, f"{type(exc).__name__}: {exc}")

    async def _listen(self, stream: AsyncIterator[None]) -> None:
        """Wakes the poller on every announcement; resubscribes after errors (the poller logs outages)."""
        while True:
            try:
                async for _ in stream:
                    self._wake.set()
            except Exception as exc:  # noqa: BLE001 - the poller still runs; try again after a pause
                log.debug("routing state: change channel failed (%s); resubscribing", exc)
            finally:
                await stream.aclose()
            await asyncio.sleep(self.interval_s)
            stream = self.store.changes()


# -- the lease


class Lease(Protocol):
    async def acquire(self) -> bool: ...
    async def renew(self) -> bool: ...
    async def release(self) -> None: ...
    @property
    def held(self) -> bool: ...


_ACQUIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class RedisLease:
    """One holder across all replicas; it expires `ttl_s` after the last renewal, so a dead holder frees it.

    Renew and release compare the stored holder id first (in Lua, atomically), so a holder
    that was too slow and lost the lease cannot extend or delete its successor's. `held` is
    the holder's own conservative view: it ends `ttl_s` after the last renewal was *sent*,
    even if Redis cannot be reached to say so. Renew every `ttl_s / 3` or so.
    """

    def __init__(self, redis: Redis, key: str, ttl_s: float = 5.0, holder_id: str | None = None) -> None:
        self.redis = redis
        self.key = key
        self.ttl_s = ttl_s
        self.holder_id = holder_id or f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._valid_until = 0.0

    @property
    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    async def acquire(self) -> bool:
        return await self._call(self._acquire, "acquire")

    async def renew(self) -> bool:
        was_held = self.held
        ok = await self._call(self._renew, "renew")
        if was_held and not ok:
            log.warning("lease %s lost by %s", self.key, self.holder_id)
        return ok

    async def release(self) -> None:
        self._valid_until = 0.0
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self._release(keys=[self.key], args=[self.holder_id])

    async def _call(self, script, what: str) -> bool:
        sent = time.monotonic()
        try:
            ok = bool(await script(keys=[self.key], args=[self.holder_id, max(1, math.ceil(self.ttl_s * 1000))]))
        except (RedisError, OSError, TimeoutError) as exc:
            log.debug("lease %s: %s failed: %s", self.key, what, exc)
            ok = False
        self._valid_until = sent + self.ttl_s if ok else 0.0
        return ok


class FileLease:
    """One holder per machine without Redis: a non-blocking `flock` that the kernel drops when the holder dies."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    async def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for whoever looks
        self._fd = fd
        return True

    async def renew(self) -> bool:
        return self.held  # a lock held by a live process does not expire

    async def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
