"""Writes a LangGraph thread with the saver as it is on ``sys.path``, and what it reads back.

The stores beside this script were written by the saver's earlier layouts, each by the commit
that last wrote it, from a clone of the repository::

    git worktree add /tmp/layout-1 565c471~1    # snapstore.langgraph/1
    PYTHONPATH=/tmp/layout-1/src python tests/data/langgraph-layouts/make_layouts.py \\
        tests/data/langgraph-layouts/format-1
    git worktree add /tmp/layout-2 8408d19      # snapstore.langgraph/2
    PYTHONPATH=/tmp/layout-2/src python tests/data/langgraph-layouts/make_layouts.py \\
        tests/data/langgraph-layouts/format-2

Each output folder holds ``store/`` (a directory store) and ``expected.json``: for every
checkpoint the writer lists, what it read back (``facts``). ``tests/test_langgraph_layout.py``
reads the stores with today's saver and compares, so the facts are plain JSON of what a user
sees (message types, ids and contents, metadata, versions, pending writes), not the
serializer's bytes, which a newer LangChain may write differently for the same messages.

The graph is the one ``tests/test_langgraph_reads.py`` runs, copied here so that this script
stays what wrote the stores, whatever the tests' graph becomes.
"""

from __future__ import annotations

import operator
import sys
from pathlib import Path
from typing import Annotated, Any, TypedDict

import orjson
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

THREAD = "kept"
CONFIG: Any = {"configurable": {"thread_id": THREAD}}


class Agent(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    calls: Annotated[list[int], operator.add]


def _think(state: Agent) -> dict[str, Any]:
    n = len(state["messages"])
    return {"messages": [AIMessage(f"thought {n}", id=f"ai-{n}")], "calls": [n]}


def _act(state: Agent) -> dict[str, Any]:
    n = len(state["messages"])
    return {"messages": [AIMessage(f"acted {n}", id=f"act-{n}", response_metadata={"score": 1.0})], "calls": [-n]}


def agent_graph(saver: Any) -> Any:
    builder = StateGraph(Agent).add_sequence([("think", _think), ("act", _act)])
    return builder.add_edge(START, "think").add_edge("act", END).compile(checkpointer=saver)


def plain(value: Any) -> Any:
    """A value as JSON a user would compare: a message as its type, id, content and metadata."""
    if isinstance(value, BaseMessage):
        return {"message": value.type, "id": value.id, "content": value.content, "meta": plain(value.response_metadata)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def fact(found: Any) -> dict[str, Any]:
    """What a read of one checkpoint (a ``CheckpointTuple``) gives, as plain JSON."""
    checkpoint = dict(found.checkpoint)
    return {
        "parent": found.parent_config["configurable"]["checkpoint_id"] if found.parent_config else None,
        "metadata": plain(found.metadata),
        "channel_versions": plain(checkpoint["channel_versions"]),
        "values": plain(checkpoint["channel_values"]),
        "pending_writes": plain(found.pending_writes),
    }


def facts(saver: Any) -> dict[str, Any]:
    """{checkpoint id: what the saver reads of it}, for every checkpoint it lists."""
    out = {}
    for listed in saver.list(None):
        found = saver.get_tuple(listed.config)
        out[found.checkpoint["id"]] = {
            **fact(found),
            "listed_alike": plain(listed.pending_writes) == plain(found.pending_writes),
        }
    return out


def write(folder: Path) -> None:
    from snapstore import SnapshotStore
    from snapstore.langgraph import SnapstoreSaver

    with SnapstoreSaver(SnapshotStore.open(folder / "store", create=True)) as saver:
        graph = agent_graph(saver)
        for turn in range(3):  # default (async) durability: writes and checkpoints interleave
            graph.invoke({"messages": [HumanMessage(f"ask {turn}", id=f"h-{turn}")]}, CONFIG)
        history = list(graph.get_state_history(CONFIG))
        forked = graph.update_state(history[len(history) // 2].config, {"messages": [HumanMessage("fork", id="f")]})
        graph.invoke(None, forked)
        (folder / "expected.json").write_bytes(orjson.dumps(facts(saver), option=orjson.OPT_INDENT_2) + b"\n")


if __name__ == "__main__":
    write(Path(sys.argv[1]))
