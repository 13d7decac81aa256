"""Many LangGraph conversations at once through one SnapstoreSaver: time and memory by ``cached_threads``.

Run from the repository root::

    python -m benchmarks.langgraph_concurrent [--conversations 60] [--turns 4] [--cached 32 128]
        [--cached-bytes 8000000 ...]

Runs the benchmark's agent graph (``benchmarks.langgraph_agent``; tool results ``--tool-bytes``
long, 20,000 by default) for ``--turns`` turns on each of ``--conversations`` threads at once
(``asyncio.gather`` of their ``ainvoke`` loops, so their steps interleave as a server's do), on a
directory store in a temporary folder, once for each ``--cached`` value of ``cached_threads``,
each in a fresh process. Prints the wall time of the whole run and the process's peak resident
memory (``ru_maxrss``): what a cache smaller than the conversations running costs in time, and
what a larger one costs in memory (docs/langgraph.md). With ``--cached-bytes``, each
``cached_threads`` value runs again with each of those values of ``cached_bytes``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.langgraph_agent import (
    AgentState,
    add_tool_bytes_option,
    build_graph,
    use_tool_result_bytes,
    user_message,
)


async def _run(conversations: int, turns: int, cached: int, cached_bytes: int | None, root: Path) -> float:
    from snapstore.langgraph import SnapstoreSaver

    async with SnapstoreSaver.from_path(root, cached_threads=cached, cached_bytes=cached_bytes) as saver:
        app = build_graph(AgentState).compile(checkpointer=saver)

        async def conversation(number: int) -> None:
            config: Any = {"configurable": {"thread_id": f"t{number}"}}
            for turn in range(turns):
                await app.ainvoke({"messages": [user_message(turn)]}, config)

        start = time.perf_counter()
        await asyncio.gather(*(conversation(n) for n in range(conversations)))
        return time.perf_counter() - start


def _one(args: argparse.Namespace) -> None:
    use_tool_result_bytes(args.tool_bytes)
    folder = Path(tempfile.mkdtemp(prefix="snapstore-concurrent-"))
    try:
        cached_bytes = args.cached_bytes[0] if args.cached_bytes else None
        seconds = asyncio.run(_run(args.conversations, args.turns, args.cached[0], cached_bytes, folder / "store"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    shown = "-" if cached_bytes is None else f"{cached_bytes:,}"
    print(f"| {args.cached[0]} | {shown} | {seconds:.2f} | {peak:.0f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=60)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--cached", type=int, nargs="+", default=[32, 128], help="cached_threads values")
    parser.add_argument("--cached-bytes", type=int, nargs="*", default=[], help="cached_bytes values, besides none")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a single setting, in this process
    add_tool_bytes_option(parser, default=20_000)
    args = parser.parse_args(argv)
    if args.one:
        _one(args)
        return
    print(f"{args.conversations} conversations x {args.turns} turns at once, tool results of {args.tool_bytes} bytes")
    print("| cached_threads | cached_bytes | seconds | peak RSS MB |\n| ---: | ---: | ---: | ---: |", flush=True)
    for cached in args.cached:
        for cached_bytes in [None, *args.cached_bytes]:
            subprocess.run(
                [sys.executable, "-m", "benchmarks.langgraph_concurrent", "--one", "--cached", str(cached),
                 "--conversations", str(args.conversations), "--turns", str(args.turns),
                 "--tool-bytes", str(args.tool_bytes),
                 *(["--cached-bytes", str(cached_bytes)] if cached_bytes is not None else [])],
                check=True,
            )


if __name__ == "__main__":
    main()
