"""Measure the weights of the keyframe policy's cost model on this machine.

    python -m benchmarks.rebuild_costs [--turns 600]

The policy (src/snapstore/keyframes.py) counts a rebuild's cost in "bytes of
JSON parsed": decoding a segment's raw stream, applying a delta (a fixed part
and a part per byte of operations) and re-serializing the result to check its
hash, each relative to ``orjson.loads`` of the same workload's states. This
prints what this machine measures for each, next to the constants the policy
uses, so a change of machine or of the applier can be checked against them.
A rebuild's check serializes a state it has just parsed and patched, for the first time: the last
row times that, apart from the repeated serializations of the rows above (CPython encodes each
non-ASCII string to UTF-8 on its first serialization and keeps the result).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

import orjson
import zstandard

from .baselines import import_snapstore
from .workload import generate


def _best(fn: Any, reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _first_check(data: bytes) -> float:
    """Seconds to serialize and hash a state parsed from ``data`` just before, the first time."""
    from snapstore import codec

    fresh = orjson.loads(data)
    t0 = time.perf_counter()
    codec.object_id(codec.dumps_as_ordered(fresh))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=600)
    args = parser.parse_args(argv)
    import_snapstore()
    from snapstore import codec, keyframes
    from snapstore.delta import diff
    from snapstore.history import apply_trusted

    # keep only the states measured: a heap of hundreds of states makes every allocation pay for
    # the garbage collector's passes over it, which is not what a rebuild pays
    deltas: list[bytes] = []
    previous: Any = None
    first: bytes = b""
    for turn, state in enumerate(generate(args.turns)):
        current = orjson.loads(orjson.dumps(state))
        if turn == args.turns - 101:
            first = codec.dumps(current)
        elif turn > args.turns - 101:
            deltas.append(codec.dumps(diff(previous, current)))
        previous = current
    last = previous
    del previous, current, state
    gc.collect()
    gc.disable()
    final = codec.dumps(last)
    parse = _best(lambda: orjson.loads(final)) / len(final)
    packed = zstandard.ZstdCompressor(level=3).compress(final)
    decode = _best(lambda: zstandard.ZstdDecompressor().decompress(packed)) / len(final)
    verify = _best(lambda: codec.object_id(codec.dumps(last))) / len(final)
    # a rebuilt state keeps canonical key order, and its check serializes it without sorting
    ordered = orjson.loads(final)
    verify_ordered = _best(lambda: codec.object_id(codec.dumps_as_ordered(ordered))) / len(final)
    verify_first = min(_first_check(final) for _ in range(5)) / len(final)

    per_delta = []
    for _ in range(3):
        doc = orjson.loads(first)
        for payload in deltas:
            t0 = time.perf_counter()
            doc = apply_trusted(doc, orjson.loads(payload))
            per_delta.append((len(payload), time.perf_counter() - t0))
    # least squares: time = fixed + per_byte * bytes
    xs, ys = [b for b, _ in per_delta], [t for _, t in per_delta]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / max(sum((x - mx) ** 2 for x in xs), 1e-12)
    fixed = my - slope * mx

    gc.enable()
    rows = [
        ("parse (orjson.loads)", f"{parse * 1e9:.2f} ns/byte", "1 (the unit)", "1"),
        ("decode (zstd)", f"{decode * 1e9:.2f} ns/byte", f"{decode / parse:.2f}", str(keyframes.DECODE_WEIGHT)),
        ("verify (dumps + xxh3)", f"{verify * 1e9:.2f} ns/byte", f"{verify / parse:.2f}", str(keyframes.VERIFY_WEIGHT)),
        ("verify, state in key order", f"{verify_ordered * 1e9:.2f} ns/byte", f"{verify_ordered / parse:.2f}", "-"),
        ("verify, first after parsing", f"{verify_first * 1e9:.2f} ns/byte", f"{verify_first / parse:.2f}", "-"),
        ("apply, per delta", f"{fixed * 1e6:.1f} us", f"{fixed / parse:.0f}", f"{keyframes.DELTA_FIXED}"),
        (
            "apply, per byte of ops",
            f"{slope * 1e9:.2f} ns/byte",
            f"{slope / parse:.2f}",
            str(keyframes.DELTA_BYTE_WEIGHT),
        ),
    ]
    print(
        f"{args.turns} turns, final state {len(final):,} bytes, {len(deltas)} deltas of "
        f"{statistics.fmean(xs):,.0f} bytes on average"
    )
    print(f"{'cost':<26} {'measured':>16} {'in parse-bytes':>16} {'policy uses':>12}")
    for name, measured, units, used in rows:
        print(f"{name:<26} {measured:>16} {units:>16} {used:>12}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
