"""Who an agent says it is: the identity its environment carries, and the store it names.

MAOS starts every agent with its run, agent and task ids, its tokens and its store URL in
``MAOS_*`` variables (``maos.agents.task_env`` names and builds them). ``AgentIdentity``
reads them back in the agent's own process (``maos state``, ``maos msg``, the ``maos mcp``
server) and ``open_agent_store`` opens the store they name; the door (``maos.door``) then
checks the tokens. Nothing here is trusted yet: an identity is a claim.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from maos.agents.task_env import (
    ENV_AGENT_ID,
    ENV_RUN_ID,
    ENV_STORE,
    ENV_TASK_FILE,
    ENV_TASK_ID,
    ENV_TASK_TOKEN,
    ENV_TOKEN,
    REQUIRED_ENV,
)
from maos.errors import DoorError, StoreError
from maos.store import check_store_url, open_store, sqlite_path
from maos.store.base import Store

__all__ = ["ID_RE", "ID_RULE", "AgentIdentity", "open_agent_store"]

ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
"""A run, agent or task id as an agent may name it."""
ID_RULE: Final = "1-128 characters of letters, digits and '_.@-', starting with a letter or digit"


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Who an agent says it is: run, agent, task, token and store (``MAOS_*`` variables)."""

    run_id: str
    agent_id: str
    task_id: str
    token: str
    store_url: str
    task_file: str = ""  # MAOS_TASK_FILE: the current task id is read from it (warm agents)
    task_token: str = ""  # MAOS_TASK_TOKEN: the attempt and grants (cold agents)

    def __repr__(self) -> str:  # never print the token
        return (
            f"AgentIdentity(run_id={self.run_id!r}, agent_id={self.agent_id!r}, "
            f"task_id={self.task_id!r}, store_url={self.store_url!r})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> AgentIdentity:
        """Read the identity; ``DoorError`` names the first missing or malformed variable."""
        values: dict[str, str] = {}
        for name in REQUIRED_ENV:
            value = env.get(name, "").strip()
            if not value:
                raise DoorError(
                    f"{name} is not set: the door acts for the agent named by {', '.join(REQUIRED_ENV)}, "
                    "which MAOS sets for every agent it starts"
                )
            values[name] = value
        for name in (ENV_RUN_ID, ENV_AGENT_ID, ENV_TASK_ID):
            if ID_RE.fullmatch(values[name]) is None:
                raise DoorError(f"{name}={values[name][:80]!r} is not valid: expected {ID_RULE}")
        task_file = env.get(ENV_TASK_FILE, "").strip()
        task_token = env.get(ENV_TASK_TOKEN, "").strip()
        if not task_file and not task_token:
            raise DoorError(
                f"{ENV_TASK_TOKEN} is not set: it binds the agent to its task's attempt, and MAOS "
                f"sets it for every agent it starts (or {ENV_TASK_FILE} for a warm agent)"
            )
        return cls(
            run_id=values[ENV_RUN_ID],
            agent_id=values[ENV_AGENT_ID],
            task_id=values[ENV_TASK_ID],
            token=values[ENV_TOKEN],
            store_url=values[ENV_STORE],
            task_file=task_file,
            task_token=task_token,
        )

    def env(self) -> dict[str, str]:
        """The ``MAOS_*`` variables that give a process this identity."""
        return {
            ENV_RUN_ID: self.run_id,
            ENV_AGENT_ID: self.agent_id,
            ENV_TASK_ID: self.task_id,
            ENV_TOKEN: self.token,
            ENV_STORE: self.store_url,
            **({ENV_TASK_FILE: self.task_file} if self.task_file else {}),
            **({ENV_TASK_TOKEN: self.task_token} if self.task_token else {}),
        }


async def open_agent_store(identity: AgentIdentity) -> Store:
    """Open the store named by the agent's ``MAOS_STORE``. A malformed URL, or a SQLite file
    that does not exist or is no regular file (a FIFO would block the open), is an error
    (``DoorError``), not a new empty store: it means the variable is wrong."""
    url = identity.store_url
    try:
        check_store_url(url)
    except StoreError as exc:
        raise DoorError(f"{ENV_STORE}: {exc}") from None
    if url.startswith("sqlite:") and not sqlite_path(url).exists():
        raise DoorError(f"{ENV_STORE}={url}: no such database file ({sqlite_path(url)})")
    return await open_store(url)
