"""The Claude Code CLI's ``stream-json`` output, one typed record per line.

``claude -p --output-format stream-json --verbose`` prints one JSON object per line. The lines
MAOS acts on (shapes checked against CLI 2.1.332, see ``FACTS.md``):

==========================  ==========================================================
``system`` / ``init``       ``InitLine``: session id, cwd, tools, MCP servers and status
``assistant``               ``AssistantLine``: ``text`` and ``tool_use`` blocks
``user``                    ``UserLine``: ``tool_result`` blocks (what a tool answered)
``system`` / ``api_retry``  ``ApiRetryLine``: the CLI retries a failed model API call
``system`` /                ``PermissionDeniedLine``: a tool call was refused
``permission_denied``
``rate_limit_event``        ``RateLimitLine``: subscription rate-limit status
``result``                  ``ResultLine``: the end of a run, its verdict, cost and usage
==========================  ==========================================================

Every model allows extra fields, and a line of any other type (or subtype) becomes an
``OtherLine``: a newer CLI that adds fields or line types still parses. A line that is not
JSON, or a known type whose fields have the wrong shape, raises ``StreamJsonError``. A line
may be long (a tool result of many MiB parses); a ``\\ud800`` escape (a lone surrogate,
which UTF-8 cannot encode) is read as U+FFFD, so every string in a record can be stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from maos.errors import AgentError
from maos.sanitize import storable

__all__ = [
    "ApiRetryLine",
    "AssistantLine",
    "ContentBlock",
    "InitLine",
    "McpServerStatus",
    "OtherLine",
    "PermissionDenial",
    "PermissionDeniedLine",
    "RateLimitLine",
    "ResultLine",
    "StreamJsonError",
    "StreamLine",
    "TokenUsage",
    "UserLine",
    "describe_tool_use",
    "parse_line",
    "user_message",
]


class StreamJsonError(AgentError):
    """A line of the CLI's stream-json output cannot be read."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ContentBlock(_Record):
    """One block of a message's ``content``: ``text``, ``tool_use``, ``tool_result``,
    ``thinking`` or a type this module does not know (its fields stay in ``model_extra``)."""

    type: str
    text: str | None = None  # text
    id: str | None = None  # tool_use
    name: str | None = None  # tool_use
    input: dict[str, Any] | None = None  # tool_use
    tool_use_id: str | None = None  # tool_result
    content: str | list[dict[str, Any]] | None = None  # tool_result
    is_error: bool | None = None  # tool_result

    def result_text(self) -> str:
        """The text of a ``tool_result`` (a string or a list of text blocks)."""
        if isinstance(self.content, str):
            return self.content
        if self.content is None:
            return ""
        return "\n".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")


class _Message(_Record):
    role: str = ""
    content: str | list[ContentBlock] = ""
    model: str | None = None

    @property
    def blocks(self) -> list[ContentBlock]:
        if isinstance(self.content, str):
            return [ContentBlock(type="text", text=self.content)] if self.content else []
        return self.content


class McpServerStatus(_Record):
    name: str
    status: str


class InitLine(_Record):
    type: Literal["system"] = "system"
    subtype: Literal["init"] = "init"
    session_id: str = ""
    cwd: str = ""
    model: str = ""
    permission_mode: str = Field(default="", alias="permissionMode")
    tools: list[str] = Field(default_factory=list)
    mcp_servers: list[McpServerStatus] = Field(default_factory=list)
    claude_code_version: str = ""


class AssistantLine(_Record):
    type: Literal["assistant"] = "assistant"
    message: _Message
    session_id: str = ""
    parent_tool_use_id: str | None = None  # set for a subagent's messages


class UserLine(_Record):
    type: Literal["user"] = "user"
    message: _Message
    session_id: str = ""
    parent_tool_use_id: str | None = None


class ApiRetryLine(_Record):
    """The CLI retries a model API call that failed (429, 500, 529, a dropped connection)."""

    type: Literal["system"] = "system"
    subtype: Literal["api_retry"] = "api_retry"
    attempt: int = Field(description="1 for the first retry")
    max_retries: int | None = None
    retry_delay_ms: float | None = None
    error_status: int | None = None  # the HTTP status; None for a connection error
    error: str = ""


class PermissionDeniedLine(_Record):
    type: Literal["system"] = "system"
    subtype: Literal["permission_denied"] = "permission_denied"
    tool_name: str = ""
    tool_use_id: str = ""
    message: str = ""


class RateLimitLine(_Record):
    """Rate-limit status of a subscription login (``status``: allowed, allowed_warning,
    rejected, ...); API-key runs see 429s as ``ApiRetryLine`` instead."""

    type: Literal["rate_limit_event"] = "rate_limit_event"
    rate_limit_info: dict[str, Any] = Field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.rate_limit_info.get("status", ""))


class TokenUsage(_Record):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


class PermissionDenial(_Record):
    tool_name: str = ""
    tool_use_id: str = ""
    tool_input: dict[str, Any] = Field(default_factory=dict)


class ResultLine(_Record):
    """The last line of a run. Judge it by ``is_error`` and ``terminal_reason``: an API error
    ends with ``subtype: "success"`` and ``is_error: true``."""

    type: Literal["result"] = "result"
    is_error: bool
    subtype: str = ""
    terminal_reason: str | None = None  # completed, max_turns, budget_exhausted, api_error, ...
    result: str | None = None
    errors: list[str] = Field(default_factory=list)
    num_turns: int = 0
    duration_ms: float | None = None
    duration_api_ms: float | None = None
    session_id: str = ""
    total_cost_usd: float | None = None
    usage: TokenUsage | None = None
    permission_denials: list[PermissionDenial] = Field(default_factory=list)
    api_error_status: int | None = None


class OtherLine(_Record):
    """A line MAOS does not act on (``stream_event``, hook events, a newer CLI's lines)."""

    type: str
    subtype: str | None = None


StreamLine = (
    InitLine
    | AssistantLine
    | UserLine
    | ApiRetryLine
    | PermissionDeniedLine
    | RateLimitLine
    | ResultLine
    | OtherLine
)

_BY_TYPE: dict[str, type[BaseModel]] = {
    "assistant": AssistantLine,
    "user": UserLine,
    "rate_limit_event": RateLimitLine,
    "result": ResultLine,
}
_BY_SYSTEM_SUBTYPE: dict[str, type[BaseModel]] = {
    "init": InitLine,
    "api_retry": ApiRetryLine,
    "permission_denied": PermissionDeniedLine,
}


def parse_line(line: str | bytes) -> StreamLine:
    """One line of stream-json output as a typed record. Raises ``StreamJsonError``."""
    try:
        data = json.loads(line)
        if _has_surrogate_escape(line):
            data = _storable(data)
    except ValueError as exc:
        raise StreamJsonError(f"not JSON: {_clip(_text(line[:400]), 200)!r}") from exc
    except RecursionError as exc:
        raise StreamJsonError(f"JSON nested too deeply: {_clip(_text(line[:400]), 200)!r}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise StreamJsonError(f"not a stream-json message (no 'type'): {_clip(_text(line[:400]), 200)!r}")
    kind: str = data["type"]
    model = _BY_SYSTEM_SUBTYPE.get(str(data.get("subtype"))) if kind == "system" else _BY_TYPE.get(kind)
    if model is None:
        model = OtherLine
    try:
        record = model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(line)'}: {err['msg']}"
            for err in exc.errors(include_url=False)[:3]
        )
        raise StreamJsonError(f"{kind} line has an unexpected shape: {problems}") from exc
    assert isinstance(record, StreamLine)
    return record


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]|[\ud800-\udfff]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _has_surrogate_escape(line: str | bytes) -> bool:
    """Whether a JSON line may decode to a lone surrogate (a pair also matches: harmless)."""
    if isinstance(line, bytes):
        return _SURROGATE_ESCAPE_BYTES.search(line) is not None
    return _SURROGATE_ESCAPE.search(line) is not None


def _storable(value: Any) -> Any:
    """``value`` (parsed JSON) with lone surrogates in its strings replaced (see ``storable``)."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {storable(key): _storable(item) for key, item in value.items()}
    return value


def user_message(text: str) -> bytes:
    """A user turn for ``--input-format stream-json`` (one line on the CLI's stdin)."""
    message = {"type": "user", "message": {"role": "user", "content": text}}
    return json.dumps(message, ensure_ascii=False).encode() + b"\n"


# Which argument says the most about a call of each kind of tool.
_MAIN_ARGUMENTS = (
    "file_path",
    "notebook_path",
    "command",
    "pattern",
    "path",
    "url",
    "query",
    "description",
    "prompt",
    "skill",
)
_ARG_CHARS = 80


def describe_tool_use(name: str, arguments: Mapping[str, Any] | None, *, max_chars: int = 200) -> str:
    """A short one-line form of a tool call: ``Write(file_path=notes/a.txt)``,
    ``Bash(command=pytest -q)``, ``mcp__maos__state_set(key=plan, value={...})``."""
    arguments = arguments or {}
    main = [key for key in _MAIN_ARGUMENTS if key in arguments][:1]
    keys = main or list(arguments)[:2]
    shown = ", ".join(f"{key}={_short(arguments[key])}" for key in keys)
    if not main and len(arguments) > len(keys):
        shown += ", …"
    return _clip(f"{name}({shown})", max_chars)


def _short(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, dict):
        text = "{…}" if value else "{}"
    elif isinstance(value, list):
        text = "[…]" if value else "[]"
    else:
        text = json.dumps(value)
    return _clip(" ".join(text.split()), _ARG_CHARS)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(line: str | bytes) -> str:
    return line.decode(errors="replace") if isinstance(line, bytes) else line
