"""The ``MAOS_*`` variables of an agent's environment: the one place they are named and built.

``identity_env`` (run, agent, store, door token) and ``attempt_env`` (task, attempt, task
token) are what the door reads (``REQUIRED_ENV``); the worker, the warm pool and the MCP
server build agents' environments from them, never from hand-written names.

The per-task variables are each small enough for ``execve``:

Linux refuses to start a process when one environment string is over 128 KiB
(``MAX_ARG_STRLEN``) or all of them and the arguments are over about 2 MiB ("Argument list
too long"). A prompt or a list of inputs can be larger, so:

- ``MAOS_TASK`` holds the prompt when it is at most ``MAX_ENV_VALUE_BYTES``; else it is not
  set. ``MAOS_PROMPT_FILE`` names a file (mode 0600) holding the whole prompt: always for
  command tasks, and for any task whose prompt is too long for ``MAOS_TASK``. (Not always
  for Claude Code tasks: a warm agent's environment is fixed when it starts, see
  ``maos.agents.pool``; their prompt is their first message anyway.) The prompt is also
  on the agent's stdin, whatever its size.
- ``MAOS_INPUTS`` holds the JSON map of parent outputs when it is at most
  ``MAX_ENV_VALUE_BYTES``; else ``MAOS_INPUTS_FILE`` names a file with that JSON.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from maos.filemodes import open_private, private_dir
from maos.paths import attempt_file
from maos.store import sqlite_path

__all__ = [
    "ENV_AGENT_ID",
    "ENV_ATTEMPT",
    "ENV_INPUTS",
    "ENV_INPUTS_FILE",
    "ENV_PROMPT_FILE",
    "ENV_RUN_ID",
    "ENV_STORE",
    "ENV_TASK",
    "ENV_TASK_FILE",
    "ENV_TASK_ID",
    "ENV_TASK_TOKEN",
    "ENV_TOKEN",
    "MAX_ENV_VALUE_BYTES",
    "PER_TASK_ENV",
    "REQUIRED_ENV",
    "agent_path",
    "agent_store_url",
    "attempt_env",
    "identity_env",
    "task_env",
]

ENV_RUN_ID: Final = "MAOS_RUN_ID"
ENV_AGENT_ID: Final = "MAOS_AGENT_ID"
ENV_TASK_ID: Final = "MAOS_TASK_ID"
ENV_TOKEN: Final = "MAOS_AGENT_TOKEN"
ENV_STORE: Final = "MAOS_STORE"
REQUIRED_ENV: Final = (ENV_RUN_ID, ENV_AGENT_ID, ENV_TASK_ID, ENV_TOKEN, ENV_STORE)
"""What the door reads from an agent's environment; MAOS sets all of them for its agents."""
ENV_TASK_FILE: Final = "MAOS_TASK_FILE"
"""Optional: a file holding the agent's current task id and task token (one per line), read
at every door call instead of ``MAOS_TASK_ID`` and ``MAOS_TASK_TOKEN``. Set for warm agents
(``maos.agents.pool``), whose process and MCP server serve one task after another."""
ENV_TASK_TOKEN: Final = "MAOS_TASK_TOKEN"
"""Binds the agent to one attempt of its task and carries its grants (``maos.security``);
required unless ``MAOS_TASK_FILE`` is set."""
ENV_ATTEMPT: Final = "MAOS_ATTEMPT"
ENV_TASK: Final = "MAOS_TASK"
ENV_PROMPT_FILE: Final = "MAOS_PROMPT_FILE"
ENV_INPUTS: Final = "MAOS_INPUTS"
ENV_INPUTS_FILE: Final = "MAOS_INPUTS_FILE"
PER_TASK_ENV: Final = (
    ENV_TASK_ID,
    ENV_TASK_TOKEN,
    ENV_ATTEMPT,
    ENV_TASK,
    ENV_PROMPT_FILE,
    ENV_INPUTS,
    ENV_INPUTS_FILE,
)
"""The variables that change per task: not in a warm agent's environment (``maos.agents.pool``)."""

MAX_ENV_VALUE_BYTES = 32 * 1024


def identity_env(*, run_id: str, agent_id: str, store_url: str, agent_token: str) -> dict[str, str]:
    """Who the agent is and where its door is: the run, the agent, the store, its token."""
    return {ENV_RUN_ID: run_id, ENV_AGENT_ID: agent_id, ENV_STORE: store_url, ENV_TOKEN: agent_token}


def attempt_env(*, task_id: str, attempt: int, task_token: str) -> dict[str, str]:
    """Which attempt of which task it works on, and the token that binds it to that attempt."""
    return {ENV_TASK_ID: task_id, ENV_ATTEMPT: str(attempt), ENV_TASK_TOKEN: task_token}


def task_env(
    folder: Path, task_id: str, attempt: int, prompt: str, inputs: Mapping[str, str], *, command: bool
) -> dict[str, str]:
    """``MAOS_TASK`` / ``MAOS_PROMPT_FILE`` and ``MAOS_INPUTS`` / ``MAOS_INPUTS_FILE`` for one
    attempt; the files are written under ``folder``."""
    env: dict[str, str] = {}
    if len(prompt.encode()) <= MAX_ENV_VALUE_BYTES:
        env[ENV_TASK] = prompt
    if command or ENV_TASK not in env:
        # an empty prompt needs no file of its own: one fewer create per hand-off
        env[ENV_PROMPT_FILE] = (
            str(_write_attempt_file(attempt_file(folder, task_id, attempt, ".prompt"), prompt))
            if prompt
            else os.devnull
        )
    inputs_json = json.dumps(dict(inputs))
    if len(inputs_json.encode()) <= MAX_ENV_VALUE_BYTES:
        env[ENV_INPUTS] = inputs_json
    else:
        path = attempt_file(folder, task_id, attempt, ".inputs.json")
        env[ENV_INPUTS_FILE] = str(_write_attempt_file(path, inputs_json))
    return env


def _write_attempt_file(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (0600, in a 0700 folder); its absolute path. Written in
    place, not through a temporary file and a rename: the file is its attempt's own, nothing
    reads it before the agent starts, and on a slow file system each metadata operation is a
    visible part of a hand-off (a create measured up to 1.3 ms inside a run on the 2-core VM;
    ADR 0018)."""
    private_dir(path.parent)
    path = path.absolute()
    with open_private(path, "w") as file:
        file.write(text)
    return path


def agent_store_url(url: str, cwd: Path | None = None) -> str:
    """``url`` as an agent should get it: a relative SQLite path made absolute, since agents
    run in other directories (the run's workdir, a git worktree) than the process that
    opened the store."""
    if not url.startswith("sqlite:"):
        return url
    return f"sqlite:///{sqlite_path(url, cwd)}"


@functools.lru_cache(maxsize=8)
def agent_path(path: str | None) -> str | None:
    """``PATH`` for an agent so that its scripts find ``maos``: ``path`` with the directory of
    this interpreter's ``maos`` script in front when ``path`` does not reach one (MAOS run
    as ``.venv/bin/python -m maos`` without the venv activated); None if nothing to add.
    Remembered per ``path``: a lookup is a few dozen ``stat`` calls, and it was a tenth of a
    hand-off's cost in a chain of no-op tasks."""
    if shutil.which("maos", path=path) is not None:
        return None
    scripts = Path(sys.executable).parent
    if shutil.which("maos", path=str(scripts)) is None:
        return None
    return str(scripts) if not path else f"{scripts}{os.pathsep}{path}"
