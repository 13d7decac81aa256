"""Segments as append-only files: the embedded default engine (POSIX only).

Layout under the root folder (docs/format.md, "Directory layout")::

    config/<name>                 small named values (format: "2")
    sessions/<key>/lock           an empty file carrying the session's flock
    sessions/<key>/<16 hex>.seg   one segment: a header, then framed entries (``_framing``)
    sessions/<key>/.tmp-<hex>     a segment rewrite in progress (removed by gc after a grace period)

Confinement: every file is opened relative to a descriptor of its folder, and
every folder is opened with ``O_NOFOLLOW | O_DIRECTORY`` and must be on the
root's device, so a symbolic link or a mount point planted inside the store
is refused instead of followed. Files are opened with ``O_NOFOLLOW |
O_NONBLOCK`` and must be regular files (a FIFO never blocks a read), and no
file is read past the size the format allows.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import re
import stat
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from ..errors import (
    BackendError,
    ConcurrentUpdateError,
    CorruptObjectError,
    LockTimeoutError,
    ReadOnlyStoreError,
    SnapshotError,
)
from ..recency import touch
from . import _framing
from ._checks import check_config_name, check_config_value, check_position, entry_list
from ._legacy import DirectoryLegacyReader
from .base import (
    MAX_SEGMENT,
    STAGED_GRACE_SECONDS,
    Backend,
    SegmentInfo,
    SegmentMissing,
    SegmentRead,
    UnfinishedReplace,
    check_segment,
    check_session_key,
    is_staged,
    staged_before,
    staged_key,
)
from .locking import acquire_thread_lock, check_timeout, lock_timeout_error

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

TMP_PREFIX = ".tmp-"
SEGMENT_SUFFIX = ".seg"
LOCK_FILE = "lock"
#: the store's folder of replaces of several sessions under way: one ``<group id>.json`` each, naming
#: the (staged, session) pairs; written once every staged history is marked, removed when all are in place
REPLACING = "replacing"
#: in a staged session folder of such a replace: its group's id (it moves into the session's place with
#: the history, so a staged folder still holding it is one not yet put in place)
GROUP_MARKER = "replacing"
_GROUP_RECORD = re.compile(r"^([0-9a-f]{32})\.json$")
#: times a lock is taken again after finishing replaces left part way before the writer gives up
_REPLACE_ATTEMPTS = 8
#: the largest segment file read (a keyframe and its chain); larger is damage, not an allocation
MAX_SEGMENT_FILE = 1 << 32
#: bytes read from a segment's start for its first entry (a checkpoint longer than that: the whole file)
FIRST_ENTRY_READ = 16384
MAX_CONFIG_FILE = 4096
MAX_REPLACE_RECORD = 16 * MAX_CONFIG_FILE
#: why a group left part way cannot be finished, when a staged history it still needs is gone
_LOST_STAGED = "its staged history {} is gone, and other sessions of the group were replaced already"
#: times a session's lock file is opened and locked again, found deleted or replaced once locked
_LOCK_FILE_ATTEMPTS = 8
#: seconds a session lock's waiting thread stays without a wait before it ends
WAITER_IDLE = 5.0
#: lock files a handle keeps open between commits, for the sessions it locked last: more are
#: closed (and opened again at their next commit), so that a process writing many sessions does
#: not run out of descriptors (the default limit is 1,024 on Linux and 256 on macOS); fewer under
#: a lower limit (``open_lock_files``)
OPEN_LOCK_FILES = 64


def open_lock_files() -> int:
    """Lock files a handle keeps open: ``OPEN_LOCK_FILES``, or an eighth of the process's limit on
    descriptors when that is lower (a handle kept 64 under a limit of 40, and every commit after
    the 34th session found no descriptor left to open a folder with)."""
    try:
        import resource  # (POSIX only, as the directory store is)

        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return OPEN_LOCK_FILES
    if limit == resource.RLIM_INFINITY or limit <= 0:
        return OPEN_LOCK_FILES
    return max(1, min(OPEN_LOCK_FILES, limit // 8))
#: listings of a session folder, each a folder a delete or a replace exchanged meanwhile, before the last one stands
LISTING_ATTEMPTS = 3
#: listings taken again, in all, because a segment listed was gone when looked at
VANISHED_LISTINGS = 8
#: how much older than a listing a session folder's times must be for the listing to be reused while
#: they stay the same (and a segment's change time before its header is remembered): more than a file
#: system clock's tick and the delay before the clock moves on to the next (Linux stamps files from a
#: clock that ticks every 1 to 10 ms: 40 ms to spare), and, where times are whole seconds, more than
#: two seconds (FAT's step)
LISTING_TRUSTED_AFTER_NS = 50_000_000
WHOLE_SECONDS_TRUSTED_AFTER_NS = 3_000_000_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def segment_file(segment: int) -> str:
    return f"{segment:016x}{SEGMENT_SUFFIX}"


_SEGMENT_NAME = re.compile(r"[0-9a-f]{16}" + re.escape(SEGMENT_SUFFIX))


def parse_segment_file(name: str) -> int | None:
    if _SEGMENT_NAME.fullmatch(name) is None:
        return None
    number = int(name[:16], 16)
    return number if number <= MAX_SEGMENT else None  # a number no caller could pass back: foreign


#: what a store's folder may hold before it is made, or while another process makes it
_STORE_FOLDERS = frozenset({"config", "sessions", "refs", "objects", "lost+found"})


class DirectoryBackend(Backend):
    kind = "directory"

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = False, create: bool = True) -> None:
        if fcntl is None:  # pragma: no cover - not POSIX
            raise BackendError("the directory store needs a POSIX system (fcntl)", {"path": str(root)})
        if not isinstance(root, (str, os.PathLike)):
            raise BackendError(f"a store path must be a path, not {type(root).__name__}", {"path": repr(root)})
        self.root = os.fspath(root)
        self.fsync = fsync
        if create and not os.path.lexists(self.root):
            try:
                os.makedirs(self.root, exist_ok=True)
            except OSError as exc:
                raise io_error("create a store at", self.root, exc) from exc
        self._open_lock_files = open_lock_files()  # (the limit as the store opens: read once)
        try:
            self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise BackendError(f"no store at {self.root}", {"path": self.root}) from None
        except NotADirectoryError:
            # a user switching from a saver that keeps a file (SqliteSaver's checkpoints.sqlite)
            raise BackendError(
                f"cannot open the store at {self.root}: {_not_a_folder(self.root)}; a directory store is a folder",
                {"path": self.root, "reason": "not a folder"},
            ) from None
        except OSError as exc:
            raise io_error("open the store at", self.root, exc) from exc
        self._device = os.fstat(self._root_fd).st_dev
        self.read_only = (
            not os.access(self._root_fd, os.W_OK, effective_ids=True)
            if _ACCESS_FD
            else not os.access(self.root, os.W_OK)
        )
        if create and not self.read_only and not self._exists("refs"):  # a format-1 store is left as it is
            fresh = not self._exists("config")
            if fresh:
                self._refuse_foreign_folder()
            for folder in ("config", "sessions"):
                self._mkdir(self._root_fd, folder)
            if fresh:
                self._mark_for_format_1()
        self._mutex = threading.Lock()
        self._locks: dict[str, _SessionLock] = {}
        self._locked_last: OrderedDict[str, _SessionLock] = OrderedDict()  # locked last, oldest first
        self._file_ids: dict[tuple[int, int, str], int] = {}
        self._listings: dict[str, _Listing] = {}
        # a replace of several sessions a crash left part way is finished before anything reads on
        self.finish_replaces()

    def _refuse_foreign_folder(self) -> None:
        """A store is made in a new or empty folder only: one holding other files is a mistyped path
        (a store's own ``sessions`` folder, a project folder), and a store made inside it would mix
        with them, or a store's files with the one around it."""
        try:
            found = sorted(os.listdir(self._root_fd))
        except OSError as exc:
            os.close(self._root_fd)
            raise io_error("list", self.root, exc) from exc
        # a store's own folders (another process making the same store at this moment) and a fresh
        # volume's lost+found are not another's files
        found = [name for name in found if name not in _STORE_FOLDERS]
        if found:
            os.close(self._root_fd)
            shown = ", ".join(repr(name) for name in found[:5]) + (", ..." if len(found) > 5 else "")
            raise BackendError(
                f"{self.root} holds other files and no snapstore store ({shown}): a store is made in a new "
                "or empty folder; give the store's own folder, or a new one",
                {"path": self.root, "reason": "not a store", "entries": found[:20]},
            )

    def _exists(self, name: str) -> bool:
        try:
            os.lstat(name, dir_fd=self._root_fd)
        except FileNotFoundError:
            return False
        return True

    def _mark_for_format_1(self) -> None:
        """What makes format-1 code refuse this store instead of writing a store of its own inside it:
        ``refs/config/format`` (a link to "2") and an empty ``objects/ff`` (format.md, version 1)."""
        try:
            self._mkdir(self._root_fd, "refs")
            refs = self._open_dir(self._root_fd, "refs", "refs")
            try:
                self._mkdir(refs, "config")
                config = self._open_dir(refs, "config", "refs/config")
                try:
                    with suppress(FileExistsError):
                        os.symlink("2", "format", dir_fd=config)
                finally:
                    os.close(config)
            finally:
                os.close(refs)
            self._mkdir(self._root_fd, "objects")
            objects = self._open_dir(self._root_fd, "objects", "objects")
            try:
                self._mkdir(objects, "ff")
            finally:
                os.close(objects)
        except OSError as exc:
            raise io_error("create a store at", self.root, exc) from exc

    def describe(self) -> str:
        return self.root

    def close(self) -> None:
        with self._mutex:
            for held in self._locks.values():
                held.close_when_released()
            self._locks.clear()
            self._locked_last.clear()
            if self._root_fd >= 0:
                os.close(self._root_fd)
                self._root_fd = -1

    # -- folders, confined ---------------------------------------------
    def _mkdir(self, parent_fd: int, name: str) -> None:
        self._writable(name)
        try:
            os.mkdir(name, 0o755, dir_fd=parent_fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise io_error("create folder", name, exc) from exc

    def _open_dir(self, parent_fd: int, name: str, where: str) -> int:
        """A descriptor of folder ``name`` under ``parent_fd``: a real folder on the store's device."""
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise BackendError(
                    f"refused {where}: it is a symbolic link or not a folder", {"path": where, "reason": "not a folder"}
                ) from None
            if exc.errno == errno.EBADF and self._root_fd < 0:  # used after close() (a saver's with block ended)
                raise self._closed("open", where) from None
            raise io_error("open folder", where, exc) from exc
        if os.fstat(fd).st_dev != self._device:
            os.close(fd)
            raise BackendError(
                f"refused {where}: it is on another device (a mount point)", {"path": where, "reason": "another device"}
            )
        return fd

    @contextmanager
    def _session_dir(self, key: str, *, create: bool = False) -> Iterator[int]:
        check_session_key(key)
        sessions = self._sessions_fd(create)
        try:
            fd = self._open_dir_made(sessions, key, f"sessions/{key}", create)
        finally:
            os.close(sessions)
        try:
            yield fd
        finally:
            os.close(fd)

    def _sessions_fd(self, create: bool = False) -> int:
        return self._open_dir_made(self._root_fd, "sessions", "sessions", create)

    def _open_dir_made(self, parent: int, name: str, what: str, create: bool) -> int:
        """``_open_dir``, making the folder first when it is missing and ``create`` (made when first
        missing, not tried on every write)."""
        try:
            return self._open_dir(parent, name, what)
        except FileNotFoundError:
            if not create:
                raise
            self._mkdir(parent, name)
            return self._open_dir(parent, name, what)

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise ReadOnlyStoreError(
                f"store {self.root} is read-only here: cannot write {what}", {"path": self.root, "what": what}
            )

    # -- configuration -------------------------------------------------
    def read_config(self, name: str) -> bytes | None:
        check_config_name(name)
        try:
            folder = self._open_dir(self._root_fd, "config", "config")
        except FileNotFoundError:
            return None
        try:
            return read_regular_file(folder, name, f"config/{name}", MAX_CONFIG_FILE)
        except FileNotFoundError:
            return None
        finally:
            os.close(folder)

    def write_config(self, name: str, value: bytes) -> None:
        value = check_config_value(check_config_name(name), value)
        self._writable(f"config/{name}")
        self._mkdir(self._root_fd, "config")
        folder = self._open_dir(self._root_fd, "config", "config")
        try:
            self._write_replace(folder, name, value, f"config/{name}")
        finally:
            os.close(folder)

    # -- sessions ------------------------------------------------------
    def session_keys(self) -> list[str]:
        return sorted(key for key, ok in self._session_folders() if ok and not is_staged(key))

    def disk_usage(self) -> dict[str, int]:
        """Files' sizes (apparent) and the blocks of every file and folder, the store's own folder
        included (allocated, what ``du`` counts), and how many of each."""
        apparent = files = folders = 0
        try:
            allocated = os.fstat(self._root_fd).st_blocks * 512
        except OSError:
            allocated = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            folders += 1
            for name in filenames:
                try:
                    info = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                files += 1
                apparent += info.st_size
                allocated += info.st_blocks * 512
            for name in dirnames:
                with suppress(OSError):
                    allocated += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
        return {"apparent_bytes": apparent, "allocated_bytes": allocated, "files": files, "folders": folders}

    def legacy_format(self) -> str | None:
        reader = self.legacy_reader()
        try:
            return None if reader is None else reader.read_ref("config/format")
        except BackendError:
            return None

    def legacy_reader(self) -> DirectoryLegacyReader | None:
        """A reader of the format-1 layout here; None when there is none, or only the refusal marker."""
        found = [name for name in ("refs", "objects") if self._exists(name)]
        if all(self._is_format_1_refusal(name) for name in found):
            return None
        return DirectoryLegacyReader(self._root_fd, self._open_dir, read_regular_file)

    def foreign_entries(self) -> list[str]:
        found: list[str] = []
        try:
            names = sorted(os.listdir(self._root_fd))
        except OSError:
            return found
        for name in names:
            ours = name in ("config", "sessions") or (name == REPLACING and self._replacing_is_a_folder())
            if not ours and not self._is_format_1_refusal(name):
                found.append(name)
        try:
            folders = list(self._session_folders())
        except BackendError:
            return [*found, "sessions"]  # a link or a file where the sessions folder should be
        for key, ok in folders:
            if not ok:
                found.append(f"sessions/{key}")
                continue
            try:
                with self._session_dir(key) as fd, os.scandir(fd) as listing:
                    for entry in sorted(listing, key=lambda e: e.name):
                        name = entry.name
                        ours = name in (LOCK_FILE, GROUP_MARKER) or parse_segment_file(name) is not None
                        # a link, FIFO or device under one of our names is not ours either
                        if not (ours and entry.is_file(follow_symlinks=False)) and not name.startswith(TMP_PREFIX):
                            found.append(f"sessions/{key}/{name}")
            except (OSError, BackendError):
                # a session's folder this process may not open: what it holds is unknown, not
                # foreign; reading the session reports why it cannot be read
                continue
        return found

    def _is_format_1_refusal(self, name: str) -> bool:
        """Whether ``name`` is only the marker that makes format-1 code refuse this store.

        ``refs`` holding nothing but ``config/format``, a link to "2", and ``objects`` holding
        nothing but an empty ``ff`` folder (docs/format.md, "What changed from version 1"), or
        nothing yet: ``_mark_for_format_1`` makes ``objects`` before ``ff``, and another process
        opening the store in between must not take the half-made marker for a format-1 store.
        """
        shape = {"refs": ("config", "format"), "objects": ("ff", None)}.get(name)
        if shape is None:
            return False
        try:
            outer = self._open_dir(self._root_fd, name, name)
        except (OSError, BackendError):
            return False
        try:
            listed = os.listdir(outer)
            if name == "objects" and not listed:
                return True
            if listed != [shape[0]]:
                return False
            inner = self._open_dir(outer, shape[0], f"{name}/{shape[0]}")
            try:
                with os.scandir(inner) as listing:
                    found = [(e.name, e.is_symlink()) for e in listing]
                if found and os.readlink(found[0][0], dir_fd=inner) != "2":
                    return False  # a format-1 store's own format ref
            finally:
                os.close(inner)
        except (OSError, BackendError):
            return False
        finally:
            os.close(outer)
        return found == ([] if shape[1] is None else [(shape[1], True)])

    def _session_folders(self) -> Iterator[tuple[str, bool]]:
        try:
            sessions = self._sessions_fd()
        except FileNotFoundError:
            return
        try:
            with os.scandir(sessions) as listing:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in listing]
        except OSError as exc:  # out of descriptors (listing takes one of its own), an I/O error
            raise io_error("list", "sessions", exc) from exc
        finally:
            os.close(sessions)
        # every folder here is a session's (a name may spell ".tmp-"): temporary files live in folders
        for name, is_dir in sorted(entries):
            try:
                check_session_key(name)
            except Exception:
                yield name, False
                continue
            yield name, is_dir

    def lock_session(self, key: str, timeout: float | None) -> AbstractContextManager[None]:
        check_session_key(key)
        check_timeout(timeout)
        self._writable(f"sessions/{key}")
        held = self._session_lock(key)
        with self._mutex:
            idle = touch(self._locked_last, key, held, self._open_lock_files)
        for lock in idle:
            lock.close_if_idle()
        return self._held_after_replaces(held, key, timeout)

    def _session_lock(self, key: str) -> _SessionLock:
        with self._mutex:
            held = self._locks.get(key)
            if held is None:
                held = self._locks[key] = _SessionLock(self, key)
            return held

    @contextmanager
    def _held_after_replaces(self, held: _SessionLock, key: str, timeout: float | None) -> Iterator[None]:
        """A session's lock, taken once no replace of a group holding it was left part way: the
        holder of a lock that such a replace (whose process held every lock of its group) names
        finishes it first, so nothing is committed to a session the replace will still put a new
        history in place of. Let go of and taken again around it: the group's locks are taken in
        one order, as every caller takes them."""
        for _attempt in range(_REPLACE_ATTEMPTS):
            with held.hold(timeout):
                pending = self._pending_replaces(key)
                if not pending:
                    yield
                    return
                if self._holds_a_lock(but=key):
                    # taking several locks (a replace, a delete of sessions) it cannot wait for the group's
                    # others out of key order: it takes them only if free now, or is refused, to retry
                    for group, pairs in pending:
                        self._finish_replace_holding_locks(group, pairs, timeout, waiting=False)
                    yield
                    return
            for group, pairs in pending:
                self._finish_replace_holding_locks(group, pairs, timeout)
            # looked at again once the lock is taken back: another writer may have taken it meanwhile
            # and left a group of its own part way
        raise ConcurrentUpdateError(
            f"session {key}: replaces of several sessions kept being left part way while its lock was waited for",
            {"session_key": key},
        )

    def _holds_a_lock(self, but: str | None = None) -> bool:
        """Whether this thread holds a session lock of this handle (one other than ``but``'s)."""
        me = threading.get_ident()
        with self._mutex:
            return any(lock.holder == me for name, lock in self._locks.items() if name != but)

    def segments(self, key: str) -> list[SegmentInfo]:
        check_session_key(key)
        known = self._listings.get(key)
        held = self._locks.get(key)
        # a writer holding the lock lists: it must not append behind a segment a file system's
        # cached attributes (a network one's) would hide from ``stat``. What it knew of the segments
        # the listing names again, unchanged, it keeps (``_same_files``): a commit then costs one
        # ``stat`` of the last segment, not one of every segment of a long session
        holding = held is not None and held.holder == threading.get_ident()
        if known is not None and not holding:
            found = self._listed_again(key, known)
            if found is not None:
                return found
            self._listings.pop(key, None)
        return self._list(key, known if holding else None, holding)

    def _listed_again(self, key: str, known: _Listing) -> list[SegmentInfo] | None:
        """The last listing with each segment's size read again, when the folder is unchanged since it
        (None: list again). Every segment's creation, removal or replacement changes the folder's
        times and appending does not, so with the folder unchanged a file of the same inode is the
        same file and only its size can be new (or the header an append writes in place into a
        segment a crash left empty: the reader's end there is 0, so it reads the file whole, and
        the next listing has the new version). Readers refresh before every read and a writer
        among others before every commit: this costs a few ``stat`` calls where listing reads the
        folder and the header of each file another writer appended to. Each segment is looked at,
        not the last alone: where the folder's times lag, a segment dropped or replaced is still
        seen. Not used by the thread holding the session's lock (``segments``)."""
        folder = f"sessions/{key}"
        root = self._root_fd
        found = []
        try:
            if _folder_token(os.stat(folder, dir_fd=root, follow_symlinks=False)) != known.token:
                return None
            for info, name, inode in known.segments:
                now = os.stat(f"{folder}/{name}", dir_fd=root, follow_symlinks=False)
                if now.st_ino != inode or not stat.S_ISREG(now.st_mode):
                    return None
                found.append(SegmentInfo(info.segment, now.st_size, info.version))
        except OSError:  # gone, or not readable: listing says which
            return None
        # a segment after the last would have changed the folder's times; looked for by name as
        # well, for a file system whose folder times lag: a writer must never append behind it
        after = known.segments[-1][0].segment + 1 if known.segments else 1
        try:
            os.stat(f"{folder}/{segment_file(min(after, MAX_SEGMENT))}", dir_fd=root, follow_symlinks=False)
        except FileNotFoundError:
            return found
        except OSError:
            pass
        return None

    def _list(self, key: str, known: _Listing | None = None, holding: bool = False) -> list[SegmentInfo]:
        """The session's segments, read from its folder. ``known``: the lock holder's last listing,
        reused when the folder is unchanged and lists the same files (below).

        A folder opened just before a delete or a replace exchanged it for another is emptied while
        it is listed: a listing counts only when the folder listed is still the session's after it.
        Not asked of the lock ``holding`` thread (a commit's listing): both run under that lock."""
        relisted = 0
        for _attempt in range(LISTING_ATTEMPTS):
            found, listed, vanished = self._list_once(key, known)
            while vanished and relisted < VANISHED_LISTINGS:
                # a segment listed was gone when looked at (a reclaim dropped it): the folder is not
                # read at one instant, and the segment made before the drop may have been passed by
                # already, the listing then naming neither (a reader called the session missing)
                relisted += 1
                found, listed, vanished = self._list_once(key, known)
            if listed is None or holding or self._still_the_sessions(key, listed):
                return found
        return found

    def _still_the_sessions(self, key: str, listed: os.stat_result) -> bool:
        where = f"sessions/{key}"
        try:
            now = os.stat(where, dir_fd=self._root_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as exc:
            # a store closed while a reader listed (a saver's with block ended under a run): the closed
            # descriptor, -1, raised a bare OSError [Errno 9] out of the reader's call
            if exc.errno == errno.EBADF and self._root_fd < 0:
                raise self._closed("list", where) from None
            raise io_error("list", where, exc) from exc
        return (now.st_dev, now.st_ino) == (listed.st_dev, listed.st_ino)

    def _closed(self, doing: str, where: str) -> BackendError:
        where_and_why = {"path": where, "reason": "closed"}
        return BackendError(f"cannot {doing} {where}: the store at {self.root} is closed", where_and_why)

    def _list_once(
        self, key: str, known: _Listing | None
    ) -> tuple[list[SegmentInfo], os.stat_result | None, bool]:
        """The segments of the folder at the session's name, that folder's attributes (None: no folder),
        and whether a segment it listed was gone when looked at."""
        try:
            with self._session_dir(key) as fd:
                found = []
                began = time.time_ns()
                folder = os.fstat(fd)
                names: dict[int, tuple[str, int]] = {}
                with os.scandir(fd) as listing:
                    entries = list(listing)
                if known is not None:
                    reused = _same_files(folder, entries, known)
                    if reused is not None:
                        return reused, folder, False
                vanished = False
                for entry in entries:
                    number = parse_segment_file(entry.name)
                    if number is None:
                        continue
                    try:
                        # the file's own lstat, not entry.is_file(): where the file system gives no type
                        # in the listing (ext2 without filetype, some network and FUSE ones), is_file
                        # says False for a segment reclaimed since the listing, which then read as a
                        # folder or link in its place and refused the session, where it is gone
                        info = entry.stat(follow_symlinks=False)
                        if not stat.S_ISREG(info.st_mode):
                            raise _not_a_segment_file(f"sessions/{key}/{entry.name}")
                        version = (info.st_ino << 24) | self._cached_file_id(fd, entry.name, info, began)
                    except FileNotFoundError:
                        vanished = True  # reclaimed while listed: not a segment any more (not "no session")
                        continue
                    found.append(SegmentInfo(number, info.st_size, version))
                    names[number] = (entry.name, info.st_ino)
                found.sort(key=lambda s: s.segment)
                # the folder's times stand for this listing only once they are older than any change
                # made while it ran could be stamped: file system clocks tick coarsely (a few ms), and
                # on a file system that keeps whole seconds (FAT keeps two), by seconds. The lock
                # holder too: within that tick a session deleted and written again can bring back
                # the same names with the same (freed, handed out again) inode numbers
                stamped = max(folder.st_mtime_ns, folder.st_ctime_ns)
                margin = LISTING_TRUSTED_AFTER_NS if stamped % 1_000_000_000 else WHOLE_SECONDS_TRUSTED_AFTER_NS
                if stamped < began - margin:
                    if len(self._listings) >= 4096:  # sessions deleted long ago are not kept for ever
                        self._listings.clear()
                    self._listings[key] = _Listing(
                        _folder_token(folder), [(info, *names[info.segment]) for info in found]
                    )
                else:
                    self._listings.pop(key, None)
                return found, folder, vanished
        except FileNotFoundError:  # no folder: the session does not exist
            return [], None, False

    def _cached_file_id(self, folder: int, name: str, info: os.stat_result, looked_at: int) -> int:
        """A segment's file id, read once per file as it stands: any write or replacement changes
        the inode's change time, so an unchanged (inode, ctime) is the same file, header and all.
        Except within one tick of the clock that stamps change times (whole seconds on some file
        systems, 4-10 ms on Linux before 6.13): there a session deleted and written again gets files
        of the same names, the same change time and, where freed inode numbers are handed out again
        (ext4), the same inodes. So a header is remembered only when its file's change time had
        settled when the file was looked at (``looked_at``): remembered earlier, it would be trusted
        later, once that time had aged, for a file made in the same tick."""
        token = (info.st_ino, info.st_ctime_ns, name)
        found = self._file_ids.get(token)
        if found is None:
            found, same = _file_id(folder, name, info)
            if same and _change_time_settled(info.st_ctime_ns, looked_at):
                self._remember_file_id(token, found)
        return found

    def _remember_file_id(self, token: tuple[int, int, str], found: int) -> int:
        if len(self._file_ids) > 4096:
            self._file_ids.clear()
        self._file_ids[token] = found
        return found

    def _segment_bytes(self, key: str, segment: int, start: int = 0, length: int | None = None) -> tuple[bytes, str]:
        """A segment file's bytes from ``start`` (at most ``length``), and where it is."""
        name = segment_file(check_segment(segment))
        where = f"sessions/{key}/{name}"
        try:
            with self._session_dir(key) as folder:
                return read_regular_file(folder, name, where, MAX_SEGMENT_FILE, start=start, length=length), where
        except FileNotFoundError:
            raise SegmentMissing(f"segment {where} not found", {"segment": segment, "path": where}) from None

    def read_segment(self, key: str, segment: int, start: int = 0) -> SegmentRead:
        check_position(start, "start")
        data, where = self._segment_bytes(key, segment, start)
        if start == 0:
            if not any(data) or (len(data) < _framing.HEADER_SIZE and _framing.unwritten_header(data)):
                # created, header not yet written (or allocated, never written, or its write cut short): empty
                return SegmentRead([], 0, torn=bool(data))
            if not _framing.header_ok(data):
                raise CorruptObjectError(f"{where} {_framing.header_problem(data)}", {"path": where})
            scanned = _framing.scan(memoryview(data)[_framing.HEADER_SIZE :], _framing.HEADER_SIZE)
        else:
            scanned = _framing.scan(data, start)
        return SegmentRead(scanned.entries, scanned.end, scanned.damaged_at, scanned.torn)

    def read_first_entry(self, key: str, segment: int) -> bytes | None:
        # the checkpoint opens the segment and is small: the file's first bytes hold it, not the
        # whole file (opening a session checks the name the checkpoint records)
        data, _where = self._segment_bytes(key, segment, length=FIRST_ENTRY_READ)
        if len(data) < _framing.HEADER_SIZE or not _framing.header_ok(data):
            return super().read_first_entry(key, segment)  # empty, not written yet, or not a segment: as a read says
        first = _framing.first_frame(memoryview(data)[_framing.HEADER_SIZE :])
        entries = _framing.scan(first, _framing.HEADER_SIZE).entries
        return entries[0] if entries else super().read_first_entry(key, segment)

    def append(self, key: str, segment: int, entries: Iterable[bytes], expected_end: int) -> int:
        check_session_key(key)
        name = segment_file(check_segment(segment))
        check_position(expected_end, "expected_end")
        where = f"sessions/{key}/{name}"
        self._writable(where)
        payload = _framing.frames(entry_list(entries))
        # only a caller that saw no segment may create one: a stale end must not leave an empty file
        create = os.O_CREAT if expected_end == 0 else 0
        with self._session_dir(key, create=True) as folder:
            try:
                fd = os.open(name, os.O_RDWR | create | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644, dir_fd=folder)
            except FileNotFoundError:
                raise _moved(key, segment) from None
            except OSError as exc:
                raise io_error("open segment", where, exc) from exc
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    raise BackendError(f"refused {where}: not a regular file", {"path": where})
                size = info.st_size
                if expected_end == 0:
                    if size > _framing.HEADER_SIZE and any(os.pread(fd, min(size, 1 << 20), 0)):
                        raise _moved(key, segment)
                    payload = _framing.new_header() + payload
                    if size:
                        os.ftruncate(fd, 0)
                elif size != expected_end:
                    if size < expected_end:
                        raise _moved(key, segment)
                    tail = os.pread(fd, size - expected_end, expected_end)
                    scanned = _framing.scan(tail, expected_end)
                    if scanned.entries or not scanned.torn:
                        raise _moved(key, segment)
                    os.ftruncate(fd, expected_end)  # a torn tail of an interrupted append
                start = expected_end if expected_end else 0
                write_all(fd, payload, start)
                if self.fsync:
                    os.fsync(fd)
            except OSError as exc:
                raise io_error("append to segment", where, exc) from exc
            finally:
                os.close(fd)
            if self.fsync and expected_end == 0:
                os.fsync(folder)
        return start + len(payload)

    def replace_segment(self, key: str, segment: int, entries: Iterable[bytes]) -> None:
        check_session_key(key)
        name = segment_file(check_segment(segment))
        self._writable(f"sessions/{key}/{name}")
        data = _framing.new_header() + _framing.frames(entry_list(entries))
        self._listings.pop(key, None)  # this handle's next look lists: it changed the folder
        with self._session_dir(key, create=True) as folder:
            self._write_replace(folder, name, data, f"sessions/{key}/{name}")

    def drop_segments(self, key: str, segments: Iterable[int]) -> None:
        numbers = [check_segment(s) for s in segments]
        self._writable(f"sessions/{key}")
        self._listings.pop(key, None)
        try:
            with self._session_dir(key) as folder:
                for segment in numbers:
                    try:
                        if stat.S_ISREG(os.stat(segment_file(segment), dir_fd=folder, follow_symlinks=False).st_mode):
                            os.unlink(segment_file(segment), dir_fd=folder)  # anything else is foreign: left
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        raise io_error("delete segment", f"sessions/{key}/{segment_file(segment)}", exc) from exc
                if self.fsync:
                    os.fsync(folder)
        except FileNotFoundError:
            return

    def delete_session(self, key: str) -> bool:
        check_session_key(key)
        self._writable(f"sessions/{key}")
        self._listings.pop(key, None)
        # no writer waits on a staged history's lock: its folder goes whole, lock file and all
        staged = is_staged(key)
        if staged:
            if self._has_mark(key) and self._replacing_records():
                return False  # a recorded replace may still put it in place (swap_in_sessions)
            self._forget_lock(key)
        try:
            moved = None if staged else self._move_history_out(key)
            if moved is not None:
                # the history goes from where the exchange put it; each folder keeps the lock file (a
                # writer that opened the old one just before the exchange takes the one lock through
                # it), and goes when it holds nothing else: the old one at the next cleanup
                self._empty_folder(moved)
                for folder in (moved, key):
                    with suppress(OSError):
                        self._rmdir(folder)
                return True
            had = self._empty_folder(key, lock_too=staged)
            try:
                self._rmdir(key)
            except OSError as exc:
                # a folder holding the lock file stays (a waiter may hold its flock), and anything not ours
                if staged or exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    raise
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise io_error("delete session", f"sessions/{key}", exc) from exc
        return had

    def _move_history_out(self, key: str) -> str | None:
        """Put a folder holding only the session's lock file in the session's place, in one step,
        and return the staged key its history now stands under (a discarded one: left behind by a
        crash, the next gc removes it). Readers then see the whole history or none of it, where
        unlinking the segments in place showed them a history missing some (and a head that went
        back). None when the session holds no segment, holds something snapstore did not write (which
        stays where it is), or the file system cannot exchange two folders: its segments are unlinked
        in place then."""
        if _renameat2() is None:
            return None
        with self._session_dir(key) as old:
            with os.scandir(old) as listing:
                found = [(entry.name, entry.is_file(follow_symlinks=False)) for entry in listing]
            if not any(regular and parse_segment_file(name) is not None for name, regular in found):
                return None
            if not all(regular and _is_ours(name, lock_too=True) for name, regular in found):
                return None  # something not snapstore's: it stays where it is, so the segments go in place
            moved = staged_key(len(key), discarded=True)
            sessions = self._sessions_fd()
            try:
                self._mkdir(sessions, moved)
            finally:
                os.close(sessions)
            with self._session_dir(moved) as new:
                _link_lock_file(old, new)
        try:
            self._exchange_folders(moved, key)
        except BackendError:
            self._empty_folder(moved, lock_too=True)
            self._rmdir(moved)
            return None
        return moved

    def swap_in_session(self, staged: str, key: str) -> None:
        self._swap_in_session(staged, key)

    def _swap_in_session(self, staged: str, key: str, resuming: bool = False) -> None:
        """``swap_in_session``; ``resuming`` a group's exchange that the group's marks say was not
        made, where a kill after the lock file's link left the staged folder holding the session's
        lock file, which otherwise reads as a history swapped out already."""
        check_session_key(staged)
        check_session_key(key)
        self._writable(f"sessions/{key}")
        self._listings.pop(key, None)
        self._listings.pop(staged, None)
        try:
            # gc removes a staged folder only holding its lock file's flock: held from the look at its
            # segments through the exchange, none can go in between
            with self._session_dir(key, create=True) as old, self._session_dir(staged) as new:
                # its lock file is the session's already: swapped out (or, ``resuming``, linked before a
                # kill); its flock is the one the caller holds, and waiting on it would wait for ever
                # (gc, which takes it without waiting, keeps off)
                if not _same_file(LOCK_FILE, old, new):
                    self._swap_in(staged, key, old, new)
                elif resuming and _holds_segment(new):
                    self._exchange_folders(staged, key)
                else:
                    raise FileNotFoundError(staged)
        except FileNotFoundError as exc:
            raise BackendError(f"no staged history at sessions/{staged}", {"path": f"sessions/{staged}"}) from exc
        except OSError as exc:
            raise io_error("swap in session", f"sessions/{key}", exc) from exc
        self._forget_lock(staged)
        # what the session held before goes; its folder keeps the lock file (a writer that opened the
        # folder just before the exchange opens the lock through it), left to cleanup_temporary
        with suppress(OSError, BackendError):
            self._empty_folder(staged)

    def swap_in_sessions(self, pairs: list[tuple[str, str]]) -> None:
        """One exchange per session, after every staged history was found there (a group with one
        missing, removed by gc, changes nothing), made one step by a record: each staged folder is
        marked with the group's id, then ``replacing/<group id>.json`` names the pairs, and from then
        on the group is put in place whatever happens: a crash between two exchanges leaves the
        record, and the next holder of any of the group's locks (or the next writable handle opened
        on the store, or gc) makes the exchanges left. The first exchange failing (a file system
        that cannot exchange two folders) withdraws the record: nothing changed. A reader, which
        takes no lock, may read the sessions either side meanwhile (docs/format.md §4.2)."""
        for staged, key in pairs:
            check_session_key(staged)
            check_session_key(key)
            if not self._in_folder(staged, _holds_segment):
                raise BackendError(f"no staged history at sessions/{staged}", {"path": f"sessions/{staged}"})
        if len(pairs) < 2:
            for staged, key in pairs:
                self.swap_in_session(staged, key)
            return
        group = uuid.uuid4().hex
        for _staged, key in pairs:  # a mark a crash left in a session would read as an exchange made
            self._unmark(key)
        for staged, _key in pairs:
            with self._session_dir(staged) as folder:
                self._write_replace(folder, GROUP_MARKER, group.encode(), f"sessions/{staged}/{GROUP_MARKER}")
        record = json.dumps({"pairs": [list(pair) for pair in pairs]}, separators=(",", ":")).encode()
        replacing = self._open_dir_made(self._root_fd, REPLACING, REPLACING, True)
        try:
            if self.fsync:
                os.fsync(self._root_fd)  # the folder, when it was just made
            self._write_replace(replacing, f"{group}.json", record, f"{REPLACING}/{group}.json")
        finally:
            os.close(replacing)
        first_staged, first_key = pairs[0]
        try:
            self._swap_in_session(first_staged, first_key)
        except BaseException:
            if self._needs_exchange(first_staged, first_key):  # none made: the group is withdrawn whole
                self._drop_record(group)
                for staged, _key in pairs:
                    self._unmark(staged)
            raise
        self._finish_replace(group, pairs)

    def _finish_replace(self, group: str, pairs: list[tuple[str, str]]) -> None:
        """Make each exchange of the group not made yet, unmark the sessions, drop the record. Under
        every lock of the group; each step may be found done by a later one. A staged history gone
        before its exchange (gc of a release that knew no records emptied it) cannot be put in
        place: with no exchange made, the group is withdrawn and every session stays as it was."""
        made, needed, lost = self._exchanges(pairs)
        if not any(made) and not all(needed):
            for staged, _key in pairs:
                self._unmark(staged)
            self._drop_record(group)
            return
        if lost:
            # exchanges made, and a staged history still to put in place is gone (gc of a release that
            # knew no records): nothing makes the group whole; the writer is refused, naming what is missing
            raise BackendError(
                _LOST_STAGED.format(f"sessions/{lost[0]}") + ": remove the record to write the sessions as they are",
                {"staged": lost, "reason": "staged history gone"},
            )
        for (staged, key), needs in zip(pairs, needed, strict=True):
            if needs:
                self._swap_in_session(staged, key, resuming=True)
        for _staged, key in pairs:
            self._unmark(key)
        self._drop_record(group)

    def _exchanges(self, pairs: list[tuple[str, str]]) -> tuple[list[bool], list[bool], list[str]]:
        """For each pair of a group, whether its exchange was made and whether it is still to be made;
        and the staged histories still to be put in place that are gone."""
        made = [self._has_mark(key) for _staged, key in pairs]
        needed = [
            not done and self._needs_exchange(staged, key) for (staged, key), done in zip(pairs, made, strict=True)
        ]
        # not made, not needed: made and unmarked since (its staged name holds the session as it was,
        # never marked), or its staged history gone, its mark left (gc of a release without records)
        states = zip(pairs, made, needed, strict=True)
        lost = [staged for (staged, _key), done, needs in states if not done and not needs and self._has_mark(staged)]
        return made, needed, lost

    def _needs_exchange(self, staged: str, key: str) -> bool:
        """Whether a group's exchange of ``staged`` into ``key`` is still to be made: the mark moves
        with the staged history, so it is one whose session holds no mark and whose staged folder
        holds one (whatever it reads: a mark a crash damaged is still a mark) and its segments."""
        return not self._has_mark(key) and self._in_folder(
            staged, lambda folder: _has_mark_file(folder) and _holds_segment(folder)
        )

    def _has_mark(self, key: str) -> bool:
        return self._in_folder(key, _has_mark_file)

    def _in_folder(self, key: str, check: Callable[[int], bool]) -> bool:
        """``check`` of a session (or staged) folder's descriptor; False when there is no folder."""
        try:
            with self._session_dir(key) as folder:
                return check(folder)
        except FileNotFoundError:
            return False

    def _unmark(self, key: str) -> None:
        try:
            with self._session_dir(key) as folder:
                try:
                    os.unlink(GROUP_MARKER, dir_fd=folder)
                except FileNotFoundError:
                    return
                if self.fsync:
                    os.fsync(folder)
        except FileNotFoundError:
            return

    def _drop_record(self, group: str) -> None:
        with self._replacing_folder() as replacing:
            if replacing is None:
                return
            with suppress(FileNotFoundError):
                os.unlink(f"{group}.json", dir_fd=replacing)
            if self.fsync:
                os.fsync(replacing)

    @contextmanager
    def _replacing_folder(self) -> Iterator[int | None]:
        """A descriptor of ``replacing/`` (None: there is none, or it is not a folder, which verify
        lists as an entry snapstore did not write)."""
        try:
            fd = self._open_dir(self._root_fd, REPLACING, REPLACING)
        except (FileNotFoundError, BackendError):
            yield None
            return
        try:
            yield fd
        finally:
            os.close(fd)

    def _pending_replaces(self, key: str | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
        """The replaces of several sessions left part way (of those holding ``key``, when given):
        (group id, pairs). A record that does not read as one is left alone."""
        found: list[tuple[str, list[tuple[str, str]]]] = []
        with self._replacing_folder() as replacing:
            if replacing is None:
                return found
            for name in sorted(os.listdir(replacing)):
                matched = _GROUP_RECORD.match(name)
                if matched is None:
                    continue
                pairs = _replace_record(replacing, name)
                if pairs is not None and (key is None or any(k == key for _s, k in pairs)):
                    found.append((matched.group(1), pairs))
        return found

    def unfinished_replaces(self) -> list[UnfinishedReplace]:
        """The groups in ``replacing/`` whose locks are all free (a writer holds every lock of its
        group from its first mark to its last exchange: a group whose locks are held may be being
        put in place right now), but for one the next writer withdraws (no exchange made: nothing
        changed); and the records that cannot be used, and ``replacing/`` itself when it cannot be read."""
        if not self._replacing_is_a_folder():
            return []  # none (or not a folder: listed as an entry snapstore did not write)
        try:
            replacing = self._open_dir(self._root_fd, REPLACING, REPLACING)
        except FileNotFoundError:
            return []
        except (OSError, SnapshotError) as exc:
            return [UnfinishedReplace(REPLACING, (), f"it cannot be read ({exc})")]
        try:
            try:
                names = sorted(os.listdir(replacing))
            except OSError as exc:
                return [UnfinishedReplace(REPLACING, (), f"it cannot be read ({exc})")]
            found = (self._unfinished(replacing, name) for name in names if _GROUP_RECORD.match(name))
            return [unfinished for unfinished in found if unfinished is not None]
        finally:
            os.close(replacing)

    def _unfinished(self, replacing: int, name: str) -> UnfinishedReplace | None:
        where = f"{REPLACING}/{name}"
        try:
            data = read_regular_file(replacing, name, where, MAX_REPLACE_RECORD)
        except FileNotFoundError:
            return None  # finished since the listing
        except (OSError, SnapshotError) as exc:
            return UnfinishedReplace(where, (), f"it cannot be read ({exc})")
        pairs = _replace_pairs(data)
        if pairs is None:
            return UnfinishedReplace(where, (), "it does not read as a record of sessions replaced together")
        keys = tuple(sorted({key for _staged, key in pairs}))
        if any(self._lock_is_held(key) for key in keys):
            return None
        try:
            made, needed, lost = self._exchanges(pairs)
        except FileNotFoundError:
            return None  # a folder gone meanwhile: finished since the locks were looked at
        except (OSError, SnapshotError) as exc:
            return UnfinishedReplace(where, keys, f"its sessions cannot be looked at ({exc})")
        if not any(made) and not all(needed):
            return None  # withdrawn by the next writer: no session was replaced
        if not _exists_in(replacing, name):
            return None  # finished since the locks were looked at (what was seen may be its steps)
        if lost:
            return UnfinishedReplace(where, keys, _LOST_STAGED.format(f"sessions/{lost[0]}"))
        return UnfinishedReplace(where, keys, begun=any(made))

    def _lock_is_held(self, key: str) -> bool:
        """Whether a writer, of any process (this one too), holds the session's lock now. Asked with
        a shared flock of a descriptor of its own, let go at once (the store may be read-only here);
        a lock file that is missing, or not a regular file, is held by no writer."""
        try:
            with self._session_dir(key) as folder:
                fd = os.open(LOCK_FILE, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
        except (OSError, SnapshotError):
            return False
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
        return False

    def _replacing_records(self) -> list[str]:
        """The names of the record files in ``replacing/``, whether they read or not."""
        with self._replacing_folder() as replacing:
            return [name for name in os.listdir(replacing) if name.endswith(".json")] if replacing is not None else []

    def _replacing_is_a_folder(self) -> bool:
        try:
            return stat.S_ISDIR(os.stat(REPLACING, dir_fd=self._root_fd, follow_symlinks=False).st_mode)
        except OSError:
            return False

    def _read_replace_record(self, name: str) -> list[tuple[str, str]] | None:
        with self._replacing_folder() as replacing:
            return _replace_record(replacing, name) if replacing is not None else None

    def _finish_replace_holding_locks(
        self, group: str, pairs: list[tuple[str, str]], timeout: float | None, *, waiting: bool = True
    ) -> bool:
        """Finish a replace left part way under every lock of its group; False when the record is
        gone meanwhile (another holder finished it), or, ``waiting``, when this thread holds a lock
        (it could not wait for the group's in key order: the caller goes on without). ``waiting``
        False: the group's locks this thread does not hold are taken only when free now, else
        ``ConcurrentUpdateError``."""
        keys = sorted({key for _staged, key in pairs})
        me = threading.get_ident()
        if waiting and self._holds_a_lock():
            return False
        locks = [self._session_lock(key) for key in keys]
        with ExitStack() as held:
            for key, lock in zip(keys, locks, strict=True):
                if lock.holder == me:
                    continue
                try:
                    held.enter_context(lock.hold(timeout if waiting else 0.0))
                except LockTimeoutError as exc:
                    if waiting:
                        raise
                    raise ConcurrentUpdateError(
                        f"session {key} is locked by another writer, and a replace left part way "
                        f"({REPLACING}/{group}.json) that holds it is to be finished first: try again",
                        {"record": f"{REPLACING}/{group}.json", "sessions": keys, "session_key": key},
                    ) from exc
            if self._read_replace_record(f"{group}.json") is None:
                return False
            try:
                self._finish_replace(group, pairs)
            except (SnapshotError, OSError) as exc:
                raise BackendError(
                    f"a replace of sessions {', '.join(keys)} left part way ({REPLACING}/{group}.json) cannot be "
                    f"finished: {exc}; they take no commit until it is",
                    {"record": f"{REPLACING}/{group}.json", "sessions": keys, "cause": f"{type(exc).__name__}: {exc}"},
                ) from exc
        return True

    def finish_replaces(self) -> int:
        """Finish every replace of several sessions left part way whose locks are free now; how many."""
        if self.read_only:
            return 0
        done = 0
        for group, pairs in self._pending_replaces():
            # one that cannot be finished now (its locks busy, a lasting error) is left to the next
            # holder of its locks, which says why: it never stops the store from opening
            with suppress(SnapshotError, OSError):
                done += self._finish_replace_holding_locks(group, pairs, 0.0)
        return done

    def _swap_in(self, staged: str, key: str, old: int, new: int) -> None:
        with _flocked(new, blocking=True):
            if not _holds_segment(new):
                raise FileNotFoundError(staged)  # emptied: nothing to put in the session's place
            _link_lock_file(old, new)
            if self.fsync:
                os.fsync(new)
            self._exchange_folders(staged, key)

    def _exchange_folders(self, staged: str, key: str) -> None:
        sessions = self._sessions_fd()
        try:
            if not _exchange(sessions, staged, key):
                # two renames would leave the session missing between them, and a writer taking its
                # lock there would make a new folder that the second rename cannot replace
                raise BackendError(
                    f"cannot replace sessions/{key} in one step: this system or file system cannot "
                    "exchange two folders (renameat2 RENAME_EXCHANGE); nothing was changed",
                    {"path": f"sessions/{key}", "reason": "no atomic exchange"},
                )
            if self.fsync:
                os.fsync(sessions)
        finally:
            os.close(sessions)

    def _empty_folder(self, key: str, lock_too: bool = False) -> bool:
        """Delete a session folder's segments and leftovers (and its lock file with ``lock_too``);
        whether it held a segment."""
        with self._session_dir(key) as folder, os.scandir(folder) as listing:
            return _unlink_ours(folder, [e.name for e in listing if e.is_file(follow_symlinks=False)], lock_too)

    def _rmdir(self, key: str) -> None:
        sessions = self._sessions_fd()
        try:
            os.rmdir(key, dir_fd=sessions)
        finally:
            os.close(sessions)

    def _forget_lock(self, key: str) -> None:
        """Close this handle's lock object of a key no writer will lock again (a staged one)."""
        with self._mutex:
            lock = self._locks.pop(key, None)
        if lock is not None:
            lock.close()

    def _remove_staged(self, key: str, cutoff: float) -> int:
        """Remove a staged folder left behind (1) or not (0): one a replace swapped out (no segment,
        its lock file only) once untouched since ``cutoff``; one holding a history an interrupted
        replace left once also begun ``STAGED_GRACE_SECONDS`` ago. Never while its lock is held: a
        flock of its own lock file (no lock object kept, no waiting thread), the folder looked at
        again under it (a replace may have written its first segment meanwhile)."""
        begun_before = min(cutoff, time.time() - STAGED_GRACE_SECONDS)
        with self._session_dir(key) as folder:
            changed = os.fstat(folder).st_mtime  # looked at before the lock: taking it may make its file
            with os.scandir(folder) as listing:
                changed = max([changed, *(e.stat(follow_symlinks=False).st_mtime for e in listing)])
            if changed >= cutoff:
                return 0
            try:
                with _flocked(folder, blocking=False):
                    # looked at again under the lock: a replace may have begun writing
                    if _holds_segment(folder) and not staged_before(key, begun_before):
                        return 0
                    if _has_mark_file(folder) and self._replacing_records():
                        return 0  # a replace left part way may put it in place (its record may not read)
                    _unlink_ours(folder, os.listdir(folder), lock_too=True)
            except BlockingIOError:
                return 0
        self._rmdir(key)
        return 1

    # -- housekeeping --------------------------------------------------
    def cleanup_temporary(self, grace_seconds: float = 3600.0) -> int:
        if self.read_only:
            return 0
        removed = 0
        cutoff = time.time() - grace_seconds
        self.finish_replaces()  # what a group left part way still needs of its staged folders is put in place
        for key, ok in list(self._session_folders()):
            if not ok:
                continue
            if is_staged(key):
                with suppress(OSError, BackendError):
                    removed += self._remove_staged(key, cutoff)
                continue
            try:
                with self._session_dir(key) as folder:
                    removed += _remove_temporary(folder, cutoff)
            except (FileNotFoundError, BackendError):
                continue
        # a record's write killed part way leaves its temporary file in replacing/
        with self._replacing_folder() as replacing:
            if replacing is not None:
                removed += _remove_temporary(replacing, cutoff)
        # a settings write killed part way (the format, as a store is made) leaves its file in config/
        try:
            config = self._open_dir(self._root_fd, "config", "config")
        except (FileNotFoundError, BackendError):
            return removed
        try:
            removed += _remove_temporary(config, cutoff)
        finally:
            os.close(config)
        return removed

    def _write_replace(self, folder: int, name: str, data: bytes, where: str) -> None:
        tmp = f"{TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=folder)
            try:
                write_all(fd, data, 0)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
            if self.fsync:
                os.fsync(folder)
        except OSError as exc:
            with suppress(OSError):
                os.unlink(tmp, dir_fd=folder)
            raise io_error("write", where, exc) from exc


_ACCESS_FD = os.access in os.supports_fd and os.access in os.supports_effective_ids


def _not_a_segment_file(where: str) -> BackendError:
    """A folder, link, FIFO or device under a segment's name is refused, never passed over: passed
    over, the history it stands for left the session unseen (its head went back to the segment
    before, verify said ok and the next commit went on from there)."""
    return BackendError(
        f"refused {where}: not a regular file (a folder, link, FIFO or device where a segment belongs); "
        "put the segment file back, or move this out of the store",
        {"path": where, "reason": "not a regular file"},
    )


def _moved(key: str, segment: int) -> ConcurrentUpdateError:
    return ConcurrentUpdateError(
        f"segment {segment} of session {key} changed under its lock holder", {"session_key": key, "segment": segment}
    )


def read_regular_file(
    folder: int, name: str, where: str, limit: int, *, start: int = 0, length: int | None = None
) -> bytes:
    """A regular file's bytes from ``start`` (at most ``length`` of them when given), refusing
    links, FIFOs, devices and files over ``limit``."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=folder)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BackendError(
                f"refused {where}: it is a symbolic link", {"path": where, "reason": "symbolic link"}
            ) from None
        raise io_error("open", where, exc) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BackendError(f"refused {where}: not a regular file", {"path": where, "reason": "not a regular file"})
        if info.st_size > limit:
            raise CorruptObjectError(
                f"{where} is {info.st_size} bytes, more than the format allows ({limit})",
                {"path": where, "size": info.st_size},
            )
        if length is not None:
            return os.pread(fd, length, start)
        chunks = []
        offset = start
        # One byte more than fstat saw, so a file that grew since shows it: a read asked for much
        # more than it gets is shrunk by copying the whole buffer (0.3 ms for a 0.5 MB segment).
        want = max(info.st_size - offset, 0) + 1
        while True:
            chunk = os.pread(fd, want, offset)
            if not chunk:  # (not a short read: some file systems return less before the end)
                break
            chunks.append(chunk)
            offset += len(chunk)
            if offset - start > limit:
                raise CorruptObjectError(f"{where} grew past the size the format allows", {"path": where})
            want = 65536
        return b"".join(chunks)
    except OSError as exc:
        raise io_error("read", where, exc) from exc
    finally:
        os.close(fd)


def _open_lock(folder: int) -> int:
    """A descriptor of a session folder's lock file, made when missing (never through a link)."""
    return os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644, dir_fd=folder)


@contextmanager
def _flocked(folder: int, *, blocking: bool) -> Iterator[None]:
    """Hold the flock of a session folder's lock file (made when missing) through a descriptor of its
    own, released as the block ends; ``BlockingIOError`` when not ``blocking`` and it is held."""
    fd = _open_lock(folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def _same_file(name: str, first: int, second: int) -> bool:
    """Whether ``name`` in two folders is one file (False when either is missing)."""
    try:
        a = os.stat(name, dir_fd=first, follow_symlinks=False)
        b = os.stat(name, dir_fd=second, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _link_lock_file(old: int, new: int) -> None:
    """Give folder ``new`` the session's lock file of folder ``old`` itself, a second name of it, so
    that a writer waiting on the lock through either folder waits on the one lock (none there: no
    writer has ever waited on one)."""
    tmp = f"{TMP_PREFIX}{uuid.uuid4().hex}"
    with suppress(FileNotFoundError):
        os.link(LOCK_FILE, tmp, src_dir_fd=old, dst_dir_fd=new, follow_symlinks=False)
        os.replace(tmp, LOCK_FILE, src_dir_fd=new, dst_dir_fd=new)


def _replace_record(folder: int, name: str) -> list[tuple[str, str]] | None:
    """The (staged key, session key) pairs of the record ``name`` in ``replacing/`` (None: it cannot
    be read, or does not read as one, and is left alone)."""
    try:
        return _replace_pairs(read_regular_file(folder, name, f"{REPLACING}/{name}", MAX_REPLACE_RECORD))
    except (OSError, SnapshotError):
        return None


def _replace_pairs(data: bytes) -> list[tuple[str, str]] | None:
    """The (staged key, session key) pairs a record's bytes name (None: not a record to act on)."""
    try:
        body = json.loads(data)
        pairs = [(str(staged), str(key)) for staged, key in body["pairs"]]
        for staged, key in pairs:
            check_session_key(staged)
            check_session_key(key)
            if not is_staged(staged) or is_staged(key):  # a record never puts a session in another's place
                return None
        return pairs if pairs else None
    except (ValueError, KeyError, TypeError, SnapshotError):
        return None  # a key refused, a field missing, bytes not JSON: not a record to act on


def _exists_in(folder: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _has_mark_file(folder: int) -> bool:
    return _exists_in(folder, GROUP_MARKER)


def _holds_segment(folder: int) -> bool:
    return any(parse_segment_file(name) is not None for name in os.listdir(folder))


def _not_a_folder(path: str) -> str:
    """Why ``path`` cannot be opened as a folder: it is a file, or the first part of it that exists is."""
    if os.path.lexists(path):
        return "it is a file"
    part = os.path.abspath(path)
    while not os.path.lexists(part) and part != os.path.dirname(part):
        part = os.path.dirname(part)
    return f"{part} on its path is a file"


def _unlink_ours(folder: int, names: list[str], lock_too: bool) -> bool:
    """Delete, of ``names`` in ``folder``, the segments and leftovers (and the lock file with
    ``lock_too``); anything else stays. Whether a segment was among them."""
    had = False
    for name in names:
        if _is_ours(name, lock_too):
            os.unlink(name, dir_fd=folder)
            had = had or parse_segment_file(name) is not None
    return had


def _is_ours(name: str, lock_too: bool) -> bool:
    """Whether a session folder's entry of this name is snapstore's to remove: a segment, a leftover
    temporary file, and with ``lock_too`` the lock file."""
    return (
        parse_segment_file(name) is not None
        or name.startswith(TMP_PREFIX)
        or name == GROUP_MARKER
        or (lock_too and name == LOCK_FILE)
    )


_RENAME_EXCHANGE = 2


@functools.cache
def _renameat2() -> Any:
    """The C library's ``renameat2``, or None where it has none."""
    try:
        found = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):
        return None
    found.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    found.restype = ctypes.c_int
    return found


def _exchange(folder: int, first: str, second: str) -> bool:
    """Swap two names in ``folder`` in one step (Linux's ``renameat2`` with ``RENAME_EXCHANGE``);
    False where the system cannot (another kernel or C library, a file system without it)."""
    call = _renameat2()
    if call is None:
        return False
    if call(folder, os.fsencode(first), folder, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), second)


def _change_time_settled(ctime_ns: int, now_ns: int) -> bool:
    """Whether a file's change time can tell it from a file made after it under the same name and
    inode: once it is older than the listing margins, 50 ms, or 3 s where times are whole seconds.
    A time finer than a second is not enough: Linux before 6.13 stamps changes from a clock that
    ticks every 4-10 ms (and later kernels still stamp a new inode from it), so a file made again
    within one tick gets the same change time."""
    margin = LISTING_TRUSTED_AFTER_NS if ctime_ns % 1_000_000_000 else WHOLE_SECONDS_TRUSTED_AFTER_NS
    return ctime_ns < now_ns - margin


def _file_id(folder: int, name: str, seen: os.stat_result) -> tuple[int, bool]:
    """The ``file_id`` in a segment's header (0 when unreadable: the read that follows reports why),
    and whether the file read is still the one ``seen`` describes (same inode, same change time): a
    header read from a file replaced since it was listed is used once, never remembered for the old
    file's (inode, change time)."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=folder)
    except OSError:
        return 0, False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return 0, False
        same = (info.st_ino, info.st_ctime_ns) == (seen.st_ino, seen.st_ctime_ns)
        return _framing.file_id(os.pread(fd, _framing.HEADER_SIZE, 0)), same
    except OSError:
        return 0, False
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _remove_temporary(folder: int, cutoff: float) -> int:
    """Remove the temporary files of interrupted rewrites in ``folder`` older than ``cutoff``; how many."""
    removed = 0
    for name in os.listdir(folder):
        if not name.startswith(TMP_PREFIX):
            continue
        with suppress(FileNotFoundError):
            info = os.stat(name, dir_fd=folder, follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                os.unlink(name, dir_fd=folder)
                removed += 1
    return removed


def _folder_token(info: os.stat_result) -> tuple[int, int, int, int]:
    return info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns


def _same_files(folder: os.stat_result, entries: list[os.DirEntry[str]], known: _Listing) -> list[SegmentInfo] | None:
    """The lock holder's last listing with the last segment's size read again, when the folder's times
    are unchanged and it lists exactly the segment files listed then (the same names, the same inode
    numbers, which the listing itself gives); else None. Appends go to the last segment alone, so
    the others are the files listed, of the sizes listed. The names come from listing the folder,
    as a holder's must: a segment after the last is seen however its times behave."""
    if _folder_token(folder) != known.token or not known.segments:
        return None
    inodes = known.inodes
    last_info, last_name, last_inode = known.segments[-1]
    if last_info.stored_bytes < _framing.HEADER_SIZE:  # a header may be written in place: its version is new
        return None
    matched, last = 0, None
    for entry in entries:
        inode = inodes.get(entry.name)
        if inode is None:
            if parse_segment_file(entry.name) is not None:
                return None  # a segment made since
            continue
        if entry.inode() != inode:
            return None  # replaced
        matched += 1
        if entry.name == last_name:
            last = entry
    if matched != len(inodes) or last is None:
        return None  # one dropped
    try:
        now = last.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None
    if now.st_ino != last_inode or not stat.S_ISREG(now.st_mode):
        return None
    return [*known.sealed(), SegmentInfo(last_info.segment, now.st_size, last_info.version)]


@dataclass(frozen=True, slots=True)
class _Listing:
    """A session folder's segments as last listed, and the folder's identity and times then."""

    token: tuple[int, int, int, int]
    segments: list[tuple[SegmentInfo, str, int]]  # (info, file name, inode), oldest first
    inodes: dict[str, int] = field(init=False)  # file name -> inode

    def __post_init__(self) -> None:
        object.__setattr__(self, "inodes", {name: inode for _info, name, inode in self.segments})

    def sealed(self) -> list[SegmentInfo]:
        """The segments before the last, which no append changes."""
        return [info for info, _name, _inode in self.segments[:-1]]


#: every session lock of this process, for ``_forget_inherited_locks``
_LOCKS: weakref.WeakSet[_SessionLock] = weakref.WeakSet()


def _forget_inherited_locks() -> None:
    """In a forked child: close the lock files it inherited and forget the parent's threads.

    flock(2) belongs to the open file, which a child's copy of the descriptor keeps open: a parent
    killed while it held a lock left it held for as long as any child it had forked since it opened
    the lock file lived, and every writer of the session waited for ever (or timed out) while no one
    wrote. The parent's other threads do not exist in the child, and one that held or awaited the
    lock at the fork left its thread lock taken for good: the child's first lock of that session
    hung."""
    me = threading.get_ident()
    for lock in list(_LOCKS):
        if lock.holder != me:  # (a child forked from inside a hold resumes in it, as its parent does)
            lock.forget_inherited()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_locks)


class _SessionLock:
    """One session's write lock: a thread lock for this process, then flock(2) for other processes."""

    def __init__(self, backend: DirectoryBackend, key: str) -> None:
        self.backend = backend
        self.key = key
        self.threads = threading.Lock()
        self.fd: int | None = None
        self.pid = 0
        self.waiter: _FlockWaiter | None = None
        self.holder: int | None = None  # the thread holding the lock, while one does
        self.identity = (0, 0)  # (device, inode) of the lock file ``fd`` is open on
        self.close_on_release = False  # the store was closed while a thread held or awaited the lock
        _LOCKS.add(self)

    def _open_lock_file(self) -> tuple[int, tuple[int, int]]:
        """A descriptor of the lock file at the name, and the (device, inode) it is open on."""
        with self.backend._session_dir(self.key, create=True) as folder:
            try:
                fd = _open_lock(folder)
            except OSError as exc:
                raise io_error("open lock", f"sessions/{self.key}/{LOCK_FILE}", exc) from exc
            found = os.fstat(fd)
            if not stat.S_ISREG(found.st_mode):
                os.close(fd)
                raise BackendError(f"refused sessions/{self.key}/{LOCK_FILE}: not a regular file", {})
        return fd, (found.st_dev, found.st_ino)

    def _descriptor(self) -> int:
        if self.fd is None or self.pid != os.getpid():  # a forked child must not share our flock
            # ``identity`` is ``fd``'s alone: the waiting thread's descriptor, opened later, may be on a
            # lock file that replaced this one, and taken as ``fd``'s it let a flock of the old file pass
            (self.fd, self.identity), self.pid, self.waiter = self._open_lock_file(), os.getpid(), None
        return self.fd

    @contextmanager
    def hold(self, timeout: float | None) -> Iterator[None]:
        started = time.monotonic()
        waited = acquire_thread_lock(self.threads, self.key, timeout)
        try:
            for _attempt in range(_LOCK_FILE_ATTEMPTS):
                fd = self._descriptor()
                held = fd
                if timeout is None:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # no timeout: wait in the kernel's queue, on this thread
                else:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        held = self._wait(max(timeout - waited, 0.0), waited)
                try:
                    if self._is_the_lock_file(held):
                        break
                except BaseException:
                    self._let_go(held, fd)
                    raise
                # the lock file was deleted or replaced since this handle opened it: its flock locks
                # out no writer that opens the file now (two writers appended at one offset, and
                # acknowledged commits were lost), so the file at the name is opened and locked again
                self._let_go(held, fd)
                self.close()
                waited = time.monotonic() - started
            else:
                raise BackendError(
                    f"sessions/{self.key}/{LOCK_FILE} kept being deleted or replaced while it was locked: "
                    "something other than snapstore removes the store's lock files",
                    {"path": f"sessions/{self.key}/{LOCK_FILE}", "reason": "lock file replaced"},
                )
            self.holder = threading.get_ident()
            try:
                yield
            finally:
                self.holder = None
                self._let_go(held, fd)
        finally:
            self.threads.release()
            # the store closed meanwhile: its descriptors go with the lock. Looked at once the lock is
            # let go: a close between a look before and the release found the lock held and left the
            # descriptor open for good; now either this look or the closer's ``close_if_idle`` sees it
            if self.close_on_release:
                self.close_if_idle()

    def _let_go(self, held: int, fd: int) -> None:
        """Unlock ``held``; when it is the waiting thread's descriptor (not the handle's own ``fd``), give
        the lock back to that thread, which may then end when idle."""
        fcntl.flock(held, fcntl.LOCK_UN)
        if held != fd and self.waiter is not None:
            self.waiter.returned()

    def _is_the_lock_file(self, fd: int) -> bool:
        """Whether ``fd`` is the file at the session's lock file name now (one file under both names
        of a replace's exchange, ``_link_lock_file``)."""
        if fd == self.fd:
            mine = self.identity
        else:
            found = os.fstat(fd)
            mine = (found.st_dev, found.st_ino)
        # one stat through the root's descriptor, not the session folder opened and closed again (a
        # tenth of a small commit): a folder on the way swapped for a link leads to another file,
        # which reads as replaced, and the file is then opened again the careful way
        root = self.backend._root_fd
        if root < 0:  # the store was closed meanwhile: opening the file again says so
            return False
        try:
            now = os.stat(f"sessions/{self.key}/{LOCK_FILE}", dir_fd=root, follow_symlinks=False)
        except OSError:  # gone, or unreadable: opening the file again says which, as a BackendError
            return False
        return (now.st_dev, now.st_ino) == mine

    def _wait(self, timeout: float, waited: float) -> int:
        """The lock, from the waiting thread (started when there is none, or it ended idle)."""
        waiter = self.waiter
        if waiter is None or not waiter.request():
            waiter = self.waiter = _FlockWaiter(self._open_lock_file()[0], self.key)
            waiter.request()
        return waiter.wait(timeout, waited)

    def close(self) -> None:
        if self.fd is not None and self.pid == os.getpid():
            os.close(self.fd)
            if self.waiter is not None:
                self.waiter.close()
        self.fd = self.waiter = None

    def forget_inherited(self) -> None:
        """In a forked child (``_forget_inherited_locks``): the parent's descriptors closed, its threads
        forgotten. Closing a copy lets go of no flock the parent holds (the parent's descriptor still
        refers to the file), and the next hold opens the lock file again."""
        waiter = self.waiter
        for fd in (self.fd, waiter.fd if waiter is not None and not waiter.ended else None):
            if fd is not None:  # (an ended waiting thread closed its own, or is about to)
                with suppress(OSError):
                    os.close(fd)
        self.fd = self.waiter = self.holder = None
        self.threads = threading.Lock()

    def close_when_released(self) -> None:
        """Close the lock file now, or, while a thread of this process holds or waits for the lock,
        when it lets go. Closed under a holder (a saver's ``with`` block ending while a commit runs on
        a worker thread), the descriptor let go of the flock mid-commit, so another process could
        take it, and the holder's unlock then failed on a closed descriptor with a bare
        ``OSError: [Errno 9] Bad file descriptor`` (or unlocked whatever file reused its number)."""
        self.close_on_release = True  # first: a holder letting go after this look closes it itself
        self.close_if_idle()

    def close_if_idle(self) -> None:
        """Close the lock file (and a waiting thread's) unless a thread of this process holds or
        waits for the lock: the next hold opens it again."""
        if self.threads.acquire(blocking=False):
            try:
                self.close()
            finally:
                self.threads.release()


class _FlockWaiter:
    """Waits for a session's flock with a timeout: flock(2) has none, so a thread of its own waits
    in the kernel's queue (woken as soon as the lock is free, unlike polling) on its own
    descriptor of the lock file, and the caller waits for that thread as long as it is willing.

    The thread and its descriptor stay for the next wait (a writer among others waits before
    most of its commits) and end after ``WAITER_IDLE`` seconds without one. When the caller
    gives up first, the thread lets go of the lock as soon as it gets it. Used under the
    session's thread lock: one wait at a time.
    """

    def __init__(self, fd: int, key: str) -> None:
        self.fd = fd
        self.key = key
        self.mutex = threading.Lock()
        self.wanted = threading.Condition(self.mutex)
        self.waiting = False  # a caller asked for the lock and has not given up
        # a caller holds the lock through ``fd``: the thread does not end (closing ``fd``) until it
        # lets go. It ended after ``WAITER_IDLE`` seconds whatever the caller did, and a commit longer
        # than that had its flock let go of under it (another process took the lock and appended at
        # the same offset) and then failed on a closed descriptor with a bare ``OSError: [Errno 9]``
        self.lent = False
        self.got = threading.Event()
        self.ended = False
        self.error: OSError | None = None  # why the thread could not wait (it has ended)
        threading.Thread(target=self._run, name=f"snapstore-lock-{key}", daemon=True).start()

    def request(self) -> bool:
        """Ask the thread for the lock; False when it has ended (the caller starts another)."""
        with self.mutex:
            if self.ended:
                return False
            self.got.clear()
            self.waiting = True
            self.wanted.notify()
            return True

    def wait(self, timeout: float, waited: float) -> int:
        """The descriptor holding the lock once the thread has it, within ``timeout`` seconds."""
        started = time.monotonic()
        if self.got.wait(timeout):
            return self._obtained()
        with self.mutex:
            if self.got.is_set():  # obtained just as the wait ran out: keep it
                return self._obtained()
            self.waiting = False  # the thread lets go of the lock when it gets it
        raise lock_timeout_error(self.key, waited + time.monotonic() - started)

    def _obtained(self) -> int:
        if self.error is not None:
            raise io_error("lock", f"sessions/{self.key}/{LOCK_FILE}", self.error)
        return self.fd

    def _run(self) -> None:
        while True:
            with self.mutex:
                while not self.waiting and not self.ended:
                    if not self.wanted.wait(WAITER_IDLE) and not self.waiting and not self.lent:
                        self.ended = True
                if self.ended:
                    os.close(self.fd)
                    return
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            except OSError as exc:  # the caller hears why instead of waiting out its timeout
                with self.mutex:
                    self.error, self.ended, self.waiting = exc, True, False
                    self.got.set()
                with suppress(OSError):
                    os.close(self.fd)
                return
            with self.mutex:
                if self.waiting:
                    self.waiting, self.lent = False, True
                    self.got.set()
                else:  # the caller gave up
                    fcntl.flock(self.fd, fcntl.LOCK_UN)

    def returned(self) -> None:
        """The caller let go of the lock it held through ``fd``: the thread may end when idle."""
        with self.mutex:
            self.lent = False

    def close(self) -> None:
        with self.mutex:
            self.ended = True
            self.wanted.notify()


def io_error(action: str, what: str, exc: OSError) -> BackendError:
    reason = errno.errorcode.get(exc.errno or 0, "") or str(exc)
    cls = ReadOnlyStoreError if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else BackendError
    return cls(
        f"cannot {action} {what}: {exc.strerror or exc}",
        {"path": what, "cause": f"{type(exc).__name__}: {exc}", "errno": reason},
    )
