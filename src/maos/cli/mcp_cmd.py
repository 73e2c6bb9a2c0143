"""``maos mcp``: serve the agents' door to a Claude Code agent as an MCP server on stdio."""

from __future__ import annotations

from maos.cli._app import app


@app.command("mcp")
def mcp() -> None:
    """Serve shared state, messages and results as MCP tools on stdin/stdout.

    Acts as the agent named by MAOS_RUN_ID, MAOS_AGENT_ID, MAOS_TASK_ID, MAOS_AGENT_TOKEN and
    MAOS_STORE (put them in the `env` of the --mcp-config entry). Exit 2 if one is missing,
    3 if the token is not that agent's (logged in the run as door_refused)."""
    import asyncio

    from maos.identity import AgentIdentity
    from maos.mcp_server import serve_stdio

    asyncio.run(serve_stdio(AgentIdentity.from_env()))
