"""What a replace of several sessions at once leaves on a directory store when it is stopped, and
what the next handle makes of it (docs/format.md §4.2, "Several sessions replaced together").

A store with a record of a group left part way must always open, a record or a file it cannot use
must be left alone, and a writer must never commit to a session the group will still replace.
Found by a review of the second build; tests/test_langgraph_rewrite.py kills a LangGraph rewrite
at each step of it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from snapstore import SnapshotStore
from snapstore.backends.base import is_staged
from snapstore.errors import BackendError
from snapstore.store import session_key

_KILLED_AFTER_FIRST_EXCHANGE = textwrap.dedent(
    """
    import os, signal, sys
    from snapstore import SnapshotStore
    from snapstore.backends import _directory

    real = _directory.DirectoryBackend._swap_in_session

    def swap(self, staged, key, resuming=False):
        real(self, staged, key, resuming)
        os.kill(os.getpid(), signal.SIGKILL)

    _directory.DirectoryBackend._swap_in_session = swap
    with SnapshotStore.open(sys.argv[1]) as store:
        with store.replacing_sessions({name: None for name in sys.argv[2:]}) as staged:
            for name, sess in staged.items():
                sess.commit({"by": "the group", "name": name})
    """
)


def _stores_with_a_group_left_after_one_exchange(root: Path, group: list[str]) -> None:
    with SnapshotStore.open(root) as store:
        for name in ("a", "b", "c"):
            store.session(name).commit({"by": "the first commit", "name": name})
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_FIRST_EXCHANGE, str(root), *group], capture_output=True, timeout=120
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    assert list((root / "replacing").glob("*.json"))


def _group_left_with_its_staged_history_emptied(root: Path) -> Path:
    """A group over b and c left after b's exchange, whose staged history still to put in place
    for c was then emptied (gc of a release that knew no records): its folder."""
    _stores_with_a_group_left_after_one_exchange(root, ["b", "c"])
    [waiting] = [p for p in (root / "sessions").iterdir() if is_staged(p.name) and (p / "replacing").exists()]
    for segment in waiting.glob("*.seg"):
        segment.unlink()
    return waiting


def _heads(store: SnapshotStore) -> dict[str, str]:
    out = {}
    for name in ("a", "b", "c"):
        sess = store.session(name)
        out[name] = sess.state(sess.head.id)["by"]  # type: ignore[union-attr]
    return out


def test_a_group_left_part_way_is_finished_by_the_next_handle_opened(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _stores_with_a_group_left_after_one_exchange(root, ["b", "c"])
    with SnapshotStore.open(root) as store:
        assert _heads(store) == {"a": "the first commit", "b": "the group", "c": "the group"}
        assert store.verify().ok and not list((root / "replacing").glob("*"))


def test_a_replace_over_a_session_of_a_group_left_part_way_lands_after_the_group(tmp_path: Path) -> None:
    """A handle opened before the kill replaces {a, b} while a group over {b, c} is left part way.
    Taking b's lock while it holds a's, it could not wait for c's in key order, and went on: the
    group, finished later, put its older history over the replace just acknowledged. It now
    finishes the group first (c's lock is free) and its own replace lands on top."""
    root = tmp_path / "store"
    with SnapshotStore.open(root) as early:
        _stores_with_a_group_left_after_one_exchange(root, ["b", "c"])
        with early.replacing_sessions({"a": None, "b": None}) as staged:
            for name, sess in staged.items():
                sess.commit({"by": "the later replace", "name": name})
        assert _heads(early) == {"a": "the later replace", "b": "the later replace", "c": "the group"}
    with SnapshotStore.open(root) as reopened:
        assert _heads(reopened) == {"a": "the later replace", "b": "the later replace", "c": "the group"}
        assert reopened.verify().ok and not list((root / "replacing").glob("*"))


@pytest.mark.parametrize(
    "damage",
    ["a key refused", "not JSON", "no pairs", "a session as the staged side"],
)
def test_a_record_that_cannot_be_used_is_left_alone_and_the_store_opens(tmp_path: Path, damage: str) -> None:
    """A record that parses but names a key the key check refuses made every open and every lock
    of the store raise (one damaged byte: a review found it). Any record that does not read as one
    is left as it is, and so is every session."""
    root = tmp_path / "store"
    _stores_with_a_group_left_after_one_exchange(root, ["b", "c"])
    [record] = (root / "replacing").glob("*.json")
    pairs = json.loads(record.read_text())["pairs"]
    record.write_text(
        {
            "a key refused": json.dumps({"pairs": [[pairs[0][0], "b!2"], pairs[1]]}),
            "not JSON": '{"pairs": [[',
            "no pairs": json.dumps({"pairs": []}),
            "a session as the staged side": json.dumps({"pairs": [[session_key("a"), session_key("b")]]}),
        }[damage]
    )
    with SnapshotStore.open(root) as store:
        store.session("a").commit({"by": "a later commit"})  # an unrelated session writes on
        assert store.session("a").state(store.session("a").head.id) == {"by": "a later commit"}  # type: ignore[union-attr]
        assert store.session("b").head is not None and store.session("c").head is not None
    assert record.exists()


def test_a_replacing_entry_that_is_not_a_folder_is_foreign_and_the_store_opens(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with SnapshotStore.open(root) as store:
        store.session("a").commit({"turn": 1})
    (root / "replacing").write_bytes(b"put here by hand")
    with SnapshotStore.open(root) as store:
        store.session("a").commit({"turn": 2})
        assert store.verify().foreign == ["replacing"]


def test_a_group_whose_staged_history_is_gone_after_an_exchange_refuses_writers_by_name(tmp_path: Path) -> None:
    """gc of a release that knew no records empties the staged folder still to be put in place, a
    week on, after another session of the group was replaced: nothing makes the group whole. The
    store opens, and a commit to the sessions is refused naming the record and what is gone, where
    the marks and the record were dropped and the sessions left mixed without a word."""
    root = tmp_path / "store"
    _group_left_with_its_staged_history_emptied(root)
    with SnapshotStore.open(root) as store:
        for name in ("b", "c"):
            refused = pytest.raises(BackendError, match=r"cannot be finished: its staged history \S+ is gone")
            with refused:
                store.session(name).commit({"by": "a later commit"})
        assert store.session("a").commit({"by": "a later commit"}) is not None
        assert list((root / "replacing").glob("*.json"))


def test_a_temporary_file_a_killed_record_write_left_goes_at_gc(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with SnapshotStore.open(root) as store:
        store.session("a").commit({"turn": 1})
    (root / "replacing").mkdir()
    left = root / "replacing" / ".tmp-0123456789abcdef0123456789abcdef"
    left.write_bytes(b'{"pairs":[')
    old = time.time() - 7200
    os.utime(left, (old, old))
    with SnapshotStore.open(root) as store:
        assert store.gc().temporary_files_removed >= 1
    assert not left.exists()


def test_a_writer_that_finished_a_group_looks_again_once_it_has_its_lock_back(tmp_path: Path) -> None:
    """A writer finishing a group left part way lets go of its session's lock to take the group's in
    key order, and takes it back. Another process that took the lock in between and left a group of
    its own part way (killed) had the writer commit into a session that group still replaces, and
    the commit was lost when the group was finished (found by a review). The writer now looks again."""
    from snapstore.backends._directory import DirectoryBackend

    root = tmp_path / "store"
    _stores_with_a_group_left_after_one_exchange(root, ["b", "c"])
    handle = SnapshotStore.open(root)  # finishes that group as it opens
    again = subprocess.run(  # and another, left while the handle is open, is for its next commit
        [sys.executable, "-c", _KILLED_AFTER_FIRST_EXCHANGE, str(root), "b", "c"], capture_output=True, timeout=120
    )
    assert again.returncode == -signal.SIGKILL
    real = DirectoryBackend._finish_replace_holding_locks
    calls = [0]

    def finish_then_another_group_is_left(self: DirectoryBackend, *args: object, **kwargs: object) -> bool:
        done = real(self, *args, **kwargs)  # type: ignore[arg-type]
        calls[0] += 1
        if calls[0] == 1:  # in the gap before the lock is taken back: a's and b's group, killed after a
            child = subprocess.run(
                [sys.executable, "-c", _KILLED_AFTER_FIRST_EXCHANGE, str(root), "a", "b"],
                capture_output=True,
                timeout=120,
            )
            assert child.returncode == -signal.SIGKILL
        return done

    DirectoryBackend._finish_replace_holding_locks = finish_then_another_group_is_left  # type: ignore[method-assign]
    try:
        handle.session("b").commit({"by": "the writer"})
    finally:
        DirectoryBackend._finish_replace_holding_locks = real  # type: ignore[method-assign]
    assert calls[0] == 2  # the second group, found on looking again, finished before the commit
    assert _heads(handle) == {"a": "the group", "b": "the writer", "c": "the group"}
    handle.close()
    with SnapshotStore.open(root) as reopened:
        assert _heads(reopened) == {"a": "the group", "b": "the writer", "c": "the group"}
        assert reopened.verify().ok and not list((root / "replacing").glob("*.json"))


def test_verify_reports_a_group_left_part_way_until_it_is_finished(tmp_path: Path) -> None:
    """A handle open across the kill does not finish the group (only a lock holder, a store opened
    for writing or gc does); until one does, readers see b replaced and c not, and verify, which
    said nothing of it, now names the record and both sessions. gc finishes it."""
    root = tmp_path / "store"
    with SnapshotStore.open(root) as early:
        _stores_with_a_group_left_after_one_exchange(root, ["b", "c"])
        [record] = (root / "replacing").glob("*.json")
        report = early.verify()
        assert not report.ok
        [problem] = report.problems
        assert problem.object == f"replacing/{record.name}"
        assert "sessions b, c were being replaced together" in problem.message and "left part way" in problem.message
        early.gc()
        assert early.verify().ok and not record.exists()
        assert _heads(early) == {"a": "the first commit", "b": "the group", "c": "the group"}


def test_verify_leaves_out_a_group_whose_locks_are_held(tmp_path: Path) -> None:
    """A writer holds every lock of its group from its first mark to its last exchange: a record
    whose sessions are locked may be a replace going on now, not one left, and is not reported."""
    import fcntl

    root = tmp_path / "store"
    with SnapshotStore.open(root) as early:
        _stores_with_a_group_left_after_one_exchange(root, ["b", "c"])
        fd = os.open(root / "sessions" / session_key("c") / "lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            assert early.verify().ok
        finally:
            os.close(fd)
        assert not early.verify().ok


def test_verify_reports_a_record_that_does_not_read(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _stores_with_a_group_left_after_one_exchange(root, ["b", "c"])
    [record] = (root / "replacing").glob("*.json")
    record.write_text('{"pairs": [[')
    with SnapshotStore.open(root) as store:
        [problem] = store.verify().problems
        assert problem.object == f"replacing/{record.name}"
        assert "does not read as a record of sessions replaced together" in problem.message
    done = subprocess.run(
        [sys.executable, "-m", "snapstore", "--store", str(root), "verify"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and f"replacing/{record.name}: it does not read" in done.stdout, (
        done.stdout + done.stderr
    )


def test_verify_says_why_a_group_left_part_way_cannot_be_finished(tmp_path: Path) -> None:
    """Its staged history gone after another session was replaced: no writer, open or gc finishes
    it, and verify says so, and how out, where it said the next writer would."""
    root = tmp_path / "store"
    waiting = _group_left_with_its_staged_history_emptied(root)
    with SnapshotStore.open(root) as store:
        store.gc()
        [problem] = store.verify().problems
        assert f"cannot be finished: its staged history sessions/{waiting.name} is gone" in problem.message
        assert "until it is removed by hand" in problem.message


def test_verify_says_nothing_of_a_group_finished_while_it_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer finishing the group between verify's listing of replacing/ and its read of the record
    (the record gone) made verify report a damaged record: a review found it beside rewrites in a
    loop. The finish is made to land in that gap."""
    from snapstore.backends import _directory

    root = tmp_path / "store"
    with SnapshotStore.open(root) as early:
        _stores_with_a_group_left_after_one_exchange(root, ["b", "c"])
        real = _directory.read_regular_file
        finishing: list[bool] = []

        def finished_first(folder: int, name: str, where: str, *args: object, **kwargs: object) -> bytes:
            if where.startswith("replacing/") and not finishing:
                finishing.append(True)
                SnapshotStore.open(root).close()  # a handle opened for writing finishes the group
            return real(folder, name, where, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(_directory, "read_regular_file", finished_first)
        assert early.verify().ok and finishing
        monkeypatch.undo()
        assert _heads(early) == {"a": "the first commit", "b": "the group", "c": "the group"}


def test_verify_beside_a_lock_file_that_is_a_fifo_returns(tmp_path: Path) -> None:
    """Asking whether a lock was held opened the lock file to read without O_NONBLOCK: one that is a
    FIFO (put there by hand) kept verify waiting for ever (found by a review)."""
    root = tmp_path / "store"
    _stores_with_a_group_left_after_one_exchange(root, ["b", "c"])
    lock = root / "sessions" / session_key("c") / "lock"
    lock.unlink(missing_ok=True)
    os.mkfifo(lock)
    done = subprocess.run(
        [sys.executable, "-m", "snapstore", "--store", str(root), "verify"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "sessions b, c were being replaced together" in done.stdout and "sessions/c/lock" in done.stdout


def test_verify_says_none_was_replaced_yet_of_a_group_stopped_before_its_first_exchange(tmp_path: Path) -> None:
    """A replace killed after its record, before any exchange: readers see every session as it was,
    and verify said they might see a mix (found by a review)."""
    root = tmp_path / "store"
    with SnapshotStore.open(root) as early:
        for name in ("a", "b", "c"):
            early.session(name).commit({"by": "the first commit", "name": name})
        # killed as its first exchange begins, before it is made
        killed = _KILLED_AFTER_FIRST_EXCHANGE.replace("real(self, staged, key, resuming)\n", "")
        child = subprocess.run([sys.executable, "-c", killed, str(root), "b", "c"], capture_output=True, timeout=120)
        assert child.returncode == -signal.SIGKILL, child.stderr.decode()
        [problem] = early.verify().problems
        assert "reads see them as they were (none replaced yet)" in problem.message
        assert _heads(early) == {"a": "the first commit", "b": "the first commit", "c": "the first commit"}
