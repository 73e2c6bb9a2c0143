"""``maos.agents.programs.find``: a program's place on PATH, found once and kept while it is there."""

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


def test_found_once_and_looked_up_again_when_gone(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    path = f"{first}{os.pathsep}{second}"
    _program(second, "maos-probe", "second")
    assert find("maos-probe", path) == str(second / "maos-probe")
    _program(first, "maos-probe", "first")
    # remembered, as a shell's command hash: a program put earlier on PATH later is not seen...
    assert find("maos-probe", path) == str(second / "maos-probe")
    (second / "maos-probe").unlink()
    # ...but one that went away is looked up again
    assert find("maos-probe", path) == str(first / "maos-probe")
    (first / "maos-probe").unlink()
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
    out = tmp_path / "out"
    for _ in range(2):  # looked up, then remembered
        outcome = asyncio.run(
            run_process(
                ["maos-probe", "-c", 'echo ran-as "$0"'],
                cwd=tmp_path,
                env={"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.defpath}"},
                stdin_data=b"",
                timeout_s=10,
                grace_s=1,
                stdout_path=out,
                stderr_path=tmp_path / "err",
                parent_death_signal=False,
            )
        )
        assert outcome.exit_code == 0
        assert out.read_text() == "ran-as maos-probe\n"
