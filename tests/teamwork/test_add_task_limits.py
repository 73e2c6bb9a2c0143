"""Tasks added by agents are held to what execution needs, like plan tasks: refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path

from maos.model import Plan, RunConfig, RunStatus, TaskSpec, TaskState
from maos.orchestrator import Orchestrator
from maos.permissions import Grants
from maos.store.base import Store

ADD_NUL = json.dumps({"id": "nul", "command": "echo \u0000oops"})
ADD_NUL_ITEM = json.dumps({"id": "nul2", "command": ["echo", "a\u0000"]})
ADD_BAD_ID = json.dumps({"id": "x.lock", "command": "true"})
ADD_DEEP = '{"id": "deep", "command": "true", "capabilities": ' + "[" * 100 + "]" * 100 + "}"


async def test_add_task_with_a_nul_command_is_refused_with_the_reason(
    sqlite_store: Store, tmp_path: Path
) -> None:
    lead = "; ".join(
        f"maos task add '{spec}' 2> {name}.txt; echo exit=$? >> {name}.txt"
        for name, spec in (("nul", ADD_NUL), ("item", ADD_NUL_ITEM), ("id", ADD_BAD_ID), ("deep", ADD_DEEP))
    )
    shell = Grants(add_task_runtimes=("command",))  # agents may add command tasks only if granted
    plan = Plan(name="limits", tasks=(TaskSpec(id="lead", command=lead + "; true", grants=shell),))
    orchestrator = Orchestrator(sqlite_store, plan, RunConfig(agents=1, workdir=str(tmp_path)))
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert state.tasks["lead"].state is TaskState.SUCCEEDED
    assert set(state.tasks) == {"lead"}
    nul = (tmp_path / "nul.txt").read_text()
    assert "task 'nul' refused: " in nul
    assert "field 'command': must not contain a NUL byte" in nul
    assert "exit=1" in nul
    assert "field 'command': item 2: must not contain a NUL byte" in (tmp_path / "item.txt").read_text()
    assert "must not end in '.lock'" in (tmp_path / "id.txt").read_text()
    assert "nested more than 64 levels deep" in (tmp_path / "deep.txt").read_text()
