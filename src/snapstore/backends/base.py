"""The narrow interface every storage engine implements.

A backend moves opaque bytes: it knows nothing of the object format, of
snapshots or of sessions. Objects are immutable blobs under a key (a 32-digit
lowercase hex string); refs are small mutable text values under a name,
changed only by compare-and-swap. Locks are named, shared or exclusive, and
are advisory: they serialise garbage collection against writers.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager

from ..errors import SnapshotError

OBJECT_KEY = re.compile(r"^[0-9a-f]{32}$")
REF_NAME = re.compile(r"^[A-Za-z0-9_.%\-]+(/[A-Za-z0-9_.%\-]+)*$")


class ObjectMissing(SnapshotError, KeyError):
    """The backend holds no object under that key."""

    def __str__(self) -> str:
        return self.message


def check_key(key: str) -> str:
    """Refuse anything but a 32-digit hex key before it reaches a path or a query."""
    if not isinstance(key, str) or not OBJECT_KEY.fullmatch(key):
        raise SnapshotError(f"invalid object key {key!r}", {"key": repr(key)})
    return key


def check_ref_name(name: str) -> str:
    """Ref names are ASCII path-like words; callers escape anything else first."""
    if (
        not isinstance(name, str)
        or not REF_NAME.fullmatch(name)
        or any(part in (".", "..") for part in name.split("/"))
    ):
        raise SnapshotError(f"invalid ref name {name!r}", {"ref": repr(name)})
    return name


class Backend(ABC):
    """Bytes in, bytes out. Implementations must be safe to share between threads."""

    #: a short word naming the engine ("memory", "directory", "postgresql")
    kind: str = "abstract"

    # -- objects -------------------------------------------------------
    @abstractmethod
    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``; ``ObjectMissing`` if there are none."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` unless the key exists; True if written.

        Writing is atomic: a reader sees the whole object or nothing. An
        existing object is never overwritten (its key is its content's hash).
        """

    @abstractmethod
    def has(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object if present (no error when absent)."""

    @abstractmethod
    def iter_keys(self) -> Iterator[str]:
        """Every object key, in no particular order."""

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> int:
        """Store several objects; engines with round trips override this to batch."""
        return sum(1 for key, data in items if self.put(key, data))

    def size(self, key: str) -> int:
        """Stored (compressed) size of one object in bytes."""
        return len(self.get(key))

    # -- refs ----------------------------------------------------------
    @abstractmethod
    def read_ref(self, name: str) -> str | None:
        """The ref's value, or None when it does not exist."""

    @abstractmethod
    def cas_ref(self, name: str, expected: str | None, new: str | None) -> bool:
        """Set the ref to ``new`` only if it currently holds ``expected``.

        ``expected=None`` means "must not exist"; ``new=None`` deletes it.
        Returns False, changing nothing, when the current value differs.
        """

    @abstractmethod
    def iter_refs(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        """(name, value) of every ref whose name starts with ``prefix``."""

    # -- locks ---------------------------------------------------------
    @abstractmethod
    def lock(self, name: str, *, shared: bool = False) -> AbstractContextManager[None]:
        """Hold a named lock for the duration of a ``with`` block."""

    # -- lifecycle -----------------------------------------------------
    def close(self) -> None:
        """Release resources; the backend is not used afterwards."""

    def describe(self) -> str:
        """Where the data lives, for messages."""
        return self.kind

    def cleanup_temporary(self) -> int:
        """Remove leftovers of interrupted writes; returns how many were removed."""
        return 0
