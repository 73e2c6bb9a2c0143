"""REPORT.md quotes what agents wrote: no agent can add a heading, a table row, a link or HTML to
the report, or fake one of MAOS's own lines (a real run; the report parsed as Markdown)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from markdown_it import MarkdownIt

from maos.model import Plan, RunConfig, RunStatus, TaskSpec
from maos.orchestrator import Orchestrator
from maos.permissions import Grants
from maos.report import render_report, write_report
from maos.store.base import Store
from maos.summary import against_sequential

FORGED = (
    "done\n# Forged heading\n| fake | row |\n<img src=x onerror=alert(1)>\n"
    "[x](javascript:alert(2))\n```\n## Escaped the fence"
)


async def test_agents_words_in_the_report_are_quoted_never_markup(
    sqlite_store: Store, tmp_path: Path
) -> None:
    added = {"id": "added", "title": "t\n# Title heading <b>bold</b>", "command": "false", "max_attempts": 1}
    lead = (
        f"maos result publish {shlex.quote(FORGED)} {shlex.quote('a`b.txt')} > /dev/null; "
        f"maos task add {shlex.quote(json.dumps(added))} > /dev/null; "
        "echo '<script>alert(3)</script>' >&2; true"
    )
    plan = Plan(
        name="report",
        tasks=(
            TaskSpec(id="lead", command=lead, grants=Grants(add_task_runtimes=("command",))),
            TaskSpec(id="loud", command="echo '# Reason heading | x |' >&2; exit 3", max_attempts=1),
        ),
    )
    orchestrator = Orchestrator(
        sqlite_store, plan, RunConfig(agents=2, workdir=str(tmp_path), retry_base_s=0)
    )
    state = await orchestrator.run()
    assert state.status is RunStatus.FAILED  # `added` and `loud` fail on purpose
    assert set(state.tasks) == {"lead", "loud", "added"}
    report = (await write_report(sqlite_store, state, tmp_path / "REPORT.md")).read_text()

    tokens = MarkdownIt("commonmark").enable("table").parse(report)
    headings = [
        "".join(child.content for child in tokens[n + 1].children or ())
        for n, token in enumerate(tokens)
        if token.type == "heading_open"
    ]
    assert headings == [
        f"Run {state.run_id}: report",
        "Tasks",
        "What each agent did",
        "lead",
        "loud",
        "added: t # Title heading <b>bold</b>",  # the added task's title, as text
    ]
    assert not [token for token in tokens if token.type in ("html_block", "html_inline")]
    inline = [child for token in tokens if token.children for child in token.children]
    assert not [child for child in inline if child.type in ("link_open", "image", "html_inline")]
    rows = sum(1 for token in tokens if token.type == "tr_open")
    assert rows == 1 + len(state.tasks)  # the header and one row per task, no more
    blocks = [token.content for token in tokens if token.type == "fence"]
    assert FORGED + "\n" in blocks  # the summary, word for word
    assert any("# Reason heading | x |" in block for block in blocks)
    assert "a`b.txt" in [child.content for child in inline if child.type == "code_inline"]


def test_a_run_slower_than_its_tasks_one_by_one_is_called_slower() -> None:
    assert against_sequential(2.314) == "2.31x faster"
    assert against_sequential(1.0) == "1.00x faster"
    assert against_sequential(0.79) == "1.27x slower"  # never "0.79x faster"


async def test_the_report_says_a_task_printed_nothing(sqlite_store: Store, tmp_path: Path) -> None:
    plan = Plan(
        name="quiet", tasks=(TaskSpec(id="quiet", command="true"), TaskSpec(id="loud", command="echo hi"))
    )
    state = await Orchestrator(sqlite_store, plan, RunConfig(agents=2, workdir=str(tmp_path))).run()
    text = render_report(state, {})
    assert "### quiet\nSucceeded; it printed nothing." in text
    assert f"### loud\nSucceeded; output in `{state.tasks['loud'].output_path}`." in text
