"""A handle that refreshes after every change another handle makes indexes only what was
appended; its index must always equal a fresh handle's full index, through commits, keyframes,
new segments, rollbacks, tags, limit changes, drops and squashes, on every backend."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import CountingBackend, canonical
from snapstore import SnapshotNotFound, SnapshotStore, keyframes
from snapstore.backends.base import SegmentRead
from snapstore.history import SessionLog
from snapstore.session import Session

PAD = [f"line {i} of the campaign log" for i in range(40)]


def index_of(log: SessionLog) -> dict[str, Any]:
    """Everything a refresh derives from the segments, in a form two logs can be compared by."""
    return {
        "order": list(log.order),
        "commits": {sid: (c.segment, c.ordinal, c.mode, c.record) for sid, c in log.commits.items()},
        "head": log.head,
        "tags": dict(log.tags),
        "settings": dict(log.settings),
        "segments": {n: (s.version, s.end, len(s.entries)) for n, s in log.segments.items()},
        "retained": log.retained(),
    }


def fresh_index(store: SnapshotStore, name: str) -> dict[str, Any]:
    log = SessionLog(store.backend, store.session(name).key, name)
    log.refresh()
    return index_of(log)


def test_an_incrementally_refreshed_index_equals_a_full_one(make_store: Callable[..., SnapshotStore]) -> None:
    rng = random.Random(20261204)
    # small segments and short chains so that keyframes, new segments, drops and squashes all happen
    writer_store = make_store(max_chain=4, max_runs=2)
    reader_store = SnapshotStore(writer_store.backend) if make_store.kind == "memory" else make_store()  # type: ignore[attr-defined]
    writer = writer_store.session("s", max_snapshots=6)
    reader = reader_store.session("s")
    reader_log: SessionLog = reader._log
    ids: list[str] = []
    incremental = 0
    for step in range(160):
        action = rng.random()
        if action < 0.7 or not ids:
            state = {"turn": step, "log": PAD[: rng.randint(5, 40)], "hp": rng.randint(0, 99)}
            ids.append(writer.commit(state, label=f"t{step}", turn=step).id)
        elif action < 0.8:
            retained = writer.snapshot_ids()
            writer.rollback(rng.choice(retained))
        elif action < 0.88:
            retained = writer.snapshot_ids()
            writer.tag(rng.choice(retained), f"tag{rng.randint(0, 3)}")
        elif action < 0.92 and writer.tags:
            writer.untag(rng.choice(sorted(writer.tags)))
        elif action < 0.96:
            writer.set_max_snapshots(rng.randint(3, 9))
        else:
            writer.clear_old_snapshots()
        before = reader_log._reindex
        full = {"count": 0}

        def counting_reindex(original: Callable[[], None] = before, counter: dict[str, int] = full) -> None:
            counter["count"] += 1
            original()

        reader_log._reindex = counting_reindex  # type: ignore[method-assign]
        try:
            reader_log.refresh()
        finally:
            del reader_log._reindex
        incremental += full["count"] == 0
        assert index_of(reader_log) == fresh_index(writer_store, "s"), f"step {step}"
        head = reader.head
        assert head is not None and canonical(reader.state(head.id)) == canonical(writer.state(head.id))
    # most refreshes after a plain commit must not have indexed the whole session again
    assert incremental > 60


def test_a_log_read_from_its_newest_segment_agrees_with_the_whole_log(
    make_store: Callable[..., SnapshotStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``refresh(tail=True)`` on a log never read indexes the newest segment alone when that settles
    the head; whatever it indexes agrees with the whole log, and a full refresh after it gives
    exactly the whole log's index. Rollbacks to older segments, tags and reclaims included."""
    monkeypatch.setattr(keyframes, "SMALL_SEGMENT_BYTES", 0)  # small states start segments too
    rng = random.Random(20261205)
    writer_store = make_store(max_chain=3, max_runs=1)
    writer = writer_store.session("s", max_snapshots=8)
    partial = reached = 0
    for step in range(120):
        action = rng.random()
        retained = writer.snapshot_ids() if step else []
        if action < 0.7 or not retained:
            state = {"turn": step, "log": PAD[: rng.randint(5, 40)], "hp": rng.randint(0, 99)}
            writer.commit(state, label=f"t{step}", turn=step)
        elif action < 0.8:
            writer.rollback(rng.choice(retained))  # often into an older segment
        elif action < 0.88:
            writer.tag(rng.choice(retained), f"tag{rng.randint(0, 3)}")
        elif action < 0.94:
            writer.set_max_snapshots(rng.randint(3, 9))
        else:
            writer.clear_old_snapshots()
        whole = fresh_index(writer_store, "s")
        log = SessionLog(writer_store.backend, writer.key, "s")
        log.refresh(tail=True)
        assert log.head == whole["head"], f"step {step}"
        if log.partial:
            partial += 1
            assert len(log.segments) < len(whole["segments"])
            assert log.settings == whole["settings"]
            commits = {sid: (c.segment, c.ordinal, c.mode, c.record) for sid, c in log.commits.items()}
            assert commits == {sid: whole["commits"][sid] for sid in commits}
            known_tags = {name: sid for name, sid in log.tags.items() if sid in log.commits}
            assert known_tags == {name: sid for name, sid in whole["tags"].items() if sid in log.commits}
            assert log.retained() == [sid for sid in whole["retained"] if sid in log.commits]
        # an older snapshot (retained, evicted or the head) is read from the segments down to its own
        older = rng.choice(whole["order"])
        log.reach(older)
        assert older in log.commits
        if log.partial:
            reached += 1
            assert log.head == whole["head"] and log.settings == whole["settings"]
            commits = {sid: (c.segment, c.ordinal, c.mode, c.record) for sid, c in log.commits.items()}
            assert commits == {sid: whole["commits"][sid] for sid in commits}
            assert log.retained() == [sid for sid in whole["retained"] if sid in log.commits], f"step {step}"
        log.refresh()
        assert not log.partial
        assert index_of(log) == whole, f"step {step}"
    assert partial > 40  # the newest segment alone settled most reopenings
    assert reached > 20  # and reading an older snapshot left the oldest segments unread in many


def test_reopening_a_session_for_its_head_reads_its_newest_segment_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyframes, "SMALL_SEGMENT_BYTES", 0)
    with SnapshotStore.open(tmp_path / "store", max_chain=3, max_runs=1) as store:
        # a limit retention could reach: an older snapshot is then found by indexing down to it
        # (with a limit no count of commits reaches, it is read from its own segment alone:
        # tests/test_own_segment.py)
        writer = store.session("s", max_snapshots=40)
        for turn in range(30):
            writer.commit({"turn": turn, "log": PAD}, turn=turn)
        listing = [snap.id for snap in writer.snapshots()]
        head = writer.head
        assert head is not None
        expected = writer.state(head.id)
    backend = CountingBackend(tmp_path / "store")
    with SnapshotStore(backend) as store:
        reader = store.session("s")
        backend.read.clear()  # handing the session out read a checkpoint for its name: not the index
        assert reader.head == head
        assert canonical(reader.state(head.id)) == canonical(expected)
        newest = max(backend.read)
        assert set(backend.read) == {newest} and newest >= 5  # one segment of several
        older = listing[-8]  # in an older segment: read from the newest segment down to its own
        assert reader.state(older)["turn"] == 22
        holding = reader._log.commits[older].segment
        # (the indexed segments double each round: a few past its own, not the whole log)
        assert 1 < holding < newest and set(range(holding, newest + 1)) <= set(backend.read)
        assert min(backend.read) > 1 and len(set(backend.read)) < 2 * (newest - holding + 1)
        assert [snap.id for snap in reader.snapshots()] == listing  # a listing reads the whole log
        assert set(backend.read) == set(range(1, newest + 1))


def test_a_session_read_for_its_head_and_state_at_once_reads_its_newest_segment_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``head_state`` indexes the newest segment and rebuilds the head from the bytes that index
    read; nothing read is held afterwards, and a handle that only asks for the head holds none."""
    monkeypatch.setattr(keyframes, "SMALL_SEGMENT_BYTES", 0)
    with SnapshotStore.open(tmp_path / "store", max_chain=3, max_runs=1) as store:
        writer = store.session("s", max_snapshots=100)
        for turn in range(30):
            writer.commit({"turn": turn, "log": PAD}, turn=turn)
        head = writer.head
        assert head is not None
        expected = canonical(writer.state(head.id))
    backend = CountingBackend(tmp_path / "store")
    with SnapshotStore(backend) as store:
        reader = store.session("s")
        backend.read.clear()
        found = reader.head_state()
        assert found is not None and found[0] == head and canonical(found[1]) == expected
        assert len(backend.read) == 1 and backend.read[0] >= 5  # the newest of several, once
        assert reader._log._last_read is None
        assert reader.head_state() is not None and len(backend.read) == 2  # a rebuild reads again
        only_head = SnapshotStore(backend).session("s")
        assert only_head.head == head and only_head._log._last_read is None
    with SnapshotStore.open(tmp_path / "empty") as store:
        assert store.session("none").head_state() is None


def test_a_rebuild_reads_the_segment_again_when_it_grew_since_the_index_read_it(tmp_path: Path) -> None:
    """The bytes a refresh read whole serve the rebuild that follows only while they are what the
    index holds: after another handle appended, the rebuild reads the segment again and every
    state, the new ones too, comes back as committed."""
    with SnapshotStore.open(tmp_path / "store", max_chain=50) as store:
        writer = store.session("s", max_snapshots=100)
        ids = [writer.commit({"turn": turn, "log": PAD[:turn]}, turn=turn).id for turn in range(5)]
    backend = CountingBackend(tmp_path / "store")
    with SnapshotStore(backend) as store, SnapshotStore.open(tmp_path / "store", max_chain=50) as other:
        reader = store.session("s")
        with reader._log.reading_once():
            reader._log.refresh(tail=True)  # the segment read whole, its bytes noted
            more = [other.session("s").commit({"turn": t, "log": PAD[:t]}, turn=t).id for t in range(5, 8)]
            backend.read.clear()
            assert reader.state(more[-1]) == {"turn": 7, "log": PAD[:7]}
            segment = reader._log.commits[more[-1]].segment
            assert backend.read.count(segment) >= 2  # the appended entries, then the whole segment again
        assert reader.state(ids[-1]) == {"turn": 4, "log": PAD[:4]}


def test_an_older_id_reads_each_segment_once_and_not_far_past_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading back from the newest segment, the segments indexed double each round: a snapshot k
    segments back costs fewer than 2(k + 1) segments read, each once (its own may be read again
    for the payloads), where the whole log would be many more; the oldest, and an id stored nowhere, read
    the whole log, each segment once."""
    monkeypatch.setattr(keyframes, "SMALL_SEGMENT_BYTES", 0)
    with SnapshotStore.open(tmp_path / "store", max_chain=3, max_runs=1) as store:
        writer = store.session("s", max_snapshots=200)  # one retention could reach: indexed down to it
        ids = [writer.commit({"turn": turn, "log": PAD}, turn=turn).id for turn in range(120)]
    backend = CountingBackend(tmp_path / "store")
    whole = SessionLog(backend, SnapshotStore(backend).session("s").key, "s")
    whole.refresh()
    segment_of = {sid: whole.commits[sid].segment for sid in ids}
    newest = max(segment_of.values())
    assert newest >= 25
    for turn in (112, 100, 90, 70, 40):
        wanted = ids[turn]
        back = newest - segment_of[wanted]
        reader = SnapshotStore(backend).session("s")
        backend.read.clear()
        assert reader.state(wanted)["turn"] == turn
        indexed = sorted(set(backend.read))
        again = sorted(backend.read)
        for number in indexed:
            again.remove(number)
        assert again in ([], [segment_of[wanted]]), f"turn {turn}: read again {again}"
        assert indexed[-1] == newest and segment_of[wanted] in indexed
        assert len(indexed) < 2 * (back + 1), f"turn {turn}: {len(indexed)} segments read for {back} back"
    for wanted in (ids[0], "0123456789abcdef" * 2):  # the oldest, and an id stored nowhere
        reader = SnapshotStore(backend).session("s")
        backend.read.clear()
        try:
            assert reader.state(wanted)["turn"] == 0
            rebuilt = [1]  # the oldest's segment, read again for its payloads
        except SnapshotNotFound:
            assert wanted not in ids
            rebuilt = []
        assert not reader._log.partial
        assert sorted(backend.read) == sorted([*range(1, newest + 1), *rebuilt])  # each indexed once


def test_a_head_read_while_another_thread_indexes_the_whole_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads share a store's session: one reading the head (its newest segment indexed alone)
    must not see the index another thread's listing empties and fills again. The interleaving is
    forced: the head read pauses where it reads the index, the listing pauses inside indexing."""
    monkeypatch.setattr(keyframes, "SMALL_SEGMENT_BYTES", 0)
    with SnapshotStore.open(tmp_path / "store", max_chain=3, max_runs=1) as store:
        writer = store.session("s", max_snapshots=100)
        for turn in range(12):
            writer.commit({"turn": turn, "log": PAD}, turn=turn)
    head_paused, listing_inside = threading.Event(), threading.Event()
    make_snapshot, index_segment = Session._snapshot, SessionLog._index_segment

    def paused_snapshot(self: Session, log: SessionLog, sid: str) -> Any:
        if threading.current_thread().name == "head":
            head_paused.set()
            listing_inside.wait(0.5)  # with the session's lock held, the listing never gets inside
        return make_snapshot(self, log, sid)

    def paused_index(self: SessionLog, number: int, segment: Any, start: int) -> None:
        index_segment(self, number, segment, start)
        if threading.current_thread().name == "listing" and not listing_inside.is_set():
            listing_inside.set()
            time.sleep(0.2)  # the index half made

    monkeypatch.setattr(Session, "_snapshot", paused_snapshot)
    monkeypatch.setattr(SessionLog, "_index_segment", paused_index)
    found: dict[str, Any] = {}
    with SnapshotStore.open(tmp_path / "store") as store:
        sess = store.session("s")

        def read(name: str, action: Callable[[], Any]) -> None:
            try:
                found[name] = action()
            except Exception as exc:  # what the other thread must never see
                found[name] = exc

        head = threading.Thread(target=read, args=("head", lambda: sess.head), name="head")
        head.start()
        assert head_paused.wait(5)
        listing = threading.Thread(target=read, args=("listing", sess.snapshot_ids), name="listing")
        listing.start()
        head.join(10)
        listing.join(10)
    assert not isinstance(found["head"], Exception), found["head"]
    assert found["head"].turn == 11 and len(found["listing"]) == 12


def test_rebuilding_the_head_then_an_older_snapshot_decodes_their_segment_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within ``keeping_decoded`` a rebuild keeps what it decoded of its segment for the next
    rebuild of an earlier snapshot there; the states are the same, also when another handle
    rewrote the segment in between (a squash), and what is kept is let go with the block."""
    with SnapshotStore.open(tmp_path / "store", max_chain=4) as store:
        writer = store.session("s", max_snapshots=100)
        ids = [writer.commit({"turn": turn, "log": PAD[: 10 + turn % 30]}, turn=turn).id for turn in range(40)]
        expected = {sid: canonical(writer.state(sid)) for sid in ids}
    backend = CountingBackend(tmp_path / "store")
    with SnapshotStore(backend) as store:
        reader = store.session("s")
        assert reader.snapshot_ids() == ids  # the index read: what follows counts rebuilds' reads
        with reader.keeping_decoded():
            backend.read.clear()
            assert canonical(reader.state(ids[-1])) == expected[ids[-1]]
            assert len(backend.read) == 1
            for sid in (ids[-5], ids[-20], ids[0]):
                assert canonical(reader.state(sid)) == expected[sid]
            assert len(backend.read) == 1  # one segment, decoded once
        assert reader._log._kept is None  # let go when the block ends
        backend.read.clear()
        reader.state(ids[-1])
        reader.state(ids[-5])
        assert len(backend.read) == 2  # outside the block each rebuild decodes its segment
        with reader.keeping_decoded():
            reader.state(ids[-1])
            with SnapshotStore.open(tmp_path / "store") as other:  # evicts and squashes the segment
                other.session("s").set_max_snapshots(10)
            assert canonical(reader.state(ids[-5])) == expected[ids[-5]]
            with pytest.raises(SnapshotNotFound):
                reader.state(ids[0])


def test_a_rebuild_that_met_a_squash_keeps_nothing(tmp_path: Path) -> None:
    """Another handle squashes the segment between a reader's refresh and its read of it: the
    reader decodes the new file against its old index and the rebuild fails and is retried; what
    it decoded then is not kept, and every later read inside the block gives the stored state."""
    with SnapshotStore.open(tmp_path / "store", max_chain=4) as store:
        writer = store.session("s", max_snapshots=100)
        ids = [writer.commit({"turn": turn, "log": PAD[: 10 + turn % 30]}, turn=turn).id for turn in range(40)]
        expected = {sid: canonical(writer.state(sid)) for sid in ids}

    class SquashedUnderTheReader(CountingBackend):
        armed = False

        def read_segment(self, key: str, segment: int, start: int = 0) -> SegmentRead:
            if self.armed and start == 0:
                self.armed = False
                with SnapshotStore.open(tmp_path / "store") as other:
                    other.session("s").set_max_snapshots(10)
            return super().read_segment(key, segment, start)

    backend = SquashedUnderTheReader(tmp_path / "store")
    with SnapshotStore(backend) as store:
        reader = store.session("s")
        assert reader.snapshot_ids() == ids
        backend.armed = True  # the next read of a whole segment meets the squash
        with reader.keeping_decoded():
            with pytest.raises(SnapshotNotFound):
                reader.state(ids[5])  # squashed away while it was being read
            assert reader._log._kept is None
            for sid in ids[-10:]:
                assert canonical(reader.state(sid)) == expected[sid]
