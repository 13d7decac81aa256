"""Decoding a segment's payloads in one pass (the rebuild path) against decoding them one at a time.

``SegmentReader.decompress_all`` decodes each keyframe, and each delta frame with its
continuations, straight into a buffer sized once from the declared lengths. These tests build
segments the way writers do (an independent keyframe, delta frames, patched keyframes, a frame
restarted by another writer) and check that the one-pass decoder gives the very bytes and spans
the entry-by-entry decoder gives, and that a payload that lies about its length is refused
naming its snapshot, with what came before it still decoded.
"""

from __future__ import annotations

import random

import orjson
import pytest

from snapstore.entries import (
    DELTA_PLAIN,
    KEY_INDEPENDENT,
    KEY_PATCHED,
    DeltaStream,
    SegmentReader,
    compress_keyframe,
)
from snapstore.errors import CorruptObjectError

Item = tuple[str, int, int, bytes]


def _state(rng: random.Random, turn: int) -> bytes:
    log = [{"turn": t, "text": f"line {t} " + "x" * rng.randrange(10, 200)} for t in range(turn)]
    return orjson.dumps({"log": log, "turn": turn, "hp": rng.randrange(100)}, option=orjson.OPT_SORT_KEYS)


def _segment(runs: int = 3, deltas: int = 12, restart_every: int = 5) -> list[Item]:
    """Entries of one segment as a writer compresses them: ``runs`` runs of ``deltas`` deltas,
    the delta frame restarted (as after another writer's commit) every ``restart_every``."""
    rng = random.Random(7)
    items: list[Item] = []
    raw = bytearray()
    run_start = 0
    for run in range(runs):
        state = _state(rng, (run + 1) * 3)
        mode, payload = compress_keyframe(state, 3, bytes(raw[run_start:]) if run else None)
        assert mode == (KEY_PATCHED if run else KEY_INDEPENDENT)
        items.append((f"k{run}", mode, len(state), payload))
        run_start = len(raw)
        raw += state
        stream = DeltaStream(3, bytes(raw[-65536:]))
        for n in range(deltas):
            if n and n % restart_every == 0:
                stream = DeltaStream(3, None if n % 2 else bytes(raw[-65536:]))
            ops = orjson.dumps([{"op": "replace", "path": "/hp", "value": rng.randrange(100)}] * rng.randrange(1, 40))
            mode, payload = stream.compress(ops)
            items.append((f"d{run}-{n}", mode, len(ops), payload))
            raw += ops
    return items


def _one_by_one(items: list[Item]) -> SegmentReader:
    reader = SegmentReader("test segment")
    for item in items:
        reader.decompress(*item)
    return reader


def test_one_pass_gives_the_bytes_and_spans_of_one_at_a_time() -> None:
    items = _segment()
    assert {mode for _sid, mode, _n, _p in items} >= {KEY_INDEPENDENT, KEY_PATCHED, DELTA_PLAIN}
    expected = _one_by_one(items)
    reader = SegmentReader("test segment")
    reader.decompress_all(items)
    assert bytes(reader.raw) == bytes(expected.raw)
    assert reader.spans == expected.spans
    assert reader.run_start == expected.run_start
    for sid, _mode, _n, _payload in items:
        assert reader.payload_of(sid) == expected.payload_of(sid)


def test_one_pass_continues_a_partly_decoded_segment() -> None:
    items = _segment()
    expected = _one_by_one(items)
    reader = SegmentReader("test segment")
    cut = 19  # a delta frame inside the second run: it must still find its keyframe and dictionaries
    reader.decompress_all(items[:cut])
    reader.decompress_all(items[cut:])
    assert bytes(reader.raw) == bytes(expected.raw)
    assert reader.spans == expected.spans


def _inflated(item: Item, by: int) -> Item:
    sid, mode, raw_length, payload = item
    return sid, mode, raw_length - by, payload


@pytest.mark.parametrize("victim", [0, 1, 13, 14])  # the first keyframe, a delta, a patched keyframe, its delta
@pytest.mark.parametrize("by", [1, -1])  # inflates past its declared length, or falls short of it
def test_a_payload_that_lies_about_its_length_is_refused_by_name(victim: int, by: int) -> None:
    items = _segment()
    bad = list(items)
    bad[victim] = _inflated(items[victim], by)
    reader = SegmentReader("test segment")
    with pytest.raises(CorruptObjectError, match=f"snapshot {bad[victim][0]}"):
        reader.decompress_all(bad)
    expected = _one_by_one(items[:victim])
    assert set(reader.spans) == set(expected.spans)  # what came before the lie is decoded
    for sid in expected.spans:
        assert reader.payload_of(sid) == expected.payload_of(sid)


def test_a_damaged_payload_is_refused_and_what_precedes_it_kept() -> None:
    items = _segment()
    sid, mode, raw_length, payload = items[20]
    damaged = payload[:3] + bytes([payload[3] ^ 0xFF]) + payload[4:]
    reader = SegmentReader("test segment")
    with pytest.raises(CorruptObjectError):
        reader.decompress_all([*items[:20], (sid, mode, raw_length, damaged), *items[21:]])
    expected = _one_by_one(items[:20])
    for known in expected.spans:
        assert reader.payload_of(known) == expected.payload_of(known)
    assert not any(s in reader.spans for s, *_rest in items[21:])


def test_a_chain_late_in_a_long_segment_is_copied_out_and_a_head_alone_is_viewed() -> None:
    """A rebuild parses its chain's payloads while the stream they came from may still be held.
    Views of a chain that is a small part of the stream would hold every earlier run through the
    parse: those are copies, and the stream can go. A head that is most of its stream (stored
    whole, in a segment of its own) is viewed, not copied into fresh memory; so is a stream the
    log keeps anyway. Either way the bytes are the chain's."""
    items = _segment(runs=4)
    reader = SegmentReader("test segment")
    reader.decompress_all(items)
    late_chain = ["k3", "d3-0", "d3-1"]
    copied = reader.chain_payloads(late_chain)
    assert all(type(copied[sid]) is bytes and copied[sid] == reader.payload_of(sid) for sid in late_chain)
    kept = reader.chain_payloads(late_chain, kept=True)
    assert all(type(kept[sid]) is memoryview and bytes(kept[sid]) == reader.payload_of(sid) for sid in late_chain)

    alone = SegmentReader("test segment")
    alone.decompress_all(items[:1])  # a keyframe on its own
    viewed = alone.chain_payloads(["k0", "not stored here"])
    assert list(viewed) == ["k0"] and type(viewed["k0"]) is memoryview
    assert bytes(viewed["k0"]) == alone.payload_of("k0")
