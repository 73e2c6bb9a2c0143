"""The message bus between agents, written once on the ``Store`` protocol (SQLite and Redis).

What it does: a per-agent inbox, broadcast topics (each subscriber receives each message
once), three priority levels (high is always read first), acknowledgements, redelivery of
messages left unacknowledged for longer than the lease, a dead-letter stream after
``max_deliveries`` deliveries, a maximum message size, and per-sender sequence numbers so a
receiver sees FIFO order per sender → receiver pair and can detect a gap.

API (everything else in this module is internal)::

    bus = Bus(store, run_id, *, max_message_bytes=65536, lease_s=15.0, max_deliveries=5,
              max_stream_len=100_000, cipher="auto")
    await bus.send(sender, to, content, *, type="text", priority=Priority.NORMAL,
                   requires_ack=True) -> Message
    await bus.broadcast(sender, topic, content, *, type=..., priority=..., requires_ack=...)
        -> Message
    await bus.subscribe(agent_id, topic) -> bool          # True if newly subscribed
    await bus.read(agent_id, *, count=10, block_s=None) -> list[Delivery]
    await bus.ack(agent_id, deliveries_or_receipts) -> int
    await bus.dead_letters(*, after="0", count=100) -> list[DeadLetter]
    await bus.stats() -> BusStats                          # for the dashboard
    await bus.backlog() -> Backlog                         # for a checkpoint
    await bus.restore(backlog) -> int                      # after the store lost the run

``Message`` follows the spec: id, from (``sender`` in Python), to (an agent) or topic (a
broadcast), type, priority, content (any JSON value), timestamp, requires_ack, retry_count,
plus ``seq``. ``Delivery`` is one message as read: the message (``retry_count`` = deliveries
- 1), its ``receipt`` (a string that ``ack`` takes, so a separate process such as
``maos msg ack`` can acknowledge it), the delivery count and ``gap``. Errors: ``BusError``
for bad input (names the field), ``MessageTooLarge`` (names the size, the limit and the
recipient); store failures arrive as ``StoreError``.

Message records and dead letters are sealed (AES-GCM, the run's data key, the run as
associated data) before they reach the store: by default on Redis, ``MAOS_ENCRYPT=1`` on SQLite
(``maos.security.value_cipher``). A record that cannot be opened is dead-lettered without its
bytes.

Layout (``maos.store.keys``; every key of a run under its ``{run:<id>}`` hash tag):

- ``bus:inbox:<agent>:<priority>`` — 3 streams per agent;
- ``bus:topic:<topic>:<priority>`` — 3 streams per topic;
- ``bus:bell:<agent>`` — the agent's doorbell: rung when it subscribes to a topic (below);
- ``bus:dead`` — the run's dead letters (``DeadLetter`` JSON records);
- ``bus:seq:<sender>:<@agent|#topic>:<priority>`` — a sender's sequence counter per lane;
- ``bus:seen:<agent>`` — the highest seq an agent has seen per lane (one JSON object);
- ``bus:subscriptions:<agent>`` — a JSON list of topics.

Every stream an agent reads has one consumer group named after it (``agent.<id>``): on its
inbox, on each topic it subscribed to (created by ``subscribe`` at ``$``: a subscriber
receives what is broadcast after it subscribed, never older messages) and on its bell.

Design decisions (ADR 0009; the point is few store round trips per message: one to send, one
to read, one to acknowledge):

- **Sending is one transaction** (``Store.transact``): the compare-and-set of the lane's
  sequence counter and the append of the message, all or nothing. The counter's last version
  is cached, so a send is usually that one round trip; a conflict (another process sent on
  the lane) re-reads the counter and tries again after a jittered backoff. Because the seq
  and the append commit together, messages of one lane reach the stream in seq order even
  from several processes, and a cancelled or failed send leaves no gap.
- **Reading is one call** (``Store.read_groups``): the agent's group on all its streams at
  once, blocking until any of them has a record. A reader whose last read found records
  first looks without blocking, which on Redis shares a round trip with the other requests
  of the process (``maos.store.redis``: sends, acknowledgements and reads submitted while
  one is in flight go out together), and blocks only if that finds nothing; so under load a
  round trip carries many messages, and an idle reader still waits in one blocking call.
  Priorities: there is one stream per level,
  and the records fetched are handed out high → normal → low (inbox before topics within a
  level). A read fetches up to ``count`` records from each stream that could place one among
  the ``count`` best (every stream, or while it already holds ``count``, those of a better
  level than the worst it would hand out), so what stays in the store ranks after what it
  returns. It may get more than it returns: it holds the rest (pending in the store, so a
  crash only delays them by a lease) and hands them out later, still in priority order.
- **Subscriptions elsewhere.** A read covers the topics the agent was subscribed to when its
  reader opened, plus those subscribed through the same ``Bus``. ``subscribe`` also rings
  the agent's bell, one of the streams every read covers, so a reader in another process
  wakes and adds the topic.
- **Sequence numbers** count per *lane* = (sender, recipient or topic, priority): priorities
  overtake each other on purpose, so FIFO is promised within a level (with the default level,
  per pair). The receiver keeps the highest seq it saw per lane and reports ``Delivery.gap``
  = how many seqs were skipped before this message. A repeat (a redelivery) has gap 0. For
  topics the first message a subscriber sees from a lane sets the baseline (it subscribed
  mid-stream). The seen-table is stored with the acknowledgements (in the same transaction;
  for messages that need none, with the read that acknowledges them), so a fresh process,
  e.g. the CLI door, carries on where the last acknowledgement left it: a message read but
  never acknowledged counts as unseen, and it comes back after the lease anyway.
- **Acknowledgement and redelivery.** Records stay pending in the reader's consumer group
  until ``ack``; a message with ``requires_ack=False`` is acknowledged by the read itself
  (at most once). Every ``lease_s / 8`` to ``lease_s / 4`` (jittered; at most 5 s) a read
  reclaims entries idle longer than ``lease_s`` (``claim_stale``) and delivers them again
  before new ones of the same level; a blocked read wakes up for this.
- **Dead letters.** An entry claimed for delivery number ``max_deliveries + 1`` is not
  delivered: it is appended to ``bus:dead`` with the reason and acknowledged, in one
  transaction. So is a record that does not decode as a ``Message`` — a bad record never
  crashes a reader.
- **Size.** The encoded JSON of a message (with the largest possible seq) must not exceed
  ``max_message_bytes``; the check happens before a seq is assigned.
- **Backlog.** A full checkpoint keeps what every agent of the run has not acknowledged
  (pending or never delivered, inbox and subscribed topics: ``Store.unacknowledged``) as the
  sealed records. If the store loses the run, ``restore`` recreates each agent's groups and
  puts its backlog in its inbox of the same priority: a broadcast keeps its topic, sender and
  seq, so the lane's order and the seen-table (restored with the kv pairs) still hold, and
  each subscriber gets back exactly what it was owed, not what the others were.
- **One reader per agent per Bus.** Reads of one agent on one ``Bus`` are serialized by a
  lock; readers of one agent in several processes are safe (the consumer group hands each
  entry to one of them) and merge their seen-tables (highest seq per lane wins).
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from maos.errors import BusError, MessageTooLarge, StoreDataError
from maos.numbers import MAX_INT64, NumberError, check_stream_id, parse_int
from maos.security import ValueCipher, open_value, value_cipher
from maos.store import keys
from maos.store.base import AckOp, AppendOp, CasOp, Entry, Store, WriteOp

__all__ = [
    "NAME_PATTERN",
    "Backlog",
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

BELL_MAXLEN: Final = 1000
MAX_BACKLOG: Final = 100_000
"""Per stream, the most records a checkpoint keeps of what an agent was owed (unbounded streams)."""
RAW_KEEP_BYTES: Final = 4096
"""How much of an undecodable record its dead letter keeps."""
_SEQ_PLACEHOLDER: Final = 2**63 - 1  # the longest seq, so the size check is an upper bound
_SEQ_CAS_ATTEMPTS: Final = 100
_KEPT_CONFLICTS: Final = 1000


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
class Backlog:
    """What the run's agents had not acknowledged when a checkpoint was taken: per agent,
    per priority, the sealed message records in the order they are owed."""

    owed: dict[str, dict[str, list[bytes]]]

    @property
    def messages(self) -> int:
        return sum(len(records) for lanes in self.owed.values() for records in lanes.values())

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                agent: {
                    level: [base64.b64encode(r).decode() for r in records] for level, records in lanes.items()
                }
                for agent, lanes in self.owed.items()
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Backlog:
        """A backlog as a checkpoint kept it; ``StoreDataError`` naming what is wrong (the
        checkpoint is outside data like any store contents)."""
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise StoreDataError(f"the bus backlog is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise StoreDataError("the bus backlog is not a JSON object of agents")
        owed: dict[str, dict[str, list[bytes]]] = {}
        for agent, lanes in value.items():
            if not _NAME_RE.fullmatch(agent) or not isinstance(lanes, dict):
                raise StoreDataError(f"the bus backlog has a bad entry for agent {_shown(agent)}")
            owed[agent] = {}
            for level, records in lanes.items():
                if level not in _LEVELS or not isinstance(records, list):
                    raise StoreDataError(
                        f"the bus backlog of agent {agent!r} has a bad priority {_shown(level)}"
                    )
                try:
                    owed[agent][level] = [base64.b64decode(r, validate=True) for r in records]
                except (TypeError, ValueError):
                    raise StoreDataError(
                        f"the bus backlog of agent {agent!r} holds a record that is not base64"
                    ) from None
        return cls(owed)


@dataclass(frozen=True, slots=True)
class _Source:
    """One stream an agent reads (through its group ``agent.<id>``)."""

    stream: str
    receipt_prefix: str  # "inbox/high/" or "topic/news/high/"
    rank: int  # reading order: priority level first, the inbox before topics
    topic: str | None


@dataclass(eq=False)
class _Reader:
    """What one ``Bus`` knows about one agent's reading, between ``read`` calls."""

    agent: str
    group: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ready: bool = False
    topics: list[str] = field(default_factory=list)
    held: list[tuple[int, int, Delivery]] = field(default_factory=list)  # (rank, n, delivery)
    taken: int = 0  # deliveries ever held: the tie-breaker that keeps arrival order
    seen: dict[str, int] = field(default_factory=dict)  # lane -> highest seq seen
    seen_version: int = 0
    seen_changes: int = 0  # bumped by each change of ``seen``
    seen_saved: int = 0  # the value of ``seen_changes`` that was saved last
    reclaim_at: float = 0.0  # loop time of the next claim_stale pass
    busy: bool = False  # its last fetch found records: the next one looks before it waits
    sources: dict[str, _Source] = field(default_factory=dict)  # what _sources() built last,
    sources_of_topics: int = -1  # when ``topics`` had this many


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
        cipher: ValueCipher | Literal["auto"] | None = "auto",
    ) -> None:
        if max_message_bytes < 256:
            raise ValueError(f"max_message_bytes must be at least 256, not {max_message_bytes}")
        if not lease_s > 0:
            raise ValueError(f"lease_s must be > 0, not {lease_s}")
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be >= 1, not {max_deliveries}")
        self.store = store
        self.run_id = run_id
        # Message records (and dead letters) are sealed with the run's data key on their way
        # to the store (maos.security.ValueCipher; default on for Redis).
        self.cipher = value_cipher(store.url, run_id) if cipher == "auto" else cipher
        self._aad = b"maos message\x00" + run_id.encode()
        self.max_message_bytes = max_message_bytes
        self.lease_s = lease_s
        self.max_deliveries = max_deliveries
        self.max_stream_len = max_stream_len
        self.reclaim_interval_s = min(lease_s / 4, 5.0)
        self._lane_locks: dict[str, asyncio.Lock] = {}
        self._seq_cache: dict[str, tuple[int, int]] = {}  # seq key -> (value, version)
        self._readers: dict[str, _Reader] = {}
        self._conflicts: dict[str, int] = {}  # message id -> seq compare-and-sets its send lost

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
        return await self._publish(message, stream, seq_key)

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
        return await self._publish(message, stream, seq_key)

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

    async def _publish(self, message: Message, stream: str, seq_key: str) -> Message:
        """Append ``message`` with the lane's next seq: one transaction (usually one round trip)."""
        lock = self._lane_locks.get(seq_key)
        if lock is None:
            lock = self._lane_locks[seq_key] = asyncio.Lock()
        async with lock:  # one sender task at a time per lane: the cached version stays right
            delay_s = 0.001
            for conflicts in range(_SEQ_CAS_ATTEMPTS):
                cached = self._seq_cache.get(seq_key)
                value, version = cached if cached is not None else await self._read_seq(seq_key)
                stamped = message.model_copy(update={"seq": value + 1, "timestamp": time.time()})
                result = await self.store.transact(
                    [
                        CasOp(seq_key, version, str(value + 1).encode()),
                        AppendOp(stream, self._seal(stamped.to_json()), self.max_stream_len),
                    ]
                )
                if result.ok:
                    self._seq_cache[seq_key] = (value + 1, result.versions[0])
                    if conflicts:
                        self._conflicts[stamped.id] = conflicts
                        for stale in list(self._conflicts)[:-_KEPT_CONFLICTS]:  # bounded: oldest go
                            del self._conflicts[stale]
                    return stamped
                self._seq_cache.pop(seq_key, None)
                if cached is None:
                    # Another process sends on this lane too: back off with jitter.
                    await asyncio.sleep(random.uniform(0, delay_s))
                    delay_s = min(delay_s * 2, 0.05)
        raise BusError(
            f"could not assign a sequence number on {seq_key!r}: {_SEQ_CAS_ATTEMPTS} conflicts in a row"
        )

    def seq_conflicts(self, message_id: str) -> int:
        """How many sequence-number compare-and-sets the send of ``message_id`` lost to other
        senders on its lane before it went through (0 if none, or asked once already)."""
        return self._conflicts.pop(message_id, 0)

    def _seal(self, record: bytes) -> bytes:
        return record if self.cipher is None else self.cipher.seal(record, self._aad)

    def _open(self, record: bytes, what: str) -> bytes:
        return open_value(self.cipher, record, self._aad, what)

    async def _read_seq(self, key: str) -> tuple[int, int]:
        current = await self.store.get(key)
        if current is None:
            return 0, 0
        value = _parse_counter(key, current.value)
        if value >= MAX_INT64:
            raise StoreDataError(f"sequence counter {key!r} is at its maximum ({value})")
        return value, current.version

    # ------------------------------------------------------------------ subscriptions

    async def subscribe(self, agent_id: str, topic: str) -> bool:
        """Subscribe ``agent_id`` to ``topic``; it receives what is broadcast from now on.

        Returns False if it was subscribed already. The agent's consumer groups on the topic
        exist before its bell rings, so a reader woken by the bell finds them.
        """
        _check_name("agent id", agent_id)
        _check_name("topic", topic)
        group = _group(agent_id)
        for priority in PRIORITIES:
            await self.store.create_group(
                keys.bus_topic(self.run_id, topic, priority.value), group, start="$"
            )
        added = await self._add_to_list(keys.bus_subscriptions(self.run_id, agent_id), topic)
        reader = self._readers.get(agent_id)
        if reader is not None and reader.ready and topic not in reader.topics:
            reader.topics.append(topic)
        await self.store.append(
            keys.bus_bell(self.run_id, agent_id), f"topic/{topic}".encode(), maxlen=BELL_MAXLEN
        )
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
            reader = self._readers[agent_id] = _Reader(agent_id, _group(agent_id))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (block_s or 0.0)
        async with reader.lock:
            if not reader.ready:
                await self._open_reader(reader)
            while True:
                if loop.time() >= reader.reclaim_at and len(reader.held) < count:
                    await self._reclaim(reader, count)
                # Up to ``count`` from each stream that could place a record among the best
                # ``count``: then what stays unfetched can only rank after what is handed out.
                new_topics = False
                if len(reader.held) < count:
                    wait_s = None
                    if not reader.held:
                        wait_s = min(deadline, reader.reclaim_at) - loop.time()
                    new_topics = await self._fetch(reader, count, wait_s)
                else:
                    reader.held.sort(key=lambda item: item[:2])
                    await self._fetch(reader, count, None, better_than=reader.held[count - 1][0])
                if reader.held:
                    return await self._hand_out(reader, count)
                if loop.time() >= deadline and not new_topics:
                    return []

    async def _open_reader(self, reader: _Reader) -> None:
        run, agent = self.run_id, reader.agent
        # The bell's group first: a subscription made from here on rings after it.
        await self.store.create_group(keys.bus_bell(run, agent), reader.group, start="$")
        for priority in PRIORITIES:
            await self.store.create_group(keys.bus_inbox(run, agent, priority.value), reader.group)
        reader.topics = await self._get_list(keys.bus_subscriptions(run, agent))
        current = await self.store.get(keys.bus_seen(run, agent))
        if current is not None:
            reader.seen = _decode_seen(current.value)
            reader.seen_version = current.version
        reader.reclaim_at = 0.0  # what an earlier process left pending comes back first
        reader.ready = True

    def _sources(self, reader: _Reader) -> dict[str, _Source]:
        """The agent's streams by name, in reading order (rebuilt when it gained a topic:
        ``reader.topics`` only grows)."""
        if reader.sources_of_topics != len(reader.topics):
            out: dict[str, _Source] = {}
            for level, priority in enumerate(PRIORITIES):
                p = priority.value
                inbox = keys.bus_inbox(self.run_id, reader.agent, p)
                out[inbox] = _Source(inbox, f"inbox/{p}/", 2 * level, None)
                for topic in reader.topics:
                    stream = keys.bus_topic(self.run_id, topic, p)
                    out[stream] = _Source(stream, f"topic/{topic}/{p}/", 2 * level + 1, topic)
            reader.sources, reader.sources_of_topics = out, len(reader.topics)
        return reader.sources

    async def _fetch(
        self, reader: _Reader, room: int, wait_s: float | None, *, better_than: int | None = None
    ) -> bool:
        """One ``read_groups`` on every stream of the agent and its bell (or, with
        ``better_than``, on its streams of a better rank only), up to ``room`` records each,
        waiting up to ``wait_s`` (None or <= 0: not at all); what it gets is held. True if the
        bell brought a topic this reader did not cover yet."""
        sources = self._sources(reader)
        if better_than is not None:
            sources = {stream: source for stream, source in sources.items() if source.rank < better_than}
        if not sources:
            return False
        bell = keys.bus_bell(self.run_id, reader.agent)
        streams = [*sources, bell] if better_than is None else list(sources)
        block_s = wait_s if wait_s is not None and wait_s > 0 else None
        found: dict[str, list[Entry]] = {}
        if block_s is None or reader.busy:
            # A read that does not wait shares its round trip with the other requests of
            # this process (on Redis); a busy reader usually finds something this way.
            found = await self.store.read_groups(streams, reader.group, reader.agent, count=room)
        if not found and block_s is not None:
            found = await self.store.read_groups(
                streams, reader.group, reader.agent, count=room, block_s=block_s
            )
        reader.busy = bool(found)
        new_topics = False
        for stream, entries in found.items():
            if stream == bell:
                new_topics = self._ring_heard(reader, entries) or new_topics
                await self.store.ack(bell, reader.group, [entry.id for entry in entries])
            else:
                await self._take(reader, sources[stream], entries)
        return new_topics

    def _ring_heard(self, reader: _Reader, entries: list[Entry]) -> bool:
        added = False
        for entry in entries:
            parts = entry.record.decode(errors="replace").split("/")
            if len(parts) == 2 and parts[0] == "topic" and _NAME_RE.fullmatch(parts[1]):
                if parts[1] not in reader.topics:
                    reader.topics.append(parts[1])
                    added = True
            else:
                log.warning("ignoring bad doorbell record %r of agent %s", entry.record[:80], reader.agent)
        return added

    async def _reclaim(self, reader: _Reader, count: int) -> None:
        """Deliver again what stayed unacknowledged longer than the lease, stream by stream."""
        complete = True
        held = {item[2].receipt for item in reader.held}
        for source in self._sources(reader).values():
            room = count - len(reader.held)
            if room <= 0:
                complete = False
                break
            stale = await self.store.claim_stale(
                source.stream, reader.group, reader.agent, min_idle_s=self.lease_s, count=room
            )
            # An entry this reader holds (fetched, not handed out yet) is not a new delivery.
            await self._take(reader, source, [e for e in stale if source.receipt_prefix + e.id not in held])
        if complete:
            # Jittered, so that readers opened together do not reclaim in lockstep.
            loop = asyncio.get_running_loop()
            reader.reclaim_at = loop.time() + self.reclaim_interval_s * random.uniform(0.5, 1.0)

    async def _take(self, reader: _Reader, source: _Source, entries: list[Entry]) -> None:
        """Decode ``entries`` into held deliveries (dead-lettering what cannot be delivered)."""
        for entry in entries:
            try:
                record = self._open(entry.record, f"message {entry.id} in {source.stream}")
            except StoreDataError as exc:  # sealed, and no (right) key here: never shown raw
                await self._dead_letter(
                    reader, source, entry, f"undecodable record: {exc}"[:1000], None, None
                )
                continue
            try:
                message = Message.from_json(record)
            except ValidationError as exc:
                raw = record[:RAW_KEEP_BYTES].decode(errors="replace")
                await self._dead_letter(
                    reader, source, entry, f"undecodable record: {_errors(exc)}"[:1000], None, raw
                )
                continue
            if entry.deliveries > self.max_deliveries:
                reason = f"not acknowledged after {self.max_deliveries} deliveries"
                await self._dead_letter(reader, source, entry, reason, message, None)
                continue
            gap = self._see(reader, source, message)
            if entry.deliveries > 1:
                message = message.model_copy(update={"retry_count": entry.deliveries - 1})
            delivery = Delivery(message, source.receipt_prefix + entry.id, max(1, entry.deliveries), gap)
            reader.taken += 1
            reader.held.append((source.rank, reader.taken, delivery))

    async def _hand_out(self, reader: _Reader, count: int) -> list[Delivery]:
        """The ``count`` best held deliveries; acknowledges those that need no ack."""
        reader.held.sort(key=lambda item: item[:2])
        out = [delivery for _, _, delivery in reader.held[:count]]
        del reader.held[:count]
        no_ack = [d.receipt for d in out if not d.message.requires_ack]
        if no_ack:  # with the seen-table; the others save it when they are acknowledged
            await self._ack_and_save(reader.agent, no_ack)
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
        reader.seen_changes += 1
        return message.seq - last - 1

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
        await self.store.transact(
            [
                AppendOp(
                    keys.bus_dead_letters(self.run_id),
                    self._seal(letter.model_dump_json().encode()),
                    self.max_stream_len,
                ),
                AckOp(source.stream, reader.group, (entry.id,)),
            ]
        )
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
        still pending (an entry acknowledged twice, or reclaimed and dead-lettered, is not).
        One transaction, which also saves what this ``Bus`` saw for the agent."""
        _check_name("agent id", agent_id)
        return await self._ack_and_save(
            agent_id, [item.receipt if isinstance(item, Delivery) else item for item in items]
        )

    async def _ack_and_save(self, agent_id: str, receipts: list[str]) -> int:
        batches: dict[str, list[str]] = {}
        for receipt in receipts:
            stream, entry_id = self._parse_receipt(agent_id, receipt)
            batches.setdefault(stream, []).append(entry_id)
        group = _group(agent_id)
        acks: list[WriteOp] = [AckOp(stream, group, tuple(ids)) for stream, ids in batches.items()]
        reader = self._readers.get(agent_id)
        key = keys.bus_seen(self.run_id, agent_id)
        while True:
            changes = 0 if reader is None else reader.seen_changes
            save = reader is not None and changes != reader.seen_saved
            if not acks and not save:
                return 0
            ops = list(acks)
            if save:
                assert reader is not None
                ops.append(CasOp(key, reader.seen_version, json.dumps(reader.seen).encode()))
            result = await self.store.transact(ops)
            if result.ok:
                if save:
                    assert reader is not None
                    reader.seen_version = result.versions[0]
                    reader.seen_saved = changes
                return result.acked
            # Another reader of this agent saved its seen-table: merge (highest seq per lane).
            assert reader is not None
            current = await self.store.get(key)
            theirs = {} if current is None else _decode_seen(current.value)
            for lane, seq in theirs.items():
                if seq > reader.seen.get(lane, 0):
                    reader.seen[lane] = seq
            reader.seen_version = 0 if current is None else current.version

    def _parse_receipt(self, agent_id: str, receipt: str) -> tuple[str, str]:
        parts = check_receipt(receipt, self.store.url).split("/")
        if parts[0] == "inbox":
            return keys.bus_inbox(self.run_id, agent_id, parts[1]), parts[2]
        return keys.bus_topic(self.run_id, parts[1], parts[2]), parts[3]

    # ------------------------------------------------------------------ inspection

    async def dead_letters(self, *, after: str = "0", count: int = 100) -> list[DeadLetter]:
        """Dead letters of the run, oldest first, with ids after ``after``."""
        out: list[DeadLetter] = []
        for entry in await self.store.read(keys.bus_dead_letters(self.run_id), after, count=count):
            try:
                letter = DeadLetter.model_validate_json(self._open(entry.record, f"dead letter {entry.id}"))
            except (ValidationError, StoreDataError) as exc:
                detail = _errors(exc) if isinstance(exc, ValidationError) else str(exc)
                log.warning("skipping undecodable dead letter %s: %s", entry.id, detail)
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
                by_sender[sender] = by_sender.get(sender, 0) + _parse_counter(row.key, row.value)
            except StoreDataError:
                log.warning("ignoring sequence counter %s: %r is not a number", row.key, row.value[:40])
        dead = await self.store.length(keys.bus_dead_letters(self.run_id))
        return BusStats(sent=sum(by_sender.values()), by_sender=by_sender, dead_letters=dead)

    # ------------------------------------------------------------------ backlog (checkpoints)

    async def backlog(self) -> Backlog:
        """What every reader of the run has not acknowledged yet: its pending and
        never-delivered messages (an inbox never read is owed whole; a topic only from when
        the reader subscribed), per priority, inbox first, each stream in order. Sealed
        records as stored. The readers: every recipient of a lane (its sequence counter)
        and every subscriber."""
        limit = self.max_stream_len or MAX_BACKLOG
        readers: set[str] = set()
        seq_prefix = keys.bus_seq_prefix(self.run_id)
        subscriptions = keys.bus_subscriptions(self.run_id, "")
        for row in await self.store.scan(keys.bus_prefix(self.run_id)):
            if row.key.startswith(seq_prefix):  # <sender>:@<agent>|#<topic>:<priority>
                channel = row.key[len(seq_prefix) :].split(":")
                if len(channel) == 3 and channel[1].startswith("@"):
                    readers.add(channel[1][1:])
            elif row.key.startswith(subscriptions):
                readers.add(row.key[len(subscriptions) :])
        owed: dict[str, dict[str, list[bytes]]] = {}
        for agent in sorted(readers):
            if not _NAME_RE.fullmatch(agent):
                continue
            group = _group(agent)
            try:
                topics = await self.subscriptions(agent)
            except StoreDataError as exc:
                log.warning("backlog of %s: its topics are left out: %s", agent, exc)
                topics = []
            lanes: dict[str, list[bytes]] = {}
            for priority in PRIORITIES:
                inbox = keys.bus_inbox(self.run_id, agent, priority.value)
                entries = await self.store.unacknowledged(inbox, group, count=limit)
                if entries is None:  # the agent never read its inbox
                    entries = await self.store.read(inbox, "0", count=limit)
                records = [entry.record for entry in entries]
                for topic in topics:
                    stream = keys.bus_topic(self.run_id, topic, priority.value)
                    records += [
                        entry.record
                        for entry in await self.store.unacknowledged(stream, group, count=limit) or []
                    ]
                if records:
                    lanes[priority.value] = records
            owed[agent] = lanes
        return Backlog(owed)

    async def restore(self, backlog: Backlog) -> int:
        """After the store lost the run's data (and the kv pairs, subscriptions included, were
        written back): recreate each agent's consumer groups (its inbox from the start, its
        bell and topics from now on) and append what it was owed to its inbox of the same
        priority. Returns how many messages were put back."""
        restored = 0
        for agent, lanes in backlog.owed.items():
            group = _group(agent)
            await self.store.create_group(keys.bus_bell(self.run_id, agent), group, start="$")
            try:
                topics = await self.subscriptions(agent)
            except StoreDataError as exc:
                log.warning("restoring %s's topics failed: %s", agent, exc)
                topics = []
            for priority in PRIORITIES:
                for topic in topics:
                    await self.store.create_group(
                        keys.bus_topic(self.run_id, topic, priority.value), group, start="$"
                    )
                inbox = keys.bus_inbox(self.run_id, agent, priority.value)
                await self.store.create_group(inbox, group)
                for record in lanes.get(priority.value, []):
                    await self.store.append(inbox, record, maxlen=self.max_stream_len)
                    restored += 1
        return restored


def check_receipt(receipt: str, store_url: str = "") -> str:
    """``receipt`` if it is a message receipt (``inbox/<priority>/<id>`` or
    ``topic/<topic>/<priority>/<id>``) whose id a store may have issued, else ``BusError``.

    Receipts come from outside (``maos msg ack``, the ``ack_messages`` tool), so the id is
    checked here: ASCII digits within 64 bits (``maos.numbers``); on a SQLite store (its
    ``store_url``) a plain decimal, the only kind it issues."""
    parts = receipt.split("/") if isinstance(receipt, str) else []
    entry_id = None
    if len(parts) == 3 and parts[0] == "inbox" and parts[1] in _LEVELS:
        entry_id = parts[2]
    elif len(parts) == 4 and parts[0] == "topic" and parts[2] in _LEVELS:
        _check_name("topic", parts[1])
        entry_id = parts[3]
    if entry_id is None:
        raise BusError(
            f"{_shown(receipt)} is not a message receipt: expected inbox/<priority>/<id> or "
            "topic/<topic>/<priority>/<id>, as in Delivery.receipt"
        )
    try:
        check_stream_id(entry_id, "the id of a receipt")
    except NumberError as exc:
        raise BusError(f"{_shown(receipt)} is not a message receipt: {exc}") from None
    if store_url.startswith("sqlite:") and not entry_id.isdigit():
        raise BusError(f"{_shown(receipt)} is not a receipt of this store: its ids are decimal numbers")
    return receipt


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "…"


def _parse_counter(key: str, raw: bytes) -> int:
    """A sequence counter as stored: ASCII digits, at most ``MAX_INT64`` (``StoreDataError``)."""
    try:
        return parse_int(raw.decode("ascii"), f"sequence counter {key!r}")
    except (UnicodeDecodeError, NumberError) as exc:
        raise StoreDataError(f"sequence counter {key!r} holds {raw[:40]!r}, not a number") from exc


def _group(agent_id: str) -> str:
    """The consumer group of every stream ``agent_id`` reads."""
    return f"agent.{agent_id}"


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
    return {
        str(lane): seq
        for lane, seq in value.items()
        if type(seq) is int and 0 <= seq <= MAX_INT64  # store contents: bounded like any number
    }
