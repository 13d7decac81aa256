"""What a patched keyframe costs with each zstd setting, on the keyframes the benchmark session writes.

    python -m benchmarks.keyframe_tables [--turns 1000]

Replays the workload into a directory store (the default settings), then takes every patched
keyframe it wrote, with the dictionary it was compressed against (the segment's previous run),
and compresses it again with each setting below: size in total, and time per keyframe (mean and
largest, the best of three each). The first line is snapstore's setting (``compress_keyframe``).
Then a few settings on smaller generated states, each compressed against the one before it.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from typing import Any

import zstandard

from .baselines import import_snapstore
from .workload import generate


def _patched_keyframes(turns: int) -> list[tuple[bytes, bytes]]:
    """(dictionary, state bytes) of every patched keyframe of a replayed session."""
    snapstore = import_snapstore()
    from snapstore.entries import KEY_PATCHED, CommitEntry, SegmentReader, decode_entry

    cases = []
    with tempfile.TemporaryDirectory() as folder:
        store = snapstore.SnapshotStore.open(folder + "/store")
        session = store.session("bench", max_snapshots=turns)
        for turn, state in enumerate(generate(turns), 1):
            session.commit(state, turn=turn)
        for info in store.backend.segments(session.key):
            reader = SegmentReader("bench")
            for data in store.backend.read_segment(session.key, info.segment).entries:
                entry = decode_entry(data, "bench", "bench")
                if not isinstance(entry, CommitEntry):
                    continue
                dictionary = reader.previous_run() if entry.mode == KEY_PATCHED else b""
                reader.payload(entry)
                if entry.mode == KEY_PATCHED:
                    start, end = reader.spans[entry.id]
                    cases.append((dictionary, bytes(reader.raw[start:end])))
        store.close()
    return cases


def _mid_sized_cases() -> list[tuple[bytes, bytes]]:
    """A state of about 28 kB and one of about 284 kB (lists of generated text), each against the
    state before it: what a session of a smaller state (a LangGraph thread's checkpoint) patches."""
    snapstore = import_snapstore()
    rng = random.Random(1)
    words = ["".join(rng.choice("abcdefghij") for _ in range(6)) for _ in range(500)]
    cases = []
    for lines in (200, 2000):
        state = {"m": [" ".join(rng.choice(words) for _ in range(20)) for _ in range(lines)]}
        before = snapstore.codec.dumps(state)
        state["m"].append("new")
        cases.append((before, snapstore.codec.dumps(state)))
    return cases


def _setting(level: int, **tables: Any) -> Callable[[bytes, bytes], bytes]:
    from snapstore.entries import MAX_WINDOW_LOG, raw_dict

    def compress(dictionary: bytes, state: bytes) -> bytes:
        window = max(20, min(MAX_WINDOW_LOG, (len(dictionary) + len(state)).bit_length()))
        params = zstandard.ZstdCompressionParameters.from_level(level, window_log=window, **tables)
        return zstandard.ZstdCompressor(dict_data=raw_dict(dictionary), compression_params=params).compress(state)

    return compress


def _scaled(level: int, below: int) -> Callable[[bytes, bytes], bytes]:
    """Tables of 2^-``below`` as many slots as the dictionary and state have bytes, up to 2^18."""

    def compress(dictionary: bytes, state: bytes) -> bytes:
        base = zstandard.ZstdCompressionParameters.from_level(level)
        log = min(18, (len(dictionary) + len(state)).bit_length() - below)
        return _setting(level, hash_log=max(base.hash_log, log), chain_log=max(base.chain_log, log))(dictionary, state)

    return compress


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=1000)
    args = parser.parse_args(argv)
    from snapstore.entries import compress_keyframe

    cases = _patched_keyframes(args.turns)
    largest = max(len(dictionary) for dictionary, _ in cases)
    print(f"{args.turns} turns: {len(cases)} patched keyframes, dictionaries up to {largest:,} bytes")
    settings: dict[str, Callable[[bytes, bytes], bytes]] = {
        "snapstore (level 3, tables by size)": lambda d, s: compress_keyframe(s, 3, d)[1],
        "level 3, its own tables": _setting(3),
        "level 3, tables of 2^18": _setting(3, hash_log=18, chain_log=18),
        "level 3, tables by size, a sixteenth": _scaled(3, 4),
        "level 4": _setting(4),
        "level 5": _setting(5),
        "level 3, tables 2^20": _setting(3, hash_log=20, chain_log=20),
        "level 3, tables 2^22": _setting(3, hash_log=22, chain_log=22),
        "level 1, tables 2^20": _setting(1, hash_log=20, chain_log=20),
        "level 3, long-distance matching": _setting(3, enable_ldm=True),
    }
    print(f"{'setting':<38} {'total KiB':>10} {'mean ms':>8} {'max ms':>8}")
    for name, compress in settings.items():
        total, spent, slowest = 0, 0.0, 0.0
        for dictionary, state in cases:
            best, out = _best(compress, dictionary, state)
            total += len(out)
            spent += best
            slowest = max(slowest, best)
        print(f"{name:<38} {total / 1024:>10.1f} {spent / len(cases) * 1e3:>8.2f} {slowest * 1e3:>8.2f}")
    print("smaller states, each against the one before it (ms, bytes):")
    for dictionary, state in _mid_sized_cases():
        for name in ("snapstore (level 3, tables by size)", "level 3, its own tables", "level 3, tables of 2^18"):
            best, out = _best(settings[name], dictionary, state, reps=20)
            print(f"  {len(state) / 1000:>6.0f} kB  {name:<38} {best * 1e3:>7.3f} ms {len(out):>7} B")
    return 0


def _best(
    compress: Callable[[bytes, bytes], bytes], dictionary: bytes, state: bytes, reps: int = 3
) -> tuple[float, bytes]:
    best, out = float("inf"), b""
    for _ in range(reps):
        started = time.perf_counter()
        out = compress(dictionary, state)
        best = min(best, time.perf_counter() - started)
    return best, out


if __name__ == "__main__":
    raise SystemExit(main())
