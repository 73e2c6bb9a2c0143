"""The ``claude-code`` runtime: the Claude Code CLI, one OS process per attempt.

The CLI is driven directly through its stream-json protocol (ADR 0004), not through the
``claude-agent-sdk`` transport, so that the process group, the teardown contract
(``maos.agents.process.stop_process``), the pid and line-by-line streaming stay ours. The
SDK's wheel is only where the binary comes from (``maos.agents.claude_cli``).

One attempt::

    claude -p --input-format stream-json --output-format stream-json --verbose
           --session-id <uuid chosen here> --append-system-prompt "MAOS_AGENT_ID=<agent> ..."
           --setting-sources "" --strict-mcp-config [--mcp-config FILE]
           [--permission-mode M] [--model M] [--max-turns N] [--max-budget-usd X]
           [--allowedTools T ...]

- cwd: the job's directory (a git worktree when the task is isolated); environment: the
  allowlist of ``maos.agents.environment`` (basics, model access, ``--pass-env``; never
  MAOS's keys) + the job's ``MAOS_*`` variables + ``CLAUDE_CONFIG_DIR`` (one per agent, under
  ``<workdir>/.maos/runs/<run>/agents/<agent>/claude``, kept for ``--resume``) + no telemetry,
  no auto-updater, ``ENABLE_TOOL_SEARCH=false`` (MCP tools callable directly) and
  ``ANTHROPIC_BASE_URL`` when a model server is configured (``base_url=`` or
  ``$MAOS_ANTHROPIC_BASE_URL``).
- The MCP config (the door's entry carries the agent's token) is a 0600 file in the agent's
  ``CLAUDE_CONFIG_DIR`` (``mcp/<digest>.json``), never JSON on the command line, which every
  local user can read in ``ps``.
- The prompt is one user message on stdin, which is then closed: the CLI answers it and exits.
- Every stdout line goes to ``<output_dir>/<task>.<attempt>.jsonl`` (the transcript), stderr
  to ``.err``; the final ``result`` text to ``.out`` (the task's output for its children).
- Streamed to the reporter: assistant text (``text``), tool calls in short and their results
  as ``→ ok`` / ``→ error: ...`` (``tool``), API retries (``api_retry``), denied tools, failed
  MCP servers and rate-limit warnings (``warning``).
- Watchdog: no stdout line for ``task.idle_timeout_s`` or the attempt past ``task.timeout_s``
  → terminate, grace, kill, wait. After the ``result`` line the CLI gets ``result_grace_s`` to
  exit by itself before it is stopped the same way.
- Verdict: ok iff a ``result`` line arrived with ``is_error: false`` (never ``subtype``).
- Permissions: the task's ``permission_mode`` / ``allowed_tools``, else its role's, else the
  run's (``maos run --permission-mode/--allowed-tools``: ``RunConfig``); with none of them a
  task in its own git worktree gets ``acceptEdits`` (file edits there; Bash and other tools
  still need ``allowed_tools`` or a role), anywhere else the CLI's default (edits denied: the
  agent would work in the user's directory). ``bypassPermissions`` is never a default. With
  ``strict_permissions`` the first denied tool call stops the agent and fails the task for
  good (the same denial would recur on a retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from maos.agents.claude_cli import find_claude_cli
from maos.agents.environment import agent_environment
from maos.agents.guard import guarded
from maos.agents.process import (
    LINE_LIMIT_BYTES,
    MAX_OUTPUT_BYTES,
    CappedSink,
    LineSplitter,
    stop_process,
    truncation_note,
)
from maos.agents.roles import role_options
from maos.agents.runtime import AgentJob, AgentResult, Reporter
from maos.agents.stream_json import (
    ApiRetryLine,
    AssistantLine,
    InitLine,
    OtherLine,
    PermissionDeniedLine,
    RateLimitLine,
    ResultLine,
    StreamJsonError,
    UserLine,
    describe_tool_use,
    parse_line,
    user_message,
)
from maos.agents.task_env import ENV_TOKEN
from maos.agents.workspace import WORKTREES_DIR
from maos.errors import AgentError
from maos.filemodes import open_private, private_dir, tighten, write_private
from maos.mcp_server import allowed_tools_rule, mcp_config_for
from maos.model import PermissionMode, Usage
from maos.summary import DENIAL_PREFIX, how_to_allow

log = logging.getLogger("maos.agents.claude_code")

BASE_URL_ENV = "MAOS_ANTHROPIC_BASE_URL"
"""Where agents send model API calls when no ``base_url`` is given (e.g. a model server)."""
PLACEHOLDER_API_KEY = "maos-no-key"
"""The API key agents get when a base URL is set and the environment has no key (a model
server accepts any key; the CLI refuses to start with none)."""
CREDENTIAL_ENVS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
"""Credentials the CLI reads from its environment (CLI 2.1.332: ``claude auth status``)."""
CLOUD_PROVIDER_ENVS = ("CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY")
NO_MODEL = (
    "no model is set up for the plan's Claude Code tasks. Either set ANTHROPIC_API_KEY (or "
    "CLAUDE_CODE_OAUTH_TOKEN, from `claude setup-token`), or rehearse offline: run "
    "`maos model-server --script FILE` and set ANTHROPIC_BASE_URL to the address it prints. "
    "(A `claude /login` session in ~/.claude is not used: each MAOS agent has its own "
    "CLAUDE_CONFIG_DIR.)"
)


def model_base_url(environ: Mapping[str, str] | None = None) -> str | None:
    """Where agents send model API calls: ``$MAOS_ANTHROPIC_BASE_URL``, else
    ``$ANTHROPIC_BASE_URL``, else None (the CLI's own default, Anthropic's API)."""
    env = os.environ if environ is None else environ
    return env.get(BASE_URL_ENV) or env.get("ANTHROPIC_BASE_URL") or None


def model_access(environ: Mapping[str, str] | None = None) -> str | None:
    """How agents would reach a model, in words, or None when they cannot (they would fail
    with the CLI's "Not logged in"). A ``claude /login`` in ``~/.claude`` does not count:
    agents run with their own ``CLAUDE_CONFIG_DIR``, where the CLI does not find it."""
    env = os.environ if environ is None else environ
    url = model_base_url(env)
    if url is not None:
        return f"model API at {url}"
    for name in CREDENTIAL_ENVS:
        if env.get(name):
            return f"{name} set"
    for name in CLOUD_PROVIDER_ENVS:
        if env.get(name, "").lower() not in ("", "0", "false"):
            return f"{name} set (cloud provider credentials are not checked)"
    return None


STDOUT_LINE_LIMIT_BYTES = 32 << 20  # a Read of a big file comes back as one line
TEXT_CHARS = 500  # of one assistant text block in an ``agent_output`` event
TOOL_ERROR_CHARS = 200
_TAIL_BYTES = 4000
_CHUNK_BYTES = 64 << 10
_PIPE_DRAIN_S = 1.0  # how long a pump may outlive the process group (a daemon holding the pipe)
_SAFE_NAME_RE = re.compile(r"[^A-Za-z0-9_.@+-]")
WORKTREE_PERMISSION_MODE: PermissionMode = "acceptEdits"
"""The permission mode of a task in its own worktree when nothing sets one."""


class _Sink(Protocol):
    """Where raw output goes: a file, or a ``CappedSink`` around one."""

    def write(self, data: bytes, /) -> object: ...

    def flush(self) -> None: ...


@dataclass
class _Seen:
    """What one attempt's stdout said so far."""

    result: ResultLine | None = None
    result_at: float = 0.0
    stopped: str = ""  # why the watchdog stopped the agent; empty if it did not
    unreadable: str = ""  # the last line that could not be parsed
    last_retry: ApiRetryLine | None = None
    tool_uses: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    denied: set[str] = field(default_factory=set)  # tool_use ids already warned about
    denied_calls: list[tuple[str, str]] = field(default_factory=list)  # (tool, short form) per denial


class ClaudeCodeRuntime:
    """Runs tasks with the Claude Code CLI. ``runtimes={"claude-code": ClaudeCodeRuntime()}``.

    ``base_url``: the Anthropic API endpoint agents use (default ``$MAOS_ANTHROPIC_BASE_URL``,
    else the CLI's own default). ``mcp_config``: an MCP config (``{"mcpServers": {...}}``)
    passed with ``--mcp-config``; without one the agent has no MCP servers at all.
    ``setting_sources``: which settings files the CLI reads (``user``, ``project``,
    ``local``); none by default, so a developer's settings cannot change what agents do.
    ``env``: extra environment variables for every agent. ``permission_mode``,
    ``allowed_tools``, ``strict_permissions``: the run's (``RunConfig``), for tasks whose plan
    and role set none.
    """

    name = "claude-code"

    def __init__(
        self,
        *,
        cli_path: Path | None = None,
        base_url: str | None = None,
        mcp_config: Mapping[str, Any] | None = None,
        setting_sources: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        result_grace_s: float = 5.0,
        permission_mode: PermissionMode | None = None,
        allowed_tools: Sequence[str] = (),
        strict_permissions: bool = False,
    ) -> None:
        self._cli_path = cli_path
        self.base_url = base_url if base_url is not None else (os.environ.get(BASE_URL_ENV) or None)
        self.mcp_config = dict(mcp_config) if mcp_config is not None else None
        self.setting_sources = tuple(setting_sources)
        self.env = dict(env or {})
        self.result_grace_s = result_grace_s
        self.permission_mode = permission_mode
        self.allowed_tools = tuple(allowed_tools)
        self.strict_permissions = strict_permissions

    # ------------------------------------------------------------------ the command line
    def cli(self) -> Path:
        """The CLI binary (found once). Raises ``AgentError`` if there is none."""
        if self._cli_path is None:
            found = find_claude_cli()
            if found is None:
                raise AgentError(
                    "no Claude Code CLI found: `pip install claude-agent-sdk` bundles one, "
                    "or set MAOS_CLAUDE_CLI to its path"
                )
            self._cli_path = found
        return self._cli_path

    def argv(
        self,
        job: AgentJob,
        session_id: str,
        *,
        note: str | None = None,
        resume: bool = False,
        own_worktree: bool | None = None,
    ) -> list[str]:
        """The CLI's command line. A task's own settings win over its role's (the
        ``.claude/agents`` file it runs as), which win over the run's, which win over the
        CLI's defaults. ``note`` replaces ``system_note(job)`` (a warm agent's note names no
        task: ``maos.agents.pool``). ``own_worktree``: whether the agent works in a git
        worktree of its own (default: whether ``job.cwd`` is the task's worktree)."""
        task = job.task
        role = role_options(job.role) if job.role is not None else None
        note = system_note(job) if note is None else note
        if role is not None and role.append_system_prompt:
            note += "\n\n" + role.append_system_prompt
        argv = [str(self.cli()), "-p", "--input-format", "stream-json"]
        argv += [
            "--output-format",
            "stream-json",
            "--verbose",
            "--resume" if resume else "--session-id",
            session_id,
        ]
        argv += ["--append-system-prompt", note]
        argv += ["--setting-sources", ",".join(self.setting_sources), "--strict-mcp-config"]
        # The door: a `maos mcp` server bound to this agent's identity and token.
        door = ENV_TOKEN in job.env
        mcp_config = mcp_config_for(job.env, extra=self.mcp_config) if door else self.mcp_config
        if mcp_config is not None:
            argv += ["--mcp-config", str(mcp_config_file(job, mcp_config))]
        if own_worktree is None:
            own_worktree = in_own_worktree(job)
        permission_mode = self.permission_mode_for(job, own_worktree=own_worktree)
        if permission_mode is not None:
            argv += ["--permission-mode", permission_mode]
        model = task.model or job.agent.model or (role.model if role else None)
        if model is not None:
            argv += ["--model", model]
        max_turns = task.max_turns or (role.max_turns if role else None)
        if max_turns is not None:
            argv += ["--max-turns", str(max_turns)]
        if task.max_budget_usd is not None:
            argv += ["--max-budget-usd", f"{task.max_budget_usd:.6f}"]
        tools = task.allowed_tools or self.allowed_tools
        allowed = [allowed_tools_rule(), *tools] if door else list(tools)
        if role is not None and role.allowed_tools is not None:
            # The role's tools are the set the agent has (like a Claude Code subagent's).
            argv += ["--tools", ",".join(role.builtin_tools or ())]
            allowed = [*role.allowed_tools, *allowed]
        if allowed:
            # Variadic and last: "Bash(git *)" stays one item, nothing after it is swallowed.
            argv += ["--allowedTools", *dict.fromkeys(allowed)]
        return argv

    def permission_mode_for(self, job: AgentJob, *, own_worktree: bool) -> PermissionMode | None:
        """The task's mode, else its role's, else the run's, else acceptEdits in its own
        worktree; None leaves the CLI's default (file edits denied headless)."""
        role = role_options(job.role) if job.role is not None else None
        chosen = job.task.permission_mode or (role.permission_mode if role else None) or self.permission_mode
        if chosen is None and own_worktree:
            return WORKTREE_PERMISSION_MODE
        return chosen

    def environment(self, job: AgentJob, config_dir: Path) -> dict[str, str]:
        env = agent_environment(job.env, claude=True, extra=self.env)  # never our secrets
        env.update(
            CLAUDE_CONFIG_DIR=str(config_dir),
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_TELEMETRY="1",
            DISABLE_AUTOUPDATER="1",
            # Otherwise CLI 2.1.33x hides MCP tools behind ToolSearch and refuses direct calls.
            ENABLE_TOOL_SEARCH="false",
        )
        if self.base_url is not None:
            env["ANTHROPIC_BASE_URL"] = self.base_url
        if env.get("ANTHROPIC_BASE_URL") and not any(env.get(name) for name in CREDENTIAL_ENVS):
            env["ANTHROPIC_API_KEY"] = PLACEHOLDER_API_KEY
        return env

    # ------------------------------------------------------------------ one attempt
    async def run(self, job: AgentJob, reporter: Reporter) -> AgentResult:
        config_dir = agent_config_dir(job)
        resumed = resumable_session(job, config_dir)
        session_id = resumed or str(uuid.uuid4())
        base = job.output_dir / f"{job.task.id}.{job.attempt}"
        paths = _Paths(
            transcript=base.with_name(base.name + ".jsonl"),
            stderr=base.with_name(base.name + ".err"),
            output=base.with_name(base.name + ".out"),
        )
        started = time.monotonic()
        try:
            argv = self.argv(job, session_id, resume=resumed is not None)
            private_dir(config_dir)
            # The CLI and all it starts die with this process (maos.agents.guard).
            argv, env = guarded(argv, cwd=job.cwd, env=self.environment(job, config_dir))
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=job.cwd,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                limit=STDOUT_LINE_LIMIT_BYTES,
            )
        except AgentError as exc:
            return AgentResult(ok=False, duration_s=0.0, reason=str(exc))
        except OSError as exc:
            return AgentResult(
                ok=False, duration_s=0.0, reason=f"cannot start the Claude Code CLI in {job.cwd}: {exc}"
            )
        log.info(
            "task %s attempt %d: claude pid %d session %s in %s",
            job.task.id,
            job.attempt,
            proc.pid,
            session_id,
            job.cwd,
        )
        seen = _Seen()
        with (
            open_private(paths.transcript, "wb") as transcript_file,
            open_private(paths.stderr, "wb") as stderr_file,
        ):
            transcript = CappedSink(transcript_file, MAX_OUTPUT_BYTES)
            stderr = CappedSink(stderr_file, MAX_OUTPUT_BYTES)
            await self._attempt(proc, job, reporter, session_id, seen, transcript, stderr)
            for name, sink in (("transcript", transcript), ("stderr", stderr)):
                if sink.dropped_bytes:
                    note = truncation_note(name, MAX_OUTPUT_BYTES, sink.dropped_bytes)
                    stderr_file.write(f"\n[maos: {note}]\n".encode())
                    await reporter.warning(note)
        tighten(config_dir)  # the CLI's own files (its transcripts) follow the umask
        result = self._judge(job, seen, proc.returncode, time.monotonic() - started, paths)
        log.info(
            "task %s attempt %d: claude session %s %s",
            job.task.id,
            job.attempt,
            session_id,
            "ok" if result.ok else result.reason,
        )
        return result

    async def _attempt(
        self,
        proc: asyncio.subprocess.Process,
        job: AgentJob,
        reporter: Reporter,
        session_id: str,
        seen: _Seen,
        transcript: _Sink,
        stderr: CappedSink,
    ) -> None:
        """Run the process under the watchdog; it is reaped whatever happens."""
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        async with asyncio.TaskGroup() as group:
            pumps = [
                group.create_task(
                    _feed(
                        proc.stdin,
                        user_message(
                            first_message(job, session_id if job.resume_session == session_id else None)
                        ),
                    )
                ),
                group.create_task(_pump_stderr(proc.stderr, stderr, reporter)),
            ]
            try:
                await reporter.started(proc.pid, session_id)
                await self._watch(proc.stdout, job, reporter, seen, transcript)
            finally:
                await stop_process(proc, job.grace_s)
                # The group is dead, so the pipes close, unless something left the group
                # (a daemon with its own session) and holds them: do not wait for that.
                _, pending = await asyncio.wait(pumps, timeout=_PIPE_DRAIN_S)
                for pump in pending:
                    pump.cancel()

    async def _watch(
        self,
        stdout: asyncio.StreamReader,
        job: AgentJob,
        reporter: Reporter,
        seen: _Seen,
        transcript: _Sink,
        *,
        until_result: bool = False,
    ) -> None:
        """Read stdout until EOF, the watchdog fires, or the CLI lingers after its result.
        ``until_result``: return at the ``result`` line (a warm agent's turn ends there and
        the CLI stays alive for the next one: ``maos.agents.pool``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + job.task.timeout_s
        idle_s = job.task.idle_timeout_s
        while True:
            now = loop.time()
            if seen.result is not None:
                wait_s = seen.result_at + self.result_grace_s - now
            else:
                wait_s = min(idle_s, deadline - now)
            try:
                async with asyncio.timeout(max(0.0, wait_s)):
                    line = await stdout.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:  # end of output: its last line, or b""
                line = exc.partial
            except asyncio.LimitOverrunError:
                # A line past the reader's limit (STDOUT_LINE_LIMIT_BYTES) cannot be parsed, and
                # skipping it could lose the result line or a tool result: fail the attempt.
                seen.stopped = (
                    f"the agent printed a stream-json line longer than {STDOUT_LINE_LIMIT_BYTES >> 20} MiB, "
                    "which MAOS cannot read (the start of it is in the task's .jsonl transcript)"
                )
                await _keep_start_of_overlong_line(stdout, transcript)
                return
            except TimeoutError:
                if seen.result is not None:
                    log.info(
                        "task %s: claude did not exit %gs after its result; stopping it",
                        job.task.id,
                        self.result_grace_s,
                    )
                elif loop.time() >= deadline:
                    seen.stopped = f"timed out after {job.task.timeout_s:g}s"
                else:
                    seen.stopped = f"idle for {idle_s:g}s (no output from the agent)"
                return
            if not line:
                return
            transcript.write(line)
            transcript.flush()
            await self._handle(line, reporter, seen, loop.time())
            if self.strict_permissions and seen.denied_calls and seen.result is None:
                # The agent would go on without the tool (and spend on it): stop it now.
                seen.stopped = strict_denial_reason(seen.denied_calls)
                return
            if until_result and seen.result is not None:
                return

    async def _handle(self, line: bytes, reporter: Reporter, seen: _Seen, now: float) -> None:
        if not line.strip():
            return
        try:
            record = parse_line(line)
        except StreamJsonError as exc:
            # Not fatal by itself (the verdict is the result line's), but never silent.
            if not seen.unreadable:
                await reporter.warning(f"unreadable stream-json output: {exc}")
            seen.unreadable = str(exc)
            await reporter.output("stdout", line[:LINE_LIMIT_BYTES].decode(errors="replace").rstrip("\r\n"))
            return
        match record:
            case InitLine():
                for server in record.mcp_servers:
                    if server.status != "connected":
                        await reporter.warning(f"MCP server {server.name!r} is {server.status}")
            case AssistantLine():
                for block in record.message.blocks:
                    if block.type == "text" and block.text and block.text.strip():
                        await reporter.output("text", _clip(block.text.strip(), TEXT_CHARS))
                    elif block.type == "tool_use" and block.name:
                        arguments = block.input or {}
                        if block.id:
                            seen.tool_uses[block.id] = (block.name, arguments)
                        await reporter.output("tool", describe_tool_use(block.name, arguments))
            case UserLine():
                # Every tool result is reported: the line also tells the host's health monitor
                # the agent is alive during long tool runs.
                for block in record.message.blocks:
                    if block.type != "tool_result":
                        continue
                    if block.is_error:
                        first = next(iter(block.result_text().strip().splitlines()), "")
                        await reporter.output("tool", "→ error: " + _clip(first, TOOL_ERROR_CHARS))
                    else:
                        await reporter.output("tool", "→ ok")
            case ApiRetryLine():
                seen.last_retry = record
                await reporter.api_retry(
                    record.attempt,
                    error_status=record.error_status,
                    error=record.error,
                    retry_delay_ms=record.retry_delay_ms,
                    max_retries=record.max_retries,
                )
            case PermissionDeniedLine():
                name, arguments = seen.tool_uses.get(record.tool_use_id, (record.tool_name, {}))
                await self._denied(reporter, seen, record.tool_use_id, name, arguments, record.message)
            case RateLimitLine():
                if record.status not in ("", "allowed"):
                    info = ", ".join(f"{k}={v}" for k, v in record.rate_limit_info.items() if k != "status")
                    await reporter.warning(f"rate limit {record.status}" + (f": {info}" if info else ""))
            case ResultLine():
                seen.result = record
                seen.result_at = now
                for denial in record.permission_denials:
                    await self._denied(
                        reporter, seen, denial.tool_use_id, denial.tool_name, denial.tool_input, ""
                    )
            case OtherLine():
                pass

    @staticmethod
    async def _denied(
        reporter: Reporter,
        seen: _Seen,
        tool_use_id: str,
        name: str,
        arguments: Mapping[str, Any],
        message: str,
    ) -> None:
        """One warning per denied tool call (it shows up as a line and again in the result)."""
        if tool_use_id and tool_use_id in seen.denied:
            return
        seen.denied.add(tool_use_id)
        call = describe_tool_use(name or "?", arguments)
        seen.denied_calls.append((name or "?", call))
        text = DENIAL_PREFIX + call
        if message:  # its first sentence says why; the rest is advice to the model
            why = " ".join(message.split()).split(". ")[0].rstrip(".")
            text += f" ({_clip(why, TOOL_ERROR_CHARS)})"
        await reporter.warning(text)

    # ------------------------------------------------------------------ the verdict
    def _judge(
        self, job: AgentJob, seen: _Seen, exit_code: int | None, duration_s: float, paths: _Paths
    ) -> AgentResult:
        result = seen.result
        write_private(paths.output, (result.result or "") if result is not None else "")
        stderr_tail = _tail(paths.stderr)
        usage = _usage(result) if result is not None else None
        code = exit_code if exit_code is not None and exit_code >= 0 else None  # < 0: our signal
        if self.strict_permissions and seen.denied_calls:
            # Not retried: the same plan and permissions would be denied the same way.
            return AgentResult(
                ok=False,
                duration_s=duration_s,
                exit_code=code,
                reason=strict_denial_reason(seen.denied_calls),
                stderr_tail=stderr_tail,
                output_path=str(paths.output),
                final=True,
                usage=usage,
            )
        if seen.stopped:
            reason = seen.stopped
        elif result is None:
            reason = f"the Claude Code CLI exited (code {exit_code}) without a result line"
            if seen.unreadable:
                reason += f"; last unreadable output: {seen.unreadable}"
        elif not result.is_error:
            return AgentResult(
                ok=True,
                duration_s=duration_s,
                exit_code=code,
                stderr_tail=stderr_tail,
                output_path=str(paths.output),
                usage=usage,
            )
        else:
            reason = self._failure(job, result, seen)
        return AgentResult(
            ok=False,
            duration_s=duration_s,
            exit_code=code,
            reason=reason,
            stderr_tail=stderr_tail,
            output_path=str(paths.output),
            usage=usage,
        )

    @staticmethod
    def _failure(job: AgentJob, result: ResultLine, seen: _Seen) -> str:
        """Why an ``is_error`` result failed, in words (``subtype`` only picks the wording)."""
        terminal = result.terminal_reason or ""
        detail = "; ".join(result.errors) or (result.result or "").strip()
        if terminal == "max_turns" or result.subtype == "error_max_turns":
            return f"max turns ({job.task.max_turns or result.num_turns}) reached"
        if terminal == "budget_exhausted" or result.subtype == "error_max_budget_usd":
            spent = f"; spent ${result.total_cost_usd:.4f}" if result.total_cost_usd is not None else ""
            limit = f" (${job.task.max_budget_usd:g})" if job.task.max_budget_usd is not None else ""
            return f"budget{limit} exhausted{spent}"
        if terminal == "api_error":
            status = result.api_error_status
            if status is None and seen.last_retry is not None:
                status = seen.last_retry.error_status
            retries = f" after {seen.last_retry.attempt} retries" if seen.last_retry is not None else ""
            return f"model API error {status if status is not None else '(no status)'}{retries}: " + _clip(
                detail, 300
            )
        return f"agent error ({terminal or result.subtype or 'is_error'}): {_clip(detail, 300)}"


def in_own_worktree(job: AgentJob) -> bool:
    """Whether the job works in its task's own git worktree (``maos.agents.workspace``:
    ``<repo>/.maos/worktrees/<run>/<task>``), not in the user's directory."""
    cwd = job.cwd
    return (
        cwd.parent.name == job.run_id
        and cwd.parent.parent.parts[-len(WORKTREES_DIR.parts) :] == WORKTREES_DIR.parts
        and (cwd / ".git").is_file()
    )


def strict_denial_reason(denied_calls: Sequence[tuple[str, str]]) -> str:
    """Why ``strict_permissions`` failed a task: the calls denied and how to allow them."""
    calls = "; ".join(dict.fromkeys(call for _, call in denied_calls))
    return f"permission denied (strict permissions): {_clip(calls, 300)}; " + how_to_allow(
        name for name, _ in denied_calls
    )


@dataclass(frozen=True)
class _Paths:
    transcript: Path
    stderr: Path
    output: Path


RESUME_NOTE = "MAOS restarted while you were working on this task. Continue where you left off."


def _project_dir(cwd: Path) -> str:
    """How Claude Code names a working directory under ``projects/`` (non-alphanumerics: -)."""
    return re.sub(r"[^A-Za-z0-9]", "-", str(cwd))


def resumable_session(job: AgentJob, config_dir: Path) -> str | None:
    """The session to continue (``--resume``) if its transcript exists, made visible to this
    attempt's agent and working directory; else None (a fresh session)."""
    if job.resume_session is None:
        return None
    previous = config_dir.parent.parent / _SAFE_NAME_RE.sub("_", job.resume_agent or job.agent.id) / "claude"
    found = sorted((previous / "projects").glob(f"*/{job.resume_session}.jsonl"))
    if not found:
        return None
    target = config_dir / "projects" / _project_dir(job.cwd) / found[0].name
    if target != found[0]:
        private_dir(target.parent)
        write_private(target, found[0].read_bytes())
    return job.resume_session


def first_message(job: AgentJob, resumed: str | None) -> str:
    if resumed is None:
        return job.task.prompt
    return f"{RESUME_NOTE} The task was:\n\n{job.task.prompt}"


def mcp_config_file(job: AgentJob, config: Mapping[str, Any]) -> Path:
    """``config`` as a file the CLI reads (``--mcp-config FILE``): 0600 in the agent's
    ``CLAUDE_CONFIG_DIR``, named by its content (the same config, the same file: a warm
    agent's compatibility key stays stable), so that the token in it is not on a command line."""
    text = json.dumps(config, sort_keys=True)
    path = agent_config_dir(job) / "mcp" / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.json"
    if not path.exists():
        write_private(private_dir(path.parent) / path.name, text)
    return path


def agent_config_dir(job: AgentJob) -> Path:
    """``CLAUDE_CONFIG_DIR`` of the job's agent: ``<workdir>/.maos/runs/<run>/agents/<agent>/claude``
    (``job.output_dir`` is the run directory's ``outputs``). Kept after the run for ``--resume``
    and for reading the CLI's own transcripts (``projects/<cwd>/<session>.jsonl``)."""
    return job.output_dir.parent / "agents" / _SAFE_NAME_RE.sub("_", job.agent.id) / "claude"


def system_note(job: AgentJob) -> str:
    """Appended to the CLI's system prompt. Its first line is the agent marker the model
    server's ``agent`` matcher reads (``MAOS_AGENT_ID=<id>``, docs/model-server.md)."""
    title = f" ({job.task.title})" if job.task.title else ""
    return (
        f"MAOS_AGENT_ID={job.agent.id}\n"
        f"You are agent {job.agent.id} of MAOS run {job.run_id}, working on task {job.task.id}{title}, "
        f"attempt {job.attempt}."
    )


def _usage(result: ResultLine) -> Usage:
    tokens = result.usage
    return Usage(
        cost_usd=result.total_cost_usd or 0.0,
        input_tokens=tokens.input_tokens if tokens else 0,
        output_tokens=tokens.output_tokens if tokens else 0,
        cache_read_tokens=tokens.cache_read_input_tokens if tokens else 0,
        cache_creation_tokens=tokens.cache_creation_input_tokens if tokens else 0,
    )


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
        stdin.close()


async def _pump_stderr(reader: asyncio.StreamReader, sink: CappedSink, reporter: Reporter) -> None:
    """Drain stderr in chunks (a line of any length): bytes to ``sink``, lines to the reporter."""
    splitter = LineSplitter()
    while chunk := await reader.read(_CHUNK_BYTES):
        sink.write(chunk)
        sink.flush()
        for text in splitter.feed(chunk):
            if text.strip():
                await reporter.output("stderr", text)
    for text in splitter.close():
        if text.strip():
            await reporter.output("stderr", text)


async def _keep_start_of_overlong_line(stdout: asyncio.StreamReader, transcript: _Sink) -> None:
    """What the reader buffered of a line past its limit, to the transcript (it is ours to
    read: ``readuntil`` left it in the buffer)."""
    transcript.write(await stdout.read(STDOUT_LINE_LIMIT_BYTES))
    transcript.write(b"\n")
    transcript.flush()


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _TAIL_BYTES))
            return handle.read().decode(errors="replace").strip()
    except OSError:
        return ""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
