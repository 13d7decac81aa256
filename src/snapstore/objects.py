"""Snapshot records and the snapshot view users see.

A record is what one snapshot says about itself (parent, state hash, label,
time, turn...). Its id is the xxh3-128 hash of its canonical JSON form
(``to_payload``), the same in format versions 1 and 2: version 2 stores the
record's fields in binary (``entries``) and recomputes the JSON to hash it, so
ids survive ``snapstore upgrade`` and archives. ``SessionDoc`` is the session
document of version 1, which archives still carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import orjson

from . import codec
from .errors import CorruptObjectError, FormatVersionError, shown_value

RECORD_TYPE = "snapstore.snapshot"
SESSION_TYPE = "snapstore.session"


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """What one snapshot says about itself; its id is the hash of its canonical bytes."""

    session: str
    parent: str | None
    state: str  # hash of the canonical state; also the id of the state object when one exists
    delta: str | None  # id of the patch from the parent's state; None for a keyframe
    label: str
    timestamp: str  # ISO 8601, UTC, microseconds, "Z"
    turn: int | None
    size: int  # bytes of the canonical state
    depth: int  # deltas since the keyframe (0 for a keyframe)
    chain_bytes: int  # stored bytes of those deltas
    base_ratio: float  # stored/raw bytes of that keyframe, to estimate a full state's cost

    @property
    def is_keyframe(self) -> bool:
        return self.delta is None

    def snapshot_id(self) -> str:
        return codec.object_id(self.to_payload())

    def to_payload(self) -> bytes:
        return record_payload(
            self.session,
            self.parent,
            self.state,
            self.delta,
            self.label,
            self.timestamp,
            self.turn,
            self.size,
            self.depth,
            self.chain_bytes,
            self.base_ratio,
        )

    @classmethod
    def from_payload(cls, key: str, payload: bytes) -> SnapshotRecord:
        body = _parse(key, payload, RECORD_TYPE)
        try:
            record = cls(
                session=_typed(body, "session", str),
                parent=_optional_id(body, "parent"),
                state=_id(body, "state"),
                delta=_optional_id(body, "delta"),
                label=_typed(body, "label", str),
                timestamp=_typed(body, "timestamp", str),
                turn=_typed(body, "turn", int, optional=True),
                size=_typed(body, "size", int),
                depth=_typed(body, "depth", int),
                chain_bytes=_typed(body, "chain_bytes", int),
                base_ratio=_typed(body, "base_ratio", float),
            )
        except _FieldError as exc:
            raise CorruptObjectError(
                f"snapshot record {key} is malformed: {exc}", {"object": key, "reason": str(exc)}
            ) from None
        try:
            parse_timestamp(record.timestamp)
        except ValueError:
            raise CorruptObjectError(
                f"snapshot record {key} has a malformed timestamp", {"object": key, "reason": "bad timestamp"}
            ) from None
        if record.parent is None and record.delta is not None:
            raise CorruptObjectError(
                f"snapshot record {key} has a delta but no parent", {"object": key, "reason": "delta without parent"}
            )
        return record


def record_payload(
    session: str,
    parent: str | None,
    state: str,
    delta: str | None,
    label: str,
    timestamp: str,
    turn: int | None,
    size: int,
    depth: int,
    chain_bytes: int,
    base_ratio: float,
) -> bytes:
    """The canonical JSON of the record with these fields (``SnapshotRecord``'s, in order): what its id hashes."""
    return codec.dumps(
        {
            "type": RECORD_TYPE,
            "format": codec.FORMAT_VERSION,
            "session": session,
            "parent": parent,
            "state": state,
            "delta": delta,
            "label": label,
            "timestamp": timestamp,
            "turn": turn,
            "size": size,
            "depth": depth,
            "chain_bytes": chain_bytes,
            "base_ratio": base_ratio,
        }
    )


def record_id(*fields: Any) -> str:
    """The id of the record with these fields (``SnapshotRecord``'s, in order), without making it:
    indexing a log hashes every record, and most are never asked for."""
    return codec.object_id(record_payload(*fields))


@dataclass(slots=True)
class SessionDoc:
    """A session's mutable state, stored as an immutable object that its ref points at."""

    name: str
    max_snapshots: int
    head: str | None = None
    snapshots: list[str] = field(default_factory=list)  # retained, oldest first
    bases: list[str] = field(default_factory=list)  # snapshots squashed to a stored full state
    evicted: list[str] = field(default_factory=list)  # left the listing, storage not yet reclaimed
    generation: int = 0  # one more than the document this one replaced

    def to_payload(self) -> bytes:
        return codec.dumps(
            {
                "type": SESSION_TYPE,
                "format": codec.FORMAT_VERSION,
                "name": self.name,
                "max_snapshots": self.max_snapshots,
                "head": self.head,
                "snapshots": self.snapshots,
                "bases": self.bases,
                "evicted": self.evicted,
                "generation": self.generation,
            }
        )

    @classmethod
    def from_payload(cls, key: str, payload: bytes) -> SessionDoc:
        body = _parse(key, payload, SESSION_TYPE)
        try:
            snapshots = _typed(body, "snapshots", list)
            evicted = _typed(body, "evicted", list)
            bases = _typed(body, "bases", list)
            if not all(codec_id(s) for s in [*snapshots, *evicted, *bases]):
                raise _FieldError("snapshot ids must be 32 hex digits")
            doc = cls(
                name=_typed(body, "name", str),
                max_snapshots=_typed(body, "max_snapshots", int),
                head=_optional_id(body, "head"),
                snapshots=snapshots,
                bases=bases,
                evicted=evicted,
                generation=_typed(body, "generation", int),
            )
            if doc.max_snapshots < 1:  # format.md: at least 1; 0 would evict the whole session
                raise _FieldError("field 'max_snapshots' must be at least 1")
        except _FieldError as exc:
            raise CorruptObjectError(
                f"session document {key} is malformed: {exc}", {"object": key, "reason": str(exc)}
            ) from None
        return doc

    def copy(self) -> SessionDoc:
        return SessionDoc(
            self.name,
            self.max_snapshots,
            self.head,
            list(self.snapshots),
            list(self.bases),
            list(self.evicted),
            self.generation,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One retained snapshot, as users see it."""

    id: str
    parent: str | None
    label: str
    timestamp: datetime
    turn: int | None
    state_hash: str
    session: str
    kind: Literal["full", "delta"]
    size: int
    tags: tuple[str, ...] = ()

    @classmethod
    def from_record(
        cls, snapshot_id: str, record: SnapshotRecord, tags: tuple[str, ...] = (), stored_as_delta: bool = False
    ) -> Snapshot:
        """``stored_as_delta``: its payload is a delta whatever the record says (format 3's delta
        against a base other than the parent has a record that names no delta)."""
        return cls(
            id=snapshot_id,
            parent=record.parent,
            label=record.label,
            timestamp=parse_timestamp(record.timestamp),
            turn=record.turn,
            state_hash=record.state,
            session=record.session,
            kind="full" if record.is_keyframe and not stored_as_delta else "delta",
            size=record.size,
            tags=tags,
        )

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as JSON-ready values (the timestamp in ISO 8601)."""
        return {
            "id": self.id,
            "parent": self.parent,
            "label": self.label,
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),
            "turn": self.turn,
            "state_hash": self.state_hash,
            "session": self.session,
            "kind": self.kind,
            "size": self.size,
            "tags": list(self.tags),
        }


_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def format_timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_timestamp(text: str) -> datetime:
    """A record's timestamp: exactly ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, in UTC (ValueError otherwise)."""
    if not isinstance(text, str) or not _TIMESTAMP.fullmatch(text):
        raise ValueError(f"not a record timestamp: {text!r}")
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=timezone.utc)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_micros(text: str) -> int:
    """A record timestamp as microseconds since 1970 (exact: the text has microsecond precision)."""
    moment = parse_timestamp(text) - _EPOCH
    return (moment.days * 86_400 + moment.seconds) * 1_000_000 + moment.microseconds


def format_micros(micros: int) -> str:
    """``format_timestamp`` of a moment given in microseconds since 1970 (OverflowError out of range)."""
    second, fraction = divmod(micros, 1_000_000)
    prefix = _SECONDS.get(second)
    if prefix is None:  # opening a session formats every record's time: a second's prefix once
        minute, within = divmod(second, 60)
        start = _MINUTES.get(minute)
        if start is None:
            start = format_timestamp(_EPOCH + timedelta(minutes=minute))[:17]
            if len(_MINUTES) >= 4096:
                _MINUTES.clear()
            _MINUTES[minute] = start
        prefix = f"{start}{within:02d}."
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        _SECONDS[second] = prefix
    return f"{prefix}{fraction:06d}Z"


_SECONDS: dict[int, str] = {}
_MINUTES: dict[int, str] = {}


class _FieldError(Exception):
    pass


def codec_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def _parse(key: str, payload: bytes, expected_type: str) -> dict[str, Any]:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise CorruptObjectError(f"object {key} is not JSON: {exc}", {"object": key, "reason": "not JSON"}) from None
    if not isinstance(body, dict) or body.get("type") != expected_type:
        raise CorruptObjectError(
            f"object {key} is not a {expected_type} object", {"object": key, "reason": "wrong type"}
        )
    version = body.get("format")
    if type(version) is not int or version < 1:
        # no version at all, not a newer one; and 1.0 and true equal 1 in Python but are not the integer 1
        raise CorruptObjectError(
            f"object {key} has format {shown_value(version, 40)}, which is no version number",
            {"object": key, "reason": "bad format"},
        )
    if version != codec.FORMAT_VERSION:
        raise FormatVersionError(
            f"object {key} has format {body.get('format')!r}; this build reads {codec.FORMAT_VERSION}",
            {"object": key, "version": body.get("format"), "supported": codec.FORMAT_VERSION},
        )
    return body


def _typed(body: dict[str, Any], name: str, kind: type, *, optional: bool = False) -> Any:
    if name not in body:
        raise _FieldError(f"field {name!r} is missing")
    value = body[name]
    if value is None and optional:
        return None
    if kind is int and type(value) is not int:
        raise _FieldError(f"field {name!r} must be an integer")
    if kind is float and type(value) not in (float, int):
        raise _FieldError(f"field {name!r} must be a number")
    if not isinstance(value, kind):
        raise _FieldError(f"field {name!r} must be {kind.__name__}")
    return float(value) if kind is float else value  # type: ignore[arg-type]


def _id(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not codec_id(value):
        raise _FieldError(f"field {name!r} must be a 32-digit hex id")
    return value  # type: ignore[return-value]


def _optional_id(body: dict[str, Any], name: str) -> str | None:
    if name not in body:
        raise _FieldError(f"field {name!r} is missing")
    return None if body[name] is None else _id(body, name)
