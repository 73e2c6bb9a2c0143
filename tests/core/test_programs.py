"""``maos.agents.programs.find``: a program's place on PATH, found once and kept while exec would
run the same file."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from maos.agents.process import run_process
from maos.agents.programs import find


def _program(folder: Path, name: str, says: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f'#!/bin/sh\necho {says} "$0"\n')
    path.chmod(0o755)
    return path


def _run(tmp_path: Path, argv: list[str], path: str) -> str:
    """What a command agent started with ``argv`` and ``PATH`` = ``path`` printed."""
    out = tmp_path / "out"
    outcome = asyncio.run(
        run_process(
            argv,
            cwd=tmp_path,
            env={"PATH": path},
            stdin_data=b"",
            timeout_s=10,
            grace_s=1,
            stdout_path=out,
            stderr_path=tmp_path / "err",
            parent_death_signal=False,
        )
    )
    assert outcome.exit_code == 0
    return out.read_text()


def test_found_once_and_looked_up_again_when_path_changes(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    path = f"{first}{os.pathsep}{second}"
    first.mkdir()
    _program(second, "maos-probe", "second")
    assert find("maos-probe", path) == str(second / "maos-probe")
    assert find("maos-probe", path) == str(second / "maos-probe")  # remembered
    # a program put earlier on PATH later is what exec would run: found at once
    _program(first, "maos-probe", "first")
    assert find("maos-probe", path) == str(first / "maos-probe")
    (first / "maos-probe").unlink()
    assert find("maos-probe", path) == str(second / "maos-probe")
    (second / "maos-probe").unlink()  # one that went away is looked up again
    assert find("maos-probe", path) is None


def test_names_with_a_slash_and_relative_path_entries_are_left_to_exec(tmp_path: Path) -> None:
    _program(tmp_path / "bin", "maos-probe", "x")
    assert find("bin/maos-probe", str(tmp_path)) is None
    assert find("maos-probe", f"bin{os.pathsep}{tmp_path / 'bin'}") is None
    assert find("maos-probe", f"{os.pathsep}{tmp_path / 'bin'}") is None  # empty entry: the cwd
    assert find("", str(tmp_path / "bin")) is None


def test_an_agent_keeps_the_name_it_was_started_with(tmp_path: Path) -> None:
    """``find`` gives exec the file; the program's own argv[0] is still the name in the plan."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "maos-probe").symlink_to("/bin/sh")  # a shell whose $0 is argv[0]
    for _ in range(2):  # looked up, then remembered
        path = f"{tmp_path / 'bin'}{os.pathsep}{os.defpath}"
        assert _run(tmp_path, ["maos-probe", "-c", 'echo ran-as "$0"'], path) == "ran-as maos-probe\n"


def test_a_path_folder_made_later_is_seen(tmp_path: Path) -> None:
    later, there = tmp_path / "later", tmp_path / "there"
    path = f"{later}{os.pathsep}{there}"
    _program(there, "maos-probe", "there")
    assert find("maos-probe", path) == str(there / "maos-probe")
    _program(later, "maos-probe", "later")  # the folder did not exist when it was looked up
    assert find("maos-probe", path) == str(later / "maos-probe")


def test_a_file_exec_cannot_run_is_passed_over_as_exec_would(tmp_path: Path) -> None:
    """``find`` picks the first executable file; if it is no program (ENOEXEC), the start
    falls back to exec's own search, which goes on down PATH."""
    bad, good = tmp_path / "bad", tmp_path / "good"
    bad.mkdir()
    (bad / "maos-probe").write_bytes(b"\x7fELF not really")
    (bad / "maos-probe").chmod(0o755)
    _program(good, "maos-probe", "good")
    assert _run(tmp_path, ["maos-probe"], f"{bad}{os.pathsep}{good}").startswith("good ")


def test_the_kept_dev_null_is_checked_before_it_becomes_a_stdin(tmp_path: Path) -> None:
    from maos.agents.process import _devnull

    kept = _devnull()
    os.close(kept)  # something closed it by mistake...
    other = os.open(tmp_path / "secret", os.O_RDWR | os.O_CREAT, 0o600)  # ...and the number is reused
    try:
        fresh = _devnull()
        assert os.fstat(fresh).st_rdev == os.stat(os.devnull).st_rdev
        assert fresh != other
    finally:
        os.close(other)
