"""A populated store for the corruption tests (test_corruption.py, test_blast_radius.py).

Session ``s`` holds 20 snapshots of a padded state (about 100 kB each) in three
segments of two runs each (keyframes every 4 commits, at most 8 commits per
segment): ``SEGMENT_TURNS`` says which turns each segment holds. Session
``other`` holds three small snapshots in one segment of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conftest_reliability import canonical
from reliability_writer import state_for
from snapstore import CorruptObjectError, SnapshotError, SnapshotNotFound, SnapshotStore
from snapstore.backends import Backend
from snapstore.entries import INDEX, CommitEntry, decode_entry
from snapstore.store import session_key

INDEX_TYPE = bytes([INDEX])

PAD = 100_000
POLICY = {"max_chain": 3, "max_runs": 1}
TURNS = 20
SEGMENT_TURNS = {1: range(0, 8), 2: range(8, 16), 3: range(16, 20)}
SESSIONS = ("s", "other")


def state_of(name: str, turn: int) -> Any:
    return state_for(turn, name, PAD if name == "s" else 0)


@dataclass
class World:
    """A populated store and what was committed to it."""

    backend: Backend
    ids: dict[str, list[str]] = field(default_factory=dict)  # session -> ids by turn

    def store(self) -> SnapshotStore:
        return SnapshotStore(self.backend, **POLICY)  # a fresh handle: every read goes to the medium

    def segment_of(self, name: str) -> dict[str, int]:
        """Snapshot id -> the segment holding it, as stored."""
        key = session_key(name)
        found = {}
        for info in self.backend.segments(key):
            for data in self.backend.read_segment(key, info.segment).entries:
                if data[:1] == INDEX_TYPE:
                    continue
                entry = decode_entry(data, name, "world")
                if isinstance(entry, CommitEntry):
                    found[entry.id] = info.segment
        return found

    def entry_index(self, name: str, turn: int) -> tuple[int, int]:
        """(segment, entry index) of the commit entry of one turn."""
        key = session_key(name)
        for info in self.backend.segments(key):
            for index, data in enumerate(self.backend.read_segment(key, info.segment).entries):
                if data[:1] == INDEX_TYPE:
                    continue  # (the index returned counts raw entries: it is the one damaged)
                entry = decode_entry(data, name, "world")
                if isinstance(entry, CommitEntry) and entry.record.turn == turn:
                    return info.segment, index
        raise AssertionError(f"turn {turn} of {name} is not stored")

    def read_all(self, *, wrong_fails: bool = True) -> dict[str, str]:
        """Every committed snapshot read through a fresh store: id -> "exact", "corrupt", "missing".

        A state that reads back different from what was committed fails the test on the spot
        (or, with ``wrong_fails=False``, is recorded as "WRONG"). Any error other than a
        SnapshotError escapes and fails it too.
        """
        store = self.store()
        outcome: dict[str, str] = {}
        for name in SESSIONS:
            try:
                sess = store.session(name)
            except CorruptObjectError:
                outcome.update(dict.fromkeys(self.ids[name], "corrupt"))
                continue
            for turn, sid in enumerate(self.ids[name]):
                try:
                    state = sess.state(sid)
                except CorruptObjectError:
                    outcome[sid] = "corrupt"
                    continue
                except SnapshotNotFound:
                    outcome[sid] = "missing"
                    continue
                exact = canonical(state) == canonical(state_of(name, turn))
                assert exact or not wrong_fails, f"{name} turn {turn}: a wrong state"
                outcome[sid] = "exact" if exact else "WRONG"
        return outcome


def populate(backend: Backend) -> World:
    store = SnapshotStore(backend, **POLICY)
    world = World(backend)
    for name, turns in (("s", TURNS), ("other", 3)):
        sess = store.session(name, max_snapshots=1000)
        world.ids[name] = [sess.commit(state_of(name, t), label=name, turn=t).id for t in range(turns)]
    by_segment = world.segment_of("s")
    layout = {n: sorted(t for t, sid in enumerate(world.ids["s"]) if by_segment[sid] == n) for n in SEGMENT_TURNS}
    assert layout == {n: list(r) for n, r in SEGMENT_TURNS.items()}, f"segments hold {layout}"
    return world


def verify_problems(store: SnapshotStore) -> list[str]:
    """verify's problems as text (verify itself must not raise)."""
    try:
        report = store.verify(read_data=True)
    except SnapshotError as exc:  # pragma: no cover - a verify that raises is a failure of its own
        raise AssertionError(f"verify raised instead of reporting: {exc!r}") from exc
    return [f"{p.session}: {p.message}" for p in report.problems]
