"""One measured run of ``maos bench peers`` part (b), in a fresh Python process of its own.

``python -m maos.bench._peer_runs SYSTEM WORKLOAD SIZE SECONDS DIR`` runs one workload on one
system and prints one JSON line: ``{"seconds": …, "cpu_s": …, "ok": …, "detail": …}``. SYSTEM is
``langgraph`` or ``maos``; WORKLOAD is ``independent`` (SIZE tasks of ``sleep SECONDS``, all at
once), ``noop`` (SIZE ``true`` tasks, ``CONCURRENCY`` at a time) or ``chain`` (SIZE ``true``
tasks one after another). Both systems run the same subprocesses at the same concurrency:

- **LangGraph**: a ``StateGraph`` whose every node execution starts one real subprocess
  (``asyncio.create_subprocess_exec``) and waits for it; independent work is a map step
  (``Send`` per task, ``max_concurrency``), the chain SIZE nodes in a row; the checkpointer
  is ``AsyncSqliteSaver`` on a file, ``durability="sync"`` (every step's checkpoint is
  written before the next step starts).
- **MAOS**: an ``Orchestrator`` with command tasks, the SQLite store in a file and the
  checkpoints ``maos run`` takes by default (a full snapshot every 30 s, a segment at every
  task completion, encrypted, in a local directory).

The clock covers opening the durable store and checkpointer, the whole run, and closing
them; not the interpreter's start or the imports (each process pays those before timing).
``cpu_s`` is the CPU time (user + system) of the same span: this process's, all threads,
plus that of the task processes it waited for.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
import operator
import resource
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

CONCURRENCY = 20
WORKLOADS = ("independent", "noop", "chain")


class _Clock:
    """Wall clock and CPU time (this process and its waited-for children) of one span."""

    def __enter__(self) -> _Clock:
        self._wall = time.perf_counter()
        self._cpu = self._cpu_now()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu_s = self._cpu_now() - self._cpu

    @staticmethod
    def _cpu_now() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime


def command(workload: str, seconds: float) -> tuple[str, ...]:
    """The process every task runs: ``sleep SECONDS`` for independent work, else ``true``."""
    return ("sleep", f"{seconds:g}") if workload == "independent" else ("true",)


async def _exec(argv: tuple[str, ...]) -> int:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await proc.wait()


# --------------------------------------------------------------------------- LangGraph


class _MapState(TypedDict):
    size: int
    codes: Annotated[list[int], operator.add]


class _ChainState(TypedDict):
    codes: Annotated[list[int], operator.add]


async def run_langgraph(workload: str, size: int, seconds: float, work: Path) -> tuple[_Clock, bool, str]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    argv = command(workload, seconds)

    async def task(_: object) -> dict[str, list[int]]:
        return {"codes": [await _exec(argv)]}

    graph: Any
    if workload == "chain":
        builder: Any = StateGraph(_ChainState)
        names = [f"n{n:04d}" for n in range(size)]
        for name in names:
            builder.add_node(name, task)
        builder.add_edge(START, names[0])
        for before, after in itertools.pairwise(names):
            builder.add_edge(before, after)
        builder.add_edge(names[-1], END)
        initial: dict[str, Any] = {"codes": []}
    else:
        builder = StateGraph(_MapState)

        def fan_out(state: _MapState) -> list[Any]:
            return [Send("task", n) for n in range(state["size"])]

        builder.add_node("task", task)
        builder.add_conditional_edges(START, fan_out, ["task"])
        builder.add_edge("task", END)
        initial = {"size": size, "codes": []}
    config: dict[str, Any] = {
        "configurable": {"thread_id": "bench"},
        "max_concurrency": CONCURRENCY,
        "recursion_limit": size + 10,
    }
    with _Clock() as clock:
        async with AsyncSqliteSaver.from_conn_string(str(work / "langgraph.db")) as saver:
            graph = builder.compile(checkpointer=saver)
            final = await graph.ainvoke(initial, config, durability="sync")
    codes = final["codes"]
    ok = len(codes) == size and not any(codes)
    return clock, ok, f"{len(codes)} of {size} processes exited 0" if ok else f"codes: {codes[:10]}"


# --------------------------------------------------------------------------- MAOS


async def run_maos(workload: str, size: int, seconds: float, work: Path) -> tuple[_Clock, bool, str]:
    from maos.blobs import open_blob_store
    from maos.checkpoint.checkpointer import Checkpointer
    from maos.model import Plan, RunConfig, RunStatus, TaskSpec
    from maos.orchestrator import Orchestrator, new_run_id
    from maos.paths import state_dir
    from maos.security import load_or_create_key
    from maos.store import open_store

    # The agent host: a run whose agents run in its own process imports it when it starts (the
    # orchestrator leaves it out of a run sent to workers). An import, so before the clock.
    importlib.import_module("maos.agents.factory")
    importlib.import_module("maos.worker")
    argv = command(workload, seconds)
    tasks = [
        TaskSpec(
            id=f"t{n:04d}",
            command=argv,
            depends_on=(f"t{n - 1:04d}",) if workload == "chain" and n else (),
        )
        for n in range(size)
    ]
    plan = Plan(name=f"peers-{workload}", tasks=tuple(tasks))
    config = RunConfig(agents=CONCURRENCY, workdir=str(work))
    run_id = new_run_id()
    key = load_or_create_key(state_dir(work), env={})  # created before the clock starts
    with _Clock() as clock:
        store = await open_store(f"sqlite:///{work / 'maos.db'}")
        try:
            # as `maos run` does by default (--checkpoint-every-s 30 --keep-checkpoints 10)
            blobs = open_blob_store(None, workdir=work)
            checkpointer = Checkpointer(run_id, blobs, key, every_s=30.0, keep=10)
            try:
                orchestrator = Orchestrator(store, plan, config, run_id=run_id, checkpointer=checkpointer)
                state = await orchestrator.run()
            finally:
                await checkpointer.blobs.close()
        finally:
            await store.close()
    counts = state.counts()
    ok = state.status is RunStatus.SUCCEEDED and counts["succeeded"] == size
    return clock, ok, f"{counts['succeeded']} of {size} tasks succeeded ({state.status.value})"


def main(argv: list[str]) -> int:
    system, workload, size, seconds, work = argv
    if workload not in WORKLOADS:
        raise SystemExit(f"unknown workload {workload!r}: expected one of {', '.join(WORKLOADS)}")
    runner = {"langgraph": run_langgraph, "maos": run_maos}[system]
    clock, ok, detail = asyncio.run(runner(workload, int(size), float(seconds), Path(work)))
    print(json.dumps({"seconds": clock.seconds, "cpu_s": clock.cpu_s, "ok": ok, "detail": detail}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
