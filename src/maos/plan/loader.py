"""Reading plans from files, text or plain data, with errors a person or a model can act on.

Every problem becomes one self-contained line naming where it is::

    plan.yaml: line 4, column 3: invalid YAML: did not find expected '-' indicator
    plan.yaml: task 'build' (tasks[1]): field 'depends_on': expected a list of task ids, got 5
    plan.yaml: task 'build' (tasks[1]): unknown field 'depend_on'; did you mean 'depends_on'?

and all of them are raised together in one ``PlanError`` (``problems`` holds the lines). The
LLM planner sends these lines back to the model, so they never refer to anything the reader
cannot see.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from maos.documents import DocumentError, describe_yaml_error, load_json, load_yaml, read_text
from maos.errors import PlanError
from maos.model import MAX_PLAN_TASKS, MAX_TEAM_AGENTS, TASK_ID_RULE, Plan, TeamMember
from maos.plan.validate import problem_line, validate_plan

Syntax = Literal["yaml", "json"]

MAX_PLAN_BYTES = 16 * 1024 * 1024
"""The largest plan document read or parsed (a file, a planner's answer)."""

# What each field accepts, in the words of a plan file. A field missing here falls back to
# pydantic's message; a test keeps these tables in step with the model.
TASK_FIELD_EXPECTS: dict[str, str] = {
    "id": f"a task id ({TASK_ID_RULE})",
    "title": "a string",
    "prompt": "a string",
    "role": "a string",
    "kind": "a string",
    "capabilities": "a list of strings",
    "depends_on": "a list of task ids",
    "priority": "an integer (higher runs first)",
    "timeout_s": "a finite number of seconds greater than 0",
    "max_attempts": "an integer from 1 to 100",
    "command": "a command string (run with sh -c) or a non-empty list of strings (run as is)",
    "isolation": "one of 'auto', 'worktree', 'none'",
    "model": "a model name or alias (claude-code)",
    "allowed_tools": "a list of tool names or rules such as 'Bash(git *)' (claude-code)",
    "permission_mode": "one of 'default', 'manual', 'acceptEdits', 'auto', 'bypassPermissions', "
    "'dontAsk', 'plan' (claude-code)",
    "max_turns": "an integer of at least 1 (claude-code)",
    "max_budget_usd": "a finite number of dollars greater than 0 (claude-code)",
    "replicas": "an integer from 1 to 20 (agents answering in parallel)",
    "consensus": "one of 'majority', 'weighted', 'judge'",
    "quorum": "an integer of at least 1 (answers needed), at most replicas",
    "replica_of": "a task id (set by MAOS on the replicas it creates; not for plans)",
    "idle_timeout_s": "a finite number of seconds greater than 0",
    "grants": "a mapping of door grants (state_read, state_write, send_to, topics, read_results, "
    "add_task, add_task_runtimes; see docs/door.md)",
    "pass_env": "a list of environment variable names "
    "(never MAOS_KEY, MAOS_OLD_KEYS, MAOS_DASHBOARD_TOKEN, MAOS_AUDIT)",
    "resources": "a mapping of resource names to whole numbers of units from 1, e.g. {db: 1}",
    "not_before": "a time (ISO 8601 such as '2026-12-01T09:00:00Z', or Unix seconds) or "
    "{delay_s: seconds, task: a dependency}",
    "after": "a list of {task: a task id, delay_s: seconds of at least 0}",
    "deadline_s": "a finite number of seconds greater than 0 (after the run started)",
    "on_deadline": "one of 'fail', 'skip'",
}
PLAN_FIELD_EXPECTS: dict[str, str] = {
    "name": "a non-empty string of at most 200 characters",
    "description": "a string",
    "tasks": "a list of tasks",
    "agents": f"a list of at most {MAX_TEAM_AGENTS} agents (mappings with role, count, capabilities, "
    "runtime, model, id)",
    "resources": "a mapping of resource names to capacities: a whole number from 1, or "
    "{capacity: N, shared: true|false}",
}

_SHAPE_HINT = "a mapping with 'name' and 'tasks'"
_MAX_SHOWN_CHARS = 80


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read, parse and validate the plan file at ``path``; raise ``PlanError`` on any problem."""
    return plan_from_data(read_plan_data(path), str(path))


def read_plan_data(path: str | os.PathLike[str]) -> object:
    """The parsed content of a plan file: JSON for ``.json``, YAML for anything else.

    Only a regular file of at most ``MAX_PLAN_BYTES`` is read (see ``maos.documents``:
    a FIFO or ``/dev/zero`` is refused before any read)."""
    source = str(path)
    try:
        text = read_text(Path(path), max_bytes=MAX_PLAN_BYTES)
    except DocumentError as exc:
        message = str(exc)
        if message == "is a directory, not a file":
            message = "is a directory, not a plan file"
        raise PlanError(f"{source}: {message}") from None
    syntax: Syntax = "json" if Path(path).suffix.lower() == ".json" else "yaml"
    return parse_plan_text(text, source, syntax=syntax)


def parse_plan_text(text: str, source: str, *, syntax: Syntax = "yaml") -> object:
    """Parse plan text (YAML, or JSON); syntax errors name the line and column (1-based).

    Duplicate keys in one mapping are errors in both syntaxes: silently keeping the last one
    would drop, say, half a task's dependencies. Text over ``MAX_PLAN_BYTES``, nesting deeper
    than ``MAX_DEPTH`` and YAML aliases that expand too far are refused before any value is
    built (``maos.documents``).
    """
    if len(text) > MAX_PLAN_BYTES // 4 and len(text.encode("utf-8", "surrogatepass")) > MAX_PLAN_BYTES:
        raise PlanError(f"{source}: the plan is larger than the limit of {MAX_PLAN_BYTES} bytes")
    try:
        if syntax == "json":
            try:
                return load_json(text, object_pairs_hook=_json_object)
            except json.JSONDecodeError as exc:
                raise PlanError(
                    f"{source}: line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"
                ) from exc
            except _DuplicateKeyError as exc:
                raise PlanError(f"{source}: invalid JSON: {exc}") from exc
        try:
            return load_yaml(text)
        except yaml.YAMLError as exc:
            raise PlanError(f"{source}: {describe_yaml_error(exc)}") from exc
    except DocumentError as exc:
        raise PlanError(f"{source}: {exc}") from None


def plan_from_data(data: object, source: str) -> Plan:
    """Build and validate a ``Plan`` from parsed data (a dict from a file or from a planner).

    Raises ``PlanError`` listing every problem: first the shape and type problems of the
    fields; when there are none, the structural ones of ``validate_plan``.
    """
    if data is None:
        raise PlanError(f"{source}: the plan is empty; expected {_SHAPE_HINT}")
    if not isinstance(data, dict):
        raise PlanError(f"{source}: expected {_SHAPE_HINT} at the top level, got {_kind_of(data)}")
    tasks = data.get("tasks")
    if isinstance(tasks, list | tuple) and len(tasks) > MAX_PLAN_TASKS:
        # Say so before spending time on the fields of a plan that cannot be accepted anyway.
        raise PlanError(
            problem_line(
                source,
                f"the plan has {len(tasks)} tasks, more than the limit of {MAX_PLAN_TASKS}",
                field="tasks",
            )
        )
    agents = data.get("agents")
    if isinstance(agents, list | tuple) and len(agents) > MAX_TEAM_AGENTS:  # as for tasks
        raise PlanError(
            f"{source}: field 'agents': {len(agents)} entries, more agents than the limit of "
            f"{MAX_TEAM_AGENTS}"
        )
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        raise PlanError(list(_describe_validation_error(exc, data, source))) from None
    validate_plan(plan, source)
    return plan


# --------------------------------------------------------------------------- pydantic errors


def _describe_validation_error(exc: ValidationError, data: dict[Any, Any], source: str) -> Iterator[str]:
    """One line per unknown field, and one per (task, field) with a wrong or missing value.

    pydantic reports a value that matches no member of a union once per member, and a bad
    list item by its position; both collapse into one line for the field, showing the whole
    value the file gave.
    """
    seen: set[tuple[int | None, str]] = set()
    tasks = data.get("tasks")
    for error in exc.errors():
        loc = error["loc"]
        index: int | None = None
        task_id: str | None = None
        fields = PLAN_FIELD_EXPECTS
        container: object = data
        if (
            len(loc) >= 2
            and loc[0] == "tasks"
            and isinstance(loc[1], int)
            and isinstance(tasks, list | tuple)
        ):
            index = loc[1]
            container = tasks[index]
            fields = TASK_FIELD_EXPECTS
            raw_id = container.get("id") if isinstance(container, dict) else None
            task_id = raw_id if isinstance(raw_id, str) else None
            loc = loc[2:]
            if not loc:
                got = _kind_of(container)
                yield problem_line(
                    source, f"expected a task (a mapping with at least 'id'), got {got}", index=index
                )
                continue
        elif not loc:  # the top level itself; plan_from_data checks this first
            yield f"{source}: {error['msg']}"
            continue
        elif len(loc) >= 2 and loc[0] == "agents" and isinstance(loc[1], int):  # one team entry
            yield team_entry_problem(source, loc[1], loc[2:], error)
            continue

        field = str(loc[0])
        if error["type"] == "extra_forbidden":
            yield problem_line(
                source, _unknown_field_message(field, list(fields)), index=index, task_id=task_id
            )
            continue
        if (index, field) in seen:
            continue
        seen.add((index, field))
        if error["type"] == "missing":
            message = f"required field is missing; expected {fields.get(field, 'a value')}"
        else:
            value = container.get(field) if isinstance(container, dict) else error["input"]
            expects = fields.get(field)
            if expects is None:
                message = f"{error['msg']}, got {_show(value)}"
            else:
                message = f"expected {expects}, got {_show(value)}"
            if error["type"] == "value_error":  # a validator's own words say what is wrong
                message += f"; {error['msg'].removeprefix('Value error, ')}"
        yield problem_line(source, message, index=index, task_id=task_id, field=field)


def team_entry_problem(source: str, number: int, loc: Sequence[int | str], error: ErrorDetails) -> str:
    """The line for one validation error of team entry ``agents[number]`` (``loc``: where in
    the entry), from a plan's ``agents:`` or a team file; the value shown is cut short."""
    if error["type"] == "extra_forbidden" and loc:
        known = list(TeamMember.model_fields)
        return f"{source}: agents[{number}]: {_unknown_field_message(str(loc[-1]), known)}"
    where = f"agents[{number}]: " + (f"field '{loc[0]}': " if loc else "")
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{source}: {where}{message}, got {_show(error['input'])}"


def _unknown_field_message(field: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(field, known, n=1)
    if close:
        return f"unknown field '{field}'; did you mean '{close[0]}'?"
    return f"unknown field '{field}' (allowed: {', '.join(known)})"


def _show(value: object) -> str:
    """A value as the file wrote it (JSON spelling), cut short when long."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):  # e.g. a mapping with non-string keys from YAML
        text = repr(value)
    if len(text) > _MAX_SHOWN_CHARS:
        text = text[: _MAX_SHOWN_CHARS - 3] + "..."
    return text


def _kind_of(value: object) -> str:
    if isinstance(value, list):
        return f"a list: {_show(value)}"
    if isinstance(value, str):
        return f"a string: {_show(value)}"
    if isinstance(value, bool):
        return f"a boolean: {_show(value)}"
    if isinstance(value, int | float):
        return f"a number: {_show(value)}"
    return _show(value)


# --------------------------------------------------------------------------- syntax


class _DuplicateKeyError(ValueError):
    pass


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            keys = ", ".join(f"'{name}'" for name in result)
            raise _DuplicateKeyError(f"duplicate key '{key}' in an object (its keys before it: {keys})")
        result[key] = value
    return result
