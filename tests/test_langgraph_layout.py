"""Threads stored by the saver's earlier layouts read exactly as their writer read them, and carry
on in today's (format 3: the head's rows are strings).

The stores in ``tests/data/langgraph-layouts/`` were written by the saver of each earlier layout
(``make_layouts.py`` there says how), with what that saver read back beside them:

* format 1: every channel value in one member, ``channel_values``; rows as arrays;
* format 2: one member per channel value (``value:<channel>``, versions in ``value_versions``);
  rows as arrays (``history``: ``[checkpoint id, parent id, metadata]``, ``snapshots`` and
  ``writes_at``: ``[checkpoint id, snapshot id]``).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from langchain_core.messages import HumanMessage

from snapstore import SnapshotStore
from snapstore.langgraph import SnapstoreSaver, lanes
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


def test_a_thread_of_an_earlier_layout_carries_on_in_format_3(earlier: tuple[int, Path, dict[str, Any]]) -> None:
    _layout, path, expected = earlier
    writer = SnapstoreSaver(SnapshotStore.open(path, create=False))
    graph = make_layouts.agent_graph(writer)
    graph.invoke({"messages": [HumanMessage("ask 3", id="h-3")]}, make_layouts.CONFIG)

    stored = _head_state(writer)
    assert stored["saver"] == lanes.FORMAT == "snapstore.langgraph/3" and "channel_values" not in stored
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
