"""The agents' door as one MCP endpoint per host: MCP's streamable HTTP transport on 127.0.0.1.

Over stdio (``maos mcp``) every Claude agent has a door process of its own: ~0.7 CPU-s to
import ``mcp`` and ~68 MB of memory per agent. Instead, the process that starts the agents —
the orchestrator for its local agents, each ``maos worker`` for its own — serves the same
tools (``maos.mcp_server.build_server``) at ``http://127.0.0.1:PORT/mcp`` to all of them, and
an agent is one process, not two (ADR 0015). ``--door-transport stdio`` keeps the old way.

- **Admission.** ``mcp_config(env)`` admits the agent whose ``MAOS_*`` environment ``env`` is
  (``AgentIdentity.from_env``) and returns its ``--mcp-config``: the URL and a bearer token
  of its own, HMAC-SHA256 of that whole identity (agent and task tokens included) under a
  key this endpoint drew at random; the runtime writes it to a 0600 file, never a command
  line. Admitting the same identity again gives the same token (a warm agent's command line
  stays the same: ``maos.agents.pool``). ``release(env)`` ends the admission when the
  agent's attempt ends (``AgentHost``); a warm agent's lasts as long as the endpoint.
- **Who a request acts for** is bound from its token alone: the endpoint keeps token →
  agent, and a request without a token, with an unknown one or with a released one is
  answered 401 before its body is read (compared by SHA-256 digest, then in constant time),
  and its connection closed, so that callers without a token cannot keep the endpoint's
  places from the agents.
  Nothing a request carries — a header, a body, a tool argument — names another agent.
- **The door's own checks, unchanged.** An agent's ``Door`` is opened on its first call with
  ``open_door`` (agent token and task token against the run's secret; a refusal is a
  ``door_refused`` event with ``via="mcp-http"``), and every call is authorized by it as over
  stdio (``maos.permissions``). One door per admitted agent, dropped at its release; the
  stores are opened once per URL and shared.
- **Untrusted input.** Bodies over ``max_request_bytes`` → 413; more than
  ``max_calls_per_agent`` requests of one agent at once → 429; more than ``MAX_CONNECTIONS``
  connections → 503; a body that does not come within ``BODY_TIMEOUT_S`` of its head → 408
  (the gate reads it before the transport, so a client that hangs up mid-body is a debug
  line, not the transport's error with a traceback); malformed JSON or a binary body → the
  transport's 400 with a JSON-RPC error. None of it stops the endpoint or touches another
  agent's calls. The HTTP transport
  is stateless and answers in JSON: every POST stands alone, so there is no session to take
  over or to expire, and no stream to hold open (anything but POST → 405).
- **Warm agents that outlive their runs** (``maos worker --warm``: ``maos.agents.pool``)
  get a token of their own from ``lend(name)``, drawn at random and bound to no identity:
  ``bind(name, env)`` binds it to one task's identity (the whole ``MAOS_*`` environment of
  that attempt, task token included) and ``unbind(name)`` ends that binding when the task
  ends. A rebinding replaces the agent's entry in one step: a request already authenticated
  as the previous identity is refused at its tool call. Between tasks the token still
  passes the gate — the CLI connects to its MCP servers when it starts, and a server that
  answers 401 then is one it never retries — but every tool call is refused (and logged):
  it acts for no one. The CLI keeps its one token for its whole life; what it may do
  follows the task it is given. ``forget(name)`` ends the lending (401 from then on).
- **Refusals** are logged here (``maos.mcp_http``, at most one line a second, with how many
  more there were), not written to a run's log: an unauthenticated caller names no run, and
  every local user can reach a loopback port.
- **Start-up.** Entering the endpoint binds and listens (connections wait in the kernel's
  queue); the ``mcp`` package is imported (off the event loop) and the server started when
  the first agent is admitted, while that agent's CLI starts. A run without Claude agents
  never pays for it.

API::

    async with DoorEndpoint() as door:
        config = door.mcp_config(job.env)     # {"mcpServers": {"maos": {"type": "http", ...}}}
        ...                                    # the agent's CLI runs with --mcp-config FILE
        door.release(job.env)                  # its token is refused from now on
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import socket
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from maos.agents.task_env import agent_store_url
from maos.door import VIA_HTTP, Door, open_door
from maos.errors import DoorError, MaosError, PermissionDenied, describe_error
from maos.identity import AgentIdentity, open_agent_store
from maos.mcp_server import SERVER_NAME
from maos.store.base import Store, connect_url
from maos.throttle import LOG_INTERVAL_S, Throttle, kept_back

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


__all__ = [
    "MAX_CALLS_PER_AGENT",
    "MAX_REQUEST_BYTES",
    "DoorEndpoint",
]

log = logging.getLogger("maos.mcp_http")

VIA: Final = VIA_HTTP
"""``door_refused.via`` of a refusal through this endpoint."""
MCP_PATH: Final = "/mcp"
MAX_REQUEST_BYTES: Final = 4 << 20
"""Largest request body: a 1 MiB state value escaped as JSON fits, with room for its call."""
MAX_CALLS_PER_AGENT: Final = 16
"""Requests of one agent served at once; more are answered 429 (a turn's parallel tool calls fit)."""
MAX_CONNECTIONS: Final = 1024
"""Open connections and requests over all agents; more are answered 503 (uvicorn)."""
RETIRED_TOKENS: Final = 4096
"""Released tokens remembered, so that a late request says whose attempt is over."""
REFUSAL_LOG_INTERVAL_S: Final = LOG_INTERVAL_S
SHUTDOWN_GRACE_S: Final = 1
BODY_TIMEOUT_S = 10.0
"""How long an authenticated request may take to send its body after its head. Agents send
it at once (4 MiB over loopback take milliseconds); one that stalls would hold one of its
agent's calls and one of the endpoint's places for as long as it liked. Answered 408, and the
connection closed."""
_SCOPE_KEY: Final = "maos.door_agent"
_CLOSE: Final = (b"connection", b"close")


@dataclass(eq=False)
class _Agent:
    """One admitted agent: its identity, its token and, from its first call, its door."""

    identity: AgentIdentity | None  # None: a warm agent between tasks (it acts for no one)
    token: str
    warm: str = ""  # the name of a warm agent that outlives runs (lend)
    door: Door | None = None
    refused: str = ""  # why open_door refused it (logged once, as door_refused)
    calls: int = 0  # requests being served
    opening: asyncio.Lock = field(default_factory=asyncio.Lock)


class _Refusals:
    """Refused requests, logged at most once per interval with a count of the others: a
    flood of bad requests is one line a second, not one line each."""

    def __init__(self, interval_s: float = REFUSAL_LOG_INTERVAL_S) -> None:
        self.total = 0
        self._throttle = Throttle(interval_s)

    def refused(self, status: int, reason: str, scope: Scope) -> None:
        self.total += 1
        kept = self._throttle.due()
        if kept is None:
            return
        client = scope.get("client") or ("?", 0)
        more = kept_back(kept, "more refused")
        log.warning("door endpoint: %d for %s:%s: %s%s", status, client[0], client[1], reason, more)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class DoorEndpoint:
    """The door's MCP endpoint for the agents of this process. Use as ``async with``."""

    def __init__(
        self,
        *,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_calls_per_agent: int = MAX_CALLS_PER_AGENT,
        max_connections: int = MAX_CONNECTIONS,
        store: Store | None = None,
    ) -> None:
        if max_request_bytes < 1 or max_calls_per_agent < 1 or max_connections < 1:
            raise ValueError("the endpoint's limits must be at least 1")
        self.max_request_bytes = max_request_bytes
        self.max_calls_per_agent = max_calls_per_agent
        self.max_connections = max_connections
        self.refusals = _Refusals()
        self._key = secrets.token_bytes(32)
        self._agents: dict[bytes, _Agent] = {}  # SHA-256 of the token -> the admitted agent
        self._retired: OrderedDict[bytes, str] = OrderedDict()  # released tokens -> whose
        self._lent: dict[str, str] = {}  # warm agent name -> its token (lend)
        self._stores: dict[str, Store] = {}  # store URL -> the store the doors share
        # The host's own store, used for agents that name it and never closed here. A second
        # SQLite connection of this process would be opened by reading and touching the file
        # first, and closing those descriptors drops every POSIX lock this process holds on
        # it: another process closing the database would then take itself for the last one
        # and delete the -wal file under us (a corrupt store).
        self._host_store = store
        self._store_lock = asyncio.Lock()
        self._sock: socket.socket | None = None  # ours until the server takes it
        self._port = 0
        self._open = False  # between __aenter__ and __aexit__
        self._serving: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._failed = ""

    def __repr__(self) -> str:
        return f"DoorEndpoint(url={self.url!r}, agents={len(self._agents)})"

    @property
    def url(self) -> str:
        """Where agents reach it (``http://127.0.0.1:PORT/mcp``); empty before it is entered."""
        return f"http://127.0.0.1:{self._port}{MCP_PATH}" if self._port else ""

    @property
    def admitted(self) -> int:
        """Agents admitted and not released."""
        return len(self._agents)

    @property
    def calls(self) -> int:
        """Requests of admitted agents being served now."""
        return sum(agent.calls for agent in self._agents.values())

    # ------------------------------------------------------------------ lifetime
    async def __aenter__(self) -> DoorEndpoint:
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
        # and without it every answer waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            # Listening now: an agent that connects before the server runs waits in the
            # kernel's queue instead of being refused.
            sock.listen(min(socket.SOMAXCONN, self.max_connections))
            sock.set_inheritable(False)
        except OSError as exc:
            sock.close()
            raise DoorError(f"cannot listen on 127.0.0.1 for the door's MCP endpoint: {exc}") from exc
        self._sock = sock
        self._port = sock.getsockname()[1]
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False
        self._stop.set()
        try:
            if self._serving is not None:
                try:
                    await self._serving
                finally:
                    if not self._serving.done():  # we were cancelled while it stopped
                        self._serving.cancel()
        finally:
            if self._sock is not None:
                self._sock.close()
            self._agents.clear()
            self._lent.clear()
            stores, self._stores = list(self._stores.values()), {}
            for store in stores:
                with contextlib.suppress(MaosError, OSError):
                    await store.close()

    # ------------------------------------------------------------------ admission
    def mcp_config(
        self,
        env: Mapping[str, str],
        *,
        extra: Mapping[str, Any] | None = None,
        server_name: str = SERVER_NAME,
    ) -> dict[str, Any]:
        """Admit the agent whose environment ``env`` is and return its ``--mcp-config``
        document: the door's entry (``type: http``, the URL, ``Authorization: Bearer``), plus
        the servers of ``extra`` (one of them named ``server_name`` is replaced). The token in
        it is a secret: write the document to a 0600 file. ``DoorError`` names a missing
        variable, or says the endpoint cannot serve."""
        identity = AgentIdentity.from_env(env)
        self._check_open()
        token = self._token(identity)
        digest = _digest(token)
        if digest not in self._agents:
            self._agents[digest] = _Agent(identity, token)
            self._retired.pop(digest, None)
            log.debug("door endpoint: admitted agent %s (run %s)", identity.agent_id, identity.run_id)
        self._start_serving()
        servers = dict((extra or {}).get("mcpServers", {}))
        servers[server_name] = self._entry(token)
        return {"mcpServers": servers}

    def lend(self, name: str) -> dict[str, Any]:
        """The door's MCP server entry for warm agent ``name``, whose token is bound to one
        task's identity at a time (``bind``); until then it is refused. The same name gets
        the same token until ``forget``. The token is a secret: write it to a 0600 file."""
        self._check_open()
        token = self._lent.get(name)
        if token is None:
            token = self._lent[name] = secrets.token_urlsafe(32)
            self._agents[_digest(token)] = _Agent(None, token, warm=name)
        self._start_serving()
        return self._entry(token)

    def bind(self, name: str, env: Mapping[str, str]) -> None:
        """From now on warm agent ``name``'s token acts as the agent whose environment ``env``
        is (one attempt of one task), and as nothing else: a previous binding ends here.
        ``DoorError`` names a missing variable, or an agent this endpoint did not lend to."""
        identity = AgentIdentity.from_env(env)
        token = self._lent.get(name)
        if token is None:
            raise DoorError(f"warm agent {name!r} has no token of this endpoint (lend it one first)")
        self._agents[_digest(token)] = _Agent(identity, token, warm=name)  # one step: the old one is gone
        log.debug(
            "door endpoint: warm agent %s now acts as agent %s of run %s (task %s)",
            name,
            identity.agent_id,
            identity.run_id,
            identity.task_id,
        )

    def unbind(self, name: str) -> None:
        """Warm agent ``name``'s task is over: its token is refused until the next ``bind``."""
        token = self._lent.get(name)
        if token is None:
            return
        self._agents[_digest(token)] = _Agent(None, token, warm=name)

    def forget(self, name: str) -> None:
        """Warm agent ``name`` is gone: its token is refused from now on, for good."""
        token = self._lent.pop(name, None)
        if token is None:
            return
        digest = _digest(token)
        self._agents.pop(digest, None)
        self._retired[digest] = f"warm agent {name}"

    def _check_open(self) -> None:
        if not self._open:
            raise DoorError("the door's MCP endpoint is not open (use it as `async with`)")
        if self._failed:
            raise DoorError(
                f"the door's MCP endpoint failed: {self._failed}; run with --door-transport stdio"
            )

    def _start_serving(self) -> None:
        if self._serving is None:
            self._serving = asyncio.get_running_loop().create_task(self._serve(), name="maos-door-endpoint")

    def _entry(self, token: str) -> dict[str, Any]:
        # alwaysLoad: the door's tools are in every request, never deferred behind ToolSearch.
        headers = {"Authorization": f"Bearer {token}"}
        return {"type": "http", "url": self.url, "headers": headers, "alwaysLoad": True}

    def release(self, env: Mapping[str, str]) -> None:
        """The attempt of ``env``'s agent is over: its token is refused from now on and its
        door is dropped (calls already running finish). Not admitted: nothing to do."""
        if not self._agents:
            return  # nobody admitted (a run of command agents): no token to work out
        try:
            identity = AgentIdentity.from_env(env)
        except DoorError:
            return  # not an agent this endpoint could have admitted
        digest = _digest(self._token(identity))
        if self._agents.pop(digest, None) is None:
            return
        whose = f"agent {identity.agent_id} of run {identity.run_id} (task {identity.task_id})"
        self._retired[digest] = whose
        while len(self._retired) > RETIRED_TOKENS:
            self._retired.popitem(last=False)

    def _token(self, identity: AgentIdentity) -> str:
        claims = json.dumps(identity.env(), sort_keys=True, separators=(",", ":")).encode()
        mac = hmac.new(self._key, claims, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    # ------------------------------------------------------------------ serving
    async def _serve(self) -> None:
        """Import ``mcp`` off the event loop, then serve on our socket until the exit. A
        failure is logged and closes the socket, so that agents fail at once, not after
        their connection timeout."""
        sock = self._sock
        assert sock is not None
        try:
            await asyncio.to_thread(_import_server_modules)
            if self._stop.is_set():  # the host ended while mcp was being imported
                return
            from maos.web.server import serve_in_background

            async with serve_in_background(
                self._app(),
                sock=sock,
                graceful_s=SHUTDOWN_GRACE_S,
                limit_concurrency=self.max_connections,
            ):
                self._sock = None  # the server's now: it closes it
                log.info("door endpoint serving on %s", self.url)
                await self._stop.wait()
        except Exception as exc:  # everything: the agents must not wait for a dead server
            self._failed = describe_error(exc)
            log.error("the door's MCP endpoint failed: %s", self._failed)  # noqa: TRY400
            log.debug("the door endpoint's error in full", exc_info=True)
            if self._sock is not None:
                self._sock.close()

    def _app(self) -> ASGIApp:
        from maos.mcp_server import build_server

        mcp_app = build_server(self._door_of).streamable_http_app(
            streamable_http_path=MCP_PATH,
            stateless_http=True,
            json_response=True,
            max_request_body_size=self.max_request_bytes,
        )

        async def gate(scope: Scope, receive: Receive, send: Send) -> None:
            await self._gate(mcp_app, scope, receive, send)

        return gate

    async def _gate(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate and bound each HTTP request before the MCP app sees it."""
        if scope["type"] != "http":  # the lifespan: the MCP app's session manager
            await app(scope, receive, send)
            return
        agent, refusal = self._authenticate(scope)
        if agent is None:
            self.refusals.refused(401, refusal, scope)
            # ...and the connection closed: left open, it would keep one of the endpoint's
            # places for the keep-alive time, and a local user with no token could take them
            # all from the agents.
            await _refuse(send, 401, refusal, [(b"www-authenticate", b'Bearer realm="maos"'), _CLOSE])
            return
        if scope.get("method") != "POST":
            # Stateless, JSON answers: no stream of server-initiated messages to GET (it would
            # hold a connection open for nothing), no session to DELETE.
            await _refuse(send, 405, "this endpoint takes POST only", [(b"allow", b"POST")])
            return
        if agent.calls >= self.max_calls_per_agent:
            who = agent.identity.agent_id if agent.identity is not None else agent.warm
            reason = (
                f"agent {who} has {agent.calls} requests running, the most one "
                "agent may have at once; wait for an answer before calling again"
            )
            self.refusals.refused(429, reason, scope)
            await _refuse(send, 429, reason, [(b"retry-after", b"1")])
            return
        agent.calls += 1
        try:
            body = await self._body(scope, receive, send)
            if body is not None:
                await app({**scope, _SCOPE_KEY: agent}, _replay(body, receive), send)
        finally:
            agent.calls -= 1

    async def _body(self, scope: Scope, receive: Receive, send: Send) -> list[Message] | None:
        """The request's body as it came (its ``http.request`` messages), read within
        ``BODY_TIMEOUT_S``, up to just past ``max_request_bytes`` (the transport then answers
        413). None: the client hung up (a normal event, not the transport's error with a
        traceback), or its body was late and the request is answered 408."""
        messages: list[Message] = []
        size = 0
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # http.disconnect
                        client = scope.get("client") or ("?", 0)
                        log.debug("door endpoint: %s:%s hung up before its request was in", *client)
                        return None
                    messages.append(message)
                    size += len(message.get("body", b""))
                    if not message.get("more_body", False) or size > self.max_request_bytes:
                        return messages
        except TimeoutError:
            reason = f"the request's body did not come within {BODY_TIMEOUT_S:g} s of its head"
            self.refusals.refused(408, reason, scope)
            await _refuse(send, 408, reason, [_CLOSE])
            return None

    def _authenticate(self, scope: Scope) -> tuple[_Agent | None, str]:
        """The agent a request's bearer token was given to, or None and why not."""
        values = [value for name, value in scope.get("headers", ()) if name == b"authorization"]
        if not values:
            return None, "no Authorization header: the door's endpoint needs the agent's bearer token"
        if len(values) > 1:
            return None, "more than one Authorization header"
        scheme, _, token = values[0].decode("latin-1").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None, "the Authorization header must be 'Bearer <token>'"
        digest = _digest(token)
        agent = self._agents.get(digest)
        if agent is not None and hmac.compare_digest(agent.token.encode(), token.encode()):
            return agent, ""
        whose = self._retired.get(digest)
        if whose is not None:
            return None, f"the token of {whose} is no longer valid: that attempt is over"
        return None, "unknown token: not one this endpoint gave to an agent"

    async def _door_of(self, ctx: Any) -> Door:
        """The door of the agent a tool call's request was authenticated as (``_gate``)."""
        request = getattr(ctx.request_context, "request", None)
        agent = request.scope.get(_SCOPE_KEY) if request is not None else None
        if not isinstance(agent, _Agent):  # the gate lets no such request through
            raise PermissionDenied("this call came without an authenticated agent")
        identity = agent.identity
        if identity is None:
            log.warning("door endpoint: refused a call of warm agent %s: it has no task now", agent.warm)
            raise PermissionDenied(f"warm agent {agent.warm} has no task now: its token acts for no one")
        if self._agents.get(_digest(agent.token)) is not agent:
            raise PermissionDenied(f"agent {identity.agent_id}'s attempt is over")
        async with agent.opening:
            if agent.refused:
                raise PermissionDenied(agent.refused)
            if agent.door is None:
                store = await self._store(identity)
                try:
                    agent.door = await open_door(store, identity, via=VIA)
                except PermissionDenied as exc:  # logged as door_refused by open_door, once
                    agent.refused = str(exc)
                    raise
            return agent.door

    async def _store(self, identity: AgentIdentity) -> Store:
        if self._host_store is not None and identity.store_url == agent_store_url(
            connect_url(self._host_store)
        ):
            return self._host_store
        async with self._store_lock:
            store = self._stores.get(identity.store_url)
            if store is None:
                store = self._stores[identity.store_url] = await open_agent_store(identity)
            return store


def _import_server_modules() -> None:
    """What serving needs that is slow to import (``mcp``: ~0.7 CPU-s), for a worker thread."""
    import mcp.server.mcpserver  # noqa: F401
    import uvicorn  # noqa: F401


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` for the app behind the gate: the body the gate read, then the client's own
    (its disconnect)."""
    pending = deque(messages)

    async def replayed() -> Message:
        return pending.popleft() if pending else await receive()

    return replayed


async def _refuse(send: Send, status: int, reason: str, headers: list[tuple[bytes, bytes]]) -> None:
    """A JSON-RPC error answer, as MCP clients read them."""
    body = json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32001, "message": f"refused: {reason}"}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
