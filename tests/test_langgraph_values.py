"""Values SnapstoreSaver gave back differently from InMemorySaver, found by a differential fuzzer
(the same checkpoints, metadata and pending writes put into both, read back with get_tuple and
list, compared by value and by type at every depth), and ids it refused by naming its own insides.

Each test puts the same thing into InMemorySaver and into SnapstoreSaver on a memory store, on a
directory store, and reads it back also through a saver on the reopened directory store.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import BaseModel, PrivateAttr

from snapstore import SnapshotStore
from snapstore.errors import InvalidNameError, InvalidStateError
from snapstore.langgraph import SnapstoreSaver

CFG = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}


class Secret(BaseModel):
    x: int = 0
    _secret: str = PrivateAttr(default="default")


def same(a: Any, b: Any, path: str = "$") -> str | None:
    """None when equal with the same types at every depth, else where they differ."""
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} {a!r} != {type(b).__name__} {b!r}"
    if isinstance(a, float):
        ok = (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
        return None if ok else f"{path}: {a!r} != {b!r}"
    if isinstance(a, dict):
        if set(a) != set(b):
            return f"{path}: keys {list(a)} != {list(b)}"
        for k in a:
            found = same(a[k], b[k], f"{path}[{k!r}]")
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = same(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(a, BaseModel):
        return same((a.__dict__, a.__pydantic_private__), (b.__dict__, b.__pydantic_private__), f"{path}<model>")
    return None if a == b else f"{path}: {a!r} != {b!r}"


def _savers(tmp_path: Path, serde_factory: Any) -> Iterator[tuple[str, Any]]:
    yield "memory", SnapstoreSaver(SnapshotStore.memory(), serde=serde_factory())
    yield "directory", SnapstoreSaver(SnapshotStore.open(tmp_path / "store"), serde=serde_factory())


def _put_all(saver: Any, values: dict[str, Any], metadata: dict[str, Any], write: Any) -> None:
    cp = empty_checkpoint()
    cp["channel_values"] = dict(values)
    cp["channel_versions"] = {k: 1 for k in values}
    config = saver.put(CFG, cp, metadata, {k: 1 for k in values})
    saver.put_writes(config, [("w", write)], "task-1")


def _view(saver: Any) -> dict[str, Any]:
    t = saver.get_tuple(CFG)
    assert t is not None
    return {"values": t.checkpoint["channel_values"], "metadata": t.metadata, "writes": t.pending_writes}


def _compare(
    tmp_path: Path, serde_factory: Any, values: dict[str, Any], metadata: dict[str, Any], write: Any
) -> list[str]:
    reference = InMemorySaver(serde=serde_factory())
    _put_all(reference, values, metadata, write)
    want = _view(reference)
    found = []
    for name, saver in _savers(tmp_path, serde_factory):
        _put_all(saver, values, metadata, write)
        readers = [(name, saver)]
        if name == "directory":
            saver.close()
            saver.store.close()
            readers = [
                ("directory, reopened", SnapstoreSaver(SnapshotStore.open(tmp_path / "store"), serde=serde_factory()))
            ]
        for reader_name, reader in readers:
            got = _view(reader)
            for part in ("values", "metadata", "writes"):
                d = same(want[part], got[part], f"{part}")
                if d:
                    found.append(f"[{reader_name}] {d}")
    return found


def test_a_bytearray_inside_a_list_or_dict_comes_back_as_in_memory_saver_gives_it(tmp_path: Path) -> None:
    """InMemorySaver serializes the whole list or dict (msgpack: a nested bytearray comes back as
    bytes); SnapstoreSaver serializes each element alone, and a bytearray alone comes back as one."""
    value = {"a": bytearray(b"\x01"), "b": [bytearray(b"\x02"), b"\x03"]}
    found = _compare(tmp_path, lambda: None, {"v": value, "l": [bytearray(b"\xff")]}, {"m": value}, value)
    assert not found, "\n".join(found)


def test_pickle_fallback_containers_come_back_as_in_memory_saver_gives_them(tmp_path: Path) -> None:
    """Under JsonPlusSerializer(pickle_fallback=True) a list or dict msgpack cannot encode whole
    (an int beyond 64 bits in it) is pickled whole by InMemorySaver: its tuples stay tuples and its
    models keep their private attributes. SnapstoreSaver splits it and serializes each element
    alone, through msgpack where it can: tuples come back as lists, private attributes reset."""

    def value() -> dict[str, Any]:
        model = Secret(x=1)
        model._secret = "set"
        return {"big": 2**70, "model": model, "pair": (1, 2)}  # keys in sorted order: stored inline

    serde = lambda: JsonPlusSerializer(pickle_fallback=True)  # noqa: E731
    found = _compare(tmp_path, serde, {"d": value(), "l": [2**70, (1, 2)]}, {"big": 2**70, "m": (1, 2)}, [2**70, (3,)])
    assert not found, "\n".join(found)


def test_pickle_fallback_metadata_filters_match_as_in_memory_saver(tmp_path: Path) -> None:
    serde = lambda: JsonPlusSerializer(pickle_fallback=True)  # noqa: E731
    reference = InMemorySaver(serde=serde())
    _put_all(reference, {"v": 1}, {"big": 2**70, "m": (1, 2)}, 1)
    want = len(list(reference.list(CFG, filter={"m": (1, 2)})))
    assert want == 1
    for name, saver in _savers(tmp_path, serde):
        _put_all(saver, {"v": 1}, {"big": 2**70, "m": (1, 2)}, 1)
        assert len(list(saver.list(CFG, filter={"m": (1, 2)}))) == want, name


LONE = "a\ud800"


def _odd_calls(saver: Any) -> Iterator[tuple[str, Any]]:
    cp = empty_checkpoint()
    cp["channel_values"], cp["channel_versions"] = {"v": 1}, {"v": 1}
    base = saver.put(CFG, cp, {}, {"v": 1})
    yield "checkpoint id", lambda: saver.put(base, dict(empty_checkpoint(), id=LONE), {}, {})
    yield "long checkpoint id", lambda: saver.put(base, dict(empty_checkpoint(), id="x" * 70_000), {}, {})
    long_id = {"configurable": {**base["configurable"], "checkpoint_id": "x" * 65_530}}
    yield "long checkpoint id of writes", lambda: saver.put_writes(long_id, [("v", 1)], "task")
    yield "task_id", lambda: saver.put_writes(base, [("v", 1)], LONE)
    yield "write channel", lambda: saver.put_writes(base, [(LONE, 1)], "task")
    yield "task_path", lambda: saver.put_writes(base, [("v", 1)], "task", LONE)
    versioned = empty_checkpoint()
    versioned["channel_values"], versioned["channel_versions"] = {"v": 2}, {"v": LONE}
    yield "channel version", lambda: saver.put(base, versioned, {}, {"v": LONE})


#: what each refusal names: the argument as the caller wrote it, not the saver's stored members
REFUSED = {
    "checkpoint id": (InvalidNameError, "checkpoint['id'] 'a\\ud800' cannot be stored: it holds a lone surrogate"),
    "long checkpoint id": (InvalidNameError, "cannot be stored: it is 70,000 bytes of UTF-8, and SnapstoreSaver takes"),
    "long checkpoint id of writes": (
        InvalidNameError, "config['configurable']['checkpoint_id'] 'xxx"
    ),
    "task_id": (InvalidNameError, "task_id 'a\\ud800' cannot be stored"),
    "write channel": (InvalidNameError, "a channel name in writes 'a\\ud800' cannot be stored"),
    "task_path": (InvalidNameError, "task_path 'a\\ud800' cannot be stored"),
    "channel version": (InvalidStateError, "checkpoint['channel_versions']['v'] 'a\\ud800' cannot be stored"),
}


@pytest.mark.parametrize("what", list(REFUSED))
def test_an_id_with_no_stored_form_is_refused_by_its_name_and_nothing_is_written(what: str) -> None:
    """InMemorySaver stores each of these. A thread id or namespace holding a lone surrogate was
    refused naming its config key; these were refused naming the saver's insides (the commit's
    label, /writes/<checkpoint>/0/0, /value_versions/v)."""
    reference = dict(_odd_calls(InMemorySaver()))
    reference[what]()  # stored there
    saver = SnapstoreSaver(SnapshotStore.memory())
    calls = dict(_odd_calls(saver))
    before = saver.get_tuple(CFG)
    error, message = REFUSED[what]
    with pytest.raises(error, match=re.escape(message)):
        calls[what]()
    after = saver.get_tuple(CFG)
    assert before is not None and after is not None
    assert after.checkpoint["id"] == before.checkpoint["id"] and after.pending_writes == before.pending_writes


def test_metadata_pickled_under_pickle_fallback_stays_an_object_with_its_step(tmp_path: Path) -> None:
    """The whole-value rule above made a checkpoint's metadata one pickle when a member needed one (an
    int past 64 bits copied in from the config): the snapshot lost its turn in ``snapstore log`` and
    every filter unpickled every row. It stays an object; its members that are not plain JSON are
    pickled alone, so they come back as the serializer's whole pickle gives them (a review)."""
    serde = lambda: JsonPlusSerializer(pickle_fallback=True)  # noqa: E731
    metadata = {"source": "loop", "step": 3, "user_id": 2**70, "pair": (1, 2), "tags": ["a"]}
    reference = InMemorySaver(serde=serde())
    _put_all(reference, {"v": 1}, metadata, 1)
    want = _view(reference)["metadata"]
    with SnapshotStore.open(tmp_path / "store") as store:
        saver = SnapstoreSaver(store, serde=serde())
        _put_all(saver, {"v": 1}, metadata, 1)
        assert same(want, _view(saver)["metadata"]) is None
        head = store.session("langgraph:t:").head
        assert head is not None and head.turn == 3
        assert len(list(saver.list(CFG, filter={"pair": (1, 2), "step": 3}))) == 1


def test_writes_given_as_an_iterator_are_all_stored() -> None:
    """The id checks read ``writes`` before the writes were stored: an iterator was used up (a review)."""
    saver = SnapstoreSaver(SnapshotStore.memory())
    cp = empty_checkpoint()
    cp["channel_values"], cp["channel_versions"] = {"v": 1}, {"v": 1}
    config = saver.put(CFG, cp, {}, {"v": 1})
    saver.put_writes(config, iter([("a", 1), ("b", 2)]), "task")
    found = saver.get_tuple(CFG)
    assert found is not None and found.pending_writes == [("task", "a", 1), ("task", "b", 2)]
