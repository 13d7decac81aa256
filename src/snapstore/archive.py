"""Export and import of compact archive files: docs/format.md, "Archive format, version 1".

An archive holds what is needed to rebuild chosen snapshots in another store:
their records, the delta and state objects of their chains back to a base, and
one session document per session. It is built for size and for safety:

* size: object *payloads* (not the store's per-object zstd frames) go into one
  zstd stream at a high level, in chain order, so deltas compress against each
  other. A keyframe whose parent is also in the archive is written as a patch
  from the parent's state (a "state patch"), which costs about what a delta
  costs; the importer rebuilds the state and checks it against its id.
* streaming: export writes payloads into the compressor one at a time and the
  index after them; import decompresses into a temporary spool file, never
  holding more than one object (or one state being rebuilt) in memory.
* safety: an archive is untrusted. Import checks the trailer, the limits it
  declares, the checksums, every object against its id, every record, session
  document and chain, and only then writes anything: objects first, session
  refs last. A bad archive raises ``ArchiveError`` and leaves the store as it was.
"""

from __future__ import annotations

import itertools
import os
import re
import struct
import tempfile
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, NamedTuple

import orjson
import xxhash
import zstandard

from . import codec
from .chains import check_state
from .codec import Kind
from .delta import apply_patch, diff
from .errors import (
    ArchiveError,
    ConcurrentUpdateError,
    CorruptObjectError,
    FormatVersionError,
    InvalidNameError,
    PatchError,
    SnapshotError,
    SnapshotNotFound,
)
from .objects import SessionDoc, SnapshotRecord, codec_id, parse_timestamp
from .session import resolve_prefix

if TYPE_CHECKING:
    from .store import SnapshotStore

Progress = Callable[[int, "int | None", str], None]

ARCHIVE_VERSION = 1
MAGIC = b"SNPA"
TRAILER_MAGIC = b"SNPT"
HEADER = struct.Struct("<4sB3s")  # magic, version, reserved (zero)
TRAILER = struct.Struct("<QQQQQ16s16sQ4s4s")  # see docs/format.md §A.6
TRAILER_CHECKED = 72  # bytes of the trailer covered by its own check value
ENTRY = struct.Struct("<32sQIB3s")  # hex id, offset, length, kind, reserved (zero)
MANIFEST_TYPE = "snapstore.archive"

#: index kind of a state stored as a patch from its parent snapshot's state
KIND_STATE_PATCH = 5
_KINDS = {int(Kind.STATE), int(Kind.DELTA), int(Kind.RECORD), KIND_STATE_PATCH}
_KIND_NAMES = {1: "state", 2: "delta", 3: "record", KIND_STATE_PATCH: "state patch"}

#: default limit on an archive's decompressed body (what import spools to disk)
DEFAULT_MAX_SIZE = 16 << 30
#: limit on the manifest and on the index, which import reads into memory
MAX_META_SIZE = 1 << 30
DEFAULT_LEVEL = 19
CHUNK = 1 << 20
#: progress is reported at least every this many objects
PROGRESS_EVERY = 64
CONFLICT_POLICIES = ("error", "merge", "replace", "rename")
_PATCH_OPS = frozenset(("add", "remove", "replace", "move", "copy", "test"))
_HEX_ID = re.compile(rb"[0-9a-f]{32}")
_RENAME_SUFFIX = "-imported"


@dataclass
class ExportReport:
    """What ``export_archive`` wrote."""

    path: str
    sessions: list[str]
    snapshots: int  # snapshots listed by the exported session documents
    objects: int  # records, deltas and states in the archive
    archive_bytes: int  # size of the archive file
    raw_bytes: int  # decompressed size of its body


@dataclass
class ImportReport:
    """What ``import_archive`` did, session by session."""

    created: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)  # archive name -> name it was imported as
    unchanged: list[str] = field(default_factory=list)  # the store already listed every snapshot
    objects_written: int = 0
    objects_present: int = 0  # needed objects the store already had


class _IdIndex:
    """A compact set of 16-byte ids, numbered in the order they were added.

    An open-addressing hash table over one bytearray: about 50 bytes per id,
    against about 100 for a Python set of bytes. Slots come from Python's
    randomised ``hash``, so ids chosen by an archive's author cannot be made to
    collide.
    """

    def __init__(self) -> None:
        self.ids = bytearray()  # 16 bytes per id, in the order added
        self._hashes = array("q")  # hash of each id, to compare ids only when their hashes match
        self._slots = array("q", [-1]) * 64
        self._mask = 63

    def __len__(self) -> int:
        return len(self._hashes)

    def key(self, number: int) -> bytes:
        return bytes(self.ids[16 * number : 16 * number + 16])

    def _slot(self, key: bytes, hashed: int) -> int:
        slots, hashes, mask = self._slots, self._hashes, self._mask
        at = hashed & mask
        while True:
            number = slots[at]
            if number < 0 or (hashes[number] == hashed and self.ids[16 * number : 16 * number + 16] == key):
                return at
            at = (at + 1) & mask

    def find(self, key: bytes) -> int:
        """The id's number, or -1."""
        return self._slots[self._slot(key, hash(key))]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.find(key) >= 0

    def add(self, key: bytes) -> bool:
        """Add an id; False when it was already there."""
        hashed = hash(key)
        at = self._slot(key, hashed)
        if self._slots[at] >= 0:
            return False
        number = len(self)
        self.ids += key
        self._hashes.append(hashed)
        self._slots[at] = number
        if 2 * (number + 1) > self._mask:
            self._grow()
        return True

    def _grow(self) -> None:
        self._mask = 2 * self._mask + 1
        slots = self._slots = array("q", [-1]) * (self._mask + 1)
        for number, hashed in enumerate(self._hashes):
            at = hashed & self._mask
            while slots[at] >= 0:
                at = (at + 1) & self._mask
            slots[at] = number


# ====================================================================== export


def export_archive(
    store: SnapshotStore,
    path: str | os.PathLike[str],
    sessions: Iterable[str] | str | None = None,
    snapshots: Iterable[str] | str | None = None,
    progress: Progress | None = None,
    *,
    level: int = DEFAULT_LEVEL,
) -> ExportReport:
    """Write an archive of every session, of the named ``sessions``, or of chosen ``snapshots``.

    ``snapshots`` takes ids or unique prefixes of retained snapshots (looked up
    in ``sessions`` when both are given); each comes with the chain it needs and
    its session's document, restricted to the chosen snapshots. The file is
    written beside ``path`` and renamed into place when complete.
    """
    target = Path(path)
    with store.writing():  # shared: no gc or reclaim deletes what we are reading
        plans = _plan_export(store, _names(sessions), _names(snapshots))
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{id(plans):x}")
        try:
            with open(tmp, "wb") as out:
                raw = _ArchiveWriter(store, out, level, progress).write(plans)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return ExportReport(
        path=str(target),
        sessions=[p.doc.name for p in plans],
        snapshots=sum(len(p.doc.snapshots) for p in plans),
        objects=raw[1],
        archive_bytes=target.stat().st_size,
        raw_bytes=raw[0],
    )


def _names(value: Iterable[str] | str | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


@dataclass
class _Plan:
    doc: SessionDoc  # the document the archive carries
    order: _IdIndex  # the records to export, parents before children
    bases: set[str]  # where this session's chains stop (its document's bases)
    patch_parents: set[str]  # parents of base records: candidates to write their child's state as a patch
    objects: int  # records, deltas and states (before removing duplicates)
    estimate: int  # rough decompressed size, to size the compression window


def _plan_export(store: SnapshotStore, sessions: list[str] | None, snapshots: list[str] | None) -> list[_Plan]:
    names = sorted(set(sessions)) if sessions is not None else store.sessions()
    docs = {name: _read_doc(store, name) for name in names}
    chosen: dict[str, set[str]] | None = None
    if snapshots is not None:
        owners: dict[str, str] = {}
        for name, doc in docs.items():
            for sid in doc.snapshots:
                owners.setdefault(sid, name)
        where = "the store" if sessions is None else "sessions " + ", ".join(repr(n) for n in names)
        chosen = {}
        for prefix in snapshots:
            sid = resolve_prefix(prefix, owners, where=where)
            chosen.setdefault(owners[sid], set()).add(sid)
    plans = []
    for name in names:
        doc = docs[name]
        if chosen is not None and name not in chosen:
            continue
        plans.append(_plan_session(store, doc, None if chosen is None else chosen[name]))
    return plans


def _read_doc(store: SnapshotStore, name: str) -> SessionDoc:
    from .store import check_session_name

    check_session_name(name)
    found = store.load_session_doc(store.session_ref(name), name)
    if found is None:
        raise SnapshotNotFound(f"session {name!r} does not exist", {"session": name})
    return found[1]


def _plan_session(store: SnapshotStore, doc: SessionDoc, chosen: set[str] | None) -> _Plan:
    """The records to export for one session (walk order) and the document the archive carries."""
    if chosen is None:
        listed = list(doc.snapshots)
        head = doc.head
        roots = [*doc.snapshots, *([doc.head] if doc.head else [])]
    else:
        listed = [sid for sid in doc.snapshots if sid in chosen]
        head = doc.head if doc.head in chosen else listed[-1]
        roots = listed
    bases = set(doc.bases)
    order = _IdIndex()
    patch_parents: set[str] = set()
    objects = estimate = 0
    for root in roots:
        path: list[str] = []
        on_path: set[str] = set()
        current: str | None = root
        while current is not None and bytes.fromhex(current) not in order:
            if current in on_path:
                raise CorruptObjectError(
                    f"snapshot {root} has a cyclic parent chain at {current}", {"object": current, "snapshot": root}
                )
            path.append(current)
            on_path.add(current)
            payload = store.objects.get(current, Kind.RECORD)  # hash-checked; import checks its fields
            record = _links(payload)
            objects += 1 + (record.delta is not None)
            estimate += 2048
            if record.delta is None or current in bases:
                objects += 1
                estimate += orjson.loads(payload)["size"]
                if record.parent is not None:
                    patch_parents.add(record.parent)
                break
            current = record.parent
        for sid in reversed(path):
            order.add(bytes.fromhex(sid))
    listed_set = set(listed)
    evicted = [key.hex() for key in (order.key(n) for n in range(len(order))) if key.hex() not in listed_set]
    out = SessionDoc(
        name=doc.name,
        max_snapshots=doc.max_snapshots,
        head=head,
        snapshots=listed,
        bases=[b for b in doc.bases if bytes.fromhex(b) in order],
        evicted=evicted,
        generation=doc.generation,
    )
    return _Plan(out, order, bases, patch_parents, objects, estimate)


class _Links(NamedTuple):
    """What chain walks need of a record."""

    parent: str | None
    delta: str | None
    state: str


def _links(payload: bytes) -> _Links:
    """A record's links from payload bytes that passed ``SnapshotRecord.from_payload`` (or came from the store)."""
    body = orjson.loads(payload)
    return _Links(body["parent"], body["delta"], body["state"])


class _HashingWriter:
    """Passes bytes to a file, hashing and counting them (the compressed frames)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hasher = xxhash.xxh3_128()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.out.write(data)
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()


class _ArchiveWriter:
    def __init__(self, store: SnapshotStore, out: BinaryIO, level: int, progress: Progress | None) -> None:
        self.store = store
        self.objects = store.objects
        self.out = out
        self.level = level
        self.progress = progress
        self.index = bytearray()
        self.offset = 0
        self.count = 0
        self.total = 0
        self.stream: Any = None
        self.emitted = _IdIndex()  # objects already in the body
        self.chained: set[str] = set()  # patch parents whose chain objects are already in the body

    def write(self, plans: list[_Plan]) -> tuple[int, int]:
        """Write header, body and trailer; (body size, objects)."""
        self.total = sum(plan.objects for plan in plans)
        estimate = sum(plan.estimate for plan in plans)
        window_log = max(20, min(27, estimate.bit_length()))
        params = zstandard.ZstdCompressionParameters.from_level(
            self.level, window_log=window_log, enable_ldm=True, write_checksum=True
        )
        self.out.write(HEADER.pack(MAGIC, ARCHIVE_VERSION, b"\0\0\0"))
        frames = _HashingWriter(self.out)
        self.stream = zstandard.ZstdCompressor(compression_params=params).stream_writer(frames, closefd=False)  # type: ignore[arg-type]
        for plan in plans:
            self._write_chains(plan)
        for plan in plans:
            for number in range(len(plan.order)):
                sid = plan.order.key(number)
                if sid not in self.emitted:
                    self._emit(sid, Kind.RECORD, self.objects.get(sid.hex(), Kind.RECORD))
        payloads_size = self.offset
        # canonical JSON, assembled from the documents' own canonical bytes (members in key order)
        docs = b",".join(plan.doc.to_payload() for plan in plans)
        manifest = b'{"format":%d,"sessions":[%s],"type":"%s"}' % (ARCHIVE_VERSION, docs, MANIFEST_TYPE.encode())
        del docs
        self.stream.write(manifest)
        self.stream.write(self.index)
        self.stream.flush(zstandard.FLUSH_FRAME)
        self.stream.close()
        meta = xxhash.xxh3_128(manifest)
        meta.update(self.index)
        body_size = payloads_size + len(manifest) + len(self.index)
        fields = (
            frames.count,
            body_size,
            payloads_size,
            len(manifest),
            self.count,
            frames.hasher.digest(),
            meta.digest(),
        )
        head = struct.pack("<QQQQQ16s16s", *fields)
        self.out.write(TRAILER.pack(*fields, xxhash.xxh3_64_intdigest(head), b"\0" * 4, TRAILER_MAGIC))
        if self.progress is not None:
            self.progress(self.count, self.count, "exporting objects")
        return body_size, self.count

    def _write_chains(self, plan: _Plan) -> None:
        """A session's deltas and base states, in walk order (parents first).

        When the session has keyframes whose parent is exported too, the state of
        the record just written is kept (applying each delta in turn) so that such
        a keyframe can be written as a patch from it.
        """
        running: tuple[str, Any] | None = None  # (snapshot, its state) when known
        for number in range(len(plan.order)):
            sid = plan.order.key(number).hex()
            record = _links(self.objects.get(sid, Kind.RECORD))  # checked when planning
            is_base = record.delta is None or sid in plan.bases
            if sid in plan.patch_parents:
                self.chained.add(sid)
            if record.delta is not None:
                key = bytes.fromhex(record.delta)
                if key not in self.emitted or (plan.patch_parents and not is_base):
                    payload = self.objects.get(record.delta, Kind.DELTA)
                    if key not in self.emitted:
                        self._emit(key, Kind.DELTA, payload)
                    if plan.patch_parents and not is_base:
                        if running is not None and running[0] == record.parent:
                            running = (sid, apply_patch(running[1], orjson.loads(payload), in_place=True))
                        else:
                            running = None  # a fork: rebuilt from the store if a patch needs it
            if is_base:
                key = bytes.fromhex(record.state)
                payload = b""
                if key not in self.emitted:
                    payload = self.objects.get(record.state, Kind.STATE)
                    patch = self._state_patch(plan, record, payload, running)
                    if patch is not None:
                        self._emit(key, KIND_STATE_PATCH, patch)
                    else:
                        self._emit(key, Kind.STATE, payload)
                if plan.patch_parents:
                    payload = payload or self.objects.get(record.state, Kind.STATE)
                    running = (sid, orjson.loads(payload))

    def _state_patch(
        self, plan: _Plan, record: _Links, payload: bytes, running: tuple[str, Any] | None
    ) -> bytes | None:
        """The state as a patch from its parent's state, when the parent's chain is already in the archive."""
        parent = record.parent
        if parent is None or parent not in self.chained:
            return None  # the importer could not rebuild the parent's state from what precedes
        if running is not None and running[0] == parent:
            state = running[1]
        else:
            state = self._rebuild(plan, parent)
            if state is None:
                return None
        check_state(state, _links(self.objects.get(parent, Kind.RECORD)).state, parent)
        patch = codec.dumps({"parent": parent, "patch": diff(state, orjson.loads(payload)), "size": len(payload)})
        return patch if len(patch) < len(payload) else None

    def _rebuild(self, plan: _Plan, sid: str) -> Any:
        """The state of an exported snapshot from its chain, or None when its base state is not yet written."""
        chain: list[_Links] = []
        current = sid
        while True:
            record = _links(self.objects.get(current, Kind.RECORD))
            if record.delta is None or current in plan.bases:
                break
            chain.append(record)
            current = record.parent  # type: ignore[assignment]
            if len(chain) > len(plan.order):
                raise CorruptObjectError(f"snapshot {sid} has a cyclic parent chain", {"object": sid})
        if bytes.fromhex(record.state) not in self.emitted:
            return None
        state = self.objects.state(record.state)
        for step in reversed(chain):
            state = apply_patch(state, self.objects.delta(step.delta), in_place=True)  # type: ignore[arg-type]
        return state

    def _emit(self, key: bytes, kind: int, payload: bytes) -> None:
        self.stream.write(payload)
        self.index += ENTRY.pack(key.hex().encode(), self.offset, len(payload), int(kind), b"\0\0\0")
        self.offset += len(payload)
        self.emitted.add(key)
        self.count += 1
        if self.progress is not None and self.count % PROGRESS_EVERY == 0:
            self.progress(self.count, self.total, "exporting objects")


# ====================================================================== import


def import_archive(
    store: SnapshotStore,
    path: str | os.PathLike[str],
    progress: Progress | None = None,
    *,
    on_conflict: str = "error",
    max_size: int = DEFAULT_MAX_SIZE,
    spool_dir: str | os.PathLike[str] | None = None,
) -> ImportReport:
    """Add an archive's sessions, snapshots and objects to ``store``, all checked before anything is written.

    A session the store lacks is created from the archive's document. One the
    store already has is left alone when it already lists every snapshot of the
    archive's document; otherwise ``on_conflict`` decides: ``"error"`` (the
    default) refuses the whole import naming the sessions, ``"merge"`` appends
    the archive's snapshots to the local list (keeping the local head),
    ``"replace"`` swaps in the archive's document, ``"rename"`` imports it as
    ``<name>-imported`` (or ``-imported-2``...). ``max_size`` caps the archive's
    decompressed size. The decompressed body is spooled to a temporary file in
    ``spool_dir`` (the system's temporary folder by default).
    """
    if on_conflict not in CONFLICT_POLICIES:
        raise SnapshotError(
            f"on_conflict must be one of {', '.join(CONFLICT_POLICIES)}, not {on_conflict!r}",
            {"argument": "on_conflict", "value": repr(on_conflict)},
        )
    with open(path, "rb") as source, tempfile.TemporaryFile(dir=spool_dir) as spool:
        reader = _ArchiveReader(store, source, spool, str(path), max_size, progress)
        reader.read()
        return reader.apply(on_conflict)


def _fail(message: str, reason: str, **details: Any) -> ArchiveError:
    return ArchiveError(message, {"reason": reason, **details})


class _Trailer(NamedTuple):
    frames_length: int  # compressed bytes between the header and the trailer
    body_size: int  # what they decompress to: payloads, manifest, index
    payloads_size: int  # offset of the manifest in the body
    manifest_size: int
    entries: int  # index entries
    frames_hash: bytes  # xxh3-128 of the compressed bytes
    meta_hash: bytes  # xxh3-128 of manifest || index
    check: int  # xxh3-64 of the trailer's first 72 bytes
    reserved: bytes
    magic: bytes


class _Region:
    """The compressed frames: a read-only window of the archive file, hashed as it is read."""

    def __init__(self, f: BinaryIO, start: int, length: int) -> None:
        self.f = f
        self.remaining = length
        self.hasher = xxhash.xxh3_128()
        f.seek(start)

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self.remaining:
            size = self.remaining
        data = self.f.read(min(size, CHUNK))
        self.remaining -= len(data)
        self.hasher.update(data)
        return data


@dataclass
class _Action:
    name: str  # the session's name in the archive
    doc: SessionDoc
    action: str  # create | merge | replace | rename | unchanged
    target: str  # the name it is written under


class _ArchiveReader:
    def __init__(
        self,
        store: SnapshotStore,
        source: BinaryIO,
        spool: IO[bytes],
        name: str,
        max_size: int,
        progress: Progress | None,
    ) -> None:
        self.store = store
        self.source = source
        self.spool = spool
        self.name = name
        self.max_size = max_size
        self.progress = progress
        # the index, in body order: ids (numbered by entry), offsets, lengths, kinds
        self.table = _IdIndex()
        self.offsets = array("Q")
        self.lengths = array("I")
        self.kinds = bytearray()
        self.resolved: dict[int, tuple[int, int]] = {}  # state patch entry -> (spool offset, length)
        self.needed = bytearray()
        self.docs: list[SessionDoc] = []
        self.body_size = 0
        self.taken: set[str] = set()  # session names this import uses

    # -- reading and checking ------------------------------------------------
    def read(self) -> None:
        trailer = self._read_frame_info()
        self._spool_body(trailer)
        manifest = self._read_meta(trailer)
        self._parse_manifest(manifest)
        del manifest
        self._check_objects()

    def _read_frame_info(self) -> _Trailer:
        f = self.source
        size = os.fstat(f.fileno()).st_size
        header = f.read(HEADER.size)
        if len(header) < HEADER.size and MAGIC.startswith(header[:4]):
            raise _fail(f"archive {self.name} is truncated ({size} bytes)", "truncated", path=self.name, size=size)
        if header[:4] != MAGIC:
            raise _fail(f"{self.name} is not a snapstore archive (no SNPA header)", "bad magic", path=self.name)
        _magic, version, reserved = HEADER.unpack(header)
        if version > ARCHIVE_VERSION or version < 1:
            raise FormatVersionError(
                f"archive {self.name} has format version {version}; this build reads version {ARCHIVE_VERSION}",
                {"path": self.name, "version": version, "supported": ARCHIVE_VERSION},
            )
        if reserved != b"\0\0\0":
            raise _fail(f"archive {self.name} has a damaged header", "bad header", path=self.name)
        if size < HEADER.size + TRAILER.size:
            raise _fail(f"archive {self.name} is truncated ({size} bytes)", "truncated", path=self.name, size=size)
        f.seek(size - TRAILER.size)
        raw = f.read(TRAILER.size)
        trailer = _Trailer(*TRAILER.unpack(raw))
        frames_length, body_size, payloads_size, manifest_size, count = trailer[:5]
        if trailer.magic != TRAILER_MAGIC:
            raise _fail(
                f"archive {self.name} is truncated or damaged: it does not end with its trailer",
                "truncated",
                path=self.name,
            )
        if xxhash.xxh3_64_intdigest(raw[:TRAILER_CHECKED]) != trailer.check or trailer.reserved != b"\0" * 4:
            raise _fail(
                f"archive {self.name} has a damaged trailer (checksum mismatch)", "trailer checksum", path=self.name
            )
        if HEADER.size + frames_length + TRAILER.size != size:
            raise _fail(
                f"archive {self.name} is {size} bytes, its trailer says {HEADER.size + frames_length + TRAILER.size}: "
                "truncated or extended",
                "length mismatch",
                path=self.name,
            )
        if body_size > self.max_size:
            raise _fail(
                f"archive {self.name} declares {body_size} bytes uncompressed, over the {self.max_size}-byte limit",
                "too large",
                path=self.name,
                size=body_size,
                limit=self.max_size,
            )
        if manifest_size > MAX_META_SIZE or count * ENTRY.size > MAX_META_SIZE:
            raise _fail(
                f"archive {self.name} declares a manifest or index over the {MAX_META_SIZE}-byte limit",
                "too large",
                path=self.name,
            )
        if payloads_size + manifest_size + count * ENTRY.size != body_size:
            raise _fail(f"archive {self.name} has inconsistent sizes in its trailer", "bad trailer", path=self.name)
        self.body_size = body_size
        return trailer

    def _spool_body(self, trailer: _Trailer) -> None:
        """Decompress the frames into the spool file, stopping as soon as they exceed the declared size."""
        frames_length, body_size = trailer.frames_length, trailer.body_size
        region = _Region(self.source, HEADER.size, frames_length)
        while region.read(CHUNK):
            pass  # the checksum of the compressed bytes first: damage gets a clear message
        if region.hasher.digest() != trailer.frames_hash:
            raise _fail(
                f"archive {self.name} is damaged: its compressed data does not match its checksum",
                "data checksum",
                path=self.name,
            )
        region = _Region(self.source, HEADER.size, frames_length)
        dctx = zstandard.ZstdDecompressor()
        reader = dctx.stream_reader(region, read_size=CHUNK, read_across_frames=True, closefd=False)  # type: ignore[arg-type]
        written = 0
        try:
            while True:
                chunk = reader.read(min(CHUNK, body_size - written + 1))
                if not chunk:
                    break
                written += len(chunk)
                if written > body_size:
                    raise _fail(
                        f"archive {self.name} inflates beyond the {body_size} bytes it declares; refused",
                        "too large",
                        path=self.name,
                        size=body_size,
                    )
                self.spool.write(chunk)
                if self.progress is not None:
                    self.progress(written, body_size, "reading archive")
        except zstandard.ZstdError as exc:
            raise _fail(f"archive {self.name} does not decompress: {exc}", "bad zstd data", path=self.name) from None
        if written != body_size or region.remaining:
            raise _fail(
                f"archive {self.name} decompresses to {written} bytes, its trailer declares {body_size}",
                "size mismatch",
                path=self.name,
            )

    def _read_meta(self, trailer: _Trailer) -> bytes:
        """The manifest, after checking it and the index (parsed into compact arrays) against their checksum."""
        payloads_size, manifest_size, count = trailer.payloads_size, trailer.manifest_size, trailer.entries
        self.spool.seek(payloads_size)
        manifest = self.spool.read(manifest_size)
        index = self.spool.read(count * ENTRY.size)
        meta = xxhash.xxh3_128(manifest)
        meta.update(index)
        if meta.digest() != trailer.meta_hash:
            raise _fail(
                f"archive {self.name} is damaged: its manifest or index does not match its checksum",
                "meta checksum",
                path=self.name,
            )
        offset = 0
        for number, (hex_id, start, length, kind, reserved) in enumerate(ENTRY.iter_unpack(index)):
            where = f"archive {self.name} index entry {number}"
            if not _HEX_ID.fullmatch(hex_id) or reserved != b"\0\0\0":
                raise _fail(f"{where} is malformed", "bad index", path=self.name, entry=number)
            if kind not in _KINDS:
                raise _fail(f"{where} has unknown kind {kind}", "bad index", path=self.name, entry=number)
            if start != offset or length < 1 or length > codec.MAX_OBJECT_SIZE:
                raise _fail(
                    f"{where} ({hex_id.decode()}) has offset {start} and length {length}: "
                    f"objects must follow each other from offset 0, each 1 to {codec.MAX_OBJECT_SIZE} bytes",
                    "bad index",
                    path=self.name,
                    entry=number,
                    object=hex_id.decode(),
                )
            offset += length
            if not self.table.add(bytes.fromhex(hex_id.decode())):
                raise _fail(
                    f"archive {self.name} lists object {hex_id.decode()} twice",
                    "bad index",
                    path=self.name,
                    object=hex_id.decode(),
                )
            self.offsets.append(start)
            self.lengths.append(length)
            self.kinds.append(kind)
        if offset != payloads_size:
            raise _fail(
                f"archive {self.name} index covers {offset} bytes of objects, the trailer says {payloads_size}",
                "bad index",
                path=self.name,
            )
        del index
        self.needed = bytearray(count)
        return manifest

    def _parse_manifest(self, manifest: bytes) -> None:
        from .store import check_session_name

        try:
            body = orjson.loads(manifest)
        except orjson.JSONDecodeError as exc:
            raise _fail(f"archive {self.name} has a manifest that is not JSON: {exc}", "bad manifest") from None
        if not isinstance(body, dict) or body.get("type") != MANIFEST_TYPE:
            raise _fail(f"archive {self.name} has no snapstore manifest", "bad manifest", path=self.name)
        version = body.get("format")
        if type(version) is int and version > ARCHIVE_VERSION:
            raise FormatVersionError(
                f"archive {self.name} has a manifest of format {version}; this build reads version {ARCHIVE_VERSION}",
                {"path": self.name, "version": version, "supported": ARCHIVE_VERSION},
            )
        if version != ARCHIVE_VERSION or not isinstance(body.get("sessions"), list):
            raise _fail(f"archive {self.name} has a malformed manifest", "bad manifest", path=self.name)
        names: set[str] = set()
        sessions = body.pop("sessions")
        for number in range(len(sessions)):
            item, sessions[number] = sessions[number], None  # one parsed copy of a document at a time
            label = f"session {number} of archive {self.name}"
            payload = bytes(memoryview(codec.dumps(item)))  # a right-sized copy: orjson's buffer is larger
            del item
            try:
                doc = SessionDoc.from_payload(label, payload)
            except CorruptObjectError as exc:
                raise _fail(f"archive {self.name}: {exc}", "bad session document", path=self.name) from None
            try:
                check_session_name(doc.name)
            except InvalidNameError as exc:
                raise _fail(
                    f"archive {self.name} names a session that cannot be used: {exc}",
                    "bad session name",
                    path=self.name,
                    session=repr(doc.name),
                ) from None
            if doc.name in names:
                raise _fail(f"archive {self.name} lists session {doc.name!r} twice", "bad manifest", session=doc.name)
            if doc.max_snapshots < 1 or doc.generation < 0:
                raise _fail(
                    f"archive {self.name}: session {doc.name!r} has a bad max_snapshots or generation",
                    "bad session document",
                    session=doc.name,
                )
            listed = [*doc.snapshots, *doc.evicted]
            if len(set(listed)) != len(listed):
                raise _fail(
                    f"archive {self.name}: session {doc.name!r} lists a snapshot twice",
                    "bad session document",
                    session=doc.name,
                )
            if doc.head is not None and doc.head not in listed:
                raise _fail(
                    f"archive {self.name}: session {doc.name!r} has head {doc.head}, which it does not list",
                    "bad session document",
                    session=doc.name,
                )
            if not set(doc.bases) <= set(listed):
                raise _fail(
                    f"archive {self.name}: session {doc.name!r} has bases it does not list",
                    "bad session document",
                    session=doc.name,
                )
            names.add(doc.name)
            self.docs.append(doc)

    def _payload(self, i: int) -> bytes:
        """An object's payload (for a state patch: the state it was resolved to)."""
        start, length = self.resolved.get(i) or (self.offsets[i], self.lengths[i])
        self.spool.seek(start)
        data = self.spool.read(length)
        if len(data) != length:
            raise _fail(f"archive {self.name}: spool file is short", "spool", path=self.name)
        return data

    def _check_objects(self) -> None:
        """Every object against its id and its kind's structure, one at a time, in body order."""
        count = len(self.kinds)
        patched = 0
        self.spool.seek(0)
        for i in range(count):
            key = self.table.key(i).hex()
            payload = self.spool.read(self.lengths[i])
            kind = self.kinds[i]
            if kind == KIND_STATE_PATCH:
                patched += _check_state_patch(self.name, key, payload)
                if self.body_size + patched > self.max_size:
                    raise _fail(
                        f"archive {self.name} declares more than {self.max_size} bytes of states",
                        "too large",
                        path=self.name,
                    )
            else:
                actual = codec.object_id(payload)
                if actual != key:
                    raise _fail(
                        f"archive {self.name}: object {key} does not match its id (content hashes to {actual})",
                        "hash mismatch",
                        path=self.name,
                        object=key,
                        actual=actual,
                    )
                _check_payload(self.name, key, kind, payload)
            if self.progress is not None and (i % PROGRESS_EVERY == 0 or i == count - 1):
                self.progress(i + 1, count, "verifying objects")

    # -- lookups -------------------------------------------------------------
    def _find(self, key: str) -> int:
        """The entry number of an object in the archive, or -1."""
        return self.table.find(bytes.fromhex(key))

    def _entry(self, key: str, need: Kind) -> int:
        """The entry holding object ``key`` (or -1), checked to serve as a ``need``.

        Kinds are labels (§3.2): byte-identical payloads of two kinds, such as the state ``[]``
        and the empty patch ``[]``, are one object, labelled with the kind written first. An
        entry labelled otherwise is used when its payload parses as the kind needed.
        """
        i = self._find(key)
        label = self.kinds[i] if i >= 0 else 0
        if i < 0 or label == need or (need == Kind.STATE and label == KIND_STATE_PATCH):
            return i
        if label == KIND_STATE_PATCH and i not in self.resolved:
            raise _fail(
                f"archive {self.name}: object {key} is needed as a {need.name.lower()} before the state patch "
                "holding it is rebuilt",
                "bad order",
                path=self.name,
                object=key,
            )
        if need != Kind.STATE:  # any payload is canonical JSON (checked), hence a state
            try:
                _check_payload(self.name, key, int(need), self._payload(i))
            except ArchiveError:
                raise _fail(
                    f"archive {self.name}: object {key} is a {_KIND_NAMES[label]} and does not parse as the "
                    f"{need.name.lower()} it is used as",
                    "wrong kind",
                    path=self.name,
                    object=key,
                ) from None
        return i

    def _record(self, sid: str, mark: bool = False) -> _Links:
        i = self._entry(sid, Kind.RECORD)
        if i >= 0:
            self.needed[i] |= mark
            return _links(self._payload(i))  # checked by _check_objects
        if self.store.backend.has(sid):
            record = SnapshotRecord.from_payload(sid, self.store.objects.get(sid, Kind.RECORD))
            return _Links(record.parent, record.delta, record.state)
        raise _fail(
            f"archive {self.name}: snapshot {sid} is neither in the archive nor in the store",
            "missing object",
            path=self.name,
            object=sid,
        )

    def _require(self, key: str, need: Kind, needed_by: str, mark: bool) -> None:
        i = self._entry(key, need)
        if i >= 0:
            self.needed[i] |= mark
        elif not self.store.backend.has(key):
            raise _fail(
                f"archive {self.name}: {need.name.lower()} {key} needed by snapshot {needed_by} is neither in "
                "the archive nor in the store",
                "missing object",
                path=self.name,
                object=key,
                snapshot=needed_by,
            )

    # -- state patches -------------------------------------------------------
    def _state_available(self, key: str) -> tuple[int, bool]:
        """(entry, True) when a state with this id can be read now: from the archive (-1: from the store)."""
        i = self._find(key)
        if i >= 0:
            return i, self.kinds[i] != KIND_STATE_PATCH or i in self.resolved
        return -1, self.store.backend.has(key)

    def _resolve_patches(self) -> None:
        """Rebuild every state patch (in index order) and keep the states in the spool."""
        for i in range(len(self.kinds)):
            if self.kinds[i] != KIND_STATE_PATCH:
                continue
            key = self.table.key(i).hex()
            body = orjson.loads(self._payload(i))
            state = self._rebuild(body["parent"], key)
            try:
                state = apply_patch(state, _no_copy(self.name, key, body["patch"]), in_place=True)
                data = codec.dumps(state)
            except (PatchError, TypeError, orjson.JSONEncodeError) as exc:
                raise _fail(
                    f"archive {self.name}: state patch {key} does not apply: {exc}", "bad state patch", object=key
                ) from None
            del state
            if len(data) != body["size"] or codec.object_id(data) != key:
                raise _fail(
                    f"archive {self.name}: state patch {key} rebuilds to a state hashing {codec.object_id(data)}",
                    "hash mismatch",
                    path=self.name,
                    object=key,
                )
            self.spool.seek(0, os.SEEK_END)
            self.resolved[i] = (self.spool.tell(), len(data))
            self.spool.write(data)

    def _rebuild(self, sid: str, for_key: str) -> Any:
        """The state of snapshot ``sid``: from the nearest state that can be read now, then its deltas."""
        path: list[_Links] = []
        seen: set[str] = set()
        current = sid
        while True:
            if current in seen:
                raise _fail(
                    f"archive {self.name}: snapshot {sid} has a cyclic parent chain", "cyclic chain", object=current
                )
            seen.add(current)
            record = self._record(current)
            entry, available = self._state_available(record.state)
            if available:
                break
            if record.delta is None or record.parent is None:
                raise _fail(
                    f"archive {self.name}: state patch {for_key} needs the state of snapshot {sid}, "
                    f"which cannot be rebuilt (state {record.state} is missing)",
                    "missing object",
                    object=record.state,
                )
            path.append(record)
            current = record.parent
        state = orjson.loads(self._payload(entry)) if entry >= 0 else self.store.objects.state(record.state)
        for step in reversed(path):
            assert step.delta is not None
            i = self._entry(step.delta, Kind.DELTA)
            if i < 0 and not self.store.backend.has(step.delta):
                raise _fail(
                    f"archive {self.name}: delta {step.delta} of snapshot {sid}'s chain is neither in the archive "
                    "nor in the store",
                    "missing object",
                    path=self.name,
                    object=step.delta,
                )
            ops = orjson.loads(self._payload(i)) if i >= 0 else self.store.objects.delta(step.delta)
            try:
                state = apply_patch(state, _no_copy(self.name, step.delta, ops), in_place=True)
            except PatchError as exc:
                raise _fail(
                    f"archive {self.name}: delta {step.delta} does not apply: {exc}", "bad delta", object=step.delta
                ) from None
        return state

    # -- session documents ---------------------------------------------------
    def _check_chains(self, doc: SessionDoc, mark: bool) -> None:
        """Every listed snapshot's chain reaches a base through listed records, with every object present."""
        listed = {*doc.snapshots, *doc.evicted}
        bases = set(doc.bases)
        ok = bytearray(len(self.kinds))  # archive records whose chain is known good
        ok_in_store: set[str] = set()  # the same for records only the store has

        def known(sid: str) -> bool:
            i = self._find(sid)
            return bool(ok[i]) if i >= 0 else sid in ok_in_store

        for root in itertools.chain(doc.evicted, doc.snapshots):
            path: list[str] = []
            on_path: set[str] = set()
            current = root
            while not known(current):
                if current not in listed:
                    raise _fail(
                        f"archive {self.name}: the chain of snapshot {root} in session {doc.name!r} runs through "
                        f"{current}, which the session document does not list",
                        "unlisted record",
                        session=doc.name,
                        snapshot=root,
                        object=current,
                    )
                if current in on_path:
                    raise _fail(
                        f"archive {self.name}: snapshot {root} has a cyclic parent chain",
                        "cyclic chain",
                        object=current,
                    )
                path.append(current)
                on_path.add(current)
                record = self._record(current, mark)
                if record.delta is not None:
                    self._require(record.delta, Kind.DELTA, current, mark)
                if record.delta is None or current in bases:
                    self._require(record.state, Kind.STATE, current, mark)
                    break
                current = record.parent  # type: ignore[assignment]
            for sid in path:
                i = self._find(sid)
                if i >= 0:
                    ok[i] = 1
                else:
                    ok_in_store.add(sid)

    def _plan_sessions(self, on_conflict: str) -> list[_Action]:
        backend = self.store.backend
        actions: list[_Action] = []
        conflicts: list[str] = []
        taken = self.taken = {doc.name for doc in self.docs}
        for doc in self.docs:
            key = backend.read_ref(self.store.session_ref(doc.name))
            if key is None:
                actions.append(_Action(doc.name, doc, "create", doc.name))
                continue
            local = self.store.objects.session_doc(key)
            if set(doc.snapshots) <= set(local.snapshots) and on_conflict in ("error", "merge"):
                actions.append(_Action(doc.name, doc, "unchanged", doc.name))
            elif on_conflict == "error":
                conflicts.append(doc.name)
            elif on_conflict == "rename":
                target = _free_name(self.store, doc.name, taken)
                taken.add(target)
                actions.append(_Action(doc.name, doc, "rename", target))
            else:
                actions.append(_Action(doc.name, doc, on_conflict, doc.name))
        if conflicts:
            raise _fail(
                f"archive {self.name}: the store already has session(s) {', '.join(repr(c) for c in conflicts)} "
                "with other snapshots; import with on_conflict='merge', 'replace' or 'rename'",
                "session exists",
                path=self.name,
                sessions=conflicts,
            )
        return actions

    # -- writing -------------------------------------------------------------
    def apply(self, on_conflict: str) -> ImportReport:
        report = ImportReport()
        with self.store.writing():  # shared: gc must not delete what we check, then reference
            self._resolve_patches()
            actions = self._plan_sessions(on_conflict)
            for action in actions:
                # an unchanged session is checked too (a malformed archive is refused whole), but writes nothing
                self._check_chains(action.doc, mark=action.action != "unchanged")
            self._write_objects(report)
            for action in actions:
                self._write_session(action, report, on_conflict)
        return report

    def _write_objects(self, report: ImportReport) -> None:
        """Needed objects the store lacks: states and deltas first, then records."""
        backend, objects = self.store.backend, self.store.objects
        total = sum(self.needed)
        order = itertools.chain(
            (i for i in range(len(self.kinds)) if self.needed[i] and self.kinds[i] != Kind.RECORD),
            (i for i in range(len(self.kinds)) if self.needed[i] and self.kinds[i] == Kind.RECORD),
        )
        batch: list[tuple[str, bytes]] = []
        batch_bytes = 0
        for done, i in enumerate(order, 1):
            key = self.table.key(i).hex()
            if backend.has(key):
                report.objects_present += 1
            else:
                kind = Kind.STATE if self.kinds[i] == KIND_STATE_PATCH else Kind(self.kinds[i])
                stored_key, blob = objects.encode(kind, self._payload(i))
                assert stored_key == key
                batch.append((key, blob))
                batch_bytes += len(blob)
                report.objects_written += 1
                if len(batch) >= 256 or batch_bytes >= 16 << 20:
                    backend.put_many(batch)
                    batch, batch_bytes = [], 0
            if self.progress is not None and (done % PROGRESS_EVERY == 0 or done == total):
                self.progress(done, total, "importing objects")
        if batch:
            backend.put_many(batch)

    def _write_session(self, action: _Action, report: ImportReport, on_conflict: str) -> None:
        """Create or update one session's document and ref; a session that changed meanwhile is re-read."""
        store, backend = self.store, self.store.backend
        if action.action == "unchanged":
            report.unchanged.append(action.name)
            return
        target = action.target
        for _attempt in range(20):
            ref = store.session_ref(target)
            old_key = backend.read_ref(ref)
            if old_key is None:
                doc = action.doc.copy()
                doc.name = target
                how = "create" if target == action.name else "rename"
            else:
                try:
                    local = store.objects.session_doc(old_key)
                except SnapshotNotFound:
                    continue  # replaced between the two reads
                # planned as create or rename, but someone created it meanwhile: the policy decides
                policy = action.action if action.action in ("merge", "replace") else on_conflict
                up_to_date = set(action.doc.snapshots) <= set(local.snapshots)
                if target == action.name and policy in ("error", "merge") and up_to_date:
                    report.unchanged.append(action.name)
                    return
                if policy == "error":
                    raise _fail(
                        f"session {target!r} was created by someone else during the import (objects are written; "
                        "gc collects them)",
                        "session exists",
                        session=target,
                    )
                if policy == "rename":
                    target = _free_name(store, action.name, self.taken)
                    self.taken.add(target)
                    continue
                doc = _merged(local, action.doc) if policy == "merge" else action.doc.copy()
                doc.name = target
                doc.generation = local.generation + 1
                how = policy
            new_key, _ = store.objects.put(Kind.SESSION, doc.to_payload())
            if backend.cas_ref(ref, old_key, new_key):
                if old_key is not None and old_key != new_key:
                    backend.delete(old_key)  # as a session's own swap does; readers re-read the ref
                break
            if backend.read_ref(ref) != new_key:
                backend.delete(new_key)
        else:
            raise ConcurrentUpdateError(f"session {target!r} kept changing during the import", {"session": target})
        if how == "create":
            report.created.append(target)
        elif how == "merge":
            report.merged.append(target)
        elif how == "replace":
            report.replaced.append(target)
        else:
            report.renamed[action.name] = target


def _merged(local: SessionDoc, incoming: SessionDoc) -> SessionDoc:
    """The local document plus the archive's snapshots it lacks (appended in order); the local head stays."""
    doc = local.copy()
    present = set(local.snapshots)
    added = [sid for sid in incoming.snapshots if sid not in present]
    doc.snapshots = [*local.snapshots, *added]
    listed = set(doc.snapshots)
    evicted = [sid for sid in local.evicted if sid not in listed]
    known = listed | set(evicted)
    evicted += [sid for sid in incoming.evicted if sid not in known]
    if incoming.head is not None and incoming.head not in listed and incoming.head not in evicted:
        evicted.append(incoming.head)
    doc.evicted = evicted
    doc.bases = [*local.bases, *(b for b in incoming.bases if b not in set(local.bases))]
    if doc.head is None:
        doc.head = incoming.head
    doc.max_snapshots = max(local.max_snapshots, len(doc.snapshots))
    return doc


def _free_name(store: SnapshotStore, name: str, taken: set[str]) -> str:
    from .store import MAX_NAME_LENGTH

    for n in range(1, 10_000):
        suffix = _RENAME_SUFFIX if n == 1 else f"{_RENAME_SUFFIX}-{n}"
        candidate = name[: MAX_NAME_LENGTH - len(suffix)] + suffix
        if candidate not in taken and not store.has_session(candidate):
            return candidate
    raise SnapshotError(f"no free name to import session {name!r} under", {"session": name})


def _no_copy(archive: str, key: str, ops: Any) -> Any:
    """Refuse ``copy`` while rebuilding from an archive: repeated copies could inflate a state without bound."""
    if isinstance(ops, list):
        for op in ops:
            if isinstance(op, dict) and op.get("op") == "copy":
                raise _fail(
                    f"archive {archive}: patch {key} copies values, which import does not rebuild through",
                    "copy operation",
                    object=key,
                )
    return ops


def _check_payload(archive: str, key: str, kind: int, payload: bytes) -> None:
    """The payload is canonical JSON of the right shape for its kind."""
    try:
        if kind == Kind.RECORD:
            record = SnapshotRecord.from_payload(key, payload)
            parse_timestamp(record.timestamp)  # listing the snapshot parses it
            canonical = record.to_payload() == payload
        else:
            value = orjson.loads(payload)
            canonical = codec.dumps(value) == payload
            if kind == Kind.DELTA and not _is_patch(value):
                raise _fail(f"archive {archive}: delta {key} is not a JSON Patch", "bad delta", object=key)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError) as exc:
        raise _fail(
            f"archive {archive}: object {key} is not JSON snapstore can store: {exc}", "not JSON", object=key
        ) from None
    except CorruptObjectError as exc:
        raise _fail(f"archive {archive}: {exc}", "bad record", object=key) from None
    except ValueError as exc:  # the timestamp
        raise _fail(f"archive {archive}: record {key} has a bad timestamp: {exc}", "bad record", object=key) from None
    if not canonical:
        raise _fail(f"archive {archive}: object {key} is not canonical JSON", "not canonical", object=key)


def _check_state_patch(archive: str, key: str, payload: bytes) -> int:
    """Check a state patch's shape; returns the size of the state it declares."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        body = None
    if (
        not isinstance(body, dict)
        or set(body) != {"parent", "patch", "size"}
        or not codec_id(body["parent"])
        or not _is_patch(body["patch"])
        or type(body["size"]) is not int
        or not 0 < body["size"] <= codec.MAX_OBJECT_SIZE
    ):
        raise _fail(f"archive {archive}: state patch {key} is malformed", "bad state patch", object=key)
    return body["size"]


def _is_patch(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(op, dict) and op.get("op") in _PATCH_OPS and isinstance(op.get("path"), str) for op in value
    )
