"""The agents' door as MCP tools for Claude Code agents, defined once (``build_server``),
and ``maos mcp``, the server that serves them on stdio.

By default Claude agents reach the same tools over HTTP, through one endpoint per host
(``maos.mcp_http``, ADR 0015); ``maos mcp`` is the ``--door-transport stdio`` way. Claude
Code starts it from the ``--mcp-config`` entry that ``mcp_config_for(job.env)`` builds, with
the agent's ``MAOS_*`` variables in the entry's ``env`` (and, headless, needs
``--allowedTools`` ``allowed_tools_rule()`` to call the tools); the server checks the token
once at start (a refused token is logged as ``door_refused`` and the server exits with code
3, which Claude Code reports as ``status: "failed"`` in its init line), then serves these
tools, each acting as that agent (Claude Code names them ``mcp__maos__<tool>``):

=================  ===============================================================
``state_get``      ``{key}`` → ``{key, exists, value, version}``
``state_set``      ``{key, value}`` → ``{key, version}``
``state_cas``      ``{key, expected_version, value}`` → ``{key, ok, version}``; a conflict
                   is ``ok: false`` with the current version, not an error
``state_list``     ``{prefix?}`` → ``{entries: [{key, value, version}]}``
``send_message``   ``{to, content, priority?, type?}`` → ``{id, seq}``
``broadcast``      ``{topic, content, priority?, type?}`` → ``{id, seq}``
``subscribe``      ``{topic}`` → ``{topic, subscribed}``
``read_messages``  ``{max_count?, wait_s?, ack?}`` → ``{messages: [...]}``; acknowledges
                   what it returns unless ``ack: false`` (then ``ack_messages``)
``ack_messages``   ``{receipts}`` → ``{acked}``
``publish_result`` ``{summary, files?}`` → ``{task_id, files}``
``read_result``    ``{task_id}`` → ``{exists, task_id, agent_id, summary, files}``
``wait_task``      ``{task_id, wait_s?}`` → ``{task_id, state, ended, reason, waited_s}``;
                   the wait is an edge of the run's wait-for graph (``maos.deadlock``)
=================  ===============================================================

A refused or malformed call (bad key, value too large, unknown priority, an action the
task's role is not granted: ``maos.permissions``) is a tool error whose text says what was
expected or why it was refused; the model reads it. A refusal is also a ``door_refused``
event in the run's log. The ``mcp`` package costs about a
second to import, so it is imported only when a server is built: ``mcp_config_for`` is
cheap for the runtime that calls it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pydantic import StrictFloat, StrictInt  # tool arguments: JSON numbers, not "1_000" strings

from maos.agents.task_env import ENV_STORE, ENV_TASK_FILE, ENV_TASK_TOKEN, REQUIRED_ENV, agent_store_url
from maos.door import Door
from maos.errors import DoorError
from maos.identity import AgentIdentity
from maos.security import DATA_KEY_ENV

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

__all__ = ["SERVER_NAME", "TOOL_NAMES", "allowed_tools_rule", "build_server", "mcp_config_for", "serve_stdio"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

SERVER_NAME: Final = "maos"
TOOL_NAMES: Final = (
    "state_get",
    "state_set",
    "state_cas",
    "state_list",
    "send_message",
    "broadcast",
    "subscribe",
    "read_messages",
    "ack_messages",
    "publish_result",
    "read_result",
    "add_task",
    "wait_task",
)
MAX_WAIT_S: Final = 60.0
"""Longest ``read_messages`` wait: a tool call should not hold the agent for minutes."""

INSTRUCTIONS: Final = (
    "MAOS shared state and messages for this agent's run. State keys are namespaced with '/' "
    "(e.g. 'api/schema'); values are JSON with versions: use state_cas with the version you "
    "read to update without losing another agent's write. Messages go to agent ids "
    "(send_message) or topics (broadcast, to subscribers). read_messages returns your "
    "messages, high priority first. publish_result records your task's summary and files. "
    "add_task asks MAOS for a new task in the run (it may depend on yours)."
)


def mcp_config_for(
    env: Mapping[str, str],
    *,
    extra: Mapping[str, Any] | None = None,
    server_name: str = SERVER_NAME,
    python: str = sys.executable,
) -> dict[str, Any]:
    """The ``--mcp-config`` JSON document that connects a Claude Code agent to the door.

    ``env`` is the agent's environment (e.g. ``AgentJob.env``); its ``MAOS_*`` identity
    variables go into the server entry's ``env`` (``DoorError`` names a missing one).
    ``extra``: another MCP config (``{"mcpServers": {...}}``) whose servers are added; a
    server of its own named ``server_name`` is replaced by the door. The ``mcpServers`` value
    also fits ``ClaudeAgentOptions(mcp_servers=...)`` of the SDK.
    """
    missing = [name for name in REQUIRED_ENV if not env.get(name)]
    if missing:
        raise DoorError(f"cannot configure the maos MCP server: {', '.join(missing)} not in the agent's env")
    server_env = {name: env[name] for name in REQUIRED_ENV}
    server_env[ENV_STORE] = agent_store_url(server_env[ENV_STORE])
    if env.get(ENV_TASK_FILE):  # a warm agent's door follows its current task (maos.agents.pool)
        server_env[ENV_TASK_FILE] = env[ENV_TASK_FILE]
    elif env.get(ENV_TASK_TOKEN):  # a cold agent's attempt and grants
        server_env[ENV_TASK_TOKEN] = env[ENV_TASK_TOKEN]
    if env.get(DATA_KEY_ENV):  # the run's data key: the door opens encrypted values with it
        server_env[DATA_KEY_ENV] = env[DATA_KEY_ENV]
    servers = dict((extra or {}).get("mcpServers", {}))
    # alwaysLoad: the door's tools are in every request, never deferred behind ToolSearch.
    door = {"command": python, "args": ["-m", "maos", "mcp"], "env": server_env, "alwaysLoad": True}
    servers[server_name] = door
    return {"mcpServers": servers}


def allowed_tools_rule(server_name: str = SERVER_NAME) -> str:
    """The ``--allowedTools`` rule that lets a headless (``-p``) Claude Code agent call every
    door tool without a permission prompt: ``mcp__maos`` (a server-wide rule)."""
    return f"mcp__{server_name}"


DoorOf = Callable[[Any], Awaitable[Door]]
"""Finds the door one tool call acts through, from the call's MCP ``Context``."""


def build_server(door: Door | DoorOf) -> MCPServer:
    """An MCP server of the door's tools. Given a ``Door``, every call acts as its agent (``maos
    mcp``, stdio); given a ``DoorOf``, each call acts through the door it returns for the
    call's ``Context`` (``maos.mcp_http``: the door of the agent its request's token names).
    Either way the tools, their schemas and their answers are these, defined once."""
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from maos.errors import MaosError
    from maos.numbers import NumberError, check_float

    door_of: DoorOf
    if isinstance(door, Door):
        fixed = door

        async def the_door(_ctx: Any) -> Door:
            return fixed

        door_of = the_door
    else:
        door_of = door

    async def act(ctx: Context, call: Callable[[Door], Awaitable[T]]) -> T:
        # A refused call is the model's to read and fix, not a crash of the server.
        try:
            return await call(await door_of(ctx))
        except MaosError as exc:
            raise ToolError(str(exc)) from exc

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    server: MCPServer = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS)
    # MCPServer() calls logging.basicConfig: logging is the program's to configure (the CLI's).
    root.handlers[:] = handlers
    root.setLevel(level)

    def tool(description: str) -> Callable[[F], F]:
        def register(fn: F) -> F:
            # mcp is imported here, not at the top of this module, so the SDK cannot resolve
            # the ``ctx: Context`` annotation from the module's globals: hand it the class.
            fn.__annotations__["ctx"] = Context
            server.tool(description=description)(fn)
            return fn

        return register

    @tool("Read a key of the run's shared state: its JSON value and version.")
    async def state_get(key: str, ctx: Context) -> dict[str, Any]:
        entry = await act(ctx, lambda door: door.state_get(key))
        if entry is None:
            return {"key": key, "exists": False, "value": None, "version": 0}
        return {"key": key, "exists": True, "value": entry.value, "version": entry.version}

    @tool("Write a key of the run's shared state (any JSON value); returns its version.")
    async def state_set(key: str, value: Any, ctx: Context) -> dict[str, Any]:
        return {"key": key, "version": await act(ctx, lambda door: door.state_set(key, value))}

    @tool(
        "Compare-and-set: write the key only if it is still at expected_version (0: only "
        "if it does not exist). ok=false means someone else wrote it: version is the current one."
    )
    async def state_cas(key: str, expected_version: StrictInt, value: Any, ctx: Context) -> dict[str, Any]:
        result = await act(ctx, lambda door: door.state_cas(key, expected_version, value))
        return {"key": key, "ok": result.ok, "version": result.version}

    @tool("List the keys of the run's shared state starting with prefix, with values.")
    async def state_list(ctx: Context, prefix: str = "") -> dict[str, Any]:
        entries = await act(ctx, lambda door: door.state_list(prefix))
        return {"entries": [{"key": e.key, "value": e.value, "version": e.version} for e in entries]}

    @tool("Send a message (any JSON content) to another agent of the run by its id.")
    async def send_message(
        to: str, content: Any, ctx: Context, priority: str = "normal", type: str = "text"
    ) -> dict[str, Any]:
        message = await act(ctx, lambda door: door.send_message(to, content, priority=priority, type=type))
        return {"id": message.id, "seq": message.seq}

    @tool("Broadcast a message (any JSON content) to every agent subscribed to topic.")
    async def broadcast(
        topic: str, content: Any, ctx: Context, priority: str = "normal", type: str = "text"
    ) -> dict[str, Any]:
        message = await act(ctx, lambda door: door.broadcast(topic, content, priority=priority, type=type))
        return {"id": message.id, "seq": message.seq}

    @tool("Subscribe to a topic: read_messages then also returns its broadcasts.")
    async def subscribe(topic: str, ctx: Context) -> dict[str, Any]:
        added = await act(ctx, lambda door: door.subscribe(topic))
        return {"topic": topic, "subscribed": True, "new": added}

    @tool(
        "Read your messages, high priority first, waiting up to wait_s seconds (max 60) for "
        "one. They are acknowledged unless ack=false; then pass their receipts to ack_messages."
    )
    async def read_messages(
        ctx: Context, max_count: StrictInt = 10, wait_s: StrictFloat = 0.0, ack: bool = True
    ) -> dict[str, Any]:
        try:  # a finite number, clamped to [0, MAX_WAIT_S]; never nan or inf
            wait = min(max(check_float(wait_s, "wait_s", min_value=-1e15), 0.0), MAX_WAIT_S)
        except NumberError as exc:
            raise ToolError(str(exc)) from None
        deliveries = await act(
            ctx, lambda door: door.read_messages(count=max_count, wait_s=wait or None, ack=ack)
        )
        messages = []
        for delivery in deliveries:
            item = delivery.message.model_dump(mode="json", by_alias=True)
            item.update(receipt=delivery.receipt, deliveries=delivery.deliveries, gap=delivery.gap)
            messages.append(item)
        return {"messages": messages}

    @tool("Acknowledge messages read with ack=false, by their receipts.")
    async def ack_messages(receipts: list[str], ctx: Context) -> dict[str, Any]:
        return {"acked": await act(ctx, lambda door: door.ack_messages(receipts))}

    @tool(
        "Publish your task's result: a summary and the files you produced, for the tasks "
        "that depend on yours and for the run's report. A later call replaces it."
    )
    async def publish_result(summary: str, ctx: Context, files: list[str] | None = None) -> dict[str, Any]:
        result = await act(ctx, lambda door: door.publish_result(summary, files or []))
        return {"task_id": result.task_id, "files": len(result.files)}

    @tool(
        "Add a task to the run: task is a plan task object (id, prompt, depends_on, and "
        "command for a shell task); it may depend on your own task. blocks: tasks not started yet "
        "that must wait for it. Returns whether it was added and, if not, why."
    )
    async def add_task(task: dict[str, Any], ctx: Context, blocks: list[str] | None = None) -> dict[str, Any]:
        answer = await act(ctx, lambda door: door.add_task(task, blocks=blocks or []))
        return answer.as_dict()

    @tool(
        "Wait until another task of the run has ended (at most wait_s seconds, default "
        "60): its state (succeeded, failed, skipped, cancelled) and why. A wait that would deadlock "
        "the run (the task needs what yours holds) is resolved by MAOS; the answer says how."
    )
    async def wait_task(
        task_id: str, ctx: Context, wait_s: StrictFloat | StrictInt = MAX_WAIT_S
    ) -> dict[str, Any]:
        try:  # as read_messages: a finite number, clamped to [0, MAX_WAIT_S] (10**400 too)
            wait = min(max(check_float(wait_s, "wait_s", min_value=-1e15), 0.0), MAX_WAIT_S)
        except NumberError as exc:
            raise ToolError(str(exc)) from None
        end = await act(ctx, lambda door: door.wait_task(task_id, wait_s=wait))
        return end.as_dict()

    @tool("Read the result another task of the run published (e.g. a dependency's).")
    async def read_result(task_id: str, ctx: Context) -> dict[str, Any]:
        result = await act(ctx, lambda door: door.read_result(task_id))
        if result is None:
            return {"exists": False, "task_id": task_id}
        return {"exists": True, **result.as_dict()}

    return server


async def serve_stdio(identity: AgentIdentity) -> None:
    """Check ``identity``'s token and serve the tools on stdin/stdout until stdin closes.

    Raises ``PermissionDenied`` (logged as ``door_refused``) before serving anything if the
    token is not the agent's."""
    from maos.door import open_door
    from maos.heap import freeze_startup_heap
    from maos.identity import open_agent_store

    store = await open_agent_store(identity)
    try:
        door = await open_door(store, identity, via="mcp")
        server = build_server(door)
        freeze_startup_heap()  # a process of its own (maos mcp), serving until stdin closes
        await server.run_stdio_async()
    finally:
        await store.close()
