"""Does a commit cost more as a session grows longer? Commit time by stretch of a long session.

    python -m benchmarks.session_length [--commits 20000] [--blocks 10] [--lines 300]
                                        [--postgres URL] [--out FILE]

One session that keeps every snapshot (as a LangGraph thread's does, or a game's with a large
retention limit) is committed ``--commits`` times: a state of a counter and a window of the last
``--lines`` lines of a log (about 20 kB with the default), one line appended and the oldest dropped
each turn. Each turn the same state is also written as one zstd-3 file, timed in the same loop,
the alternative whose cost does not depend on history. The session is cut into ``--blocks``
stretches of equal length; for each, the median commit time of each store and of the file, and
how many segments the directory store holds by then. The last lines give, for each, the last
stretch's median over the first's: 1.00x is a commit that costs what changed however long the
session has run.

Only public names are used, so the same command runs against an earlier build put first on
``PYTHONPATH``, for a comparison in one sitting.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import zstandard

from .baselines import ZSTD_LEVEL, import_snapstore
from .config import RESULTS_DIR


def _line(turn: int) -> str:
    return f"turn {turn}: the party rests at the inn and the bard tells of the {turn % 13}th tower"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=20_000)
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--lines", type=int, default=300)
    parser.add_argument("--postgres", default=os.environ.get("SNAPSTORE_BENCH_POSTGRES_URL"))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "session-length.md")
    args = parser.parse_args(argv)
    if args.commits < args.blocks or args.blocks < 2:
        parser.error("--commits must be at least --blocks, and --blocks at least 2")
    snapstore = import_snapstore()
    work = Path(tempfile.mkdtemp(prefix="snapstore-session-length-"))
    stores: dict[str, Any] = {"directory": snapstore.SnapshotStore.open(work / "store")}
    stores["memory"] = snapstore.SnapshotStore.memory()
    if args.postgres:
        pg = snapstore.SnapshotStore.open(args.postgres)
        if "session-length" in pg.sessions():
            pg.delete_session("session-length")
        stores["PostgreSQL"] = pg
    sessions = {name: store.session("session-length", max_snapshots=args.commits) for name, store in stores.items()}
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    file = work / "turn.json.zst"
    state: dict[str, Any] = {"counter": 0, "log": [_line(-i) for i in range(args.lines, 0, -1)]}
    block = args.commits // args.blocks
    times: dict[str, list[float]] = {name: [] for name in [*sessions, "zstd-3 file"]}
    rows = []
    began = time.time()
    try:
        for turn in range(block * args.blocks):
            state["counter"] = turn
            state["log"].append(_line(turn))
            del state["log"][0]
            for name, session in sessions.items():
                start = time.perf_counter()
                session.commit(state, label=f"turn {turn}")
                times[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            file.write_bytes(compressor.compress(orjson.dumps(state)))
            times["zstd-3 file"].append(time.perf_counter() - start)
            if (turn + 1) % block == 0:
                medians = {name: statistics.median(spent[-block:]) * 1e6 for name, spent in times.items()}
                segments = len(stores["directory"].backend.segments(sessions["directory"].key))
                rows.append((turn + 1, segments, medians))
                print(f"{turn + 1} commits, {rows[-1][1]} segments: "
                      + ", ".join(f"{name} {us:.0f} us" for name, us in medians.items()), flush=True)
    finally:
        for store in stores.values():
            if store.backend.kind == "postgresql" and "session-length" in store.sessions():
                store.delete_session("session-length")
            store.close()
        shutil.rmtree(work, ignore_errors=True)
    names = list(times)
    lines = [
        "# Commit time along one long session",
        "",
        f"- run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(began))}, {time.time() - began:.0f} s, command: "
        f"`python -m benchmarks.session_length --commits {args.commits} --blocks {args.blocks} --lines {args.lines}"
        + (" --postgres URL`" if args.postgres else "`"),
        f"- a state of a counter and the last {args.lines} log lines"
        f" ({len(orjson.dumps(state)) / 1024:.1f} KiB of JSON), one line in and one out a turn; every snapshot kept",
        "",
        "| commits so far | directory segments | " + " | ".join(f"{name} median us" for name in names) + " |",
        "|---:|---:|" + "---:|" * len(names),
    ]
    for commits, segments, medians in rows:
        lines.append(f"| {commits:,} | {segments} | " + " | ".join(f"{medians[n]:.0f}" for n in names) + " |")
    lines.append("")
    first, last = rows[0][2], rows[-1][2]
    for name in names:
        lines.append(f"- {name}: the last stretch's median is {last[name] / first[name]:.2f}x the first's"
                     + ("" if name == "zstd-3 file" else f"; {last[name] / last['zstd-3 file']:.2f}x the file's"
                        f" in the last stretch, {first[name] / first['zstd-3 file']:.2f}x in the first"))
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
