"""How local Claude Code agents reach the door: ``http`` (one MCP endpoint on loopback for all
of a process's agents, ``maos.mcp_http``) or ``stdio`` (a ``maos mcp`` process per agent).

A module of its own, light to import: every ``maos run`` checks the choice while it parses
its options, also one whose agents run elsewhere and that never opens the endpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final, Literal

from maos.errors import DoorError

DoorTransport = Literal["http", "stdio"]
DOOR_TRANSPORT_ENV: Final = "MAOS_DOOR_TRANSPORT"
"""The default of ``--door-transport``: ``http`` (``maos.mcp_http``) or ``stdio`` (``maos mcp``)."""
TRANSPORTS: Final = ("http", "stdio")


def pick_door_transport(value: str | None, environ: Mapping[str, str] = os.environ) -> DoorTransport:
    """``value`` (``--door-transport``), else ``$MAOS_DOOR_TRANSPORT``, else ``http``;
    ``DoorError`` names what was expected."""
    given = value or environ.get(DOOR_TRANSPORT_ENV, "")
    chosen = given.strip().lower() or "http"
    if chosen == "http":
        return "http"
    if chosen == "stdio":
        return "stdio"
    source = "" if value else f" (from {DOOR_TRANSPORT_ENV})"
    raise DoorError(f"door transport {given!r}{source}: expected {' or '.join(TRANSPORTS)}")
