"""Consensus: a task answered by several agents in parallel, and one answer picked.

A plan task with ``replicas: N`` becomes N replica tasks (``<id>.r1`` … ``<id>.rN``, the same
prompt, each a separate agent) plus the task itself, which depends on its replicas and runs
the ``consensus`` runtime once they have all ended (succeeded or not). It needs ``quorum``
answers (default: a majority of N) and picks one by ``consensus``:

- ``majority``: the most frequent answer after normalization (case, whitespace, code fences
  and trailing punctuation do not count);
- ``weighted``: like majority, each replica's vote weighted by its agent's historical
  success rate on this kind of task (``scheduler.History``, computed by the orchestrator);
- ``judge``: a judge agent (Claude Code) scores every answer 0 to 10 against the task; the
  highest score wins.

Ties go to the lowest replica number, so the same votes always give the same result. Every
vote (and score) and the decision are events in the run's log. The picked answer is the
task's output, so its children receive it like any other parent's output.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from maos.agents.runtime import AgentJob, AgentResult, AgentRuntime, Reporter
from maos.errors import PlanError
from maos.filemodes import private_dir, write_private
from maos.model import Plan, TaskSpec
from maos.paths import attempt_file, judge_dir

_FENCE = re.compile(r"^```[\w-]*\n?|\n?```$")
_SPACE = re.compile(r"\s+")
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def replica_ids(task: TaskSpec) -> list[str]:
    return [f"{task.id}.r{number}" for number in range(1, task.replicas + 1)]


def expand_replicas(plan: Plan) -> Plan:
    """The plan with every ``replicas: N`` task fanned out into N replica tasks. Idempotent:
    a plan that already holds the replicas (a resumed run's) is returned as is."""
    ids = {task.id for task in plan.tasks}
    tasks: list[TaskSpec] = []
    problems: list[str] = []
    for task in plan.tasks:
        if task.replicas <= 1 or task.replica_of is not None or set(replica_ids(task)) <= ids:
            tasks.append(task)
            continue
        if task.quorum is not None and task.quorum > task.replicas:
            problems.append(
                f"task {task.id!r}: field 'quorum': {task.quorum} is more than replicas ({task.replicas})"
            )
            continue
        replicas = [
            task.model_copy(
                update={
                    "id": replica_id,
                    "title": f"{task.title or task.id} (replica {number})",
                    "replicas": 1,
                    "quorum": None,
                    "replica_of": task.id,
                }
            )
            for number, replica_id in enumerate(replica_ids(task), 1)
        ]
        tasks += replicas
        tasks.append(task.model_copy(update={"depends_on": tuple(replica.id for replica in replicas)}))
    if problems:
        raise PlanError(problems)
    return Plan.model_validate({**plan.model_dump(), "tasks": [task.model_dump() for task in tasks]})


def normalize(answer: str) -> str:
    text = _FENCE.sub("", answer.strip()).strip().lower()
    return _SPACE.sub(" ", text).rstrip(" .!;")


def digest(normalized: str) -> str:
    """A short stable name for an answer in the log (answers themselves may be long)."""
    preview = normalized[:40]
    return (
        f"{preview}… #{hashlib.sha256(normalized.encode()).hexdigest()[:8]}"
        if len(normalized) > 40
        else preview
    )


@dataclass(frozen=True, slots=True)
class Decision:
    winner: str  # replica id
    tally: dict[str, float]  # answer digest -> votes, weights or score


def _order(replica: str) -> int:
    return int(replica.rsplit(".r", 1)[1])


def count_votes(answers: Mapping[str, str], weights: Mapping[str, float] | None = None) -> Decision:
    """Majority (or weighted majority) over normalized answers; ties to the lowest replica."""
    totals: dict[str, float] = {}
    first: dict[str, str] = {}
    for replica in sorted(answers, key=_order):
        key = normalize(answers[replica])
        totals[key] = totals.get(key, 0.0) + (weights.get(replica, 1.0) if weights else 1.0)
        first.setdefault(key, replica)
    best = max(totals, key=lambda key: (totals[key], -_order(first[key])))
    return Decision(winner=first[best], tally={digest(key): value for key, value in totals.items()})


def judge_prompt(task: TaskSpec, answers: Mapping[str, str]) -> str:
    proposals = "\n\n".join(
        f"### Proposal {number}\n{answers[replica].strip()}"
        for number, replica in enumerate(sorted(answers, key=_order), 1)
    )
    return (
        "You are the judge of a consensus between agents that worked on the same task.\n\n"
        f"## The task\n{task.prompt}\n\n## The proposals\n{proposals}\n\n"
        "Score every proposal from 0 (useless) to 10 (fully accomplishes the task). Answer with "
        'only a JSON object: {"scores": [{"proposal": 1, "score": 7, "reason": "..."}, ...]}'
    )


def parse_scores(text: str, count: int) -> dict[int, float]:
    """Proposal number -> score from the judge's answer; raises ValueError if there are none."""
    found = _JSON_OBJECT.search(text)
    if found is None:
        raise ValueError("the judge's answer holds no JSON object")
    data = json.loads(found.group(0))
    scores: dict[int, float] = {}
    for item in data.get("scores", []):
        number, score = int(item["proposal"]), float(item["score"])
        if 1 <= number <= count and math.isfinite(score):  # json reads NaN and Infinity
            scores[number] = score
    if not scores:
        raise ValueError("the judge scored no proposal")
    return scores


class ConsensusRuntime:
    """Aggregates a task's replica answers (in MAOS's own process; the judge is an agent)."""

    name = "consensus"

    def __init__(self, judge: AgentRuntime | None = None) -> None:
        self.judge = judge

    async def run(self, job: AgentJob, reporter: Reporter) -> AgentResult:
        started = time.monotonic()
        task = job.task
        inputs: dict[str, str] = json.loads(job.env.get("MAOS_INPUTS", "{}"))
        answers = {
            replica: Path(path).read_text(errors="replace")
            for replica, path in inputs.items()
            if path and Path(path).exists() and Path(path).read_text(errors="replace").strip()
        }
        if len(answers) < task.needed:
            return AgentResult(
                ok=False,
                duration_s=time.monotonic() - started,
                reason=f"quorum not reached: {len(answers)} of {task.replicas} replicas answered, "
                f"{task.needed} needed",
                final=True,
            )
        if task.consensus == "judge":
            decision, scores = await self._judge(job, reporter, answers)
            if decision is None:
                return AgentResult(ok=False, duration_s=time.monotonic() - started, reason=scores)
        else:
            await reporter.started(os.getpid())  # counted here, in MAOS's own process
            weights = dict(job.replica_weights) if task.consensus == "weighted" else None
            decision = count_votes(answers, weights)
            for replica in sorted(answers, key=_order):
                weight = weights.get(replica, 1.0) if weights else 1.0
                await reporter.vote(replica, digest(normalize(answers[replica])), weight, None)
        await reporter.decided(task.consensus, decision.winner, decision.tally)
        output = attempt_file(job.output_dir, task.id, job.attempt, ".out")
        write_private(output, answers[decision.winner])
        return AgentResult(
            ok=True, duration_s=time.monotonic() - started, output_path=str(output), exit_code=0
        )

    async def _judge(
        self, job: AgentJob, reporter: Reporter, answers: Mapping[str, str]
    ) -> tuple[Decision | None, str]:
        if self.judge is None:
            return None, "consensus 'judge' needs the claude-code runtime for its judge agent"
        ordered = sorted(answers, key=_order)
        private_dir(judge_dir(job.output_dir))
        judge_task = job.task.model_copy(
            update={"prompt": judge_prompt(job.task, answers), "replicas": 1, "command": None, "max_turns": 2}
        )
        verdict = await self.judge.run(
            AgentJob(
                run_id=job.run_id,
                task=judge_task,
                agent=job.agent,
                attempt=job.attempt,
                cwd=job.cwd,
                env=job.env,
                output_dir=judge_dir(job.output_dir),
                grace_s=job.grace_s,
                door=job.door,
            ),
            reporter,
        )
        if not verdict.ok:
            return None, f"the judge agent failed: {verdict.reason}"
        try:
            scores = parse_scores(Path(verdict.output_path).read_text(), len(ordered))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return None, f"the judge's answer cannot be read: {exc}"
        for number, replica in enumerate(ordered, 1):
            await reporter.vote(replica, digest(normalize(answers[replica])), 1.0, scores.get(number, 0.0))
        best = max(range(1, len(ordered) + 1), key=lambda number: (scores.get(number, 0.0), -number))
        tally = {
            digest(normalize(answers[ordered[n - 1]])): scores.get(n, 0.0) for n in range(1, len(ordered) + 1)
        }
        return Decision(winner=ordered[best - 1], tally=tally), ""
