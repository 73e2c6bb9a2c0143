"""Runs with inputs at the edges of what a process can take: a prompt far over the 128 KiB
environment limit, retried tasks whose ids look like retry branches."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from maos.agents.task_env import MAX_ENV_VALUE_BYTES, task_env
from maos.model import Plan, RunConfig, RunStatus, TaskSpec, TaskState
from maos.orchestrator import Orchestrator
from maos.store.base import Store


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


async def test_a_300_kib_prompt_reaches_a_command_task(sqlite_store: Store, tmp_path: Path) -> None:
    prompt = "".join(f"line {n:06d} of a long prompt\n" for n in range(11_000))
    assert len(prompt) > 300 * 1024
    command = (
        'test -z "${MAOS_TASK+set}" || { echo MAOS_TASK is set; exit 1; }; '
        'cksum < "$MAOS_PROMPT_FILE"; cksum; stat -c %a "$MAOS_PROMPT_FILE"'
    )
    plan = Plan(name="big", tasks=(TaskSpec(id="big", prompt=prompt, command=command, max_attempts=1),))
    state = await Orchestrator(sqlite_store, plan, RunConfig(agents=1, workdir=str(tmp_path))).run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    from_file, from_stdin, mode = Path(state.tasks["big"].output_path).read_text().splitlines()
    expected = subprocess.run(["cksum"], input=prompt.encode(), capture_output=True, check=True).stdout
    assert from_file == from_stdin == expected.decode().strip()
    assert mode == "600"


async def test_a_small_prompt_is_in_maos_task_and_in_the_file(sqlite_store: Store, tmp_path: Path) -> None:
    plan = Plan(
        name="small",
        tasks=(TaskSpec(id="s", prompt="hello", command='echo "$MAOS_TASK"; cat "$MAOS_PROMPT_FILE"'),),
    )
    state = await Orchestrator(sqlite_store, plan, RunConfig(agents=1, workdir=str(tmp_path))).run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert Path(state.tasks["s"].output_path).read_text() == "hello\nhello"


def test_large_inputs_go_to_a_file(tmp_path: Path) -> None:
    inputs = {f"parent-{n}": f"/somewhere/outputs/parent-{n}.1.out" for n in range(1000)}
    env = task_env(tmp_path, "t", 1, "p", inputs, command=False)
    assert "MAOS_INPUTS" not in env
    assert json.loads(Path(env["MAOS_INPUTS_FILE"]).read_text()) == inputs
    assert env["MAOS_TASK"] == "p"
    assert "MAOS_PROMPT_FILE" not in env  # a Claude Code task with a small prompt: a warm agent's env
    big = task_env(tmp_path, "t", 2, "x" * (MAX_ENV_VALUE_BYTES + 1), {}, command=False)
    assert "MAOS_TASK" not in big
    assert stat.S_IMODE(os.stat(big["MAOS_PROMPT_FILE"]).st_mode) == 0o600
    assert all(len(value.encode()) <= MAX_ENV_VALUE_BYTES for value in (*env.values(), *big.values()))


async def test_retried_tasks_build_and_build_1_do_not_collide(sqlite_store: Store, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    sh(repo, "init", "-q", "-b", "main")
    (repo / "base.txt").write_text("base\n")
    sh(repo, "add", "base.txt")
    sh(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    marks = tmp_path / "marks"
    marks.mkdir()

    def flaky(task_id: str) -> str:
        # The first attempt leaves work on its branch and fails; the second succeeds.
        return (
            f"if [ -e {marks}/{task_id} ]; then echo done > {task_id}.txt; "
            f"else touch {marks}/{task_id}; echo first > {task_id}.txt; exit 1; fi"
        )

    plan = Plan(
        name="retries",
        tasks=tuple(
            TaskSpec(id=task_id, isolation="worktree", command=flaky(task_id), max_attempts=3)
            for task_id in ("build", "build.1", "build.1.1")
        ),
    )
    orchestrator = Orchestrator(
        sqlite_store, plan, RunConfig(agents=3, workdir=str(repo), retry_base_s=0.1, keep_branches=True)
    )
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    run = orchestrator.run_id
    for task_id in ("build", "build.1", "build.1.1"):
        assert state.tasks[task_id].state is TaskState.SUCCEEDED
        assert state.tasks[task_id].attempts == 2
        assert sh(repo, "show", f"maos/{run}:{task_id}.txt") == "done\n"
    # Each first attempt's branch is kept under a name no task id can have.
    branches = sh(repo, "branch", "--list", f"maos/tasks/{run}/*", "--format=%(refname:short)").split()
    assert sorted(branches) == sorted(
        f"maos/tasks/{run}/{name}"
        for name in ("build", "build@1", "build.1", "build.1@1", "build.1.1", "build.1.1@1")
    )


async def test_a_task_that_prints_nothing_leaves_no_file_and_its_children_read_empty(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """No output, no file (a create per silent task was most of a hand-off's file work); the
    tasks after it still get a file they can read for it: /dev/null."""
    plan = Plan(
        name="silent",
        tasks=(
            TaskSpec(id="quiet", command="true"),
            TaskSpec(id="loud", command="printf 'from loud'"),
            TaskSpec(
                id="child",
                command='echo "$MAOS_INPUTS"',
                depends_on=("quiet", "loud"),
            ),
        ),
    )
    state = await Orchestrator(sqlite_store, plan, RunConfig(agents=2, workdir=str(tmp_path))).run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert state.tasks["quiet"].output_path == ""
    outputs = Path(state.tasks["loud"].output_path).parent
    assert sorted(path.name for path in outputs.iterdir() if path.name.startswith("quiet")) == []
    assert Path(state.tasks["loud"].output_path).read_text() == "from loud"
    inputs_line = Path(state.tasks["child"].output_path).read_text().splitlines()[0]
    inputs = json.loads(inputs_line)
    assert inputs == {"quiet": os.devnull, "loud": state.tasks["loud"].output_path}
