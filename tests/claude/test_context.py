"""Context along edges: a Claude Code task's prompt carries its parents' results."""

from __future__ import annotations

from pathlib import Path

import pytest

from maos.context import PER_PARENT_CHARS
from maos.model import RunStatus, TaskSpec
from maos.store.base import Store
from tests.claude.conftest import run_plan

SCRIPT = """
rules:
  - match: {}
    reply: {text: "ok"}
"""


@pytest.mark.claude
async def test_parents_results_are_in_the_childs_prompt(
    cli: Path, sqlite_store: Store, tmp_path: Path
) -> None:
    big = "x" * (PER_PARENT_CHARS + 500)
    run = await run_plan(
        sqlite_store,
        tmp_path / "work",
        SCRIPT,
        TaskSpec(id="facts", command="echo 'the secret is 42'"),
        TaskSpec(id="huge", command=f"echo {big}"),
        TaskSpec(id="summarize", prompt="Summarize.", depends_on=("facts", "huge")),
        agents=2,
    )
    assert run.state.status is RunStatus.SUCCEEDED, run.state.summary
    [request] = [r for r in run.requests if r["path"].startswith("/v1/messages")]
    text = request["last_user"]
    assert text.startswith("Summarize.")
    assert "## Results of the tasks this one builds on" in text
    assert "the secret is 42" in text
    assert "500 more characters in" in text  # large outputs are referenced, not inlined
    assert text.count("x") < PER_PARENT_CHARS + 100
