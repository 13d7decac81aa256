"""Import: an archive is checked whole (trailer, limits, checksums, every object against its id,
every record, session document and chain, every state rebuilt against its hash) before anything
is written; then each session's snapshots go in through ``Session.import_snapshots``, keeping
their ids, so a refused archive leaves the store as it was."""

from __future__ import annotations

import itertools
import os
import re
import tempfile
from array import array
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, BinaryIO, NamedTuple

import orjson
import xxhash
import zstandard

from .. import codec
from ..codec import Kind
from ..delta import apply_patch
from ..errors import (
    ArchiveError,
    CorruptObjectError,
    FormatVersionError,
    InvalidNameError,
    PatchError,
    SnapshotError,
)
from ..history import SessionLog
from ..objects import SessionDoc, SnapshotRecord, codec_id
from ..session import check_tag_name
from .checks import check_payload, check_session_numbers, check_state_patch, fail, out_of_range, refuse_copies
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
from .sessions import CONFLICT_POLICIES, ImportReport, apply_sessions, plan_sessions

if TYPE_CHECKING:
    from ..store import SnapshotStore

#: default limit on an archive's decompressed body (what import spools to disk)
DEFAULT_MAX_SIZE = 16 << 30
#: limit on the manifest and on the index, which import reads into memory
MAX_META_SIZE = 1 << 30
_HEX_ID = re.compile(rb"[0-9a-f]{32}")


def import_archive(
    store: SnapshotStore,
    path: str | os.PathLike[str],
    progress: Progress | None = None,
    *,
    on_conflict: str = "error",
    max_size: int = DEFAULT_MAX_SIZE,
    spool_dir: str | os.PathLike[str] | None = None,
) -> ImportReport:
    """Add an archive's sessions and snapshots to ``store``, all checked before anything is written.

    A session the store lacks is created from the archive's document. One the store
    already has is left alone when it already retains every snapshot of the archive's
    document; otherwise ``on_conflict`` decides: ``"error"`` (the default) refuses the
    whole import naming the sessions; ``"merge"`` adds the archive's snapshots to the local
    session, moves the head to the archive's when the archive's history extends the local
    one, and raises the retention limit when the merged session needs it (the report says
    both); ``"replace"`` deletes the local session and imports the archive's; ``"rename"``
    imports it as ``<name>-imported`` (or ``-imported-2``...): snapshot ids hash their
    session's name, so a renamed session's snapshots get new ids (the report maps them).
    ``max_size`` caps the archive's decompressed size. The decompressed body is spooled to
    a temporary file in ``spool_dir`` (the system's temporary folder by default).
    """
    if on_conflict not in CONFLICT_POLICIES:
        raise SnapshotError(
            f"on_conflict must be one of {', '.join(CONFLICT_POLICIES)}, not {on_conflict!r}",
            {"argument": "on_conflict", "value": repr(on_conflict)},
        )
    with open(path, "rb") as source, _open_spool(str(path), spool_dir) as spool:
        reader = _ArchiveReader(store, source, spool, str(path), max_size, progress)
        reader.spool_dir = spool_dir
        reader.read()
        return apply_sessions(reader, on_conflict)


def _open_spool(archive: str, spool_dir: str | os.PathLike[str] | None) -> IO[bytes]:
    try:
        return tempfile.TemporaryFile(dir=spool_dir)
    except OSError as exc:
        raise _spool_error(archive, spool_dir, exc) from exc


def _spool_error(archive: str, spool_dir: str | os.PathLike[str] | None, exc: OSError) -> ArchiveError:
    folder = str(spool_dir) if spool_dir is not None else tempfile.gettempdir()
    return ArchiveError(
        f"cannot import archive {archive}: writing its temporary spool file in {folder} failed: "
        f"{exc.strerror or exc} (errno {exc.errno}); nothing was imported",
        {"path": folder, "errno": exc.errno, "reason": "spool failed", "archive": archive},
    )


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
        self.docs: list[SessionDoc] = []
        self.tags: dict[str, dict[str, str]] = {}  # session -> its tags (name -> id)
        self.body_size = 0
        self._locals: dict[str, SessionLog | None] = {}
        self._last: tuple[str, Any] | None = None  # the state rebuilt last, to go on from
        self.spool_dir: str | os.PathLike[str] | None = None  # where the spool file is (for messages)

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
                field="frames_length",
            )
        if body_size > self.max_size:
            raise fail(
                f"archive {self.name} declares {body_size} bytes uncompressed, over the {self.max_size}-byte limit",
                "too large",
                path=self.name,
                size=body_size,
                limit=self.max_size,
                field="body_size",
            )
        for field_name, declared in (("manifest_size", manifest_size), ("count", count * ENTRY.size)):
            if declared > MAX_META_SIZE:
                raise fail(
                    f"archive {self.name} declares a manifest or index over the {MAX_META_SIZE}-byte limit "
                    f"(trailer field {field_name!r})",
                    "too large",
                    path=self.name,
                    field=field_name,
                )
        if payloads_size > body_size:
            raise out_of_range(
                self.name, "trailer field 'payloads_size'", payloads_size, f"0 to body_size ({body_size})",
                "bad trailer", path=self.name, field="payloads_size",
            )  # fmt: skip
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
                self._spool(chunk)
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
                    field="offset" if start != offset else "length",
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
            tags = item.pop("tags", {}) if isinstance(item, dict) else {}
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
            check_session_numbers(self.name, doc.name, doc.max_snapshots, doc.generation)
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
            self.tags[doc.name] = self._check_tags(doc, tags)
            names.add(doc.name)
            self.docs.append(doc)

    def _check_tags(self, doc: SessionDoc, tags: Any) -> dict[str, str]:
        """A document's ``tags`` member (absent in archives of sessions without tags): names of listed snapshots."""
        listed = set(doc.snapshots)
        if not isinstance(tags, dict) or not all(isinstance(v, str) and codec_id(v) for v in tags.values()):
            raise fail(
                f"archive {self.name}: session {doc.name!r} has malformed tags", "bad session document",
                session=doc.name,
            )  # fmt: skip
        for tag, sid in tags.items():
            try:
                check_tag_name(tag)
            except SnapshotError as exc:
                raise fail(
                    f"archive {self.name}: session {doc.name!r} has a bad tag: {exc}", "bad session document",
                    session=doc.name,
                ) from None  # fmt: skip
            if sid not in listed:
                raise fail(
                    f"archive {self.name}: session {doc.name!r} tags {sid} as {tag!r}, a snapshot it does not list",
                    "bad session document",
                    session=doc.name,
                )
        return dict(tags)

    def _spool(self, data: bytes) -> None:
        """Append to the spool file; a full disk (or any write error) is an ArchiveError naming the folder."""
        try:
            self.spool.write(data)
            self.spool.flush()
        except OSError as exc:
            raise _spool_error(self.name, self.spool_dir, exc) from exc

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

    def local(self, name: str) -> SessionLog | None:
        """The store's session of that name as it is now (None when the store has none)."""
        if name not in self._locals:
            from ..store import session_key

            log = SessionLog(self.store.backend, session_key(name), name)
            log.refresh()
            self._locals[name] = log if log.segments else None
        return self._locals[name]

    def forget_local(self, name: str) -> None:
        self._locals.pop(name, None)

    def record(self, sid: str, local: SessionLog | None = None) -> Links:
        """A record's links, from the archive or else from the store's session ``local``."""
        i = self._entry(sid, Kind.RECORD)
        if i >= 0:
            return links(self._payload(i))  # checked by _check_objects
        if local is not None and sid in local.commits:
            record = local.commits[sid].record
            return Links(record.parent, record.delta, record.state, record.session)
        raise fail(
            f"archive {self.name}: snapshot {sid} is neither in the archive nor in the store",
            "missing object",
            path=self.name,
            object=sid,
        )

    def full_record(self, sid: str) -> SnapshotRecord:
        """An archive record (checked by ``_check_objects``)."""
        return SnapshotRecord.from_payload(sid, self._payload(self._entry(sid, Kind.RECORD)))

    def delta_payload(self, key: str) -> bytes | None:
        i = self._entry(key, Kind.DELTA)
        return self._payload(i) if i >= 0 else None

    def _require(self, key: str, need: Kind, needed_by: str) -> None:
        if self._entry(key, need) < 0:
            raise fail(
                f"archive {self.name}: {need.name.lower()} {key} needed by snapshot {needed_by} is not in the archive",
                "missing object",
                path=self.name,
                object=key,
                snapshot=needed_by,
            )

    # -- states --------------------------------------------------------------
    def _resolve_patches(self) -> None:
        """Rebuild every state patch (in index order) and keep the states in the spool."""
        for i in range(len(self.kinds)):
            if self.kinds[i] != KIND_STATE_PATCH:
                continue
            key = self.table.key(i).hex()
            body = orjson.loads(self._payload(i))
            parent = body["parent"]
            found = self._find(parent)
            local = self.local(links(self._payload(found)).session) if found >= 0 else None
            state = self._rebuild(parent, frozenset(), local, f"state patch {key}")
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
            self._spool(data)
        self._last = None

    def _readable_state(self, key: str) -> int:
        """The archive entry holding a state that can be read now, or -1."""
        i = self._find(key)
        if i >= 0 and (self.kinds[i] != KIND_STATE_PATCH or i in self.resolved):
            return i
        return -1

    def _rebuild(self, sid: str, bases: frozenset[str], local: SessionLog | None, needed_by: str) -> Any:
        """The state of snapshot ``sid`` (a fresh value): from the state rebuilt last, a base state in
        the archive or a snapshot the store's session holds, then the deltas forward."""
        path: list[Links] = []
        current = sid
        while True:
            if self._last is not None and self._last[0] == current:
                state = self._last[1]
                self._last = None  # patched in place from here on
                break
            if local is not None and current in local.commits and self._find(current) < 0:
                try:
                    state = local.rebuild(current)
                except SnapshotError as exc:
                    raise fail(
                        f"archive {self.name}: {needed_by} needs snapshot {current} of the store, which cannot be "
                        f"read: {exc}",
                        "missing object",
                        object=current,
                    ) from None
                break
            record = self.record(current, local)
            if record.delta is None or current in bases or self._readable_state(record.state) >= 0:
                entry = self._readable_state(record.state)
                if entry < 0:
                    raise fail(
                        f"archive {self.name}: {needed_by} needs the state of snapshot {current}, which cannot be "
                        f"rebuilt (state {record.state} is missing)",
                        "missing object",
                        object=record.state,
                    )
                state = orjson.loads(self._payload(entry))
                break
            if record.parent is None or len(path) > len(self.kinds):
                raise fail(
                    f"archive {self.name}: snapshot {sid} has a broken or cyclic parent chain", "cyclic chain",
                    object=current,
                )  # fmt: skip
            path.append(record)
            current = record.parent
        for step in reversed(path):
            assert step.delta is not None
            i = self._entry(step.delta, Kind.DELTA)
            if i < 0:
                raise fail(
                    f"archive {self.name}: delta {step.delta} of snapshot {sid}'s chain is not in the archive",
                    "missing object",
                    path=self.name,
                    object=step.delta,
                )
            ops = orjson.loads(self._payload(i))
            try:
                state = apply_patch(state, refuse_copies(self.name, step.delta, ops), in_place=True)
            except PatchError as exc:
                raise fail(
                    f"archive {self.name}: delta {step.delta} does not apply: {exc}", "bad delta", object=step.delta
                ) from None
        return state

    def state_bytes(self, sid: str, record: SnapshotRecord, bases: frozenset[str], local: SessionLog | None) -> bytes:
        """The canonical bytes of a snapshot's state, rebuilt and checked against its record."""
        state = self._rebuild(sid, bases, local, f"snapshot {sid}")
        data = codec.dumps(state)
        if len(data) != record.size or codec.object_id(data) != record.state:
            raise fail(
                f"archive {self.name}: snapshot {sid} rebuilds to a state hashing {codec.object_id(data)} "
                f"({len(data)} bytes); its record says {record.state} ({record.size} bytes)",
                "hash mismatch",
                path=self.name,
                object=sid,
            )
        self._last = (sid, state)
        return data

    def forget_last(self) -> None:
        self._last = None

    # -- session documents ---------------------------------------------------
    def check_chains(self, doc: SessionDoc, local: SessionLog | None) -> None:
        """Every listed snapshot's chain reaches a base through listed records of this session,
        with every delta and base state in the archive, or reaches a snapshot the store's session holds."""
        listed = {*doc.snapshots, *doc.evicted}
        bases = set(doc.bases)
        ok = bytearray(len(self.kinds))  # archive records whose chain is known good

        def known(sid: str) -> bool:
            i = self._find(sid)
            if i >= 0:
                return bool(ok[i])
            return local is not None and sid in local.commits

        for root in itertools.chain(doc.evicted, doc.snapshots):
            path: list[int] = []
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
                on_path.add(current)
                record = self.record(current)
                path.append(self._find(current))
                if record.session != doc.name:
                    raise fail(
                        f"archive {self.name}: session {doc.name!r} lists snapshot {current} of session "
                        f"{record.session!r}",
                        "bad session document",
                        session=doc.name,
                        object=current,
                    )
                if record.delta is None or current in bases:  # a base: its state, not its delta
                    if self._readable_state(record.state) < 0:
                        self._require(record.state, Kind.STATE, current)
                    break
                self._require(record.delta, Kind.DELTA, current)
                current = record.parent  # type: ignore[assignment]
            for i in path:
                ok[i] = 1

    def _plan_sessions(self, on_conflict: str) -> Any:
        return plan_sessions(self, on_conflict)

    def progress_at(self, done: int, total: int, what: str) -> None:
        if self.progress is not None and (done % PROGRESS_EVERY == 0 or done == total):
            self.progress(done, total, what)

    def states(
        self, doc: SessionDoc, ids: list[str], local: SessionLog | None
    ) -> Iterator[tuple[str, SnapshotRecord, bytes, bytes | None]]:
        """(id, record, state bytes, delta payload or None) of each snapshot in ``ids``, each state checked."""
        bases = frozenset(doc.bases)
        self._last = None
        for sid in ids:
            record = self.full_record(sid)
            data = self.state_bytes(sid, record, bases, local)
            delta = self.delta_payload(record.delta) if record.delta is not None else None
            yield sid, record, data, delta
        self._last = None
