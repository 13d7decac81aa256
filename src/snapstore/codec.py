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
import sys
import threading
import weakref
from functools import partial
from math import isfinite as _isfinite
from operator import itemgetter
from typing import Any

import orjson
import xxhash
import zstandard

from .errors import CorruptObjectError, FormatVersionError, InvalidStateError
from .refusals import (
    INT_RANGE_REASON,
    ORJSON_MAX_DEPTH,
    first_unrepresentable,
    first_unserializable,
    unwritable_in_model,
)

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


def _refuse(value: Any) -> Any:
    raise TypeError(f"type {type(value).__name__} is not JSON")


def json_base(value: Any) -> Any:
    """A subclass of a JSON type as its base type's value (OrderedDict -> dict, a str subclass -> str).

    The base types' own methods are called, so a subclass's overrides cannot change what is stored.
    """
    for base in _BASES:
        if isinstance(value, base):
            return _TO_BASE[base](value)
    return _refuse(value)


def _dict_of(value: dict[str, Any]) -> dict[str, Any]:
    return dict(dict.items(value))  # the stored items, whatever the subclass's keys/__iter__ say


_TO_BASE: dict[type, Any] = {
    dict: _dict_of,
    list: list.copy,
    str: str.__str__,
    int: int.__int__,
    float: float.__float__,
}
_BASES = tuple(_TO_BASE)


def model_state(state: Any) -> Any:
    """A pydantic model as the JSON value it is stored as: its ``model_dump(mode="json")``, except
    that NaN and ±Infinity stay floats wherever they stand, so the whole-state check refuses them.

    pydantic writes them as ``null`` in values it serializes without a declared type (a ``dict``
    or ``Any`` field, or a list of them) while a ``float`` field keeps them, and a commit would
    store ``null`` for a NaN without a word: the model is serialized by a serializer built from
    its own schema with ``ser_json_inf_nan="constants"``, which writes everything else the same
    (aliases, field and model serializers, computed fields, the model's other settings). A model
    class that overrides ``model_dump`` is asked through it. Anything not a model is returned as it is.
    """
    pydantic = sys.modules.get("pydantic")  # no model can exist unless pydantic was imported
    if pydantic is None or not isinstance(state, pydantic.BaseModel):
        return state
    try:
        serializer = _model_serializer(type(state), pydantic.BaseModel)
        if serializer is None:
            return state.model_dump(mode="json")
        return serializer.to_python(state, mode="json")
    except ValueError as exc:  # pydantic's serialization error: a field it cannot write as JSON
        details = {"reason": "model does not serialize", "type": type(state).__name__}
        path = unwritable_in_model(state, pydantic)
        if path is not None:  # pydantic's message does not say where: found again to say so
            path = details["path"] = path.encode("utf-8", "backslashreplace").decode("utf-8")
        where = "" if path is None else f" (at {path or 'the top level'})"
        message = f"state cannot be stored as JSON: the model does not serialize: {exc}{where}"
        raise InvalidStateError(message, details) from None


#: each model class's serializer keeping NaN and ±Infinity (``model_state``), built once per class, with
#: pydantic's own serializer it was built beside (a ``model_rebuild`` makes a new one)
_MODEL_SERIALIZERS: weakref.WeakKeyDictionary[type, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def _model_serializer(cls: Any, base: type) -> Any:
    """The serializer ``model_state`` uses for ``cls``, or None to call its own ``model_dump``."""
    if getattr(cls, "model_dump", None) is not getattr(base, "model_dump", None):
        return None
    if not getattr(cls, "__pydantic_complete__", False):
        return None  # not fully defined yet: its model_dump says why
    built_from = cls.__pydantic_serializer__
    kept = _MODEL_SERIALIZERS.get(cls)
    if kept is not None and kept[0] is built_from:  # (a model_rebuild made pydantic's serializer anew)
        return kept[1]
    try:
        # pydantic-core's SchemaSerializer, reached through the model's own serializer: the class
        # pydantic (which snapstore depends on) builds it with, not a dependency of snapstore's own
        schema = cls.__pydantic_core_schema__
        config = {**_model_config(schema, cls), "ser_json_inf_nan": "constants"}  # the model's settings, bar one
        found = type(built_from)(schema, config)
    except Exception:  # a serializer that cannot be made so: the model's own model_dump is asked
        return None
    _MODEL_SERIALIZERS[cls] = (built_from, found)
    return found


def _model_config(schema: Any, cls: Any) -> dict[str, Any]:
    """The settings a model's own serializer was built with (its ``ser_json_timedelta``,
    ``ser_json_bytes`` and the rest, which values of no declared type follow), from the node of its
    schema that is the model itself, wherever validators, custom schemas or references put it."""
    stack, seen = [schema], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            if node.get("type") == "model" and node.get("cls") is cls:
                config = node.get("config")
                return dict(config) if isinstance(config, dict) else {}
            stack.extend(value for value in node.values() if isinstance(value, (dict, list)))
        elif isinstance(node, list):
            stack.extend(value for value in node if isinstance(value, (dict, list)))
    return {}


def plain_copy(value: Any) -> Any:
    """``value`` with each subclass of a JSON type replaced by its base type's value, read with the
    base types' own methods; every other value (enum members included: orjson writes their
    ``.value``) is kept as it is. Comparing a reading with this copy runs no subclass's ``__eq__``,
    which could otherwise claim equality and hide a NaN inside it."""
    if isinstance(value, enum.Enum) or type(value) in _EXACT_LEAVES:
        return value
    if isinstance(value, dict):
        return {key: plain_copy(child) for key, child in dict.items(value)}
    if isinstance(value, list):
        return [plain_copy(child) for child in list.copy(value)]
    for base in _BASES:
        if isinstance(value, base):
            return _TO_BASE[base](value)
    return value


_EXACT_LEAVES = frozenset((str, int, float, bool, type(None)))


def encode_state(value: Any) -> tuple[bytes, dict[str, bytes] | None, bool]:
    """Canonical bytes of a state, each top-level member's own bytes when it is an object, and
    whether a subclass of a JSON type was written as its base type (``encode_members``, joined)."""
    data, pieces, converted = encode_members(value)
    if data is None:
        assert pieces is not None
        data = _joined(value, pieces)
    return data, pieces, converted


class Canonical:
    """A state's canonical bytes as a commit needs them: their size and hash at once, the bytes
    themselves only when asked for (``data``).

    A state that is an object of large members (``_STREAMED_MEMBER_BYTES``) is hashed member by
    member, xxh3 streamed over the object's syntax and each member's bytes, so a commit that
    stores a delta never assembles the whole state, a copy of its size (70 us of a 1.2 MB
    state's commit, where the streamed hash costs 27 and the hash of the joined bytes 22)."""

    __slots__ = ("_data", "converted", "pieces", "size", "state_hash")

    def __init__(
        self, data: bytes | None, pieces: dict[str, bytes] | None, converted: bool, size: int, state_hash: str
    ) -> None:
        self._data = data
        self.pieces = pieces
        self.converted = converted
        self.size = size
        self.state_hash = state_hash

    @property
    def data(self) -> bytes:
        if self._data is None:
            assert self.pieces is not None
            self._data = join_members(self.pieces)
        return self._data


#: a state whose members average at least this many bytes is hashed member by member: the Python
#: step each member costs there is about what copying 3 kB costs when the members are joined
#: (streamed 2.8 against joined 2.6 us for 8 members of 1 kB, 25.0 against 27.8 for 64 of 4 kB,
#: 45.7 against 106.8 for 64 of 16 kB; hashing included, ``timeit`` on this machine)
_STREAMED_MEMBER_BYTES = 3072


def encode_canonical(value: Any) -> Canonical:
    """``encode_state``'s bytes as a ``Canonical``: size and hash now, the bytes when asked for."""
    data, pieces, converted = encode_members(value)
    if (
        data is None
        and pieces is not None
        and len(pieces) <= _MANY_MEMBERS  # (its keys were checked to be str one by one)
        and sum(map(len, pieces.values())) >= _STREAMED_MEMBER_BYTES * len(pieces)
    ):
        try:
            state_hash, size = members_id(pieces)
        except orjson.JSONEncodeError:  # a key with a lone surrogate
            raise _refused_at(value) from None
        return Canonical(None, pieces, converted, size, state_hash)
    if data is None:
        assert pieces is not None
        data = _joined(value, pieces)
    return Canonical(data, pieces, converted, len(data), object_id(data))


def _joined(value: Any, pieces: dict[str, bytes]) -> bytes:
    try:
        return join_members(pieces)
    except (TypeError, orjson.JSONEncodeError):  # a key orjson refuses (not a string, a lone surrogate)
        raise _refused_at(value) from None


def members_id(pieces: dict[str, bytes]) -> tuple[str, int]:
    """The object id and the size of ``join_members(pieces)``, without joining them: the same
    bytes (keys sorted as orjson sorts, each written as orjson writes a string) fed to xxh3 in
    pieces."""
    digest = xxhash.xxh3_128()
    update = digest.update
    update(b"{")
    size = 2
    separator = b""
    for key in sorted(pieces):
        piece = pieces[key]
        prefix = separator + orjson.dumps(key) + b":"
        update(prefix)
        update(piece)
        size += len(prefix) + len(piece)
        separator = b","
    update(b"}")
    return digest.hexdigest(), size


def encode_members(value: Any) -> tuple[bytes | None, dict[str, bytes] | None, bool]:
    """Canonical bytes of a state that is not an object (None for one that is), each top-level
    member's own bytes when it is an object, and whether a subclass of a JSON type was written
    as its base type.

    The pieces let a commit compare each member with the head's at C speed, and
    the whole state's bytes and hash come from them (``encode_state``,
    ``encode_canonical``), so the state is serialized once.
    Only orjson's checks run here; ``check_reading`` finds the rest. A refusal
    names the value and its JSON pointer.

    Memory stays within a few times the state's JSON size: every kept piece is
    its own size, and a long list or a wide object is written a chunk of items
    at a time (orjson reserves a buffer by the number of items it is given,
    ~20x the JSON of a list of small values, and keeps it in the bytes it returns).
    """
    converted = False

    def to_base(obj: Any) -> Any:
        nonlocal converted
        base = json_base(obj)
        converted = True
        return base

    if type(value) is not dict:
        return _encode_bounded(value, 2, to_base, value), None, converted
    pieces: dict[str, bytes] = {}
    if len(value) > _MANY_MEMBERS:
        # Many members: serialized in one pass of C calls, each wrapped in three 1-tuples (the
        # levels kept spare; orjson writes tuples as arrays) and cut out of orjson's buffer by
        # a slice. A Python loop here cost several times the serialization. (A long list among
        # so many members is written whole, its buffer reserved once while it is written.)
        dumps = partial(orjson.dumps, default=to_base, option=_DUMPS_OPTIONS)
        try:
            wrapped = zip(zip(zip(value.values())))
            pieces = dict(zip(value.keys(), map(_CUT_SPARE, map(dumps, wrapped)), strict=True))
        except (TypeError, orjson.JSONEncodeError):
            raise _refused_at(value) from None
    else:
        for key, member in value.items():
            if type(key) is not str:
                raise _refused_at(value)
            pieces[key] = _encode_bounded(member, 3, to_base, value)
    return None, pieces, converted


def join_members(pieces: dict[str, bytes]) -> bytes:
    """Canonical bytes of an object from its members' canonical bytes (keys sorted as orjson sorts)."""
    # orjson writes (and escapes) the keys, a chunk of members at a time, splicing in each member's
    # bytes; Python's sort is orjson's (code points; lone surrogates are refused), so chunks follow
    # each other in order. One join into one buffer: chained ``+`` would copy megabytes many times.
    keys = sorted(pieces)
    if len(keys) <= _CHUNK_ITEMS:  # one chunk: orjson's bytes are the whole, braces and all
        return orjson.dumps(dict(zip(keys, map(orjson.Fragment, map(pieces.__getitem__, keys)), strict=True)))
    parts: list[bytes | memoryview] = [b"{"]
    for start in range(0, len(keys), _CHUNK_ITEMS):
        names = keys[start : start + _CHUNK_ITEMS]
        chunk = dict(zip(names, map(orjson.Fragment, map(pieces.__getitem__, names)), strict=True))
        if start:
            parts.append(b",")
        parts.append(memoryview(orjson.dumps(chunk))[1:-1])  # copied once, by the join
    parts.append(b"}")
    return b"".join(parts)


#: a list or object with more items than this is written a chunk of items at a time
_CHUNK_ITEMS = 1024
#: a state with more members than this has them serialized by C calls alone
_MANY_MEMBERS = 4096
_CUT_SPARE = itemgetter(slice(3, -3))


def _encode_bounded(value: Any, spare: int, default: Any, root: Any) -> bytes:
    """orjson's bytes of ``value`` (a member of the state ``root``, or ``root`` itself), a chunk at a
    time when it is a long list or a wide object, refusing it unless ``spare`` more levels would fit."""
    kind = type(value)
    if (kind is not list and kind is not dict) or len(value) <= _CHUNK_ITEMS:
        return _dumps_bounded(value, spare, default, root)
    parts: list[bytes | memoryview] = [b"[" if kind is list else b"{"]
    if kind is list:
        chunks: Any = (value[start : start + _CHUNK_ITEMS] for start in range(0, len(value), _CHUNK_ITEMS))
    else:
        try:
            keys = sorted(value)
        except TypeError:  # keys that do not even compare: not all strings
            raise _refused_at(root) from None
        chunks = (
            {key: value[key] for key in keys[start : start + _CHUNK_ITEMS]}
            for start in range(0, len(keys), _CHUNK_ITEMS)
        )
    for chunk in chunks:
        if len(parts) > 1:
            parts.append(b",")
        parts.append(_dumps_bounded(chunk, spare, default, root, strip=1, view=True))
    parts.append(b"]" if kind is list else b"}")
    return b"".join(parts)  # the one copy of the chunks' bytes, of its own size


def _dumps_bounded(value: Any, spare: int, default: Any, root: Any, strip: int = 0, view: bool = False) -> Any:
    """orjson's bytes of ``value``, refusing it unless ``spare`` more levels of nesting would fit.

    orjson stops at depth 254. A state must leave room for the two levels a patch operation
    wraps around a value (and a member for the object holding it), or a later delta, or reading
    the whole state back, would hit that limit: so the value is serialized inside that many lists.
    The result is a copy of its own size (orjson's buffer is larger), less ``strip`` bytes at each end;
    with ``view``, a memoryview of orjson's bytes instead, for a caller that copies it right away.
    """
    wrapped = value
    for _ in range(spare):
        wrapped = [wrapped]
    try:
        data = orjson.dumps(wrapped, default=default, option=_DUMPS_OPTIONS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise _refused_at(root, str(exc)) from None
    if view:
        return memoryview(data)[spare + strip : -(spare + strip)]
    return data[spare + strip : -(spare + strip)]


def _refused_at(state: Any, fallback: str = "not JSON") -> InvalidStateError:
    """The error naming the first value of ``state`` that orjson refuses to write, and where it is."""
    try:  # the state itself, as every member, keeps two levels spare
        found = first_unserializable(state, ORJSON_MAX_DEPTH - 2)
    except Exception:  # a value's own methods failed while we looked
        found = None
    if found is None:
        return _invalid(state, fallback)
    node, reason, where = found
    return _invalid(node, reason, where)


def read_back(data: bytes, value: Any) -> Any:
    """What ``data``, the canonical bytes of ``value``, reads back as; refused unless equal to ``value``."""
    try:
        reading = orjson.loads(data)
    except orjson.JSONDecodeError:  # only an orjson.Fragment can splice in bytes that do not parse
        raise describe_unrepresentable(value) from None
    check_reading(value, reading)
    return reading


#: what ``shared_copy`` returns for a value that is not plain JSON of exact types
NOT_PLAIN: Any = object()


def shared_copy(value: Any) -> Any:
    """A copy of ``value`` with new containers and the very same immutable leaves, or ``NOT_PLAIN``.

    Only plain JSON of exact types is copied: dicts with str keys, lists, str, int, finite
    float, bool and None. Anything else (a tuple, NaN, an enum, a subclass) gives ``NOT_PLAIN``,
    and the caller reads the value back from its bytes instead, where ``check_reading`` names
    it. A head built from such copies shares its strings with the caller's state, so comparing
    the two (``check_reading``) meets the same string objects and skips reading their
    characters: the comparison walks the containers, not the text.
    """
    try:
        return _shared(value)
    except (_NotPlain, RecursionError):
        return NOT_PLAIN


class _NotPlain(Exception):
    pass


def _shared(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        for key in value:
            if type(key) is not str:
                raise _NotPlain
        return {key: _shared(child) for key, child in value.items()}
    if kind is list:
        return [_shared(child) for child in value]
    if kind is float and _isfinite(value):
        return value
    raise _NotPlain


def check_reading(value: Any, reading: Any) -> None:
    """Refuse ``value`` unless it equals ``reading``, what its canonical bytes read back as.

    orjson writes some values that JSON cannot give back: NaN and Infinity as
    ``null``, a tuple as a list, an enum as its value, a UUID as its string.
    The reading of each differs from the value under ``==``, which compares at
    C speed, so a commit checks the whole state for the price of one comparison
    instead of a walk over its types in Python. Type exactness is not at stake: exact
    ints, floats and bools are written with their own spelling. Enums that are
    ints or strings (``IntEnum``, ``StrEnum``) equal their value and are kept as it,
    like every other subclass of a JSON type.
    """
    try:
        differs = reading != value
    except Exception:  # an enum member's own __eq__ failed: the value is not plain JSON
        differs = True
    if differs:
        raise describe_unrepresentable(value)


def describe_unrepresentable(root: Any) -> InvalidStateError:
    """The error naming the first value in ``root`` that JSON cannot give back, and where it is."""
    try:
        found = first_unrepresentable(root)
    except Exception:  # a value's own methods failed while we looked (its __class__, say)
        found = None
    if found is None:
        # Every value is JSON, yet the state does not equal its reading: something's __eq__ says so.
        return _invalid(root, "the state does not equal its own JSON reading (a value overriding __eq__?)")
    node, reason, path = found
    return _invalid(node, reason, path)


def dumps(value: Any) -> bytes:
    """Canonical JSON of a value already known to be valid (no checks beyond orjson's)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def dumps_as_ordered(value: Any) -> bytes:
    """JSON of a valid value with its objects' members in the order they stand: the canonical
    bytes when every object is already in sorted order, and otherwise bytes no canonical hash matches."""
    return orjson.dumps(value)


def loads(data: bytes | memoryview) -> Any:
    return orjson.loads(data)


def _invalid(value: Any, reason: str, path: str | None = None) -> InvalidStateError:
    if "Recursion limit" in reason:
        reason = "nested too deeply or contains a cycle (orjson stops at depth 254)"
    elif "Integer exceeds" in reason:
        reason = INT_RANGE_REASON
    elif "surrogates" in reason:
        reason = "string with a lone surrogate is not valid UTF-8"
    if path is not None:  # a key with a lone surrogate: the pointer must still print and encode
        path = path.encode("utf-8", "backslashreplace").decode("utf-8")
    where = "" if path is None else f" (at {path or 'the top level'})"
    details = {"reason": reason, "type": type(value).__name__}
    if path is not None:
        details["path"] = path
    return InvalidStateError(f"state cannot be stored as JSON: {reason}{where}", details)


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
