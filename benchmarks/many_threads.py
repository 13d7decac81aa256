"""A server's memory: one SnapstoreSaver kept open while it runs a turn on thread after thread.

Run from the repository root::

    python -m benchmarks.many_threads --threads 600 [--max-warm-sessions N] [--trim]

Runs the benchmark's agent graph (``benchmarks.langgraph_agent``; tool results ``--tool-bytes``
long, 20,000 by default) for one turn on each of ``--threads`` threads through one saver on a
directory store in a temporary folder, and prints the process's resident memory (RSS, from
``/proc/self/status``) every ``--every`` threads after a ``gc.collect()``, with how many session
handles the store holds. The store keeps the write state of its ``max_warm_sessions`` sessions
written last (docs/design.md, "Diff, patch and memory"): the figure should level off, whatever
the number of threads. ``--trim`` also prints the resident memory after glibc's ``malloc_trim(0)``
hands the heap's free pages back to the system: what the allocator keeps after freeing, told apart
from what the process still uses. Linux only (it reads ``/proc``).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.langgraph_agent import (
    AgentState,
    add_tool_bytes_option,
    build_graph,
    use_tool_result_bytes,
    user_message,
)
from snapstore.langgraph import SnapstoreSaver


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise SystemExit("no VmRSS in /proc/self/status: this benchmark reads Linux's /proc")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=600)
    parser.add_argument("--every", type=int, default=100, help="print after this many threads")
    parser.add_argument("--max-warm-sessions", type=int, help="the store's setting (default: the saver's choice)")
    parser.add_argument("--trim", action="store_true", help="also print RSS after glibc's malloc_trim(0)")
    add_tool_bytes_option(parser, default=20_000)
    args = parser.parse_args(argv)
    trim = ctypes.CDLL("libc.so.6").malloc_trim if args.trim else None
    use_tool_result_bytes(args.tool_bytes)
    settings: dict[str, Any] = {}
    if args.max_warm_sessions is not None:
        settings["max_warm_sessions"] = args.max_warm_sessions
    folder = Path(tempfile.mkdtemp(prefix="snapstore-many-threads-"))
    try:
        with SnapstoreSaver.from_path(folder / "store", **settings) as saver:
            app = build_graph(AgentState).compile(checkpointer=saver)
            bound = getattr(saver.store, "max_warm_sessions", "none")  # (a build before the bound has none)
            trimmed = f" {'trimmed':>8}" if trim is not None else ""
            print(f"{'threads':>8} {'RSS MB':>8}{trimmed} {'handles':>8}   (max_warm_sessions: {bound})")
            for thread in range(1, args.threads + 1):
                app.invoke({"messages": [user_message(thread)]}, {"configurable": {"thread_id": f"user-{thread}"}})
                if thread % args.every == 0 or thread == args.threads:
                    gc.collect()
                    resident = resident_mb()
                    if trim is not None:
                        trim(0)
                        trimmed = f" {resident_mb():>8.0f}"
                    print(f"{thread:>8} {resident:>8.0f}{trimmed} {len(saver.store._sessions):>8}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
