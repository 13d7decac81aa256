"""An older snapshot read on a handle that indexed only the newest segments comes from its own
segment alone when retention cannot have evicted anything (``snapstore.own_segment``): whatever
it answers, for every id, after any history (branches, tags, limits lowered and raised, forgets,
reclaims, damage), is what a handle that indexed the whole log answers, on every engine."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import CountingBackend, canonical, rewrite_entry
from snapstore import SnapshotStore, entries, history, keyframes, own_segment
from snapstore.errors import SnapshotError

UNLIMITED = 2**63 - 1
PAD = [f"line {i} of the campaign log" for i in range(40)]


def outcome(read: Callable[[], Any]) -> tuple[str, Any]:
    """What a read gives, in a form two handles' answers compare by: the state's canonical bytes
    (type-exact), or the kind of error and its reason."""
    try:
        return "state", canonical(read())
    except SnapshotError as exc:
        return type(exc).__name__, exc.details.get("reason")


@contextlib.contextmanager
def reopened(make_store: Callable[..., SnapshotStore]) -> Iterator[SnapshotStore]:
    """A fresh handle on the same storage, closed after use (a memory store's backend is shared and
    stays open: the fixture keeps it)."""
    store = make_store()
    try:
        yield store
    finally:
        if make_store.kind != "memory":  # type: ignore[attr-defined]
            store.close()


def whole_log_answers(make_store: Callable[..., SnapshotStore], ids: list[str]) -> dict[str, tuple[str, Any]]:
    with reopened(make_store) as store:
        session = store.session("s")
        session.snapshots()  # the whole log indexed
        assert not session._log.partial
        return {sid: outcome(lambda sid=sid: session.state(sid)) for sid in ids}


def fresh_reader_answer(make_store: Callable[..., SnapshotStore], sid: str) -> tuple[tuple[str, Any], str]:
    """A fresh handle's answer for ``sid`` after it read the head (the newest segments alone), and
    how: "newest" (a snapshot of those segments), "alone" (from its own segment, nothing more
    indexed) or "indexed" (segments down to it, or the whole log)."""
    with reopened(make_store) as store:
        session = store.session("s")
        assert session.head is not None
        indexed, newest = set(session._log.segments), sid in session._log.commits
        found = outcome(lambda: session.state(sid))
        if newest:
            return found, "newest"
        alone = session._log.partial and set(session._log.segments) == indexed and sid not in session._log.commits
        return found, "alone" if alone else "indexed"


def test_every_snapshot_of_a_linear_session_is_read_from_its_own_segment(
    make_store: Callable[..., SnapshotStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every snapshot but the head has a child naming it, in its segment or opening the next one:
    each one in the few segments before the newest is rebuilt from its own segment, type-exact,
    with nothing else indexed; one further back is found by indexing, as before."""
    monkeypatch.setattr(keyframes, "SMALL_SEGMENT_BYTES", 0)  # small states start segments too
    writer = make_store(max_chain=4, max_runs=2).session("s", max_snapshots=UNLIMITED)
    states = [{"turn": t, "log": PAD[: 5 + t % 30], "hp": t * 1.0 if t % 3 else t % 2 == 0} for t in range(45)]
    ids = [writer.commit(state, label=f"t{t}", turn=t).id for t, state in enumerate(states)]
    newest = max(writer._log.segments)
    assert newest - min(writer._log.segments) > own_segment.SEARCH_SEGMENTS + 1
    ways: dict[str, int] = {}
    for sid, state in zip(ids[:-1], states, strict=False):
        found, how = fresh_reader_answer(make_store, sid)
        assert found == ("state", canonical(state))
        near = writer._log.commits[sid].segment >= newest - own_segment.SEARCH_SEGMENTS
        assert (how != "indexed") == near, f"snapshot of turn {state['turn']} read {how}"
        ways[how] = ways.get(how, 0) + 1
    assert ways["alone"] >= 10 and ways["indexed"] >= 10


@pytest.mark.parametrize("shape", ["many short segments", "one long segment"])
def test_a_handle_reading_many_older_snapshots_indexes_the_log_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    """A fresh handle walking the whole history newest first (LangGraph's ``list`` on a new
    process) reads the segments about as often as a handle that indexed the whole log first:
    one search reads a few segments at most, and the searches stop once they have read as many
    segments as the session has (each snapshot of a long segment would read it again)."""
    many = shape == "many short segments"
    if many:
        monkeypatch.setattr(keyframes, "SMALL_SEGMENT_BYTES", 0)
    with SnapshotStore.open(tmp_path / "store", max_chain=8, max_runs=1) as store:
        writer = store.session("s", max_snapshots=UNLIMITED)
        ids = [writer.commit({"turn": t, "log": PAD[: 5 + t % 30]}, turn=t).id for t in range(400 if many else 150)]
        if not many:
            monkeypatch.setattr(keyframes, "SMALL_SEGMENT_BYTES", 0)  # the next keyframe starts a segment
            ids += [writer.commit({"turn": t, "log": PAD[: 5 + t % 30]}, turn=t).id for t in range(150, 160)]
        assert len(writer._log.segments) > 40 if many else len(writer._log.segments) == 2

    def reads(whole_first: bool) -> int:
        backend = CountingBackend(tmp_path / "store")
        with SnapshotStore(backend) as store:
            reader = store.session("s")
            if whole_first:
                reader.snapshots()
            else:
                assert reader.head is not None
            for turn in range(len(ids) - 2, -1, -1):
                assert reader.state(ids[turn])["turn"] == turn
        return len(backend.read)

    assert reads(whole_first=False) <= 1.5 * reads(whole_first=True) + 4


def test_any_history_reads_as_the_whole_log_reads_it(
    make_store: Callable[..., SnapshotStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Branches from rollbacks, tags, a limit lowered (evicting) and raised again, forgets and
    reclaims: for every id ever committed, a fresh handle answers as the whole log does, most
    often from the snapshot's own segment while retention is unlimited."""
    monkeypatch.setattr(keyframes, "SMALL_SEGMENT_BYTES", 0)
    rng = random.Random(20261205)
    store = make_store(max_chain=3, max_runs=2)
    writer = store.session("s", max_snapshots=UNLIMITED)
    ids: list[str] = []
    alone = checked = 0
    for step in range(90):
        action = rng.random()
        retained = writer.snapshot_ids()
        if action < 0.72 or not retained:
            state = {"turn": step, "log": PAD[: rng.randint(3, 40)], "hp": rng.choice([1, 1.0, True, None, "1"])}
            ids.append(writer.commit(state, label=f"t{step}", turn=step).id)
        elif action < 0.8:
            writer.rollback(rng.choice(retained))  # the next commit branches, often in an older segment
        elif action < 0.86:
            writer.tag(rng.choice(retained), f"tag{rng.randint(0, 2)}")
        elif action < 0.9:
            writer.set_max_snapshots(rng.randint(4, 12))  # evicts: the mark stays when raised again
        elif action < 0.95:
            writer.set_max_snapshots(UNLIMITED)
        else:
            writer.clear_old_snapshots()
        if step % 6 == 5:
            whole = whole_log_answers(make_store, ids)
            for sid in rng.sample(ids, min(8, len(ids))):
                found, how = fresh_reader_answer(make_store, sid)
                assert found == whole[sid], f"step {step}, snapshot {sid}"
                alone += how == "alone"
                checked += 1
    assert checked > 80 and alone > 10


def test_a_limit_retention_could_reach_leaves_it_to_the_whole_log(
    make_store: Callable[..., SnapshotStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a limit that the stored commits could exceed, whether an older snapshot is retained
    depends on what comes after it: the segments down to it are indexed (``SessionLog.reach``),
    and an evicted one, still stored, is refused as evicted."""
    monkeypatch.setattr(keyframes, "SMALL_SEGMENT_BYTES", 0)
    writer = make_store(max_chain=3, max_runs=1).session("s", max_snapshots=12)
    ids = [writer.commit({"turn": t, "log": PAD}, turn=t).id for t in range(30)]
    with reopened(make_store) as store:
        session = store.session("s")
        assert session.head is not None and session._log.partial
        assert session.state(ids[-10])["turn"] == 20
        assert ids[-10] in session._log.commits  # indexed down to it
    whole = whole_log_answers(make_store, ids)
    assert whole[ids[2]][0] == "SnapshotNotFound"
    assert fresh_reader_answer(make_store, ids[2]) == (whole[ids[2]], "indexed")


def test_an_eviction_mark_leaves_it_to_the_whole_log(
    make_store: Callable[..., SnapshotStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A limit lowered, then raised past any count of commits: what the lower one evicted stays
    evicted (the session's ``evicted_through`` mark), though still stored beside retained snapshots
    in its segment, and is refused."""
    writer = make_store(max_chain=3).session("s", max_snapshots=UNLIMITED)
    ids = [writer.commit({"turn": t, "log": PAD}, turn=t).id for t in range(30)]  # one segment
    monkeypatch.setattr(keyframes, "SMALL_SEGMENT_BYTES", 0)  # then newer ones
    ids += [writer.commit({"turn": t, "log": PAD}, turn=t).id for t in range(30, 40)]
    writer.set_max_snapshots(25)
    writer.set_max_snapshots(UNLIMITED)
    whole = whole_log_answers(make_store, ids)
    writer.snapshots()
    stored = [sid for sid in ids if sid in writer._log.commits]
    evicted_but_stored = [sid for sid in stored if whole[sid][0] == "SnapshotNotFound"]
    assert evicted_but_stored  # kept for the chains of retained snapshots after them
    for sid in [*evicted_but_stored, stored[-5]]:
        found, how = fresh_reader_answer(make_store, sid)
        assert found == whole[sid] and how == "indexed"


@pytest.mark.parametrize("flip", ["payload", "record"])
def test_damage_reads_as_the_whole_log_reads_it(
    make_store: Callable[..., SnapshotStore], monkeypatch: pytest.MonkeyPatch, flip: str
) -> None:
    """A byte flipped in an older segment (a payload, or a record's parent id, under a framing
    that still checks): every id answers as the whole log answers, damage named as damage."""
    monkeypatch.setattr(keyframes, "SMALL_SEGMENT_BYTES", 0)
    store = make_store(max_chain=4, max_runs=2)
    writer = store.session("s", max_snapshots=UNLIMITED)
    ids = [writer.commit({"turn": t, "log": PAD[: 5 + t]}, label=f"t{t}", turn=t).id for t in range(30)]
    victim = ids[8]
    segment, ordinal = writer._log.commits[victim].segment, writer._log.commits[victim].ordinal
    rewrite_entry(store, writer.key, segment, ordinal, -1 if flip == "payload" else 3)
    whole = whole_log_answers(make_store, ids)
    assert any(answer[0] != "state" for answer in whole.values())
    for sid in ids[:-1]:
        found, _alone = fresh_reader_answer(make_store, sid)
        assert found == whole[sid], f"snapshot of turn {ids.index(sid)}"


@pytest.mark.parametrize("damage", ["a record's timestamp", "a settings entry", "cut short", "emptied"])
def test_damage_before_a_snapshot_in_its_own_segment_reads_as_the_whole_log_reads_it(
    make_store: Callable[..., SnapshotStore], monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    """An entry of an earlier run, outside the snapshot's chain, damaged under a framing that still
    checks: an index stops at it, so the whole log refuses the snapshot as damage; so does a fresh
    handle, which checks every entry before the snapshot as an index would (no state, no crash)."""
    store = make_store(max_chain=3)
    writer = store.session("s", max_snapshots=UNLIMITED)
    ids = [writer.commit({"turn": t, "log": PAD[: 5 + t]}, label=f"t{t}", turn=t).id for t in range(3)]
    writer.set_max_snapshots(UNLIMITED - 1)  # a settings entry in the first run; evicts nothing
    ids += [writer.commit({"turn": t, "log": PAD[: 5 + t]}, label=f"t{t}", turn=t).id for t in range(3, 12)]
    monkeypatch.setattr(keyframes, "SMALL_SEGMENT_BYTES", 0)  # then segments of their own
    ids += [writer.commit({"turn": t, "log": PAD[: 5 + t]}, label=f"t{t}", turn=t).id for t in range(12, 20)]
    first = writer._log.commits[ids[0]].segment
    assert writer._log.commits[ids[9]].segment == first != writer._log.commits[ids[12]].segment
    stored = list(store.backend.read_segment(writer.key, first).entries)
    turn_1 = writer._log.commits[ids[1]].ordinal
    if damage == "a record's timestamp":
        rewrite_entry(store, writer.key, first, turn_1, 58)  # its top byte: past the year 9999
    elif damage == "a settings entry":
        settings = next(i for i, data in enumerate(stored) if i > 0 and data[0] == entries.META)
        rewrite_entry(store, writer.key, first, settings, 1)  # '{' no more: not JSON
    else:
        stored[turn_1] = stored[turn_1][: 50 if damage == "cut short" else 0]
        store.backend.replace_segment(writer.key, first, stored)
    whole = whole_log_answers(make_store, ids)
    assert whole[ids[9]] == ("CorruptObjectError", "damage")
    for sid in ids[:-1]:
        assert fresh_reader_answer(make_store, sid)[0] == whole[sid], f"turn {ids.index(sid)}"


def test_writers_taking_turns_read_as_the_whole_log_reads_them(
    make_store: Callable[..., SnapshotStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two handles committing in turn store deltas against their own last state (a base other
    than the parent, format.md §4.6 flag 8), rolling back, tagging and settling: every id reads
    on a fresh handle as on the whole log, and a snapshot named only as a base is found by it."""
    monkeypatch.setattr(keyframes, "SMALL_SEGMENT_BYTES", 0)
    rng = random.Random(5)
    first = make_store(max_chain=5, max_runs=2)
    second = make_store(max_chain=5, max_runs=2)
    writers = [first.session("s", max_snapshots=UNLIMITED), second.session("s")]
    ids: list[str] = []
    for step in range(60):
        writer = writers[step % 2 if step < 40 else rng.randint(0, 1)]
        action = rng.random()
        if action < 0.8 or not ids:
            state = {"turn": step, "log": PAD[: rng.randint(3, 40)], "by": step % 2}
            ids.append(writer.commit(state, label=f"t{step}", turn=step).id)
        elif action < 0.9:
            writer.rollback(rng.choice(writer.snapshot_ids()))
        elif action < 0.95:
            writer.tag(rng.choice(writer.snapshot_ids()), "kept")
        else:
            writer.settle(min_cost=1.0)
    based = sum(c.base not in (None, c.record.parent) for c in writers[0]._log.commits.values())
    assert based > 5  # deltas against a base other than the parent were written
    whole = whole_log_answers(make_store, ids)
    ways = [fresh_reader_answer(make_store, sid) for sid in ids]
    assert [found for found, _how in ways] == [whole[sid] for sid in ids]
    assert sum(how == "alone" for _found, how in ways) > 20


def test_a_snapshot_that_is_only_a_base_is_found_by_it(
    make_store: Callable[..., SnapshotStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot no commit names as its parent (the head was rolled back under its writer) but a
    later commit of that writer was stored against (flag 8) is found through that base."""
    writer_store, other_store = make_store(max_chain=4), make_store(max_chain=4)
    writer, other = writer_store.session("s", max_snapshots=UNLIMITED), other_store.session("s")
    ids = [writer.commit({"turn": t, "log": PAD[: 5 + t]}, turn=t).id for t in range(3)]
    only_a_base = writer.commit({"turn": 3, "log": PAD[:8]}, turn=3).id
    other.rollback(ids[1])  # the head leaves it: the next commit's parent is ids[1]
    after = writer.commit({"turn": 4, "log": PAD[:9]}, turn=4)
    assert after.parent == ids[1] and writer._log.commits[after.id].base == only_a_base
    monkeypatch.setattr(keyframes, "SMALL_SEGMENT_BYTES", 0)  # the next keyframe starts a segment
    for turn in range(5, 12):
        writer.commit({"turn": turn, "log": PAD[: 5 + turn]}, turn=turn)
    assert writer._log.commits[only_a_base].segment < max(writer._log.segments)
    found, how = fresh_reader_answer(make_store, only_a_base)
    assert found == ("state", canonical({"turn": 3, "log": PAD[:8]})) and how == "alone"


def test_a_snapshot_late_in_a_long_segment_decodes_its_chain_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by its child's record, the snapshot and its chain back to their keyframe are the
    only entries decoded: not the segment's others, nor those of the segments after it."""
    with SnapshotStore.open(tmp_path / "store", max_chain=8) as store:
        writer = store.session("s", max_snapshots=UNLIMITED)
        ids = [writer.commit({"turn": t, "log": PAD[: t % 40]}, turn=t).id for t in range(100)]
        monkeypatch.setattr(keyframes, "SMALL_SEGMENT_BYTES", 0)  # the next keyframe starts a segment
        ids += [writer.commit({"turn": t, "log": PAD[: t % 40]}, turn=t).id for t in range(100, 110)]
        first = [sid for sid in ids if writer._log.commits[sid].segment == writer._log.commits[ids[0]].segment]
        assert 90 <= len(first) < len(ids)  # several runs in one long segment, then a newer one
        late = len(first) - 3
    decoded: list[int] = []
    decode = entries.decode_entry

    def counted(*args: Any, **kwargs: Any) -> Any:
        decoded.append(1)
        return decode(*args, **kwargs)

    for module in (own_segment, history):
        monkeypatch.setattr(module, "decode_entry", counted)
    with SnapshotStore.open(tmp_path / "store") as store:
        reader = store.session("s")
        assert reader.head is not None
        decoded.clear()
        assert reader.state(ids[late]) == {"turn": late, "log": PAD[: late % 40]}
        assert reader._log.partial and ids[late] not in reader._log.commits
        assert 1 <= len(decoded) <= 9  # the snapshot and its chain of at most 8 deltas
