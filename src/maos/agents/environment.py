"""The environment of every process MAOS starts for an agent: an allowlist, not a copy.

Agents are code that MAOS does not trust with the orchestrator's secrets. Every spawn (command
agents, Claude Code agents cold or warm, consensus judges, the planner's CLI, the agent
guard) builds its environment with ``agent_environment``, which keeps of this process's
environment only:

- the basics: ``PATH``, ``HOME``, ``USER``, ``LOGNAME``, ``SHELL``, ``TERM``, ``LANG``,
  ``LANGUAGE``, ``LC_*``, ``TZ``, ``TMPDIR``;
- for Claude Code (``claude=True``) what the CLI needs to reach a model: ``ANTHROPIC_*``,
  ``CLAUDE_CODE_*`` (``CLAUDE_CODE_OAUTH_TOKEN``, ``CLAUDE_CODE_USE_BEDROCK/VERTEX/FOUNDRY``
  …), proxies (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY`` in either case) and CA bundles
  (``NODE_EXTRA_CA_CERTS``, ``SSL_CERT_FILE``, ``SSL_CERT_DIR``); ``AWS_*`` only with
  ``CLAUDE_CODE_USE_BEDROCK``, ``GOOGLE_*``, ``CLOUD_ML_REGION``, ``VERTEX_REGION_*`` and
  ``CLOUDSDK_*`` only with ``CLAUDE_CODE_USE_VERTEX``;
- the names the plan (a task's ``pass_env``) or ``maos run --pass-env`` gives (the worker
  copies them into ``AgentJob.env``: ``pass_through``);

and then adds the agent's own variables (``AgentJob.env``: ``MAOS_RUN_ID``, ``MAOS_TASK_ID``,
``MAOS_AGENT_ID``, ``MAOS_ATTEMPT``, ``MAOS_TASK``/``MAOS_PROMPT_FILE``,
``MAOS_INPUTS``/``MAOS_INPUTS_FILE``, ``MAOS_STORE``, ``MAOS_AGENT_TOKEN``,
``MAOS_TASK_TOKEN``, ``MAOS_TASK_FILE``, a ``PATH`` that finds ``maos``) and the runtime's
own (``CLAUDE_CONFIG_DIR`` …). ``MAOS_KEY``, ``MAOS_OLD_KEYS`` and ``MAOS_DASHBOARD_TOKEN``
never reach an agent, whoever names them (``NEVER_PASSED``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping

from maos.model import NEVER_PASSED_ENV

__all__ = ["BASE_ENV", "CLAUDE_ENV", "NEVER_PASSED", "agent_environment", "pass_through"]

NEVER_PASSED = frozenset(NEVER_PASSED_ENV)
"""The checkpoint keys and the dashboard token: no agent gets them, even when named."""
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LANGUAGE", "TZ", "TMPDIR")
_BASE_PREFIXES = ("LC_",)
CLAUDE_ENV = (
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
_CLAUDE_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_")
_BEDROCK_PREFIXES = ("AWS_",)
_VERTEX_ENV = ("CLOUD_ML_REGION",)
_VERTEX_PREFIXES = ("GOOGLE_", "VERTEX_REGION_", "CLOUDSDK_")


def _on(value: str | None) -> bool:
    return (value or "").lower() not in ("", "0", "false", "no")


@functools.lru_cache(maxsize=4096)
def _allowed(name: str, *, claude: bool, bedrock: bool, vertex: bool) -> bool:
    """Whether ``name`` may pass (remembered: asked for every variable at every agent start)."""
    if name in BASE_ENV or name.startswith(_BASE_PREFIXES):
        return True
    if not claude:
        return False
    if name in CLAUDE_ENV or name.startswith(_CLAUDE_PREFIXES):
        return True
    if bedrock and name.startswith(_BEDROCK_PREFIXES):
        return True
    return vertex and (name in _VERTEX_ENV or name.startswith(_VERTEX_PREFIXES))


def agent_environment(
    own: Mapping[str, str],
    *,
    claude: bool = False,
    extra: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """An agent's whole environment: the allowed part of ``base`` (default ``os.environ``),
    then ``extra`` (the runtime's own settings), then ``own`` (the job's variables, which
    win), without ``NEVER_PASSED``."""
    snapshot = _environ_snapshot() if base is None else None
    if snapshot is not None:
        env = dict(_allowed_part(snapshot, claude=claude))
    else:
        env = _allowed_of(os.environ if base is None else base, claude=claude)
    env.update(extra or {})
    env.update(own)
    for name in NEVER_PASSED:
        env.pop(name, None)
    return env


def _allowed_of(source: Mapping[str, str], *, claude: bool) -> dict[str, str]:
    bedrock = _on(source.get("CLAUDE_CODE_USE_BEDROCK"))
    vertex = _on(source.get("CLAUDE_CODE_USE_VERTEX"))
    return {
        name: value
        for name, value in source.items()
        if _allowed(name, claude=claude, bedrock=bedrock, vertex=vertex)
    }


_Snapshot = tuple[tuple[bytes, bytes], ...]


def _environ_snapshot() -> _Snapshot | None:
    """This process's environment as it is now, as a key (the raw pairs under ``os.environ``;
    None where there are none to take): read in C, where a walk of ``os.environ`` decodes
    every name and value in Python, a visible part of a short agent's start."""
    data = getattr(os.environ, "_data", None)
    return tuple(data.items()) if isinstance(data, dict) else None


@functools.lru_cache(maxsize=8)
def _allowed_part(snapshot: _Snapshot, *, claude: bool) -> dict[str, str]:
    """``_allowed_of`` the environment ``snapshot`` holds (remembered: the same environment at
    every agent start). Callers copy it."""
    return _allowed_of({os.fsdecode(name): os.fsdecode(value) for name, value in snapshot}, claude=claude)


def pass_through(names: Iterable[str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables ``names`` of ``base`` (default ``os.environ``) that are set, for
    ``AgentJob.env``; never ``NEVER_PASSED``."""
    source = os.environ if base is None else base
    wanted = (name for name in dict.fromkeys(names) if name not in NEVER_PASSED)
    return {name: source[name] for name in wanted if name in source}
