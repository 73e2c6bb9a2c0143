"""One turn of a Claude Code agent: a user message in, stream-json lines out, a verdict.

A turn is what MAOS does between handing the CLI one user message and judging its answer
(ADR 0004):

- **The message**: ``send_message`` writes it to the CLI's stdin as one stream-json user line.
- **The watch**: ``Turn.watch`` reads stdout line by line (a line up to
  ``STDOUT_LINE_LIMIT_BYTES``; a longer one fails the turn). Every line goes to the
  transcript; the reporter gets assistant text (``text``), tool calls in short and their
  results as ``→ ok`` / ``→ error: ...`` (``tool``), API retries (``api_retry``), denied
  tools, failed MCP servers and rate-limit warnings (``warning``). Watchdog: no stdout line
  for ``task.idle_timeout_s``, or the turn past ``task.timeout_s``, ends the watch with a
  reason (``Turn.stopped``). After the ``result`` line the CLI gets ``result_grace_s`` to exit
  by itself; with ``until_result`` the watch ends at that line instead. With
  ``strict_permissions`` the first denied tool call ends it.
- **The verdict**: ``Turn.judge`` writes the ``result`` text to the output file and returns
  the ``AgentResult``: ok iff a ``result`` line arrived with ``is_error: false`` (never by its
  ``subtype``). With ``strict_permissions`` a denied tool call fails the task for good (the
  same denial would recur on a retry).
- **The files** (``TurnFiles``): ``<output_dir>/<task>.<attempt>.jsonl`` (the transcript:
  every stdout line), ``.err`` (stderr; made at its first byte), each private and capped at
  ``MAX_OUTPUT_BYTES``, and ``.out`` (the ``result`` text: the task's output for its children).

Its two users start, feed and stop the process themselves. The cold runtime
(``maos.agents.claude_code.ClaudeCodeRuntime``) runs one turn per process: stdin is closed
after the message and the watch runs to EOF. The warm pool (``maos.agents.pool``) runs one
turn per task on a long-lived process: stdin stays open, the watch ends at the ``result``
line (``until_result=True``) and the CLI waits for the next message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maos.agents.process import (
    LINE_LIMIT_BYTES,
    MAX_OUTPUT_BYTES,
    CappedSink,
    file_tail,
    truncation_note,
)
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
from maos.filemodes import open_private, write_private
from maos.model import Usage
from maos.numbers import MAX_FLOAT
from maos.paths import attempt_file
from maos.summary import DENIAL_PREFIX, how_to_allow

__all__ = [
    "STDOUT_LINE_LIMIT_BYTES",
    "TEXT_CHARS",
    "TOOL_ERROR_CHARS",
    "Turn",
    "TurnFiles",
    "failure_reason",
    "send_message",
    "strict_denial_reason",
]

log = logging.getLogger("maos.agents.claude_turn")

STDOUT_LINE_LIMIT_BYTES = 32 << 20  # a Read of a big file comes back as one line
"""The longest stdout line a turn can read: the ``limit`` of the CLI's stdout reader."""
TEXT_CHARS = 500  # of one assistant text block in an ``agent_output`` event
TOOL_ERROR_CHARS = 200


@dataclass(frozen=True)
class TurnFiles:
    """Where one attempt's turn is recorded, next to the other attempts' in ``job.output_dir``."""

    transcript: Path  # <task>.<attempt>.jsonl: every stdout line
    stderr: Path  # <task>.<attempt>.err
    output: Path  # <task>.<attempt>.out: the result text

    @classmethod
    def of(cls, job: AgentJob) -> TurnFiles:
        folder, task, attempt = job.output_dir, job.task.id, job.attempt
        return cls(
            transcript=attempt_file(folder, task, attempt, ".jsonl"),
            stderr=attempt_file(folder, task, attempt, ".err"),
            output=attempt_file(folder, task, attempt, ".out"),
        )

    @contextlib.asynccontextmanager
    async def open(self, reporter: Reporter) -> AsyncIterator[tuple[CappedSink, CappedSink]]:
        """The transcript and stderr files (0600), each capped at ``MAX_OUTPUT_BYTES``. What a
        stream lost to its cap is noted at the end of the stderr file and to ``reporter``."""
        stderr = CappedSink(self.stderr, MAX_OUTPUT_BYTES)  # created at its first byte
        with open_private(self.transcript, "wb") as transcript_file, contextlib.closing(stderr):
            transcript = CappedSink(transcript_file, MAX_OUTPUT_BYTES)
            yield transcript, stderr
            for name, sink in (("transcript", transcript), ("stderr", stderr)):
                if sink.dropped_bytes:
                    note = truncation_note(name, MAX_OUTPUT_BYTES, sink.dropped_bytes)
                    stderr.note(note)
                    await reporter.warning(note)


async def send_message(stdin: asyncio.StreamWriter, text: str, *, close: bool = False) -> None:
    """``text`` to the CLI as one stream-json user message; ``close``: then end its stdin (the
    CLI answers and exits). A CLI that already exited is not an error here: the watch says."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(user_message(text))
        await stdin.drain()
        if close:
            stdin.close()


class Turn:
    """One turn of ``job``'s agent: what its stdout said so far, the watchdog and the verdict.

    ``result_grace_s``: how long the CLI may run on after its ``result`` line. ``strict_permissions``:
    a denied tool call stops the agent and fails the task for good.
    """

    def __init__(
        self, job: AgentJob, reporter: Reporter, *, result_grace_s: float, strict_permissions: bool
    ) -> None:
        self.job = job
        self.reporter = reporter
        self.result_grace_s = result_grace_s
        self.strict_permissions = strict_permissions
        self.result: ResultLine | None = None
        self.result_at = 0.0  # loop time of the result line
        self.stopped = ""  # why the watch stopped the agent; empty if it did not
        self.unreadable = ""  # the last line that could not be parsed
        self.last_retry: ApiRetryLine | None = None
        self.denied_calls: list[tuple[str, str]] = []  # (tool, short form) per denial
        self._tool_uses: dict[str, tuple[str, dict[str, Any]]] = {}
        self._denied: set[str] = set()  # tool_use ids already warned about

    async def started(self, pid: int, session_id: str, *, where: str) -> None:
        """The CLI ``pid`` works on the turn: logged (``where``: the rest of the line) and
        reported (``Reporter.started``)."""
        job = self.job
        log.info(
            "task %s attempt %d: claude pid %d session %s %s",
            job.task.id,
            job.attempt,
            pid,
            session_id,
            where,
        )
        await self.reporter.started(pid, session_id)

    @property
    def answered(self) -> bool:
        """A ``result`` line arrived and the watch did not stop the agent: the CLI is ready
        for another message (if its process still runs)."""
        return self.result is not None and not self.stopped

    # ------------------------------------------------------------------ the watch
    async def watch(
        self, stdout: asyncio.StreamReader, transcript: CappedSink, *, until_result: bool = False
    ) -> None:
        """Read stdout until EOF, the watchdog fires, or the CLI lingers after its result.
        ``until_result``: return at the ``result`` line (the CLI stays alive for the next
        message). ``stdout``'s limit must be ``STDOUT_LINE_LIMIT_BYTES``."""
        job = self.job
        loop = asyncio.get_running_loop()
        deadline = loop.time() + job.task.timeout_s
        idle_s = job.task.idle_timeout_s
        while True:
            now = loop.time()
            if self.result is not None:
                wait_s = self.result_at + self.result_grace_s - now
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
                self.stopped = (
                    f"the agent printed a stream-json line longer than {STDOUT_LINE_LIMIT_BYTES >> 20} MiB, "
                    "which MAOS cannot read (the start of it is in the task's .jsonl transcript)"
                )
                await _keep_start_of_overlong_line(stdout, transcript)
                return
            except TimeoutError:
                if self.result is not None:
                    log.info(
                        "task %s: claude did not exit %gs after its result; stopping it",
                        job.task.id,
                        self.result_grace_s,
                    )
                elif loop.time() >= deadline:
                    self.stopped = f"timed out after {job.task.timeout_s:g}s"
                else:
                    self.stopped = f"idle for {idle_s:g}s (no output from the agent)"
                return
            if not line:
                return
            transcript.write(line)
            transcript.flush()
            await self._handle(line, loop.time())
            if self.strict_permissions and self.denied_calls and self.result is None:
                # The agent would go on without the tool (and spend on it): stop it now.
                self.stopped = strict_denial_reason(self.denied_calls)
                return
            if until_result and self.result is not None:
                return

    async def _handle(self, line: bytes, now: float) -> None:
        reporter = self.reporter
        if not line.strip():
            return
        try:
            record = parse_line(line)
        except StreamJsonError as exc:
            # Not fatal by itself (the verdict is the result line's), but never silent.
            if not self.unreadable:
                await reporter.warning(f"unreadable stream-json output: {exc}")
            self.unreadable = str(exc)
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
                            self._tool_uses[block.id] = (block.name, arguments)
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
                self.last_retry = record
                await reporter.api_retry(
                    record.attempt,
                    error_status=record.error_status,
                    error=record.error,
                    retry_delay_ms=record.retry_delay_ms,
                    max_retries=record.max_retries,
                )
            case PermissionDeniedLine():
                name, arguments = self._tool_uses.get(record.tool_use_id, (record.tool_name, {}))
                await self._warn_denied(record.tool_use_id, name, arguments, record.message)
            case RateLimitLine():
                if record.status not in ("", "allowed"):
                    info = ", ".join(f"{k}={v}" for k, v in record.rate_limit_info.items() if k != "status")
                    await reporter.warning(f"rate limit {record.status}" + (f": {info}" if info else ""))
            case ResultLine():
                self.result = record
                self.result_at = now
                for denial in record.permission_denials:
                    await self._warn_denied(denial.tool_use_id, denial.tool_name, denial.tool_input, "")
            case OtherLine():
                pass

    async def _warn_denied(
        self, tool_use_id: str, name: str, arguments: Mapping[str, Any], message: str
    ) -> None:
        """One warning per denied tool call (it shows up as a line and again in the result)."""
        if tool_use_id and tool_use_id in self._denied:
            return
        self._denied.add(tool_use_id)
        call = describe_tool_use(name or "?", arguments)
        self.denied_calls.append((name or "?", call))
        text = DENIAL_PREFIX + call
        if message:  # its first sentence says why; the rest is advice to the model
            why = " ".join(message.split()).split(". ")[0].rstrip(".")
            text += f" ({_clip(why, TOOL_ERROR_CHARS)})"
        await self.reporter.warning(text)

    # ------------------------------------------------------------------ the verdict
    def judge(self, exit_code: int | None, duration_s: float, files: TurnFiles) -> AgentResult:
        """The turn's result; writes the ``result`` text (or nothing) to ``files.output``.
        ``exit_code``: the CLI's, or None while it runs on (a warm agent between turns)."""
        result = self.result
        write_private(files.output, (result.result or "") if result is not None else "")
        ok, final = False, False
        if self.strict_permissions and self.denied_calls:
            # Not retried: the same plan and permissions would be denied the same way.
            reason, final = strict_denial_reason(self.denied_calls), True
        elif self.stopped:
            reason = self.stopped
        elif result is None:
            reason = f"the Claude Code CLI exited (code {exit_code}) without a result line"
            if self.unreadable:
                reason += f"; last unreadable output: {self.unreadable}"
        elif not result.is_error:
            reason, ok = "", True
        else:
            reason = failure_reason(self.job, result, self.last_retry)
        return AgentResult(
            ok=ok,
            duration_s=duration_s,
            exit_code=exit_code if exit_code is not None and exit_code >= 0 else None,  # < 0: our signal
            reason=reason,
            stderr_tail=file_tail(files.stderr),
            output_path=str(files.output),
            final=final,
            usage=_usage(result) if result is not None else None,
        )


def failure_reason(job: AgentJob, result: ResultLine, last_retry: ApiRetryLine | None) -> str:
    """Why an ``is_error`` result failed, in words (``subtype`` only picks the wording).
    ``last_retry``: the turn's last ``api_retry`` line, if any."""
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
        if status is None and last_retry is not None:
            status = last_retry.error_status
        retries = f" after {last_retry.attempt} retries" if last_retry is not None else ""
        return f"model API error {status if status is not None else '(no status)'}{retries}: " + _clip(
            detail, 300
        )
    return f"agent error ({terminal or result.subtype or 'is_error'}): {_clip(detail, 300)}"


def strict_denial_reason(denied_calls: Sequence[tuple[str, str]]) -> str:
    """Why ``strict_permissions`` failed a task: the calls denied and how to allow them."""
    calls = "; ".join(dict.fromkeys(call for _, call in denied_calls))
    return f"permission denied (strict permissions): {_clip(calls, 300)}; " + how_to_allow(
        name for name, _ in denied_calls
    )


def _usage(result: ResultLine) -> Usage:
    tokens = result.usage
    cost = result.total_cost_usd or 0.0
    return Usage(  # the CLI's numbers: one that is no amount (NaN, negative) counts as 0
        cost_usd=cost if 0 <= cost <= MAX_FLOAT else 0.0,
        input_tokens=max(0, tokens.input_tokens) if tokens else 0,
        output_tokens=max(0, tokens.output_tokens) if tokens else 0,
        cache_read_tokens=max(0, tokens.cache_read_input_tokens) if tokens else 0,
        cache_creation_tokens=max(0, tokens.cache_creation_input_tokens) if tokens else 0,
    )


async def _keep_start_of_overlong_line(stdout: asyncio.StreamReader, transcript: CappedSink) -> None:
    """What the reader buffered of a line past its limit, to the transcript (it is ours to
    read: ``readuntil`` left it in the buffer)."""
    transcript.write(await stdout.read(STDOUT_LINE_LIMIT_BYTES))
    transcript.write(b"\n")
    transcript.flush()


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
