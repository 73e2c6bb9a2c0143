"""A command agent for the MAOS demo: real work, in parallel, with visible progress.

    agent.py chapter N   write chapters/chNN.txt: N-th chapter of generated prose
    agent.py count N     count the words of chapter N into counts/chNN.json
    agent.py merge       merge every counts/*.json named in MAOS_INPUTS into totals.json
    agent.py report      write REPORT.md from totals.json
    agent.py check       verify totals.json against the chapters (a test)

Each step prints progress lines (MAOS streams them into the run's event log) and takes a few
seconds, so the live view shows a dozen agents working at once.
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import sys
import time
from pathlib import Path

WORDS = [
    "agent",
    "task",
    "graph",
    "process",
    "parallel",
    "state",
    "message",
    "bus",
    "checkpoint",
    "recovery",
    "worker",
    "scheduler",
    "lease",
    "stream",
    "event",
    "replay",
    "merge",
    "branch",
    "review",
    "test",
    "build",
    "design",
    "plan",
    "orchestrator",
    "dashboard",
    "metric",
    "latency",
    "throughput",
    "token",
    "cost",
    "retry",
    "backoff",
    "quorum",
]


def say(text: str) -> None:
    print(text, flush=True)


def chapter(number: int) -> None:
    rng = random.Random(number)
    out = Path("chapters")
    out.mkdir(exist_ok=True)
    paragraphs = []
    for paragraph in range(1, 7):
        sentences = []
        for _ in range(rng.randint(4, 9)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
            sentences.append(" ".join(words).capitalize() + ".")
        paragraphs.append(" ".join(sentences))
        say(f"chapter {number}: paragraph {paragraph}/6 written")
        time.sleep(rng.uniform(0.2, 0.5))
    (out / f"ch{number:02d}.txt").write_text("\n\n".join(paragraphs) + "\n")
    say(f"chapter {number}: done, {sum(len(p.split()) for p in paragraphs)} words")


def count(number: int) -> None:
    text = Path("chapters", f"ch{number:02d}.txt").read_text()
    words = re.findall(r"[a-z]+", text.lower())
    counts: collections.Counter[str] = collections.Counter()
    for index, word in enumerate(words, 1):
        counts[word] += 1
        if index % 100 == 0:
            say(f"count {number}: {index}/{len(words)} words")
            time.sleep(0.1)
    out = Path("counts")
    out.mkdir(exist_ok=True)
    (out / f"ch{number:02d}.json").write_text(json.dumps(dict(counts), sort_keys=True))
    say(f"count {number}: {len(words)} words, {len(counts)} distinct")


def merge() -> None:
    inputs = json.loads(os.environ.get("MAOS_INPUTS", "{}"))
    say(f"merge: {len(inputs)} parent outputs in MAOS_INPUTS")
    totals: collections.Counter[str] = collections.Counter()
    for path in sorted(Path("counts").glob("ch*.json")):
        totals.update(json.loads(path.read_text()))
        say(f"merge: added {path.name}")
        time.sleep(0.05)
    Path("totals.json").write_text(json.dumps(dict(totals.most_common()), indent=1))
    say(f"merge: {sum(totals.values())} words in all")


def report() -> None:
    totals = json.loads(Path("totals.json").read_text())
    lines = ["# Word report", "", f"{sum(totals.values())} words, {len(totals)} distinct.", ""]
    lines += ["| word | count |", "|---|---|"]
    lines += [f"| {word} | {number} |" for word, number in list(totals.items())[:10]]
    Path("REPORT.md").write_text("\n".join(lines) + "\n")
    say("report: REPORT.md written")


def check() -> None:
    totals = json.loads(Path("totals.json").read_text())
    words = sum(len(re.findall(r"[a-z]+", p.read_text().lower())) for p in Path("chapters").glob("*.txt"))
    if words != sum(totals.values()):
        say(f"check: MISMATCH {words} != {sum(totals.values())}")
        sys.exit(1)
    say(f"check: {words} words match")


def main() -> None:
    step, *rest = sys.argv[1:]
    if step == "chapter":
        chapter(int(rest[0]))
    elif step == "count":
        count(int(rest[0]))
    else:
        {"merge": merge, "report": report, "check": check}[step]()


if __name__ == "__main__":
    main()
