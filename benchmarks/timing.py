"""Timing for the benchmarks: the best of several calls, an engine function's calls, by wrapping it
(to split a commit into phases), and one snapshot's rebuild through a freshly opened store, with
or without opening it counted."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any


def best_seconds(fn: Callable[[], object], tries: int = 5) -> float:
    """The fastest of ``tries`` calls of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(tries):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
    return best


def wrap_timed(
    owner: Any,
    name: str,
    label: str,
    spent: dict[str, int],
    running: list[str],
    counts: Callable[[list[str]], bool] | None = None,
) -> None:
    """Add the time of each call of ``owner.name`` to ``spent[label]``; time spent in a phase timed
    inside another (the record's hash inside the append) counts for the inner phase only. With
    ``counts``, a call is timed only when ``counts(running)`` (the phases running around it) says so."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        if counts is not None and not counts(running):
            return original(*args, **kwargs)
        running.append(label)
        started = time.perf_counter_ns()
        try:
            return original(*args, **kwargs)
        finally:
            elapsed = time.perf_counter_ns() - started
            running.pop()
            spent[label] = spent.get(label, 0) + elapsed
            if running:
                spent[running[-1]] = spent.get(running[-1], 0) - elapsed

    setattr(owner, name, timed)


def cold_rebuild_ns(open_store: Callable[[], Any], session: str, snapshot_id: str) -> tuple[int, Any]:
    """Nanoseconds to rebuild one snapshot through a store ``open_store()`` opens (nothing cached:
    no head, no decoded segment), and the state; opening the store and its session is not timed."""
    store = open_store()
    try:
        opened = store.session(session)
        opened.snapshot_ids()  # reading the index is opening the store, not the rebuild
        started = time.perf_counter_ns()
        state = opened.state(snapshot_id)
        return time.perf_counter_ns() - started, state
    finally:
        store.close()


def cold_read_ns(open_store: Callable[[], Any], session: str, snapshot_id: str) -> tuple[int, Any]:
    """Nanoseconds to read one snapshot as a restarted process does: the store and the session
    opened, then the snapshot's state asked for, with no listing first, all timed; and the state."""
    started = time.perf_counter_ns()
    store = open_store()
    try:
        state = store.session(session).state(snapshot_id)
        return time.perf_counter_ns() - started, state
    finally:
        store.close()
