"""Checkpoints: a run's state, compressed, encrypted, kept in blob storage; retention; restore.

Two kinds (ARCHITECTURE §3):

- a **full** snapshot: the whole ``RunState`` (which carries the id and the count of the last
  event it covers), every ``every_s`` seconds;
- a **segment**: the events since the previous checkpoint, at each task completion. Cheap, so
  a completion never waits on a full snapshot.

Both also record each agent's session id and workspace branch (``AgentSession``).

Restore = the newest full snapshot that decrypts and validates, then the segments after it.
Segments chain by ``RunState.event_count`` (event ids are opaque to MAOS): a segment
records the count before its first event (``start_count``), so overlaps are skipped and a
gap stops the chain with a warning. A corrupt or foreign-key checkpoint is skipped with a
warning naming it and the one used instead; if there are no full snapshots yet (a run younger
than ``every_s``), segments from the start of the run rebuild the state. Loading never
deletes anything.

Names and ids. A checkpoint is the blob ``RUN_ID/CHECKPOINT_ID.ckpt``; the id is the UTC time
to the millisecond and the kind, e.g. ``20261125-143005-123-full``, so ids sort by time.
A ``Checkpointer`` hands out strictly increasing ids, continuing after those already stored
(``prepare``). Ids are taken at the moment the state or events are captured, so every
segment older than a full snapshot is covered by it.

Retention (after each full snapshot written): keep the newest ``keep`` full snapshots and the
segments after the oldest kept one; delete the rest.

Blob format: ``maos.security.encrypt`` (AES-256-GCM, key id in the header) of a zstd frame
of ``HEADER_JSON "\\n" PAYLOAD_JSON``. The header (``CheckpointHeader``) holds the metadata;
the payload is the ``RunState`` (full) or the ``[event_id, event]`` list (segment). The
run id and checkpoint id are authenticated data, so a blob renamed or copied to another run
fails to load. Serialization, compression and encryption run on a worker thread, in pieces
of ~128 KiB, so that the event loop keeps getting the GIL during a 50 MB save.

``CheckpointWriter`` runs all this in the background for the orchestrator: see its docstring.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import calendar
import enum
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import zstandard
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from maos import security
from maos.blobs import BlobStore
from maos.errors import BlobError, CheckpointError, DecryptionError, KeyMismatch, MaosError
from maos.events import fold
from maos.model import Event, RunState, TaskRun, TaskSpec

__all__ = [
    "DEFAULT_EVERY_S",
    "DEFAULT_KEEP",
    "SEGMENT_EVENTS",
    "AgentSession",
    "Checkpoint",
    "CheckpointHeader",
    "CheckpointKind",
    "CheckpointWriter",
    "Checkpointer",
    "Restored",
    "blob_name",
    "format_id",
    "parse_id",
    "state_json_parts",
]

log = logging.getLogger("maos.checkpoint")
_T = TypeVar("_T")

FORMAT = 1
SUFFIX = ".ckpt"
DEFAULT_EVERY_S = 30.0
DEFAULT_KEEP = 10
ZSTD_LEVEL = 3
CHUNK_BYTES = 128 * 1024
"""Rough size of one serialization step; between steps the event loop can take the GIL."""

SEGMENT_EVENTS = frozenset({"run_started", "task_succeeded", "task_failed", "run_finished"})
"""Event types after which ``CheckpointWriter`` writes a segment."""

_ID_RE = re.compile(r"^(\d{8}-\d{6})-(\d{3})-(full|segment)$")
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class CheckpointKind(enum.StrEnum):
    FULL = "full"
    SEGMENT = "segment"


class AgentSession(BaseModel):
    """What a resumed agent needs to continue: its runtime session and its workspace branch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str = ""
    branch: str = ""


class CheckpointHeader(BaseModel):
    """The metadata at the start of a checkpoint's plaintext."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1  # FORMAT
    kind: CheckpointKind
    run_id: str
    checkpoint_id: str
    created_at: float
    last_event_id: str
    start_count: int = Field(ge=0, description="RunState.event_count before the first event covered")
    event_count: int = Field(ge=0, description="RunState.event_count after the last event covered")
    tasks: int | None = None  # full snapshots only
    counts: dict[str, int] | None = None  # full snapshots only: tasks per state
    status: str | None = None  # full snapshots only: the run's status
    agents: dict[str, AgentSession] = Field(default_factory=dict)
    store_keys: int | None = None  # full snapshots only: the run's kv pairs saved with it (None: none)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A stored checkpoint. From a listing only the id, kind, time and size are known; the
    other fields are filled once the checkpoint has been read (``Checkpointer.inspect``)."""

    id: str
    run_id: str
    kind: CheckpointKind
    created_at: float
    size: int
    last_event_id: str | None = None
    start_count: int | None = None
    event_count: int | None = None
    tasks: int | None = None
    counts: dict[str, int] | None = None
    status: str | None = None

    @property
    def name(self) -> str:
        return blob_name(self.run_id, self.id)

    @property
    def events(self) -> int | None:
        """Events a segment holds (None for a full snapshot or when not read)."""
        if self.kind is CheckpointKind.FULL or self.event_count is None or self.start_count is None:
            return None
        return self.event_count - self.start_count

    def with_header(self, header: CheckpointHeader) -> Checkpoint:
        return Checkpoint(
            id=self.id,
            run_id=self.run_id,
            kind=self.kind,
            created_at=header.created_at,
            size=self.size,
            last_event_id=header.last_event_id,
            start_count=header.start_count,
            event_count=header.event_count,
            tasks=header.tasks,
            counts=header.counts,
            status=header.status,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "kind": self.kind.value,
            "created_at": self.created_at,
            "size": self.size,
            "last_event_id": self.last_event_id,
            "start_count": self.start_count,
            "event_count": self.event_count,
            "events": self.events,
            "tasks": self.tasks,
            "counts": self.counts,
            "status": self.status,
        }


@dataclass(frozen=True)
class Restored:
    """What a resume starts from.

    ``state`` covers the events up to ``state.last_event_id`` (count ``state.event_count``);
    the run's events after that come from the store. ``base`` is the full snapshot used
    (None: rebuilt from segments from the start of the run), ``segments`` those applied on
    top, ``checkpoint`` the newest of them all. ``warnings`` are for the user, one line each.
    """

    state: RunState
    checkpoint: Checkpoint
    base: Checkpoint | None
    segments: tuple[Checkpoint, ...]
    agents: dict[str, AgentSession]
    warnings: tuple[str, ...]
    store: dict[str, bytes] | None = None  # the run's kv pairs (shared state, results) at ``base``

    @property
    def last_event_id(self) -> str:
        return self.state.last_event_id


# --------------------------------------------------------------------------- ids and names


def blob_name(run_id: str, checkpoint_id: str) -> str:
    return f"{run_id}/{checkpoint_id}{SUFFIX}"


def format_id(ms: int, kind: CheckpointKind) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(ms // 1000))
    return f"{stamp}-{ms % 1000:03d}-{kind.value}"


def parse_id(checkpoint_id: str) -> tuple[int, CheckpointKind] | None:
    """(milliseconds since the epoch, kind) of a checkpoint id, or None if it is not one."""
    match = _ID_RE.match(checkpoint_id)
    if match is None:
        return None
    try:
        seconds = calendar.timegm(time.strptime(match[1], "%Y%m%d-%H%M%S"))
    except ValueError:
        return None
    return seconds * 1000 + int(match[2]), CheckpointKind(match[3])


def _check_run_id(run_id: str) -> str:
    if not _RUN_ID_RE.match(run_id):
        raise CheckpointError(f"invalid run id {run_id!r}: expected letters, digits, '_', '.', '-'")
    return run_id


def _aad(run_id: str, checkpoint_id: str) -> bytes:
    return f"maos-checkpoint\0{run_id}/{checkpoint_id}".encode()


# --------------------------------------------------------------------------- encoding

_SPECS: TypeAdapter[list[TaskSpec]] = TypeAdapter(list[TaskSpec])
_RUNS: TypeAdapter[dict[str, TaskRun]] = TypeAdapter(dict[str, TaskRun])
_EVENTS: TypeAdapter[list[tuple[str, Event]]] = TypeAdapter(list[tuple[str, Event]])
_MAX_CHUNK_ITEMS = 256


def _batches(items: Iterable[_T], size: Callable[[_T], int]) -> Iterator[list[_T]]:
    """Consecutive batches of roughly ``CHUNK_BYTES`` each, by an estimate of item sizes.

    Lazy on purpose: materializing 10,000 ``(id, TaskRun)`` pairs at once would hand the
    garbage collector thousands of survivors and, sooner or later, a full collection that
    holds the GIL for tens of milliseconds.
    """
    batch: list[_T] = []
    total = 0
    for item in items:
        batch.append(item)
        total += size(item)
        if total >= CHUNK_BYTES or len(batch) >= _MAX_CHUNK_ITEMS:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


def _spec_size(spec: TaskSpec) -> int:
    return len(spec.prompt) + len(spec.title) + 200


def _run_size(item: tuple[str, TaskRun]) -> int:
    return len(item[1].stderr_tail) + len(item[1].reason) + 300


def state_json_parts(state: RunState) -> list[bytes]:
    """``state`` as JSON (what ``RunState.model_validate_json`` reads), in ~128 KiB pieces.

    One ``model_dump_json`` of a 50 MB state holds the GIL for ~150 ms; pieces let the event
    loop run between them when this runs on a worker thread.
    """
    head = state.model_dump_json(exclude={"plan", "tasks"}).encode()
    parts: list[bytes] = [head[:-1], b"," if len(head) > 2 else b""]
    if state.plan is None:
        parts.append(b'"plan":null')
    else:
        plan_head = state.plan.model_dump_json(exclude={"tasks"}).encode()
        parts += [b'"plan":', plan_head[:-1], b"," if len(plan_head) > 2 else b"", b'"tasks":[']
        for n, specs in enumerate(_batches(state.plan.tasks, _spec_size)):
            parts += [b"," if n else b"", _SPECS.dump_json(specs)[1:-1]]
        parts.append(b"]}")
    parts.append(b',"tasks":{')
    for n, runs in enumerate(_batches(state.tasks.items(), _run_size)):
        parts += [b"," if n else b"", _RUNS.dump_json(dict(runs))[1:-1]]
    parts.append(b"}}")
    return parts


def _events_json_parts(events: Sequence[tuple[str, Event]]) -> list[bytes]:
    parts = [b"["]
    for n, batch in enumerate(_batches(events, lambda _item: 500)):
        parts += [b"," if n else b"", _EVENTS.dump_json(batch)[1:-1]]
    parts.append(b"]")
    return parts


def _seal(key: bytes, header: CheckpointHeader, payload: list[bytes], level: int) -> bytes:
    raw = b"".join([header.model_dump_json().encode(), b"\n", *payload])
    compressed: bytes = zstandard.ZstdCompressor(level=level).compress(raw)
    return security.encrypt(key, compressed, _aad(header.run_id, header.checkpoint_id))


def _full_header(
    run_id: str,
    checkpoint_id: str,
    state: RunState,
    created_at: float,
    agents: dict[str, AgentSession],
    store: Mapping[str, bytes] | None = None,
) -> CheckpointHeader:
    return CheckpointHeader(
        kind=CheckpointKind.FULL,
        run_id=run_id,
        checkpoint_id=checkpoint_id,
        created_at=created_at,
        last_event_id=state.last_event_id,
        start_count=state.event_count,
        event_count=state.event_count,
        tasks=len(state.tasks),
        counts={name: number for name, number in state.counts().items() if number},
        status=state.status.value,
        agents=agents,
        store_keys=None if store is None else len(store),
    )


def _full_parts(state: RunState, store: Mapping[str, bytes] | None) -> list[bytes]:
    """A full snapshot's payload: the state's JSON, then (after a newline, which the state's
    JSON never holds) the run's kv pairs as ``{key: base64}``."""
    parts = state_json_parts(state)
    if store is not None:
        pairs = {key: base64.b64encode(value).decode() for key, value in store.items()}
        parts += [b"\n", json.dumps(pairs).encode()]
    return parts


def _store_pairs(body: bytes) -> dict[str, bytes]:
    pairs = json.loads(body)
    if not isinstance(pairs, dict):
        raise TypeError("not an object")
    return {str(key): base64.b64decode(value, validate=True) for key, value in pairs.items()}


# --------------------------------------------------------------------------- decoding


class _Unusable(CheckpointError):
    """A checkpoint that cannot be used; ``reason`` completes "checkpoint ID …"."""

    def __init__(self, checkpoint_id: str, reason: str, *, mismatch: KeyMismatch | None = None) -> None:
        self.checkpoint_id = checkpoint_id
        self.reason = reason
        self.mismatch = mismatch
        super().__init__(f"checkpoint {checkpoint_id} {reason}")


@dataclass
class _Loaded:
    info: Checkpoint
    header: CheckpointHeader
    state: RunState | None = None
    events: list[tuple[str, Event]] = field(default_factory=list)
    store: dict[str, bytes] | None = None


def _open(blob: bytes, info: Checkpoint, key: security.KeyInfo, *, payload: bool) -> _Loaded:
    """Decrypt, decompress and validate one checkpoint (runs on a worker thread)."""
    try:
        plaintext = security.decrypt(key.key, blob, _aad(info.run_id, info.id), old_keys=key.old_keys)
    except KeyMismatch as exc:
        raise _Unusable(info.id, f"was {exc}", mismatch=exc) from exc
    except DecryptionError as exc:
        raise _Unusable(info.id, f"is corrupt ({exc})") from exc
    try:
        raw: bytes = zstandard.ZstdDecompressor().decompress(plaintext)
    except zstandard.ZstdError as exc:
        raise _Unusable(info.id, f"is corrupt (cannot decompress: {exc})") from exc
    header_json, _, body = raw.partition(b"\n")
    try:
        header = CheckpointHeader.model_validate_json(header_json)
    except ValidationError as exc:
        raise _Unusable(info.id, f"is unreadable (header: {_first_error(exc)})") from exc
    if (header.run_id, header.checkpoint_id, header.kind) != (info.run_id, info.id, info.kind):
        raise _Unusable(info.id, f"is inconsistent (its header names {header.run_id}/{header.checkpoint_id})")
    loaded = _Loaded(info.with_header(header), header)
    if not payload:
        return loaded
    try:
        if header.kind is CheckpointKind.FULL:
            state_body, newline, store_body = body.partition(b"\n")
            loaded.state = RunState.model_validate_json(state_body)
            if newline:
                loaded.store = _store_pairs(store_body)
        else:
            loaded.events = _EVENTS.validate_json(body)
    except ValidationError as exc:
        raise _Unusable(info.id, f"is unreadable by this MAOS ({_first_error(exc)})") from exc
    except (ValueError, TypeError, AttributeError) as exc:
        raise _Unusable(info.id, f"is unreadable (its store pairs: {exc})") from exc
    if header.kind is CheckpointKind.FULL:
        assert loaded.state is not None
        covered = (loaded.state.event_count, loaded.state.last_event_id)
        if covered != (header.event_count, header.last_event_id):
            raise _Unusable(info.id, "is inconsistent (state and header disagree on the last event)")
    elif len(loaded.events) != header.event_count - header.start_count:
        raise _Unusable(info.id, "is inconsistent (event count and header disagree)")
    return loaded


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


# --------------------------------------------------------------------------- the checkpointer


class Checkpointer:
    """Writes, lists, prunes and restores the checkpoints of a run in one blob store.

    ``key`` is needed to write and to read contents; listing works without it. ``every_s``
    is the full-snapshot interval ``CheckpointWriter`` uses; ``keep`` the retention count.
    """

    def __init__(
        self,
        run_id: str,
        blobs: BlobStore,
        key: security.KeyInfo | None,
        *,
        every_s: float = DEFAULT_EVERY_S,
        keep: int = DEFAULT_KEEP,
        clock: Callable[[], float] = time.time,
        level: int = ZSTD_LEVEL,
    ) -> None:
        if keep < 1:
            raise CheckpointError(f"keep must be at least 1, got {keep}")
        if not every_s > 0:
            raise CheckpointError(f"every_s must be positive, got {every_s}")
        self.run_id = _check_run_id(run_id)
        self.blobs = blobs
        self.key = key
        self.every_s = every_s
        self.keep = keep
        self.clock = clock
        self.level = level
        self._last_ms = 0
        self._prepared = False

    # ------------------------------------------------------------------ writing
    async def prepare(self) -> None:
        """Learn the newest stored id so new ids sort after it (done on the first write)."""
        if self._prepared:
            return
        for info in await self._checkpoints(self.run_id):
            parsed = parse_id(info.id)
            if parsed is not None:
                self._last_ms = max(self._last_ms, parsed[0])
        self._prepared = True

    def new_id(self, kind: CheckpointKind) -> str:
        """A fresh id, later than every id handed out or stored before (after ``prepare``)."""
        ms = max(int(self.clock() * 1000), self._last_ms + 1)
        self._last_ms = ms
        return format_id(ms, kind)

    def _require_key(self) -> security.KeyInfo:
        if self.key is None:
            raise CheckpointError("no encryption key: set MAOS_KEY or create .maos/key")
        return self.key

    async def snapshot(
        self,
        state: RunState,
        agents: Mapping[str, AgentSession] | None = None,
        store: Mapping[str, bytes] | None = None,
    ) -> Checkpoint:
        """Write a full snapshot of ``state`` (and the run's kv pairs ``store``, which a
        rebuild after a lost store writes back) and apply retention.

        ``state`` is read on a worker thread: the caller must not change it until this returns
        (``CheckpointWriter`` keeps its own copy for that reason).
        """
        if state.run_id and state.run_id != self.run_id:
            raise CheckpointError(
                f"state of run {state.run_id} given to the checkpointer of run {self.run_id}"
            )
        await self.prepare()
        checkpoint_id = self.new_id(CheckpointKind.FULL)
        created_at = self.clock()
        sessions = dict(agents or {})

        def build() -> tuple[CheckpointHeader, list[bytes]]:
            header = _full_header(self.run_id, checkpoint_id, state, created_at, sessions, store)
            return header, _full_parts(state, store)

        checkpoint = await self.save(checkpoint_id, build)
        await self.prune_quietly()
        return checkpoint

    async def segment(
        self,
        events: Sequence[tuple[str, Event]],
        *,
        start_count: int,
        agents: Mapping[str, AgentSession] | None = None,
    ) -> Checkpoint:
        """Write a segment holding ``events`` (``(event_id, event)`` pairs, oldest first).

        ``start_count`` is ``RunState.event_count`` before the first of them, i.e. the state
        after the previous checkpoint.
        """
        if not events:
            raise CheckpointError("a segment needs at least one event")
        if start_count < 0:
            raise CheckpointError(f"start_count must be >= 0, got {start_count}")
        await self.prepare()
        checkpoint_id = self.new_id(CheckpointKind.SEGMENT)
        header = CheckpointHeader(
            kind=CheckpointKind.SEGMENT,
            run_id=self.run_id,
            checkpoint_id=checkpoint_id,
            created_at=self.clock(),
            last_event_id=events[-1][0],
            start_count=start_count,
            event_count=start_count + len(events),
            agents=dict(agents or {}),
        )
        captured = list(events)
        return await self.save(checkpoint_id, lambda: (header, _events_json_parts(captured)))

    async def save(
        self, checkpoint_id: str, build: Callable[[], tuple[CheckpointHeader, list[bytes]]]
    ) -> Checkpoint:
        """Encode on a worker thread (``build`` runs there too), then store. Low level: the
        id must come from ``new_id``; ``snapshot`` and ``segment`` are the usual way in."""
        key = self._require_key()
        parsed = parse_id(checkpoint_id)
        if parsed is None:
            raise CheckpointError(f"invalid checkpoint id {checkpoint_id!r}")
        started = time.perf_counter()

        def encode() -> tuple[CheckpointHeader, bytes]:
            header, payload = build()
            return header, _seal(key.key, header, payload, self.level)

        header, blob = await asyncio.to_thread(encode)
        info = Checkpoint(checkpoint_id, self.run_id, parsed[1], header.created_at, len(blob))
        try:
            await self.blobs.put(info.name, blob)
        except BlobError as exc:
            raise CheckpointError(f"cannot write checkpoint {checkpoint_id}: {exc}") from exc
        log.info(
            "checkpoint %s of run %s written: %s, %d bytes, %.1f ms",
            checkpoint_id,
            self.run_id,
            f"{header.event_count - header.start_count} events"
            if parsed[1] is CheckpointKind.SEGMENT
            else f"{header.tasks} tasks",
            len(blob),
            (time.perf_counter() - started) * 1000,
        )
        return info.with_header(header)

    # ------------------------------------------------------------------ retention
    async def prune(self) -> builtins.list[str]:
        """Keep the newest ``keep`` full snapshots and the segments after the oldest kept
        one; delete the rest. Returns the deleted ids, oldest first."""
        infos = await self._checkpoints(self.run_id)
        fulls = [info for info in infos if info.kind is CheckpointKind.FULL]
        if not fulls:
            return []
        oldest_kept = fulls[-self.keep :][0].id
        doomed = [info for info in infos if info.id < oldest_kept]
        for info in doomed:
            try:
                await self.blobs.delete(info.name)
            except BlobError as exc:
                raise CheckpointError(f"retention cannot delete checkpoint {info.id}: {exc}") from exc
        if doomed:
            log.info("retention deleted %d checkpoint(s) of run %s", len(doomed), self.run_id)
        return [info.id for info in doomed]

    async def prune_quietly(self) -> None:
        """``prune``, logging a failure instead of raising it (a checkpoint was written)."""
        try:
            await self.prune()
        except CheckpointError as exc:
            log.warning("%s", exc)

    # ------------------------------------------------------------------ reading
    async def _checkpoints(self, run_id: str) -> builtins.list[Checkpoint]:
        prefix = f"{_check_run_id(run_id)}/"
        try:
            blobs = await self.blobs.list(prefix)
        except BlobError as exc:
            raise CheckpointError(f"cannot list checkpoints of run {run_id}: {exc}") from exc
        found: builtins.list[Checkpoint] = []
        for blob in blobs:
            checkpoint_id = blob.name[len(prefix) :].removesuffix(SUFFIX)
            parsed = parse_id(checkpoint_id) if blob.name.endswith(SUFFIX) else None
            if parsed is None or "/" in checkpoint_id:
                log.debug("ignoring blob %s: not a checkpoint", blob.name)
                continue
            found.append(Checkpoint(checkpoint_id, run_id, parsed[1], parsed[0] / 1000, blob.size))
        found.sort(key=lambda info: info.id)
        return found

    async def list(self, run_id: str) -> builtins.list[Checkpoint]:
        """The checkpoints of ``run_id``, oldest first, from the listing alone (not read)."""
        return await self._checkpoints(run_id)

    async def runs(self) -> dict[str, int]:
        """Run id -> number of checkpoints, for every run with checkpoints in this store."""
        try:
            blobs = await self.blobs.list("")
        except BlobError as exc:
            raise CheckpointError(f"cannot list checkpoints: {exc}") from exc
        result: dict[str, int] = {}
        for blob in blobs:
            run_id, _, rest = blob.name.partition("/")
            if rest.endswith(SUFFIX) and parse_id(rest.removesuffix(SUFFIX)) is not None:
                result[run_id] = result.get(run_id, 0) + 1
        return dict(sorted(result.items()))

    async def _find(self, run_id: str, checkpoint_id: str) -> Checkpoint:
        for info in await self._checkpoints(run_id):
            if info.id == checkpoint_id:
                return info
        raise CheckpointError(
            f"no checkpoint {checkpoint_id} of run {run_id} in {self.blobs.url}; "
            f"`maos checkpoint list {run_id}` shows them"
        )

    async def _read(self, info: Checkpoint, *, payload: bool = True) -> _Loaded:
        key = self._require_key()
        try:
            blob = await self.blobs.get(info.name)
        except BlobError as exc:
            raise _Unusable(info.id, f"cannot be read ({exc})") from exc
        return await asyncio.to_thread(_open, blob, info, key, payload=payload)

    async def inspect(self, run_id: str, checkpoint_id: str) -> Checkpoint:
        """Read and authenticate one checkpoint; its metadata with every field filled.
        Raises ``CheckpointError`` saying why if it cannot be used."""
        loaded = await self._read(await self._find(run_id, checkpoint_id), payload=False)
        return loaded.info

    async def load_latest(self, run_id: str) -> Restored:
        """The newest restorable state: see the module docstring. Never deletes anything."""
        infos = await self._checkpoints(run_id)
        if not infos:
            raise CheckpointError(f"no checkpoints of run {run_id} in {self.blobs.url}")
        return await self._restore(run_id, infos, target=None)

    async def load(self, run_id: str, checkpoint_id: str) -> Restored:
        """The state as of ``checkpoint_id``: that full snapshot, or for a segment the newest
        usable full snapshot before it plus the segments up to it. No fallback past it."""
        target = await self._find(run_id, checkpoint_id)
        infos = [info for info in await self._checkpoints(run_id) if info.id <= target.id]
        return await self._restore(run_id, infos, target=target)

    async def _restore(
        self, run_id: str, infos: builtins.list[Checkpoint], *, target: Checkpoint | None
    ) -> Restored:
        if target is not None and target.kind is CheckpointKind.FULL:
            loaded = await self._read(target)
            assert loaded.state is not None
            return Restored(
                loaded.state, loaded.info, loaded.info, (), loaded.header.agents, (), loaded.store
            )

        skipped: builtins.list[_Unusable] = []
        base: _Loaded | None = None
        for info in reversed([info for info in infos if info.kind is CheckpointKind.FULL]):
            try:
                base = await self._read(info)
                break
            except _Unusable as exc:
                skipped.append(exc)
        state = base.state if base is not None and base.state is not None else RunState()
        agents = dict(base.header.agents) if base is not None else {}
        warnings: builtins.list[str] = []
        applied: builtins.list[Checkpoint] = []
        reached: Checkpoint | None = base.info if base is not None else None  # newest whose events are in
        later = [
            info
            for info in infos
            if info.kind is CheckpointKind.SEGMENT and (base is None or info.id > base.info.id)
        ]
        unusable_segments: builtins.list[_Unusable] = []
        for position, info in enumerate(later):
            try:
                segment = await self._read(info)
            except _Unusable as exc:
                unusable_segments.append(exc)
                warnings.append(f"{exc}; skipped")
                continue
            header = segment.header
            have = state.event_count
            if header.event_count <= have:
                reached = segment.info  # nothing new in it
                continue
            if header.start_count > have:
                rest = len(later) - position
                if base is not None or applied:
                    warnings.append(
                        f"checkpoint {info.id} and {rest - 1} later segment(s) do not continue the "
                        f"restored state (it ends at event {state.last_event_id}, count {have}; the "
                        f"segment starts after count {header.start_count}); not applied"
                    )
                break
            try:
                await asyncio.to_thread(fold, segment.events[have - header.start_count :], state)
            except (MaosError, KeyError, AssertionError) as exc:
                warnings.append(f"checkpoint {info.id} does not apply to the restored state ({exc}); stopped")
                break
            applied.append(segment.info)
            reached = segment.info
            if header.agents:
                agents.update(header.agents)

        if reached is None or (base is None and not applied):
            raise self._nothing_usable(run_id, skipped + unusable_segments, infos)
        pairs = base.store if base is not None else None
        if base is not None and pairs is None:  # saved without the store's data: an older one's
            pairs = await self._newest_pairs([info for info in infos if info.id < base.info.id])
        if target is not None and reached.id != target.id:
            detail = "; ".join(warnings) or "it does not continue the snapshot before it"
            raise CheckpointError(f"cannot restore run {run_id} up to checkpoint {target.id}: {detail}")
        used = base.info.id if base is not None else "the segments from the start of the run"
        fallback = [f"{exc}; using {used} instead" for exc in skipped]
        return Restored(
            state,
            reached,
            base.info if base is not None else None,
            tuple(applied),
            agents,
            tuple(fallback + warnings),
            pairs,
        )

    async def _newest_pairs(self, infos: builtins.list[Checkpoint]) -> dict[str, bytes] | None:
        """The run's kv pairs of the newest full snapshot among ``infos`` that has them."""
        for info in reversed([info for info in infos if info.kind is CheckpointKind.FULL]):
            try:
                loaded = await self._read(info)
            except _Unusable:
                continue
            if loaded.store is not None:
                return loaded.store
        return None

    def _nothing_usable(
        self, run_id: str, problems: builtins.list[_Unusable], infos: builtins.list[Checkpoint]
    ) -> CheckpointError:
        key = self._require_key()
        mismatches = [problem.mismatch for problem in problems if problem.mismatch is not None]
        if problems and len(mismatches) == len(problems):
            written = ", ".join(sorted({mismatch.written_key_id for mismatch in mismatches}))
            old = f" (old keys: {', '.join(key.old_key_ids)})" if key.old_keys else ""
            return CheckpointError(
                f"the key does not match the checkpoints of run {run_id}: they were written with key "
                f"id {written}, the key in use is {key.key_id} from {key.source}{old}. Set MAOS_KEY to "
                "the key they were written with (or add it to MAOS_OLD_KEYS). Nothing was deleted."
            )
        if problems:
            detail = "; ".join(str(problem) for problem in problems)
        else:
            detail = (
                f"no full snapshot and the {len(infos)} segment(s) do not reach back to the start of the run"
            )
        return CheckpointError(
            f"no usable checkpoint of run {run_id} in {self.blobs.url}: {detail}. Nothing was deleted."
        )


# --------------------------------------------------------------------------- background writing


def _copy_state(state: RunState) -> RunState:
    return RunState.model_validate_json(state.model_dump_json())


class CheckpointWriter:
    """Writes one run's checkpoints in the background, so scheduling never waits on them.

    The orchestrator calls ``observe(event_id, event, state)`` for every event it folds (it
    fits ``Orchestrator.hooks``); that costs one list append. Two lanes (tasks this writer
    owns) do the rest, each on worker threads:

    - the **segment lane** writes the events observed since the last checkpoint whenever an
      event in ``segment_on`` (task completions, run start and end) was observed;
    - the **snapshot lane**, every ``checkpointer.every_s`` seconds, folds the new events
      into the writer's own copy of the state (so the orchestrator's state is never read
      from another thread) and writes a full snapshot, then applies retention.

    Coalescing: each lane has a pending flag, a queue of size one. A request while the lane is
    busy sets the flag; when the save ends, one more save covers everything observed until
    then. So at most one save per lane runs and at most one waits, whatever the event rate.

    Failures (storage down) are logged and counted, never raised into the run: the events
    stay buffered and the next save covers them. If more than ``max_backlog_events`` events
    wait for a segment, the backlog is left to the next full snapshot (a warning says so).

    ``close()`` stops the lanes and, by default, writes a final full snapshot. ``flush()``
    waits until everything observed so far is in a written checkpoint.
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        *,
        initial: RunState | None = None,
        agents: Callable[[], Mapping[str, AgentSession]] | None = None,
        segment_on: Collection[str] = SEGMENT_EVENTS,
        max_backlog_events: int = 100_000,
        on_snapshot: Callable[[Checkpoint, float], Awaitable[None]] | None = None,
        store: Callable[[], Awaitable[Mapping[str, bytes]]] | None = None,
    ) -> None:
        self.checkpointer = checkpointer
        self._initial = initial
        self._agents = agents
        self._store = store  # the run's kv pairs, saved with each full snapshot
        self._on_snapshot = on_snapshot  # told of each full snapshot written, with its save time
        self._segment_on = frozenset(segment_on)
        self._max_backlog = max_backlog_events
        self._shadow = RunState()
        self._buffer: builtins.list[tuple[str, Event]] = []
        self._buffer_start = 0  # absolute event count of _buffer[0]
        self._count = 0  # events observed, counted like RunState.event_count
        self._seg_cursor = 0  # events before this are in a written checkpoint
        self._snap_cursor = 0  # events before this are folded into _shadow
        self._snap_written = -1  # event count of the last full snapshot written
        # Restorable prefix: events [0, _chain_end) are covered by checkpoints this writer wrote
        # that chain up (a full snapshot, then segments each starting inside what is covered).
        self._chain_end = 0
        self._unchained: builtins.list[tuple[int, int]] = []  # segments written past a gap
        self._want_segment = asyncio.Event()
        self._want_snapshot = asyncio.Event()
        self._progress = asyncio.Condition()
        self._lanes: builtins.list[asyncio.Task[None]] = []
        self._timer: asyncio.Task[None] | None = None
        self._state = "new"  # new -> running -> closed
        self._broken: str | None = None
        self.saved = {CheckpointKind.FULL: 0, CheckpointKind.SEGMENT: 0}
        self.failures = 0
        self.last_error: str | None = None
        self.last: Checkpoint | None = None

    async def __aenter__(self) -> CheckpointWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Copy the initial state (the caller must not change it meanwhile), start the lanes.
        A resumed run (initial state with events) gets a full snapshot at once."""
        if self._state != "new":
            raise CheckpointError("the checkpoint writer was already started")
        await self.checkpointer.prepare()
        if self._initial is not None:
            self._shadow = await asyncio.to_thread(_copy_state, self._initial)
            self._initial = None
        count = self._shadow.event_count
        self._buffer_start = self._count = self._seg_cursor = self._snap_cursor = count
        self._state = "running"
        name = self.checkpointer.run_id
        self._lanes = [
            asyncio.create_task(self._lane(self._want_segment, self._write_segment), name=f"segments {name}"),
            asyncio.create_task(
                self._lane(self._want_snapshot, self._write_snapshot), name=f"snapshots {name}"
            ),
        ]
        self._timer = asyncio.create_task(self._ticker(), name=f"snapshot timer {name}")
        if count:
            self._want_snapshot.set()

    def observe(self, event_id: str, event: Event, state: RunState | None = None) -> None:
        """Record one event the run has folded, in log order. Never blocks, never raises."""
        if self._state != "running" or self._broken is not None:
            return
        self._buffer.append((event_id, event))
        self._count += 1
        if state is not None and state.event_count != self._count:
            self._disable(
                f"events were missed: the run's state has {state.event_count} events, the writer saw "
                f"{self._count}; call observe() for every event, starting right after start()"
            )
            return
        if event.type in self._segment_on:
            self._want_segment.set()

    @property
    def durable(self) -> int:
        """Event count up to which this writer's checkpoints can restore the run (a resumed
        run counts from its first full snapshot)."""
        return self._chain_end

    async def flush(self) -> None:
        """Wait until every event observed so far can be restored from checkpoints: a segment
        first, a full snapshot if that is not enough (a resumed run before its first one).

        Raises ``CheckpointError`` if a save failed meanwhile, or if the writer is closed or
        disabled first.
        """
        if self._state != "running":
            raise CheckpointError("the checkpoint writer is not running")
        target, failures = self._count, self.failures
        self._want_segment.set()
        async with self._progress:
            while self._chain_end < target:
                if self._broken is not None:
                    raise CheckpointError(f"checkpoints are disabled: {self._broken}")
                if self.failures > failures:
                    raise CheckpointError(f"checkpoint not written: {self.last_error}")
                if self._state != "running":
                    raise CheckpointError("the checkpoint writer was closed before the events were written")
                if self._seg_cursor >= target:  # segments hold them, but there is no base under them
                    self._want_snapshot.set()
                await self._progress.wait()

    async def close(self, *, final_snapshot: bool = True) -> None:
        """Stop the lanes (letting a save in progress finish), then write a final full
        snapshot (or, if that fails or is not wanted, a last segment)."""
        if self._state != "running":
            self._state = "closed"
            return
        self._state = "closing"
        tasks = [*self._lanes, *([self._timer] if self._timer is not None else [])]
        self._lanes, self._timer = [], None
        tasks[-1].cancel()  # the timer
        self._want_segment.set()
        self._want_snapshot.set()
        try:
            await asyncio.gather(*tasks, return_exceptions=True)  # a save in progress finishes
            if final_snapshot:
                await self._write_snapshot()
            if self._chain_end < self._count:
                await self._write_segment()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._state = "closed"
            await self._notify()  # wake flush() callers

    # ------------------------------------------------------------------ internals
    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.checkpointer.every_s)
            self._want_snapshot.set()

    async def _lane(self, wanted: asyncio.Event, work: Callable[[], Any]) -> None:
        while self._state == "running":
            await wanted.wait()
            wanted.clear()
            if self._state != "running":
                return
            try:
                await work()
            except Exception:  # a bug, not a storage failure: keep the run going, say so loudly
                log.exception("checkpoint writer of run %s failed", self.checkpointer.run_id)

    def _sessions(self) -> dict[str, AgentSession]:
        if self._agents is None:
            return {}
        try:
            return dict(self._agents())
        except Exception:
            log.exception("the agent sessions callback failed; checkpoint written without them")
            return {}

    def _slice(self, start: int, end: int) -> builtins.list[tuple[str, Event]]:
        return self._buffer[start - self._buffer_start : end - self._buffer_start]

    async def _write_segment(self) -> None:
        start, end = self._seg_cursor, self._count
        if end <= start or self._broken is not None:
            await self._notify()
            return
        checkpointer = self.checkpointer
        checkpoint_id = checkpointer.new_id(CheckpointKind.SEGMENT)  # with the capture, see prune()
        events = self._slice(start, end)
        header = CheckpointHeader(
            kind=CheckpointKind.SEGMENT,
            run_id=checkpointer.run_id,
            checkpoint_id=checkpoint_id,
            created_at=checkpointer.clock(),
            last_event_id=events[-1][0],
            start_count=start,
            event_count=end,
            agents=self._sessions(),
        )
        try:
            checkpoint = await checkpointer.save(checkpoint_id, lambda: (header, _events_json_parts(events)))
        except CheckpointError as exc:
            self._failed(exc)
        else:
            self._seg_cursor = max(self._seg_cursor, end)
            self._saved(checkpoint, start, end)
        self._trim()
        await self._notify()

    async def _notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def _store_pairs(self) -> Mapping[str, bytes] | None:
        """The run's kv pairs for a full snapshot; None (the snapshot goes without) when the
        store cannot be read: the state matters more than a copy of its data."""
        if self._store is None:
            return None
        try:
            return await self._store()
        except MaosError as exc:
            log.warning("run %s: checkpoint without the run's store data: %s", self.checkpointer.run_id, exc)
            return None

    async def _write_snapshot(self) -> None:
        start, end = self._snap_cursor, self._count
        if self._broken is not None or end in (0, self._snap_written):
            return  # nothing new (or nothing at all) since the last snapshot
        checkpointer = self.checkpointer
        checkpoint_id = checkpointer.new_id(CheckpointKind.FULL)  # with the capture, see prune()
        created_at = checkpointer.clock()
        sessions = self._sessions()
        shadow = self._shadow
        pairs = await self._store_pairs()
        try:
            await asyncio.to_thread(fold, self._slice(start, end), shadow)
        except Exception as exc:
            self._disable(f"the writer's copy of the state cannot follow the events: {exc}")
            await self._notify()
            return
        self._snap_cursor = end
        self._trim()
        save_started = time.monotonic()
        try:
            checkpoint = await checkpointer.save(
                checkpoint_id,
                lambda: (
                    _full_header(checkpointer.run_id, checkpoint_id, shadow, created_at, sessions, pairs),
                    _full_parts(shadow, pairs),
                ),
            )
        except CheckpointError as exc:
            self._failed(exc)
            await self._notify()
            return
        self._snap_written = end
        self._seg_cursor = max(self._seg_cursor, end)
        self._saved(checkpoint, 0, end)
        if self._on_snapshot is not None:
            try:
                await self._on_snapshot(checkpoint, time.monotonic() - save_started)
            except MaosError as exc:
                log.warning(
                    "run %s: checkpoint %s not announced: %s", checkpointer.run_id, checkpoint.id, exc
                )
        self._trim()
        await self._notify()
        await checkpointer.prune_quietly()

    def _saved(self, checkpoint: Checkpoint, start: int, end: int) -> None:
        """Count a written checkpoint covering events [start, end) and extend the chain."""
        self.saved[checkpoint.kind] += 1
        self.last = checkpoint
        self._unchained.append((start, end))
        self._unchained.sort()
        while self._unchained and self._unchained[0][0] <= self._chain_end:
            self._chain_end = max(self._chain_end, self._unchained.pop(0)[1])
        del self._unchained[:-1000]  # bounded while a gap lasts; the next full snapshot closes it

    def _failed(self, exc: MaosError) -> None:
        self.failures += 1
        self.last_error = str(exc)
        log.warning("run %s: %s (will retry with the next checkpoint)", self.checkpointer.run_id, exc)

    def _disable(self, reason: str) -> None:
        if self._broken is None:
            self._broken = reason
            self.last_error = reason
            log.error("run %s: checkpoints disabled: %s", self.checkpointer.run_id, reason)
        self._buffer.clear()
        self._buffer_start = self._count
        self._want_segment.set()  # the lane's next pass wakes flush() callers

    def _trim(self) -> None:
        if self._broken is not None:
            return
        backlog = self._count - self._seg_cursor
        if backlog > self._max_backlog:
            self._seg_cursor = max(self._seg_cursor, self._snap_cursor, self._count - self._max_backlog)
            log.warning(
                "run %s: %d events wait for a segment (limit %d); events up to count %d are left to the "
                "next full snapshot",
                self.checkpointer.run_id,
                backlog,
                self._max_backlog,
                self._seg_cursor,
            )
        keep_from = min(self._seg_cursor, self._snap_cursor)
        drop = keep_from - self._buffer_start
        if drop > 0:
            del self._buffer[:drop]
            self._buffer_start = keep_from
