"""Agent roles from Claude Code's own agent definition files (``.claude/agents/**/*.md``).

A definition file is YAML front matter between two ``---`` lines, then a Markdown body::

    ---
    name: reviewer
    description: Reviews code for bugs and style
    tools: Read, Grep, Glob          # or a YAML list; omitted = every tool
    model: sonnet                    # sonnet | opus | haiku | inherit | a model id
    permissionMode: plan             # optional
    maxTurns: 20                     # optional
    ---
    You are a careful code reviewer. ...   <- the body is the system prompt

``load_roles`` reads ``<project>/.claude/agents`` and ``<user>/agents`` (user: ``~/.claude``,
or ``$CLAUDE_CONFIG_DIR`` as Claude Code does), both recursively. A plan task with
``role: reviewer`` then runs with that file's prompt, tools and model (``role_options``).

Rules, in the order they apply:

- A file that cannot be used is a *problem* (one line: ``PATH: what is wrong``, naming the
  field when one is at fault); the other files still load. Problems: unreadable or non-UTF-8
  file, no front matter, front matter that is not YAML or not a mapping, no ``name``, and a
  known field of the wrong type or value.
- Front matter that strict YAML refuses only because an unquoted value contains ``: `` (Claude
  Code's ``/agents`` wizard writes descriptions like ``... Examples: <example>Context: ...``)
  is read again with such one-line values quoted, as Claude Code reads it.
- Keys other than the six known ones (``color``, ``hooks``, ...) are kept in ``extra``; Claude
  Code ignores what it does not know, and so does MAOS, except ``maos:``: MAOS's own settings
  of the role, today ``grants`` (what its agents may do through the door, ``maos.permissions``)::

      maos:
        grants:
          state_write: ["review/*"]
          add_task: false

  A malformed ``maos:`` is a problem of the file; ``role_grants`` gives the grants.
- Two files of one folder (project or user) with the same ``name``: the one nearer the folder's
  top wins (then the first in path order); the other is reported as a problem.
- A project role overrides a user role of the same name (``RoleCatalog.overridden`` lists the
  user files hidden that way).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

import yaml

from maos.documents import DocumentError, load_yaml, read_document
from maos.model import AgentRole, PermissionMode
from maos.permissions import Grants

__all__ = [
    "KNOWN_FIELDS",
    "AgentRole",
    "RoleCatalog",
    "RoleOptions",
    "agents_dirs",
    "default_user_dir",
    "load_roles",
    "parse_role",
    "role_grants",
    "role_options",
]

Scope = Literal["project", "user"]
GENERAL_ROLE = "general"  # the default role of tasks and agents (``maos.model``)

KNOWN_FIELDS = ("name", "description", "tools", "model", "permissionMode", "maxTurns")
_PERMISSION_MODES: tuple[str, ...] = get_args(PermissionMode)
_ALL_TOOLS = "*"

MAX_ROLE_FILE_BYTES = 256 * 1024
MAX_SYSTEM_PROMPT_BYTES = 64 * 1024
"""The body goes on the agent's command line (``--append-system-prompt``), where Linux
refuses a single argument over 128 KiB."""

# A top-level ``key: value`` line whose value is a plain (unquoted, one-line) scalar.
_PLAIN_LINE_RE = re.compile(r"^(?P<key>[A-Za-z_][\w-]*):[ \t]+(?P<value>[^\s'\"\[{|>&*!%@`#].*?)[ \t]*$")


@dataclass(frozen=True, slots=True)
class RoleOptions:
    """What the Claude Code runtime needs to run an agent as a role.

    - ``append_system_prompt``: the role's prompt, added to Claude Code's own system prompt
      (``--append-system-prompt``; in the SDK ``system_prompt={"type": "preset", "preset":
      "claude_code", "append": ...}``). None when the body is empty.
    - ``allowed_tools``: the role's tools, None for "all tools" (leave the CLI's default).
      Claude Code treats a subagent's ``tools`` as the set it *has*: pass the built-in names
      (``builtin_tools``) to ``--tools`` and all of them to ``--allowedTools``.
    - ``model``: for ``--model``; None for ``inherit`` or no model (the CLI's default).
    - ``permission_mode``, ``max_turns``: for ``--permission-mode`` and ``--max-turns``.
    """

    append_system_prompt: str | None
    allowed_tools: tuple[str, ...] | None
    model: str | None
    permission_mode: PermissionMode | None
    max_turns: int | None

    @property
    def builtin_tools(self) -> tuple[str, ...] | None:
        """The non-MCP names of ``allowed_tools`` (MCP tools are named ``mcp__server__tool``)."""
        if self.allowed_tools is None:
            return None
        return tuple(name for name in self.allowed_tools if not name.startswith("mcp__"))


def role_options(role: AgentRole) -> RoleOptions:
    """The runtime settings of ``role`` (see ``RoleOptions``)."""
    return RoleOptions(
        append_system_prompt=role.system_prompt or None,
        allowed_tools=role.tools,
        model=None if role.model in (None, "inherit") else role.model,
        permission_mode=role.permission_mode,
        max_turns=role.max_turns,
    )


@dataclass
class RoleCatalog:
    """The roles found, by name, and the problems with the files that did not load."""

    roles: dict[str, AgentRole] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    overridden: dict[str, Path] = field(default_factory=dict)
    """Role name -> the user file hidden by a project file of that name."""

    def get(self, name: str) -> AgentRole | None:
        return self.roles.get(name)

    def resolve(self, task_role: str, agent_role: str = GENERAL_ROLE) -> AgentRole | None:
        """The role an attempt runs as: the task's ``role`` when a file defines it, else the
        agent's own role when a file defines that, else None (plain Claude Code)."""
        return self.roles.get(task_role) or self.roles.get(agent_role)

    def __contains__(self, name: object) -> bool:
        return name in self.roles

    def __len__(self) -> int:
        return len(self.roles)

    def __iter__(self) -> Iterator[AgentRole]:
        """Roles sorted by name (case-insensitively)."""
        return iter(sorted(self.roles.values(), key=lambda role: (role.name.casefold(), role.name)))


# --------------------------------------------------------------------------- folders


def default_user_dir() -> Path:
    """Claude Code's user folder: ``$CLAUDE_CONFIG_DIR`` or ``~/.claude``."""
    configured = os.environ.get("CLAUDE_CONFIG_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".claude"


def agents_dirs(
    project_dir: Path | None, user_dir: Path | Literal["default"] | None = "default"
) -> list[tuple[Scope, Path]]:
    """The agent folders ``load_roles`` reads, user first (project wins on a clash)."""
    found: list[tuple[Scope, Path]] = []
    user = default_user_dir() if user_dir == "default" else user_dir
    if user is not None:
        found.append(("user", user / "agents"))
    if project_dir is not None:
        found.append(("project", project_dir / ".claude" / "agents"))
    return found


def _markdown_files(top: Path, problems: list[str], *, within: Path | None) -> list[Path]:
    """Every ``*.md`` file under ``top``, by relative path, following symlinked folders and
    files once. With ``within`` (the project), only links that stay inside it are followed:
    a project cloned from elsewhere must not make MAOS read a role (its prompt, its tools)
    from anywhere on the machine, nor walk ``/``. The user's own folder is the user's."""
    if not top.is_dir():
        return []
    home = None if within is None else os.path.realpath(within)
    found: list[Path] = []
    seen: set[str] = set()

    def followed(path: str) -> bool:
        if home is None:
            return True
        real = os.path.realpath(path)
        if real == home or real.startswith(home + os.sep):
            return True
        problems.append(f"{path}: a link to {real}, outside the project {home}; not followed")
        return False

    for folder, subfolders, files in os.walk(top, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a symlink loop, or a folder reached twice
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = [name for name in subfolders if followed(os.path.join(folder, name))]
        found.extend(
            Path(folder) / name
            for name in files
            if name.endswith(".md") and followed(os.path.join(folder, name))
        )
    return sorted(
        found, key=lambda path: (len(path.relative_to(top).parts), path.relative_to(top).as_posix())
    )


# --------------------------------------------------------------------------- parsing


class _FileProblem(Exception):
    """One thing wrong with one file (internal; becomes a ``RoleCatalog.problems`` line)."""


def _field_problem(name: str, expected: str, got: object) -> _FileProblem:
    return _FileProblem(f"field {name!r}: expected {expected}, got {got!r}")


def _split_front_matter(text: str) -> tuple[str, str]:
    lines = text.split("\n")
    if not lines or lines[0].rstrip() != "---":
        raise _FileProblem("no front matter (the file must start with a '---' line)")
    for number in range(1, len(lines)):
        if lines[number].rstrip() == "---":
            return "\n".join(lines[1:number]), "\n".join(lines[number + 1 :])
    raise _FileProblem("front matter has no closing '---' line")


def _quote_plain_values(front: str) -> str:
    """Single-quote every one-line plain value of a top-level key (see the module docstring)."""
    out: list[str] = []
    for line in front.split("\n"):
        match = _PLAIN_LINE_RE.match(line)
        if match is None:
            out.append(line)
            continue
        value = match.group("value").replace("'", "''")
        out.append(f"{match.group('key')}: '{value}'")
    return "\n".join(out)


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
    where = f" (front matter line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"front matter is not valid YAML: {problem}{where}"


def _load_front(front: str) -> dict[str, Any]:
    try:
        try:
            data = load_yaml(front, unique_keys=False)
        except yaml.YAMLError as exc:
            try:
                data = load_yaml(_quote_plain_values(front), unique_keys=False)
            except yaml.YAMLError:
                raise _FileProblem(_yaml_error(exc)) from None
    except DocumentError as exc:  # too deep, too many aliases: never retried
        raise _FileProblem(f"front matter is refused: {exc}") from None
    if data is None:
        raise _FileProblem("front matter is empty (field 'name' is required)")
    if not isinstance(data, dict):
        raise _FileProblem(f"front matter must be a mapping of fields, got {type(data).__name__}")
    return {str(key): value for key, value in data.items()}


def _text(data: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise _FileProblem(f"field {name!r} is missing")
        return None
    if not isinstance(value, str):
        raise _field_problem(name, "a string", value)
    value = value.strip()
    if not value and required:
        raise _FileProblem(f"field {name!r} is empty")
    return value


def _tools(value: object) -> tuple[str, ...] | None:
    """``"Read, Grep"`` or ``[Read, Grep]``; None, ``""`` and ``"*"`` mean every tool."""
    if value is None:
        return None
    if isinstance(value, str):
        names = [part.strip() for part in value.split(",")]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        names = [item.strip() for item in value]
    else:
        raise _field_problem("tools", "a comma-separated string or a list", value)
    names = [name for name in names if name]
    if isinstance(value, str) and not names:
        return None
    if names == [_ALL_TOOLS]:
        return None
    return tuple(dict.fromkeys(names))


def _max_turns(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _field_problem("maxTurns", "a whole number >= 1", value)
    return value


def _permission_mode(value: object) -> PermissionMode | None:
    if value is None:
        return None
    if value not in _PERMISSION_MODES:
        raise _field_problem("permissionMode", "one of " + ", ".join(_PERMISSION_MODES), value)
    return cast("PermissionMode", value)  # checked against the Literal's values just above


def parse_role(text: str, source: Path, scope: Scope = "project") -> AgentRole:
    """Build a role from a definition file's text; raise ``ValueError`` naming what is wrong
    (without the path: ``load_roles`` adds it)."""
    try:
        return _parse(text, source, scope)
    except _FileProblem as exc:
        raise ValueError(str(exc)) from None


def _parse(text: str, source: Path, scope: Scope) -> AgentRole:
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    front, body = _split_front_matter(text)
    data = _load_front(front)
    name = _text(data, "name", required=True)
    assert name is not None
    description = _text(data, "description") or ""
    model = _text(data, "model") or None
    system_prompt = body.strip()
    size = len(system_prompt.encode("utf-8", "surrogatepass"))
    if size > MAX_SYSTEM_PROMPT_BYTES:
        raise _FileProblem(
            f"the body (the role's system prompt) is {size} bytes, more than the limit of "
            f"{MAX_SYSTEM_PROMPT_BYTES}: it goes on the agent's command line"
        )
    tools = _tools(data.get("tools"))
    _maos_settings(data.get("maos"))
    for key, value in (
        ("name", name),
        ("model", model or ""),
        ("tools", "".join(tools or ())),
        ("body", system_prompt),
    ):
        if "\x00" in value:
            raise _FileProblem(f"field {key!r}: must not contain a NUL byte (no process can receive one)")
    return AgentRole(
        name=name,
        description=description,
        tools=tools,
        model=model,
        permission_mode=_permission_mode(data.get("permissionMode")),
        max_turns=_max_turns(data.get("maxTurns")),
        system_prompt=system_prompt,
        source=source,
        scope=scope,
        extra={key: value for key, value in data.items() if key not in KNOWN_FIELDS},
    )


MAOS_FIELDS = ("grants",)
"""What a role file's ``maos:`` mapping may hold."""


def _maos_settings(value: object) -> Grants | None:
    """The grants of a ``maos:`` front-matter value (None if absent); ``_FileProblem`` if bad."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _field_problem("maos", f"a mapping of {', '.join(MAOS_FIELDS)}", value)
    unknown = [str(key) for key in value if key not in MAOS_FIELDS]
    if unknown:
        known = ", ".join(MAOS_FIELDS)
        raise _FileProblem(f"field 'maos': unknown setting(s) {', '.join(unknown)} (known: {known})")
    if value.get("grants") is None:
        return None
    try:
        return Grants.from_dict(value["grants"])
    except (TypeError, ValueError) as exc:
        raise _FileProblem(f"field 'maos.grants': {exc}") from None


def role_grants(role: AgentRole | None) -> Grants | None:
    """The grants a role's file declares under ``maos: grants:``, if any (checked on load)."""
    if role is None:
        return None
    return _maos_settings(role.extra.get("maos"))


def _read(path: Path, scope: Scope) -> AgentRole:
    try:
        raw = read_document(path, max_bytes=MAX_ROLE_FILE_BYTES)
    except DocumentError as exc:
        message = str(exc)
        raise _FileProblem(message.replace("cannot read the file", "cannot be read")) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _FileProblem(f"is not UTF-8 text (byte {exc.start})") from None
    return _parse(text, path, scope)


# --------------------------------------------------------------------------- loading


def _same_bytes(one: Path, other: Path) -> bool:
    try:
        return read_document(one, max_bytes=MAX_ROLE_FILE_BYTES) == read_document(
            other, max_bytes=MAX_ROLE_FILE_BYTES
        )
    except DocumentError:
        return False


def _load_folder(top: Path, scope: Scope, problems: list[str]) -> dict[str, AgentRole]:
    roles: dict[str, AgentRole] = {}
    within = top.parent.parent if scope == "project" else None  # PROJECT/.claude/agents
    for path in _markdown_files(top, problems, within=within):
        try:
            role = _read(path, scope)
        except _FileProblem as exc:
            problems.append(f"{path}: {exc}")
            continue
        first = roles.get(role.name)
        if first is not None:
            copy = " (an identical copy)" if _same_bytes(path, first.source) else ""
            problems.append(
                f"{path}: field 'name': role {role.name!r} is already defined by {first.source}"
                f"{copy}; this file is ignored"
            )
            continue
        roles[role.name] = role
    return roles


def load_roles(project_dir: Path, user_dir: Path | Literal["default"] | None = "default") -> RoleCatalog:
    """Read every agent definition of the project and of the user (see the module docstring).

    ``user_dir``: Claude Code's user folder (the one holding ``agents/``); ``"default"`` is
    ``$CLAUDE_CONFIG_DIR`` or ``~/.claude``; None reads the project folder only. Never raises
    for a bad file: ``RoleCatalog.problems`` lists them.
    """
    catalog = RoleCatalog()
    for scope, top in agents_dirs(project_dir, user_dir):
        for name, role in _load_folder(top, scope, catalog.problems).items():
            previous = catalog.roles.get(name)
            if previous is not None and previous.scope == "user" and scope == "project":
                catalog.overridden[name] = previous.source
            catalog.roles[name] = role
    return catalog
