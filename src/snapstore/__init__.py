"""snapstore: content-addressed, delta-compressed snapshots of JSON states.

>>> from snapstore import SnapshotStore
>>> store = SnapshotStore.memory()
>>> sess = store.session("campaign-42", max_snapshots=10)
>>> first = sess.commit({"turn": 1, "hp": 10}, label="start", turn=1)
>>> _ = sess.commit({"turn": 2, "hp": 7}, turn=2)
>>> sess.diff(first.id, sess.head.id)
[{'op': 'replace', 'path': '/hp', 'value': 7}, {'op': 'replace', 'path': '/turn', 'value': 2}]
"""

from .errors import (
    AmbiguousSnapshotId,
    BackendError,
    ConcurrentUpdateError,
    CorruptObjectError,
    FormatVersionError,
    InvalidNameError,
    InvalidStateError,
    LockTimeoutError,
    PatchError,
    ReadOnlyStoreError,
    RollbackError,
    SnapshotError,
    SnapshotNotFound,
)
from .objects import Snapshot
from .session import Session
from .store import GcReport, Problem, SnapshotStore, VerifyReport


def __getattr__(name: str) -> object:
    # The drop-in manager needs pydantic; importing it only when asked keeps the command line fast.
    if name in ("StateRollbackManager", "StateSnapshot"):
        from . import rollback

        return getattr(rollback, name)
    raise AttributeError(f"module 'snapstore' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "AmbiguousSnapshotId",
    "BackendError",
    "ConcurrentUpdateError",
    "CorruptObjectError",
    "FormatVersionError",
    "GcReport",
    "InvalidNameError",
    "InvalidStateError",
    "LockTimeoutError",
    "PatchError",
    "Problem",
    "ReadOnlyStoreError",
    "RollbackError",
    "Session",
    "Snapshot",
    "SnapshotError",
    "SnapshotNotFound",
    "SnapshotStore",
    "StateRollbackManager",
    "StateSnapshot",
    "VerifyReport",
]
