"""Measure the weights of the keyframe policy's cost model on this machine.

    python -m benchmarks.rebuild_costs [--turns 600]

The policy (src/snapstore/keyframes.py) counts a rebuild's cost in "bytes of
JSON parsed": decoding a segment's raw stream, applying a delta (a fixed part
and a part per byte of operations) and re-serializing the result to check its
hash, each relative to ``orjson.loads`` of the same workload's states. This
prints what this machine measures for each, next to the constants the policy
uses, so a change of machine or of the applier can be checked against them, and what applying
the last 100 deltas in a row costs (parsing each and applying it), the chain a rebuild walks.
A rebuild's check serializes a state it has just parsed and patched, for the first time: the row
"verify, first after parsing" times that, apart from the repeated serializations of the rows above (CPython encodes each
non-ASCII string to UTF-8 on its first serialization and keeps the result).

With ``--estimates N``, the session is also committed to a directory store, and the N snapshots
whose cold rebuild (a fresh store handle, best of three) costs the most against loading the last
state from a zstd-3 file (the ratio ``benchmarks.run``'s target is stated in) are listed with
their rebuild against loading their own state (best of three each, timed beside it), the policy's
estimate of that ratio, and what the estimate counts: the chain's deltas and the raw stream
decoded before its keyframe, keyframes and deltas apart. Then, for the session's last segment read
cold (best of three), what reading its file costs an entry and what decoding it costs a raw byte,
independent keyframes, patched keyframes and delta frames apart, in the policy's units.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import zstandard

from .baselines import import_snapstore
from .timing import best_seconds, cold_rebuild_ns
from .workload import generate


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
    parser.add_argument("--estimates", type=int, default=0, metavar="N")
    args = parser.parse_args(argv)
    if args.turns <= 101:
        parser.error("--turns must be more than 101: the deltas of the last 100 turns are timed")
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
    parse = best_seconds(lambda: orjson.loads(final)) / len(final)
    packed = zstandard.ZstdCompressor(level=3).compress(final)
    decode = best_seconds(lambda: zstandard.ZstdDecompressor().decompress(packed)) / len(final)
    verify = best_seconds(lambda: codec.object_id(codec.dumps(last))) / len(final)
    # a rebuilt state keeps canonical key order, and its check serializes it without sorting
    ordered = orjson.loads(final)
    verify_ordered = best_seconds(lambda: codec.object_id(codec.dumps_as_ordered(ordered))) / len(final)
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
    # the whole chain in a row, as a rebuild applies it: the best of the three passes
    chain = min(sum(ys[start : start + len(deltas)]) for start in range(0, len(ys), len(deltas)))
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
        (f"apply, all {len(deltas)} in a row", f"{chain * 1e3:.2f} ms", f"{chain / parse:,.0f}", "-"),
    ]
    print(
        f"{args.turns} turns, final state {len(final):,} bytes, {len(deltas)} deltas of "
        f"{statistics.fmean(xs):,.0f} bytes on average"
    )
    print(f"{'cost':<26} {'measured':>16} {'in parse-bytes':>16} {'policy uses':>12}")
    for name, measured, units, used in rows:
        print(f"{name:<26} {measured:>16} {units:>16} {used:>12}")
    if args.estimates:
        _estimates(args.turns, args.estimates, parse)
    return 0


def _estimates(turns: int, count: int, parse: float) -> None:
    """The ``count`` costliest cold rebuilds of a directory store of the session, beside the policy's
    estimates; then what reading and decoding its last segment cost (``parse``: seconds a byte of
    ``orjson.loads``, the policy's unit)."""
    from snapstore import SnapshotStore
    from snapstore.entries import KEY_MODES, CommitEntry
    from snapstore.keyframes import KeyframePolicy, full_load_cost

    folder = Path(tempfile.mkdtemp(prefix="snapstore-estimates-"))
    try:
        store = SnapshotStore.open(folder / "store")
        session = store.session("s", max_snapshots=turns)
        ids = [session.commit(state).id for state in generate(turns)]
        log = session._current()
        rows = []
        for sid in ids[:: max(1, turns // 250)] + ids[-8:]:
            path = log.chain(sid)
            keyframe, size = path[0], path[-1].record.size
            leading = log.segments[keyframe.segment].entries[: keyframe.ordinal]
            before = [e for e in leading if isinstance(e, CommitEntry)]
            keyframe_bytes = sum(e.raw_length for e in before if e.mode in KEY_MODES)
            delta_bytes = sum(e.raw_length for e in before if e.mode not in KEY_MODES)
            chain = sum(KeyframePolicy.delta_cost(c.raw_length) for c in path[1:])
            estimated = KeyframePolicy.rebuild_cost(chain, size, keyframe_bytes + delta_bytes) / full_load_cost(size)
            rows.append((sid, estimated, len(path) - 1, keyframe_bytes, delta_bytes, len(before)))
        compressor = zstandard.ZstdCompressor(level=3)
        last, own = folder / "last.json.zst", folder / "own.json.zst"
        last.write_bytes(compressor.compress(orjson.dumps(session.state(ids[-1]))))
        store.close()

        def open_store() -> SnapshotStore:
            return SnapshotStore.open(folder / "store")

        measured = []
        for sid, *facts in rows:
            _spent, state = cold_rebuild_ns(open_store, "s", sid)
            own.write_bytes(compressor.compress(orjson.dumps(state)))
            del state
            rebuild = min(cold_rebuild_ns(open_store, "s", sid)[0] for _attempt in range(3)) / 1e9
            load_last = min(_load_seconds(last) for _attempt in range(3))
            load_own = min(_load_seconds(own) for _attempt in range(3))
            measured.append((rebuild / load_last, ids.index(sid) + 1, rebuild / load_own, *facts))
        stream = _stream_costs(folder / "store", parse)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    measured.sort(reverse=True)
    print(f"\nthe {count} costliest cold rebuilds of {len(measured)} sampled, against loading the last state")
    print(
        f"{'turn':>6} {'vs last':>8} {'vs own':>8} {'estimate':>9} {'deltas':>7} {'keyframes before':>17}"
        f" {'deltas before':>14} {'entries':>8}"
    )
    for ratio, turn, own_ratio, estimate, deltas, keyframes_before, deltas_before, entries_before in measured[:count]:
        print(
            f"{turn:>6} {ratio:>7.2f}x {own_ratio:>7.2f}x {estimate:>8.2f}x {deltas:>7}"
            f" {keyframes_before / 1024:>13,.0f} KiB {deltas_before / 1024:>10,.0f} KiB {entries_before:>8}"
        )
    print("\nreading and decoding the session's last segment, cold, best of three:")
    for line in stream:
        print(f"  {line}")


def _stream_costs(store_path: Path, parse: float) -> list[str]:
    """What a rebuild pays per entry read and per raw byte decoded, keyframes and delta frames apart."""
    from snapstore import SnapshotStore
    from snapstore.entries import KEY_INDEPENDENT, KEY_PATCHED, SegmentReader

    decode_into = SegmentReader._decode_into
    groups: list[tuple[int, int, float]] = []

    def timed(reader: Any, view: Any, at: int, group: Any, *more: Any) -> Any:
        t0 = time.perf_counter()
        written = decode_into(reader, view, at, group, *more)
        groups.append((group[0][1], sum(item[2] for item in group), time.perf_counter() - t0))
        return written

    kinds = {KEY_INDEPENDENT: "independent keyframes", KEY_PATCHED: "patched keyframes"}
    reading = float("inf")
    best: dict[str, tuple[int, float]] = {}
    entries = 0
    SegmentReader._decode_into = timed  # type: ignore[method-assign,assignment]
    try:
        for _attempt in range(3):
            store = SnapshotStore.open(store_path)
            log = store.session("s")._current()
            number = max(log.segments)
            t0 = time.perf_counter()
            entries = sum(1 for e in store.backend.read_segment(log.key, number).entries if e[:1] != b"\x03")
            reading = min(reading, (time.perf_counter() - t0) / max(entries, 1))
            groups.clear()
            log.segment_payloads(number)
            store.close()
            totals: dict[str, tuple[int, float]] = {}
            for mode, raw, spent in groups:
                kind = kinds.get(mode, "delta frames")
                raw_sum, spent_sum = totals.get(kind, (0, 0.0))
                totals[kind] = (raw_sum + raw, spent_sum + spent)
            for kind, (raw, spent) in totals.items():
                if raw and (kind not in best or spent / raw < best[kind][1] / best[kind][0]):
                    best[kind] = (raw, spent)
    finally:
        SegmentReader._decode_into = decode_into  # type: ignore[method-assign]
    per_entry = f"{reading * 1e6:.2f} us an entry ({entries} entries; {reading / parse:,.0f} parse units)"
    lines = [f"reading the segment file: {per_entry}"]
    for kind in (*kinds.values(), "delta frames"):
        if kind not in best:
            continue
        raw, spent = best[kind]
        per_byte = spent / raw
        units = f"{per_byte / parse:.2f} parse units"
        lines.append(f"decoding {kind}: {per_byte * 1e9:.2f} ns a raw byte ({raw:,} bytes; {units})")
    return lines


def _load_seconds(path: Path) -> float:
    t0 = time.perf_counter()
    orjson.loads(zstandard.ZstdDecompressor().decompress(path.read_bytes()))
    return time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())
