"""How compact is an exported archive? Builds the benchmark store, exports it, prints ratios.

    PYTHONPATH=src python -m benchmarks.archive_size [--turns 1000] [--level 19]

Compares the archive of a 1,000-turn game session with

* one zstd level-19 stream of every raw delta of the session (the JSON Patch from each
  turn's state to the next, canonical JSON, concatenated): the history's information
  content, without any full state or record. Target: archive <= 1.3x this;
* the sum of the store's loose objects (each one zstd-3 frame plus its 16-byte header, as
  stored in a directory store). Target: archive >= 2x smaller.

Then imports the archive into an empty store and checks every state rebuilds byte-identical.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import zstandard

from snapstore import SnapshotStore, codec
from snapstore.delta import diff

try:
    from benchmarks.workload import DEFAULT_SEED, generate
except ImportError:  # the workload module is optional: fall back to a growing transcript
    DEFAULT_SEED = 20240611

    def generate(turns: int, seed: int = DEFAULT_SEED) -> Iterator[dict[str, Any]]:
        rng = random.Random(seed)
        words = ["the", "a", "dragon", "gate", "north", "tavern", "blade", "torch", "whispers", "slowly", "crimson"]
        state: dict[str, Any] = {"transcript": [], "hp": 10, "xp": 0.0, "flags": {}}
        for turn in range(turns):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 120)))
            state["transcript"].append({"turn": turn, "role": "gm", "content": text})
            state["hp"] = rng.randint(1, 20)
            state["xp"] = round(state["xp"] + rng.random() * 10, 2)
            state["flags"][f"f{rng.randint(0, 40)}"] = rng.random() < 0.5
            yield state


def fmt(n: int) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):,.2f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--level", type=int, default=19, help="archive zstd level (default 19)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="snapstore-archive-") as tmp:
        root = Path(tmp)
        store = SnapshotStore.open(root / "store")
        sess = store.session("campaign", max_snapshots=args.turns)
        raw_deltas: list[bytes] = []
        previous: Any = None
        t0 = time.perf_counter()
        for turn, state in enumerate(generate(args.turns, seed=args.seed), 1):
            sess.commit(state, label=f"turn {turn}", turn=turn)
            current = orjson.loads(orjson.dumps(state))  # our own copy: the generator mutates its state
            if previous is not None:
                raw_deltas.append(codec.dumps(diff(previous, current)))
            previous = current
        build_s = time.perf_counter() - t0

        stats = store.stats()
        loose = stats["stored_bytes"]  # what the store's segments hold
        delta_stream = b"".join(raw_deltas)
        reference = len(zstandard.ZstdCompressor(level=19).compress(delta_stream))

        archive = root / "campaign.snaparchive"
        t0 = time.perf_counter()
        report = store.export(archive, level=args.level)
        export_s = time.perf_counter() - t0

        target = SnapshotStore.open(root / "imported")
        t0 = time.perf_counter()
        imported = target.import_archive(archive)
        import_s = time.perf_counter() - t0
        copy = target.session("campaign")
        assert copy.snapshot_ids() == sess.snapshot_ids()
        for sid in sess.snapshot_ids()[-3:] + sess.snapshot_ids()[:: max(1, args.turns // 10)]:
            assert codec.dumps(copy.state(sid)) == codec.dumps(sess.state(sid)), sid
        verify = target.verify()
        assert verify.ok, verify.problems

    size = report.archive_bytes
    vs_deltas = size / reference
    vs_loose = loose / size
    print(f"workload: {args.turns} turns, seed {args.seed}, final state {fmt(len(orjson.dumps(previous)))}")
    print(
        f"store: {stats['segments']} segments, {stats['keyframes']} keyframes among the retained, "
        f"{fmt(loose)} stored; built in {build_s:.1f} s"
    )
    print(f"raw deltas: {len(raw_deltas)} patches, {fmt(len(delta_stream))}; one zstd-19 stream: {fmt(reference)}")
    print(
        f"archive (level {args.level}): {fmt(size)} ({size:,} bytes), body {fmt(report.raw_bytes)}, "
        f"{report.objects} objects; export {export_s:.2f} s, import {import_s:.2f} s "
        f"({imported.objects_written} objects written), verify ok"
    )
    ok_deltas = vs_deltas <= 1.3
    ok_loose = vs_loose >= 2
    print(f"archive / zstd-19 of raw deltas = {vs_deltas:.3f}x  (target <= 1.3x: {'met' if ok_deltas else 'MISSED'})")
    print(f"store / archive = {vs_loose:.2f}x  (target >= 2x: {'met' if ok_loose else 'MISSED'})")
    return 0 if ok_deltas and ok_loose else 1


if __name__ == "__main__":
    sys.exit(main())
