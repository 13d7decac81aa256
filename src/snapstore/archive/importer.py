"""Import: an archive is checked whole (trailer, limits, checksums, every object against its id,
every record, session document and chain, every state rebuilt against its hash) before anything
is written; then each session's snapshots go in through ``Session.import_snapshots``, keeping
their ids, so a refused archive leaves the store as it was."""

from __future__ import annotations

import os
import re
import stat
import tempfile
from typing import IO, TYPE_CHECKING, Any, BinaryIO, NamedTuple

import orjson
import xxhash
import zstandard

from .. import codec
from ..errors import (
    ArchiveError,
    CorruptObjectError,
    FormatVersionError,
    InvalidNameError,
    SnapshotError,
    shown_value,
)
from ..objects import SessionDoc, codec_id
from ..session import check_tag_name
from .checks import check_payload, check_session_numbers, check_state_patch, fail, out_of_range
from .contents import ArchiveContents, spool_error
from .layout import (
    ARCHIVE_VERSION,
    CHUNK,
    ENTRY,
    HEADER,
    KIND_STATE_PATCH,
    KINDS,
    MAGIC,
    MANIFEST_TYPE,
    PROGRESS_EVERY,
    TRAILER,
    TRAILER_CHECKED,
    TRAILER_MAGIC,
    Progress,
)
from .sessions import CONFLICT_POLICIES, ImportReport, apply_sessions, check_sessions

if TYPE_CHECKING:
    from ..store import SnapshotStore

#: default limit on an archive's decompressed body (what import spools to disk)
DEFAULT_MAX_SIZE = 16 << 30
#: limit on the manifest and on the index, which import reads into memory
MAX_META_SIZE = 1 << 30
#: a manifest over this many bytes may be at most MANIFEST_RATIO times the archive's compressed frames:
#: parsed whole, hostile JSON (``[{},{},...]``) takes some 30 times its size in memory, and compresses
#: thousands of times, where an exporter's manifest (ids, names, tags) compresses at most a few hundred
#: times (270 for 30,000 empty sessions whose 200-character names differ in their last digits)
MANIFEST_FLOOR = 4 << 20
MANIFEST_RATIO = 1024
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
    both); ``"replace"`` puts the archive's session in the local one's place in one step once it
    is written whole (``SnapshotStore.replacing``: stopped before then, the local one stays); ``"rename"``
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
    with _open_archive(path) as source, _open_spool(str(path), spool_dir) as spool:
        reader = _ArchiveReader(store, source, spool, str(path), max_size, progress)
        reader.spool_dir = spool_dir
        reader.read()
        return apply_sessions(reader, on_conflict)


def check_archive(
    path: str | os.PathLike[str],
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    spool_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Read and check an archive whole, as importing it into an empty store would, and write
    nothing: raises what that import would raise. A caller that would make a store only to
    import into it asks this first, so that a bad archive leaves no store behind (a PostgreSQL
    store's tables cannot be taken back as a folder can)."""
    from ..store import SnapshotStore

    with (
        SnapshotStore.memory() as empty,
        _open_archive(path) as source,
        _open_spool(str(path), spool_dir) as spool,
    ):
        reader = _ArchiveReader(empty, source, spool, str(path), max_size, None)
        reader.spool_dir = spool_dir
        reader.read()
        check_sessions(reader, "error")  # the chains and states too (§A.7 step 5), as the import checks them


def _open_archive(path: str | os.PathLike[str]) -> BinaryIO:
    """The archive file, opened for reading; a path that names no file, a folder, or something that
    is not a regular file (a FIFO would block the import until someone wrote to it) is an
    ``ArchiveError`` naming the path."""
    where = os.fspath(path)
    try:
        mode = os.stat(where).st_mode
        if stat.S_ISREG(mode):
            return open(where, "rb")
        if stat.S_ISDIR(mode):
            what = "it is a folder; give the path of an archive file"
        else:
            what = "it is not a regular file (a device, a FIFO or a socket)"
        raise ArchiveError(f"cannot read archive {where}: {what}", {"path": where, "reason": "not a file"})
    except OSError as exc:
        why = "no such file" if isinstance(exc, FileNotFoundError) else f"{exc.strerror or exc} (errno {exc.errno})"
        raise ArchiveError(
            f"cannot read archive {where}: {why}", {"path": where, "errno": exc.errno, "reason": "read failed"}
        ) from exc


def _open_spool(archive: str, spool_dir: str | os.PathLike[str] | None) -> IO[bytes]:
    try:
        return tempfile.TemporaryFile(dir=spool_dir)
    except OSError as exc:
        raise spool_error(archive, spool_dir, exc) from exc


#: a session document without a window member (a null one is read as malformed, not as this)
_NO_WINDOW: Any = object()


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


class _ArchiveReader(ArchiveContents):
    """Reads an archive file into the spool and checks it (the container, its index, manifest and objects)."""

    # -- reading and checking ------------------------------------------------
    def read(self) -> None:
        trailer = self._read_frame_info()
        self._spool_body(trailer)
        manifest = self._read_meta(trailer)
        self._parse_manifest(manifest)
        del manifest
        self._mark_used()
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
        self.version = version
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
        manifest_limit = max(MANIFEST_FLOOR, MANIFEST_RATIO * frames_length)
        if manifest_size > manifest_limit:
            raise fail(
                f"archive {self.name} declares a manifest of {manifest_size} bytes in {frames_length} bytes of "
                f"compressed data, over {MANIFEST_RATIO} times as many: more than an exporter's manifest compresses "
                "to, and more memory than its parse may take; refused",
                "too large",
                path=self.name,
                size=manifest_size,
                limit=manifest_limit,
                field="manifest_size",
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
        if type(version) is not int or version != self.version or not isinstance(body.get("sessions"), list):
            # (the header's version and the manifest's agree: version 1 documents have no window)
            raise fail(f"archive {self.name} has a malformed manifest", "bad manifest", path=self.name)
        names: set[str] = set()
        sessions = body.pop("sessions")
        for number in range(len(sessions)):
            item, sessions[number] = sessions[number], None  # one parsed copy of a document at a time
            label = f"#{number} of the manifest's sessions"
            tags = item.pop("tags", {}) if isinstance(item, dict) else {}
            window = item.pop("window", _NO_WINDOW) if isinstance(item, dict) and version >= 2 else _NO_WINDOW
            try:
                payload = bytes(memoryview(codec.dumps(item)))  # a right-sized copy: orjson's buffer is larger
            except (TypeError, orjson.JSONEncodeError):  # nested deeper than orjson writes (it reads deeper)
                raise fail(
                    f"archive {self.name}: session document {label} is malformed: it is nested too deeply",
                    "bad session document",
                    path=self.name,
                ) from None
            del item
            try:
                doc = SessionDoc.from_payload(label, payload)
            except CorruptObjectError as exc:
                raise fail(f"archive {self.name}: {exc}", "bad session document", path=self.name) from None
            except FormatVersionError as exc:  # a session document of a newer format
                raise FormatVersionError(f"archive {self.name}: {exc}", {**exc.details, "path": self.name}) from None
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
            if window is not _NO_WINDOW:  # (a null window is a malformed one, not none)
                self.windows[doc.name] = self._check_window(doc, window)
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

    def _check_window(self, doc: SessionDoc, window: Any) -> int:
        """A document's ``window`` (version 2): how many of its last listed snapshots are in the
        retention window, 1 to fewer than it lists; every one before them is tagged, as a snapshot
        behind the window is retained by its tag alone."""
        tagged = set(self.tags[doc.name].values())
        if type(window) is not int or not 1 <= window < len(doc.snapshots):
            listed = len(doc.snapshots)
            fits = f"1 to {listed - 1}" if listed > 1 else "a window needs two or more"
            raise fail(
                f"archive {self.name}: session {doc.name!r} has a window of {shown_value(window, 40)} where it lists "
                f"{listed} snapshot{'s' if listed != 1 else ''} ({fits})",
                "bad session document",
                session=doc.name,
            )
        behind = [sid for sid in doc.snapshots[: len(doc.snapshots) - window] if sid not in tagged]
        if behind:
            raise fail(
                f"archive {self.name}: session {doc.name!r} lists {behind[0]} behind its window untagged, "
                "which nothing would retain",
                "bad session document",
                session=doc.name,
            )
        return window

    def _mark_used(self) -> None:
        """Mark every entry a session document reaches: the records it lists (snapshots, evicted, head,
        bases) and, through each record, its parent's record, its delta and its state, and through a
        state patch its parent's record. That is every object the import can read; the others are
        checked against their ids alone (``_check_objects``) and are, from here on, not in the archive.

        A record's links are taken before it is checked, so read leniently here: a record that is not
        what it should be is refused by the check, and this walk only decides what is checked fully.
        Each entry is followed once in each way it is used, so the walk is linear in the entries.
        """
        self.used = bytearray(len(self.kinds))
        todo: list[tuple[str, int]] = []
        for doc in self.docs:
            ids = [*doc.snapshots, *doc.evicted, *doc.bases, *([doc.head] if doc.head is not None else [])]
            todo.extend((sid, _AS_RECORD) for sid in ids)
        while todo:
            key, role = todo.pop()
            i = self.table.find(bytes.fromhex(key))
            if i < 0 or self.used[i] & role:
                continue
            self.used[i] |= role
            if role == _AS_RECORD:
                body = _lenient_json(self._spooled(self.offsets[i], self.lengths[i]))
                if isinstance(body, dict):
                    for member, as_role in (("parent", _AS_RECORD), ("delta", _AS_DELTA), ("state", _AS_STATE)):
                        if codec_id(body.get(member)):
                            todo.append((body[member], as_role))
            elif role == _AS_STATE and self.kinds[i] == KIND_STATE_PATCH:
                body = _lenient_json(self._spooled(self.offsets[i], self.lengths[i]))
                if isinstance(body, dict) and codec_id(body.get("parent")):
                    todo.append((body["parent"], _AS_RECORD))

    def _check_objects(self) -> None:
        """Every object against its id and its kind's structure, one at a time, in body order; an object
        no session document reaches against its id alone, read a piece at a time and never parsed.

        Parsed, an object may take some 100 times its size (``[{},{},...]``, which compresses thousands
        of times): a 3 KB archive carrying an unused 30 MB state of it took 2.9 GB and 8 s to import. An
        exporter does write objects no document reaches (a session planned again when a writer reclaims
        under the export keeps what it already wrote), so they are not refused, nor used: they cost the
        import a read and a hash."""
        count = len(self.kinds)
        patched = 0
        self.spool.seek(0)
        for i in range(count):
            key = self.table.key(i).hex()
            kind = self.kinds[i]
            if not self.used[i]:
                self._check_unused(i, key)
                self._report_check(i, count)
                continue
            payload = self.spool.read(self.lengths[i])
            if kind == KIND_STATE_PATCH:
                patched += check_state_patch(self.name, key, payload)
                if self.body_size + patched > self.max_size:
                    raise fail(
                        f"archive {self.name} declares more than {self.max_size} bytes of states",
                        "too large",
                        path=self.name,
                    )
            else:
                self._refuse_unless_its_id(key, codec.object_id(payload))
                check_payload(self.name, key, kind, payload)
            self._report_check(i, count)

    def _check_unused(self, i: int, key: str) -> None:
        """An object no session document reaches: its bytes against its id, a piece at a time (the spool is
        at its payload, and is left after it). A state patch's id hashes the state it rebuilds, which
        nothing needs: it is passed over (its bytes are under the frames' checksum)."""
        if self.kinds[i] == KIND_STATE_PATCH:
            self.spool.seek(self.lengths[i], os.SEEK_CUR)
            return
        hasher = xxhash.xxh3_128()
        left = self.lengths[i]
        while left:
            piece = self.spool.read(min(left, CHUNK))
            if not piece:
                raise fail(f"archive {self.name}: spool file is short", "spool", path=self.name)
            hasher.update(piece)
            left -= len(piece)
        self._refuse_unless_its_id(key, hasher.hexdigest())

    def _refuse_unless_its_id(self, key: str, actual: str) -> None:
        if actual != key:
            raise fail(
                f"archive {self.name}: object {key} does not match its id (content hashes to {actual})",
                "hash mismatch",
                path=self.name,
                object=key,
                actual=actual,
            )

    def _report_check(self, i: int, count: int) -> None:
        if self.progress is not None and (i % PROGRESS_EVERY == 0 or i == count - 1):
            self.progress(i + 1, count, "verifying objects")


#: how a session document's walk reaches an entry (``_ArchiveReader._mark_used``), one bit each
_AS_RECORD, _AS_STATE, _AS_DELTA = 1, 2, 4


def _lenient_json(payload: bytes) -> Any:
    """The payload parsed, or None when it is not JSON (the object's own check says so later)."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
