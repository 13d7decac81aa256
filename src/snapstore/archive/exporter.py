"""Export: the chosen sessions' records, deltas and base states, in chain order, as one zstd
stream at a high level, so deltas compress against each other. A keyframe whose parent is
exported too is written as a patch from the parent's state (a "state patch").

The archive keeps its own format whatever the store's: objects keyed by hash (record JSON,
delta payloads, full states) and one session document per session. A session's chains are
read from its segments: a chain starts at a keyframe entry, whose payload is the full state,
and every later payload of the chain is the delta its record names. The temporary file sits
beside the target, and an export removes leftovers of interrupted exports to that folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson
import xxhash
import zstandard

from .. import codec
from ..backends.base import SegmentMissing
from ..delta import apply_patch, diff
from ..entries import KEY_MODES, against_base
from ..errors import ArchiveError, CorruptObjectError, SnapshotNotFound
from ..history import READ_ATTEMPTS, IndexedCommit, SessionLog
from ..objects import SessionDoc, SnapshotRecord
from ..session import resolve_prefix
from .layout import (
    ARCHIVE_VERSION,
    ARCHIVE_VERSION_PLAIN,
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
    Progress,
)
from .sessions import snapshots_carried

if TYPE_CHECKING:
    from ..store import SnapshotStore

STATE, DELTA, RECORD = 1, 2, 3
#: temporary files of interrupted exports younger than this may still be written by their export
TEMPORARY_GRACE_SECONDS = 3600.0
_TEMPORARY = re.compile(r"\..+\.tmp-[0-9]+-[0-9a-f]{16}")


@dataclass
class ExportReport:
    """What ``export_archive`` wrote."""

    path: str
    sessions: list[str]
    snapshots: int  # snapshots the archive carries: those its session documents list, and an unlisted head
    objects: int  # records, deltas and states in the archive
    archive_bytes: int  # size of the archive file
    raw_bytes: int  # decompressed size of its body
    temporary_files_removed: int = 0  # leftovers of interrupted exports to the same folder


def export_archive(
    store: SnapshotStore,
    path: str | os.PathLike[str],
    sessions: Iterable[str] | str | None = None,
    snapshots: Iterable[str] | str | None = None,
    progress: Progress | None = None,
    *,
    level: int = DEFAULT_LEVEL,
    grace_seconds: float = TEMPORARY_GRACE_SECONDS,
) -> ExportReport:
    """Write an archive of every session, of the named ``sessions``, or of chosen ``snapshots``.

    ``snapshots`` takes ids, unique prefixes or tags of retained snapshots, or a session's head
    that the limit evicted (it stays readable; looked up in ``sessions`` when both are given); each
    comes with the chain it needs and its session's document, restricted to the chosen snapshots.
    Takes no lock: writers keep going, and a segment reclaimed while it is read is read again. The
    file is written as ``.<name>.tmp-<pid>-<random>`` beside ``path`` and renamed into place when
    complete; such files older than ``grace_seconds`` (left by an export that was killed) are removed first.
    A failed write (a full disk, say) raises ``ArchiveError`` naming the path and the errno,
    leaving ``path`` as it was.
    """
    target = Path(path)
    _check_target(os.fspath(path))
    plans = _plan_export(store, _names(sessions), _names(snapshots))
    removed = remove_stale_temporaries(target.parent, grace_seconds)
    # the target's name, shortened so that the temporary name stays within a file system's 255 bytes
    tmp = target.with_name(f".{target.name[:120]}.tmp-{os.getpid()}-{secrets.token_hex(8)}")
    try:
        with open(tmp, "xb") as out:
            raw = _ArchiveWriter(store, out, level, progress).write(plans)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        size = target.stat().st_size
    except OSError as exc:
        _remove(tmp)
        raise ArchiveError(
            f"cannot write archive {target}: {exc.strerror or exc} (errno {exc.errno}); {target} is unchanged",
            {"path": str(target), "errno": exc.errno, "reason": "write failed", "temporary": str(tmp)},
        ) from exc
    except BaseException:
        _remove(tmp)
        raise
    return ExportReport(
        path=str(target),
        sessions=[p.doc.name for p in plans],
        snapshots=sum(len(snapshots_carried(p.doc)) for p in plans),
        objects=raw[1],
        archive_bytes=size,
        raw_bytes=raw[0],
        temporary_files_removed=removed,
    )


def remove_stale_temporaries(folder: Path, grace_seconds: float = TEMPORARY_GRACE_SECONDS) -> int:
    """Remove temporary files of interrupted exports in ``folder`` older than the grace period.

    Only regular files named as export names them, and holding nothing or an archive's
    header, are removed; anything else (a symlink, another program's file) is left alone.
    """
    cutoff = time.time() - grace_seconds
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        if not _TEMPORARY.fullmatch(name):
            continue
        candidate = folder / name
        try:
            info = os.lstat(candidate)
            if not stat.S_ISREG(info.st_mode) or info.st_mtime >= cutoff:
                continue
            with open(candidate, "rb", opener=_no_follow) as f:
                if f.read(len(MAGIC)) not in (b"", MAGIC):
                    continue
            candidate.unlink()
            removed += 1
        except OSError:
            continue  # gone meanwhile, or not ours to remove
    return removed


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)


def _remove(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def _names(value: Iterable[str] | str | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _versions(log: SessionLog) -> list[tuple[int, int]]:
    """Which segments the log holds, and which version of each: a reclaim changes them."""
    return [(number, segment.version) for number, segment in log.segments.items()]


@dataclass
class _Plan:
    log: SessionLog  # the session as read (refreshed when a segment moved under the export)
    chosen: set[str] | None  # the chosen snapshots, or None for the whole session
    doc: SessionDoc = field(init=False)  # the document the archive carries
    tags: dict[str, str] = field(init=False)  # tags naming exported snapshots
    window: int | None = field(init=False)  # listed snapshots in the retention window, when not all
    order: IdIndex = field(init=False)  # the records to export, parents before children
    patch_parents: set[str] = field(init=False)  # parents of keyframes: their child's state may be a patch
    #: the planned records: the log may be read again under the export (a rebuild that met a reclaim)
    records: dict[str, SnapshotRecord] = field(init=False)
    #: the chains (records, keyframe first) of the parents of the state patches written so far, as
    #: written: they go into the archive whatever a later plan holds, or the importer could not rebuild
    #: a patched state (a writer's eviction and reclaim can take a parent away between two plans, and
    #: what is written stays written); and the ones among their keyframes that are bases
    patched_from: dict[str, SnapshotRecord] = field(init=False, default_factory=dict)
    patched_bases: set[str] = field(init=False, default_factory=set)
    objects: int = field(init=False)  # records, deltas and states (before removing duplicates)
    estimate: int = field(init=False)  # rough decompressed size, to size the compression window

    def __post_init__(self) -> None:
        self.replan()

    def replan(self) -> None:
        """The records to export (walk order) and the document the archive carries."""
        log = self.log
        retained = log.retained()
        if self.chosen is None:
            listed = retained
            head = log.head
            roots = [*listed, *([head] if head is not None else [])]
        else:
            listed = [sid for sid in retained if sid in self.chosen]
            # the session's head stays readable when the limit evicts it: it goes as an unlisted head
            unlisted = log.head if log.head in self.chosen and log.head not in listed else None
            missing = self.chosen - set(listed) - {unlisted}
            if missing:
                raise SnapshotNotFound(
                    f"snapshot {min(missing)} is no longer retained in session {log.name!r}",
                    {"snapshot": min(missing), "session": log.name},
                )
            head = log.head if log.head in self.chosen else listed[-1]
            roots = [*listed, *([unlisted] if unlisted is not None else [])]
        order = IdIndex()
        bases: list[str] = []
        self.records = {}
        self.patch_parents = set()
        self.objects = self.estimate = 0
        for sid, record in self.patched_from.items():  # first: a parent goes before what is built on it
            order.add(bytes.fromhex(sid))
            self.records[sid] = record
            if sid in self.patched_bases:
                bases.append(sid)
        for root in roots:
            path = log.chain(root)
            keyframe = path[0]
            new = [c for c in path if bytes.fromhex(c.id) not in order]
            if not new:
                continue
            if new[0] is keyframe:
                self.objects += 1
                self.estimate += keyframe.record.size
                if keyframe.record.delta is not None:
                    bases.append(keyframe.id)  # a delta record stored whole: its chain stops here
                if keyframe.record.parent is not None:
                    self.patch_parents.add(keyframe.record.parent)
            for commit in new:
                if commit is not keyframe and against_base(commit.mode, commit.record) and commit.record.parent:
                    self.patch_parents.add(commit.record.parent)  # stored whole in the archive, as a keyframe is
                order.add(bytes.fromhex(commit.id))
                self.records[commit.id] = commit.record
                self.objects += 1 + (commit is not keyframe)
                self.estimate += 2048
        listed_set = set(listed)
        self.order = order
        self.tags = {tag: sid for tag, sid in sorted(log.tags.items()) if sid in listed_set}
        # how many of the last listed snapshots are in the retention window (the others are kept by
        # their tags alone, and go with them): said only when fewer than all, and at least one
        recent = set(log.order[log.window_start() :])
        in_window = max(1, sum(1 for sid in listed if sid in recent)) if listed else 0
        self.window = in_window if in_window < len(listed) else None
        self.doc = SessionDoc(
            name=log.name,
            max_snapshots=log.max_snapshots,
            head=head,
            snapshots=listed,
            bases=bases,
            evicted=[key.hex() for key in (order.key(n) for n in range(len(order))) if key.hex() not in listed_set],
        )

    def chain_records(self, sid: str) -> list[tuple[str, SnapshotRecord]] | None:
        """The planned records that rebuild ``sid`` in the archive, keyframe (or base) first: the chain
        this plan walked, whose objects precede ``sid``'s in the body (None: not all planned)."""
        chain: list[tuple[str, SnapshotRecord]] = []
        current: str | None = sid
        while current is not None and len(chain) <= len(self.records):
            record = self.records.get(current)
            if record is None:
                return None
            chain.append((current, record))
            if record.delta is None or current in self.doc.bases:
                return chain[::-1]
            current = record.parent
        return None

    def document(self) -> bytes:
        """The session document as canonical JSON; tags, when the session has any, as an extra member
        ``tags`` (name -> id) that readers without tags skip; and ``window`` (version 2) when some
        listed snapshots are behind the retention window, kept by their tags alone."""
        payload = self.doc.to_payload()
        if not self.tags and self.window is None:
            return payload
        body = orjson.loads(payload)
        if self.tags:
            body["tags"] = self.tags
        if self.window is not None:
            body["window"] = self.window
        return codec.dumps(body)


def _plan_export(store: SnapshotStore, sessions: list[str] | None, snapshots: list[str] | None) -> list[_Plan]:
    from ..store import session_key

    names = sorted(set(sessions)) if sessions is not None else store.sessions()
    logs = {}
    for name in names:
        if not store.has_session(name):  # checks the name, too
            raise SnapshotNotFound(f"session {name!r} does not exist", {"session": name})
        log = logs[name] = SessionLog(store.backend, session_key(name), name)
        log.refresh()
    chosen: dict[str, set[str]] | None = None
    if snapshots is not None:
        owners: dict[str, str] = {}
        for name, log in logs.items():
            for sid in log.readable():  # an evicted head stays readable, and exportable
                owners.setdefault(sid, name)
        where = "the store" if sessions is None else "sessions " + ", ".join(repr(n) for n in names)
        chosen = {}
        for prefix in snapshots:
            sid = _resolve(prefix, owners, logs, where)
            chosen.setdefault(owners[sid], set()).add(sid)
    return [
        _Plan(logs[name], None if chosen is None else chosen[name])
        for name in names
        if chosen is None or name in chosen
    ]


def _resolve(wanted: str, owners: dict[str, str], logs: dict[str, SessionLog], where: str) -> str:
    """A snapshot id from an id, a unique prefix, or a tag (``session:tag`` or a tag only one session has)."""
    if isinstance(wanted, str):
        session, _, tag = wanted.rpartition(":")
        named = [log.tags[tag] for name, log in logs.items() if tag in log.tags and session in ("", name)]
        if len(named) == 1 and named[0] in owners:
            return named[0]
    return resolve_prefix(wanted, owners, where=where)


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
        version = ARCHIVE_VERSION if any(plan.window is not None for plan in plans) else ARCHIVE_VERSION_PLAIN
        self.out.write(HEADER.pack(MAGIC, version, b"\0\0\0"))
        frames = _HashingWriter(self.out)
        self.stream = zstandard.ZstdCompressor(compression_params=params).stream_writer(frames, closefd=False)  # type: ignore[arg-type]
        for plan in plans:
            self._write_session(plan)
        for plan in plans:
            for number in range(len(plan.order)):
                key = plan.order.key(number)
                if key not in self.emitted:
                    self._emit(key, RECORD, plan.records[key.hex()].to_payload())
        payloads_size = self.offset
        # canonical JSON, assembled from the documents' own canonical bytes (members in key order)
        docs = b",".join(plan.document() for plan in plans)
        manifest = b'{"format":%d,"sessions":[%s],"type":"%s"}' % (version, docs, MANIFEST_TYPE.encode())
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

    def _write_session(self, plan: _Plan) -> None:
        """A session's chains; when a segment is reclaimed or rewritten under the export, read again.

        Objects already written stay (each is checked against its hash and is harmless
        when no record needs it); the session is planned again from what it holds now.
        """
        for _attempt in range(READ_ATTEMPTS):
            planned = _versions(plan.log)
            try:
                self._write_chains(plan)
                return
            except (SegmentMissing, CorruptObjectError, SnapshotNotFound):
                # (a rebuild below may have read the session again itself: the plan is then stale
                # even though this refresh finds nothing new)
                if not plan.log.refresh() and _versions(plan.log) == planned:
                    raise  # nothing moved: real damage
                plan.replan()
        raise CorruptObjectError(
            f"session {plan.log.name!r} kept changing while it was exported", {"session": plan.log.name}
        )

    def _write_chains(self, plan: _Plan) -> None:
        """A session's deltas and base states, in walk order (parents first)."""
        log = plan.log
        for number in range(len(plan.order)):
            sid = plan.order.key(number).hex()
            commit = log.commits.get(sid)
            if commit is None and sid in plan.patched_from:
                continue  # a state patch's parent a writer reclaimed: its chain went in when the patch did
            if commit is None:  # reclaimed since the plan was made (a rebuild below read the session again)
                raise SegmentMissing(f"snapshot {sid} left session {log.name!r} during the export", {"snapshot": sid})
            record = commit.record
            if sid in plan.patch_parents:
                self.chained.add(sid)
            # whole in the archive: a keyframe, or a delta against a base other than the parent,
            # whose record (format 1's JSON) names no delta: its state goes, rebuilt and checked
            based = against_base(commit.mode, record)
            keyframe = commit.mode in KEY_MODES or based
            hashed = record.state if keyframe else record.delta
            assert hashed is not None  # a chain's later entries are deltas, which name their payload
            key = bytes.fromhex(hashed)
            if key in self.emitted:
                continue
            # a delta against a base is rebuilt (and checked against ``record.state``) to go whole
            payload = codec.dumps(log.rebuild(sid)) if based else self._payload(log, commit, hashed)
            patch = self._state_patch(log, commit, payload, plan) if keyframe else None
            if patch is not None:
                self._emit(key, KIND_STATE_PATCH, patch)
            else:
                self._emit(key, STATE if keyframe else DELTA, payload)

    @staticmethod
    def _payload(log: SessionLog, commit: IndexedCommit, expected: str) -> bytes:
        """A commit's raw payload, checked against the hash its record gives it."""
        payloads, _raw = log.segment_payloads(commit.segment)
        payload = payloads.get(commit.id)
        if payload is None or codec.object_id(payload) != expected:
            raise CorruptObjectError(
                f"snapshot {commit.id} of session {log.name!r}: its stored payload does not hash to {expected}",
                {"object": commit.id, "session": log.name, "reason": "hash mismatch"},
            )
        return payload

    def _state_patch(self, log: SessionLog, commit: IndexedCommit, payload: bytes, plan: _Plan) -> bytes | None:
        """The state as a patch from its parent's state, when the parent's chain is already in the archive
        and the plan carries its records (one made again under the export may not hold a parent an
        earlier plan wrote the chain of); the parent's chain then goes into the archive whatever a
        later plan holds (``_Plan.patched_from``).

        The patch is applied here once: an archive only holds a patch that rebuilds its state.
        """
        parent = commit.record.parent
        if parent is None or parent not in self.chained or parent not in log.commits or parent not in plan.records:
            return None  # the importer could not rebuild the parent's state from what precedes
        path = log.chain(parent)
        state = log.apply_chain(path, log.segment_payloads(path[0].segment)[0])  # hash-checked
        ops = diff(state, orjson.loads(payload))
        try:
            patch = codec.dumps({"parent": parent, "patch": ops, "size": len(payload)})
        except orjson.JSONEncodeError:
            # a value replaced whole in a state nested near the deepest a state may be: the patch's
            # own levels take it past what JSON is written to here, and the state goes whole
            return None
        if len(patch) >= len(payload):
            return None
        rebuilt = codec.dumps(apply_patch(state, ops, in_place=True))
        if codec.object_id(rebuilt) != commit.record.state:
            return None
        chain = plan.chain_records(parent)
        if chain is None:
            return None
        for sid, record in chain:  # what rebuilds the parent in the archive goes whatever a later plan holds
            plan.patched_from.setdefault(sid, record)
        if chain[0][1].delta is not None:  # a delta record stored whole: a base
            plan.patched_bases.add(chain[0][0])
        return patch

    def _emit(self, key: bytes, kind: int, payload: bytes) -> None:
        self.stream.write(payload)
        self.index += ENTRY.pack(key.hex().encode(), self.offset, len(payload), int(kind), b"\0\0\0")
        self.offset += len(payload)
        self.emitted.add(key)
        self.count += 1
        if self.progress is not None and self.count % PROGRESS_EVERY == 0:
            self.progress(self.count, self.total, "exporting objects")


def _check_target(path: str) -> None:
    """An archive is written beside its path and renamed over it: refused up front for a path naming
    a folder, and for one holding anything but a regular file or a link (a FIFO, ``/dev/null``
    itself), which the rename would replace."""
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise ArchiveError(
            f"cannot write archive {path}: it names a folder; give the path of a file",
            {"path": path, "reason": "not a file"},
        )
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return  # nothing there (or nothing readable): the write says what is wrong, if anything
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise ArchiveError(
            f"cannot write archive {path}: it is not a regular file (a device, a FIFO or a socket)",
            {"path": path, "reason": "not a file"},
        )
