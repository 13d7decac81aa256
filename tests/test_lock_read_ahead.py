"""A commit names where it will read from when it asks for the session's lock (``lock_session_reading``).

PostgreSQL reads the entries appended since then in the round trip that takes the lock, and
answers the commit's first read of them from it. What the commit learns must be what a separate
read would give, whether the hint is fresh, stale (another writer started a segment since) or
the writer's own: each case below ends with every snapshot rebuilt on a fresh handle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from snapstore import SnapshotStore


def _state(turn: int, writer: str) -> dict[str, Any]:
    # 300 kB that does not change: past the size at which small states share a segment
    return {"body": "x" * 300_000, "turn": turn, "by": writer, "log": [f"{writer} {t}" for t in range(turn % 5)]}


def _reads_under_lock(store: SnapshotStore, commit: Callable[[], Any]) -> list[str]:
    """The backend actions a commit ran in its lock's transaction (PostgreSQL), in order."""
    backend = store.backend
    seen: list[str] = []
    original = backend._on_session  # type: ignore[attr-defined]

    def recording(key: str, action: str, work: Any, **kwargs: Any) -> Any:
        if backend._held(key) is not None:  # type: ignore[attr-defined]
            seen.append(action)
        return original(key, action, work, **kwargs)

    backend._on_session = recording  # type: ignore[attr-defined]
    try:
        commit()
    finally:
        del backend._on_session  # type: ignore[attr-defined]
    return seen


def test_a_writer_learns_what_others_appended_in_the_lock_it_takes(make_store: Callable[..., SnapshotStore]) -> None:
    mine_store, theirs_store = make_store(max_runs=1, max_chain=3), make_store(max_runs=1, max_chain=3)
    mine, theirs = mine_store.session("s", max_snapshots=100), theirs_store.session("s")
    expected = {mine.commit(_state(0, "a")).id: _state(0, "a")}
    for turn in range(1, 12):
        # the other writer commits 0 to 3 times between this one's commits: the hint is fresh, or
        # stale once the other starts a segment (every fourth commit here)
        for extra in range(turn % 4):
            state = _state(100 * turn + extra, "b")
            expected[theirs.commit(state).id] = state
        state = _state(turn, "a")
        expected[mine.commit(state).id] = state
        assert mine.head is not None and mine.state(mine.head.id) == state
    fresh = make_store().session("s")
    assert set(fresh.snapshot_ids()) == set(expected)
    for sid, state in expected.items():
        assert fresh.state(sid) == state


def test_on_postgresql_a_fresh_hint_saves_the_read(make_store: Callable[..., SnapshotStore]) -> None:
    if getattr(make_store, "kind", "") != "postgres":
        pytest.skip("the read joins the lock's round trip on PostgreSQL only")
    mine_store, theirs_store = make_store(), make_store()
    mine, theirs = mine_store.session("s", max_snapshots=100), theirs_store.session("s")
    mine.commit({"n": 0})
    mine.commit({"n": 1})  # a handle's first commits read its open segment whole, once
    theirs.commit({"n": 2})
    theirs.commit({"n": 3})
    # the other writer appended twice to the segment this one knows: both come with the lock
    reads = _reads_under_lock(mine_store, lambda: mine.commit({"n": 4}))
    assert "read segment" not in reads and reads[-1] == "append to segment"
    # without the hint the same commit reads them in a round trip of its own
    theirs.commit({"n": 5})
    plain = mine_store.backend.lock_session
    mine_store.backend.lock_session_reading = lambda key, timeout, read_from: plain(key, timeout)  # type: ignore[method-assign]
    reads = _reads_under_lock(mine_store, lambda: mine.commit({"n": 6}))
    assert reads.count("read segment") == 1
    assert [mine.state(sid) for sid in mine.snapshot_ids()] == [{"n": n} for n in range(7)]
