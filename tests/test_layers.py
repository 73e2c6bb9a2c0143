"""The layering of ``src/maos``, enforced (an import-linter style check, by reading the code).

The domain — the model, the reducer, the pure decisions of scheduling, resources, timing and
deadlocks — imports nothing that does I/O: not the store, not the event log that lives on it,
not the orchestrator, the agents, the door or the CLI. Every import counts, also one inside a
function or of a package's ``__init__``, and what a domain module imports must obey the same
rule (transitively).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

DOMAIN = ("maos.model", "maos.events", "maos.scheduler", "maos.resources", "maos.timing", "maos.deadlock")
"""Pure: state in, decisions or new state out."""

ABOVE_THE_DOMAIN = (
    "maos.store",
    "maos.eventlog",
    "maos.semaphore",
    "maos.constraints",
    "maos.orchestrator",
    "maos.dispatch",
    "maos.worker",
    "maos.supervisor",
    "maos.agents",
    "maos.door",
    "maos.identity",
    "maos.mcp_server",
    "maos.mcp_http",
    "maos.bus",
    "maos.state",
    "maos.checkpoint",
    "maos.blobs",
    "maos.history",
    "maos.web",
    "maos.cli",
    "maos.bench",
)


def module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(name: str) -> set[str]:
    """Every ``maos`` module ``name`` imports, at any depth of its code."""
    path = module_file(name)
    assert path is not None, name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("maos"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            if not base.startswith("maos"):
                continue
            for alias in node.names:  # `from maos import scheduler` imports a module
                sub = f"{base}.{alias.name}"
                found.add(sub if module_file(sub) is not None else base)
    # Importing ``maos.plan.analysis`` runs ``maos/plan/__init__.py`` first. (Not the root
    # ``maos/__init__.py``: it imports its public names lazily, on first use.)
    for module in list(found):
        parts = module.split(".")
        found.update(".".join(parts[:n]) for n in range(2, len(parts)) if module_file(".".join(parts[:n])))
    return found


def closure(name: str) -> dict[str, str]:
    """Each module reachable from ``name``, with the module that imported it first."""
    seen: dict[str, str] = {}
    todo = [name]
    while todo:
        current = todo.pop()
        for imported in sorted(imports_of(current)):
            if imported not in seen and imported != name:
                seen[imported] = current
                todo.append(imported)
    return seen


def chain(name: str, target: str, via: dict[str, str]) -> str:
    links = [target]
    while links[-1] != name and links[-1] in via:
        links.append(via[links[-1]])
    return " <- ".join(links)


@pytest.mark.parametrize("name", DOMAIN)
def test_the_domain_imports_nothing_above_it(name: str) -> None:
    via = closure(name)
    bad = [m for m in via if any(m == above or m.startswith(above + ".") for above in ABOVE_THE_DOMAIN)]
    assert not bad, "\n".join(f"{name} imports {m}: {chain(name, m, via)}" for m in sorted(bad))


def test_the_check_sees_a_violation() -> None:
    """The rule bites: the orchestrator, for one, does reach the store."""
    assert "maos.store" in closure("maos.orchestrator") or any(
        m.startswith("maos.store.") for m in closure("maos.orchestrator")
    )
