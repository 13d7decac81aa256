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
