"""A patched keyframe costs what changed since the previous run, even against a dictionary of megabytes.

At zstd level 3 the match tables have 2^16-2^17 slots: a raw-content dictionary of a megabyte or
more overfills them, and most of what the new state shares with it goes unfound. The keyframes a
long session writes are exactly that case (a run of a 1.2 MB state is its dictionary).
"""

from __future__ import annotations

import random

import zstandard

from snapstore import codec
from snapstore.entries import KEY_INDEPENDENT, KEY_PATCHED, PATCH_TABLE_LOG, compress_keyframe, raw_dict


def _session_states(entries: int = 6000) -> tuple[bytes, bytes]:
    rng = random.Random(7)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(3000)]
    state = {
        "log": [
            {"turn": i, "speaker": rng.choice(words), "text": " ".join(rng.choice(words) for _ in range(30))}
            for i in range(entries)
        ]
    }
    before = codec.dumps(state)
    state["log"].append({"turn": entries, "speaker": "gm", "text": "the keep falls"})
    state["log"][10]["text"] = "changed"
    return before, codec.dumps(state)


def test_a_patched_keyframe_against_megabytes_costs_what_changed() -> None:
    previous_run, state = _session_states()
    assert len(previous_run) > 1_000_000
    independent_mode, independent = compress_keyframe(state, 3, None)
    mode, patched = compress_keyframe(state, 3, previous_run)
    assert (independent_mode, mode) == (KEY_INDEPENDENT, KEY_PATCHED)
    # a few hundred bytes for one appended entry and one changed text, against ~500 kB alone
    assert len(patched) < len(independent) / 200
    reader = zstandard.ZstdDecompressor(dict_data=raw_dict(previous_run), max_window_size=1 << 31)
    assert reader.decompress(patched) == state


def test_level_three_tables_would_miss_it() -> None:
    """What the wider tables are for: the same frame with level 3's own tables is hundreds of times larger."""
    previous_run, state = _session_states()
    level3 = zstandard.ZstdCompressionParameters.from_level(3, window_log=22)
    assert max(level3.hash_log, level3.chain_log) < PATCH_TABLE_LOG
    narrow = zstandard.ZstdCompressor(dict_data=raw_dict(previous_run), compression_params=level3).compress(state)
    _mode, patched = compress_keyframe(state, 3, previous_run)
    assert len(narrow) > 100 * len(patched)


def test_a_patched_keyframe_against_a_run_of_several_megabytes_costs_what_changed() -> None:
    """A long LangGraph thread's run is a 5 MB state and its deltas: tables capped at 2^18 slots
    overflowed with 10 MB to index, and the keyframe took two thirds of its size alone."""
    previous_run, state = _session_states(24000)
    assert len(previous_run) + len(state) > 8_000_000
    _mode, independent = compress_keyframe(state, 3, None)
    mode, patched = compress_keyframe(state, 3, previous_run)
    assert mode == KEY_PATCHED
    assert len(patched) < len(independent) / 200
    reader = zstandard.ZstdDecompressor(dict_data=raw_dict(previous_run), max_window_size=1 << 31)
    assert reader.decompress(patched) == state
