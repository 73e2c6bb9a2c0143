"""The words MAOS puts into an agent's conversation for the model server to read back.

Written by the Claude Code runtime (a cold agent: one CLI process per task), the warm pool
(one process, many tasks) and the planner; read by ``maos.modelserver.script``, which tells
by them whose request it answers and for which task (docs/model-server.md). Writers and
readers are side by side here, so that they cannot drift apart:

- **the agent marker**, ``MAOS_AGENT_ID=<agent>``: the first line of every system prompt MAOS
  appends to the CLI's (``--append-system-prompt``), the planner's included;
- **the task note**: a cold agent's appended system prompt names its one task on the next
  line, ``You are agent A of MAOS run R, working on task T (title), attempt N.``; a warm
  agent's (``warm_note``) names none;
- **the task message**: a warm agent gets each task as a user message that starts
  ``[MAOS task T (title), attempt N]``, then a blank line and the prompt;
- **the warm-up turn**: ``WARM_UP_MESSAGE``, which the server answers ``WARM_UP_REPLY`` itself.

Task text (a prompt, a title, a role's prompt) may hold any of these words. It never comes
before MAOS's own: the readers take the first agent marker and the task note only on the line
right after it, and a task message's header only at the very start of a user text. A conversation whose system
prompt names its task is a cold agent's: that task holds for the whole conversation, so a
prompt that starts like a task message, or reads like the warm-up turn, is only a prompt.
"""

from __future__ import annotations

import re

__all__ = [
    "WARM_UP_MESSAGE",
    "WARM_UP_REPLY",
    "agent_marker",
    "agent_named",
    "is_warm_up",
    "lasting_note",
    "task_message",
    "task_named",
    "task_note",
    "task_started",
    "warm_note",
]

WARM_UP_MESSAGE = "MAOS warm-up turn: no task yet. Reply with the single word: ready."
"""The user message of the warm pool's ``model`` primer (``maos.agents.primer``)."""
WARM_UP_REPLY = "ready"
"""What the model server answers to ``WARM_UP_MESSAGE``, before any rule of its script."""

# Agent ids are task-id shaped (``maos.model.TASK_ID_PATTERN``); a hand-written marker (the
# model server's docs) may use a few more characters.
_AGENT_ID = r"[A-Za-z0-9_.:@/+-]+"
_TASK_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_AGENT_MARKER_RE = re.compile(rf"MAOS_AGENT_ID=({_AGENT_ID})")
_TASK_NOTE_RE = re.compile(  # matched right after the agent marker
    rf"\nYou are agent {_AGENT_ID} of MAOS run [^\s,]+, working on task ({_TASK_ID})[ ,]"
)
_TASK_MESSAGE_RE = re.compile(rf"\A\s*\[MAOS task ({_TASK_ID})[ ,\]]")


def _titled(task_id: str, title: str) -> str:
    return f"{task_id} ({title})" if title else task_id


# --------------------------------------------------------------------------- writers


def agent_marker(agent_id: str) -> str:
    """The line that names the agent: the first of each system prompt MAOS appends."""
    return f"MAOS_AGENT_ID={agent_id}"


def task_note(*, agent_id: str, run_id: str, task_id: str, title: str, attempt: int) -> str:
    """A cold agent's appended system prompt: who it is and its one task."""
    return (
        f"{agent_marker(agent_id)}\n"
        f"You are agent {agent_id} of MAOS run {run_id}, working on task {_titled(task_id, title)}, "
        f"attempt {attempt}."
    )


def warm_note(*, agent_id: str, run_id: str) -> str:
    """A warm agent's appended system prompt: like ``task_note`` but naming no task."""
    return (
        f"{agent_marker(agent_id)}\n"
        f"You are agent {agent_id} of MAOS run {run_id}. You keep running between tasks: each "
        "user message is a new task, and its first line names the task and the attempt. Earlier "
        "messages of this conversation are your earlier tasks."
    )


def lasting_note() -> str:
    """The appended system prompt of a warm agent that outlives its runs (``maos worker
    --warm``): it names no agent and no run, since each task may be another's; its first
    line is the agent marker of its name for no one, ``MAOS_AGENT_ID=warm``."""
    return (
        f"{agent_marker('warm')}\n"
        "You are a MAOS agent that keeps running between tasks: each user message is a new task, "
        "and its first line names the task and the attempt. Your MAOS identity (run, agent, task) "
        "is in the MAOS_* variables of your Bash commands and changes from task to task."
    )


def task_message(*, task_id: str, title: str, attempt: int, prompt: str) -> str:
    """The user message that hands a task to a warm agent."""
    return f"[MAOS task {_titled(task_id, title)}, attempt {attempt}]\n\n{prompt}"


# --------------------------------------------------------------------------- readers


def agent_named(system_text: str) -> str | None:
    """The agent of the first agent marker in a system prompt (anywhere in it), else None."""
    found = _AGENT_MARKER_RE.search(system_text)
    return found.group(1) if found else None


def task_named(system_text: str) -> str | None:
    """The task of a cold agent's task note: the line right after the first agent marker;
    else None (a warm agent's note names none)."""
    marker = _AGENT_MARKER_RE.search(system_text)
    found = _TASK_NOTE_RE.match(system_text, marker.end()) if marker else None
    return found.group(1) if found else None


def task_started(user_text: str) -> str | None:
    """The task of a task message (a user text that starts with its header), else None."""
    found = _TASK_MESSAGE_RE.match(user_text)
    return found.group(1) if found else None


def is_warm_up(user_text: str) -> bool:
    return user_text.strip() == WARM_UP_MESSAGE
