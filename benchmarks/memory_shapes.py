"""Memory and time of committing, diffing and rebuilding states of awkward shapes, as ratios.

Three shapes, each committed twice to a memory store (the second time after one small change):

* ``wide``: an object of 1,000,000 members (about 17 MB of JSON);
* ``list``: a list of 200,000 repeated values (the same small object, about 5.6 MB);
* ``deep``: an 8 MB string at nesting depth 250.

For each, peak traced memory (``tracemalloc``) is given as a multiple of the state's JSON size, for
two commits, for ``delta.diff`` of the two states, and for rebuilding the first snapshot
(``sess.state``), beside the bound they must keep: 10x the JSON size plus what one plain
``orjson.loads(orjson.dumps(state))`` reserves beyond its result (orjson's output buffer is sized
by the number of items it is given and shows up in tracemalloc even untouched). Times, measured
without tracemalloc (the best of ``--repeat``), are ratios to that round trip. Each shape runs in
a process of its own, so one shape's leftovers cannot raise another's peak.

    python -m benchmarks.memory_shapes              # the full sizes (a few minutes)
    python -m benchmarks.memory_shapes --scale 0.25 # a quarter of each size: time ratios stay put if linear
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import orjson

from snapstore import SnapshotStore, delta

DEPTH = 250


def make(shape: str, scale: float) -> Any:
    if shape == "wide":
        return {f"k{i}": i for i in range(int(1_000_000 * scale))}
    if shape == "list":
        repeated = {"hp": 10, "name": "goblin", "tags": ["a", "b"]}
        return {"turn": 1, "items": [repeated] * int(200_000 * scale)}
    node: Any = {"text": "x" * int(8_000_000 * scale)}
    for _ in range(DEPTH - 1):
        node = {"a": node}
    return node


def change(shape: str, state: Any) -> None:
    """One small change, made in place as a game loop makes it."""
    if shape == "wide":
        state["k0"] = -1
    elif shape == "list":
        state["items"][len(state["items"]) // 2] = {"hp": 9, "name": "goblin", "tags": ["a"]}
    else:
        node = state
        while "a" in node:
            node = node["a"]
        node["hp"] = 1


def peak_of(call: Callable[[], Any]) -> tuple[int, Any]:
    """Peak traced bytes while ``call`` runs (its result kept), and the result."""
    gc.collect()
    tracemalloc.start()
    try:
        result = call()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def best_time(call: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def measure_shape(shape: str, scale: float, repeat: int) -> dict[str, Any]:
    state = make(shape, scale)
    size = len(orjson.dumps(state))

    # the round trip: its peak, and what its result keeps once the bytes are dropped
    gc.collect()
    tracemalloc.start()
    data = orjson.dumps(state)
    reading = orjson.loads(data)
    rt_peak = tracemalloc.get_traced_memory()[1]
    del data
    rt_result = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del reading
    rt_time = best_time(lambda: orjson.loads(orjson.dumps(state)), repeat)

    # the caller's state is made before tracing starts: a session does not own it
    fresh = orjson.loads(orjson.dumps(state))
    sess = SnapshotStore.memory().session("s")

    def traced_commits() -> str:
        first = sess.commit(fresh)
        change(shape, fresh)
        sess.commit(fresh)
        return first.id

    commit_peak, first_id = peak_of(traced_commits)
    rebuild_peak, _ = peak_of(lambda: sess.state(first_id))
    old = orjson.loads(orjson.dumps(state))
    diff_peak, ops = peak_of(lambda: delta.diff(old, fresh))
    assert 0 < len(ops) <= 3, ops  # one small change

    copies = [orjson.loads(orjson.dumps(state)) for _ in range(repeat)]

    def commits() -> None:
        mine = copies.pop()
        timed = SnapshotStore.memory().session("s")
        timed.commit(mine)
        change(shape, mine)
        timed.commit(mine)

    times = {
        "commits": best_time(commits, repeat),
        "diff": best_time(lambda: delta.diff(old, fresh), repeat),
        "rebuild": best_time(lambda: sess.state(first_id), repeat),
    }
    return {
        "shape": shape,
        "json_bytes": size,
        "bound": 10 + (rt_peak - rt_result) / size,
        "round_trip_peak": rt_peak / size,
        "round_trip_result": rt_result / size,
        "round_trip_s": rt_time,
        "peak": {"commits": commit_peak / size, "diff": diff_peak / size, "rebuild": rebuild_peak / size},
        "time": {name: value / rt_time for name, value in times.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each full size (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure; the best counts")
    parser.add_argument("--shape", choices=("wide", "list", "deep"), help=argparse.SUPPRESS)  # one, as JSON
    args = parser.parse_args(argv)
    if args.shape:
        print(json.dumps(measure_shape(args.shape, args.scale, args.repeat)))
        return 0

    print("peak traced memory as x JSON size (bound: 10 + the round trip's reserve); time as x one round trip")
    print(f"scale {args.scale}, best of {args.repeat}")
    columns = f"{'commits':>8} {'diff':>6} {'rebuild':>8}"
    header = f"{'shape':6} {'JSON':>9} {'bound':>7} | {columns} | {columns} {'rt ms':>8}"
    print(header)
    print("-" * len(header))
    within = True
    for shape in ("wide", "list", "deep"):
        command = [sys.executable, "-m", "benchmarks.memory_shapes", "--shape", shape, "--scale", str(args.scale)]
        command += ["--repeat", str(args.repeat)]
        row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        peak, times = row["peak"], row["time"]
        within = within and all(value <= row["bound"] for value in peak.values())
        print(
            f"{shape:6} {row['json_bytes'] / 1e6:7.1f}MB {row['bound']:6.1f}x |"
            f" {peak['commits']:7.1f}x {peak['diff']:5.1f}x {peak['rebuild']:7.1f}x |"
            f" {times['commits']:7.1f}x {times['diff']:5.2f}x {times['rebuild']:7.1f}x {row['round_trip_s'] * 1e3:8.1f}"
        )
    print("every peak within its bound" if within else "SOME PEAK ABOVE ITS BOUND")
    return 0 if within else 1


if __name__ == "__main__":
    raise SystemExit(main())
