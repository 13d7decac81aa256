"""The most-recently-used order a handle bounds a cache by (warm sessions, open lock files,
cached LangGraph threads): the newest last, the oldest taken out beyond a limit."""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def touch(recent: OrderedDict[K, V], key: K, value: V, limit: int) -> list[V]:
    """Make ``key`` (holding ``value``) the newest of ``recent``; the values taken out, oldest
    first, so that ``recent`` holds at most ``limit``. The caller lets those go (outside its own
    lock when letting go waits for another)."""
    recent[key] = value
    recent.move_to_end(key)
    out = []
    while len(recent) > limit:
        out.append(recent.popitem(last=False)[1])
    return out
