"""Focused checks of diff and apply; random documents are in test_properties.py."""

from __future__ import annotations

import copy

import jsonpatch
import orjson
import pytest

from snapstore import codec
from snapstore.delta import apply_patch, diff, diff_members, format_pointer, parse_pointer
from snapstore.errors import PatchError


def canonical(value: object) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def roundtrip(a: object, b: object) -> list[dict]:
    ops = diff(a, b)
    assert canonical(apply_patch(a, ops)) == canonical(b)
    assert canonical(jsonpatch.apply_patch(copy.deepcopy(a), ops)) == canonical(b)
    return ops


@pytest.mark.parametrize(("old", "new"), [(1, 1.0), (1.0, True), (True, 1), (0.0, -0.0), (None, False), ("1", 1)])
def test_type_changes_are_changes(old: object, new: object) -> None:
    ops = roundtrip({"v": old}, {"v": new})
    assert len(ops) == 1 and ops[0]["op"] == "replace"
    assert canonical(ops[0]["value"]) == canonical(new)


def test_append_only_list_is_adds_at_end() -> None:
    old = {"log": [{"m": i, "x": None} for i in range(50)]}
    new = copy.deepcopy(old)
    new["log"] += [{"m": 50}, {"m": 51, "y": [1.0]}]
    assert roundtrip(old, new) == [
        {"op": "add", "path": "/log/-", "value": {"m": 50}},
        {"op": "add", "path": "/log/-", "value": {"m": 51, "y": [1.0]}},
    ]


def test_append_detection_is_not_fooled_by_a_longer_last_element() -> None:
    roundtrip({"l": [1]}, {"l": [12, 3]})
    roundtrip({"l": ["a"]}, {"l": ["a,", "b"]})
    roundtrip({"l": [[1]]}, {"l": [[1, 2], 3]})


def test_list_edits_insert_remove_reorder() -> None:
    base = ["sword", "rope", "torch", "map", "gold"]
    for new in (
        ["rope", "torch", "map", "gold"],
        ["sword", "potion", "rope", "torch", "map", "gold"],
        ["gold", "map", "torch", "rope", "sword"],
        ["sword", "torch", "rope", "map"],
        [],
        ["x"] * 7,
    ):
        roundtrip({"inv": base}, {"inv": new})


def test_awkward_keys_round_trip() -> None:
    old = {"a/b": 1, "~0": 2, "": 3, "Zoë": {"~/": [1]}, "42": 4}
    new = {"a/b": 2, "~0": 2, "": [3], "Zoë": {"~/": [1, 2]}, "43": 4}
    ops = roundtrip(old, new)
    assert {op["path"] for op in ops} >= {"/a~1b", "/", "/42", "/43"}
    assert parse_pointer(format_pointer(["a/b", "~", ""])) == ["a/b", "~", ""]


def test_root_replacement() -> None:
    assert roundtrip({"a": 1}, [1]) == [{"op": "replace", "path": "", "value": [1]}]


def test_inputs_are_not_mutated() -> None:
    old = {"l": [1, 2, {"a": 1}]}
    new = {"l": [2, {"a": 2}], "n": {"x": 1}}
    keep_old, keep_new = canonical(old), canonical(new)
    ops = diff(old, new)
    apply_patch(old, ops)
    assert canonical(old) == keep_old and canonical(new) == keep_new


def test_added_values_do_not_alias_the_patch() -> None:
    ops = [{"op": "add", "path": "/x", "value": {"deep": [1]}}]
    doc = apply_patch({}, ops)
    doc["x"]["deep"].append(2)
    assert ops[0]["value"] == {"deep": [1]}


def test_diff_members_matches_diff() -> None:
    old = {"a": [1, 2], "b": {"c": 1}, "gone": 1, "same": "s"}
    new = {"a": [1, 2, 3], "b": {"c": 1.0}, "new": None, "same": "s"}
    _, old_pieces = codec.encode_state(old)
    _, new_pieces = codec.encode_state(new)
    assert old_pieces is not None and new_pieces is not None
    ops = diff_members(old, new, old_pieces, new_pieces)
    assert canonical(apply_patch(old, ops)) == canonical(new)
    assert canonical(sorted(ops, key=canonical)) == canonical(sorted(diff(old, new), key=canonical))


def test_encode_state_matches_orjson() -> None:
    state = {"z": 1, "é": [1.0, None], "": {"b": True, "a": "x"}, "\U0001f600": 0, "\uffff": -0.0}
    data, pieces = codec.encode_state(state)
    assert data == canonical(state)
    assert pieces is not None and set(pieces) == set(state)


@pytest.mark.parametrize(
    ("doc", "op"),
    [
        ({}, {"op": "remove", "path": "/missing"}),
        ({"a": [1]}, {"op": "add", "path": "/a/01", "value": 1}),
        ({"a": [1]}, {"op": "add", "path": "/a/5", "value": 1}),
        ({"a": 1}, {"op": "test", "path": "/a", "value": 1.0}),
        ({"a": True}, {"op": "test", "path": "/a", "value": 1}),
        ({"a": {"b": 1}}, {"op": "move", "from": "/a", "path": "/a/b/c"}),
        ({}, {"op": "add", "path": "a", "value": 1}),
        ({}, {"op": "frobnicate", "path": "/a"}),
        ({}, {"op": "add", "path": "/a"}),
        ({"a": 1}, {"op": "add", "path": "/a/b", "value": 1}),
        ({}, "not an op"),
    ],
)
def test_apply_errors_name_the_operation(doc: object, op: object) -> None:
    with pytest.raises(PatchError) as err:
        apply_patch(doc, [{"op": "test", "path": "", "value": doc}, op])
    assert err.value.details["index"] == 1


def test_apply_refuses_a_non_list_patch() -> None:
    with pytest.raises(PatchError):
        apply_patch({}, {"op": "add"})
