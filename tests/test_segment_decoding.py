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
    DELTA_WINDOW,
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


def _big_segment(runs: int = 5, deltas: int = 6, small_keyframes: bool = False) -> list[Item]:
    """A segment of runs of about 200 kB each, patched keyframes after the first, and delta frames
    restarted now and then, as writers taking turns leave them. Each keyframe is past
    ``DELTA_WINDOW``, or with ``small_keyframes`` a few kB, its run's bulk in deltas of 30 kB: a
    delta frame's dictionary then reaches back into the run before."""
    rng = random.Random(11)
    items: list[Item] = []
    raw = bytearray()
    run_start = 0
    lines = [f"line {t} " + "x" * rng.randrange(10, 200) for t in range(40 if small_keyframes else 2_000)]
    blob = rng.randbytes(15_000).hex()
    for run in range(runs):
        lines[rng.randrange(len(lines))] = f"changed in run {run}"
        state = orjson.dumps({"log": lines, "run": run})
        mode, payload = compress_keyframe(state, 3, bytes(raw[run_start:]) if run else None)
        items.append((f"k{run}", mode, len(state), payload))
        run_start = len(raw)
        raw += state
        stream = DeltaStream(3, bytes(raw[-65536:]))
        for n in range(deltas):
            if n == 3:
                stream = DeltaStream(3, bytes(raw[-65536:]))
            value = f"{blob}{run}-{n}" if small_keyframes else f"{run}-{n}"  # the blob: matches a run back
            ops = orjson.dumps([{"op": "replace", "path": f"/log/{rng.randrange(len(lines))}", "value": value}])
            mode, payload = stream.compress(ops)
            items.append((f"d{run}-{n}", mode, len(ops), payload))
            raw += ops
    return items


def _raw_of(items: list[Item]) -> int:
    return sum(item[2] for item in items)


@pytest.mark.parametrize("small_keyframes", [False, True])
def test_a_reader_keeping_only_a_chain_holds_its_run_not_the_segment(small_keyframes: bool) -> None:
    """A rebuild late in a long segment decodes every run before its own (each is the next one's
    dictionary) but needs to hold only the run it decodes from and its chain: memory a process
    touches for the first time costs a page fault a page, and the whole stream is many states."""
    items = _big_segment(small_keyframes=small_keyframes)
    expected = _one_by_one(items)
    chain = ["k4", "d4-0", "d4-1", "d4-2", "d4-3"]
    upto = [sid for sid, *_rest in items].index("d4-3") + 1
    reader = SegmentReader("test segment", keep_only=set(chain))
    reader.decompress_all(items[:upto])
    payloads = reader.chain_payloads(chain)
    assert {sid: bytes(payloads[sid]) for sid in chain} == {sid: expected.payload_of(sid) for sid in chain}
    last_run = _raw_of(items[upto - 5 : upto])
    assert len(reader.raw) <= last_run + 65536 < _raw_of(items[:upto]) / 3
    assert reader.size == _raw_of(items[:upto])  # positions still count from the segment's first byte
    assert not any(sid.startswith(("k0", "d0", "k1", "d1", "k2", "d2")) for sid in reader.spans)


@pytest.mark.parametrize("wanted", [["k1", "d1-2", "d3-4"], ["k0", "d4-5"], ["d2-0"]])
def test_a_reader_keeps_every_payload_asked_for_wherever_it_lies(wanted: list[str]) -> None:
    """A chain may reach back past its own run (a commit on an older snapshot, after a rollback):
    what is asked for is held however far back it lies, and decoding on still works."""
    items = _big_segment()
    expected = _one_by_one(items)
    reader = SegmentReader("test segment", keep_only=set(wanted))
    reader.decompress_all(items)
    assert {sid: reader.payload_of(sid) for sid in wanted} == {sid: expected.payload_of(sid) for sid in wanted}
    assert reader.run_start == expected.run_start and reader.size == expected.size


def test_a_reader_keeping_only_a_chain_continues_a_partly_decoded_segment() -> None:
    items = _big_segment()
    expected = _one_by_one(items)
    reader = SegmentReader("test segment", keep_only={"d4-5"})
    reader.decompress_all(items[:18])  # a delta frame inside the third run
    reader.decompress_all(items[18:])
    assert reader.payload_of("d4-5") == expected.payload_of("d4-5")
    assert len(reader.raw) < _raw_of(items) / 3


@pytest.mark.parametrize("victim", [21, 22, 30])  # the fourth run's keyframe, its first delta, the last run's
def test_damage_after_runs_were_let_go_is_still_named(victim: int) -> None:
    items = _big_segment()
    sid, mode, raw_length, payload = items[victim]
    damaged = payload[:3] + bytes([payload[3] ^ 0xFF]) + payload[4:]
    bad = [*items[:victim], (sid, mode, raw_length, damaged), *items[victim + 1 :]]
    reader = SegmentReader("test segment", keep_only={"d4-5", items[victim - 1][0]})
    with pytest.raises(CorruptObjectError, match=f"snapshot {sid}"):
        reader.decompress_all(bad)
    expected = _one_by_one(items[:victim])
    assert reader.payload_of(items[victim - 1][0]) == expected.payload_of(items[victim - 1][0])
    assert sid not in reader.spans


def test_every_snapshot_of_a_long_segment_with_branches_reads_back_cold(tmp_path) -> None:
    """Through the store: a segment of many runs of a 200 kB state, with commits on older
    snapshots after rollbacks (their chains start runs back), every snapshot read by a fresh handle,
    which decodes only what each read needs to hold."""
    from snapstore import SnapshotStore

    rng = random.Random(5)
    store = SnapshotStore.open(tmp_path / "store", max_chain=4)
    session = store.session("game", max_snapshots=1000)
    state = {"log": [f"line {i} " + "x" * rng.randrange(10, 200) for i in range(2000)], "n": 0, "hp": 1.0}
    committed: dict[str, bytes] = {}
    for turn in range(40):
        state["n"], state["hp"], state["alive"] = turn, float(turn), turn % 2 == 0
        state["log"][rng.randrange(2000)] = f"turn {turn}"
        committed[session.commit(state).id] = orjson.dumps(state, option=orjson.OPT_SORT_KEYS)
        if turn in (17, 31):
            older = list(committed)[turn - 12]
            branch = {**session.rollback(older), "branch": turn}
            committed[session.commit(branch).id] = orjson.dumps(branch, option=orjson.OPT_SORT_KEYS)
    store.close()
    log_of = SnapshotStore.open(tmp_path / "store").session("game")._current()
    assert max(log_of.chain(sid)[0].ordinal for sid in committed) >= 20  # runs late in a long segment
    spans_runs = [sid for sid in committed if log_of.chain(sid)[0].ordinal < log_of.chain(sid)[-1].ordinal - 6]
    assert spans_runs  # chains that reach back past their own run
    for sid, expected in committed.items():
        fresh = SnapshotStore.open(tmp_path / "store")
        assert orjson.dumps(fresh.session("game").state(sid), option=orjson.OPT_SORT_KEYS) == expected
        fresh.close()


@pytest.mark.parametrize("previous_run", [DELTA_WINDOW + 3, DELTA_WINDOW + 5_000])
def test_a_damaged_keyframe_whose_run_was_let_go_reads_as_the_plain_reader_reads_it(previous_run: int) -> None:
    """The reader copies a patched keyframe's dictionary and then lets the run before it go; when
    the keyframe then fails to decode, it is decoded again, entry by entry, with that same
    dictionary: refused by name, with zstd's own reason, as a reader keeping everything refuses it
    (against whatever bytes were left, a run just past the window named nobody)."""
    rng = random.Random(1)
    words = [rng.randbytes(8).hex() for _ in range(300)]
    text = " ".join(rng.choice(words) for _ in range(20_000)).encode()
    first, second = text[:previous_run], text[100:150_100]
    mode0, payload0 = compress_keyframe(first, 3, None)
    mode1, payload1 = compress_keyframe(second, 3, first)
    damaged = bytearray(payload1)
    damaged[len(damaged) // 2] ^= 0xFF
    items = [("k0", mode0, len(first), payload0), ("k1", mode1, len(second), bytes(damaged))]
    outcomes = []
    for reader in (SegmentReader("test segment"), SegmentReader("test segment", keep_only={"k1"})):
        try:
            reader.decompress_all(items)
            outcomes.append(reader.payload_of("k1"))  # damage zstd cannot see: the state's hash will
        except CorruptObjectError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]
    assert previous_run > DELTA_WINDOW + 8 or "snapshot k1" in str(outcomes[1])
