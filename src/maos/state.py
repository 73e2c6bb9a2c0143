"""Shared state for agents: a versioned JSON key-value space per run, on the ``Store``.

API::

    state = SharedState(store, run_id, *, max_value_bytes=262144)
    await state.get(key) -> StateEntry | None          # value (decoded JSON) and version
    await state.set(key, value) -> int                  # the new version
    await state.cas(key, expected_version, value) -> CasResult   # 0: only if absent
    await state.list(prefix="") -> list[StateEntry]     # sorted by key
    await state.update(key, fn, *, retries=10, backoff_s=0.005, max_backoff_s=0.5) -> StateEntry

Keys are namespaced with ``/`` (``api/schema``, ``team-a/progress``): one to
``MAX_KEY_CHARS`` characters, segments of letters, digits and ``_ . - @ :`` separated by single
slashes (no leading, trailing or double slash). ``list("api/")`` lists a namespace. Values are
any JSON value; the encoded JSON may be at most ``max_value_bytes``. Every bad input raises
``StateError`` naming the key and what was expected.

Versions are the store's: a missing key has version 0, every write adds one. ``update`` is
the optimistic read-modify-write of FR-3.3: read, apply ``fn``, compare-and-set; on a
conflict it sleeps a random time in ``[0, min(max_backoff_s, backoff_s * 2**attempt)]``
("full jitter", so writers that collided do not collide again in lock-step) and tries again,
up to ``retries`` more times, then raises ``StateConflict``. Updates of one key from one
process take turns, each starting from what the one before it wrote, so they cost one round
trip and never conflict with each other; a lost compare-and-set returns the current value,
so a retry needs no read (``maos.store.cas``). Not implemented: writer priorities (a
high-priority writer backing off less) from FR-3.3.

Values are sealed before they reach the store and opened after (``maos.security.ValueCipher``,
AES-GCM with the run's data key and the store key as associated data): by default on Redis,
with ``MAOS_ENCRYPT=1`` on SQLite. ``cipher="auto"`` (the default) finds the key the way
``maos.security.value_cipher`` says; clear values written before still read.

Access control is not here: ``maos.door`` binds state to an authenticated agent and logs
its writes; this module is the data layer and imports nothing heavy (``maos state get`` is
called from agent scripts in loops).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from maos.errors import StateConflict, StateError, StoreDataError
from maos.numbers import MAX_INT64
from maos.security import ValueCipher, open_value, value_cipher
from maos.store import keys
from maos.store.base import CasResult, Store, Versioned
from maos.store.cas import cas_update

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "KEY_PATTERN",
    "MAX_KEY_CHARS",
    "SharedState",
    "StateEntry",
    "check_key",
    "check_prefix",
    "encode_value",
]

JsonValue = Any
"""A value ``json.dumps`` accepts: dict, list, str, int, float, bool or None."""

MAX_KEY_CHARS: Final = 256
DEFAULT_MAX_VALUE_BYTES: Final = 256 * 1024
KEY_PATTERN: Final = r"^[A-Za-z0-9_.@:-]+(/[A-Za-z0-9_.@:-]+)*$"
_KEY_RE: Final = re.compile(KEY_PATTERN)
_PREFIX_RE: Final = re.compile(r"^(?:[A-Za-z0-9_.@:-]+/)*[A-Za-z0-9_.@:-]*$")
_KEY_RULE: Final = (
    f"1-{MAX_KEY_CHARS} characters: letters, digits and '_.-@:', with '/' between "
    "non-empty segments (e.g. 'api/schema')"
)


@dataclass(frozen=True, slots=True)
class StateEntry:
    """One key of shared state: its decoded JSON value and its version (>= 1)."""

    key: str
    value: JsonValue
    version: int


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid state key, else raise ``StateError`` saying why."""
    if not isinstance(key, str) or not key:
        raise StateError(f"state key {key!r} is empty: expected {_KEY_RULE}")
    if len(key) > MAX_KEY_CHARS:
        raise StateError(f"state key {key[:40]!r}... is {len(key)} characters long: expected {_KEY_RULE}")
    if _KEY_RE.fullmatch(key) is None:
        raise StateError(f"state key {key!r} is not valid: expected {_KEY_RULE}")
    return key


def check_prefix(prefix: str) -> str:
    """A prefix for ``list``: empty (everything), or the start of a key (may end with ``/``)."""
    if not isinstance(prefix, str) or len(prefix) > MAX_KEY_CHARS or _PREFIX_RE.fullmatch(prefix) is None:
        raise StateError(f"state prefix {prefix!r} is not valid: expected the start of a key, {_KEY_RULE}")
    return prefix


def encode_value(key: str, value: JsonValue, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> bytes:
    """The compact JSON of ``value``; ``StateError`` if it is not JSON or too large."""
    try:
        data = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:  # also UnicodeEncodeError: a lone surrogate
        raise StateError(f"value for state key {key!r} is not JSON: {exc}") from None
    except RecursionError:
        raise StateError(f"value for state key {key!r} is nested too deeply to be stored") from None
    if len(data) > max_value_bytes:
        raise StateError(
            f"value for state key {key!r} is {len(data)} bytes of JSON, above the limit of "
            f"{max_value_bytes} bytes; store a reference (a file path) instead"
        )
    return data


def _decode(store_key: str, raw: bytes, cipher: ValueCipher | None = None) -> JsonValue:
    raw = open_value(cipher, raw, store_key.encode(), f"state {store_key!r}")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise StoreDataError(f"state {store_key!r} does not hold JSON: {raw[:80]!r}") from exc


class SharedState:
    """The shared state of one run. Cheap to create; does not own (or close) the store."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        cipher: ValueCipher | Literal["auto"] | None = "auto",
    ) -> None:
        if max_value_bytes < 1:
            raise ValueError(f"max_value_bytes must be >= 1, not {max_value_bytes}")
        self.cipher = value_cipher(store.url, run_id) if cipher == "auto" else cipher
        self.store = store
        self.run_id = run_id
        self.max_value_bytes = max_value_bytes
        self._prefix = keys.state_prefix(run_id)

    def __repr__(self) -> str:
        return f"SharedState(run_id={self.run_id!r}, store={self.store.url!r})"

    def encode(self, key: str, value: JsonValue) -> bytes:
        """Validate ``key`` and ``value`` as a write would, and return the encoded value."""
        return encode_value(check_key(key), value, self.max_value_bytes)

    async def get(self, key: str) -> StateEntry | None:
        """The value and version of ``key``, or None if it does not exist."""
        store_key = keys.state_key(self.run_id, check_key(key))
        found = await self.store.get(store_key)
        if found is None:
            return None
        return StateEntry(key, _decode(store_key, found.value, self.cipher), found.version)

    def seal(self, store_key: str, data: bytes) -> bytes:
        """``data`` (from ``encode``) as stored under ``store_key``: sealed, if encryption is on."""
        return data if self.cipher is None else self.cipher.seal(data, store_key.encode())

    @property
    def sealed(self) -> bool:
        """True if values are encrypted before they reach the store."""
        return self.cipher is not None and self.cipher.write

    async def set(self, key: str, value: JsonValue) -> int:
        """Write ``value`` unconditionally; return the new version."""
        data = self.encode(key, value)
        store_key = keys.state_key(self.run_id, key)
        return await self.store.set(store_key, self.seal(store_key, data))

    async def cas(self, key: str, expected_version: int, value: JsonValue) -> CasResult:
        """Write only if ``key`` is at ``expected_version`` (0: only if it does not exist).

        ``result.version`` is the key's version after the call: the new one on success, the
        current one on a conflict."""
        if type(expected_version) is not int or not 0 <= expected_version < MAX_INT64:
            raise StateError(
                f"expected version for state key {key!r} must be an integer from 0 to {MAX_INT64 - 1}, "
                f"not {str(expected_version)[:40]!r}"
            )
        data = self.encode(key, value)
        store_key = keys.state_key(self.run_id, key)
        result = await self.store.cas(store_key, expected_version, self.seal(store_key, data))
        return CasResult(result.ok, result.version)  # not the sealed value a conflict found

    async def list(self, prefix: str = "") -> list[StateEntry]:
        """Every key starting with ``prefix``, sorted by key."""
        rows = await self.store.scan(self._prefix + check_prefix(prefix))
        start = len(self._prefix)
        return [
            StateEntry(row.key[start:], _decode(row.key, row.value, self.cipher), row.version) for row in rows
        ]

    async def update(
        self,
        key: str,
        fn: Callable[[JsonValue | None], JsonValue],
        *,
        retries: int = 10,
        backoff_s: float = 0.005,
        max_backoff_s: float = 0.5,
        rng: random.Random | None = None,
    ) -> StateEntry:
        """Atomically replace the value of ``key`` by ``fn(current)`` (None when absent).

        ``fn`` may run several times (once per attempt) and must not have side effects.
        Raises ``StateConflict`` after ``retries`` conflicts beyond the first attempt.
        """
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries}")
        store_key = keys.state_key(self.run_id, check_key(key))
        written: list[bytes] = []

        def change(found: Versioned | None) -> bytes:
            current = None if found is None else _decode(store_key, found.value, self.cipher)
            written[:] = [encode_value(key, fn(current), self.max_value_bytes)]
            return self.seal(store_key, written[0])

        try:
            updated = await cas_update(
                self.store,
                store_key,
                change,
                what=f"state key {key!r}",
                attempts=retries + 1,
                backoff_s=backoff_s,
                max_backoff_s=max_backoff_s,
                rng=rng,
            )
        except StateConflict as exc:
            raise StateConflict(
                f"{exc} (raise retries, or split the key)", key=key, attempts=exc.attempts
            ) from None
        assert updated is not None  # change always writes
        return StateEntry(key, json.loads(written[0]), updated.version)
