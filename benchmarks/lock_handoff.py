"""How busy a directory store's session lock stays when many processes queue for it, store work left out.

    python -m benchmarks.lock_handoff [--processes 2 8 16] [--hold-ms 0.3] [--outside-ms 0.2]

Each process takes the session's write lock (``Backend.lock_session``) 200 times, spins for
``--hold-ms`` holding it and for ``--outside-ms`` after releasing it, as a writer's commit and its
read would. Reported per process count, with the store's default lock timeout (the wait on the
session lock's waiting thread) and with ``lock_timeout=None`` (the wait on the calling thread):
the share of the run the lock was held, lock holds a second, and the time the lock stood free
between one holder and the next (median, 90th and 99th percentile, and the longest). What the
lock alone costs a queue of writers, beside ``benchmarks.writers``, which runs real commits.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import tempfile
import time
from typing import Any

from .baselines import import_snapstore

ROUNDS = 200


def _spin(seconds: float) -> None:
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        pass


def _worker(target: str, blocking: bool, hold: float, outside: float, start: Any, out: Any) -> None:
    snapstore = import_snapstore()
    store = snapstore.SnapshotStore.open(target, **({"lock_timeout": None} if blocking else {}))
    key = store.session("s").key
    start.wait()
    spans = []
    for _ in range(ROUNDS):
        with store.backend.lock_session(key, store.lock_timeout):
            got = time.monotonic()
            _spin(hold)
            released = time.monotonic()
        spans.append((got, released))
        _spin(outside)
    out.put(spans)
    store.close()


def _run(processes: int, blocking: bool, hold: float, outside: float) -> str:
    snapstore = import_snapstore()
    folder = tempfile.mkdtemp(prefix="snapstore-lock-")
    try:
        target = folder + "/store"
        snapstore.SnapshotStore.open(target).session("s")
        ctx = mp.get_context("spawn")
        start, out = ctx.Barrier(processes), ctx.Queue()
        procs = [
            ctx.Process(target=_worker, args=(target, blocking, hold, outside, start, out)) for _ in range(processes)
        ]
        for p in procs:
            p.start()
        spans = sorted(span for _ in procs for span in out.get())
        for p in procs:
            p.join()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    elapsed = spans[-1][1] - spans[0][0]
    held = sum(released - got for got, released in spans)
    gaps = sorted(spans[i + 1][0] - spans[i][1] for i in range(len(spans) - 1))
    q = [gaps[min(len(gaps) - 1, int(len(gaps) * share))] * 1e3 for share in (0.5, 0.9, 0.99)]
    wait = "calling thread" if blocking else "waiting thread"
    return (
        f"| {processes} | {wait} | {held / elapsed:.2f} | {len(spans) / elapsed:,.0f} |"
        f" {q[0]:.3f} | {q[1]:.3f} | {q[2]:.3f} | {gaps[-1] * 1e3:.1f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[2, 8, 16])
    parser.add_argument("--hold-ms", type=float, default=0.3)
    parser.add_argument("--outside-ms", type=float, default=0.2)
    args = parser.parse_args(argv)
    print(f"{ROUNDS} holds a process, {args.hold_ms} ms held, {args.outside_ms} ms outside the lock")
    print("| processes | wait on | lock busy | holds/s | free between holders: median ms | p90 | p99 | longest |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for processes in args.processes:
        for blocking in (False, True):
            print(_run(processes, blocking, args.hold_ms / 1e3, args.outside_ms / 1e3), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
