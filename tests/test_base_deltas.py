"""Format 3: a writer whose head another writer moved stores its delta against the state it holds.

Two handles on one session stand for two writer processes (each has its own cache, decoder and
connection or folder handle); what they write is read back through a third, fresh handle.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import canonical
from snapstore import CorruptObjectError, FormatVersionError, LockTimeoutError, SnapshotStore
from snapstore.entries import DELTA_PLAIN, KEY_INDEPENDENT, CommitEntry, decode_entry, encode_commit, without_index
from snapstore.objects import SnapshotRecord
from snapstore.reclaim import Reclaimer
from snapstore.store import STORE_FORMAT
from snapstore.upgrade import _sibling


def other_handle(make_store: Callable[..., SnapshotStore], first: SnapshotStore, **settings: object) -> SnapshotStore:
    if make_store.kind == "memory":  # type: ignore[attr-defined]
        return SnapshotStore(first.backend, **settings)  # type: ignore[arg-type]
    return make_store(**settings)


def world(writer: int, k: int, shared: dict[str, int] | None = None) -> dict[str, object]:
    """A state big enough that a delta is much smaller than a keyframe, with one writer's counter moved."""
    counters = dict(shared or {})
    counters[f"w{writer}"] = k
    return {"lore": [f"the keep has {i % 7} towers" for i in range(300)], "counters": counters, "k": 1.0 * k}


def commit_entries(store: SnapshotStore, key: str) -> list[CommitEntry]:
    found = []
    for info in store.backend.segments(key):
        for data in without_index(store.backend.read_segment(key, info.segment).entries):
            entry = decode_entry(data, "s", "test")
            if isinstance(entry, CommitEntry):
                found.append(entry)
    return found


def test_writers_taking_turns_store_deltas_against_their_own_states(make_store: Callable[..., SnapshotStore]) -> None:
    a_store = make_store()
    assert a_store.format == STORE_FORMAT == 4
    a = a_store.session("s", max_snapshots=1000)
    b = other_handle(make_store, a_store).session("s")
    committed: dict[str, bytes] = {}
    for k in range(12):
        for writer, handle in ((0, a), (1, b)):
            state = world(writer, k)
            snap = handle.commit(state, label=f"w{writer}-{k}")
            committed[snap.id] = canonical(state)
    entries = commit_entries(a_store, a.key)
    based = [e for e in entries if e.base is not None and e.base != e.record.parent]
    # after the first two commits every commit follows the other writer's: all are against a base
    assert len(based) >= 20
    for entry in based:
        assert entry.record.delta is None and entry.record.depth == 0 and entry.mode not in (0, 1)
    fresh = other_handle(make_store, a_store).session("s")
    assert [s.id for s in fresh.snapshots()] == list(committed)
    for sid, expected in committed.items():
        assert canonical(fresh.state(sid)) == expected  # each rebuilt through its bases, hash-checked
    # history is still the order of commits: each parent is the commit before it, not the base
    ids = list(committed)
    assert [fresh.snapshot(sid).parent for sid in ids[1:]] == ids[:-1]
    assert all(fresh.snapshot(sid).kind == "delta" for sid in ids[2:])
    assert a_store.verify().ok


def test_read_modify_write_workers_lose_no_commit(make_store: Callable[..., SnapshotStore]) -> None:
    """Workers that read the head, change their counter and commit: each commit rebuilds to what
    its worker committed, whichever state its delta was stored against."""
    a_store = make_store()
    handles = [a_store.session("s", max_snapshots=1000)] + [
        other_handle(make_store, a_store).session("s") for _ in range(2)
    ]
    handles[0].commit(world(0, 0))
    committed: dict[str, bytes] = {}
    for k in range(10):
        for writer, handle in enumerate(handles):
            head = handle.head
            assert head is not None
            state = handle.state(head.id)
            state["counters"][f"w{writer}"] = k
            state["k"] = k * 1.5
            committed[handle.commit(state).id] = canonical(state)
    fresh = other_handle(make_store, a_store).session("s")
    for sid, expected in committed.items():
        assert canonical(fresh.state(sid)) == expected
    assert a_store.verify().ok


def test_a_base_chain_is_bounded_by_the_keyframe_policy(make_store: Callable[..., SnapshotStore]) -> None:
    """Deltas against bases count toward the chain a rebuild walks, as parent deltas do."""
    a_store = make_store(max_chain=4)
    a = a_store.session("s", max_snapshots=1000)
    b = other_handle(make_store, a_store, max_chain=4).session("s")
    for k in range(20):
        a.commit(world(0, k))
        b.commit(world(1, k))
    log = a._log
    log.refresh()
    assert max(c.depth for c in log.commits.values()) <= 4
    assert any(c.base is not None and c.base != c.record.parent for c in log.commits.values())
    assert a_store.verify().ok


def test_reclaim_and_squash_keep_deltas_against_bases(make_store: Callable[..., SnapshotStore]) -> None:
    a_store = make_store(max_chain=6, max_runs=2)
    a = a_store.session("s", max_snapshots=5)
    b = other_handle(make_store, a_store, max_chain=6, max_runs=2).session("s")
    for k in range(40):
        a.commit(world(0, k))
        b.commit(world(1, k))
    a_store.gc()
    fresh = other_handle(make_store, a_store).session("s")
    retained = fresh.snapshot_ids()
    assert len(retained) == 5
    for sid in retained:
        fresh.state(sid)
    assert a_store.verify().ok


def test_an_archive_of_a_session_with_deltas_against_bases_round_trips(tmp_path: Path) -> None:
    source = SnapshotStore.open(tmp_path / "a")
    other = SnapshotStore.open(tmp_path / "a")
    a, b = source.session("s", max_snapshots=100), other.session("s")
    committed = {}
    for k in range(6):
        for writer, handle in ((0, a), (1, b)):
            state = world(writer, k)
            committed[handle.commit(state).id] = canonical(state)
    source.export(tmp_path / "s.snaparc")
    target = SnapshotStore.open(tmp_path / "b")
    target.import_archive(tmp_path / "s.snaparc")
    imported = target.session("s")
    assert imported.snapshot_ids() == list(committed)
    for sid, expected in committed.items():
        assert canonical(imported.state(sid)) == expected
    assert target.verify().ok


def test_a_format_2_store_writes_format_2_until_upgraded(tmp_path: Path) -> None:
    root = tmp_path / "store"
    SnapshotStore.open(root).backend.write_config("format", b"2")  # a store a format-2 build created
    first, second = SnapshotStore.open(root), SnapshotStore.open(root)
    assert first.format == 2 and not first.base_deltas
    a, b = first.session("s", max_snapshots=100), second.session("s")
    for k in range(4):
        a.commit(world(0, k))
        b.commit(world(1, k))
    assert all(e.base in (None, e.record.parent) for e in commit_entries(first, a.key))
    first.close()
    second.close()
    left = _sibling(str(root)) + "-v1"  # what an interrupted format-1 upgrade can leave beside a store
    os.makedirs(left)
    report = SnapshotStore.upgrade(root)
    assert report.upgraded and report.from_version == "2" and report.to_version == "4"
    assert report.leftovers == [left] and not os.path.exists(left)
    assert not SnapshotStore.upgrade(root).upgraded  # once is enough
    first, second = SnapshotStore.open(root), SnapshotStore.open(root)
    assert first.format == 4
    a, b = first.session("s"), second.session("s")
    for k in range(4, 8):
        a.commit(world(0, k))
        b.commit(world(1, k))
    entries = commit_entries(first, a.key)
    assert any(e.base not in (None, e.record.parent) for e in entries)
    assert first.verify().ok and len(first.session("s").snapshot_ids()) == 16


def test_a_newer_format_is_refused_by_name(tmp_path: Path) -> None:
    root = tmp_path / "store"
    SnapshotStore.open(root).backend.write_config("format", b"5")
    with pytest.raises(FormatVersionError, match="format version 5; this build reads versions 2 to 4"):
        SnapshotStore.open(root)


def _record(**changes: object) -> SnapshotRecord:
    fields: dict[str, object] = {
        "session": "s",
        "parent": "1" * 32,
        "state": "2" * 32,
        "delta": None,
        "label": "x",
        "timestamp": "2026-12-05T00:00:00.000000Z",
        "turn": None,
        "size": 10,
        "depth": 0,
        "chain_bytes": 0,
        "base_ratio": 0.5,
    }
    fields.update(changes)
    return SnapshotRecord(**fields)  # type: ignore[arg-type]


def test_an_entry_against_a_base_decodes_with_its_label_and_payload() -> None:
    entry = decode_entry(encode_commit(_record(label="über"), DELTA_PLAIN, 3, b"abc", "3" * 32), "s", "test")
    assert isinstance(entry, CommitEntry)
    assert entry.base == "3" * 32 and entry.record.label == "über" and entry.payload == b"abc"
    assert entry.record.parent == "1" * 32 and entry.record.delta is None


@pytest.mark.parametrize(
    ("record", "mode"),
    [
        (_record(), KEY_INDEPENDENT),
        (_record(delta="4" * 32, depth=1), DELTA_PLAIN),
        (_record(parent=None), DELTA_PLAIN),
        (_record(chain_bytes=5), DELTA_PLAIN),
    ],
    ids=["keyframe mode", "names a delta", "no parent", "a chain"],
)
def test_a_malformed_entry_against_a_base_is_damage(record: SnapshotRecord, mode: int) -> None:
    data = encode_commit(record, mode, 3, b"abc", "3" * 32)
    with pytest.raises(CorruptObjectError, match="against a base"):
        decode_entry(data, "s", "test")


@pytest.mark.parametrize("seed", range(8))
def test_writers_rollbacks_limits_and_gc_in_any_order_keep_every_retained_snapshot(tmp_path: Path, seed: int) -> None:
    """Two writers, a third handle rolling back, lowering the limit and collecting, in a seeded order.

    A squash must not keep a snapshot retention let go whose parent or base it cut away: a reader
    written from the format would find it unreadable, and a writer holding that snapshot would
    store a delta against it that no one could rebuild (found by this test: seed 3 broke a chain).
    """
    rnd = random.Random(seed)
    root = tmp_path / "store"
    first, second, third = (SnapshotStore.open(root, max_chain=6, max_runs=2) for _ in range(3))
    handles = [first.session("s", max_snapshots=3), second.session("s"), third.session("s")]
    committed: dict[str, bytes] = {}
    for k in range(60):
        handle = rnd.choice([handles[0], handles[1], handles[0], handles[1], handles[2]])
        roll = rnd.random()
        if roll < 0.1:
            third.gc()
        elif roll < 0.15:
            handles[2].set_max_snapshots(rnd.choice([2, 3, 5]))
        elif roll < 0.2 and handle.head is not None:
            handle.rollback(rnd.choice(handle.snapshot_ids()))
        else:
            state = world(rnd.randrange(3), k)
            committed[handle.commit(state).id] = canonical(state)
        report = third.verify()
        assert report.ok, (k, report.problems)
        log = handles[2]._log
        log.refresh()
        for sid in log.commits:  # every stored snapshot, retained or not (docs/format.md §4.10)
            log.chain(sid)
    fresh = SnapshotStore.open(root).session("s")
    for sid in fresh.snapshot_ids():
        assert canonical(fresh.state(sid)) == committed[sid]


def test_a_commit_reclaims_while_it_still_holds_the_session_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reclaiming rewrites segments by the index's entry numbers: another writer's rewrite between
    the append and the reclaim would make it cut the wrong entries (the crash suite found a commit
    that reclaimed after letting go of the lock)."""
    root = tmp_path / "store"
    writer = SnapshotStore.open(root, max_chain=2, max_runs=1)
    prober = SnapshotStore.open(root)
    sess = writer.session("s", max_snapshots=2)
    held: list[bool] = []
    real_reclaim = Reclaimer.reclaim

    def probing_reclaim(self: Reclaimer, session: object, log: object) -> int:
        try:
            with prober.backend.lock_session(sess.key, 0):
                held.append(False)
        except LockTimeoutError:
            held.append(True)
        return real_reclaim(self, session, log)  # type: ignore[arg-type]

    monkeypatch.setattr(Reclaimer, "reclaim", probing_reclaim)
    for k in range(12):
        sess.commit(world(0, k))
    assert held and all(held)
