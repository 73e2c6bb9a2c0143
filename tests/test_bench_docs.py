"""Benchmarks replace only their own section of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

from maos.bench.docs import write_section


def test_a_section_is_added_then_replaced_leaving_the_others(tmp_path: Path) -> None:
    doc = tmp_path / "docs" / "benchmarks.md"
    write_section(doc, "## maos bench b", "## maos bench b\n\nfirst\n")
    assert doc.read_text() == "# Benchmarks\n\n## maos bench b\n\nfirst\n"
    doc.write_text(
        "# Benchmarks\n\n## maos bench a\n\nkeep a\n\n## maos bench b\n\nold\n\n## maos bench c\n\nkeep c\n"
    )
    write_section(doc, "## maos bench b", "## maos bench b\n\nnew\n")
    assert doc.read_text() == (
        "# Benchmarks\n\n## maos bench a\n\nkeep a\n\n## maos bench b\n\nnew\n\n## maos bench c\n\nkeep c\n"
    )
