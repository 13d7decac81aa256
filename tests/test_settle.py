"""Settling a head (``Session.settle``), and what a keyframe read alone is checked by.

A writer that stops writing can store its head again, whole and in a segment of its own, so the
next reader loads it in one read instead of rebuilding it through a long chain of deltas. Only a
costly head of this handle's is settled; everything else writes nothing. A keyframe, the only
thing such a reader decodes, is judged by the canonical bytes of the state it parses to: other
bytes of the same state read, and bytes whose own hash is the record's but which are not the
state's canonical JSON do not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import xxhash

from conftest import canonical
from snapstore import CorruptObjectError, SnapshotError, SnapshotNotFound, SnapshotStore
from snapstore.entries import KEY_INDEPENDENT, CommitEntry, compress_keyframe, decode_entry, encode_commit
from snapstore.session import Session

#: about 60 kB of state, of which each turn changes a few bytes: a long chain of small deltas
ROOMS = {f"room {i}": {"description": f"a long description of room {i} " * 8, "visits": 0} for i in range(200)}


def play(sess: Session, turns: int, start: int = 0) -> dict[str, Any]:
    state: dict[str, Any] = {"turn": 0, "rooms": {k: dict(v) for k, v in ROOMS.items()}}
    for turn in range(start, start + turns):
        state["turn"] = turn
        state["rooms"][f"room {turn % 200}"]["visits"] += 1
        sess.commit(state, label=f"turn {turn}", turn=turn)
    return state


def segment_keys(store: SnapshotStore, sess: Session) -> list[tuple[int, int]]:
    return [(info.segment, info.stored_bytes) for info in store.backend.segments(sess.key)]


def test_a_costly_head_is_stored_again_on_its_own(make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store(rebuild_budget=50.0)  # one long chain: no keyframe on the way
    sess = store.session("s")
    state = play(sess, 80)
    head = sess.head
    assert head is not None and head.kind == "delta"

    settled = sess.settle()
    assert settled is not None
    assert (settled.parent, settled.kind, settled.label, settled.turn) == (head.id, "full", "turn 79", 79)
    assert settled.state_hash == head.state_hash
    assert sess.head == settled
    assert sess.settle() is None  # a keyframe alone in its segment is as cheap as a head gets

    reader = make_store().session("s")  # the same storage, opened again
    assert reader.head == settled
    assert canonical(reader.state(settled.id)) == canonical(state)
    log = reader._current()
    stored = log.commits[settled.id]
    commits = [e for e in log.segments[stored.segment].entries if isinstance(e, CommitEntry)]
    assert stored.mode == KEY_INDEPENDENT and [e.id for e in commits] == [settled.id]
    assert canonical(reader.state(head.id)) == canonical(state)  # the settled one stays readable

    following = play(sess, 1, start=80)
    assert sess.head is not None and (sess.head.parent, sess.head.kind) == (settled.id, "delta")
    assert canonical(make_store().session("s").state(sess.head.id)) == canonical(following)


def test_a_cheap_head_is_left_as_it_is(make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store()
    sess = store.session("s")
    play(sess, 3)
    before = segment_keys(store, sess)
    assert sess.settle() is None
    assert segment_keys(store, sess) == before


def test_a_small_chatty_session_settled_at_every_close_keeps_few_segments(tmp_path: Path) -> None:
    """A process per turn, ten small commits a turn, the head settled at each close: a settle
    starts a segment, and every cold open lists every segment, so a settle that saves its reader
    less than that costs must not happen at every close (it did while indexing the head's
    segment counted in the estimate: a segment every second close)."""
    settled = 0
    for turn in range(100):
        with SnapshotStore.open(tmp_path / "store") as store:
            sess = store.session("writes", max_snapshots=10_000)
            for i in range(10):
                sess.commit({"checkpoint": f"cp-{turn:05}", "writes": [[f"task{i}", i, "x" * (150 + 17 * i)]]})
            settled += sess.settle() is not None
    with SnapshotStore.open(tmp_path / "store") as store:
        segments = store.backend.segments(store.session("writes").key)
    assert settled >= 1  # the chain still grows costly now and then
    assert len(segments) <= 15, f"{settled} settles, {len(segments)} segments for 100 closes"


def test_only_a_head_this_handle_wrote_is_settled(make_store: Callable[..., SnapshotStore]) -> None:
    writer = make_store(rebuild_budget=50.0).session("s")
    play(writer, 60)
    other_store = make_store(rebuild_budget=50.0)
    other = other_store.session("s")
    other.commit({**other.state(writer.head.id), "turn": 60}, label="turn 60", turn=60)  # type: ignore[union-attr]
    before = segment_keys(other_store, other)
    assert writer.settle() is None  # another writer moved the head since: not this handle's
    reader = make_store().session("s")
    assert reader.state(other.head.id)["turn"] == 60  # type: ignore[union-attr]
    assert reader.settle() is None  # a handle that only read writes nothing
    assert segment_keys(other_store, other) == before

    settled = other.settle()  # the head that handle wrote: its chain runs through the writer's deltas
    assert settled is not None and settled.parent == other.head.parent  # type: ignore[union-attr]


def _played(make_store: Callable[..., SnapshotStore]) -> tuple[SnapshotStore, Any, Any, Any]:
    """(store, session, its head, its segment keys) after 60 turns on a store whose heads settle."""
    store = make_store(rebuild_budget=50.0)
    sess = store.session("s")
    play(sess, 60)
    head = sess.head
    assert head is not None
    return store, sess, head, segment_keys(store, sess)


def test_a_head_named_or_deleted_is_settled_only_when_it_is_there(make_store: Callable[..., SnapshotStore]) -> None:
    store, sess, head, before = _played(make_store)
    assert sess.settle(head="0" * 32) is None  # another snapshot named: not this head
    assert segment_keys(store, sess) == before
    settled = sess.settle(head=head.id)
    assert settled is not None and settled.parent == head.id

    play(sess, 60, start=60)
    store.delete_session("s")
    assert sess.settle() is None  # deleted since this handle wrote it: nothing to settle, nothing written
    assert not store.has_session("s")


@pytest.mark.parametrize("bad", [0.5, float("nan"), "2", None, True])
def test_a_cost_below_one_load_is_refused(dir_store: SnapshotStore, bad: Any) -> None:
    sess = dir_store.session("s")
    play(sess, 40)
    before = segment_keys(dir_store, sess)
    with pytest.raises(SnapshotError, match="min_cost"):
        sess.settle(bad)
    assert segment_keys(dir_store, sess) == before


def _replace_first_keyframe(store: SnapshotStore, sess: Session, payload: bytes, state_hash: str = "") -> str:
    """Store ``payload`` as the raw bytes of the session's first keyframe, its record unchanged
    or naming ``state_hash``; the keyframe's id."""
    entries = list(store.backend.read_segment(sess.key, 1).entries)
    for index, data in enumerate(entries):
        entry = decode_entry(data, sess.name, "test")
        if isinstance(entry, CommitEntry):
            record = dataclasses.replace(entry.record, state=state_hash) if state_hash else entry.record
            mode, compressed = compress_keyframe(payload, 3, None)
            entries[index] = encode_commit(record, mode, len(payload), compressed)
            store.backend.replace_segment(sess.key, 1, entries)
            return record.snapshot_id()
    raise AssertionError("no keyframe")


def test_a_keyframe_is_judged_by_the_canonical_bytes_of_its_state(
    make_store: Callable[..., SnapshotStore],
) -> None:
    store = make_store()
    sess = store.session("s")
    first = sess.commit({"hp": 7, "name": "Ilsa", "items": [1, 1.0, True]}, label="start")

    _replace_first_keyframe(store, sess, b'{ "items": [1, 1.0, true], "name": "Ilsa", "hp": 7 }')
    same = make_store().session("s")  # other bytes of the same state: judged by the state they parse to
    assert canonical(same.state(first.id)) == canonical({"hp": 7, "name": "Ilsa", "items": [1, 1.0, True]})

    _replace_first_keyframe(store, sess, b'{"hp":7,"items":[1,1,true],"name":"Ilsa"}')  # 1.0 became 1
    with pytest.raises(CorruptObjectError, match="hashing"):
        make_store().session("s").state(first.id)

    # bytes that hash to what their record says, but are not the canonical JSON of the state they
    # parse to (a key twice; JSON keeps the last): a rebuild must not take the bytes' hash for the state's
    odd = b'{"hp":1,"hp":9999,"name":"x"}'
    forged = _replace_first_keyframe(store, sess, odd, xxhash.xxh3_128_hexdigest(odd))
    with pytest.raises(CorruptObjectError, match="hashing"):
        make_store().session("s").state(forged)


def test_a_head_named_by_a_prefix_or_a_tag_is_settled_and_a_bad_name_is_refused(
    make_store: Callable[..., SnapshotStore],
) -> None:
    """``head`` takes what every other id argument takes (found by an outside trial: a prefix, a tag
    and a name that is no id at all each returned None and wrote nothing, silently)."""
    store, sess, head, before = _played(make_store)
    for bad in ("not-an-id", "c0ffee", "0" * 12):
        with pytest.raises(SnapshotNotFound):
            sess.settle(head=bad)
    assert segment_keys(store, sess) == before
    settled = sess.settle(head=head.id[:10])
    assert settled is not None and settled.parent == head.id
    play(sess, 60, start=60)
    sess.tag(sess.head.id, "end-of-run")  # type: ignore[union-attr]
    tagged = sess.head
    again = sess.settle(head="end-of-run")
    assert again is not None and tagged is not None and again.parent == tagged.id
