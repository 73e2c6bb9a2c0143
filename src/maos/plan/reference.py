"""The plan reference, ``docs/plan-reference.md``, generated from ``Plan`` and ``TaskSpec``.

Every field with its type, limits, default and description comes from the models, so the
reference cannot say what the code does not do. ``maos plan fields`` prints it; a test
regenerates it and compares it with the committed file (``REGENERATE`` says how).
"""

from __future__ import annotations

import dataclasses
import json
import types
from datetime import datetime
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from maos.model import TASK_ID_RULE, After, Plan, ResourceLimit, StartDelay, TaskSpec, TeamMember
from maos.permissions import Grants

__all__ = ["AGENT_FIELD_EXAMPLES", "EXAMPLE_PLAN", "FIELD_EXAMPLES", "REGENERATE", "plan_reference"]

REGENERATE = "maos plan fields > docs/plan-reference.md"
"""The command that rewrites the committed reference after a model change."""

EXAMPLE_PLAN = """\
name: login-endpoint
description: Add a login endpoint, tested and documented.
tasks:
  - id: design
    role: designer
    prompt: Write DESIGN.md for a POST /login endpoint (request, responses, errors).
  - id: implement
    role: implementer
    depends_on: [design]
    prompt: Implement the endpoint as DESIGN.md says.
    permission_mode: acceptEdits
  - id: tests
    role: tester
    depends_on: [design]
    prompt: Write tests for the endpoint from DESIGN.md.
    permission_mode: acceptEdits
  - id: check
    depends_on: [implement, tests]
    command: pytest -q
    max_attempts: 1
"""
"""A complete plan: Claude Code tasks, two of them in parallel, and a command (a test checks it)."""

FIELD_EXAMPLES: dict[str, str] = {
    "name": "name: login-endpoint",
    "description": "description: Add a login endpoint, tested and documented.",
    "id": "id: implement",
    "title": "title: Implement POST /login",
    "prompt": "prompt: |\n  Implement the endpoint as DESIGN.md says.\n  Run the tests before you finish.",
    "role": "role: implementer",
    "kind": "kind: backend",
    "capabilities": "capabilities: [python]",
    "depends_on": "depends_on: [design]",
    "priority": "priority: 10",
    "timeout_s": "timeout_s: 1800",
    "max_attempts": "max_attempts: 1",
    "command": 'command: ["pytest", "-q"]   # or a string for sh -c: "pytest -q && ruff check"',
    "isolation": "isolation: worktree",
    "model": "model: sonnet",
    "allowed_tools": 'allowed_tools: ["Bash(git *)", "Bash(pytest *)"]',
    "permission_mode": "permission_mode: acceptEdits",
    "max_turns": "max_turns: 30",
    "max_budget_usd": "max_budget_usd: 0.5",
    "replicas": "replicas: 3",
    "consensus": "consensus: judge",
    "quorum": "quorum: 2",
    "idle_timeout_s": "idle_timeout_s: 600",
    "grants": 'grants: {state_write: ["api/*"], send_to: ["task:review"], add_task: false}',
    "pass_env": "pass_env: [GITHUB_TOKEN, npm_config_registry]",
    "resources": "resources: {db: 1}    # a plan's: {db: 1, gpu: {capacity: 2, shared: true}}",
    "not_before": "not_before: {task: migrate, delay_s: 30}   # or a time: '2026-12-01T09:00:00Z'",
    "after": "after: [{task: deploy, delay_s: 60}]",
    "deadline_s": "deadline_s: 1800",
    "on_deadline": "on_deadline: skip",
    "agents": "agents: [{role: reviewer}, {role: coder, count: 3}]",
}
"""One line of a plan file per field (a test checks each one against the model)."""

AGENT_FIELD_EXAMPLES: dict[str, str] = {
    "id": "id: coder          # with count: 3 the agents are coder-1, coder-2, coder-3",
    "role": "role: reviewer",
    "count": "count: 3",
    "capabilities": "capabilities: [python, edit, read]",
    "runtime": "runtime: claude-code",
    "model": "model: haiku",
}
"""One line of an ``agents:`` entry per field (a test checks each one against the model)."""

_CLAUDE_ONLY = "claude-code: "  # how a description marks a setting of the Claude Code runtime
_NAMES: dict[Any, tuple[str, str]] = {
    str: ("string", "strings"),
    int: ("integer", "integers"),
    float: ("number", "numbers"),
    bool: ("true or false", "booleans"),
    TaskSpec: ("task", "tasks"),
    TeamMember: ("agent (see Agent fields)", "agents (see Agent fields)"),
    Grants: ("object of door grants (see docs/door.md)", "objects of door grants"),
    ResourceLimit: ("{capacity, shared}", "{capacity, shared} objects"),
    After: ("{task, delay_s}", "{task, delay_s} objects"),
    StartDelay: ("{delay_s, task}", "{delay_s, task} object"),
    datetime: ("time (ISO 8601 or Unix seconds)", "times"),
}


def _nullable(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` as (X, True); anything else as (it, False)."""
    if get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation):
        members = tuple(item for item in get_args(annotation) if item is not type(None))
        return (members[0] if len(members) == 1 else Union[members]), True  # noqa: UP007
    return annotation, False


def _type_text(annotation: Any, *, plural: bool = False) -> str:
    """A type in words: ``str | tuple[str, ...]`` is "string or list of strings"."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_text(item) for item in get_args(annotation))
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    if origin in (tuple, list):
        return "list of " + _type_text(get_args(annotation)[0], plural=True)
    if origin is dict:  # resources: names (Annotated str) to units or limits
        key, value = (
            get_args(item)[0] if get_origin(item) is Annotated else item for item in get_args(annotation)
        )
        return f"mapping of {_type_text(key, plural=True)} to {_type_text(value, plural=True)}"
    if annotation in _NAMES:
        return _NAMES[annotation][1 if plural else 0]
    raise AssertionError(f"the plan reference cannot describe the type {annotation!r}")


def _limits(name: str, field: FieldInfo) -> str:
    """The field's bounds in words, to follow its type: "of 1-200 characters", "from 1 to 20"."""
    if name == "id":
        return f"of {TASK_ID_RULE}"
    bounds: dict[str, Any] = {}
    for item in field.metadata:
        if isinstance(item, Gt | Ge | Lt | Le | MinLen | MaxLen):  # dataclasses of one field each
            bounds.update(dataclasses.asdict(item))
    if "max_length" in bounds:
        return f"of {bounds.get('min_length', 0)}-{bounds['max_length']} characters"
    if "min_length" in bounds:
        return f"of at least {bounds['min_length']} characters"
    if "ge" in bounds and "le" in bounds:
        return f"from {bounds['ge']} to {bounds['le']}"
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return ", ".join(f"{symbols[key]} {value}" for key, value in bounds.items())


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "default: not set"
    if isinstance(default, tuple):
        default = list(default)
    return f"default: `{json.dumps(default)}`"


def _sentence(text: str) -> str:
    text = text.strip()
    if text.startswith(_CLAUDE_ONLY):
        return f"Claude Code tasks only: {text.removeprefix(_CLAUDE_ONLY)}" + _stop(text)
    return text[0].upper() + text[1:] + _stop(text)


def _stop(text: str) -> str:
    return "" if text.endswith((".", "!", "?")) else "."


def _field_section(name: str, field: FieldInfo, examples: dict[str, str]) -> list[str]:
    annotation, nullable = _nullable(field.annotation)
    kind = " ".join(filter(None, [_type_text(annotation), _limits(name, field)]))
    kind += ", or null" if nullable else ""
    lines = [f"### `{name}`", "", f"{kind} · {_default_text(field)}", ""]
    if field.description:
        lines += [_sentence(field.description), ""]
    if name in examples:
        lines += ["```yaml", examples[name], "```", ""]
    return lines


def _model_section(
    title: str, intro: str, model: type[BaseModel], examples: dict[str, str] = FIELD_EXAMPLES
) -> list[str]:
    lines = [f"## {title}", "", intro, ""]
    for name, field in model.model_fields.items():
        lines += _field_section(name, field, examples)
    return lines


def plan_reference() -> str:
    """``docs/plan-reference.md``: the plan file format, field by field, from the models."""
    lines = [
        "# Plan reference",
        "",
        "<!-- Generated from src/maos/model.py (Plan, TaskSpec) by src/maos/plan/reference.py;",
        f"     do not edit. After changing a field, run: {REGENERATE} -->",
        "",
        "A plan is a YAML or JSON file holding one object: a named DAG of tasks. Each task runs",
        "as a real agent process: a Claude Code agent, or the `command` it names. A task starts",
        "when every task in its `depends_on` has succeeded, so independent tasks run in parallel.",
        "Check a plan with `maos plan validate FILE`, look at its shape with `maos plan show FILE`,",
        "run it with `maos run FILE`. Unknown fields are refused (a typo is an error, with the",
        "field it probably meant). This reference is also printed by `maos plan fields`.",
        "",
        "```yaml",
        EXAMPLE_PLAN.rstrip("\n"),
        "```",
        "",
    ]
    lines += _model_section("Plan fields", "The top level of a plan file.", Plan)
    lines += _model_section(
        "Task fields",
        "Each item of `tasks`. A task with a `command` runs it; one without runs as a Claude Code\n"
        'agent, whose settings are marked "Claude Code tasks only".',
        TaskSpec,
    )
    lines += _model_section(
        "Agent fields",
        "Each item of `agents`: the run's team (docs/teams.md). Without `agents` a run has\n"
        "`maos run --agents N` generalists; `maos run --agent ROLE[:N]` or `--team FILE` replace it.\n"
        "A task goes only to an agent that has all its `capabilities` and takes its runtime; among\n"
        "those the scheduler picks by fitness (0.4 capability + 0.3 workload + 0.3 history).",
        TeamMember,
        AGENT_FIELD_EXAMPLES,
    )
    return "\n".join(lines).rstrip("\n") + "\n"
