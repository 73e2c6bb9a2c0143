"""The Redis backend of the ``Store`` protocol (standalone Redis and Redis Cluster).

``open_store`` imports this module lazily, so ``redis.asyncio`` is only loaded when a
``redis://``, ``rediss://`` or ``redis+cluster://`` store is used.

TLS: ``rediss://host:port/db`` verifies the server's certificate and host name against the
system's CAs; ``?ssl_ca_certs=PATH`` trusts a private CA instead (and ``ssl_certfile``,
``ssl_keyfile`` give a client certificate). redis-py reads these from the URL; the URL (with
them, without a password) is what agents get as ``MAOS_STORE``. Tested against a real TLS
``redis-server`` in ``tests/door/test_at_rest.py``.

Key layout. Every store name is mapped to one Redis key by a fixed, brace-free prefix, so
the hash tag of the name (``{run:<id>}``, see ``maos.store.keys``) is also the hash tag of
the Redis key and all keys of one run live in one cluster slot:

- kv ``K``      -> ``maos:kv:K``, a HASH ``{v: value, ver: version}`` (one HMGET reads both);
- stream ``S``  -> ``maos:x:S``, a STREAM whose entries have one field ``d`` holding the record;
- lease ``L``   -> ``maos:lease:L``, a STRING holding the owner, with a PX expiry, and
  ``maos:epoch:L``, a STRING counter without expiry: the lease's epoch (ADR 0012).

The prefixes keep the three kinds apart (a kv key and a stream may share a name, as in the
SQLite backend) and let ``scan`` match kv keys only.

Atomic operations are single Lua scripts, one round trip each (EVALSHA; on NOSCRIPT, after a
server restart or on a new cluster node, the same call is repeated once as EVAL, which also
caches the script): kv ``set``/``cas`` (a lost ``cas`` returns the value it found),
lease ``acquire``/``renew``/``release`` and ``claim_stale`` (XAUTOCLAIM plus XPENDING for
the delivery counts of the claimed entries, which XAUTOCLAIM does not return). Nothing on
the hot path uses WATCH.

Combined calls (ADR 0009). ``transact`` and the group reads that do not block
(``read_group``/``read_groups`` without ``block_s``) are requests of one script, ``_BATCH``:
a request made while none is in flight goes out at once, those made meanwhile go out
together when it returns (``_Combiner``). So at low rates nothing waits, and under load one
round trip carries the sends, acknowledgements and reads of every task of the process. Each
request is still applied alone and in order, a transaction all or nothing; an error in one
is its own.

Failures. redis-py reconnects a dead pooled connection itself (a short ``Retry`` with
exponential backoff), which hides a single dropped connection. Longer outages are ridden
out here: each operation is retried with exponential backoff (50 ms doubling to 1 s) until
``RedisOptions.unavailable_after_s`` (30 s) have passed since its first failure, then it
raises ``StoreUnavailable`` naming the address and the cause. Each attempt is bounded by
``attempt_timeout_s`` (plus the block time of a blocking read), so a hung server is treated
like a lost connection. A retried write whose first attempt reached Redis before the
connection broke may be applied twice (an append appears twice, a ``set`` bumps the version
twice, a ``cas`` reports a conflict): MAOS delivery is at-least-once and readers deduplicate.
Every other Redis error becomes a ``StoreError`` with the address, the operation and a hint.

Blocking reads (``read``/``read_group`` with ``block_s``) hold a connection for as long as
they wait. On standalone Redis they use a second connection pool of their own so that they
never starve the short commands; on a cluster, redis-py keeps a pool per node
(``max_blocking_connections`` each) and blocking reads simply take one more connection.
A blocking read that gets nothing may return up to 1/hz (100 ms at Redis' default ``hz 10``)
after ``block_s``: Redis times blocked clients out from its cron, not at the millisecond.
A new record wakes a blocked reader at once. Each connection carries the name
``client_name()`` (``maos:<host>:<pid>``), so ``CLIENT LIST`` tells which process holds it and
which of them wait in a blocking read (flag ``b``).

Redis Cluster: redis-py re-reads the topology (CLUSTER SLOTS, and COMMAND, ~50 ms of CPU in
its pure-Python parser) after a node failure; the retries here keep doing so until a replica
has taken over. XREAD/XREADGROUP are sent straight to the node owning the stream's slot,
because redis-py would otherwise ask a node for the keys of these commands first.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import math
import os
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import hiredis
import redis.asyncio
import redis.exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from maos.errors import NoSuchGroup, StoreDataError, StoreError, StoreUnavailable
from maos.store.base import (
    AppendOp,
    CasOp,
    CasResult,
    Entry,
    FenceOp,
    KeyValue,
    PendingEntry,
    TransactResult,
    Versioned,
    WriteOp,
    check_maxlen,
    check_ops,
)

log = logging.getLogger("maos.store.redis")

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

KV_PREFIX = "maos:kv:"
STREAM_PREFIX = "maos:x:"
LEASE_PREFIX = "maos:lease:"
EPOCH_PREFIX = "maos:epoch:"
RECORD_FIELD = b"d"

_SCAN_BATCH = 500


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """Connection policy of a ``RedisStore``."""

    unavailable_after_s: float = 30.0
    """An operation that cannot reach Redis for this long raises ``StoreUnavailable``."""
    attempt_timeout_s: float = 10.0
    """One attempt of one command (plus the block time of a blocking read)."""
    connect_timeout_s: float = 5.0
    max_connections: int = 64
    """Pool for short commands; when all are busy, a command waits for a free one."""
    max_blocking_connections: int = 512
    """Pool for blocking reads (per node on a cluster); when full, a reader waits
    (standalone) or the read fails and is retried (cluster)."""
    backoff_first_s: float = 0.05
    backoff_max_s: float = 1.0


# ---------------------------------------------------------------------------- Lua scripts


class _Script:
    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # Redis' id of the script


_KV_SET = _Script(
    "kv_set",
    """
local ver = redis.call('HINCRBY', KEYS[1], 'ver', 1)
redis.call('HSET', KEYS[1], 'v', ARGV[1])
return ver
""",
)

_KV_CAS = _Script(
    "kv_cas",
    """
local cur = tonumber(redis.call('HGET', KEYS[1], 'ver')) or 0
if cur ~= tonumber(ARGV[1]) then
  return {0, cur, redis.call('HGET', KEYS[1], 'v')}
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'ver', cur + 1)
return {1, cur + 1}
""",
)

# KEYS: the lease, its epoch counter. A new holding bumps the epoch; the live holder's
# re-acquire renews and keeps it (an epoch lost with the data is started again).
_LEASE_ACQUIRE = _Script(
    "lease_acquire",
    """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local epoch = tonumber(redis.call('GET', KEYS[2])) or 0
  if epoch < 1 then
    epoch = redis.call('INCR', KEYS[2])
  end
  return epoch
end
return 0
""",
)

_LEASE_RENEW = _Script(
    "lease_renew",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
""",
)

_LEASE_RELEASE = _Script(
    "lease_release",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
""",
)

# XAUTOCLAIM scans at most 10 * COUNT pending entries per call, so a head of entries that
# are not idle yet can hide idle ones behind it: follow the cursor (at most 16 calls) until
# COUNT entries are claimed or the whole pending list was seen. Redis 7 drops entries that
# were trimmed away from the pending list itself and lists their ids in a third element,
# which is ignored; Redis 6.2 returns them with nil fields, so they are acknowledged here.
# XAUTOCLAIM does not report delivery counts: XPENDING on each claimed id does, inside the
# same script, so a claim stays one round trip.
_CLAIM = _Script(
    "claim_stale",
    """
local key, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local min_idle, count = ARGV[3], tonumber(ARGV[4])
local cursor = '0-0'
local out = {}
for _ = 1, 16 do
  local r = redis.call('XAUTOCLAIM', key, group, consumer, min_idle, cursor, 'COUNT', count - #out)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    if e and e[2] then
      local p = redis.call('XPENDING', key, group, e[1], e[1], 1)
      out[#out + 1] = {e[1], e[2], p[1][4]}
    elseif e then
      redis.call('XACK', key, group, e[1])
    end
  end
  if cursor == '0-0' or #out >= count then
    break
  end
end
return out
""",
)


# What a group still owes (Store.unacknowledged): false without the group, else its pending
# records (id, fields, deliveries) then those after its last-delivered id (deliveries 0).
_UNACKNOWLEDGED = _Script(
    "unacknowledged",
    """
local key, group, count = KEYS[1], ARGV[1], tonumber(ARGV[2])
local groups = redis.pcall('XINFO', 'GROUPS', key)
if type(groups) ~= 'table' or groups.err then
  return false
end
local last = nil
for _, g in ipairs(groups) do
  local name, cursor = nil, nil
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then cursor = g[i + 1] end
  end
  if name == group then last = cursor end
end
if last == nil then
  return false
end
local out = {}
for _, p in ipairs(redis.call('XPENDING', key, group, '-', '+', count)) do
  local rows = redis.call('XRANGE', key, p[1], p[1])
  if rows[1] then
    out[#out + 1] = {rows[1][1], rows[1][2], p[4]}
  end
end
if #out < count then
  for _, r in ipairs(redis.call('XRANGE', key, '(' .. last, '+', 'COUNT', count - #out)) do
    out[#out + 1] = {r[1], r[2], 0}
  end
end
return out
""",
)


# Several requests in one call (``_Combiner``), each applied as if alone, in order. KEYS are
# the keys of every request, in order; ARGV[1] is the number of requests, then per request
# its kind and arguments:
# - 't' n, then per op its kind and arguments: 'c' expected-version value | 'x' maxlen-or-''
#   record | 'a' group m id1..idm | 'f' epoch owner-or-''; ops take one key each, except a
#   fence, which takes two (the lease and its epoch counter). A transaction (Store.transact):
#   its fences are checked first, then its compare-and-sets; if one fails it writes nothing.
#   Reply {ok, versions, ids, acked, fenced}.
# - 'r' group consumer count m: XREADGROUP (without BLOCK) of the group on the m streams that
#   are its keys. Reply {1, the XREADGROUP reply or {}}.
# An error inside a request (a key of the wrong type, no such group) is its reply, {-1,
# message}: the other requests go ahead all the same.
_BATCH = _Script(
    "batch",
    """
-- A transaction's ops are ARGV[a .. a + ...), their keys KEYS[k ...): checked, then applied.
local function transact(n, a, k)
  local i, key = a, k
  for _ = 1, n do  -- fences first
    local kind = ARGV[i]
    if kind == 'f' then
      local epoch = tonumber(redis.call('GET', KEYS[key + 1])) or 0
      local owner = ARGV[i + 2]
      if epoch ~= tonumber(ARGV[i + 1]) or (owner ~= '' and redis.call('GET', KEYS[key]) ~= owner) then
        return {0, {}, {}, 0, 1}
      end
    end
    if kind == 'a' then
      i, key = i + 3 + tonumber(ARGV[i + 2]), key + 1
    else
      i, key = i + 3, key + (kind == 'f' and 2 or 1)
    end
  end
  local versions, ok = {}, 1
  i, key = a, k
  for _ = 1, n do  -- then compare-and-sets
    local kind = ARGV[i]
    if kind == 'c' then
      local cur = tonumber(redis.call('HGET', KEYS[key], 'ver')) or 0
      versions[#versions + 1] = cur
      if cur ~= tonumber(ARGV[i + 1]) then
        ok = 0
      end
    end
    if kind == 'a' then
      i, key = i + 3 + tonumber(ARGV[i + 2]), key + 1
    else
      i, key = i + 3, key + (kind == 'f' and 2 or 1)
    end
  end
  if ok == 0 then
    return {0, versions, {}, 0, 0}
  end
  local ids, acked, v = {}, 0, 0
  i, key = a, k
  for _ = 1, n do
    local kind = ARGV[i]
    if kind == 'c' then
      v = v + 1
      versions[v] = versions[v] + 1
      redis.call('HSET', KEYS[key], 'v', ARGV[i + 2], 'ver', versions[v])
    elseif kind == 'x' then
      if ARGV[i + 1] == '' then
        ids[#ids + 1] = redis.call('XADD', KEYS[key], '*', 'd', ARGV[i + 2])
      else
        ids[#ids + 1] = redis.call('XADD', KEYS[key], 'MAXLEN', '~', ARGV[i + 1], '*', 'd', ARGV[i + 2])
      end
    end
    if kind == 'a' then
      local m = tonumber(ARGV[i + 2])
      for q = i + 3, i + 2 + m, 1000 do  -- unpack has a limit of a few thousand values
        local last = math.min(q + 999, i + 2 + m)
        acked = acked + redis.call('XACK', KEYS[key], ARGV[i + 1], unpack(ARGV, q, last))
      end
      i, key = i + 3 + m, key + 1
    else
      i, key = i + 3, key + (kind == 'f' and 2 or 1)
    end
  end
  return {1, versions, ids, acked, 0}
end

local function read(m, a, k)
  local args = {'GROUP', ARGV[a], ARGV[a + 1], 'COUNT', ARGV[a + 2], 'STREAMS'}
  for q = k, k + m - 1 do
    args[#args + 1] = KEYS[q]
  end
  for _ = 1, m do
    args[#args + 1] = '>'
  end
  return {1, redis.call('XREADGROUP', unpack(args)) or {}}
end

local out, i, k = {}, 2, 1
for t = 1, tonumber(ARGV[1]) do
  local done, reply
  if ARGV[i] == 't' then
    local n, a, ka = tonumber(ARGV[i + 1]), i + 2, k
    i = a  -- skip this transaction's ops and keys
    for _ = 1, n do
      local kind = ARGV[i]
      if kind == 'a' then
        i, k = i + 3 + tonumber(ARGV[i + 2]), k + 1
      else
        i, k = i + 3, k + (kind == 'f' and 2 or 1)
      end
    end
    done, reply = pcall(transact, n, a, ka)
  else
    local m, a, ka = tonumber(ARGV[i + 4]), i + 1, k
    i, k = i + 5, k + m
    done, reply = pcall(read, m, a, ka)
  end
  if done then
    out[t] = reply
  else
    out[t] = {-1, type(reply) == 'table' and reply.err or tostring(reply)}
  end
end
return out
""",
)


# ---------------------------------------------------------------------------- errors


class _Executor(Protocol):
    """The one redis-py method this module calls on both client kinds (redis-py leaves
    ``Redis.execute_command`` unannotated)."""

    async def execute_command(self, *args: Any, **options: Any) -> Any: ...


_TRANSIENT: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,  # includes BusyLoadingError and MaxConnectionsError
    rexc.TimeoutError,
    rexc.ClusterDownError,  # includes MasterDownError
    rexc.TryAgainError,
    rexc.ReadOnlyError,  # a failover turned the node we talk to into a replica
    rexc.SlotNotCoveredError,
    OSError,  # includes TimeoutError: our own per-attempt bound
)
_PERMANENT: tuple[type[BaseException], ...] = (rexc.AuthenticationError, rexc.AuthorizationError)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, _TRANSIENT):
        return True
    if isinstance(exc, rexc.RedisClusterException):
        # The cluster client wraps "no node reachable" and "slots not covered (yet)" in its
        # generic exception; everything else from it is a usage error.
        return _find(exc, (rexc.ConnectionError, rexc.TimeoutError, OSError)) is not None or (
            "not covered" in str(exc)
        )
    return False


def _find(exc: BaseException, kinds: tuple[type[E], ...]) -> E | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, kinds):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def _cause(exc: BaseException) -> str:
    """A short, human cause for a connection failure: ``connection refused``."""
    if _find(exc, (ConnectionRefusedError,)):
        return "connection refused"
    if _find(exc, (rexc.AuthenticationError,)):
        return f"authentication failed ({exc}); put the password in the store URL"
    if isinstance(exc, rexc.BusyLoadingError):
        return "Redis is still loading its data set"
    if isinstance(exc, rexc.MaxConnectionsError):
        return "all connections of the pool are in use"
    if isinstance(exc, TimeoutError | rexc.TimeoutError):
        return "timed out"
    os_err = _find(exc, (OSError,))
    if os_err is not None:
        if isinstance(os_err, socket.gaierror):
            return f"host name not found ({os_err.strerror})"
        return os_err.strerror or str(os_err) or type(os_err).__name__
    text = str(exc).strip()
    return text or type(exc).__name__


_HINTS = {
    "OOM": "Redis is out of memory (maxmemory): free memory or raise maxmemory",
    "NOAUTH": "Redis requires a password: use redis://:PASSWORD@host:port",
    "WRONGPASS": "wrong user name or password in the store URL",
    "NOPERM": "the Redis user lacks a permission this operation needs",
    "MOVED": "this is a Redis Cluster node: use redis+cluster://host:port",
    "READONLY": "this node is a read-only replica: point the store at a primary",
    "WRONGTYPE": "the key holds another kind of value: another program uses the same key names",
    "NOGROUP": "the consumer group does not exist (create_group first)",
    "CROSSSLOT": "the keys of one call must share a hash tag such as {run:<id>}",
}


# ---------------------------------------------------------------------------- helpers


def _s(raw: object) -> str:
    if isinstance(raw, bytes):
        return raw.decode()
    if isinstance(raw, str):
        return raw
    raise StoreDataError(f"expected a string from Redis, got {raw!r}")


def _escape_glob(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _hash_tag(key: str) -> str | None:
    """The hash tag of a key name, as Redis Cluster computes it (None: the whole key)."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


def _ms(seconds: float) -> int:
    # "at least" semantics: round up, but ignore float noise such as 0.3 * 1000.
    return max(0, math.ceil(seconds * 1000 - 1e-6))


def _block_ms(block_s: float | None) -> int | None:
    """BLOCK argument for a wait of ``block_s``; None: do not block (BLOCK 0 waits forever)."""
    if block_s is None or block_s <= 0:
        return None
    return max(1, _ms(block_s))


def _record(fields: object) -> bytes:
    """The record of a stream entry: its ``RECORD_FIELD``, whatever other fields another
    program added; b"" (a record no decoder reads) when it has none."""
    if isinstance(fields, dict):
        value = fields.get(RECORD_FIELD)
    elif isinstance(fields, list | tuple):  # a script's reply: field, value, field, value…
        pairs = dict(zip(fields[::2], fields[1::2], strict=False))
        value = pairs.get(RECORD_FIELD)
    else:
        value = None
    return value if isinstance(value, bytes) else b""


def _version(key: str, raw: object) -> int:
    """A kv hash's version field; ``StoreDataError`` if another program wrote no number there."""
    try:
        return int(_s(raw))
    except (ValueError, StoreDataError):
        raise StoreDataError(f"kv key {key!r} has a version that is not a number: {raw!r:.40}") from None


def _entries(response: Any, deliveries: int) -> list[Entry]:
    """Entries of an XREAD/XREADGROUP reply (redis-py: ``[[stream, [(id, fields)]]]``)."""
    out: list[Entry] = []
    for _stream, items in _streams_of(response):
        for raw_id, fields in items:
            if raw_id is None or fields is None:  # deleted while pending (old Redis)
                continue
            entry_id = _s(raw_id)
            out.append(Entry(entry_id, _record(fields), deliveries))
    return out


def _streams_of(response: Any) -> list[tuple[Any, Any]]:
    """(stream key, items) pairs of an XREAD/XREADGROUP reply (a list in RESP2, a map in RESP3)."""
    if not response:
        return []
    if isinstance(response, dict):
        return list(response.items())
    return [(item[0], item[1]) for item in response]


def client_name() -> str:
    """The name this process's connections carry in ``CLIENT LIST``: ``maos:<host>:<pid>``
    (Redis refuses spaces and control characters in it: those become ``_``)."""
    return re.sub(r"[^!-~]", "_", f"maos:{socket.gethostname()}:{os.getpid()}")


def check_url_options(url: str) -> None:
    """``StoreError`` unless redis-py takes the options of ``url``'s query string
    (``rediss://host?ssl_ca_certs=ca.pem``): each a parameter its connections (or a Cluster
    client) have, with a value of its type, a number finite and not negative. redis-py checks
    them only when it connects, with a TypeError or ValueError. Connects to nothing: a
    connection object is built, not opened."""
    cluster = url.startswith("redis+cluster://")
    plain = "redis://" + url.removeprefix("redis+cluster://") if cluster else url
    try:
        kwargs: dict[str, Any] = dict(parse_url(plain))
    except ValueError as exc:  # "Invalid value for 'db' in connection URL."
        raise StoreError(str(exc).rstrip(".")) from None
    connection_class = kwargs.pop("connection_class", redis.asyncio.Connection)
    takes = _parameters(connection_class)
    unknown = sorted(set(kwargs) - takes - (_parameters(RedisCluster) if cluster else set()))
    if unknown:
        raise StoreError(f"{', '.join(map(repr, unknown))}: not an option of a Redis connection")
    for name, value in kwargs.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and not (math.isfinite(value) and value >= 0):
            raise StoreError(f"{name}={value!r}: expected a finite number, 0 or more")
    try:
        connection_class(**{name: value for name, value in kwargs.items() if name in takes})
    except (TypeError, ValueError, rexc.RedisError) as exc:  # ssl_cert_reqs=bogus
        raise StoreError(str(exc)) from None


def _parameters(cls: type) -> set[str]:
    """The keyword parameters of ``cls(...)``: of each ``__init__`` along its MRO."""
    return {
        name
        for klass in cls.__mro__
        if "__init__" in vars(klass) and klass is not object
        for name, param in inspect.signature(vars(klass)["__init__"]).parameters.items()
        if name != "self" and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
    }


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "localhost", parts.port or 6379


def _tagged(name: str) -> str:
    """``name`` if it holds a hash tag (``{run:…}``), else the whole name as one."""
    return name if "{" in name else "{" + name + "}"


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


# ---------------------------------------------------------------------------- combined calls

MAX_COMBINED = 256
"""Requests in one script call at most (and ``MAX_COMBINED_BYTES`` of values)."""
MAX_COMBINED_BYTES = 1 << 20
MAX_FLIGHTS = 1
"""Script calls of combined requests in flight at once (per cluster slot)."""


@dataclass(eq=False, slots=True)
class _Request:
    """One ``transact`` or non-blocking ``read_groups`` call, waiting for its script call."""

    keys: list[str]
    args: list[Any]  # its kind ('t' or 'r', see _BATCH) and arguments
    what: str
    size: int  # bytes of values and records
    decode: Callable[[Any], Any]  # its reply -> its result
    future: asyncio.Future[Any]


class _Combiner:
    """Sends concurrent requests of one store together, in one script call (``_BATCH``):
    transactions and group reads that do not block.

    A request made while no call of its group is in flight goes out at once (in the next
    turn of the event loop, with whatever else was submitted in the same turn): no added
    latency when idle. Requests made while one is in flight wait for it and then go out
    together, up to ``MAX_COMBINED`` (``MAX_COMBINED_BYTES``) per call: the busier the
    store, the more each round trip carries. Each is still applied alone (a transaction all
    or nothing), in the order they were submitted. A group is a cluster slot (every key of
    one call must live in one slot; a request whose keys span slots goes alone and gets
    Redis' CROSSSLOT error), or the whole server.

    The flights are tasks owned here (``close`` cancels them); a caller cancelled while its
    request waits takes it out of the queue, one cancelled while it is in flight does not
    stop it (as for a command already sent).
    """

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._queues: dict[int | None, list[_Request]] = {}
        self._flights: dict[int | None, set[asyncio.Task[None]]] = {}

    async def run(self, request: _Request) -> Any:
        client = self._store._client
        group: int | None = None
        if isinstance(client, RedisCluster):
            slots = {client.keyslot(key) for key in request.keys}
            if len(slots) > 1:  # CROSSSLOT: alone, so the error is its own
                await self._send([request], None)
                return await request.future
            group = slots.pop()
        self._queues.setdefault(group, []).append(request)
        flights = self._flights.setdefault(group, set())
        if len(flights) < MAX_FLIGHTS:
            flights.add(asyncio.get_running_loop().create_task(self._fly(group)))
        return await request.future

    async def close(self) -> None:
        flights = [task for tasks in self._flights.values() for task in tasks]
        for task in flights:
            task.cancel()
        await asyncio.gather(*flights, return_exceptions=True)
        for queue in self._queues.values():
            for request in queue:
                _fail(request.future, self._closed(request))
        self._queues.clear()

    def _closed(self, request: _Request) -> StoreError:
        return StoreError(f"the store {self._store.url} was closed during {request.what}")

    async def _fly(self, group: int | None) -> None:
        try:
            while batch := self._take(group):
                await self._send(batch, group)
                if self._queues.get(group):
                    # Busy: let the callers just answered run first, so that what they send
                    # next goes out with what is queued already.
                    await asyncio.sleep(0)
        finally:
            task = asyncio.current_task()
            flights = self._flights.get(group)
            if flights is not None and task is not None:
                flights.discard(task)
                if not flights:
                    del self._flights[group]

    def _take(self, group: int | None) -> list[_Request]:
        queue = self._queues.get(group)
        if not queue:
            return []
        batch: list[_Request] = []
        size = 0
        taken = 0
        for request in queue:
            if len(batch) >= MAX_COMBINED or (batch and size + request.size > MAX_COMBINED_BYTES):
                break
            taken += 1
            if not request.future.done():  # cancelled while waiting: not sent
                batch.append(request)
                size += request.size
        del queue[:taken]
        if not queue:
            del self._queues[group]
        return batch

    async def _send(self, batch: list[_Request], group: int | None) -> None:
        store = self._store
        what = batch[0].what if len(batch) == 1 else f"{len(batch)} requests ({batch[0].what}, ...)"
        keys = [key for request in batch for key in request.keys]
        args: list[Any] = [len(batch)]
        for request in batch:
            args += request.args
        try:
            replies = await store._eval(what, _BATCH, keys, *args)
        except asyncio.CancelledError:
            for request in batch:
                _fail(request.future, self._closed(request))
            raise
        except Exception as exc:
            failed = batch
            if isinstance(exc, StoreUnavailable):
                # Those queued meanwhile waited through the same outage: they fail with it.
                failed = batch + self._queues.pop(group, [])
            for request in failed:
                _fail(request.future, _copy(exc))
            return
        for request, reply in zip(batch, replies, strict=True):
            if request.future.done():
                continue
            if int(reply[0]) < 0:
                request.future.set_exception(store._translate(request.what, rexc.ResponseError(_s(reply[1]))))
                continue
            try:
                request.future.set_result(request.decode(reply))
            except Exception as exc:  # e.g. StoreDataError: a stream entry without its field
                request.future.set_exception(exc)


def _transact_result(reply: Any) -> TransactResult:
    ok, versions, ids, acked, fenced = reply
    return TransactResult(
        ok=bool(ok),
        versions=tuple(int(v) for v in versions),
        ids=tuple(_s(i) for i in ids),
        acked=int(acked),
        fenced=bool(fenced),
    )


def _read_result(reply: Any) -> dict[str, list[Entry]]:
    found: dict[str, list[Entry]] = {}
    for raw_key, items in _streams_of(reply[1]):
        entries = _entries([[raw_key, items]], deliveries=1)
        if entries:
            found[_s(raw_key).removeprefix(STREAM_PREFIX)] = entries
    return found


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _copy(exc: Exception) -> Exception:
    """A ``StoreError`` of its own for each caller that shares a failed script call (one
    exception object raised in several tasks would collect all their tracebacks)."""
    if not isinstance(exc, StoreError):
        return exc
    copy = type(exc)(*exc.args)
    copy.__cause__ = exc.__cause__
    return copy


class _PackedInC:
    """Commands packed by hiredis. redis-py's asyncio connections pack them in Python, about
    a microsecond per argument (its sync ones use hiredis): a combined call of a busy process
    has hundreds of arguments. The same bytes on the wire."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):  # "CLIENT SETNAME": words are separate arguments
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        return [hiredis.pack_command(args)]


class _Connection(_PackedInC, redis.asyncio.Connection):
    pass


class _SSLConnection(_PackedInC, redis.asyncio.SSLConnection):
    pass


def _pool(url: str, max_connections: int, options: dict[str, Any]) -> redis.asyncio.BlockingConnectionPool:
    """``BlockingConnectionPool.from_url`` with the connection classes above."""
    kwargs = {**options, **parse_url(url)}
    plain = kwargs.pop("connection_class", None) is not redis.asyncio.SSLConnection
    return redis.asyncio.BlockingConnectionPool(
        connection_class=_Connection if plain else _SSLConnection,
        max_connections=max_connections,
        timeout=None,
        **kwargs,
    )


# ---------------------------------------------------------------------------- the store


class RedisStore:
    """``Store`` on one Redis server or a Redis Cluster. Open with ``RedisStore.open(url)``."""

    def __init__(
        self,
        url: str,
        client: redis.asyncio.Redis | RedisCluster,
        blocking: redis.asyncio.Redis | RedisCluster,
        *,
        address: str,
        options: RedisOptions,
        connect_url: str | None = None,
    ) -> None:
        self.url = url  # for messages and logs: its password, if any, is masked
        self.connect_url = connect_url or url  # with the password: for child processes only
        self.address = address
        self.options = options
        self._client = client
        self._blocking = blocking
        self._kind = "Redis Cluster" if isinstance(client, RedisCluster) else "Redis"
        self._closed = False
        self._combiner = _Combiner(self)

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    async def open(cls, url: str, *, options: RedisOptions | None = None) -> Self:
        """Connect to the Redis (``redis://``, ``rediss://``) or Redis Cluster
        (``redis+cluster://host:port``, any one node) at ``url`` and check that it answers.

        Fails fast (no retry loop): ``StoreUnavailable`` names the address and the cause.
        """
        opts = options or RedisOptions()
        host, port = _address(url)
        address = f"{host}:{port}"
        common: dict[str, Any] = {
            "socket_connect_timeout": opts.connect_timeout_s,
            # No socket timeout: blocking reads wait as long as asked; every attempt is
            # bounded by asyncio.timeout in _call instead.
            "socket_timeout": None,
            "retry": Retry(ExponentialBackoff(cap=0.2, base=0.01), retries=2),
            "health_check_interval": 0,
            "client_name": client_name(),
        }
        client: redis.asyncio.Redis | RedisCluster
        blocking: redis.asyncio.Redis | RedisCluster
        if url.startswith("redis+cluster://"):
            plain = "redis://" + url.removeprefix("redis+cluster://")
            client = RedisCluster.from_url(plain, max_connections=opts.max_blocking_connections, **common)
            blocking = client
        else:
            client = redis.asyncio.Redis.from_pool(_pool(url, opts.max_connections, common))
            blocking = redis.asyncio.Redis.from_pool(_pool(url, opts.max_blocking_connections, common))
        store = cls(_redact(url), client, blocking, address=address, options=opts, connect_url=url)
        try:
            await store._check()
        except BaseException:
            await store.close()
            raise
        return store

    async def _check(self) -> None:
        try:
            async with asyncio.timeout(self.options.attempt_timeout_s):
                if isinstance(self._client, RedisCluster):
                    await self._client.initialize()
                    await self._x(self._client).execute_command("PING", target_nodes=RedisCluster.PRIMARIES)
                    return
                info = await self._x(self._client).execute_command("INFO", "cluster")
        except rexc.RedisClusterException as exc:
            if "not enabled" in str(exc):
                raise StoreError(
                    f"Redis at {self.address} is not a cluster (cluster mode is not enabled): "
                    f"use redis://{self.address}"
                ) from exc
            raise self._translate("connect", exc) from exc
        except (rexc.RedisError, OSError, TimeoutError) as exc:
            raise self._translate("connect", exc) from exc
        if isinstance(info, dict) and info.get("cluster_enabled"):
            raise StoreError(f"Redis at {self.address} is a cluster node: use redis+cluster://{self.address}")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._combiner.close()
        await self._client.aclose()
        if self._blocking is not self._client:
            await self._blocking.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ plumbing
    @staticmethod
    def _x(client: redis.asyncio.Redis | RedisCluster) -> _Executor:
        return cast(_Executor, client)

    def _translate(self, what: str, exc: BaseException) -> StoreError:
        if _is_transient(exc) or isinstance(exc, rexc.AuthenticationError | OSError):
            return StoreUnavailable(f"cannot reach {self._kind} at {self.address}: {_cause(exc)}")
        text = str(exc).strip() or type(exc).__name__
        hint = _HINTS.get(text.split(" ", 1)[0])
        message = f"{self._kind} at {self.address}: {what} failed: {text}"
        kind = NoSuchGroup if text.startswith("NOGROUP") else StoreError
        return kind(f"{message} ({hint})" if hint else message)

    async def _call(self, what: str, op: Callable[[], Awaitable[T]], *, block_s: float = 0.0) -> T:
        """Run ``op`` until it succeeds, retrying connection failures for up to
        ``unavailable_after_s``; translate every Redis error into a ``StoreError``."""
        loop = asyncio.get_running_loop()
        opts = self.options
        started: float | None = None  # time of the first failure
        cause = ""  # of the last failure that was not our own attempt timeout
        failures = 0
        while True:
            if self._closed:
                raise StoreError(f"the store {self.url} is closed")
            budget = opts.attempt_timeout_s
            if started is not None:
                budget = min(budget, max(0.1, started + opts.unavailable_after_s - loop.time()))
            try:
                async with asyncio.timeout(budget + block_s):
                    result = await op()
            except (rexc.RedisError, rexc.RedisClusterException, OSError) as exc:
                if self._closed:
                    raise StoreError(f"the store {self.url} was closed during {what}") from exc
                if not _is_transient(exc):
                    raise self._translate(what, exc) from exc
                now = loop.time()
                if not (cause and type(exc) is TimeoutError):
                    cause = _cause(exc)
                    node = getattr(exc, "last_failed_node_name", None)  # set by RedisCluster
                    if isinstance(node, str) and node != self.address:
                        cause += f" (node {node})"
                if started is None:
                    started = now
                    log.warning(
                        "lost %s at %s during %s: %s; retrying for up to %.0f s",
                        self._kind, self.address, what, cause, opts.unavailable_after_s,
                    )  # fmt: skip
                left = started + opts.unavailable_after_s - now
                if left <= 0:
                    raise StoreUnavailable(
                        f"cannot reach {self._kind} at {self.address}: {cause} "
                        f"(gave up {what} after {now - started:.1f} s)"
                    ) from exc
                failures += 1
                await asyncio.sleep(min(opts.backoff_first_s * 2 ** (failures - 1), opts.backoff_max_s, left))
                continue
            if started is not None:
                log.info(
                    "%s at %s is back after %.1f s (%s)",
                    self._kind, self.address, loop.time() - started, what,
                )  # fmt: skip
            return result

    async def _cmd(self, what: str, *args: Any, **options: Any) -> Any:
        client = self._x(self._client)
        return await self._call(what, lambda: client.execute_command(*args, **options))

    async def _eval(self, what: str, script: _Script, keys: Sequence[str], *args: Any) -> Any:
        client = self._x(self._client)

        async def run() -> Any:
            try:
                return await client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            except rexc.NoScriptError:
                # Fresh server (restart, new cluster node): EVAL runs and caches it.
                return await client.execute_command("EVAL", script.source, len(keys), *keys, *args)

        return await self._call(what, run)

    async def _read_cmd(self, what: str, key: str, block_ms: int | None, *args: Any) -> Any:
        """XREAD/XREADGROUP: on the blocking pool when blocking; routed by key on a cluster
        (redis-py would otherwise ask a node COMMAND GETKEYS first: an extra round trip)."""
        client = self._x(self._blocking if block_ms is not None else self._client)

        async def run() -> Any:
            options: dict[str, Any] = {}
            if isinstance(self._client, RedisCluster):
                options["target_nodes"] = self._client.get_node_from_key(key)
            return await client.execute_command(*args, **options)

        block_s = 0.0 if block_ms is None else block_ms / 1000
        return await self._call(what, run, block_s=block_s)

    # ------------------------------------------------------------------ key names
    # The one place where store names become Redis keys (tests override these to record
    # the keys a test touched). The prefixes contain no "{", so a name's hash tag survives.
    def _kv(self, key: str) -> str:
        return KV_PREFIX + key

    def _stream(self, stream: str) -> str:
        return STREAM_PREFIX + stream

    # A lease and its epoch counter go in one script: on a cluster they must share a slot, so
    # a name without a hash tag of its own (a worker's) is made one.
    def _lease(self, name: str) -> str:
        return LEASE_PREFIX + _tagged(name)

    def _epoch(self, name: str) -> str:
        return EPOCH_PREFIX + _tagged(name)

    # ------------------------------------------------------------------ kv
    async def get(self, key: str) -> Versioned | None:
        value, version = await self._cmd(f"get {key!r}", "HMGET", self._kv(key), "v", "ver")
        if version is None:
            return None
        if value is None:
            raise StoreDataError(f"kv key {key!r} has a version but no value")
        return Versioned(bytes(value), _version(key, version))

    async def set(self, key: str, value: bytes) -> int:
        return int(await self._eval(f"set {key!r}", _KV_SET, [self._kv(key)], value))

    async def delete(self, key: str) -> bool:
        return int(await self._cmd(f"delete {key!r}", "DEL", self._kv(key))) > 0

    async def cas(self, key: str, expected_version: int, value: bytes) -> CasResult:
        ok, version, *found = await self._eval(
            f"cas {key!r}", _KV_CAS, [self._kv(key)], int(expected_version), value
        )
        if ok:
            return CasResult(True, int(version))
        if not version:
            return CasResult(False, 0)
        if not found or found[0] is None:
            raise StoreDataError(f"kv key {key!r} has a version but no value")
        return CasResult(False, int(version), Versioned(bytes(found[0]), int(version)))

    async def transact(self, ops: Sequence[WriteOp]) -> TransactResult:
        check_ops(ops)
        if not ops:
            return TransactResult(ok=True)
        keys: list[str] = []
        args: list[Any] = [len(ops)]
        size = 0
        for op in ops:
            if isinstance(op, CasOp):
                keys.append(self._kv(op.key))
                args += ["c", int(op.expected_version), op.value]
                size += len(op.value)
            elif isinstance(op, AppendOp):
                keys.append(self._stream(op.stream))
                args += ["x", "" if op.maxlen is None else int(op.maxlen), op.record]
                size += len(op.record)
            elif isinstance(op, FenceOp):
                keys += [self._lease(op.lease), self._epoch(op.lease)]
                args += ["f", int(op.epoch), op.owner or ""]
            else:
                keys.append(self._stream(op.stream))
                args += ["a", op.group, len(op.ids), *op.ids]
                size += 16 * len(op.ids)
        request = _Request(
            keys,
            ["t", *args],
            f"transaction of {len(ops)} writes on {keys[0]!r}",
            size,
            _transact_result,
            asyncio.get_running_loop().create_future(),
        )
        result: TransactResult = await self._combiner.run(request)
        return result

    async def scan(self, prefix: str) -> list[KeyValue]:
        full_prefix = self._kv(prefix)
        pattern = _escape_glob(full_prefix) + "*"
        keys = await self._call(f"scan {prefix!r}", lambda: self._scan_keys(full_prefix, pattern))
        out: list[KeyValue] = []
        for start in range(0, len(keys), _SCAN_BATCH):
            batch = keys[start : start + _SCAN_BATCH]
            rows = await self._call(f"scan {prefix!r}", functools.partial(self._hmget_many, batch))
            for raw_key, row in zip(batch, rows, strict=True):
                # A key of another type (another program's) answers with an error: not ours.
                if isinstance(row, Exception) or row[0] is None or row[1] is None:  # or deleted since
                    continue
                key = raw_key.decode(errors="replace").removeprefix(KV_PREFIX)
                try:
                    out.append(KeyValue(key, bytes(row[0]), _version(key, row[1])))
                except StoreDataError as exc:
                    log.warning("scan %r: %s; skipped", prefix, exc)
        out.sort(key=lambda kv: kv.key)
        return out

    async def _scan_keys(self, full_prefix: str, pattern: str) -> list[bytes]:
        found: set[bytes] = set()
        client = self._client
        if isinstance(client, RedisCluster):
            # A prefix that contains a whole hash tag lives in one slot: ask one node.
            nodes = (
                client.get_node_from_key(full_prefix)
                if _hash_tag(full_prefix) is not None
                else client.get_primaries()
            )
            async for key in client.scan_iter(match=pattern, count=1000, target_nodes=nodes):
                found.add(bytes(key))
        else:
            async for key in client.scan_iter(match=pattern, count=1000):
                found.add(bytes(key))
        return sorted(found)

    async def _hmget_many(self, keys: Sequence[bytes]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, ["v", "ver"])
            return await pipe.execute(raise_on_error=False)

    # ------------------------------------------------------------------ streams
    async def append(self, stream: str, record: bytes, *, maxlen: int | None = None) -> str:
        check_maxlen(maxlen, f"append to {stream!r}")
        trim: tuple[Any, ...] = () if maxlen is None else ("MAXLEN", "~", int(maxlen))
        raw = await self._cmd(
            f"append to {stream!r}", "XADD", self._stream(stream), *trim, "*", RECORD_FIELD, record
        )
        return _s(raw)

    async def read(
        self, stream: str, after: str = "0", *, count: int = 1000, block_s: float | None = None
    ) -> list[Entry]:
        if count < 1:
            return []
        block_ms = _block_ms(block_s)
        blocking = () if block_ms is None else ("BLOCK", block_ms)
        response = await self._read_cmd(
            f"read {stream!r}",
            self._stream(stream),
            block_ms,
            "XREAD", "COUNT", int(count), *blocking, "STREAMS", self._stream(stream), after,
        )  # fmt: skip
        return _entries(response, deliveries=0)

    async def last_id(self, stream: str) -> str:
        rows = await self._cmd(
            f"last id of {stream!r}", "XREVRANGE", self._stream(stream), "+", "-", "COUNT", 1
        )
        return _s(rows[0][0]) if rows else "0"

    async def length(self, stream: str) -> int:
        return int(await self._cmd(f"length of {stream!r}", "XLEN", self._stream(stream)))

    async def trim(self, stream: str, maxlen: int) -> int:
        check_maxlen(maxlen, f"trim {stream!r}")
        return int(await self._cmd(f"trim {stream!r}", "XTRIM", self._stream(stream), "MAXLEN", int(maxlen)))

    async def create_group(self, stream: str, group: str, *, start: str = "0") -> bool:
        key = self._stream(stream)
        try:
            await self._cmd(
                f"create group {group!r} on {stream!r}", "XGROUP", "CREATE", key, group, start, "MKSTREAM"
            )
        except StoreError as exc:
            if isinstance(exc.__cause__, rexc.ResponseError) and str(exc.__cause__).startswith("BUSYGROUP"):
                return False
            raise
        return True

    async def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        count: int = 100,
        block_s: float | None = None,
    ) -> list[Entry]:
        found = await self.read_groups([stream], group, consumer, count=count, block_s=block_s)
        return found.get(stream, [])

    async def read_groups(
        self,
        streams: Sequence[str],
        group: str,
        consumer: str,
        *,
        count: int = 100,
        block_s: float | None = None,
    ) -> dict[str, list[Entry]]:
        streams = list(dict.fromkeys(streams))
        if count < 1 or not streams:
            return {}
        keys = [self._stream(stream) for stream in streams]
        what = f"read group {group!r} of {streams[0]!r}" + (
            f" and {len(streams) - 1} more" if len(streams) > 1 else ""
        )
        block_ms = _block_ms(block_s)
        found: dict[str, list[Entry]]
        if block_ms is None:  # in a script call shared with the process's other requests
            args = ["r", group, consumer, int(count), len(keys)]
            future = asyncio.get_running_loop().create_future()
            found = await self._combiner.run(_Request(keys, args, what, 0, _read_result, future))
        else:  # on a connection of its own, held while it waits
            response = await self._read_cmd(
                what,
                keys[0],
                block_ms,
                "XREADGROUP", "GROUP", group, consumer, "COUNT", int(count), "BLOCK", block_ms,
                "STREAMS", *keys, *([">"] * len(keys)),
            )  # fmt: skip
            found = _read_result([1, response])
        return {stream: found[stream] for stream in streams if stream in found}

    async def ack(self, stream: str, group: str, ids: list[str]) -> int:
        if not ids:
            return 0
        what = f"ack on {stream!r} group {group!r}"
        return int(await self._cmd(what, "XACK", self._stream(stream), group, *ids))

    async def pending(self, stream: str, group: str, *, count: int = 1000) -> list[PendingEntry]:
        if count < 1:
            return []
        rows = await self._cmd(
            f"pending of {stream!r} group {group!r}",
            "XPENDING", self._stream(stream), group, "-", "+", int(count),
            parse_detail=True,
        )  # fmt: skip
        return [
            PendingEntry(
                id=_s(row["message_id"]),
                consumer=_s(row["consumer"]),
                idle_s=int(row["time_since_delivered"]) / 1000,
                deliveries=int(row["times_delivered"]),
            )
            for row in rows
        ]

    async def unacknowledged(self, stream: str, group: str, *, count: int = 1000) -> list[Entry] | None:
        if count < 1:
            return []
        rows = await self._eval(
            f"unacknowledged of {stream!r} group {group!r}",
            _UNACKNOWLEDGED,
            [self._stream(stream)],
            group,
            int(count),
        )
        if rows is None:
            return None
        out: list[Entry] = []
        for raw_id, fields, deliveries in rows:
            entry_id = _s(raw_id)
            out.append(Entry(entry_id, _record(fields), int(deliveries)))
        return out

    async def claim_stale(
        self, stream: str, group: str, consumer: str, *, min_idle_s: float, count: int = 100
    ) -> list[Entry]:
        if count < 1:
            return []
        rows = await self._eval(
            f"claim on {stream!r} group {group!r}",
            _CLAIM,
            [self._stream(stream)],
            group,
            consumer,
            _ms(min_idle_s),
            int(count),
        )
        out: list[Entry] = []
        for raw_id, fields, deliveries in rows:
            entry_id = _s(raw_id)
            out.append(Entry(entry_id, _record(fields), int(deliveries)))
        return out

    # ------------------------------------------------------------------ leases
    async def acquire(self, name: str, owner: str, ttl_s: float) -> int:
        ttl = max(1, _ms(ttl_s))
        return int(
            await self._eval(
                f"acquire lease {name!r}", _LEASE_ACQUIRE, [self._lease(name), self._epoch(name)], owner, ttl
            )
        )

    async def renew(self, name: str, owner: str, ttl_s: float) -> bool:
        ttl = max(1, _ms(ttl_s))
        return bool(await self._eval(f"renew lease {name!r}", _LEASE_RENEW, [self._lease(name)], owner, ttl))

    async def release(self, name: str, owner: str) -> bool:
        return bool(await self._eval(f"release lease {name!r}", _LEASE_RELEASE, [self._lease(name)], owner))

    async def holder(self, name: str) -> str | None:
        raw = await self._cmd(f"holder of lease {name!r}", "GET", self._lease(name))
        return None if raw is None else bytes(raw).decode(errors="replace")

    async def epoch(self, name: str) -> int:
        raw = await self._cmd(f"epoch of lease {name!r}", "GET", self._epoch(name))
        if raw is None:
            return 0
        try:
            return int(raw)
        except ValueError:
            raise StoreDataError(f"lease {name!r} has an epoch that is not a number: {raw!r:.40}") from None
