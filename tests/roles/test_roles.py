"""Loading agent roles from Claude Code's ``.claude/agents/**/*.md`` files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from maos.agents.roles import AgentRole, load_roles, parse_role, role_options

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "claude-flow-3.43-init"  # see its README
FIXTURE_AGENTS = FIXTURE / ".claude" / "agents"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def agent_file(name: str, *front: str, body: str = "You are helpful.") -> str:
    return "\n".join(["---", f"name: {name}", *front, "---", body, ""])


# --------------------------------------------------------------------------- the real fixture


def test_claude_flow_fixture_loads_every_distinct_role() -> None:
    files = sorted(FIXTURE_AGENTS.rglob("*.md"))
    assert len(files) == 98
    catalog = load_roles(FIXTURE, None)
    # 98 files define 93 names: five names are defined twice in different sub-folders.
    assert len(catalog) == 93
    assert len(catalog.problems) == 5
    assert all(
        "field 'name': role " in problem and "is already defined by" in problem
        for problem in catalog.problems
    )
    identical = [problem for problem in catalog.problems if "(an identical copy)" in problem]
    assert len(identical) == 3
    loaded = {role.source for role in catalog}
    ignored = {Path(problem.split(": field ")[0]) for problem in catalog.problems}
    assert loaded | ignored == set(files)
    assert not loaded & ignored
    # The copy nearer the top of .claude/agents wins.
    assert catalog.roles["backend-dev"].source == FIXTURE_AGENTS / "development" / "dev-backend-api.md"
    assert all(role.scope == "project" for role in catalog)


def test_fixture_fields_tools_and_prompt() -> None:
    catalog = load_roles(FIXTURE, None)
    with_tools = [role for role in catalog if role.tools is not None]
    assert len(with_tools) == 13  # 13 files have tools (github/pr-manager.md wins over its namesake)
    assert catalog.roles["pr-manager"].tools is not None
    swarm = catalog.roles["code-review-swarm"]
    assert swarm.tools is not None
    assert swarm.tools[:3] == (
        "mcp__claude-flow__swarm_init",
        "mcp__claude-flow__agent_spawn",
        "mcp__claude-flow__task_orchestrate",
    )
    assert "Bash" in swarm.tools
    coder = catalog.roles["coder"]
    assert coder.tools is None
    text = (FIXTURE_AGENTS / "core" / "coder.md").read_text(encoding="utf-8")
    assert coder.system_prompt == text.split("\n---\n", 1)[1].strip()
    assert coder.system_prompt
    assert not coder.system_prompt.startswith("---")
    # Names Claude Flow writes with spaces load as they are.
    assert "Topology Optimizer" in catalog


def test_unquoted_description_with_colons_loads_like_claude_code() -> None:
    # Strict YAML refuses this file's one-line description ("... Examples: <example>Context: ...").
    role = load_roles(FIXTURE, None).roles["code-goal-planner"]
    assert role.description.startswith("Code-centric Goal-Oriented Action Planning specialist")
    assert "Examples: <example>Context: User needs" in role.description
    assert role.system_prompt.startswith("You are a Code-Centric Goal-Oriented Action Planning")


# --------------------------------------------------------------------------- fields


def test_body_is_the_prompt_and_fields_map(tmp_path: Path) -> None:
    write(
        tmp_path / ".claude/agents/reviewer.md",
        "---\nname: reviewer\ndescription: Reviews code\ntools: Read, Grep,  Glob\nmodel: opus\n"
        "permissionMode: plan\nmaxTurns: 7\ncolor: purple\n---\n\nYou review code.\n\nBe terse.\n",
    )
    role = load_roles(tmp_path, None).roles["reviewer"]
    assert role == AgentRole(
        name="reviewer",
        description="Reviews code",
        tools=("Read", "Grep", "Glob"),
        model="opus",
        permission_mode="plan",
        max_turns=7,
        system_prompt="You review code.\n\nBe terse.",
        source=tmp_path / ".claude/agents/reviewer.md",
        scope="project",
        extra={"color": "purple"},
    )


@pytest.mark.parametrize(
    ("tools_lines", "expected"),
    [
        (["tools: Read, Edit"], ("Read", "Edit")),
        (["tools:", "  - Read", "  - Bash(git *)"], ("Read", "Bash(git *)")),
        (["tools: [Read, Edit]"], ("Read", "Edit")),
        (["tools: Read"], ("Read",)),
        (["tools: '*'"], None),
        (["tools:"], None),
        (["tools: ''"], None),
        ([], None),
        (["tools: []"], ()),
        (["tools: Read, Read, Edit"], ("Read", "Edit")),
    ],
)
def test_tools_forms(tools_lines: list[str], expected: tuple[str, ...] | None) -> None:
    role = parse_role(agent_file("r", *tools_lines), Path("r.md"))
    assert role.tools == expected


def test_windows_line_endings_and_bom() -> None:
    text = "\ufeff---\r\nname: crlf\r\nmodel: haiku\r\n---\r\nLine one.\r\nLine two.\r\n"
    role = parse_role(text, Path("crlf.md"))
    assert (role.name, role.model, role.system_prompt) == ("crlf", "haiku", "Line one.\nLine two.")


def test_max_turns_as_quoted_number() -> None:
    assert parse_role(agent_file("r", "maxTurns: '12'"), Path("r.md")).max_turns == 12


def test_role_options() -> None:
    role = parse_role(
        agent_file(
            "r", "tools: Read, mcp__github__get_issue, Bash", "model: inherit", "maxTurns: 3", body="Prompt."
        ),
        Path("r.md"),
    )
    options = role_options(role)
    assert options.append_system_prompt == "Prompt."
    assert options.allowed_tools == ("Read", "mcp__github__get_issue", "Bash")
    assert options.builtin_tools == ("Read", "Bash")
    assert options.model is None  # inherit: leave the CLI's model
    assert options.permission_mode is None
    assert options.max_turns == 3
    bare = role_options(parse_role(agent_file("b", "model: claude-opus-4-1", body=""), Path("b.md")))
    assert (bare.append_system_prompt, bare.allowed_tools, bare.builtin_tools, bare.model) == (
        None,
        None,
        None,
        "claude-opus-4-1",
    )


# --------------------------------------------------------------------------- problems


BAD_FILES = {
    "bad-tools.md": (
        agent_file("bad-tools", "tools: 5"),
        "field 'tools': expected a comma-separated string or a list, got 5",
    ),
    "bad-tools-list.md": (
        agent_file("x", "tools: [Read, 3]"),
        "field 'tools': expected a comma-separated string or a list, got ['Read', 3]",
    ),
    "no-front.md": ("# Just a heading\n\nYou are helpful.\n", "no front matter"),
    "no-name.md": ("---\ndescription: nameless\n---\nBody\n", "field 'name' is missing"),
    "empty-name.md": ("---\nname: ''\n---\nBody\n", "field 'name' is empty"),
    "number-name.md": ("---\nname: 42\n---\nBody\n", "field 'name': expected a string, got 42"),
    "unclosed.md": (
        "---\nname: open\nBody without the closing line\n",
        "front matter has no closing '---' line",
    ),
    "not-yaml.md": ("---\nname: [unclosed\n---\nBody\n", "front matter is not valid YAML"),
    "list-front.md": ("---\n- a\n- b\n---\nBody\n", "front matter must be a mapping of fields, got list"),
    "empty-front.md": ("---\n---\nBody\n", "front matter is empty"),
    "bad-turns.md": (agent_file("t", "maxTurns: 0"), "field 'maxTurns': expected a whole number >= 1, got 0"),
    "bad-mode.md": (agent_file("m", "permissionMode: yolo"), "field 'permissionMode': expected one of"),
    "bad-model.md": (agent_file("mm", "model: [opus]"), "field 'model': expected a string, got ['opus']"),
    "bad-description.md": (agent_file("d", "description: {a: 1}"), "field 'description': expected a string"),
}


def test_malformed_files_are_reported_and_the_others_load(tmp_path: Path) -> None:
    agents = tmp_path / ".claude" / "agents"
    for filename, (text, _) in BAD_FILES.items():
        write(agents / "broken" / filename, text)
    write(agents / "good.md", agent_file("good"))
    write(agents / "nested" / "deeper" / "also-good.md", agent_file("also-good"))
    (agents / "latin1.md").write_bytes(b"---\nname: caf\xe9\n---\n")
    write(agents / "notes.txt", "not an agent file")

    catalog = load_roles(tmp_path, None)

    assert sorted(catalog.roles) == ["also-good", "good"]
    assert len(catalog.problems) == len(BAD_FILES) + 1
    for filename, (_, expected) in BAD_FILES.items():
        path = agents / "broken" / filename
        found = [problem for problem in catalog.problems if problem.startswith(f"{path}: ")]
        assert len(found) == 1, (filename, catalog.problems)
        assert expected in found[0], found[0]
    assert f"{agents / 'latin1.md'}: is not UTF-8 text (byte 13)" in catalog.problems


def test_bad_yaml_problem_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / ".claude/agents/x.md", "---\nname: x\ntools: [Read\n---\nBody\n")
    (problem,) = load_roles(tmp_path, None).problems
    assert problem.startswith(f"{path}: front matter is not valid YAML: ")
    assert "(front matter line" in problem


def test_duplicate_names_in_one_folder(tmp_path: Path) -> None:
    agents = tmp_path / ".claude" / "agents"
    write(agents / "z-top.md", agent_file("dup", body="top"))
    write(agents / "a" / "dup.md", agent_file("dup", body="nested"))
    write(agents / "b" / "dup.md", agent_file("dup", body="top"))
    catalog = load_roles(tmp_path, None)
    assert catalog.roles["dup"].system_prompt == "top"
    assert catalog.roles["dup"].source == agents / "z-top.md"
    assert catalog.problems == [
        f"{agents / 'a/dup.md'}: field 'name': role 'dup' is already defined by {agents / 'z-top.md'}; "
        "this file is ignored",
        f"{agents / 'b/dup.md'}: field 'name': role 'dup' is already defined by {agents / 'z-top.md'} "
        "(an identical copy); this file is ignored",
    ]


# --------------------------------------------------------------------------- folders


def test_project_overrides_user(tmp_path: Path) -> None:
    project, user = tmp_path / "project", tmp_path / "home" / ".claude"
    write(
        project / ".claude/agents/reviewer.md", agent_file("reviewer", "model: opus", body="project prompt")
    )
    user_reviewer = write(
        user / "agents/reviewer.md", agent_file("reviewer", "model: haiku", body="user prompt")
    )
    write(user / "agents/personal/helper.md", agent_file("helper", body="user helper"))

    catalog = load_roles(project, user)

    assert catalog.roles["reviewer"].system_prompt == "project prompt"
    assert catalog.roles["reviewer"].scope == "project"
    assert catalog.roles["helper"].scope == "user"
    assert catalog.overridden == {"reviewer": user_reviewer}
    assert catalog.problems == []
    assert [role.name for role in catalog] == ["helper", "reviewer"]
    assert catalog.get("missing") is None
    assert "helper" in catalog


def test_default_user_dir_is_claude_config_dir_or_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    write(tmp_path / "home/.claude/agents/a.md", agent_file("from-home"))
    write(tmp_path / "config/agents/b.md", agent_file("from-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    assert list(load_roles(project).roles) == ["from-home"]
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "config"))
    assert list(load_roles(project).roles) == ["from-config"]
    assert list(load_roles(project, None).roles) == []


def test_missing_folders_load_nothing(tmp_path: Path) -> None:
    catalog = load_roles(tmp_path / "nowhere", tmp_path / "nobody")
    assert (len(catalog), catalog.problems) == (0, [])


def test_symlinked_folders_are_followed_once(tmp_path: Path) -> None:
    agents = tmp_path / ".claude" / "agents"
    shared = tmp_path / "shared-agents"
    write(shared / "linked.md", agent_file("linked"))
    agents.mkdir(parents=True)
    os.symlink(shared, agents / "shared")
    os.symlink(agents, agents / "loop")  # a cycle must not hang the walk
    catalog = load_roles(tmp_path, None)
    assert sorted(catalog.roles) == ["linked"]
    assert catalog.problems == []


def test_a_project_cannot_link_roles_from_outside_it(tmp_path: Path) -> None:
    """A cloned project's ``.claude/agents/ext -> /elsewhere`` would plant a role (its body
    becomes an agent's system prompt) from anywhere, and a link to ``/`` made every run walk
    the whole file system. Links leaving the project are named and not followed; the user's
    own folder may link where it likes."""
    project = tmp_path / "project"
    outside = tmp_path / "outside"
    write(outside / "general.md", agent_file("general", body="SECRET FROM OUTSIDE"))
    agents = project / ".claude" / "agents"
    write(agents / "mine.md", agent_file("mine"))
    os.symlink(outside, agents / "ext")
    os.symlink(outside / "general.md", agents / "planted.md")
    os.symlink("/", agents / "root")
    catalog = load_roles(project, None)
    assert sorted(catalog.roles) == ["mine"]
    assert len(catalog.problems) == 3
    assert all("outside the project" in problem and "not followed" in problem for problem in catalog.problems)
    user = tmp_path / "user"
    (user / "agents").mkdir(parents=True)
    os.symlink(outside, user / "agents" / "dotfiles")
    assert sorted(load_roles(tmp_path / "empty", user).roles) == ["general"]


def test_resolve_prefers_the_task_role(tmp_path: Path) -> None:
    write(tmp_path / ".claude/agents/reviewer.md", agent_file("reviewer"))
    write(tmp_path / ".claude/agents/coder.md", agent_file("coder"))
    catalog = load_roles(tmp_path, None)
    assert catalog.resolve("reviewer", "coder") is catalog.roles["reviewer"]
    assert catalog.resolve("general", "coder") is catalog.roles["coder"]
    assert catalog.resolve("reviewer") is catalog.roles["reviewer"]
    assert catalog.resolve("general") is None
    assert catalog.resolve("unknown", "general") is None
