"""The audit trail outside the store: who did what to which run, and whether it was allowed.

The run's event log already records every door action (``maos.door``), but it lives in the
store it audits: whoever can write the store can rewrite the trail, and ``maos purge`` erases
it. An **audit sink** keeps a copy somewhere else, append-only:

- ``JsonlSink`` (the default): ``.maos/audit.jsonl`` of the working directory, mode 0600,
  opened ``O_APPEND`` so that each record is one ``write`` of one line, never interleaved;
- ``PostgresSink`` (``--audit postgresql://…`` or ``MAOS_AUDIT``): a table ``maos_audit``,
  created if absent. Needs the ``audit-postgres`` extra (psycopg 3).

**What a sink sees.** Only the orchestrator writes to it; agents never get the sink's address
(a DSN may hold a password, and an agent that could write the sink could also forge it).
``AuditMirror`` follows the run's event log next to the orchestrator and copies each door
event (state written, message sent, topic subscribed, messages read/acknowledged, result
published, task asked for, and every ``door_refused``) as one ``AuditRecord``, plus the
operator's commands (run, resume, retry, cancel, purge) with their outcome. So the sink sees
exactly what reached the log, a second or so later; a door call that failed before its event
was appended is not in it. Mirroring resumes after the newest event the sink already holds for
the run, so door events written while no orchestrator ran (a crash, then ``maos resume``) are
copied on resume. Delivery is at least once: the PostgreSQL table ignores a second copy of an
event; the JSONL file may hold one twice after a crash between a write and the next read.
"""

from __future__ import annotations

import asyncio
import errno
import getpass
import json
import logging
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from maos.documents import DocumentError, check_file_kind
from maos.errors import MaosError
from maos.events import (
    DoorRefused,
    Event,
    MessagesAcked,
    MessageSent,
    MessagesRead,
    ResultPublished,
    StateWritten,
    TaskAddRefused,
    TaskAddRequested,
    TopicSubscribed,
)
from maos.filemodes import private_dir
from maos.paths import audit_file
from maos.sanitize import without_passwords

if TYPE_CHECKING:
    from maos.eventlog import EventLog
    from maos.store.base import Store

__all__ = [
    "AUDIT_ENV",
    "AuditError",
    "AuditMirror",
    "AuditRecord",
    "AuditSink",
    "JsonlSink",
    "PostgresSink",
    "door_record",
    "open_audit_sink",
    "operator",
    "shown_url",
]

log = logging.getLogger("maos.audit")

AUDIT_ENV = "MAOS_AUDIT"
"""The sink of the orchestrator and the operator's commands (never passed to agents)."""
TABLE = "maos_audit"
FOLLOW_BLOCK_S = 0.5
"""How long the mirror waits for new events before looking whether it should stop."""
READ_BATCH = 500
RETRY_S = 1.0
"""After a failed write to the sink, the mirror tries again this much later."""


class AuditError(MaosError):
    """The audit sink cannot be opened, written or read."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One line of the audit trail.

    ``actor``: an agent id (door actions) or ``user@host`` (commands); ``outcome``: ``ok``,
    ``refused``, ``requested`` (an agent's ``add_task``, answered by a later record), or for a
    command ``started`` and then the run's final status or ``error``; ``event_id``: the run
    log's id of a mirrored door event ("" for commands)."""

    time: float
    run: str
    actor: str
    action: str
    resource: str
    outcome: str
    reason: str = ""
    event_id: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> AuditRecord:
        """One line back; ``ValueError``/``TypeError`` unless it is an object with a finite number ``time``
        and text in every other field (an agent can append to a local audit file)."""
        data = json.loads(line)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        when = data.get("time")
        if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
            raise ValueError("'time' is not a number of seconds")
        texts = {name: data.get(name, "") for name in cls.__slots__ if name != "time"}
        if not all(isinstance(value, str) for value in texts.values()):
            raise ValueError("a field that should be text is not")
        return cls(time=float(when), **texts)


def operator() -> str:
    """``user@host`` of this process: the actor of a command."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def shown_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and output)."""
    return without_passwords(url)


def door_record(run_id: str, event_id: str, event: Event) -> AuditRecord | None:
    """The audit record of a door event of the run's log; None for any other event."""

    def record(actor: str, action: str, resource: str, outcome: str = "ok", reason: str = "") -> AuditRecord:
        return AuditRecord(event.ts, run_id, actor, action, resource, outcome, reason, event_id)

    match event:
        case StateWritten():
            return record(event.agent_id, "state.write", f"state:{event.key}", reason=_task(event.task))
        case MessageSent():
            target = f"agent:{event.to}" if event.to is not None else f"topic:{event.topic}"
            return record(
                event.agent_id,
                "message.send" if event.to is not None else "message.broadcast",
                target,
                reason=_task(event.task),
            )
        case TopicSubscribed():
            return record(event.agent_id, "topic.subscribe", f"topic:{event.topic}", reason=_task(event.task))
        case MessagesRead():
            return record(
                event.agent_id, "message.read", f"inbox:{event.agent_id}", reason=f"{event.count} message(s)"
            )
        case MessagesAcked():
            return record(
                event.agent_id,
                "message.ack",
                f"inbox:{event.agent_id}",
                reason=f"{event.acked} of {event.count} receipt(s)",
            )
        case ResultPublished():
            return record(event.agent_id, "result.publish", f"result:{event.task}")
        case TaskAddRequested():
            resource = f"task:{event.spec.get('id', '?')}"
            return record(event.agent_id, "task.add", resource, "requested", f"request {event.request_id}")
        case TaskAddRefused():
            return record("orchestrator", "task.add", f"request:{event.request_id}", "refused", event.reason)
        case DoorRefused():
            # A permission refusal names its action and resource; a token refusal neither.
            action = event.action or "door"
            resource = event.resource or (f"task:{event.task}" if event.task else "")
            actor = event.claimed_agent
            if event.token_owner and event.token_owner != event.claimed_agent:
                actor = f"{event.claimed_agent} (token of {event.token_owner})"
            reason = f"{event.reason} (via {event.via})" if event.via else event.reason
            return record(actor, action, resource, "refused", reason)
        case _:
            return None


def _task(task: str) -> str:
    return f"task {task}" if task else ""


class AuditSink(Protocol):
    """Where audit records go. ``url`` never shows a password."""

    url: str

    async def write(self, records: Sequence[AuditRecord]) -> None:
        """Append ``records``, in order; durable when this returns."""
        ...

    async def read(self, run_id: str | None = None) -> list[AuditRecord]:
        """Every record (of ``run_id``), oldest first."""
        ...

    async def last_event_id(self, run_id: str) -> str | None:
        """The id of the newest mirrored door event of the run, or None."""
        ...

    async def close(self) -> None: ...


MAX_LINE_BYTES = 1 << 20
"""The longest audit line read back; a record is a few hundred bytes."""


def _regular(mode: int, path: Path | str) -> None:
    """The audit file is a regular file: not a FIFO, a device (``/dev/zero``) or a folder."""
    try:
        check_file_kind(mode)
    except DocumentError as exc:
        raise AuditError(f"the audit file {path} {exc}") from None


class JsonlSink:
    """One JSON object per line in a local file, mode 0600, appended with ``O_APPEND``.

    ``replace_links``: a link at ``path`` is never written through but replaced by the file
    (the default ``.maos/audit.jsonl``, beside which agents work); a path the operator named
    is used as named, link or not."""

    def __init__(self, path: Path, *, replace_links: bool = False) -> None:
        self.path = path
        self.url = str(path)
        self.replace_links = replace_links

    async def write(self, records: Sequence[AuditRecord]) -> None:
        if records:
            await asyncio.to_thread(self._write, records)

    def _write(self, records: Sequence[AuditRecord]) -> None:
        try:
            private_dir(self.path.parent)
            # O_NONBLOCK: a FIFO with no reader fails (ENXIO) instead of hanging the run;
            # O_NOFOLLOW (the default file): a link an agent planted there is never written through
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
            if self.replace_links:
                flags |= os.O_NOFOLLOW
            try:
                fd = os.open(self.path, flags, 0o600)
            except OSError as exc:
                if exc.errno != errno.ELOOP or not self.replace_links:
                    raise
                log.warning(
                    "audit file %s was a link to %s: replaced by a file (not followed)",
                    self.path,
                    os.path.realpath(self.path),
                )
                self.path.unlink()
                fd = os.open(self.path, flags | os.O_EXCL, 0o600)
            try:
                _regular(os.fstat(fd).st_mode, self.path)
                os.fchmod(fd, 0o600)  # whatever the umask, or an older file's mode
                for record in records:
                    # One write per line: O_APPEND makes each land whole at the end of the file.
                    os.write(fd, (record.to_json() + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise AuditError(f"cannot append to the audit file {self.path}: {exc.strerror or exc}") from exc

    async def read(self, run_id: str | None = None) -> list[AuditRecord]:
        return await asyncio.to_thread(self._read, run_id)

    def _read(self, run_id: str | None) -> list[AuditRecord]:
        """Line by line, so memory holds the records, not the file; a line that is not an
        audit record (binary, not UTF-8, over ``MAX_LINE_BYTES``) is skipped with a warning."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise AuditError(f"cannot read the audit file {self.path}: {exc.strerror or exc}") from exc
        found: list[AuditRecord] = []
        skipped = 0
        try:
            _regular(os.fstat(fd).st_mode, self.path)
            with os.fdopen(fd, "rb", closefd=False) as file:
                for line in iter(lambda: file.readline(MAX_LINE_BYTES + 1), b""):
                    if len(line) > MAX_LINE_BYTES:  # the rest of it comes as further "lines"
                        skipped += 1
                        continue
                    if not line.strip():
                        continue
                    try:
                        record = AuditRecord.from_json(line.decode("utf-8"))
                    except (ValueError, TypeError):
                        skipped += 1
                        continue
                    if run_id is None or record.run == run_id:
                        found.append(record)
        except OSError as exc:
            raise AuditError(f"cannot read the audit file {self.path}: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)
        if skipped:
            log.warning("audit file %s: %d line(s) are not audit records; skipped", self.path, skipped)
        return found

    async def last_event_id(self, run_id: str) -> str | None:
        ids = [record.event_id for record in await self.read(run_id) if record.event_id]
        return ids[-1] if ids else None

    async def close(self) -> None:
        return None


_CREATE_SQL = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        id BIGSERIAL PRIMARY KEY,
        time TIMESTAMPTZ NOT NULL,
        run TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        resource TEXT NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        event_id TEXT NOT NULL DEFAULT ''
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_by_run ON {TABLE} (run, id)",
    # A door event mirrored twice (at-least-once) is one row.
    f"CREATE UNIQUE INDEX IF NOT EXISTS {TABLE}_event ON {TABLE} (run, event_id) WHERE event_id <> ''",
)
_INSERT_SQL = (
    f"INSERT INTO {TABLE} (time, run, actor, action, resource, outcome, reason, event_id) "
    "VALUES (to_timestamp(%s), %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
_SELECT_SQL = (
    "SELECT extract(epoch FROM time)::float8, run, actor, action, resource, outcome, reason, event_id "
    f"FROM {TABLE}"
)


class PostgresSink:
    """Rows of the table ``maos_audit`` (created if absent) in a PostgreSQL database."""

    def __init__(self, dsn: str, connection: Any) -> None:
        self.url = shown_url(dsn)
        self._conn = connection

    @classmethod
    async def open(cls, dsn: str) -> PostgresSink:
        try:
            import psycopg
        except ImportError as exc:
            raise AuditError(
                "a PostgreSQL audit sink needs psycopg 3: pip install 'maos[audit-postgres]'"
            ) from exc
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=10)
            for statement in _CREATE_SQL:
                await conn.execute(statement)
        except psycopg.Error as exc:
            raise AuditError(f"audit sink {shown_url(dsn)}: {_pg_reason(exc)}") from exc
        return cls(dsn, conn)

    async def write(self, records: Sequence[AuditRecord]) -> None:
        if not records:
            return
        import psycopg

        rows = [
            (r.time, r.run, r.actor, r.action, r.resource, r.outcome, r.reason, r.event_id) for r in records
        ]
        try:
            async with self._conn.transaction(), self._conn.cursor() as cursor:
                await cursor.executemany(_INSERT_SQL, rows)
        except psycopg.Error as exc:
            raise AuditError(f"cannot write to the audit sink {self.url}: {_pg_reason(exc)}") from exc

    async def read(self, run_id: str | None = None) -> list[AuditRecord]:
        import psycopg

        where, args = ("", ()) if run_id is None else (" WHERE run = %s", (run_id,))
        sql = f"{_SELECT_SQL}{where} ORDER BY id"
        try:
            cursor = await self._conn.execute(sql, args)
            rows = await cursor.fetchall()
        except psycopg.Error as exc:
            raise AuditError(f"cannot read the audit sink {self.url}: {_pg_reason(exc)}") from exc
        return [AuditRecord(*row) for row in rows]

    async def last_event_id(self, run_id: str) -> str | None:
        import psycopg

        try:
            cursor = await self._conn.execute(
                f"SELECT event_id FROM {TABLE} WHERE run = %s AND event_id <> '' ORDER BY id DESC LIMIT 1",
                (run_id,),
            )
            row = await cursor.fetchone()
        except psycopg.Error as exc:
            raise AuditError(f"cannot read the audit sink {self.url}: {_pg_reason(exc)}") from exc
        return None if row is None else str(row[0])

    async def close(self) -> None:
        await self._conn.close()


def _pg_reason(exc: Exception) -> str:
    return shown_url(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def check_audit_url(url: str) -> None:
    """Raise ``AuditError`` for a sink that cannot work whatever happens: a scheme other than
    PostgreSQL's, or a path that exists and is not a regular file."""
    if url.startswith(("postgresql://", "postgres://")):
        return
    if "://" in url:
        raise AuditError(
            f"audit sink {shown_url(url)!r} is not supported: expected postgresql://… or a file path"
        )
    try:
        found = Path(url).expanduser().stat()
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        why = getattr(exc, "strerror", None) or exc
        raise AuditError(f"audit sink {url!r} cannot be used: {why}") from None
    _regular(found.st_mode, url)


async def open_audit_sink(url: str | None, *, workdir: Path) -> AuditSink:
    """The sink named by ``url`` (else ``MAOS_AUDIT``, else ``.maos/audit.jsonl`` of
    ``workdir``): ``postgresql://…``/``postgres://…`` or a file path (relative to ``workdir``)."""
    url = url or os.environ.get(AUDIT_ENV) or None
    if url is None:
        return JsonlSink(audit_file(workdir), replace_links=True)
    if url.startswith(("postgresql://", "postgres://")):
        return await PostgresSink.open(url)
    check_audit_url(url)
    path = Path(url).expanduser()
    return JsonlSink(path if path.is_absolute() else workdir / path)


class AuditMirror:
    """Copies a run's door events from its log to a sink while the run's orchestrator runs,
    and records the operator's commands. Used as ``async with mirror.following():``."""

    def __init__(self, sink: AuditSink, store: Store, run_id: str, *, actor: str | None = None) -> None:
        self.sink = sink
        self.store = store
        self.run_id = run_id
        self.actor = actor or operator()
        self._notes: list[AuditRecord] = []
        self._stop = asyncio.Event()
        self.mirrored = 0

    def note(self, action: str, outcome: str, *, resource: str = "", reason: str = "") -> None:
        """Record a command (from a signal handler too): written with the next batch."""
        self._notes.append(
            AuditRecord(
                time.time(),
                self.run_id,
                self.actor,
                action,
                resource or f"run:{self.run_id}",
                outcome,
                reason,
            )
        )

    async def command(self, action: str, outcome: str, *, reason: str = "") -> None:
        """Record a command now."""
        self.note(action, outcome, reason=reason)
        await self._flush_notes()

    async def _flush_notes(self) -> None:
        notes, self._notes = self._notes, []
        await self.sink.write(notes)

    @asynccontextmanager
    async def following(self) -> AsyncIterator[AuditMirror]:
        """Mirror from the newest event the sink holds for the run until the block ends, then
        copy what is left of the log up to that moment."""
        self._stop.clear()
        async with asyncio.TaskGroup() as group:
            follower = group.create_task(self._follow(), name=f"audit mirror {self.run_id}")
            try:
                yield self
            finally:
                self._stop.set()
                await follower

    async def _next(self, events: EventLog, after: str, *, stopping: bool) -> list[tuple[str, Event]]:
        """The next batch of events; while the run goes on, wait for one, but not past the
        moment the block ends (a blocked read would hold the command's exit for up to
        ``FOLLOW_BLOCK_S``: measured 0.4 s at the end of every ``maos run``)."""
        if stopping:
            return await events.read(after, count=READ_BATCH)
        read = asyncio.ensure_future(events.read(after, count=READ_BATCH, block_s=FOLLOW_BLOCK_S))
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait((read, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not read.done():
                read.cancel()
                await asyncio.wait((read,))  # our own cancellation still propagates
        return [] if read.cancelled() else read.result()  # cut short: the caller reads again

    async def _follow(self) -> None:
        from maos.eventlog import EventLog

        events = EventLog(self.store, self.run_id)
        after = await self.sink.last_event_id(self.run_id) or "0"
        while True:
            stopping = self._stop.is_set()
            batch = await self._next(events, after, stopping=stopping)
            records = [r for event_id, event in batch if (r := door_record(self.run_id, event_id, event))]
            notes, self._notes = self._notes, []
            try:
                await self.sink.write([*records, *notes])
            except AuditError as exc:
                # The run goes on; the records are tried again (a later mirror of this run, on
                # resume, starts after the newest event the sink holds, so none is skipped).
                self._notes[:0] = notes
                if stopping:
                    log.error("run %s: audit records not written: %s", self.run_id, exc)  # noqa: TRY400
                    return
                log.warning("run %s: audit sink failed, trying again: %s", self.run_id, exc)
                await asyncio.sleep(RETRY_S)
                continue
            self.mirrored += len(records)
            if batch:
                after = batch[-1][0]
            elif stopping:
                return
