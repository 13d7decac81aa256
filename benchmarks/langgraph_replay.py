"""What a step costs a saver with LangGraph's threads out of the way: the graph's calls replayed.

Run from the repository root::

    python -m benchmarks.langgraph_replay --turns 50

Runs the benchmark's agent graph (``benchmarks.langgraph_agent``, ``durability="sync"``) with
``InMemorySaver`` and records every ``put`` and ``put_writes`` it makes, then gives the same calls,
in the same order and with the same objects, to a fresh ``SqliteSaver`` and a fresh
``SnapstoreSaver`` (directory store) on the calling thread, alternately, ``--rounds`` times each.
It prints, per step (five a turn), the median over rounds of the wall-clock and CPU milliseconds
spent in ``put`` and ``put_writes``.

In the graph, LangGraph calls ``put_writes`` on a worker thread while it goes on with the run, and
``put`` while that may still be writing: each wait for the disk or another system call lets the
other thread take the interpreter, so ``langgraph_bench``'s time per step holds the savers' own
cost and those waits. Replayed, only the saver's own cost is left. With ``--busy-thread`` a
thread of pure Python computation runs beside the replay, the worst case of that sharing: every
call that lets go of the interpreter (a system call, a compression) may then wait for it up to
the interpreter's switch interval (``sys.getswitchinterval()``, 5 ms by default).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple, copy_checkpoint
from langgraph.checkpoint.memory import InMemorySaver

from benchmarks.langgraph_agent import AgentState, build_graph, user_message
from benchmarks.langgraph_bench import THREAD, SnapstoreDirSubject, SqliteSubject, Subject

Call = tuple[str, tuple[Any, ...]]


class _Recorder(InMemorySaver):
    """Records the calls, and gives each run the very checkpoint put last, its objects and all.

    A saver's read gives a run new objects (it deserializes them), and a replay cannot give the
    saver under test its own: with the objects of the put before, what a saver keeps of them (as
    SnapstoreSaver keeps the models its reads decode) serves the replay as it serves the graph.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.latest: CheckpointTuple | None = None

    def put(self, *args: Any) -> Any:
        self.calls.append(("put", args))
        config = super().put(*args)
        self.latest = CheckpointTuple(config, args[1], args[2], args[0], [])
        return config

    def put_writes(self, *args: Any) -> None:
        self.calls.append(("put_writes", args))
        super().put_writes(*args)

    def get_tuple(self, config: Any) -> CheckpointTuple | None:
        if self.latest is not None and "checkpoint_id" not in config["configurable"]:
            # a run changes the versions of the checkpoint it is given: those are copied, the
            # values (the message list and its messages) are the very objects put
            return self.latest._replace(checkpoint=copy_checkpoint(self.latest.checkpoint))
        return super().get_tuple(config)


def record(turns: int) -> list[Call]:
    """The put and put_writes calls of the graph run for ``turns`` turns, in order."""
    saver = _Recorder()
    calls = saver.calls
    app = build_graph(AgentState).compile(checkpointer=saver)
    for turn in range(turns):
        app.invoke({"messages": [user_message(turn)]}, {"configurable": {"thread_id": THREAD}}, durability="sync")
    return calls


def replay(saver: BaseCheckpointSaver, calls: list[Call]) -> dict[str, float]:
    """Seconds of wall clock and of the thread's CPU in each method over the calls."""
    spent = {"put wall": 0.0, "put cpu": 0.0, "put_writes wall": 0.0, "put_writes cpu": 0.0}
    for method, args in calls:
        call = getattr(saver, method)
        wall, cpu = time.perf_counter(), time.thread_time()
        call(*args)
        spent[f"{method} cpu"] += time.thread_time() - cpu
        spent[f"{method} wall"] += time.perf_counter() - wall
    return spent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, nargs="+", default=[50])
    parser.add_argument("--rounds", type=int, default=3, help="replays per saver (median)")
    parser.add_argument("--busy-thread", action="store_true", help="a thread of pure Python runs beside the replay")
    args = parser.parse_args(argv)
    stop = threading.Event()
    if args.busy_thread:
        threading.Thread(target=_busy, args=(stop,), daemon=True).start()
    try:
        _replay_turns(args.turns, args.rounds)
    finally:
        stop.set()


def _busy(stop: threading.Event) -> None:
    total = 0
    while not stop.is_set():
        for i in range(1000):
            total += i


def _replay_turns(turn_counts: list[int], round_count: int) -> None:
    for turns in turn_counts:
        calls = record(turns)
        steps = sum(method == "put" for method, _args in calls)
        rounds: dict[str, list[dict[str, float]]] = {}
        for _round in range(round_count):
            for make in (SqliteSubject, SnapstoreDirSubject):
                subject: Subject = make(Path(tempfile.mkdtemp(prefix="lgreplay-")))
                try:
                    with subject.open() as saver:
                        rounds.setdefault(subject.name, []).append(replay(saver, calls))
                finally:
                    shutil.rmtree(subject.workdir, ignore_errors=True)
        for name, found in rounds.items():
            median = {key: statistics.median(r[key] for r in found) / steps * 1000 for key in found[0]}
            print(
                f"{turns:>5} turns  {name:<28} put {median['put wall']:.2f} + put_writes "
                f"{median['put_writes wall']:.2f} = {median['put wall'] + median['put_writes wall']:.2f} ms per step "
                f"(CPU {median['put cpu']:.2f} + {median['put_writes cpu']:.2f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
