"""Agent text made safe for where it goes: storage (``storable``) and terminals (``printable``);
and URLs and command lines with their passwords hidden (``without_passwords``).

Everything an agent prints is untrusted bytes. Decoded with ``errors="replace"`` it is valid
text, but text parsed from an agent's JSON can still hold lone surrogates (``"\\ud800"``), which
UTF-8 (and so the event log's JSON, SQLite and Redis) cannot encode. On a terminal, control
characters are commands: ``ESC [2J`` clears the screen, ``ESC ] 52 ;`` writes the clipboard,
``CR`` and backspace overwrite what was printed, C1 controls (0x80-0x9f) act as ``ESC`` on some
terminals and bidi overrides reorder what the user reads. ``printable`` shows each of them
escaped (``\\x1b``, ``\\u202e``) instead; it does not protect against rich markup, so print its
result with ``markup=False`` or as a ``rich.text.Text``.

Only the standard library: the CLI imports this on every ``maos status`` and ``maos logs``.
"""

from __future__ import annotations

import re

__all__ = ["printable", "storable", "without_passwords"]

_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_URL_PASSWORD_RE = re.compile(r"(://[^:@/\s]*:)[^@/\s]*@")
_DSN_PASSWORD_RE = re.compile(r"(password\s*=\s*)\S+", re.IGNORECASE)


def without_passwords(text: str) -> str:
    """``text`` (a URL, a DSN, a command line) with every password replaced by ``***``:
    ``redis://u:***@host``, ``postgresql://u:***@host``, ``password=***``."""
    return _DSN_PASSWORD_RE.sub(r"\1***", _URL_PASSWORD_RE.sub(r"\1***@", text))


def storable(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, so that it encodes as UTF-8."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return _SURROGATE_RE.sub("\ufffd", text)
    return text


def _escape(code: int) -> str:
    if code in (0x0A, 0x0D):
        return "\\n" if code == 0x0A else "\\r"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_UNSAFE = [
    *range(0x00, 0x20),  # C0 controls: ESC, BEL, BS, CR, NUL, ...
    0x7F,  # DEL
    *range(0x80, 0xA0),  # C1 controls (0x9b is a one-byte CSI)
    0x061C,  # Arabic letter mark
    0x200E,  # left-to-right / right-to-left marks
    0x200F,
    *range(0x202A, 0x202F),  # bidi embeddings and overrides
    *range(0x2066, 0x206A),  # bidi isolates
    0x2028,  # line and paragraph separators
    0x2029,
    *range(0xD800, 0xE000),  # lone surrogates: unprintable, and they break encoding
]
_TABLE: dict[int, str] = {code: _escape(code) for code in _UNSAFE}
_TABLE.pop(0x09)  # tab is harmless and common in program output
_TABLE_KEEPING_NEWLINES = {code: text for code, text in _TABLE.items() if code != 0x0A}


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control, bidi and surrogate character shown escaped, never
    interpreted by a terminal. ``keep_newlines``: leave ``\\n`` as a line break (a multi-line
    text); otherwise it is escaped too, so one value stays on one line."""
    return text.translate(_TABLE_KEEPING_NEWLINES if keep_newlines else _TABLE)
