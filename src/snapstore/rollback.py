"""A drop-in ``StateRollbackManager`` for pydantic session models, backed by a snapshot store.

Swap the import of a hand-written deep-copy manager for this one: the names,
arguments, return values and error texts are the same, but a snapshot costs
a compressed delta instead of a deep copy, and with ``store=`` a directory
store keeps the snapshots across restarts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, overload

from pydantic import BaseModel, ValidationError

from .errors import RollbackError, SnapshotError, SnapshotNotFound
from .objects import Snapshot
from .session import Session
from .store import SnapshotStore, check_session_name

DEFAULT_SESSION_NAME = "rollback"


class StateSnapshot:
    """One snapshot of the session model; ``session_data`` is rebuilt from the store on each read."""

    __slots__ = ("_session", "label", "snapshot_id", "timestamp", "turn_count")

    def __init__(self, history: Session, snapshot: Snapshot) -> None:
        self._session = history
        self.snapshot_id: str = snapshot.id
        self.label: str = snapshot.label
        self.timestamp: datetime = snapshot.timestamp
        self.turn_count: int | None = snapshot.turn

    @property
    def session_data(self) -> dict[str, Any]:
        """The session's ``model_dump(mode="json")`` at snapshot time (a fresh, verified copy)."""
        data = self._session.state(self.snapshot_id)
        return data  # type: ignore[no-any-return]

    def to_dict(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "label": self.label,
            "timestamp": self.timestamp.isoformat(),
            "turn_count": self.turn_count,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StateSnapshot) and other.snapshot_id == self.snapshot_id

    def __hash__(self) -> int:
        return hash(self.snapshot_id)

    def __repr__(self) -> str:
        return f"StateSnapshot(snapshot_id={self.snapshot_id!r}, label={self.label!r}, turn_count={self.turn_count!r})"


class SnapshotSequence(Sequence[StateSnapshot]):
    """The retained snapshots, oldest first, read from the store on each access."""

    def __init__(self, history: Session) -> None:
        self._history = history

    def _all(self) -> list[Snapshot]:
        return self._history.snapshots()

    def __len__(self) -> int:
        return len(self._history)

    @overload
    def __getitem__(self, index: int) -> StateSnapshot: ...
    @overload
    def __getitem__(self, index: slice) -> list[StateSnapshot]: ...
    def __getitem__(self, index: int | slice) -> StateSnapshot | list[StateSnapshot]:
        snaps = self._all()
        if isinstance(index, slice):
            return [StateSnapshot(self._history, s) for s in snaps[index]]
        return StateSnapshot(self._history, snaps[index])

    def __iter__(self) -> Iterator[StateSnapshot]:
        return iter([StateSnapshot(self._history, s) for s in self._all()])

    def __repr__(self) -> str:
        return f"<{len(self)} snapshots>"


class StateRollbackManager:
    """Snapshots of a pydantic session model, with rollback that restores it in place.

    ``StateRollbackManager(session, max_snapshots=10)`` keeps snapshots in a memory
    store; pass ``store=SnapshotStore.open(path)`` and ``session_name=`` to keep them on
    disk, where a new manager on the same store and name sees them. ``fields`` limits
    which fields a rollback restores (default: all).
    """

    def __init__(
        self,
        session: BaseModel,
        max_snapshots: int = 10,
        *,
        store: SnapshotStore | None = None,
        session_name: str | None = None,
        fields: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(session, BaseModel):
            raise RollbackError(
                "session must be a pydantic BaseModel", {"type": type(session).__name__}
            )
        self.session = session
        self.store = store if store is not None else SnapshotStore.memory()
        name = session_name if session_name is not None else _default_name(session)
        check_session_name(name)
        self._fields = self._check_fields(fields)
        self.history = self.store.session(name, max_snapshots=max_snapshots)

    # -- the reference manager's API -------------------------------------
    @property
    def max_snapshots(self) -> int:
        return self.history.max_snapshots

    @max_snapshots.setter
    def max_snapshots(self, value: int) -> None:
        self.history.set_max_snapshots(value)

    @property
    def snapshots(self) -> SnapshotSequence:
        return SnapshotSequence(self.history)

    def create_snapshot(self, label: str = "auto") -> StateSnapshot:
        """Snapshot the whole session model now; a later change to it never changes this snapshot."""
        data = self.session.model_dump(mode="json")
        turn = getattr(self.session, "turn_count", None)
        snap = self.history.commit(data, label=label, turn=turn if type(turn) is int else None)
        return StateSnapshot(self.history, snap)

    def rollback_to(self, snapshot_id: str, fields: Sequence[str] | None = None) -> bool:
        """Restore the session in place from a snapshot; True on success, ``RollbackError`` otherwise."""
        try:
            sid = self.history.resolve(snapshot_id)
        except SnapshotNotFound:
            raise RollbackError(
                f"Snapshot {snapshot_id} not found",
                {"snapshot_id": snapshot_id, "available_snapshots": self.history.snapshot_ids()},
            ) from None
        chosen = self._check_fields(fields) if fields is not None else self._fields
        try:
            data = self.history.state(sid)
            restored = type(self.session).model_validate(data)
        except (SnapshotError, ValidationError) as exc:
            raise RollbackError(
                f"Failed to rollback to snapshot {sid}: {exc}", {"snapshot": sid, "error": str(exc)}
            ) from exc
        self._assign(restored, chosen, sid)
        self.history.rollback(sid)
        return True

    def rollback_last(self) -> bool:
        """Restore the most recent snapshot."""
        ids = self.history.snapshot_ids()
        if not ids:
            raise RollbackError("No snapshots available for rollback", {"snapshot_count": 0})
        return self.rollback_to(ids[-1])

    def clear_old_snapshots(self) -> int:
        """Drop the oldest snapshots beyond ``max_snapshots`` (FIFO); returns how many."""
        return self.history.clear_old_snapshots()

    def list_snapshots(self) -> list[dict[str, Any]]:
        return [StateSnapshot(self.history, s).to_dict() for s in self.history.snapshots()]

    def get_snapshot_count(self) -> int:
        return len(self.history)

    # -- internals -------------------------------------------------------
    def _check_fields(self, fields: Sequence[str] | None) -> list[str]:
        known = list(type(self.session).model_fields)
        if fields is None:
            return known
        unknown = [f for f in fields if f not in known]
        if unknown:
            raise RollbackError(
                f"unknown fields {unknown} for {type(self.session).__name__}",
                {"fields": unknown, "known": known},
            )
        return list(fields)

    def _assign(self, restored: BaseModel, fields: list[str], sid: str) -> None:
        """Set the chosen fields on the caller's own object, all or none."""
        before = {name: getattr(self.session, name) for name in fields}
        try:
            for name in fields:
                setattr(self.session, name, getattr(restored, name))
        except (ValidationError, TypeError, ValueError, AttributeError) as exc:
            for name, value in before.items():
                object.__setattr__(self.session, name, value)
            raise RollbackError(
                f"Failed to rollback to snapshot {sid}: {exc}", {"snapshot": sid, "error": str(exc)}
            ) from exc


def _default_name(session: BaseModel) -> str:
    sid = getattr(session, "session_id", None)
    if isinstance(sid, str) and sid:
        try:
            return check_session_name(sid)
        except SnapshotError:
            pass
    return DEFAULT_SESSION_NAME
