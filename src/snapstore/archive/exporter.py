"""Export: the chosen sessions' records, deltas and base states, in chain order, as one zstd
stream at a high level, so deltas compress against each other. A keyframe whose parent is
exported too is written as a patch from the parent's state (a "state patch")."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson
import xxhash
import zstandard

from .. import codec
from ..chains import check_state
from ..codec import Kind
from ..delta import apply_patch, diff
from ..errors import CorruptObjectError, SnapshotNotFound
from ..objects import SessionDoc
from ..session import resolve_prefix
from .layout import (
    ARCHIVE_VERSION,
    DEFAULT_LEVEL,
    ENTRY,
    HEADER,
    KIND_STATE_PATCH,
    MAGIC,
    MANIFEST_TYPE,
    PROGRESS_EVERY,
    TRAILER,
    TRAILER_MAGIC,
    IdIndex,
    Links,
    Progress,
    links,
)

if TYPE_CHECKING:
    from ..store import SnapshotStore


@dataclass
class ExportReport:
    """What ``export_archive`` wrote."""

    path: str
    sessions: list[str]
    snapshots: int  # snapshots listed by the exported session documents
    objects: int  # records, deltas and states in the archive
    archive_bytes: int  # size of the archive file
    raw_bytes: int  # decompressed size of its body


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
    order: IdIndex  # the records to export, parents before children
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
    from ..store import check_session_name

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
    order = IdIndex()
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
            record = links(payload)
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
        self.emitted = IdIndex()  # objects already in the body
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
            record = links(self.objects.get(sid, Kind.RECORD))  # checked when planning
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
        self, plan: _Plan, record: Links, payload: bytes, running: tuple[str, Any] | None
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
        check_state(state, links(self.objects.get(parent, Kind.RECORD)).state, parent)
        patch = codec.dumps({"parent": parent, "patch": diff(state, orjson.loads(payload)), "size": len(payload)})
        return patch if len(patch) < len(payload) else None

    def _rebuild(self, plan: _Plan, sid: str) -> Any:
        """The state of an exported snapshot from its chain, or None when its base state is not yet written."""
        chain: list[Links] = []
        current = sid
        while True:
            record = links(self.objects.get(current, Kind.RECORD))
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
