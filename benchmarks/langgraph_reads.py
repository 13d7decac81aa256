"""Where a reopened read of a LangGraph checkpoint spends its time, step by step.

Run from the repository root::

    python -m benchmarks.langgraph_reads --turns 200 [--list]

Runs the benchmark's agent graph (``benchmarks.langgraph_agent``, ``durability="sync"``; its tool
results ``--tool-bytes`` long, 3,000 by default) for ``--turns`` turns with ``SqliteSaver`` and
with ``SnapstoreSaver`` on a directory store, then
prints median milliseconds over ``--reads`` freshly opened savers or stores (after a
``gc.collect()``, so the garbage of what ran before is not collected inside a read) of:

* each saver's whole ``get_tuple`` of the latest checkpoint and of the one 200 steps back (and,
  with ``--list``, its ``list`` of the whole thread, every tuple taken, as ``get_state_history``
  reads it);
* SnapstoreSaver's ``get_tuple`` on a fresh saver over a freshly opened store whose two sessions
  were opened before the clock starts: the read less what opening the sessions costs;
* the steps of SnapstoreSaver's read, each timed alone (after a ``gc.collect()``) through the
  store's public API on a store opened for that round: opening each of the thread's two
  sessions (``Session.head``, which indexes the session's newest segment), rebuilding each head
  (``Session.state``, verified against its hash), rebuilding the checkpoint 200 back, and
  decoding the channel values through the saver's ``serde`` (what SqliteSaver's read does too);
  and listing each session's snapshots (``Session.snapshots``), what finding an older checkpoint
  by its commit's label would cost instead of rebuilding the head for its lists.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from benchmarks.langgraph_agent import (
    AgentState,
    add_tool_bytes_option,
    build_graph,
    use_tool_result_bytes,
    user_message,
)
from benchmarks.langgraph_bench import BACK, SERDE, THREAD, SnapstoreDirSubject, SqliteSubject, Subject, Timed
from snapstore import SnapshotStore
from snapstore.langgraph import SnapstoreSaver
from snapstore.langgraph.encoding import ValueCodec
from snapstore.langgraph.lanes import Index, channel_values
from snapstore.langgraph.names import lane_names

CONFIG: Any = {"configurable": {"thread_id": THREAD}}


def run_graph(subject: Subject, turns: int) -> list[str]:
    """The checkpoint ids the graph put, oldest first."""
    with subject.open() as saver:
        timed = Timed(saver)
        app = build_graph(AgentState).compile(checkpointer=saver)
        for turn in range(turns):
            app.invoke({"messages": [user_message(turn)]}, CONFIG, durability="sync")
    return timed.ids


def seconds(action: Callable[[], Any]) -> float:
    gc.collect()  # the garbage of what ran before is not this read's to collect
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def saver_reads(
    name: str,
    open_saver: Callable[[], AbstractContextManager[BaseCheckpointSaver]],
    back_id: str,
    reads: int,
    listing: bool = False,
) -> dict[str, list[float]]:
    back: Any = {"configurable": {"thread_id": THREAD, "checkpoint_id": back_id}}
    out: dict[str, list[float]] = {}
    for label, config in (("latest", CONFIG), (f"{BACK} back", back)):
        for _ in range(reads):
            with open_saver() as saver:
                out.setdefault(f"{name}, {label}", []).append(
                    seconds(partial(saver.get_tuple, config))
                )
    for _ in range(reads if listing else 0):
        with open_saver() as saver:
            out.setdefault(f"{name.replace('get_tuple', 'list')}, whole thread", []).append(
                seconds(partial(_list_all, saver))
            )
    return out


def _list_all(saver: BaseCheckpointSaver) -> int:
    """``list`` of the whole thread, every tuple taken (what ``get_state_history`` reads)."""
    return sum(1 for _found in saver.list(CONFIG))


@contextlib.contextmanager
def saver_on_open_sessions(root: Path) -> Iterator[BaseCheckpointSaver]:
    """A fresh saver over a freshly opened store whose two sessions were opened (``Session.head``)."""
    with SnapshotStore.open(root) as store:
        for name in lane_names(THREAD, ""):
            assert store.session(name).head is not None
        yield SnapstoreSaver(store)


def store_steps(root: Path, back_id: str) -> dict[str, float]:
    """Each step of a reopened SnapstoreSaver read, timed alone on a store opened for it."""
    names = lane_names(THREAD, "")
    codec = ValueCodec(SERDE)
    out: dict[str, float] = {}

    def step(label: str, action: Callable[[], Any]) -> Any:
        gc.collect()  # what the steps before left is not this step's to collect
        start = time.perf_counter()
        value = action()
        out[label] = time.perf_counter() - start
        return value

    with SnapshotStore.open(root) as store:
        checkpoints, writes = store.session(names.checkpoints), store.session(names.writes)
        head = step("  open the checkpoints session (Session.head)", lambda: checkpoints.head)
        state = step("  rebuild the checkpoints head (Session.state)", lambda: checkpoints.state(head.id))
        writes_head = step("  open the writes session (Session.head)", lambda: writes.head)
        step("  rebuild the writes head (Session.state)", lambda: writes.state(writes_head.id))
        # what finding a checkpoint by its commit's label instead of the head's lists would read
        step("  list the checkpoints session (Session.snapshots)", checkpoints.snapshots)
        step("  list the writes session (Session.snapshots)", writes.snapshots)
        back_snapshot = Index.of(state).snapshots.get(back_id)
        assert back_snapshot is not None, f"no snapshot holds the checkpoint {BACK} back"
        back = step(f"  rebuild the checkpoint {BACK} back (Session.state)", lambda: checkpoints.state(back_snapshot))
        for label, values in (("latest", channel_values(state)), (f"{BACK} back", channel_values(back))):
            step(
                f"  decode the channel values, {label} (serde)",
                partial(_decode_values, codec, values),
            )
    return out


def _decode_values(codec: ValueCodec, values: dict[str, Any]) -> list[Any]:
    return [codec.decode(v[1]) for v in values.values()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--reads", type=int, default=7, help="fresh reads per figure (median)")
    parser.add_argument("--list", action="store_true", help="also time listing each whole thread")
    add_tool_bytes_option(parser)
    args = parser.parse_args(argv)
    use_tool_result_bytes(args.tool_bytes)
    if args.turns * 5 <= BACK:
        parser.error(f"--turns must give more than {BACK} checkpoints (five a turn)")
    workdir = Path(tempfile.mkdtemp(prefix="lgreads-"))
    try:
        rows: dict[str, list[float]] = {}
        snapstore = SnapstoreDirSubject(workdir / "snapstore")
        for subject in (SqliteSubject(workdir / "sqlite"), snapstore):
            subject.workdir.mkdir()
            back_id = run_graph(subject, args.turns)[-1 - BACK]
            rows.update(saver_reads(f"{subject.name}: get_tuple", subject.open, back_id, args.reads, args.list))
            if subject is snapstore:
                snapstore_back = back_id  # what the steps below read on the snapstore thread
        root = workdir / "snapstore" / "checkpoints.snapstore"
        label = "  get_tuple with both sessions already open"
        rows.update(saver_reads(label, lambda: saver_on_open_sessions(root), snapstore_back, args.reads))
        rounds = [store_steps(root, snapstore_back) for _ in range(args.reads)]
        for label in rounds[0]:
            rows[label] = [found[label] for found in rounds]
        print(
            f"{args.turns} turns, tool results of {args.tool_bytes} bytes, median of {args.reads} reads, "
            "each on a freshly opened saver or store\n"
        )
        for label, times in rows.items():
            print(f"{label:<58} {statistics.median(times) * 1000:7.2f} ms")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
