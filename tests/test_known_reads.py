"""Reading a snapshot a handle already knows by its full id asks the store for no listing first.

Its state cannot change; what can is whether its segment is still there, and a rebuild that finds
it reclaimed or rewritten goes back to the listing (tests/test_concurrency.py covers those races).
A tag or a prefix is resolved against the store as it stands: another handle may have moved it.
"""

from __future__ import annotations

from typing import Any

from conftest import canonical
from snapstore import SnapshotStore
from snapstore.backends import MemoryBackend


class CountingBackend(MemoryBackend):
    """The memory engine, counting its listings of a session's segments."""

    def __init__(self) -> None:
        super().__init__()
        self.listings = 0

    def segments(self, key: str) -> Any:
        self.listings += 1
        return super().segments(key)


def _states(n: int) -> list[dict[str, Any]]:
    return [
        {"turn": turn, "hp": [10 - turn, 1.0, True], "log": [f"turn {i}" for i in range(turn)]} for turn in range(n)
    ]


def test_a_known_id_is_read_without_a_listing() -> None:
    backend = CountingBackend()
    writer = SnapshotStore(backend).session("s")
    ids = [writer.commit(state).id for state in _states(5)]
    reader = SnapshotStore(backend).session("s")
    assert reader.snapshot_ids() == ids
    before = backend.listings
    for sid, state in zip(ids, _states(5), strict=True):
        assert canonical(reader.state(sid)) == canonical(state)
    assert backend.listings == before


def test_an_id_committed_elsewhere_is_found_by_a_listing() -> None:
    backend = CountingBackend()
    writer = SnapshotStore(backend).session("s")
    writer.commit({"turn": 0})
    reader = SnapshotStore(backend).session("s")
    reader.snapshot_ids()
    later = writer.commit({"turn": 1}).id
    before = backend.listings
    assert reader.state(later) == {"turn": 1}
    assert backend.listings > before


def test_a_tag_and_a_prefix_are_resolved_as_the_store_stands() -> None:
    backend = CountingBackend()
    writer = SnapshotStore(backend).session("s")
    first = writer.commit({"turn": 0}).id
    second = writer.commit({"turn": 1}).id
    writer.tag(first, "camp")
    reader = SnapshotStore(backend).session("s")
    assert reader.state("camp") == {"turn": 0}
    writer.tag(second, "camp")  # moved by another handle
    assert reader.state("camp") == {"turn": 1}
    third = writer.commit({"turn": 2}).id
    assert reader.state(third[:12]) == {"turn": 2}
