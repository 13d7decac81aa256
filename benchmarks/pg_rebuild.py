"""Where a cold rebuild's time goes on PostgreSQL: the listing, the segment's read, and the engine.

Commits ``--turns`` states of the benchmark workload into a store in a schema of its own (as
``benchmarks.pg_footprint`` does), then rebuilds retained snapshots cold, as ``benchmarks.run``
does: each through a fresh ``SnapshotStore`` over the same backend whose index was read first,
best of ``--reps``. For each it prints the whole rebuild, the two backend calls it makes (the
session's listing, ``segments``, and the read of the chain's segment, ``read_segment``), and the
same rebuild with those calls answered from memory: the engine's part, which the memory store
pays too. The schema is dropped at the end.

    SNAPSTORE_BENCH_POSTGRES_URL=postgresql://... python -m benchmarks.pg_rebuild --turns 1000
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from typing import Any

from .baselines import store_settings
from .pg_footprint import bench_url, workload_arguments, workload_schema


class _Timed:
    """A backend whose ``segments`` and ``read_segment`` are timed, or answered from what they returned."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.spent: dict[str, float] = {}
        self.replay: dict[tuple[Any, ...], Any] | None = None

    def wrap(self, name: str) -> Callable[..., Any]:
        call = getattr(self.backend, name)

        def timed(*args: Any) -> Any:
            key = (name, *args)
            if self.replay is not None and key in self.replay:
                return self.replay[key]
            started = time.perf_counter_ns()
            found = call(*args)
            self.spent[name] = self.spent.get(name, 0.0) + (time.perf_counter_ns() - started) / 1e6
            if self.replay is not None:
                self.replay[key] = found
            return found

        return timed


def cold_rebuilds(url: str, schema: str, turns: list[int], reps: int) -> list[tuple[int, float, float, float, float]]:
    """(turn, rebuild ms, listing ms, read ms, engine-only ms) of each wanted turn, best of ``reps``."""
    from snapstore import SnapshotStore
    from snapstore.backends._postgres import PostgresBackend

    backend = PostgresBackend(url, schema=schema)
    timed = _Timed(backend)
    for name in ("segments", "read_segment"):
        setattr(backend, name, timed.wrap(name))
    try:
        ids = {s.turn: s.id for s in SnapshotStore(backend, **store_settings()).session("bench").snapshots()}
        found = []
        for turn in turns:
            best: tuple[float, float, float] | None = None
            engine: float | None = None
            for rep in range(2 * reps + 1):
                # rep `reps` records the calls' answers, and the later reps are given them from memory
                timed.replay = {} if rep == reps else timed.replay
                sess = SnapshotStore(backend, **store_settings()).session("bench")
                sess.snapshot_ids()  # reading the index is opening the store, not the rebuild
                timed.spent = {}
                gc.collect()
                started = time.perf_counter_ns()
                sess.state(ids[turn])
                spent = (time.perf_counter_ns() - started) / 1e6
                if rep < reps:
                    row = (spent, timed.spent.get("segments", 0.0), timed.spent.get("read_segment", 0.0))
                    best = row if best is None or row[0] < best[0] else best
                elif rep > reps:
                    engine = spent if engine is None else min(engine, spent)
            timed.replay = None
            assert best is not None and engine is not None
            found.append((turn, *best, engine))
        return found
    finally:
        backend.close()


def main(argv: list[str] | None = None) -> int:
    parser = workload_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="rebuilds per snapshot and way (the best is kept)")
    parser.add_argument("--every", type=int, default=50, help="rebuild every n-th turn, and the last ten")
    args = parser.parse_args(argv)
    url = bench_url()
    if url is None:
        return 2
    first = max(args.turns - args.max_snapshots + 1, 1)
    wanted = {*range(args.every, args.turns + 1, args.every), *range(args.turns - 9, args.turns + 1)}
    with workload_schema(url, args.turns, args.max_snapshots) as schema:
        rows = cold_rebuilds(url, schema, sorted(t for t in wanted if t >= first), args.reps)
    print(f"{'turn':>6} {'rebuild ms':>11} {'listing ms':>11} {'read ms':>8} {'engine ms':>10} {'PostgreSQL ms':>14}")
    for turn, spent, listing, read, engine in rows:
        print(f"{turn:>6} {spent:>11.2f} {listing:>11.2f} {read:>8.2f} {engine:>10.2f} {spent - engine:>14.2f}")
    turn, spent, listing, read, engine = max(rows, key=lambda row: row[1])
    print(
        f"\nslowest: turn {turn}, {spent:.2f} ms, of which the listing {listing:.2f} ms and the read {read:.2f} ms;"
        f" {engine:.2f} ms with both answered from memory"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
