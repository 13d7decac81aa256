"""A handle that refreshes after every change another handle makes indexes only what was
appended; its index must always equal a fresh handle's full index, through commits, keyframes,
new segments, rollbacks, tags, limit changes, drops and squashes, on every backend."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from conftest import canonical
from snapstore import SnapshotStore
from snapstore.history import SessionLog

PAD = [f"line {i} of the campaign log" for i in range(40)]


def index_of(log: SessionLog) -> dict[str, Any]:
    """Everything a refresh derives from the segments, in a form two logs can be compared by."""
    return {
        "order": list(log.order),
        "commits": {sid: (c.segment, c.ordinal, c.mode, c.record) for sid, c in log.commits.items()},
        "head": log.head,
        "tags": dict(log.tags),
        "settings": dict(log.settings),
        "segments": {n: (s.version, s.end, len(s.entries)) for n, s in log.segments.items()},
        "retained": log.retained(),
    }


def fresh_index(store: SnapshotStore, name: str) -> dict[str, Any]:
    log = SessionLog(store.backend, store.session(name).key, name)
    log.refresh()
    return index_of(log)


def test_an_incrementally_refreshed_index_equals_a_full_one(make_store: Callable[..., SnapshotStore]) -> None:
    rng = random.Random(20261204)
    # small segments and short chains so that keyframes, new segments, drops and squashes all happen
    writer_store = make_store(max_chain=4, max_runs=2)
    reader_store = SnapshotStore(writer_store.backend) if make_store.kind == "memory" else make_store()  # type: ignore[attr-defined]
    writer = writer_store.session("s", max_snapshots=6)
    reader = reader_store.session("s")
    reader_log: SessionLog = reader._log
    ids: list[str] = []
    incremental = 0
    for step in range(160):
        action = rng.random()
        if action < 0.7 or not ids:
            state = {"turn": step, "log": PAD[: rng.randint(5, 40)], "hp": rng.randint(0, 99)}
            ids.append(writer.commit(state, label=f"t{step}", turn=step).id)
        elif action < 0.8:
            retained = writer.snapshot_ids()
            writer.rollback(rng.choice(retained))
        elif action < 0.88:
            retained = writer.snapshot_ids()
            writer.tag(rng.choice(retained), f"tag{rng.randint(0, 3)}")
        elif action < 0.92 and writer.tags:
            writer.untag(rng.choice(sorted(writer.tags)))
        elif action < 0.96:
            writer.set_max_snapshots(rng.randint(3, 9))
        else:
            writer.clear_old_snapshots()
        before = reader_log._reindex
        full = {"count": 0}

        def counting_reindex(original: Callable[[], None] = before, counter: dict[str, int] = full) -> None:
            counter["count"] += 1
            original()

        reader_log._reindex = counting_reindex  # type: ignore[method-assign]
        try:
            reader_log.refresh()
        finally:
            del reader_log._reindex
        incremental += full["count"] == 0
        assert index_of(reader_log) == fresh_index(writer_store, "s"), f"step {step}"
        head = reader.head
        assert head is not None and canonical(reader.state(head.id)) == canonical(writer.state(head.id))
    # most refreshes after a plain commit must not have indexed the whole session again
    assert incremental > 60
