"""Objects and refs as files: the embedded default engine.

Layout under the root folder::

    objects/ab/cdef0123...   one file per object, named by its 32-digit key (2-digit fan-out)
    refs/<name>              one symbolic link per ref, whose target is the ref's value
    locks/<name>.lock        empty files that carry advisory locks (flock)

Every write goes to a temporary file ``.tmp-*`` in the target's folder and is
then linked (objects: never overwriting) or renamed (refs) into place, so a
reader sees a whole file or none. With ``fsync=True`` the file and its folder
are flushed before the write is reported done.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ..errors import BackendError
from .base import Backend, ObjectMissing, check_key, check_ref_name
from .locking import ReadWriteLock

TMP_PREFIX = ".tmp-"


class DirectoryBackend(Backend):
    kind = "directory"

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = False, create: bool = True) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise BackendError(f"a store path must be a path, not {type(root).__name__}", {"path": repr(root)})
        self.root = Path(root)
        self.fsync = fsync
        self._objects = self.root / "objects"
        self._refs = self.root / "refs"
        self._locks_dir = self.root / "locks"
        if create:
            try:
                for folder in (self._objects, self._refs, self._locks_dir):
                    folder.mkdir(parents=True, exist_ok=True)
                if not (self._objects / "ff").is_dir():  # all 256 fan-out folders up front: one mkdir less a write
                    for fan in range(256):
                        (self._objects / f"{fan:02x}").mkdir(exist_ok=True)
            except OSError as exc:
                raise _io_error("create a store at", str(self.root), exc) from exc
        elif not self._objects.is_dir():
            raise BackendError(f"no store at {self.root}", {"path": str(self.root)})
        self._mutex = threading.Lock()
        self._file_locks: dict[str, _FileLock] = {}

    def describe(self) -> str:
        return str(self.root)

    # -- objects -------------------------------------------------------
    def _object_path(self, key: str) -> Path:
        check_key(key)
        return self._objects / key[:2] / key[2:]

    def get(self, key: str) -> bytes:
        path = self._object_path(key)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ObjectMissing(f"object {key} not found", {"object": key}) from None
        except OSError as exc:
            raise _io_error("read object", key, exc) from exc

    def size(self, key: str) -> int:
        try:
            return self._object_path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectMissing(f"object {key} not found", {"object": key}) from None

    def has(self, key: str) -> bool:
        return self._object_path(key).exists()

    def put(self, key: str, data: bytes) -> bool:
        path = self._object_path(key)
        if path.exists():
            return False
        folder = path.parent
        try:
            try:
                tmp = self._write_temporary(folder, data)
            except FileNotFoundError:  # a fan-out folder removed by hand
                folder.mkdir(exist_ok=True)
                tmp = self._write_temporary(folder, data)
            try:
                os.link(tmp, path)  # fails if the object appeared meanwhile: never overwrite
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            if self.fsync:
                _fsync_dir(folder)
        except OSError as exc:
            raise _io_error("write object", key, exc) from exc
        return True

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._object_path(key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _io_error("delete object", key, exc) from exc

    def iter_keys(self) -> Iterator[str]:
        try:
            fans = sorted(os.scandir(self._objects), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for fan in fans:
            if len(fan.name) != 2 or not fan.is_dir():
                continue
            for entry in os.scandir(fan.path):
                if not entry.name.startswith(TMP_PREFIX):
                    yield fan.name + entry.name

    # -- refs ----------------------------------------------------------
    def _ref_path(self, name: str) -> Path:
        return self._refs.joinpath(*check_ref_name(name).split("/"))

    def read_ref(self, name: str) -> str | None:
        path = self._ref_path(name)
        try:
            return os.readlink(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: a regular file, the other form a ref may take
                raise _io_error("read ref", name, exc) from exc
        try:
            # undecodable bytes are damage, which the caller reports when the value is not an id
            return path.read_bytes().decode("utf-8", errors="replace").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BackendError(f"cannot read ref {name}: {exc}", {"ref": name, "cause": repr(exc)}) from exc

    def cas_ref(self, name: str, expected: str | None, new: str | None) -> bool:
        path = self._ref_path(name)
        with self.lock("ref." + name.replace("/", "."), shared=False):
            if self.read_ref(name) != expected:
                return False
            try:
                if new is None:
                    path.unlink(missing_ok=True)
                else:
                    # A symbolic link whose target is the value: swapping one in by rename is atomic
                    # like a file, but ext4 does not flush data for it (replacing a regular file by
                    # rename costs about ten times more there).
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = os.path.join(path.parent, f"{TMP_PREFIX}{uuid.uuid4().hex}")
                    os.symlink(new, tmp)
                    os.replace(tmp, path)
                if self.fsync:
                    _fsync_dir(path.parent)
            except OSError as exc:
                raise _io_error("write ref", name, exc) from exc
            return True

    def iter_refs(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        found = []
        for dirpath, dirs, files in os.walk(self._refs):
            # a ref is a symbolic link; one garbled into a path to a folder is listed among dirs
            # (not followed), and must still be seen, or gc would not mark that session
            for fname in [*files, *(d for d in dirs if os.path.islink(os.path.join(dirpath, d)))]:
                if fname.startswith(TMP_PREFIX):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, fname), self._refs).replace(os.sep, "/")
                if rel.startswith(prefix):
                    value = self.read_ref(rel)
                    if value is not None:
                        found.append((rel, value))
        return iter(sorted(found))

    # -- locks ---------------------------------------------------------
    def lock(self, name: str, *, shared: bool = False) -> AbstractContextManager[None]:
        check_ref_name(name)
        with self._mutex:
            held = self._file_locks.get(name)
            if held is None:
                held = self._file_locks[name] = _FileLock(self._locks_dir / (name.replace("/", ".") + ".lock"))
        return held.hold(shared)

    def close(self) -> None:
        with self._mutex:
            for held in self._file_locks.values():
                held.close()
            self._file_locks.clear()

    # -- housekeeping --------------------------------------------------
    def cleanup_temporary(self) -> int:
        """Delete ``.tmp-*`` leftovers. Call only while holding the store's exclusive lock."""
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for fname in files:
                if fname.startswith(TMP_PREFIX):
                    try:
                        os.unlink(os.path.join(dirpath, fname))
                        removed += 1
                    except FileNotFoundError:
                        pass
        return removed

    def _write_temporary(self, folder: Path, data: bytes) -> str:
        tmp = os.path.join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        return tmp


class _FileLock:
    """One named lock: a readers-writer lock for this process's threads, then flock(2) for other processes.

    The lock file stays open, and the flock is taken by the first shared holder in this process
    and dropped by the last (or taken and dropped by the one exclusive holder), so a commit pays
    no open and close for it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.threads = ReadWriteLock()
        self.mutex = threading.Lock()
        self.shared_holders = 0
        self.fd: int | None = None
        self.pid = 0

    def _descriptor(self) -> int:
        if self.fd is None or self.pid != os.getpid():  # a forked child must not share our flock
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            self.pid = os.getpid()
        return self.fd

    @contextmanager
    def hold(self, shared: bool) -> Iterator[None]:
        self.threads.acquire(shared)
        try:
            if shared:
                with self.mutex:
                    if self.shared_holders == 0:
                        fcntl.flock(self._descriptor(), fcntl.LOCK_SH)
                    self.shared_holders += 1
                try:
                    yield
                finally:
                    with self.mutex:
                        self.shared_holders -= 1
                        if self.shared_holders == 0:
                            fcntl.flock(self._descriptor(), fcntl.LOCK_UN)
            else:
                fd = self._descriptor()
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self.threads.release(shared)

    def close(self) -> None:
        if self.fd is not None and self.pid == os.getpid():
            os.close(self.fd)
        self.fd = None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _io_error(action: str, what: str, exc: OSError) -> BackendError:
    reason = errno.errorcode.get(exc.errno or 0, "") or str(exc)
    return BackendError(
        f"cannot {action} {what}: {exc.strerror or exc}",
        {"object": what, "cause": f"{type(exc).__name__}: {exc}", "errno": reason},
    )
