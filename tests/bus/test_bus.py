"""The message bus on both backends (``store`` is parametrized over SQLite and Redis).

Timing is loose on purpose: leases are 0.2 s and nothing asserts a latency, because the machine
has 2 cores shared with other jobs. That a message is not delivered again is shown by a control
message that is (``read_until_redelivered``), not by waiting a fixed time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import maos.bus
from maos.bus import Backlog, Bus, DeadLetter, Delivery, Message, Priority
from maos.errors import BusError, MessageTooLarge
from maos.store import Store, keys
from tests.conftest import REDIS_URL, redis_answers
from tests.readiness import readers_blocked

LEASE_S = 0.2


async def read_n(
    bus: Bus, agent: str, n: int, *, timeout_s: float = 20.0, ack: bool = True
) -> list[Delivery]:
    """Read until ``n`` deliveries arrived (acknowledging them), failing after ``timeout_s``."""
    got: list[Delivery] = []
    async with asyncio.timeout(timeout_s):
        while len(got) < n:
            batch = await bus.read(agent, count=100, block_s=1.0)
            if ack and batch:
                assert await bus.ack(agent, batch) == len(batch)
            got.extend(batch)
    return got


def contents(deliveries: list[Delivery]) -> list[object]:
    return [d.message.content for d in deliveries]


async def read_until_redelivered(bus: Bus, agent: str) -> list[Delivery]:
    """What ``agent`` reads (acknowledging it) until a control message, read once and left
    unacknowledged, comes back a lease later; the control itself left out. A message that was
    going to be delivered again would have been by then: its lease began before the control's,
    and a reclaim takes back every stale message of the reader at once."""
    control = await bus.send("control", agent, "control")
    others: list[Delivery] = []
    async with asyncio.timeout(20):
        while True:
            for delivery in await bus.read(agent, count=100, block_s=1.0):
                if delivery.message.id != control.id:
                    others.append(delivery)
                    await bus.ack(agent, [delivery])
                elif delivery.deliveries > 1:
                    await bus.ack(agent, [delivery])
                    return others


def test_public_api_is_locked() -> None:
    assert sorted(maos.bus.__all__) == sorted(
        ["Backlog", "Bus", "BusStats", "DeadLetter", "Delivery", "Message", "NAME_PATTERN", "Priority"]
    )


def test_message_json_uses_the_spec_field_names() -> None:
    message = Message(sender="agent-1", to="agent-2", content={"k": [1, 2]}, seq=7)
    data = json.loads(message.to_json())
    assert set(data) == {
        "id", "from", "to", "topic", "type", "priority", "content",
        "timestamp", "requires_ack", "retry_count", "seq",
    }  # fmt: skip
    assert data["from"] == "agent-1"
    assert data["priority"] == "normal"
    assert Message.from_json(message.to_json()) == message
    with pytest.raises(ValueError, match="exactly one of 'to'"):
        Message(sender="a", to="b", topic="t")


# ---------------------------------------------------------------------------- point to point


async def test_point_to_point(bus: Bus) -> None:
    sent = await bus.send("agent-1", "agent-2", {"task": "t1", "ok": True}, type="result")
    assert sent.seq == 1
    assert sent.sender == "agent-1"
    assert sent.to == "agent-2"
    assert sent.topic is None

    assert await bus.read("agent-3") == []
    [delivery] = await bus.read("agent-2")
    message = delivery.message
    assert message.id == sent.id
    assert (message.sender, message.to, message.type, message.priority) == (
        "agent-1", "agent-2", "result", Priority.NORMAL,
    )  # fmt: skip
    assert message.content == {"task": "t1", "ok": True}
    assert (message.seq, message.retry_count, message.requires_ack) == (1, 0, True)
    assert (delivery.deliveries, delivery.gap, delivery.redelivered) == (1, 0, False)
    assert delivery.receipt.startswith("inbox/normal/")

    assert await bus.ack("agent-2", [delivery]) == 1
    assert await bus.ack("agent-2", [delivery.receipt]) == 0  # already acknowledged
    assert await bus.read("agent-2") == []


async def test_blocking_read_wakes_on_send_and_times_out(bus: Bus) -> None:
    await bus.read("agent-2")  # start the reader

    async def send_later() -> None:
        await readers_blocked(bus.store)
        await bus.send("agent-1", "agent-2", "hello", priority=Priority.LOW)

    started = time.monotonic()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(send_later())
        got = await bus.read("agent-2", block_s=10)
    assert contents(got) == ["hello"]
    assert time.monotonic() - started < 5  # woken by the send, not by the timeout

    started = time.monotonic()
    assert await bus.read("agent-2", block_s=0.3) == []
    assert time.monotonic() - started >= 0.25


async def test_a_fresh_bus_reads_what_another_sent(make_bus: Callable[..., Bus]) -> None:
    """The door runs one process per command: a new Bus must find what an old one sent."""
    sender, reader = make_bus(), make_bus()
    for n in range(3):
        await sender.send("agent-1", "agent-2", n)
    got = await reader.read("agent-2", count=10)
    assert contents(got) == [0, 1, 2]
    assert [d.gap for d in got] == [0, 0, 0]
    await reader.ack("agent-2", [d.receipt for d in got])
    # And the next process carries on without a false gap.
    await sender.send("agent-1", "agent-2", 3)
    [later] = await make_bus().read("agent-2")
    assert (later.message.seq, later.gap) == (4, 0)


# ---------------------------------------------------------------------------- broadcast


async def test_broadcast_to_five_subscribers_each_gets_every_message_once(bus: Bus) -> None:
    subscribers = [f"agent-{n}" for n in range(1, 6)]
    for agent in subscribers:
        assert await bus.subscribe(agent, "news") is True
    assert await bus.subscribe("agent-1", "news") is False
    assert await bus.subscriptions("agent-1") == ["news"]

    sent = [await bus.broadcast(f"lead-{n % 2}", "news", {"n": n}) for n in range(20)]
    assert {m.topic for m in sent} == {"news"}

    async def collect(agent: str) -> list[Delivery]:
        return await read_n(bus, agent, 20)

    async with asyncio.TaskGroup() as tg:
        tasks = {agent: tg.create_task(collect(agent)) for agent in subscribers}
    for agent, task in tasks.items():
        got = task.result()
        assert sorted(d.message.id for d in got) == sorted(m.id for m in sent), agent
        assert all(d.gap == 0 and d.deliveries == 1 for d in got)
        assert all(d.receipt.startswith("topic/news/normal/") for d in got)
        assert await bus.read(agent) == [], f"{agent} got a message twice"
    assert await bus.read("agent-6") == []  # not subscribed


async def test_subscriber_gets_only_what_is_broadcast_after_subscribing(bus: Bus) -> None:
    await bus.subscribe("agent-1", "news")
    await bus.broadcast("lead", "news", "before")
    await bus.subscribe("agent-2", "news")
    await bus.broadcast("lead", "news", "after")
    assert contents(await read_n(bus, "agent-1", 2)) == ["before", "after"]
    [late] = await read_n(bus, "agent-2", 1)
    assert late.message.content == "after"
    assert late.gap == 0  # joined mid-lane: not a gap
    assert await bus.read("agent-2") == []


async def test_blocking_reader_wakes_on_broadcast_and_on_subscribe_elsewhere(
    make_bus: Callable[..., Bus],
) -> None:
    reader, other = make_bus(), make_bus()
    await reader.read("agent-1")  # reader started before the subscription, in "another process"

    async def later() -> None:
        await readers_blocked(reader.store)
        await other.subscribe("agent-1", "alerts")
        await other.broadcast("lead", "alerts", "fire", priority=Priority.HIGH)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(later())
        got = await read_n(reader, "agent-1", 1, timeout_s=10)
    assert contents(got) == ["fire"]


# ---------------------------------------------------------------------------- priority


async def test_high_priority_is_always_read_first(bus: Bus) -> None:
    order = [Priority.LOW, Priority.NORMAL, Priority.HIGH] * 3
    for n, priority in enumerate(order):
        await bus.send("agent-1", "agent-2", f"{priority.value}-{n}", priority=priority)

    first = await bus.read("agent-2", count=2)
    assert contents(first) == ["high-2", "high-5"]
    rest = await bus.read("agent-2", count=100)
    assert contents(rest) == ["high-8", "normal-1", "normal-4", "normal-7", "low-0", "low-3", "low-6"]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_traffic_keeps_priority_fifo_and_exactly_once(bus: Bus, seed: int) -> None:
    """Sends (3 senders, 3 levels, inbox and a topic) interleaved with reads of random sizes,
    each acknowledged: every message arrives once; per lane in seq order without gaps; and
    after each read nothing of a better level than the worst it returned, sent before the
    read began, is still unread (what a read holds back must not hide a higher level)."""
    rng = random.Random(seed)
    levels = list(Priority)  # reading order: high, normal, low
    level = {p.value: n for n, p in enumerate(levels)}
    await bus.subscribe("agent-2", "news")
    unread: dict[str, int] = {}  # message id -> level
    got: list[Delivery] = []
    for _ in range(60):
        for _ in range(rng.randint(0, 4)):
            priority = rng.choice(levels)
            sender = rng.choice(["agent-1", "agent-3", "agent-4"])
            if rng.random() < 0.3:
                sent = await bus.broadcast(sender, "news", len(unread), priority=priority)
            else:
                sent = await bus.send(sender, "agent-2", len(unread), priority=priority)
            unread[sent.id] = level[priority.value]
        before = dict(unread)
        batch = await bus.read("agent-2", count=rng.randint(1, 5))
        for delivery in batch:
            assert unread.pop(delivery.message.id, None) is not None, "delivered twice"
        if batch:
            worst = max(level[d.message.priority.value] for d in batch)
            hidden = [mid for mid, lv in before.items() if lv < worst and mid in unread]
            assert not hidden, f"read returned level {worst} while better ones waited"
            assert await bus.ack("agent-2", batch) == len(batch)
        got.extend(batch)
    got += await read_n(bus, "agent-2", len(unread))
    lanes: dict[tuple[str, str | None, str], list[tuple[int, int]]] = {}
    for d in got:
        m = d.message
        lanes.setdefault((m.sender, m.topic, m.priority.value), []).append((m.seq, d.gap))
    for lane, seqs in lanes.items():
        assert seqs == [(n, 0) for n in range(1, len(seqs) + 1)], lane


async def test_priority_spans_inbox_and_topics(bus: Bus) -> None:
    await bus.subscribe("agent-2", "news")
    await bus.send("agent-1", "agent-2", "direct-normal")
    await bus.broadcast("agent-1", "news", "topic-low", priority="low")
    await bus.broadcast("agent-1", "news", "topic-high", priority="high")
    await bus.send("agent-1", "agent-2", "direct-low", priority="low")
    got = await bus.read("agent-2", count=10)
    assert contents(got) == ["topic-high", "direct-normal", "direct-low", "topic-low"]


# ---------------------------------------------------------------------------- ack, redelivery


async def test_unacknowledged_message_is_redelivered_after_the_lease(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(lease_s=LEASE_S)
    sent = await bus.send("agent-1", "agent-2", "work")
    [first] = await bus.read("agent-2")
    assert first.deliveries == 1
    assert await bus.read("agent-2") == []  # pending, inside its lease

    # A blocking read wakes up by itself to redeliver.
    [again] = await read_n(bus, "agent-2", 1, ack=False, timeout_s=10)
    assert again.message.id == sent.id
    assert (again.deliveries, again.message.retry_count, again.redelivered) == (2, 1, True)
    assert again.gap == 0
    assert again.receipt == first.receipt

    assert await bus.ack("agent-2", [again]) == 1
    assert await read_until_redelivered(bus, "agent-2") == []


async def test_acknowledged_message_is_not_redelivered(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(lease_s=LEASE_S)
    await bus.send("agent-1", "agent-2", "work")
    got = await bus.read("agent-2")
    assert await bus.ack("agent-2", got) == 1
    assert await read_until_redelivered(bus, "agent-2") == []


async def test_requires_ack_false_is_acknowledged_by_the_read(
    make_bus: Callable[..., Bus], store: Store
) -> None:
    bus = make_bus(lease_s=LEASE_S)
    await bus.send("agent-1", "agent-2", "fire and forget", requires_ack=False)
    [got] = await bus.read("agent-2")
    assert got.message.requires_ack is False
    stream = keys.bus_inbox(bus.run_id, "agent-2", "normal")
    assert await store.pending(stream, "agent.agent-2") == []
    assert await read_until_redelivered(bus, "agent-2") == []
    assert await bus.ack("agent-2", [got]) == 0


async def test_dead_letter_after_max_deliveries(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(lease_s=LEASE_S, max_deliveries=3)
    sent = await bus.send("agent-1", "agent-2", "poison")
    kept = await bus.send("agent-1", "agent-2", "fine")
    seen: list[int] = []
    async with asyncio.timeout(20):
        while len(seen) < 3:
            for delivery in await bus.read("agent-2", block_s=1.0):
                if delivery.message.id == kept.id:
                    await bus.ack("agent-2", [delivery])
                else:
                    seen.append(delivery.deliveries)  # never acknowledged
    assert seen == [1, 2, 3]

    async with asyncio.timeout(20):
        while not await bus.dead_letters():
            assert await bus.read("agent-2", block_s=LEASE_S) == []
    [letter] = await bus.dead_letters()
    assert isinstance(letter, DeadLetter)
    assert letter.id
    assert letter.message is not None
    assert letter.message.id == sent.id
    assert letter.agent == "agent-2"
    assert letter.deliveries == 3
    assert "not acknowledged after 3 deliveries" in letter.reason
    assert letter.receipt.startswith("inbox/normal/")
    assert await read_until_redelivered(bus, "agent-2") == []  # never delivered again
    assert await bus.ack("agent-2", [letter.receipt]) == 0
    assert (await bus.stats()).dead_letters == 1


async def test_undecodable_record_goes_to_dead_letters_and_reader_goes_on(bus: Bus, store: Store) -> None:
    inbox = keys.bus_inbox(bus.run_id, "agent-2", "normal")
    await store.append(inbox, b"\xff\xfe not json")
    await store.append(inbox, json.dumps({"from": "agent-1", "to": "agent-2", "seq": -4}).encode())
    await bus.send("agent-1", "agent-2", "real")
    got = await bus.read("agent-2", count=10)
    assert contents(got) == ["real"]
    letters = await bus.dead_letters()
    assert len(letters) == 2
    assert all(letter.reason.startswith("undecodable record") for letter in letters)
    assert all(letter.message is None and letter.deliveries == 0 for letter in letters)
    assert letters[0].raw is not None
    assert "not json" in letters[0].raw
    assert "seq" in letters[1].reason
    assert await bus.read("agent-2") == []


# ---------------------------------------------------------------------------- size


async def test_oversized_message_is_rejected_with_a_clear_error(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(max_message_bytes=1024)
    with pytest.raises(MessageTooLarge) as info:
        await bus.send("agent-1", "agent-2", "x" * 2000)
    text = str(info.value)
    assert "agent-1" in text
    assert "'agent-2'" in text
    assert "1024 bytes" in text
    assert "max_message_bytes" in text
    size = int(text.split(" is ")[1].split(" bytes", maxsplit=1)[0])
    assert size > 2000
    with pytest.raises(MessageTooLarge, match="topic 'news'"):
        await bus.broadcast("agent-1", "news", ["y" * 2000])

    # Nothing was stored and no sequence number was used up.
    assert await bus.read("agent-2") == []
    ok = await bus.send("agent-1", "agent-2", "x" * 500)
    assert ok.seq == 1
    assert len(ok.to_json()) <= 1024


async def test_default_limit_is_64_kib(bus: Bus) -> None:
    assert bus.max_message_bytes == 65536
    await bus.send("agent-1", "agent-2", "x" * 60_000)
    with pytest.raises(MessageTooLarge, match="65536 bytes"):
        await bus.send("agent-1", "agent-2", "x" * 70_000)


# ---------------------------------------------------------------------------- order and gaps


async def test_fifo_per_pair_under_20_concurrent_senders(bus: Bus) -> None:
    senders = [f"agent-{n:02d}" for n in range(20)]
    per_sender = 25

    async def produce(sender: str) -> None:
        for n in range(per_sender):
            await bus.send(sender, "hub", {"sender": sender, "n": n})
            if n % 5 == 0:
                await asyncio.sleep(0)  # interleave with the others

    async with asyncio.TaskGroup() as tg:
        receiving = tg.create_task(read_n(bus, "hub", 20 * per_sender, timeout_s=60))
        for sender in senders:
            tg.create_task(produce(sender))
    got = receiving.result()
    assert len(got) == 20 * per_sender
    by_sender: dict[str, list[Delivery]] = {}
    for delivery in got:
        by_sender.setdefault(delivery.message.sender, []).append(delivery)
    assert sorted(by_sender) == senders
    for sender, deliveries in by_sender.items():
        assert [d.message.content for d in deliveries] == [
            {"sender": sender, "n": n} for n in range(per_sender)
        ], sender
        assert [d.message.seq for d in deliveries] == list(range(1, per_sender + 1))
        assert all(d.gap == 0 for d in deliveries)


async def test_one_sender_in_many_tasks_keeps_seq_order_in_the_stream(bus: Bus) -> None:
    async with asyncio.TaskGroup() as tg:
        for n in range(40):
            tg.create_task(bus.send("agent-1", "agent-2", n))
    got = await read_n(bus, "agent-2", 40)
    assert [d.message.seq for d in got] == list(range(1, 41))
    assert all(d.gap == 0 for d in got)


async def test_gap_is_detected(make_bus: Callable[..., Bus], store: Store) -> None:
    bus = make_bus()
    await bus.send("agent-1", "agent-2", "one")
    # Lose two messages: their sequence numbers are used but they never reach the inbox
    # (a sender that crashed between numbering and appending, or a trimmed stream).
    counter = keys.bus_seq(bus.run_id, "agent-1", "@agent-2", "normal")
    await store.set(counter, b"3")
    four = await bus.send("agent-1", "agent-2", "four")
    assert four.seq == 4
    await bus.send("agent-1", "agent-2", "five")
    got = await bus.read("agent-2", count=10)
    assert [(d.message.seq, d.gap) for d in got] == [(1, 0), (4, 2), (5, 0)]
    # Lanes are per priority and per sender: a new lane starts without a gap.
    await bus.send("agent-1", "agent-2", "urgent", priority="high")
    await bus.send("agent-3", "agent-2", "hi")
    got = await bus.read("agent-2", count=10)
    assert [(d.message.seq, d.gap) for d in got] == [(1, 0), (1, 0)]


# ---------------------------------------------------------------------------- edges


async def test_bad_input_is_refused_naming_the_field(bus: Bus) -> None:
    with pytest.raises(BusError, match="recipient 'a:b' is not valid"):
        await bus.send("agent-1", "a:b", "x")
    with pytest.raises(BusError, match="sender '' is not valid"):
        await bus.send("", "agent-2", "x")
    with pytest.raises(BusError, match="topic 'a/b' is not valid"):
        await bus.broadcast("agent-1", "a/b", "x")
    with pytest.raises(BusError, match="priority"):
        await bus.send("agent-1", "agent-2", "x", priority="urgent")
    with pytest.raises(BusError, match="type"):
        await bus.send("agent-1", "agent-2", "x", type="")
    with pytest.raises(BusError, match="content"):
        await bus.send("agent-1", "agent-2", {1, 2})  # type: ignore[arg-type]
    with pytest.raises(BusError, match="is not a message receipt"):
        await bus.ack("agent-2", ["inbox/urgent/1"])
    with pytest.raises(BusError, match="count must be >= 1"):
        await bus.read("agent-2", count=0)
    with pytest.raises(ValueError, match="lease_s"):
        Bus(bus.store, bus.run_id, lease_s=0)


async def test_stats_count_sent_messages_per_sender(bus: Bus) -> None:
    await bus.subscribe("agent-2", "news")
    await bus.send("agent-1", "agent-2", "a")
    await bus.send("agent-1", "agent-3", "b", priority="high")
    await bus.broadcast("agent-9", "news", "c")
    stats = await bus.stats()
    assert stats.sent == 3
    assert stats.by_sender == {"agent-1": 2, "agent-9": 1}
    assert stats.dead_letters == 0


async def test_two_processes_sending_on_one_lane_stay_in_order(make_bus: Callable[..., Bus]) -> None:
    """Seq and append commit together, so senders in two processes cannot interleave them."""
    first, second, reader = make_bus(), make_bus(), make_bus()
    async with asyncio.TaskGroup() as tg:
        for n in range(20):
            tg.create_task((first if n % 2 else second).send("agent-1", "agent-2", n))
    got = await read_n(reader, "agent-2", 20)
    assert [d.message.seq for d in got] == list(range(1, 21))
    assert all(d.gap == 0 for d in got)


async def test_the_seen_table_is_saved_with_the_ack(make_bus: Callable[..., Bus]) -> None:
    """A fresh reader (the CLI door: one process per command) carries on where the last
    acknowledgement left off; what was read but never acknowledged counts as unseen."""
    old = make_bus()
    for n in range(3):
        await old.send("agent-1", "agent-2", n)
    got = await old.read("agent-2", count=2)
    assert await old.ack("agent-2", got) == 2
    await old.send("agent-1", "agent-2", 3)
    fresh = make_bus()
    got = await fresh.read("agent-2", count=10)
    assert [(d.message.seq, d.gap) for d in got] == [(3, 0), (4, 0)]
    await fresh.ack("agent-2", got)
    # Read, not acknowledged: the next fresh reader sees seq 6 after a gap of one (seq 5,
    # which is still pending and comes back after the lease).
    await fresh.send("agent-1", "agent-2", 4)
    assert [d.message.seq for d in await make_bus().read("agent-2")] == [5]
    await fresh.send("agent-1", "agent-2", 5)
    assert [(d.message.seq, d.gap) for d in await make_bus().read("agent-2")] == [(6, 1)]


async def test_delivery_to_dict_is_plain_json(bus: Bus) -> None:
    await bus.send("agent-1", "agent-2", {"k": 1}, priority="high")
    [got] = await bus.read("agent-2")
    data = json.loads(json.dumps(got.to_dict()))
    assert data["message"]["from"] == "agent-1"
    assert data["message"]["priority"] == "high"
    assert data["receipt"] == got.receipt
    assert (data["deliveries"], data["gap"]) == (1, 0)


# ---------------------------------------------------------------------------- the bench


@pytest.mark.slow
def test_bench_bus_small_run_is_complete(tmp_path: Path) -> None:
    """``maos bench bus`` end to end on SQLite, small: every message arrives, counts add up."""
    from maos.bench.bus import SECTION, Settings, run_backend, section, to_json, write_section

    settings = Settings(agents=4, rate=100, seconds=0.5, processes=2, writers=4, warmup_s=0.2, drain_s=0.5)
    result = run_backend("sqlite", settings)
    assert result.latency.sent == 50
    assert result.latency.received == result.latency.sent
    assert 0 < result.latency.p50_ms <= result.latency.p99_ms <= result.latency.max_ms
    assert result.throughput.received == result.throughput.sent > 0
    assert result.cas.final_value == result.cas.increments > 0
    assert result.cas.lost_updates == 0
    assert result.floors is None  # raw Redis floors: on the redis backend only
    data = to_json(result)
    assert data["latency"]["p99_target_ms"] == 5.0
    assert data["cas"]["lost_updates"] == 0
    assert data["missed"] == result.missed
    assert data["machine"]["cpus"] == os.cpu_count()
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## maos bench bus\n\nold figures\n\n## other\n\nkept\n")
    write_section(doc, section([[result]], settings, "maos bench bus --backend sqlite"))
    text = doc.read_text()
    assert "old figures" not in text
    assert text.count(SECTION) == 1
    assert "`maos bench bus --backend sqlite`" in text
    assert f"| 1 | sqlite | {result.load_before:.1f} | {result.latency.p50_ms:.2f} ms |" in text
    assert "## other\n\nkept" in text


@pytest.mark.slow
@pytest.mark.redis
def test_bench_bus_measures_the_raw_redis_floors_in_the_same_run() -> None:
    """On Redis the bench also measures raw redis-py (XADD, pipelined XADD, a Lua increment)
    and prints MAOS's figures as a share of them; the bench's keys are deleted after."""
    from maos.bench.bus import Settings, floors_line, run_backend, to_json

    if not redis_answers():
        pytest.skip(f"no Redis server answers on {REDIS_URL}")
    settings = Settings(agents=4, rate=100, seconds=0.5, writers=4, warmup_s=0.2, drain_s=0.5)
    settings = dataclasses.replace(settings, redis_url=REDIS_URL)
    result = run_backend("redis", settings)
    assert result.floors is not None
    assert result.floors.xadd_per_s > 0
    assert result.floors.xadd_pipelined_per_s > 0
    assert result.floors.lua_cas_per_s > 0
    assert result.latency.received == result.latency.sent == 50
    assert result.cas.lost_updates == 0
    line = floors_line(result)
    assert line is not None
    assert "of pipelined XADD" in line
    data = to_json(result)
    assert data["floors"]["lua_cas_per_s"] > 0
    assert data["latency"]["p99_target_ms"] == 2.0
    assert data["max_throughput"]["target_msgs_per_s"] == 10_000


async def test_backlog_survives_the_loss_of_the_store(
    make_bus: Callable[..., Bus], store: Store, run_id: str
) -> None:
    """A checkpoint's backlog holds what each agent was owed, and only that: after the store
    lost the run, each agent reads exactly its unacknowledged messages again, in order, with
    their topics and seqs; new broadcasts reach the old subscribers."""
    from maos.purge import _eraser

    bus = make_bus(lease_s=30.0)
    for agent in ("a", "b"):
        await bus.subscribe(agent, "news")
    for n in range(4):
        await bus.send("boss", "a", f"inbox {n}")
        await bus.broadcast("boss", "news", f"news {n}", priority=Priority.HIGH)
    await bus.send("boss", "never-read", "hello")
    first = await bus.read("a", count=3)  # high first: news 0..2
    await bus.ack("a", first[:2])  # news 2 stays pending
    await bus.ack("b", await bus.read("b", count=5))  # news 0..3 and inbox? b has no inbox mail
    backlog = await bus.backlog()
    assert backlog.messages == 1 + 1 + 4 + 1  # a: news 2 (pending), news 3, inbox 0..3; never-read: 1
    pairs = {item.key: item.value for item in await store.scan(keys.run_prefix(run_id))}

    await _eraser(store).erase(run_id)  # the store loses the run
    assert await store.length(keys.bus_inbox(run_id, "a", "normal")) == 0
    for key, value in pairs.items():
        await store.set(key, value)
    fresh = make_bus(lease_s=30.0)
    assert await fresh.restore(Backlog.from_bytes(backlog.to_bytes())) == 7
    got = await read_n(fresh, "a", 6)
    assert [(d.message.content, d.message.topic, d.message.seq) for d in got] == [
        ("news 2", "news", 3),
        ("news 3", "news", 4),
        *((f"inbox {n}", None, n + 1) for n in range(4)),
    ]
    assert all(d.gap == 0 for d in got)  # the restored seen-table agrees: nothing skipped
    assert await fresh.read("b", count=10) == []  # b had acknowledged everything
    assert [d.message.content for d in await read_n(fresh, "never-read", 1)] == ["hello"]
    await fresh.broadcast("boss", "news", "after", priority=Priority.HIGH)
    for agent in ("a", "b"):
        (late,) = await read_n(fresh, agent, 1)
        assert (late.message.content, late.message.seq, late.gap) == ("after", 5, 0)


def test_a_bad_backlog_is_refused_with_the_reason() -> None:
    from maos.errors import StoreDataError

    for raw, words in [
        (b"\xff", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"a:b": {}}', "agent"),
        (b'{"a": {"urgent": []}}', "priority"),
        (b'{"a": {"high": ["%%%"]}}', "base64"),
        (b'{"a": {"high": [1]}}', "base64"),
    ]:
        with pytest.raises(StoreDataError, match=words):
            Backlog.from_bytes(raw)
