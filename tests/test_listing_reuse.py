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

import os
import time
from pathlib import Path

from snapstore import SnapshotStore
from snapstore.backends import _directory

AGED = _directory.LISTING_TRUSTED_AFTER_NS / 1e9 * 2


def _aged_look(store: SnapshotStore, key: str) -> None:
    """Let the folder's times age past the margin, then list: the next look may reuse this listing."""
    time.sleep(AGED)
    store.backend.segments(key)
    assert store.backend._listings[key].trusted  # the listing is kept: the next look reuses it


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


def test_the_lock_holder_reuses_its_listing_only_for_the_same_files(tmp_path: Path, monkeypatch: object) -> None:
    """The holder lists the folder, and keeps what it knew of each segment when the folder's times are
    unchanged and the listing names the same files (same names, same inode numbers): only the last
    can have grown. Here the folder's times are made to look unchanged after each change another
    handle makes, and what the holder sees under the lock must still be what a fresh handle lists."""
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    reused: list[bool] = []
    real = _directory._same_files

    def spy(*args: object) -> object:
        found = real(*args)  # type: ignore[arg-type]
        reused.append(found is not None)
        return found

    monkeypatch.setattr(_directory, "_same_files", spy)
    writer_store = SnapshotStore.open(tmp_path / "store", max_runs=1, max_chain=2)
    writer = writer_store.session("s", max_snapshots=100)
    holder_store = SnapshotStore.open(tmp_path / "store")
    key, backend = writer.key, writer_store.backend
    for turn in range(7):  # three segments
        writer.commit(_state(turn))

    def numbers() -> list[int]:
        return [info.segment for info in backend.segments(key)]

    def append() -> None:
        writer.commit(_state(50))

    def new_segment() -> None:
        before = numbers()
        while numbers() == before:
            writer.commit(_state(60 + len(numbers())))

    def drop_oldest() -> None:
        with backend.lock_session(key, 5.0):
            backend.drop_segments(key, numbers()[:1])

    def write_again() -> None:  # a sealed segment rewritten, as a squash rewrites one: a new file
        with backend.lock_session(key, 5.0):
            first = numbers()[0]
            backend.replace_segment(key, first, backend.read_segment(key, first).entries)

    for change in (append, new_segment, write_again, drop_oldest, append, new_segment, write_again):
        _aged_look(holder_store, key)
        before = holder_store.backend._listings[key]
        change()
        folder = os.stat(tmp_path / "store" / "sessions" / key)
        holder_store.backend._listings[key] = _directory._Listing(_directory._folder_token(folder), before.segments)
        reused.clear()
        with holder_store.backend.lock_session(key, 5.0):
            held = holder_store.backend.segments(key)
        fresh_store = SnapshotStore.open(tmp_path / "store")
        assert held == fresh_store.backend.segments(key), change.__name__
        fresh_store.close()
        assert reused == [change is append], change.__name__  # only an append leaves the same files
    writer_store.close()
    holder_store.close()
