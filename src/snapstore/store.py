"""The snapshot store: sessions over a backend, plus gc, verify and stats."""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import xxhash

from .backends import Backend, MemoryBackend, open_backend
from .backends.base import SegmentInfo, SegmentMissing, UnfinishedReplace, not_serving, staged_key
from .entries import KEY_MODES, CommitEntry, MetaEntry, decode_entry, encode_meta, index_problem
from .errors import (
    BackendError,
    ConcurrentUpdateError,
    CorruptObjectError,
    FormatVersionError,
    InvalidNameError,
    LockTimeoutError,
    ReadOnlyStoreError,
    SnapshotError,
    SnapshotNotFound,
)
from .history import DEFAULT_MAX_SNAPSHOTS, READ_ATTEMPTS, SessionLog
from .keyframes import KeyframePolicy
from .recency import shed_bytes, touch
from .reclaim import Reclaimer
from .session import Session, check_max_snapshots, naming_timeouts, resolve_prefix

#: ``SnapshotStore``'s default ``max_warm_sessions``: two for each of a LangGraph saver's 32 cached threads
DEFAULT_WARM_SESSIONS = 64

#: the format this build writes to a new store, and the ones it reads and writes (docs/format.md §8):
#: a store is read and written in its own format (a format-2 store's deltas all patch their parents;
#: a format-3 store's segments hold no INDEX entries) until ``snapstore upgrade`` moves it to format
#: 4, which stores deltas against another base (3) and INDEX entries (4)
STORE_FORMAT = 4
#: what a snapstore store's ``refs/config/format`` names, so that format-1 code refuses it
FORMAT_1_REFUSAL = "2"
READABLE_FORMATS = (2, 3, 4)
_READS = f"this build reads versions {READABLE_FORMATS[0]} to {STORE_FORMAT}"
FORMAT_CONFIG = "format"
MAX_NAME_LENGTH = 200
#: session keys longer than this are shortened to a prefix and a hash of the name
MAX_PLAIN_KEY = 120
#: reads of a session ``verify`` makes without its lock while gc keeps rewriting it, before one with it
VERIFY_ATTEMPTS = 4
#: seconds a writer waits for a session's lock before LockTimeoutError
DEFAULT_LOCK_TIMEOUT = 60.0
#: temporary files younger than this are another process's write in progress
TEMPORARY_GRACE_SECONDS = 3600.0


@dataclass
class Problem:
    """One thing ``verify`` found wrong."""

    object: str | None
    message: str
    session: str | None = None
    snapshot: str | None = None


@dataclass
class VerifyReport:
    segments_checked: int = 0
    sessions_checked: int = 0
    snapshots_checked: int = 0
    states_rebuilt: int = 0
    problems: list[Problem] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # entries in the store that are not its own

    @property
    def objects_checked(self) -> int:  # the name version 1 reports used
        return self.segments_checked

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, error: Exception, *, session: str | None = None, snapshot: str | None = None) -> None:
        details = getattr(error, "details", {}) or {}
        problem = Problem(details.get("object"), str(error), session, snapshot)
        if problem not in self.problems:  # found by two checks (a chain's, a rebuild's): said once
            self.problems.append(problem)


@dataclass
class GcReport:
    segments_dropped: int = 0
    bytes_freed: int = 0
    temporary_files_removed: int = 0
    foreign: list[str] = field(default_factory=list)
    #: sessions whose lock another writer held past the store's lock timeout: left for the next gc
    sessions_busy: list[str] = field(default_factory=list)
    #: segments rewritten without the runs nobody needed (kept, smaller)
    segments_squashed: int = 0
    #: sessions gc could not read or write (a file it may not open), each with why: left as they are
    sessions_failed: dict[str, str] = field(default_factory=dict)

    @property
    def objects_deleted(self) -> int:  # the name version 1 reports used
        return self.segments_dropped


def _checked_settings(settings: dict[str, Any]) -> KeyframePolicy:
    """The keyframe policy of a store of these settings, each refused by name when it is not one.
    ``settings`` may be partial (``SnapshotStore.open``'s keywords): a setting not given is not
    checked (the placeholders below pass) and takes its default; names it does not know are left
    to the constructor."""
    warm_sessions = settings.get("max_warm_sessions", 0)
    if type(warm_sessions) is not int or warm_sessions < 0:
        raise SnapshotError(
            "max_warm_sessions must be an integer >= 0",
            {"argument": "max_warm_sessions", "value": repr(warm_sessions)},
        )
    warm_bytes = settings.get("max_warm_bytes")
    if warm_bytes is not None and (type(warm_bytes) is not int or warm_bytes < 0):
        raise SnapshotError(
            "max_warm_bytes must be an integer >= 0 or None",
            {"argument": "max_warm_bytes", "value": repr(warm_bytes)},
        )
    level = settings.get("compression_level", 1)
    if type(level) is not int or not 1 <= level <= 22:
        raise SnapshotError(
            "compression_level must be an integer from 1 to 22",
            {"argument": "compression_level", "value": repr(level)},
        )
    lock_timeout = settings.get("lock_timeout")
    if lock_timeout is not None and (type(lock_timeout) not in (int, float) or not lock_timeout >= 0):
        raise SnapshotError("lock_timeout must be seconds >= 0 or None", {"lock_timeout": repr(lock_timeout)})
    given = {name: settings[name] for name in ("rebuild_budget", "max_runs", "max_chain") if name in settings}
    return KeyframePolicy(**given)


class SnapshotStore:
    """Content-addressed, delta-compressed snapshots of JSON states, in named sessions.

    Open a directory store with ``SnapshotStore.open(path)`` (created if absent)
    or an in-memory one with ``SnapshotStore.memory()``. Safe to share between
    threads; several processes may open the same directory at once (writers to
    one session wait their turn, for at most ``lock_timeout`` seconds).

    A session this handle used keeps what makes its next read and commit cheap (its index and,
    once written, its head state, the open segment and that segment's compression stream: up to
    about a megabyte for a small state, more for a large one). The ``max_warm_sessions`` used last
    keep it; an older one lets it go and reads what it needs again at its next use, so a process
    that uses many sessions (a server of many threads) holds a bounded amount, whatever the number
    of sessions. With ``max_warm_bytes`` they also keep at most about that many bytes together
    (their heads' canonical JSON and their open segments' decoded runs; the objects of a head take
    a few times its JSON), the session used last keeping its own whatever its size.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        compression_level: int = 3,
        max_chain: int = 5000,
        rebuild_budget: float = 3.0,
        max_runs: int = 12,
        lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
        max_warm_sessions: int = DEFAULT_WARM_SESSIONS,
        max_warm_bytes: int | None = None,
        create: bool = True,
    ) -> None:
        self.policy = _checked_settings(
            {
                "compression_level": compression_level,
                "max_chain": max_chain,
                "rebuild_budget": rebuild_budget,
                "max_runs": max_runs,
                "lock_timeout": lock_timeout,
                "max_warm_sessions": max_warm_sessions,
                "max_warm_bytes": max_warm_bytes,
            }
        )
        self.backend = backend
        self.level = compression_level
        self.lock_timeout = lock_timeout
        self.format = STORE_FORMAT  # set from the store by ``_check_format``
        self.reclaimer = Reclaimer(compression_level)
        # one handle per session name while anyone holds it; the warm ones (below) are held here
        self._sessions: weakref.WeakValueDictionary[str, Session] = weakref.WeakValueDictionary()
        # the sessions used last, by key, oldest first: they keep what they read and their write state
        self._warm: OrderedDict[str, Session] = OrderedDict()
        self.max_warm_sessions = max_warm_sessions
        self.max_warm_bytes = max_warm_bytes
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
        if not isinstance(target, Backend):  # a refused setting creates nothing
            _checked_settings(settings)
        backend = open_backend(target, fsync=fsync, create=create)
        try:
            return cls(backend, create=create, **settings)
        except BaseException:
            if backend is not target:  # refused: let go of the files or connections opened for it
                backend.close()
            raise

    @staticmethod
    def upgrade(target: str | os.PathLike[str], **options: Any) -> Any:
        """Rewrite a format-1 store as format 2, verified, all or nothing; returns an ``UpgradeReport``.

        A static method: a format-1 store cannot be opened as a ``SnapshotStore``. See
        ``snapstore.upgrade.upgrade_store`` for the options.
        """
        from .upgrade import upgrade_store  # upgrading sits above the store layer

        return upgrade_store(target, **options)

    @classmethod
    def memory(cls, **settings: Any) -> SnapshotStore:
        """A store in this process's memory; closing it lets its sessions go."""
        return cls(MemoryBackend(discard_on_close=True), **settings)

    def _check_format(self, create: bool) -> None:
        version = self.backend.read_config(FORMAT_CONFIG)
        if version is None:
            legacy = self.backend.legacy_format()
            if legacy == "1":
                raise FormatVersionError(
                    f"store {self.describe()} has format version 1; {_READS}: "
                    f"run `snapstore --store {self.describe()} upgrade` (or SnapshotStore.upgrade(path))",
                    {"path": self.describe(), "version": legacy, "supported": STORE_FORMAT, "upgrade": True},
                )
            # "2" with no format of its own is the link that makes format-1 code refuse a store, which
            # every snapstore store holds (format.md §6): one whose making has not finished (another
            # process is between the link and the format, or was killed there). Its format is written
            # below, or, not creating, there is no store yet
            if legacy is not None and legacy not in (*(str(v) for v in READABLE_FORMATS), FORMAT_1_REFUSAL):
                shown = legacy if len(legacy) <= 4 and legacy.isdigit() else None
                what = f"format version {shown}" if shown else "an unreadable format ref"
                raise FormatVersionError(
                    f"store {self.describe()} has {what}; {_READS}",
                    {"path": self.describe(), "version": shown, "supported": STORE_FORMAT},
                )
            if not create:
                raise SnapshotNotFound(f"no snapstore store at {self.describe()}", {"path": self.describe()})
            if self.backend.read_only:
                raise ReadOnlyStoreError(
                    f"cannot make a snapstore store at {self.describe()}: it is read-only here",
                    {"path": self.describe(), "reason": "read-only"},
                )
            self.backend.write_config(FORMAT_CONFIG, str(STORE_FORMAT).encode())
            version = self.backend.read_config(FORMAT_CONFIG)
        readable = {str(v).encode(): v for v in READABLE_FORMATS}
        if version in readable:
            self.format = readable[version]
            return
        raise unknown_format(self.describe(), version, _READS)

    @property
    def base_deltas(self) -> bool:
        """Whether commits may store a delta against a base other than the parent (format 3)."""
        return self.format >= 3

    @property
    def index_entries(self) -> bool:
        """Whether writers add INDEX entries to segments (format 4)."""
        return self.format >= 4

    @property
    def read_only(self) -> bool:
        return self.backend.read_only

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
    def session(self, name: str, max_snapshots: int | None = None, *, create: bool = True) -> Session:
        """Get or create a named history.

        A new session keeps its last ``max_snapshots`` snapshots (default 10). For an existing
        session, a higher ``max_snapshots`` raises its limit; a lower one that would evict
        snapshots is refused: call ``session.set_max_snapshots(n)``, which says what it evicts.
        With ``create=False``, a session that does not exist raises ``SnapshotNotFound`` and
        nothing is written (one look at the store, where ``has_session`` and then ``session``
        take two).
        """
        check_session_name(name)
        if max_snapshots is None:
            return self._get_or_create(name, None, create)
        check_max_snapshots(max_snapshots)
        for attempt in range(READ_ATTEMPTS):
            sess = self._get_or_create(name, max_snapshots, create)
            try:
                current = sess.max_snapshots
            except SnapshotNotFound:
                # deleted by another handle since it was found or made here: made again, as a
                # session that did not exist is (the last attempt says it is gone)
                if not create or attempt == READ_ATTEMPTS - 1:
                    raise
                self._forget_handles([name])
                continue
            break
        if max_snapshots != current:
            untagged = len(set(sess.snapshot_ids()) - set(sess.tags.values()))
            if max_snapshots < current and max_snapshots < untagged:
                raise SnapshotError(
                    f"session {name!r} holds {untagged} untagged snapshots: a limit of {max_snapshots} would "
                    f"evict {untagged - max_snapshots}; call set_max_snapshots({max_snapshots}) to do that",
                    {"session": name, "max_snapshots": max_snapshots, "retained": untagged},
                )
            sess.set_max_snapshots(max_snapshots)
        return sess

    def _get_or_create(self, name: str, max_snapshots: int | None, create: bool) -> Session:
        with self._mutex:
            sess = self._sessions.get(name)
        if sess is not None and not self.backend.segments(sess.key):  # deleted by another handle
            with self._mutex:
                self._sessions.pop(name, None)
                self._warm.pop(sess.key, None)
            sess = None
        if sess is None:
            sess = self._load_or_create(name, max_snapshots or DEFAULT_MAX_SNAPSHOTS, create)
            with self._mutex:
                sess = self._sessions.setdefault(name, sess)
        self._note_used(sess)
        return sess

    def _load_or_create(self, name: str, max_snapshots: int, create: bool = True) -> Session:
        key = session_key(name)
        sess = Session(self, name, key)
        listed = self.backend.segments(key)
        if listed:
            found = self._read_name(key, listed)
            if found is not None and found != name:
                raise CorruptObjectError(
                    f"session key {key} holds session {found!r}, not {name!r}", {"session": name, "key": key}
                )
            return sess
        if not create:
            raise SnapshotNotFound(f"session {name!r} does not exist", {"session": name})
        with self._session_lock(key, name):
            if not self.backend.segments(key):
                body = {"checkpoint": True, "name": name, "max_snapshots": max_snapshots, "tags": {}}
                self.backend.append(key, 1, [encode_meta(body)], 0)
        return sess

    def _read_name(self, key: str, listed: list[SegmentInfo] | None = None) -> str | None:
        """The session name a checkpoint of the session records (every segment starts with one);
        ``listed``: the session's segments, just listed."""
        for _attempt in range(READ_ATTEMPTS):
            try:
                if listed is None:
                    listed = self.backend.segments(key)
                for info in listed:
                    data = self.backend.read_first_entry(key, info.segment)
                    if data is not None:
                        entry = decode_entry(data, "", f"session key {key}")
                        if isinstance(entry, MetaEntry) and isinstance(entry.body.get("name"), str):
                            return str(entry.body["name"])
                return None
            except SegmentMissing:
                listed = None  # reclaimed while read: list again
            except CorruptObjectError:
                return None  # damage: verify reports it; the name is read from another segment or not at all
        return None

    def has_session(self, name: str) -> bool:
        check_session_name(name)
        return bool(self.backend.segments(session_key(name)))

    def sessions(self) -> list[str]:
        """Names of every session in the store, sorted."""
        names = []
        for key in self.backend.session_keys():
            name = name_of_key(key)
            if name is None:
                try:
                    name = self._read_name(key)
                except SnapshotError:
                    name = None
            if name is not None and self._has_segments(key):
                names.append(name)
        return sorted(names)

    def _has_segments(self, key: str) -> bool:
        """Whether a session folder holds segments; one that cannot be listed counts as a session
        (reading it says why), so that it hides no other from a listing of them all."""
        try:
            return bool(self.backend.segments(key))
        except BackendError:
            return True

    def delete_session(self, name: str) -> None:
        """Remove a session and everything it stored."""
        check_session_name(name)
        key = session_key(name)
        with self._session_lock(key, name):
            if not self.backend.delete_session(key):
                raise SnapshotNotFound(f"session {name!r} does not exist", {"session": name})
        self._forget_handles([name])

    @contextmanager
    def replacing(self, name: str, max_snapshots: int | None = None) -> Iterator[Session]:
        """A new, empty history for session ``name`` (kept to ``max_snapshots``, default 10), which
        takes the session's place in one step when the block ends without an error.

        Until then readers see the session as it was; afterwards, the new history; never neither
        nor a mix of the two, and a crash leaves the session as it was (what the block wrote is
        removed by ``gc`` a week after it began). When the block raises, nothing changes. The
        session need not exist. Write only inside the block, through the session it yields; get
        the session with ``session(name)`` afterwards.
        """
        with self.replacing_sessions({name: max_snapshots}) as staged:
            yield staged[name]

    @contextmanager
    def replacing_sessions(
        self, limits: dict[str, int | None], *, heads: dict[str, str | None] | None = None
    ) -> Iterator[dict[str, Session]]:
        """``replacing`` for several sessions at once: a new, empty history for each name of
        ``limits`` (kept to its limit), yielded by name, all of which take their sessions' places
        when the block ends without an error, under every one of their locks.

        With ``heads``, only while each session named there still has the head it names (None:
        the session does not exist): otherwise ``ConcurrentUpdateError`` is raised and nothing
        changes, so a rewrite built on what a session held does not drop a commit another writer
        made meanwhile. The places are taken as one step (``Backend.swap_in_sessions``): under one
        mutex, in one transaction, or, on the directory engine, by one exchange each after a record
        that the next holder of any of their locks finishes after a crash. A reader that reads one
        session and then another may read them either side of that step.
        """
        names = sorted(limits)
        for name in names:
            check_session_name(name)
        settings = {name: _limit(limit) for name, limit in limits.items()}
        keys = {name: session_key(name) for name in names}
        staged = {name: Session(self, name, staged_key(len(keys[name]))) for name in names}
        try:
            for name in names:
                body = {"checkpoint": True, "name": name, "max_snapshots": settings[name], "tags": {}}
                with self.backend.lock_session(staged[name].key, self.lock_timeout):
                    self.backend.append(staged[name].key, 1, [encode_meta(body)], 0)
            yield staged
            with self._locked_at(keys, heads or {}, "while its new history was written (nothing was replaced)"):
                self.backend.swap_in_sessions([(staged[name].key, keys[name]) for name in names])
        except BaseException:
            for name in names:
                with suppress(SnapshotError):
                    self.backend.delete_session(staged[name].key)
            raise
        finally:
            self._forget_handles(names)
            with self._mutex:  # the staged handles wrote: what they kept goes with them
                for handle in staged.values():
                    self._warm.pop(handle.key, None)

    def delete_sessions(self, heads: dict[str, str | None]) -> None:
        """Delete several sessions at once, under all their locks, and only while each still has
        the head ``heads`` names (None: it does not exist, and nothing is deleted for it): otherwise
        ``ConcurrentUpdateError`` and nothing changes, as ``replacing_sessions`` does it."""
        for name in heads:
            check_session_name(name)
        keys = {name: session_key(name) for name in heads}
        try:
            with self._locked_at(keys, heads, "before it was deleted (nothing was deleted)"):
                for name in sorted(heads):
                    if heads[name] is not None:
                        self.backend.delete_session(keys[name])
        finally:
            self._forget_handles(heads)

    def _forget_handles(self, names: Iterable[str]) -> None:
        """Drop the handles kept for sessions whose history was replaced or deleted under them."""
        with self._mutex:
            for name in names:
                self._sessions.pop(name, None)
                self._warm.pop(session_key(name), None)

    def _note_used(self, sess: Session) -> None:
        """``sess`` was just asked for or wrote: it is the newest warm session, and the oldest
        beyond ``max_warm_sessions`` (or ``max_warm_bytes``) let go of what they keep (one in use by
        another thread keeps it until it is used again, and counts as warm then)."""
        with self._mutex:
            cooling = touch(self._warm, sess.key, sess, self.max_warm_sessions)
            if self.max_warm_bytes is not None:
                cooling += shed_bytes(self._warm, self.max_warm_bytes, Session.kept_bytes)
        for victim in cooling:
            victim._let_go()

    @contextmanager
    def _locked_at(self, keys: dict[str, str], heads: dict[str, str | None], when: str) -> Iterator[None]:
        """The locks of the sessions ``keys`` names (taken in one order for every caller: no
        deadlock), held while each session of ``heads`` still has the head named there."""
        with ExitStack() as locks:
            for name in sorted(keys, key=keys.__getitem__):
                locks.enter_context(self._session_lock(keys[name], name))
            for name, expected in heads.items():
                found = self._head_under_lock(name, keys[name])
                if found != expected:
                    raise ConcurrentUpdateError(
                        f"session {name!r}: its head is {found}, not {expected}: another writer committed {when}",
                        {"session": name, "head": found, "expected": expected},
                    )
            yield

    def _session_lock(self, key: str, name: str) -> AbstractContextManager[None]:
        """A session's write lock, waited for up to the store's timeout; a timeout names the session."""
        return naming_timeouts(self.backend.lock_session(key, self.lock_timeout), name)

    def _head_under_lock(self, name: str, key: str) -> str | None:
        """The head of a session whose lock the caller holds (None: no such session)."""
        log = SessionLog(self.backend, key, name)
        log.refresh(locked=True)
        return log.head

    def find(self, snapshot_id: str) -> tuple[Session, str]:
        """The session holding a retained snapshot (or a session's head, which stays readable when the
        limit evicts it), and its full id, from an id or a unique prefix of 8+ hex digits. Tags belong
        to a session: ``store.session(name).resolve(tag)`` (the CLI also takes ``SESSION:TAG``)."""
        owners: dict[str, str] = {}
        for name in self.sessions():
            for sid in self.session(name).readable_ids():
                owners.setdefault(sid, name)
        sid = resolve_prefix(snapshot_id, owners, where="the store")
        return self.session(owners[sid]), sid

    # -- maintenance ---------------------------------------------------
    def gc(self, *, dry_run: bool = False, grace_seconds: float = TEMPORARY_GRACE_SECONDS) -> GcReport:
        """Drop what retention evicted in every session, and leftovers of interrupted writes."""
        report = GcReport(foreign=self.backend.foreign_entries())
        if dry_run or self.backend.read_only:
            return report
        for name in self.sessions():
            try:
                sess = self.session(name)
                before = {s.segment: s for s in self.backend.segments(sess.key)}
                report.segments_dropped += sess.clear_old_snapshots()
                after = {s.segment: s for s in self.backend.segments(sess.key)}
            except LockTimeoutError:  # one writer holding its session's lock stops no other session's gc
                report.sessions_busy.append(name)
                continue
            except (BackendError, CorruptObjectError) as exc:  # nor does one session gc cannot read
                report.sessions_failed[name] = str(exc)
                continue
            report.segments_squashed += sum(
                1 for n, s in after.items() if n in before and s.stored_bytes < before[n].stored_bytes
            )
            report.bytes_freed += max(
                sum(s.stored_bytes for s in before.values()) - sum(s.stored_bytes for s in after.values()), 0
            )
        report.temporary_files_removed = self.backend.cleanup_temporary(grace_seconds)
        return report

    def verify(self, *, read_data: bool = True) -> VerifyReport:
        """Check every session's segments and chains; with ``read_data`` also decompress everything and
        rebuild every retained state against its hash. Also reports a replace of several sessions
        together left part way (``Backend.unfinished_replaces``). Waits for no lock: writers keep going.
        A server that does not serve (PostgreSQL down or restarting) raises its ``BackendError``: what
        could not be read is not reported as a problem of the store."""
        report = VerifyReport(foreign=self.backend.foreign_entries())
        for unfinished in self.backend.unfinished_replaces():
            report.add(self._unfinished_replace_problem(unfinished))
        for key in self.backend.session_keys():
            name = name_of_key(key)
            try:
                if not self.backend.segments(key):
                    continue  # a deleted session leaves its lock file: nothing to check
            except SnapshotError as exc:  # its folder cannot be listed: that session is the problem
                if not_serving(exc):  # unless the server is not there to list it: nothing is checked
                    raise
                report.sessions_checked += 1
                report.add(exc, session=name or key)
                continue
            report.sessions_checked += 1
            try:
                if name is None:
                    name = self._read_name(key) or key
                self._verify_session_settled(key, name, report, read_data)
            except SnapshotError as exc:
                if not_serving(exc):
                    raise
                report.add(exc, session=name)
        return report

    def _unfinished_replace_problem(self, unfinished: UnfinishedReplace) -> SnapshotError:
        record, blocked = unfinished.record, unfinished.blocked
        if not unfinished.session_keys:
            return CorruptObjectError(
                f"{record}: {blocked} (damaged, or not written by snapstore): it is left alone, and which sessions "
                "were being replaced together there cannot be told",
                {"object": record, "reason": "unreadable replace record"},
            )
        names = ", ".join(name_of_key(key) or self._read_name(key) or key for key in unfinished.session_keys)
        left = f"sessions {names} were being replaced together and the replace was left part way ({record})"
        details = {"object": record, "sessions": list(unfinished.session_keys)}
        if blocked is not None:
            return SnapshotError(
                f"{left}, and it cannot be finished: {blocked}; commits to them are refused, naming the record, "
                "until it is removed by hand, which lets them be written as they are",
                {**details, "reason": "replace cannot be finished"},
            )
        seen = "some of them replaced and some not" if unfinished.begun else "them as they were (none replaced yet)"
        return SnapshotError(
            f"{left}: reads see {seen} until the next commit to one of them, a store opened for writing, or "
            "`snapstore gc` finishes it",
            {**details, "reason": "replace left part way"},
        )

    def _verify_session_settled(self, key: str, name: str, report: VerifyReport, read_data: bool) -> None:
        """Verify one session; when a writer reclaimed or squashed segments meanwhile (verify takes
        no lock), the problems found are checked again on a fresh read before they are reported.

        Problems count only from a read nothing rewrote: while gc squashes the session again and
        again, every read may meet a segment rewritten under it, so after ``VERIFY_ATTEMPTS`` such
        reads the last one holds the session's lock (reclaim runs under it) when it can be had:
        what it finds is what the store holds."""
        for attempt in range(VERIFY_ATTEMPTS + 1):
            locked = attempt == VERIFY_ATTEMPTS
            with self._held_if_possible(key) if locked else nullcontext():
                log = SessionLog(self.backend, key, name)
                log.refresh()
                trial = VerifyReport()
                rewritten = self._verify_session(log, trial, read_data)
                if locked or (not rewritten and (trial.ok or not log.refresh())):
                    break
        if rewritten:  # even the last read met a rewritten segment (the lock could not be had)
            trial.add(
                SnapshotError(
                    f"session {name!r}: a segment was rewritten by another process (gc) each time verify read "
                    "it, and was not checked; run verify again",
                    {"session": name, "reason": "kept changing"},
                ),
                session=name,
            )
        report.snapshots_checked += trial.snapshots_checked
        report.segments_checked += trial.segments_checked
        report.states_rebuilt += trial.states_rebuilt
        report.problems.extend(trial.problems)

    @contextmanager
    def _held_if_possible(self, key: str) -> Iterator[None]:
        """The session's lock for one last verify read, or nothing when it cannot be had (a store
        opened read-only, another writer past the timeout): that read's problems are reported as found."""
        with ExitStack() as held:
            with suppress(LockTimeoutError, BackendError):  # (a read-only store's refusal is a BackendError)
                held.enter_context(self.backend.lock_session(key, self.lock_timeout))
            yield

    def _verify_session(self, log: SessionLog, report: VerifyReport, read_data: bool) -> bool:
        """Check one session's log; True when a segment was rewritten under the read (that segment
        is not checked, and what was found elsewhere may be a mix of before and after)."""
        rewritten = False
        retained = set(log.retained())
        if log.head is not None:
            retained.add(log.head)
        for sid in log.retained():
            report.snapshots_checked += 1
            try:
                log.chain(sid)
            except SnapshotError as exc:
                report.add(exc, session=log.name, snapshot=sid)
        report.segments_checked += len(log.segments)
        for number, sid, parent, why in log.lost_history():
            report.add(
                CorruptObjectError(
                    f"session {log.name!r}: snapshot {sid}, the first of segment {number}, names parent {parent}, "
                    f"which no segment holds, and the session has evicted nothing: history was lost from the store "
                    f"({why})",
                    {"segment": number, "parent": parent, "reason": "lost history", "cause": why},
                ),
                session=log.name,
                snapshot=sid,
            )
        for number in list(log.segments):
            try:
                wrong_index = index_problem(
                    self.backend.read_segment(log.key, number).entries, log.name, log.where(number)
                )
            except SegmentMissing:
                rewritten = True
                continue
            except CorruptObjectError:  # its header: the segment's damage, reported below with the others'
                if log.segments[number].damage is None:
                    raise
                continue
            if wrong_index is not None:
                problem = CorruptObjectError(wrong_index, {"segment": number, "reason": "index entry"})
                report.add(problem, session=log.name)
        if not read_data:
            for number, segment in log.segments.items():
                if segment.damage is not None:
                    report.add(CorruptObjectError(segment.damage, {"segment": number}), session=log.name)
            return rewritten
        for number in list(log.segments):
            segment = log.segments[number]
            if segment.damage is not None:
                report.add(CorruptObjectError(segment.damage, {"segment": number}), session=log.name)
            try:
                payloads, _raw = log.segment_payloads(number)
            except SegmentMissing:
                rewritten = True  # reclaimed or squashed since the listing: read again, the others checked
                continue
            except SnapshotError as exc:
                if not_serving(exc):
                    raise
                report.add(exc, session=log.name)
                continue
            for entry in segment.entries:
                if not isinstance(entry, CommitEntry) or entry.id not in retained:
                    continue
                try:
                    path = log.chain(entry.id)
                    report.states_rebuilt += 1
                    log.apply_chain(path, payloads)
                except SnapshotError as exc:
                    report.add(exc, session=log.name, snapshot=entry.id)
        return rewritten

    def stats(self) -> dict[str, Any]:
        """Sessions, snapshots, segments, stored and raw bytes, keyframes, the longest chain, disk usage."""
        stored = raw = snapshots = keyframes = longest = segments = 0
        names = self.sessions()
        for name in names:
            key = session_key(name)
            log = SessionLog(self.backend, key, name)
            log.refresh()
            segments += len(log.segments)
            stored += sum(info.stored_bytes for info in self.backend.segments(key))
            raw += sum(s.raw_bytes() for s in log.segments.values())
            for sid in log.retained():
                snapshots += 1
                commit = log.commits[sid]
                keyframes += commit.mode in KEY_MODES
                longest = max(longest, commit.depth)
        result: dict[str, Any] = {
            "sessions": len(names),
            "snapshots": snapshots,
            "segments": segments,
            "stored_bytes": stored,
            "raw_bytes": raw,
            "compression_ratio": round(raw / stored, 2) if stored else None,
            "keyframes": keyframes,
            "longest_chain": longest,
        }
        result.update(self.backend.disk_usage())
        return result

    def session_usage(self, name: str) -> int:
        """Stored bytes of one session's segments."""
        check_session_name(name)
        key = session_key(name)
        segments = self.backend.segments(key)
        if not segments:
            raise SnapshotNotFound(f"session {name!r} does not exist", {"session": name})
        return sum(info.stored_bytes for info in segments)

    # -- archives and upgrades -------------------------------------------
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


def _limit(max_snapshots: int | None) -> int:
    return DEFAULT_MAX_SNAPSHOTS if max_snapshots is None else check_max_snapshots(max_snapshots)


def session_key(name: str) -> str:
    """The backend's key for a session: the name percent-encoded, or a prefix and a hash when long."""
    quoted = quote(name, safe="").replace("~", "%7E")
    if len(quoted) <= MAX_PLAIN_KEY:
        return quoted
    digest = xxhash.xxh3_128_hexdigest(name.encode("utf-8"))
    return f"{quoted[:80]}~{digest}"


def name_of_key(key: str) -> str | None:
    """The session name a plain key encodes, or None for a shortened key (read the name from the session)."""
    if "~" in key:
        return None
    return unquote(key)


def unknown_format(where: str, version: bytes | None, supported: str) -> FormatVersionError:
    """The error for a store whose format file holds ``version``, which this build does not read.

    A short number is a format version (a newer one); anything else is quoted by size only: an
    error message never repeats the content of a file planted in the store."""
    shown = version.decode("ascii") if version and len(version) <= 4 and version.isdigit() else None
    what = f"format version {shown}" if shown else f"an unreadable format file ({len(version or b'')} bytes)"
    return FormatVersionError(
        f"store {where} has {what}; {supported}", {"path": where, "version": shown, "supported": STORE_FORMAT}
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


__all__ = [
    "GcReport",
    "Problem",
    "SnapshotStore",
    "VerifyReport",
    "check_session_name",
    "session_key",
]
