"""A writer among others catches up with what they appended by reading it once.

``head`` (or any read) indexes other writers' new entries and keeps their payloads; the commit
that follows decodes them from there instead of reading the segment again, even when another
read in between added more entries to what it keeps. The states stay exact: every snapshot
rebuilds, in a store opened afresh, to the bytes its writer committed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import canonical
from snapstore import SnapshotStore
from snapstore.backends._directory import DirectoryBackend
from snapstore.backends.base import SegmentRead
from snapstore.session import Session


class ReadCountingBackend(DirectoryBackend):
    """The directory engine, recording which segment reads it served."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[tuple[int, int]] = []

    def read_segment(self, key: str, segment: int, start: int = 0) -> SegmentRead:
        self.reads.append((segment, start))
        return super().read_segment(key, segment, start)


def _head_id(sess: Session) -> str:
    head = sess.head
    assert head is not None
    return head.id


def _next(state: dict[str, Any], writer: str, k: int) -> dict[str, Any]:
    return {**state, "counters": {**state["counters"], writer: k}, "log": [*state["log"], f"{writer} {k}"][-5:]}


def test_a_commit_decodes_other_writers_entries_from_the_read_before_it(tmp_path: Path) -> None:
    root = tmp_path / "store"
    base = {"lore": "the keep on the hill " * 200, "counters": {}, "log": [], "flags": [1, 1.0, True, None]}
    committed: dict[str, bytes] = {}
    other_store = SnapshotStore.open(root)
    backend = ReadCountingBackend(root)
    my_store = SnapshotStore(backend)
    try:
        other = other_store.session("shared", max_snapshots=1000)
        snap = other.commit(base)
        committed[snap.id] = canonical(base)
        mine = my_store.session("shared")
        state = _next(mine.state(_head_id(mine)), "mine", 0)
        snap = mine.commit(state)
        committed[snap.id] = canonical(state)
        for k in range(1, 4):
            for j in range(2):  # others commit, the writer reads the head, others commit again
                theirs = _next(other.state(_head_id(other)), "other", 2 * k + j)
                snap = other.commit(theirs)
                committed[snap.id] = canonical(theirs)
                if j == 0:
                    state = _next(mine.state(_head_id(mine)), "mine", k)
            their_head = _head_id(other)
            backend.reads.clear()
            snap = mine.commit(state)
            committed[snap.id] = canonical(state)
            # one read of the segment's new tail (the catch-up under the lock); the entries the
            # read of the head took are not read, nor decoded, again
            assert len(backend.reads) == 1, backend.reads
            assert snap.parent == their_head
        assert _head_id(mine) == snap.id
    finally:
        other_store.close()
        my_store.close()
    fresh = SnapshotStore.open(root)
    try:
        sess = fresh.session("shared")
        assert sorted(sess.snapshot_ids()) == sorted(committed)
        chain = [_head_id(sess)]
        parent = sess.snapshot(chain[-1]).parent
        while parent is not None:
            chain.append(parent)
            parent = sess.snapshot(parent).parent
        assert len(chain) == len(committed)  # one linear history: each commit on the head before it
        for sid, data in committed.items():
            assert canonical(sess.state(sid)) == data
    finally:
        fresh.close()


def test_chain_costs_known_in_part_match_costs_counted_from_the_keyframe(tmp_path: Path) -> None:
    """A writer costs a new head's chain from the nearest snapshot it has costed (its own last
    commit, with other writers' deltas after it); the figures, which decide where keyframes go,
    are those of a handle counting every chain from its keyframe."""
    root = tmp_path / "store"
    stores = [SnapshotStore.open(root) for _ in range(3)]
    try:
        writers = [store.session("shared", max_snapshots=1000) for store in stores]
        state: dict[str, Any] = {"lore": "x" * 4000, "counters": {}, "log": []}
        writers[0].commit(state)
        for k in range(40):
            for i, sess in enumerate(writers[:2]):
                sess.commit(_next(sess.state(_head_id(sess)), f"w{i}", k))
                log = sess._current()
                head = _head_id(sess)
                counted = SnapshotStore.open(root)
                try:
                    fresh = counted.session("shared")
                    expected = fresh._chain_cost_of(fresh._current(), head)
                finally:
                    counted.close()
                assert sess._chain_cost_of(log, head) == expected
    finally:
        for store in stores:
            store.close()
