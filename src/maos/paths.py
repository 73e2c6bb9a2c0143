"""The ``.maos/`` folder: where MAOS keeps what it writes in a working directory.

One function per place, so that the layout is read here and nowhere else::

    <workdir>/.maos/                    0700 (maos.filemodes), a .gitignore that ignores it all
        maos.db                         the default SQLite store          store_file()
        key                             the checkpoint key                KEY_NAME
        audit.jsonl                     the default audit sink            audit_file()
        checkpoints/                    the default checkpoint location   checkpoints_dir()
        plans/                          plans the model planner wrote     plans_dir()
        runs/<run>/                     one run's files                   run_dir()
            REPORT.md                                                     report_file()
            outputs/                    each attempt's files              outputs_dir()
                <task>.<attempt>.out    its output if any (.err its stderr if any,
                                        .jsonl a Claude transcript)       attempt_file()
                judge/                  a consensus judge's attempts      judge_dir()
            prompts/<task>.<attempt>.prompt, .inputs.json
                                        what did not fit in the environment   prompts_dir()
            inputs/<parent>.out         parents' outputs fetched from the store   input_file()
            agents/<agent>/claude/      the agent's CLAUDE_CONFIG_DIR     claude_config_dir()
            agents/<agent>/warm/        a warm agent's pool files         warm_files_dir()
    <repo>/.maos/worktrees/<run>/       the run's git worktrees           run_worktrees()
        _integration/                   the integration branch's          integration_worktree()
        <task>/                         a task's                          task_worktree()
        _warm/<agent>/                  a warm agent's own                warm_worktree()

Worktrees go in the git repository's root (which may hold the working directory). A folder
handed to a component is that component's inside (the Claude Code CLI's files in its config
folder, the pool's files in its warm folder). Paths are computed, not created: the writers
create what they write with ``maos.filemodes`` (folders 0700, files 0600), and
``make_state_dir`` makes ``.maos/`` itself. ``.maos`` must be a real folder, never a link: a
project cloned with ``.maos -> elsewhere`` would have MAOS write its store and key there, and
make that folder 0700 (``state_dir`` refuses it).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from maos.errors import MaosError
from maos.filemodes import DIR_MODE, private_dir, write_private

__all__ = [
    "KEY_NAME",
    "STATE_DIR_NAME",
    "agent_dir",
    "attempt_file",
    "audit_file",
    "checkpoints_dir",
    "claude_config_dir",
    "in_task_worktree",
    "input_file",
    "inputs_dir",
    "integration_worktree",
    "judge_dir",
    "lasting_warm_dir",
    "make_state_dir",
    "outputs_dir",
    "plans_dir",
    "prompts_dir",
    "report_file",
    "run_dir",
    "run_worktrees",
    "state_dir",
    "store_file",
    "task_worktree",
    "warm_files_dir",
    "warm_worktree",
    "worktrees_dir",
]

STATE_DIR_NAME = ".maos"
KEY_NAME = "key"
"""The key file's name in a state folder (``maos.security.load_or_create_key``)."""
_STORE_NAME = "maos.db"
_AUDIT_NAME = "audit.jsonl"
_WORKTREES = "worktrees"
_INTEGRATION = "_integration"
_WARM = "_warm"  # task ids cannot start with "_": no task's worktree is named like these two
_IGNORE_ALL = "# MAOS's state: never commit it (it holds the checkpoint key)\n*\n"
# An agent id as a folder name: the model's ids are safe already (``TASK_ID_PATTERN``); this
# keeps any other from leaving ``agents/`` (no "/", no "." or ".." of its own).
_UNSAFE_NAME_RE = re.compile(r"[^A-Za-z0-9_.@+-]")


def state_dir(workdir: str | Path) -> Path:
    """``<workdir>/.maos``; ``MaosError`` if it is a link (see the module docstring)."""
    path = Path(workdir) / STATE_DIR_NAME
    _not_a_link(os.path.abspath(path))
    return path


@functools.lru_cache(maxsize=64)
def _not_a_link(path: str) -> None:
    """Raise unless ``path`` is no link; looked at once per folder and process (a refusal is
    not remembered): every path of a run's files is computed from ``state_dir``, several
    times per task."""
    if os.path.islink(path):
        raise MaosError(
            f"{path} is a link to {os.path.realpath(path)}: MAOS keeps its store and key only in a "
            "real folder of the working directory; remove the link (MAOS makes the folder)"
        )


def make_state_dir(workdir: str | Path) -> Path:
    """``state_dir(workdir)``, made if missing and kept out of git whatever the run: 0700 (also
    one an older MAOS made looser: it holds the store and the key) with a ``.gitignore`` that
    ignores everything, itself included."""
    path = private_dir(state_dir(workdir))
    os.chmod(path, DIR_MODE)
    ignore = path / ".gitignore"
    if not ignore.exists():
        write_private(ignore, _IGNORE_ALL)
    return path


def store_file(workdir: str | Path) -> Path:
    """The default SQLite store: ``.maos/maos.db``."""
    return state_dir(workdir) / _STORE_NAME


def audit_file(workdir: str | Path) -> Path:
    """The default audit sink: ``.maos/audit.jsonl``."""
    return state_dir(workdir) / _AUDIT_NAME


def checkpoints_dir(workdir: str | Path) -> Path:
    """The default checkpoint location: ``.maos/checkpoints``."""
    return state_dir(workdir) / "checkpoints"


def plans_dir(workdir: str | Path) -> Path:
    """Where ``maos run "TASK"`` keeps the plans the model planner wrote: ``.maos/plans``."""
    return state_dir(workdir) / "plans"


def run_dir(workdir: str | Path, run_id: str) -> Path:
    """One run's folder: ``.maos/runs/<run>``."""
    return state_dir(workdir) / "runs" / run_id


def report_file(workdir: str | Path, run_id: str) -> Path:
    return run_dir(workdir, run_id) / "REPORT.md"


def outputs_dir(workdir: str | Path, run_id: str) -> Path:
    """Where the run's attempts write (an ``AgentJob``'s ``output_dir``)."""
    return run_dir(workdir, run_id) / "outputs"


def prompts_dir(workdir: str | Path, run_id: str) -> Path:
    """Prompts and input lists too large for an agent's environment (``maos.agents.task_env``)."""
    return run_dir(workdir, run_id) / "prompts"


def inputs_dir(workdir: str | Path, run_id: str) -> Path:
    """Parents' outputs this host fetched from the store (a worker on another machine)."""
    return run_dir(workdir, run_id) / "inputs"


def input_file(workdir: str | Path, run_id: str, parent_id: str) -> Path:
    return inputs_dir(workdir, run_id) / f"{parent_id}.out"


def attempt_file(folder: Path, task_id: str, attempt: int, suffix: str) -> Path:
    """An attempt's file in ``folder``: ``<task>.<attempt><suffix>``. In ``outputs_dir``:
    ``.out`` (its output), ``.err`` (its stderr), ``.jsonl`` (a Claude transcript); in
    ``prompts_dir``: ``.prompt`` and ``.inputs.json``."""
    return folder / f"{task_id}.{attempt}{suffix}"


def judge_dir(outputs: Path) -> Path:
    """A consensus judge's outputs folder, inside the task's."""
    return outputs / "judge"


def agent_dir(outputs: Path, agent_id: str) -> Path:
    """One agent's files beside the outputs folder ``outputs`` (an ``AgentJob``'s
    ``output_dir``): ``.maos/runs/<run>/agents/<agent>``; a judge's (``judge_dir``) are in
    ``outputs/agents/<agent>``."""
    return outputs.parent / "agents" / (_UNSAFE_NAME_RE.sub("_", agent_id).lstrip(".") or "_")


def claude_config_dir(outputs: Path, agent_id: str) -> Path:
    """The agent's ``CLAUDE_CONFIG_DIR``: kept after the run for ``--resume`` and for reading
    the CLI's own transcripts (``projects/<cwd>/<session>.jsonl``)."""
    return agent_dir(outputs, agent_id) / "claude"


def warm_files_dir(outputs: Path, agent_id: str) -> Path:
    """A warm agent's pool files (``maos.agents.pool``): its task file, the env files the CLI
    sources, each warm process's log."""
    return agent_dir(outputs, agent_id) / "warm"


def lasting_warm_dir(workdir: str | Path, host: str) -> Path:
    """The files of the warm agents of ``maos worker --warm`` / ``maos serve`` named ``host``
    (removed when it stops): ``<workdir>/.maos/warm/<host>``. ``host`` is one plain name
    (the CLI checks ``--name``): never a path out of ``.maos/warm``."""
    if not host or host in (".", "..") or "/" in host or "\0" in host:
        raise ValueError(f"{host!r} is not a worker name")
    return state_dir(workdir) / "warm" / host


def worktrees_dir(repo: str | Path) -> Path:
    """All runs' git worktrees in ``repo``: ``<repo>/.maos/worktrees`` (``maos clean``)."""
    return state_dir(repo) / _WORKTREES


def run_worktrees(repo: str | Path, run_id: str) -> Path:
    return worktrees_dir(repo) / run_id


def integration_worktree(repo: str | Path, run_id: str) -> Path:
    return run_worktrees(repo, run_id) / _INTEGRATION


def task_worktree(repo: str | Path, run_id: str, task_id: str) -> Path:
    return run_worktrees(repo, run_id) / task_id


def warm_worktree(repo: str | Path, run_id: str, agent_id: str) -> Path:
    """A warm agent's persistent worktree; each task is checked out into it."""
    return run_worktrees(repo, run_id) / _WARM / agent_id


def in_task_worktree(path: Path, run_id: str) -> bool:
    """Whether ``path`` is one of run ``run_id``'s task worktrees (as ``task_worktree`` names
    them), whichever repository it is in; not its integration worktree."""
    return (
        path.parent.name == run_id
        and path.parent.parent.parts[-2:] == (STATE_DIR_NAME, _WORKTREES)
        and not path.name.startswith("_")
    )
