"""snapstore: content-addressed, delta-compressed snapshots of JSON states.

>>> from snapstore import SnapshotStore
>>> store = SnapshotStore.memory()
>>> sess = store.session("campaign-42", max_snapshots=10)
>>> first = sess.commit({"turn": 1, "hp": 10}, label="start", turn=1)
>>> _ = sess.commit({"turn": 2, "hp": 7}, turn=2)
>>> sess.diff(first.id, sess.head.id)
[{'op': 'replace', 'path': '/hp', 'value': 7}, {'op': 'replace', 'path': '/turn', 'value': 2}]
"""

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from .objects import Snapshot
    from .rollback import StateRollbackManager, StateSnapshot
    from .session import Session
    from .store import GcReport, Problem, SnapshotStore, VerifyReport

# Each public name's module, imported on first use: `snapstore --help` then loads no storage engine,
# and the drop-in manager (pydantic) loads only for programs that use it.
_LAZY = {
    "Snapshot": "objects",
    "Session": "session",
    "GcReport": "store",
    "Problem": "store",
    "SnapshotStore": "store",
    "VerifyReport": "store",
    "StateRollbackManager": "rollback",
    "StateSnapshot": "rollback",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'snapstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__version__ = "0.2.0"

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
