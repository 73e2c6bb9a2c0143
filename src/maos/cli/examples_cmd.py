"""``maos examples``: the example plans, agents and model scripts shipped inside the package,
so that an installed ``maos`` (``pipx install maos``) has its quick start without a clone."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from maos.cli._app import app
from maos.cli._common import JsonOption, fail

examples_app = typer.Typer(
    help="The examples shipped with MAOS: list them, copy one to try it.", no_args_is_help=True
)
app.add_typer(examples_app, name="examples")

EXAMPLES: dict[str, str] = {
    "word-report": "twelve command agents write, count and check a report: maos run plan.yaml --agents 12",
    "plans": "small plans: a diamond, a two-task example, agents talking through the door",
    "demo": "the scripted model behind `make demo` (`maos model-server --script model-script.yaml`)",
    "model-scripts": "a model script to rehearse a plan offline with `maos model-server`",
}
"""Every folder of ``maos/examples``, with what it shows (a test keeps the two in step)."""


def examples_root() -> Path:
    """Where the installed package keeps its examples (a real folder: the wheel is unpacked)."""
    return Path(str(resources.files("maos") / "examples"))


@examples_app.command("list")
def list_examples(json_output: JsonOption = False) -> None:
    """Name and purpose of each example."""
    root = examples_root()
    if json_output:
        shown = [
            {"name": name, "about": about, "files": sorted(p.name for p in (root / name).iterdir())}
            for name, about in EXAMPLES.items()
        ]
        typer.echo(json.dumps(shown, indent=2))
        return
    width = max(map(len, EXAMPLES))
    for name, about in EXAMPLES.items():
        typer.echo(f"{name:<{width}}  {about}")
    typer.echo("\nmaos examples copy NAME [DIR] writes one into DIR (default ./NAME).")


@examples_app.command("copy")
def copy_example(
    name: Annotated[str, typer.Argument(help="An example's name, as `maos examples list` shows it.")],
    directory: Annotated[
        Path | None, typer.Argument(help="Where to put it (default ./NAME); must not exist yet.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Copy an example's files into DIR to run or change them there."""
    if name not in EXAMPLES:
        fail(f"no example named {name!r}: choose one of {', '.join(EXAMPLES)}")
    target = directory if directory is not None else Path(name)
    if target.exists():
        fail(f"{target} exists already: name a new folder")
    try:
        shutil.copytree(examples_root() / name, target, ignore=shutil.ignore_patterns("__pycache__"))
    except OSError as exc:
        fail(f"cannot copy example {name!r} to {target}: {exc.strerror or exc}", code=1)
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    if json_output:
        typer.echo(json.dumps({"name": name, "directory": str(target), "files": files}))
    else:
        typer.echo(f"copied {name} to {target}: {', '.join(files)}")
