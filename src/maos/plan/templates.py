"""Decomposition templates: named DAG patterns for common kinds of work (FR-1.1).

A template is a YAML file in ``maos/plan/templates/`` (package data)::

    template: feature                  # its name; equals the file name without .yaml
    summary: one line for `maos plan --help` and the docs
    priority: 10                       # breaks keyword-score ties: higher wins
    keywords: [add, implement, ...]    # words (or phrases) that choose it, see choose_template
    plan:                              # a plan as in any plan file, with placeholders
      name: "feature: {task_title}"
      tasks:
        - id: design
          prompt: "Shared goal of this run: {task} ..."

Placeholders, filled in every string of ``plan`` after the YAML is parsed (so the user's text
can never change the plan's structure): ``{task}`` the task text, ``{task_title}`` its first
line shortened to 80 characters, ``{researchers}`` the ``researchers`` count; in a repeated
task also ``{n}`` and ``{focus}``. ``{{`` and ``}}`` are literal braces; any other name is an
error. Two template-only task keys: ``repeat: researchers`` makes ``researchers`` copies of the
task (``{n}`` = 1..N, which its id must contain), ``focus: [...]`` gives copy n its ``{focus}``
(the list is cycled). A ``depends_on`` entry equal to a repeated task's id pattern (``research-{n}``)
stands for all its copies.

``render_template`` returns a validated ``Plan``; the LLM planner shows rendered templates to
the model as examples (``maos.plan.planner``).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from maos.errors import PlanError
from maos.model import Plan
from maos.plan.loader import parse_plan_text, plan_from_data

__all__ = [
    "DEFAULT_RESEARCHERS",
    "MAX_RESEARCHERS",
    "Template",
    "choose_template",
    "get_template",
    "keyword_matches",
    "list_templates",
    "render_template",
    "task_title",
]

DEFAULT_RESEARCHERS = 3
MAX_RESEARCHERS = 20
_TITLE_CHARS = 80
_PLACEHOLDER_RE = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_REPEAT_PARAMETERS = ("researchers",)
_TEMPLATE_ONLY_KEYS = ("repeat", "focus")


class _TemplateFile(BaseModel):
    """The shape of a template file; ``plan`` is checked by rendering it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    summary: str = Field(min_length=1)
    priority: int = 0
    keywords: tuple[str, ...] = Field(min_length=1)
    plan: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Template:
    """A loaded template. ``plan`` is the raw data with its placeholders still in it."""

    name: str
    summary: str
    priority: int
    keywords: tuple[str, ...]
    plan: Mapping[str, Any]
    source: str

    @property
    def task_ids(self) -> tuple[str, ...]:
        """The ids as written in the file (a repeated task shows its ``{n}`` pattern)."""
        return tuple(str(task.get("id")) for task in self.plan.get("tasks") or ())


@functools.cache
def _templates() -> dict[str, Template]:
    """Every template file, read once, by name (sorted)."""
    found: dict[str, Template] = {}
    folder = resources.files("maos.plan").joinpath("templates")
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if not entry.name.endswith(".yaml"):
            continue
        source = f"template file {entry.name}"
        data = parse_plan_text(entry.read_text(encoding="utf-8"), source)
        try:
            spec = _TemplateFile.model_validate(data)
        except ValidationError as exc:
            raise PlanError(
                [f"{source}: field '{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors()]
            ) from None
        if spec.template != entry.name.removesuffix(".yaml"):
            raise PlanError(f"{source}: field 'template': {spec.template!r} differs from the file name")
        found[spec.template] = Template(
            name=spec.template,
            summary=spec.summary,
            priority=spec.priority,
            keywords=tuple(keyword.lower() for keyword in spec.keywords),
            plan=spec.plan,
            source=source,
        )
    return found


def list_templates() -> list[Template]:
    """All templates, by name."""
    return list(_templates().values())


def get_template(name: str) -> Template:
    """The template called ``name``; ``PlanError`` naming the known ones otherwise."""
    templates = _templates()
    try:
        return templates[name]
    except KeyError:
        raise PlanError(f"unknown template '{name}' (known: {', '.join(templates)})") from None


# --------------------------------------------------------------------------- choosing


@functools.cache
def _keyword_re(keyword: str) -> re.Pattern[str]:
    """A keyword as a whole word or phrase, with the common English endings:
    ``fix`` finds fixes, fixed, fixing; ``compare`` finds compares, compared, comparing."""
    words = keyword.split()
    *head, last = words
    if last.endswith("e"):
        tail = re.escape(last[:-1]) + "(?:e|es|ed|ing)"
    else:
        tail = re.escape(last) + "(?:s|es|ed|ing)?"
    body = r"\s+".join([*map(re.escape, head), tail])
    return re.compile(rf"(?<![\w-]){body}(?![\w-])", re.IGNORECASE)


def keyword_matches(task_text: str) -> dict[str, list[str]]:
    """For each template, the keywords found in ``task_text`` (templates with none left out)."""
    found: dict[str, list[str]] = {}
    for template in _templates().values():
        hits = [keyword for keyword in template.keywords if _keyword_re(keyword).search(task_text)]
        if hits:
            found[template.name] = hits
    return found


def choose_template(task_text: str) -> str | None:
    """The template whose keywords fit ``task_text`` best, or None when no keyword occurs.

    Score: one point per distinct keyword found (case-insensitive, whole words, common
    endings), plus one when the text starts with a keyword (usually the verb that says what
    kind of work it is: "Fix ...", "Add ...", "Compare ..."). The highest score wins; a tie
    goes to the higher ``priority`` (bugfix 50, research 40, review 30, refactor 20,
    feature 10): "Add a fix for the login crash" is a bugfix.
    """
    matches = keyword_matches(task_text)
    if not matches:
        return None
    templates = _templates()
    start = task_text.lstrip()

    def score(name: str) -> tuple[int, int]:
        leading = any(_keyword_re(keyword).match(start) for keyword in matches[name])
        return len(matches[name]) + int(leading), templates[name].priority

    return max(matches, key=score)


# --------------------------------------------------------------------------- rendering


def render_template(name: str, task_text: str, *, researchers: int = DEFAULT_RESEARCHERS) -> Plan:
    """The plan of template ``name`` for ``task_text``, validated.

    ``researchers`` is the number of copies of a repeated task (the research template's
    parallel researchers), 1 to ``MAX_RESEARCHERS``. Raises ``PlanError`` for an unknown
    template, an empty task text, or a template that does not render to a valid plan.
    """
    template = get_template(name)
    if not 1 <= researchers <= MAX_RESEARCHERS:
        raise PlanError(f"researchers must be from 1 to {MAX_RESEARCHERS}, got {researchers}")
    text = task_text.strip()
    if not text:
        raise PlanError("the task text is empty; say what the run should do")
    values = {"task": text, "task_title": task_title(text), "researchers": str(researchers)}
    counts = {"researchers": researchers}
    data = copy.deepcopy(dict(template.plan))
    raw_tasks = data.get("tasks")
    if not isinstance(raw_tasks, list):
        raise PlanError(f"{template.source}: field 'plan.tasks': expected a list of tasks")

    # A repeated task's id pattern -> the ids of its copies, for depends_on.
    copies: dict[str, list[str]] = {}
    for raw in raw_tasks:
        if isinstance(raw, dict) and raw.get("repeat") is not None:
            pattern = str(raw.get("id"))
            count = _repeat_count(template, raw, counts)
            copies[pattern] = [_fill(pattern, values | {"n": str(n)}, template) for n in range(1, count + 1)]

    tasks: list[object] = []
    for raw in raw_tasks:
        if not isinstance(raw, dict):
            tasks.append(raw)  # plan_from_data names the problem
            continue
        spec = {key: value for key, value in raw.items() if key not in _TEMPLATE_ONLY_KEYS}
        deps = spec.get("depends_on")
        if isinstance(deps, list):
            spec["depends_on"] = [each for dep in deps for each in copies.get(str(dep), [dep])]
        if raw.get("repeat") is None:
            tasks.append(_fill(spec, values, template))
            continue
        focus = raw.get("focus") or [""]
        if not isinstance(focus, list):
            raise PlanError(f"{template.source}: task '{raw.get('id')}': field 'focus': expected a list")
        for n in range(1, len(copies[str(raw.get("id"))]) + 1):
            extra = {"n": str(n), "focus": str(focus[(n - 1) % len(focus)])}
            tasks.append(_fill(spec, values | extra, template))
    # Each string is filled exactly once: the user's text may itself contain braces.
    rendered = {key: _fill(value, values, template) for key, value in data.items() if key != "tasks"}
    rendered["tasks"] = tasks
    return plan_from_data(rendered, f"template '{name}'")


def task_title(task_text: str) -> str:
    """The first non-empty line of the task text, whitespace collapsed, at most 80 characters."""
    lines = [" ".join(line.split()) for line in task_text.splitlines()]
    first = next((line for line in lines if line), "")
    return first if len(first) <= _TITLE_CHARS else first[: _TITLE_CHARS - 1] + "…"


def _repeat_count(template: Template, raw: Mapping[str, Any], counts: Mapping[str, int]) -> int:
    repeat = raw.get("repeat")
    if repeat not in counts:
        raise PlanError(
            f"{template.source}: task '{raw.get('id')}': field 'repeat': expected one of "
            f"{', '.join(_REPEAT_PARAMETERS)}, got {repeat!r}"
        )
    if "{n}" not in str(raw.get("id")):
        raise PlanError(f"{template.source}: task '{raw.get('id')}': a repeated task's id must contain {{n}}")
    return counts[str(repeat)]


def _fill(value: Any, values: Mapping[str, str], template: Template) -> Any:
    """``value`` with the placeholders of every string in it filled in (recursively)."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            token = match.group(0)
            if token in ("{{", "}}"):
                return token[0]
            name = match.group(1)
            if name not in values:
                known = ", ".join(f"{{{key}}}" for key in values)
                raise PlanError(f"{template.source}: unknown placeholder {token} (here: {known})")
            return values[name]

        return _PLACEHOLDER_RE.sub(replace, value)
    if isinstance(value, list):
        return [_fill(item, values, template) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, values, template) for key, item in value.items()}
    return value
