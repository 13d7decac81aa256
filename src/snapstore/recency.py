"""The most-recently-used order a handle bounds a cache by (warm sessions, open lock files,
cached LangGraph threads): the newest last, the oldest taken out beyond a limit, of entries or
of bytes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
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


def shed_bytes(recent: OrderedDict[K, V], limit: int, size_of: Callable[[V], int]) -> list[V]:
    """Take the oldest values out of ``recent`` until what the rest keep (``size_of`` each) comes
    to at most ``limit`` bytes; the newest always stays, however large. The values taken out,
    oldest first, for the caller to let go."""
    sizes = [size_of(value) for value in recent.values()]
    total = sum(sizes)
    out = []
    for size in sizes[:-1]:
        if total <= limit:
            break
        out.append(recent.popitem(last=False)[1])
        total -= size
    return out
