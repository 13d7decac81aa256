"""Settling a head (``Session.settle``), and reading a keyframe checked by its bytes.

A writer that stops writing can store its head again, whole and in a segment of its own, so the
next reader loads it in one read instead of rebuilding it through a long chain of deltas. Only a
costly head of this handle's is settled; everything else writes nothing. A keyframe read alone is
verified by the hash of its stored bytes; bytes that do not hash to the record's state are still
judged by the state they parse to, so other bytes of the same state read and another state fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from conftest import canonical
from snapstore import CorruptObjectError, SnapshotError, SnapshotStore
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


@pytest.mark.parametrize("bad", [0.5, float("nan"), "2", None, True])
def test_a_cost_below_one_load_is_refused(dir_store: SnapshotStore, bad: Any) -> None:
    sess = dir_store.session("s")
    play(sess, 40)
    before = segment_keys(dir_store, sess)
    with pytest.raises(SnapshotError, match="min_cost"):
        sess.settle(bad)
    assert segment_keys(dir_store, sess) == before


def _replace_first_keyframe(store: SnapshotStore, sess: Session, payload: bytes) -> None:
    """Store ``payload`` as the raw bytes of the session's first keyframe, record unchanged."""
    entries = list(store.backend.read_segment(sess.key, 1).entries)
    for index, data in enumerate(entries):
        entry = decode_entry(data, sess.name, "test")
        if isinstance(entry, CommitEntry):
            mode, compressed = compress_keyframe(payload, 3, None)
            entries[index] = encode_commit(entry.record, mode, len(payload), compressed)
            break
    store.backend.replace_segment(sess.key, 1, entries)


def test_a_keyframe_is_read_by_the_hash_of_its_bytes_or_of_its_state(
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
