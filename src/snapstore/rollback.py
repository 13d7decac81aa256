"""A drop-in ``StateRollbackManager`` for pydantic session models, backed by a snapshot store.

Swap the import of a hand-written deep-copy manager for this one: the names,
arguments and return values are the same, and the error texts open with the same
words (a snapshot not found then says why), but a snapshot costs
a compressed delta instead of a deep copy, and with ``store=`` a directory
store keeps the snapshots across restarts.

How a rollback restores the session (docs/migration.md has the details):

* the stored data is validated by the model itself, as JSON
  (``model_validate_json``), so datetimes, enums, nested models and tuples
  come back as their types, strict models work, and fields are matched by
  name even when they have aliases; computed fields are dropped first (a
  state nested past what pydantic's JSON parser reads, 200 levels, is
  refused with ``RollbackError``: validated from Python objects instead it
  would come back with other types);
* nothing is changed until every check has passed; then the fields are set
  on the caller's own object at once, without re-running assignment
  validation (``model_validate`` has already validated them together, and
  field-by-field assignment could trip a model validator on a
  half-restored state). Fields the snapshot does not hold (``exclude=True``,
  or added to the model later) and private attributes are left as they are;
* a frozen model, or a frozen field whose value would change, raises
  ``RollbackError`` and changes nothing;
* with ``extra="allow"`` a full rollback also restores the extra attributes
  (as their JSON values); a rollback limited by ``fields`` leaves them alone;
* moving the history's head is the last step; if it fails the session gets
  its previous values back: a rollback happens completely or not at all.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, overload

from pydantic import AliasChoices, AliasPath, BaseModel, ValidationError

from . import codec
from .errors import AmbiguousSnapshotId, RollbackError, SnapshotError, SnapshotNotFound, shown_value
from .objects import Snapshot
from .session import Session, check_max_snapshots
from .store import SnapshotStore, check_session_name

DEFAULT_SESSION_NAME = "rollback"

_INT64 = range(-(2**63), 2**63)
#: pydantic >= 2.11 lets one validation accept field names as well as aliases
_BY_NAME = "by_name" in inspect.signature(BaseModel.model_validate_json).parameters
_KEEP: Any = object()  # "leave the extra attributes as they are"
#: the deepest nesting pydantic's JSON parser (jiter) reads; the store itself takes up to 254
PYDANTIC_JSON_DEPTH = 200


def _computed_fields(model: type[BaseModel]) -> dict[str, Any]:
    """A model class's computed fields by name (their infos name their aliases). Before pydantic 2.6
    ``model_computed_fields`` is a property of instances, not a mapping on the class."""
    fields = model.model_computed_fields
    if isinstance(fields, property):
        return {name: d.info for name, d in model.__pydantic_decorators__.computed_fields.items()}
    return dict(fields)


def _too_deep_for_json(error: ValidationError) -> bool:
    """Whether pydantic refused JSON for its nesting alone (its parser's depth limit), not the data."""
    return any(e["type"] == "json_invalid" and "recursion limit" in e["msg"] for e in error.errors())


class StateSnapshot:
    """One snapshot of the session model; ``session_data`` is rebuilt from the store on each read."""

    __slots__ = ("_history", "label", "snapshot_id", "timestamp", "turn_count")

    def __init__(self, history: Session, snapshot: Snapshot) -> None:
        self._history = history
        self.snapshot_id: str = snapshot.id
        self.label: str = snapshot.label
        self.timestamp: datetime = snapshot.timestamp
        self.turn_count: int | None = snapshot.turn

    @property
    def session_data(self) -> dict[str, Any]:
        """The session's ``model_dump(mode="json")`` at snapshot time: a fresh, verified copy.

        Raises ``SnapshotNotFound`` once the snapshot has been evicted from the history.
        """
        try:
            return self._history.state(self.snapshot_id)
        except SnapshotNotFound as exc:
            reason = exc.details.get("reason")
            if reason not in ("evicted", "not retained"):
                raise
            # the store's words name the session's methods; a manager's user has the manager's
            raise SnapshotNotFound(
                f"snapshot {self.snapshot_id}: {_dropped(reason, self._history.max_snapshots)}",
                {**exc.details, "snapshot": self.snapshot_id},
            ) from None

    def __copy__(self) -> StateSnapshot:
        # a snapshot is a handle on data the store keeps unchanged: a copy is another handle
        copied = StateSnapshot.__new__(StateSnapshot)
        for name in StateSnapshot.__slots__:
            object.__setattr__(copied, name, getattr(self, name))
        return copied

    def __deepcopy__(self, memo: dict[int, Any]) -> StateSnapshot:
        return self.__copy__()

    def __reduce__(self) -> Any:
        raise TypeError(
            "a StateSnapshot refers to the store that holds its data and cannot be pickled; "
            "pickle its to_dict() (id, label, timestamp, turn) or its session_data instead"
        )

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
    """The retained snapshots, oldest first: a live, read-only view of the store."""

    def __init__(self, history: Session) -> None:
        self._history = history

    def _wrap(self, sid: str) -> StateSnapshot:
        return StateSnapshot(self._history, self._history.snapshot(sid))

    def __len__(self) -> int:
        return len(self._history)

    @overload
    def __getitem__(self, index: int) -> StateSnapshot: ...
    @overload
    def __getitem__(self, index: slice) -> list[StateSnapshot]: ...
    def __getitem__(self, index: int | slice) -> StateSnapshot | list[StateSnapshot]:
        ids = self._history.snapshot_ids()
        if isinstance(index, slice):
            return [self._wrap(sid) for sid in ids[index]]
        return self._wrap(ids[index])

    def __iter__(self) -> Iterator[StateSnapshot]:
        return iter([StateSnapshot(self._history, s) for s in self._history.snapshots()])

    def __reversed__(self) -> Iterator[StateSnapshot]:
        return reversed(list(self))

    def __contains__(self, item: object) -> bool:
        return isinstance(item, StateSnapshot) and item.snapshot_id in self._history.snapshot_ids()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SnapshotSequence | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{len(self)} snapshots>"

    def __copy__(self) -> list[StateSnapshot]:
        # what a hand-written manager's list of snapshots copies to: a list, of handles here
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[StateSnapshot]:
        return list(self)

    def __reduce__(self) -> Any:
        raise TypeError(
            "mgr.snapshots is a view of the store that holds them and cannot be pickled; "
            "pickle mgr.list_snapshots() (each snapshot's to_dict()) instead"
        )


class StateRollbackManager:
    """Snapshots of a pydantic session model, with rollback that restores it in place.

    ``StateRollbackManager(session, max_snapshots=10)`` keeps snapshots in a memory
    store; pass ``store=SnapshotStore.open(path)`` and ``session_name=`` to keep them on
    disk, where a new manager on the same store and name sees them. ``max_snapshots``
    defaults to 10 for a new history and, for one the store already holds, to the limit
    stored with it: only a limit given explicitly changes a stored one. Without
    ``session_name`` the history is named after the session's ``session_id`` when it
    has one, else ``"rollback"``; in a store given as ``store``, a ``session_id`` that cannot name
    a history (a ``/`` in it, say) is refused rather than replaced by ``"rollback"``. ``fields``
    limits which fields a rollback restores (default: all, and the extra attributes of an
    ``extra="allow"`` model).
    """

    def __init__(
        self,
        session: BaseModel,
        max_snapshots: int | None = None,
        *,
        store: SnapshotStore | None = None,
        session_name: str | None = None,
        fields: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(session, BaseModel):
            raise RollbackError("session must be a pydantic BaseModel", {"type": type(session).__name__})
        self.session = session
        self._fields = None if fields is None else self._check_fields(fields)
        self.store = store if store is not None else SnapshotStore.memory()
        name = session_name if session_name is not None else _default_name(session, shared=store is not None)
        check_session_name(name)
        self.history = self._open_history(name, max_snapshots)
        self._lock = threading.RLock()

    def _open_history(self, name: str, max_snapshots: int | None) -> Session:
        """The named history with ``max_snapshots`` as its limit, as the reference manager's constructor sets it.

        A history that already holds more snapshots keeps only the newest ``max_snapshots``
        (``store.session`` refuses to lower a limit by itself: that evicts). Without a limit, a new
        history gets the reference manager's default and one the store holds keeps its own: a
        process reopening a long history with the constructor's defaults must not cut it to 10.
        The history is opened (or made) first and its limit set after, not looked for first: a
        history another process makes in between is then one the store holds, not a new one.
        """
        if max_snapshots is not None:
            check_max_snapshots(max_snapshots)
        history = self.store.session(name)  # a new one gets the default, 10; an existing one keeps its own
        if max_snapshots is not None and history.max_snapshots != max_snapshots:
            history.set_max_snapshots(max_snapshots)
        return history

    def __repr__(self) -> str:
        try:
            held = f"{len(self.history)}/{self.max_snapshots}"
        except SnapshotError:  # a closed store, a deleted history: a repr still says what it is
            held = "unreadable"
        return (
            f"<StateRollbackManager {type(self.session).__name__} history={self.history.name!r} "
            f"snapshots={held} in {self.store.describe()}>"
        )

    # -- the reference manager's API -------------------------------------
    @property
    def max_snapshots(self) -> int:
        return self.history.max_snapshots

    @max_snapshots.setter
    def max_snapshots(self, value: int) -> None:
        """Change the limit; lowering it drops the oldest snapshots at once."""
        self.history.set_max_snapshots(value)

    @property
    def snapshots(self) -> SnapshotSequence:
        return SnapshotSequence(self.history)

    @snapshots.setter
    def snapshots(self, value: Any) -> None:
        raise AttributeError(
            "snapshots is read-only (the store keeps them): set max_snapshots to keep fewer, "
            "or call clear_old_snapshots() to drop those beyond it"
        )

    def create_snapshot(self, label: str = "auto") -> StateSnapshot:
        """Snapshot the whole session model now; a later change to it never changes this snapshot."""
        with self._lock:
            data = codec.model_state(self.session)
            snap = self.history.commit(data, label=label, turn=_turn_of(self.session))
        return StateSnapshot(self.history, snap)

    def rollback_to(self, snapshot_id: str, fields: Sequence[str] | None = None) -> bool:
        """Restore the session in place from a snapshot; True on success, ``RollbackError`` otherwise.

        All or nothing: on any error the session keeps every value it had.
        """
        with self._lock:
            sid = self._resolve(snapshot_id)
            chosen = self._check_fields(fields) if fields is not None else self._fields
            try:
                restored = self._validate(self.history.state(sid))
            except Exception as exc:  # corrupt or missing objects, a model that no longer accepts the data
                raise _failed(sid, exc) from exc
            values, extra = self._plan(restored, chosen, sid)
            undo = self._apply(values, extra)
            try:
                self.history.rollback(sid)
            except BaseException as exc:
                undo()
                if isinstance(exc, Exception):
                    raise _failed(sid, exc) from exc
                raise
        return True

    def rollback_last(self) -> bool:
        """Restore the most recent snapshot."""
        ids = self.history.snapshot_ids()
        if not ids:
            raise RollbackError("No snapshots available for rollback", {"snapshot_count": 0})
        return self.rollback_to(ids[-1])

    def clear_old_snapshots(self) -> int:
        """Drop the oldest snapshots beyond ``max_snapshots`` (FIFO); returns how many.

        Snapshots leave the listing as soon as retention evicts them, so this only frees the
        space they took (which the store also does as it goes) and returns 0.
        """
        before = len(self.history)
        self.history.clear_old_snapshots()
        return max(before - len(self.history), 0)

    def list_snapshots(self) -> list[dict[str, Any]]:
        return [StateSnapshot(self.history, s).to_dict() for s in self.history.snapshots()]

    def get_snapshot_count(self) -> int:
        return len(self.history)

    # -- internals -------------------------------------------------------
    def _resolve(self, snapshot_id: str) -> str:
        try:
            return self.history.resolve(snapshot_id)
        except AmbiguousSnapshotId as exc:
            candidates = exc.details.get("candidates", [])
            raise RollbackError(
                f"Snapshot {snapshot_id} not found: the prefix matches {len(candidates)} snapshots",
                {
                    "snapshot_id": snapshot_id,
                    "candidates": candidates,
                    "available_snapshots": self._available(),
                },
            ) from None
        except SnapshotNotFound as exc:
            if exc.details.get("reason") == "lost history":  # the store lost it: say so, as damage is said
                raise _failed(str(snapshot_id), exc) from exc
            # the reference manager's words, then the reason in the manager's terms
            reason = exc.details.get("reason")
            if reason in ("evicted", "not retained"):
                why = _dropped(reason, self.max_snapshots)
            else:  # an id that is not one (a short prefix, not hex, not a string): the store's words
                why = str(exc).split(" not found: ", 1)[-1]
            raise RollbackError(
                f"Snapshot {snapshot_id} not found: {why}",
                {
                    "snapshot_id": snapshot_id,
                    "available_snapshots": self._available(),
                    "reason": exc.details.get("reason"),
                    "why": str(exc),
                },
            ) from None
        except SnapshotError as exc:  # the history cannot be read (damaged storage)
            if exc.details.get("reason") == "closed":
                raise  # a closed store is the caller's to fix, as every other method says
            raise _failed(str(snapshot_id), exc) from exc

    def _available(self) -> list[str]:
        """The ids an error message offers: none when the history is gone (deleted by another process)."""
        try:
            return self.history.snapshot_ids()
        except SnapshotNotFound:
            return []

    def _check_fields(self, fields: Sequence[str]) -> list[str]:
        known = list(type(self.session).model_fields)
        if isinstance(fields, str) or not all(isinstance(f, str) for f in fields):
            raise RollbackError("fields must be a sequence of field names", {"fields": repr(fields), "known": known})
        unknown = [f for f in fields if f not in known]
        if unknown:
            raise RollbackError(
                f"unknown fields {unknown} for {type(self.session).__name__}", {"fields": unknown, "known": known}
            )
        return list(dict.fromkeys(fields))

    def _validate(self, data: Any) -> BaseModel:
        """The model's own validation of the stored JSON: types come back as types."""
        model = type(self.session)
        computed = _computed_fields(model)
        if isinstance(data, dict) and computed:
            data = dict(data)
            for name, info in computed.items():
                data.pop(name, None)
                if info.alias:
                    data.pop(info.alias, None)
        # (pydantic before 2.11 has no by_name: the data is given by alias)
        options: dict[str, Any] = {"by_name": True} if _BY_NAME else {}
        if not _BY_NAME:
            data = _by_alias(model, data)
        try:
            return model.model_validate_json(codec.dumps(data), **options)
        except ValidationError as exc:
            if _too_deep_for_json(exc):
                # Validating the rebuilt objects instead (python mode) was tried: it gives other
                # types than JSON does (a str wins a `datetime | str` union, strict models refuse
                # enums and tuples), so such a state is refused by name, never restored altered.
                raise RollbackError(
                    f"the snapshot nests deeper than pydantic's JSON parser reads ({PYDANTIC_JSON_DEPTH} "
                    "levels), so the model cannot validate it as JSON; its state is still readable "
                    "(history.state(snapshot_id))",
                    {"reason": "nested too deeply", "limit": PYDANTIC_JSON_DEPTH},
                ) from None
            raise

    def _plan(self, restored: BaseModel, chosen: list[str] | None, sid: str) -> tuple[dict[str, Any], Any]:
        """The values a rollback sets, after checking the session may take them."""
        model = type(self.session)
        if model.model_config.get("frozen"):
            raise _failed(sid, TypeError(f"{model.__name__} is frozen: it cannot be restored in place"))
        names = chosen if chosen is not None else list(model.model_fields)
        present = restored.model_fields_set
        values = {name: restored.__dict__[name] for name in names if name in present}
        current = self.session.__dict__
        for name, value in values.items():
            if model.model_fields[name].frozen and (name not in current or current[name] != value):
                raise _failed(sid, TypeError(f"field {name!r} of {model.__name__} is frozen"))
        extra = _KEEP
        if chosen is None and model.model_config.get("extra") == "allow":
            extra = dict(restored.__pydantic_extra__ or {})
        return values, extra

    def _apply(self, values: dict[str, Any], extra: Any) -> Any:
        """Set the values on the caller's own object at once; returns a function that undoes it."""
        target = self.session
        missing = object()
        before = {name: target.__dict__.get(name, missing) for name in values}
        before_extra = target.__pydantic_extra__
        before_set = set(target.__pydantic_fields_set__)

        def undo() -> None:
            for name, value in before.items():
                if value is missing:
                    target.__dict__.pop(name, None)
                else:
                    target.__dict__[name] = value
            object.__setattr__(target, "__pydantic_extra__", before_extra)
            object.__setattr__(target, "__pydantic_fields_set__", before_set)

        try:
            new_set = before_set | values.keys()
            target.__dict__.update(values)
            if extra is not _KEEP:
                new_set = (new_set - set(before_extra or ())) | extra.keys()
                object.__setattr__(target, "__pydantic_extra__", extra)
            object.__setattr__(target, "__pydantic_fields_set__", new_set)
        except BaseException:
            undo()
            raise
        return undo


def _by_alias(model: type[BaseModel], data: Any) -> Any:
    """Older pydantic validates by alias only: put each dumped field where its validation alias
    says (a name, the first name of an ``AliasChoices``, or an ``AliasPath`` of names)."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for name, info in model.model_fields.items():
        path = _alias_path(info.validation_alias) or ([info.alias] if info.alias else None)
        if not path or path == [name] or name not in data or path[0] in data:
            continue
        value = data.pop(name)
        for key in reversed(path[1:]):
            value = {key: value}
        data[path[0]] = value
    return data


def _alias_path(alias: Any) -> list[str] | None:
    """The keys a validation alias reads a field from, when they are all names (else None)."""
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        for choice in alias.choices:
            path = _alias_path(choice)
            if path:
                return path
        return None
    if isinstance(alias, AliasPath) and alias.path and all(isinstance(key, str) for key in alias.path):
        return [str(key) for key in alias.path]
    return None


def _dropped(reason: str, max_snapshots: int) -> str:
    """Why a snapshot a manager's history no longer holds is gone, in the manager's terms."""
    if reason == "evicted":
        return (
            f"evicted by retention or forget (the manager keeps its last {max_snapshots} snapshots; "
            "raise max_snapshots to keep more)"
        )
    return (
        f"not among the snapshots the manager keeps (its last {max_snapshots}; an id evicted long ago "
        "is no longer known, and an id of another history never was)"
    )


def _failed(sid: str, exc: BaseException) -> RollbackError:
    return RollbackError(f"Failed to rollback to snapshot {sid}: {exc}", {"snapshot": sid, "error": str(exc)})


def _turn_of(session: BaseModel) -> int | None:
    """The session's ``turn_count`` when it is an integer a record can hold, else None."""
    turn = getattr(session, "turn_count", None)
    if isinstance(turn, int) and not isinstance(turn, bool) and turn in _INT64:
        return int(turn)
    return None


def _default_name(session: BaseModel, shared: bool) -> str:
    """The history's name: the session's ``session_id``, else ``"rollback"``. In a store the caller
    gave (``shared``), a ``session_id`` that cannot name a history (not a string, as a UUID or an
    int is not, or one a name cannot be) is refused: taking ``"rollback"`` instead would put the
    histories of every such session in one, and a rollback could then restore another session's
    state. A session without one (None, or no such field) takes ``"rollback"``."""
    sid = getattr(session, "session_id", None)
    if sid is None:
        return DEFAULT_SESSION_NAME
    why = "not a string" if not isinstance(sid, str) else None
    if why is None:
        try:
            return check_session_name(sid)
        except SnapshotError as exc:
            why = str(exc)
    if not shared:
        return DEFAULT_SESSION_NAME  # a memory store of this manager's own: nothing shared
    shown = shown_value(sid)
    raise RollbackError(
        f"session_id {shown} cannot name a history in the store ({why}); pass session_name= "
        f"(a history an earlier release kept for it is named {DEFAULT_SESSION_NAME!r})",
        {"session_id": shown, "reason": "unusable session_id"},
    )
