"""An in-process readers-writer lock, used by every backend to order its own threads."""

from __future__ import annotations

import threading


class ReadWriteLock:
    """Many shared holders or one exclusive holder; writers are not starved."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    def acquire(self, shared: bool) -> None:
        with self._cond:
            if shared:
                while self._writer or self._waiting_writers:
                    self._cond.wait()
                self._readers += 1
            else:
                self._waiting_writers += 1
                while self._writer or self._readers:
                    self._cond.wait()
                self._waiting_writers -= 1
                self._writer = True

    def release(self, shared: bool) -> None:
        with self._cond:
            if shared:
                self._readers -= 1
            else:
                self._writer = False
            self._cond.notify_all()
