"""The store's contract: commit, state, rollback, diff, retention, reopen, errors."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from conftest import canonical, rewrite_entry, store_contents
from snapstore import (
    AmbiguousSnapshotId,
    CorruptObjectError,
    InvalidNameError,
    InvalidStateError,
    SnapshotError,
    SnapshotNotFound,
    SnapshotStore,
    keyframes,
)
from snapstore.entries import KEY_INDEPENDENT, KEY_MODES, CommitEntry, MetaEntry, decode_entry, split_index
from snapstore.history import SessionLog
from snapstore.objects import Snapshot
from snapstore.session import Session, resolve_prefix
from snapstore.testing import damage_entry


def game(turn: int) -> dict:
    return {
        "turn_count": turn,
        "log": [f"message {i}" for i in range(turn)],
        "hero": {"hp": 10 - turn % 5, "gold": turn * 1.5, "tags/~x": ["a", "b"][: turn % 3]},
    }


def test_commit_and_state_round_trip_type_exact(store: SnapshotStore) -> None:
    sess = store.session("s")
    states = [{"v": 1}, {"v": 1.0}, {"v": True}, {"v": 1}, {"v": -0.0}, {"v": 0.0}]
    snaps = [sess.commit(s, turn=i) for i, s in enumerate(states)]
    assert len({s.state_hash for s in snaps}) == 5  # {"v": 1} twice has one hash
    for snap, expected in zip(snaps[-5:], states[-5:], strict=True):
        assert canonical(sess.state(snap.id)) == canonical(expected)
    assert sess.diff(snaps[0].id, snaps[1].id) == [{"op": "replace", "path": "/v", "value": 1.0}]
    assert canonical(sess.diff(snaps[1].id, snaps[2].id)) == canonical([{"op": "replace", "path": "/v", "value": True}])


def test_snapshot_fields_and_listing(store: SnapshotStore) -> None:
    sess = store.session("campaign-42", max_snapshots=5)
    assert sess.head is None and len(sess) == 0 and sess.snapshots() == []
    a = sess.commit(game(1), label="first", turn=1)
    b = sess.commit(game(2))
    assert a.parent is None and b.parent == a.id
    assert a.label == "first" and b.label == "auto" and a.turn == 1 and b.turn is None
    assert a.timestamp.tzinfo is not None and a.timestamp.utcoffset() == timezone.utc.utcoffset(None)
    assert a.kind == "full" and b.kind == "delta"
    assert len(a.id) == 32 and int(a.id, 16) >= 0
    assert [s.id for s in sess.snapshots()] == [a.id, b.id]
    assert sess.head == b and len(sess) == 2
    assert store.sessions() == ["campaign-42"]


def test_commit_is_deep_and_state_is_fresh(store: SnapshotStore) -> None:
    sess = store.session("s")
    state = game(3)
    snap = sess.commit(state)
    state["hero"]["hp"] = -100
    state["log"].append("later")
    assert canonical(sess.state(snap.id)) == canonical(game(3))
    got = sess.state(snap.id)
    got["log"].clear()
    assert canonical(sess.state(snap.id)) == canonical(game(3))
    nxt = sess.commit(state)
    assert canonical(sess.state(nxt.id)) == canonical(state)


def test_rollback_makes_history_a_tree(store: SnapshotStore) -> None:
    sess = store.session("s")
    ids = [sess.commit(game(t), turn=t).id for t in range(1, 6)]
    restored = sess.rollback(ids[1])
    assert canonical(restored) == canonical(game(2))
    assert sess.head is not None and sess.head.id == ids[1]
    assert [s.id for s in sess.snapshots()] == ids  # later snapshots stay listed
    branch = sess.commit({**game(2), "branch": True})
    assert branch.parent == ids[1]
    assert canonical(sess.state(branch.id)) == canonical({**game(2), "branch": True})
    assert canonical(sess.state(ids[4])) == canonical(game(5))  # the other branch still rebuilds


def test_prefixes(store: SnapshotStore) -> None:
    sess = store.session("s")
    snap = sess.commit(game(1))
    assert canonical(sess.state(snap.id[:8])) == canonical(game(1))
    assert sess.resolve(snap.id[:10].upper()) == snap.id
    with pytest.raises(SnapshotNotFound) as err:
        sess.state(snap.id[:7])
    assert err.value.details["snapshot"] == snap.id[:7]
    with pytest.raises(SnapshotNotFound):
        sess.state("0" * 32 if not snap.id.startswith("0") else "f" * 32)
    with pytest.raises(AmbiguousSnapshotId) as amb:
        resolve_prefix("abcdef01", ["abcdef0123", "abcdef0199", "ffff"], where="test")
    assert amb.value.details["candidates"] == ["abcdef0123", "abcdef0199"]
    assert isinstance(amb.value, SnapshotNotFound)


def test_keyframes_bound_chains(make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store(max_chain=3)
    sess = store.session("s", max_snapshots=100)
    snaps = [sess.commit(game(t)) for t in range(12)]
    assert [s.kind for s in snaps] == ["full", "delta", "delta", "delta"] * 3
    for t, snap in enumerate(snaps):
        assert canonical(sess.state(snap.id)) == canonical(game(t))


def test_keyframe_when_deltas_outweigh_a_full_state(make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store(max_chain=1000)
    sess = store.session("s", max_snapshots=100)
    kinds = [sess.commit({"blob": f"{t}" * 3000 + str(t) * (t % 7)}).kind for t in range(10)]
    # each delta replaces the whole value: a rebuild through a few of them costs more than a full load
    assert kinds[0] == "full" and "full" in kinds[1:] and "delta" in kinds
    small = store.session("small", max_snapshots=100)
    # a small change to a large state is cheap to apply: mostly deltas
    small_kinds = [small.commit({"log": [f"line {i}" for i in range(500)], "t": t}).kind for t in range(30)]
    assert small_kinds[0] == "full" and small_kinds.count("delta") >= 3 * small_kinds.count("full")


def stored_ids(sess: Session) -> set[str]:
    """Every snapshot whose record is still in the session's segments (retained or not)."""
    log = SessionLog(sess._store.backend, sess.key, sess.name)
    log.refresh()
    return set(log.commits)


def test_eviction_is_fifo_and_reclaims_storage(make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store(max_chain=4)
    sess = store.session("s", max_snapshots=3)
    ids = [sess.commit(game(t)).id for t in range(40)]
    assert [s.id for s in sess.snapshots()] == ids[-3:]
    with pytest.raises(SnapshotNotFound):
        sess.state(ids[0])
    sess.clear_old_snapshots()
    # what is stored: the 3 retained snapshots and at most the rest of the run (keyframe and chain) they need
    stored = stored_ids(sess)
    assert set(ids[-3:]) <= stored and len(stored) <= 3 + 4
    assert ids[0] not in stored
    for t, sid in zip(range(37, 40), ids[-3:], strict=True):
        assert canonical(sess.state(sid)) == canonical(game(t))
    assert store.verify().ok


def test_squash_rewrites_a_segment_from_its_first_needed_run(make_store: Callable[..., SnapshotStore]) -> None:
    """Small states all go to one segment (keyframes patched against it); reclaiming cuts the runs
    nobody needs and starts the segment at an independent keyframe, keeping every record (and id)."""
    store = make_store(max_chain=3)
    sess = store.session("s", max_snapshots=4)
    first_segment = store.backend.segments(sess.key)[0]
    ids = [sess.commit(game(t)).id for t in range(80)]
    sess.clear_old_snapshots()
    (segment,) = store.backend.segments(sess.key)  # one segment, rewritten in place
    assert segment.segment == first_segment.segment and segment.version != first_segment.version
    raw = split_index(store.backend.read_segment(sess.key, segment.segment).entries, from_start=True)[0]
    entries = [decode_entry(e, "s", "test") for e in raw]
    commits = [e for e in entries if isinstance(e, CommitEntry)]
    assert isinstance(entries[0], MetaEntry) and entries[0].checkpoint  # the settings survive the cut
    assert commits[0].mode == KEY_INDEPENDENT and commits[0].id != ids[0]
    assert {c.id for c in commits} <= set(ids[-8:])  # at most the two runs the retained snapshots need
    fresh = SnapshotStore(store.backend).session("s")
    assert fresh.snapshot_ids() == ids[-4:]
    for t, sid in zip(range(76, 80), ids[-4:], strict=True):
        assert canonical(fresh.state(sid)) == canonical(game(t))
    assert store.verify().ok


def test_max_snapshots_setting(store: SnapshotStore) -> None:
    sess = store.session("s")
    assert sess.max_snapshots == 10
    ids = [sess.commit(game(t)).id for t in range(8)]
    assert store.session("s").max_snapshots == 10
    assert store.session("s", max_snapshots=12).max_snapshots == 12  # raising is applied
    with pytest.raises(SnapshotError) as err:
        store.session("s", max_snapshots=3)  # lowering would evict: refused, nothing changes
    assert err.value.details["retained"] == 8 and "set_max_snapshots(3)" in str(err.value)
    assert sess.max_snapshots == 12 and sess.snapshot_ids() == ids
    assert sess.set_max_snapshots(3) == ids[:5]  # what it evicted, oldest first
    assert [s.id for s in sess.snapshots()] == ids[-3:]
    assert store.session("s").max_snapshots == 3
    assert store.session("s", max_snapshots=3).max_snapshots == 3  # the same limit is no change
    with pytest.raises(SnapshotError):
        store.session("s", max_snapshots=0)


def test_a_session_opened_without_create_must_exist(make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store()
    before = store_contents(store)
    with pytest.raises(SnapshotNotFound) as err:
        store.session("absent", create=False)
    assert err.value.details == {"session": "absent"} and "does not exist" in str(err.value)
    assert store_contents(store) == before and not store.has_session("absent")
    ids = [store.session("there").commit(game(t)).id for t in range(3)]
    assert make_store().session("there", create=False).snapshot_ids() == ids  # another handle finds it
    store.delete_session("there")
    with pytest.raises(SnapshotNotFound):
        store.session("there", create=False)  # deleted: the handle kept is not handed out
    after = store_contents(store)
    for ask in (store.delete_session, store.session_usage):  # a session that is not there is named
        with pytest.raises(SnapshotNotFound, match="session 'there' does not exist"):
            ask("there")
    assert store_contents(store) == after


@pytest.mark.parametrize("name", ["", "a/b", "..", "a\\b", "x..y", ".", "a\x00b", "tab\tname", 42, None])
def test_bad_session_names_write_nothing(store: SnapshotStore, name: object) -> None:
    before = store_contents(store)
    with pytest.raises(InvalidNameError) as err:
        store.session(name)  # type: ignore[arg-type]
    assert "session" in err.value.details
    assert store_contents(store) == before


def test_unicode_session_names(store: SnapshotStore) -> None:
    for name in ["Zoë's table", "gate:north", "~tilde~", "42", "名前 with spaces"]:
        store.session(name).commit({"n": name})
    assert store.sessions() == sorted(["Zoë's table", "gate:north", "~tilde~", "42", "名前 with spaces"])


def test_names_like_the_engines_own_files_are_sessions_like_any(store: SnapshotStore) -> None:
    """A session's key is its quoted name, so a name may spell what the directory engine calls its
    temporary files (``.tmp-``) or the start of a staged history (``~staged-``, quoted as ``%7Estaged-``):
    each is listed, kept and verified like any other."""
    names = [".tmp-x", ".tmp-0123456789abcdef", "~staged-1-0000000000000000", "lock", ".hidden"]
    for name in names:
        store.session(name).commit({"n": name})
    assert store.sessions() == sorted(names)
    report = store.verify(read_data=True)
    assert report.ok and report.sessions_checked == len(names)
    assert store.gc(grace_seconds=-10).temporary_files_removed == 0
    assert store.sessions() == sorted(names)
    for name in names:
        head = store.session(name).head
        assert head is not None and store.session(name).state(head.id) == {"n": name}


def _cycle() -> list:
    a: list = []
    a.append(a)
    return a


BAD_STATES = [
    {"x": float("nan")},
    {"x": float("inf")},
    {"x": [float("-inf")]},
    {1: "non-string key"},
    {"x": {1, 2}},
    {"x": b"bytes"},
    {"x": 2**64},
    {"x": -(2**63) - 1},
    {"x": (1, 2)},
    _cycle(),
    {"x": "\ud800"},
]


@pytest.mark.parametrize("bad", BAD_STATES, ids=lambda v: repr(v)[:30])
def test_invalid_states_write_nothing(store: SnapshotStore, bad: object) -> None:
    sess = store.session("s")
    head = sess.commit({"ok": 1})
    before = store_contents(store)
    with pytest.raises(InvalidStateError) as err:
        sess.commit(bad)
    assert isinstance(err.value.details, dict) and "reason" in err.value.details
    assert store_contents(store) == before
    assert sess.head == head and len(sess) == 1


def test_deep_nesting_refused(store: SnapshotStore) -> None:
    deep: dict = {}
    node = deep
    for _ in range(300):
        node["n"] = {}
        node = node["n"]
    with pytest.raises(InvalidStateError):
        store.session("s").commit(deep)


def test_datetime_and_enum_refused_without_model(store: SnapshotStore) -> None:
    import datetime
    import enum

    class Color(enum.Enum):
        RED = "red"

    sess = store.session("s")
    for bad in ({"when": datetime.datetime.now()}, {"c": Color.RED}, {"c": [Color.RED]}):
        with pytest.raises(InvalidStateError):
            sess.commit(bad)
    assert len(sess) == 0


def test_bad_arguments(store: SnapshotStore) -> None:
    sess = store.session("s")
    with pytest.raises(InvalidStateError):
        sess.commit({}, label=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidStateError):
        sess.commit({}, turn="3")  # type: ignore[arg-type]
    with pytest.raises(InvalidStateError):
        sess.commit({}, turn=True)  # type: ignore[arg-type]
    with pytest.raises(SnapshotNotFound):
        sess.state(12345678)  # type: ignore[arg-type]
    assert len(sess) == 0


def test_pydantic_models_are_committed_as_json(store: SnapshotStore) -> None:
    class Hero(BaseModel):
        name: str
        hp: int
        speed: float

    sess = store.session("s")
    snap = sess.commit(Hero(name="Zoë", hp=3, speed=1.0))
    assert canonical(sess.state(snap.id)) == canonical({"name": "Zoë", "hp": 3, "speed": 1.0})


def test_reopen_gives_same_answers(make_store: Callable[..., SnapshotStore]) -> None:
    if make_store.kind == "memory":  # type: ignore[attr-defined]
        pytest.skip("a memory store does not outlive its process")
    first = make_store(max_chain=3)
    sess = first.session("s", max_snapshots=6)
    ids = [sess.commit(game(t), turn=t).id for t in range(9)]
    sess.rollback(ids[5])
    second = make_store(max_chain=3)
    again = second.session("s")
    assert again.max_snapshots == 6
    assert [s.id for s in again.snapshots()] == ids[-6:]
    assert again.head is not None and again.head.id == ids[5]
    for t, sid in zip(range(3, 9), ids[-6:], strict=True):
        assert canonical(again.state(sid)) == canonical(game(t))
    nxt = again.commit(game(20))
    assert nxt.parent == ids[5]
    assert sess.head is not None and sess.head.id == nxt.id  # the first handle sees it too


def second_handle(make_store: Callable[..., SnapshotStore], first: SnapshotStore, **settings: object) -> SnapshotStore:
    """Another store on the same storage, with caches of its own (a new connection or folder handle)."""
    if make_store.kind == "memory":  # type: ignore[attr-defined]
        return SnapshotStore(first.backend, **settings)  # type: ignore[arg-type]
    return make_store(**settings)


def test_a_stale_handle_commits_after_another_squashed_its_chain(make_store: Callable[..., SnapshotStore]) -> None:
    """A handle whose cached head and open segment are several commits old, and whose segment
    another handle has since rewritten (squashed), catches up and builds on the real head."""
    a_store = make_store(max_chain=3)
    a = a_store.session("s", max_snapshots=4)
    b_store = second_handle(make_store, a_store, max_chain=3)
    b = b_store.session("s")
    a.commit(game(0))  # a caches this head and the open segment as it is now
    before = b_store.backend.segments(b.key)[-1]
    for t in range(1, 13):
        made = b.commit(game(t))
    b.clear_old_snapshots()
    after = b_store.backend.segments(b.key)[-1]
    assert after.segment == before.segment and after.version != before.version  # rewritten under a
    assert a.head is not None and a.head.id == made.id
    snap = a.commit(game(13))
    assert snap.parent == made.id
    assert canonical(a.state(snap.id)) == canonical(game(13))
    assert canonical(SnapshotStore(b_store.backend).session("s").state(snap.id)) == canonical(game(13))
    assert b_store.verify(read_data=True).ok


def test_a_handle_catches_up_with_another_writers_deltas_instead_of_rebuilding(
    make_store: Callable[..., SnapshotStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers queue on the session's lock; the one that comes next reads the entries the other
    appended and applies their deltas to its cached head, rather than rebuilding the head from storage."""

    def turn(t: int) -> dict:  # a large state with a small change: every commit stores a delta
        return {"log": [f"line {i}" for i in range(200)], "t": t}

    a_store = make_store()
    a = a_store.session("s", max_snapshots=100)
    b = second_handle(make_store, a_store).session("s")
    b.commit(turn(0))
    for t in range(1, 4):
        a.commit(turn(t))  # a has a cached head from here on
    rival = b.commit(turn(4))  # lands between two of a's commits
    rebuilds: list[str] = []
    real_rebuild, real_rebuild_open = SessionLog.rebuild, Session._rebuild_open

    def counting_rebuild(self: SessionLog, sid: str) -> object:
        rebuilds.append(sid)
        return real_rebuild(self, sid)

    def counting_rebuild_open(self: Session, log: SessionLog, sid: str) -> object:
        rebuilds.append(sid)
        return real_rebuild_open(self, log, sid)

    monkeypatch.setattr(SessionLog, "rebuild", counting_rebuild)
    monkeypatch.setattr(Session, "_rebuild_open", counting_rebuild_open)
    snap = a.commit(turn(5))
    assert snap.parent == rival.id and snap.kind == "delta"
    assert rebuilds == []  # caught up from the head it had by applying the rival's delta
    monkeypatch.undo()
    fresh = SnapshotStore(a_store.backend).session("s")
    for sid, t in ((rival.id, 4), (snap.id, 5)):
        assert canonical(fresh.state(sid)) == canonical(turn(t))
    assert canonical(a.state(snap.id)) == canonical(turn(5))
    assert a_store.verify(read_data=True).ok


def test_two_handles_commit_without_losing_any(make_store: Callable[..., SnapshotStore]) -> None:
    a = make_store().session("s", max_snapshots=100)
    other = make_store() if make_store.kind != "memory" else a._store  # type: ignore[attr-defined]
    b = SnapshotStore(other.backend).session("s")  # an independent handle with its own caches
    made = []
    for t in range(10):
        made.append(a.commit({"by": "a", "t": t}).id)
        made.append(b.commit({"by": "b", "t": t}).id)
    assert [s.id for s in a.snapshots()] == made
    chain = [s.parent for s in a.snapshots()][1:]
    assert chain == made[:-1]  # each commit landed on the head the other had just made


@pytest.fixture
def one_run_per_segment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every keyframe starts a segment of its own (small states otherwise share one segment)."""
    monkeypatch.setattr(keyframes, "SMALL_SEGMENT_BYTES", 0)


def damaged_store(make_store: Callable[..., SnapshotStore]) -> tuple[SnapshotStore, list[Snapshot], int]:
    """Three segments of four snapshots; the payload of the third snapshot of the middle one flipped."""
    store = make_store(max_chain=3, max_runs=1)
    sess = store.session("s", max_snapshots=100)
    snaps = [sess.commit(game(t)) for t in range(12)]
    segments = [info.segment for info in store.backend.segments(sess.key)]
    assert len(segments) == 3
    victim = sess._log.commits[snaps[6].id]
    assert victim.segment == segments[1] and victim.mode not in KEY_MODES
    rewrite_entry(store, sess.key, victim.segment, victim.ordinal)
    return store, snaps, victim.segment


def test_a_damaged_delta_is_named_and_other_segments_still_rebuild(
    make_store: Callable[..., SnapshotStore], one_run_per_segment: None
) -> None:
    store, snaps, segment = damaged_store(make_store)
    fresh = SnapshotStore(store.backend).session("s")
    for broken in snaps[6:8]:  # the damaged delta and the one after it in its chain
        with pytest.raises(CorruptObjectError) as err:
            fresh.state(broken.id)
        assert err.value.details and f"segment {segment}" in str(err.value)
        assert snaps[6].id in str(err.value)  # the snapshot whose payload is damaged
    for t in (*range(4), *range(8, 12)):  # the segments before and after it
        assert canonical(fresh.state(snaps[t].id)) == canonical(game(t))
    report = store.verify()
    assert not report.ok
    assert {p.session for p in report.problems} == {"s"}
    assert all(f"segment {segment}" in p.message for p in report.problems)
    assert any(snaps[6].id in p.message for p in report.problems)


def test_a_damaged_delta_leaves_the_snapshots_before_it_in_its_segment(
    make_store: Callable[..., SnapshotStore], one_run_per_segment: None
) -> None:
    store, snaps, _segment = damaged_store(make_store)
    fresh = SnapshotStore(store.backend).session("s")
    for t in (4, 5):
        assert canonical(fresh.state(snaps[t].id)) == canonical(game(t))


def test_a_damaged_frame_in_a_directory_store_costs_at_most_the_rest_of_its_segment(
    tmp_path: Path, one_run_per_segment: None
) -> None:
    store = SnapshotStore.open(tmp_path / "store", max_chain=3, max_runs=1)
    sess = store.session("s", max_snapshots=100)
    snaps = [sess.commit(game(t)) for t in range(12)]
    victim = sess._log.commits[snaps[6].id]
    damage_entry(store.backend, sess.key, victim.segment, victim.ordinal)
    fresh = SnapshotStore.open(tmp_path / "store").session("s")
    for lost in snaps[6:8]:  # the damaged entry and the rest of its segment: damaged, or gone
        with pytest.raises((CorruptObjectError, SnapshotNotFound)):
            fresh.state(lost.id)
    for t in (*range(6), *range(8, 12)):
        assert canonical(fresh.state(snaps[t].id)) == canonical(game(t))
    report = fresh._store.verify()
    assert not report.ok and {p.session for p in report.problems} == {"s"}
    after = fresh.commit(game(12))  # the session goes on, in a new segment
    assert canonical(SnapshotStore.open(tmp_path / "store").session("s").state(after.id)) == canonical(game(12))


def test_gc_drops_what_retention_evicted_and_keeps_every_retained_state(
    make_store: Callable[..., SnapshotStore], one_run_per_segment: None
) -> None:
    store = make_store(max_chain=3, max_runs=1)
    sess = store.session("s", max_snapshots=100)
    ids = [sess.commit(game(t)).id for t in range(16)]
    assert len(store.backend.segments(sess.key)) == 4
    assert store.gc().segments_dropped == 0  # everything is retained
    sess.set_max_snapshots(5)  # reclaims at once: the first two segments hold nothing retained
    assert len(store.backend.segments(sess.key)) == 2
    other = store.session("other", max_snapshots=2)
    for t in range(12):
        other.commit(game(t))
    # the last keyframe (turn 8) reclaimed; the deltas after it evicted turns 6 and 7: their segment waits for gc
    assert len(store.backend.segments(other.key)) == 2
    before = store.stats()["stored_bytes"]
    assert store.gc(dry_run=True).segments_dropped == 0 and store.stats()["stored_bytes"] == before
    report = store.gc()
    assert report.segments_dropped == 1 and len(store.backend.segments(other.key)) == 1
    assert report.bytes_freed == before - store.stats()["stored_bytes"] > 0
    for t, sid in zip(range(11, 16), ids[-5:], strict=True):
        assert canonical(sess.state(sid)) == canonical(game(t))
    for t, sid in zip((10, 11), other.snapshot_ids(), strict=True):
        assert canonical(other.state(sid)) == canonical(game(t))
    assert store.verify().ok
    store.delete_session("s")
    store.delete_session("other")
    store.gc()
    assert store.sessions() == [] and all(store.backend.segments(k) == [] for k in store.backend.session_keys())


def test_gc_removes_leftovers_of_interrupted_rewrites(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path / "store")
    sess = store.session("s")
    snap = sess.commit(game(1))
    leftover = tmp_path / "store" / "sessions" / sess.key / ".tmp-0123456789abcdef"
    leftover.write_bytes(b"half a segment")
    assert store.gc().temporary_files_removed == 0  # young: perhaps another process's rewrite
    assert leftover.exists()
    assert store.gc(grace_seconds=0).temporary_files_removed == 1 and not leftover.exists()
    assert canonical(sess.state(snap.id)) == canonical(game(1))


def test_records_name_identical_deltas_and_states_by_the_same_hash(store: SnapshotStore) -> None:
    """Content addressing survives the move to segments: a record names its state and its delta by
    the hash of their bytes, so the same change in two sessions has one delta hash."""
    for name in ("a", "b"):
        sess = store.session(name)
        sess.commit({"turn": 0, "big": "x" * 1000})
        sess.commit({"turn": 1, "big": "x" * 1000})
    a, b = (store.session(n) for n in ("a", "b"))
    assert a.head is not None and b.head is not None and a.head.id != b.head.id  # ids hash the session name
    record_a, record_b = (s._log.commits[s.head.id].record for s in (a, b))  # type: ignore[union-attr]
    assert record_a.delta is not None and record_a.delta == record_b.delta
    assert record_a.state == record_b.state == a.head.state_hash


def test_errors_carry_details(store: SnapshotStore) -> None:
    sess = store.session("s")
    with pytest.raises(SnapshotError) as err:
        sess.rollback("deadbeefdeadbeef")
    assert isinstance(err.value.details, dict) and err.value.details["snapshot"] == "deadbeefdeadbeef"
    assert copy.copy(err.value.details)


def test_a_reader_in_the_middle_of_a_commit_does_not_unseat_it(make_store: Callable[..., SnapshotStore]) -> None:
    """Another thread reading the session (``len``, a state) right after a commit's append, before
    the commit has taken in what it wrote, must neither see a half-made snapshot nor disturb it."""
    import threading

    store = make_store()
    sess = store.session("s")
    first = sess.commit({"n": 0})
    real_append = store.backend.append
    seen: list[object] = []

    def append_then_a_reader(key: str, segment: int, entries: object, expected_end: int) -> int:
        end = real_append(key, segment, entries, expected_end)  # type: ignore[arg-type]

        def read() -> None:
            seen.append((len(sess), canonical(sess.state(first.id))))

        reader = threading.Thread(target=read)
        readers.append(reader)
        reader.start()
        reader.join(timeout=0.2)  # the reader waits for the commit's lock on the session handle
        return end

    readers: list[threading.Thread] = []
    store.backend.append = append_then_a_reader  # type: ignore[method-assign]
    second = sess.commit({"n": 1})
    del store.backend.append
    for reader in readers:
        reader.join(timeout=60)
    assert store.verify(read_data=True).ok
    fresh = SnapshotStore(store.backend).session("s")
    assert fresh.snapshot_ids() == [first.id, second.id] == sess.snapshot_ids()
    assert canonical(fresh.state(second.id)) == canonical({"n": 1})
    assert seen == [(2, canonical({"n": 0}))]  # the reader saw the finished commit


def test_verify_reports_a_problem_two_checks_find_once() -> None:
    from snapstore.errors import CorruptObjectError
    from snapstore.store import VerifyReport

    report = VerifyReport()
    broken = CorruptObjectError("snapshot x has a broken parent chain at y", {"object": "x"})
    for _check in ("the chain", "the rebuild"):
        report.add(broken, session="s", snapshot="x")
    report.add(CorruptObjectError("another", {"object": "z"}), session="s", snapshot="z")
    assert [p.message for p in report.problems] == ["snapshot x has a broken parent chain at y", "another"]


def test_an_interrupt_after_a_delta_is_compressed_leaves_the_next_commits_readable(
    make_store: Callable[..., SnapshotStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the delta goes into the writer's zstd stream before the append: an interrupt in between (Ctrl-C)
    # left the stream holding a block the file never got, and the commits after it, acknowledged,
    # were deltas against that block: unreadable
    from snapstore import session as session_module

    store = make_store()
    sess = store.session("s", max_snapshots=100)
    state: dict[str, Any] = {"log": []}
    acknowledged = []
    real = session_module.encode_commit

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(session_module, "encode_commit", real)
        raise KeyboardInterrupt

    for turn in range(12):
        state["log"].append({"turn": turn, "text": f"line {turn} " * 40})
        if turn == 5:
            monkeypatch.setattr(session_module, "encode_commit", interrupted)
            with pytest.raises(KeyboardInterrupt):
                sess.commit(state)
            continue
        acknowledged.append((sess.commit(state).id, canonical(state)))
    assert store.verify().ok
    reopened = make_store() if store.backend.__class__.__name__ != "MemoryBackend" else store
    for sid, expected in acknowledged:
        assert canonical(reopened.session("s").state(sid)) == expected


def test_an_interrupt_while_a_segment_is_decoded_is_raised_and_the_next_read_works(
    make_store: Callable[..., SnapshotStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a view of the stream being decoded, held by the interrupted call's traceback, kept the stream
    # from changing size: the cleanup raised BufferError in place of the KeyboardInterrupt, and
    # reads after it kept failing while the caller held on to the exception
    from snapstore import entries

    store = make_store(max_chain=2)
    sess = store.session("s", max_snapshots=100)
    states = [{"turn": t, "log": [f"line {n}" for n in range(t)]} for t in range(9)]
    ids = [sess.commit(state).id for state in states]
    real = entries.raw_dict

    def interrupted(content: Any) -> Any:
        monkeypatch.setattr(entries, "raw_dict", real)
        raise KeyboardInterrupt

    monkeypatch.setattr(entries, "raw_dict", interrupted)
    reader = make_store().session("s") if make_store.kind != "memory" else SnapshotStore(store.backend).session("s")
    with pytest.raises(KeyboardInterrupt) as held:
        reader.state(ids[4])  # its chain starts at a patched keyframe: the decoder builds a dictionary
    assert held.value is not None  # held on to, as a caller keeping the error would
    for sid, state in zip(ids, states, strict=True):
        assert canonical(reader.state(sid)) == canonical(state)
    reader_commit = reader.commit({"turn": 9})
    assert canonical(make_store().session("s").state(reader_commit.id)) == canonical({"turn": 9})


def test_a_commit_on_a_named_parent_is_made_only_while_that_is_the_head(
    make_store: Callable[..., SnapshotStore],
) -> None:
    """``commit(parent=...)``: the read-modify-write a saver of LangGraph threads needs, checked
    under the session's lock; refused, with nothing written, once another writer committed."""
    from snapstore import ConcurrentUpdateError

    store = make_store()
    one = store.session("s")
    other = make_store().session("s") if make_store.kind != "memory" else SnapshotStore(store.backend).session("s")
    first = one.commit({"n": 1}, parent=None)  # only on an empty session
    with pytest.raises(ConcurrentUpdateError) as refused:
        other.commit({"n": 1.5}, parent=None)
    assert refused.value.details == {"session": "s", "head": first.id, "expected": None}
    second = other.commit({"n": 2}, parent=first.id)
    with pytest.raises(ConcurrentUpdateError):
        one.commit({"n": 3}, parent=first.id)  # built on first: another writer committed since
    assert one.snapshot_ids() == [first.id, second.id]
    with pytest.raises(SnapshotError, match="full snapshot id") as prefix:  # never "another writer committed"
        one.commit({"n": 3}, parent=second.id[:12])
    assert type(prefix.value) is SnapshotError and prefix.value.details["argument"] == "parent"
    third = one.commit({"n": 3}, parent=second.id.upper())
    assert third.parent == second.id and canonical(one.state(third.id)) == canonical({"n": 3})
    assert store.verify().ok
