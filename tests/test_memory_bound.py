"""Committing, diffing and rebuilding take memory within a small constant factor of the state's
JSON size, whatever its shape: a wide object, a long list of one repeated value, a large string
deep down. The bound, for peak traced memory (tracemalloc): 10x the JSON size, plus what one plain
``orjson.loads(orjson.dumps(state))`` reserves beyond its result (orjson sizes its output buffer by
the number of items it is given, and tracemalloc counts the buffer even where it is untouched).
``benchmarks/memory_shapes.py`` measures the same at full size (a million members, 200,000
elements, 8 MB at depth 250), with times. No time is asserted here.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from snapstore import SnapshotError, SnapshotStore
from snapstore.delta import diff


def wide() -> Any:
    return {f"k{i}": i for i in range(60_000)}


def long_list() -> Any:
    repeated = {"hp": 10, "name": "goblin", "tags": ["a", "b"]}
    return {"turn": 1, "items": [repeated] * 40_000}


def deep() -> Any:
    node: Any = {"text": "x" * 1_000_000}
    for _ in range(249):
        node = {"a": node}
    return node


def change(state: Any) -> None:
    if "k0" in state:
        state["k0"] = -1
    elif "items" in state:
        state["items"][20_000] = {"hp": 9, "name": "goblin", "tags": ["a"]}
    else:
        while "a" in state:
            state = state["a"]
        state["hp"] = 1


def traced_peak(call: Callable[[], Any]) -> tuple[int, Any]:
    gc.collect()
    tracemalloc.start()
    try:
        result = call()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def bound_of(state: Any) -> tuple[int, float]:
    """(the state's JSON size, the bound in bytes)."""
    size = len(orjson.dumps(state))
    gc.collect()
    tracemalloc.start()
    try:
        data = orjson.dumps(state)
        reading = orjson.loads(data)
        peak = tracemalloc.get_traced_memory()[1]
        del data
        result = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del reading
    return size, 10 * size + (peak - result)


@pytest.mark.parametrize("make", [wide, long_list, deep], ids=["wide", "long-list", "deep"])
def test_commit_diff_and_rebuild_stay_within_the_bound(make: Callable[[], Any]) -> None:
    state = make()
    size, bound = bound_of(state)
    before = orjson.loads(orjson.dumps(state))
    sess = SnapshotStore.memory().session("s")

    def two_commits() -> str:
        first = sess.commit(state)
        change(state)
        sess.commit(state)
        return first.id

    peak, first_id = traced_peak(two_commits)
    assert peak <= bound, f"two commits peaked at {peak / size:.1f}x the JSON size, bound {bound / size:.1f}x"

    peak, ops = traced_peak(lambda: diff(before, state))
    assert 0 < len(ops) <= 3
    assert peak <= bound, f"diff peaked at {peak / size:.1f}x the JSON size, bound {bound / size:.1f}x"

    peak, rebuilt = traced_peak(lambda: sess.state(first_id))
    assert orjson.dumps(rebuilt, option=orjson.OPT_SORT_KEYS) == orjson.dumps(before, option=orjson.OPT_SORT_KEYS)
    assert peak <= bound, f"a rebuild peaked at {peak / size:.1f}x the JSON size, bound {bound / size:.1f}x"


def _streams_of(store: SnapshotStore) -> int:
    """How many of the store's session handles hold a compression stream (of any in the process)."""
    from snapstore.session import Session

    gc.collect()
    return sum(1 for found in gc.get_objects() if type(found) is Session and found._store is store and found._stream)


@pytest.mark.parametrize("engine", ["memory", "directory"])
def test_a_process_writing_many_sessions_keeps_the_write_state_of_a_bounded_number(engine: str, tmp_path: Any) -> None:
    """A session written to keeps what makes its next commit cheap (its head state, the open
    segment and its compression stream, up to a megabyte); only the ``max_warm_sessions`` written
    to last keep it, however many sessions one handle writes, and a session that let it go reads
    it back at its next use and commits as before."""
    settings: dict[str, Any] = {"max_warm_sessions": 4}
    store = SnapshotStore.memory(**settings) if engine == "memory" else SnapshotStore.open(tmp_path / "s", **settings)
    for i in range(40):
        sess = store.session(f"thread {i}", max_snapshots=100)
        for turn in range(3):  # a keyframe, then deltas: each session opens a compression stream
            sess.commit({"thread": i, "log": [f"turn {t}" for t in range(turn + 1)], "hp": 1.0})
    del sess
    assert _streams_of(store) <= 4
    assert len(store._warm) == 4
    assert store.session("thread 39") is store.session("thread 39")  # one handle while it is warm
    again = store.session("thread 0")  # let go long ago: reads what it needs, and goes on
    again.commit({"thread": 0, "log": ["turn 0", "turn 1", "turn 2", "turn 3"], "hp": 1.0})
    assert [again.state(sid)["log"][-1] for sid in again.snapshot_ids()] == ["turn 0", "turn 1", "turn 2", "turn 3"]
    assert store.verify(read_data=True).ok


def test_a_session_in_use_on_another_thread_keeps_its_write_state(tmp_path: Any) -> None:
    import threading

    store = SnapshotStore.open(tmp_path / "s", max_warm_sessions=1)
    busy = store.session("busy")
    for turn in range(3):
        busy.commit({"turn": turn})
    assert busy._stream is not None
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with busy._lock:  # an operation of it running on another thread
            holding.set()
            done.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    store.session("other").commit({"x": 1})  # pushes "busy" out of the warm one
    assert busy._stream is not None  # not taken from under the operation
    done.set()
    holder.join()
    store.session("third").commit({"x": 1})
    busy.commit({"turn": 3})
    assert busy.state(busy.head.id) == {"turn": 3}  # type: ignore[union-attr]


@pytest.mark.parametrize("engine", ["memory", "directory"])
def test_warm_sessions_of_large_states_keep_at_most_max_warm_bytes(engine: str, tmp_path: Any) -> None:
    """Counting sessions bounds nothing when each holds a large state: ``max_warm_bytes`` lets the
    oldest go once the warm ones together keep more (the one used last keeps its own), and one
    let go reads its head back at its next use and commits as before."""

    def state(i: int, turn: int) -> dict[str, Any]:
        return {"thread": i, "turn": turn, "rows": [f"row {i}.{n} " + "x" * 40 for n in range(2000)]}

    size = len(orjson.dumps(state(0, 0), option=orjson.OPT_SORT_KEYS))
    settings: dict[str, Any] = {"max_warm_sessions": 64, "max_warm_bytes": 3 * size}
    store = SnapshotStore.memory(**settings) if engine == "memory" else SnapshotStore.open(tmp_path / "s", **settings)
    for i in range(10):
        sess = store.session(f"thread {i}", max_snapshots=100)
        for turn in range(3):
            sess.commit(state(i, turn))
    del sess
    warm = list(store._warm.values())
    assert 1 <= len(warm) <= 3 and sum(s.kept_bytes() for s in warm) <= 3 * size
    assert warm[-1].name == "thread 9" and warm[-1]._head_state is not None
    let_go = store.session("thread 0")
    assert let_go._head_state is None  # read back at its next use
    let_go.commit(state(0, 3))
    assert [let_go.state(sid)["turn"] for sid in let_go.snapshot_ids()] == [0, 1, 2, 3]
    alone = SnapshotStore.memory(max_warm_bytes=0)  # the one used last keeps its own whatever its size
    only = alone.session("only")
    only.commit(state(1, 0))
    only.commit(state(1, 1))
    assert only._head_state is not None and list(alone._warm) == [only.key]
    assert store.verify(read_data=True).ok


@pytest.mark.parametrize("bad", [-1, 1.5, "1MB", True])
def test_max_warm_bytes_is_a_count_of_bytes_or_none(bad: Any) -> None:
    with pytest.raises(SnapshotError, match="max_warm_bytes"):
        SnapshotStore.memory(max_warm_bytes=bad)


def _canonical_size(value: Any) -> int:
    return len(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


def test_what_a_session_keeps_is_counted_close_to_its_heads_json(tmp_path: Any) -> None:
    store = SnapshotStore.open(tmp_path / "s")
    shapes: dict[str, Any] = {
        "many small members": {f"k{i}": i for i in range(20000)},
        "a few large members": {"a": "x" * 50000, "b": ["y" * 100] * 500},
        "a list at the top": [{"row": i, "text": "z" * 30} for i in range(3000)],
    }
    for name, state in shapes.items():
        sess = store.session(name)
        sess.commit(state)
        head = _canonical_size(state)
        decoded = len(sess._open.raw) if sess._open is not None else 0
        assert 0.9 * head <= sess.kept_bytes() - decoded <= 1.1 * head, name
    rolled = store.session("rolled")
    first = rolled.commit([{"row": i} for i in range(2000)])
    rolled.commit([{"row": i} for i in range(10)])
    rolled.rollback(first.id)
    assert rolled.kept_bytes() >= _canonical_size([{"row": i} for i in range(2000)])
    store.close()


def test_sessions_let_go_for_bytes_drop_what_they_keep_and_reads_count_too(tmp_path: Any) -> None:
    """A session shed for bytes lets go of its head even while its caller holds the handle; a
    read that catches up with another handle's commits grows what a session keeps, and is held to
    the bound as a commit is."""
    def big(i: int, turn: int) -> dict[str, Any]:
        return {"rows": [f"{i}.{turn}.{n} " + "x" * 40 for n in range(3000)]}

    reader = SnapshotStore.open(tmp_path / "s", max_warm_bytes=100_000)
    handles = [reader.session(f"t{i}", max_snapshots=100) for i in range(5)]
    for sess in handles:
        sess.commit({"rows": []})
        sess.commit({"rows": ["a"]})
    assert all(sess._head_state is not None for sess in handles)  # small: all fit
    writer = SnapshotStore.open(tmp_path / "s")
    for i in range(5):
        for turn in range(2):  # deltas after the reader's: its reads catch up on them
            writer.session(f"t{i}").commit(big(i, turn))
    first = handles[0]
    assert first.state(first.head.id) == big(0, 1)  # type: ignore[union-attr]
    assert first.kept_bytes() > 100_000  # caught up on the writer's deltas: its head grew...
    assert all(sess._head_state is None for sess in handles[1:])  # ...and the others made room
    for i, sess in enumerate(handles[1:], 1):
        assert sess.state(sess.head.id) == big(i, 1)  # type: ignore[union-attr]
    warm = list(reader._warm.values())
    assert len(warm) == 1 or sum(sess.kept_bytes() for sess in warm) <= 100_000
    assert first._head_state is None  # let go in turn, its handle still held
    assert first.state(first.head.id) == big(0, 1)  # type: ignore[union-attr]
    reader.close()
    writer.close()


def test_a_refused_setting_creates_no_store(tmp_path: Any) -> None:
    for bad in ({"max_warm_bytes": -1}, {"max_warm_sessions": -1}, {"compression_level": 99}, {"rebuild_budget": 0}):
        with pytest.raises(SnapshotError):
            SnapshotStore.open(tmp_path / "never", **bad)
        assert not (tmp_path / "never").exists(), bad
