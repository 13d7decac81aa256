"""Where a commit's time goes, phase by phase, beside writing the same state as one zstd-3 file.

    python -m benchmarks.commit_phases [--turns 1000] [--store directory|memory] [--alternatives]
                                       [--shape messages|entities|inserts|document|shuffles]

Replays the benchmark workload (or, with ``--shape``, one of ``benchmarks.turn_shapes``'s sessions
of other shapes); each turn the state is first written as one zstd-3 file (its
``orjson.dumps`` timed apart), then committed to a snapstore session whose phases are timed by
wrapping the engine's own functions: canonical serialization, the whole-state check, the diff,
catching up, appending, compressing the delta, patching the head, hashing (the state's, streamed
over its members, and the delta's and the record's). Medians per commit;
"unaccounted" is the commit's median less the phases' (the wrappers' own cost is in it).

``--alternatives`` also times, hot, on the final state, what was tried against the two passes
every commit makes: orjson's sorted serialization beside ``marshal`` and ``pickle``, reusing
the bytes of list elements proven unchanged by identity (a Python loop) beside serializing them,
and the state's hash over its members' bytes joined beside streamed (``codec.encode_canonical``).
"""

from __future__ import annotations

import argparse
import marshal
import os
import pickle
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from operator import is_
from pathlib import Path
from typing import Any

import orjson
import zstandard

from .baselines import ZSTD_LEVEL, import_snapstore
from .run import median_ns
from .timing import wrap_timed
from .turn_shapes import SHAPES
from .workload import generate

PHASES = [
    ("codec", "encode_members", "canonical serialization"),
    ("codec", "check_reading", "whole-state check"),
    ("codec", "read_back", "reading the state back (a keyframe's check)"),
    ("session", "diff_members", "diff"),
    ("Session", "_catch_up", "catch up (lock held)"),
    ("Session", "_append", "append"),
    ("DeltaStream", "compress", "compress the delta"),
    ("session", "compress_keyframe", "compress a keyframe"),
    ("session", "apply_patch", "patch the head"),
    ("codec", "object_id", "hash"),
    ("codec", "members_id", "hash"),  # the state's, streamed over its members (codec.encode_canonical)
]
#: each phase once, in the table's order (two functions can time one phase)
LABELS = list(dict.fromkeys(label for _owner, _name, label in PHASES))


def phases(
    turns: int, store_kind: str, shape: str | None = None
) -> tuple[dict[str, list[int]], list[int], list[int], list[int]]:
    snapstore = import_snapstore()
    from snapstore import session

    spent: dict[str, int] = defaultdict(int)
    owners = {
        "codec": session.codec,
        "session": session,
        "Session": session.Session,
        "DeltaStream": session.DeltaStream,
    }
    running: list[str] = []
    for owner, name, label in PHASES:
        wrap_timed(owners[owner], name, label, spent, running)
    per_phase: dict[str, list[int]] = defaultdict(list)
    commits, files, dumps = [], [], []
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    with tempfile.TemporaryDirectory(prefix="snapstore-phases-") as tmp:
        store = (
            snapstore.SnapshotStore.open(Path(tmp) / "store")
            if store_kind == "directory"
            else snapstore.SnapshotStore.memory()
        )
        sess = store.session("phases", max_snapshots=turns)
        states = generate(turns) if shape is None else SHAPES[shape](turns, random.Random(11))
        for turn, state in enumerate(states, 1):
            started = time.perf_counter_ns()
            data = orjson.dumps(state)
            dumped = time.perf_counter_ns()
            with open(os.path.join(tmp, f"{turn:08d}.json.zst"), "wb") as f:
                f.write(compressor.compress(data))
            files.append(time.perf_counter_ns() - started)
            dumps.append(dumped - started)
            spent.clear()
            started = time.perf_counter_ns()
            sess.commit(state, label=f"t{turn}", turn=turn)
            commits.append(time.perf_counter_ns() - started)
            for label in LABELS:
                per_phase[label].append(spent.get(label, 0))
        store.close()
    return per_phase, commits, files, dumps


def alternatives(turns: int) -> list[tuple[str, float]]:
    state: dict[str, Any] = {}
    for state in generate(turns):  # noqa: B007 - the final state
        pass
    transcript = state["transcript"]
    snapstore = import_snapstore()
    codec = snapstore.codec
    pieces = codec.encode_members(state)[1]
    join = codec.join_members
    cache = {id(e): (e, tuple(e), tuple(e.values()), orjson.dumps(e, option=orjson.OPT_SORT_KEYS)) for e in transcript}

    def reuse_by_identity() -> bytes:
        out = []
        for element in transcript:
            kept = cache.get(id(element))
            if (
                kept is not None
                and kept[0] is element
                and len(element) == len(kept[1])
                and all(map(is_, element.values(), kept[2]))
                and all(map(is_, element, kept[1]))
            ):
                out.append(kept[3])
            else:
                out.append(orjson.dumps(element, option=orjson.OPT_SORT_KEYS))
        return b",".join(out)

    def median_ms(fn: Any) -> float:
        return median_ns(fn, 50) / 1e6

    sort = orjson.OPT_SORT_KEYS
    return [
        ("orjson.dumps, keys sorted (the whole state)", median_ms(lambda: orjson.dumps(state, option=sort))),
        ("marshal.dumps (the whole state)", median_ms(lambda: marshal.dumps(state))),
        ("pickle.dumps, protocol 5 (the whole state)", median_ms(lambda: pickle.dumps(state, protocol=5))),
        ("orjson.dumps, keys sorted (the transcript)", median_ms(lambda: orjson.dumps(transcript, option=sort))),
        ("reusing unchanged elements' bytes, proven by identity (the transcript)", median_ms(reuse_by_identity)),
        ("the state's hash, its members' bytes joined first", median_ms(lambda: codec.object_id(join(pieces)))),
        ("the state's hash, streamed over its members' bytes", median_ms(lambda: codec.members_id(pieces))),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--store", choices=["directory", "memory"], default="directory")
    parser.add_argument("--alternatives", action="store_true")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None)
    args = parser.parse_args(argv)
    if args.shape is not None and args.alternatives:
        parser.error("--alternatives times the benchmark workload's transcript: not with --shape")
    per_phase, commits, files, dumps = phases(args.turns, args.store, args.shape)
    ms = statistics.median
    session_kind = "" if args.shape is None else f" of {args.shape}"
    print(f"{args.turns} turns{session_kind}, {args.store} store; medians per commit, ms")
    print(f"  zstd-3 file {ms(files) / 1e6:.3f} (of which orjson.dumps {ms(dumps) / 1e6:.3f})")
    print(f"  snapstore commit {ms(commits) / 1e6:.3f} ({ms(commits) / ms(files):.2f}x the file)")
    accounted = 0.0
    for label in LABELS:
        value = ms(per_phase[label]) / 1e6
        accounted += value
        print(f"    {label:<28} {value:.3f}")
    print(f"    {'unaccounted':<28} {ms(commits) / 1e6 - accounted:.3f}")
    if args.alternatives:
        print("alternatives, hot, on the final state (median ms):")
        for label, value in alternatives(args.turns):
            print(f"  {label:<72} {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
