"""Checkpoints on a local directory: save, restore, fallback, keys, retention, the writer."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from maos import security
from maos.blobs import BlobInfo, LocalBlobStore
from maos.checkpoint import codec
from maos.checkpoint.checkpointer import Checkpointer
from maos.checkpoint.codec import AgentSession, CheckpointKind, format_id, parse_id, state_json_parts
from maos.checkpoint.writer import CheckpointWriter
from maos.errors import BlobError, CheckpointError
from maos.events import Event, fold
from maos.model import RunState
from tests.readiness import until

from .conftest import RUN_ID, run_events, state_after


class FrozenClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()
    }


def flip(path: Path, offset: int = -20) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def blob_path(blobs: LocalBlobStore, checkpoint_id: str) -> Path:
    return blobs.root / RUN_ID / f"{checkpoint_id}.ckpt"


# --------------------------------------------------------------------------- format


def test_state_json_in_pieces_equals_one_dump() -> None:
    events = run_events(40, prompt="x" * 20_000)  # several pieces of ~256 KiB
    for count in (0, 1, 25, len(events)):
        state = state_after(events, count)
        parts = state_json_parts(state)
        assert json.loads(b"".join(parts)) == json.loads(state.model_dump_json())
        assert RunState.model_validate_json(b"".join(parts)) == state
    assert len(state_json_parts(state_after(events, len(events)))) > 6


def test_ids_sort_by_time_and_parse_back() -> None:
    first = format_id(1_800_000_000_123, CheckpointKind.FULL)
    assert first == "20270115-080000-123-full"
    assert parse_id(first) == (1_800_000_000_123, CheckpointKind.FULL)
    assert format_id(1_800_000_000_124, CheckpointKind.SEGMENT) > first
    assert parse_id("20270115-080000-123-other") is None
    assert parse_id("nonsense") is None


async def test_ids_strictly_increase_also_across_checkpointers_and_clock_steps(
    blobs: LocalBlobStore, key: security.KeyInfo
) -> None:
    clock = FrozenClock()
    events = run_events(3)
    checkpointer = Checkpointer(RUN_ID, blobs, key, clock=clock)
    ids = [(await checkpointer.segment(events[n : n + 1], start_count=n)).id for n in range(3)]
    clock.now -= 3600  # the clock went back an hour; a restarted process still continues after
    later = Checkpointer(RUN_ID, blobs, key, clock=clock)
    ids.append((await later.segment(events[3:4], start_count=3)).id)
    assert ids == sorted(ids)
    assert len(set(ids)) == 4


# --------------------------------------------------------------------------- round trips


async def test_snapshot_round_trip_with_metadata_and_agent_sessions(
    blobs: LocalBlobStore, key: security.KeyInfo
) -> None:
    events = run_events(12, prompt="SECRET-PROMPT")
    state = state_after(events, 30)
    sessions = {"agent-1": AgentSession(session_id="sess-1", branch="maos/t001")}
    checkpointer = Checkpointer(RUN_ID, blobs, key)
    saved = await checkpointer.snapshot(state, sessions)

    assert saved.kind is CheckpointKind.FULL
    assert (saved.last_event_id, saved.event_count, saved.tasks) == ("30", 30, 12)
    assert saved.counts == {name: n for name, n in state.counts().items() if n}
    path = blob_path(blobs, saved.id)
    raw = path.read_bytes()
    assert saved.size == len(raw)
    assert raw.startswith(b"MAOS")
    assert b"SECRET-PROMPT" not in raw  # encrypted (and compressed)

    restored = await checkpointer.load_latest(RUN_ID)
    assert restored.state == state
    assert restored.checkpoint == saved
    assert restored.base == saved
    assert restored.segments == ()
    assert restored.agents == sessions
    assert restored.warnings == ()
    assert restored.last_event_id == "30"

    listed = await checkpointer.list(RUN_ID)
    assert [(item.id, item.kind, item.size) for item in listed] == [(saved.id, saved.kind, saved.size)]
    assert await checkpointer.inspect(RUN_ID, saved.id) == saved
    assert await checkpointer.runs() == {RUN_ID: 1}


async def test_segments_on_a_snapshot_equal_the_fold_of_the_whole_log(
    blobs: LocalBlobStore, key: security.KeyInfo
) -> None:
    events = run_events(20)
    checkpointer = Checkpointer(RUN_ID, blobs, key)
    await checkpointer.segment(events[:10], start_count=0)
    await checkpointer.snapshot(state_after(events, 25))
    # Overlapping the snapshot (written concurrently with it) and then in small steps.
    await checkpointer.segment(events[10:30], start_count=10)
    for start in range(30, len(events), 7):
        await checkpointer.segment(events[start : start + 7], start_count=start)

    restored = await checkpointer.load_latest(RUN_ID)
    assert restored.state == fold(events)
    assert restored.warnings == ()
    assert restored.base is not None
    assert restored.base.event_count == 25
    assert restored.checkpoint.event_count == len(events)


async def test_segments_alone_rebuild_a_young_run(blobs: LocalBlobStore, key: security.KeyInfo) -> None:
    events = run_events(6)
    checkpointer = Checkpointer(RUN_ID, blobs, key)
    for start in range(0, len(events), 5):
        await checkpointer.segment(events[start : start + 5], start_count=start)
    restored = await checkpointer.load_latest(RUN_ID)
    assert restored.base is None
    assert restored.state == fold(events)
    assert restored.warnings == ()


async def test_load_a_given_checkpoint_is_point_in_time(blobs: LocalBlobStore, key: security.KeyInfo) -> None:
    events = run_events(10)
    checkpointer = Checkpointer(RUN_ID, blobs, key)
    full = await checkpointer.snapshot(state_after(events, 10))
    first = await checkpointer.segment(events[10:20], start_count=10)
    await checkpointer.segment(events[20:30], start_count=20)
    await checkpointer.snapshot(state_after(events, 30))

    at_full = await checkpointer.load(RUN_ID, full.id)
    assert at_full.state == state_after(events, 10)
    at_segment = await checkpointer.load(RUN_ID, first.id)
    assert at_segment.state == state_after(events, 20)
    assert at_segment.checkpoint.id == first.id
    assert at_segment.base == full
    with pytest.raises(CheckpointError, match="no checkpoint 20200101-000000-000-full of run"):
        await checkpointer.load(RUN_ID, "20200101-000000-000-full")


async def test_no_checkpoints_is_a_clear_error(blobs: LocalBlobStore, key: security.KeyInfo) -> None:
    with pytest.raises(CheckpointError, match=f"no checkpoints of run {RUN_ID} in {blobs.root}"):
        await Checkpointer(RUN_ID, blobs, key).load_latest(RUN_ID)


# --------------------------------------------------------------------------- damage


async def test_flipped_bytes_in_the_newest_fall_back_to_the_previous(
    blobs: LocalBlobStore, key: security.KeyInfo
) -> None:
    events = run_events(12)
    checkpointer = Checkpointer(RUN_ID, blobs, key)
    older = await checkpointer.snapshot(state_after(events, 20))
    await checkpointer.segment(events[20:40], start_count=20)
    newest = await checkpointer.snapshot(state_after(events, 40))
    flip(blob_path(blobs, newest.id))
    before = files(blobs.root)

    restored = await checkpointer.load_latest(RUN_ID)
    assert restored.base == older
    assert restored.state == state_after(events, 40)  # the segment after the older snapshot
    assert restored.warnings == (
        f"checkpoint {newest.id} is corrupt (authentication failed); using {older.id} instead",
    )
    assert files(blobs.root) == before  # nothing deleted or repaired on load
    with pytest.raises(CheckpointError, match=f"checkpoint {newest.id} is corrupt"):
        await checkpointer.inspect(RUN_ID, newest.id)


async def test_truncated_and_renamed_checkpoints_are_detected(
    blobs: LocalBlobStore, key: security.KeyInfo
) -> None:
    events = run_events(8)
    checkpointer = Checkpointer(RUN_ID, blobs, key)
    good = await checkpointer.snapshot(state_after(events, 10))
    truncated = await checkpointer.snapshot(state_after(events, 20))
    path = blob_path(blobs, truncated.id)
    path.write_bytes(path.read_bytes()[:100])
    # A valid checkpoint of another run, copied in under a newer id, must not be accepted.
    other = Checkpointer("other-run", blobs, key)
    foreign = await other.snapshot(state_after(run_events(3, run_id="other-run"), 5))
    copied = blob_path(blobs, format_id(int(foreign.created_at * 1000) + 10_000, CheckpointKind.FULL))
    copied.write_bytes((blobs.root / foreign.name).read_bytes())

    restored = await checkpointer.load_latest(RUN_ID)
    assert restored.base == good
    assert len(restored.warnings) == 2
    assert all("is corrupt (authentication failed)" in warning for warning in restored.warnings)


async def test_corrupt_segment_stops_the_chain_with_a_warning(
    blobs: LocalBlobStore, key: security.KeyInfo
) -> None:
    events = run_events(12)
    checkpointer = Checkpointer(RUN_ID, blobs, key)
    await checkpointer.snapshot(state_after(events, 10))
    first = await checkpointer.segment(events[10:20], start_count=10)
    broken = await checkpointer.segment(events[20:30], start_count=20)
    await checkpointer.segment(events[30:40], start_count=30)
    flip(blob_path(blobs, broken.id), 40)

    restored = await checkpointer.load_latest(RUN_ID)
    assert restored.state == state_after(events, 20)
    assert restored.checkpoint == first
    assert restored.warnings[0] == f"checkpoint {broken.id} is corrupt (authentication failed); skipped"
    assert "do not continue the restored state" in restored.warnings[1]


async def test_wrong_key_for_every_checkpoint_is_a_clear_error_and_deletes_nothing(
    blobs: LocalBlobStore, key: security.KeyInfo
) -> None:
    events = run_events(6)
    writer = Checkpointer(RUN_ID, blobs, key, keep=2)
    await writer.snapshot(state_after(events, 10))
    await writer.segment(events[10:20], start_count=10)
    await writer.snapshot(state_after(events, 20))
    before = files(blobs.root)

    wrong = security.KeyInfo(security.generate_key(), "MAOS_KEY")
    with pytest.raises(CheckpointError) as caught:
        await Checkpointer(RUN_ID, blobs, wrong).load_latest(RUN_ID)
    message = str(caught.value)
    assert "the key does not match the checkpoints" in message
    assert f"written with key id {key.key_id}" in message
    assert f"the key in use is {wrong.key_id} from MAOS_KEY" in message
    assert "Nothing was deleted" in message
    assert files(blobs.root) == before


async def test_old_keys_read_checkpoints_written_before_a_rotation(
    blobs: LocalBlobStore, key: security.KeyInfo
) -> None:
    events = run_events(6)
    await Checkpointer(RUN_ID, blobs, key).snapshot(state_after(events, 10))
    rotated = security.KeyInfo(security.generate_key(), "MAOS_KEY", old_keys=(key.key,))
    checkpointer = Checkpointer(RUN_ID, blobs, rotated)
    await checkpointer.segment(events[10:20], start_count=10)  # new writes use the new key
    restored = await checkpointer.load_latest(RUN_ID)
    assert restored.state == state_after(events, 20)
    assert restored.warnings == ()


async def test_newest_written_with_an_unknown_key_falls_back_and_says_so(
    blobs: LocalBlobStore, key: security.KeyInfo
) -> None:
    events = run_events(6)
    older = await Checkpointer(RUN_ID, blobs, key).snapshot(state_after(events, 10))
    stranger = security.KeyInfo(security.generate_key(), "other")
    newest = await Checkpointer(RUN_ID, blobs, stranger).snapshot(state_after(events, 20))
    restored = await Checkpointer(RUN_ID, blobs, key).load_latest(RUN_ID)
    assert restored.base == older
    assert restored.warnings == (
        f"checkpoint {newest.id} was written with key id {stranger.key_id}, the key in use is "
        f"{key.key_id}; using {older.id} instead",
    )


# --------------------------------------------------------------------------- retention


async def test_retention_keeps_the_newest_n_and_the_segments_after_the_oldest_kept(
    blobs: LocalBlobStore, key: security.KeyInfo
) -> None:
    events = run_events(20)
    checkpointer = Checkpointer(RUN_ID, blobs, key, keep=3)
    written = []
    for step in range(6):
        start = step * 10
        written.append(await checkpointer.segment(events[start : start + 5], start_count=start))
        written.append(await checkpointer.snapshot(state_after(events, start + 10)))
    fulls = [item.id for item in written if item.kind is CheckpointKind.FULL]
    remaining = [item.id for item in await checkpointer.list(RUN_ID)]
    oldest_kept = fulls[-3]
    assert remaining == [item.id for item in written if item.id >= oldest_kept]
    assert [item for item in remaining if item.endswith("full")] == fulls[-3:]
    assert sum(item.endswith("segment") for item in remaining) == 2
    assert await checkpointer.prune() == []  # idempotent
    assert (await checkpointer.load_latest(RUN_ID)).state == state_after(events, 60)


async def test_retention_failure_does_not_fail_the_snapshot(
    blobs: LocalBlobStore, key: security.KeyInfo, caplog: pytest.LogCaptureFixture
) -> None:
    class NoDelete(LocalBlobStore):
        async def delete(self, name: str) -> None:
            raise BlobError(f"cannot delete blob {name}: read-only")

    checkpointer = Checkpointer(RUN_ID, NoDelete(blobs.root), key, keep=1)
    events = run_events(4)
    await checkpointer.snapshot(state_after(events, 5))
    with caplog.at_level(logging.WARNING, logger="maos.checkpoint"):
        saved = await checkpointer.snapshot(state_after(events, 10))
    assert saved.event_count == 10
    assert "retention cannot delete checkpoint" in caplog.text


# --------------------------------------------------------------------------- the writer


async def feed(
    writer: CheckpointWriter, events: list[tuple[str, Event]], state: RunState, *, pause_every: int = 5
) -> None:
    """Fold and observe events the way the orchestrator does, yielding to the loop now and then."""
    for n, (event_id, event) in enumerate(events):
        fold([(event_id, event)], state)
        writer.observe(event_id, event, state)
        if n % pause_every == 0:
            await asyncio.sleep(0)


async def test_writer_segments_completions_and_restores_the_run(
    blobs: LocalBlobStore, key: security.KeyInfo
) -> None:
    events = run_events(15)
    sessions = {"agent-1": AgentSession(session_id="s1", branch="maos/agent-1")}
    checkpointer = Checkpointer(RUN_ID, blobs, key, every_s=3600)
    state = RunState()
    async with CheckpointWriter(checkpointer, agents=lambda: sessions) as writer:
        await feed(writer, events[:40], state)
        await writer.flush()
        assert writer.durable == 40
        assert writer.saved[CheckpointKind.SEGMENT] >= 1
        assert writer.saved[CheckpointKind.FULL] == 0
        restored = await checkpointer.load_latest(RUN_ID)
        assert restored.state == state_after(events, 40)
        assert restored.agents == sessions
        await feed(writer, events[40:], state)
    # close() wrote a final full snapshot
    assert writer.saved[CheckpointKind.FULL] == 1
    assert writer.last is not None
    assert writer.last.kind is CheckpointKind.FULL
    restored = await checkpointer.load_latest(RUN_ID)
    assert restored.state == fold(events)
    assert restored.base == writer.last


async def a_new_full_snapshot(writer: CheckpointWriter) -> None:
    """Wait until the writer saved one more full snapshot than it had."""
    before = writer.saved[CheckpointKind.FULL]
    await until(lambda: writer.saved[CheckpointKind.FULL] > before, "a periodic full snapshot")


async def test_writer_takes_periodic_snapshots_and_applies_retention(
    blobs: LocalBlobStore, key: security.KeyInfo
) -> None:
    events = run_events(30)
    checkpointer = Checkpointer(RUN_ID, blobs, key, every_s=0.02, keep=2)
    state = RunState()
    async with CheckpointWriter(checkpointer, segment_on=()) as writer:
        for start in range(0, len(events), 20):
            await feed(writer, events[start : start + 20], state)
            await a_new_full_snapshot(writer)
        assert writer.saved[CheckpointKind.FULL] >= 3
    listed = await checkpointer.list(RUN_ID)
    assert sum(item.kind is CheckpointKind.FULL for item in listed) == 2
    assert (await checkpointer.load_latest(RUN_ID)).state == fold(events)


class SlowStore(LocalBlobStore):
    """A blob store whose writes take a while and can be made to fail."""

    def __init__(self, root: Path, delay_s: float = 0.0) -> None:
        super().__init__(root)
        self.delay_s = delay_s
        self.fail = False
        self.puts = 0

    async def put(self, name: str, data: bytes) -> None:
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise BlobError(f"cannot write blob {name} in {self.root}: the disk is on fire")
        self.puts += 1
        await super().put(name, data)


async def test_writer_coalesces_requests_while_a_save_runs(tmp_path: Path, key: security.KeyInfo) -> None:
    events = run_events(40)
    store = SlowStore(tmp_path / "blobs", delay_s=0.05)
    checkpointer = Checkpointer(RUN_ID, store, key, every_s=3600)
    state = RunState()
    writer = CheckpointWriter(checkpointer)
    await writer.start()
    await feed(writer, events, state, pause_every=1)
    await writer.flush()
    completions = sum(event.type in ("task_succeeded", "task_failed") for _, event in events)
    assert writer.saved[CheckpointKind.SEGMENT] < completions / 4
    assert (await checkpointer.load_latest(RUN_ID)).state == fold(events)
    await writer.close(final_snapshot=False)
    assert writer.saved[CheckpointKind.FULL] == 0


async def test_writer_survives_storage_failures_and_catches_up(
    tmp_path: Path, key: security.KeyInfo, caplog: pytest.LogCaptureFixture
) -> None:
    events = run_events(10)
    store = SlowStore(tmp_path / "blobs")
    checkpointer = Checkpointer(RUN_ID, store, key, every_s=3600)
    state = RunState()
    async with CheckpointWriter(checkpointer) as writer:
        store.fail = True
        with caplog.at_level(logging.WARNING, logger="maos.checkpoint"):
            await feed(writer, events[:30], state)
            with pytest.raises(CheckpointError, match="the disk is on fire"):
                await writer.flush()
        assert writer.failures >= 1
        assert "will retry with the next checkpoint" in caplog.text
        store.fail = False
        await feed(writer, events[30:], state)
        await writer.flush()
        assert (await checkpointer.load_latest(RUN_ID)).state == fold(events)


async def test_writer_on_a_resumed_run_snapshots_first(blobs: LocalBlobStore, key: security.KeyInfo) -> None:
    events = run_events(12)
    checkpointer = Checkpointer(RUN_ID, blobs, key, every_s=3600)
    state = state_after(events, 30)  # as a resume has it: restored and replayed from the store
    async with CheckpointWriter(checkpointer, initial=state) as writer:
        await feed(writer, events[30:45], state)
        await writer.flush()
        fulls = [item for item in await checkpointer.list(RUN_ID) if item.kind is CheckpointKind.FULL]
        assert len(fulls) == 1  # taken at start: the store's events before 30 are in no segment
        restored = await checkpointer.load_latest(RUN_ID)
        assert restored.state == state_after(events, 45)
        assert restored.warnings == ()
    assert (await checkpointer.load_latest(RUN_ID)).state == state_after(events, 45)


async def test_flush_on_a_resumed_run_waits_for_its_first_full_snapshot(
    tmp_path: Path, key: security.KeyInfo
) -> None:
    release = asyncio.Event()

    class HeldFulls(LocalBlobStore):
        async def put(self, name: str, data: bytes) -> None:
            if name.endswith("-full.ckpt"):
                await release.wait()
            await super().put(name, data)

    events = run_events(12)
    checkpointer = Checkpointer(RUN_ID, HeldFulls(tmp_path / "blobs"), key, every_s=3600)
    state = state_after(events, 30)
    async with CheckpointWriter(checkpointer, initial=state) as writer:
        try:
            await feed(writer, events[30:45], state)
            assert writer.durable == 0  # the first full snapshot is held
            flushing = asyncio.create_task(writer.flush())
            await until(lambda: writer.last is not None and writer.last.event_count == 45, "a segment of all")
            assert not flushing.done()  # segments alone cannot restore a resumed run
        finally:
            release.set()  # also for the final snapshot of the writer's close
        await flushing
        assert writer.durable >= 45
        restored = await checkpointer.load_latest(RUN_ID)
        assert restored.state == state_after(events, 45)
        assert restored.base is not None


async def test_writer_disables_itself_when_events_were_missed(
    blobs: LocalBlobStore, key: security.KeyInfo, caplog: pytest.LogCaptureFixture
) -> None:
    events = run_events(4)
    checkpointer = Checkpointer(RUN_ID, blobs, key, every_s=3600)
    state = RunState()
    async with CheckpointWriter(checkpointer) as writer:
        fold(events[:2], state)  # the hook was attached late
        with caplog.at_level(logging.ERROR, logger="maos.checkpoint"):
            writer.observe(*events[2], state)
        assert "checkpoints disabled: events were missed" in caplog.text
        with pytest.raises(CheckpointError, match="checkpoints are disabled"):
            await writer.flush()


async def test_snapshot_encoding_runs_off_the_event_loop(
    blobs: LocalBlobStore, key: security.KeyInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    original = codec.state_json_parts

    def spy(state: RunState) -> list[bytes]:
        threads.append(threading.get_ident())
        return original(state)

    monkeypatch.setattr(codec, "state_json_parts", spy)
    events = run_events(10)
    checkpointer = Checkpointer(RUN_ID, blobs, key, every_s=3600)
    await checkpointer.snapshot(state_after(events, 10))
    async with CheckpointWriter(checkpointer) as writer:
        await feed(writer, events, RunState())
    assert len(threads) == 2
    assert threading.get_ident() not in threads


async def test_listing_ignores_foreign_files(blobs: LocalBlobStore, key: security.KeyInfo) -> None:
    await blobs.put(f"{RUN_ID}/notes.txt", b"hello")
    await blobs.put(f"{RUN_ID}/sub/20261125-120000-000-full.ckpt", b"x")
    checkpointer = Checkpointer(RUN_ID, blobs, key)
    assert await checkpointer.list(RUN_ID) == []
    assert await blobs.list(f"{RUN_ID}/") == [
        BlobInfo(f"{RUN_ID}/notes.txt", 5),
        BlobInfo(f"{RUN_ID}/sub/20261125-120000-000-full.ckpt", 1),
    ]
    with pytest.raises(CheckpointError, match="invalid run id"):
        Checkpointer("../x", blobs, key)


# --------------------------------------------------------------------------- the CLI


def maos(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maos", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def cli_run(tmp_path: Path) -> tuple[Path, dict[str, str], list[str]]:
    """A working directory with checkpoints of RUN_ID in .maos/checkpoints; the env and ids."""
    key = security.generate_key()
    events = run_events(10)
    blobs = LocalBlobStore(tmp_path / ".maos" / "checkpoints")

    async def write() -> list[str]:
        checkpointer = Checkpointer(RUN_ID, blobs, security.KeyInfo(key, "test"))
        sessions = {"agent-1": AgentSession(session_id="sess-9", branch="maos/agent-1")}
        return [
            (await checkpointer.snapshot(state_after(events, 20), sessions)).id,
            (await checkpointer.segment(events[20:35], start_count=20)).id,
            (await checkpointer.snapshot(state_after(events, 35), sessions)).id,
            (await checkpointer.segment(events[35:], start_count=35)).id,
        ]

    ids = asyncio.run(write())
    return tmp_path, {"MAOS_KEY": key.hex(), "MAOS_CHECKPOINTS": ""}, ids


def test_cli_list_show_restore(cli_run: tuple[Path, dict[str, str], list[str]]) -> None:
    cwd, env, ids = cli_run
    runs = maos("checkpoint", "list", "--json", cwd=cwd, env=env)
    assert runs.returncode == 0, runs.stderr
    assert json.loads(runs.stdout) == {RUN_ID: 4}

    listed = maos("checkpoint", "list", RUN_ID, "--json", cwd=cwd, env=env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [row["id"] for row in rows] == ids
    assert [row["status"] for row in rows] == ["ok"] * 4
    assert rows[0]["tasks"] == 10
    assert rows[1]["events"] == 15
    table = maos("checkpoint", "list", RUN_ID, cwd=cwd, env=env)
    assert ids[0] in table.stdout
    assert "ok" in table.stdout

    shown = maos("checkpoint", "show", RUN_ID, ids[1], "--json", cwd=cwd, env=env)
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["checkpoint"]["id"] == ids[1]
    assert document["event_count"] == 35
    assert document["agents"] == {"agent-1": {"session_id": "sess-9", "branch": "maos/agent-1"}}
    text = maos("checkpoint", "show", RUN_ID, cwd=cwd, env=env)
    assert text.returncode == 0, text.stderr
    assert f"checkpoint {ids[3]} of run {RUN_ID} (segment)" in text.stdout
    assert "succeeded" in text.stdout

    restored = maos("checkpoint", "restore", RUN_ID, "--json", cwd=cwd, env=env)
    assert restored.returncode == 0, restored.stderr
    document = json.loads(restored.stdout)
    assert document["base"] == ids[2]
    assert document["segments"] == [ids[3]]
    assert document["warnings"] == []
    assert RunState.model_validate(document["state"]) == fold(run_events(10))


def test_cli_restore_says_when_it_falls_back(cli_run: tuple[Path, dict[str, str], list[str]]) -> None:
    cwd, env, ids = cli_run
    flip(cwd / ".maos" / "checkpoints" / RUN_ID / f"{ids[2]}.ckpt")
    restored = maos("checkpoint", "restore", RUN_ID, cwd=cwd, env=env)
    assert restored.returncode == 0, restored.stderr
    assert f"checkpoint {ids[2]} is corrupt (authentication failed); using {ids[0]} instead" in " ".join(
        restored.stderr.split()
    )
    assert f"restores from {ids[0]} + 2 segment(s)" in restored.stdout
    listed = json.loads(maos("checkpoint", "list", RUN_ID, "--json", cwd=cwd, env=env).stdout)
    assert [row["status"] for row in listed] == ["ok", "ok", "is corrupt (authentication failed)", "ok"]


def test_cli_wrong_key_fails_clearly_and_deletes_nothing(
    cli_run: tuple[Path, dict[str, str], list[str]],
) -> None:
    cwd, env, _ids = cli_run
    before = files(cwd / ".maos" / "checkpoints")
    wrong = {**env, "MAOS_KEY": security.generate_key().hex()}
    restored = maos("checkpoint", "restore", RUN_ID, cwd=cwd, env=wrong)
    assert restored.returncode == 1
    message = " ".join(restored.stderr.split())
    assert "the key does not match the checkpoints" in message
    assert "Nothing was deleted" in message
    assert files(cwd / ".maos" / "checkpoints") == before

    no_key = maos("checkpoint", "restore", RUN_ID, cwd=cwd, env={"MAOS_KEY": ""})
    assert no_key.returncode == 2  # the user's configuration (KeyConfigError)
    assert "no key: MAOS_KEY is not set" in " ".join(no_key.stderr.split())
    assert not (cwd / ".maos" / "key").exists()  # reading never creates a key

    bad = maos("checkpoint", "restore", RUN_ID, cwd=cwd, env={"MAOS_KEY": "nope"})
    assert bad.returncode == 2
    assert "MAOS_KEY is not a valid key" in " ".join(bad.stderr.split())


# --------------------------------------------------------------------------- the benchmark


async def test_bench_case_runs_and_its_docs_section_replaces_only_itself(tmp_path: Path) -> None:
    from maos.bench.checkpoint import SECTION, Case, markdown, run_case, write_section

    result = await run_case(Case("tiny", 30, 200, 2))
    assert result.tasks == 30
    assert 0 < result.stored_bytes < result.json_bytes
    assert result.save_p50_ms > 0
    doc = tmp_path / "docs" / "benchmarks.md"
    write_section(doc, markdown([result]))
    assert doc.read_text().startswith("# Benchmarks\n\n## maos bench checkpoint\n")
    doc.write_text(
        f"# Benchmarks\n\n## maos bench parallel\n\nkeep me\n\n{SECTION}\n\nold\n\n"
        "## maos bench bus\n\nme too\n"
    )
    write_section(doc, markdown([result]))
    text = doc.read_text()
    assert "keep me" in text
    assert "me too" in text
    assert "old" not in text
    assert text.count(SECTION) == 1
    assert "| tiny (2 saves) |" in text
