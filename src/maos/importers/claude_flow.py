"""Import a Claude Flow (Ruflo) 3.x project: its agent records, sessions, tasks, workflows and
memory become a MAOS plan with a team, and seeded shared state, with a report of every file.

``import_claude_flow(project)`` only reads; ``ImportResult`` holds the plan (its ``agents:``
is the team), the state (key -> JSON value) and one ``FileReport`` per file found under
``.claude-flow/``, ``.swarm/``, ``.hive-mind/`` and ``.claude/``, plus ``.mcp.json``,
``claude-flow.config.json`` and ``CLAUDE.md``. The CLI (``maos import claude-flow``) writes them.

What becomes what:

- agent records (``.claude-flow/agents.json``, ``.claude-flow/agents/store.json``, hive-mind
  workers, swarm members: records with no process behind them) -> team members, grouped by
  type, role and model; the role is the ``.claude/agents`` definition whose ``name`` is the
  record's type (or its configured role), else ``general``;
- ``.claude/agents/**/*.md`` -> roles (``maos.agents.roles.parse_role``; MAOS reads these
  itself when a run starts in the project folder);
- objectives (hive-mind / swarm state, ``.hive-mind/sessions/hive-mind-prompt-*.txt``) -> one
  task each, the objective as its prompt; task records (``.claude-flow/tasks/store.json``,
  swarms' inline tasks) that are not finished -> tasks; workflows
  (``.claude-flow/workflows/store.json``) -> their ``task`` steps, each depending on the one
  before;
- ``.swarm/memory.db`` ``memory_entries`` (active, unexpired) and hive-mind ``sharedMemory``
  -> shared state keys ``claude-flow/memory/<namespace>/<key>`` and
  ``claude-flow/hive-mind/<key>``.

The plan keeps within a plan's limits (``MAX_TEAM_AGENTS`` agents, ``MAX_PLAN_TASKS`` tasks,
``MAX_TASK_TEXT_BYTES`` of prompts, names a plan may hold, no dependency cycle): one bad record
is left out, or its dependency dropped, with the reason in its file's report; it never stops the
import. Everything else is listed with the reason it is not converted. The project is outside data:
files are read bounded in size and depth (``maos.documents``), symbolic links that leave the
project are not followed, and ``memory.db`` is opened read-only (``mode=ro``) with
``trusted_schema`` off, never through a view or a virtual table, and with a time budget. A file
that is not what its name claims (not JSON, not SQLite, the wrong shape) is an *error* of its
``FileReport``; the CLI then writes nothing and exits 2.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import ValidationError

from maos.agents.roles import MAX_ROLE_FILE_BYTES, parse_role
from maos.documents import load_json, load_yaml, read_document
from maos.errors import DocumentError, ImportSourceError
from maos.model import (
    AGENT_ID_MAX_CHARS,
    MAX_PLAN_TASKS,
    MAX_TEAM_AGENTS,
    TASK_ID_MAX_CHARS,
    AgentRole,
    Plan,
    TaskSpec,
    TeamMember,
)
from maos.plan.loader import MAX_PLAN_BYTES
from maos.plan.validate import validate_plan
from maos.state import DEFAULT_MAX_VALUE_BYTES, MAX_KEY_CHARS, encode_value

__all__ = [
    "MAX_FILES",
    "MAX_JSON_BYTES",
    "MAX_MEMORY_ROWS",
    "FileReport",
    "ImportResult",
    "Outcome",
    "import_claude_flow",
    "state_loading_line",
]

Outcome = Literal["converted", "partly converted", "not converted", "error"]

ROOT_DIRS = (".claude-flow", ".swarm", ".hive-mind", ".claude")
"""The folders a Claude Flow project keeps its files in (``.claude`` is Claude Code's)."""
ROOT_FILES = (".mcp.json", "claude-flow.config.json", "CLAUDE.md")
CLAUDE_FLOW_DIRS = (".claude-flow", ".swarm", ".hive-mind")
"""At least one of these makes a folder a Claude Flow project."""

MAX_FILES = 20_000
MAX_JSON_BYTES = 32 * 1024 * 1024
MAX_TEXT_BYTES = 1024 * 1024
MAX_MEMORY_ROWS = 100_000
MAX_DB_SECONDS = 20.0
MAX_LISTED = 50
"""Rows or records named one by one in a file's report; the rest are counted."""
MAX_TITLE_CHARS = 100
MAX_COUNT = 100  # TeamMember.count's limit
MAX_TASK_TEXT_BYTES = MAX_PLAN_BYTES // 2
"""The tasks' prompts and titles in all: the plan file, with its YAML, must stay within the
plan loader's limit."""
SQLITE_HEADER = b"SQLite format 3\x00"

STATE_PREFIX = "claude-flow"
_KEY_SEGMENT_BAD = re.compile(r"[^A-Za-z0-9_.@:-]+")
_ID_BAD = re.compile(r"[^A-Za-z0-9_-]+")
_OBJECTIVE_BLOCK = re.compile(r"YOUR OBJECTIVE:[ \t]*\n(.+?)(?:\n[ \t]*\n|\Z)", re.S)
_OBJECTIVE_LINE = re.compile(r"^\W*Objective:[ \t]*(\S.*)$", re.M)
_PRIORITIES = {"low": -1, "normal": 0, "medium": 0, "high": 1, "urgent": 2, "critical": 2}
_FINISHED = {"completed", "cancelled", "canceled", "done", "succeeded"}

_TABLE_NOTES = {
    "patterns": "learned patterns: MAOS has no pattern learning",
    "pattern_history": "pattern history: MAOS has no pattern learning",
    "trajectories": "recorded trajectories: MAOS keeps its own run history (maos runs, maos logs)",
    "trajectory_steps": "trajectory steps: MAOS keeps its own run history (maos runs, maos logs)",
    "sessions": "Claude Flow session snapshots: MAOS resumes its own runs (maos resume)",
    "vector_indexes": "vector index settings: MAOS has no vector search",
    "graph_edges": "knowledge-graph edges: MAOS has no knowledge graph",
    "metadata": "the memory store's own settings",
    "migration_state": "Claude Flow's migration bookkeeping",
}


# --------------------------------------------------------------------------- the report


@dataclass
class FileReport:
    """One file found in the project and what became of it."""

    path: str
    """Relative to the project folder, with ``/``."""
    kind: str
    """What the importer took the file for, e.g. "agent records"."""
    became: list[str] = field(default_factory=list)
    not_converted: list[str] = field(default_factory=list)
    error: str | None = None
    """Why the file is not what its name claims (the import then writes nothing)."""

    @property
    def outcome(self) -> Outcome:
        if self.error is not None:
            return "error"
        if self.became:
            return "partly converted" if self.not_converted else "converted"
        return "not converted"

    def skip(self, reason: str) -> None:
        self.not_converted.append(reason)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "outcome": self.outcome,
            "became": self.became,
            "not_converted": self.not_converted,
            "error": self.error,
        }


@dataclass
class ImportResult:
    """What ``import_claude_flow`` found; nothing is written yet."""

    source: Path
    plan: Plan
    state: dict[str, Any]
    files: list[FileReport]
    notes: list[str] = field(default_factory=list)
    """Project-wide remarks (no objective found, files left unexamined)."""
    placeholder: bool = False
    """The plan's only task is a placeholder: no objective or open task was found."""

    @property
    def errors(self) -> list[str]:
        return [f"{self.source / report.path}: {report.error}" for report in self.files if report.error]

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for report in self.files:
            counts[report.outcome] = counts.get(report.outcome, 0) + 1
        return {
            "source": str(self.source),
            "plan": {
                "name": self.plan.name,
                "tasks": [task.id for task in self.plan.tasks],
                "placeholder": self.placeholder,
            },
            "team": [member.model_dump(mode="json", exclude_defaults=True) for member in self.plan.agents],
            "state_keys": sorted(self.state),
            "files": [report.to_json() for report in self.files],
            "counts": counts,
            "notes": self.notes,
            "errors": self.errors,
        }


def state_loading_line(state_file: str) -> str:
    """A one-line command task that loads ``state_file`` into a run's shared state (MAOS has
    no seeding of its own: ``maos state set`` works from inside a run, through the door)."""
    return (
        'python3 -c \'import json,subprocess,sys; [subprocess.run(["maos","state","set",k,"-"],'
        f"input=json.dumps(v),text=True,check=True) for k,v in json.load(open(sys.argv[1])).items()]' "
        f"{_shell_quote(state_file)}"
    )


def _shell_quote(text: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./@:-]+", text):
        return text
    return "'" + text.replace("'", "'\"'\"'") + "'"


# --------------------------------------------------------------------------- what is read


class _Invalid(Exception):
    """The file is not what its name claims (becomes ``FileReport.error``)."""


@dataclass
class _AgentRecord:
    agent_id: str
    names: tuple[str, ...]
    """Its type first, then configured roles: candidates for a ``.claude/agents`` name."""
    model: str | None
    report: FileReport


@dataclass(eq=False)  # compared and hashed by identity: two drafts may share a source id
class _TaskDraft:
    source_id: str
    title: str
    prompt: str
    what: str
    report: FileReport
    priority: int = 0
    kind: str = ""
    assigned: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    """The ids of the task records this one depends on."""
    follows: _TaskDraft | None = None
    """The workflow step before this one, which it depends on."""


@dataclass
class _Project:
    root: Path
    real_root: str
    files: list[FileReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    agents: dict[str, _AgentRecord] = field(default_factory=dict)
    roles: list[tuple[AgentRole, FileReport]] = field(default_factory=list)
    objectives: list[_TaskDraft] = field(default_factory=list)
    task_records: dict[str, _TaskDraft] = field(default_factory=dict)
    workflow_steps: list[_TaskDraft] = field(default_factory=list)
    state: dict[str, tuple[Any, FileReport]] = field(default_factory=dict)


def import_claude_flow(project: Path) -> ImportResult:
    """Read the Claude Flow project in ``project``; ``ImportSourceError`` when the folder is
    missing, unreadable or holds no Claude Flow folder. Bad files do not raise: their
    ``FileReport`` says what is wrong (``error``) or what was left out (``not_converted``)."""
    root = _check_root(project)
    found = _Project(root=root, real_root=os.path.realpath(root))
    for path, rel, report in _walk(found):
        if report.error is None and not report.not_converted:
            _read_file(found, path, rel, report)
    return _assemble(found)


def _check_root(project: Path) -> Path:
    try:
        info = os.stat(project)
    except FileNotFoundError:
        raise ImportSourceError(f"{project}: no such folder") from None
    except OSError as exc:
        raise ImportSourceError(f"{project}: cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ImportSourceError(f"{project}: not a folder (expected a Claude Flow project folder)")
    try:
        names = set(os.listdir(project))
    except OSError as exc:
        raise ImportSourceError(f"{project}: cannot be read: {exc.strerror or exc}") from None
    if not any(name in names for name in CLAUDE_FLOW_DIRS):
        raise ImportSourceError(
            f"{project}: not a Claude Flow project: none of {', '.join(CLAUDE_FLOW_DIRS)} is in it"
        )
    return project.absolute()


# --------------------------------------------------------------------------- walking


def _walk(found: _Project) -> Iterator[tuple[Path, str, FileReport]]:
    """Every file of the project's Claude Flow and Claude Code folders, in path order, with
    a report each. Links leaving the project, linked folders and special files get a report
    that already says why they are not read."""
    count = 0
    tops = [name for name in (*ROOT_DIRS, *ROOT_FILES) if os.path.lexists(found.root / name)]
    for top in sorted(tops):
        for path in _files_under(found, found.root / top):
            count += 1
            if count > MAX_FILES:
                found.notes.append(f"more than {MAX_FILES} files: the rest were not examined")
                return
            rel = path.relative_to(found.root).as_posix()
            report = FileReport(path=rel, kind=_kind_of(rel))
            found.files.append(report)
            target = _vet(found, path, report)
            if target is not None:
                yield target, rel, report


def _files_under(found: _Project, top: Path) -> Iterator[Path]:
    if top.is_symlink() or not top.is_dir():
        yield top
        return
    problems: list[OSError] = []
    for folder, subfolders, files in os.walk(top, followlinks=False, onerror=problems.append):
        subfolders.sort()
        names = sorted(files) + sorted(
            name for name in subfolders if os.path.islink(os.path.join(folder, name))
        )
        subfolders[:] = [name for name in subfolders if not os.path.islink(os.path.join(folder, name))]
        for name in sorted(names):
            yield Path(folder) / name
    for problem in problems:
        where = Path(problem.filename) if problem.filename else top
        rel = where.relative_to(found.root).as_posix() if where.is_relative_to(found.root) else str(where)
        report = FileReport(path=rel, kind="folder")
        report.skip(f"cannot be listed: {problem.strerror or problem}")
        found.files.append(report)


def _vet(found: _Project, path: Path, report: FileReport) -> Path | None:
    """The path to read for ``path`` (the target of a link inside the project), or None with
    the reason in ``report``."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        report.skip(f"cannot be read: {exc.strerror or exc}")
        return None
    if stat.S_ISLNK(info.st_mode):
        target = os.path.realpath(path)
        if os.path.commonpath([found.real_root, target]) != found.real_root:
            report.skip(f"a symbolic link to {target}, outside the project: not followed")
            return None
        if os.path.isdir(target):
            report.skip(
                "a symbolic link to a folder: not followed (the folder's files are listed where they are)"
            )
            return None
        try:
            info = os.stat(target)
        except OSError as exc:
            report.skip(f"a symbolic link that leads nowhere ({exc.strerror or exc})")
            return None
        path = Path(target)
    if not stat.S_ISREG(info.st_mode):
        report.skip("not a regular file (a device, pipe or socket): not read")
        return None
    return path


def _kind_of(rel: str) -> str:
    for matches, kind, _ in _HANDLERS:
        if matches(rel):
            return kind
    return _other_kind(rel)[0]


def _other_kind(rel: str) -> tuple[str, str]:
    """What an unhandled file is, and why it is not converted."""
    if rel.startswith(".claude/agents/"):
        return "not an agent definition", "only .md files are agent definitions"
    if rel.startswith(".claude/commands/"):
        return "Claude Code slash command", "MAOS does not use slash commands"
    if rel.startswith(".claude/skills/"):
        return "Claude Code skill", "MAOS starts agents without project settings; skills are not carried over"
    if rel.startswith(".claude/helpers/"):
        return "Claude Flow helper script", "Claude Flow's hook helpers: MAOS does not run them"
    if rel.startswith(".swarm/memory.db-"):
        return "SQLite journal of memory.db", "read as part of .swarm/memory.db"
    if rel.startswith(".hive-mind/"):
        return (
            "hive-mind file",
            "not a hive-mind file this importer reads (Claude Flow 2.x files are not read)",
        )
    return "unknown file", "not a Claude Flow file this importer reads"


def _read_file(found: _Project, path: Path, rel: str, report: FileReport) -> None:
    for matches, _, handler in _HANDLERS:
        if matches(rel):
            try:
                handler(found, path, report)
            except _Invalid as exc:
                report.error = str(exc)
            return
    report.skip(_other_kind(rel)[1])


# --------------------------------------------------------------------------- reading files


def _read_json(path: Path) -> object:
    text = _read_text(path, MAX_JSON_BYTES)
    try:
        return load_json(text)
    except json.JSONDecodeError as exc:
        raise _Invalid(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except DocumentError as exc:
        raise _Invalid(f"refused: {exc}") from None


def _read_text(path: Path, max_bytes: int) -> str:
    try:
        raw = read_document(path, max_bytes=max_bytes)
    except DocumentError as exc:
        raise _Invalid(str(exc)) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Invalid(f"not UTF-8 text (byte {exc.start}): a binary file?") from None


def _object(data: object, expected: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _Invalid(f"expected {expected}, got {_json_kind(data)}")
    return data


def _json_kind(value: object) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return kinds.get(type(value), "a number")


def _records(data: dict[str, Any], name: str, report: FileReport) -> Iterator[tuple[str, dict[str, Any]]]:
    """The entries of ``data[name]`` (an object keyed by id, or a list), each an object;
    others are reported."""
    entries = data.get(name)
    if entries is None:
        return
    if isinstance(entries, dict):
        items = [(str(key), value) for key, value in entries.items()]
    elif isinstance(entries, list):
        items = [(f"[{number}]", value) for number, value in enumerate(entries)]
    else:
        raise _Invalid(f"field {name!r}: expected an object or a list, got {_json_kind(entries)}")
    for key, value in items:
        if isinstance(value, dict):
            yield key, value
        else:
            report.skip(f"{name} {_show(key)}: not an object ({_json_kind(value)})")


def _text_field(record: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = record.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _show(text: str, limit: int = 60) -> str:
    shown = text if len(text) <= limit else text[: limit - 1] + "…"
    return repr(shown)


def _agent_files(found: _Project, path: Path, report: FileReport) -> None:
    data = _object(_read_json(path), "an object with 'agents'")
    if "agents" not in data:
        raise _Invalid("no 'agents' field: not a Claude Flow agent store")
    for key, record in _records(data, "agents", report):
        _add_agent(found, record, key, report)
    for name in sorted(set(data) - {"agents", "version"}):
        report.skip(f"field {_show(name)}: not an agent record")


def _add_agent(found: _Project, record: dict[str, Any], key: str, report: FileReport) -> None:
    agent_id = _text_field(record, "agentId", "id") or (key if not key.startswith("[") else None)
    if agent_id is None:
        report.skip(f"agents {key}: no 'agentId'")
        return
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    assert isinstance(config, dict)
    names = [
        name
        for name in (
            _text_field(record, "agentType", "type"),
            _text_field(config, "role"),
            _text_field(record, "role"),
            _text_field(config, "hiveRole"),
        )
        if name is not None
    ]
    if not names:
        report.skip(f"agent {_show(agent_id)}: no 'agentType': its kind is unknown")
        return
    model = record.get("model")
    if model is not None:
        problem = (
            _member_problem(model=model)
            if isinstance(model, str)
            else f"field 'model': expected a model name, got {_json_kind(model)}"
        )
        if problem is not None:
            report.skip(f"agent {_show(agent_id)}: {problem}")
            model = None
    if agent_id in found.agents:
        other = found.agents[agent_id].report
        if other is not report:
            report.became.append(f"agent {_show(agent_id)}: the same agent as in {other.path}")
        return
    found.agents[agent_id] = _AgentRecord(agent_id, tuple(dict.fromkeys(names)), model, report)


def _hive_state(found: _Project, path: Path, report: FileReport) -> None:
    data = _object(_read_json(path), "a hive-mind state object")
    workers = data.get("workers", [])
    if not isinstance(workers, list):
        raise _Invalid(f"field 'workers': expected a list, got {_json_kind(workers)}")
    known: dict[str, int] = {}
    for number, worker in enumerate(workers):
        if isinstance(worker, str) and worker:
            if worker in found.agents:
                where = found.agents[worker].report.path
                known[where] = known.get(where, 0) + 1
            else:
                found.agents[worker] = _AgentRecord(worker, ("worker",), None, report)
        elif isinstance(worker, dict):
            _add_agent(found, {"agentType": "worker", **worker}, f"[{number}]", report)
        else:
            report.skip(f"workers[{number}]: expected an agent id, got {_json_kind(worker)}")
    for where, count in known.items():
        report.became.append(f"{count} workers: team members (their records are in {where})")
    queen = data.get("queen")
    if isinstance(queen, dict):
        name = _text_field(queen, "agentId", "id") or "?"
        report.skip(
            f"queen {_show(name)}: MAOS's orchestrator coordinates the agents (there is no queen agent)"
        )
    objective = data.get("objective")
    if isinstance(objective, str) and objective.strip():
        session = _text_field(data, "hiveId", "id", "sessionId") or "hive-mind"
        found.objectives.append(_objective(session, objective, "hive-mind objective", report))
    elif objective is not None:
        report.skip(f"field 'objective': expected text, got {_json_kind(objective)}")
    else:
        report.skip(
            "no objective in this file (Claude Flow 3 writes a hive-mind's objective only to "
            ".hive-mind/sessions/hive-mind-prompt-*.txt, with 'hive-mind spawn --claude')"
        )
    _tasks_inline(found, data, report)
    shared = data.get("sharedMemory")
    if isinstance(shared, dict):
        for key, value in shared.items():
            _add_state(found, ("hive-mind", str(key)), value, report, f"sharedMemory {_show(str(key))}")
    elif shared is not None:
        report.skip(f"field 'sharedMemory': expected an object, got {_json_kind(shared)}")
    strategy = _text_field(data, "consensusStrategy")
    if strategy or isinstance(data.get("consensus"), dict):
        report.skip(
            f"consensus{' ' + _show(strategy) if strategy else ''}: MAOS decides consensus per task "
            "(replicas: N, consensus: majority | weighted | judge)"
        )
    if "hiveToken" in data:
        report.skip("hiveToken: a Claude Flow secret, left out")
    if isinstance(data.get("topology"), str):
        report.skip(f"topology {_show(data['topology'])}: MAOS schedules by the plan's dependencies")


def _swarm_state(found: _Project, path: Path, report: FileReport) -> None:
    data = _object(_read_json(path), "an object with 'swarms'")
    if "swarms" not in data:
        raise _Invalid("no 'swarms' field: not a Claude Flow swarm store")
    for key, swarm in _records(data, "swarms", report):
        swarm_id = _text_field(swarm, "swarmId", "id") or key
        members = swarm.get("agents", [])
        if isinstance(members, list):
            for member in members:
                if isinstance(member, str) and member and member not in found.agents:
                    found.agents[member] = _AgentRecord(member, ("agent",), None, report)
                elif isinstance(member, dict):
                    _add_agent(found, member, "[?]", report)
        objective = swarm.get("objective")
        if isinstance(objective, str) and objective.strip():
            found.objectives.append(_objective(swarm_id, objective, f"swarm {swarm_id} objective", report))
        tasks = swarm.get("tasks", [])
        if isinstance(tasks, list):
            refs = [task for task in tasks if isinstance(task, str)]
            if refs:
                report.became.append(
                    f"swarm {_show(swarm_id)}: {len(refs)} task ids, read from .claude-flow/tasks/store.json"
                )
            _tasks_inline(found, {"tasks": [task for task in tasks if not isinstance(task, str)]}, report)
        if not (isinstance(objective, str) and objective.strip()) and not tasks:
            report.skip(f"swarm {_show(swarm_id)}: no objective and no tasks recorded")
        topology = _text_field(swarm, "topology")
        report.skip(
            f"swarm {_show(swarm_id)} settings (topology {topology or '?'}, maxAgents "
            f"{swarm.get('maxAgents', '?')}): MAOS schedules by the plan's dependencies; "
            "`maos run --agents N` or the plan's agents: set how many agents run"
        )


def _tasks_inline(found: _Project, data: dict[str, Any], report: FileReport) -> None:
    if "tasks" in data:
        for key, record in _records(data, "tasks", report):
            _add_task_record(found, record, key, report)


def _task_store(found: _Project, path: Path, report: FileReport) -> None:
    data = _object(_read_json(path), "an object with 'tasks'")
    if "tasks" not in data:
        raise _Invalid("no 'tasks' field: not a Claude Flow task store")
    _tasks_inline(found, data, report)


def _add_task_record(found: _Project, record: dict[str, Any], key: str, report: FileReport) -> None:
    task_id = _text_field(record, "taskId", "id") or key.strip("[]")
    description = record.get("description")
    if not isinstance(description, str) or not description.strip():
        report.skip(f"task {_show(task_id)}: no 'description' text: nothing for an agent to do")
        return
    status = record.get("status")
    if isinstance(status, str) and status.lower() in _FINISHED:
        report.skip(f"task {_show(task_id)}: already {status.lower()} in Claude Flow")
        return
    if task_id in found.task_records:
        report.skip(f"task {_show(task_id)}: a second record with this id")
        return
    priority = record.get("priority")
    assigned = record.get("assignedTo") or record.get("assigned_agents") or ()
    after = record.get("dependencies") or record.get("dependsOn") or ()
    found.task_records[task_id] = _TaskDraft(
        source_id=task_id,
        title=_title(description),
        prompt=description.strip(),
        what="task record",
        report=report,
        priority=_PRIORITIES.get(priority.lower(), 0) if isinstance(priority, str) else 0,
        kind=_text_field(record, "type") or "",
        assigned=tuple(item for item in assigned if isinstance(item, str))
        if isinstance(assigned, list)
        else (),
        after=tuple(item for item in after if isinstance(item, str)) if isinstance(after, list) else (),
    )


def _workflow_store(found: _Project, path: Path, report: FileReport) -> None:
    data = _object(_read_json(path), "an object with 'workflows'")
    if "workflows" not in data:
        raise _Invalid("no 'workflows' field: not a Claude Flow workflow store")
    for key, workflow in _records(data, "workflows", report):
        workflow_id = _text_field(workflow, "workflowId", "id") or key
        status = workflow.get("status")
        if isinstance(status, str) and status.lower() in _FINISHED:
            report.skip(f"workflow {_show(workflow_id)}: already {status.lower()} in Claude Flow")
            continue
        steps = workflow.get("steps", [])
        if not isinstance(steps, list):
            report.skip(
                f"workflow {_show(workflow_id)}: field 'steps': expected a list, got {_json_kind(steps)}"
            )
            continue
        if not steps:
            report.skip(f"workflow {_show(workflow_id)}: no steps")
        previous: _TaskDraft | None = None
        for number, step in enumerate(steps):
            previous = _workflow_step(found, workflow_id, workflow, number, step, previous, report)
    templates = data.get("templates")
    if isinstance(templates, dict):
        for name in templates:
            report.skip(
                f"template {_show(str(name))}: a template, not a workflow (MAOS has its own: maos plan -t)"
            )


def _workflow_step(
    found: _Project,
    workflow_id: str,
    workflow: dict[str, Any],
    number: int,
    step: object,
    previous: _TaskDraft | None,
    report: FileReport,
) -> _TaskDraft | None:
    """Add one step; return the step later steps depend on."""
    where = f"workflow {_show(workflow_id)} step {number + 1}"
    if not isinstance(step, dict):
        report.skip(f"{where}: not an object ({_json_kind(step)})")
        return previous
    kind = step.get("type", "task")
    if kind != "task":
        report.skip(
            f"{where}: a {_show(str(kind))} step: MAOS plans have no control flow (the next task step "
            "depends on the task step before it)"
        )
        return previous
    status = step.get("status")
    if isinstance(status, str) and status.lower() in _FINISHED:
        report.skip(f"{where}: already {status.lower()} in Claude Flow")
        return previous
    config = step.get("config") if isinstance(step.get("config"), dict) else {}
    assert isinstance(config, dict)
    name = _text_field(step, "name") or f"step {number + 1}"
    prompt = _text_field(config, "prompt", "task") or _text_field(workflow, "description") or name
    step_id = f"{workflow_id}.{_text_field(step, 'stepId') or number + 1}"
    agent = _text_field(config, "agentId")
    found.workflow_steps.append(
        _TaskDraft(
            source_id=step_id,
            title=_title(name),
            prompt=prompt,
            what=f"workflow {_show(workflow_id)} step",
            report=report,
            assigned=(agent,) if agent else (),
            follows=previous,
        )
    )
    return found.workflow_steps[-1]


def _swarm_config(found: _Project, path: Path, report: FileReport) -> None:
    data = _object(_read_json(path), "a swarm settings object")
    shown = ", ".join(f"{key} {data[key]}" for key in ("topology", "strategy", "maxAgents") if key in data)
    report.skip(
        f"swarm settings ({shown or 'none known'}): MAOS has no swarm topology; "
        "`maos run --agents N` or the plan's agents: set how many agents run"
    )


def _config_file(found: _Project, path: Path, report: FileReport) -> None:
    text = _read_text(path, MAX_JSON_BYTES)
    if path.suffix in (".yaml", ".yml"):
        try:
            data = load_yaml(text, unique_keys=False)
        except Exception as exc:  # yaml.YAMLError or DocumentError: either way not a config
            raise _Invalid(f"not valid YAML: {' '.join(str(exc).split())[:200]}") from None
    else:
        try:
            data = load_json(text)
        except (json.JSONDecodeError, DocumentError) as exc:
            raise _Invalid(f"not valid JSON: {exc}") from None
    keys = ", ".join(sorted(map(str, data))[:10]) if isinstance(data, dict) else _json_kind(data)
    report.skip(f"Claude Flow runtime settings ({keys}): no MAOS equivalent")


def _claude_settings(found: _Project, path: Path, report: FileReport) -> None:
    data = _object(_read_json(path), "a Claude Code settings object")
    hooks = data.get("hooks")
    parts = []
    if isinstance(hooks, dict):
        parts.append(f"hooks for {', '.join(sorted(map(str, hooks)))}")
    parts += [name for name in ("permissions", "env", "statusLine", "claudeFlow") if name in data]
    report.skip(
        f"Claude Code settings ({'; '.join(parts) or 'empty'}): MAOS starts its agents with "
        '--setting-sources "" (no settings files); the hooks call Claude Flow\'s helpers'
    )


def _mcp_config(found: _Project, path: Path, report: FileReport) -> None:
    data = _object(_read_json(path), "an object with 'mcpServers'")
    servers = data.get("mcpServers", {})
    if not isinstance(servers, dict):
        raise _Invalid(f"field 'mcpServers': expected an object, got {_json_kind(servers)}")
    for name, server in servers.items():
        words = json.dumps(server)[:2000].lower() + str(name).lower()
        own = "claude-flow" in words or "ruflo" in words
        why = (
            "Claude Flow's coordination server: MAOS's door (state, messages, results) replaces it"
            if own
            else ("MAOS gives its agents only its own MCP server (--strict-mcp-config)")
        )
        report.skip(f"MCP server {_show(str(name))}: {why}")
    if not servers:
        report.skip("no MCP servers")


def _claude_md(found: _Project, path: Path, report: FileReport) -> None:
    report.skip("project instructions for Claude Code: left in place (not carried into the plan)")


def _role_file(found: _Project, path: Path, report: FileReport) -> None:
    try:
        raw = read_document(path, max_bytes=MAX_ROLE_FILE_BYTES)
        text = raw.decode("utf-8")
        role = parse_role(text, found.root / report.path)
    except DocumentError as exc:
        report.skip(f"not an agent definition: {exc}")
        return
    except UnicodeDecodeError as exc:
        report.skip(f"not an agent definition: not UTF-8 text (byte {exc.start})")
        return
    except ValueError as exc:
        report.skip(f"not an agent definition: {exc}")
        return
    problem = _member_problem(role=role.name)
    if problem is not None:
        report.skip(f"role {_show(role.name)}: {problem}: no plan can name this role")
        return
    found.roles.append((role, report))


def _hive_prompt(found: _Project, path: Path, report: FileReport) -> None:
    text = _read_text(path, MAX_TEXT_BYTES)
    match = _OBJECTIVE_BLOCK.search(text) or _OBJECTIVE_LINE.search(text)
    if match is None:
        report.skip("no objective found in it (no 'YOUR OBJECTIVE:' or 'Objective:' line)")
        return
    session = path.name.removeprefix("hive-mind-prompt-").removesuffix(".txt") or "hive-mind"
    found.objectives.append(_objective(session, match.group(1), "hive-mind objective", report))


def _objective(session: str, text: str, what: str, report: FileReport) -> _TaskDraft:
    return _TaskDraft(source_id=session, title=_title(text), prompt=text.strip(), what=what, report=report)


def _title(text: str) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= MAX_TITLE_CHARS else line[: MAX_TITLE_CHARS - 1] + "…"


# --------------------------------------------------------------------------- memory.db


def _memory_db(found: _Project, path: Path, report: FileReport) -> None:
    try:
        with open(path, "rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise _Invalid(f"cannot be read: {exc.strerror or exc}") from None
    if header != SQLITE_HEADER:
        raise _Invalid("not an SQLite database (no 'SQLite format 3' header)")
    try:
        connection = sqlite3.connect(f"file:{quote(os.fsencode(path))}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error as exc:
        raise _Invalid(f"cannot be opened read-only: {exc}") from None
    deadline = time.monotonic() + MAX_DB_SECONDS
    # Stops any statement past the time budget (a hostile file can make one very slow).
    connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        connection.execute("PRAGMA query_only = ON")
        connection.execute("PRAGMA trusted_schema = OFF")
        _read_memory(found, connection, report)
    except sqlite3.Error as exc:
        late = time.monotonic() > deadline
        raise _Invalid(
            f"reading it took more than {MAX_DB_SECONDS:.0f} s: stopped"
            if late
            else f"not a readable SQLite database: {exc}"
        ) from None
    finally:
        connection.close()


def _read_memory(found: _Project, db: sqlite3.Connection, report: FileReport) -> None:
    tables: dict[str, str] = {}
    for name, kind, sql in db.execute(
        "SELECT name, type, sql FROM sqlite_master WHERE type IN ('table', 'view')"
    ):
        if not isinstance(name, str):
            continue
        virtual = isinstance(sql, str) and sql.lstrip().upper().startswith("CREATE VIRTUAL")
        tables[name] = "virtual" if virtual else str(kind)
    if tables.get("memory_entries") != "table":
        raise _Invalid("no memory_entries table: not a Claude Flow memory store")
    columns = {row[1] for row in db.execute("PRAGMA table_info(memory_entries)")}
    missing = {"key", "namespace", "content"} - columns
    if missing:
        raise _Invalid(
            f"table memory_entries has no column {', '.join(sorted(missing))}: not a Claude Flow memory store"
        )
    _memory_rows(found, db, columns, report)
    for name in sorted(tables):
        if name in ("memory_entries", "sqlite_sequence"):
            continue
        if tables[name] != "table":
            report.skip(f"{tables[name]} {_show(name)}: not read (MAOS never runs SQL from the file)")
            continue
        rows = db.execute(f"SELECT count(*) FROM {_quoted(name)}").fetchone()[0]
        if rows:
            note = _TABLE_NOTES.get(name, "not a Claude Flow memory table")
            report.skip(f"table {name} ({rows} rows): {note}")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _memory_rows(found: _Project, db: sqlite3.Connection, columns: set[str], report: FileReport) -> None:
    limit = DEFAULT_MAX_VALUE_BYTES + 1
    status = "status" if "status" in columns else "'active'"
    expires = "expires_at" if "expires_at" in columns else "NULL"
    query = (
        "SELECT typeof(namespace), substr(namespace, 1, 300), typeof(key), substr(key, 1, 300), "
        f"typeof(content), length(CAST(content AS BLOB)), substr(content, 1, ?), {status}, {expires} "
        "FROM memory_entries ORDER BY namespace, key LIMIT ?"
    )
    now_ms = time.time() * 1000
    converted: dict[str, int] = {}
    skipped: list[str] = []
    total = 0
    for row in db.execute(query, (limit, MAX_MEMORY_ROWS + 1)):
        total += 1
        if total > MAX_MEMORY_ROWS:
            skipped.append(f"rows past the first {MAX_MEMORY_ROWS}: not read")
            break
        ns_type, namespace, key_type, key, content_type, size, content, row_status, expires_at = row
        if ns_type == "null":
            namespace, ns_type = "default", "text"
        if ns_type != "text" or key_type != "text":
            skipped.append(f"a row whose namespace or key is not text ({ns_type}, {key_type})")
            continue
        where = f"entry {_show(namespace)}/{_show(key)}"
        if isinstance(row_status, str) and row_status != "active":
            skipped.append(f"{where}: {row_status} in Claude Flow")
            continue
        if isinstance(expires_at, int | float) and 0 < expires_at < now_ms:
            skipped.append(f"{where}: expired")
            continue
        if content_type != "text":
            skipped.append(f"{where}: its content is {content_type}, not text")
            continue
        if isinstance(size, int) and size > DEFAULT_MAX_VALUE_BYTES:
            skipped.append(
                f"{where}: {size} bytes, above the limit of {DEFAULT_MAX_VALUE_BYTES} for one state value"
            )
            continue
        value = _json_or_text(content)
        added = _add_state(found, ("memory", namespace, key), value, report, where, quiet=True)
        if added is None:
            continue
        if added:
            converted[namespace] = converted.get(namespace, 0) + 1
    for namespace, count in sorted(converted.items()):
        report.became.append(
            f"namespace {_show(namespace)}: {count} memory entries -> shared state "
            f"{STATE_PREFIX}/memory/{_key_segment(namespace)}/*"
        )
    if total == 0:
        report.skip("memory_entries is empty: no shared state to seed")
    for line in skipped[:MAX_LISTED]:
        report.skip(line)
    if len(skipped) > MAX_LISTED:
        report.skip(f"… and {len(skipped) - MAX_LISTED} more rows not converted")


def _json_or_text(text: str) -> Any:
    """A memory entry's content: its JSON value when it is JSON, else the text."""
    stripped = text.strip()
    if stripped[:1] in ("{", "[", '"') or stripped in ("true", "false", "null"):
        try:
            return load_json(stripped)
        except (json.JSONDecodeError, DocumentError):
            return text
    return text


# --------------------------------------------------------------------------- state


def _key_segment(text: str) -> str:
    return _KEY_SEGMENT_BAD.sub("_", text).strip("_") or "_"


def _add_state(
    found: _Project,
    parts: tuple[str, ...],
    value: Any,
    report: FileReport,
    where: str,
    *,
    quiet: bool = False,
) -> bool | None:
    """Seed ``claude-flow/<parts>`` = ``value``; True when added, None when not (the reason
    is in ``report``). ``quiet``: the caller reports added keys itself."""
    segments = [_key_segment(segment) for part in parts for segment in part.split("/") if segment]
    key = "/".join((STATE_PREFIX, *segments))
    if len(key) > MAX_KEY_CHARS:
        report.skip(f"{where}: its state key would be {len(key)} characters, above {MAX_KEY_CHARS}")
        return None
    try:
        encode_value(key, value)
    except Exception as exc:  # StateError: not JSON, too large, nested too deeply
        report.skip(f"{where}: {exc}")
        return None
    if key in found.state:
        report.skip(f"{where}: its state key {key} is taken by another entry ({found.state[key][1].path})")
        return None
    found.state[key] = (value, report)
    if not quiet:
        report.became.append(f"{where} -> shared state {key}")
    return True


# --------------------------------------------------------------------------- dispatch


def _exact(*paths: str) -> Callable[[str], bool]:
    return lambda rel: rel in paths


_HANDLERS: tuple[tuple[Callable[[str], bool], str, Callable[[_Project, Path, FileReport], None]], ...] = (
    (_exact(".claude-flow/agents.json", ".claude-flow/agents/store.json"), "agent records", _agent_files),
    (_exact(".claude-flow/hive-mind/state.json"), "hive-mind session", _hive_state),
    (_exact(".claude-flow/swarm/swarm-state.json"), "swarm sessions", _swarm_state),
    (_exact(".claude-flow/tasks/store.json"), "task records", _task_store),
    (_exact(".claude-flow/workflows/store.json"), "workflows", _workflow_store),
    (
        _exact(
            ".claude-flow/config.yaml",
            ".claude-flow/config.yml",
            ".claude-flow/config.json",
            "claude-flow.config.json",
        ),
        "Claude Flow settings",
        _config_file,
    ),
    (_exact(".swarm/state.json"), "swarm settings", _swarm_config),
    (_exact(".swarm/memory.db"), "memory store (SQLite)", _memory_db),
    (
        lambda rel: rel.startswith(".hive-mind/sessions/hive-mind-prompt-") and rel.endswith(".txt"),
        "hive-mind objective prompt",
        _hive_prompt,
    ),
    (lambda rel: rel.startswith(".claude/agents/") and rel.endswith(".md"), "agent definition", _role_file),
    (
        _exact(".claude/settings.json", ".claude/settings.local.json"),
        "Claude Code settings",
        _claude_settings,
    ),
    (_exact(".mcp.json"), "MCP servers", _mcp_config),
    (_exact("CLAUDE.md"), "Claude Code instructions", _claude_md),
)


# --------------------------------------------------------------------------- assembling


def _assemble(found: _Project) -> ImportResult:
    roles = _pick_roles(found)
    members, role_of = _team(found, roles)
    tasks, placeholder = _tasks(found, role_of)
    # A folder's name need not be UTF-8 (Python holds such bytes as lone surrogates), a plan's text must.
    root = os.fsencode(found.root).decode("utf-8", "replace")
    name = f"{os.path.basename(root) or 'project'} (imported from Claude Flow)"
    plan = Plan(
        name=name[:200],
        description=f"Imported by `maos import claude-flow` from {root}.",
        tasks=tuple(tasks),
        agents=tuple(members),
    )
    validate_plan(plan, "the imported plan")  # a PlanError here is a bug of the importer
    for report in found.files:
        if report.error is None and not report.became and not report.not_converted:
            report.skip("holds no records: nothing to convert")
    if placeholder:
        found.notes.append(
            "no objective or open task was found: the plan's only task, 'objective', is a placeholder "
            "that fails; replace it, or run the team on a task in words: "
            'maos run "TASK" --team PLAN.yaml (or maos plan "TASK" to see its plan first)'
        )
    return ImportResult(
        source=found.root,
        plan=plan,
        state={key: value for key, (value, _) in found.state.items()},
        files=found.files,
        notes=found.notes,
        placeholder=placeholder,
    )


def _pick_roles(found: _Project) -> dict[str, AgentRole]:
    """Roles by name; of two files with one name the one nearer the top wins (then path
    order), as ``maos.agents.roles.load_roles`` decides."""
    chosen: dict[str, tuple[AgentRole, FileReport]] = {}
    order = sorted(found.roles, key=lambda item: (item[1].path.count("/"), item[1].path))
    for role, report in order:
        first = chosen.get(role.name)
        if first is not None:
            report.skip(
                f"role {_show(role.name)} is already defined by {first[1].path}: this file is ignored"
            )
            continue
        chosen[role.name] = (role, report)
        report.became.append(f"role {_show(role.name)}")
    if chosen:
        found.notes.append(
            f"{len(chosen)} roles from .claude/agents: MAOS reads them itself when a run starts in "
            f"{found.root} (tasks and agents name them with role:)"
        )
    return {name: role for name, (role, _) in chosen.items()}


class _Skipped:
    """Reasons to add to files' reports, at most ``MAX_LISTED`` per file and the rest counted:
    one hostile file can hold a million records."""

    def __init__(self) -> None:
        self._lines: dict[int, tuple[FileReport, list[str], list[int]]] = {}

    def add(self, report: FileReport, line: str) -> None:
        _, lines, more = self._lines.setdefault(id(report), (report, [], [0]))
        if len(lines) < MAX_LISTED:
            lines.append(line)
        else:
            more[0] += 1

    def flush(self) -> None:
        for report, lines, more in self._lines.values():
            for line in lines:
                report.skip(line)
            if more[0]:
                report.skip(f"… and {more[0]} more not converted")
        self._lines.clear()


def _team(found: _Project, roles: dict[str, AgentRole]) -> tuple[list[TeamMember], dict[str, str]]:
    """The team: one member per type, role and model (several when more than ``MAX_COUNT``
    records share them), at most ``MAX_TEAM_AGENTS`` agents in all; and the role of every
    agent record by its id (also of records left out), for the tasks assigned to them."""
    folded = {name.casefold(): name for name in roles}
    groups: dict[tuple[str, str, str | None], list[_AgentRecord]] = {}
    role_of: dict[str, str] = {}
    for record in found.agents.values():
        role = next((name for name in record.names if name in roles), None) or next(
            (folded[name.casefold()] for name in record.names if name.casefold() in folded), "general"
        )
        role_of[record.agent_id] = role
        base = _id_base(record.names[0], "agent", AGENT_ID_MAX_CHARS - 4)
        groups.setdefault((base, role, record.model), []).append(record)
    total = len(found.agents)
    if total > MAX_TEAM_AGENTS:
        found.notes.append(
            f"{total} agent records: the team keeps {MAX_TEAM_AGENTS} agents (a team's limit), each "
            "kind of agent up to an equal share; the records left out are listed with their files"
        )
    shares = _fair_shares([len(records) for records in groups.values()], MAX_TEAM_AGENTS)
    members: list[TeamMember] = []
    taken: set[str] = set()
    skipped = _Skipped()
    for ((base, role, model), records), share in zip(groups.items(), shares, strict=True):
        for same in _by_file(records[share:]):
            skipped.add(
                same[0].report,
                f"{_agents_line(same)}: left out: {total} agent records, more than a team may have "
                f"({MAX_TEAM_AGENTS})",
            )
        kept = records[:share]
        for chunk in (kept[start : start + MAX_COUNT] for start in range(0, len(kept), MAX_COUNT)):
            member_id = _unique(
                base, taken, AGENT_ID_MAX_CHARS - 4, functools.partial(_agent_ids, count=len(chunk))
            )
            try:
                member = TeamMember(id=member_id, role=role, count=len(chunk), model=model)
            except ValidationError as exc:  # the records' fields are checked as they are read
                for same in _by_file(chunk):
                    skipped.add(same[0].report, f"{_agents_line(same)}: not a team member: {_problem(exc)}")
                continue
            members.append(member)
            source = f" (.claude/agents definition {_show(role)})"
            if role == "general":
                names = ", ".join(map(_show, chunk[0].names))
                source = f" (no .claude/agents definition named {names})"
            count = f" x{len(chunk)}" if len(chunk) > 1 else ""
            for same in _by_file(chunk):
                same[0].report.became.append(
                    f"{_agents_line(same)} -> team member {member_id}{count}, role {role}{source}"
                )
    skipped.flush()
    return members, role_of


def _by_file(records: list[_AgentRecord]) -> Iterator[list[_AgentRecord]]:
    """``records`` grouped by the file they were read from, in order."""
    by_report: dict[int, list[_AgentRecord]] = {}
    for record in records:
        by_report.setdefault(id(record.report), []).append(record)
    yield from by_report.values()


def _agents_line(records: list[_AgentRecord]) -> str:
    """``3 agents 'a', 'b', 'c' (coder)``: records of one kind, the first ``MAX_LISTED`` by id."""
    ids = ", ".join(_show(record.agent_id, 40) for record in records[:MAX_LISTED])
    more = f" and {len(records) - MAX_LISTED} more" if len(records) > MAX_LISTED else ""
    noun = "agent" if len(records) == 1 else f"{len(records)} agents"
    return f"{noun} {ids}{more} ({records[0].names[0]})"


def _fair_shares(sizes: list[int], limit: int) -> list[int]:
    """How many of each group to keep so that at most ``limit`` are kept in all: every group
    keeps up to an equal share, what a smaller group leaves goes to the larger ones, and
    the first groups get what does not divide evenly. With ``limit`` groups or more, the
    first ``limit`` keep one each."""
    if sum(sizes) <= limit:
        return list(sizes)
    if len(sizes) >= limit:
        return [1] * limit + [0] * (len(sizes) - limit)
    low, high = 1, max(sizes)  # the largest equal share that fits: every group keeps one
    while low < high:
        middle = (low + high + 1) // 2
        if sum(min(size, middle) for size in sizes) <= limit:
            low = middle
        else:
            high = middle - 1
    shares = [min(size, low) for size in sizes]
    left = limit - sum(shares)  # fewer than the groups larger than the share
    for number, size in enumerate(sizes):
        if left == 0:
            break
        if size > shares[number]:
            shares[number] += 1
            left -= 1
    return shares


def _agent_ids(base: str, count: int) -> set[str]:
    return {base} if count == 1 else {f"{base}-{n}" for n in range(1, count + 1)}


def _unique(
    base: str, taken: set[str], max_chars: int, ids: Callable[[str], set[str]] = lambda ident: {ident}
) -> str:
    """``base``, or ``base-2``, ``base-3``… whose ids (``ids(candidate)``) are all free, also
    in case (ids name branches and folders, which may be case-insensitive); they are then
    taken (``taken`` holds them case-folded)."""
    candidate, number = base[:max_chars], 1
    while {ident.casefold() for ident in ids(candidate)} & taken:
        number += 1
        suffix = f"-{number}"
        candidate = base[: max_chars - len(suffix)] + suffix
    taken.update(ident.casefold() for ident in ids(candidate))
    return candidate


def _id_base(text: str, default: str, max_chars: int) -> str:
    """``text`` made a valid plan id (task or agent): other characters become ``-``, and it
    starts with a letter or digit."""
    return _ID_BAD.sub("-", text).lstrip("-_").rstrip("-")[:max_chars] or default


def _member_problem(**fields: object) -> str | None:
    """Why a team member with ``fields`` would be refused in a plan's ``agents:``, or None."""
    try:
        TeamMember.model_validate({"id": "agent", **fields})
    except ValidationError as exc:
        return _problem(exc)
    return None


def _problem(exc: ValidationError) -> str:
    """The first problem of ``exc``: ``field 'role': what is wrong``."""
    problem = exc.errors()[0]
    where = ".".join(map(str, problem["loc"])) or "value"
    return f"field {where!r}: {str(problem['msg']).removeprefix('Value error, ')}"


def _tasks(found: _Project, role_of: dict[str, str]) -> tuple[list[TaskSpec], bool]:
    """The plan's tasks, one per draft that makes a valid task, each with its own id; at most
    ``MAX_PLAN_TASKS`` and ``MAX_TASK_TEXT_BYTES`` of text. A dependency on a task left out,
    on the task itself or closing a cycle is dropped. What is left out is reported."""
    skipped = _Skipped()
    specs: dict[_TaskDraft, TaskSpec] = {}
    taken: set[str] = set()
    text_left = MAX_TASK_TEXT_BYTES
    drafts = [*found.objectives, *found.task_records.values(), *found.workflow_steps]
    for draft in drafts:
        where = f"{draft.what} {_show(draft.source_id)}"
        if len(specs) == MAX_PLAN_TASKS:
            skipped.add(
                draft.report, f"{where}: left out: the plan has {MAX_PLAN_TASKS} tasks, a plan's limit"
            )
            continue
        role = next(
            (role_of[agent] for agent in draft.assigned if role_of.get(agent, "general") != "general"),
            "general",
        )
        try:
            task = TaskSpec(
                id=_unique(_id_base(draft.source_id, "task", TASK_ID_MAX_CHARS), taken, TASK_ID_MAX_CHARS),
                title=draft.title,
                prompt=draft.prompt,
                role=role,
                kind=draft.kind[:100],
                priority=draft.priority,
            )
        except ValidationError as exc:
            skipped.add(draft.report, f"{where}: {_problem(exc)}")
            continue
        size = _text_bytes(task.prompt) + _text_bytes(task.title)
        if size > text_left:
            skipped.add(
                draft.report,
                f"{where}: left out: its text would take the plan's tasks past {MAX_TASK_TEXT_BYTES} bytes "
                f"(a plan file holds at most {MAX_PLAN_BYTES})",
            )
            continue
        text_left -= size
        specs[draft] = task
    if len(drafts) > MAX_PLAN_TASKS and len(specs) == MAX_PLAN_TASKS:
        found.notes.append(
            f"{len(drafts)} objectives, task records and workflow steps: the plan keeps the first "
            f"{MAX_PLAN_TASKS} (a plan's limit)"
        )
    depends = _dependencies(found, specs, skipped)
    tasks = [
        task.model_copy(update={"depends_on": tuple(specs[after].id for after in depends[draft])})
        for draft, task in specs.items()
    ]
    for draft, task in specs.items():
        draft.report.became.append(f"{draft.what} {_show(draft.source_id)} -> plan task {task.id!r}")
    skipped.flush()
    if tasks:
        return tasks, False
    placeholder = TaskSpec(
        id="objective",
        title="No Claude Flow objective was found: replace this task",
        prompt="Replace this placeholder with the work to do.",
        command=("sh", "-c", "echo 'maos import: no objective was imported; edit this plan' >&2; exit 1"),
        max_attempts=1,
    )
    return [placeholder], True


def _text_bytes(text: str) -> int:
    """What ``text`` may take in the plan file: its bytes, and the indent of each line of a
    YAML block."""
    return len(text.encode()) + 8 * text.count("\n")


def _dependencies(
    found: _Project, specs: dict[_TaskDraft, TaskSpec], skipped: _Skipped
) -> dict[_TaskDraft, list[_TaskDraft]]:
    """What each task depends on: the task records its record names, the workflow step before
    it. A dependency on a task left out, on the task itself, or one that would close a
    cycle is dropped and reported on the depending record's file."""
    depends: dict[_TaskDraft, list[_TaskDraft]] = {}
    for draft in specs:
        where = f"{draft.what} {_show(draft.source_id)}"
        wanted: list[tuple[str, _TaskDraft | None]] = [
            (after, found.task_records.get(after)) for after in draft.after
        ]
        if draft.follows is not None:
            wanted.append((draft.follows.source_id, draft.follows))
        kept: dict[_TaskDraft, None] = {}
        for name, after in wanted:
            if after is None or after not in specs:
                skipped.add(draft.report, f"{where}: dependency {_show(name)} not imported: dropped")
            elif after is draft:
                skipped.add(draft.report, f"{where}: depends on itself: the dependency is dropped")
            else:
                kept[after] = None
        depends[draft] = list(kept)
    _break_cycles(depends, skipped)
    return depends


def _break_cycles(depends: dict[_TaskDraft, list[_TaskDraft]], skipped: _Skipped) -> None:
    """Drop, and report, each dependency that closes a cycle: the back edges of a depth-first
    walk in the tasks' order (so of two records depending on each other, the later one's
    dependency is dropped). What is left is acyclic."""
    dropped: dict[_TaskDraft, set[int]] = {}
    done: set[_TaskDraft] = set()
    for start in depends:
        if start in done:
            continue
        path: list[_TaskDraft] = [start]  # each depends on the next
        on_path: dict[_TaskDraft, int] = {start: 0}
        next_of: list[int] = [0]
        while path:
            draft, number = path[-1], next_of[-1]
            if number == len(depends[draft]):
                path.pop()
                next_of.pop()
                del on_path[draft]
                done.add(draft)
                continue
            next_of[-1] += 1
            after = depends[draft][number]
            if after in on_path:
                first = on_path[after]
                steps: list[_TaskDraft | None] = (
                    [*path[first:], after]
                    if len(path) - first <= 5
                    else [*path[first : first + 3], None, draft, after]
                )
                shown = " -> ".join("…" if step is None else _show(step.source_id, 30) for step in steps)
                skipped.add(
                    draft.report,
                    f"{draft.what} {_show(draft.source_id)}: dependency {_show(after.source_id)} would "
                    f"close a cycle ({shown}): dropped",
                )
                dropped.setdefault(draft, set()).add(number)
            elif after not in done:
                on_path[after] = len(path)
                path.append(after)
                next_of.append(0)
    for draft, numbers in dropped.items():
        depends[draft] = [after for number, after in enumerate(depends[draft]) if number not in numbers]
