"""Declared teams: which agents a run has, what each can do, and what no agent can do.

A team is a list of ``TeamMember`` entries — a plan's ``agents:``, a ``--team FILE``, or
``maos run --agent ROLE[:N]`` — each ``count`` agents of one role. ``build_team`` turns them
into the ``AgentSpec``s the scheduler assigns to, with ids ``<id>`` (count 1) or
``<id>-1 .. <id>-N``. Without a team a run has ``--agents N`` generalists
(``maos.orchestrator.default_agents``).

**Capabilities.** An entry's ``capabilities``, when given, are the agents' capabilities.
Otherwise they are derived from the role's definition file (``.claude/agents/<role>.md``):

- from its ``tools`` (omitted: every tool): ``read`` (Read, Grep, Glob, LS, NotebookRead),
  ``edit`` (Write, Edit, MultiEdit, NotebookEdit), ``shell`` (Bash), ``web`` (WebFetch,
  WebSearch); a role without a file (``general`` and any other) has every tool;
- from words of its ``description``: ``review``, ``test``, ``code``, ``docs``, ``design``,
  ``research``, ``security``, ``debug``, ``refactor``, ``data`` (``DESCRIPTION_WORDS`` lists
  the words of each).

A task's ``capabilities`` are a hard requirement (``maos.scheduler.decide``): ``team_problems``
names every task no agent of a team can take, which ``maos plan validate --team`` and
``maos run`` refuse with exit code 2 before anything runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import ValidationError

from maos.agents.roles import RoleCatalog
from maos.errors import PlanError
from maos.model import (
    AGENT_ID_MAX_CHARS,
    MAX_TEAM_AGENTS,
    TASK_ID_PATTERN,
    AgentRole,
    AgentSpec,
    Plan,
    TeamMember,
)
from maos.scheduler import takes_runtime

_AGENT_ID_RE = re.compile(TASK_ID_PATTERN)

__all__ = [
    "DESCRIPTION_WORDS",
    "TOOL_CAPABILITIES",
    "build_team",
    "describe_team",
    "load_team_file",
    "parse_agent_option",
    "plan_team",
    "propose_team",
    "role_capabilities",
    "team_problems",
    "why_no_agent",
]

TOOL_CAPABILITIES: dict[str, str] = {
    "Read": "read",
    "Grep": "read",
    "Glob": "read",
    "LS": "read",
    "NotebookRead": "read",
    "Write": "edit",
    "Edit": "edit",
    "MultiEdit": "edit",
    "NotebookEdit": "edit",
    "Bash": "shell",
    "WebFetch": "web",
    "WebSearch": "web",
}
"""Claude Code tool -> the capability it gives."""
ALL_TOOL_CAPABILITIES = tuple(sorted(set(TOOL_CAPABILITIES.values())))

DESCRIPTION_WORDS: dict[str, tuple[str, ...]] = {
    "review": ("review", "reviews", "reviewer", "reviewing", "reviewed"),
    "test": ("test", "tests", "tester", "testing", "qa"),
    "code": (
        "code",
        "coding",
        "coder",
        "implement",
        "implements",
        "implementing",
        "implementation",
        "programmer",
    ),
    "docs": ("docs", "doc", "documentation", "document", "documents", "writer"),
    "design": ("design", "designs", "designer", "architect", "architecture"),
    "research": ("research", "researcher", "researches", "investigate", "investigates"),
    "security": ("security", "secure", "vulnerability", "vulnerabilities", "audit", "audits"),
    "debug": ("debug", "debugs", "debugger", "debugging", "bug", "bugs", "fix", "fixes"),
    "refactor": ("refactor", "refactors", "refactoring"),
    "data": ("data", "sql", "database", "databases"),
}
"""Capability -> the words of a role's description that give it (case-insensitive, whole words)."""
_WORD_RE = re.compile(r"[a-z]+")
_CAPABILITY_OF_WORD = {word: name for name, words in DESCRIPTION_WORDS.items() for word in words}


def role_capabilities(role: AgentRole | None) -> tuple[str, ...]:
    """The default capabilities of an agent of ``role`` (None: no definition file), sorted."""
    if role is None or role.tools is None:
        found = set(ALL_TOOL_CAPABILITIES)
    else:
        found = {
            TOOL_CAPABILITIES[base]
            for tool in role.tools
            if (base := tool.split("(", 1)[0].strip()) in TOOL_CAPABILITIES
        }
    if role is not None:
        words = _WORD_RE.findall(role.description.lower())
        found.update(_CAPABILITY_OF_WORD[word] for word in words if word in _CAPABILITY_OF_WORD)
    return tuple(sorted(found))


def build_team(
    members: Sequence[TeamMember], roles: RoleCatalog, source: str = "agents"
) -> tuple[AgentSpec, ...]:
    """The agents of ``members``, in order; ``PlanError`` naming an entry whose agent ids
    clash with another's, or a team larger than ``MAX_TEAM_AGENTS``."""
    agents: list[AgentSpec] = []
    first: dict[str, int] = {}
    problems: list[str] = []
    for number, member in enumerate(members):
        role = roles.get(member.role)
        capabilities = member.capabilities if member.capabilities is not None else role_capabilities(role)
        for agent_id in member.agent_ids:
            other = first.setdefault(agent_id, number)
            if other != number:
                problems.append(
                    f"{source}[{number}]: field 'id': agent id {agent_id!r} is also an agent of "
                    f"{source}[{other}]; give one of them another 'id'"
                )
                break
            agents.append(
                AgentSpec(
                    id=agent_id,
                    role=member.role,
                    runtime=member.runtime,
                    capabilities=tuple(dict.fromkeys(capabilities)),
                    model=member.model,
                )
            )
    if len(agents) > MAX_TEAM_AGENTS:
        problems.append(f"{source}: {len(agents)} agents, more than the limit of {MAX_TEAM_AGENTS}")
    if problems:
        raise PlanError(problems)
    return tuple(agents)


def plan_team(plan: Plan, workdir: Path, roles: RoleCatalog | None = None) -> tuple[AgentSpec, ...]:
    """The agents of the plan's ``agents:`` (roles from ``workdir``'s and the user's
    ``.claude/agents``), or ``()`` when it declares none."""
    if not plan.agents:
        return ()
    if roles is None:
        from maos.agents.roles import load_roles

        roles = load_roles(workdir)
    return build_team(plan.agents, roles)


def why_no_agent(required: Iterable[str], runtime: str, agents: Sequence[AgentSpec]) -> str | None:
    """Why no agent of ``agents`` may take a task requiring ``required`` capabilities on
    ``runtime``, or None when one may (the hard filter of ``maos.scheduler.decide``)."""
    needed = frozenset(required)
    if not agents:
        return "the run has no agents"
    runs = [agent for agent in agents if takes_runtime(agent, runtime)]
    if not runs:
        kinds = sorted({agent.runtime or "any" for agent in agents})
        return f"no agent takes {runtime} tasks (the agents' runtimes: {', '.join(kinds)})"
    if any(needed <= set(agent.capabilities) for agent in runs):
        return None
    have: set[str] = set().union(*(agent.capabilities for agent in runs))
    missing = sorted(needed - have)
    if missing:
        noun = "capability" if len(missing) == 1 else "capabilities"
        return f"no agent has {noun} {', '.join(repr(name) for name in missing)}"
    return f"no single agent has all of {', '.join(repr(name) for name in sorted(needed))}"


def team_problems(plan: Plan, agents: Sequence[AgentSpec], source: str) -> list[str]:
    """One line per task of ``plan`` that no agent of ``agents`` can take, naming the task,
    the field and what is missing (``maos plan validate --team``, ``maos run``)."""
    from maos.consensus import expand_replicas

    problems: list[str] = []
    verdicts: dict[tuple[frozenset[str], str], str | None] = {}
    index_of = {task.id: number for number, task in enumerate(plan.tasks)}
    for task in expand_replicas(plan).tasks:
        key = (frozenset(task.capabilities), task.runtime)
        if key not in verdicts:
            verdicts[key] = why_no_agent(task.capabilities, task.runtime, agents)
        reason = verdicts[key]
        if reason is None:
            continue
        name = task.replica_of or task.id
        if task.replica_of is not None and any(
            line.startswith(f"{source}: task {name!r} ") for line in problems
        ):
            continue  # one line per planned task, not one per replica
        field = "capabilities" if "capabilit" in reason else "command"
        problems.append(
            f"{source}: task {name!r} (tasks[{index_of.get(name, '?')}]): field {field!r}: {reason} "
            f"(team: {describe_team(agents)})"
        )
    return problems


def describe_team(agents: Sequence[AgentSpec]) -> str:
    """``reviewer (read, review), coder-1..3 (edit, read, shell)``: agents grouped by role."""
    groups: dict[tuple[str, tuple[str, ...], str | None], list[str]] = {}
    for agent in agents:
        groups.setdefault((agent.role, tuple(sorted(agent.capabilities)), agent.runtime), []).append(agent.id)
    parts: list[str] = []
    for (_, capabilities, runtime), ids in groups.items():
        shown = ids[0] if len(ids) == 1 else f"{ids[0]}..{ids[-1].rsplit('-', 1)[-1]}"
        if len(ids) > 1 and not all(item.rsplit("-", 1)[0] == ids[0].rsplit("-", 1)[0] for item in ids):
            shown = ", ".join(ids)
        what = ", ".join(capabilities) or "no capabilities"
        parts.append(f"{shown} ({what}{'; ' + runtime + ' only' if runtime else ''})")
    return "; ".join(parts) or "no agents"


# --------------------------------------------------------------------------- the CLI's forms

_AGENT_OPTION_RE = re.compile(r"^(?P<role>[^:]+)(?::(?P<count>[0-9]+))?$")


def parse_agent_option(text: str) -> TeamMember:
    """``--agent ROLE[:N]``: N agents (default 1) of ROLE; ``ValueError`` saying what is wrong."""
    shown = repr(text) if len(text) <= 80 else f"{text[:77]!r}..."
    match = _AGENT_OPTION_RE.match(text.strip())
    if match is None:
        raise ValueError(f"expected ROLE or ROLE:N (e.g. reviewer or coder:3), got {shown}")
    count = int(match.group("count") or 1)
    try:
        role = match.group("role").strip()
        return TeamMember(id=_member_id(role, set()), role=role, count=count)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = str(problem["loc"][0]) if problem["loc"] else "role"
        message = str(problem["msg"]).removeprefix("Value error, ")
        raise ValueError(f"{shown}: {where}: {message}") from None


def load_team_file(path: Path) -> tuple[TeamMember, ...]:
    """A team file: YAML or JSON, a list of entries or a mapping with ``agents:`` (so a plan
    file's team can be used as is). ``PlanError`` with one line per problem."""
    from maos.plan.loader import read_plan_data, team_entry_problem

    source = str(path)
    data = read_plan_data(path)
    if isinstance(data, dict) and "agents" in data:
        data = data["agents"]
    if not isinstance(data, list) or not data:
        raise PlanError(f"{source}: expected a non-empty list of agents (or a mapping with 'agents:')")
    if len(data) > MAX_TEAM_AGENTS:  # each entry is at least one agent: say so before validating them
        raise PlanError(f"{source}: {len(data)} entries, more agents than the limit of {MAX_TEAM_AGENTS}")
    members: list[TeamMember] = []
    problems: list[str] = []
    for number, entry in enumerate(data):
        try:
            members.append(TeamMember.model_validate(entry))
        except ValidationError as exc:
            problems += [team_entry_problem(source, number, error["loc"], error) for error in exc.errors()]
    if problems:
        raise PlanError(problems)
    return tuple(members)


def propose_team(plan: Plan, *, per_role: int = 3) -> tuple[TeamMember, ...]:
    """A team for ``plan`` when it declares none (the template planner): one entry per role
    its tasks ask for, as many agents as the widest set of that role's tasks that may run
    at once (at most ``per_role``), and the capabilities its tasks require."""
    from maos.plan.analysis import analyze_plan

    levels = analyze_plan(plan).levels
    by_id = plan.by_id()
    members: list[TeamMember] = []
    roles = list(dict.fromkeys(task.role for task in plan.tasks))
    taken: set[str] = set()
    for role in roles:
        width = max(sum(1 for task_id in level if by_id[task_id].role == role) for level in levels)
        required = sorted({cap for task in plan.tasks if task.role == role for cap in task.capabilities})
        members.append(
            TeamMember(
                id=_member_id(role, taken),
                role=role,
                count=max(1, min(per_role, width)),
                capabilities=tuple(required) if required else None,
            )
        )
    return tuple(members)


def _member_id(role: str, taken: set[str]) -> str | None:
    """None where the role is an agent id itself; else one made of it ("Topology Optimizer":
    ``Topology-Optimizer``), unique among ``taken``."""
    if _AGENT_ID_RE.fullmatch(role) and len(role) <= AGENT_ID_MAX_CHARS and role not in taken:
        taken.add(role)
        return None
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", role).strip("-_")[: AGENT_ID_MAX_CHARS - 4] or "agent"
    found, n = base, 1
    while found in taken:
        n += 1
        found = f"{base}-{n}"
    taken.add(found)
    return found
