"""Context along edges: a Claude Code task's prompt carries its parents' results.

For each parent, what its agent published through the door (summary and changed files) or,
when it published nothing, the tail of its output — each within ``PER_PARENT_CHARS``, all
within ``TOTAL_CHARS``. Anything larger is referenced by its file path instead of inlined, so
an agent can still read it (command agents get the same files through ``MAOS_INPUTS``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from maos.results import read_result
from maos.store.base import Store

PER_PARENT_CHARS = 2_000
TOTAL_CHARS = 8_000


def _clip(text: str, limit: int, path: str) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[:limit].rstrip() + f"\n… ({len(text) - limit} more characters in {path})"


async def parents_context(store: Store, run_id: str, inputs: Mapping[str, str]) -> str:
    """The section appended to the prompt; empty when the task has no parents."""
    if not inputs:
        return ""
    sections: list[str] = []
    budget = TOTAL_CHARS
    for parent, path in inputs.items():
        published = await read_result(store, run_id, parent)
        if published is not None:
            body = published.summary
            if published.files:
                body += "\nFiles: " + ", ".join(published.files)
        else:
            try:
                body = Path(path).read_text(errors="replace") if path else ""
            except OSError:
                body = ""
        limit = min(PER_PARENT_CHARS, budget)
        if limit <= 200:
            sections.append(f"### {parent}\n(see {path})")
            continue
        clipped = _clip(body, limit, path) or "(no output)"
        budget -= len(clipped)
        sections.append(f"### {parent}\n{clipped}")
    return "\n\n## Results of the tasks this one builds on\n\n" + "\n\n".join(sections)
