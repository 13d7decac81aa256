"""Threads stored by the saver's earlier layout (format 1: every channel value in one member,
``channel_values``) read exactly as before, and carry on in today's (format 2: one member per
channel value, ``value:<channel>``, with ``value_versions``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from snapstore import SnapshotStore
from snapstore.langgraph import SnapstoreSaver, lanes
from test_langgraph_reads import _assert_fresh_reads_match, agent_graph, as_bytes

CONFIG: Any = {"configurable": {"thread_id": "kept"}}


def _head_state(saver: SnapstoreSaver) -> dict[str, Any]:
    sess = saver.store.session(saver._lane("kept", "").names.checkpoints)
    head = sess.head
    assert head is not None
    state: dict[str, Any] = sess.state(head.id)
    return state


def test_a_thread_of_format_1_reads_the_same_and_carries_on_in_format_2(
    make_store: Callable[..., SnapshotStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as earlier:  # the saver as it wrote format 1
        earlier.setattr(lanes, "FORMAT", "snapstore.langgraph/1")
        earlier.setattr(lanes, "_value_members", lambda values: {"channel_values": values})
        writer = SnapstoreSaver(make_store())
        graph = agent_graph(writer)
        for turn in range(3):
            graph.invoke({"messages": [HumanMessage(f"ask {turn}", id=f"h-{turn}")]}, CONFIG)
        written = {found.config["configurable"]["checkpoint_id"]: as_bytes(found) for found in writer.list(None)}
    stored = _head_state(writer)
    assert stored["saver"] == "snapstore.langgraph/1" and "messages" in stored["channel_values"]

    reader = SnapstoreSaver(make_store())
    for checkpoint_id, expected in written.items():
        config = {"configurable": {"thread_id": "kept", "checkpoint_ns": "", "checkpoint_id": checkpoint_id}}
        assert as_bytes(reader.get_tuple(config)) == expected

    graph = agent_graph(reader)
    graph.invoke({"messages": [HumanMessage("ask 3", id="h-3")]}, CONFIG)
    stored = _head_state(reader)
    assert stored["saver"] == "snapstore.langgraph/2" and "channel_values" not in stored
    assert stored["value:messages"][0] == "L" and set(stored["value_versions"]) >= {"messages", "calls"}
    contents = [m.content for m in graph.get_state(CONFIG).values["messages"]]
    assert contents[::3] == ["ask 0", "ask 1", "ask 2", "ask 3"]
    read, _with_writes = _assert_fresh_reads_match(reader, make_store)
    assert read == len(written) + 4  # the format-1 checkpoints and the turn after them
