"""The entries of a session's segments (format version 2): their bytes, and their compression.

A segment is a run of snapshots that depend on nothing outside it: an
independent keyframe, the deltas that follow, and possibly later keyframes
compressed against what came before them in the segment, plus small settings
entries. Every entry starts with a type byte:

* ``META``: canonical JSON of session settings (limit, head moves, tags);
  every segment starts with a ``checkpoint`` META holding all of them, so
  older segments can be dropped without losing settings.
* ``COMMIT``: a snapshot record in fixed binary form, then its payload (a full
  state or an RFC 6902 patch) zstd-compressed in one of four modes:

  - ``KEY_INDEPENDENT``: a zstd frame on its own;
  - ``KEY_PATCHED``: a zstd frame whose dictionary is the previous *run* of
    the segment's raw stream (the previous keyframe's state and every payload
    after it, docs/format.md): a keyframe costs what changed since;
  - ``DELTA_FRAME``: the start of a zstd frame whose dictionary is the last
    ``DELTA_WINDOW`` bytes of this segment's raw stream;
  - ``DELTA_CONTINUE``: the next flushed block of the frame the previous
    commit entry of this segment belongs to (one writer, one stream);
  - ``DELTA_PLAIN``: the start of a zstd frame with no dictionary (what a
    writer uses when another writer appended since its last commit: loading
    a dictionary would cost more than it saves while writers take turns).

* ``INDEX`` (format 4): the ids of the COMMIT entries since the previous INDEX of
  the segment (or its start), so that a reader indexing the segment takes each
  id from it instead of hashing each record; a record it gives an id to is
  hashed against that id before a state is rebuilt for it
  (``CommitEntry.checked_record``).

A segment's raw stream is the concatenation of its commit payloads,
uncompressed, in entry order. Reading is sequential by construction: a delta
needs the bytes before it, and so do the chain's states.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import zstandard

from . import codec
from .errors import CorruptObjectError
from .objects import SnapshotRecord, format_micros, parse_micros, record_id

META = 0x01
COMMIT = 0x02
INDEX = 0x03
#: a writer appends an INDEX entry after every this many COMMIT entries of a segment (format 4)
INDEX_EVERY = 64
_INDEX_COUNT = struct.Struct("<I")

KEY_INDEPENDENT = 0
KEY_PATCHED = 1
DELTA_FRAME = 2
DELTA_CONTINUE = 3
DELTA_PLAIN = 4
KEY_MODES = (KEY_INDEPENDENT, KEY_PATCHED)

#: bytes of the segment's raw stream a new delta frame takes as its dictionary
DELTA_WINDOW = 64 * 1024
#: levels above the store's compression level that deltas are compressed at (docs/design.md)
DELTA_LEVEL_BOOST = 3
#: the largest raw payload an entry may declare (a decompression-bomb guard)
MAX_PAYLOAD = 1 << 30
#: the largest window a keyframe's frame may ask a reader for
MAX_WINDOW_LOG = 31
#: the largest log2 size of the hash table a keyframe compressed against its segment is given: 2^22
#: slots (16 MiB) reach back over a dictionary (the segment's previous run) of up to 32 MiB
PATCH_HASH_LOG = 22
#: the largest log2 size of the match tables a segment's delta frame is compressed with
DELTA_TABLE_LOG = 17

_FLAG_PARENT = 1
_FLAG_TURN = 2
_FLAG_DELTA = 4  # the record names a delta (a keyframe entry may restate a delta record in full)
_FLAG_BASE = 8  # the payload is a delta against a base other than the parent, named after the record
# type, mode, flags, parent, state, delta, timestamp (µs), turn, size, payload length,
# depth, chain bytes, base ratio, label length
_RECORD = struct.Struct("<BBB16s16s16sqqQIIQdH")
RECORD_SIZE = _RECORD.size
_PARENT_AT = 3  # the parent id's offset in a commit entry (after type, mode and flags)
_STATE_AT = _PARENT_AT + 16
_RAW_LENGTH = struct.Struct("<I")
_RAW_LENGTH_AT = struct.calcsize("<BBB16s16s16sqqQ")
_LABEL_LENGTH = struct.Struct("<H")
_ZERO_ID = bytes(16)
_INDEX_TYPE = bytes([INDEX])
_COMMIT_TYPE = bytes([COMMIT])


class CommitEntry:
    """A decoded commit entry: its id, its still-compressed payload, and its record.

    Opening a session decodes every entry of its log, and a writer among others decodes every
    entry they append: the record is made from its checked fields only when something asks for
    it (most entries are indexed by id and never looked at again), and the id is hashed from
    those fields without making it. An entry whose id an INDEX entry gave (``vouched_entry``)
    holds its record's bytes instead: they are checked when the record is first asked for, and
    hashed against that id when ``checked_record`` is (before a state is rebuilt for it).
    """

    __slots__ = ("_fields", "_record", "_unhashed", "_vouched", "base", "id", "mode", "payload", "raw_length")

    def __init__(
        self,
        id: str,
        record: SnapshotRecord | None,
        mode: int,
        raw_length: int,
        payload: bytes,  # compressed
        base: str | None = None,
        fields: tuple[Any, ...] | None = None,
        vouched: tuple[bytes, str, str] | None = None,
    ) -> None:
        self.id = id
        self.mode = mode
        self.raw_length = raw_length
        self.payload = payload
        #: the snapshot whose state the payload patches: the parent for a delta, the named base for a
        #: delta stored against another snapshot (format 3), None for a keyframe
        self.base = base
        self._record = record
        self._fields = fields  # SnapshotRecord's fields in order, when ``record`` is not made yet
        #: (the entry's bytes through its label, session, where) while the fields are not checked yet
        self._vouched = vouched
        #: where the entry lies, while its record is not hashed against ``id`` yet (an INDEX gave the id)
        self._unhashed = vouched[2] if vouched is not None else None

    @property
    def state_hash(self) -> str:
        """The hash of the snapshot's state, without making the record."""
        fields = self._fields
        if fields is not None:
            return fields[2]
        vouched = self._vouched
        if vouched is not None:
            return vouched[0][_STATE_AT : _STATE_AT + 16].hex()
        return self.record.state

    @property
    def record(self) -> SnapshotRecord:
        record = self._record
        if record is None:
            fields = self._fields
            if fields is None:
                vouched = self._vouched
                if vouched is None:  # checked or made by another thread since (it sets each first)
                    fields = self._fields
                    if fields is None:
                        return self._record  # type: ignore[return-value]
                else:
                    fields = self._fields = _commit_fields(*vouched)[0]
                    self._vouched = None
            record = self._record = SnapshotRecord(*fields)
            self._fields = None  # the record holds them now
        return record

    @property
    def checked_record(self) -> SnapshotRecord:
        """``record``, hashed against ``id`` first when an INDEX entry gave the id: a state is
        rebuilt, and checked, against a record that is the snapshot's own."""
        record = self.record
        where = self._unhashed
        if where is not None:
            if record.snapshot_id() != self.id:
                raise _corrupt(where, f"the record an index entry gives as {self.id} has another id")
            self._unhashed = None
        return record

    @property
    def parent(self) -> str | None:
        """The record's parent, read without making the record."""
        fields = self._fields
        if fields is not None:
            return fields[1]
        vouched = self._vouched
        if vouched is not None:
            data = vouched[0]
            return data[_PARENT_AT : _PARENT_AT + 16].hex() if data[2] & _FLAG_PARENT else None
        return self.record.parent

    @property
    def is_keyframe(self) -> bool:
        return self.mode in KEY_MODES

    def without_payload(self) -> CommitEntry:
        """The same entry holding no payload (an index keeps records, not payloads)."""
        if not self.payload:
            return self
        copy = CommitEntry(
            self.id, self._record, self.mode, self.raw_length, b"", self.base, self._fields, self._vouched
        )
        copy._unhashed = self._unhashed
        return copy

    def __repr__(self) -> str:
        return f"CommitEntry(id={self.id!r}, mode={self.mode}, raw_length={self.raw_length}, base={self.base!r})"


@dataclass(frozen=True, slots=True)
class MetaEntry:
    body: dict[str, Any]

    @property
    def checkpoint(self) -> bool:
        return self.body.get("checkpoint") is True


Entry = CommitEntry | MetaEntry


def encode_meta(body: dict[str, Any]) -> bytes:
    return bytes([META]) + codec.dumps(body)


def encode_commit(
    record: SnapshotRecord, mode: int, raw_length: int, payload: bytes, base: str | None = None
) -> bytes:
    """A commit entry; ``base`` names the snapshot a delta payload patches when it is not the parent
    (a format-3 entry: the record then names no delta, as a keyframe's does)."""
    flags = (
        (_FLAG_PARENT if record.parent else 0)
        | (_FLAG_TURN if record.turn is not None else 0)
        | (_FLAG_DELTA if record.delta else 0)
        | (_FLAG_BASE if base is not None else 0)
    )
    label = record.label.encode("utf-8")
    head = _RECORD.pack(
        COMMIT,
        mode,
        flags,
        bytes.fromhex(record.parent) if record.parent else _ZERO_ID,
        bytes.fromhex(record.state),
        bytes.fromhex(record.delta) if record.delta else _ZERO_ID,
        parse_micros(record.timestamp),
        record.turn if record.turn is not None else 0,
        record.size,
        raw_length,
        record.depth,
        record.chain_bytes,
        record.base_ratio,
        len(label),
    )
    if base is not None:
        return head + bytes.fromhex(base) + label + payload
    return head + label + payload


def check_entry(data: bytes, where: str) -> MetaEntry | None:
    """Refuse, as ``decode_entry`` would, an entry that is damaged, without hashing a commit's record
    for its id (a reader that needs no ids of the entries it walks past, yet must stop where an
    index would); the settings of a META entry, None for a COMMIT."""
    meta = _meta_or_none(data, where)
    if meta is None:
        _checked_commit(data, where)
    return meta


def _meta_or_none(data: bytes, where: str) -> MetaEntry | None:
    """The settings of a META entry; None for a COMMIT; damage otherwise."""
    if not data:
        raise _corrupt(where, "empty entry")
    if data[0] == META:
        try:
            body = orjson.loads(data[1:])
        except orjson.JSONDecodeError:
            raise _corrupt(where, "settings entry is not JSON") from None
        if not isinstance(body, dict):
            raise _corrupt(where, "settings entry is not a JSON object")
        return MetaEntry(body)
    if data[0] != COMMIT:
        raise _corrupt(where, f"unknown entry type {data[0]}")
    return None


def _checked_commit(data: bytes, where: str) -> tuple[tuple[Any, ...], tuple[str, str, int]]:
    """A COMMIT entry's record unpacked and checked (format.md §4.6), with its label, its timestamp
    and where its payload starts."""
    if len(data) < RECORD_SIZE:
        raise _corrupt(where, "commit entry shorter than its record")
    unpacked = _RECORD.unpack_from(data)
    (
        _type,
        mode,
        flags,
        _parent,
        _state,
        delta,
        micros,
        _turn,
        size,
        raw_length,
        depth,
        chain_bytes,
        ratio,
        label_length,
    ) = unpacked
    if mode > DELTA_PLAIN or flags & ~(_FLAG_PARENT | _FLAG_TURN | _FLAG_DELTA | _FLAG_BASE):
        raise _corrupt(where, "unknown commit mode or flags")
    if raw_length > MAX_PAYLOAD or size > MAX_PAYLOAD or not ratio >= 0 or ratio > 1e6:
        raise _corrupt(where, "a size or ratio out of range")
    based = flags & _FLAG_BASE
    if not flags & _FLAG_DELTA and (delta != _ZERO_ID or depth != 0 or (mode not in KEY_MODES and not based)):
        raise _corrupt(where, "a full-state record with a delta or a depth")
    if flags & _FLAG_DELTA and not flags & _FLAG_PARENT:
        raise _corrupt(where, "a delta without a parent")
    if based and (flags & _FLAG_DELTA or not flags & _FLAG_PARENT or mode in KEY_MODES or chain_bytes != 0):
        raise _corrupt(
            where, "a delta against a base with a record that names a delta or a chain, no parent, or a keyframe mode"
        )
    start = RECORD_SIZE + (16 if based else 0)
    end = start + label_length
    if end > len(data):
        raise _corrupt(where, "label runs past the entry")
    try:
        label = data[start:end].decode("utf-8")
        timestamp = format_micros(micros)
    except (UnicodeDecodeError, ValueError, OverflowError):
        raise _corrupt(where, "label or timestamp does not decode") from None
    return unpacked, (label, timestamp, end)


def decode_entry(data: bytes, session: str, where: str, with_payload: bool = True) -> Entry:
    """One entry's bytes as a record or settings; damage is a CorruptObjectError naming ``where``.

    ``with_payload`` False leaves a commit's payload out (``b""``): an index keeps records only.
    """
    meta = _meta_or_none(data, where)
    if meta is not None:
        return meta
    return decode_commit(data, session, where, with_payload)


def decode_commit(data: bytes, session: str, where: str, with_payload: bool = True) -> CommitEntry:
    """``decode_entry`` of an entry known to be a COMMIT (its type byte is not checked again)."""
    fields, mode, raw_length, end = _commit_fields(data, session, where)
    payload = data[end:] if with_payload else b""
    return CommitEntry(record_id(*fields), None, mode, raw_length, payload, entry_base(data, fields[1]), fields)


def _commit_fields(data: bytes, session: str, where: str) -> tuple[tuple[Any, ...], int, int, int]:
    """A COMMIT entry's record fields (``SnapshotRecord``'s, in order), checked; its mode, raw
    length and where its payload starts."""
    record, (label, timestamp, end) = _checked_commit(data, where)
    _type, mode, flags, parent, state, delta, _micros, turn, size, raw_length, depth, chain_bytes, ratio, _ = record
    fields = (
        session,
        parent.hex() if flags & _FLAG_PARENT else None,
        state.hex(),
        delta.hex() if flags & _FLAG_DELTA else None,
        label,
        timestamp,
        turn if flags & _FLAG_TURN else None,
        size,
        depth,
        chain_bytes,
        ratio,
    )
    return fields, mode, raw_length, end


def vouched_entry(data: bytes, sid: str, session: str, where: str, with_payload: bool = True) -> CommitEntry:
    """A COMMIT entry whose id an INDEX entry gives as ``sid``, read without checking or hashing its
    record: it is checked when first asked for (``CommitEntry.record``), and hashed against ``sid``
    before a state is rebuilt for it (``CommitEntry.checked_record``). An entry whose record does
    not even lay out right is decoded as ``decode_entry`` would (and refused)."""
    if len(data) < RECORD_SIZE:
        return decode_commit(data, session, where, with_payload)
    mode, flags = data[1], data[2]
    label_end = RECORD_SIZE + (16 if flags & _FLAG_BASE else 0) + _LABEL_LENGTH.unpack_from(data, RECORD_SIZE - 2)[0]
    if mode > DELTA_PLAIN or label_end > len(data):
        return decode_commit(data, session, where, with_payload)
    parent = data[_PARENT_AT : _PARENT_AT + 16].hex() if flags & _FLAG_PARENT else None
    return CommitEntry(
        sid,
        None,
        mode,
        _RAW_LENGTH.unpack_from(data, _RAW_LENGTH_AT)[0],
        data[label_end:] if with_payload else b"",
        entry_base(data, parent),
        None,
        (data[:label_end], session, where),
    )


def encode_index(ids: Iterable[str]) -> bytes:
    """An INDEX entry (format 4) giving the ids of the COMMIT entries since the segment's last one."""
    raw = b"".join(bytes.fromhex(sid) for sid in ids)
    return bytes([INDEX]) + _INDEX_COUNT.pack(len(raw) // 16) + raw


def split_index(entries: list[bytes], from_start: bool) -> tuple[list[bytes], list[str | None] | None, int | None]:
    """A segment's entries (read from its start, or from an entry further on) without its INDEX
    entries; the id an INDEX entry gives each of them (None where none does; None for the list when
    no INDEX was read); and how many of the entries returned come before the last INDEX read.

    An INDEX entry gives ids to the COMMIT entries between the INDEX before it (or the segment's
    start) and itself, in order. One whose count does not match them, or that is not whole, gives
    none (``verify`` reports it); so does the first one of a read that did not start where a group
    starts (``from_start``: the segment's start, or right after an INDEX entry), which may cover
    entries read before.
    """
    if INDEX not in {data[0] for data in entries if data}:
        return entries, None, None
    kept: list[bytes] = []
    ids: list[str | None] = []
    group: list[int] = []  # positions in ``kept`` of the COMMIT entries since the last INDEX
    whole_group = from_start
    covered = 0
    for data in entries:
        if data[:1] == _INDEX_TYPE:
            given = index_ids(data)
            if whole_group and given is not None and len(given) == len(group):
                for position, sid in zip(group, given, strict=True):
                    ids[position] = sid
            group, whole_group, covered = [], True, len(kept)
            continue
        if data[:1] == _COMMIT_TYPE:
            group.append(len(kept))
        kept.append(data)
        ids.append(None)
    return kept, ids, covered


def index_problem(entries: list[bytes], session: str, where: str) -> str | None:
    """What is wrong with the INDEX entries among a segment's entries, read from its start (for
    ``verify``): one not laid out as one, one whose count does not match the COMMIT entries it
    follows, or an id that is not the hash of the record it is given to; None when nothing is.
    A commit that does not decode is damage, which ``verify`` reports as such."""
    group: list[bytes] = []
    for position, data in enumerate(entries):
        if data[:1] == _INDEX_TYPE:
            given = index_ids(data)
            if given is None:
                return f"{where}: entry {position} is an index entry that is not laid out as one"
            if len(given) != len(group):
                return f"{where}: the index entry at entry {position} gives {len(given)} ids for {len(group)} commits"
            for sid, commit in zip(given, group, strict=True):
                try:
                    actual = decode_commit(commit, session, where, with_payload=False).id
                except CorruptObjectError:
                    return None
                if actual != sid:
                    return f"{where}: the index entry at entry {position} gives {sid} for the commit {actual}"
            group = []
        elif data[:1] == _COMMIT_TYPE:
            group.append(data)
    return None


def without_index(entries: list[bytes]) -> list[bytes]:
    """A segment's entries without its INDEX entries (``split_index``'s first part, for a reader that
    takes no ids from them)."""
    return [data for data in entries if data[:1] != _INDEX_TYPE]


def index_ids(data: bytes) -> list[str] | None:
    """The ids an INDEX entry gives, in order; None when the entry is not laid out as one."""
    if len(data) < 5 or data[0] != INDEX:
        return None
    count = _INDEX_COUNT.unpack_from(data, 1)[0]
    if len(data) != 5 + 16 * count:
        return None
    raw = data[5:]
    return [raw[i : i + 16].hex() for i in range(0, len(raw), 16)]


def names_snapshot(data: bytes, raw_id: bytes) -> bool:
    """Whether ``data``, an entry's bytes, is a commit whose record names the snapshot of id
    ``raw_id`` (its 16 bytes) as its parent, or as the base its payload patches; read without
    decoding the entry (a reader looking for where a snapshot is stored)."""
    if len(data) < RECORD_SIZE or data[0] != COMMIT:
        return False
    flags = data[2]
    if flags & _FLAG_PARENT and data[_PARENT_AT : _PARENT_AT + 16] == raw_id:
        return True
    return bool(flags & _FLAG_BASE) and data[RECORD_SIZE : RECORD_SIZE + 16] == raw_id


def entry_base(data: bytes, parent: str | None) -> str | None:
    """``CommitEntry.base`` of a commit entry whose record names ``parent`` (checked, or encoded by this writer)."""
    if data[2] & _FLAG_BASE:
        return data[RECORD_SIZE : RECORD_SIZE + 16].hex()
    return parent if data[1] not in KEY_MODES else None


def against_base(mode: int, record: SnapshotRecord) -> bool:
    """Whether a commit is stored as a delta against a base (flag 8): a delta mode whose record names
    no delta, as a snapshot stored whole does."""
    return mode not in KEY_MODES and record.delta is None


def commit_payload(data: bytes, state: str | None = None) -> tuple[int, int, bytes] | None:
    """(mode, raw length, compressed payload) of a commit entry without decoding its record; None for META.

    For reading payloads of entries an index has already decoded and checked. ``state``: the state
    hash the index holds for this entry; an entry naming another is not the one indexed (the
    segment was rewritten since), and gives None too.
    """
    if data[0] != COMMIT:
        return None
    if state is not None and data[_STATE_AT : _STATE_AT + 16].hex() != state:
        return None
    mode, raw_length = data[1], _RAW_LENGTH.unpack_from(data, _RAW_LENGTH_AT)[0]
    label_length = _LABEL_LENGTH.unpack_from(data, RECORD_SIZE - 2)[0]
    return mode, raw_length, data[RECORD_SIZE + (16 if data[2] & _FLAG_BASE else 0) + label_length :]


def _corrupt(where: str, reason: str) -> CorruptObjectError:
    return CorruptObjectError(f"{where}: {reason}", {"path": where, "reason": reason})


# -- compression -----------------------------------------------------------
def raw_dict(content: bytes | bytearray | memoryview) -> zstandard.ZstdCompressionDict | None:
    """A raw-content dictionary of ``content`` (None when too short to be one); zstd copies it."""
    if len(content) < 8:
        return None
    return zstandard.ZstdCompressionDict(content, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def compress_keyframe(data: bytes, level: int, previous_raw: bytes | None) -> tuple[int, bytes]:
    """(mode, bytes) of a full state: patched against the segment's raw stream so far when given."""
    dictionary = raw_dict(previous_raw) if previous_raw else None
    if previous_raw is None or dictionary is None:
        return KEY_INDEPENDENT, zstandard.ZstdCompressor(level=level).compress(data)
    params = zstandard.ZstdCompressionParameters.from_level(
        level,
        hash_log=patch_hash_log(level, len(previous_raw)),
        window_log=max(20, min(MAX_WINDOW_LOG, (len(previous_raw) + len(data)).bit_length())),
    )
    return KEY_PATCHED, zstandard.ZstdCompressor(dict_data=dictionary, compression_params=params).compress(data)


def patch_hash_log(level: int, dictionary_size: int) -> int:
    """log2 of the hash table a keyframe patched against a dictionary of ``dictionary_size`` bytes gets.

    zstd indexes a raw-content dictionary only as far back as its hash table reaches, the last
    2^(hash_log + 3) bytes: the rest is never searched, and what the state shares with it is
    written again as literals, which also decode several times slower than matches. So the table
    reaches back over the whole dictionary, up to ``PATCH_HASH_LOG``; a small dictionary keeps the
    level's own (docs/design.md, "Keyframe policy").
    """
    own = zstandard.ZstdCompressionParameters.from_level(level).hash_log
    return max(own, min(PATCH_HASH_LOG, (max(dictionary_size, 1) - 1).bit_length() - 3))


def delta_level(level: int) -> int:
    """The zstd level deltas are compressed at, for a store of compression level ``level``.

    Deltas are most of what a store holds, and each is a few kB: three levels more cost a few
    tens of microseconds a commit and save about a twentieth of the store (docs/design.md).
    """
    return min(level + DELTA_LEVEL_BOOST, 22)


def delta_compressor(level: int, dictionary: zstandard.ZstdCompressionDict | None = None) -> zstandard.ZstdCompressor:
    """The compressor of a segment's delta frames, for a store of compression level ``level``.

    Its match tables are capped at 2^17 slots: a frame holds one run's deltas, a few hundred kB,
    and the level's own (2^19 and 2^18 at level 6) only cost cache misses between commits
    (docs/design.md, "Keyframe policy").
    """
    delta = delta_level(level)
    own = zstandard.ZstdCompressionParameters.from_level(delta)
    params = zstandard.ZstdCompressionParameters.from_level(
        delta, hash_log=min(own.hash_log, DELTA_TABLE_LOG), chain_log=min(own.chain_log, DELTA_TABLE_LOG)
    )
    if dictionary is None:
        return zstandard.ZstdCompressor(compression_params=params)
    return zstandard.ZstdCompressor(dict_data=dictionary, compression_params=params)


class DeltaStream:
    """A writer's open zstd frame in one segment: each delta is a flushed block of it.

    ``window`` None starts a frame with no dictionary (``DELTA_PLAIN``). ``level`` is the
    store's; deltas are compressed at ``delta_level(level)``.
    """

    def __init__(self, level: int, window: bytes | None, plain: zstandard.ZstdCompressor | None = None) -> None:
        """``plain``: a compressor of ``delta_level(level)`` without a dictionary to start a plain
        frame with (a writer taking turns with others starts one per commit; a new compressor
        costs more than the delta)."""
        self._first_mode = DELTA_PLAIN if window is None else DELTA_FRAME
        dictionary = raw_dict(window) if window is not None else None
        if dictionary is not None:
            compressor = delta_compressor(level, dictionary)
        else:
            compressor = plain if plain is not None else delta_compressor(level)
        self._stream = compressor.compressobj()
        self.started = False

    def compress(self, payload: bytes) -> tuple[int, bytes]:
        out = self._stream.compress(payload) + self._stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        mode = DELTA_CONTINUE if self.started else self._first_mode
        self.started = True
        return mode, out


def _resized(
    raw: bytearray, append: bytes | bytearray = b"", drop_front: int = 0, keep: int | None = None
) -> bytearray:
    """``raw`` with its first ``drop_front`` bytes cut, cut to ``keep`` bytes, and ``append`` added:
    in place, or in a copy when ``raw`` cannot change size. A view of it made for a read that an
    exception interrupted (Ctrl-C) lives on in the exception's traceback, and a bytearray with
    views refuses to grow or shrink (BufferError): the old bytes are then left to the view."""
    try:
        if drop_front:
            del raw[:drop_front]
        if keep is not None:
            del raw[keep:]
        raw += append
        return raw
    except BufferError:
        end = len(raw) if keep is None else keep
        return raw[drop_front:end] + append


#: (snapshot id, mode, raw length, compressed payload) of one commit entry, as a reader decodes it
PayloadItem = tuple[str, int, int, bytes]


class SegmentReader:
    """Decompresses one segment's commit payloads in entry order, keeping its raw stream.

    Positions (``run_start``, ``spans``, ``size``) count from the segment's first raw byte.
    With ``last_run_only`` the reader keeps only what the next entries can need: the current
    run (the next patched keyframe's dictionary) and the ``DELTA_WINDOW`` bytes before it (the
    next delta frame's), forgetting older runs as each keyframe arrives (a writer's decoder of
    the open segment, which would otherwise hold up to ``max_runs`` states).
    """

    def __init__(self, where: str, last_run_only: bool = False, keep_only: Collection[str] | None = None) -> None:
        """``keep_only``: the snapshots whose payloads the caller will ask for (a rebuild's chain);
        ``decompress_all`` then lets go of each run once it is neither among them nor needed to
        decode on, instead of holding the whole segment's raw stream."""
        self.raw = bytearray()  # the raw stream from ``base`` on
        self.base = 0
        self.run_start = 0  # where the last keyframe's payload starts
        self.spans: dict[str, tuple[int, int]] = {}  # snapshot id -> (start, end) of its payload
        self.where = where
        self.last_run_only = last_run_only
        self.keep_only = keep_only
        self._frame: Any = None
        self._plain: zstandard.ZstdDecompressor | None = None

    @property
    def size(self) -> int:
        """Raw bytes of the segment decoded so far (forgotten ones included)."""
        return self.base + len(self.raw)

    def previous_run(self) -> bytes:
        """The dictionary of the next patched keyframe: the raw stream from the last keyframe on."""
        return bytes(self.raw[self.run_start - self.base :])

    def add_raw(self, snapshot_id: str, raw: bytes, keyframe: bool) -> None:
        """Take a payload this writer compressed itself: no need to decompress it again.

        The frame state is dropped: only the writer that compressed a frame may continue it.
        """
        self._frame = None
        self._append(snapshot_id, raw, keyframe)

    def _append(self, snapshot_id: str, raw: bytes | bytearray, keyframe: bool) -> None:
        start = self.size
        if keyframe:
            self.run_start = start
        self.spans[snapshot_id] = (start, start + len(raw))
        self.raw = _resized(self.raw, append=raw)
        if keyframe and self.last_run_only:
            self._forget_before(start)

    def _forget_before(self, run_start: int) -> None:
        cut = run_start - DELTA_WINDOW - self.base
        if cut <= 0:
            return
        self.raw = _resized(self.raw, drop_front=cut)
        self.base += cut
        # payloads of earlier runs are no longer here, even where the window kept their bytes
        self.spans = {sid: span for sid, span in self.spans.items() if span[0] >= run_start}

    def payload_of(self, snapshot_id: str) -> bytes:
        start, end = self.spans[snapshot_id]
        with memoryview(self.raw) as view:  # one copy, not a bytearray slice and then its bytes
            return bytes(view[start - self.base : end - self.base])

    def chain_payloads(self, wanted: Iterable[str], kept: bool = False) -> dict[str, bytes | memoryview]:
        """The payloads of ``wanted`` (a rebuild's chain), for a caller that parses and drops them
        before the stream changes.

        A view holds the whole stream while the rebuild parses, a copy only its own bytes: views
        when the stream is ``kept`` anyway or the chain is at least half of it (a head stored whole
        in its own segment: copying megabytes into fresh memory costs a page fault a page), copies
        when earlier runs make up most of it (a rebuild late in a long segment would otherwise hold
        them all while it parses).
        """
        base, spans = self.base, self.spans
        found = [sid for sid in wanted if sid in spans]
        if kept or 2 * sum(spans[sid][1] - spans[sid][0] for sid in found) >= len(self.raw):
            view = memoryview(self.raw)
            return {sid: view[spans[sid][0] - base : spans[sid][1] - base] for sid in found}
        return {sid: self.payload_of(sid) for sid in found}

    def decompress_all(self, items: list[PayloadItem]) -> None:
        """Decode ``(id, mode, raw length, payload)`` of entries in order, to the end of what will be read.

        The raw stream grows once, to the size the entries declare, and each payload is decoded
        straight into its place: appending run by run would copy the stream over and over (a
        ``bytearray`` grows by an eighth at a time), and a rebuild late in a long segment would
        spend more time copying than decompressing. A delta frame and the continuations after it
        are decoded by one bounded read (one C call instead of one per entry and per step); the
        frame cannot be continued afterwards. Whatever does not decode as declared is decoded
        entry by entry, so damage is named where it is.

        A reader with ``keep_only`` sizes the buffer for the widest stretch it must hold at once
        instead: before a group that would not fit, the stream is cut to what the next entries need
        (``_cut``), a patched keyframe's dictionary copied out first so that its run can go too.
        """
        total = sum(item[2] for item in items)
        if total > MAX_PAYLOAD or self.last_run_only:
            self._decompress_each(items)
            return
        groups = _groups(items)
        used = len(self.raw)
        starts = self._starts(items)
        first_kept = self._first_kept(items, starts)
        capacity = used + total + 1  # one byte to spare: a payload inflating past its size lands there
        if first_kept is not None:
            capacity = self._capacity(items, groups, starts, first_kept)
        buffer = bytearray(capacity)
        buffer[:used] = self.raw
        self.raw = buffer
        i = 0
        prepared = None
        try:
            for start, end in groups:
                prepared = None
                if items[start][1] == DELTA_CONTINUE:
                    break  # continues a frame that never started: named entry by entry
                if first_kept is not None and used + starts[end] - starts[start] + 1 > capacity:
                    needed_from = self.run_start
                    if items[start][1] in KEY_MODES:
                        # the keyframe's dictionary is made (copied) first, and the run it copies let go too
                        with memoryview(buffer) as view:
                            prepared = self._keyframe_decompressor(
                                view[self.run_start - self.base : used] if items[start][1] == KEY_PATCHED else None
                            )
                        if prepared is not None:
                            needed_from = self.base + used  # where the keyframe starts
                    used = self._drop_front(buffer, used, self._cut(self.base, needed_from, first_kept))
                with memoryview(buffer) as view:
                    written = self._decode_into(view, used, items[start:end], prepared)
                if written is None:
                    break
                used += written
                i = end
        finally:
            self.raw = _resized(buffer, keep=used)  # what decoded is kept, the rest is decoded entry by entry
        self._frame = None
        # a keyframe whose run was let go once its dictionary was made is decoded again with that
        # dictionary, to be refused by name as the entry-by-entry decoder refuses it
        self._decompress_each(items[i:], prepared)

    def _starts(self, items: list[PayloadItem]) -> list[int]:
        """Where each of ``items`` will start in the stream, and where the last ends."""
        starts = [self.size]
        for item in items:
            starts.append(starts[-1] + item[2])
        return starts

    def _first_kept(self, items: list[PayloadItem], starts: list[int]) -> int | None:
        """Where the first payload of ``keep_only`` starts, here or among ``items`` (the stream's end
        when there is none); None when the reader keeps everything."""
        if self.keep_only is None:
            return None
        found = [span[0] for sid, span in self.spans.items() if sid in self.keep_only]
        found += [starts[j] for j, item in enumerate(items) if item[0] in self.keep_only]
        return min(found, default=starts[-1])

    @staticmethod
    def _cut(base: int, run_start: int, first_kept: int) -> int:
        """Where the stream may begin: the next entries need the current run (a patched keyframe's
        dictionary) and the ``DELTA_WINDOW`` bytes before it (a delta frame's), and no payload of
        ``keep_only`` may be let go."""
        return max(base, min(run_start - DELTA_WINDOW, first_kept))

    def _capacity(
        self, items: list[PayloadItem], groups: list[tuple[int, int]], starts: list[int], first_kept: int
    ) -> int:
        """The buffer ``decompress_all`` needs when it lets the stream begin at ``_cut`` before each
        group that would not fit, plus the spare byte."""
        base, run_start, widest = self.base, self.run_start, self.size - self.base
        for start, end in groups:
            if items[start][1] in KEY_MODES:
                run_start = starts[start]  # its dictionary is made before the stream is cut
            base = self._cut(base, run_start, first_kept)
            widest = max(widest, starts[end] - base)
        return widest + 1

    def _drop_front(self, buffer: bytearray, used: int, cut: int) -> int:
        """Move the stream from ``cut`` on to the front of ``buffer``; the bytes now used."""
        drop = cut - self.base
        if drop <= 0:
            return used
        with memoryview(buffer) as view:
            view[: used - drop] = view[drop:used]  # one memmove, no copy in between
        self.base = cut
        self.spans = {sid: span for sid, span in self.spans.items() if span[0] >= cut}
        return used - drop

    def _decompress_each(
        self, items: list[PayloadItem], first_keyframe: zstandard.ZstdDecompressor | None = None
    ) -> None:
        for item in items:
            self.decompress(*item, keyframe_reader=first_keyframe)
            first_keyframe = None
        self._frame = None

    def _decode_into(
        self,
        view: memoryview,
        at: int,
        group: list[PayloadItem],
        keyframe_reader: zstandard.ZstdDecompressor | None = None,
    ) -> int | None:
        """Decode a keyframe, or a delta frame and its continuations, into ``view[at:]``: the bytes
        written, or None when the group does not decode as declared (nothing then counts).
        ``keyframe_reader``: a keyframe's decompressor made already (its dictionary copied)."""
        mode = group[0][1]
        total = sum(item[2] for item in group)
        try:
            if mode in KEY_MODES:
                start = self.run_start - self.base
                reader = keyframe_reader or self._keyframe_decompressor(view[start:at] if mode == KEY_PATCHED else None)
                if reader is None:
                    return None
                payload = group[0][3]
                if zstandard.frame_content_size(payload) != total:
                    return None
                source: Any = payload
            else:
                reader = self._frame_decompressor(mode, view[max(0, at - DELTA_WINDOW) : at])
                source = b"".join(item[3] for item in group)
            # reads at most one byte past what the entries declare (into the next payload's place,
            # or the spare byte): a payload that inflates further is stopped there, never inflated whole
            stream = reader.stream_reader(io.BytesIO(source), read_size=len(source) or 1, read_across_frames=False)
            with stream:
                written = 0
                while written <= total:
                    got = stream.readinto(view[at + written : at + total + 1])
                    if not got:
                        break
                    written += got
            if written != total:
                return None
        except zstandard.ZstdError:
            return None
        start = self.base + at
        if mode in KEY_MODES:
            self.run_start = start
        for sid, _mode, raw_length, _payload in group:
            self.spans[sid] = (start, start + raw_length)
            start += raw_length
        return total

    @staticmethod
    def _keyframe_decompressor(previous_run: memoryview | None) -> zstandard.ZstdDecompressor | None:
        """A keyframe's decompressor: with the previous run as its dictionary when it is patched
        (None when that run is too short to be one: a patched keyframe cannot start a segment)."""
        if previous_run is None:
            return zstandard.ZstdDecompressor(max_window_size=1 << MAX_WINDOW_LOG)
        dictionary = raw_dict(previous_run)
        if dictionary is None:
            return None
        return zstandard.ZstdDecompressor(dict_data=dictionary, max_window_size=1 << MAX_WINDOW_LOG)

    def _frame_decompressor(
        self, mode: int, window: memoryview | bytearray | None = None
    ) -> zstandard.ZstdDecompressor:
        """The decompressor of a delta frame that starts here: ``DELTA_FRAME`` with the last
        ``DELTA_WINDOW`` raw bytes (``window``, else the stream's end) as its dictionary,
        ``DELTA_PLAIN`` without (one per reader: frames of writers taking turns are many)."""
        if mode == DELTA_FRAME:
            dictionary = raw_dict(self.raw[-DELTA_WINDOW:] if window is None else window)
            if dictionary is not None:
                return zstandard.ZstdDecompressor(dict_data=dictionary)
        if self._plain is None:
            self._plain = zstandard.ZstdDecompressor()
        return self._plain

    def payload(self, entry: CommitEntry) -> bytes:
        """The raw payload of the next commit entry (entries must come in order)."""
        return self.decompress(entry.id, entry.mode, entry.raw_length, entry.payload)

    def decompress(
        self,
        snapshot_id: str,
        mode: int,
        raw_length: int,
        payload: bytes,
        keyframe_reader: zstandard.ZstdDecompressor | None = None,
    ) -> bytes:
        """The raw payload of the next commit entry, given its parts (entries must come in order).
        ``keyframe_reader``: a keyframe's decompressor made already (its run may be gone since)."""
        try:
            if mode in KEY_MODES:
                self._frame = None
                reader = keyframe_reader
                if reader is None:
                    with memoryview(self.raw) as view:
                        previous_run = view[self.run_start - self.base :] if mode == KEY_PATCHED else None
                        reader = self._keyframe_decompressor(previous_run)
                        previous_run = None  # released before the view is
                if reader is None:
                    raise _corrupt(self.where, "a patched keyframe with no run of 8 bytes or more before it to patch")
                declared = zstandard.frame_content_size(payload)
                if declared != raw_length:  # a frame claiming another size is damage, not an allocation
                    raise _corrupt(self.where, f"payload of snapshot {snapshot_id} declares the wrong size")
                out = reader.decompress(payload, max_output_size=raw_length)
            else:
                if mode in (DELTA_PLAIN, DELTA_FRAME):
                    self._frame = self._frame_decompressor(mode).decompressobj()
                elif self._frame is None:
                    raise _corrupt(self.where, "a delta continues a frame that never started")
                out = _bounded(self._frame, payload, raw_length, self.where, snapshot_id)
        except zstandard.ZstdError as exc:
            self._frame = None
            raise _corrupt(self.where, f"payload of snapshot {snapshot_id} does not decompress: {exc}") from None
        if len(out) != raw_length:
            self._frame = None
            raise _corrupt(self.where, f"payload of snapshot {snapshot_id} has the wrong length")
        self._append(snapshot_id, out, mode in KEY_MODES)
        return out


def _groups(items: list[PayloadItem]) -> list[tuple[int, int]]:
    """(start, end) of each group ``decompress_all`` decodes by one call: a keyframe, or a delta
    frame and the continuations after it (a continuation with no frame before it stands alone)."""
    groups, i = [], 0
    while i < len(items):
        end = i + 1
        if items[i][1] in (DELTA_FRAME, DELTA_PLAIN):
            while end < len(items) and items[end][1] == DELTA_CONTINUE:
                end += 1
        groups.append((i, end))
        i = end
    return groups


def _bounded(frame: Any, payload: bytes, limit: int, where: str, snapshot_id: str) -> bytes:
    """Feed a streaming frame in small steps, so a payload that inflates past its declared length
    is refused after at most one step's output (a few blocks) instead of being inflated whole."""
    step = 64 if len(payload) <= 65536 else 4096
    out = bytearray()
    for start in range(0, len(payload), step):
        out += frame.decompress(payload[start : start + step])
        if len(out) > limit:
            raise _corrupt(where, f"payload of snapshot {snapshot_id} inflates past its declared length")
    return bytes(out)
