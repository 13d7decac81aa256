"""Import: an archive is checked whole (trailer, limits, checksums, every object against its id,
every record, session document and chain) before anything is written; then objects go in first
and session refs last, so a refused archive leaves the store as it was."""

from __future__ import annotations

import itertools
import os
import re
import tempfile
from array import array
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, BinaryIO, NamedTuple

import orjson
import xxhash
import zstandard

from .. import codec
from ..codec import Kind
from ..delta import apply_patch
from ..errors import (
    ArchiveError,
    ConcurrentUpdateError,
    CorruptObjectError,
    FormatVersionError,
    InvalidNameError,
    PatchError,
    SnapshotError,
    SnapshotNotFound,
)
from ..objects import SessionDoc, SnapshotRecord
from .checks import check_payload, check_state_patch, fail, refuse_copies
from .layout import (
    ARCHIVE_VERSION,
    CHUNK,
    ENTRY,
    HEADER,
    KIND_NAMES,
    KIND_STATE_PATCH,
    KINDS,
    MAGIC,
    MANIFEST_TYPE,
    PROGRESS_EVERY,
    TRAILER,
    TRAILER_CHECKED,
    TRAILER_MAGIC,
    IdIndex,
    Links,
    Progress,
    links,
)

if TYPE_CHECKING:
    from ..store import SnapshotStore

#: default limit on an archive's decompressed body (what import spools to disk)
DEFAULT_MAX_SIZE = 16 << 30
#: limit on the manifest and on the index, which import reads into memory
MAX_META_SIZE = 1 << 30
CONFLICT_POLICIES = ("error", "merge", "replace", "rename")
_HEX_ID = re.compile(rb"[0-9a-f]{32}")
_RENAME_SUFFIX = "-imported"


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
        self.table = IdIndex()
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
            raise fail(f"archive {self.name} is truncated ({size} bytes)", "truncated", path=self.name, size=size)
        if header[:4] != MAGIC:
            raise fail(f"{self.name} is not a snapstore archive (no SNPA header)", "bad magic", path=self.name)
        _magic, version, reserved = HEADER.unpack(header)
        if version > ARCHIVE_VERSION or version < 1:
            raise FormatVersionError(
                f"archive {self.name} has format version {version}; this build reads version {ARCHIVE_VERSION}",
                {"path": self.name, "version": version, "supported": ARCHIVE_VERSION},
            )
        if reserved != b"\0\0\0":
            raise fail(f"archive {self.name} has a damaged header", "bad header", path=self.name)
        if size < HEADER.size + TRAILER.size:
            raise fail(f"archive {self.name} is truncated ({size} bytes)", "truncated", path=self.name, size=size)
        f.seek(size - TRAILER.size)
        raw = f.read(TRAILER.size)
        trailer = _Trailer(*TRAILER.unpack(raw))
        frames_length, body_size, payloads_size, manifest_size, count = trailer[:5]
        if trailer.magic != TRAILER_MAGIC:
            raise fail(
                f"archive {self.name} is truncated or damaged: it does not end with its trailer",
                "truncated",
                path=self.name,
            )
        if xxhash.xxh3_64_intdigest(raw[:TRAILER_CHECKED]) != trailer.check or trailer.reserved != b"\0" * 4:
            raise fail(
                f"archive {self.name} has a damaged trailer (checksum mismatch)", "trailer checksum", path=self.name
            )
        if HEADER.size + frames_length + TRAILER.size != size:
            raise fail(
                f"archive {self.name} is {size} bytes, its trailer says {HEADER.size + frames_length + TRAILER.size}: "
                "truncated or extended",
                "length mismatch",
                path=self.name,
            )
        if body_size > self.max_size:
            raise fail(
                f"archive {self.name} declares {body_size} bytes uncompressed, over the {self.max_size}-byte limit",
                "too large",
                path=self.name,
                size=body_size,
                limit=self.max_size,
            )
        if manifest_size > MAX_META_SIZE or count * ENTRY.size > MAX_META_SIZE:
            raise fail(
                f"archive {self.name} declares a manifest or index over the {MAX_META_SIZE}-byte limit",
                "too large",
                path=self.name,
            )
        if payloads_size + manifest_size + count * ENTRY.size != body_size:
            raise fail(f"archive {self.name} has inconsistent sizes in its trailer", "bad trailer", path=self.name)
        self.body_size = body_size
        return trailer

    def _spool_body(self, trailer: _Trailer) -> None:
        """Decompress the frames into the spool file, stopping as soon as they exceed the declared size."""
        frames_length, body_size = trailer.frames_length, trailer.body_size
        region = _Region(self.source, HEADER.size, frames_length)
        while region.read(CHUNK):
            pass  # the checksum of the compressed bytes first: damage gets a clear message
        if region.hasher.digest() != trailer.frames_hash:
            raise fail(
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
                    raise fail(
                        f"archive {self.name} inflates beyond the {body_size} bytes it declares; refused",
                        "too large",
                        path=self.name,
                        size=body_size,
                    )
                self.spool.write(chunk)
                if self.progress is not None:
                    self.progress(written, body_size, "reading archive")
        except zstandard.ZstdError as exc:
            raise fail(f"archive {self.name} does not decompress: {exc}", "bad zstd data", path=self.name) from None
        if written != body_size or region.remaining:
            raise fail(
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
            raise fail(
                f"archive {self.name} is damaged: its manifest or index does not match its checksum",
                "meta checksum",
                path=self.name,
            )
        offset = 0
        for number, (hex_id, start, length, kind, reserved) in enumerate(ENTRY.iter_unpack(index)):
            where = f"archive {self.name} index entry {number}"
            if not _HEX_ID.fullmatch(hex_id) or reserved != b"\0\0\0":
                raise fail(f"{where} is malformed", "bad index", path=self.name, entry=number)
            if kind not in KINDS:
                raise fail(f"{where} has unknown kind {kind}", "bad index", path=self.name, entry=number)
            if start != offset or length < 1 or length > codec.MAX_OBJECT_SIZE:
                raise fail(
                    f"{where} ({hex_id.decode()}) has offset {start} and length {length}: "
                    f"objects must follow each other from offset 0, each 1 to {codec.MAX_OBJECT_SIZE} bytes",
                    "bad index",
                    path=self.name,
                    entry=number,
                    object=hex_id.decode(),
                )
            offset += length
            if not self.table.add(bytes.fromhex(hex_id.decode())):
                raise fail(
                    f"archive {self.name} lists object {hex_id.decode()} twice",
                    "bad index",
                    path=self.name,
                    object=hex_id.decode(),
                )
            self.offsets.append(start)
            self.lengths.append(length)
            self.kinds.append(kind)
        if offset != payloads_size:
            raise fail(
                f"archive {self.name} index covers {offset} bytes of objects, the trailer says {payloads_size}",
                "bad index",
                path=self.name,
            )
        del index
        self.needed = bytearray(count)
        return manifest

    def _parse_manifest(self, manifest: bytes) -> None:
        from ..store import check_session_name

        try:
            body = orjson.loads(manifest)
        except orjson.JSONDecodeError as exc:
            raise fail(f"archive {self.name} has a manifest that is not JSON: {exc}", "bad manifest") from None
        if not isinstance(body, dict) or body.get("type") != MANIFEST_TYPE:
            raise fail(f"archive {self.name} has no snapstore manifest", "bad manifest", path=self.name)
        version = body.get("format")
        if type(version) is int and version > ARCHIVE_VERSION:
            raise FormatVersionError(
                f"archive {self.name} has a manifest of format {version}; this build reads version {ARCHIVE_VERSION}",
                {"path": self.name, "version": version, "supported": ARCHIVE_VERSION},
            )
        if version != ARCHIVE_VERSION or not isinstance(body.get("sessions"), list):
            raise fail(f"archive {self.name} has a malformed manifest", "bad manifest", path=self.name)
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
                raise fail(f"archive {self.name}: {exc}", "bad session document", path=self.name) from None
            try:
                check_session_name(doc.name)
            except InvalidNameError as exc:
                raise fail(
                    f"archive {self.name} names a session that cannot be used: {exc}",
                    "bad session name",
                    path=self.name,
                    session=repr(doc.name),
                ) from None
            if doc.name in names:
                raise fail(f"archive {self.name} lists session {doc.name!r} twice", "bad manifest", session=doc.name)
            if doc.max_snapshots < 1 or doc.generation < 0:
                raise fail(
                    f"archive {self.name}: session {doc.name!r} has a bad max_snapshots or generation",
                    "bad session document",
                    session=doc.name,
                )
            listed = [*doc.snapshots, *doc.evicted]
            if len(set(listed)) != len(listed):
                raise fail(
                    f"archive {self.name}: session {doc.name!r} lists a snapshot twice",
                    "bad session document",
                    session=doc.name,
                )
            if doc.head is not None and doc.head not in listed:
                raise fail(
                    f"archive {self.name}: session {doc.name!r} has head {doc.head}, which it does not list",
                    "bad session document",
                    session=doc.name,
                )
            if not set(doc.bases) <= set(listed):
                raise fail(
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
            raise fail(f"archive {self.name}: spool file is short", "spool", path=self.name)
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
                patched += check_state_patch(self.name, key, payload)
                if self.body_size + patched > self.max_size:
                    raise fail(
                        f"archive {self.name} declares more than {self.max_size} bytes of states",
                        "too large",
                        path=self.name,
                    )
            else:
                actual = codec.object_id(payload)
                if actual != key:
                    raise fail(
                        f"archive {self.name}: object {key} does not match its id (content hashes to {actual})",
                        "hash mismatch",
                        path=self.name,
                        object=key,
                        actual=actual,
                    )
                check_payload(self.name, key, kind, payload)
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
            raise fail(
                f"archive {self.name}: object {key} is needed as a {need.name.lower()} before the state patch "
                "holding it is rebuilt",
                "bad order",
                path=self.name,
                object=key,
            )
        if need != Kind.STATE:  # any payload is canonical JSON (checked), hence a state
            try:
                check_payload(self.name, key, int(need), self._payload(i))
            except ArchiveError:
                raise fail(
                    f"archive {self.name}: object {key} is a {KIND_NAMES[label]} and does not parse as the "
                    f"{need.name.lower()} it is used as",
                    "wrong kind",
                    path=self.name,
                    object=key,
                ) from None
        return i

    def _record(self, sid: str, mark: bool = False) -> Links:
        i = self._entry(sid, Kind.RECORD)
        if i >= 0:
            self.needed[i] |= mark
            return links(self._payload(i))  # checked by _check_objects
        if self.store.backend.has(sid):
            record = SnapshotRecord.from_payload(sid, self.store.objects.get(sid, Kind.RECORD))
            return Links(record.parent, record.delta, record.state)
        raise fail(
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
            raise fail(
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
                state = apply_patch(state, refuse_copies(self.name, key, body["patch"]), in_place=True)
                data = codec.dumps(state)
            except (PatchError, TypeError, orjson.JSONEncodeError) as exc:
                raise fail(
                    f"archive {self.name}: state patch {key} does not apply: {exc}", "bad state patch", object=key
                ) from None
            del state
            if len(data) != body["size"] or codec.object_id(data) != key:
                raise fail(
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
        path: list[Links] = []
        seen: set[str] = set()
        current = sid
        while True:
            if current in seen:
                raise fail(
                    f"archive {self.name}: snapshot {sid} has a cyclic parent chain", "cyclic chain", object=current
                )
            seen.add(current)
            record = self._record(current)
            entry, available = self._state_available(record.state)
            if available:
                break
            if record.delta is None or record.parent is None:
                raise fail(
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
                raise fail(
                    f"archive {self.name}: delta {step.delta} of snapshot {sid}'s chain is neither in the archive "
                    "nor in the store",
                    "missing object",
                    path=self.name,
                    object=step.delta,
                )
            ops = orjson.loads(self._payload(i)) if i >= 0 else self.store.objects.delta(step.delta)
            try:
                state = apply_patch(state, refuse_copies(self.name, step.delta, ops), in_place=True)
            except PatchError as exc:
                raise fail(
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
                    raise fail(
                        f"archive {self.name}: the chain of snapshot {root} in session {doc.name!r} runs through "
                        f"{current}, which the session document does not list",
                        "unlisted record",
                        session=doc.name,
                        snapshot=root,
                        object=current,
                    )
                if current in on_path:
                    raise fail(
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
            raise fail(
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
                    raise fail(
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
    from ..store import MAX_NAME_LENGTH

    for n in range(1, 10_000):
        suffix = _RENAME_SUFFIX if n == 1 else f"{_RENAME_SUFFIX}-{n}"
        candidate = name[: MAX_NAME_LENGTH - len(suffix)] + suffix
        if candidate not in taken and not store.has_session(candidate):
            return candidate
    raise SnapshotError(f"no free name to import session {name!r} under", {"session": name})
