"""SnapstoreSaver serializes a message once, not at every step, and never keeps a stale one.

A message list's value at each step holds the message objects of the step before: the saver
reuses what it stored for an object unless that object changed since. The oracles: what the
serializer gives for each value at the time of its put, with old messages changed in place in
every way a field can change between puts; and ``InMemorySaver``, which serializes every value
of every checkpoint again, under the same graph.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from snapstore.langgraph import SnapstoreSaver

SERDE = JsonPlusSerializer()
THREAD: Any = {"configurable": {"thread_id": "changed"}}


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


@dataclasses.dataclass
class _Note:
    """A value whose pickle leaves out what its serialization writes."""

    text: str

    def __getstate__(self) -> dict[str, Any]:
        return {}


def _message(n: int) -> AIMessage:
    return AIMessage(
        f"reply {n}",
        id=f"ai-{n}",
        response_metadata={"count": 1, "nested": {"flags": [1, 2]}},
        tool_calls=[{"name": "lookup", "args": {"page": n}, "id": f"call-{n}"}],
    )


def _change(messages: list[Any], round_no: int) -> None:
    """One in-place change per round to messages already stored: none may be missed."""
    first_ai = next(m for m in messages if isinstance(m, AIMessage))
    if round_no == 1:
        first_ai.response_metadata["count"] = 1.0  # equal in Python, not to the serializer
    elif round_no == 2:
        first_ai.response_metadata["nested"]["flags"].append(3)  # deep inside
    elif round_no == 3:
        first_ai.tool_calls[0]["args"]["page"] = True  # 1 == True as well
    elif round_no == 4:
        messages[0].content = "rewritten"  # a field assigned
    elif round_no == 5:
        first_ai.additional_kwargs["when"] = datetime.datetime(2024, 1, 2, 3, 4, 5)  # not a plain value
    elif round_no == 6:
        first_ai.additional_kwargs["when"] = datetime.datetime(2024, 1, 2, 3, 4, 6)  # and it changes
    elif round_no == 7:
        messages[-1].__dict__["name"] = "set behind pydantic's back"
    elif round_no == 8:
        messages[-1].__class__ = HumanMessage  # another type, same fields
    elif round_no == 9:
        first_ai.additional_kwargs["note"] = _Note("kept out of its pickle")
    elif round_no == 10:  # on an object put, the note is a _Note; on one given back, the dict it became
        note = first_ai.additional_kwargs["note"]
        if isinstance(note, _Note):
            note.text = "changed where its pickle does not look"
        else:
            note["text"] = "changed"


def _stored(saver: SnapstoreSaver) -> dict[str, bytes]:
    return {
        found.config["configurable"]["checkpoint_id"]: SERDE.dumps_typed(
            found.checkpoint["channel_values"]["messages"]
        )[1]
        for found in saver.list(THREAD)
    }


def test_messages_changed_in_place_are_stored_as_changed(tmp_path: Path) -> None:
    """Checkpoints put one after another with the same message objects, changed in place between
    two puts (on the objects put, and on the objects the saver gave back): each checkpoint
    comes back as the serializer gave its value at the time of its put."""
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

    expected: dict[str, bytes] = {}
    with SnapstoreSaver.from_path(tmp_path / "store") as saver:
        config = generate_config("changed")
        messages: list[Any] = [HumanMessage("hello", id="h-0")]
        for step in range(1, 21):
            messages = [*messages, _message(step)]
            checkpoint = generate_checkpoint(channel_values={"messages": messages}, channel_versions={"messages": step})
            expected[checkpoint["id"]] = SERDE.dumps_typed(messages)[1]
            config = saver.put(config, checkpoint, generate_metadata(step=step), {"messages": step})
            if step % 2 == 0:  # each change twice: on the objects put, then on those the saver gives back
                found = saver.get_tuple(config)
                assert found is not None
                messages = found.checkpoint["channel_values"]["messages"]
            _change(messages, (step + 1) // 2)
        assert _stored(saver) == expected
    with SnapstoreSaver.from_path(tmp_path / "store") as reopened:  # what is stored, not what is cached
        assert _stored(reopened) == expected
        assert reopened.store.verify().ok


def _talk(state: Chat) -> dict[str, Any]:
    return {"messages": [_message(len(state["messages"]))]}


def graph(saver: Any) -> Any:
    builder = StateGraph(Chat)
    builder.add_node("talk", _talk)
    builder.add_edge(START, "talk")
    builder.add_edge("talk", END)
    return builder.compile(checkpointer=saver)


def _history(app: Any, config: Any) -> list[bytes]:
    return [SERDE.dumps_typed(h.values.get("messages", []))[1] for h in app.get_state_history(config)]


def test_a_graph_leaves_the_history_an_every_value_saver_leaves(tmp_path: Path) -> None:
    config = {"configurable": {"thread_id": "chat"}}
    oracle = graph(InMemorySaver())
    with SnapstoreSaver.from_path(tmp_path / "store") as saver:
        app = graph(saver)
        for turn in range(8):
            message = {"messages": [HumanMessage(f"turn {turn}", id=f"h-{turn}")]}
            oracle.invoke(message, config)
            app.invoke(message, config)
        expected = _history(oracle, config)
        assert _history(app, config) == expected
    with SnapstoreSaver.from_path(tmp_path / "store") as reopened:
        assert _history(graph(reopened), config) == expected


def _count_serialized(saver: SnapstoreSaver) -> list[str]:
    """The ids of the messages the saver's serializer is given from now on, one per call."""
    serialized: list[str] = []
    dumps_typed = saver.codec.serde.dumps_typed

    def counted(value: Any) -> tuple[str, bytes]:
        if isinstance(value, BaseMessage):
            serialized.append(str(value.id))
        return dumps_typed(value)

    saver.codec.serde.dumps_typed = counted  # type: ignore[method-assign]
    return serialized


def test_each_message_is_serialized_once_per_place_it_is_stored(tmp_path: Path) -> None:
    """Once in each place that stores it: the pending write that brings it, the checkpoint that
    first holds it (and for the user's input, the input checkpoint's start channel); not again at
    each later step, which would grow with the square of the turns."""
    with SnapstoreSaver.from_path(tmp_path / "store") as saver:
        serialized = _count_serialized(saver)
        app = graph(saver)
        config = {"configurable": {"thread_id": "once"}}
        for turn in range(12):
            app.invoke({"messages": [HumanMessage(f"turn {turn}", id=f"h-{turn}")]}, config)
        messages = app.get_state(config).values["messages"]
    assert len(messages) == 24
    assert sorted(set(serialized)) == sorted(str(m.id) for m in messages)
    assert max(serialized.count(str(m.id)) for m in messages) <= 3, {i: serialized.count(i) for i in set(serialized)}


def test_reading_an_older_checkpoint_between_puts_does_not_undo_the_reuse(tmp_path: Path) -> None:
    """A read of an older checkpoint between two puts (another request on a server, a UI showing
    history) leaves the writer's kept serializations alone: its next put serializes only what
    is new, and what it stores is still what the serializer gives."""
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

    with SnapstoreSaver.from_path(tmp_path / "store") as saver:
        serialized = _count_serialized(saver)
        config = generate_config("changed")
        messages: list[Any] = [HumanMessage("hello", id="h-0")]
        expected: dict[str, bytes] = {}
        first: Any = None
        for step in range(1, 9):
            messages = [*messages, _message(step)]
            checkpoint = generate_checkpoint(channel_values={"messages": messages}, channel_versions={"messages": step})
            expected[checkpoint["id"]] = SERDE.dumps_typed(messages)[1]
            config = saver.put(config, checkpoint, generate_metadata(step=step), {"messages": step})
            first = first or config
            if step > 1:
                older = saver.get_tuple(first)
                assert older is not None and len(older.checkpoint["channel_values"]["messages"]) == 2
        assert sorted(serialized) == sorted(str(m.id) for m in messages)
        assert _stored(saver) == expected


def test_a_run_forked_from_an_older_checkpoint_serializes_its_messages_once(tmp_path: Path) -> None:
    """The messages of an older checkpoint a run forks from are serialized once, at the fork's
    first put, and reused by the run that carries on from it."""
    with SnapstoreSaver.from_path(tmp_path / "store") as saver:
        app = graph(saver)
        config = {"configurable": {"thread_id": "fork"}}
        for turn in range(6):
            app.invoke({"messages": [HumanMessage(f"turn {turn}", id=f"h-{turn}")]}, config)
        older = next(h for h in app.get_state_history(config) if len(h.values.get("messages", [])) == 6)
        serialized = _count_serialized(saver)
        app.update_state(older.config, {"messages": [HumanMessage("fork", id="h-fork")]})
        for turn in range(6):
            app.invoke({"messages": [HumanMessage(f"after {turn}", id=f"f-{turn}")]}, config)
        messages = app.get_state(config).values["messages"]
    forked_from = [str(m.id) for m in older.values["messages"]]
    assert [str(m.id) for m in messages[:6]] == forked_from and len(messages) == 19
    assert [serialized.count(i) for i in forked_from] == [1] * 6
    assert max(serialized.count(str(m.id)) for m in messages) <= 3, {i: serialized.count(i) for i in set(serialized)}


def _long_list_message(i: int) -> BaseMessage:
    return AIMessage(f"m {i}", id=f"ai-{i}") if i % 500 == 0 else HumanMessage(f"m {i}", id=f"h-{i}")


def test_a_long_message_list_changed_anywhere_is_stored_as_changed(tmp_path: Path) -> None:
    """A change in place anywhere in a list of thousands of messages (its start, middle and end,
    the 1,000th and 1,001st), of a value or of a type, is seen at the next put."""
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

    def changed(messages: list[Any], step: int) -> None:
        count = len(messages)
        if step == 2:
            messages[0].content = "first, changed"
        elif step == 4:
            messages[count // 2].additional_kwargs["n"] = 1
        elif step == 5:
            messages[count // 2].additional_kwargs["n"] = 1.0  # equal in Python, not to the serializer
        elif step == 7:
            messages[count - 1].response_metadata["last"] = True  # the run's last message
        elif step == 8:
            messages[999].content = "the end of the first batch"
        elif step == 9:
            messages[1000].content = "the start of the second"
        elif step == 10:
            messages[1500].__class__ = HumanMessage  # another type, the fields it has

    lengths = [1, 2, 3, 999, 1000, 1001, 1002, 1999, 2000, 2001, 2002, 2003]
    expected: dict[str, bytes] = {}
    with SnapstoreSaver.from_path(tmp_path / "store") as saver:
        config = generate_config("changed")
        messages: list[Any] = []
        for step, length in enumerate(lengths):
            messages = [*messages, *(_long_list_message(i) for i in range(len(messages), length))]
            checkpoint = generate_checkpoint(channel_values={"messages": messages}, channel_versions={"messages": step})
            expected[checkpoint["id"]] = SERDE.dumps_typed(messages)[1]
            config = saver.put(config, checkpoint, generate_metadata(step=step), {"messages": step})
            changed(messages, step)
        assert _stored(saver) == expected
    with SnapstoreSaver.from_path(tmp_path / "store") as reopened:
        assert _stored(reopened) == expected
