"""The directory store's session locks across fork(2), with real processes: a child's copies of
its parent's lock file descriptors keep the parent's flock (it belongs to the open file), so the
child closes them as it starts, and forgets the parent's threads that held or awaited a lock."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from snapstore import SnapshotStore
from snapstore.backends._directory import DirectoryBackend
from snapstore.testing import HUNG, SETTLE

KEY = "s" * 16

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork(2)")


def _exit_child(run: object) -> None:
    code = 1
    try:
        assert callable(run)
        run()
        code = 0
    finally:
        os._exit(code)


def test_a_writer_killed_holding_the_lock_frees_it_though_it_forked_a_child_before(tmp_path: Path) -> None:
    """A parent that had opened the lock file forks an idle child, takes the lock and is killed:
    the kernel let go of the lock only once that child ended too, so the session stayed locked
    (a LockTimeoutError for every writer) while the child lived."""
    root = tmp_path / "store"
    DirectoryBackend(root).close()
    ready_r, ready_w = os.pipe()

    def holder() -> None:
        backend = DirectoryBackend(root)
        with backend.lock_session(KEY, HUNG):  # the lock file is opened, and kept open after
            pass
        child = os.fork()
        if child == 0:
            _exit_child(lambda: time.sleep(HUNG))  # a worker that never touches the store
        with backend.lock_session(KEY, HUNG):
            os.write(ready_w, str(child).encode().ljust(16))
            time.sleep(HUNG)

    pid = os.fork()
    if pid == 0:
        _exit_child(holder)
    child = int(os.read(ready_r, 16))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    other = DirectoryBackend(root)
    try:
        with other.lock_session(KEY, 5.0):
            pass
    finally:
        other.close()
        os.kill(child, signal.SIGKILL)  # (the killed parent's child: not ours to wait for)


def test_a_child_forked_while_another_thread_holds_the_lock_commits_once_it_is_let_go(tmp_path: Path) -> None:
    """A thread holding a session's lock at the fork does not exist in the child: its thread lock,
    copied taken, made the child's first lock of the session wait for ever."""
    store = SnapshotStore.open(tmp_path / "store")
    try:
        store.session("s").commit({"n": 0})
        backend = store.backend
        assert isinstance(backend, DirectoryBackend)
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            with backend.lock_session("s", HUNG):
                holding.set()
                release.wait(HUNG)

        thread = threading.Thread(target=hold)
        thread.start()
        assert holding.wait(HUNG)
        pid = os.fork()
        if pid == 0:
            _exit_child(lambda: backend.lock_session("s", HUNG).__enter__())
        time.sleep(SETTLE)
        release.set()
        thread.join(HUNG)
        deadline = time.monotonic() + HUNG / 4
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 0, "the child never got the lock"
    finally:
        store.close()
