"""A writer's decoder of the open segment keeps only the last run (and the window before it), so a
long segment of a large state does not stay in memory; snapshots of the runs it forgot are still
read right, from the store, also after a rollback into an earlier run of the same segment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conftest import canonical
from snapstore import SnapshotStore
from snapstore.entries import DELTA_WINDOW

# ~150 kB of JSON, different on every turn, so runs are longer than the delta window
BASE = [f"lore line {i}: the tower of the old king still stands" for i in range(2500)]


def turn(t: int) -> dict[str, Any]:
    return {"turn": t, "lore": BASE, "log": [f"event {k}" for k in range(t)], "hp": 100 - t}


def test_the_open_segment_decoder_keeps_the_last_run_only(make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store(max_chain=3, max_runs=8)  # a keyframe every fourth commit, runs in one segment
    sess = store.session("s", max_snapshots=1000)
    ids = [sess.commit(turn(t), turn=t).id for t in range(24)]
    log = sess._log
    assert len(log.segments) == 1 and log.last_segment is not None and log.last_segment.runs() >= 5
    decoder = sess._open
    assert decoder is not None
    run_bytes = decoder.size - decoder.run_start
    assert decoder.base > 0, "older runs were not forgotten"
    assert len(decoder.raw) <= run_bytes + DELTA_WINDOW
    assert set(decoder.spans) <= set(ids[-4:])

    # every snapshot reads back right through this handle (forgotten runs come from the store)
    for t, sid in enumerate(ids):
        assert canonical(sess.state(sid)) == canonical(turn(t)), t

    # a rollback into an early run of the same segment, then commits on top of it: deltas whose
    # parent's run the decoder no longer holds
    sess.rollback(ids[1])
    branch = [sess.commit({**turn(1), "branch": k}, turn=100 + k).id for k in range(2)]
    first = log.commits[branch[0]]
    assert first.mode not in (0, 1) and first.record.parent == ids[1]  # a delta onto a forgotten run
    decoder = sess._open
    assert decoder is not None and branch[0] in decoder.spans and ids[1] not in decoder.spans
    assert canonical(sess.state(branch[0])) == canonical({**turn(1), "branch": 0})
    branch += [sess.commit({**turn(1), "branch": k}, turn=100 + k).id for k in range(2, 6)]
    fresh = (SnapshotStore(store.backend) if make_store.kind == "memory" else make_store()).session("s")  # type: ignore[attr-defined]
    for k, sid in enumerate(branch):
        expected = canonical({**turn(1), "branch": k})
        assert canonical(sess.state(sid)) == expected and canonical(fresh.state(sid)) == expected
    for t, sid in enumerate(ids):
        assert canonical(fresh.state(sid)) == canonical(turn(t)), t
    assert store.verify().ok
