"""Every ``maos …`` command line the image, the compose file and the Kubernetes manifests run
exists in the CLI, with options it knows and values it accepts: each one is parsed by the
real ``maos`` command (click's ``make_context``: names, types, ranges and the ``--store``
check), without running it."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from maos.cli import _app

from .files import MaosCommand, compose_commands, documented_commands, image_commands, k8s_commands

COMMANDS = [*image_commands(), *compose_commands(), *k8s_commands(), *documented_commands()]

# typer vendors click (``typer._click``, private); its public ``BadParameter`` leads to the rest.
UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


class ParseExit(Exception):
    """``--help`` or ``--version``: the command line is fine and maos would exit 0."""


def parse(argv: tuple[str, ...]) -> Any:
    """The click context ``maos ARGV`` would run in; raises ``UsageError`` (or a subclass)
    for a bad command line."""
    _app._register(["maos"])  # the commands `maos` registers before it parses
    group: Any = typer.main.get_command(_app.app)
    try:
        root = group.make_context("maos", list(argv))
        # The command's name stays in the group's "protected" args (an attribute whose name
        # changed across click versions).
        words = [*getattr(root, "_protected_args", getattr(root, "protected_args", [])), *root.args]
        if not words:
            return root
        name, *rest = words
        command = group.get_command(root, name)
        if command is None:
            raise UsageError(f"No such command {name!r}.")
        return command.make_context(name, rest, parent=root)
    except Exception as exc:
        if type(exc).__name__ == "Exit" and getattr(exc, "exit_code", None) == 0:
            raise ParseExit from exc
        raise


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.where}: maos {' '.join(c.argv)}" for c in COMMANDS])
def test_the_command_exists_with_these_options(command: MaosCommand, monkeypatch: pytest.MonkeyPatch) -> None:
    # The deployments give the store in MAOS_STORE; `--store` reads it while parsing.
    monkeypatch.setenv("MAOS_STORE", "redis+cluster://maos:secret@redis-1:6379")
    if command.argv in (("--help",), ("--version",)):
        with pytest.raises(ParseExit):
            parse(command.argv)
        return
    try:
        ctx = parse(command.argv)
    except ClickException as exc:
        pytest.fail(f"{command.where}: `maos {' '.join(command.argv)}` is refused: {exc}")
    assert ctx.command.name == command.argv[0]


def test_the_deployments_run_the_long_lived_commands() -> None:
    ran = {c.argv[0] for c in COMMANDS if c.argv and not c.argv[0].startswith("-")}
    assert {"worker", "supervisor", "dashboard", "runs", "run"} <= ran


def test_a_misspelt_option_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAOS_STORE", raising=False)
    with pytest.raises(UsageError, match="No such option"):
        parse(("worker", "--capacty", "4"))
    with pytest.raises(typer.BadParameter):
        parse(("worker", "--capacity", "0"))
    with pytest.raises(UsageError, match="No such command"):
        parse(("wroker",))
    with pytest.raises(typer.BadParameter):
        parse(("worker", "--store", "mysql://db"))
