"""The permission matrix: what an agent's role may do through the door (ARCHITECTURE §7).

A role's *grants* say, for each door action, which resources it may touch. The door asks
``check(grants, action, resource)`` before every call and refuses it with the reason returned.
Pure: no I/O, no pydantic (the door imports this on every ``maos state get``).

============================  ==================  ==========================================
action                        resource            granted by (default)
============================  ==================  ==========================================
``state.read``                the key or prefix   ``state_read`` patterns (``["*"]``)
``state.write``               the key             ``state_write`` patterns (``["*"]``)
``message.send``              ``to`` as given     ``send_to`` patterns (``["*"]``): agent ids,
                                                  ``task:<id>``
``message.broadcast``,        the topic           ``topics`` patterns (``["*"]``)
``topic.subscribe``
``message.read``              the agent's inbox   always (its own inbox and its task's only)
``result.publish``            the task id         always and only the agent's own task
``result.read``               the task id         ``read_results`` patterns (``["*"]``)
``task.add``                  the new task's      ``add_task`` (``true``) and
                              runtime             ``add_task_runtimes`` (``["claude-code"]``:
                                                  a ``command`` task needs an explicit grant)
============================  ==================  ==========================================

A pattern is ``*`` (anything), ``prefix*`` (anything starting with ``prefix``) or an exact
name. Grants come in layers, the first that sets a field wins: the task's ``grants:`` in the
plan, then its role's ``maos: grants:`` front matter (``.claude/agents/<role>.md``), then
``DEFAULT_GRANTS`` (``resolve``).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final, Literal

__all__ = [
    "DEFAULT_GRANTS",
    "RUNTIMES",
    "Action",
    "Grants",
    "check",
    "covers",
    "narrower",
    "resolve",
]

RUNTIMES: Final = ("claude-code", "command")
"""What ``add_task_runtimes`` may name: the runtime of the task an agent adds."""
MAX_PATTERNS: Final = 100
MAX_PATTERN_CHARS: Final = 256


class Action(enum.StrEnum):
    """What an agent can do through the door: the *action* axis of the matrix."""

    STATE_READ = "state.read"
    STATE_WRITE = "state.write"
    MESSAGE_SEND = "message.send"
    MESSAGE_BROADCAST = "message.broadcast"
    MESSAGE_READ = "message.read"
    TOPIC_SUBSCRIBE = "topic.subscribe"
    RESULT_PUBLISH = "result.publish"
    RESULT_READ = "result.read"
    TASK_ADD = "task.add"


@dataclass(frozen=True, slots=True)
class Grants:
    """What a role may do through the door; a field left ``None`` is inherited (``resolve``).

    Lists hold patterns: ``*``, ``prefix*`` or an exact name."""

    # A typo in a plan's grants is an error:
    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    state_read: tuple[str, ...] | None = None
    state_write: tuple[str, ...] | None = None
    send_to: tuple[str, ...] | None = None
    topics: tuple[str, ...] | None = None
    read_results: tuple[str, ...] | None = None
    add_task: bool | None = None
    add_task_runtimes: tuple[Literal["claude-code", "command"], ...] | None = None

    def __post_init__(self) -> None:
        for name in _PATTERN_FIELDS:
            patterns = getattr(self, name)
            if patterns is None:
                continue
            if isinstance(patterns, str) or len(patterns) > MAX_PATTERNS:
                raise ValueError(f"{name}: expected a list of at most {MAX_PATTERNS} patterns")
            for pattern in patterns:
                if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_CHARS:
                    raise ValueError(
                        f"{name}: {pattern!r} is not a pattern (1-{MAX_PATTERN_CHARS} characters: "
                        "'*', 'prefix*' or an exact name)"
                    )
                if "*" in pattern[:-1]:
                    raise ValueError(f"{name}: {pattern!r}: '*' may only end a pattern")
        runtimes: object = self.add_task_runtimes
        if runtimes is not None and (not isinstance(runtimes, tuple) or not set(runtimes) <= set(RUNTIMES)):
            raise ValueError(f"add_task_runtimes: expected a list of {', '.join(RUNTIMES)}")

    def as_dict(self) -> dict[str, Any]:
        """The fields that are set, as JSON-ready values."""
        return {
            item.name: list(value) if isinstance(value, tuple) else value
            for item in fields(self)
            if (value := getattr(self, item.name)) is not None
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Grants:
        """Grants from ``as_dict``'s output; ``ValueError`` for anything else."""
        if not isinstance(data, Mapping):
            raise TypeError("grants must be a mapping")
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown grant(s): {', '.join(map(str, unknown))}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name == "add_task":
                if value is not None and not isinstance(value, bool):
                    raise ValueError("add_task: expected true or false")
                values[name] = value
            elif value is None:
                values[name] = None
            elif isinstance(value, list | tuple):
                values[name] = tuple(value)
            else:
                raise ValueError(f"{name}: expected a list of patterns")
        return cls(**values)


_PATTERN_FIELDS: Final = ("state_read", "state_write", "send_to", "topics", "read_results")

DEFAULT_GRANTS: Final = Grants(
    state_read=("*",),
    state_write=("*",),
    send_to=("*",),
    topics=("*",),
    read_results=("*",),
    add_task=True,
    add_task_runtimes=("claude-code",),
)
"""What a role may do unless its task or role file says otherwise: share state, message and
read results freely within its run (agents work together through them), add Claude Code
tasks, never add a shell command."""


@functools.lru_cache(maxsize=256)  # asked at every task's start, mostly of the same few layers
def resolve(*layers: Grants | None) -> Grants:
    """Every field from the first layer that sets it, else from ``DEFAULT_GRANTS``."""
    values = {}
    for item in fields(Grants):
        set_here = (getattr(layer, item.name) for layer in layers if layer is not None)
        values[item.name] = next(
            (value for value in set_here if value is not None), getattr(DEFAULT_GRANTS, item.name)
        )
    return Grants(**values)


def covers(pattern: str, name: str) -> bool:
    """True if ``pattern`` (``*``, ``prefix*`` or exact) matches ``name``."""
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return name == pattern


def _allowed(patterns: tuple[str, ...] | None, name: str) -> bool:
    return any(covers(pattern, name) for pattern in patterns or ())


def _listed(patterns: tuple[str, ...] | None) -> str:
    return ", ".join(patterns) if patterns else "none"


_PATTERN_ACTIONS: Final = {
    Action.STATE_READ: ("state_read", "reading state key"),
    Action.STATE_WRITE: ("state_write", "writing state key"),
    Action.MESSAGE_SEND: ("send_to", "sending to"),
    Action.MESSAGE_BROADCAST: ("topics", "broadcasting on topic"),
    Action.TOPIC_SUBSCRIBE: ("topics", "subscribing to topic"),
    Action.RESULT_READ: ("read_results", "reading the result of task"),
}


def check(grants: Grants, action: Action, resource: str, *, own_task: str = "") -> str | None:
    """None if ``grants`` allow ``action`` on ``resource``, else why not (for the agent to read).

    ``grants`` should be resolved (``resolve``): a field left ``None`` grants nothing.
    ``own_task``: the task the caller's token is bound to (``result.publish``)."""
    if action in _PATTERN_ACTIONS:
        name, doing = _PATTERN_ACTIONS[action]
        patterns = getattr(grants, name)
        if _allowed(patterns, resource):
            return None
        return f"{doing} {resource!r} is not granted to this task's role ({name}: {_listed(patterns)})"
    if action is Action.RESULT_PUBLISH and (not own_task or resource != own_task):
        return (
            f"a result can be published only for the agent's own task "
            f"({own_task or 'none'}), not for {resource!r}"
        )
    if action is Action.TASK_ADD:
        if not grants.add_task:
            return "adding tasks is not granted to this task's role (add_task: false)"
        if resource not in (grants.add_task_runtimes or ()):
            why = " (a command task runs a shell; it needs add_task_runtimes: [command])"
            return (
                f"adding a {resource} task is not granted to this task's role (add_task_runtimes: "
                f"{_listed(grants.add_task_runtimes)})" + (why if resource == "command" else "")
            )
    return None


def narrower(inner: Grants, outer: Grants) -> str | None:
    """None if ``inner`` grants nothing that ``outer`` does not (both resolved), else what it
    adds: an agent may not hand a task it adds more than it has itself."""
    for name in _PATTERN_FIELDS:
        wider = [p for p in getattr(inner, name) or () if not _pattern_within(p, getattr(outer, name) or ())]
        if wider:
            return f"{name}: {', '.join(wider)} beyond the adding task's ({_listed(getattr(outer, name))})"
    if inner.add_task and not outer.add_task:
        return "add_task: true beyond the adding task's (false)"
    extra = [r for r in inner.add_task_runtimes or () if r not in (outer.add_task_runtimes or ())]
    if extra:
        allowed = _listed(outer.add_task_runtimes)
        return f"add_task_runtimes: {', '.join(extra)} beyond the adding task's ({allowed})"
    return None


def _pattern_within(pattern: str, patterns: tuple[str, ...]) -> bool:
    """True if everything ``pattern`` matches is matched by one of ``patterns``."""
    for outer in patterns:
        if outer.endswith("*"):
            if pattern.startswith(outer[:-1]):
                return True
        elif not pattern.endswith("*") and pattern == outer:
            return True
    return False
