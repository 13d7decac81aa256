"""The narrow interface every storage engine implements (format version 2).

A backend keeps, for each session, an ordered list of append-only *segments*,
each an ordered list of *entries* (opaque bytes). It knows nothing of
snapshots, deltas or compression: the layers above decide what an entry is.

* Entries are only ever appended to a segment, by a caller that holds the
  session's lock; ``append`` also checks the segment still ends where the
  caller last read it (compare-and-swap as a safety net behind the lock).
* A whole segment is dropped, or atomically replaced by a rewritten one
  (squashing); nothing else changes stored bytes.
* Readers take no lock: an entry, once appended, never changes; a segment that
  disappears under a reader was reclaimed, and the reader lists again.
* ``config`` holds a few small named values (the store's format version).

Positions are opaque integers a backend hands out: the end of a segment as
read, to pass back to ``append`` and ``read_segment``.
"""

from __future__ import annotations

import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from ..errors import BackendError, SnapshotError

#: a session key: what a backend names a session by (the store derives it from the name)
SESSION_KEY = re.compile(r"^[A-Za-z0-9_.%~\-]{1,200}$")
CONFIG_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: the largest segment number a backend must accept (16 hex digits in a file name)
MAX_SEGMENT = 2**63 - 1
#: ``details["reason"]`` of a BackendError raised because the engine's server did not serve (down,
#: restarting, refusing connections, out of them): an error about reaching the store, which says
#: nothing of what the store holds
SERVER_NOT_SERVING = "server not serving"
#: keys a history is written under before it takes a session's place (``swap_in_session``): "~" starts
#: no key a session name gives (names escape it, and a shortened key has its prefix before it)
STAGED_PREFIX = "~staged-"
_STAGED_KEY = re.compile(r"^~staged-([0-9a-f]{1,16})-[0-9a-f]{16,}$")
#: a staged history is removed by ``cleanup_temporary`` only once it was begun this long ago, whatever
#: the grace: its writer takes the lock for each write only, so a replace still writing cannot be told
#: from one a crash left by anything but time (a week: longer than any replace runs)
STAGED_GRACE_SECONDS = 7 * 24 * 3600.0


def check_session_key(key: str) -> str:
    """Refuse anything but a short path-safe key before it reaches a path or a query."""
    if not isinstance(key, str) or not SESSION_KEY.fullmatch(key) or key in (".", ".."):
        raise SnapshotError(f"invalid session key {key!r}", {"session_key": repr(key)})
    return key


def staged_key(at_least: int = 0, discarded: bool = False) -> str:
    """A fresh key to write a history under before ``swap_in_session`` puts it in a session's place,
    at least ``at_least`` characters long (an engine may size what it stores by the key: PostgreSQL
    cuts rows to fill pages, so a staged key is never shorter than the key it stands in for); it
    carries its creation time, so ``cleanup_temporary`` can tell one an interrupted write left.
    ``discarded``: a key for a history being thrown away (a deleted session's), whose time is 0, so
    that what a crash leaves of it goes at the next cleanup instead of after a week."""
    stamp = f"{STAGED_PREFIX}{0 if discarded else int(time.time()):x}-"
    return stamp + os.urandom(100).hex()[: max(16, min(at_least, 200) - len(stamp))]


def is_staged(key: str) -> bool:
    return key.startswith(STAGED_PREFIX)


def staged_before(key: str, cutoff: float) -> bool:
    """Whether ``key`` is a staged key made before ``cutoff`` (seconds since the epoch)."""
    found = _STAGED_KEY.fullmatch(key)
    return found is not None and int(found.group(1), 16) < cutoff


def check_segment(segment: int) -> int:
    if type(segment) is not int or not 0 <= segment <= MAX_SEGMENT:
        raise SnapshotError(f"invalid segment number {segment!r}", {"segment": repr(segment)})
    return segment


@dataclass(frozen=True, slots=True)
class SegmentRead:
    """What ``read_segment`` found: the entries after the start position, and where they end.

    ``damaged_at`` is the position of the first entry that failed its checksum when more
    data follows it (damage, not a torn tail): entries from there on are not returned.
    ``torn`` says bytes after ``end`` were left unread as an unfinished append.
    """

    entries: list[bytes]
    end: int
    damaged_at: int | None = None
    #: bytes follow ``end`` that are not (yet) a whole entry: an append in progress or cut short
    torn: bool = False


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    segment: int
    stored_bytes: int  # bytes the backend holds for it (framing included)
    version: int = 0  # changes when the segment is replaced by a rewrite


class LegacyReader(Protocol):
    """Read-only access to a format-1 store found in the same place (for ``upgrade``)."""

    def read_ref(self, name: str) -> str | None:
        """A v1 ref's value (``config/format``, ``sessions/<quoted name>``), or None."""
        ...

    def iter_refs(self, prefix: str = "") -> list[tuple[str, str]]:
        """Every v1 ref whose name starts with ``prefix``, as (name, value), sorted."""
        ...

    def get(self, key: str) -> bytes:
        """A v1 object's stored bytes; raises ``KeyError`` when it is missing."""
        ...


class Backend(ABC):
    """Segments of entries per session. Implementations must be safe to share between threads."""

    #: a short word naming the engine ("memory", "directory", "postgresql")
    kind: str = "abstract"
    #: True when the store was opened without write access: every write raises ReadOnlyStoreError
    read_only: bool = False

    # -- configuration -------------------------------------------------
    @abstractmethod
    def read_config(self, name: str) -> bytes | None:
        """A small named value, or None when unset."""

    @abstractmethod
    def write_config(self, name: str, value: bytes) -> None:
        """Set a small named value, atomically."""

    # -- sessions ------------------------------------------------------
    @abstractmethod
    def session_keys(self) -> list[str]:
        """Every session key that has a segment or a lock, sorted; staged keys are not sessions."""

    @abstractmethod
    def lock_session(self, key: str, timeout: float | None) -> AbstractContextManager[None]:
        """Hold the session's write lock (other processes and threads wait their turn).

        ``timeout`` in seconds (None: wait for ever); a wait that runs out raises
        ``LockTimeoutError`` naming the session and how long it waited.
        """

    def lock_session_reading(
        self, key: str, timeout: float | None, read_from: tuple[int, int]
    ) -> AbstractContextManager[None]:
        """``lock_session``, telling the engine where the holder will read the session's entries from
        first: ``read_from`` (segment, position). An engine may read them in the round trip that
        takes the lock (PostgreSQL does), and its first ``read_segment`` of that segment from that
        position then answers from what it read. By default, ``lock_session``."""
        return self.lock_session(key, timeout)

    @abstractmethod
    def segments(self, key: str) -> list[SegmentInfo]:
        """The session's segments, oldest first ([] for an unknown session)."""

    @abstractmethod
    def read_segment(self, key: str, segment: int, start: int = 0) -> SegmentRead:
        """Entries of one segment after position ``start`` (0: from the beginning).

        Raises ``SegmentMissing`` when the segment does not exist (any more).
        """

    def read_first_entry(self, key: str, segment: int) -> bytes | None:
        """The first entry of one segment (its checkpoint), None when it has none; an engine may
        read less than the whole segment for it. By default, ``read_segment``'s first entry.

        Raises ``SegmentMissing`` when the segment does not exist (any more).
        """
        entries = self.read_segment(key, segment).entries
        return entries[0] if entries else None

    @abstractmethod
    def append(self, key: str, segment: int, entries: Iterable[bytes], expected_end: int) -> int:
        """Append entries to a segment (created when ``expected_end`` is 0 and it does not exist).

        The caller holds the session lock. Returns the new end. Raises
        ``ConcurrentUpdateError`` if the segment no longer ends at ``expected_end``
        (a torn tail left by a crash is cut first and does not count).
        """

    @abstractmethod
    def replace_segment(self, key: str, segment: int, entries: Iterable[bytes]) -> None:
        """Atomically replace (or create) a whole segment: readers see the old or the new one."""

    @abstractmethod
    def drop_segments(self, key: str, segments: Iterable[int]) -> None:
        """Delete whole segments (absent ones are ignored), in the order given or all at once: a
        crash part-way must leave a prefix of the list deleted (reclaim gives the oldest first)."""

    @abstractmethod
    def delete_session(self, key: str) -> bool:
        """Delete every segment of a session; False when it had none."""

    def swap_in_session(self, staged: str, key: str) -> None:
        """Make the history written under the staged key ``staged`` the session ``key``, in one step:
        a reader sees the session as it was or the staged history, never neither nor a mix, and a
        crash leaves one or the other. What ``key`` held is deleted, and ``staged`` names nothing
        afterwards. The caller holds ``key``'s lock, and nothing writes ``staged`` meanwhile. A
        staged key that holds nothing (removed by ``cleanup_temporary``, say) is refused, and the
        session is left as it was. An engine that cannot do this in one step refuses it (by
        default), and nothing changes."""
        raise BackendError(
            f"the {self.kind} engine cannot put a new history in a session's place in one step",
            {"session_key": key, "engine": self.kind},
        )

    def swap_in_sessions(self, pairs: list[tuple[str, str]]) -> None:
        """``swap_in_session`` for each ``(staged, key)`` of ``pairs``, the caller holding every
        ``key``'s lock, as one step: a crash leaves every session old or, once finished, every one
        new (the memory engine: under one mutex; PostgreSQL: in one transaction; the directory
        engine: a record the next lock holder finishes). By default they are made one after
        another, and a crash between two leaves some sessions new."""
        for staged, key in pairs:
            self.swap_in_session(staged, key)

    # -- lifecycle -----------------------------------------------------
    def close(self) -> None:
        """Release resources; the backend is not used afterwards."""

    def describe(self) -> str:
        """Where the data lives, for messages."""
        return self.kind

    def cleanup_temporary(self, grace_seconds: float = 3600.0) -> int:
        """Remove leftovers of interrupted writes older than the grace period (staged histories
        included); returns how many."""
        return 0

    def disk_usage(self) -> dict[str, int]:
        """What the store takes on its medium, where the engine can tell: apparent and allocated bytes, files."""
        return {}

    def legacy_format(self) -> str | None:
        """The format version of an older store layout found here (e.g. "1"), or None."""
        return None

    def legacy_reader(self) -> LegacyReader | None:
        """A reader of the format-1 store found here, or None (none, or an engine without v1 data)."""
        return None

    def foreign_entries(self) -> list[str]:
        """Things in the store that are not the store's own (stray files, folders), for reports."""
        return []

    def unfinished_replaces(self) -> list[UnfinishedReplace]:
        """Replaces of several sessions (``swap_in_sessions``) left part way that no writer is
        finishing now, and records of them that cannot be read, for ``verify``. None by default: an
        engine that replaces sessions in one step leaves none."""
        return []


@dataclass(frozen=True)
class UnfinishedReplace:
    """A replace of several sessions a crash left part way (``record`` names where the engine keeps
    it), or a record of one that cannot be read (``session_keys`` empty: which sessions it was for
    cannot be told). ``blocked``: why it cannot be finished (None: the next writer finishes it), or,
    with no keys, why the record cannot be used."""

    record: str
    session_keys: tuple[str, ...]
    blocked: str | None = None
    #: whether any session of the group was replaced already (readers then see a mix)
    begun: bool = True


class SegmentMissing(SnapshotError, KeyError):
    """The segment does not exist (never written, or reclaimed since it was listed)."""

    def __str__(self) -> str:
        return self.message


def not_serving(exc: BaseException) -> bool:
    """Whether ``exc`` is the engine's server not serving (``SERVER_NOT_SERVING``)."""
    return isinstance(exc, BackendError) and exc.details.get("reason") == SERVER_NOT_SERVING
