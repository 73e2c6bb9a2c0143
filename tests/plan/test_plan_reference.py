"""``docs/plan-reference.md`` is generated from the model and never drifts from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from maos.model import Plan, TaskSpec
from maos.plan import parse_plan_text, plan_from_data
from maos.plan.reference import EXAMPLE_PLAN, FIELD_EXAMPLES, REGENERATE, plan_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "plan-reference.md"
STALE = f"docs/plan-reference.md is out of date with src/maos/model.py: regenerate it with `{REGENERATE}`"


def test_the_committed_reference_is_the_generated_one() -> None:
    assert DOC.read_text(encoding="utf-8") == plan_reference(), STALE


def test_maos_plan_fields_prints_the_reference() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "maos", "plan", "fields"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "80", "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == DOC.read_text(encoding="utf-8"), STALE


def test_every_field_is_described_with_type_and_default() -> None:
    text = plan_reference()
    for model in (Plan, TaskSpec):
        for name, field in model.model_fields.items():
            section = text.split(f"### `{name}`\n\n", 1)[1].split("\n### ", 1)[0]
            kind = section.splitlines()[0]
            assert " · **required**" in kind or " · default: " in kind, name
            assert field.description, f"{model.__name__}.{name} needs a description= for the reference"
    assert "1-64 letters" in text  # the id rule in words, not a regular expression
    assert "integer from 1 to 100 · default: `3`" in text  # max_attempts
    assert "string or list of strings, or null · default: not set" in text  # command


def test_the_example_plan_is_valid() -> None:
    plan = plan_from_data(parse_plan_text(EXAMPLE_PLAN, "example"), "example")
    assert [task.id for task in plan.tasks] == ["design", "implement", "tests", "check"]


@pytest.mark.parametrize("name", sorted(FIELD_EXAMPLES))
def test_every_field_example_is_valid(name: str) -> None:
    value = yaml.safe_load(FIELD_EXAMPLES[name])
    assert list(value) == [name]
    if name in Plan.model_fields:
        Plan.model_validate({"name": "p", "tasks": [{"id": "a"}]} | value)
    else:
        TaskSpec.model_validate({"id": "a"} | value)
