"""The audit sink outside the store: a real run's door actions, a refusal and the operator's
commands reach it (JSONL by default, PostgreSQL on 127.0.0.1:5432 when given), and
``maos audit RUN`` shows them."""

from __future__ import annotations

import json
import os
import socket
import stat
import uuid
from pathlib import Path

import pytest

from maos.audit import AuditError, AuditRecord, JsonlSink, door_record, open_audit_sink, shown_url
from maos.events import DoorRefused, MessageSent, StateWritten, TaskSucceeded

from .conftest import maos, real_run

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


def actions(records: list[AuditRecord]) -> list[tuple[str, str, str, str]]:
    return [(r.actor, r.action, r.resource, r.outcome) for r in records]


EXPECTED = [
    ("agent-1", "state.write", "state:shared/x", "ok"),
    ("agent-1", "message.send", "agent:task@b", "ok"),
    ("agent-9 (token of agent-1)", "door", "task:a", "refused"),
    ("agent-2", "message.read", "inbox:agent-2", "ok"),
    ("agent-2", "result.publish", "result:b", "ok"),
]


def assert_trail(records: list[AuditRecord], run_id: str) -> None:
    assert all(record.run == run_id for record in records)
    seen = actions(records)
    for expected in EXPECTED:
        assert expected in seen, (expected, seen)
    operator = [r for r in records if r.action == "run"]
    assert [r.outcome for r in operator] == ["started", "succeeded"]
    assert "@" in operator[0].actor
    door_ids = [r.event_id for r in records if r.event_id]
    assert len(door_ids) == len(set(door_ids))  # each door event once


async def test_jsonl_sink_by_default_holds_a_real_runs_door_actions(repo: Path) -> None:
    run_id = real_run(repo)
    path = repo / ".maos" / "audit.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for line in path.read_text().splitlines():
        assert set(json.loads(line)) == {
            "time", "run", "actor", "action", "resource", "outcome", "reason", "event_id"
        }  # fmt: skip
    assert_trail(await JsonlSink(path).read(run_id), run_id)
    shown = maos(repo, "audit", run_id[:15]).stdout
    assert "state:shared/x" in shown
    assert "refused" in shown
    assert "token of agent-1" in shown
    as_json = json.loads(maos(repo, "audit", run_id, "--json").stdout)
    assert as_json["run"] == run_id
    assert len(as_json["records"]) >= len(EXPECTED) + 2


@pytest.mark.skipif(not postgres_answers(), reason="no PostgreSQL on 127.0.0.1:5432")
async def test_postgres_sink_gets_a_real_runs_door_actions_and_creates_its_table(repo: Path) -> None:
    import psycopg

    table = "maos_audit"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    run_id = real_run(repo, "--audit", PG_DSN)
    assert not (repo / ".maos" / "audit.jsonl").exists()  # the sink given, not the default
    with psycopg.connect(PG_DSN) as conn:
        rows = conn.execute(
            f"SELECT actor, action, resource, outcome FROM {table} WHERE run = %s ORDER BY id", (run_id,)
        ).fetchall()
    assert [tuple(row) for row in rows if row[1] != "run"] == [
        *EXPECTED[:3],
        ("agent-2", "message.read", "inbox:agent-2", "ok"),
        ("agent-2", "message.ack", "inbox:agent-2", "ok"),
        EXPECTED[4],
    ]
    sink = await open_audit_sink(PG_DSN, workdir=repo)
    try:
        records = await sink.read(run_id)
        assert_trail(records, run_id)
        # Mirroring again (a resume) writes no second copy of a door event.
        await sink.write([r for r in records if r.event_id])
        assert len(await sink.read(run_id)) == len(records)
        assert await sink.last_event_id(run_id) == records[-2].event_id
    finally:
        await sink.close()
    shown = maos(repo, "audit", run_id, "--audit", PG_DSN).stdout
    assert "result:b" in shown
    assert "refused" in shown


def test_a_dsn_password_is_never_shown() -> None:
    assert shown_url("postgresql://u:s3cret@h/db") == "postgresql://u:***@h/db"
    assert "s3cret" not in shown_url("host=h password=s3cret dbname=x")


def test_door_events_map_to_records_and_others_to_none() -> None:
    refused = DoorRefused(claimed_agent="a", task="t", reason="bad token", via="mcp", token_owner="b")
    record = door_record("r", "7", refused)
    assert record is not None
    assert (record.actor, record.outcome, record.event_id) == ("a (token of b)", "refused", "7")
    assert "via mcp" in record.reason
    wrote = door_record("r", "1", StateWritten(agent_id="a", key="k", version=1, size_bytes=1))
    assert wrote is not None
    assert wrote.resource == "state:k"
    sent = door_record("r", "2", MessageSent(agent_id="a", message_id="m", topic="news", seq=1, size_bytes=1))
    assert sent is not None
    assert sent.resource == "topic:news"
    assert door_record("r", "3", TaskSucceeded(task_id="t", agent_id="a", attempt=1, duration_s=1)) is None


async def test_jsonl_sink_skips_a_bad_line_and_creates_the_file_0600(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "audit.jsonl"
    sink = JsonlSink(path)
    run = uuid.uuid4().hex
    await sink.write([AuditRecord(1.0, run, "me@h", "purge", f"run:{run}", "ok", event_id="")])
    with path.open("a") as handle:
        handle.write("not json\n")
    await sink.write([AuditRecord(2.0, run, "a", "state.write", "state:k", "ok", event_id="9")])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [r.action for r in await sink.read(run)] == ["purge", "state.write"]
    assert await sink.last_event_id(run) == "9"


async def test_jsonl_sink_reads_past_binary_and_huge_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlSink(path)
    await sink.write([AuditRecord(1.0, "r", "a", "state.write", "state:k", "ok", event_id="1")])
    with path.open("ab") as handle:  # what another program, or a bad disk, may leave
        handle.write(b"\xff\xfe\x00binary\n" + b"{" * (3 << 20) + b"\n")
    await sink.write([AuditRecord(2.0, "r", "a", "msg.send", "agent:b", "ok", event_id="2")])
    assert [r.event_id for r in await sink.read("r")] == ["1", "2"]


async def test_a_link_planted_at_the_audit_file_is_replaced_not_written_through(tmp_path: Path) -> None:
    """An agent (it works beside .maos) replaced the audit file by a link: every later record
    went to the file it named, which was made 0600."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    os.chmod(victim, 0o644)
    path = tmp_path / ".maos" / "audit.jsonl"
    path.parent.mkdir()
    path.symlink_to(victim)
    sink = await open_audit_sink(None, workdir=tmp_path)  # the default file
    await sink.write([AuditRecord(1.0, "r", "a", "state.write", "state:k", "ok", event_id="1")])
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert not path.is_symlink()
    assert [r.event_id for r in await sink.read("r")] == ["1"]
    # a path the operator named is used as named, a link included
    shared = tmp_path / "shared.jsonl"
    mine = tmp_path / "my-audit.jsonl"
    mine.symlink_to(shared)
    named = await open_audit_sink(str(mine), workdir=tmp_path)
    await named.write([AuditRecord(2.0, "r", "a", "state.write", "state:k", "ok", event_id="2")])
    assert mine.is_symlink()
    assert [r.event_id for r in await JsonlSink(shared).read("r")] == ["2"]


async def test_a_forged_line_of_the_wrong_shape_is_skipped(tmp_path: Path) -> None:
    """A line whose time was text made `maos audit` fail for good (exit 70)."""
    path = tmp_path / "audit.jsonl"
    sink = JsonlSink(path)
    await sink.write([AuditRecord(1.0, "r", "a", "state.write", "state:k", "ok", event_id="1")])
    with path.open("a") as handle:
        for forged in (
            {"time": "now", "run": "r"},
            {"time": 1e999, "run": "r"},
            {"time": 2, "run": ["r"]},
            [1],
        ):
            handle.write(json.dumps(forged) + "\n")
    assert [r.event_id for r in await sink.read("r")] == ["1"]


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
async def test_an_audit_file_that_is_no_regular_file_is_an_error_not_a_hang(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "audit.jsonl"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: a plain open for reading would block for ever
    elif kind == "folder":
        path.mkdir()
    else:
        path = Path("/dev/zero")  # reading it all would never end
    sink = JsonlSink(path)
    with pytest.raises(AuditError, match=r"not a regular file|is a directory"):
        await sink.read()
    if kind != "device":
        with pytest.raises(AuditError):
            await sink.write([AuditRecord(1.0, "r", "a", "state.write", "state:k", "ok")])


async def test_the_mirror_ends_with_its_block_and_copies_what_came_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blocked read of the log does not hold the block's end (it would delay every
    ``maos run``'s exit by up to ``FOLLOW_BLOCK_S``), and every event appended is copied."""
    import asyncio

    from maos import audit
    from maos.audit import AuditMirror
    from maos.eventlog import EventLog
    from maos.store import open_store

    monkeypatch.setattr(audit, "FOLLOW_BLOCK_S", 3600.0)  # a read that never returns by itself
    store = await open_store(f"sqlite:///{tmp_path / 'maos.db'}")
    try:
        run = uuid.uuid4().hex
        sink = JsonlSink(tmp_path / "audit.jsonl")
        mirror = AuditMirror(sink, store, run)
        log = EventLog(store, run)
        async with asyncio.timeout(60):  # a regression hangs for an hour, not a minute
            async with mirror.following():
                await log.append(StateWritten(agent_id="agent-1", key="k", version=1, size_bytes=1))
                await asyncio.sleep(0.2)  # the follower copies it, then blocks on the log
                await log.append(StateWritten(agent_id="agent-1", key="last", version=1, size_bytes=1))
                await asyncio.sleep(0.2)  # blocked again, with nothing new to come
        assert [r.resource for r in await sink.read(run)] == ["state:k", "state:last"]
    finally:
        await store.close()
