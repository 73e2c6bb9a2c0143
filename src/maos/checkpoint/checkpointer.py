"""Writing, listing, pruning and restoring one run's checkpoints in a blob store.

Two kinds (ARCHITECTURE §3):

- a **full** snapshot: the whole ``RunState`` (which carries the id and the count of the last
  event it covers), every ``every_s`` seconds;
- a **segment**: the events since the previous checkpoint, at each task completion. Cheap, so
  a completion never waits on a full snapshot.

Both also record each agent's session id and workspace branch (``AgentSession``). Their
names, ids and format are ``maos.checkpoint.codec``'s.

Restore = the newest full snapshot that decrypts and validates, then the segments after it.
Segments chain by ``RunState.event_count`` (event ids are opaque to MAOS): a segment
records the count before its first event (``start_count``), so overlaps are skipped and a
gap stops the chain with a warning. A corrupt or foreign-key checkpoint is skipped with a
warning naming it and the one used instead; if there are no full snapshots yet (a run younger
than ``every_s``), segments from the start of the run rebuild the state. Loading never
deletes anything.

A ``Checkpointer`` hands out strictly increasing ids, continuing after those already stored
(``prepare``). Ids are taken at the moment the state or events are captured, so every
segment older than a full snapshot is covered by it.

Retention (after each full snapshot written): keep the newest ``keep`` full snapshots and the
segments after the oldest kept one; delete the rest.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from maos import security
from maos.blobs import BlobStore
from maos.checkpoint.codec import (
    SUFFIX,
    ZSTD_LEVEL,
    AgentSession,
    Checkpoint,
    CheckpointHeader,
    CheckpointKind,
    Contents,
    Opened,
    Unusable,
    check_run_id,
    format_id,
    full_contents,
    parse_id,
    seal,
    segment_contents,
    unseal,
)
from maos.errors import BlobError, CheckpointError, MaosError, NoUsableCheckpoint
from maos.events import Event, fold
from maos.model import RunState

__all__ = ["DEFAULT_EVERY_S", "DEFAULT_KEEP", "Checkpointer", "Restored"]

log = logging.getLogger("maos.checkpoint.checkpointer")

DEFAULT_EVERY_S = 30.0
DEFAULT_KEEP = 10


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
        self.run_id = check_run_id(run_id)
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
        checkpoint = await self.save(
            checkpoint_id,
            lambda: full_contents(self.run_id, checkpoint_id, state, created_at, sessions, store),
        )
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
        created_at = self.clock()
        captured, sessions = list(events), dict(agents or {})
        return await self.save(
            checkpoint_id,
            lambda: segment_contents(self.run_id, checkpoint_id, created_at, captured, start_count, sessions),
        )

    async def save(self, checkpoint_id: str, build: Callable[[], Contents]) -> Checkpoint:
        """Encode on a worker thread (``build`` runs there too), then store. Low level: the
        id must come from ``new_id``; ``snapshot`` and ``segment`` are the usual way in."""
        key = self._require_key()
        parsed = parse_id(checkpoint_id)
        if parsed is None:
            raise CheckpointError(f"invalid checkpoint id {checkpoint_id!r}")
        started = time.perf_counter()

        def encode() -> tuple[CheckpointHeader, bytes]:
            contents = build()
            return contents[0], seal(key.key, contents, self.level)

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
        prefix = f"{check_run_id(run_id)}/"
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

    async def _read(self, info: Checkpoint, *, payload: bool = True) -> Opened:
        key = self._require_key()
        try:
            blob = await self.blobs.get(info.name)
        except BlobError as exc:
            raise Unusable(info.id, f"cannot be read ({exc})") from exc
        return await asyncio.to_thread(unseal, blob, info, key, payload=payload)

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

        skipped: builtins.list[Unusable] = []
        base: Opened | None = None
        for info in reversed([info for info in infos if info.kind is CheckpointKind.FULL]):
            try:
                base = await self._read(info)
                break
            except Unusable as exc:
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
        unusable_segments: builtins.list[Unusable] = []
        for position, info in enumerate(later):
            try:
                segment = await self._read(info)
            except Unusable as exc:
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
            except Unusable:
                continue
            if loaded.store is not None:
                return loaded.store
        return None

    def _nothing_usable(
        self, run_id: str, problems: builtins.list[Unusable], infos: builtins.list[Checkpoint]
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
        return NoUsableCheckpoint(
            f"no usable checkpoint of run {run_id} in {self.blobs.url}: {detail}. Nothing was deleted."
        )
