"""The checkpoint format: names and ids, the header, sealing and opening one blob.

Names and ids. A checkpoint is the blob ``RUN_ID/CHECKPOINT_ID.ckpt``; the id is the UTC time
to the millisecond and the kind, e.g. ``20261125-143005-123-full``, so ids sort by time.

Blob format: ``maos.security.encrypt`` (AES-256-GCM, key id in the header) of a zstd frame
of ``HEADER_JSON "\\n" PAYLOAD_JSON``. The header (``CheckpointHeader``) holds the metadata;
the payload is the ``RunState`` (full) or the ``[event_id, event]`` list (segment). The
run id and checkpoint id are authenticated data, so a blob renamed or copied to another run
fails to load. Serialization, compression and encryption are meant for a worker thread and
go in pieces of ~128 KiB, so that the event loop keeps getting the GIL during a 50 MB save.
Everything here is pure (no I/O): ``maos.checkpoint.checkpointer`` stores what it seals.
"""

from __future__ import annotations

import base64
import calendar
import enum
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, TypeVar

import zstandard
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from maos import security
from maos.errors import CheckpointError, DecryptionError, KeyMismatch
from maos.events import Event
from maos.model import RunState, TaskRun, TaskSpec

__all__ = [
    "CHUNK_BYTES",
    "FORMAT",
    "SUFFIX",
    "ZSTD_LEVEL",
    "AgentSession",
    "Checkpoint",
    "CheckpointHeader",
    "CheckpointKind",
    "Contents",
    "Opened",
    "Unusable",
    "blob_name",
    "check_run_id",
    "format_id",
    "full_contents",
    "parse_id",
    "seal",
    "segment_contents",
    "state_json_parts",
    "unseal",
]

_T = TypeVar("_T")

FORMAT = 1
SUFFIX = ".ckpt"
ZSTD_LEVEL = 3
CHUNK_BYTES = 128 * 1024
"""Rough size of one serialization step; between steps the event loop can take the GIL."""

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


# --------------------------------------------------------------------------- ids and names


def blob_name(run_id: str, checkpoint_id: str) -> str:
    return f"{run_id}/{checkpoint_id}{SUFFIX}"


def format_id(ms: int, kind: CheckpointKind) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(ms // 1000))
    return f"{stamp}-{ms % 1000:03d}-{kind.value}"


def parse_id(checkpoint_id: str) -> tuple[int, CheckpointKind] | None:
    """(milliseconds since the epoch, kind) of a checkpoint id, or None if it is not one."""
    match = _ID_RE.fullmatch(checkpoint_id)
    if match is None:
        return None
    try:
        seconds = calendar.timegm(time.strptime(match[1], "%Y%m%d-%H%M%S"))
    except ValueError:
        return None
    return seconds * 1000 + int(match[2]), CheckpointKind(match[3])


def check_run_id(run_id: str) -> str:
    if not _RUN_ID_RE.fullmatch(run_id):
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


Contents: TypeAlias = tuple[CheckpointHeader, list[bytes]]
"""A checkpoint before sealing: its header and its payload in pieces."""


def full_contents(
    run_id: str,
    checkpoint_id: str,
    state: RunState,
    created_at: float,
    agents: Mapping[str, AgentSession],
    store: Mapping[str, bytes] | None = None,
) -> Contents:
    """A full snapshot of ``state``: the state's JSON, then (after a newline, which the
    state's JSON never holds) the run's kv pairs ``store`` as ``{key: base64}``."""
    header = CheckpointHeader(
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
        agents=dict(agents),
        store_keys=None if store is None else len(store),
    )
    parts = state_json_parts(state)
    if store is not None:
        pairs = {key: base64.b64encode(value).decode() for key, value in store.items()}
        parts += [b"\n", json.dumps(pairs).encode()]
    return header, parts


def segment_contents(
    run_id: str,
    checkpoint_id: str,
    created_at: float,
    events: Sequence[tuple[str, Event]],
    start_count: int,
    agents: Mapping[str, AgentSession],
) -> Contents:
    """A segment of ``events`` (``(event_id, event)`` pairs, oldest first, at least one),
    which follow ``RunState.event_count`` ``start_count``."""
    header = CheckpointHeader(
        kind=CheckpointKind.SEGMENT,
        run_id=run_id,
        checkpoint_id=checkpoint_id,
        created_at=created_at,
        last_event_id=events[-1][0],
        start_count=start_count,
        event_count=start_count + len(events),
        agents=dict(agents),
    )
    parts = [b"["]
    for n, batch in enumerate(_batches(events, lambda _item: 500)):
        parts += [b"," if n else b"", _EVENTS.dump_json(batch)[1:-1]]
    parts.append(b"]")
    return header, parts


def seal(key: bytes, contents: Contents, level: int = ZSTD_LEVEL) -> bytes:
    """``contents`` compressed and encrypted, bound to its run and id (the blob's bytes)."""
    header, payload = contents
    raw = b"".join([header.model_dump_json().encode(), b"\n", *payload])
    compressed: bytes = zstandard.ZstdCompressor(level=level).compress(raw)
    return security.encrypt(key, compressed, _aad(header.run_id, header.checkpoint_id))


def _store_pairs(body: bytes) -> dict[str, bytes]:
    pairs = json.loads(body)
    if not isinstance(pairs, dict):
        raise TypeError("not an object")
    return {str(key): base64.b64decode(value, validate=True) for key, value in pairs.items()}


# --------------------------------------------------------------------------- decoding


class Unusable(CheckpointError):
    """A checkpoint that cannot be used; ``reason`` completes "checkpoint ID …"."""

    def __init__(self, checkpoint_id: str, reason: str, *, mismatch: KeyMismatch | None = None) -> None:
        self.checkpoint_id = checkpoint_id
        self.reason = reason
        self.mismatch = mismatch
        super().__init__(f"checkpoint {checkpoint_id} {reason}")


@dataclass
class Opened:
    """A checkpoint read back: its metadata and header, and its payload once read."""

    info: Checkpoint
    header: CheckpointHeader
    state: RunState | None = None
    events: list[tuple[str, Event]] = field(default_factory=list)
    store: dict[str, bytes] | None = None


def unseal(blob: bytes, info: Checkpoint, key: security.KeyInfo, *, payload: bool) -> Opened:
    """Decrypt, decompress and validate the checkpoint ``info`` names (meant for a worker
    thread); with ``payload``, its state or events too, else the header alone. ``Unusable``
    says why it cannot be used."""
    try:
        plaintext = security.decrypt(key.key, blob, _aad(info.run_id, info.id), old_keys=key.old_keys)
    except KeyMismatch as exc:
        raise Unusable(info.id, f"was {exc}", mismatch=exc) from exc
    except DecryptionError as exc:
        raise Unusable(info.id, f"is corrupt ({exc})") from exc
    try:
        raw: bytes = zstandard.ZstdDecompressor().decompress(plaintext)
    except zstandard.ZstdError as exc:
        raise Unusable(info.id, f"is corrupt (cannot decompress: {exc})") from exc
    header_json, _, body = raw.partition(b"\n")
    try:
        header = CheckpointHeader.model_validate_json(header_json)
    except ValidationError as exc:
        raise Unusable(info.id, f"is unreadable (header: {_first_error(exc)})") from exc
    if (header.run_id, header.checkpoint_id, header.kind) != (info.run_id, info.id, info.kind):
        raise Unusable(info.id, f"is inconsistent (its header names {header.run_id}/{header.checkpoint_id})")
    loaded = Opened(info.with_header(header), header)
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
        raise Unusable(info.id, f"is unreadable by this MAOS ({_first_error(exc)})") from exc
    except (ValueError, TypeError, AttributeError) as exc:
        raise Unusable(info.id, f"is unreadable (its store pairs: {exc})") from exc
    if header.kind is CheckpointKind.FULL:
        assert loaded.state is not None
        covered = (loaded.state.event_count, loaded.state.last_event_id)
        if covered != (header.event_count, header.last_event_id):
            raise Unusable(info.id, "is inconsistent (state and header disagree on the last event)")
    elif len(loaded.events) != header.event_count - header.start_count:
        raise Unusable(info.id, "is inconsistent (event count and header disagree)")
    return loaded


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])
