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
  no auto-updater, ``ENABLE_TOOL_SEARCH=true`` (rarely used built-in tools deferred; the
  door's tools always loaded: ADR 0020) and
  ``ANTHROPIC_BASE_URL`` when a model server is configured (``base_url=`` or
  ``$MAOS_ANTHROPIC_BASE_URL``).
- The door's MCP entry: the host's endpoint over HTTP when the job has one (``job.door``,
  ``maos.mcp_http``: URL and bearer token), else a ``maos mcp`` process on stdio.
- The MCP config (the door's entry carries the agent's token) is a 0600 file in the agent's
  ``CLAUDE_CONFIG_DIR`` (``mcp/<digest>.json``), never JSON on the command line, which every
  local user can read in ``ps``.
- The prompt is one user message on stdin, which is then closed: the CLI answers it and exits.
- The turn is ``maos.agents.claude_turn``'s: the transcript (``<output_dir>/<task>.<attempt>.jsonl``),
  ``.err`` and ``.out`` files, what is streamed to the reporter, the watchdog (idle and
  wall-clock timeouts) and the verdict (ok iff a ``result`` line with ``is_error: false``).
  Here it is watched to EOF: after the ``result`` line the CLI gets ``result_grace_s`` to
  exit by itself; a CLI that does not, or that the watchdog stopped, is reaped (terminate,
  grace, kill, wait).
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
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from maos.agents.claude_cli import find_claude_cli
from maos.agents.claude_turn import STDOUT_LINE_LIMIT_BYTES, Turn, TurnFiles, send_message
from maos.agents.environment import agent_environment
from maos.agents.process import PIPE_DRAIN_S, CappedSink, LineSplitter, close_transport, spawn, stop_process
from maos.agents.roles import role_options
from maos.agents.runtime import AgentJob, AgentResult, Reporter
from maos.agents.task_env import ENV_TOKEN
from maos.errors import AgentError
from maos.filemodes import private_dir, tighten, write_private
from maos.markers import task_note
from maos.mcp_server import SERVER_NAME, allowed_tools_rule, mcp_config_for
from maos.model import PermissionMode
from maos.paths import claude_config_dir, in_task_worktree

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


_CHUNK_BYTES = 64 << 10
WORKTREE_PERMISSION_MODE: PermissionMode = "acceptEdits"
"""The permission mode of a task in its own worktree when nothing sets one."""


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
        door: Mapping[str, Any] | None = None,
        config_dir: Path | None = None,
    ) -> list[str]:
        """The CLI's command line. A task's own settings win over its role's (the
        ``.claude/agents`` file it runs as), which win over the run's, which win over the
        CLI's defaults. ``note`` replaces the task note (``maos.markers``; a warm agent's note
        names no task: ``maos.agents.pool``). ``own_worktree``: whether the agent works in a git
        worktree of its own (default: whether ``job.cwd`` is the task's worktree). ``door``:
        the door's MCP server entry to use instead of one for the job's identity (a warm agent
        that outlives its run: its token is bound to each task's identity by the endpoint);
        ``config_dir``: where its MCP config file goes (default: the agent's
        ``CLAUDE_CONFIG_DIR``)."""
        task = job.task
        role = role_options(job.role) if job.role is not None else None
        if note is None:
            note = task_note(
                agent_id=job.agent.id,
                run_id=job.run_id,
                task_id=task.id,
                title=task.title,
                attempt=job.attempt,
            )
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
        # The door, bound to this agent's identity and token: the host's MCP endpoint over
        # HTTP (maos.mcp_http), or without one a `maos mcp` server of its own on stdio.
        if door is not None:
            servers = dict((self.mcp_config or {}).get("mcpServers", {}))
            mcp_config: Mapping[str, Any] | None = {"mcpServers": {**servers, SERVER_NAME: dict(door)}}
        elif ENV_TOKEN not in job.env:
            mcp_config = self.mcp_config
        elif job.door is not None:
            mcp_config = job.door.mcp_config(job.env, extra=self.mcp_config)
        else:
            mcp_config = mcp_config_for(job.env, extra=self.mcp_config)
        has_door = door is not None or ENV_TOKEN in job.env
        if mcp_config is not None:
            argv += ["--mcp-config", str(mcp_config_file(job, mcp_config, config_dir))]
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
        allowed = [allowed_tools_rule(), *tools] if has_door else list(tools)
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
            # Built-in tools a task rarely needs (WebSearch, Cron*, NotebookEdit …) wait behind
            # ToolSearch, as in a plain `claude`; the door's tools are always loaded (its MCP
            # entry says ``alwaysLoad``), so they can be called directly (ADR 0020).
            ENABLE_TOOL_SEARCH="true",
        )
        if self.base_url is not None:
            env["ANTHROPIC_BASE_URL"] = self.base_url
        if env.get("ANTHROPIC_BASE_URL") and not any(env.get(name) for name in CREDENTIAL_ENVS):
            env["ANTHROPIC_API_KEY"] = PLACEHOLDER_API_KEY
        return env

    # ------------------------------------------------------------------ one attempt
    def turn(self, job: AgentJob, reporter: Reporter) -> Turn:
        """A turn of ``job`` with this runtime's ``result_grace_s`` and ``strict_permissions``
        (the warm pool's turns too: ``maos.agents.pool``)."""
        return Turn(
            job, reporter, result_grace_s=self.result_grace_s, strict_permissions=self.strict_permissions
        )

    async def run(self, job: AgentJob, reporter: Reporter) -> AgentResult:
        config_dir = agent_config_dir(job)
        resumed = resumable_session(job, config_dir)
        session_id = resumed or str(uuid.uuid4())
        files = TurnFiles.of(job)
        started = time.monotonic()
        try:
            argv = self.argv(job, session_id, resume=resumed is not None)
            private_dir(config_dir)
            # The CLI and all it starts die with this process (maos.agents.guard).
            proc, exited = await spawn(
                argv, cwd=job.cwd, env=self.environment(job, config_dir), limit_bytes=STDOUT_LINE_LIMIT_BYTES
            )
        except AgentError as exc:
            return AgentResult(ok=False, duration_s=0.0, reason=str(exc))
        except OSError as exc:
            return AgentResult(
                ok=False, duration_s=0.0, reason=f"cannot start the Claude Code CLI in {job.cwd}: {exc}"
            )
        turn = self.turn(job, reporter)
        async with files.open(reporter) as (transcript, stderr):
            await _attempt(proc, exited, turn, session_id, first_message(job, resumed), transcript, stderr)
        tighten(config_dir)  # the CLI's own files (its transcripts) follow the umask
        result = turn.judge(proc.returncode, time.monotonic() - started, files)
        log.info(
            "task %s attempt %d: claude session %s %s",
            job.task.id,
            job.attempt,
            session_id,
            "ok" if result.ok else result.reason,
        )
        return result


async def _attempt(
    proc: asyncio.subprocess.Process,
    exited: asyncio.Future[None],
    turn: Turn,
    session_id: str,
    message: str,
    transcript: CappedSink,
    stderr: CappedSink,
) -> None:
    """Run the process's one turn: ``message`` in (stdin then closed), stdout watched to EOF;
    the process is reaped whatever happens."""
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    async with asyncio.TaskGroup() as group:
        pumps = [
            group.create_task(send_message(proc.stdin, message, close=True)),
            group.create_task(_pump_stderr(proc.stderr, stderr, turn.reporter)),
        ]
        try:
            await turn.started(proc.pid, session_id, where=f"in {turn.job.cwd}")
            await turn.watch(proc.stdout, transcript)
        finally:
            await stop_process(proc, turn.job.grace_s, exited=exited)
            # The group is dead, so the pipes close, unless something left the group
            # (a daemon with its own session) and holds them: do not wait for that.
            _, pending = await asyncio.wait(pumps, timeout=PIPE_DRAIN_S)
            for pump in pending:
                pump.cancel()
            close_transport(proc)  # our ends of the pipes, whoever else holds theirs


def in_own_worktree(job: AgentJob) -> bool:
    """Whether the job works in its task's own git worktree (``maos.agents.workspace``:
    ``<repo>/.maos/worktrees/<run>/<task>``), not in the user's directory."""
    return in_task_worktree(job.cwd, job.run_id) and (job.cwd / ".git").is_file()


RESUME_NOTE = "MAOS restarted while you were working on this task. Continue where you left off."


def _project_dir(cwd: Path) -> str:
    """How Claude Code names a working directory under ``projects/`` (non-alphanumerics: -)."""
    return re.sub(r"[^A-Za-z0-9]", "-", str(cwd))


def resumable_session(job: AgentJob, config_dir: Path) -> str | None:
    """The session to continue (``--resume``) if its transcript exists, made visible to this
    attempt's agent and working directory; else None (a fresh session)."""
    if job.resume_session is None:
        return None
    previous = claude_config_dir(job.output_dir, job.resume_agent or job.agent.id)
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


def mcp_config_file(job: AgentJob, config: Mapping[str, Any], config_dir: Path | None = None) -> Path:
    """``config`` as a file the CLI reads (``--mcp-config FILE``): 0600 in the agent's
    ``CLAUDE_CONFIG_DIR`` (or ``config_dir``), named by its content (the same config, the same
    file: a warm agent's compatibility key stays stable), so that the token in it is not on a
    command line."""
    text = json.dumps(config, sort_keys=True)
    folder = config_dir if config_dir is not None else agent_config_dir(job)
    path = folder / "mcp" / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.json"
    if not path.exists():
        write_private(private_dir(path.parent) / path.name, text)
    return path


def agent_config_dir(job: AgentJob) -> Path:
    """``CLAUDE_CONFIG_DIR`` of the job's agent (``maos.paths.claude_config_dir``)."""
    return claude_config_dir(job.output_dir, job.agent.id)


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
