"""Security: keys and encryption; per-agent and per-attempt tokens.

Keys and encryption
-------------------
One 32-byte key encrypts checkpoints (and, later, messages). ``load_or_create_key`` finds it:

1. ``MAOS_KEY``: 64 hex digits or base64 (standard or URL-safe, padding optional) of 32 bytes.
   An empty or blank value counts as unset.
2. else the key file ``.maos/key`` (the same text format). On first use MAOS creates it with
   mode 0600 and a random key, and returns ``created=True`` so the CLI can tell the user to
   back it up: without it the checkpoints cannot be read.

A key file that the group or others may read (any of mode bits 0o077) is refused, like ssh
refuses a private key: the error names the file and says ``chmod 600 FILE``.

Rotation: ``MAOS_OLD_KEYS`` holds earlier keys, comma or whitespace separated, same formats.
They are used for reading only; everything new is written with the current key.

Encrypted format (version 1), AES-256-GCM with a random 96-bit nonce per message::

    offset  size  field
         0     4  magic  b"MAOS"
         4     1  version (1)
         5     8  key id: the first 8 bytes of sha256(key)
        13     4  CRC-32 of bytes 0..13, big-endian
        17    12  nonce
        29     …  ciphertext followed by the 16-byte GCM tag

Bytes 0..17 and the caller's ``aad`` are authenticated together with the ciphertext. The key
id says which key to use and lets a wrong key be reported as such ("written with key id A,
the key in use is B") instead of as corruption; the CRC keeps a damaged key id from being
reported as a wrong key. Any other change fails GCM authentication: ``DecryptionError``.

Per-agent tokens
----------------
An agent proves who it is to the door (``maos state …``, ``maos msg …``, ``maos mcp``) with
``MAOS_AGENT_TOKEN``: ``issue_token(secret, run_id, agent_id)`` = ``"maos1."`` + base64url of
HMAC-SHA256(run secret, label ‖ run_id ‖ NUL ‖ agent_id). The run secret is 32 random bytes
kept in the store under the run's hash tag (``keys.run_secret``), created once per run by
``ensure_run_secret`` (idempotent: ``cas(key, 0, …)``, so racing creators agree on one). So
any process with store access verifies a token without a registry (``verify_token``,
constant-time), a token of agent A is useless for agent B or for another run, and nothing
needs revoking when a run ends.

What it protects: an agent speaking *through the door* as another agent. What it does not:
an agent process that can open the store itself (the SQLite file, the Redis URL) can read
the secret or write anything; isolating hostile agents needs the store out of their reach.

Task tokens
-----------
Task-scoped actions (publishing the task's result, reading the task's inbox ``task:<id>``) and
the agent's grants are bound to one attempt by ``MAOS_TASK_TOKEN``, issued per attempt
(``issue_task_token``): ``"maost1."`` + base64url of a JSON payload (run, agent, task,
attempt, grants) + ``"."`` + base64url of HMAC-SHA256(run secret, label ‖ payload). The
payload is readable by the agent but cannot be changed without the secret; so setting
``MAOS_TASK_ID`` to another task, or presenting another run's or agent's task token, is
refused by the door. What the grants allow is decided in ``maos.permissions``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import stat
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from maos.errors import DecryptionError, KeyConfigError, KeyMismatch, StoreDataError
from maos.filemodes import private_dir
from maos.paths import KEY_NAME, state_dir
from maos.store.keys import run_secret as run_secret_key

if TYPE_CHECKING:
    from maos.store.base import Store

# --------------------------------------------------------------------------- keys and encryption

KEY_ENV = "MAOS_KEY"
OLD_KEYS_ENV = "MAOS_OLD_KEYS"
KEY_BYTES = 32

MAGIC = b"MAOS"
FORMAT_VERSION = 1
KEY_ID_BYTES = 8
NONCE_BYTES = 12
TAG_BYTES = 16
_PREFIX = struct.Struct(">4sB8s")  # magic, version, key id
_CRC = struct.Struct(">I")
HEADER_BYTES = _PREFIX.size + _CRC.size + NONCE_BYTES
OVERHEAD_BYTES = HEADER_BYTES + TAG_BYTES
"""Bytes ``encrypt`` adds to a plaintext (45)."""

_KEY_FORMAT = (
    "expected 32 bytes written as 64 hex digits or as base64 (44 characters); create one with "
    "`python -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())'`"
)
_HEX_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def key_id(key: bytes) -> str:
    """The public id of a key: hex of the first 8 bytes of its sha256."""
    return hashlib.sha256(key).digest()[:KEY_ID_BYTES].hex()


def generate_key() -> bytes:
    return os.urandom(KEY_BYTES)


def format_key(key: bytes) -> str:
    """The text form of a key, as ``MAOS_KEY`` and the key file hold it (base64)."""
    return base64.b64encode(key).decode()


def parse_key(text: str, *, source: str) -> bytes:
    """A key from its text form (hex or base64). ``source`` names where it came from for errors;
    the key itself never appears in an error message."""
    value = text.strip()
    if _HEX_RE.fullmatch(value):
        return bytes.fromhex(value)
    candidate = value.replace("-", "+").replace("_", "/")
    candidate += "=" * (-len(candidate) % 4)
    try:
        key = base64.b64decode(candidate, validate=True)
    except (binascii.Error, ValueError):
        raise KeyConfigError(
            f"{source} is not a valid key ({len(value)} characters, neither hex nor base64): {_KEY_FORMAT}"
        ) from None
    if len(key) != KEY_BYTES:
        raise KeyConfigError(f"{source} is not a valid key: it decodes to {len(key)} bytes; {_KEY_FORMAT}")
    return key


@dataclass(frozen=True, slots=True, repr=False)
class KeyInfo:
    """The key in use, where it came from, and the older keys accepted for reading."""

    key: bytes
    source: str  # "MAOS_KEY" or the key file's path
    created: bool = False  # True when this call created the key file
    old_keys: tuple[bytes, ...] = ()

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    @property
    def old_key_ids(self) -> tuple[str, ...]:
        return tuple(key_id(old) for old in self.old_keys)

    def __repr__(self) -> str:  # never print key material
        return f"KeyInfo(key_id={self.key_id!r}, source={self.source!r}, old_key_ids={self.old_key_ids!r})"


def load_or_create_key(
    maos_dir: Path, *, env: Mapping[str, str] = os.environ, create: bool = True
) -> KeyInfo:
    """The key from ``MAOS_KEY``, else from ``maos_dir/key``, created (mode 0600) if missing.

    With ``create=False`` a missing key is an error instead (for commands that only read).
    Raises ``KeyConfigError`` for a malformed key, an unsafe key file or a missing key.
    """
    old_keys = _old_keys(env)
    value = env.get(KEY_ENV, "")
    if value.strip():
        return KeyInfo(parse_key(value, source=KEY_ENV), KEY_ENV, old_keys=old_keys)
    path = maos_dir / KEY_NAME
    try:
        return KeyInfo(_read_key_file(path), str(path), old_keys=old_keys)
    except FileNotFoundError:
        if not create:
            raise KeyConfigError(
                f"no key: {KEY_ENV} is not set and there is no key file {path}; "
                f"set {KEY_ENV} to the key the checkpoints were written with"
            ) from None
    key, created = _create_key_file(path)
    return KeyInfo(key, str(path), created=created, old_keys=old_keys)


def _old_keys(env: Mapping[str, str]) -> tuple[bytes, ...]:
    items = [item for item in re.split(r"[\s,]+", env.get(OLD_KEYS_ENV, "")) if item]
    return tuple(parse_key(item, source=f"{OLD_KEYS_ENV} entry {n}") for n, item in enumerate(items, 1))


def _read_key_file(path: Path) -> bytes:
    """Raises FileNotFoundError if missing, KeyConfigError if unsafe or malformed."""
    try:
        with path.open("rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            text = file.read(4096)
    except FileNotFoundError:
        raise
    except NotADirectoryError:
        raise FileNotFoundError(path) from None
    except OSError as exc:
        raise KeyConfigError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    if os.name == "posix" and mode & 0o077:
        raise KeyConfigError(
            f"key file {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
            f"run `chmod 600 {path}`"
        )
    try:
        return parse_key(text.decode("ascii"), source=f"key file {path}")
    except UnicodeDecodeError:
        raise KeyConfigError(f"key file {path} is not a valid key: {_KEY_FORMAT}") from None


def _create_key_file(path: Path) -> tuple[bytes, bool]:
    """Create the key file atomically; if another process won the race, use its key."""
    key = generate_key()
    try:
        private_dir(path.parent)
        temp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(format_key(key).encode() + b"\n")
                file.flush()
                os.fsync(file.fileno())
            # link() fails if the name exists, so a complete key file appears at once or not at all.
            os.link(temp, path)
        except FileExistsError:
            return _read_key_file(path), False
        finally:
            temp.unlink(missing_ok=True)
    except OSError as exc:
        raise KeyConfigError(f"cannot create key file {path}: {exc.strerror or exc}") from exc
    return key, True


def encrypt(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """AES-256-GCM encryption in the versioned format above; ``aad`` is authenticated, not stored."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, hashlib.sha256(key).digest()[:KEY_ID_BYTES])
    nonce = os.urandom(NONCE_BYTES)
    header = prefix + _CRC.pack(zlib.crc32(prefix)) + nonce
    return header + AESGCM(key).encrypt(nonce, plaintext, header[: HEADER_BYTES - NONCE_BYTES] + aad)


def blob_key_id(blob: bytes) -> str | None:
    """The key id recorded in an encrypted blob, or None if its header is damaged."""
    if len(blob) < HEADER_BYTES:
        return None
    prefix = blob[: _PREFIX.size]
    magic, version, raw_id = _PREFIX.unpack(prefix)
    if magic != MAGIC or version != FORMAT_VERSION:
        return None
    if _CRC.unpack_from(blob, _PREFIX.size)[0] != zlib.crc32(prefix):
        return None
    return bytes(raw_id).hex()


def decrypt(key: bytes, blob: bytes, aad: bytes = b"", *, old_keys: Sequence[bytes] = ()) -> bytes:
    """Decrypt what ``encrypt`` wrote with ``key`` or one of ``old_keys``.

    Raises ``KeyMismatch`` if the blob names a key id that none of the keys has, and
    ``DecryptionError`` for anything else: the data is corrupt or was tampered with. Its
    message is a short phrase ("authentication failed", "truncated (12 bytes)") that callers
    put after what they were decrypting.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(blob) < OVERHEAD_BYTES:
        raise DecryptionError(f"truncated ({len(blob)} bytes)")
    magic, version, raw_id = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise DecryptionError("not encrypted MAOS data (bad magic bytes)")
    if _CRC.unpack_from(blob, _PREFIX.size)[0] != zlib.crc32(blob[: _PREFIX.size]):
        raise DecryptionError("header checksum mismatch")
    if version != FORMAT_VERSION:
        raise DecryptionError(f"unsupported format version {version} (this MAOS reads {FORMAT_VERSION})")
    written_id = bytes(raw_id).hex()
    candidates = [key, *old_keys]
    chosen = next((item for item in candidates if key_id(item) == written_id), None)
    if chosen is None:
        available = tuple(key_id(item) for item in candidates)
        old = f" (old keys: {', '.join(available[1:])})" if len(available) > 1 else ""
        raise KeyMismatch(
            f"written with key id {written_id}, the key in use is {available[0]}{old}",
            written_key_id=written_id,
            available_key_ids=available,
        )
    nonce = blob[HEADER_BYTES - NONCE_BYTES : HEADER_BYTES]
    try:
        return AESGCM(chosen).decrypt(nonce, blob[HEADER_BYTES:], blob[: HEADER_BYTES - NONCE_BYTES] + aad)
    except InvalidTag:
        raise DecryptionError("authentication failed") from None


# --------------------------------------------------------------------------- per-agent tokens

RUN_SECRET_BYTES = 32
TOKEN_PREFIX = "maos1."
_TOKEN_LABEL = b"maos agent token\x00"


async def ensure_run_secret(store: Store, run_id: str) -> bytes:
    """The run's secret, created if it does not exist yet. Idempotent and safe to race."""
    found = await load_run_secret(store, run_id)
    if found is not None:
        return found
    secret = os.urandom(RUN_SECRET_BYTES)
    if (await store.cas(run_secret_key(run_id), 0, secret)).ok:
        return secret
    found = await load_run_secret(store, run_id)  # another process created it first
    if found is None:
        raise StoreDataError(f"the secret of run {run_id!r} vanished while it was being created")
    return found


async def load_run_secret(store: Store, run_id: str) -> bytes | None:
    """The run's secret, or None if the run has none (no such run, or one from before tokens)."""
    current = await store.get(run_secret_key(run_id))
    if current is None:
        return None
    if len(current.value) != RUN_SECRET_BYTES:
        raise StoreDataError(
            f"the secret of run {run_id!r} is {len(current.value)} bytes, not {RUN_SECRET_BYTES}"
        )
    return current.value


def issue_token(secret: bytes, run_id: str, agent_id: str) -> str:
    """The token of ``agent_id`` in ``run_id`` (ASCII, 49 characters)."""
    message = _TOKEN_LABEL + run_id.encode() + b"\x00" + agent_id.encode()
    mac = hmac.new(secret, message, hashlib.sha256).digest()
    return TOKEN_PREFIX + base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def verify_token(secret: bytes, run_id: str, agent_id: str, token: str) -> bool:
    """True if ``token`` is ``agent_id``'s token in ``run_id``; compared in constant time."""
    expected = issue_token(secret, run_id, agent_id).encode("ascii")
    return hmac.compare_digest(expected, token.encode("utf-8", "replace"))


TASK_TOKEN_PREFIX = "maost1."
_TASK_TOKEN_LABEL = b"maos task token\x00"
MAX_TASK_TOKEN_CHARS = 16384


@dataclass(frozen=True, slots=True)
class TaskClaim:
    """What a valid task token says: the agent runs attempt ``attempt`` of ``task_id`` with
    these grants (``maos.permissions.Grants.as_dict()``, resolved when it was issued)."""

    run_id: str
    agent_id: str
    task_id: str
    attempt: int
    grants: Mapping[str, object]


def issue_task_token(
    secret: bytes, run_id: str, agent_id: str, task_id: str, attempt: int, grants: Mapping[str, object]
) -> str:
    """The token binding ``agent_id`` to one attempt of ``task_id`` and its grants: a signed,
    readable payload (``"maost1."`` + base64url(JSON) + ``"."`` + base64url(HMAC-SHA256))."""
    payload = json.dumps(
        {"run": run_id, "agent": agent_id, "task": task_id, "attempt": attempt, "grants": dict(grants)},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    mac = hmac.new(secret, _TASK_TOKEN_LABEL + payload, hashlib.sha256).digest()
    return TASK_TOKEN_PREFIX + _b64(payload) + "." + _b64(mac)


def read_task_token(secret: bytes, run_id: str, agent_id: str, token: str) -> TaskClaim | None:
    """The claim of ``token`` if it is a task token of ``agent_id`` in ``run_id``, else None
    (forged, altered, another agent's or another run's). The MAC is compared in constant time."""
    if not token.startswith(TASK_TOKEN_PREFIX) or len(token) > MAX_TASK_TOKEN_CHARS:
        return None
    encoded, _, mac_text = token.removeprefix(TASK_TOKEN_PREFIX).partition(".")
    try:
        payload = _unb64(encoded)
        mac = _unb64(mac_text)
    except ValueError:
        return None
    expected = hmac.new(secret, _TASK_TOKEN_LABEL + payload, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, mac):
        return None
    try:
        data = json.loads(payload)
        claim = TaskClaim(
            run_id=str(data["run"]),
            agent_id=str(data["agent"]),
            task_id=str(data["task"]),
            attempt=int(data["attempt"]),
            grants=dict(data["grants"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
    if claim.run_id != run_id or claim.agent_id != agent_id:
        return None
    return claim


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


# --------------------------------------------------------------------------- values at rest
#
# Shared-state values and message bodies are sealed with a per-run data key before they
# reach the store (``maos.state``, ``maos.bus``), in the format above, with the store key
# (state) or the run (messages) as associated data, so a value cannot be moved to another key
# or run unnoticed. The data key is HKDF-SHA256 of the checkpoint key (``MAOS_KEY`` or
# ``.maos/key``) and the run id: never stored, the same in every process that has the key, and
# useless for another run or for the checkpoints. Agents get it, not the key, as
# ``MAOS_DATA_KEY`` in their environment (``data_key_env``), next to their token.
#
# Protects: the values from whoever reads the store without that key: another tenant or
# admin of a shared Redis, its RDB/AOF files and backups, a replica, ``MONITOR``/``redis-cli``.
# Not protected: key names, stream ids, versions, sizes and timing; the event log, results
# and task outputs (still clear); and anyone holding the data key: the run's agents (same
# user, same environment) and anyone who can read ``.maos/key`` or ``MAOS_KEY``.

DATA_KEY_ENV = "MAOS_DATA_KEY"
ENCRYPT_ENV = "MAOS_ENCRYPT"
_DATA_KEY_LABEL = b"maos run data key\x00"


def run_data_key(master: bytes, run_id: str) -> bytes:
    """The run's data key: HKDF-SHA256(``master``, info = label ‖ run id)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=_DATA_KEY_LABEL + run_id.encode()).derive(master)


@dataclass(frozen=True, slots=True, repr=False)
class ValueCipher:
    """Seals values with a run's data key; opens sealed ones (and passes clear ones through,
    so stores written before encryption, or with it off, still read). ``write=False``: opens
    only, writes stay clear (encryption off, key known)."""

    key: bytes
    old_keys: tuple[bytes, ...] = ()
    write: bool = True

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        return encrypt(self.key, plaintext, aad) if self.write else plaintext

    def open(self, blob: bytes, aad: bytes, what: str) -> bytes:
        return open_value(self, blob, aad, what)

    def __repr__(self) -> str:
        return f"ValueCipher(key_id={key_id(self.key)!r}, write={self.write})"


def is_sealed(blob: bytes) -> bool:
    """True for a value ``encrypt`` wrote (JSON never starts with the magic bytes)."""
    return blob[: len(MAGIC)] == MAGIC


def open_value(cipher: ValueCipher | None, blob: bytes, aad: bytes, what: str) -> bytes:
    """``blob`` in clear: decrypted if sealed; ``StoreDataError`` if it cannot be."""
    if not is_sealed(blob):
        return blob
    if cipher is None:
        raise StoreDataError(
            f"{what} is encrypted and this process has no data key: set {DATA_KEY_ENV} (agents) "
            f"or {KEY_ENV} / .maos/key (the run's key)"
        )
    try:
        return decrypt(cipher.key, blob, aad, old_keys=cipher.old_keys)
    except DecryptionError as exc:
        raise StoreDataError(f"{what} cannot be decrypted: {exc}") from exc


def encrypts_by_default(store_url: str, env: Mapping[str, str] = os.environ) -> bool:
    """``MAOS_ENCRYPT`` (1/0) if set, else on for Redis (a server others may share), off for SQLite."""
    value = env.get(ENCRYPT_ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    if value:
        raise KeyConfigError(f"{ENCRYPT_ENV}={value!r}: expected 1 or 0")
    return store_url.split(":", 1)[0].lower().startswith("redis")


def value_cipher(
    store_url: str, run_id: str, *, env: Mapping[str, str] = os.environ, maos_dir: Path | None = None
) -> ValueCipher | None:
    """The cipher for ``run_id``'s values on ``store_url``, or None (off, and no key at hand).

    The key: ``MAOS_DATA_KEY`` (an agent), else derived from ``MAOS_KEY`` or
    ``maos_dir/key`` (default ``./.maos``), created when encryption is on and there is none.
    """
    write = encrypts_by_default(store_url, env)
    given = env.get(DATA_KEY_ENV, "")
    if given.strip():
        return ValueCipher(parse_key(given, source=DATA_KEY_ENV), write=write)
    folder = maos_dir if maos_dir is not None else state_dir(Path.cwd())
    try:
        info = load_or_create_key(folder, env=env, create=write)
    except KeyConfigError:
        if write:
            raise
        return None  # off and no key: values stay clear, sealed ones say what is missing
    old = tuple(run_data_key(item, run_id) for item in info.old_keys)
    return ValueCipher(run_data_key(info.key, run_id), old, write=write)


def data_key_env(store_url: str, run_id: str, *, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``{"MAOS_DATA_KEY": …}`` for an agent of ``run_id`` when the run's values are encrypted."""
    cipher = value_cipher(store_url, run_id, env=env)
    return {DATA_KEY_ENV: format_key(cipher.key)} if cipher is not None else {}
