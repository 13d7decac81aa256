"""SnapstoreSaver's async path under real compiled graphs: a saver closed (its ``async with`` left)
while runs on other tasks are still writing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages

from snapstore import SnapshotError
from snapstore.langgraph import SnapstoreSaver


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def _reply(state: Chat) -> dict[str, Any]:
    return {"messages": [AIMessage(f"reply {len(state['messages'])}", id=f"ai-{len(state['messages'])}")]}


def _graph(saver: SnapstoreSaver) -> Any:
    builder = StateGraph(Chat)
    builder.add_node("reply", _reply)
    builder.add_edge(START, "reply")
    return builder.compile(checkpointer=saver)


async def _close_while_running(target: str, round_: int) -> list[BaseException | None]:
    async with SnapstoreSaver.from_conn_string(target) as saver:
        graph = _graph(saver)

        async def conversation(i: int) -> None:
            for turn in range(200):  # more than any machine runs before the close: each is cut off
                config = {"configurable": {"thread_id": f"r{round_}-t{i}"}}
                await graph.ainvoke({"messages": [HumanMessage(f"turn {turn}", id=f"h{turn}")]}, config)

        runs = [asyncio.create_task(conversation(i)) for i in range(20)]
        await asyncio.sleep(0.05)
    return await asyncio.wait_for(asyncio.gather(*runs, return_exceptions=True), 60)


def test_runs_still_writing_when_the_saver_closes_fail_with_the_stores_error(tmp_path: Path) -> None:
    """Runs whose puts are on worker threads when ``async with`` closes a directory store fail with
    its BackendError ("the store ... is closed"), and what they stored reads back and verifies. One
    whose commit held a session's lock as the store closed raised a bare ``OSError: [Errno 9] Bad
    file descriptor`` (3 of 20 runs in a trial): the lock file was closed under the holder."""
    target = str(tmp_path / "store")
    outcomes: list[BaseException | None] = []
    for round_ in range(5):  # each round closes on a moment of its own; one is usually enough
        outcomes += asyncio.run(_close_while_running(target, round_))
    assert [repr(o) for o in outcomes if o is not None and not isinstance(o, SnapshotError)] == []
    assert any(isinstance(o, SnapshotError) and "is closed" in str(o) for o in outcomes)
    with SnapstoreSaver.from_conn_string(target) as saver:
        for found in saver.list(None):
            assert saver.get_tuple(found.config) is not None
        assert saver.store.verify().ok
