"""What import refuses in an archive's objects: an archive is untrusted, so every payload a session
document reaches must be canonical JSON of the shape its kind promises, and every number in range of
what the store can hold, before anything is written (one no document reaches is checked against its
id alone: ``_ArchiveReader._check_objects``)."""

from __future__ import annotations

from typing import Any

import orjson

from .. import codec
from ..codec import Kind
from ..entries import KEY_INDEPENDENT, decode_entry, encode_commit
from ..errors import ArchiveError, CorruptObjectError
from ..objects import SnapshotRecord, codec_id, format_micros, parse_micros, parse_timestamp

PATCH_OPS = frozenset(("add", "remove", "replace", "move", "copy", "test"))
MAX_INT64 = 2**63 - 1
MAX_UINT32 = 2**32 - 1
MAX_UINT64 = 2**64 - 1
#: the largest ratio a stored record may carry (entries refuse more)
MAX_BASE_RATIO = 1e6
#: bytes of UTF-8 a stored record's label may take
MAX_LABEL_BYTES = 65535


def fail(message: str, reason: str, **details: Any) -> ArchiveError:
    return ArchiveError(message, {"reason": reason, **details})


def refuse_copies(archive: str, key: str, ops: Any) -> Any:
    """Refuse ``copy`` while rebuilding from an archive: repeated copies could inflate a state without bound."""
    if isinstance(ops, list):
        for op in ops:
            if isinstance(op, dict) and op.get("op") == "copy":
                raise fail(
                    f"archive {archive}: patch {key} copies values, which import does not rebuild through",
                    "copy operation",
                    object=key,
                )
    return ops


def check_payload(archive: str, key: str, kind: int, payload: bytes) -> None:
    """The payload is canonical JSON of the right shape for its kind."""
    try:
        if kind == Kind.RECORD:
            record = SnapshotRecord.from_payload(key, payload)
            parse_timestamp(record.timestamp)  # listing the snapshot parses it
            canonical = record.to_payload() == payload
            if canonical:
                check_record_numbers(archive, key, record)
        else:
            value = orjson.loads(payload)
            canonical = codec.dumps(value) == payload
            if kind == Kind.DELTA and not is_patch(value):
                raise fail(f"archive {archive}: delta {key} is not a JSON Patch", "bad delta", object=key)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError) as exc:
        raise fail(
            f"archive {archive}: object {key} is not JSON snapstore can store: {exc}", "not JSON", object=key
        ) from None
    except CorruptObjectError as exc:
        raise fail(f"archive {archive}: {exc}", "bad record", object=key) from None
    except ValueError as exc:  # the timestamp
        raise fail(f"archive {archive}: record {key} has a bad timestamp: {exc}", "bad record", object=key) from None
    if not canonical:
        raise fail(f"archive {archive}: object {key} is not canonical JSON", "not canonical", object=key)


def check_state_patch(archive: str, key: str, payload: bytes) -> int:
    """Check a state patch's shape; returns the size of the state it declares."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        body = None
    if (
        not isinstance(body, dict)
        or set(body) != {"parent", "patch", "size"}
        or not codec_id(body["parent"])
        or not is_patch(body["patch"])
        or type(body["size"]) is not int
        or not 0 < body["size"] <= codec.MAX_OBJECT_SIZE
    ):
        raise fail(f"archive {archive}: state patch {key} is malformed", "bad state patch", object=key)
    return body["size"]


def is_patch(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(op, dict) and op.get("op") in PATCH_OPS and isinstance(op.get("path"), str) for op in value
    )


def out_of_range(archive: str, what: str, value: object, allowed: str, reason: str, **details: Any) -> ArchiveError:
    return fail(f"archive {archive}: {what} is {value!r}, outside {allowed}", reason, value=repr(value), **details)


def check_record_numbers(archive: str, key: str, record: SnapshotRecord) -> None:
    """Every number of a record fits the store's record layout, and the record survives being stored.

    A record's id hashes its JSON, so a value the store would clamp, wrap or refuse later
    (a depth of 2**32, a year-1 timestamp written back as "1-01-01") must be refused here.
    """
    limits: list[tuple[str, int | float | None, int | float, int | float]] = [
        ("turn", record.turn, -MAX_INT64 - 1, MAX_INT64),
        ("size", record.size, 0, codec.MAX_OBJECT_SIZE),
        ("depth", record.depth, 0, 0 if record.delta is None else MAX_UINT32),
        ("chain_bytes", record.chain_bytes, 0, MAX_UINT64),
        ("base_ratio", record.base_ratio, 0.0, MAX_BASE_RATIO),
    ]
    for name, value, low, high in limits:
        if value is not None and not low <= value <= high:
            raise out_of_range(
                archive, f"record {key} field {name!r}", value, f"{low} to {high}", "number out of range",
                object=key, field=name,
            )  # fmt: skip
    if len(record.label.encode("utf-8")) > MAX_LABEL_BYTES:
        raise fail(
            f"archive {archive}: record {key} has a label over {MAX_LABEL_BYTES} bytes", "bad record", object=key
        )
    try:
        round_trip = format_micros(parse_micros(record.timestamp))
    except (ValueError, OverflowError):
        round_trip = None
    if round_trip != record.timestamp:
        raise fail(
            f"archive {archive}: record {key} has timestamp {record.timestamp!r}, which the store cannot keep as is",
            "bad record",
            object=key,
        )
    try:
        stored = decode_entry(encode_commit(record, KEY_INDEPENDENT, 0, b""), record.session, f"record {key}")
        same = stored.record == record  # type: ignore[union-attr]
    except (CorruptObjectError, ValueError, OverflowError, UnicodeError):
        same = False
    if not same:
        raise fail(f"archive {archive}: record {key} cannot be stored unchanged", "bad record", object=key)


def check_session_numbers(archive: str, name: str, max_snapshots: int, generation: int) -> None:
    """A session document's limit and generation are in range (the store keeps limits as 64-bit integers)."""
    if not 1 <= max_snapshots <= MAX_INT64:
        raise out_of_range(
            archive, f"session {name!r} max_snapshots", max_snapshots, f"1 to {MAX_INT64}", "bad session document",
            session=name, field="max_snapshots",
        )  # fmt: skip
    if not 0 <= generation <= MAX_INT64:
        raise out_of_range(
            archive, f"session {name!r} generation", generation, f"0 to {MAX_INT64}", "bad session document",
            session=name, field="generation",
        )  # fmt: skip
