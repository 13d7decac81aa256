"""The snapshot store: sessions over an object store, plus reclaiming, gc and verify."""

from __future__ import annotations

import contextlib
import os
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from . import codec
from .backends import Backend, MemoryBackend, open_backend
from .chains import KeyframePolicy, apply_delta, chain_to_base, check_state, rebuild
from .codec import Kind
from .errors import (
    ConcurrentUpdateError,
    CorruptObjectError,
    FormatVersionError,
    InvalidNameError,
    SnapshotError,
    SnapshotNotFound,
)
from .objects import ObjectStore, SessionDoc, codec_id
from .session import Session, check_max_snapshots, resolve_prefix

FORMAT_REF = "config/format"
SESSIONS_PREFIX = "sessions/"
DEFAULT_MAX_SNAPSHOTS = 10
GC_LOCK = "gc"
MAX_NAME_LENGTH = 200
#: evicted snapshots a session keeps for its chains before squashing, whatever max_chain says
MAX_PINNED = 64
#: how often a reader re-reads a ref that keeps moving under it
READ_ATTEMPTS = 50


@dataclass
class Problem:
    """One thing ``verify`` found wrong."""

    object: str | None
    message: str
    session: str | None = None
    snapshot: str | None = None


@dataclass
class VerifyReport:
    objects_checked: int = 0
    sessions_checked: int = 0
    snapshots_checked: int = 0
    states_rebuilt: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, error: Exception, *, session: str | None = None, snapshot: str | None = None) -> None:
        details = getattr(error, "details", {}) or {}
        self.problems.append(Problem(details.get("object"), str(error), session, snapshot))


@dataclass
class GcReport:
    objects_deleted: int = 0
    bytes_freed: int = 0
    temporary_files_removed: int = 0


class SnapshotStore:
    """Content-addressed, delta-compressed snapshots of JSON states, in named sessions.

    Open a directory store with ``SnapshotStore.open(path)`` (created if absent)
    or an in-memory one with ``SnapshotStore.memory()``. Safe to share between
    threads; several stores may open the same directory at once.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        compression_level: int = 3,
        max_chain: int = 50,
        max_chain_factor: float = 2.0,
        create: bool = True,
    ) -> None:
        if type(compression_level) is not int or not 1 <= compression_level <= 22:
            raise SnapshotError(
                "compression_level must be an integer from 1 to 22",
                {"argument": "compression_level", "value": repr(compression_level)},
            )
        self.backend = backend
        self.objects = ObjectStore(backend, level=compression_level)
        self.policy = KeyframePolicy(max_chain, max_chain_factor)
        self._sessions: dict[str, Session] = {}
        self._mutex = threading.Lock()
        self._check_format(create)

    @classmethod
    def open(
        cls,
        target: str | os.PathLike[str] | Backend,
        *,
        fsync: bool = False,
        create: bool = True,
        **settings: Any,
    ) -> SnapshotStore:
        """A store in a directory (created if absent unless ``create=False``) or at a ``postgresql://`` URL."""
        return cls(open_backend(target, fsync=fsync, create=create), create=create, **settings)

    @classmethod
    def memory(cls, **settings: Any) -> SnapshotStore:
        return cls(MemoryBackend(), **settings)

    def _check_format(self, create: bool) -> None:
        version = self.backend.read_ref(FORMAT_REF)
        if version is None:
            if not create:
                raise SnapshotNotFound(f"no snapstore store at {self.describe()}", {"path": self.describe()})
            self.backend.cas_ref(FORMAT_REF, None, str(codec.FORMAT_VERSION))
            version = self.backend.read_ref(FORMAT_REF)
        if version != str(codec.FORMAT_VERSION):
            raise FormatVersionError(
                f"store {self.describe()} has format version {version}; "
                f"this build reads version {codec.FORMAT_VERSION}",
                {"path": self.describe(), "version": version, "supported": codec.FORMAT_VERSION},
            )

    def describe(self) -> str:
        return self.backend.describe()

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> SnapshotStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SnapshotStore {self.describe()}>"

    # -- sessions ------------------------------------------------------
    def session(self, name: str, max_snapshots: int | None = None) -> Session:
        """Get or create a named history; ``max_snapshots`` changes its limit (new sessions get 10)."""
        check_session_name(name)
        if max_snapshots is not None:
            check_max_snapshots(max_snapshots)
        with self._mutex:
            sess = self._sessions.get(name)
        if sess is None:
            sess = self._load_or_create(name, max_snapshots or DEFAULT_MAX_SNAPSHOTS)
            with self._mutex:
                sess = self._sessions.setdefault(name, sess)
        if max_snapshots is not None:
            sess.set_max_snapshots(max_snapshots)
        return sess

    def load_session_doc(self, ref: str, name: str | None = None) -> tuple[str, SessionDoc] | None:
        """(id, document) the session ref points at now, or None when there is no such ref.

        A commit deletes the document it replaces, so a document missing after the ref moved is
        read again; one missing while the ref stays put, or one of another session, is damage.
        """
        for _attempt in range(READ_ATTEMPTS):
            key = self.backend.read_ref(ref)
            if key is None:
                return None
            if not codec_id(key):
                raise CorruptObjectError(
                    f"session ref {ref} holds {key[:40]!r}, not a document id",
                    {"ref": ref, "reason": "garbled ref", "session": unquote(ref[len(SESSIONS_PREFIX) :])},
                )
            try:
                doc = self.objects.session_doc(key)
            except SnapshotNotFound:
                if self.backend.read_ref(ref) != key:
                    continue
                raise SnapshotNotFound(
                    f"session ref {ref} names document {key}, which is missing from the store",
                    {"object": key, "ref": ref, "reason": "missing session document"},
                ) from None
            if self.session_ref(doc.name) != ref or (name is not None and doc.name != name):
                raise CorruptObjectError(
                    f"session ref {ref} points at the document of session {doc.name!r}",
                    {"object": key, "ref": ref, "reason": "document of another session"},
                )
            return key, doc
        raise ConcurrentUpdateError(f"session ref {ref} kept changing while being read", {"ref": ref})

    def _load_or_create(self, name: str, max_snapshots: int) -> Session:
        ref = self.session_ref(name)
        while True:
            found = self.load_session_doc(ref, name)
            if found is not None:
                return Session(self, name, *found)
            doc = SessionDoc(name=name, max_snapshots=max_snapshots)
            with self.writing():
                key, _ = self.objects.put(Kind.SESSION, doc.to_payload())
                if self.backend.cas_ref(ref, None, key):
                    return Session(self, name, key, doc)

    def has_session(self, name: str) -> bool:
        check_session_name(name)
        return self.backend.read_ref(self.session_ref(name)) is not None

    def sessions(self) -> list[str]:
        """Names of every session in the store, sorted."""
        return sorted(self._session_docs())

    def _session_docs(self) -> dict[str, tuple[str, SessionDoc]]:
        docs = {}
        for ref, _key in self.backend.iter_refs(SESSIONS_PREFIX):
            found = self.load_session_doc(ref)
            if found is not None:  # deleted since the listing
                docs[found[1].name] = found
        return docs

    def delete_session(self, name: str) -> None:
        """Remove a session's ref; its objects go at the next ``gc``."""
        check_session_name(name)
        ref = self.session_ref(name)
        with self.writing():
            key = self.backend.read_ref(ref)
            if key is None or not self.backend.cas_ref(ref, key, None):
                raise SnapshotNotFound(f"session {name!r} does not exist", {"session": name})
        with self._mutex:
            self._sessions.pop(name, None)

    @staticmethod
    def session_ref(name: str) -> str:
        return SESSIONS_PREFIX + quote(name, safe="").replace("~", "%7E")

    def find(self, snapshot_id: str) -> tuple[Session, str]:
        """The session holding a retained snapshot, and its full id, from an id or prefix."""
        owners: dict[str, str] = {}
        for name, (_key, doc) in self._session_docs().items():
            for sid in doc.snapshots:
                owners.setdefault(sid, name)
        sid = resolve_prefix(snapshot_id, owners, where="the store")
        return self.session(owners[sid]), sid

    # -- locking -------------------------------------------------------
    def writing(self) -> AbstractContextManager[None]:
        """Held (shared) by every writer from its first object write to its ref swap; gc takes it exclusively."""
        return self.backend.lock(GC_LOCK, shared=True)

    # -- reclaiming storage ------------------------------------------
    def maybe_reclaim(self, session: Session, doc: SessionDoc) -> None:
        """Reclaim once enough snapshots wait for it (``doc`` is the document just written)."""
        if len(doc.evicted) >= max(8, doc.max_snapshots // 8):
            # reclaiming only saves space: damage it runs into is for verify to report, and the
            # commit that triggered it has landed already
            with contextlib.suppress(SnapshotError):
                self.reclaim(session)

    def reclaim(self, session: Session) -> int:
        """Squash and delete what evicted snapshots left behind; returns objects deleted.

        Evicted snapshots that a retained chain still runs through stay
        ("pinned") until they outnumber ``max(max_snapshots, min(max_chain, 64))``; then
        each retained snapshot whose parent is gone gets a full base and the
        whole evicted tail is freed.
        """
        if not isinstance(session, Session):
            raise SnapshotError(
                "reclaim takes a Session (store.session(name))", {"argument": "session", "type": type(session).__name__}
            )
        with session._lock:
            doc = session._current()
            live = list(dict.fromkeys([*doc.snapshots, *([doc.head] if doc.head else [])]))
            live_set = set(live)
            pinned = self._pinned(doc, live)
            new_bases = [b for b in doc.bases if b in live_set or b in pinned]
            base_objects: list[tuple[str, bytes]] = []
            if len(pinned) > max(doc.max_snapshots, min(self.policy.max_chain, MAX_PINNED)):
                for sid in live:
                    record = self.objects.record(sid)
                    if record.delta is not None and record.parent not in live_set and sid not in new_bases:
                        state = rebuild(self.objects, sid, doc.bases)
                        base_objects.append(self.objects.encode(Kind.STATE, codec.dumps(state)))
                        new_bases.append(sid)
                new_bases = [b for b in new_bases if b in live_set]
                pinned = set()
            # An evicted snapshot that is still the head stays listed as evicted: the next
            # commit makes it a parent, and gc must still find it through this list.
            keep = pinned | live_set
            new_doc = doc.copy()
            new_doc.evicted = [e for e in doc.evicted if e in keep]
            new_doc.bases = new_bases
            dropped = [e for e in doc.evicted if e not in keep]
            dropped_bases = [b for b in doc.bases if b not in new_bases]
            if not dropped and not dropped_bases and new_doc.bases == doc.bases and not base_objects:
                return 0
            # The bases are written and the document naming them swapped in under one hold of
            # the shared lock: a gc between the two would see unreferenced bases and delete them.
            with self.writing():
                if not session._swap(new_doc, base_objects):
                    return 0
        return self._collect(dropped, dropped_bases)

    def _pinned(self, doc: SessionDoc, live: list[str]) -> set[str]:
        """Snapshots outside ``live`` that a live snapshot's delta chain runs through."""
        live_set, bases = set(live), set(doc.bases)
        pinned: set[str] = set()
        visited: set[str] = set()
        for sid in live:
            current: str | None = sid
            while current is not None and current not in visited:
                visited.add(current)
                if current not in live_set:
                    pinned.add(current)
                record = self.objects.record(current)
                if record.delta is None or current in bases:
                    break
                current = record.parent
        return pinned

    def _collect(self, records: list[str], bases: list[str]) -> int:
        """Delete the objects of these records (and squash bases) that nothing in the store still needs."""
        deleted = 0
        with self.backend.lock(GC_LOCK, shared=False):
            marked = self._mark()
            for sid in records:
                try:
                    record = self.objects.record(sid)
                except SnapshotError:
                    continue
                for key in (sid, record.delta, record.state):
                    if key is not None and key not in marked and self.backend.has(key):
                        self.backend.delete(key)
                        deleted += 1
                self.objects.forget(sid)
            for sid in bases:
                try:
                    key = self.objects.record(sid).state
                except SnapshotError:
                    continue
                if key not in marked and self.backend.has(key):
                    self.backend.delete(key)
                    deleted += 1
        return deleted

    def _mark(self) -> set[str]:
        """Every object key some session still needs. Call under the exclusive gc lock."""
        marked: set[str] = set()
        for ref, _key in self.backend.iter_refs(SESSIONS_PREFIX):
            found = self.load_session_doc(ref)  # damage raises: gc must not sweep what it cannot read
            if found is None:
                continue
            key, doc = found
            marked.add(key)
            bases = set(doc.bases)
            for sid in {*doc.snapshots, *doc.evicted, *([doc.head] if doc.head else [])}:
                marked.add(sid)
                # an unreadable record raises: gc must not sweep what it cannot account for
                record = self.objects.record(sid)
                if record.delta is not None:
                    marked.add(record.delta)
                if record.delta is None or sid in bases:
                    marked.add(record.state)
        return marked

    def gc(self) -> GcReport:
        """Delete every object that no session needs, and leftovers of interrupted writes."""
        report = GcReport()
        with self.backend.lock(GC_LOCK, shared=False):
            marked = self._mark()
            for key in list(self.backend.iter_keys()):
                if key not in marked:
                    with contextlib.suppress(SnapshotError):
                        report.bytes_freed += self.backend.size(key)
                    self.backend.delete(key)
                    self.objects.forget(key)
                    report.objects_deleted += 1
            report.temporary_files_removed = self.backend.cleanup_temporary()
        return report

    # -- checking ------------------------------------------------------
    def verify(self, *, read_data: bool = True) -> VerifyReport:
        """Check every session, record and chain; with ``read_data`` also every object's bytes and every state."""
        report = VerifyReport()
        with self.writing():  # shared: reclaim and gc cannot delete chain objects under the check
            self._verify_into(report, read_data)
        return report

    def _verify_into(self, report: VerifyReport, read_data: bool) -> None:
        if read_data:
            for key in self.backend.iter_keys():
                report.objects_checked += 1
                try:
                    kind, _codec, _size = codec.read_header(key, blob := self.backend.get(key))
                    codec.decode_object(key, blob, kind)
                except SnapshotError as exc:
                    report.add(exc)
        for ref, _key in self.backend.iter_refs(SESSIONS_PREFIX):
            report.sessions_checked += 1
            try:
                found = self.load_session_doc(ref)
            except SnapshotError as exc:
                report.add(exc, session=unquote(ref[len(SESSIONS_PREFIX):]))
                continue
            if found is not None:
                self._verify_session(found[1], report, read_data)

    def _verify_session(self, doc: SessionDoc, report: VerifyReport, read_data: bool) -> None:
        previous: tuple[str, Any] | None = None
        for sid in doc.snapshots:
            report.snapshots_checked += 1
            try:
                base, path = chain_to_base(self.objects, sid, doc.bases)
                needed = [r.delta for r in path if r.delta] + [base.state]
                for key in needed:
                    if not self.backend.has(key):
                        raise SnapshotNotFound(f"object {key} needed by snapshot {sid} is missing", {"object": key})
                if not read_data:
                    continue
                record = self.objects.record(sid)
                follows = previous is not None and record.parent == previous[0]
                if follows and record.delta is not None and sid not in doc.bases:
                    state = apply_delta(self.objects, record, previous[1])  # type: ignore[index]
                    check_state(state, record.state, sid)
                else:
                    state = rebuild(self.objects, sid, doc.bases)
                report.states_rebuilt += 1
                previous = (sid, state)
            except SnapshotError as exc:
                previous = None
                report.add(exc, session=doc.name, snapshot=sid)

    def stats(self) -> dict[str, Any]:
        """Objects by kind, stored and raw bytes, keyframes, longest chain."""
        kinds: dict[str, int] = {k.name.lower(): 0 for k in Kind}
        stored = raw = 0
        for key in self.backend.iter_keys():
            blob = self.backend.get(key)
            stored += len(blob)
            try:
                kind, _codec, size = codec.read_header(key, blob)
            except SnapshotError:
                continue
            kinds[kind.name.lower()] += 1
            raw += size
        longest = keyframes = snapshots = 0
        for _name, (_key, doc) in self._session_docs().items():
            for sid in doc.snapshots:
                snapshots += 1
                record = self.objects.record(sid)
                keyframes += record.delta is None
                longest = max(longest, record.depth)
        return {
            "objects": sum(kinds.values()),
            "objects_by_kind": kinds,
            "stored_bytes": stored,
            "raw_bytes": raw,
            "compression_ratio": round(raw / stored, 2) if stored else None,
            "sessions": len(self.sessions()),
            "snapshots": snapshots,
            "keyframes": keyframes,
            "longest_chain": longest,
        }

    def session_usage(self, name: str) -> int:
        """Stored bytes of the objects one session keeps: its document, records, deltas and full states.

        Counts what gc would keep for this session (the same objects ``_mark`` marks).
        An object shared by content with another session counts in each session.
        """
        check_session_name(name)
        found = self.load_session_doc(self.session_ref(name), name)
        if found is None:
            raise SnapshotNotFound(f"session {name!r} does not exist", {"session": name})
        key, doc = found
        keys = {key}
        bases = set(doc.bases)
        for sid in {*doc.snapshots, *doc.evicted, *([doc.head] if doc.head else [])}:
            keys.add(sid)
            try:
                record = self.objects.record(sid)
            except SnapshotError:
                continue  # verify reports it
            if record.delta is not None:
                keys.add(record.delta)
            if record.delta is None or sid in bases:
                keys.add(record.state)
        total = 0
        for object_key in keys:
            try:
                size = self.backend.size(object_key)
            except SnapshotError:
                continue  # missing: verify reports it
            total += size
        return total

    # -- archives --------------------------------------------------------
    def export(
        self,
        path: str | os.PathLike[str],
        sessions: Any = None,
        snapshots: Any = None,
        progress: Any = None,
        *,
        level: int = 19,
    ) -> Any:
        """Write an archive of every session, of the named ``sessions``, or of chosen ``snapshots`` (ids or prefixes).

        Returns an ``ExportReport``; see ``snapstore.archive.export_archive``.
        """
        from .archive import export_archive  # archives sit above the store layer

        return export_archive(self, path, sessions, snapshots, progress, level=level)

    def import_archive(
        self,
        path: str | os.PathLike[str],
        progress: Any = None,
        *,
        on_conflict: str = "error",
        max_size: int | None = None,
    ) -> Any:
        """Add an archive's sessions to this store, checking all of it before writing anything.

        ``on_conflict`` ("error", "merge", "replace", "rename") decides what happens to a
        session the store already has with other snapshots. Returns an ``ImportReport``;
        see ``snapstore.archive.import_archive``.
        """
        from .archive import DEFAULT_MAX_SIZE, import_archive  # archives sit above the store layer

        return import_archive(
            self, path, progress, on_conflict=on_conflict, max_size=DEFAULT_MAX_SIZE if max_size is None else max_size
        )


def check_session_name(name: Any) -> str:
    """Session names are non-empty text without path separators, ``..`` or control characters."""
    reason = None
    if not isinstance(name, str):
        reason = f"must be a string, not {type(name).__name__}"
    elif not name:
        reason = "must not be empty"
    elif len(name) > MAX_NAME_LENGTH:
        reason = f"must be at most {MAX_NAME_LENGTH} characters"
    elif "/" in name or "\\" in name:
        reason = "must not contain path separators"
    elif ".." in name or name == ".":
        reason = "must not contain '..' or be '.'"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        reason = "must not contain control characters"
    else:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            reason = "must be valid unicode text"
    if reason:
        raise InvalidNameError(f"invalid session name {name!r}: {reason}", {"session": repr(name), "reason": reason})
    return name
