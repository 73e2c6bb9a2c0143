"""The per-task environment variables of an agent, each small enough for ``execve``.

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

import json
import os
from collections.abc import Mapping
from pathlib import Path

from maos.filemodes import private_dir

__all__ = ["MAX_ENV_VALUE_BYTES", "task_env"]

MAX_ENV_VALUE_BYTES = 32 * 1024


def task_env(
    folder: Path, task_id: str, attempt: int, prompt: str, inputs: Mapping[str, str], *, command: bool
) -> dict[str, str]:
    """``MAOS_TASK`` / ``MAOS_PROMPT_FILE`` and ``MAOS_INPUTS`` / ``MAOS_INPUTS_FILE`` for one
    attempt; the files are written under ``folder``."""
    env: dict[str, str] = {}
    if len(prompt.encode()) <= MAX_ENV_VALUE_BYTES:
        env["MAOS_TASK"] = prompt
    if command or "MAOS_TASK" not in env:
        env["MAOS_PROMPT_FILE"] = str(_write_private(folder / f"{task_id}.{attempt}.prompt", prompt))
    inputs_json = json.dumps(dict(inputs))
    if len(inputs_json.encode()) <= MAX_ENV_VALUE_BYTES:
        env["MAOS_INPUTS"] = inputs_json
    else:
        env["MAOS_INPUTS_FILE"] = str(
            _write_private(folder / f"{task_id}.{attempt}.inputs.json", inputs_json)
        )
    return env


def _write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only, atomically."""
    private_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
    with open(fd, "w", encoding="utf-8", closefd=True) as file:
        file.write(text)
    os.chmod(tmp, 0o600)  # an older file of that name may have had other bits
    tmp.replace(path)
    return path.resolve()
