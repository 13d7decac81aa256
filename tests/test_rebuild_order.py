"""A rebuild keeps its state's objects in canonical key order, so its hash check can skip sorting.

The keyframe and every value a delta carries are canonical bytes (keys sorted); a delta that adds
a member sorting before an object's last one breaks that order, and the rebuild puts that object
back in order. Whatever the order claim, the check's verdict is the canonical bytes' verdict.
"""

from __future__ import annotations

import orjson
import pytest

from conftest import canonical
from snapstore import SnapshotStore, codec
from snapstore.errors import CorruptObjectError
from snapstore.history import UNORDERED, apply_trusted, check_state, sort_objects


def _in_canonical_order(value: object) -> bool:
    return orjson.dumps(value) == orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def test_out_of_order_members_are_put_back_in_order() -> None:
    state = codec.loads(codec.dumps({"npcs": {"bram": 1, "zed": 2}, "log": [{"b": 1, "y": 2}]}))
    reordered: list[object] = []
    ops = [
        {"op": "add", "path": "/npcs/ada", "value": 3},  # before "bram": out of order
        {"op": "add", "path": "/npcs/zoe", "value": 4},  # after "zed": still in order
        {"op": "add", "path": "/log/0/a", "value": 0},  # inside a list element
        {"op": "replace", "path": "/npcs/bram", "value": 5},  # keeps its place
        {"op": "add", "path": "/log/-", "value": {"k": 1, "c": 2}},  # a value as parsed, sorted
    ]
    state = apply_trusted(state, codec.loads(codec.dumps(ops)), reordered)
    assert [id(found) for found in reordered] == [id(state["npcs"]), id(state["log"][0])]
    assert not _in_canonical_order(state)
    assert sort_objects(reordered) is True
    assert _in_canonical_order(state)
    assert state == {
        "npcs": {"ada": 3, "bram": 5, "zed": 2, "zoe": 4},
        "log": [{"a": 0, "b": 1, "y": 2}, {"c": 2, "k": 1}],
    }


def test_an_operation_outside_the_fast_path_leaves_the_order_unknown() -> None:
    for op in ({"op": "copy", "from": "/a/x", "path": "/b/x"}, {"op": "move", "from": "/l/0", "path": "/b/x"}):
        state = {"a": {"x": 1}, "b": {}, "l": [1]}
        reordered: list[object] = []
        apply_trusted(state, [op], reordered)
        assert reordered == [UNORDERED] and state["b"] == {"x": 1}
        assert sort_objects(reordered) is False


def test_a_member_renamed_is_moved_in_the_fast_path_and_keeps_the_order_known() -> None:
    """The diff writes a rename as a move; taken outside the fast path, it left every rebuilt object
    of the state in whatever order its patches left it until the next keyframe (a review)."""
    state = {"party": {"bob": 1, "zed": {"hp": 2}}, "inv": {"m": 1, "z": 2}}
    reordered: list[object] = []
    apply_trusted(
        state,
        [{"op": "move", "from": "/party/zed", "path": "/party/amy"}, {"op": "add", "path": "/inv/a", "value": 3}],
        reordered,
    )
    assert state == {"party": {"bob": 1, "amy": {"hp": 2}}, "inv": {"m": 1, "z": 2, "a": 3}}
    assert sort_objects(reordered) is True
    assert list(state["party"]) == ["amy", "bob"] and list(state["inv"]) == ["a", "m", "z"]


def test_the_check_decides_by_canonical_bytes_whatever_the_order_claim() -> None:
    state = {"b": 1, "a": [1.0, True]}  # out of order
    expected = codec.object_id(codec.dumps(state))
    check_state(state, expected, "s", True)  # a wrong claim costs a second serialization, nothing else
    check_state(state, expected, "s", False)
    wrong = {"a": [1, True], "b": 1}  # equal under ==, not type-exact
    with pytest.raises(CorruptObjectError, match="rebuilds to a state hashing"):
        check_state(wrong, expected, "s", True)
    with pytest.raises(CorruptObjectError):
        check_state({"a": [1.0, True], "b": 2}, expected, "s", True)


@pytest.mark.parametrize("engine", ["memory", "directory"])
def test_rebuilt_states_are_exact_and_in_canonical_order(engine: str, tmp_path: object) -> None:
    store = SnapshotStore.memory() if engine == "memory" else SnapshotStore.open(str(tmp_path) + "/store")
    sess = store.session("order", max_snapshots=100)
    state: dict[str, object] = {"m": {"k500": 0}, "t": []}
    written = []
    for turn in range(60):
        members = state["m"]
        assert isinstance(members, dict)
        members[f"k{(turn * 7919) % 1000:03d}"] = turn if turn % 3 else float(turn)  # in and out of order
        if turn % 5 == 0:
            members.pop(next(iter(members)))
        if turn % 7 == 3:  # a member renamed: a move (to a key sorting first, then last)
            members[f"a{turn}" if turn % 2 else f"z{turn}"] = members.pop(next(iter(members)))
        transcript = state["t"]
        assert isinstance(transcript, list)
        transcript.append({"z": turn, "a": [True, 1, 1.0]})
        written.append((sess.commit(state).id, canonical(state)))
    if engine == "directory":  # a fresh handle: nothing cached from the commits
        store.close()
        store = SnapshotStore.open(str(tmp_path) + "/store")
    again = store.session("order")
    assert again.snapshot_ids() == [sid for sid, _ in written]
    for sid, expected in written:
        rebuilt = again._log.rebuild(sid)  # the cold path: keyframe and deltas, no cached head
        assert canonical(rebuilt) == expected
        assert _in_canonical_order(rebuilt)


def test_a_remembered_pointer_walks_objects_and_arrays_alike() -> None:
    """The applier keeps each pointer it split: the same path must still work through an object
    whose keys are digits and through an array, escaped tokens included, in any order of use."""
    through_array = {"rows": [{"a": 1}, {"a": 2}]}
    through_object = {"rows": {"0": {"a": 1}, "1": {"a": 2}, "²": {"a": 3}}}
    ops = [{"op": "replace", "path": "/rows/1/a", "value": 9}]
    assert apply_trusted(through_array, ops) == {"rows": [{"a": 1}, {"a": 9}]}
    assert apply_trusted(through_object, ops) == {"rows": {"0": {"a": 1}, "1": {"a": 9}, "²": {"a": 3}}}
    # a token of non-ASCII digits is a key, never an index
    assert apply_trusted(through_object, [{"op": "replace", "path": "/rows/²/a", "value": 4}])["rows"]["²"] == {"a": 4}
    escaped = {"a/b": {"c~d": [0, 1]}}
    for _ in range(2):  # split once, then remembered
        apply_trusted(escaped, [{"op": "add", "path": "/a~1b/c~0d/-", "value": 2}])
    assert escaped == {"a/b": {"c~d": [0, 1, 2, 2]}}
    with pytest.raises(IndexError):
        apply_trusted({"rows": [1]}, [{"op": "replace", "path": "/rows/1", "value": 0}])
    with pytest.raises(KeyError):
        apply_trusted({"rows": {"0": 1}}, [{"op": "replace", "path": "/rows/1", "value": 0}])


def test_a_key_of_thousands_of_digits_is_a_key() -> None:
    """int() refuses strings of more than 4,300 digits: such a token is only ever an object's key
    (no array is that long), and a long path is not kept (the cache stays small)."""
    from snapstore import history

    key = "1" * 5000
    state = apply_trusted({key: {"a": 1}}, [{"op": "replace", "path": f"/{key}/a", "value": 2}])
    assert state == {key: {"a": 2}}
    assert f"/{key}/a" not in history._POINTERS
    with pytest.raises(ValueError):  # through an array it is refused, as an index that long always was
        apply_trusted({"l": [0]}, [{"op": "replace", "path": f"/l/{key}/a", "value": 2}])


def test_the_remembered_pointers_are_bounded() -> None:
    from snapstore import history

    state: dict[str, int] = {}
    for i in range(history._POINTERS_KEPT + 10):
        apply_trusted(state, [{"op": "add", "path": f"/k{i}", "value": i}])
    assert len(history._POINTERS) <= history._POINTERS_KEPT
    assert len(state) == history._POINTERS_KEPT + 10 and state["k5"] == 5
    history._POINTERS.clear()  # the next tests start from an empty cache, as a process does
