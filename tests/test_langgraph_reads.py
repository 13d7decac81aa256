"""A saver opened on a store reads every checkpoint exactly as the saver that wrote it.

The writer answers from the heads it keeps in memory; a fresh saver rebuilds what it reads from
the store and finds each checkpoint through the head's lists. Every checkpoint (checkpoint,
metadata, parent, pending writes, compared as the serializer's bytes) must come back the same,
whatever the order the checkpoints and their writes arrived in, after a checkpoint id is put
twice, after a fork, and after some runs are deleted.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from snapstore import SnapshotStore
from snapstore.langgraph import SnapstoreSaver

SERDE = JsonPlusSerializer()


class Agent(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    calls: Annotated[list[int], operator.add]


def _think(state: Agent) -> dict[str, Any]:
    n = len(state["messages"])
    return {"messages": [AIMessage(f"thought {n}", id=f"ai-{n}")], "calls": [n]}


def _act(state: Agent) -> dict[str, Any]:
    n = len(state["messages"])
    return {"messages": [AIMessage(f"acted {n}", id=f"act-{n}", response_metadata={"score": 1.0})], "calls": [-n]}


def agent_graph(saver: SnapstoreSaver) -> Any:
    builder = StateGraph(Agent).add_sequence([("think", _think), ("act", _act)])
    return builder.add_edge(START, "think").add_edge("act", END).compile(checkpointer=saver)


def _keys_sorted(value: Any) -> Any:
    """Plain dicts with their keys sorted, at any depth: a state rebuilt by the store has its keys
    in canonical order, the writer's own copy in the order it put them (values are what count)."""
    if type(value) is dict:
        return {k: _keys_sorted(value[k]) for k in sorted(value)}
    if type(value) in (list, tuple):
        return type(value)(_keys_sorted(v) for v in value)
    return value


def as_bytes(found: CheckpointTuple | None) -> bytes:
    """The serializer's bytes of a tuple (so 1, 1.0 and True differ), dict keys in sorted order."""
    assert found is not None
    return SERDE.dumps_typed(
        _keys_sorted(
            {
                "config": found.config,
                "checkpoint": found.checkpoint,
                "metadata": found.metadata,
                "parent_config": found.parent_config,
                "pending_writes": found.pending_writes,
            }
        )
    )[1]


def by_id(thread: str, checkpoint_id: str, namespace: str = "") -> Any:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": namespace, "checkpoint_id": checkpoint_id}}


def _assert_fresh_reads_match(writer: SnapstoreSaver, make_store: Callable[..., SnapshotStore]) -> tuple[int, int]:
    """Every checkpoint the writer lists reads the same from a fresh saver on the same storage;
    (checkpoints read, how many of them have pending writes)."""
    read = with_writes = 0
    for listed in writer.list(None):
        expected = as_bytes(writer.get_tuple(listed.config))
        assert as_bytes(listed) == expected  # list and get_tuple agree on the writer
        fresh = SnapstoreSaver(make_store())
        assert as_bytes(fresh.get_tuple(listed.config)) == expected
        read += 1
        with_writes += bool(listed.pending_writes)
    return read, with_writes


def test_a_fresh_saver_reads_each_checkpoint_of_a_graph_as_its_writer_does(
    make_store: Callable[..., SnapshotStore],
) -> None:
    writer = SnapstoreSaver(make_store())
    graph = agent_graph(writer)
    config: Any = {"configurable": {"thread_id": "agent"}}
    for turn in range(4):  # default (async) durability: writes and checkpoints interleave
        graph.invoke({"messages": [HumanMessage(f"ask {turn}", id=f"h-{turn}")]}, config)
    history = list(graph.get_state_history(config))
    old = history[len(history) // 2].config
    forked = graph.update_state(old, {"messages": [HumanMessage("fork", id="h-fork")]})
    graph.invoke(None, forked)
    read, with_writes = _assert_fresh_reads_match(writer, make_store)
    assert read >= 15 and with_writes >= 10

    fresh = SnapstoreSaver(make_store())
    assert fresh.get_tuple(by_id("agent", "no-such-checkpoint")) is None
    assert fresh.get_tuple(by_id("no-such-thread", history[0].config["configurable"]["checkpoint_id"])) is None


def test_a_fresh_saver_reads_what_a_later_record_replaced(make_store: Callable[..., SnapshotStore]) -> None:
    """A checkpoint put twice, writes that arrive before their checkpoint, late writes to a
    checkpoint that is no longer the head, an id that sorts before the head's, deleted runs."""
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

    writer = SnapstoreSaver(make_store())
    first_cp = generate_checkpoint()
    first = writer.put(generate_config("t"), first_cp, generate_metadata(step=0, run_id="run-a"), {})
    second_cp = generate_checkpoint()
    second = by_id("t", second_cp["id"])
    writer.put_writes(second, [("__interrupt__", "ask")], "task-b")  # before its checkpoint
    writer.put(first, second_cp, generate_metadata(step=1, run_id="run-a"), {})
    writer.put_writes(first, [("messages", "late"), ("count", 1)], "task-a")  # no longer the head
    writer.put(first, second_cp, generate_metadata(step=1, run_id="run-b", note="again"), {})  # put twice
    writer.put_writes(second, [("count", 1.0)], "task-c")
    early = generate_checkpoint(checkpoint_id="00000000-early")  # sorts before every other id
    writer.put(second, early, generate_metadata(step=2, run_id="run-c"), {})
    writer.put_writes(by_id("t", early["id"]), [("x", True)], "task-d")
    writer.put(generate_config("t", checkpoint_ns="inner"), generate_checkpoint(), generate_metadata(step=0), {})
    assert _assert_fresh_reads_match(writer, make_store) == (4, 3)

    metadata = SnapstoreSaver(make_store()).get_tuple(second)
    assert metadata is not None and metadata.metadata.get("note") == "again"

    writer.delete_for_runs(["run-c"])
    assert SnapstoreSaver(make_store()).get_tuple(by_id("t", early["id"])) is None
    assert _assert_fresh_reads_match(writer, make_store) == (3, 2)


def _checkpoints_session(store: SnapshotStore, thread: str) -> Any:
    from snapstore.langgraph.names import lane_names

    return store.session(lane_names(thread, "").checkpoints)


def _long_thread(saver: SnapstoreSaver, turns: int) -> Any:
    graph = agent_graph(saver)
    config: Any = {"configurable": {"thread_id": "agent"}}
    for turn in range(turns):  # a few kB a turn: the head's chain of deltas grows costly
        graph.invoke({"messages": [HumanMessage(f"ask {turn} " + "lore " * 400, id=f"h-{turn}")]}, config)
    return graph, config


def _read_alike(writer: SnapstoreSaver, fresh: SnapstoreSaver) -> int:
    """How many checkpoints the writer lists; each must read the same from ``fresh``."""
    listed = list(writer.list(None))
    for found in listed:
        assert as_bytes(fresh.get_tuple(found.config)) == as_bytes(found)
    return len(listed)


def test_closing_a_saver_settles_the_heads_it_wrote(make_store: Callable[..., SnapshotStore]) -> None:
    """Closing stores a head whose rebuild grew costly again, whole and on its own
    (``Session.settle``): a fresh saver reads every checkpoint as before, the next put carries on
    from the settled head, and a saver that only read writes nothing when it closes."""
    store = make_store(rebuild_budget=50.0)  # one long chain of deltas, no keyframe on the way
    writer = SnapstoreSaver(store)
    graph, config = _long_thread(writer, 25)
    before = _checkpoints_session(store, "agent").head
    assert before is not None and before.kind == "delta"
    writer.close()

    settled = _checkpoints_session(make_store(), "agent").head
    assert settled is not None and (settled.parent, settled.kind) == (before.id, "full")
    assert settled.state_hash == before.state_hash
    assert _read_alike(writer, SnapstoreSaver(make_store())) >= 75

    graph.invoke({"messages": [HumanMessage("one more", id="h-more")]}, config)  # the writer goes on
    after = _checkpoints_session(make_store(), "agent").head
    assert after is not None and after.kind == "delta"
    assert _read_alike(writer, SnapstoreSaver(make_store())) >= 78  # the settled checkpoint, by its new place

    reader_store = make_store()
    reader = SnapstoreSaver(reader_store)
    assert reader.get_tuple(config) is not None
    key = _checkpoints_session(reader_store, "agent").key
    listing = [(i.segment, i.stored_bytes) for i in reader_store.backend.segments(key)]
    reader.close()
    assert [(i.segment, i.stored_bytes) for i in make_store().backend.segments(key)] == listing


def test_a_saver_used_with_with_settles_before_closing_its_store(tmp_path: Any) -> None:
    with SnapstoreSaver.from_conn_string(tmp_path / "store", rebuild_budget=50.0) as saver:
        _long_thread(saver, 25)
    with SnapshotStore.open(tmp_path / "store") as store:
        head = _checkpoints_session(store, "agent").head
        assert head is not None and head.kind == "full"
        assert SnapstoreSaver(store).get_tuple({"configurable": {"thread_id": "agent"}}) is not None


def test_a_saver_settles_only_its_own_heads_and_closes_quietly(make_store: Callable[..., SnapshotStore]) -> None:
    """A saver that only read, on the very store object another saver writes through, settles
    nothing (the writer's next put is one commit on its own head); closing twice, or after
    another handle deleted the thread, is quiet."""
    store = make_store(rebuild_budget=50.0)
    writer, reader = SnapstoreSaver(store), SnapstoreSaver(store)
    graph, config = _long_thread(writer, 20)
    assert reader.get_tuple(config) is not None
    sess = _checkpoints_session(store, "agent")
    before = sess.head
    reader.close()
    assert sess.head == before  # the reader wrote nothing

    count = len(sess.snapshot_ids())
    graph.invoke({"messages": [HumanMessage("next", id="h-next")]}, config)
    added = sess.snapshots()[count:]
    assert added[0].parent == before.id  # type: ignore[union-attr]
    labels = [snap.label for snap in added]
    assert len(labels) == len(set(labels)) >= 3  # each put one commit: none built again on a moved head

    make_store().delete_session(sess.name)  # another handle deletes the thread
    writer.close()
    writer.close()
    assert not make_store().has_session(sess.name)


def test_a_reopened_read_takes_the_writes_its_checkpoint_saw(make_store: Callable[..., SnapshotStore]) -> None:
    """A checkpoint's commit records the writes head it saw (``writes_seen``). While that is still
    the writes head, a reopened reader takes any checkpoint's writes through its pointer, or has
    none, without rebuilding the writes head; once anything wrote more, it looks there too."""
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

    writer = SnapstoreSaver(make_store())
    early_cp, quiet_cp = generate_checkpoint(), generate_checkpoint()
    early, quiet = by_id("t", early_cp["id"]), by_id("t", quiet_cp["id"])
    writer.put_writes(early, [("early", 1)], "task-a")  # its writes land before the checkpoint
    writer.put(generate_config("t"), early_cp, generate_metadata(step=0), {})
    lane = writer._lane("t", "")
    writes = writer.store.session(lane.names.writes)
    assert _checkpoints_session(writer.store, "t").state(lane._heads[lane.names.checkpoints][0])["writes_seen"] == (
        writes.head.state_hash if writes.head is not None else None
    )
    assert SnapstoreSaver(make_store()).get_tuple(early).pending_writes == [("task-a", "early", 1)]

    SnapstoreSaver(make_store()).put_writes(early, [("late", 2.0)], "task-b")  # another handle writes more
    found = SnapstoreSaver(make_store()).get_tuple(early)
    assert found is not None and found.pending_writes == [("task-a", "early", 1), ("task-b", "late", 2.0)]
    assert as_bytes(found) == as_bytes(SnapstoreSaver(make_store()).get_tuple(early))

    writer.put(early, quiet_cp, generate_metadata(step=1), {})  # nothing written for it since
    assert SnapstoreSaver(make_store()).get_tuple(quiet).pending_writes == []
    assert as_bytes(SnapstoreSaver(make_store()).get_tuple(early)) == as_bytes(found)


def _put_step(saver: SnapstoreSaver, parent: Any, checkpoint: Any, step: int) -> Any:
    from langgraph.checkpoint.conformance.test_utils import generate_metadata

    return saver.put(parent, checkpoint, generate_metadata(step=step), {"x": step})


def _step_checkpoint(step: int) -> Any:
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

    return generate_checkpoint(channel_values={"x": step}, channel_versions={"x": step})


def test_a_checkpoint_put_by_a_saver_that_read_before_points_at_every_write(
    make_store: Callable[..., SnapshotStore],
) -> None:
    """Two savers on one thread. One read the thread, so it keeps the writes head as it was; the
    other writes more for a checkpoint, without moving the checkpoints head, then puts it. The
    first saver's next put must point at the writes the store holds, not the ones it kept: a
    pointer is a later row, and a reader (or the next writes commit, which drops a checkpoint
    whose pointer names the head) would take it for all of them."""
    from langgraph.checkpoint.conformance.test_utils import generate_config

    for order in ("writes before their checkpoint", "writes after it"):
        store = make_store()
        thread = f"t-{order.split()[1]}"
        a, b = SnapstoreSaver(store), SnapstoreSaver(make_store())
        first, x, y, z = (_step_checkpoint(n) for n in range(4))
        start = _put_step(a, generate_config(thread), first, 0)
        config = by_id(thread, x["id"])
        if order == "writes before their checkpoint":
            a.put_writes(config, [("w", "a")], "task-a")
            b.get_tuple(generate_config(thread))  # b keeps the writes head {x: [a]}
            a.put_writes(config, [("w", "b")], "task-b")
            cx = _put_step(a, start, x, 1)
        else:
            cx = _put_step(a, start, x, 1)
            a.put_writes(cx, [("w", "a")], "task-a")
            b.get_tuple(cx)  # b keeps the writes head {x: [a]}
            a.put_writes(cx, [("w", "b")], "task-b")
        cy = _put_step(a, cx, y, 2)
        b.get_tuple(generate_config(thread))  # b reads y's checkpoint, its writes head unread
        cz = _put_step(b, cy, z, 3)
        a.put_writes(cz, [("w", "c")], "task-c")  # may drop x from the writes head: it has a pointer
        expected = [("task-a", "w", "a"), ("task-b", "w", "b")]
        for reader in (SnapstoreSaver(make_store()), a, b):
            found = reader.get_tuple(by_id(thread, x["id"]))
            assert found is not None and sorted(found.pending_writes or []) == expected, (order, reader)


def test_a_put_writes_built_on_an_older_writes_head_is_built_again_and_keeps_every_write(
    make_store: Callable[..., SnapshotStore],
) -> None:
    """A put_writes built on a writes head another saver has moved on from is refused by the store
    (nothing written) and built again on what that saver left: writes found there already are not
    written again, and the other saver's stay."""
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

    a, b = SnapstoreSaver(make_store()), SnapstoreSaver(make_store())
    x = a.put(generate_config("t"), generate_checkpoint(), generate_metadata(step=0), {})  # a: no writes head
    b.put_writes(x, [("w", 1)], "task-1")
    b.put_writes(x, [("w", 2)], "task-2")
    a.put_writes(x, [("w", 1)], "task-1")  # stored already, but a's first try went on its old head
    for reader in (SnapstoreSaver(make_store()), a, b):
        found = reader.get_tuple(x)
        assert found is not None and found.pending_writes == [("task-1", "w", 1), ("task-2", "w", 2)]


def test_a_saver_whose_kept_heads_another_rewrote_builds_on_what_the_store_holds(
    make_store: Callable[..., SnapshotStore],
) -> None:
    """Another saver's delete_for_runs rewrites the thread (new sessions, new snapshot ids): what a
    saver kept then names snapshots that are gone, and its next put_writes and put build again on
    the rewritten thread instead of failing."""
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

    a, b = SnapstoreSaver(make_store()), SnapstoreSaver(make_store())
    x = a.put(generate_config("t"), generate_checkpoint(), generate_metadata(step=0, run_id="r0"), {})
    a.put_writes(x, [("w", 1)], "ta")
    y = a.put(x, generate_checkpoint(), generate_metadata(step=1, run_id="r1"), {})
    a.put_writes(y, [("w", 2)], "ta")  # x's writes are found through a pointer now
    b.get_tuple(generate_config("t"))  # b keeps both heads
    a.delete_for_runs(["r1"])
    b.put_writes(x, [("w", 3)], "tb")
    z = b.put(x, generate_checkpoint(), generate_metadata(step=1, run_id="r2"), {})
    fresh = SnapstoreSaver(make_store())
    found = fresh.get_tuple(x)
    assert found is not None and found.pending_writes == [("ta", "w", 1), ("tb", "w", 3)]
    assert fresh.get_tuple(y) is None
    assert [t.config["configurable"]["checkpoint_id"] for t in fresh.list(generate_config("t"))] == [
        z["configurable"]["checkpoint_id"],
        x["configurable"]["checkpoint_id"],
    ]


def _writes_read_fresh(make_store: Callable[..., SnapshotStore], config: Any) -> list[Any]:
    found = SnapstoreSaver(make_store()).get_tuple(config)
    assert found is not None
    return sorted(found.pending_writes or [])


@pytest.mark.parametrize("read_first", ["an older checkpoint", "the head"])
def test_a_put_writes_on_heads_read_before_another_saver_moved_on_keeps_its_writes(
    make_store: Callable[..., SnapshotStore], read_first: str
) -> None:
    """b read the thread (a read may leave it keeping the checkpoints head and no writes head);
    a then writes c2's writes, puts c3 (which points c2 at them) and writes c3's, which drops c2
    from the writes head. b's put_writes for c2 must build on both heads as the store has them:
    the writes head alone, read fresh beside the kept checkpoints head, held no c2 and the kept
    index no pointer, and its commit would have kept only b's write."""
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

    a, b = SnapstoreSaver(make_store()), SnapstoreSaver(make_store())
    c1 = a.put(generate_config("t"), generate_checkpoint(), generate_metadata(step=0), {})
    a.put_writes(c1, [("w", "c1")], "ta")
    c2 = a.put(c1, generate_checkpoint(), generate_metadata(step=1), {})
    b.get_tuple(c1 if read_first == "an older checkpoint" else c2)
    a.put_writes(c2, [("w", "a")], "ta")
    c3 = a.put(c2, generate_checkpoint(), generate_metadata(step=2), {})
    a.put_writes(c3, [("w", "c3")], "ta")
    b.put_writes(c2, [("w", "b")], "tb")
    assert _writes_read_fresh(make_store, c2) == [("ta", "w", "a"), ("tb", "w", "b")]


def test_a_put_writes_after_reading_an_empty_thread_keeps_the_writes_before_it(
    make_store: Callable[..., SnapshotStore],
) -> None:
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

    a, b = SnapstoreSaver(make_store()), SnapstoreSaver(make_store())
    x_checkpoint = generate_checkpoint()
    x = by_id("t", x_checkpoint["id"])
    a.put_writes(x, [("w", "a")], "ta")  # writes before their checkpoint
    assert b.get_tuple(generate_config("t")) is None  # b keeps: no checkpoints
    a.put(generate_config("t"), x_checkpoint, generate_metadata(step=0), {})  # points x at them
    a.put_writes(by_id("t", "later"), [("w", "y")], "ta")  # drops x from the writes head
    b.put_writes(x, [("__error__", "e")], "tb")
    assert _writes_read_fresh(make_store, x) == [("ta", "w", "a"), ("tb", "__error__", "e")]


def test_a_writes_head_stored_again_by_a_rewrite_is_pointed_at_by_its_new_id(
    make_store: Callable[..., SnapshotStore],
) -> None:
    """b's delete_for_runs replays the writes session: its head holds the very state a kept, under
    a new id. a, putting on b's head, must point at the store's id, not the one it kept (gone)."""
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

    a, b = SnapstoreSaver(make_store()), SnapstoreSaver(make_store())
    c1 = a.put(generate_config("t"), generate_checkpoint(), generate_metadata(step=0, run_id="r0"), {})
    a.put_writes(c1, [("w", 1)], "ta")
    b.put(c1, generate_checkpoint(), generate_metadata(step=1, run_id="r1"), {})
    b.delete_for_runs(["r1"])
    c3 = b.put(c1, generate_checkpoint(), generate_metadata(step=2, run_id="r0"), {})
    a.get_tuple(generate_config("t"))
    a.put(c3, generate_checkpoint(), generate_metadata(step=3, run_id="r0"), {})
    assert _writes_read_fresh(make_store, c1) == [("ta", "w", 1)]
    assert len(list(SnapstoreSaver(make_store()).list(generate_config("t")))) == 3


def test_a_reader_whose_index_is_older_than_the_writes_head_finds_the_writes_through_a_newer_head(
    make_store: Callable[..., SnapshotStore],
) -> None:
    """A reader (another thread of the writer's process, or another process) read the checkpoints
    head; the writer then pointed that checkpoint at its writes in a new head, and committed writes
    that no longer hold them. With its older index the reader found no pointer and no writes:
    pending writes flickered away (found by a trial polling get_state during a run)."""
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

    writer, reader = SnapstoreSaver(make_store()), SnapstoreSaver(make_store())
    c = writer.put(generate_config("t"), generate_checkpoint(), generate_metadata(step=0), {})
    writer.put_writes(c, [("w", 1)], "task-1")
    lane = reader._lane("t", "")
    found = lane.head()
    assert found is not None
    c2 = writer.put(c, generate_checkpoint(), generate_metadata(step=1), {})  # points c at its writes
    writer.put_writes(c2, [("w", 2)], "task-2")  # a writes head without c's
    entries = lane.writes_of(c["configurable"]["checkpoint_id"], found[1])
    assert [(entry[0], entry[2]) for entry in entries] == [("task-1", "w")]



def test_listing_a_thread_decodes_each_segment_once_and_reads_as_get_tuple_does(tmp_path: Any) -> None:
    """``list`` reads one checkpoint after another, newest first: each takes what the one before it
    decoded, so a thread of N checkpoints costs each segment one decoding, not N."""
    from conftest import CountingBackend
    from snapstore.langgraph.names import lane_names

    config: Any = {"configurable": {"thread_id": "agent"}}
    with SnapstoreSaver.from_path(tmp_path / "store") as writer:
        graph = agent_graph(writer)
        for turn in range(12):
            graph.invoke({"messages": [HumanMessage(f"ask {turn}", id=f"h-{turn}")]}, config, durability="sync")
    backend = CountingBackend(tmp_path / "store")
    store = SnapshotStore(backend)
    segments = sum(len(backend.segments(store.session(name, create=False).key)) for name in lane_names("agent", ""))
    listed = list(SnapstoreSaver(store).list(config))
    assert len(listed) == 12 * 4  # input, think, act, end: four checkpoints a turn
    assert len(backend.read) <= 3 * segments < len(listed)  # read once for the index, once decoded
    for found in listed:  # each as a fresh saver's get_tuple reads it alone
        alone = SnapstoreSaver(SnapshotStore.open(tmp_path / "store")).get_tuple(found.config)
        assert as_bytes(found) == as_bytes(alone)


def test_a_listing_gives_the_pending_writes_stored_since_it_began_as_in_memory_saver_does() -> None:
    """A listing read each checkpoint's pending writes by the index of the head as the listing
    began: writes stored for an older checkpoint after that were missing from it (get_tuple gave
    them). It now reads them by the head as it is when it reaches the checkpoint."""
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.memory import InMemorySaver

    def checkpoint(checkpoint_id: str, value: int) -> Any:
        found = empty_checkpoint()
        found.update(id=checkpoint_id, channel_values={"x": value}, channel_versions={"x": value})
        return found

    def listed_and_read(saver: Any) -> tuple[Any, Any]:
        config: Any = {"configurable": {"thread_id": "w", "checkpoint_ns": ""}}
        first = saver.put(config, checkpoint("1", 1), {"step": 0}, {"x": 1})
        saver.put_writes(first, [("x", "a")], "task-a")
        second = saver.put(first, checkpoint("2", 2), {"step": 1}, {"x": 2})
        listing = saver.list(config)
        next(listing)
        saver.put_writes(first, [("y", "b")], "task-b")
        third = saver.put(second, checkpoint("3", 3), {"step": 2}, {"x": 3})
        saver.put_writes(third, [("x", "c")], "task-c")
        return next(listing).pending_writes, saver.get_tuple(first).pending_writes

    expected = listed_and_read(InMemorySaver())
    assert expected[0] == expected[1] == [("task-a", "x", "a"), ("task-b", "y", "b")]
    with SnapstoreSaver.from_conn_string(":memory:") as saver:
        assert listed_and_read(saver) == expected
