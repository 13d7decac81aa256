"""Storage engines behind one narrow interface (see ``base.Backend``)."""

from __future__ import annotations

import os

from ..errors import BackendError
from ._directory import DirectoryBackend
from ._memory import MemoryBackend
from .base import Backend, SegmentMissing

__all__ = ["Backend", "DirectoryBackend", "MemoryBackend", "SegmentMissing", "open_backend"]


def open_backend(target: str | os.PathLike[str] | Backend, *, fsync: bool = False, create: bool = True) -> Backend:
    """A backend for a path, a ``postgresql://`` URL, ``memory:`` or an existing backend."""
    if isinstance(target, Backend):
        return target
    if not isinstance(target, (str, os.PathLike)):
        raise BackendError(
            f"a store is a path, a postgresql:// URL or a backend, not {type(target).__name__}",
            {"target": repr(target)},
        )
    text = os.fspath(target)
    if text.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresBackend  # optional extra: imported only when asked for

        return PostgresBackend(text, create=create)
    if text == "memory:":
        return MemoryBackend()
    return DirectoryBackend(text, fsync=fsync, create=create)
