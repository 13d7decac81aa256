"""Threads the saver refuses to read rather than read wrong: one whose newest stored bytes are
damaged (not rewound to an older checkpoint), one whose writes session is missing (not read
without its pending writes), and a renamed copy of a thread (not read as a namespace of it).

Damage takes the rest of its segment with it. In the newest segment of a thread's checkpoints
session, that is the newest checkpoints: the head that still reads is an older one, and a graph
reading it would silently go on from there, or find no thread at all, and commit over what was
lost. The saver raises ``CorruptObjectError`` naming the thread instead, until a user chooses how
to go on (here: ``snapstore rollback`` to a checkpoint that reads).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from snapstore import SnapshotStore
from snapstore.errors import BackendError, CorruptObjectError, InvalidNameError
from snapstore.langgraph import SnapstoreSaver
from snapstore.langgraph.names import lane_names
from snapstore.store import session_key

THREAD = "t1"
CONFIG: Any = {"configurable": {"thread_id": THREAD}}


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def _echo(state: Chat) -> dict[str, Any]:
    n = len(state["messages"])
    return {"messages": [AIMessage(f"echo: {state['messages'][-1].content}", id=f"ai-{n}")]}


def echo_graph(saver: SnapstoreSaver) -> Any:
    builder = StateGraph(Chat)
    builder.add_node("echo", _echo)
    builder.add_edge(START, "echo")
    builder.add_edge("echo", END)
    return builder.compile(checkpointer=saver)


def _turn(graph: Any, i: int) -> None:
    graph.invoke({"messages": [HumanMessage(f"turn {i}", id=f"human-{i}")]}, CONFIG)


def _contents(graph: Any) -> list[str]:
    return [m.content for m in graph.get_state(CONFIG).values["messages"]]


def _thread_of_six_turns(root: Path) -> list[str]:
    with SnapstoreSaver.from_path(root) as saver:
        graph = echo_graph(saver)
        for i in range(6):
            _turn(graph, i)
        return _contents(graph)


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _newest_checkpoints_segment(root: Path) -> Path:
    name = lane_names(THREAD, "").checkpoints
    return sorted((root / "sessions" / session_key(name)).glob("*.seg"))[-1]


@pytest.mark.parametrize("where", ["middle", "first entry"])
def test_a_thread_whose_newest_checkpoints_are_damaged_is_refused_not_rewound(tmp_path: Path, where: str) -> None:
    root = tmp_path / "store"
    _thread_of_six_turns(root)
    segment = _newest_checkpoints_segment(root)
    _flip(segment, segment.stat().st_size // 2 if where == "middle" else 20)
    with SnapstoreSaver.from_path(root) as saver:
        with pytest.raises(CorruptObjectError, match=f"thread '{THREAD}'.*lost") as raised:
            saver.get_tuple(CONFIG)
        assert raised.value.details["reason"] == "damage"
        assert raised.value.details["session"] == lane_names(THREAD, "").checkpoints
        with pytest.raises(CorruptObjectError):
            list(saver.list(CONFIG))
        graph = echo_graph(saver)
        with pytest.raises(CorruptObjectError):
            _turn(graph, 6)  # never committed over what was lost
    with SnapshotStore.open(root) as store:
        assert not store.verify().ok


def test_a_user_goes_on_from_a_checkpoint_that_reads_by_moving_the_head_on_purpose(tmp_path: Path) -> None:
    root = tmp_path / "store"
    whole = _thread_of_six_turns(root)
    segment = _newest_checkpoints_segment(root)
    _flip(segment, segment.stat().st_size // 2)
    name = lane_names(THREAD, "").checkpoints
    with SnapshotStore.open(root) as store:
        readable = store.session(name).head
    assert readable is not None
    moved = subprocess.run(
        [sys.executable, "-m", "snapstore", "--store", str(root), "rollback", name, readable.id],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert moved.returncode == 0, moved.stderr
    with SnapstoreSaver.from_path(root) as saver:
        graph = echo_graph(saver)
        before = _contents(graph)
        assert before == whole[: len(before)] and len(before) < len(whole)  # an older checkpoint, as chosen
        _turn(graph, 6)
        after = _contents(graph)
        # on from the chosen checkpoint (one taken mid-step drops that step's pending writes, as LangGraph does)
        assert after[-2:] == ["turn 6", "echo: turn 6"] and after[:-2] == whole[: len(after) - 2]


def test_a_thread_imported_without_its_writes_session_is_refused_by_name(tmp_path: Path) -> None:
    root, copy, archive = tmp_path / "store", tmp_path / "copy", tmp_path / "checkpoints-only.snaparchive"
    with SnapstoreSaver.from_path(root) as saver:
        graph = echo_graph(saver)
        for i in range(3):
            _turn(graph, i)
        assert saver.get_tuple(CONFIG).pending_writes is not None  # type: ignore[union-attr]
    names = lane_names(THREAD, "")
    with SnapshotStore.open(root) as store:
        store.export(archive, sessions=[names.checkpoints])  # a thread is two sessions: one left out
    with SnapshotStore.open(copy) as store:
        store.import_archive(archive)
    with SnapstoreSaver.from_path(copy) as saver:
        for read in (lambda: saver.get_tuple(CONFIG), lambda: list(saver.list(CONFIG))):
            with pytest.raises(CorruptObjectError, match="incomplete") as raised:
                read()
            assert raised.value.details == {
                "thread_id": THREAD,
                "checkpoint_ns": "",
                "session": names.writes,
                "reason": "missing",
            }


def _put_three(saver: SnapstoreSaver, thread: str, base: int) -> None:
    from langgraph.checkpoint.base import empty_checkpoint

    config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    for i in range(3):
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"v": base + i}
        checkpoint["channel_versions"] = {"v": i + 1}
        config = saver.put(config, checkpoint, {"source": "loop", "step": i, "parents": {}}, {"v": i + 1})


@pytest.mark.parametrize("thread_id", ["t", "t" * 120])  # a name, and one too long for it (hashed)
def test_a_renamed_copy_of_a_thread_is_not_read_as_a_namespace_of_it(tmp_path: Path, thread_id: str) -> None:
    theirs, ours, archive = tmp_path / "theirs", tmp_path / "ours", tmp_path / "theirs.snaparchive"
    with SnapstoreSaver.from_path(theirs) as saver:
        _put_three(saver, thread_id, 100)
    with SnapshotStore.open(theirs) as store:
        store.export(archive)
    with SnapstoreSaver.from_path(ours) as saver:
        _put_three(saver, thread_id, 0)
    with SnapshotStore.open(ours) as store:
        report = store.import_archive(archive, on_conflict="rename")  # the same thread, another history
        checkpoints = lane_names(thread_id, "").checkpoints
        assert report.renamed == {checkpoints: f"{checkpoints}-imported"}
    with SnapstoreSaver.from_path(ours) as saver:
        for config in (None, {"configurable": {"thread_id": thread_id}}):
            listed = [(t.config["configurable"]["checkpoint_ns"], t.checkpoint["channel_values"]["v"])
                      for t in saver.list(config)]
            assert listed == [("", 2), ("", 1), ("", 0)]  # the thread, once; the copy is no namespace of it
        if thread_id == "t":  # a hashed name does not parse as a namespace: there is none to ask for
            copy: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": "-imported"}}
            with pytest.raises(CorruptObjectError, match="holds LangGraph thread 't'") as raised:
                saver.get_tuple(copy)
            assert raised.value.details["reason"] == "renamed"


def test_a_sqlite_url_given_to_from_conn_string_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # SqliteSaver's spelling, kept by a user switching over
    with pytest.raises(BackendError, match=r"'sqlite:///checkpoints.db' is a sqlite:// URL"):
        SnapstoreSaver.from_conn_string("sqlite:///checkpoints.db")
    assert list(tmp_path.iterdir()) == []  # no folder named "sqlite:" was made


def test_a_thread_id_or_namespace_with_a_lone_surrogate_is_refused_by_its_config_key(tmp_path: Path) -> None:
    """Found by an outside trial: the refusal came from deep in the store and named the state's
    ``/thread_id``, not the run's config. Nothing is written either way."""
    with SnapstoreSaver.from_path(tmp_path / "store") as saver:
        app = StateGraph(Chat).add_node("echo", _echo).add_edge(START, "echo").add_edge("echo", END).compile(
            checkpointer=saver
        )
        with pytest.raises(InvalidNameError, match=r"config\['configurable'\]\['thread_id'\] .* lone surrogate"):
            app.invoke({"messages": [HumanMessage("hi", id="h")]}, {"configurable": {"thread_id": "a\udc80b"}})
        assert saver.store.sessions() == []
        in_namespace: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": "sub\udc80"}}
        with pytest.raises(InvalidNameError, match=r"\['checkpoint_ns'\] .* lone surrogate"):
            saver.put(in_namespace, empty_checkpoint(), {"step": 0}, {})
        with pytest.raises(InvalidNameError, match=r"\['checkpoint_ns'\] .* lone surrogate"):
            saver.put_writes({"configurable": {**in_namespace["configurable"], "checkpoint_id": "c"}}, [("x", 1)], "t1")
        assert saver.store.sessions() == []
        app.invoke({"messages": [HumanMessage("hi", id="h")]}, CONFIG)
        before = saver.store.sessions()
        with pytest.raises(InvalidNameError, match=r"\['thread_id'\] .* lone surrogate"):
            saver.copy_thread(THREAD, "b\udc80")
        assert saver.store.sessions() == before
