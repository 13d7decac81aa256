"""Canonical JSON, hashing and the object envelope: the bottom layer.

Everything snapstore stores is bytes produced here:

* canonical JSON: ``orjson`` with sorted keys and no whitespace. Two JSON
  values are equal for snapstore exactly when their canonical bytes are equal,
  so ``1``, ``1.0`` and ``true`` stay three different values;
* the object id: the xxh3-128 digest (32 lowercase hex digits) of the
  uncompressed payload;
* the envelope: a 16-byte header (magic, format version, kind, codec, size)
  followed by the payload, zstd-compressed. docs/format.md gives the bytes.
"""

from __future__ import annotations

import enum
import struct
import threading
from typing import Any

import orjson
import xxhash
import zstandard

from .errors import CorruptObjectError, FormatVersionError, InvalidStateError

FORMAT_VERSION = 1
MAGIC = b"SNPO"
HEADER = struct.Struct("<4sBBBxQ")  # magic, version, kind, codec, reserved, raw size
HEADER_SIZE = HEADER.size

CODEC_RAW = 0
CODEC_ZSTD = 1


class Kind(enum.IntEnum):
    """What an object's payload is; stored in the envelope header."""

    STATE = 1  # canonical JSON of a full state (a keyframe or a squash base)
    DELTA = 2  # canonical JSON of an RFC 6902 patch (a list of operations)
    RECORD = 3  # canonical JSON of a snapshot record
    SESSION = 4  # canonical JSON of a session document


#: refuse to inflate any single object beyond this (decompression-bomb guard)
MAX_OBJECT_SIZE = 1 << 30
#: payloads smaller than this are stored uncompressed: zstd would only add bytes
RAW_BELOW = 64

_DUMPS_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_SCALARS = frozenset((str, int, bool, type(None)))


def _refuse(value: Any) -> Any:
    raise TypeError(f"type {type(value).__name__} is not JSON")


def canonical_bytes(value: Any) -> bytes:
    """The canonical JSON of ``value``, or ``InvalidStateError`` saying why there is none.

    Only dict (str keys), list, str, int (64-bit), float (finite), bool and
    None are accepted, so that reading the bytes back gives the same types.
    """
    data = _dumps_checked(value)
    _check_types(value)
    return data


def encode_state(value: Any) -> tuple[bytes, dict[str, bytes] | None]:
    """Canonical bytes of a state, plus each top-level member's own bytes when it is an object.

    The pieces let a commit compare each member with the head's at C speed,
    and the whole is assembled from them, so the state is serialized once.
    Only orjson's checks run here; ``check_values`` finds the rest.
    """
    if type(value) is not dict:
        return _dumps_bounded(value, 2), None
    pieces: dict[str, bytes] = {}
    for key, member in value.items():
        if type(key) is not str:
            raise _invalid(value, "Dict key must be str")
        pieces[key] = _dumps_bounded(member, 3)
    try:
        return join_members(pieces), pieces
    except (TypeError, orjson.JSONEncodeError) as exc:  # a key orjson refuses (a lone surrogate)
        raise _invalid(value, str(exc)) from None


def join_members(pieces: dict[str, bytes]) -> bytes:
    """Canonical bytes of an object from its members' canonical bytes (keys sorted as orjson sorts)."""
    # One join into one buffer: chained ``+`` on megabyte pieces costs several times the serialization.
    parts: list[bytes] = []
    for key in sorted(pieces):
        parts += (b"," if parts else b"{", orjson.dumps(key), b":", pieces[key])
    parts.append(b"}" if parts else b"{}")
    return b"".join(parts)


def _dumps_bounded(value: Any, spare: int) -> bytes:
    """orjson's bytes of ``value``, refusing it unless ``spare`` more levels of nesting would fit.

    orjson stops at depth 254. A state must leave room for the two levels a patch operation
    wraps around a value (and a member for the object holding it), or a later delta, or reading
    the whole state back, would hit that limit: so the value is serialized inside that many lists.
    """
    data = _dumps_checked(_wrap(value, spare))
    return data[spare:-spare]


def _wrap(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = [value]
    return value


def _dumps_checked(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=_refuse, option=_DUMPS_OPTIONS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise _invalid(value, str(exc)) from None


def check_values(values: Any) -> None:
    """Refuse values orjson writes but cannot give back (NaN, Infinity, enums, UUIDs, tuples)."""
    _check_types(values)


def dumps(value: Any) -> bytes:
    """Canonical JSON of a value already known to be valid (no checks beyond orjson's)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def loads(data: bytes | memoryview) -> Any:
    return orjson.loads(data)


def _check_types(root: Any) -> None:
    """Find what orjson writes silently but cannot give back: NaN, Infinity, enums, UUIDs, tuples.

    orjson has already refused cycles, depth, non-string keys and big integers.
    """
    stack = [root]
    push, pop, scalars = stack.append, stack.pop, _SCALARS
    while stack:
        node = pop()
        tnode = type(node)
        if tnode is dict:
            children = node.values()
        elif tnode is list:
            children = node
        elif tnode in scalars:
            continue
        else:
            _check_leaf(node)
            continue
        for child in children:
            tchild = type(child)
            if tchild in scalars:
                continue
            if tchild is float:
                if child - child != 0.0:
                    raise _invalid(child, "NaN and Infinity have no JSON form")
                continue
            push(child)


def _check_leaf(node: Any) -> None:
    if type(node) is float:
        if node - node != 0.0:
            raise _invalid(node, "NaN and Infinity have no JSON form")
        return
    if isinstance(node, enum.Enum):
        raise _invalid(node, "enum members are not JSON; store their value")
    # Subclasses of dict/list/str/int/float end here too: orjson has refused them already (they
    # go to ``_refuse`` through OPT_PASSTHROUGH_SUBCLASS), so reaching this is the same refusal.
    raise _invalid(node, f"type {type(node).__name__} is not JSON")


def _invalid(value: Any, reason: str) -> InvalidStateError:
    if "Recursion limit" in reason:
        reason = "nested too deeply or contains a cycle (orjson stops at depth 254)"
    elif "Integer exceeds" in reason:
        reason = "integer outside the 64-bit range JSON readers accept"
    elif "surrogates" in reason:
        reason = "string with a lone surrogate is not valid UTF-8"
    return InvalidStateError(
        f"state cannot be stored as JSON: {reason}",
        {"reason": reason, "type": type(value).__name__},
    )


def object_id(payload: bytes | memoryview) -> str:
    """The content address of a payload: xxh3-128 as 32 lowercase hex digits."""
    return xxhash.xxh3_128_hexdigest(payload)


class _Codecs(threading.local):
    """zstd contexts are not thread-safe; each thread reuses its own."""

    def __init__(self) -> None:
        self.compressors: dict[int, zstandard.ZstdCompressor] = {}
        self.decompressor = zstandard.ZstdDecompressor()

    def compressor(self, level: int) -> zstandard.ZstdCompressor:
        cctx = self.compressors.get(level)
        if cctx is None:
            cctx = self.compressors[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
        return cctx


_codecs = _Codecs()


def encode_object(kind: Kind, payload: bytes, level: int = 3) -> tuple[str, bytes]:
    """(id, stored bytes) of a payload: header plus zstd frame (or raw when tiny)."""
    key = object_id(payload)
    if len(payload) < RAW_BELOW:
        body, codec = payload, CODEC_RAW
    else:
        body, codec = _codecs.compressor(level).compress(payload), CODEC_ZSTD
    return key, HEADER.pack(MAGIC, FORMAT_VERSION, int(kind), codec, len(payload)) + body


def read_header(key: str, blob: bytes) -> tuple[Kind, int, int]:
    """(kind, codec, raw size) from an object's header, refusing anything malformed."""
    if len(blob) < HEADER_SIZE:
        raise CorruptObjectError(
            f"object {key} is truncated ({len(blob)} bytes, header needs {HEADER_SIZE})",
            {"object": key, "reason": "truncated header"},
        )
    magic, version, kind, codec, size = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CorruptObjectError(f"object {key} has no snapstore header", {"object": key, "reason": "bad magic"})
    if version > FORMAT_VERSION or version < 1:
        raise FormatVersionError(
            f"object {key} has format version {version}; this build reads version {FORMAT_VERSION}",
            {"object": key, "version": version, "supported": FORMAT_VERSION},
        )
    try:
        kind_value = Kind(kind)
    except ValueError:
        raise CorruptObjectError(
            f"object {key} has unknown kind {kind}", {"object": key, "reason": "bad kind"}
        ) from None
    if codec not in (CODEC_RAW, CODEC_ZSTD):
        raise CorruptObjectError(f"object {key} has unknown codec {codec}", {"object": key, "reason": "bad codec"})
    if size > MAX_OBJECT_SIZE:
        raise CorruptObjectError(
            f"object {key} declares {size} bytes, over the {MAX_OBJECT_SIZE} limit",
            {"object": key, "reason": "too large", "size": size},
        )
    return kind_value, codec, size


def decode_object(key: str, blob: bytes, expected: Kind | None = None) -> bytes:
    """The verified payload of a stored object; ``CorruptObjectError`` naming it otherwise."""
    # ``expected`` is not enforced: an object is its payload, and byte-identical payloads of two
    # kinds (the state ``[]`` and the empty patch ``[]``) are one object, whose header names the
    # kind written first. Callers parse the payload as the kind they need, and refuse it there.
    _kind, codec, size = read_header(key, blob)
    body = memoryview(blob)[HEADER_SIZE:]
    if codec == CODEC_RAW:
        payload = bytes(body)
    else:
        try:
            declared = zstandard.frame_content_size(body)
            if declared not in (size, -1):  # never let the frame make us allocate what it claims
                raise CorruptObjectError(
                    f"object {key} has a zstd frame declaring {declared} bytes, its header says {size}",
                    {"object": key, "reason": "size mismatch"},
                )
            payload = _codecs.decompressor.decompress(body, max_output_size=size)
        except zstandard.ZstdError as exc:
            raise CorruptObjectError(
                f"object {key} does not decompress: {exc}", {"object": key, "reason": "bad zstd frame"}
            ) from None
    if len(payload) != size:
        raise CorruptObjectError(
            f"object {key} holds {len(payload)} bytes, its header says {size}",
            {"object": key, "reason": "size mismatch"},
        )
    actual = object_id(payload)
    if actual != key:
        raise CorruptObjectError(
            f"object {key} does not match its hash (content hashes to {actual})",
            {"object": key, "reason": "hash mismatch", "actual": actual},
        )
    return payload
