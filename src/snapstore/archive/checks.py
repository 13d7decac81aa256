"""What import refuses in an archive's objects: an archive is untrusted, so every payload must be
canonical JSON of the shape its kind promises before anything is written."""

from __future__ import annotations

from typing import Any

import orjson

from .. import codec
from ..codec import Kind
from ..errors import ArchiveError, CorruptObjectError
from ..objects import SnapshotRecord, codec_id, parse_timestamp

PATCH_OPS = frozenset(("add", "remove", "replace", "move", "copy", "test"))


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
