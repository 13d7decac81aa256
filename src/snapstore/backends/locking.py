"""Waiting for a session's write lock, the same way on every engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..errors import LOCK_TIMEOUT_HINT, LockTimeoutError, SnapshotError

#: the longest pause between two tries of a lock another process holds
MAX_POLL_PAUSE = 0.005


def lock_timeout_error(key: str, waited: float) -> LockTimeoutError:
    return LockTimeoutError(
        f"session {key} stayed locked by another writer for {waited:.3f} s (the lock timeout){LOCK_TIMEOUT_HINT}",
        {"session_key": key, "waited_seconds": round(waited, 3)},
    )


def acquire_thread_lock(lock: threading.Lock, key: str, timeout: float | None) -> float:
    """Take an in-process lock within ``timeout``; returns the seconds left (None: unbounded)."""
    check_timeout(timeout)
    started = time.monotonic()
    if not lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
        raise lock_timeout_error(key, time.monotonic() - started)
    return time.monotonic() - started


def poll_until(try_once: Callable[[], bool], key: str, timeout: float | None, already_waited: float = 0.0) -> None:
    """Call ``try_once`` until it returns True, with short growing pauses, until the timeout runs out.

    Non-blocking tries rather than one blocking call: the operating system's file locks have
    no timeout, and a waiter that polls every few milliseconds still gets its turn between
    the commits of writers that hold the lock briefly and often.
    """
    started = time.monotonic() - already_waited
    pause = 0.0001
    while not try_once():
        waited = time.monotonic() - started
        if timeout is not None and waited >= timeout:
            raise lock_timeout_error(key, waited)
        time.sleep(pause if timeout is None else min(pause, max(timeout - waited, 0.0)))
        pause = min(pause * 2, MAX_POLL_PAUSE)


def check_timeout(timeout: float | None) -> float | None:
    """A lock timeout is None (wait for ever) or a number of seconds, at least 0."""
    number = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
    if timeout is not None and (not number or not 0 <= timeout < float("inf")):
        raise SnapshotError(
            f"invalid lock timeout {timeout!r}: seconds, at least 0, or None", {"timeout": repr(timeout)}
        )
    return timeout
