"""Replays the committed corpus: ``corpus/<target>/*.bin``, one input of ``targets.TARGETS``
each — the cases fuzzing found, kept as regression tests. A case that still fails in a module
owned elsewhere is listed in ``KNOWN`` (file name → finding) and expected to fail for now."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import targets
from .harness import case_time_limit

CORPUS = Path(__file__).parent / "corpus"
KNOWN: dict[str, str] = {}
"""``<target>/<file>`` → the finding in /tmp/fuzz-findings.md it reproduces."""


def _cases() -> list[object]:
    cases: list[object] = []
    for path in sorted(CORPUS.glob("*/*.bin")):
        name = f"{path.parent.name}/{path.name}"
        marks = [pytest.mark.xfail(strict=False, reason=KNOWN[name])] if name in KNOWN else []
        cases.append(pytest.param(path, id=name, marks=marks))
    return cases


@pytest.mark.parametrize("path", _cases())
def test_corpus_case(path: Path) -> None:
    target = path.parent.name
    with case_time_limit(target):
        targets.TARGETS[target](path.read_bytes())
