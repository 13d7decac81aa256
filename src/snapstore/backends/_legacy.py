"""Read-only access to a format-1 directory store (docs/format.md, "Directory backend" of version 1).

Layout read::

    refs/config/format            symbolic link -> "1" (or a small regular file holding it)
    refs/sessions/<quoted name>   symbolic link -> the session document's object id
    objects/ab/<30 hex digits>    the object with id "ab<30 hex digits>"

Confined like the v2 engine: folders are opened relative to descriptors with
``O_NOFOLLOW | O_DIRECTORY`` on the store's device, a ref's link is read, never
followed, and only regular files of bounded size are read.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable

from ..errors import BackendError, SnapshotError

#: a v1 object id
OBJECT_KEY = re.compile(r"[0-9a-f]{32}")
#: one component of a v1 ref name
REF_PART = re.compile(r"[A-Za-z0-9_.%~\-]{1,255}")
#: a ref held as a regular file is a short value; more is not a ref
MAX_REF_FILE = 4096
#: the largest v1 object read: the format's 1 GiB content limit plus its envelope
MAX_OBJECT_FILE = (1 << 30) + 4096
#: refs are at most this many folders deep (``sessions/<name>`` is two)
MAX_REF_DEPTH = 8


class LegacyObjectMissing(SnapshotError, KeyError):
    """A v1 object the store does not hold."""

    def __str__(self) -> str:
        return self.message


#: opens a folder under a descriptor, confined (``DirectoryBackend._open_dir``)
OpenDir = Callable[[int, str, str], int]
#: reads a regular file under a descriptor, bounded (``_directory.read_regular_file``)
ReadFile = Callable[[int, str, str, int], bytes]


class DirectoryLegacyReader:
    """``LegacyReader`` over a v1 directory layout, through the v2 engine's confined file access."""

    def __init__(self, root_fd: int, open_dir: OpenDir, read_file: ReadFile) -> None:
        self._root_fd = root_fd
        self._open_dir = open_dir
        self._read_file = read_file

    def read_ref(self, name: str) -> str | None:
        parts = _ref_parts(name)
        try:
            fd = self._walk(["refs", *parts[:-1]])
        except FileNotFoundError:
            return None
        try:
            return self._ref_value(fd, parts[-1], "refs/" + name)
        finally:
            os.close(fd)

    def iter_refs(self, prefix: str = "") -> list[tuple[str, str]]:
        if not isinstance(prefix, str):
            raise SnapshotError(f"a ref prefix is a str, not {type(prefix).__name__}", {"prefix": repr(prefix)})
        try:
            fd = self._walk(["refs"])
        except FileNotFoundError:
            return []
        found: list[tuple[str, str]] = []
        try:
            self._collect(fd, "", prefix, found, 0)
        finally:
            os.close(fd)
        return sorted(found)

    def get(self, key: str) -> bytes:
        if not isinstance(key, str) or not OBJECT_KEY.fullmatch(key):
            raise SnapshotError(f"invalid v1 object id {key!r}", {"object": repr(key)})
        where = f"objects/{key[:2]}/{key[2:]}"
        try:
            fd = self._walk(["objects", key[:2]])
        except FileNotFoundError:
            raise LegacyObjectMissing(f"v1 object {key} not found", {"object": key, "path": where}) from None
        try:
            return self._read_file(fd, key[2:], where, MAX_OBJECT_FILE)
        except FileNotFoundError:
            raise LegacyObjectMissing(f"v1 object {key} not found", {"object": key, "path": where}) from None
        finally:
            os.close(fd)

    # -- confined walking ----------------------------------------------
    def _walk(self, folders: list[str]) -> int:
        """A descriptor of root/folders..., every step a real folder (raises FileNotFoundError)."""
        fd = os.dup(self._root_fd)
        where = ""
        try:
            for name in folders:
                where = f"{where}/{name}" if where else name
                child = self._open_dir(fd, name, where)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _ref_value(self, folder: int, name: str, where: str) -> str | None:
        try:
            return os.readlink(name, dir_fd=folder)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: not a link, the regular-file form of a ref
                raise BackendError(f"cannot read {where}: {exc.strerror}", {"path": where}) from exc
        try:
            data = self._read_file(folder, name, where, MAX_REF_FILE)
        except FileNotFoundError:
            return None
        # undecodable bytes are damage, which the reader of the value reports when it is not an id
        return data.decode("utf-8", errors="replace").strip()

    def _collect(self, folder: int, base: str, prefix: str, found: list[tuple[str, str]], depth: int) -> None:
        with os.scandir(folder) as listing:
            entries = [(entry.name, entry.stat(follow_symlinks=False).st_mode) for entry in listing]
        for name, mode in entries:
            if name.startswith(".tmp-"):
                continue
            rel = f"{base}{name}"
            if stat.S_ISDIR(mode):
                if depth >= MAX_REF_DEPTH or not (prefix.startswith(rel + "/") or (rel + "/").startswith(prefix)):
                    continue
                child = self._open_dir(folder, name, "refs/" + rel)
                try:
                    self._collect(child, rel + "/", prefix, found, depth + 1)
                finally:
                    os.close(child)
            elif (stat.S_ISLNK(mode) or stat.S_ISREG(mode)) and rel.startswith(prefix):
                value = self._ref_value(folder, name, "refs/" + rel)
                if value is not None:
                    found.append((rel, value))


def _ref_parts(name: str) -> list[str]:
    parts = name.split("/") if isinstance(name, str) else []
    if not parts or any(not REF_PART.fullmatch(p) or p in (".", "..") for p in parts):
        raise SnapshotError(f"invalid v1 ref name {name!r}", {"ref": repr(name)})
    return parts
