"""A patched keyframe costs what changed since the previous run, even against a dictionary of megabytes.

zstd searches a raw-content dictionary only as far back as its hash table reaches, the last
2^(hash_log + 3) bytes: 1 MiB at level 3 (2^17 slots). Of a dictionary of a megabyte or more most
goes unsearched, and what the new state shares with it is written again. The keyframes a long
session writes are exactly that case (a run of a 1.2 MB state is its dictionary).
"""

from __future__ import annotations

import random

import pytest
import zstandard

from snapstore import codec
from snapstore.entries import (
    KEY_INDEPENDENT,
    KEY_PATCHED,
    MAX_WINDOW_LOG,
    PATCH_HASH_LOG,
    compress_keyframe,
    patch_hash_log,
    raw_dict,
)


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
    reader = zstandard.ZstdDecompressor(dict_data=raw_dict(previous_run), max_window_size=1 << MAX_WINDOW_LOG)
    assert reader.decompress(patched) == state


def test_level_three_tables_would_miss_it() -> None:
    """What the wider tables are for: the same frame with level 3's own tables is hundreds of times larger."""
    previous_run, state = _session_states()
    level3 = zstandard.ZstdCompressionParameters.from_level(3, window_log=22)
    assert level3.hash_log < patch_hash_log(3, len(previous_run))
    narrow = zstandard.ZstdCompressor(dict_data=raw_dict(previous_run), compression_params=level3).compress(state)
    _mode, patched = compress_keyframe(state, 3, previous_run)
    assert len(narrow) > 100 * len(patched)


def test_the_hash_table_reaches_back_over_the_whole_dictionary() -> None:
    """zstd loads only the last 2^(hash_log + 3) bytes of a raw-content dictionary."""
    own = zstandard.ZstdCompressionParameters.from_level(3).hash_log
    assert patch_hash_log(3, 100) == own
    for size in (2**20, 2**20 + 1, 2**21 + 150_000, 5_639_277, 2**25, 2**25 + 1, 2**30):
        reach = 1 << (patch_hash_log(3, size) + 3)
        assert reach >= size or patch_hash_log(3, size) == PATCH_HASH_LOG
        assert reach < 2 * size or patch_hash_log(3, size) == own  # no larger than it needs


@pytest.mark.parametrize("entries", [8800, 24000])
def test_a_patched_keyframe_against_a_run_of_megabytes_costs_what_changed(entries: int) -> None:
    """A run just past 2 MiB, and one of 6 MB (a long LangGraph thread's checkpoint is 5 MB): with
    a hash table of 2^18 slots zstd indexed only the run's last 2 MiB, and the keyframe took tens of
    kB and then two thirds of its size alone."""
    previous_run, state = _session_states(entries)
    assert len(previous_run) > 2**21
    _mode, independent = compress_keyframe(state, 3, None)
    mode, patched = compress_keyframe(state, 3, previous_run)
    assert mode == KEY_PATCHED
    assert len(patched) < min(2000, len(independent) / 200), len(patched)
    reader = zstandard.ZstdDecompressor(dict_data=raw_dict(previous_run), max_window_size=1 << MAX_WINDOW_LOG)
    assert reader.decompress(patched) == state
