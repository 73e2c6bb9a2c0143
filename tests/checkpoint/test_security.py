"""Keys (MAOS_KEY, the key file, rotation) and the encrypted format."""

from __future__ import annotations

import base64
import re
import stat
import threading
from pathlib import Path

import pytest

from maos import security
from maos.errors import DecryptionError, KeyConfigError, KeyMismatch

# --------------------------------------------------------------------------- encryption


def test_round_trip_and_fresh_nonce() -> None:
    key = security.generate_key()
    first = security.encrypt(key, b"state", b"run/1")
    second = security.encrypt(key, b"state", b"run/1")
    assert first != second  # a random nonce per message
    assert len(first) == len(b"state") + security.OVERHEAD_BYTES
    assert first.startswith(b"MAOS\x01")
    assert security.decrypt(key, first, b"run/1") == b"state"
    assert security.blob_key_id(first) == security.key_id(key)


def test_wrong_aad_fails_authentication() -> None:
    key = security.generate_key()
    blob = security.encrypt(key, b"state", b"run/1")
    with pytest.raises(DecryptionError, match="authentication failed"):
        security.decrypt(key, blob, b"run/2")


def test_every_flipped_byte_is_detected_as_corruption_not_as_a_wrong_key() -> None:
    key = security.generate_key()
    blob = security.encrypt(key, b"some plaintext that matters", b"aad")
    for index in range(len(blob)):
        damaged = bytearray(blob)
        damaged[index] ^= 0x01
        with pytest.raises(DecryptionError) as caught:
            security.decrypt(key, bytes(damaged), b"aad")
        assert not isinstance(caught.value, KeyMismatch), index


def test_truncated_and_foreign_data() -> None:
    key = security.generate_key()
    with pytest.raises(DecryptionError, match="truncated"):
        security.decrypt(key, b"MAOS\x01abc")
    with pytest.raises(DecryptionError, match="magic"):
        security.decrypt(key, b"x" * 100)
    assert security.blob_key_id(b"x" * 100) is None


def test_wrong_key_names_both_key_ids() -> None:
    written, in_use = security.generate_key(), security.generate_key()
    blob = security.encrypt(written, b"state")
    with pytest.raises(KeyMismatch) as caught:
        security.decrypt(in_use, blob)
    message = str(caught.value)
    assert security.key_id(written) in message
    assert security.key_id(in_use) in message
    assert caught.value.written_key_id == security.key_id(written)
    assert caught.value.available_key_ids == (security.key_id(in_use),)


def test_old_keys_are_accepted_for_reading() -> None:
    old, new = security.generate_key(), security.generate_key()
    blob = security.encrypt(old, b"state", b"aad")
    assert security.decrypt(new, blob, b"aad", old_keys=[old]) == b"state"


# --------------------------------------------------------------------------- keys


def test_key_file_is_created_0600_once_and_reused(tmp_path: Path) -> None:
    maos_dir = tmp_path / ".maos"
    first = security.load_or_create_key(maos_dir, env={})
    assert first.created
    assert first.source == str(maos_dir / "key")
    path = maos_dir / "key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert base64.b64decode(path.read_text().strip()) == first.key
    assert not [item for item in maos_dir.iterdir() if item.name != "key"]  # no temp file left

    second = security.load_or_create_key(maos_dir, env={})
    assert not second.created
    assert second.key == first.key


def test_concurrent_first_use_agrees_on_one_key(tmp_path: Path) -> None:
    for attempt in range(5):
        maos_dir = tmp_path / f"m{attempt}"
        barrier = threading.Barrier(4)
        results: list[security.KeyInfo] = []

        def load(
            maos_dir: Path = maos_dir,
            barrier: threading.Barrier = barrier,
            results: list[security.KeyInfo] = results,
        ) -> None:
            barrier.wait()
            results.append(security.load_or_create_key(maos_dir, env={}))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({info.key for info in results}) == 1
        assert sum(info.created for info in results) == 1


@pytest.mark.parametrize(
    "text",
    [
        "00" * 32,
        "AbCd" * 16,
        base64.b64encode(bytes(range(32))).decode(),
        base64.urlsafe_b64encode(bytes(range(200, 232))).decode().rstrip("="),
        "  " + base64.b64encode(bytes(32)).decode() + "\n",
    ],
)
def test_maos_key_in_hex_or_base64(tmp_path: Path, text: str) -> None:
    info = security.load_or_create_key(tmp_path / ".maos", env={"MAOS_KEY": text})
    assert info.source == "MAOS_KEY"
    assert len(info.key) == 32
    assert not info.created
    assert not (tmp_path / ".maos" / "key").exists()


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("not a key!", "neither hex nor base64"),
        (base64.b64encode(bytes(16)).decode(), "decodes to 16 bytes"),
        ("ab" * 33, "decodes to"),
    ],
)
def test_malformed_maos_key_is_a_clear_error(tmp_path: Path, text: str, detail: str) -> None:
    with pytest.raises(KeyConfigError) as caught:
        security.load_or_create_key(tmp_path / ".maos", env={"MAOS_KEY": text})
    message = str(caught.value)
    assert message.startswith("MAOS_KEY is not a valid key")
    assert detail in message
    assert "64 hex digits" in message
    assert "base64" in message
    assert text not in message  # never echo key material
    assert not (tmp_path / ".maos" / "key").exists()


def test_blank_maos_key_counts_as_unset(tmp_path: Path) -> None:
    info = security.load_or_create_key(tmp_path / ".maos", env={"MAOS_KEY": "  "})
    assert info.created
    assert info.source.endswith("key")


def test_old_keys_from_env(tmp_path: Path) -> None:
    old1, old2 = security.generate_key(), security.generate_key()
    env = {
        "MAOS_KEY": security.format_key(security.generate_key()),
        "MAOS_OLD_KEYS": f"{security.format_key(old1)}, {old2.hex()}",
    }
    info = security.load_or_create_key(tmp_path, env=env)
    assert info.old_keys == (old1, old2)
    assert info.old_key_ids == (security.key_id(old1), security.key_id(old2))

    env["MAOS_OLD_KEYS"] = f"{old1.hex()},bogus"
    with pytest.raises(KeyConfigError, match="MAOS_OLD_KEYS entry 2 is not a valid key"):
        security.load_or_create_key(tmp_path, env=env)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    security.load_or_create_key(tmp_path, env={})
    path = tmp_path / "key"
    path.chmod(0o644)
    with pytest.raises(KeyConfigError, match=r"mode 0644.*chmod 600") as caught:
        security.load_or_create_key(tmp_path, env={})
    assert str(path) in str(caught.value)


def test_malformed_key_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("hello\n")
    path.chmod(0o600)
    with pytest.raises(KeyConfigError, match=f"key file {path} is not a valid key"):
        security.load_or_create_key(tmp_path, env={})


def test_read_only_commands_do_not_create_a_key(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError, match="no key: MAOS_KEY is not set"):
        security.load_or_create_key(tmp_path, env={}, create=False)
    assert not (tmp_path / "key").exists()


def test_key_info_repr_hides_the_key() -> None:
    key = security.generate_key()
    text = repr(security.KeyInfo(key, "MAOS_KEY", old_keys=(security.generate_key(),)))
    assert security.key_id(key) in text
    assert key.hex() not in text
    assert security.format_key(key) not in text
    assert str(key) not in text


def test_key_file_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(KeyConfigError, match=re.escape(f"cannot create key file {blocker}/.maos/key")):
        security.load_or_create_key(blocker / ".maos", env={})
