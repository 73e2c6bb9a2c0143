"""``maos mcp``: serve the agents' door to a Claude Code agent as an MCP server on stdio."""

from __future__ import annotations

from maos.cli._app import app
from maos.cli._common import EXIT_FAILED, EXIT_USAGE, fail

EXIT_REFUSED = 3


@app.command("mcp")
def mcp() -> None:
    """Serve shared state, messages and results as MCP tools on stdin/stdout.

    Acts as the agent named by MAOS_RUN_ID, MAOS_AGENT_ID, MAOS_TASK_ID, MAOS_AGENT_TOKEN and
    MAOS_STORE (put them in the `env` of the --mcp-config entry). Exit 2 if one is missing,
    3 if the token is not that agent's (logged in the run as door_refused)."""
    import asyncio

    from maos.door import AgentIdentity
    from maos.errors import DoorError, MaosError, PermissionDenied
    from maos.mcp_server import serve_stdio

    try:
        identity = AgentIdentity.from_env()
    except DoorError as exc:
        fail(str(exc), EXIT_USAGE)
    try:
        asyncio.run(serve_stdio(identity))
    except PermissionDenied as exc:
        fail(str(exc), EXIT_REFUSED)
    except DoorError as exc:
        fail(str(exc), EXIT_USAGE)
    except MaosError as exc:
        fail(str(exc), EXIT_FAILED)
