"""The one error hierarchy of snapstore.

Every error carries a human-readable message and a ``details`` dict naming
what was involved (an object id, a session, a path...), so callers and the CLI
can report it without parsing the message.
"""

from __future__ import annotations

from typing import Any


def shown_value(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters with its length said: an
    argument can be long (a 400-digit number), and a message should stay one line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


class SnapshotError(Exception):
    """Root of every error snapstore raises on purpose."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return self.message


class SnapshotNotFound(SnapshotError, KeyError):
    """No snapshot (or object) has the given id or prefix."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class AmbiguousSnapshotId(SnapshotNotFound):
    """A prefix matches more than one snapshot; ``details["candidates"]`` lists them."""


class CorruptObjectError(SnapshotError):
    """Stored bytes are damaged: bad header, bad compression or a hash mismatch."""


class InvalidStateError(SnapshotError, ValueError):
    """A state that JSON cannot represent exactly (NaN, cycles, non-string keys...)."""


class PatchError(SnapshotError, ValueError):
    """A JSON Patch that is malformed or does not apply to its document."""


class RollbackError(SnapshotError):
    """A rollback that cannot be carried out."""


class InvalidNameError(SnapshotError, ValueError):
    """A session name that cannot be used (empty, path separators, ``..``)."""


class ConcurrentUpdateError(SnapshotError):
    """Another writer kept changing the same session; the commit was not made."""


class FormatVersionError(SnapshotError):
    """Stored data written by a newer (or unknown) format version."""


class BackendError(SnapshotError):
    """The storage engine failed (I/O error, lost connection); ``details["cause"]`` says why."""


class ArchiveError(SnapshotError):
    """An archive file that cannot be imported (truncated, damaged, tampered with or malformed), or
    an archive or exported state that cannot be written (the path and the errno say why)."""


#: what a writer that ran out of patience can do, said after every lock timeout's message
LOCK_TIMEOUT_HINT = (
    ": another writer is committing to it, or holds it while stopped or stuck;"
    " retry, or open the store with a longer lock_timeout (None waits for ever)"
)


class LockTimeoutError(ConcurrentUpdateError):
    """Waiting for a session's write lock ran out; ``details`` name the session and the seconds waited."""

    def naming(self, session: str) -> LockTimeoutError:
        """The same error naming the session by its name (an engine knows only its encoded key)."""
        if "session" in self.details:
            return self
        waited = self.details.get("waited_seconds")
        return LockTimeoutError(
            f"session {session!r} stayed locked by another writer for {waited:.3f} s"
            f" (the lock timeout){LOCK_TIMEOUT_HINT}"
            if isinstance(waited, (int, float))
            else f"session {session!r}: {self}",
            {"session": session, **self.details},
        )


class ReadOnlyStoreError(BackendError):
    """A write to a store opened without write access (read-only media or permissions)."""
