"""What the whole-state check costs a commit: the benchmark session through two memory stores.

Every commit compares the state with what its bytes read back as (``codec.check_reading``, one
C-speed ``==``; docs/design.md, "Validation"). This replays the benchmark workload into two
memory stores, one as shipped and one whose check is replaced by a no-op, alternating commit by
commit so that drift in the machine's speed hits both alike, and prints each one's median commit
time, as the CPU time of this thread (so time the machine gives to other tenants is not counted),
and their ratio. Two stores compete for the CPU caches, so both medians are higher than a single
store's in ``benchmarks.run``; the difference and the ratio are the figures to read.

    python -m benchmarks.check_cost --turns 1000
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks.workload import DEFAULT_SEED, generate
from snapstore import SnapshotStore, codec


def _no_check(value: Any, reading: Any) -> None:
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--skip", type=int, default=None, help="turns not timed at the start (default: turns/2)")
    args = parser.parse_args(argv)
    skip = args.turns // 2 if args.skip is None else args.skip

    shipped: Callable[[Any, Any], None] = codec.check_reading
    variants = {"with the check (as shipped)": shipped, "without the check": _no_check}
    sessions = {name: SnapshotStore.memory().session("s", max_snapshots=args.turns) for name in variants}
    times: dict[str, list[int]] = {name: [] for name in variants}
    try:
        for turn, state in enumerate(generate(args.turns, seed=args.seed), 1):
            for name, session in sessions.items():
                codec.check_reading = variants[name]  # type: ignore[assignment]
                start = time.thread_time_ns()
                session.commit(state, turn=turn)
                if turn > skip:
                    times[name].append(time.thread_time_ns() - start)
    finally:
        codec.check_reading = shipped  # type: ignore[assignment]

    medians = {name: statistics.median(values) / 1e6 for name, values in times.items()}
    print(
        f"two memory stores, {args.turns} turns (seed {args.seed}), "
        f"median CPU time per commit over turns {skip + 1}-{args.turns}:"
    )
    for name, median in medians.items():
        print(f"  {name:28} {median:6.3f} ms")
    with_check, without = medians["with the check (as shipped)"], medians["without the check"]
    print(f"  the check adds {with_check - without:.3f} ms per commit ({with_check / without:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
