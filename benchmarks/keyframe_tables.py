"""What a patched keyframe and a delta cost with each zstd setting, on what the benchmark session writes.

    python -m benchmarks.keyframe_tables [--turns 1000] [--langgraph]

Replays the workload into a directory store (the default settings), then takes every patched
keyframe it wrote, with the dictionary it was compressed against (the segment's previous run),
and compresses it again with each setting below: size in total, time per keyframe (mean and
largest, the best of three each), and the time to decode all of them (the best of three each:
what rebuilds reading through those keyframes spend on them). The first line is snapstore's
setting (``compress_keyframe``). With ``--langgraph`` the session is instead the checkpoints
session of a LangGraph thread: the checkpointer benchmark's agent graph
(``benchmarks.langgraph_agent``) run for ``--turns`` turns with ``SnapstoreSaver`` on a directory
store, whose states grow to megabytes (5.4 MB at 1,000 turns; ``--tool-bytes`` sets the size of its
tool results, 3,000 bytes by default).
Then its delta frames again, each setting's total and time a delta.
Then a few settings on smaller generated states, each compressed against the one before it.
Last, the same patched keyframes compressed by snapstore's setting against other dictionaries a
format could name, ones a rebuild would decode less of: the previous keyframe alone (without the
deltas of its run), and the segment's first keyframe.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson
import zstandard

from .baselines import import_snapstore
from .workload import generate

Segments = tuple[list[tuple[bytes, bytes]], list[tuple[bytes, list[bytes]]], list[tuple[bytes, bytes]]]


def _replayed_segments(turns: int) -> Segments:
    """``_segments_of`` the benchmark session replayed for ``turns`` turns."""
    snapstore = import_snapstore()
    with tempfile.TemporaryDirectory() as folder:
        store = snapstore.SnapshotStore.open(folder + "/store")
        session = store.session("bench", max_snapshots=turns)
        for turn, state in enumerate(generate(turns), 1):
            session.commit(state, turn=turn)
        found = _segments_of(store, session.key)
        store.close()
    return found


def _langgraph_segments(turns: int) -> Segments:
    """``_segments_of`` the checkpoints session of a LangGraph thread run for ``turns`` turns."""
    from benchmarks.langgraph_agent import AgentState, build_graph, user_message
    from snapstore import SnapshotStore
    from snapstore.langgraph import SnapstoreSaver
    from snapstore.langgraph.names import lane_names

    config: Any = {"configurable": {"thread_id": "tables"}}
    with tempfile.TemporaryDirectory() as folder:
        with SnapstoreSaver.from_path(folder + "/store") as saver:
            app = build_graph(AgentState).compile(checkpointer=saver)
            for turn in range(turns):
                app.invoke({"messages": [user_message(turn)]}, config, durability="sync")
        with SnapshotStore.open(folder + "/store") as store:
            return _segments_of(store, store.session(lane_names("tables", "").checkpoints).key)


def _segments_of(store: Any, key: str) -> Segments:
    """Of a stored session: (dictionary, state bytes) of every patched keyframe, (dictionary,
    raw deltas) of every delta frame, and (previous keyframe, segment's first keyframe) of every
    patched keyframe."""
    from snapstore.entries import (
        DELTA_CONTINUE,
        DELTA_FRAME,
        DELTA_WINDOW,
        KEY_PATCHED,
        CommitEntry,
        SegmentReader,
        decode_entry,
    )

    cases = []
    frames: list[tuple[bytes, list[bytes]]] = []
    others: list[tuple[bytes, bytes]] = []
    for info in store.backend.segments(key):
        reader = SegmentReader("bench")
        keyframes: list[bytes] = []
        for data in store.backend.read_segment(key, info.segment).entries:
            if data[:1] == b"\x03":
                continue  # an INDEX entry (format 4): ids only
            entry = decode_entry(data, "bench", "bench")
            if not isinstance(entry, CommitEntry):
                continue
            dictionary = reader.previous_run() if entry.mode == KEY_PATCHED else b""
            if entry.mode == DELTA_FRAME:
                frames.append((bytes(reader.raw[-DELTA_WINDOW:]), []))
            raw = reader.payload(entry)
            if entry.is_keyframe:
                start, end = reader.spans[entry.id]
                keyframes.append(bytes(reader.raw[start:end]))
            if entry.mode == KEY_PATCHED:
                cases.append((dictionary, keyframes[-1]))
                others.append((keyframes[-2], keyframes[0]))
            elif entry.mode in (DELTA_FRAME, DELTA_CONTINUE) and frames:
                frames[-1][1].append(bytes(raw))
    return cases, frames, others


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


def _scaled(level: int, below: int, cap: int) -> Callable[[bytes, bytes], bytes]:
    """Tables of 2^-``below`` as many slots as the dictionary and state have bytes, up to 2^``cap``."""

    def compress(dictionary: bytes, state: bytes) -> bytes:
        base = zstandard.ZstdCompressionParameters.from_level(level)
        log = min(cap, (len(dictionary) + len(state)).bit_length() - below)
        return _setting(level, hash_log=max(base.hash_log, log), chain_log=max(base.chain_log, log))(dictionary, state)

    return compress


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument(
        "--langgraph", action="store_true", help="a LangGraph thread's checkpoints session instead of the benchmark's"
    )
    if parser.parse_known_args(argv)[0].langgraph:  # LangGraph is an optional extra: imported for it alone
        from .langgraph_agent import add_tool_bytes_option, use_tool_result_bytes

        add_tool_bytes_option(parser, default=None)
    args = parser.parse_args(argv)
    from snapstore.entries import compress_keyframe

    if getattr(args, "tool_bytes", None) is not None:
        use_tool_result_bytes(args.tool_bytes)
    cases, frames, others = (_langgraph_segments if args.langgraph else _replayed_segments)(args.turns)
    if not cases:
        parser.error(f"{args.turns} turns wrote no patched keyframe: run more turns")
    largest = max(len(dictionary) for dictionary, _ in cases)
    what = "LangGraph turns" if args.langgraph else "turns"
    print(f"{args.turns} {what}: {len(cases)} patched keyframes, dictionaries up to {largest:,} bytes")
    settings: dict[str, Callable[[bytes, bytes], bytes]] = {
        "snapstore (level 3, hash by dictionary)": lambda d, s: compress_keyframe(s, 3, d)[1],
        "level 3, its own tables": _setting(3),
        "level 3, tables of 2^18": _setting(3, hash_log=18, chain_log=18),
        "level 3, tables by size up to 2^18": _scaled(3, 3, 18),
        "level 3, tables by size up to 2^20": _scaled(3, 3, 20),
        "level 3, tables by size, a sixteenth up to 2^18": _scaled(3, 4, 18),
        "level 4": _setting(4),
        "level 5": _setting(5),
        "level 3, tables 2^20": _setting(3, hash_log=20, chain_log=20),
        "level 3, tables 2^22": _setting(3, hash_log=22, chain_log=22),
        "level 1, tables 2^20": _setting(1, hash_log=20, chain_log=20),
        "level 3, long-distance matching": _setting(3, enable_ldm=True),
    }
    print(f"{'setting':<38} {'total KiB':>10} {'mean ms':>8} {'max ms':>8} {'decode ms':>10}")
    for name, compress in settings.items():
        total, spent, slowest, decoding = 0, 0.0, 0.0, 0.0
        for dictionary, state in cases:
            best, out = _best(compress, dictionary, state)
            total += len(out)
            spent += best
            slowest = max(slowest, best)
            decoding += _decode_time(dictionary, out, state)
        print(
            f"{name:<38} {total / 1024:>10.1f} {spent / len(cases) * 1e3:>8.2f} {slowest * 1e3:>8.2f}"
            f" {decoding * 1e3:>10.2f}"
        )
    _delta_frames(frames)
    print("smaller states, each against the one before it (ms, bytes):")
    for dictionary, state in _mid_sized_cases():
        for name in ("snapstore (level 3, hash by dictionary)", "level 3, its own tables", "level 3, tables of 2^18"):
            best, out = _best(settings[name], dictionary, state, reps=20)
            print(f"  {len(state) / 1000:>6.0f} kB  {name:<38} {best * 1e3:>7.3f} ms {len(out):>7} B")
    print("the patched keyframes again, snapstore's setting, against other dictionaries (KiB in total):")
    dictionaries = {
        "the previous run (snapstore's)": [dictionary for dictionary, _state in cases],
        "the previous keyframe alone": [previous for previous, _first in others],
        "the segment's first keyframe": [first for _previous, first in others],
    }
    for name, chosen in dictionaries.items():
        total = sum(len(compress_keyframe(state, 3, d)[1]) for d, (_run, state) in zip(chosen, cases, strict=True))
        print(f"  {name:<38} {total / 1024:>10.1f}")
    return 0


def _delta_frames(frames: list[tuple[bytes, list[bytes]]]) -> None:
    """Each delta frame again, a flushed block per delta as a commit writes it, with an orjson
    serialization of a large value between two deltas (the rest of a commit, which evicts caches)."""
    from snapstore.entries import DELTA_TABLE_LOG, delta_compressor, delta_level, raw_dict

    level = delta_level(3)
    between = {"rows": [{"turn": i, "text": f"row {i} " * 6} for i in range(20_000)]}
    settings: dict[str, Any] = {
        f"snapstore (level {level}, tables up to 2^{DELTA_TABLE_LOG})": None,
        f"level {level}, its own tables": {},
        f"level {level}, tables of 2^16": {"hash_log": 16, "chain_log": 16},
    }
    count = sum(len(deltas) for _, deltas in frames)
    print(f"{len(frames)} delta frames, {count} deltas ({'setting':<36} {'total KiB':>10} {'us a delta':>10}):")
    for name, tables in settings.items():
        total, best = 0, float("inf")
        for _ in range(3):
            total, spent = 0, 0.0
            for window, deltas in frames:
                if tables is None:
                    compressor = delta_compressor(3, raw_dict(window))
                else:
                    params = zstandard.ZstdCompressionParameters.from_level(level, **tables)
                    compressor = zstandard.ZstdCompressor(dict_data=raw_dict(window), compression_params=params)
                stream = compressor.compressobj()
                for delta in deltas:
                    orjson.dumps(between)
                    started = time.perf_counter()
                    total += len(stream.compress(delta) + stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
                    spent += time.perf_counter() - started
            best = min(best, spent)
        print(f"  {name:<48} {total / 1024:>10.1f} {best / count * 1e6:>10.1f}")


def _decode_time(dictionary: bytes, frame: bytes, state: bytes) -> float:
    """The best of three decodes of ``frame`` against ``dictionary``, checked to give ``state``,
    each with a decompressor made for it, as a rebuild makes one for each keyframe."""
    from snapstore.entries import MAX_WINDOW_LOG, raw_dict

    best, out = float("inf"), b""
    for _ in range(3):
        started = time.perf_counter()
        reader = zstandard.ZstdDecompressor(dict_data=raw_dict(dictionary), max_window_size=1 << MAX_WINDOW_LOG)
        out = reader.decompress(frame, max_output_size=len(state))
        best = min(best, time.perf_counter() - started)
    if out != state:
        raise SystemExit("a keyframe decoded to other bytes than it was compressed from")
    return best


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
