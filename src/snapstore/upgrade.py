"""Rewriting a format-1 store in the current format (``snapstore upgrade``), all or nothing.

A format-2 or format-3 store needs no rewrite: format 3 only adds a kind of delta entry and
format 4 an INDEX entry, so the upgrade replaces its format file (``_from_format_2``). The rest of
this module is about format 1, whose rewrite below produces format-4 stores whose deltas all patch
their parents (as in format 2).

Format 2 cannot open a format-1 store (docs/format.md, "Version 1"), so the
upgrade reads it through the backend's ``legacy_reader()``: every session
document, and every retained snapshot rebuilt from its objects and checked
against its state hash. It writes them into a temporary format-2 store with
``Session.import_snapshots``, which keeps each record, and so each id (ids hash
the same record JSON in both versions), then opens that store again and checks
every session, id, head, limit and state against what format 1 held. Only then
does it switch:

* a directory store is built in a hidden sibling folder
  (``.<name>.upgrade-<hex>``, same file system) and the two folders are
  exchanged in one ``renameat2(RENAME_EXCHANGE)``; the old folder, now the
  sibling, is then deleted. A crash leaves the v1 folder in place (plus a
  sibling that the next upgrade deletes) or the complete v2 folder (plus the old
  v1 sibling). Where the exchange is not available, two renames are used; a
  crash between them leaves the store's path empty beside the verified build,
  which the next run moves into place.
* a PostgreSQL store keeps format 1 and format 2 in different tables of one
  schema. The v2 store is built in a temporary folder, every segment is copied
  into the v2 tables (each one transaction), read back and compared, and last
  ``config/format`` is written: that one transaction also sets
  ``schema_version`` to 2, after which v1 code refuses the store, and before which
  v2 code refuses it (it finds no format and asks for an upgrade). A crash before
  it leaves v2 rows nobody reads, which the next upgrade deletes first. The v1
  tables stay, unused.

While it reads and switches, the upgrade holds format 1's ``gc`` lock
exclusively (a file lock in a directory store, an advisory lock on PostgreSQL),
the lock every v1 commit holds shared from its first write to its ref swap: no
v1 commit is half-done while it reads. Processes that opened the store with
format-1 code must be stopped first: they do not look at the format again.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from . import codec
from .backends import MEMORY_TARGETS, Backend, open_backend
from .backends.base import LegacyReader
from .delta import apply_patch
from .errors import (
    BackendError,
    CorruptObjectError,
    FormatVersionError,
    LockTimeoutError,
    PatchError,
    SnapshotError,
    SnapshotNotFound,
)
from .objects import SessionDoc, SnapshotRecord, codec_id
from .store import FORMAT_CONFIG, STORE_FORMAT, SnapshotStore, check_session_name, unknown_format

#: the format the upgrade reads
LEGACY_FORMAT = "1"
V1_SESSIONS = "sessions/"
#: what a v2 directory store holds for format-1 code, which reads ``refs/config/format`` first
V1_FORMAT_LINK = ("refs", "config", "format")
TEMPORARY_MARK = ".upgrade-"
#: where a switch by two renames puts the format-1 folder before moving the new one in
TWO_RENAME_MARK = "-v1"
#: the lock a PostgreSQL upgrade holds (a key no session name quotes to: ``%`` + non-hex)
PG_UPGRADE_KEY = "%upgrade"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100

#: called with (phase, detail) as the upgrade goes: "locked", "read", "built", "verified",
#: "copied", "switched", "cleaned"
Progress = Callable[[str, str], None]


@dataclass
class UpgradeReport:
    target: str
    upgraded: bool  # False when the store already had the current format
    from_version: str
    to_version: str = str(STORE_FORMAT)
    sessions: int = 0
    snapshots: int = 0
    states_verified: int = 0
    leftovers: list[str] = field(default_factory=list)  # paths an interrupted earlier upgrade left


@dataclass
class LegacySession:
    name: str
    max_snapshots: int
    head: str | None
    retained: list[str]  # in creation order, as format 1 listed them
    records: list[SnapshotRecord]  # every snapshot carried over, parents before children
    # (record, canonical state bytes, delta payload or None) of ``records``, until written
    items: list[tuple[SnapshotRecord, bytes, bytes | None]]


def upgrade_store(
    target: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    compression_level: int = 3,
    lock_timeout: float | None = 60.0,
) -> UpgradeReport:
    """Rewrite the format-1, format-2 or format-3 store at ``target`` (a folder or a ``postgresql://``
    URL) in the current format (4).

    Verifies everything before switching; on any error the store is left as it was, and an error
    raised before the switch says so. A store that already has format 4 is left alone
    (``report.upgraded`` is False).
    """
    if not isinstance(target, (str, os.PathLike)) or (isinstance(target, str) and target in MEMORY_TARGETS):
        raise SnapshotError("upgrade takes a store folder or a postgresql:// URL", {"target": repr(target)})
    text = os.fspath(target)
    say = progress or (lambda phase, detail: None)
    if text.startswith(("postgresql://", "postgres://")):
        return _upgrade_postgres(text, say, compression_level, lock_timeout)
    return _upgrade_directory(os.path.realpath(text), say, compression_level, lock_timeout, shown=text)


# -- reading format 1 -----------------------------------------------------
def read_legacy_sessions(reader: LegacyReader) -> Iterator[LegacySession]:
    """Each session of a format-1 store in turn, its retained snapshots rebuilt and verified."""
    names: set[str] = set()
    for ref, doc_id in reader.iter_refs(V1_SESSIONS):
        payload = _payload(reader, doc_id, f"the document of ref {ref}")
        doc = SessionDoc.from_payload(doc_id, payload)
        check_session_name(doc.name)
        if doc.name in names:
            raise CorruptObjectError(f"two refs name session {doc.name!r}", {"session": doc.name, "ref": ref})
        names.add(doc.name)
        yield _read_session(reader, doc)


def _payload(reader: LegacyReader, key: str, what: str) -> bytes:
    if not codec_id(key):
        raise CorruptObjectError(f"{what} names {key!r}, not an object id", {"object": key})
    try:
        blob = reader.get(key)
    except KeyError:
        raise CorruptObjectError(f"{what}: object {key} is missing", {"object": key, "reason": "missing"}) from None
    return codec.decode_object(key, blob)


def _read_session(reader: LegacyReader, doc: SessionDoc) -> LegacySession:
    bases = set(doc.bases)
    records: dict[str, SnapshotRecord] = {}
    deltas: dict[str, bytes] = {}
    states: dict[str, bytes] = {}  # verified canonical states of the snapshots carried over

    def record(sid: str) -> SnapshotRecord:
        if sid not in records:
            if not codec_id(sid):
                raise CorruptObjectError(f"session {doc.name!r} names {sid!r}, not a snapshot id", {"object": sid})
            found = SnapshotRecord.from_payload(sid, _payload(reader, sid, f"session {doc.name!r}"))
            if found.snapshot_id() != sid:  # the record re-encodes to other bytes: its id would change
                raise CorruptObjectError(f"record {sid} is not in canonical form", {"object": sid})
            records[sid] = found
        return records[sid]

    def rebuild(sid: str) -> bytes:
        path: list[str] = []
        current = sid
        while current not in states:
            if current in path or len(path) > 1_000_000:
                raise CorruptObjectError(f"snapshot {sid} has a cyclic parent chain", {"object": current})
            rec = record(current)
            if rec.delta is None or current in bases:
                state = codec.loads(_payload(reader, rec.state, f"the state of snapshot {current}"))
                break
            path.append(current)
            assert rec.parent is not None  # from_payload refuses a delta without a parent
            current = rec.parent
        else:
            state = codec.loads(states[current])
        for step in reversed(path):
            rec = record(step)
            assert rec.delta is not None
            deltas[step] = _payload(reader, rec.delta, f"the delta of snapshot {step}")
            try:
                ops = codec.loads(deltas[step])
                if not isinstance(ops, list):
                    raise PatchError("a delta is not a list of operations")
                state = apply_patch(state, ops, in_place=True)
            except (PatchError, ValueError) as exc:
                raise CorruptObjectError(
                    f"the delta of snapshot {step} does not apply: {exc}", {"object": step, "reason": "bad delta"}
                ) from None
        data = codec.dumps(state)
        if codec.object_id(data) != record(sid).state:
            raise CorruptObjectError(
                f"snapshot {sid} of session {doc.name!r} rebuilds to a state that does not match its hash",
                {"object": sid, "session": doc.name, "reason": "state hash mismatch"},
            )
        states[sid] = data
        return data

    wanted = list(doc.snapshots)
    if doc.head is not None and doc.head not in wanted:
        wanted.insert(0, doc.head)  # an older head stays readable in format 2 too
    items = []
    carried: set[str] = set()
    for sid in wanted:
        data = rebuild(sid)
        rec = record(sid)
        if rec.session != doc.name:
            raise SnapshotError(
                f"session {doc.name!r} holds snapshot {sid} recorded for session {rec.session!r} (an archive "
                "imported under another name): format 2 cannot keep its id there; export that session from a "
                "format-1 snapstore and import it into the upgraded store instead",
                {"session": doc.name, "snapshot": sid, "record_session": rec.session},
            )
        delta = deltas.get(sid) if rec.parent in carried and sid not in bases else None
        items.append((rec, data, delta))
        carried.add(sid)
    return LegacySession(doc.name, doc.max_snapshots, doc.head, list(doc.snapshots), [i[0] for i in items], items)


# -- writing format 2 -----------------------------------------------------
def build_store(store: SnapshotStore, sessions: Iterable[LegacySession], say: Progress) -> list[LegacySession]:
    """Write each session as it is read (its states are dropped once written); returns them."""
    done = []
    for legacy in sessions:
        say("read", legacy.name)
        sess = store.session(legacy.name, max_snapshots=legacy.max_snapshots)
        sess.import_snapshots(legacy.items, max_snapshots=legacy.max_snapshots, head=legacy.head)
        if len(legacy.records) > len(legacy.retained) and legacy.retained:
            sess.forget(len(legacy.retained))  # the older head: readable, not listed (as in format 1)
        legacy.items = []
        done.append(legacy)
        say("built", legacy.name)
    return done


def check_store(store: SnapshotStore, sessions: list[LegacySession]) -> int:
    """Compare a built format-2 store with what format 1 held; returns the states rebuilt.

    Equal ids mean equal records (an id hashes its record), so equal state hashes: ``verify``
    rebuilding every listed snapshot and every head against its record's hash then checks
    every state against what format 1 held, decoding each segment once.
    """
    if store.sessions() != sorted(s.name for s in sessions):
        raise SnapshotError(
            "the upgraded store does not hold the sessions format 1 held",
            {"expected": sorted(s.name for s in sessions), "found": store.sessions()},
        )
    carried = 0
    for legacy in sessions:
        sess = store.session(legacy.name)
        head = sess.head
        found = {
            "snapshots": sess.snapshot_ids(),
            "head": None if head is None else head.id,
            "max_snapshots": sess.max_snapshots,
        }
        wanted = {"snapshots": legacy.retained, "head": legacy.head, "max_snapshots": legacy.max_snapshots}
        if found != wanted:
            raise SnapshotError(
                f"session {legacy.name!r} differs after the upgrade: {found} instead of {wanted}",
                {"session": legacy.name, "found": found, "expected": wanted},
            )
        carried += len(legacy.records)
    report = store.verify()
    if not report.ok:
        raise CorruptObjectError(
            f"the upgraded store fails verification: {report.problems[0].message}",
            {"problems": [p.message for p in report.problems]},
        )
    if report.states_rebuilt != carried:
        raise SnapshotError(
            f"the upgraded store rebuilt {report.states_rebuilt} states, format 1 held {carried}",
            {"rebuilt": report.states_rebuilt, "expected": carried},
        )
    return report.states_rebuilt


def _from_format_2(backend: Backend, where: str) -> UpgradeReport | None:
    """A format-2 or format-3 store moved to format 4, or None when it has another format.

    Nothing is rewritten: every format-2 segment is a format-3 segment (format 3 only adds an entry
    flag), and every format-3 segment a format-4 one (format 4 only adds INDEX entries, which
    writers then append), docs/format.md §8. The format file is the switch, replaced in one step;
    from then on builds that read only older formats refuse the store instead of misreading a
    delta against a base or an INDEX entry.
    """
    found = backend.read_config(FORMAT_CONFIG)
    if found not in (b"2", b"3"):
        return None
    backend.write_config(FORMAT_CONFIG, str(STORE_FORMAT).encode())
    return UpgradeReport(where, True, found.decode("ascii"), sessions=len(backend.session_keys()))


def _legacy_or_refuse(backend: Backend, where: str) -> LegacyReader | None:
    """The v1 reader, or None when the store has format 2 already; refuses anything else."""
    current = backend.read_config(FORMAT_CONFIG)
    if current == str(STORE_FORMAT).encode():
        return None
    if current is not None:  # a format of the store's own that this build does not write: a newer one
        raise unknown_format(where, current, f"this build upgrades stores to version {STORE_FORMAT}")
    found = backend.legacy_format()
    if found is None:
        raise SnapshotNotFound(f"no snapstore store at {where}", {"path": where})
    if found != LEGACY_FORMAT:
        raise FormatVersionError(
            f"store {where} has format version {found!r}; upgrade reads version {LEGACY_FORMAT}",
            {"path": where, "version": found, "supported": int(LEGACY_FORMAT)},
        )
    reader = backend.legacy_reader()
    if reader is None:
        raise SnapshotNotFound(f"no format-1 store at {where}", {"path": where})
    return reader


# -- directory stores -----------------------------------------------------
def _upgrade_directory(
    root: str, say: Progress, level: int, lock_timeout: float | None, *, shown: str
) -> UpgradeReport:
    """Upgrade the folder ``root``; saying that it is unchanged after an error names it as the caller did."""
    if not os.path.isdir(root):
        if _finish_two_rename_switch(root):
            say("switched", root)
            return UpgradeReport(root, True, LEGACY_FORMAT, leftovers=_remove_leftovers(root))
        raise SnapshotNotFound(f"no snapstore store at {root}", {"path": root})
    with _open(root) as backend:
        moved = _from_format_2(backend, root)
        if moved is not None:
            say("switched", root)
            moved.leftovers = _remove_leftovers(root)  # what an interrupted format-1 upgrade left beside it
            return moved
        if _legacy_or_refuse(backend, root) is None:
            return _already_current(root)
    with _v1_gc_lock(root, lock_timeout):
        say("locked", root)
        building = _sibling(root)
        try:
            with _open(root) as backend:  # again: an upgrade that held the lock before may have switched
                reader = _legacy_or_refuse(backend, root)
                if reader is None:
                    return _already_current(root)
                leftovers = _remove_leftovers(root)
                with _left_unchanged(shown):
                    counts = _build_and_check(building, read_legacy_sessions(reader), say, level)
                    _write_v1_refusal(building)
                    _fsync_tree(building)
            say("verified", building)
            _exchange(building, root)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        say("switched", root)
    shutil.rmtree(building, ignore_errors=True)  # the format-1 folder, now beside the store
    say("cleaned", building)
    return UpgradeReport(
        root,
        True,
        LEGACY_FORMAT,
        sessions=counts[0],
        snapshots=counts[1],
        states_verified=counts[2],
        leftovers=leftovers,
    )


@contextmanager
def _open(root: str) -> Iterator[Backend]:
    backend = open_backend(root, create=False)  # never adds format-2 folders to a format-1 store
    try:
        yield backend
    finally:
        backend.close()


def _already_current(where: str, *, directory: bool = True) -> UpgradeReport:
    """The report on a store that has format 2; what an interrupted upgrade left beside it goes
    (a sibling of a format-2 store is an old format-1 folder or an unfinished build: no upgrade
    builds beside a store that is not format 1)."""
    return UpgradeReport(where, False, str(STORE_FORMAT), leftovers=_remove_leftovers(where) if directory else [])


def _build_and_check(folder: str, sessions: Iterable[LegacySession], say: Progress, level: int) -> tuple[int, int, int]:
    """Build a format-2 store in ``folder`` and check it against format 1: (sessions, snapshots, states)."""
    # not fsync=True: one flush per appended snapshot; the directory switch flushes every file once
    with SnapshotStore.open(folder, compression_level=level) as store:
        done = build_store(store, sessions, say)
    with SnapshotStore.open(folder, create=False) as store:
        checked = check_store(store, done)
    return len(done), sum(len(s.retained) for s in done), checked


@contextmanager
def _left_unchanged(where: str) -> Iterator[None]:
    """An error before the switch says what it means for the store: nothing changed, it is still format 1
    (a PostgreSQL store may keep format-2 rows that nothing reads and the next upgrade deletes)."""
    try:
        yield
    except SnapshotError as exc:
        raise type(exc)(
            f"{exc.message}; the upgrade stopped: {where} is unchanged and still has format {LEGACY_FORMAT}",
            {**exc.details, "store_unchanged": True},
        ) from exc


def _sibling(root: str) -> str:
    parent, name = os.path.split(root)
    return os.path.join(parent, f".{name}{TEMPORARY_MARK}{uuid.uuid4().hex[:16]}")


def _leftovers(root: str) -> list[str]:
    parent, name = os.path.split(root)
    prefix = f".{name}{TEMPORARY_MARK}"
    try:
        return sorted(os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(prefix))
    except OSError:
        return []


def _finish_two_rename_switch(root: str) -> bool:
    """Complete a switch by two renames that a crash cut between them (the store's path empty).

    The format-1 store was moved to ``<build>-v1`` only after the build beside it was
    verified and flushed, so that build is the complete format-2 store.
    """
    for aside in _leftovers(root):
        built = aside.removesuffix(TWO_RENAME_MARK)
        if aside.endswith(TWO_RENAME_MARK) and os.path.isdir(built) and not os.path.lexists(root):
            os.rename(built, root)
            _fsync_parent(root)
            return True
    return False


def _remove_leftovers(root: str) -> list[str]:
    """Delete what interrupted upgrades of this store left beside it (called under the v1 gc lock)."""
    found = _leftovers(root)
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return found


def _write_v1_refusal(folder: str) -> None:
    """``refs/config/format`` -> "2" and an empty ``objects/ff``, so format-1 code refuses the store
    with its version error instead of taking it for an empty format-1 store."""
    refs = os.path.join(folder, *V1_FORMAT_LINK[:-1])
    os.makedirs(refs, exist_ok=True)
    # with objects/ff there, format-1 code opening the store creates no fan-out folders before refusing it
    os.makedirs(os.path.join(folder, "objects", "ff"), exist_ok=True)
    link = os.path.join(refs, V1_FORMAT_LINK[-1])
    if not os.path.lexists(link):
        os.symlink("2", link)  # what every snapstore store holds there (format.md §6): format-1 code reads "not 1"


def _fsync_tree(folder: str) -> None:
    """Flush every file and folder of the new store, so that the switch never exposes unwritten data."""
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue  # a link lives in its folder, flushed below
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _exchange(new: str, old: str) -> None:
    """Swap two folders atomically (Linux), else by two renames."""
    renameat2 = _renameat2()
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(old), _RENAME_EXCHANGE) == 0:
            _fsync_parent(old)
            return
        err = ctypes.get_errno()
        if err in (errno.EXDEV, errno.EBUSY):
            raise BackendError(
                f"cannot upgrade {old} in place: it is a mount point (the new store is built beside it, "
                "on the parent's file system); copy the store into a folder of its volume and upgrade that",
                {"path": old, "errno": errno.errorcode.get(err, str(err))},
            )
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise BackendError(f"cannot swap {new} into {old}: {os.strerror(err)}", {"path": old})
    aside = new + TWO_RENAME_MARK
    try:
        os.rename(old, aside)
    except OSError as exc:
        raise BackendError(f"cannot move {old} aside to switch it: {exc.strerror}", {"path": old}) from exc
    os.rename(new, old)  # until this rename, the store's path is empty (the format-1 store is at ``aside``)
    os.rename(aside, new)
    _fsync_parent(old)


def _renameat2() -> Any:
    """The C library's ``renameat2`` (Linux, glibc 2.28+), or None."""
    if not sys.platform.startswith("linux"):
        return None
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


def _fsync_parent(path: str) -> None:
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _v1_gc_lock(root: str, timeout: float | None) -> Iterator[None]:
    """Format 1's ``locks/gc.lock`` held exclusively (v1 commits hold it shared while they write)."""
    import fcntl

    locks = os.path.join(root, "locks")
    try:
        os.makedirs(locks, exist_ok=True)
        fd = os.open(os.path.join(locks, "gc.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise BackendError(f"cannot lock {root} for the upgrade: {exc.strerror}", {"path": root}) from exc
    try:
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if timeout is not None and waited >= timeout:
                    raise LockTimeoutError(
                        f"store {root} is in use by format-1 writers: waited {waited:.1f} s for its gc lock",
                        {"path": root, "waited": round(waited, 3)},
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # closing drops the flock


# -- PostgreSQL stores ----------------------------------------------------
def _upgrade_postgres(url: str, say: Progress, level: int, lock_timeout: float | None) -> UpgradeReport:
    backend = open_backend(url)
    where = backend.describe()
    try:
        with backend.lock_session(PG_UPGRADE_KEY, lock_timeout), _v1_pg_gc_lock(backend, lock_timeout):
            moved = _from_format_2(backend, where)
            if moved is not None:
                say("switched", where)
                return moved
            reader = _legacy_or_refuse(backend, where)
            if reader is None:
                return _already_current(where, directory=False)
            say("locked", where)
            with tempfile.TemporaryDirectory(prefix="snapstore-upgrade-") as folder, _left_unchanged(where):
                built = os.path.join(folder, "store")
                counts = _build_and_check(built, read_legacy_sessions(reader), say, level)
                say("verified", where)
                # rows of an interrupted earlier upgrade: no format-2 code reads them (no format yet)
                for key in backend.session_keys():
                    backend.delete_session(key)
                with _open(built) as source:
                    _copy_segments(source, backend)
            say("copied", where)
            backend.write_config(FORMAT_CONFIG, str(STORE_FORMAT).encode())  # the switch
            say("switched", where)
    finally:
        backend.close()
    return UpgradeReport(where, True, LEGACY_FORMAT, sessions=counts[0], snapshots=counts[1], states_verified=counts[2])


@contextmanager
def _v1_pg_gc_lock(backend: Backend, timeout: float | None) -> Iterator[None]:
    """Format 1's ``gc`` lock of a PostgreSQL store held exclusively, on a connection of its own.

    Format 1 took it as a session-level advisory lock on blake2b-64 of "snapstore-lock", the
    schema, the table prefix and "gc" (joined by NUL), shared by every commit while it wrote.
    """
    import hashlib

    import psycopg  # the PostgreSQL extra is installed: the backend was opened

    parts = ("snapstore-lock", str(getattr(backend, "schema", "")), str(getattr(backend, "table_prefix", "")), "gc")
    digest = hashlib.blake2b("\x00".join(parts).encode("utf-8"), digest_size=8).digest()
    lock_id = int.from_bytes(digest, "big", signed=True)
    try:
        conn = psycopg.connect(str(getattr(backend, "url", "")), autocommit=True)
    except psycopg.Error as exc:
        raise BackendError(f"cannot lock {backend.describe()} for the upgrade: {exc}", {"cause": str(exc)}) from exc
    try:
        started = time.monotonic()
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", [lock_id]).fetchone()[0]:  # type: ignore[index]
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise LockTimeoutError(
                    f"store {backend.describe()} is in use by format-1 writers: waited {waited:.1f} s for its gc lock",
                    {"path": backend.describe(), "waited": round(waited, 3)},
                )
            time.sleep(0.05)
        yield
    finally:
        conn.close()  # ending the connection drops the lock


def _copy_segments(source: Backend, target: Backend) -> None:
    for key in source.session_keys():
        for info in source.segments(key):
            read = source.read_segment(key, info.segment)
            target.replace_segment(key, info.segment, read.entries)
            back = target.read_segment(key, info.segment)
            if back.entries != read.entries or back.damaged_at is not None:
                raise BackendError(
                    f"segment {info.segment} of session key {key} reads back differently from the store",
                    {"session_key": key, "segment": info.segment},
                )


__all__ = ["LegacySession", "UpgradeReport", "read_legacy_sessions", "upgrade_store"]
