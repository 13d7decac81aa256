"""The store's contract: commit, state, rollback, diff, retention, reopen, errors."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timezone

import pytest
from pydantic import BaseModel

from conftest import canonical
from snapstore import (
    AmbiguousSnapshotId,
    CorruptObjectError,
    InvalidNameError,
    InvalidStateError,
    SnapshotError,
    SnapshotNotFound,
    SnapshotStore,
)
from snapstore.session import resolve_prefix


def backend_contents(store: SnapshotStore) -> tuple[set[str], list[tuple[str, str]]]:
    return set(store.backend.iter_keys()), list(store.backend.iter_refs())


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
    store = make_store(max_chain=3, max_chain_factor=1e9)
    sess = store.session("s", max_snapshots=100)
    snaps = [sess.commit(game(t)) for t in range(12)]
    assert [s.kind for s in snaps] == ["full", "delta", "delta", "delta"] * 3
    for t, snap in enumerate(snaps):
        assert canonical(sess.state(snap.id)) == canonical(game(t))


def test_keyframe_when_deltas_outweigh_a_full_state(make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store(max_chain=1000, max_chain_factor=2.0)
    sess = store.session("s", max_snapshots=100)
    kinds = [sess.commit({"blob": f"{t}" * 3000 + str(t) * (t % 7)}).kind for t in range(10)]
    # each delta replaces the whole (incompressible-ish) value: about a full state each
    assert kinds[0] == "full" and "full" in kinds[1:] and "delta" in kinds


def test_eviction_is_fifo_and_reclaims_storage(make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store(max_chain=4)
    sess = store.session("s", max_snapshots=3)
    ids = [sess.commit(game(t)).id for t in range(40)]
    assert [s.id for s in sess.snapshots()] == ids[-3:]
    with pytest.raises(SnapshotNotFound):
        sess.state(ids[0])
    store.reclaim(sess)
    keys, _ = backend_contents(store)
    # 3 retained + at most a chain of pinned records, each with a payload, plus the session doc
    assert len(keys) <= 2 * (3 + 4) + 2
    for t, sid in zip(range(37, 40), ids[-3:], strict=True):
        assert canonical(sess.state(sid)) == canonical(game(t))
    assert store.verify().ok


def test_squash_gives_oldest_retained_a_base(make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store(max_chain=10_000, max_chain_factor=1e9)  # never a keyframe after the first
    sess = store.session("s", max_snapshots=4)
    ids = [sess.commit(game(t)).id for t in range(80)]
    store.reclaim(sess)
    doc = sess._current()
    assert doc.bases and set(doc.bases) <= set(doc.snapshots) | set(doc.evicted)
    keys, _ = backend_contents(store)
    assert len(keys) <= 2 * (4 + 64) + 2  # retained and pinned records with payloads, a base, the doc
    assert ids[0] not in keys  # the first keyframe's record is gone
    for t, sid in zip(range(76, 80), ids[-4:], strict=True):
        assert canonical(sess.state(sid)) == canonical(game(t))
    assert store.verify().ok


def test_max_snapshots_setting(store: SnapshotStore) -> None:
    sess = store.session("s")
    assert sess.max_snapshots == 10
    ids = [sess.commit(game(t)).id for t in range(8)]
    assert store.session("s").max_snapshots == 10
    store.session("s", max_snapshots=3)
    assert [s.id for s in sess.snapshots()] == ids[-3:]
    assert store.session("s").max_snapshots == 3
    with pytest.raises(SnapshotError):
        store.session("s", max_snapshots=0)


@pytest.mark.parametrize("name", ["", "a/b", "..", "a\\b", "x..y", ".", "a\x00b", "tab\tname", 42, None])
def test_bad_session_names_write_nothing(store: SnapshotStore, name: object) -> None:
    before = backend_contents(store)
    with pytest.raises(InvalidNameError) as err:
        store.session(name)  # type: ignore[arg-type]
    assert "session" in err.value.details
    assert backend_contents(store) == before


def test_unicode_session_names(store: SnapshotStore) -> None:
    for name in ["Zoë's table", "gate:north", "~tilde~", "42", "名前 with spaces"]:
        store.session(name).commit({"n": name})
    assert store.sessions() == sorted(["Zoë's table", "gate:north", "~tilde~", "42", "名前 with spaces"])


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
    before = backend_contents(store)
    with pytest.raises(InvalidStateError) as err:
        sess.commit(bad)
    assert isinstance(err.value.details, dict) and "reason" in err.value.details
    assert backend_contents(store) == before
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


def test_a_stale_handle_commits_after_another_squashed_its_chain(
    make_store: Callable[..., SnapshotStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handle whose cached head is a few commits old catches up by applying the newer deltas,
    unless one of them was dropped by a squash (its snapshot got a full base): then it rebuilds."""
    import snapstore.store

    monkeypatch.setattr(snapstore.store, "MAX_PINNED", 2)  # squash after a few evictions, not 64
    a = make_store(max_chain=10_000, max_chain_factor=1e9).session("s", max_snapshots=4)
    other = make_store() if make_store.kind != "memory" else a._store  # type: ignore[attr-defined]
    b_store = SnapshotStore(other.backend, max_chain=10_000, max_chain_factor=1e9)
    b = b_store.session("s")
    a.commit(game(0))  # a caches this head
    for t in range(1, 9):
        b.commit(game(t))
    b_store.reclaim(b)
    bases = b._current().bases
    assert bases and all(b_store.objects.record(sid).delta for sid in bases)  # squashed deltas
    snap = a.commit(game(9))
    assert canonical(a.state(snap.id)) == canonical(game(9))
    assert b_store.verify(read_data=True).ok


def test_a_commit_that_loses_a_race_catches_up_instead_of_rebuilding(
    make_store: Callable[..., SnapshotStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit patches its cached head before the ref swap; when another writer's commit lands
    first, the head is put back and the retry applies just that writer's delta to it."""
    import snapstore.session

    def turn(t: int) -> dict:  # a large state with a small change: every commit stores a delta
        return {"log": [f"line {i}" for i in range(200)], "t": t}

    a_store = make_store()
    a = a_store.session("s", max_snapshots=100)
    other = make_store() if make_store.kind != "memory" else a_store  # type: ignore[attr-defined]
    b = SnapshotStore(other.backend).session("s")
    b.commit(turn(0))  # each handle has a cached head: from here on both catch up, neither rebuilds
    for t in range(1, 4):
        a.commit(turn(t))
    real_cas, raced = a_store.backend.cas_ref, []

    def cas_after_a_rival(name: str, expected: str | None, new: str | None) -> bool:
        if not raced and name == a._ref:
            raced.append("")  # first (the memory store's rival shares this backend)
            raced[0] = b.commit(turn(4)).id  # a real commit by another handle lands first
        return real_cas(name, expected, new)

    rebuilds: list[str] = []
    real_rebuild = snapstore.session.rebuild

    def counting_rebuild(*args: object, **kwargs: object) -> object:
        rebuilds.append("rebuild")
        return real_rebuild(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(a_store.backend, "cas_ref", cas_after_a_rival)
    monkeypatch.setattr(snapstore.session, "rebuild", counting_rebuild)
    snap = a.commit(turn(5))
    assert raced and snap.parent == raced[0]
    assert rebuilds == []  # caught up from the head it had, which the lost attempt had patched
    fresh = SnapshotStore(other.backend).session("s")
    for sid, t in ((raced[0], 4), (snap.id, 5)):
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


def test_corrupt_delta_is_named_and_others_still_rebuild(make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store(max_chain=3, max_chain_factor=1e9)
    sess = store.session("s", max_snapshots=100)
    snaps = [sess.commit(game(t)) for t in range(8)]
    victim = store.objects.record(snaps[2].id).delta
    assert victim is not None
    blob = bytearray(store.backend.get(victim))
    blob[-1] ^= 0xFF
    store.backend.delete(victim)
    store.backend.put(victim, bytes(blob))
    fresh = SnapshotStore(store.backend).session("s")
    for broken in (snaps[2], snaps[3]):
        with pytest.raises(CorruptObjectError) as err:
            fresh.state(broken.id)
        assert err.value.details["object"] == victim
    for t in (0, 1, 4, 5, 6, 7):
        assert canonical(fresh.state(snaps[t].id)) == canonical(game(t))
    report = store.verify()
    assert not report.ok
    assert victim in {p.object for p in report.problems}
    assert {p.snapshot for p in report.problems if p.snapshot} == {snaps[2].id, snaps[3].id}


def test_gc_keeps_live_objects_and_drops_orphans(store: SnapshotStore) -> None:
    sess = store.session("s")
    ids = [sess.commit(game(t)).id for t in range(5)]
    orphan_key, _ = store.objects.put(__import__("snapstore.codec").codec.Kind.STATE, b'{"orphan":true}')
    report = store.gc()
    assert report.objects_deleted == 1 and not store.backend.has(orphan_key)
    for t, sid in enumerate(ids):
        assert canonical(sess.state(sid)) == canonical(game(t))
    store.delete_session("s")
    store.gc()
    assert list(store.backend.iter_keys()) == []


def test_identical_deltas_are_stored_once_across_sessions(store: SnapshotStore) -> None:
    for name in ("a", "b"):
        sess = store.session(name)
        sess.commit({"turn": 0, "big": "x" * 1000})
        sess.commit({"turn": 1, "big": "x" * 1000})
    a, b = (store.session(n).head for n in ("a", "b"))
    assert a is not None and b is not None
    assert store.objects.record(a.id).delta == store.objects.record(b.id).delta
    state_keys = {store.objects.record(s.parent).state for s in (a, b) if s.parent}
    assert len(state_keys) == 1


def test_errors_carry_details(store: SnapshotStore) -> None:
    sess = store.session("s")
    with pytest.raises(SnapshotError) as err:
        sess.rollback("deadbeefdeadbeef")
    assert isinstance(err.value.details, dict) and err.value.details["snapshot"] == "deadbeefdeadbeef"
    assert copy.copy(err.value.details)


def test_a_reader_in_the_middle_of_a_commit_does_not_unseat_it(make_store: Callable[..., SnapshotStore]) -> None:
    """Another thread reading the session (``len``) right after the commit's compare-and-swap must
    not reload the document under it: the commit then deleted the document the ref named."""
    import threading

    store = make_store()
    sess = store.session("s")
    sess.commit({"n": 0})
    real_cas = store.backend.cas_ref

    def cas_then_a_reader(name: str, expected: str | None, new: str | None) -> bool:
        done = real_cas(name, expected, new)
        reader = threading.Thread(target=len, args=(sess,))
        reader.start()
        reader.join(timeout=0.2)  # with the fix the reader waits for the commit's lock
        return done

    store.backend.cas_ref = cas_then_a_reader  # type: ignore[method-assign]
    sess.commit({"n": 1})
    del store.backend.cas_ref
    assert store.verify(read_data=True).ok
    assert len(SnapshotStore(store.backend).session("s")) == 2
