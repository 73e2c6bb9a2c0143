"""The LLM planner: a Claude Code CLI turns a task given in words into a plan, with feedback.

One try is one run of the real CLI in print mode, without tools::

    claude -p --output-format json --tools "" --max-turns 2 --setting-sources ""
           --strict-mcp-config --no-session-persistence --append-system-prompt SYSTEM
           [--model M]          (the prompt on stdin)

``SYSTEM`` (``planner_system_prompt``) explains the plan schema, generated from the
``TaskSpec`` and ``Plan`` models (field names, types in words, defaults, meanings: a field
added to the model shows up here by itself), the rules, and the decomposition templates as
examples. The answer is the ``result`` text of the CLI's JSON; the plan is the JSON object in
it (in a fence or not, see ``extract_plan_data``), checked by ``plan_from_data`` like any plan
file. When it is not a valid plan, the next try's prompt (``feedback_prompt``) starts with the
exact problem lines (``plan: task 'a' (tasks[0]): field 'depends_on': dependency cycle
a -> b -> a ...``), then repeats the task and the previous answer, and asks for the whole
corrected plan. After ``max_tries`` invalid answers ``PlanningFailed`` lists the problems of
the last one and keeps every attempt.

The first line of the system prompt is the agent marker ``MAOS_AGENT_ID=maos-planner``
(``maos.markers``), so a model server script can tell the planner's requests from the agents'
(``match: {agent: maos-planner}``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from maos.agents.claude_code import BASE_URL_ENV, PLACEHOLDER_API_KEY
from maos.agents.environment import agent_environment
from maos.agents.guard import guarded
from maos.agents.process import stop_process
from maos.agents.stream_json import ResultLine, StreamJsonError, parse_line
from maos.documents import DocumentError, check_depth
from maos.errors import AgentError, PlanError
from maos.markers import agent_marker
from maos.model import TASK_ID_RULE, Plan, TaskSpec
from maos.plan.loader import (
    PLAN_FIELD_EXPECTS,
    TASK_FIELD_EXPECTS,
    Syntax,
    parse_plan_text,
    plan_from_data,
)
from maos.plan.templates import list_templates, render_template

__all__ = [
    "ANSWER_SOURCE",
    "DEFAULT_MAX_TASKS",
    "PLANNER_AGENT_ID",
    "PLAN_GUIDANCE",
    "TASK_GUIDANCE",
    "PlanAttempt",
    "PlanningFailed",
    "check_answer",
    "extract_plan_data",
    "feedback_prompt",
    "first_prompt",
    "model_available",
    "plan_schema_text",
    "plan_with_model",
    "planner_argv",
    "planner_environment",
    "planner_system_prompt",
]

log = logging.getLogger("maos.plan.planner")

PLANNER_AGENT_ID = "maos-planner"
DEFAULT_MAX_TASKS = 20
ANSWER_SOURCE = "plan"
"""How problem lines name the planner's answer: ``plan: task 'a' (tasks[0]): ...``."""
DEFAULT_TIMEOUT_S = 300.0
_FEEDBACK_ANSWER_CHARS = 20_000  # of the previous answer, quoted back in the next prompt
_MAX_ANSWER_CHARS = 1 << 20  # a 20-task plan is a few KiB
_MAX_OBJECT_STARTS = 200  # '{' where an unfenced answer's plan may start, tried in order
_STDERR_CHARS = 2_000
_GRACE_S = 2.0
_PLAN_FENCES = ("json", "yaml", "yml", "")
_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[^\n]*\n(.*?)```", re.DOTALL)

# What the planner should know about a field beyond its type: for fields whose model has no
# description, and advice for the planner. A test keeps the keys real field names and makes
# sure every field has a description or a line here.
PLAN_GUIDANCE: dict[str, str] = {
    "name": "A short name for the plan.",
    "description": "The goal of the whole plan, in a sentence or two.",
    "tasks": "The tasks, at least one.",
    "agents": "Propose the team the task needs: one entry per role with how many agents of it can "
    "work at once (e.g. [{role: reviewer}, {role: coder, count: 3}]); give capabilities only when "
    "tasks require them. Leave it out for a small task: the run then has generalists.",
}
TASK_GUIDANCE: dict[str, str] = {
    "title": "A short human-readable title.",
    "prompt": "The complete instructions for the agent that runs the task. Make it self-contained: "
    "state the shared goal, exactly what this task must produce, what it must not do (the work "
    "of other tasks), and that the final answers of the tasks it depends on are in the files "
    "listed in the environment variable MAOS_INPUTS (JSON: task id -> file). Its final answer is "
    "what the tasks after it get.",
    "role": "The kind of agent: designer, implementer, tester, writer, reviewer, researcher, ... "
    "A role defined in .claude/agents/<role>.md runs with that file's prompt, tools and model.",
    "capabilities": "Capabilities an agent must have; usually left out.",
    "depends_on": "Ids of the tasks that must succeed before this one starts; their final "
    "answers reach it through MAOS_INPUTS. Only real dependencies: tasks that do not need each "
    "other's results must not depend on each other, so they run in parallel.",
    "timeout_s": "Seconds one attempt may take.",
    "max_attempts": "Attempts before the task counts as failed.",
    "command": "Leave it out for work an agent should do (the task then runs as a Claude Code "
    "agent); set it only for a deterministic shell step that needs no model.",
    "permission_mode": "acceptEdits for a task that writes files; leave it out for read-only tasks.",
}


# --------------------------------------------------------------------------- the prompts


def plan_schema_text() -> str:
    """The plan schema in words, one line per field, generated from ``Plan`` and ``TaskSpec``."""
    lines = ["A plan is one JSON object with these fields:"]
    lines += [
        _field_line(name, field, PLAN_FIELD_EXPECTS, PLAN_GUIDANCE)
        for name, field in Plan.model_fields.items()
    ]
    lines.append("")
    lines.append("Each task is a JSON object with these fields (leave out every field you do not need):")
    lines += [
        _field_line(name, field, TASK_FIELD_EXPECTS, TASK_GUIDANCE)
        for name, field in TaskSpec.model_fields.items()
    ]
    return "\n".join(lines)


def _field_line(name: str, field: FieldInfo, expects: Mapping[str, str], guidance: Mapping[str, str]) -> str:
    if field.is_required():
        status = "required"
    else:
        default = field.get_default(call_default_factory=True)
        if isinstance(default, tuple):
            default = list(default)
        status = "default " + json.dumps(default)
    line = f"- {name} ({status}): {expects.get(name, 'a value')}."
    if field.description:
        line += f" {field.description[0].upper()}{field.description[1:]}."
    if name in guidance:
        line += f" {guidance[name]}"
    return line


def _rules(max_tasks: int) -> str:
    return "\n".join(
        [
            f"1. Every task has an id of {TASK_ID_RULE}, unique in the plan.",
            "2. depends_on lists only ids of tasks in this plan. No task depends on itself and there is "
            "no dependency cycle (a -> b -> a): the tasks form a DAG.",
            "3. Parallelism is the point: split the work so that independent tasks run at the same time, "
            "and add a dependency only when a task needs another task's result.",
            f"4. At most {max_tasks} tasks. Prefer a few well-defined tasks over many tiny ones.",
            "5. Every prompt is self-contained and specific: an agent sees only its own prompt and the "
            "final answers of the tasks it depends on.",
            "6. Answer with the plan only: one JSON object in a ```json fence, no other text.",
        ]
    )


def planner_system_prompt(*, template_hint: str | None = None, max_tasks: int = DEFAULT_MAX_TASKS) -> str:
    """What the planner is told before the task: the role, the schema, the rules and examples.

    Every template appears as a pattern (ids, roles, dependencies); ``template_hint`` (the
    template the task's keywords point to) appears in full, rendered for a sample task.
    """
    parts = [
        agent_marker(PLANNER_AGENT_ID),
        "You are the planner of MAOS, a system that runs many AI coding agents (Claude Code) in "
        "parallel on a DAG of tasks. You receive a task in words and answer with a plan for it: "
        "a JSON object in the plan schema below. You do not do the task yourself and you have "
        "no tools.",
        "",
        "# The plan schema",
        plan_schema_text(),
        "",
        "# Rules",
        _rules(max_tasks),
        "",
        "# Patterns that work (decomposition templates)",
    ]
    for template in list_templates():
        parts.append(f"- {template.name}: {template.summary} Tasks: {_pattern(template.name)}")
    if template_hint is not None:
        example = render_template(template_hint, "<the task>")
        data = example.model_dump(mode="json", exclude_defaults=True)
        parts += [
            "",
            f"# Example: the '{template_hint}' pattern as a complete plan for a task '<the task>'",
            "Adapt it to the actual task (ids, prompts, number and kind of tasks) rather than "
            "copying it; leave out or add tasks as the task needs.",
            "```json",
            json.dumps(data, indent=1, ensure_ascii=False),
            "```",
        ]
    return "\n".join(parts)


def _pattern(name: str) -> str:
    """``design -> implement, tests, docs (parallel) -> review``-style summary of a template."""
    plan = render_template(name, "<the task>")
    shown: list[str] = []
    for task in plan.tasks:
        after = f" after {', '.join(task.depends_on)}" if task.depends_on else ""
        shown.append(f"{task.id} ({task.role}{after})")
    return "; ".join(shown) + "."


def first_prompt(task_text: str) -> str:
    return (
        f"Plan this task:\n\n{task_text.strip()}\n\n"
        "Answer with the plan as one JSON object in a ```json fence."
    )


def feedback_prompt(task_text: str, answer: str, problems: list[str] | tuple[str, ...]) -> str:
    """The prompt of a retry: the problems first (each line exactly as the checker wrote it),
    then the task, then the previous answer."""
    if len(answer) > _FEEDBACK_ANSWER_CHARS:
        answer = (
            answer[:_FEEDBACK_ANSWER_CHARS]
            + f"\n... ({len(answer) - _FEEDBACK_ANSWER_CHARS} more characters)"
        )
    listed = "\n".join(f"- {problem}" for problem in problems)
    return (
        f"Your previous plan was rejected. Problems:\n{listed}\n\n"
        f"The task:\n\n{task_text.strip()}\n\n"
        f"Your previous answer:\n\n{answer}\n\n"
        "Answer with the whole corrected plan as one JSON object in a ```json fence, "
        "fixing every problem listed above."
    )


# --------------------------------------------------------------------------- reading answers


def extract_plan_data(answer: str, source: str = ANSWER_SOURCE) -> object:
    """The plan data in a planner's answer; ``PlanError`` when there is none.

    Tried in order: each fenced block (```json, ```yaml or plain ```; others are skipped), the whole answer as
    JSON, then the first ``{`` ... ``}`` object that decodes. A fenced JSON block that does
    not decode raises its syntax error (line and column), so the model can fix it.
    """
    text = answer.strip()
    if not text:
        raise PlanError(f"{source}: the answer is empty; expected the plan as one JSON object")
    if len(text) > _MAX_ANSWER_CHARS:
        raise PlanError(
            f"{source}: the answer has {len(text)} characters, more than the limit of {_MAX_ANSWER_CHARS}"
        )
    first_error: PlanError | None = None
    for match in _FENCE_RE.finditer(text):
        language, body = match.group(1).lower(), match.group(2)
        if language not in _PLAN_FENCES:
            continue  # ```text, ```python ...: not where a plan is
        syntax: Syntax = "yaml" if language in ("yaml", "yml") else "json"
        try:
            data = parse_plan_text(body, source, syntax=syntax)
        except PlanError as exc:
            first_error = first_error or exc
            continue
        if isinstance(data, dict):
            return data
    if first_error is not None:
        raise first_error
    try:
        return parse_plan_text(text, source, syntax="json")
    except PlanError:
        pass
    decoder = json.JSONDecoder()
    starts = (index for index, char in enumerate(text) if char == "{")
    for start in itertools.islice(starts, _MAX_OBJECT_STARTS):
        try:
            data, _ = decoder.raw_decode(text, start)
            check_depth(data)
        except (ValueError, RecursionError, DocumentError):
            continue
        if isinstance(data, dict):
            return data
    raise PlanError(
        f"{source}: no JSON object found in the answer; expected the plan as one JSON object in a "
        "```json fence"
    )


def check_answer(answer: str, *, max_tasks: int = DEFAULT_MAX_TASKS) -> Plan:
    """The valid plan in ``answer``; ``PlanError`` listing every problem otherwise."""
    plan = plan_from_data(extract_plan_data(answer), ANSWER_SOURCE)
    if len(plan.tasks) > max_tasks:
        raise PlanError(
            f"{ANSWER_SOURCE}: field 'tasks': the plan has {len(plan.tasks)} tasks, more than the "
            f"limit of {max_tasks}; merge related tasks"
        )
    return plan


# --------------------------------------------------------------------------- attempts


@dataclass(frozen=True, slots=True)
class PlanAttempt:
    """One try of the planner: what it was asked, what it answered, what was wrong with it."""

    number: int
    prompt: str
    answer: str
    problems: tuple[str, ...]  # empty: the answer was accepted
    duration_s: float
    cost_usd: float | None = None
    session_id: str = ""

    @property
    def accepted(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "accepted": self.accepted,
            "prompt": self.prompt,
            "answer": self.answer,
            "problems": list(self.problems),
            "duration_s": round(self.duration_s, 3),
            "cost_usd": self.cost_usd,
            "session_id": self.session_id,
        }


class PlanningFailed(PlanError):
    """The planner gave no valid plan in its tries. ``problems``: a first line saying so, then
    the problems of the last answer; ``attempts``: every try."""

    def __init__(self, attempts: list[PlanAttempt]) -> None:
        self.attempts = list(attempts)
        last = self.attempts[-1]
        super().__init__(
            [
                f"the planner gave no valid plan in {len(self.attempts)} tries; "
                f"the problems of its last answer:",
                *last.problems,
            ]
        )


# --------------------------------------------------------------------------- running the CLI


def model_available(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a model can be called: an API key, or a base URL (a model server, a proxy)."""
    env = os.environ if environ is None else environ
    names = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", BASE_URL_ENV)
    return any(env.get(name) for name in names)


def planner_environment(
    config_dir: Path, *, base: Mapping[str, str] | None = None, base_url: str | None = None
) -> dict[str, str]:
    """The CLI's environment: the allowlist of ``base`` (default ``os.environ``; see
    ``maos.agents.environment``: no MAOS secret, no unrelated variable) with its own
    ``CLAUDE_CONFIG_DIR``, no telemetry or auto-updater, and ``ANTHROPIC_BASE_URL`` from
    ``base_url`` or ``$MAOS_ANTHROPIC_BASE_URL`` when set (with a placeholder key if none: the
    CLI refuses to start without one, a model server accepts any), as the claude-code
    runtime does for agents."""
    source = os.environ if base is None else base
    env = agent_environment({}, claude=True, base=source)
    env.update(
        CLAUDE_CONFIG_DIR=str(config_dir),
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_TELEMETRY="1",
        DISABLE_AUTOUPDATER="1",
    )
    url = base_url or source.get(BASE_URL_ENV)
    if url:
        env["ANTHROPIC_BASE_URL"] = url
    if env.get("ANTHROPIC_BASE_URL") and not (
        env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_AUTH_TOKEN")
    ):
        env["ANTHROPIC_API_KEY"] = PLACEHOLDER_API_KEY
    return env


def planner_argv(cli_path: Path, system_prompt: str, *, model: str | None = None) -> list[str]:
    argv = [str(cli_path), "-p", "--output-format", "json", "--tools", "", "--max-turns", "2"]
    argv += ["--setting-sources", "", "--strict-mcp-config", "--no-session-persistence"]
    argv += ["--append-system-prompt", system_prompt]
    if model is not None:
        argv += ["--model", model]
    return argv


async def _ask(
    prompt: str, *, argv: list[str], env: Mapping[str, str], cwd: Path, timeout_s: float
) -> ResultLine:
    """One CLI run with ``prompt`` on stdin; its ``result``. The process is always reaped."""
    argv, env = guarded(argv, cwd=cwd, env=env)  # it dies with us, like every agent
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise AgentError(f"cannot start the planner's Claude Code CLI {argv[0]} in {cwd}: {exc}") from exc
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate(prompt.encode())
    except TimeoutError:
        raise AgentError(f"the planner did not answer within {timeout_s:g}s") from None
    finally:
        await stop_process(proc, _GRACE_S)
    stderr = err.decode(errors="replace").strip()[-_STDERR_CHARS:]
    lines = [line for line in out.decode(errors="replace").splitlines() if line.strip()]
    result: ResultLine | None = None
    for line in reversed(lines):
        try:
            record = parse_line(line)
        except StreamJsonError:
            continue
        if isinstance(record, ResultLine):
            result = record
            break
    if result is None:
        detail = f": {stderr}" if stderr else ""
        raise AgentError(
            f"the planner's Claude Code CLI exited (code {proc.returncode}) without a result{detail}"
        )
    if result.is_error:
        why = "; ".join(result.errors) or (result.result or "").strip() or stderr
        status = f" {result.api_error_status}" if result.api_error_status is not None else ""
        reason = result.terminal_reason or result.subtype
        raise AgentError(f"the planner's Claude Code CLI failed ({reason}{status}): {why}")
    return result


async def plan_with_model(
    task_text: str,
    *,
    cli_path: Path,
    env: Mapping[str, str],
    cwd: Path,
    template_hint: str | None = None,
    max_tries: int = 3,
    max_tasks: int = DEFAULT_MAX_TASKS,
    model: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_attempt: Callable[[PlanAttempt], None] | None = None,
) -> Plan:
    """Ask the Claude Code CLI at ``cli_path`` for a plan of ``task_text``; retry with feedback.

    ``env`` is the CLI's whole environment (see ``planner_environment``), ``cwd`` its working
    directory. Each try's answer is checked with ``check_answer``; an invalid one is sent back
    with its problems, up to ``max_tries`` tries in all. ``on_attempt`` is called after each
    try. Raises ``PlanningFailed`` (a ``PlanError``) when no try gave a valid plan, and
    ``AgentError`` when the CLI itself fails (cannot start, model API error, timeout).
    """
    if max_tries < 1:
        raise ValueError(f"max_tries must be at least 1, got {max_tries}")
    if not task_text.strip():
        raise PlanError("the task text is empty; say what the run should do")
    argv = planner_argv(
        cli_path, planner_system_prompt(template_hint=template_hint, max_tasks=max_tasks), model=model
    )
    attempts: list[PlanAttempt] = []
    prompt = first_prompt(task_text)
    for number in range(1, max_tries + 1):
        started = time.monotonic()
        result = await _ask(prompt, argv=argv, env=env, cwd=cwd, timeout_s=timeout_s)
        answer = result.result or ""
        plan: Plan | None = None
        try:
            plan = check_answer(answer, max_tasks=max_tasks)
            problems: tuple[str, ...] = ()
        except PlanError as exc:
            problems = tuple(exc.problems)
        attempt = PlanAttempt(
            number=number,
            prompt=prompt,
            answer=answer,
            problems=problems,
            duration_s=time.monotonic() - started,
            cost_usd=result.total_cost_usd,
            session_id=result.session_id,
        )
        attempts.append(attempt)
        log.info("planner try %d: %s", number, "accepted" if plan else f"{len(problems)} problems")
        if on_attempt is not None:
            on_attempt(attempt)
        if plan is not None:
            return plan
        prompt = feedback_prompt(task_text, answer, problems)
    raise PlanningFailed(attempts)
