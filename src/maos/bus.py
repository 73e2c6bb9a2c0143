"""The message bus between agents, written once on the ``Store`` protocol (SQLite and Redis).

What it does: a per-agent inbox, broadcast topics (each subscriber receives each message
once), three priority levels (high is always read first), acknowledgements, redelivery of
messages left unacknowledged for longer than the lease, a dead-letter stream after
``max_deliveries`` deliveries, a maximum message size, and per-sender sequence numbers so a
receiver sees FIFO order per sender → receiver pair and can detect a gap.

API (everything else in this module is internal)::

    bus = Bus(store, run_id, *, max_message_bytes=65536, lease_s=15.0, max_deliveries=5,
              max_stream_len=100_000)
    await bus.send(sender, to, content, *, type="text", priority=Priority.NORMAL,
                   requires_ack=True) -> Message
    await bus.broadcast(sender, topic, content, *, type=..., priority=..., requires_ack=...)
        -> Message
    await bus.subscribe(agent_id, topic) -> bool          # True if newly subscribed
    await bus.read(agent_id, *, count=10, block_s=None) -> list[Delivery]
    await bus.ack(agent_id, deliveries_or_receipts) -> int
    await bus.dead_letters(*, after="0", count=100) -> list[DeadLetter]
    await bus.stats() -> BusStats                          # for the dashboard

``Message`` follows the spec: id, from (``sender`` in Python), to (an agent) or topic (a
broadcast), type, priority, content (any JSON value), timestamp, requires_ack, retry_count,
plus ``seq``. ``Delivery`` is one message as read: the message (``retry_count`` = deliveries
- 1), its ``receipt`` (a string that ``ack`` takes, so a separate process such as
``maos msg ack`` can acknowledge it), the delivery count and ``gap``. Errors: ``BusError``
for bad input (names the field), ``MessageTooLarge`` (names the size, the limit and the
recipient); store failures arrive as ``StoreError``.

Layout (``maos.store.keys``; every key of a run under its ``{run:<id>}`` hash tag):

- ``bus:inbox:<agent>:<priority>`` — 3 streams per agent, one consumer group ``inbox``;
- ``bus:topic:<topic>:<priority>`` — 3 streams per topic, one consumer group per subscriber
  (``sub.<agent>``), created by ``subscribe`` at ``$``: a subscriber receives the messages
  broadcast after it subscribed, never older ones;
- ``bus:bell:<agent>`` — the agent's doorbell stream (below);
- ``bus:dead`` — the run's dead letters (``DeadLetter`` JSON records);
- ``bus:seq:<sender>:<@agent|#topic>:<priority>`` — a sender's sequence counter per lane;
- ``bus:seen:<agent>`` — the highest seq an agent has seen per lane (one JSON object);
- ``bus:subscribers:<topic>`` and ``bus:subscriptions:<agent>`` — JSON lists.

Design decisions:

- **Priorities.** Streams have none, so there is one stream per level, read high → normal →
  low (inbox before topics within a level); a read takes lower levels only while ``count``
  leaves room.
- **Blocking across streams.** A store read blocks on one stream only, so every send also
  appends a tiny record (``inbox/<priority>`` or ``topic/<topic>/<priority>``) to the
  recipient's doorbell after the message itself; broadcasts ring every subscriber's bell.
  A reader keeps a cursor on its bell and a set of streams that may hold new messages
  ("dirty"). ``read`` reads the dirty streams (``read_group``) in priority order; if that
  gave nothing, it reads the bell past the cursor, blocking up to ``block_s`` (a bell that
  rang meanwhile returns at once), marks the streams named there dirty, and goes round
  again. The cursor moves only past bell records already seen, so a message that lands
  between the stream reads and the wait still wakes the reader: no lost wake-ups. A stream
  is clean again once ``read_group`` returned fewer records than asked. The periodic reclaim
  pass (below) also reads every stream, which bounds the delay of a message whose bell was
  lost (trimmed away) to one reclaim interval. One message costs the sender 3 round trips
  (seq, append, bell) and a waiting reader 3 (bell, read_group, seen) plus its ack.
- **Sequence numbers** count per *lane* = (sender, recipient or topic, priority): priorities
  overtake each other on purpose, so FIFO is promised within a level (with the default level,
  per pair). A lane's counter is a kv key incremented by compare-and-set (the last version
  is cached, so a send usually costs one ``cas``). Seq assignment and append happen under a
  per-lane ``asyncio.Lock`` and under ``asyncio.shield``, so messages of one lane reach the
  stream in seq order even when a sender sends from many tasks, and a cancelled send cannot
  leave a gap. The receiver keeps the highest seq it saw per lane (persisted in kv after
  each read, so a fresh process, e.g. the CLI door, carries on) and reports
  ``Delivery.gap`` = how many seqs were skipped before this message. A repeat (a
  redelivery) has gap 0. For topics the first message a subscriber sees from a lane sets the
  baseline (it subscribed mid-stream). Two *processes* sending on one lane at once are not
  ordered with each other: the receiver then sees a gap and a late message.
- **Acknowledgement and redelivery.** Records stay pending in the reader's consumer group
  until ``ack``; a message with ``requires_ack=False`` is acknowledged by the read itself
  (at most once). Every ``lease_s / 8`` to ``lease_s / 4`` (jittered; at most 5 s) a read
  reclaims entries idle longer than ``lease_s`` (``claim_stale``) and delivers them again,
  before new ones of the same stream; a blocked read wakes up for this.
- **Dead letters.** An entry claimed for delivery number ``max_deliveries + 1`` is not
  delivered: it is appended to ``bus:dead`` with the reason, then acknowledged. So is a
  record that does not decode as a ``Message`` — a bad record never crashes a reader.
- **Size.** The encoded JSON of a message (with the largest possible seq) must not exceed
  ``max_message_bytes``; the check happens before a seq is assigned.
- **One reader per agent per Bus.** Reads of one agent on one ``Bus`` are serialized by a
  lock; readers of one agent in several processes are safe (the consumer group hands each
  entry to one of them) but share the seen-table by merge.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from maos.errors import BusError, MessageTooLarge, StoreDataError
from maos.store import keys
from maos.store.base import Entry, Store

__all__ = [
    "NAME_PATTERN",
    "Bus",
    "BusStats",
    "DeadLetter",
    "Delivery",
    "Message",
    "Priority",
]

log = logging.getLogger("maos.bus")

NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$"
"""Agent ids and topic names: no ``:`` or ``/``, which separate parts of keys and receipts."""
_NAME_RE: Final = re.compile(NAME_PATTERN)

INBOX_GROUP: Final = "inbox"
BELL_MAXLEN: Final = 1000
BELL_READ_COUNT: Final = 1000
RAW_KEEP_BYTES: Final = 4096
"""How much of an undecodable record its dead letter keeps."""
_SEQ_PLACEHOLDER: Final = 2**63 - 1  # the longest seq, so the size check is an upper bound
_SEQ_CAS_ATTEMPTS: Final = 100


class Priority(enum.StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


PRIORITIES: Final = (Priority.HIGH, Priority.NORMAL, Priority.LOW)
"""Reading order."""
_LEVELS: Final = frozenset(p.value for p in PRIORITIES)


class Message(BaseModel):
    """One message, as stored and as delivered. JSON uses ``from`` for ``sender``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=64)
    sender: str = Field(
        pattern=NAME_PATTERN, validation_alias=AliasChoices("from", "sender"), serialization_alias="from"
    )
    to: str | None = Field(default=None, pattern=NAME_PATTERN, description="recipient agent")
    topic: str | None = Field(default=None, pattern=NAME_PATTERN, description="broadcast topic")
    type: str = Field(default="text", min_length=1, max_length=64, description="e.g. text, request, result")
    priority: Priority = Priority.NORMAL
    content: JsonValue = None
    timestamp: float = Field(default_factory=time.time)
    requires_ack: bool = True
    retry_count: int = Field(default=0, ge=0, description="deliveries before this one")
    seq: int = Field(default=0, ge=0, description="per lane: sender, recipient or topic, priority")

    @model_validator(mode="after")
    def _one_destination(self) -> Message:
        if (self.to is None) == (self.topic is None):
            raise ValueError("a message has exactly one of 'to' (an agent) and 'topic' (a broadcast)")
        return self

    @property
    def broadcast(self) -> bool:
        return self.topic is not None

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Message:
        return cls.model_validate_json(data)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as read by one agent.

    ``receipt`` identifies the stream entry (``inbox/<priority>/<id>`` or
    ``topic/<topic>/<priority>/<id>``); pass it (or the delivery) to ``Bus.ack``.
    ``deliveries`` is 1 on first delivery. ``gap`` counts the sequence numbers of this lane
    that this agent never saw before this message (0: in order, or a repeat).
    """

    message: Message
    receipt: str
    deliveries: int
    gap: int = 0

    @property
    def redelivered(self) -> bool:
        return self.deliveries > 1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (the message with ``from``), e.g. for ``--json`` output."""
        return {
            "message": self.message.model_dump(mode="json", by_alias=True),
            "receipt": self.receipt,
            "deliveries": self.deliveries,
            "gap": self.gap,
        }


class DeadLetter(BaseModel):
    """A message taken out of circulation, with the reason. ``id`` is its dead-letter id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = ""
    reason: str
    agent: str = Field(description="the reader it was meant for")
    receipt: str = Field(description="where it was: inbox/<priority>/<id> or topic/<topic>/<priority>/<id>")
    deliveries: int = Field(description="times it was delivered to the agent (0: never decodable)")
    message: Message | None = None
    raw: str | None = Field(default=None, description="an undecodable record, as text (truncated)")
    ts: float = Field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class BusStats:
    """Totals for the dashboard, computed from the senders' sequence counters."""

    sent: int
    by_sender: dict[str, int]
    dead_letters: int


# ---------------------------------------------------------------------------- internals


@dataclass(frozen=True, slots=True)
class _Source:
    """One stream an agent reads, through one consumer group."""

    stream: str
    group: str
    receipt_prefix: str  # "inbox/high/" or "topic/news/high/"
    priority: Priority
    topic: str | None


@dataclass(eq=False)
class _Reader:
    """What one ``Bus`` knows about one agent's reading, between ``read`` calls."""

    agent: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ready: bool = False
    topics: list[str] = field(default_factory=list)
    bell_after: str = "0"
    dirty: set[str] = field(default_factory=set)  # stream names that may hold new records
    seen: dict[str, int] = field(default_factory=dict)  # lane -> highest seq seen
    seen_version: int = 0
    seen_changed: bool = False
    reclaim_at: float = 0.0  # loop time of the next claim_stale pass


def _check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or _NAME_RE.fullmatch(value) is None:
        raise BusError(
            f"{what} {value!r} is not valid: expected 1-128 characters of letters, digits and "
            "'_.@-', starting with a letter or digit"
        )


def _lane(message: Message) -> str:
    """The receiver-side lane name of a message (its reader is implied)."""
    if message.topic is not None:
        return f"{message.sender}#{message.topic}/{message.priority.value}"
    return f"{message.sender}/{message.priority.value}"


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}" for err in exc.errors()
    )


class Bus:
    """The message bus of one run. Cheap to create; does not own (or close) the store."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        *,
        max_message_bytes: int = 65536,
        lease_s: float = 15.0,
        max_deliveries: int = 5,
        max_stream_len: int | None = 100_000,
    ) -> None:
        if max_message_bytes < 256:
            raise ValueError(f"max_message_bytes must be at least 256, not {max_message_bytes}")
        if not lease_s > 0:
            raise ValueError(f"lease_s must be > 0, not {lease_s}")
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be >= 1, not {max_deliveries}")
        self.store = store
        self.run_id = run_id
        self.max_message_bytes = max_message_bytes
        self.lease_s = lease_s
        self.max_deliveries = max_deliveries
        self.max_stream_len = max_stream_len
        self.reclaim_interval_s = min(lease_s / 4, 5.0)
        self._lane_locks: dict[str, asyncio.Lock] = {}
        self._seq_cache: dict[str, tuple[int, int]] = {}  # seq key -> (value, version)
        self._readers: dict[str, _Reader] = {}

    def __repr__(self) -> str:
        return f"Bus(run_id={self.run_id!r}, store={self.store.url!r})"

    # ------------------------------------------------------------------ sending

    async def send(
        self,
        sender: str,
        to: str,
        content: JsonValue,
        *,
        type: str = "text",
        priority: Priority | str = Priority.NORMAL,
        requires_ack: bool = True,
    ) -> Message:
        """Put a message in ``to``'s inbox; return it as stored (with its ``seq``)."""
        _check_name("recipient", to)
        message = self._build(
            sender, content, to=to, topic=None, type=type, priority=priority, requires_ack=requires_ack
        )
        stream = keys.bus_inbox(self.run_id, to, message.priority.value)
        seq_key = keys.bus_seq(self.run_id, message.sender, f"@{to}", message.priority.value)
        marker = f"inbox/{message.priority.value}".encode()
        return await asyncio.shield(self._publish(message, stream, seq_key, marker, fixed_bells=[to]))

    async def broadcast(
        self,
        sender: str,
        topic: str,
        content: JsonValue,
        *,
        type: str = "text",
        priority: Priority | str = Priority.NORMAL,
        requires_ack: bool = True,
    ) -> Message:
        """Publish a message on ``topic``: every current subscriber receives it once."""
        _check_name("topic", topic)
        message = self._build(
            sender, content, to=None, topic=topic, type=type, priority=priority, requires_ack=requires_ack
        )
        stream = keys.bus_topic(self.run_id, topic, message.priority.value)
        seq_key = keys.bus_seq(self.run_id, message.sender, f"#{topic}", message.priority.value)
        marker = f"topic/{topic}/{message.priority.value}".encode()
        return await asyncio.shield(self._publish(message, stream, seq_key, marker, fixed_bells=None))

    def _build(
        self,
        sender: str,
        content: JsonValue,
        *,
        to: str | None,
        topic: str | None,
        type: str,
        priority: Priority | str,
        requires_ack: bool,
    ) -> Message:
        _check_name("sender", sender)
        try:
            message = Message(
                sender=sender,
                to=to,
                topic=topic,
                type=type,
                priority=Priority(priority),
                content=content,
                requires_ack=requires_ack,
                seq=_SEQ_PLACEHOLDER,
            )
        except ValidationError as exc:
            raise BusError(f"invalid message from {sender!r}: {_errors(exc)}") from exc
        except ValueError as exc:  # Priority("urgent")
            raise BusError(
                f"invalid message from {sender!r}: priority: {exc}; expected one of "
                + ", ".join(p.value for p in PRIORITIES)
            ) from exc
        size = len(message.to_json())
        if size > self.max_message_bytes:
            recipient = f"agent {to!r}" if to is not None else f"topic {topic!r}"
            raise MessageTooLarge(
                f"message from {sender!r} to {recipient} is {size} bytes encoded, above the bus "
                f"limit of {self.max_message_bytes} bytes (max_message_bytes); send a reference "
                "(a file path or a state key) instead of the payload"
            )
        return message

    async def _publish(
        self, message: Message, stream: str, seq_key: str, marker: bytes, fixed_bells: list[str] | None
    ) -> Message:
        lock = self._lane_locks.get(seq_key)
        if lock is None:
            lock = self._lane_locks[seq_key] = asyncio.Lock()
        async with lock:  # seq order == stream order within a lane
            seq = await self._next_seq(seq_key)
            message = message.model_copy(update={"seq": seq, "timestamp": time.time()})
            await self.store.append(stream, message.to_json(), maxlen=self.max_stream_len)
        if fixed_bells is not None:
            bells = fixed_bells
        else:  # read after the append: see subscribe() for why no subscriber is missed
            assert message.topic is not None
            bells = await self._get_list(keys.bus_subscribers(self.run_id, message.topic))
        await self._ring(bells, marker)
        return message

    async def _next_seq(self, key: str) -> int:
        """Increment the lane counter ``key`` by compare-and-set; return the new value."""
        cached = self._seq_cache.get(key)
        if cached is not None:
            value, version = cached
            result = await self.store.cas(key, version, str(value + 1).encode())
            if result.ok:
                self._seq_cache[key] = (value + 1, result.version)
                return value + 1
        delay_s = 0.001
        for _ in range(_SEQ_CAS_ATTEMPTS):
            current = await self.store.get(key)
            if current is None:
                value, version = 0, 0
            else:
                try:
                    value, version = int(current.value), current.version
                except ValueError as exc:
                    raise StoreDataError(
                        f"sequence counter {key!r} holds {current.value[:40]!r}, not a number"
                    ) from exc
            result = await self.store.cas(key, version, str(value + 1).encode())
            if result.ok:
                self._seq_cache[key] = (value + 1, result.version)
                return value + 1
            # Another process sends on this lane too: back off with jitter.
            await asyncio.sleep(random.uniform(0, delay_s))
            delay_s = min(delay_s * 2, 0.05)
        raise BusError(
            f"could not assign a sequence number on {key!r}: {_SEQ_CAS_ATTEMPTS} conflicts in a row"
        )

    async def _ring(self, agents: list[str], marker: bytes) -> None:
        if len(agents) == 1:
            await self.store.append(keys.bus_bell(self.run_id, agents[0]), marker, maxlen=BELL_MAXLEN)
            return
        # Bounded fan-out: at most 32 appends in flight.
        for start in range(0, len(agents), 32):
            await asyncio.gather(
                *(
                    self.store.append(keys.bus_bell(self.run_id, agent), marker, maxlen=BELL_MAXLEN)
                    for agent in agents[start : start + 32]
                )
            )

    # ------------------------------------------------------------------ subscriptions

    async def subscribe(self, agent_id: str, topic: str) -> bool:
        """Subscribe ``agent_id`` to ``topic``; it receives what is broadcast from now on.

        Returns False if it was subscribed already. Order matters: the consumer groups exist
        before the agent is listed as a subscriber, and the agent's own bell rings last, so
        a broadcast that raced with this call either rang the bell itself or landed before
        that last ring — either way the reader looks at the topic.
        """
        _check_name("agent id", agent_id)
        _check_name("topic", topic)
        group = _topic_group(agent_id)
        for priority in PRIORITIES:
            await self.store.create_group(
                keys.bus_topic(self.run_id, topic, priority.value), group, start="$"
            )
        added = await self._add_to_list(keys.bus_subscribers(self.run_id, topic), agent_id)
        await self._add_to_list(keys.bus_subscriptions(self.run_id, agent_id), topic)
        await self._ring([agent_id], f"topic/{topic}".encode())
        return added

    async def subscriptions(self, agent_id: str) -> list[str]:
        """The topics ``agent_id`` is subscribed to."""
        _check_name("agent id", agent_id)
        return await self._get_list(keys.bus_subscriptions(self.run_id, agent_id))

    async def _get_list(self, key: str) -> list[str]:
        current = await self.store.get(key)
        return [] if current is None else _decode_list(key, current.value)

    async def _add_to_list(self, key: str, item: str) -> bool:
        while True:
            current = await self.store.get(key)
            items = [] if current is None else _decode_list(key, current.value)
            if item in items:
                return False
            items = sorted([*items, item])
            result = await self.store.cas(
                key, 0 if current is None else current.version, json.dumps(items).encode()
            )
            if result.ok:
                return True

    # ------------------------------------------------------------------ reading

    async def read(self, agent_id: str, *, count: int = 10, block_s: float | None = None) -> list[Delivery]:
        """Up to ``count`` messages for ``agent_id``, high priority first.

        Without ``block_s`` (or with 0) returns at once, possibly nothing; with it, waits up
        to ``block_s`` seconds for a message. Messages whose ``requires_ack`` is False are
        acknowledged here; the others stay pending until ``ack`` and come back after
        ``lease_s`` if never acknowledged.
        """
        _check_name("agent id", agent_id)
        if count < 1:
            raise BusError(f"count must be >= 1, not {count}")
        reader = self._readers.get(agent_id)
        if reader is None:
            reader = self._readers[agent_id] = _Reader(agent_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (block_s or 0.0)
        async with reader.lock:
            if not reader.ready:
                await self._open_reader(reader)  # every stream dirty, a reclaim pass due
            elif reader.dirty:
                # An earlier read left records behind (count): a higher level may have rung.
                await self._check_bell(reader, block_s=None)
            looked = False  # whether the bell was read after the deadline
            while True:
                if reader.dirty or loop.time() >= reader.reclaim_at:
                    deliveries = await self._drain(reader, count)
                    if deliveries:
                        return deliveries
                now = loop.time()
                if now < deadline:
                    # Returns at once if the bell rang since the cursor; wakes for the next
                    # reclaim pass even if nothing rings.
                    await self._check_bell(reader, block_s=max(0.001, min(deadline, reader.reclaim_at) - now))
                elif looked:
                    return []
                else:
                    looked = True
                    await self._check_bell(reader, block_s=None)

    async def _open_reader(self, reader: _Reader) -> None:
        agent = reader.agent
        # The bell cursor first: whatever is sent from here on rings after it.
        reader.bell_after = await self.store.last_id(keys.bus_bell(self.run_id, agent))
        for priority in PRIORITIES:
            await self.store.create_group(keys.bus_inbox(self.run_id, agent, priority.value), INBOX_GROUP)
        reader.topics = await self._get_list(keys.bus_subscriptions(self.run_id, agent))
        current = await self.store.get(keys.bus_seen(self.run_id, agent))
        if current is not None:
            reader.seen = _decode_seen(current.value)
            reader.seen_version = current.version
        reader.dirty = {source.stream for source in self._sources(reader)}
        reader.reclaim_at = 0.0
        reader.ready = True

    def _sources(self, reader: _Reader) -> list[_Source]:
        out: list[_Source] = []
        for priority in PRIORITIES:
            p = priority.value
            out.append(
                _Source(
                    keys.bus_inbox(self.run_id, reader.agent, p), INBOX_GROUP, f"inbox/{p}/", priority, None
                )
            )
            out.extend(
                _Source(
                    keys.bus_topic(self.run_id, topic, p),
                    _topic_group(reader.agent),
                    f"topic/{topic}/{p}/",
                    priority,
                    topic,
                )
                for topic in reader.topics
            )
        return out

    async def _check_bell(self, reader: _Reader, *, block_s: float | None) -> None:
        """Read the bell past the cursor (waiting up to ``block_s``) and mark streams dirty."""
        entries = await self.store.read(
            keys.bus_bell(self.run_id, reader.agent),
            reader.bell_after,
            count=BELL_READ_COUNT,
            block_s=block_s,
        )
        if not entries:
            return
        reader.bell_after = entries[-1].id
        for entry in entries:
            parts = entry.record.decode(errors="replace").split("/")
            if parts[0] == "inbox" and len(parts) == 2 and parts[1] in _LEVELS:
                reader.dirty.add(keys.bus_inbox(self.run_id, reader.agent, parts[1]))
            elif parts[0] == "topic" and len(parts) in (2, 3):
                topic = parts[1]
                if topic not in reader.topics:
                    reader.topics.append(topic)
                levels = [parts[2]] if len(parts) == 3 else [p.value for p in PRIORITIES]
                reader.dirty.update(keys.bus_topic(self.run_id, topic, level) for level in levels)
            else:
                log.warning("ignoring bad doorbell record %r of agent %s", entry.record[:80], reader.agent)

    async def _drain(self, reader: _Reader, count: int) -> list[Delivery]:
        """One pass over the agent's streams in priority order: stale entries (when a
        reclaim pass is due), then new ones of dirty streams.

        A reclaim pass also reads every stream, dirty or not: a safety net that bounds the
        delay of a message whose bell was lost (trimmed away from the bell stream of a reader
        that fell far behind) to ``reclaim_interval_s``.
        """
        loop = asyncio.get_running_loop()
        reclaim = loop.time() >= reader.reclaim_at
        out: list[Delivery] = []
        auto_ack: dict[_Source, list[str]] = {}
        complete = True
        for source in self._sources(reader):
            if len(out) >= count:
                complete = False
                break
            if reclaim:
                stale = await self.store.claim_stale(
                    source.stream, source.group, reader.agent, min_idle_s=self.lease_s, count=count - len(out)
                )
                out.extend(await self._deliver(reader, source, stale, auto_ack))
            room = count - len(out)
            if room > 0 and (reclaim or source.stream in reader.dirty):
                fresh = await self.store.read_group(source.stream, source.group, reader.agent, count=room)
                if len(fresh) < room:
                    reader.dirty.discard(source.stream)
                out.extend(await self._deliver(reader, source, fresh, auto_ack))
        if reclaim and complete:
            # Jittered, so that readers opened together do not reclaim in lockstep.
            reader.reclaim_at = loop.time() + self.reclaim_interval_s * random.uniform(0.5, 1.0)
        for source, ids in auto_ack.items():
            await self.store.ack(source.stream, source.group, ids)
        if reader.seen_changed:
            await self._save_seen(reader)
        return out

    async def _deliver(
        self, reader: _Reader, source: _Source, entries: list[Entry], auto_ack: dict[_Source, list[str]]
    ) -> list[Delivery]:
        out: list[Delivery] = []
        for entry in entries:
            receipt = source.receipt_prefix + entry.id
            try:
                message = Message.from_json(entry.record)
            except ValidationError as exc:
                raw = entry.record[:RAW_KEEP_BYTES].decode(errors="replace")
                await self._dead_letter(
                    reader, source, entry, f"undecodable record: {_errors(exc)}"[:1000], None, raw
                )
                continue
            if entry.deliveries > self.max_deliveries:
                await self._dead_letter(
                    reader,
                    source,
                    entry,
                    f"not acknowledged after {self.max_deliveries} deliveries",
                    message,
                    None,
                )
                continue
            gap = self._see(reader, source, message)
            if entry.deliveries > 1:
                message = message.model_copy(update={"retry_count": entry.deliveries - 1})
            if not message.requires_ack:
                auto_ack.setdefault(source, []).append(entry.id)
            out.append(Delivery(message, receipt, max(1, entry.deliveries), gap))
        return out

    def _see(self, reader: _Reader, source: _Source, message: Message) -> int:
        """Record ``message``'s seq in the agent's seen-table; return the gap before it."""
        lane = _lane(message)
        last = reader.seen.get(lane)
        if last is None:
            # An inbox holds a lane from its first message; a subscriber may join mid-lane.
            last = 0 if source.topic is None else message.seq - 1
        if message.seq <= last:
            return 0  # a repeat (redelivery) or a late message
        reader.seen[lane] = message.seq
        reader.seen_changed = True
        return message.seq - last - 1

    async def _save_seen(self, reader: _Reader) -> None:
        key = keys.bus_seen(self.run_id, reader.agent)
        while True:
            result = await self.store.cas(key, reader.seen_version, json.dumps(reader.seen).encode())
            if result.ok:
                reader.seen_version = result.version
                reader.seen_changed = False
                return
            # Another reader of this agent wrote it: merge (highest seq per lane wins).
            current = await self.store.get(key)
            theirs = {} if current is None else _decode_seen(current.value)
            for lane, seq in theirs.items():
                if seq > reader.seen.get(lane, 0):
                    reader.seen[lane] = seq
            reader.seen_version = 0 if current is None else current.version

    async def _dead_letter(
        self,
        reader: _Reader,
        source: _Source,
        entry: Entry,
        reason: str,
        message: Message | None,
        raw: str | None,
    ) -> None:
        letter = DeadLetter(
            reason=reason,
            agent=reader.agent,
            receipt=source.receipt_prefix + entry.id,
            deliveries=0 if message is None else entry.deliveries - 1,
            message=message,
            raw=raw,
        )
        # Append before ack: a crash in between leaves a duplicate, never a loss.
        await self.store.append(
            keys.bus_dead_letters(self.run_id), letter.model_dump_json().encode(), maxlen=self.max_stream_len
        )
        await self.store.ack(source.stream, source.group, [entry.id])
        log.warning(
            "dead letter for %s from %s (%s): %s",
            reader.agent,
            letter.receipt,
            message.id if message else "undecodable",
            reason,
        )

    # ------------------------------------------------------------------ acknowledging

    async def ack(self, agent_id: str, items: Iterable[Delivery | str]) -> int:
        """Acknowledge deliveries (or their receipts) of ``agent_id``; return how many were
        still pending (an entry acknowledged twice, or reclaimed and dead-lettered, is not)."""
        _check_name("agent id", agent_id)
        batches: dict[tuple[str, str], list[str]] = {}
        for item in items:
            receipt = item.receipt if isinstance(item, Delivery) else item
            stream, group, entry_id = self._parse_receipt(agent_id, receipt)
            batches.setdefault((stream, group), []).append(entry_id)
        acked = 0
        for (stream, group), ids in batches.items():
            acked += await self.store.ack(stream, group, ids)
        return acked

    def _parse_receipt(self, agent_id: str, receipt: str) -> tuple[str, str, str]:
        parts = receipt.split("/") if isinstance(receipt, str) else []
        priorities = _LEVELS
        if len(parts) == 3 and parts[0] == "inbox" and parts[1] in priorities and parts[2]:
            return keys.bus_inbox(self.run_id, agent_id, parts[1]), INBOX_GROUP, parts[2]
        if len(parts) == 4 and parts[0] == "topic" and parts[2] in priorities and parts[3]:
            _check_name("topic", parts[1])
            return keys.bus_topic(self.run_id, parts[1], parts[2]), _topic_group(agent_id), parts[3]
        raise BusError(
            f"{receipt!r} is not a message receipt: expected inbox/<priority>/<id> or "
            "topic/<topic>/<priority>/<id>, as in Delivery.receipt"
        )

    # ------------------------------------------------------------------ inspection

    async def dead_letters(self, *, after: str = "0", count: int = 100) -> list[DeadLetter]:
        """Dead letters of the run, oldest first, with ids after ``after``."""
        out: list[DeadLetter] = []
        for entry in await self.store.read(keys.bus_dead_letters(self.run_id), after, count=count):
            try:
                letter = DeadLetter.model_validate_json(entry.record)
            except ValidationError as exc:
                log.warning("skipping undecodable dead letter %s: %s", entry.id, _errors(exc))
                continue
            out.append(letter.model_copy(update={"id": entry.id}))
        return out

    async def stats(self) -> BusStats:
        """Messages sent so far (per sender) and dead letters; cheap enough to poll."""
        prefix = keys.bus_seq_prefix(self.run_id)
        by_sender: dict[str, int] = {}
        for row in await self.store.scan(prefix):
            sender = row.key[len(prefix) :].split(":", 1)[0]
            try:
                by_sender[sender] = by_sender.get(sender, 0) + int(row.value)
            except ValueError:
                log.warning("ignoring sequence counter %s: %r is not a number", row.key, row.value[:40])
        dead = await self.store.length(keys.bus_dead_letters(self.run_id))
        return BusStats(sent=sum(by_sender.values()), by_sender=by_sender, dead_letters=dead)


def _topic_group(agent_id: str) -> str:
    return f"sub.{agent_id}"


def _decode_list(key: str, raw: bytes) -> list[str]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise StoreDataError(f"{key!r} does not hold a JSON list: {raw[:80]!r}") from exc
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise StoreDataError(f"{key!r} does not hold a JSON list of names: {raw[:80]!r}")
    return value


def _decode_seen(raw: bytes) -> dict[str, int]:
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        log.warning("resetting an undecodable seen-table: %r", raw[:80])
        return {}
    return {str(lane): seq for lane, seq in value.items() if isinstance(seq, int)}
