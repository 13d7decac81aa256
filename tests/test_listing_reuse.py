"""A directory store reuses a session's last listing while the folder is unchanged, and misses nothing.

Every refresh lists the session's segments; a writer among others refreshes on every commit.
While the session folder's times are unchanged (and old enough that a change made during the
listing would have moved them) the backend reads each known segment's size again with ``stat``
instead of listing the folder and re-reading headers. These tests let the folder's times age
past that margin before each look, so the reuse is what runs, and check that a second handle
still sees every kind of change: appends, new segments, segments retention drops or rewrites,
and a session emptied and written again (where a new file may get a freed inode's number).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

from snapstore import SnapshotStore
from snapstore.backends import _directory

AGED = _directory.LISTING_TRUSTED_AFTER_NS / 1e9 * 2


def _aged_look(store: SnapshotStore, key: str) -> None:
    """Let the folder's times age past the margin, then list: the next look may reuse this listing."""
    time.sleep(AGED)
    store.backend.segments(key)
    assert key in store.backend._listings  # the listing is kept: the next look reuses it


def _state(turn: int) -> dict[str, object]:
    # 300 kB: past the size that lets small states share a segment, so each keyframe starts one
    return {"turn": turn, "log": [f"line {i}" for i in range(turn % 7)], "body": "x" * 300_000}


def test_a_reader_reusing_its_listing_sees_appends_new_segments_and_reclaimed_ones(tmp_path: Path) -> None:
    # one run per segment and chains of two: a new segment every three commits
    writer_store = SnapshotStore.open(tmp_path / "store", max_runs=1, max_chain=2)
    writer = writer_store.session("s", max_snapshots=4)
    reader_store = SnapshotStore.open(tmp_path / "store")
    reader = reader_store.session("s")
    key = writer.key
    for turn in range(14):
        writer.commit(_state(turn), label=f"turn {turn}")
        _aged_look(reader_store, key)
        reader_store.backend.segments(key)  # reused, as the reader's refresh below will be
        assert reader.snapshot_ids() == writer.snapshot_ids()
        assert reader.head is not None and reader.head.id == writer.head.id  # type: ignore[union-attr]
        assert reader.state(reader.head.id) == _state(turn)
        # and a commit from the reader, against what it reused, lands after the writer's
        if turn % 5 == 4:
            mine = reader.commit(_state(100 + turn), label="reader")
            assert writer.head is not None and writer.head.id == mine.id
            assert writer.state(mine.id) == _state(100 + turn)
    infos = [i.segment for i in reader_store.backend.segments(key)]
    assert infos == [i.segment for i in writer_store.backend.segments(key)]  # the oldest dropped by retention
    assert infos[0] > 1 and len(infos) <= 3
    writer_store.close()
    reader_store.close()


def test_a_session_emptied_and_written_again_is_read_as_the_new_files(tmp_path: Path) -> None:
    writer_store = SnapshotStore.open(tmp_path / "store", max_runs=1, max_chain=2)
    writer = writer_store.session("s", max_snapshots=3)
    reader_store = SnapshotStore.open(tmp_path / "store")
    reader = reader_store.session("s")
    for turn in range(7):
        writer.commit(_state(turn))
    _aged_look(reader_store, writer.key)
    assert reader.snapshot_ids() == writer.snapshot_ids()
    # the session deleted and made again: new files, whose inode numbers may be those just freed
    writer_store.delete_session("s")
    writer = writer_store.session("s", max_snapshots=3)
    fresh = [writer.commit(_state(50 + turn)).id for turn in range(5)]
    assert reader.snapshot_ids() == fresh[-3:] == writer.snapshot_ids()
    assert reader.state(fresh[-1]) == _state(54)
    writer_store.close()
    reader_store.close()


def test_a_segment_after_the_last_is_found_even_when_the_folder_times_did_not_move(tmp_path: Path) -> None:
    """A file system whose folder times lag: the listing is reused as if the folder were unchanged,
    and the segment after the last is still found by its name (a writer must never append behind it)."""
    writer_store = SnapshotStore.open(tmp_path / "store", max_runs=1, max_chain=2)
    writer = writer_store.session("s", max_snapshots=100)
    reader_store = SnapshotStore.open(tmp_path / "store")
    reader = reader_store.session("s")
    writer.commit(_state(0))
    _aged_look(reader_store, writer.key)
    assert reader.snapshot_ids() == writer.snapshot_ids()
    for turn in range(1, 4):  # the fourth commit (after a chain of two) starts segment 2
        writer.commit(_state(turn))
    key = writer.key
    known = reader_store.backend._listings[key]
    folder = os.stat(tmp_path / "store" / "sessions" / key)
    reader_store.backend._listings[key] = _directory._Listing(_directory._folder_token(folder), known.segments)
    assert [i.segment for i in reader_store.backend.segments(key)] == [1, 2]
    assert reader.snapshot_ids() == writer.snapshot_ids()
    mine = reader.commit(_state(50))
    assert writer.head is not None and writer.head.id == mine.id and writer.state(mine.id) == _state(50)
    writer_store.close()
    reader_store.close()


def test_the_lock_holder_lists_the_folder_instead(tmp_path: Path, monkeypatch: object) -> None:
    """Under the session's lock a writer lists: a file system's cached attributes (a network one's)
    must not hide a segment it would then append behind. Other threads still reuse the listing."""
    import threading

    store = SnapshotStore.open(tmp_path / "store")
    session = store.session("s")
    session.commit({"n": 0})
    backend = store.backend
    _aged_look(store, session.key)
    reused: list[str] = []
    real = backend._listed_again

    def spy(key: str, known: object) -> object:
        reused.append(threading.current_thread().name)
        return real(key, known)  # type: ignore[arg-type]

    backend._listed_again = spy  # type: ignore[method-assign]
    backend.segments(session.key)
    assert reused == [threading.current_thread().name]
    with backend.lock_session(session.key, 1.0):
        backend.segments(session.key)  # the holder: listed
        other = threading.Thread(target=backend.segments, args=(session.key,), name="reader")
        other.start()
        other.join()
    assert reused == [threading.current_thread().name, "reader"]
    before = len(reused)
    session.commit({"n": 1})  # a commit's own refresh, under the lock, lists too
    assert reused[before:] == []
    store.close()


class _Changes:
    """What another handle does to a session's files, one kind of change per method."""

    def __init__(self, store: SnapshotStore, key: str) -> None:
        self.writer, self.backend, self.key = store.session("s"), store.backend, key

    def numbers(self) -> list[int]:
        return [info.segment for info in self.backend.segments(self.key)]

    def append(self) -> None:
        self.writer.commit(_state(50))

    def new_segment(self) -> None:
        before = self.numbers()
        while self.numbers() == before:
            self.writer.commit(_state(60 + len(self.numbers())))

    def drop_oldest(self) -> None:
        with self.backend.lock_session(self.key, 5.0):
            self.backend.drop_segments(self.key, self.numbers()[:1])

    def write_again(self) -> None:  # a sealed segment rewritten, as a squash rewrites one: a new file
        with self.backend.lock_session(self.key, 5.0):
            first = self.numbers()[0]
            self.backend.replace_segment(self.key, first, self.backend.read_segment(self.key, first).entries)


def _times_look_unchanged(store: SnapshotStore, key: str, root: Path, before: _directory._Listing) -> None:
    """Put ``before`` back as ``store``'s listing, stamped with the folder's times as they are now:
    a file system whose folder times lag, as far as the store can tell."""
    folder = os.stat(root / "sessions" / key)
    store.backend._listings[key] = _directory._Listing(_directory._folder_token(folder), before.segments)


def _three_segments(root: Path) -> tuple[SnapshotStore, str]:
    writer_store = SnapshotStore.open(root, max_runs=1, max_chain=2)
    writer = writer_store.session("s", max_snapshots=100)
    for turn in range(7):  # three segments
        writer.commit(_state(turn))
    return writer_store, writer.key


def test_the_lock_holder_reuses_its_listing_only_for_the_same_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder lists the folder, and keeps what it knew of each segment when the folder's times are
    unchanged and the listing names the same files (same names, same inode numbers): only the last
    can have grown. Here the folder's times are made to look unchanged after each change another
    handle makes, and what the holder sees under the lock must still be what a fresh handle lists."""
    reused: list[bool] = []
    real = _directory._same_files

    def spy(*args: object) -> object:
        found = real(*args)  # type: ignore[arg-type]
        reused.append(found is not None)
        return found

    monkeypatch.setattr(_directory, "_same_files", spy)
    root = tmp_path / "store"
    writer_store, key = _three_segments(root)
    holder_store = SnapshotStore.open(root)
    changes = _Changes(writer_store, key)
    order = (changes.append, changes.new_segment, changes.write_again, changes.drop_oldest) * 2
    for change in order[:-1]:
        _aged_look(holder_store, key)
        before = holder_store.backend._listings[key]
        change()
        _times_look_unchanged(holder_store, key, root, before)
        reused.clear()
        with holder_store.backend.lock_session(key, 5.0):
            held = holder_store.backend.segments(key)
        fresh_store = SnapshotStore.open(root)
        assert held == fresh_store.backend.segments(key), change.__name__
        fresh_store.close()
        assert reused == [change == changes.append], change.__name__  # only an append leaves the same files
    writer_store.close()
    holder_store.close()


def test_a_reader_whose_folder_times_lag_still_sees_a_segment_dropped_or_written_again(tmp_path: Path) -> None:
    """A reader's reused listing reads every known segment's inode and size again, not the last
    segment's alone: a file system whose folder times lag must not hide a drop or a rewrite."""
    root = tmp_path / "store"
    writer_store, key = _three_segments(root)
    reader_store = SnapshotStore.open(root)
    changes = _Changes(writer_store, key)
    for change in (changes.drop_oldest, changes.write_again):
        _aged_look(reader_store, key)
        before = reader_store.backend._listings[key]
        change()
        _times_look_unchanged(reader_store, key, root, before)
        fresh_store = SnapshotStore.open(root)
        assert reader_store.backend.segments(key) == fresh_store.backend.segments(key), change.__name__
        fresh_store.close()
    writer_store.close()
    reader_store.close()


def _recreated_state(who: str, turn: int) -> dict[str, object]:
    """``_state`` with a writer's name of three letters: the session written again holds files of the
    very sizes it held before, so nothing but the files' identity tells them apart."""
    return {"who": who, "turn": turn, "log": [f"line {i}" for i in range(turn % 7)], "body": "x" * 300_000}


def _inodes(folder: Path) -> dict[str, int]:
    return {n: os.stat(folder / n).st_ino for n in os.listdir(folder) if n.endswith(".seg")}


def test_the_lock_holder_sees_a_session_deleted_and_written_again(tmp_path: Path) -> None:
    """The holder lists right after the folder changed (another handle's gc removed a leftover), then
    another handle deletes the session and writes it again: on a file system that hands freed inode
    numbers out again (ext4 does, in order), the same names come back with the same inode numbers.
    On one whose times are whole seconds all this happens within one tick; here the folder's times are
    set back to what the holder saw. The holder's next commit must follow the session as it now is."""
    root = tmp_path / "store"
    holder = SnapshotStore.open(root, max_runs=1, max_chain=2)
    other = SnapshotStore.open(root, max_runs=1, max_chain=2)
    session = holder.session("s", max_snapshots=1000)
    for turn in range(10):  # segments 1-4, the 4th holding one commit
        session.commit(_recreated_state("old", turn))
    key, folder = session.key, root / "sessions" / session.key
    leftover = folder / (_directory.TMP_PREFIX + "0" * 32)  # what a rewrite a crash interrupted leaves
    leftover.write_bytes(b"")
    os.utime(leftover, (time.time() - 7200, time.time() - 7200))
    time.sleep(0.1)
    other.gc(grace_seconds=0)  # removes the leftover: the folder changes
    session.set_max_snapshots(1000)  # the holder takes the lock and lists, right after; writes nothing
    before = holder.backend._listings.get(key)
    inodes = _inodes(folder)
    other.delete_session("s")
    again = other.session("s", max_snapshots=1000)
    for turn in range(10):
        again.commit(_recreated_state("new", turn))
    head = again.head
    assert head is not None
    if _inodes(folder) != inodes:
        pytest.skip("this file system did not hand the freed inode numbers out again")
    if before is not None:  # the folder's times as the holder saw them, as within one whole second
        holder.backend._listings[key] = _directory._Listing(_directory._folder_token(os.stat(folder)), before.segments)
    mine = session.commit(_recreated_state("holder", 100))
    fresh = SnapshotStore.open(root)
    assert fresh.verify().problems == []
    assert fresh.session("s").state(mine.id) == _recreated_state("holder", 100)
    assert mine.parent == head.id
    for store in (holder, other, fresh):
        store.close()


def _small(who: str, i: int) -> dict[str, object]:
    return {"who": who, "i": i, "log": [f"{who} {k}" for k in range(i % 5)]}


def _take_turns(holder_store: SnapshotStore, other_store: SnapshotStore, root: Path) -> None:
    """Both handles commit in turn; then the holder's history is a fresh handle's, and all of it reads."""
    holder, other = holder_store.session("s"), other_store.session("s")
    for i in range(3):
        holder.commit(_small("h", 10 + i))
        other.commit(_small("w", 10 + i))
    fresh_store = SnapshotStore.open(root)
    fresh = fresh_store.session("s")
    assert [s.id for s in holder.snapshots()] == [s.id for s in fresh.snapshots()]
    for snap in fresh.snapshots():
        fresh.state(snap.id)
    assert fresh_store.verify().problems == []
    for store in (fresh_store, holder_store, other_store):
        store.close()


@pytest.mark.parametrize("leftover", [b"", b"SNPS\x02", b"\0" * 8, b"\0" * 4096])
@pytest.mark.parametrize("filler", ["other", "holder"])
def test_a_last_segment_a_crash_left_unwritten_is_written_in_place_under_a_kept_listing(
    tmp_path: Path, leftover: bytes, filler: str
) -> None:
    """A writer that crashed creating segment 2 left it empty, header-less or zero-filled; the next
    commit writes it in place (the folder does not change). The holder knew it as it was."""
    root = tmp_path / "store"
    holder_store, other_store = SnapshotStore.open(root), SnapshotStore.open(root)
    holder, other = holder_store.session("s", max_snapshots=100), other_store.session("s")
    for i in range(3):
        holder.commit(_small("h", i))
    (root / "sessions" / holder.key / _directory.segment_file(2)).write_bytes(leftover)
    time.sleep(AGED)
    holder.set_max_snapshots(100)  # the holder lists (segment 2 as the crash left it), writes nothing
    (other if filler == "other" else holder).commit(_small("fill", 0))
    _take_turns(holder_store, other_store, root)


@pytest.mark.parametrize("tail", [b"\x07\0\0", b"\xff" * 11, b"\0" * 40])
@pytest.mark.parametrize("filler", ["other", "holder"])
def test_a_torn_tail_cut_under_a_kept_listing(tmp_path: Path, tail: bytes, filler: str) -> None:
    """An append a crash interrupted left a torn tail; the next commit cuts it and appends in place."""
    root = tmp_path / "store"
    holder_store, other_store = SnapshotStore.open(root), SnapshotStore.open(root)
    holder, other = holder_store.session("s", max_snapshots=100), other_store.session("s")
    for i in range(3):
        holder.commit(_small("h", i))
    with open(root / "sessions" / holder.key / _directory.segment_file(1), "ab") as segment:
        segment.write(tail)
    time.sleep(AGED)
    holder.set_max_snapshots(100)  # the holder lists the torn segment
    (other if filler == "other" else holder).commit(_small("cut", 0))
    _take_turns(holder_store, other_store, root)


class _EntryNamedBefore:
    """A folder entry as a listing that began earlier returns it: its name, looked at now."""

    def __init__(self, name: str, folder: int) -> None:
        self.name, self._folder = name, folder

    def is_file(self, follow_symlinks: bool = True) -> bool:
        return True

    def stat(self, follow_symlinks: bool = True) -> os.stat_result:
        return os.stat(self.name, dir_fd=self._folder, follow_symlinks=follow_symlinks)

    def inode(self) -> int:
        return self.stat(follow_symlinks=False).st_ino


def test_a_listing_that_names_only_segments_dropped_meanwhile_is_taken_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder is not read at one instant: a listing can pass the place of the segment a writer then
    makes and name the ones it then drops. Each was skipped as gone, the listing named no segment,
    and a reader called a session that always had one missing ("session 'small' does not exist",
    seen once in the suite's reader beside a writer evicting on every commit)."""
    writer_store = SnapshotStore.open(tmp_path / "store", max_runs=1, max_chain=0)  # a segment a commit
    writer = writer_store.session("small", max_snapshots=1)
    writer.commit(_state(0))
    folder = tmp_path / "store" / "sessions" / writer.key
    named_before = sorted(p.name for p in folder.glob("*.seg"))
    for turn in range(1, 4):
        writer.commit(_state(turn))
    assert not set(named_before) & {p.name for p in folder.glob("*.seg")}  # all dropped, others made
    real, calls = os.scandir, []

    def listing_begun_before(path: object = ".") -> object:
        if isinstance(path, int) and not calls:
            calls.append(path)
            return contextlib.nullcontext([_EntryNamedBefore(name, path) for name in named_before])
        return real(path)  # type: ignore[arg-type]

    reader = SnapshotStore.open(tmp_path / "store").session("small")
    monkeypatch.setattr(os, "scandir", listing_begun_before)
    assert [s.turn for s in reader.snapshots()] == [None] and calls
    assert reader.state(reader.head.id)["turn"] == 3
