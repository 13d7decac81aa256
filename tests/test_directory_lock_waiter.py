"""The directory store's session lock when another holder has it and the caller gave a timeout.

flock(2) has no timeout, so one thread per session lock waits in the kernel's queue on its own
descriptor of the lock file, and the caller waits for that thread as long as its timeout allows.
The thread stays for the next wait (a writer among others waits before most commits), and a
caller that gives up leaves the lock free: the thread lets go of it as soon as it gets it.

Two ``DirectoryBackend`` objects on one folder hold separate descriptors of the lock file, so
they exclude each other exactly as two processes do.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapstore import BackendError, LockTimeoutError
from snapstore.backends import _directory
from snapstore.backends._directory import DirectoryBackend
from snapstore.testing import HUNG, SETTLE

KEY = "s" * 16


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[DirectoryBackend, DirectoryBackend]]:
    first, second = DirectoryBackend(tmp_path / "store"), DirectoryBackend(tmp_path / "store")
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def _waiter_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"snapstore-lock-{KEY}"]


def _take_while(holder: DirectoryBackend, waiter: DirectoryBackend, got: list[bool]) -> None:
    """``holder`` keeps the lock while ``waiter`` asks for it with a timeout; returns once ``waiter``
    had it. ``got`` gains, for each time the waiter had the lock, whether the holder had let go."""
    released = threading.Event()

    def wait() -> None:
        with waiter.lock_session(KEY, HUNG):
            got.append(released.is_set())  # asserted by the caller: a thread's assert fails nothing

    before = len(got)
    with holder.lock_session(KEY, HUNG):
        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(SETTLE)  # the waiter is queued behind the holder
        released.set()
        assert len(got) == before
    thread.join(HUNG)
    assert not thread.is_alive()
    assert got[before:] == [True], "the waiter got the lock while the holder still had it"


def test_a_waiter_gets_the_lock_when_the_holder_lets_go_and_its_thread_serves_every_wait(
    pair: tuple[DirectoryBackend, DirectoryBackend],
) -> None:
    first, second = pair
    got: list[bool] = []
    for _round in range(5):
        _take_while(first, second, got)
    assert len(got) == 5
    # one waiting thread for all five contended waits, not one per wait
    assert len(_waiter_threads()) == 1
    # and the lock is free again: the first backend takes it at once
    with first.lock_session(KEY, 0.0):
        pass


def test_a_caller_that_gives_up_leaves_the_lock_free(pair: tuple[DirectoryBackend, DirectoryBackend]) -> None:
    first, second = pair
    with first.lock_session(KEY, 30.0):
        with pytest.raises(LockTimeoutError) as info, second.lock_session(KEY, 0.05):
            pass
        assert info.value.details["session_key"] == KEY
    # the given-up wait's thread took the lock when it was released and let it go at once:
    # a third descriptor (another backend) gets it within its timeout, and so does the second again
    third = DirectoryBackend(first.root)
    try:
        with third.lock_session(KEY, 10.0):
            pass
    finally:
        third.close()
    with second.lock_session(KEY, 10.0):
        pass
    got: list[bool] = []
    _take_while(first, second, got)  # the thread serves a wait after a given-up one
    assert len(got) == 1


def test_closing_the_backend_ends_its_waiting_thread(pair: tuple[DirectoryBackend, DirectoryBackend]) -> None:
    first, second = pair
    _take_while(first, second, [])
    threads = _waiter_threads()
    assert len(threads) == 1
    second.close()
    threads[0].join(10)
    assert not threads[0].is_alive()


def test_an_idle_waiting_thread_ends_and_the_next_wait_starts_another(
    pair: tuple[DirectoryBackend, DirectoryBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that touched many sessions does not keep a thread for each."""
    monkeypatch.setattr(_directory, "WAITER_IDLE", 0.05)
    first, second = pair
    got: list[bool] = []
    _take_while(first, second, got)
    threads = _waiter_threads()
    assert len(threads) == 1
    threads[0].join(10)
    assert not threads[0].is_alive()
    _take_while(first, second, got)
    assert len(got) == 2
    assert len(_waiter_threads()) == 1


def test_a_lock_taken_through_the_waiting_thread_stays_held_past_its_idle_time(
    pair: tuple[DirectoryBackend, DirectoryBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The waiting thread ended after ``WAITER_IDLE`` seconds even while its caller held the lock
    through its descriptor: it closed the descriptor, the flock went with it, a third writer took
    the lock mid-commit, and the holder's release failed with a bare ``OSError: [Errno 9]``."""
    monkeypatch.setattr(_directory, "WAITER_IDLE", 0.05)
    first, second = pair
    third = DirectoryBackend(first.root)
    try:
        taken = threading.Event()
        done = threading.Event()
        errors: list[BaseException] = []

        def hold_long() -> None:
            try:
                with second.lock_session(KEY, HUNG):
                    taken.set()
                    done.wait(HUNG)
            except BaseException as exc:  # asserted below: a thread's exception fails nothing
                errors.append(exc)

        with first.lock_session(KEY, HUNG):
            waiting = threading.Thread(target=hold_long)
            waiting.start()
            time.sleep(SETTLE)  # the second waits on its waiting thread
        assert taken.wait(HUNG)
        assert len(_waiter_threads()) == 1, "the lock was not taken through the waiting thread"
        time.sleep(20 * 0.05)  # many idle times of the waiting thread
        with pytest.raises(LockTimeoutError), third.lock_session(KEY, 0.0):
            pass
        done.set()
        waiting.join(HUNG)
        assert not waiting.is_alive() and errors == []
        with third.lock_session(KEY, 0.0):
            pass
    finally:
        third.close()


def test_a_waiting_thread_that_cannot_wait_says_why_at_once() -> None:
    """flock(2) failing in the waiting thread (here: a descriptor that is not open) reaches the
    caller as a BackendError naming the lock file, not as a timeout after its whole wait."""
    unused = os.sysconf("SC_OPEN_MAX") - 1
    with pytest.raises(OSError):
        os.fstat(unused)
    waiter = _directory._FlockWaiter(unused, KEY)
    assert waiter.request()
    with pytest.raises(BackendError, match=f"sessions/{KEY}/lock"):  # a timeout would be a LockTimeoutError
        waiter.wait(HUNG, 0.0)
    assert not waiter.request()  # the thread has ended: the session lock starts another


def test_closing_the_store_under_a_held_lock_keeps_it_until_the_holder_lets_go(
    pair: tuple[DirectoryBackend, DirectoryBackend],
) -> None:
    """A store closed while a thread holds a session's lock (a saver's ``async with`` ending while a
    commit runs on a worker thread) keeps the lock until the holder lets go, which it does cleanly.
    Closed under it, the lock file's descriptor let go of the flock mid-commit (another process could
    take it) and the holder's unlock raised a bare ``OSError: [Errno 9] Bad file descriptor``."""
    first, second = pair
    with first.lock_session(KEY, HUNG):
        first.close()
        with pytest.raises(LockTimeoutError), second.lock_session(KEY, 0.0):
            pass  # still held: closing the store did not let go of it
    with second.lock_session(KEY, 0.0):
        pass  # and free once the holder let go
    with pytest.raises(BackendError, match="is closed"), first.lock_session(KEY, 0.0):
        pass  # the closed store takes no lock again
