"""Segments in process memory: the same behaviour as a directory, without files."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager

from ..errors import BackendError, ConcurrentUpdateError
from ._checks import check_config_name, check_config_value, check_position, entry_list
from .base import Backend, SegmentInfo, SegmentMissing, SegmentRead, check_segment, check_session_key, is_staged
from .locking import acquire_thread_lock, check_timeout

# Positions in a memory segment are entry counts.


class _Segment:
    __slots__ = ("entries", "info")

    def __init__(self, number: int, entries: list[bytes], version: int) -> None:
        self.entries = entries
        # what a listing returns, kept beside the entries as they are appended: a listing makes no objects
        self.info = SegmentInfo(number, sum(map(len, entries)), version)

    def extend(self, new: list[bytes]) -> None:
        self.entries.extend(new)
        info = self.info
        self.info = SegmentInfo(info.segment, info.stored_bytes + sum(map(len, new)), info.version)


class MemoryBackend(Backend):
    kind = "memory"

    def __init__(self, *, discard_on_close: bool = False) -> None:
        """``discard_on_close``: the store made over this backend owns it (``SnapshotStore.memory()``,
        ``"memory:"``), so closing it lets the sessions go and refuses every later call; without it
        the backend outlives the stores opened over it, its creator's to open a store on again."""
        self._discard_on_close = discard_on_close
        self._config: dict[str, bytes] = {}
        self._sessions: dict[str, dict[int, _Segment]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._mutex = threading.Lock()
        # a counter, not id(): an id is reused once the old segment is freed
        self._versions = itertools.count(1)
        self._closed = False

    def close(self) -> None:
        """A memory store its store owns is gone once closed, and says so when used again."""
        if not self._discard_on_close:
            return
        with self._mutex:
            self._closed = True
            self._sessions.clear()
            self._config.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("the memory store is closed: its sessions went with it", {"reason": "closed"})

    def read_config(self, name: str) -> bytes | None:
        self._check_open()
        return self._config.get(check_config_name(name))

    def write_config(self, name: str, value: bytes) -> None:
        self._check_open()
        self._config[check_config_name(name)] = check_config_value(name, value)

    def session_keys(self) -> list[str]:
        self._check_open()
        with self._mutex:
            keys = {key for key, segments in self._sessions.items() if segments} | set(self._locks)
        return sorted(key for key in keys if not is_staged(key))

    def lock_session(self, key: str, timeout: float | None) -> AbstractContextManager[None]:
        self._check_open()
        check_session_key(key)
        check_timeout(timeout)
        with self._mutex:
            lock = self._locks.setdefault(key, threading.Lock())
        return _held(lock, key, timeout)

    def segments(self, key: str) -> list[SegmentInfo]:
        self._check_open()
        with self._mutex:
            found = self._sessions.get(check_session_key(key), {})
            return [found[n].info for n in sorted(found)]

    def read_segment(self, key: str, segment: int, start: int = 0) -> SegmentRead:
        self._check_open()
        check_position(start, "start")
        with self._mutex:
            found = self._sessions.get(check_session_key(key), {}).get(check_segment(segment))
            if found is None:
                raise SegmentMissing(f"segment {segment} of session {key} not found", {"segment": segment})
            return SegmentRead(found.entries[start:], len(found.entries))

    def append(self, key: str, segment: int, entries: Iterable[bytes], expected_end: int) -> int:
        self._check_open()
        check_session_key(key)
        check_segment(segment)
        check_position(expected_end, "expected_end")
        new = entry_list(entries)
        with self._mutex:
            segments = self._sessions.setdefault(key, {})
            current = segments.get(segment)
            if (len(current.entries) if current is not None else 0) != expected_end:
                raise ConcurrentUpdateError(
                    f"segment {segment} of session {key} changed under its lock holder",
                    {"session_key": key, "segment": segment},
                )
            if current is None:
                current = segments[segment] = _Segment(segment, [], next(self._versions))
            current.extend(new)
            return len(current.entries)

    def replace_segment(self, key: str, segment: int, entries: Iterable[bytes]) -> None:
        self._check_open()
        check_session_key(key)
        check_segment(segment)
        new = entry_list(entries)
        with self._mutex:
            # a new list: a reader holding the old one keeps reading the old segment whole
            self._sessions.setdefault(key, {})[segment] = _Segment(segment, new, next(self._versions))

    def drop_segments(self, key: str, segments: Iterable[int]) -> None:
        self._check_open()
        numbers = [check_segment(s) for s in segments]
        with self._mutex:
            found = self._sessions.get(check_session_key(key), {})
            for segment in numbers:
                found.pop(segment, None)

    def delete_session(self, key: str) -> bool:
        self._check_open()
        with self._mutex:
            return bool(self._sessions.pop(check_session_key(key), None))

    def swap_in_session(self, staged: str, key: str) -> None:
        self.swap_in_sessions([(staged, key)])

    def swap_in_sessions(self, pairs: list[tuple[str, str]]) -> None:
        self._check_open()
        for staged, key in pairs:
            check_session_key(staged)
            check_session_key(key)
        with self._mutex:  # every one or none: a reader sees the sessions all old or all new
            for staged, key in pairs:
                if not self._sessions.get(staged):
                    raise BackendError(f"no staged history under {staged}", {"session_key": key, "staged": staged})
            for staged, key in pairs:
                self._sessions[key] = self._sessions.pop(staged)
                self._locks.pop(staged, None)


@contextmanager
def _held(lock: threading.Lock, key: str, timeout: float | None) -> Iterator[None]:
    acquire_thread_lock(lock, key, timeout)
    try:
        yield
    finally:
        lock.release()
