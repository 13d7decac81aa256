"""The commit's diff and the rebuild's patch applier, timed against jsonpatch in the same run.

Consecutive states of the benchmark workload (an RPG session whose transcript grows and whose
world changes every turn) are diffed and patched by:

* snapstore's ``diff_members`` (what a commit calls, the members' bytes in hand) and ``diff``;
* ``jsonpatch.make_patch``, the reference implementation;
* with ``--before REV``, the ``snapstore.delta`` module of that git revision, loaded beside the
  current one, so before and after are measured in one process on the same states.

and each turn's patch (as stored: parsed from its bytes) is applied in place to the previous
state by ``apply_patch`` (``copy_values=False``, as a rebuild does, and with the default copy),
by ``jsonpatch.apply_patch`` and by the revision's applier. Each figure is the median over the
turns of the best of ``--repeat`` runs, as thread CPU time; the ratios are the figures to read.

    python -m benchmarks.hot_path --turns 600 --before 3c1ff3a
    python -m benchmarks.hot_path --turns 600 --before 3c1ff3a --window 200   # a sliding window
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import statistics
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonpatch
import orjson

from benchmarks.workload import DEFAULT_SEED, generate
from snapstore import codec, delta

ROOT = Path(__file__).resolve().parents[1]


def delta_at(revision: str) -> ModuleType:
    """``snapstore.delta`` as it was at a git revision, importable beside the current one."""
    source = subprocess.run(
        ["git", "show", f"{revision}:src/snapstore/delta.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    spec = importlib.util.spec_from_loader("snapstore._delta_before", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "snapstore"  # its relative imports (errors) resolve to the current package
    exec(compile(source, f"{revision}:src/snapstore/delta.py", "exec"), module.__dict__)
    return module


def best(call: Callable[..., Any], repeat: int, setup: Callable[[], tuple[Any, ...]] = tuple) -> float:
    """The best CPU time of ``call`` (given the arguments ``setup()`` makes, untimed), in µs."""
    times = []
    for _ in range(repeat):
        arguments = setup()
        start = time.thread_time_ns()
        call(*arguments)
        times.append(time.thread_time_ns() - start)
    return min(times) / 1e3


def _parsed(*payloads: bytes) -> tuple[Any, ...]:
    return tuple(map(orjson.loads, payloads))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=600)
    parser.add_argument("--pairs", type=int, default=100, help="consecutive pairs timed, from the last turns")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--before", help="a git revision whose snapstore.delta is timed beside the current one")
    parser.add_argument(
        "--window", type=int, help="keep only the transcript's last N messages: a sliding window, as a capped log is"
    )
    args = parser.parse_args(argv)
    before = delta_at(args.before) if args.before else None

    snapshots: list[bytes] = []
    for turn, state in enumerate(generate(args.turns, seed=args.seed), 1):
        if turn > args.turns - args.pairs - 1:
            if args.window:
                state = {**state, "transcript": state["transcript"][-args.window :]}
            snapshots.append(orjson.dumps(state))

    differs: dict[str, Callable[..., Any]] = {
        "snapstore diff_members": lambda old, new, pieces: delta.diff_members(old, new, *pieces),
        "snapstore diff": lambda old, new, pieces: delta.diff(old, new),
        "jsonpatch.make_patch": lambda old, new, pieces: jsonpatch.make_patch(old, new),
    }
    appliers: dict[str, Callable[[Any, Any], Any]] = {
        "snapstore apply_patch (copy_values=False)": lambda doc, patch: delta.apply_patch(
            doc, patch, in_place=True, copy_values=False
        ),
        "snapstore apply_patch": lambda doc, patch: delta.apply_patch(doc, patch, in_place=True),
        "jsonpatch.apply_patch": lambda doc, patch: jsonpatch.apply_patch(doc, patch, in_place=True),
    }
    if before is not None:
        differs[f"{args.before} diff_members"] = lambda old, new, pieces: before.diff_members(old, new, *pieces)
        differs[f"{args.before} diff"] = lambda old, new, pieces: before.diff(old, new)
        appliers[f"{args.before} apply_patch"] = lambda doc, patch: before.apply_patch(doc, patch, in_place=True)

    diffs: dict[str, list[float]] = {name: [] for name in differs}
    applies: dict[str, list[float]] = {name: [] for name in appliers}
    sizes: list[int] = []
    for old_bytes, new_bytes in itertools.pairwise(snapshots):
        old, new = orjson.loads(old_bytes), orjson.loads(new_bytes)
        pieces = (codec.encode_state(old)[1], codec.encode_state(new)[1])
        sizes.append(len(new_bytes))
        for name, differ in differs.items():
            diffs[name].append(best(partial(differ, old, new, pieces), args.repeat))

        patch_bytes = orjson.dumps(delta.diff(old, new))
        check = delta.apply_patch(orjson.loads(old_bytes), orjson.loads(patch_bytes), in_place=True)
        assert orjson.dumps(check, option=orjson.OPT_SORT_KEYS) == orjson.dumps(new, option=orjson.OPT_SORT_KEYS)
        fresh = partial(_parsed, old_bytes, patch_bytes)
        for name, apply in appliers.items():
            applies[name].append(best(apply, args.repeat, fresh))

    print(
        f"{len(sizes)} consecutive pairs of turns {args.turns - len(sizes) + 1}-{args.turns} (seed {args.seed}), "
        f"states of {min(sizes) / 1e3:.0f}-{max(sizes) / 1e3:.0f} kB"
        + (f" (transcripts cut to their last {args.window} messages)" if args.window else "")
        + f"; median CPU time per pair, best of {args.repeat}"
    )
    for title, table, reference in (
        ("diff", diffs, "jsonpatch.make_patch"),
        ("apply (in place)", applies, "jsonpatch.apply_patch"),
    ):
        base = statistics.median(table[reference])
        print(f"\n{title:42} {'µs':>9}  x {reference}")
        for name, values in table.items():
            median = statistics.median(values)
            print(f"  {name:40} {median:9.1f}  {median / base:6.3f}")
    if before is not None:
        print(f"\nafter / before ({args.before}), medians of the per-pair ratios:")
        for ours, theirs in (
            ("snapstore diff_members", f"{args.before} diff_members"),
            ("snapstore diff", f"{args.before} diff"),
        ):
            print(
                f"  {ours:40} {statistics.median(a / b for a, b in zip(diffs[ours], diffs[theirs], strict=True)):6.3f}"
            )
        theirs = f"{args.before} apply_patch"
        for ours in ("snapstore apply_patch (copy_values=False)", "snapstore apply_patch"):
            ratio = statistics.median(a / b for a, b in zip(applies[ours], applies[theirs], strict=True))
            print(f"  {ours:40} {ratio:6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
