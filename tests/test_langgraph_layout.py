"""Threads stored by the saver's earlier layouts read exactly as their writer read them, and carry
on in today's (layout 4: the head's rows are strings, and a serialized value's long runs of text
are pieces of their own).

The stores in ``tests/data/langgraph-layouts/`` were written by the saver of each earlier layout
(``make_layouts.py`` there says how), with what that saver read back beside them:

* format 1: every channel value in one member, ``channel_values``; rows as arrays;
* format 2: one member per channel value (``value:<channel>``, versions in ``value_versions``);
  rows as arrays (``history``: ``[checkpoint id, parent id, metadata]``, ``snapshots`` and
  ``writes_at``: ``[checkpoint id, snapshot id]``).

Layout 3 differs from layout 4 only in how a serialized value is kept (one latin-1 piece): the
saver of layout 3 is this one writing its values in one piece, which the tests below make it do.
"""

from __future__ import annotations

import importlib.util
import random
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from snapstore import SnapshotStore
from snapstore.errors import CorruptObjectError, SnapshotError
from snapstore.langgraph import SnapstoreSaver, encoding, lanes
from test_langgraph_reads import _assert_fresh_reads_match

LAYOUTS = Path(__file__).parent / "data" / "langgraph-layouts"
_spec = importlib.util.spec_from_file_location("make_layouts", LAYOUTS / "make_layouts.py")
assert _spec is not None and _spec.loader is not None
make_layouts = sys.modules["make_layouts"] = importlib.util.module_from_spec(_spec)  # its graph's hints
_spec.loader.exec_module(make_layouts)


def _head_state(saver: SnapstoreSaver) -> dict[str, Any]:
    sess = saver.store.session(saver._lane(make_layouts.THREAD, "").names.checkpoints)
    head = sess.head
    assert head is not None
    state: dict[str, Any] = sess.state(head.id)
    return state


@pytest.fixture(params=[1, 2], ids=["format-1", "format-2"])
def earlier(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[int, Path, dict[str, Any]]:
    """(the layout, a copy of a store it wrote, what its writer read back)."""
    folder = LAYOUTS / f"format-{request.param}"
    shutil.copytree(folder / "store", tmp_path / "store", symlinks=True)  # refs/config/format: a link
    return request.param, tmp_path / "store", orjson.loads((folder / "expected.json").read_bytes())


def test_a_thread_of_an_earlier_layout_reads_as_its_writer_read_it(earlier: tuple[int, Path, dict[str, Any]]) -> None:
    layout, path, expected = earlier
    reader = SnapstoreSaver(SnapshotStore.open(path, create=False))
    assert _head_state(reader)["saver"] == f"snapstore.langgraph/{layout}"
    assert make_layouts.facts(reader) == expected
    assert len(expected) == 15 and sum(bool(found["pending_writes"]) for found in expected.values()) >= 10


def test_each_checkpoint_of_an_earlier_layout_reads_alone_on_a_reopened_saver(
    earlier: tuple[int, Path, dict[str, Any]],
) -> None:
    """A saver opened for one checkpoint (it reads the head for its lists, then the checkpoint and
    its writes through them) gives what the writer read."""
    _layout, path, expected = earlier
    for checkpoint_id, wanted in expected.items():
        config = {"configurable": {"thread_id": make_layouts.THREAD, "checkpoint_id": checkpoint_id}}
        reopened = SnapstoreSaver(SnapshotStore.open(path, create=False))
        found = reopened.get_tuple(config)  # type: ignore[arg-type]
        assert make_layouts.fact(found) == {k: v for k, v in wanted.items() if k != "listed_alike"}


def test_a_thread_of_an_earlier_layout_carries_on_in_the_current_one(earlier: tuple[int, Path, dict[str, Any]]) -> None:
    _layout, path, expected = earlier
    writer = SnapstoreSaver(SnapshotStore.open(path, create=False))
    graph = make_layouts.agent_graph(writer)
    graph.invoke({"messages": [HumanMessage("ask 3", id="h-3")]}, make_layouts.CONFIG)

    stored = _head_state(writer)
    assert stored["saver"] == lanes.FORMAT == "snapstore.langgraph/4" and "channel_values" not in stored
    assert len(stored["checkpoint_ids"]) == len(stored["history"]) == len(expected) + 4
    rows = stored["history"] + stored["snapshots"] + stored["writes_at"]
    assert all(type(row) is str for row in rows)
    assert orjson.loads(stored["history"][0])[0] is None  # [parent id, metadata]: the first has no parent

    reader = SnapstoreSaver(SnapshotStore.open(path, create=False))
    found = make_layouts.facts(reader)
    assert {cid: found[cid] for cid in expected} == expected  # the earlier checkpoints are untouched
    contents = [m.content for m in graph.get_state(make_layouts.CONFIG).values["messages"]]
    assert contents[-3:] == ["ask 3", "thought 8", "acted 9"]
    read, with_writes = _assert_fresh_reads_match(writer, lambda: SnapshotStore.open(path, create=False))
    assert read == len(expected) + 4 and with_writes >= 13


# -- layout 4: a serialized value's runs of text are pieces of their own ----------------------------

_CRAFTED = [
    b"",
    b"short",
    b"x" * (encoding.TEXT_RUN - 1),
    b"x" * encoding.TEXT_RUN,
    b"\xa5head" + b"t" * 100 + b"\xc3\xa9" + "é€😀".encode() * 40 + b"\xff\xfe",
    b"\xed\xa0\x80" + b"a" * 100,  # a surrogate's UTF-8 form is not text: kept as bytes
    b"a" * 100 + b"\x00\x01\x7f" + b"b" * 100 + b"\x80",
    bytes(range(256)) * 3,
]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600) | st.text(max_size=300).map(lambda text: text.encode("utf-8", "surrogatepass")))
def test_serialized_bytes_are_kept_in_pieces_that_join_back_exactly(data: bytes) -> None:
    for sample in (data, *_CRAFTED):
        pieces = encoding.serialized_pieces(sample)
        assert encoding.serialized_bytes([encoding.SERIALIZED_TAG, "t", *pieces]) == sample
        assert orjson.loads(orjson.dumps(pieces)) == pieces  # every piece is JSON text (no lone surrogate)
        texts = pieces[1::2]
        assert all(len(text) >= encoding.TEXT_RUN for text in texts)
        assert all(ord(c) < 0xD800 or ord(c) > 0xDFFF for text in texts for c in text)
        assert all(max(map(ord, piece), default=0) < 256 for piece in pieces[0::2])



@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_CRAFTED) | st.binary(max_size=300), min_size=2, max_size=8))
def test_a_message_list_joins_to_the_bytes_of_its_messages_one_after_another(values: list[bytes]) -> None:
    # a list read in one serializer call: each node's bytes, in order, whatever pieces they are in
    nodes = [[encoding.SERIALIZED_TAG, encoding.MSGPACK, *encoding.serialized_pieces(v)] for v in values]
    assert encoding._packed_bytes(nodes) == b"\xdd" + len(values).to_bytes(4, "big") + b"".join(values)
    assert encoding._packed_bytes([*nodes, [encoding.SERIALIZED_TAG, "json", "{}"]]) is None
    assert encoding._packed_bytes([*nodes, "plain"]) is None

def test_bytes_that_open_as_binary_are_kept_whole_and_not_searched() -> None:
    """A ciphertext or a binary value holds no text: the first form of layout 4 searched it for runs
    all the same, a Python step per short run (found in review); it is kept in one piece, as layout 3
    kept it."""
    binary = bytes(random.Random(7).randrange(256) for _ in range(1 << 16))
    assert encoding.serialized_pieces(binary) == [binary.decode("latin-1")]
    text_after_markers = b"\x92\xa5" + b"a tool's plain answer, " * 20
    assert encoding.serialized_pieces(text_after_markers)[1].startswith("a tool's plain answer")


class _Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


_LONG = "sensor {n}: " + "reading within range, " * 40 + "Zoë's note — ✓"


def _chat_graph(saver: SnapstoreSaver) -> Any:
    def answer(state: _Chat) -> dict[str, Any]:
        n = len(state["messages"])
        return {"messages": [AIMessage(_LONG.format(n=n), id=f"ai-{n}")]}

    return StateGraph(_Chat).add_node("answer", answer).add_edge(START, "answer").compile(checkpointer=saver)


def _chat_turns(saver: SnapstoreSaver, turns: range) -> list[Any]:
    graph = _chat_graph(saver)
    for turn in turns:
        graph.invoke({"messages": [HumanMessage(f"ask {turn}", id=f"h-{turn}")]}, make_layouts.CONFIG)
    return [(m.id, type(m).__name__, m.content) for m in graph.get_state(make_layouts.CONFIG).values["messages"]]


def _message_nodes(state: dict[str, Any]) -> list[list[Any]]:
    nodes: list[list[Any]] = state["value:messages"][1:]
    assert all(node[0] == encoding.SERIALIZED_TAG for node in nodes)
    return nodes


def test_a_long_message_is_stored_with_its_text_as_a_string_of_its_own(tmp_path: Path) -> None:
    with SnapstoreSaver.from_path(tmp_path / "store") as saver:
        written = _chat_turns(saver, range(2))
        nodes = _message_nodes(_head_state(saver))
    answers = [node for node in nodes if len(node) > 3]
    assert len(answers) == 2  # the two answers; the short questions stay one latin-1 piece
    assert all(len(node) == 3 for node in nodes if node not in answers)
    for node, n in zip(answers, (1, 3), strict=True):
        assert any(_LONG.format(n=n) in piece for piece in node[3::2])  # the text, as text
    with SnapstoreSaver.from_path(tmp_path / "store") as reopened:
        read = _chat_graph(reopened).get_state(make_layouts.CONFIG).values["messages"]
        assert [(m.id, type(m).__name__, m.content) for m in read] == written


def test_a_thread_of_layout_3_reads_back_and_carries_on_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as layout_3:  # layout 3's saver: each serialized value one latin-1 piece
        layout_3.setattr(encoding, "serialized_pieces", lambda data: [data.decode("latin-1")])
        layout_3.setattr(lanes, "FORMAT", "snapstore.langgraph/3")
        with SnapstoreSaver.from_path(tmp_path / "store") as saver:
            written = _chat_turns(saver, range(2))
            assert _head_state(saver)["saver"] == "snapstore.langgraph/3"
            assert all(len(node) == 3 for node in _message_nodes(_head_state(saver)))
            before = make_layouts.facts(saver)
    with SnapstoreSaver.from_path(tmp_path / "store") as reader:
        assert make_layouts.facts(reader) == before
        carried = _chat_turns(reader, range(2, 3))
        assert carried[: len(written)] == written and len(carried) == len(written) + 2
        state = _head_state(reader)
    assert state["saver"] == "snapstore.langgraph/4"
    nodes = _message_nodes(state)
    # the first put of layout 4 serializes the thread's messages again, as a new process does: the
    # long ones are then written in pieces, once, and the questions stay one piece
    assert [len(node) > 3 for node in nodes] == [n % 2 == 1 for n in range(len(nodes))]
    with SnapstoreSaver.from_path(tmp_path / "store") as again:
        assert {cid: fact for cid, fact in make_layouts.facts(again).items() if cid in before} == before


def test_a_head_of_a_later_layout_is_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as later:
        later.setattr(lanes, "FORMAT", "snapstore.langgraph/5")
        with SnapstoreSaver.from_path(tmp_path / "store") as saver:
            _chat_turns(saver, range(1))
    with SnapstoreSaver.from_path(tmp_path / "store") as reader, pytest.raises(SnapshotError) as raised:
        reader.get_tuple(make_layouts.CONFIG)
    assert "written by a newer snapstore (snapstore.langgraph/5; this one writes snapstore.langgraph/4)" in str(
        raised.value
    )
    assert raised.value.details["reason"] == "newer layout"


@pytest.mark.parametrize("node", [[], ["Q", 1], ["S", "msgpack"], [1, 2], ["L", ["T"]], {"a": ["x"]}])
def test_a_value_node_of_no_known_form_is_refused_as_damage(node: Any) -> None:
    # a head passes its hash check first: only a crafted or damaged store holds such a node
    codec = encoding.ValueCodec(JsonPlusSerializer())
    with pytest.raises(CorruptObjectError, match="unknown array form"):
        codec.decode(node)
