"""The model-server script: rules that turn a Messages API request into a scripted reply.

A script is YAML::

    rules:                       # tried in order, the first rule that matches answers
      - name: write-file         # optional, shown in the request log
        match:                   # every field given must match (AND); no match = always
          last_user: "(?i)create (?P<file>\\S+)"
          tool_result: false
        times: 1                 # optional: this rule answers at most once per agent
        reply:
          tool_calls:
            - name: Write
              input: {file_path: "${file}", content: "hello from ${agent}\\n"}
    default:                     # optional: the reply when no rule matches
      text: "done"

Everything that decides which reply a request gets is here and pure: ``Conversation.from_request``
reads a request body, ``Script.choose`` picks the rule (and counts ``times`` per agent), and
``Reply.render`` fills in the placeholders. ``maos.modelserver.app`` does the HTTP. The full
reference is ``docs/model-server.md``.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    model_validator,
)

from maos import markers
from maos.documents import DocumentError, load_yaml, read_text
from maos.errors import MaosError

# Which agent asks: this header, else the agent marker of the system prompt (``maos.markers``,
# which also says how a request's task is found). ANTHROPIC_CUSTOM_HEADERS="x-maos-agent-id: ID".
AGENT_HEADER = "x-maos-agent-id"
# Claude Code injects these into user messages; they are not what the user wrote.
_REMINDER_PREFIX = "<system-reminder>"
# How Claude Code records a local command (the warm pool's ``/cost`` primer) in the user
# message that follows it: not the user's words.
_LOCAL_COMMAND_PREFIXES = (
    "<local-command-caveat>",
    "<command-name>",
    "<local-command-stdout>",
    "<local-command-stderr>",
)
_NOT_SAID = (_REMINDER_PREFIX, *_LOCAL_COMMAND_PREFIXES)
_PLACEHOLDER_RE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
BUILTIN_PLACEHOLDERS = ("agent", "task", "turn", "model", "rule", "session")
DEFAULT_TEXT = "(maos model-server: no rule matched this request)"
WARM_UP_RULE = "warm_up"  # the request log's rule_name of the built-in answer to a warm-up turn

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ERROR_MESSAGES = {
    "invalid_request_error": "Invalid request",
    "authentication_error": "Invalid API key",
    "rate_limit_error": "Rate limited (scripted)",
    "api_error": "Internal server error (scripted)",
    "overloaded_error": "Overloaded (scripted)",
}


class ScriptError(MaosError):
    """A script cannot be read or is invalid. ``problems`` lists each problem, one line each."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


# --------------------------------------------------------------------------- field types


def _compile(value: object) -> re.Pattern[str]:
    if isinstance(value, re.Pattern):
        return value
    if not isinstance(value, str):
        # pydantic reports only ValueError (not TypeError) as a validation error
        raise ValueError(f"expected a regular expression (a string), got {type(value).__name__}")  # noqa: TRY004
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc


def _bool_or_regex(value: object) -> bool | re.Pattern[str]:
    # Checked by hand: pydantic's lax bool would turn the string "yes" into True.
    if isinstance(value, bool):
        return value
    return _compile(value)


def _pattern_text(value: object) -> object:
    return value.pattern if isinstance(value, re.Pattern) else value


Regex = Annotated[re.Pattern[str], PlainValidator(_compile), PlainSerializer(_pattern_text)]
BoolOrRegex = Annotated[
    bool | re.Pattern[str], PlainValidator(_bool_or_regex), PlainSerializer(_pattern_text)
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- the script


class Match(_Strict):
    """Conditions on the request; all the given ones must hold. Text fields use ``re.search``,
    identifiers (``agent``, ``tools``) use ``re.fullmatch``."""

    user: Regex | None = Field(default=None, description="searched in all user text, oldest first")
    last_user: Regex | None = Field(default=None, description="searched in the latest user text")
    system: Regex | None = Field(default=None, description="searched in the system prompt")
    agent: Regex | None = Field(default=None, description="full match on the agent id")
    task: Regex | None = Field(default=None, description="full match on the id of the agent's current task")
    tool_result: BoolOrRegex | None = Field(
        default=None, description="true/false: a tool result is in the last user turn; regex: searched in it"
    )
    turn: int | None = Field(default=None, ge=1, description="assistant messages of the current task + 1")
    tools: Regex | None = Field(default=None, description="full match on the name of an offered tool")

    def regexes(self) -> list[re.Pattern[str]]:
        found = [self.user, self.last_user, self.system, self.agent, self.task, self.tools]
        if isinstance(self.tool_result, re.Pattern):
            found.append(self.tool_result)
        return [p for p in found if p is not None]


class ToolCall(_Strict):
    name: str = Field(min_length=1, description="any tool name, MCP tools included")
    input: dict[str, Any] = Field(default_factory=dict)


class Usage(_Strict):
    input_tokens: int | None = Field(default=None, ge=0, description="default: request size / 4")
    output_tokens: int | None = Field(default=None, ge=0, description="default: reply size / 4")
    cache_read_input_tokens: int = Field(default=0, ge=0)
    cache_creation_input_tokens: int = Field(default=0, ge=0)


class ErrorReply(_Strict):
    status: int = Field(ge=400, le=599)
    type: str | None = Field(default=None, description="default from status: 529 overloaded_error, ...")
    message: str | None = None
    retry_after_s: float | None = Field(default=None, ge=0, description="sent as retry-after(-ms) headers")

    @property
    def error_type(self) -> str:
        if self.type is not None:
            return self.type
        return _ERROR_TYPES.get(self.status, "api_error" if self.status >= 500 else "invalid_request_error")

    @property
    def error_message(self) -> str:
        return self.message if self.message is not None else _ERROR_MESSAGES.get(self.error_type, "Error")


StopReason = Literal["end_turn", "tool_use", "max_tokens", "stop_sequence", "pause_turn", "refusal"]


class Reply(_Strict):
    """What the model answers: text and/or tool calls, or an HTTP error; optionally late."""

    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    delay_s: float = Field(default=0.0, ge=0, le=3600, description="wait before answering")
    chunk_delay_s: float = Field(default=0.0, ge=0, le=60, description="wait between streamed chunks")
    error: ErrorReply | None = None
    usage: Usage = Usage()
    stop_reason: StopReason | None = Field(default=None, description="default: tool_use if tool calls")

    @model_validator(mode="after")
    def _check_shape(self) -> Reply:
        if self.error is not None:
            if self.text is not None or self.tool_calls or self.stop_reason is not None:
                raise ValueError("an error reply has no text, tool_calls or stop_reason")
        elif self.text is None and not self.tool_calls:
            raise ValueError("a reply needs text, tool_calls or error")
        return self

    @property
    def effective_stop_reason(self) -> StopReason:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if self.tool_calls else "end_turn"

    def placeholders(self) -> list[tuple[str, str]]:
        """(field path, placeholder name) for every ``${name}`` in text and tool inputs."""
        found = [("text", name) for name in _placeholder_names(self.text or "")]
        for i, call in enumerate(self.tool_calls):
            for path, text in _strings(call.input, f"tool_calls[{i}].input"):
                found.extend((path, name) for name in _placeholder_names(text))
        return found

    def render(self, variables: Mapping[str, str]) -> RenderedReply:
        """The reply with placeholders filled in and fresh ``toolu_`` ids."""
        return RenderedReply(
            text=_fill(self.text, variables) if self.text is not None else None,
            tool_calls=tuple(
                RenderedToolCall(
                    id=f"toolu_{uuid.uuid4().hex[:24]}",
                    name=call.name,
                    input=_fill_json(call.input, variables),
                )
                for call in self.tool_calls
            ),
            stop_reason=self.effective_stop_reason,
        )


class Rule(_Strict):
    name: str | None = None
    match: Match = Match()
    times: int | None = Field(default=None, ge=1, description="answer at most this many times per agent")
    reply: Reply


class Script(_Strict):
    rules: tuple[Rule, ...] = ()
    default: Reply = Field(default_factory=lambda: Reply(text=DEFAULT_TEXT))
    max_turn: int = Field(
        default=100, ge=1, description="past this turn every request gets a text reply ending the turn"
    )

    @model_validator(mode="after")
    def _check_placeholders(self) -> Script:
        problems: list[str] = []
        for number, rule in enumerate(self.rules, start=1):
            groups = {name for p in rule.match.regexes() for name in p.groupindex}
            for path, name in rule.reply.placeholders():
                if name not in groups and name not in BUILTIN_PLACEHOLDERS:
                    problems.append(_unknown_placeholder(f"rule {number}", path, name, groups))
        for path, name in self.default.placeholders():
            if name not in BUILTIN_PLACEHOLDERS:
                problems.append(_unknown_placeholder("default", path, name, set()))
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def choose(self, conversation: Conversation, counters: dict[tuple[int, str], int]) -> Choice:
        """The first rule that matches and has uses left for this agent, else the default.

        ``counters`` maps (rule number, agent id or "") to how often that rule answered;
        it is updated here, so the caller owns it (one per server, reset with the log).
        A warm agent's warm-up turn (``maos.markers``) is answered before the rules and
        counts for none of them. A conversation past ``max_turn`` ends: a tool-call rule that
        keeps matching would otherwise loop the agent forever.
        """
        if conversation.warm_up:
            reply = Reply(text=markers.WARM_UP_REPLY)
            return Choice(None, WARM_UP_RULE, reply, conversation.variables(None))
        if conversation.turn > self.max_turn:
            reply = Reply(text=f"(maos model-server: turn limit {self.max_turn} reached; ending the turn)")
            return Choice(None, "max_turn", reply, conversation.variables(None))
        for number, rule in enumerate(self.rules, start=1):
            key = (number, conversation.agent or "")
            if rule.times is not None and counters.get(key, 0) >= rule.times:
                continue
            groups = match_conversation(rule.match, conversation)
            if groups is None:
                continue
            counters[key] = counters.get(key, 0) + 1
            return Choice(number, rule.name, rule.reply, conversation.variables(number) | groups)
        return Choice(None, None, self.default, conversation.variables(None))


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class Conversation:
    """What the rules look at, read once from a request body; MAOS's words in it are read by
    ``maos.markers``. A warm agent's warm-up exchange is left out of later requests:
    ``warm_up`` says the request is that turn itself; after it, turns and texts are as if it
    had never happened.

    A warm agent does many tasks in one conversation, each starting with a task message: the
    user texts, the turn and the tool results are those of the current task, from its task
    message on, so one script serves warm and cold agents alike. A cold agent's system prompt
    names its task, which holds for the whole conversation.
    """

    agent: str | None
    task: str | None
    session: str | None
    model: str
    system_text: str
    user_texts: tuple[str, ...]
    last_user_text: str
    tool_results: tuple[str, ...] | None  # None: the last user turn has no tool result
    turn: int
    tool_names: tuple[str, ...]
    warm_up: bool = False

    @classmethod
    def from_request(cls, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Conversation:
        headers = headers or {}
        messages = [m for m in body.get("messages") or [] if isinstance(m, Mapping)]
        # Claude Code sends mid-conversation "system" messages (environment, reminders) too.
        system_parts = list(_texts(body.get("system")))
        system_parts += [t for m in messages if m.get("role") == "system" for t in _texts(m.get("content"))]
        system_text = "\n".join(system_parts)

        # A cold agent's system prompt names its one task: what its user texts say (its
        # prompt) is never taken for a task message or the warm-up turn.
        task = markers.task_named(system_text)
        warm_up = False
        if task is None:
            warm_up = _warm_up_pending(messages)
            if not warm_up:
                messages = _without_warm_up(messages)
            # A warm agent's current task: from its task message on.
            for at in range(len(messages) - 1, -1, -1):
                # The CLI may put a local command's output (the /cost primer) in the same message.
                texts = _user_texts(messages[at])
                started = [found for text in texts if (found := markers.task_started(text))]
                if started:
                    task, messages = started[-1], messages[at:]
                    break

        user_texts: list[str] = []
        last_user_text = ""
        for m in messages:
            if texts := _user_texts(m):
                user_texts.extend(texts)
                last_user_text = "\n".join(texts)

        assistant_at = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
        last_turn = messages[assistant_at[-1] + 1 :] if assistant_at else messages
        results = [
            _tool_result_text(block)
            for m in last_turn
            if m.get("role") == "user" and isinstance(m.get("content"), list)
            for block in m["content"]
            if isinstance(block, Mapping) and block.get("type") == "tool_result"
        ]

        agent = headers.get(AGENT_HEADER) or markers.agent_named(system_text)
        tools = body.get("tools") or []
        return cls(
            agent=agent,
            task=task,
            session=headers.get("x-claude-code-session-id") or None,
            model=str(body.get("model") or ""),
            system_text=system_text,
            user_texts=tuple(user_texts),
            last_user_text=last_user_text,
            tool_results=tuple(results) if results else None,
            turn=len(assistant_at) + 1,
            tool_names=tuple(str(t["name"]) for t in tools if isinstance(t, Mapping) and "name" in t),
            warm_up=warm_up and not results,
        )

    def variables(self, rule: int | None) -> dict[str, str]:
        return {
            "agent": self.agent or "",
            "task": self.task or "",
            "turn": str(self.turn),
            "model": self.model,
            "rule": "" if rule is None else str(rule),
            "session": self.session or "",
        }


@dataclass(frozen=True)
class Choice:
    rule: int | None  # 1-based rule number; None: the default reply
    rule_name: str | None
    reply: Reply
    variables: dict[str, str] = field(default_factory=dict)


def match_conversation(match: Match, conv: Conversation) -> dict[str, str] | None:
    """Named groups of the regexes if every condition holds, else None."""
    groups: dict[str, str] = {}

    def found(m: re.Match[str] | None) -> bool:
        if m is None:
            return False
        groups.update({k: v for k, v in m.groupdict().items() if v is not None})
        return True

    if match.turn is not None and conv.turn != match.turn:
        return None
    if match.user is not None and not found(match.user.search("\n".join(conv.user_texts))):
        return None
    if match.last_user is not None and not found(match.last_user.search(conv.last_user_text)):
        return None
    if match.system is not None and not found(match.system.search(conv.system_text)):
        return None
    if match.agent is not None and (conv.agent is None or not found(match.agent.fullmatch(conv.agent))):
        return None
    if match.task is not None and (conv.task is None or not found(match.task.fullmatch(conv.task))):
        return None
    if match.tool_result is not None:
        if isinstance(match.tool_result, bool):
            if match.tool_result != (conv.tool_results is not None):
                return None
        elif conv.tool_results is None or not found(match.tool_result.search("\n".join(conv.tool_results))):
            return None
    if match.tools is not None and not any(found(match.tools.fullmatch(n)) for n in conv.tool_names):
        return None
    return groups


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class RenderedToolCall:
    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class RenderedReply:
    text: str | None
    tool_calls: tuple[RenderedToolCall, ...]
    stop_reason: StopReason

    def size_chars(self) -> int:
        return len(self.text or "") + sum(len(c.name) + len(json.dumps(c.input)) for c in self.tool_calls)


def estimate_tokens(chars: int) -> int:
    """About four characters a token: good enough for cost rehearsals."""
    return max(1, math.ceil(chars / 4))


def _placeholder_names(text: str) -> list[str]:
    return [m.group(2) for m in _PLACEHOLDER_RE.finditer(text) if not m.group(1)]


def _unknown_placeholder(where: str, path: str, name: str, groups: set[str]) -> str:
    known = ", ".join(sorted(set(BUILTIN_PLACEHOLDERS) | groups))
    return f"{where}: field 'reply.{path}': unknown placeholder ${{{name}}} (known: {known})"


def _fill(text: str, variables: Mapping[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1):  # $${name} is the literal ${name}
            return m.group(0)[1:]
        return variables.get(m.group(2), "")

    return _PLACEHOLDER_RE.sub(one, text)


def _fill_json(value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _fill(value, variables)
    if isinstance(value, dict):
        return {k: _fill_json(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_json(v, variables) for v in value]
    return value


def _strings(value: Any, path: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


def _texts(content: object) -> Iterable[str]:
    """The text of a ``system`` field or message ``content``: a string or a list of blocks."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for block in content:
            if (
                isinstance(block, Mapping)
                and block.get("type") == "text"
                and isinstance(block.get("text"), str)
            ):
                yield block["text"]


def _user_texts(message: Mapping[str, Any]) -> list[str]:
    """A user message's text blocks, Claude Code's reminders and its records of local commands
    left out; [] for other roles."""
    if message.get("role") != "user":
        return []
    return [t for t in _texts(message.get("content")) if not t.lstrip().startswith(_NOT_SAID)]


def _is_warm_up(message: Mapping[str, Any]) -> bool:
    """A user message whose last text is the warm-up turn's (the CLI puts the ``/cost``
    primer's blocks before it, in the same message)."""
    texts = _user_texts(message)
    return bool(texts) and markers.is_warm_up(texts[-1])


def _warm_up_pending(messages: list[Mapping[str, Any]]) -> bool:
    """The last message with user text is the warm-up, and nothing has answered it yet."""
    for message in reversed(messages):
        if message.get("role") == "assistant":
            return False
        if _user_texts(message):
            return _is_warm_up(message)
    return False


def _without_warm_up(messages: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``messages`` without the warm-up text and the assistant's answer to it (the assistant
    messages up to the next user message); the rest of that user message stays."""
    kept: list[Mapping[str, Any]] = []
    answering = False
    for message in messages:
        role = message.get("role")
        if role == "user":
            answering = _is_warm_up(message)
            if answering:
                content = message.get("content")
                blocks = [
                    b
                    for b in (content if isinstance(content, list) else [])
                    if not (isinstance(b, Mapping) and markers.is_warm_up(str(b.get("text", ""))))
                ]
                if blocks:
                    kept.append({**message, "content": blocks})
                continue
        elif role == "assistant" and answering:
            continue
        kept.append(message)
    return kept


def _tool_result_text(block: Mapping[str, Any]) -> str:
    return "\n".join(_texts(block.get("content")))


# --------------------------------------------------------------------------- loading

MAX_SCRIPT_BYTES = 16 * 1024 * 1024


def load_script(path: str | Path) -> Script:
    """Read and check a script file. Raises ``ScriptError`` naming the rule and field."""
    path = Path(path)
    try:
        text = read_text(path, max_bytes=MAX_SCRIPT_BYTES)
    except DocumentError as exc:
        reason = str(exc).removeprefix("cannot read the file: ")
        raise ScriptError(f"{path}: cannot read: {reason}") from exc
    return parse_script(text, source=str(path))


def parse_script(text: str, *, source: str = "<script>") -> Script:
    try:
        data = load_yaml(text, unique_keys=False)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScriptError(f"{source}: {where}invalid YAML: {problem}") from exc
    except DocumentError as exc:  # too deep, or aliases that expand too far
        raise ScriptError(f"{source}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScriptError(f"{source}: the script must be a mapping with 'rules' (and 'default')")
    try:
        return Script.model_validate(data)
    except ValidationError as exc:
        raise ScriptError([f"{source}: {line}" for line in _describe(exc)]) from exc


def _describe(exc: ValidationError) -> list[str]:
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        msg = str(err["msg"])
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        where = ""
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            where = f"rule {loc[1] + 1}: "
            loc = loc[2:]
        elif loc and loc[0] == "default":
            where = "default: "
            loc = loc[1:]
        if not loc:
            # A whole-object check (e.g. placeholders) already says where it is.
            lines.extend(f"{where}{part}" for part in msg.splitlines())
            continue
        lines.append(f"{where}field '{_dotted(loc)}': {msg}")
    return lines


def _dotted(loc: list[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
