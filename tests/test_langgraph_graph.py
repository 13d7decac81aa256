"""SnapstoreSaver under real compiled LangGraph graphs, and what it stores.

Graphs: interrupt and resume, get_state_history, update_state forking from an old checkpoint,
a subgraph, async use. Storage: values the serializer round-trips come back exactly, custom
and encrypting serializers still see every value, a growing message list is stored as appends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import operator
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt
from pydantic import BaseModel

from snapstore import SnapshotStore
from snapstore.langgraph import SnapstoreSaver
from snapstore.langgraph.lanes import channel_values


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    approved: str


def _reply(state: Chat) -> dict[str, Any]:
    n = len(state["messages"])
    return {"messages": [AIMessage(f"reply to {state['messages'][-1].content} ({n})", id=f"ai-{n}")]}


def _review(state: Chat) -> dict[str, Any]:
    return {"approved": interrupt({"question": "approve?", "draft": state["messages"][-1].content})}


def chat_graph(saver: SnapstoreSaver) -> Any:
    builder = StateGraph(Chat)
    builder.add_node("reply", _reply)
    builder.add_node("review", _review)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", "review")
    builder.add_edge("review", END)
    return builder.compile(checkpointer=saver)


def thread(name: str) -> Any:
    return {"configurable": {"thread_id": name}}


def chat_scenario(saver: Any, reopen: Callable[[], Any]) -> list[Any]:
    """Interrupt, resume from a fresh saver, history, a fork from an old checkpoint; what a user sees."""
    graph = chat_graph(saver)
    config = thread("chat-1")
    seen: list[Any] = []
    graph.invoke({"messages": [HumanMessage("hello", id="h-1")]}, config)
    paused = graph.get_state(config)
    seen.append((paused.next, paused.tasks[0].interrupts[0].value))

    graph = chat_graph(reopen())  # resumes from what is stored, not from this process's objects
    seen.append(graph.invoke(Command(resume="yes"), config)["approved"])
    graph.invoke({"messages": [HumanMessage("again", id="h-2")]}, config)
    graph.invoke(Command(resume="no"), config)

    history = list(graph.get_state_history(config))
    seen.append([(h.metadata["source"], h.metadata["step"], h.next, _contents(h.values)) for h in history])

    first_reply = next(h for h in reversed(history) if len(h.values.get("messages", [])) == 2)
    forked = graph.update_state(first_reply.config, {"messages": [HumanMessage("fork", id="h-fork")]})
    fork_state = graph.get_state(forked)
    seen.append(_contents(fork_state.values))
    assert fork_state.parent_config is not None
    fork_parent = fork_state.parent_config["configurable"]["checkpoint_id"]
    seen.append(fork_parent == first_reply.config["configurable"]["checkpoint_id"])
    graph.invoke(None, forked)
    graph.invoke(Command(resume="fork ok"), forked)
    seen.append(_contents(graph.get_state(config).values))
    seen.append(_contents(graph.get_state(history[0].config).values))  # the old branch is intact
    seen.append(len(list(graph.get_state_history(config))))
    return seen


def _contents(values: dict[str, Any]) -> Any:
    return [m.content for m in values.get("messages", [])], values.get("approved")


def test_interrupt_resume_history_and_fork(make_store: Callable[..., SnapshotStore]) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    memory = InMemorySaver()
    expected = chat_scenario(memory, lambda: memory)
    saver = SnapstoreSaver(make_store())
    # a memory store is one object: reopening it is the same saver
    reopen = (lambda: saver) if make_store.kind == "memory" else (lambda: SnapstoreSaver(make_store()))  # type: ignore[attr-defined]
    got = chat_scenario(saver, reopen)
    assert got == expected
    # the fork resumes where its checkpoint stood (before review), with the new message
    assert got[-3] == (["hello", "reply to hello (1)", "fork"], "fork ok")
    assert got[-2] == (["hello", "reply to hello (1)", "again", "reply to again (3)"], "no")


class Outer(TypedDict):
    log: Annotated[list[str], operator.add]


def subgraph_scenario(saver: Any) -> list[Any]:
    inner = StateGraph(Outer)
    inner.add_node("step_a", lambda s: {"log": ["inner a"]})
    inner.add_node("ask", lambda s: {"log": [f"inner asked {interrupt('continue?')}"]})
    inner.add_edge(START, "step_a")
    inner.add_edge("step_a", "ask")
    inner.add_edge("ask", END)
    outer = StateGraph(Outer)
    outer.add_node("first", lambda s: {"log": ["outer first"]})
    outer.add_node("child", inner.compile())
    outer.add_edge(START, "first")
    outer.add_edge("first", "child")
    outer.add_edge("child", END)
    graph = outer.compile(checkpointer=saver)
    config = thread("with-child")
    graph.invoke({"log": ["start"]}, config)
    child: Any = graph.get_state(config, subgraphs=True).tasks[0].state
    namespaces = sorted({c.config["configurable"]["checkpoint_ns"].split(":")[0] for c in saver.list(config)})
    done = graph.invoke(Command(resume="go"), config)
    return [child.values["log"], child.next, namespaces, done["log"]]


def test_subgraph_checkpoints_live_in_their_namespace(tmp_path: Path) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    expected = subgraph_scenario(InMemorySaver())
    with SnapstoreSaver.from_path(tmp_path / "store") as saver:
        got = subgraph_scenario(saver)
        assert got == expected
        assert got[2] == ["", "child"]
        assert "inner asked go" in got[3]
        saver.delete_thread("with-child")
        assert list(saver.list(thread("with-child"))) == []
        assert saver.store.sessions() == []


def test_async_graph(tmp_path: Path) -> None:
    async def run() -> list[str]:
        async with SnapstoreSaver.from_conn_string(str(tmp_path / "store")) as saver:
            graph = chat_graph(saver)
            config = thread("async")
            await graph.ainvoke({"messages": [HumanMessage("hi", id="h")]}, config)
            await graph.ainvoke(Command(resume="ok"), config)
            states = [s async for s in graph.aget_state_history(config)]
            return [m.content for m in states[0].values["messages"]]

    assert asyncio.run(run()) == ["hi", "reply to hi (1)"]


# -- what is stored ----------------------------------------------------------------------------
class Item(BaseModel):
    name: str
    qty: int


@dataclasses.dataclass
class Point:
    x: float
    y: float


EXACT_VALUES: dict[str, Any] = {
    "ints_floats_bools": [1, 1.0, True, 0, 0.0, False, -0.0, None],
    "nan_inf": [float("inf"), float("-inf")],
    "bytes": b"\x00\xffraw\x80 bytes",
    "bytearray": bytearray(b"\x01\x02"),
    "tuple": (1, "two", (3.0,)),
    "set": {1, 2, 3},
    "nested": {"a": [1, {"b": (2, b"\x03")}], "c": {"d": {"e": [[], {}]}}},
    # the serializer keeps a dict's insertion order, where a JSON object is stored sorted: the
    # bytes compared below differ when an order comes back sorted, at any depth
    "dict_order": {"zeta": 1, "alpha": {"y": 1, "b": 2}, "mid": [{"z": 0, "a": 1}, {"a": 0, "z": 1}]},
    "dict_order_nested": {"a": {"é": 1, "e": 2, "z": {"2": 0, "10": 1}}},
    "non_str_keys": {1: "one", (2, 3): "tuple key"},
    "surrogate": "lone \ud800 surrogate",
    "pydantic": Item(name="sword", qty=1),
    "dataclass": Point(1.5, -2.0),
    "messages": [HumanMessage("hi", id="1"), AIMessage("hello", id="2")],
    # every element written by the serializer: the list is decoded in one call (an array of them)
    "serialized_list": [Item(name="a", qty=1), Point(0.0, 1.0), b"\x00\xff", (1, 1.0, True), {3}],
    "mixed_list": [1, Item(name="b", qty=2), "s", [Item(name="c", qty=3)], b"x"],
    "deep": 1,  # replaced below by a list nested deeper than the codec inlines
}


_deep: Any = 1
for _ in range(60):
    _deep = [_deep]
EXACT_VALUES["deep"] = _deep


def _serialized(value: Any) -> tuple[str, bytes]:
    return JsonPlusSerializer().dumps_typed(value)


@pytest.mark.parametrize("name", sorted(EXACT_VALUES))
def test_values_come_back_as_the_serializer_gives_them(name: str, tmp_path: Path) -> None:
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

    value = EXACT_VALUES[name]
    with SnapstoreSaver.from_path(tmp_path / "store") as saver:
        checkpoint = generate_checkpoint(channel_values={"v": value}, channel_versions={"v": 1})
        stored = saver.put(generate_config("t"), checkpoint, generate_metadata(), {"v": 1})
        saver.put_writes(stored, [("w", value)], "task-1")
    expected = JsonPlusSerializer().loads_typed(_serialized(value))
    with SnapstoreSaver.from_path(tmp_path / "store") as reopened:
        got = reopened.get_tuple(stored)
    assert got is not None and got.pending_writes is not None
    for back in (got.checkpoint["channel_values"]["v"], got.pending_writes[0][2]):
        assert type(back) is type(expected)
        assert _serialized(back) == _serialized(expected)  # byte-exact: 1, 1.0 and True differ


def test_only_the_graphs_values_keep_their_key_order_by_serde(tmp_path: Path) -> None:
    """A channel's dict in another order than sorted is written by serde whole; the checkpoint's
    own fields and its metadata stay plain JSON (LangGraph reads them by key), so they diff field
    by field and read in the CLI."""
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

    value = {"zeta": 1, "alpha": 2}
    with SnapstoreSaver.from_path(tmp_path / "store") as saver:
        checkpoint = generate_checkpoint(channel_values={"v": value}, channel_versions={"v": 1, "a": 2})
        saver.put(generate_config("t"), checkpoint, generate_metadata(), {"v": 1})
        sess = saver.store.session(saver._lane("t", "").names.checkpoints)
        head = sess.head
        assert head is not None
        stored = sess.state(head.id)
    assert stored["value:v"][0] == "S"  # serde's bytes: insertion order kept
    assert stored["checkpoint"]["channel_versions"] == {"a": 2, "v": 1}  # a JSON object
    assert isinstance(stored["checkpoint"], dict) and stored["checkpoint"]["id"] == checkpoint["id"]


class XorCipher:
    """A toy cipher: enough to see that every stored value went through it."""

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        return "xor", bytes(b ^ 0x5A for b in plaintext)

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        assert ciphername == "xor"
        return bytes(b ^ 0x5A for b in ciphertext)


def test_encrypting_serializer_sees_every_value(tmp_path: Path) -> None:
    secret = "the launch code is 0000"
    serde = EncryptedSerializer(XorCipher())
    store_dir = tmp_path / "store"
    with SnapstoreSaver.from_path(store_dir, serde=serde) as saver:
        graph = chat_graph(saver)
        graph.invoke({"messages": [HumanMessage(secret, id="h")]}, thread("secret"))
        tup = saver.get_tuple(thread("secret"))
        assert tup is not None and tup.checkpoint["channel_values"]["messages"][0].content == secret
        # every stored value is an ["S", "<type>+xor", ...] leaf: no plain text or dict keys
        state = saver.store.session(saver._lane("secret", "").names.checkpoints).head
        assert state is not None
        stored = saver.store.session(saver._lane("secret", "").names.checkpoints).state(state.id)
        assert secret not in repr(stored)
        assert all(v[1][0] == "L" or v[1][1].endswith("+xor") for v in channel_values(stored).values())
    # the stock serializer cannot read it (it raises whatever msgpack says of ciphertext)
    with SnapstoreSaver.from_path(store_dir) as without_key, pytest.raises(Exception):  # noqa: B017
        without_key.get_tuple(thread("secret"))


def test_a_growing_message_list_is_stored_as_appends(tmp_path: Path) -> None:
    with SnapstoreSaver.from_path(tmp_path / "store") as saver:
        graph = chat_graph(saver)
        config = thread("grow")
        for turn in range(6):
            graph.invoke({"messages": [HumanMessage(f"message {turn} " + "x" * 2000, id=f"h{turn}")]}, config)
            graph.invoke(Command(resume="ok"), config)
        sess = saver.store.session(saver._lane("grow", "").names.checkpoints)
        ids = sess.snapshot_ids()
        for older, newer in zip(ids[-6:], ids[-5:], strict=False):
            ops = sess.diff(older, newer)
            touched = {op["path"].split("/")[1] for op in ops}
            assert "value:messages" in touched or "history" in touched
            for op in ops:
                path = op["path"]
                if path.startswith("/value:messages/"):
                    # only appended elements: the index is past every element the older state had
                    assert op["op"] == "add", op
                    old_len = len(sess.state(older)["value:messages"])
                    assert int(path.rsplit("/", 1)[1] if path[-1] != "-" else old_len) >= old_len
        verify = saver.store.verify()
        assert verify.ok, verify


def test_writes_that_land_before_their_checkpoint_are_kept(make_store: Callable[..., SnapshotStore]) -> None:
    """With async durability a step's writes can reach the saver before its checkpoint, and
    before the previous step's writes: none may be lost, whatever the order."""
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

    saver = SnapstoreSaver(make_store())
    first = saver.put(generate_config("t"), generate_checkpoint(), generate_metadata(step=0), {})
    second_cp = generate_checkpoint()
    second_config = generate_config("t", checkpoint_id=second_cp["id"])
    saver.put_writes(second_config, [("__interrupt__", "ask")], "task-b")  # before its checkpoint
    saver.put_writes(first, [("messages", "late for the first")], "task-a")  # late, for the head
    saver.put(first, second_cp, generate_metadata(step=1), {})
    saver.put_writes(first, [("extra", 1)], "task-c")  # for a checkpoint that is no longer the head
    third = saver.put(second_config, generate_checkpoint(), generate_metadata(step=2), {})
    saver.put_writes(third, [("x", 3)], "task-d")

    reopened = SnapstoreSaver(make_store()) if make_store.kind != "memory" else saver  # type: ignore[attr-defined]
    writes = {}
    for config in (first, second_config, third):
        found = reopened.get_tuple(config)
        assert found is not None and found.pending_writes is not None
        writes[config["configurable"]["checkpoint_id"]] = sorted((w[0], w[1], w[2]) for w in found.pending_writes)
    assert list(writes.values()) == [
        [("task-a", "messages", "late for the first"), ("task-c", "extra", 1)],
        [("task-b", "__interrupt__", "ask")],
        [("task-d", "x", 3)],
    ]


def test_a_saver_store_verifies_exports_and_imports(tmp_path: Path) -> None:
    """The snapstore tools work on a saver's store: verify, export, import into another store."""
    with SnapstoreSaver.from_path(tmp_path / "source") as saver:
        graph = chat_graph(saver)
        for name in ("a", "b"):
            graph.invoke({"messages": [HumanMessage(f"hello {name}", id="h")]}, thread(name))
            graph.invoke(Command(resume="ok"), thread(name))
        expected = {name: [_tuple_key(t) for t in saver.list(thread(name))] for name in ("a", "b")}
        report = saver.store.verify()
        assert report.ok, report
        saver.store.export(tmp_path / "threads.snaparchive")
    with SnapstoreSaver.from_path(tmp_path / "copy") as copy:
        copy.store.import_archive(tmp_path / "threads.snaparchive")
        for name in ("a", "b"):
            assert [_tuple_key(t) for t in copy.list(thread(name))] == expected[name]
        assert chat_graph(copy).get_state(thread("b")).values["approved"] == "ok"


def _tuple_key(found: Any) -> tuple[Any, ...]:
    values = found.checkpoint["channel_values"]
    return (
        found.config["configurable"]["checkpoint_id"],
        found.metadata.get("step"),
        _serialized(values.get("messages")),
        values.get("approved"),
        sorted((w[0], w[1], _serialized(w[2])) for w in found.pending_writes or []),
    )


class NonceCipher:
    """A toy cipher with a fresh nonce per call: the same plaintext never encrypts the same way."""

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(8)
        return "nonce-xor", nonce + bytes(b ^ nonce[i % 8] for i, b in enumerate(plaintext))

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        assert ciphername == "nonce-xor"
        nonce, body = ciphertext[:8], ciphertext[8:]
        return bytes(b ^ nonce[i % 8] for i, b in enumerate(body))


def _message_ops(saver: SnapstoreSaver, thread_id: str) -> list[list[dict[str, Any]]]:
    """The operations on the stored message list between each two consecutive checkpoints."""
    sess = saver.store.session(saver._lane(thread_id, "").names.checkpoints)
    ids = sess.snapshot_ids()
    return [
        [op for op in sess.diff(older, newer) if op["path"].startswith("/value:messages")]
        for older, newer in itertools.pairwise(ids)
    ]


def test_an_encrypted_message_list_still_grows_by_appends(tmp_path: Path) -> None:
    serde = EncryptedSerializer(NonceCipher())
    store_dir = tmp_path / "store"
    config = thread("sealed")
    with SnapstoreSaver.from_path(store_dir, serde=serde) as saver:
        graph = chat_graph(saver)
        for turn in range(3):
            graph.invoke({"messages": [HumanMessage(f"secret {turn}", id=f"h{turn}")]}, config)
            graph.invoke(Command(resume="ok"), config)
    with SnapstoreSaver.from_path(store_dir, serde=serde) as reopened:  # a new process: nothing cached
        graph = chat_graph(reopened)
        graph.invoke({"messages": [HumanMessage("secret 3", id="h3")]}, config)
        contents = [m.content for m in graph.get_state(config).values["messages"]]
        assert contents[-2:] == ["secret 3", "reply to secret 3 (7)"]
        changes = _message_ops(reopened, "sealed")
        assert any(changes)
        for ops in changes:  # elements already stored are never rewritten or removed, only added to
            rewritten = [op for op in ops if op["path"].startswith("/value:messages/") and op["op"] != "add"]
            assert not rewritten, rewritten
        sess = reopened.store.session(reopened._lane("sealed", "").names.checkpoints)
        assert "secret" not in repr(sess.state(sess.snapshot_ids()[-1]))


def test_a_thread_deleted_by_another_saver_is_gone_for_this_one(tmp_path: Path) -> None:
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

    def put(saver: SnapstoreSaver, value: int) -> Any:
        checkpoint = generate_checkpoint(channel_values={"x": value}, channel_versions={"x": value})
        return saver.put(generate_config("t"), checkpoint, generate_metadata(), {"x": value})

    with SnapstoreSaver.from_path(tmp_path / "s") as first, SnapstoreSaver.from_path(tmp_path / "s") as second:
        first.put_writes(put(first, 1), [("w", 1)], "task")
        assert first.get_tuple(generate_config("t")) is not None
        second.delete_thread("t")
        assert first.get_tuple(generate_config("t")) is None
        put(first, 2)
        for saver in (first, second):
            found = saver.get_tuple(generate_config("t"))
            assert found is not None and found.checkpoint["channel_values"] == {"x": 2}
            assert found.pending_writes == []
            assert len(list(saver.list(generate_config("t")))) == 1


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"store": "checkpoints.snapstore"}, "store"),
        ({"store": None}, "store"),
        ({"cached_threads": -1}, "cached_threads"),
        ({"cached_threads": "32"}, "cached_threads"),
    ],
)
def test_bad_arguments_are_refused_by_name(arguments: dict[str, Any], named: str) -> None:
    from snapstore.errors import SnapshotError

    given = {"store": SnapshotStore.memory(), **arguments}
    with pytest.raises(SnapshotError) as refused:
        SnapstoreSaver(**given)
    assert refused.value.details["argument"] == named


def _add_lists(state: list[Any], writes: list[list[Any]]) -> list[Any]:
    return [*state, *itertools.chain.from_iterable(writes)]


@pytest.mark.parametrize("frequency", [4, 100])
def test_prune_keeps_what_a_delta_channel_is_rebuilt_from(tmp_path: Path, frequency: int) -> None:
    """prune(keep_latest) keeps the latest checkpoint and the ancestors back to where each channel
    it versions without a value has one: a DeltaChannel between its snapshots is rebuilt from the
    nearest one and the writes since, and with the latest checkpoint alone it came back empty,
    without an error (BaseCheckpointSaver.prune says so)."""
    from langgraph.channels.delta import DeltaChannel

    # the functional form: its annotations are objects here, where this module's are strings
    log = TypedDict(  # noqa: UP013
        "log", {"log": Annotated[list[str], DeltaChannel(_add_lists, snapshot_frequency=frequency)], "n": int},
        total=False,
    )

    def step(state: Any) -> dict[str, Any]:
        n = state.get("n", 0)
        return {"log": [f"msg{n}"], "n": n + 1}

    builder = StateGraph(log)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_edge("step", END)
    with SnapstoreSaver.from_path(tmp_path / "store") as saver:
        graph = builder.compile(checkpointer=saver)
        for thread_id in ("pruned", "kept"):
            for _ in range(9):
                graph.invoke({}, thread(thread_id))
        before = graph.get_state(thread("pruned")).values
        assert before["log"] == [f"msg{n}" for n in range(9)]
        count = len(list(saver.list(thread("pruned"))))
        saver.prune(["pruned"], strategy="keep_latest")
    with SnapstoreSaver.from_path(tmp_path / "store") as reopened:
        graph = builder.compile(checkpointer=reopened)
        assert graph.get_state(thread("pruned")).values == before
        left = len(list(reopened.list(thread("pruned"))))
        # with snapshots every 4 updates the chain back to the last one is kept, the rest pruned; with
        # none yet (every 100), the whole history is what the channel is rebuilt from, and stays
        assert left < count if frequency == 4 else left == count
        assert graph.get_state(thread("kept")).values == before
        graph.invoke({}, thread("pruned"))  # and the thread goes on from there
        assert graph.get_state(thread("pruned")).values["log"] == [f"msg{n}" for n in range(10)]


def test_prune_of_a_graph_without_delta_channels_keeps_the_latest_checkpoint_alone(tmp_path: Path) -> None:
    """Every graph versions channels it holds no value for (``__start__``, ``branch:to:`` triggers):
    taking them for delta channels kept a loop's whole history through a prune."""

    class Loop(TypedDict, total=False):
        n: int

    def step(state: Loop) -> dict[str, Any]:
        return {"n": state.get("n", 0) + 1}

    builder = StateGraph(Loop).add_node("step", step).add_edge(START, "step")
    builder.add_conditional_edges("step", lambda state: END if state["n"] >= 20 else "step")
    with SnapstoreSaver.from_path(tmp_path / "store") as saver:
        graph = builder.compile(checkpointer=saver)
        graph.invoke({"n": 0}, thread("loop"))
        assert len(list(saver.list(thread("loop")))) == 22
        saver.prune(["loop"], strategy="keep_latest")
        assert [t.checkpoint["channel_values"].get("n") for t in saver.list(thread("loop"))] == [20]
        assert graph.get_state(thread("loop")).values == {"n": 20}


@pytest.mark.parametrize("call", ["prune", "delete_for_runs"])
def test_a_single_id_given_where_several_are_is_refused_not_taken_as_its_characters(
    tmp_path: Path, call: str
) -> None:
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_metadata

    with SnapstoreSaver.from_path(tmp_path / "store") as saver:
        for thread_id in ("1", "2", "12"):
            saver.put(thread(thread_id), generate_checkpoint(), generate_metadata(), {})
        with pytest.raises(TypeError, match=r"must be a sequence of ids, not a str: pass \['12'\]"):
            getattr(saver, call)("12")
        assert all(saver.get_tuple(thread(thread_id)) is not None for thread_id in ("1", "2", "12"))


def test_a_namespace_listed_without_a_thread_is_that_namespace_of_every_thread(tmp_path: Path) -> None:
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_metadata

    with SnapstoreSaver.from_path(tmp_path / "store") as saver:
        for thread_id, namespace in (("a", ""), ("a", "sub:1"), ("b", "sub:1"), ("b", "sub:2")):
            config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": namespace}}
            saver.put(config, generate_checkpoint(), generate_metadata(), {})
        listed = saver.list({"configurable": {"checkpoint_ns": "sub:1"}})
        found = sorted((t.config["configurable"]["thread_id"], t.config["configurable"]["checkpoint_ns"])
                       for t in listed)
        assert found == [("a", "sub:1"), ("b", "sub:1")]


def test_a_memory_saver_used_after_its_with_block_says_it_is_closed() -> None:
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_metadata

    from snapstore.errors import BackendError

    with SnapstoreSaver.from_conn_string(":memory:") as saver:
        saver.put(thread("t"), generate_checkpoint(), generate_metadata(), {})
    with pytest.raises(BackendError, match="the memory store is closed"):
        saver.get_tuple(thread("t"))
    with pytest.raises(BackendError, match="the memory store is closed"):
        saver.put(thread("t"), generate_checkpoint(), generate_metadata(), {})


def test_a_thread_id_that_is_not_text_is_listed_and_given_back_as_it_came(tmp_path: Path) -> None:
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_metadata

    with SnapstoreSaver.from_path(tmp_path / "store") as saver:
        config: Any = {"configurable": {"thread_id": 42, "checkpoint_ns": ""}}
        stored = saver.put(config, generate_checkpoint(), generate_metadata(), {})
        assert stored["configurable"]["thread_id"] == 42  # as InMemorySaver gives it back
        assert saver.get_tuple(config) is not None
        assert len(list(saver.list({"configurable": {"thread_id": 42}}))) == 1  # an AttributeError here
        assert len(list(saver.list({"configurable": {"thread_id": "42"}}))) == 1  # one thread: stored as text
