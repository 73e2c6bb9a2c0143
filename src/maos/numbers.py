"""Numbers that come from outside MAOS, parsed strictly and bounded.

Counts, limits, versions, timeouts, receipts and event ids arrive as text (CLI arguments,
HTTP query parameters and headers, store contents) or as loosely typed JSON (MCP tool
arguments). Python's own conversions accept far more than anyone means: ``int()`` takes
``1_000``, ``+7``, Arabic-Indic digits and 4,000-digit numbers; ``float()`` takes ``nan``,
``inf`` and ``1e400`` (which is ``inf``); and a large ``int`` passed on to SQLite or Redis
ends in an ``OverflowError`` deep inside the store. So every such number goes through this
module first: ASCII digits only, finite, within the bounds the caller states.

Every function raises ``NumberError`` (a ``ValueError``) whose text names the parameter
(``name``), what was expected and, shortened, what was given. Each edge translates it: the
CLI to a usage error (exit 2), the dashboard to HTTP 400, the MCP server to a tool error,
the door to ``DoorError``.

API::

    parse_int(text, name, *, min_value=0, max_value=MAX_INT64) -> int
    parse_float(text, name, *, min_value=0.0, max_value=MAX_FLOAT) -> float
    check_int(value, name, *, min_value=0, max_value=MAX_INT64) -> int      # already parsed JSON
    check_float(value, name, *, min_value=0.0, max_value=MAX_FLOAT) -> float
    check_stream_id(text, name) -> str                                       # "0", "42", "1700-3"
"""

from __future__ import annotations

import math
import re
from typing import Final

__all__ = [
    "MAX_FLOAT",
    "MAX_INT64",
    "MAX_TIMESTAMP_S",
    "NumberError",
    "check_float",
    "check_int",
    "check_stream_id",
    "parse_float",
    "parse_int",
]

MAX_INT64: Final = 2**63 - 1
"""The largest integer SQLite stores (and the largest any MAOS count or version reaches)."""
MAX_UINT64: Final = 2**64 - 1
"""The largest part of a Redis stream id."""
MAX_FLOAT: Final = 1e15
"""A bound for seconds and similar measures: finite, and exact to the millisecond."""
MAX_TIMESTAMP_S: Final = 32503680000.0
"""The year 3000 in Unix seconds: a bound for times, which people see as dates and clock
times (``datetime`` and ``time.localtime`` stop at year 9999, in any time zone)."""

_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_STREAM_ID_RE: Final = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_SHOWN_CHARS: Final = 40


class NumberError(ValueError):
    """A number from outside that is malformed or out of range; the text names the parameter."""


def _show(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    if len(text) > _SHOWN_CHARS:
        text = text[:_SHOWN_CHARS] + f"… ({len(text)} characters)"
    return repr(text) if isinstance(value, str) else text


def _digits_value(digits: str, limit: int) -> int | None:
    """``int(digits)`` (ASCII digits) if at most ``limit``; None if larger (never converts a
    number longer than ``limit`` has digits, so no 4,300-digit conversion is attempted)."""
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(limit)):
        return None
    value = int(significant)
    return value if value <= limit else None


def parse_int(text: str, name: str, *, min_value: int = 0, max_value: int = MAX_INT64) -> int:
    """``text`` as an integer in ``[min_value, max_value]``: an optional sign and ASCII digits."""
    expected = f"{name} must be an integer from {min_value} to {max_value}"
    if not isinstance(text, str):
        raise NumberError(f"{expected}, not {_show(text)}")
    stripped = text.strip()
    if _INT_RE.fullmatch(stripped) is None:
        raise NumberError(f"{expected} (ASCII digits only), not {_show(text)}")
    negative = stripped.startswith("-")
    magnitude = _digits_value(stripped.lstrip("+-"), max(abs(min_value), abs(max_value)))
    if magnitude is None:
        raise NumberError(f"{expected}, not {_show(text)}")
    return check_int(-magnitude if negative else magnitude, name, min_value=min_value, max_value=max_value)


def check_int(value: object, name: str, *, min_value: int = 0, max_value: int = MAX_INT64) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) in ``[min_value, max_value]``; an integral
    float such as ``3.0`` (JSON has one number type) counts as its integer."""
    expected = f"{name} must be an integer from {min_value} to {max_value}"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise NumberError(f"{expected}, not {_show(value)}")
    if not min_value <= value <= max_value:
        raise NumberError(f"{expected}, not {_show(str(value))}")
    return value


def parse_float(text: str, name: str, *, min_value: float = 0.0, max_value: float = MAX_FLOAT) -> float:
    """``text`` as a finite decimal number in ``[min_value, max_value]`` (no ``nan``, ``inf``,
    underscores or non-ASCII digits)."""
    expected = f"{name} must be a number from {min_value:g} to {max_value:g}"
    if not isinstance(text, str):
        raise NumberError(f"{expected}, not {_show(text)}")
    stripped = text.strip()
    if _FLOAT_RE.fullmatch(stripped) is None:
        raise NumberError(f"{expected} (decimal, ASCII digits), not {_show(text)}")
    return check_float(float(stripped), name, min_value=min_value, max_value=max_value, shown=text)


def check_float(
    value: object,
    name: str,
    *,
    min_value: float = 0.0,
    max_value: float = MAX_FLOAT,
    shown: str | None = None,
) -> float:
    """``value`` if it is a finite ``int`` or ``float`` (not a ``bool``) in the bounds."""
    expected = f"{name} must be a number from {min_value:g} to {max_value:g}"
    given = _show(shown if shown is not None else value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise NumberError(f"{expected}, not {given}")
    if isinstance(value, int):
        if not min_value <= value <= max_value:  # exact: no float conversion of a huge int
            raise NumberError(f"{expected}, not {given}")
        return float(value)
    if not math.isfinite(value) or not min_value <= value <= max_value:
        raise NumberError(f"{expected}, not {given}")
    return value


def check_stream_id(text: str, name: str) -> str:
    """``text`` if it is a stream id a store may have issued: ``0``, a SQLite id (decimal, at
    most ``MAX_INT64``) or a Redis id (``<ms>-<seq>``, parts at most ``2**64 - 1``)."""
    expected = f"{name} must be an event id such as 42 or 1700000000000-0 (0: from the start)"
    found = _STREAM_ID_RE.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        raise NumberError(f"{expected}, not {_show(text)}")
    first, second = found.groups()
    if second is None:
        ok = _digits_value(first, MAX_INT64) is not None
    else:
        ok = _digits_value(first, MAX_UINT64) is not None and _digits_value(second, MAX_UINT64) is not None
    if not ok:
        raise NumberError(f"{expected}; {_show(text)} is out of range")
    return text
