"""Objects and refs in process memory: the same behaviour as a directory, without files."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from .base import Backend, ObjectMissing, check_key, check_ref_name
from .locking import ReadWriteLock


class MemoryBackend(Backend):
    kind = "memory"

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._refs: dict[str, str] = {}
        self._mutex = threading.Lock()
        self._locks: dict[str, ReadWriteLock] = {}

    def get(self, key: str) -> bytes:
        try:
            return self._objects[check_key(key)]
        except KeyError:
            raise ObjectMissing(f"object {key} not found", {"object": key}) from None

    def put(self, key: str, data: bytes) -> bool:
        check_key(key)
        with self._mutex:
            if key in self._objects:
                return False
            self._objects[key] = bytes(data)
            return True

    def has(self, key: str) -> bool:
        return check_key(key) in self._objects

    def delete(self, key: str) -> None:
        with self._mutex:
            self._objects.pop(check_key(key), None)

    def iter_keys(self) -> Iterator[str]:
        with self._mutex:
            keys = list(self._objects)
        return iter(keys)

    def read_ref(self, name: str) -> str | None:
        return self._refs.get(check_ref_name(name))

    def cas_ref(self, name: str, expected: str | None, new: str | None) -> bool:
        check_ref_name(name)
        with self._mutex:
            if self._refs.get(name) != expected:
                return False
            if new is None:
                self._refs.pop(name, None)
            else:
                self._refs[name] = new
            return True

    def iter_refs(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        with self._mutex:
            items = sorted((n, v) for n, v in self._refs.items() if n.startswith(prefix))
        return iter(items)

    def lock(self, name: str, *, shared: bool = False) -> AbstractContextManager[None]:
        with self._mutex:
            rw = self._locks.setdefault(name, ReadWriteLock())
        return _held(rw, shared)


@contextmanager
def _held(rw: ReadWriteLock, shared: bool) -> Iterator[None]:
    rw.acquire(shared)
    try:
        yield
    finally:
        rw.release(shared)
