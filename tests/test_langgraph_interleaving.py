"""Several savers on one store, their calls interleaved at random: a fresh saver must list exactly
the checkpoints put and not deleted, and read each one's pending writes as every put_writes made
for it leaves them (a task's regular write is stored once: the first stays; a special channel's
write, with its negative index, is replaced by the next).

Each seed is a sequence of operations drawn first and replayed against the savers and a model of
what they should hold: puts (a new checkpoint, or an old one put again), put_writes before or after
their checkpoint, reads that leave a saver keeping heads, a saver closed and opened again,
copy_thread and delete_for_runs by any saver.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from langgraph.checkpoint.base import WRITES_IDX_MAP
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_metadata

from snapstore import SnapshotStore
from snapstore.langgraph import SnapstoreSaver

RUNS = ("r0", "r1", "r2")


def _config(thread: str, checkpoint_id: str | None = None) -> Any:
    configurable = {"thread_id": thread, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


class Model:
    """What the savers should hold: thread -> {checkpoint id: run}, and each checkpoint's writes."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, str]] = {"t": {}}
        self.writes: dict[str, dict[str, dict[tuple[str, int], tuple[str, str]]]] = {"t": {}}

    def put(self, thread: str, checkpoint_id: str, run: str) -> None:
        self.runs.setdefault(thread, {})[checkpoint_id] = run
        self.writes.setdefault(thread, {})

    def put_writes(self, thread: str, checkpoint_id: str, task: str, writes: list[tuple[str, str]]) -> None:
        stored = self.writes.setdefault(thread, {}).setdefault(checkpoint_id, {})
        for idx, (channel, value) in enumerate(writes):
            key = (task, WRITES_IDX_MAP.get(channel, idx))
            if key not in stored or key[1] < 0:
                stored[key] = (channel, value)

    def copy(self, source: str, target: str) -> None:
        self.runs[target] = dict(self.runs.get(source, {}))
        kept = self.runs[target]
        self.writes[target] = {cid: dict(w) for cid, w in self.writes.get(source, {}).items() if cid in kept}

    def delete_run(self, run: str) -> None:
        for thread, runs in self.runs.items():
            if run in runs.values():
                self.runs[thread] = {cid: r for cid, r in runs.items() if r != run}
                self.writes[thread] = {cid: w for cid, w in self.writes[thread].items() if cid in self.runs[thread]}

    def expected(self, thread: str) -> dict[str, list[tuple[str, str, str]]]:
        return {
            cid: sorted(
                (task, channel, value) for (task, _idx), (channel, value) in self.writes[thread].get(cid, {}).items()
            )
            for cid in self.runs[thread]
        }


def _replay(seed: int, steps: int, make_store: Callable[[], SnapshotStore]) -> None:
    rng = random.Random(seed)
    savers = [SnapstoreSaver(make_store()) for _ in range(rng.choice([2, 3]))]
    model = Model()
    early: list[str] = []  # ids whose writes were put before their checkpoint
    copies = 0
    kinds = {"put": 25, "writes": 35, "read": 15, "list": 8, "close": 5, "copy": 3, "delete_run": 3}
    for step in range(steps):
        saver_index = rng.randrange(len(savers))
        saver = savers[saver_index]
        thread = rng.choice(sorted(model.runs))
        known = sorted(model.runs[thread])
        kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
        if kind == "put":
            again = known and rng.random() < 0.1
            checkpoint_id = (
                rng.choice(known) if again else early.pop(0) if early and rng.random() < 0.6 else f"cp{step:05d}"
            )
            run = model.runs[thread][checkpoint_id] if again else rng.choice(RUNS)
            parent = known[-1] if known and not again else None
            checkpoint = generate_checkpoint(
                checkpoint_id=checkpoint_id, channel_values={"x": step}, channel_versions={"x": step}
            )
            saver.put(_config(thread, parent), checkpoint, generate_metadata(step=step, run_id=run), {"x": step})
            model.put(thread, checkpoint_id, run)
        elif kind == "writes":
            if known and rng.random() < 0.75:
                checkpoint_id = known[-1] if rng.random() < 0.6 else rng.choice(known)
            else:
                checkpoint_id = f"cp{step:05d}"
                early.append(checkpoint_id)
            task = rng.choice(["ta", "tb", "tc"])
            channels = rng.sample(["w", "v", "__error__", "__interrupt__"], rng.randint(1, 2))
            writes = [(channel, f"{saver_index}-{step}-{channel}") for channel in channels]
            saver.put_writes(_config(thread, checkpoint_id), writes, task)
            model.put_writes(thread, checkpoint_id, task, writes)
        elif kind == "read":
            saver.get_tuple(_config(thread, rng.choice(known) if known and rng.random() < 0.5 else None))
        elif kind == "list":
            list(saver.list(_config(thread)))
        elif kind == "close":
            saver.close()
            savers[saver_index] = SnapstoreSaver(make_store())
        elif kind == "copy" and copies < 2 and known:
            copies += 1
            saver.copy_thread(thread, f"copy{copies}")
            model.copy(thread, f"copy{copies}")
        elif kind == "delete_run":
            run = rng.choice(RUNS)
            saver.delete_for_runs([run])
            model.delete_run(run)
            early.clear()
        if step % 10 == 9 or step == steps - 1:
            fresh = SnapstoreSaver(make_store())
            for name in sorted(model.runs):
                read = {
                    t.config["configurable"]["checkpoint_id"]: sorted(t.pending_writes or [])
                    for t in fresh.list(_config(name))
                }
                assert read == model.expected(name), (seed, step, name)


@pytest.mark.parametrize("seed", range(12))
def test_savers_interleaved_at_random_leave_what_each_call_wrote(
    make_store: Callable[..., SnapshotStore], seed: int
) -> None:
    _replay(seed, 150, make_store)
