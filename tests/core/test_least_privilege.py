"""Least privilege for agents (issue 13 items 3 and 5): an agent's environment is an allowlist,
and what MAOS writes under ``.maos/`` is its owner's only, whatever the umask. Real runs of
the real CLI (``python -m maos run``), real agent processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from maos.agents.environment import agent_environment, pass_through
from maos.filemodes import open_private, private_dir, tighten, write_private
from maos.model import RunConfig, TaskSpec
from maos.security import format_key, generate_key

SECRETS = {
    "MAOS_KEY": format_key(generate_key()),
    "MAOS_OLD_KEYS": format_key(generate_key()),
    "MAOS_DASHBOARD_TOKEN": "dash-secret-token",
    "SECRET_CANARY": "xyz",
}


def maos(
    cwd: Path, *args: str, umask: int | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    def preexec() -> None:
        if umask is not None:
            os.umask(umask)

    return subprocess.run(
        [sys.executable, "-m", "maos", *args],
        cwd=cwd,
        env={**os.environ, **SECRETS, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=preexec,
    )


def dumped_env(path: Path) -> dict[str, str]:
    """``env -0`` output as a dict."""
    items = [item for item in path.read_bytes().split(b"\0") if item]
    return dict(item.decode().split("=", 1) for item in items)


def write_plan(workdir: Path, **task: object) -> Path:
    plan = {
        "name": "env",
        "tasks": [{"id": "dump", "command": f"env -0 > {workdir / 'env.bin'}", "isolation": "none", **task}],
    }
    path = workdir / "plan.json"
    path.write_text(json.dumps(plan))
    return path


# --------------------------------------------------------------------------- the allowlist


def test_agent_environment_keeps_only_what_agents_need() -> None:
    base = {
        "PATH": "/bin",
        "HOME": "/h",
        "LC_ALL": "C",
        "TERM": "xterm",
        "ANTHROPIC_API_KEY": "sk",
        "CLAUDE_CODE_USE_BEDROCK": "1",
        "AWS_REGION": "eu",
        "GOOGLE_CLOUD_PROJECT": "p",
        "HTTPS_PROXY": "http://proxy",
        "GITHUB_TOKEN": "gh",
        **SECRETS,
    }
    own = {"MAOS_RUN_ID": "r", "MAOS_AGENT_TOKEN": "t", "MAOS_KEY": "named"}
    command = agent_environment(own, base=base)
    assert command == {
        "PATH": "/bin",
        "HOME": "/h",
        "LC_ALL": "C",
        "TERM": "xterm",
        "MAOS_RUN_ID": "r",
        "MAOS_AGENT_TOKEN": "t",
    }
    claude = agent_environment(own, claude=True, base=base, extra={"CLAUDE_CONFIG_DIR": "/c"})
    assert claude["ANTHROPIC_API_KEY"] == "sk"
    assert claude["AWS_REGION"] == "eu"  # Bedrock is on
    assert claude["HTTPS_PROXY"] == "http://proxy"
    assert claude["CLAUDE_CONFIG_DIR"] == "/c"
    for name in ("GOOGLE_CLOUD_PROJECT", "GITHUB_TOKEN", *SECRETS):
        assert name not in claude  # Vertex is off; the rest was never allowed
    assert "AWS_REGION" not in agent_environment({}, claude=True, base={"AWS_REGION": "eu"})
    assert pass_through(["SECRET_CANARY", "MAOS_KEY", "UNSET"], base=base) == {"SECRET_CANARY": "xyz"}


def test_secrets_cannot_be_named() -> None:
    for name in ("MAOS_KEY", "MAOS_OLD_KEYS", "MAOS_DASHBOARD_TOKEN", "NOT-A-NAME"):
        with pytest.raises(ValueError, match=r"never passed|not an environment variable name"):
            TaskSpec(id="t", command="true", pass_env=(name,))
        with pytest.raises(ValueError, match=r"never passed|not an environment variable name"):
            RunConfig(workdir=".", pass_env=(name,))


def test_each_agent_start_sees_this_process_environment_as_it_is_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The allowed part of the environment is remembered per environment: a change (set,
    changed, removed, a secret added) is in the next agent's environment at once."""
    monkeypatch.setenv("LC_MAOS_TEST", "one")
    assert agent_environment({})["LC_MAOS_TEST"] == "one"
    monkeypatch.setenv("LC_MAOS_TEST", "two")
    assert agent_environment({})["LC_MAOS_TEST"] == "two"
    monkeypatch.delenv("LC_MAOS_TEST")
    assert "LC_MAOS_TEST" not in agent_environment({})
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    assert agent_environment({}, claude=True)["ANTHROPIC_API_KEY"] == "sk-test"
    assert "ANTHROPIC_API_KEY" not in agent_environment({})
    first = agent_environment({"MAOS_TASK_ID": "a"})
    first["PATH"] = "changed by a caller"
    assert agent_environment({})["PATH"] == os.environ["PATH"]  # callers get a copy


def test_a_command_agent_gets_no_secret_and_only_what_is_passed(tmp_path: Path) -> None:
    plan = write_plan(tmp_path)
    done = maos(tmp_path, "run", str(plan))
    assert done.returncode == 0, done.stderr
    env = dumped_env(tmp_path / "env.bin")
    for name in SECRETS:
        assert name not in env, name
    assert env["MAOS_TASK_ID"] == "dump"
    assert env["MAOS_AGENT_TOKEN"]
    assert set(env) <= {
        *("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LANGUAGE", "TZ", "TMPDIR"),
        *(name for name in env if name.startswith(("LC_", "MAOS_"))),
        *("PWD", "SHLVL", "_", "OLDPWD"),  # sh sets these itself
    }, sorted(env)

    done = maos(tmp_path, "run", str(plan), "--pass-env", "SECRET_CANARY,MAOS_KEY_NOT")
    assert done.returncode == 0, done.stderr
    env = dumped_env(tmp_path / "env.bin")
    assert env["SECRET_CANARY"] == "xyz"
    assert "MAOS_KEY" not in env

    by_plan = write_plan(tmp_path, pass_env=["SECRET_CANARY"])
    assert maos(tmp_path, "run", str(by_plan)).returncode == 0
    assert dumped_env(tmp_path / "env.bin")["SECRET_CANARY"] == "xyz"

    refused = maos(tmp_path, "run", str(plan), "--pass-env", "MAOS_KEY")
    assert refused.returncode == 2
    assert "MAOS_KEY is never passed to agents" in refused.stderr


def test_what_an_agent_plants_in_git_never_runs_with_maos_secrets(tmp_path: Path) -> None:
    """A worktree agent can write the repository's ``.git``: the hooks it plants and a filter
    driver it configures run when MAOS commits, merges and checks out its work (hooks are the
    repository's policy), but with the agent allowlist, never MAOS's environment."""
    repo = tmp_path / "repo"
    repo.mkdir()
    author = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / ".gitignore").write_text("plan.json\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", *author, "commit", "-qm", "init"], cwd=repo, check=True)
    spied = tmp_path / "spied"
    spied.mkdir()
    hooks = ("pre-commit", "commit-msg", "post-commit", "post-merge", "post-checkout")
    plant = (
        "common=$(git rev-parse --git-common-dir); "
        f"for hook in {' '.join(hooks)}; do "
        f'printf "#!/bin/sh\\nenv -0 > {spied}/$hook\\n" > "$common/hooks/$hook"; '
        'chmod +x "$common/hooks/$hook"; done; '
        f"git config filter.spy.clean 'env -0 > {spied}/filter; cat'; "
        'echo "*.txt filter=spy" > .gitattributes; echo work > work.txt'
    )
    plan = {
        "name": "plant",
        "tasks": [
            {"id": "plant", "command": plant, "isolation": "worktree"},
            {
                "id": "after",
                "command": "echo more > more.txt",
                "isolation": "worktree",
                "depends_on": ["plant"],
            },
        ],
    }
    (repo / "plan.json").write_text(json.dumps(plan))
    done = maos(repo, "run", "plan.json", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"] == {"succeeded": 2}
    assert sorted(path.name for path in spied.iterdir()) == sorted([*hooks, "filter"])  # all ran
    for dump in spied.iterdir():
        env = dumped_env(dump)
        assert "PATH" in env
        for name in SECRETS:
            assert name not in env, (dump.name, name)
    branches = subprocess.run(
        ["git", "branch", "--list", "maos/*"], cwd=repo, capture_output=True, text=True, check=True
    )
    [integration] = [line.strip() for line in branches.stdout.splitlines() if "/tasks/" not in line]
    shown = subprocess.run(
        ["git", "show", f"{integration}:work.txt"], cwd=repo, capture_output=True, text=True, check=True
    )
    assert shown.stdout == "work\n"  # the work itself was merged


def test_an_agent_that_repoints_its_worktree_cannot_make_maos_commit_elsewhere(tmp_path: Path) -> None:
    """A worktree's ``.git`` file is the agent's to rewrite (an edit-only agent can): pointed at
    the user's checkout, MAOS still commits the work to the task's branch, never on the user's
    branch, and the user's checkout stays as it was."""
    repo = tmp_path / "repo"
    repo.mkdir()
    author = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "README").write_text("orig\n")
    (repo / ".gitignore").write_text("plan.json\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", *author, "commit", "-qm", "init"], cwd=repo, check=True)
    repoint = f"printf 'gitdir: {repo}/.git\\n' > .git; echo agent > README; echo work > work.txt"
    plan = {
        "name": "repoint",
        "tasks": [
            {"id": "repoint", "command": repoint, "isolation": "worktree"},
            {
                "id": "after",
                "command": "cat work.txt README > seen.txt",
                "isolation": "worktree",
                "depends_on": ["repoint"],
            },
        ],
    }
    (repo / "plan.json").write_text(json.dumps(plan))
    done = maos(repo, "run", "plan.json", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    assert json.loads(done.stdout)["counts"] == {"succeeded": 2}

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout

    assert git("log", "--format=%s", "main").split("\n")[:1] == ["init"]  # nothing on the user's branch
    assert git("status", "--porcelain") == ""
    assert (repo / "README").read_text() == "orig\n"
    [integration] = [
        line.strip() for line in git("branch", "--list", "maos/*").splitlines() if "/tasks/" not in line
    ]
    assert git("show", f"{integration}:seen.txt") == "work\nagent\n"  # the work went where it belongs


# --------------------------------------------------------------------------- file modes


def loose_files(root: Path) -> list[str]:
    """Everything under ``root`` that is not a 0700 folder or a 0600 file."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink():
            continue
        want = 0o700 if path.is_dir() else 0o600
        if mode != want:
            found.append(f"{path.relative_to(root.parent)} {mode:03o}")
    return found


def test_helpers_set_modes_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        folder = private_dir(tmp_path / "a" / "b")
        write_private(folder / "f", "x")
        with open_private(folder / "g", "ab") as file:
            file.write(b"y")
        (folder / "loose").write_text("z")
        os.mkdir(folder / "open", 0o777)
    finally:
        os.umask(old)
    assert sorted(loose_files(tmp_path / "a")) == ["a/b/loose 666", "a/b/open 777"]
    tighten(tmp_path / "a")
    assert loose_files(tmp_path / "a") == []


def test_tighten_follows_no_symlink_not_even_its_root(tmp_path: Path) -> None:
    """An agent that replaces its config folder (which MAOS tightens after each attempt) or
    a folder or file in it by a link to elsewhere does not get that tree chmodded."""
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "tool.sh").write_text("#!/bin/sh\n")
    (victim / "tool.sh").chmod(0o755)
    (victim / "sub").chmod(0o755)
    (victim / "shared.txt").write_text("x")
    (victim / "shared.txt").chmod(0o644)
    config = tmp_path / "config"
    config.symlink_to(victim)
    tighten(config)
    inside = tmp_path / "inside"
    inside.mkdir(mode=0o755)
    (inside / "folder").symlink_to(victim / "sub")
    (inside / "file").symlink_to(victim / "tool.sh")
    tighten(inside)
    assert stat.S_IMODE(inside.stat().st_mode) == 0o700
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in [victim, *victim.iterdir()]}
    assert modes["tool.sh"] == 0o755
    assert modes["sub"] == 0o755
    assert modes["shared.txt"] == 0o644


def test_a_symlink_where_maos_writes_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    link = tmp_path / "t.2.out"
    link.symlink_to(victim)
    with open_private(link, "wb") as file:
        file.write(b"output")
    assert victim.read_text() == "keep me\n"
    assert not link.is_symlink()
    assert link.read_bytes() == b"output"
    assert stat.S_IMODE(link.stat().st_mode) == 0o600


def test_an_agent_cannot_make_maos_overwrite_a_file_through_its_outputs(tmp_path: Path) -> None:
    """Task a plants symlinks where task b's output, stderr and prompt files will be written;
    MAOS replaces them and the files they point at are untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    plant = (
        'run="$PWD/.maos/runs/$MAOS_RUN_ID"; mkdir -p "$run/outputs" "$run/prompts"; '
        "for f in outputs/b.1.out outputs/b.1.err prompts/b.1.prompt; "
        'do ln -s "$PWD/victim.txt" "$run/$f"; done'
    )
    plan = {
        "name": "plant",
        "tasks": [
            {"id": "a", "command": plant},
            {"id": "b", "prompt": "hello", "command": "cat; echo b-out; echo b-err >&2", "depends_on": ["a"]},
        ],
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    done = maos(tmp_path, "run", "plan.json", "--json", umask=0o022, env={"MAOS_KEY": ""})
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "keep me\n"
    run_id = json.loads(done.stdout)["run_id"]
    outputs = tmp_path / ".maos" / "runs" / run_id / "outputs"
    assert (outputs / "b.1.out").read_text() == "hellob-out\n"
    assert "b-err" in (outputs / "b.1.err").read_text()


def test_an_agent_cannot_make_maos_fill_a_file_through_a_hard_link_at_its_own_output(tmp_path: Path) -> None:
    """A file's output is created at its first byte (ADR 0023), so an agent may plant a hard
    link (or a symlink) at its own .out and .err before it prints: MAOS makes new files there,
    and the files linked to are untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    plant = (
        'out="$PWD/.maos/runs/$MAOS_RUN_ID/outputs"; '
        'ln "$PWD/victim.txt" "$out/a.1.out"; ln -s "$PWD/victim.txt" "$out/a.1.err"; '
        "echo a-out; echo a-err >&2"
    )
    plan = {"name": "plant", "tasks": [{"id": "a", "command": plant}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    done = maos(tmp_path, "run", "plan.json", "--json", umask=0o022, env={"MAOS_KEY": ""})
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "keep me\n"
    outputs = tmp_path / ".maos" / "runs" / json.loads(done.stdout)["run_id"] / "outputs"
    assert (outputs / "a.1.out").read_text() == "a-out\n"
    assert "a-err" in (outputs / "a.1.err").read_text()
    assert (outputs / "a.1.out").stat().st_nlink == 1


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_everything_under_maos_is_private(tmp_path: Path, umask: int) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "base.txt").write_text("base\n")
    git(tmp_path, "add", "base.txt")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    plan = {
        "name": "modes",
        "tasks": [
            {"id": "a", "command": "echo a > a.txt; sleep 1.5; echo out-a", "isolation": "worktree"},
            {
                "id": "b",
                "command": "cat $MAOS_PROMPT_FILE; echo out-b",
                "depends_on": ["a"],
                "isolation": "none",
            },
        ],
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    env = {"MAOS_KEY": ""}  # the key file .maos/key is created
    done = maos(tmp_path, "run", "plan.json", "--checkpoint-every-s", "1", umask=umask, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / ".maos" / "maos.db").exists()
    assert list((tmp_path / ".maos" / "checkpoints").rglob("*"))
    assert list((tmp_path / ".maos").rglob("REPORT.md"))
    assert loose_files(tmp_path / ".maos") == []


def test_doctor_warns_about_a_readable_database(tmp_path: Path) -> None:
    (tmp_path / ".maos").mkdir(mode=0o755)
    os.chmod(tmp_path / ".maos", 0o755)
    db = tmp_path / ".maos" / "maos.db"
    db.write_bytes(b"")
    os.chmod(db, 0o644)
    done = maos(tmp_path, "doctor", "--json", "--redis-url", "redis://127.0.0.1:1")
    checks = {item["check"]: item for item in json.loads(done.stdout)}
    assert not checks["file modes"]["ok"]
    detail = checks["file modes"]["detail"]
    assert f"chmod 600 {db}" in detail
    assert f"chmod 700 {tmp_path / '.maos'}" in detail
    os.chmod(db, 0o600)
    os.chmod(tmp_path / ".maos", 0o700)
    done = maos(tmp_path, "doctor", "--json", "--redis-url", "redis://127.0.0.1:1")
    checks = {item["check"]: item for item in json.loads(done.stdout)}
    assert checks["file modes"]["ok"], checks["file modes"]
