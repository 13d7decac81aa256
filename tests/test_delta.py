"""snapstore.delta: ``diff`` and ``apply_patch`` round-trip type-exact, and jsonpatch agrees.

Values are compared by canonical bytes (orjson, sorted keys), never with ``==``,
for which ``1 == 1.0 == True`` and ``0.0 == -0.0``. jsonpatch is the reference
RFC 6902 implementation: it must apply every patch ``diff`` makes to the same
result as ``apply_patch`` does. No test here measures time.
"""

from __future__ import annotations

import enum
import random
from typing import Any

import jsonpatch
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapstore import codec
from snapstore.delta import apply_patch, diff, diff_members, escape_token, format_pointer, parse_pointer
from snapstore.errors import InvalidStateError, PatchError


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def fresh(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


def check_roundtrip(a: Any, b: Any) -> list[dict[str, Any]]:
    """diff(a, b), after checking that ours and jsonpatch both apply it to exactly b."""
    a_bytes, b_bytes = canonical(a), canonical(b)
    ops = diff(a, b)
    assert canonical(a) == a_bytes and canonical(b) == b_bytes, "diff changed its inputs"
    stored = orjson.loads(canonical(ops))  # what a commit keeps: the patch, serialized at once
    assert canonical(apply_patch(a, ops)) == b_bytes
    assert canonical(a) == a_bytes, "apply_patch(in_place=False) changed its input"
    assert canonical(apply_patch(fresh(a), stored, in_place=True)) == b_bytes
    reference = jsonpatch.apply_patch(fresh(a), orjson.loads(canonical(ops)))
    assert canonical(reference) == b_bytes, "jsonpatch applies our patch differently"
    return ops


# ---------------------------------------------------------------- strategies

AWKWARD_TEXT = ["", "/", "~", "~0", "~1", "~01", "a/b", "/~/", "-", "0", "01", "Zoë", "名前", "\U0001f600", '"\\']
ints = st.one_of(
    st.sampled_from([0, 1, -1, 2, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1]),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
)
floats = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 1e16, 5e-324, 1.7976931348623157e308]),
    st.floats(allow_nan=False, allow_infinity=False),
)
texts = st.one_of(st.sampled_from(AWKWARD_TEXT), st.text(max_size=6))  # st.text() never yields surrogates
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=6), st.dictionaries(texts, children, max_size=6)),
    max_leaves=30,
)
documents = st.one_of(st.dictionaries(texts, json_values, max_size=6), json_values)

# values == cannot tell apart, and small ones that repeat (list matching on duplicates)
LOOKALIKES = [1, 1.0, True, 0, 0.0, -0.0, False, None, "", "1", [], {}, [1], [1.0], {"a": 1}, {"a": True}]
lookalikes = st.sampled_from(LOOKALIKES).map(fresh)
small_lists = st.lists(st.one_of(lookalikes, st.integers(0, 3)), max_size=12)


def containers(doc: Any) -> list[Any]:
    """Every dict and list inside ``doc`` (``doc`` first, when it is one)."""
    found, stack = [], [doc]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            found.append(node)
            stack.extend(node.values())
        elif type(node) is list:
            found.append(node)
            stack.extend(node)
    return found


@st.composite
def mutation_of(draw: st.DrawFn, doc: Any) -> Any:
    """``doc`` after a few edits of the kinds a game loop makes (on a copy)."""
    doc = fresh(doc)
    new_value = st.one_of(lookalikes, json_values)
    for _ in range(draw(st.integers(1, 5))):
        nodes = containers(doc)
        if not nodes or draw(st.integers(0, 19)) == 0:
            doc = draw(new_value)  # the whole document changes
            continue
        node = nodes[draw(st.integers(0, len(nodes) - 1))]
        if type(node) is dict:
            action = draw(st.sampled_from(["add", "remove", "set", "nudge"]))
            if action == "add" or not node:
                node[draw(texts)] = draw(new_value)
                continue
            key = draw(st.sampled_from(sorted(node)))
            if action == "remove":
                del node[key]
            elif action == "set":
                node[key] = draw(new_value)
            else:
                node[key] = nudge(node[key], draw)
            continue
        action = draw(st.sampled_from(["append", "append", "insert", "remove", "reorder", "rotate", "set", "nudge"]))
        if action == "append" or not node:
            node.extend(draw(st.lists(new_value, min_size=1, max_size=3)))
        elif action == "insert":
            node.insert(draw(st.integers(0, len(node))), draw(new_value))
        elif action == "remove":
            del node[draw(st.integers(0, len(node) - 1))]
        elif action == "reorder":
            node[:] = draw(st.permutations(node))
        elif action == "rotate":
            node.append(node.pop(0))
        else:
            i = draw(st.integers(0, len(node) - 1))
            node[i] = draw(new_value) if action == "set" else nudge(node[i], draw)
    return doc


def nudge(value: Any, draw: st.DrawFn) -> Any:
    """A value that Python's == may call equal to ``value`` but canonical bytes do not."""
    swaps = {int: [float, bool], float: [int, bool], bool: [int, float]}
    kind = type(value)
    if kind is float and value == 0.0 and draw(st.booleans()):
        return -value
    if kind in swaps and abs(value) < 2**53:
        return draw(st.sampled_from(swaps[kind]))(value)
    return draw(lookalikes)


# ---------------------------------------------------------------- properties

prop_settings = settings(max_examples=100, deadline=None)


@prop_settings
@given(documents, documents)
def test_unrelated_documents_round_trip(a: Any, b: Any) -> None:
    check_roundtrip(a, b)


@prop_settings
@given(documents, st.data())
def test_mutated_documents_round_trip(a: Any, data: st.DataObject) -> None:
    check_roundtrip(a, data.draw(mutation_of(a)))


@prop_settings
@given(small_lists, small_lists)
def test_lists_of_repeated_lookalikes_round_trip(a: list[Any], b: list[Any]) -> None:
    check_roundtrip({"l": a}, {"l": b})
    check_roundtrip(a, b)


@prop_settings
@given(small_lists, st.data())
def test_edited_lists_of_lookalikes_round_trip(a: list[Any], data: st.DataObject) -> None:
    check_roundtrip({"l": a, "n": [a]}, data.draw(mutation_of({"l": a, "n": [a]})))


# a table of entities: many members, a few of them changed (a lookalike among them, now and then)
table_rows = st.one_of(lookalikes, scalars, st.dictionaries(st.sampled_from(["hp", "x", "~", "a/b"]), lookalikes))
wide_tables = st.lists(table_rows, min_size=70, max_size=90).map(
    lambda rows: {(AWKWARD_TEXT[i] if i < len(AWKWARD_TEXT) else f"e{i}"): row for i, row in enumerate(rows)}
)


@settings(max_examples=60, deadline=None)
@given(wide_tables, st.data())
def test_edited_wide_tables_round_trip(a: dict[str, Any], data: st.DataObject) -> None:
    check_roundtrip({"entities": a}, data.draw(mutation_of({"entities": a})))
    check_roundtrip(a, data.draw(mutation_of(a)))


@settings(max_examples=60, deadline=None)
@given(wide_tables, st.data())
def test_wide_tables_with_the_same_members_round_trip(a: dict[str, Any], data: st.DataObject) -> None:
    """Only values change (the members stay, in any order): the path that sorts many members into
    the equal and the changed by C calls, lookalikes and members shared by identity included."""
    new = {key: value for key, value in a.items()}  # the same objects: unchanged unless replaced
    for key in data.draw(st.lists(st.sampled_from(sorted(a)), max_size=8)):
        new[key] = nudge(a[key], data.draw) if data.draw(st.booleans()) else data.draw(table_rows)
    if data.draw(st.booleans()):
        new = dict(reversed(list(new.items())))
    ops = check_roundtrip(a, new)
    assert ops == diff(fresh(a), fresh(new))  # whether members are shared or copies, the same patch
    check_roundtrip({"t": a, "n": 1}, {"t": new, "n": 1})


def test_a_wide_table_with_the_same_members_keeps_its_lookalikes_and_its_order() -> None:
    rng = random.Random(11)
    old = {f"e{i:03}": {"hp": rng.randint(1, 9), "x": rng.random(), "tags": ["a", 0.0]} for i in range(200)}
    old["n000"], old["n001"], old["n002"] = 1, 0.0, [1, 2]
    new = fresh(old)
    new["e010"]["hp"] = float(new["e010"]["hp"])  # == says unchanged: only its bytes differ
    new["e020"]["tags"][1] = -0.0
    new["e030"] = 5  # a container becomes a number
    new["e050"]["x"] = 0.25
    new["n000"], new["n001"], new["n002"] = True, -0.0, {"a": 1}
    new = {"e199": new.pop("e199"), **new}  # new's order decides the order of the operations
    ops = check_roundtrip(old, new)
    assert [(op["op"], op["path"]) for op in ops] == [
        ("replace", "/e010/hp"),
        ("replace", "/e020/tags/1"),
        ("replace", "/e030"),
        ("replace", "/e050/x"),
        ("replace", "/n000"),
        ("replace", "/n001"),
        ("replace", "/n002"),
    ]
    assert diff(old, fresh(old)) == [] and diff(old, {**old}) == []


def test_a_wide_table_keeps_its_lookalikes_and_its_order() -> None:
    rng = random.Random(7)
    old = {f"e{i:03}": {"hp": rng.randint(1, 9), "x": rng.random(), "tags": ["a", 0.0]} for i in range(300)}
    new = fresh(old)
    new["e010"]["hp"] = float(new["e010"]["hp"])  # == says unchanged: only its bytes differ
    new["e020"]["tags"][1] = -0.0
    new["e030"]["hp"] = True if new["e030"]["hp"] == 1 else 1
    new["e040"] = 5  # a container becomes a number
    new["e050"]["x"] = 0.25
    del new["e060"]
    new["zzz"] = {"hp": 1}
    new = {"e299": new.pop("e299"), **new}  # new's order decides the order of the operations
    ops = check_roundtrip(old, new)
    assert [(op["op"], op["path"]) for op in ops] == [
        ("remove", "/e060"),
        ("replace", "/e010/hp"),
        ("replace", "/e020/tags/1"),
        ("replace", "/e030/hp"),
        ("replace", "/e040"),
        ("replace", "/e050/x"),
        ("add", "/zzz"),
    ]
    assert diff(old, fresh(old)) == []


@prop_settings
@given(documents)
def test_equal_documents_diff_to_nothing(a: Any) -> None:
    assert diff(a, a) == []
    assert diff(a, fresh(a)) == []


@settings(max_examples=80, deadline=None)
@given(st.lists(json_values, max_size=8), st.lists(json_values, min_size=1, max_size=4))
def test_appends_are_adds_at_the_end(prefix: list[Any], tail: list[Any]) -> None:
    ops = check_roundtrip({"log": prefix}, {"log": prefix + tail})
    assert canonical(ops) == canonical([{"op": "add", "path": "/log/-", "value": v} for v in tail])


@prop_settings
@given(st.lists(texts, max_size=5))
def test_pointers_round_trip(tokens: list[str]) -> None:
    assert parse_pointer(format_pointer(tokens)) == tokens


# ---------------------------------------------------------------- type-exact changes

LOOKALIKE_PAIRS = [(1, 1.0), (1.0, True), (True, 1), (0, False), (0.0, -0.0), (-0.0, 0), (None, False), ("1", 1)]


@pytest.mark.parametrize(("old", "new"), LOOKALIKE_PAIRS)
def test_lookalikes_are_changes_everywhere(old: Any, new: Any) -> None:
    for wrap, path in ((lambda v: v, ""), (lambda v: {"v": v}, "/v"), (lambda v: [0, v, 2], "/1")):
        ops = check_roundtrip(wrap(old), wrap(new))
        assert len(ops) == 1 and ops[0]["op"] == "replace" and ops[0]["path"] == path
        assert canonical(ops[0]["value"]) == canonical(new)


def test_lookalikes_deep_inside_lists_and_objects() -> None:
    old = {"npcs": {"a/b": {"stats": [1, 2.0, {"x": 0.0}]}}, "flags": {"a": True, "b": 1, "c": 1.0}}
    new = {"npcs": {"a/b": {"stats": [1.0, 2.0, {"x": -0.0}]}}, "flags": {"a": 1, "b": 1.0, "c": True}}
    ops = check_roundtrip(old, new)
    assert sorted(op["path"] for op in ops) == [
        "/flags/a",
        "/flags/b",
        "/flags/c",
        "/npcs/a~1b/stats/0",
        "/npcs/a~1b/stats/2/x",
    ]
    assert {op["op"] for op in ops} == {"replace"}


def test_root_type_change_is_a_replace_of_the_root() -> None:
    assert check_roundtrip({"a": 1}, [1]) == [{"op": "replace", "path": "", "value": [1]}]
    assert check_roundtrip([1], "x") == [{"op": "replace", "path": "", "value": "x"}]
    assert check_roundtrip(5, 6) == [{"op": "replace", "path": "", "value": 6}]


# ---------------------------------------------------------------- lists


def test_append_only_list_is_adds_at_end() -> None:
    old = {"log": [{"m": i, "x": None, "f": 1.5} for i in range(50)]}
    new = fresh(old)
    new["log"] += [{"m": 50}, {"m": 51, "y": [1.0]}]
    assert check_roundtrip(old, new) == [
        {"op": "add", "path": "/log/-", "value": {"m": 50}},
        {"op": "add", "path": "/log/-", "value": {"m": 51, "y": [1.0]}},
    ]
    assert check_roundtrip({"log": []}, {"log": [1, 1.0]}) == [
        {"op": "add", "path": "/log/-", "value": 1},
        {"op": "add", "path": "/log/-", "value": 1.0},
    ]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ([1], [12, 3]),  # the old last number continues in the new bytes
        (["a"], ["a,", "b"]),
        ([[1]], [[1, 2], 3]),
        ([1000000], [1, 2]),  # more elements, fewer bytes
        ([1, 2], [1, 2.0, 3]),
        ([True], [1, True]),
    ],
)
def test_append_detection_is_not_fooled(old: list[Any], new: list[Any]) -> None:
    ops = check_roundtrip({"l": old}, {"l": new})
    assert any(op["path"] != "/l/-" for op in ops)


def test_list_edits_insert_remove_reorder() -> None:
    base = ["sword", "rope", "torch", "map", "gold"]
    for new in (
        ["rope", "torch", "map", "gold"],
        ["sword", "potion", "rope", "torch", "map", "gold"],
        ["gold", "map", "torch", "rope", "sword"],
        ["sword", "torch", "rope", "map"],
        ["x"] * 7,
        ["sword", "rope", "torch", "map", "gold", "sword"],
        base[1:] + base[:1],
    ):
        check_roundtrip({"inv": base}, {"inv": new})


def test_rotation_and_sliding_window_are_one_remove_and_one_add() -> None:
    messages = [{"turn": i, "text": f"message {i}"} for i in range(30)]
    ops = check_roundtrip({"log": messages}, {"log": [*messages[1:], {"turn": 30, "text": "new"}]})
    assert [(op["op"], op["path"]) for op in ops] == [("add", "/log/-"), ("remove", "/log/0")]
    ops = check_roundtrip({"order": messages}, {"order": [*messages[1:], messages[0]]})
    assert len(ops) == 2


def test_emptied_list_is_one_replace() -> None:
    assert check_roundtrip({"l": [1, 2, 3]}, {"l": []}) == [{"op": "replace", "path": "/l", "value": []}]


def test_paired_elements_are_diffed_inside() -> None:
    old = {"party": [{"name": "Zoë", "hp": 10, "inv": ["a"]}, {"name": "Kōji", "hp": 7}]}
    new = {"party": [{"name": "Zoë", "hp": 9, "inv": ["a", "b"]}, {"name": "Kōji", "hp": 7.0}]}
    ops = check_roundtrip(old, new)
    assert sorted((op["op"], op["path"]) for op in ops) == [
        ("add", "/party/0/inv/-"),
        ("replace", "/party/0/hp"),
        ("replace", "/party/1/hp"),
    ]


def test_long_lists_of_repeated_values() -> None:
    rng = random.Random(7)
    old = [rng.choice([0, 1, 1.0, True]) for _ in range(1500)]
    new = [rng.choice([0, 1, 1.0, True]) for _ in range(1400)]
    check_roundtrip({"bits": old}, {"bits": new})
    edited = list(old)
    del edited[100:130]
    edited[700:700] = [0.0] * 20
    check_roundtrip(old, edited)


# ---------------------------------------------------------------- keys and pointers


def test_a_renamed_member_is_a_move_and_only_when_type_exact() -> None:
    room = {"desc": "a long hall " * 20, "items": [1, 2.0, True, None]}
    old = {"rooms": {"hall": room, "cellar": {"desc": "dark"}}, "turn": 1, "keep": room}
    new = {"rooms": {"great hall": room, "cellar": {"desc": "dark"}}, "turn": 2, "tower": room}
    ops = check_roundtrip(old, new)
    assert {"op": "move", "from": "/rooms/hall", "path": "/rooms/great hall"} in ops
    assert {"op": "move", "from": "/keep", "path": "/tower"} in ops
    _, old_pieces, _ = codec.encode_state(old)
    _, new_pieces, _ = codec.encode_state(new)
    assert diff_members(old, new, old_pieces, new_pieces) == ops  # the commit path finds the same
    # the same under == but not type-exact (2.0 written 2): not a move
    lookalike = {"rooms": {"great hall": {**room, "items": [1, 2, True, None]}}}
    ops = check_roundtrip({"rooms": {"hall": room}}, lookalike)
    assert [op["op"] for op in ops] == ["remove", "add"]
    # two keys gone with the same value, two added: each gone key serves one
    ops = check_roundtrip({"a": [1], "b": [1], "c": 0}, {"x": [1], "y": [1], "c": 0})
    assert sorted(op["op"] for op in ops) == ["move", "move"]


def test_awkward_keys_round_trip() -> None:
    old = {"a/b": 1, "~0": 2, "": 3, "Zoë": {"~/": [1]}, "42": 4, "-": [5], "01": {"": None}}
    new = {"a/b": 2, "~0": 2, "": [3], "Zoë": {"~/": [1, 2]}, "43": 4, "-": [5, 6], "01": {"": 0}}
    ops = check_roundtrip(old, new)
    assert {op["path"] for op in ops} | {op["from"] for op in ops if "from" in op} == {
        "/a~1b", "/", "/Zoë/~0~1/-", "/42", "/43", "/-/-", "/01/"
    }
    assert {"op": "move", "from": "/42", "path": "/43"} in ops  # "42": 4 renamed "43"


@pytest.mark.parametrize(
    ("tokens", "pointer"),
    [
        ([], ""),
        ([""], "/"),
        (["", ""], "//"),
        (["a/b"], "/a~1b"),
        (["m~n"], "/m~0n"),
        (["~1"], "/~01"),
        (["Zoë"], "/Zoë"),
    ],
)
def test_pointer_escaping(tokens: list[str], pointer: str) -> None:
    assert format_pointer(tokens) == pointer
    assert parse_pointer(pointer) == tokens
    assert "".join("/" + escape_token(t) for t in tokens) == pointer


@pytest.mark.parametrize("bad", ["a", "a/b", "/~", "/~2", "/a~", "/~x~1", 5, None, ["a"]])
def test_bad_pointers_are_refused(bad: Any) -> None:
    with pytest.raises(PatchError) as caught:
        parse_pointer(bad)
    assert caught.value.details["reason"]


# ---------------------------------------------------------------- copies and aliasing


def test_diff_and_apply_leave_inputs_alone() -> None:
    old = {"l": [1, 2, {"a": 1}], "d": {"k": [0.0]}}
    new = {"l": [2, {"a": 2}], "n": {"x": 1}, "d": {"k": [-0.0, 1]}}
    keep_old, keep_new = canonical(old), canonical(new)
    ops = diff(old, new)
    keep_ops = canonical(ops)
    result = apply_patch(old, ops)
    assert canonical(old) == keep_old and canonical(new) == keep_new and canonical(ops) == keep_ops
    result["d"]["k"].append("mutated")  # the result shares nothing with old, new or the patch
    result["n"]["x"] = 2
    assert canonical(old) == keep_old and canonical(new) == keep_new and canonical(ops) == keep_ops


def test_added_values_do_not_alias_the_patch() -> None:
    patch = [
        {"op": "add", "path": "/x", "value": {"deep": [1]}},
        {"op": "replace", "path": "/y", "value": [{"z": 1}]},
        {"op": "copy", "from": "/x", "path": "/w"},
    ]
    doc = apply_patch({"y": 0}, patch, in_place=True)
    doc["x"]["deep"].append(2)
    doc["y"][0]["z"] = 2
    assert canonical(patch[0]["value"]) == b'{"deep":[1]}' and canonical(patch[1]["value"]) == b'[{"z":1}]'
    assert canonical(doc["w"]) == b'{"deep":[1]}'  # a copy is a copy, not a second reference


def test_in_place_edits_the_document_and_may_replace_the_root() -> None:
    doc = {"a": [1]}
    result = apply_patch(doc, [{"op": "add", "path": "/a/-", "value": 2}], in_place=True)
    assert result is doc and canonical(doc) == b'{"a":[1,2]}'
    assert apply_patch(doc, [{"op": "replace", "path": "", "value": 3}], in_place=True) == 3
    assert canonical(doc) == b'{"a":[1,2]}'


def test_apply_covers_every_operation() -> None:
    doc = {"a": {"b": [1, 2, 3]}, "c": "x"}
    patch = [
        {"op": "test", "path": "/a/b", "value": [1, 2, 3]},
        {"op": "move", "from": "/a/b/0", "path": "/a/b/-"},
        {"op": "copy", "from": "/a", "path": "/a2"},
        {"op": "add", "path": "/c", "value": 1.0},  # add on an existing member replaces it
        {"op": "remove", "path": "/a2/b/1"},
        {"op": "replace", "path": "/a/b/0", "value": True},
        {"op": "move", "from": "/c", "path": "/c"},
        {"op": "test", "path": "", "value": {"a": {"b": [True, 3, 1]}, "a2": {"b": [2, 1]}, "c": 1.0}},
    ]
    assert canonical(apply_patch(doc, patch)) == canonical({"a": {"b": [True, 3, 1]}, "a2": {"b": [2, 1]}, "c": 1.0})


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("doc", "op", "reason"),
    [
        ({}, {"op": "remove", "path": "/missing"}, "path not found"),
        ({"a": [1]}, {"op": "add", "path": "/a/01", "value": 1}, "bad array index"),
        ({"a": [1]}, {"op": "add", "path": "/a/5", "value": 1}, "array index out of range"),
        ({"a": [1]}, {"op": "replace", "path": "/a/1", "value": 1}, "array index out of range"),
        ({"a": [1]}, {"op": "remove", "path": "/a/-"}, "bad array index"),
        ({"a": [1]}, {"op": "add", "path": "/a/" + "9" * 5000, "value": 1}, "array index out of range"),
        ({"a": [1]}, {"op": "add", "path": "/a/+0", "value": 1}, "bad array index"),
        ({"a": 1}, {"op": "test", "path": "/a", "value": 1.0}, "test failed"),
        ({"a": True}, {"op": "test", "path": "/a", "value": 1}, "test failed"),
        ({"a": -0.0}, {"op": "test", "path": "/a", "value": 0.0}, "test failed"),
        ({"a": [1, {"b": 0}]}, {"op": "test", "path": "/a", "value": [1.0, {"b": 0}]}, "test failed"),
        ({"a": {"x": True}}, {"op": "test", "path": "", "value": {"a": {"x": 1}}}, "test failed"),
        ({"a": {"b": 1}}, {"op": "move", "from": "/a", "path": "/a/b/c"}, "move into own child"),
        ({"a": 1}, {"op": "move", "from": "", "path": "/b"}, "move into own child"),
        ({}, {"op": "add", "path": "a", "value": 1}, "pointer does not start with '/'"),
        ({}, {"op": "add", "path": 7, "value": 1}, "pointer is not a string"),
        ({"~": 1}, {"op": "remove", "path": "/~"}, "bad '~' escape in pointer"),
        ({}, {"op": "frobnicate", "path": "/a"}, "unknown operation"),
        ({}, {"op": None, "path": "/a"}, "unknown operation"),
        ({}, {"path": "/a", "value": 1}, "missing 'op'"),
        ({}, {"op": "add", "value": 1}, "missing 'path'"),
        ({}, {"op": "add", "path": "/a"}, "missing 'value'"),
        ({"a": 1}, {"op": "copy", "path": "/b"}, "missing 'from'"),
        ({"a": 1}, {"op": "copy", "from": "/nope", "path": "/b"}, "path not found"),
        ({"a": 1}, {"op": "add", "path": "/a/b", "value": 1}, "path goes through a scalar"),
        ({"a": "s"}, {"op": "remove", "path": "/a/0"}, "path goes through a scalar"),
        ({"a": 1}, {"op": "remove", "path": ""}, "cannot remove the root"),
        ({}, {"op": "add", "path": "/a", "value": {1, 2}}, "value is not JSON"),
        ({}, "not an op", "operation is not an object"),
    ],
)
def test_apply_errors_name_index_op_path_and_reason(doc: Any, op: Any, reason: str) -> None:
    before = canonical(doc)
    with pytest.raises(PatchError) as caught:
        apply_patch(doc, [{"op": "test", "path": "", "value": doc}, op])
    details = caught.value.details
    assert details["index"] == 1 and details["reason"] == reason
    if isinstance(op, dict):
        assert details["op"] == op.get("op") and details["path"] == op.get("path")
        assert details.get("from") == op.get("from")
        assert "operation 1" in str(caught.value)
    assert canonical(doc) == before


def test_apply_refuses_a_patch_that_is_not_a_list() -> None:
    for patch in ({"op": "add"}, "[]", None):
        with pytest.raises(PatchError) as caught:
            apply_patch({}, patch)
        assert caught.value.details["reason"] == "patch is not a list"


# ---------------------------------------------------------------- diff_members (the commit path)


def test_diff_members_matches_diff() -> None:
    old = {"a": [1, 2], "b": {"c": 1}, "gone": 1, "same": "s", "z": 0.0}
    new = {"a": [1, 2, 3], "b": {"c": 1.0}, "new": None, "same": "s", "z": -0.0}
    _, old_pieces, _ = codec.encode_state(old)
    _, new_pieces, _ = codec.encode_state(new)
    assert old_pieces is not None and new_pieces is not None
    ops = diff_members(old, new, old_pieces, new_pieces)
    assert canonical(apply_patch(old, ops)) == canonical(new)
    assert sorted(map(canonical, ops)) == sorted(map(canonical, diff(old, new)))


# ---------------------------------------------------------------- a benchmark-sized state


def game_state(rng: random.Random, messages: int = 1000) -> dict[str, Any]:
    """A ~1.4 MB state shaped like the benchmark's: a long transcript plus small world dicts."""

    def words(n: int) -> str:
        return " ".join(rng.choice(["the", "goblin", "Zoë", "gate/north", "~cursed~", "ale", "42"]) for _ in range(n))

    return {
        "session": {"turn": messages, "clock": {"day": 3, "minute": 17}},
        "characters": {
            name: {"hp": rng.randint(1, 40), "xp": rng.uniform(0, 900), "inventory": [words(2) for _ in range(8)]}
            for name in ("Zoë", "Björn", "Kōji", "a/b", "~x")
        },
        "npcs": {f"npc {i}": {"attitude": "wary", "trust": 0.25, "notes": [words(6)]} for i in range(40)},
        "flags": {"door/open": True, "count": 1, "": None, "ratio": 0.0},
        "transcript": [
            {"turn": i, "role": rng.choice(["user", "gm"]), "content": words(190), "tokens": rng.randint(10, 300)}
            for i in range(messages)
        ],
    }


def test_large_state_diff_is_small_and_exact() -> None:
    rng = random.Random(1)
    old = game_state(rng)
    assert len(canonical(old)) > 1_200_000
    new = fresh(old)
    new["transcript"].append({"turn": 1000, "role": "gm", "content": "The gate/north creaks.", "tokens": 5})
    new["session"]["turn"] = 1001
    new["characters"]["a/b"]["hp"] = float(new["characters"]["a/b"]["hp"])  # same number, now a float
    new["characters"]["Zoë"]["inventory"].insert(2, "rope")
    new["npcs"]["npc 7"]["notes"].append("owes us")
    new["flags"]["count"] = True
    new["flags"]["ratio"] = -0.0
    del new["npcs"]["npc 3"]
    ops = check_roundtrip(old, new)
    assert sorted((op["op"], op["path"]) for op in ops) == [
        ("add", "/characters/Zoë/inventory/2"),
        ("add", "/npcs/npc 7/notes/-"),
        ("add", "/transcript/-"),
        ("remove", "/npcs/npc 3"),
        ("replace", "/characters/a~1b/hp"),
        ("replace", "/flags/count"),
        ("replace", "/flags/ratio"),
        ("replace", "/session/turn"),
    ]
    _, old_pieces, _ = codec.encode_state(old)
    _, new_pieces, _ = codec.encode_state(new)
    assert old_pieces is not None and new_pieces is not None
    assert sorted(map(canonical, diff_members(old, new, old_pieces, new_pieces))) == sorted(map(canonical, ops))


# ---------------------------------------------------------------- lists without pairwise matching


def test_sliding_window_of_many_removes_and_appends() -> None:
    window = [{"turn": i, "text": f"message {i}"} for i in range(200)]
    new = [*window[3:], *({"turn": i, "text": "new"} for i in range(200, 203))]
    ops = check_roundtrip({"log": window}, {"log": new})
    assert [(op["op"], op["path"]) for op in ops] == [("add", "/log/-")] * 3 + [
        ("remove", "/log/2"),
        ("remove", "/log/1"),
        ("remove", "/log/0"),
    ]


def test_window_inside_a_list_with_a_common_tail() -> None:
    body = [f"line {i}" for i in range(50)]
    old = ["head", *body, "footer"]
    new = ["head", *body[2:], "late 1", "late 2", "footer"]
    ops = check_roundtrip(old, new)
    assert sorted((op["op"], op["path"]) for op in ops) == [
        ("add", "/51"),
        ("add", "/52"),
        ("remove", "/1"),
        ("remove", "/2"),
    ]


def test_items_pushed_in_front_and_dropped_at_the_back() -> None:
    recent = [{"id": i} for i in range(100)]
    new = [{"id": -2}, {"id": -1}, *recent[:-2]]
    ops = check_roundtrip({"recent": recent}, {"recent": new})
    assert sorted((op["op"], op["path"]) for op in ops) == [
        ("add", "/recent/0"),
        ("add", "/recent/1"),
        ("remove", "/recent/98"),
        ("remove", "/recent/99"),
    ]


def test_window_over_repeated_values_stays_small() -> None:
    old = [0, 1, 2, 3] * 2500
    new = old[5:] + [9] * 5  # a shift by 1 matches all but the end; the shift by 5 is the one
    assert len(check_roundtrip(old, new)) == 10
    old = [7] * 10_000
    new = [7] * 9_999 + [8]  # the common prefix covers all but the last element
    assert check_roundtrip(old, new) == [{"op": "replace", "path": "/9999", "value": 8}]


def test_lookalikes_inside_long_equal_runs_are_found() -> None:
    old = [{"n": i, "w": 1} for i in range(3000)]
    new = fresh(old)
    new[5]["w"] = 1.0
    new[2500]["w"] = True
    new.append({"n": 3000})
    ops = check_roundtrip(old, new)
    assert sorted((op["op"], op["path"]) for op in ops) == [("add", "/-"), ("replace", "/2500/w"), ("replace", "/5/w")]


def deep_chain(depth: int, leaf: Any) -> Any:
    node = leaf
    for level in range(depth):
        node = {"n": node, "level": level} if level % 3 else [node]
    return node


def test_a_change_at_depth_250_under_a_large_leaf() -> None:
    old = {"world": deep_chain(248, {"text": "x" * 1_000_000, "hp": 1})}
    new = fresh(old)
    node = new["world"]
    path = "/world"
    while not (type(node) is dict and "text" in node):
        node, path = (node["n"], path + "/n") if type(node) is dict else (node[0], path + "/0")
    node["hp"] = 1.0
    ops = check_roundtrip(old, new)
    assert ops == [{"op": "replace", "path": path + "/hp", "value": 1.0}]
    node["text"] += "!"
    ops = check_roundtrip(old, new)
    assert sorted(op["path"] for op in ops) == [path + "/hp", path + "/text"]


def test_equal_length_short_lists_pair_their_elements() -> None:
    ops = check_roundtrip({"p": [[1, [2, {"a": 1}]], 5]}, {"p": [[1, [2, {"a": 2}]], 5]})
    assert ops == [{"op": "replace", "path": "/p/0/1/1/a", "value": 2}]


def test_diff_names_a_value_whose_eq_raises() -> None:
    class Touchy(enum.Enum):
        A = "a"

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no comparing")

        __hash__ = enum.Enum.__hash__

    with pytest.raises(InvalidStateError) as caught:
        diff({"x": ["a", 1]}, {"x": [Touchy.A, 2]})
    assert caught.value.details["path"] == "/x/0"


# ---------------------------------------------------------------- applying without copies


def test_copy_values_false_moves_the_patch_values_into_the_document() -> None:
    value = {"deep": [1]}
    doc = apply_patch({"y": 0}, [{"op": "add", "path": "/x", "value": value}], in_place=True, copy_values=False)
    assert doc["x"] is value  # given away: no copy made
    doc = apply_patch({"y": 0}, [{"op": "add", "path": "/x", "value": value}], in_place=True)
    assert doc["x"] is not value and canonical(doc["x"]) == canonical(value)


def test_a_value_that_is_not_json_is_named_by_its_operation() -> None:
    patch = [{"op": "add", "path": "/a", "value": [1]}, {"op": "add", "path": "/b", "value": {"s": {1}}}]
    with pytest.raises(PatchError) as caught:
        apply_patch({}, patch)
    assert caught.value.details["index"] == 1 and caught.value.details["reason"] == "value is not JSON"


def test_members_bytes_decide_appends_and_windows_type_exact() -> None:
    """diff_members checks appends and sliding windows of a member list against its bytes."""
    log = [{"turn": i, "hp": 1} for i in range(40)]
    cases: list[tuple[Any, Any, list[tuple[str, str]]]] = [
        ({"log": log}, {"log": [*fresh(log), {"turn": 40}]}, [("add", "/log/-")]),
        ({"log": [1, 2]}, {"log": [1, 2.0, 3]}, [("add", "/log/-"), ("replace", "/log/1")]),
        (
            {"log": log},
            {"log": [*fresh(log[2:]), {"turn": 40}]},
            [("add", "/log/-"), ("remove", "/log/1"), ("remove", "/log/0")],
        ),
    ]
    shifted = [*fresh(log[2:]), {"turn": 40}]
    shifted[10]["hp"] = 1.0  # equal under ==, not type-exact: the window's bytes check must see it
    cases.append(
        (
            {"log": log},
            {"log": shifted},
            [("add", "/log/-"), ("remove", "/log/1"), ("remove", "/log/0"), ("replace", "/log/12/hp")],
        )
    )
    for old, new, expected in cases:
        _, old_pieces, _ = codec.encode_state(old)
        _, new_pieces, _ = codec.encode_state(new)
        assert old_pieces is not None and new_pieces is not None
        ops = diff_members(old, new, old_pieces, new_pieces)
        assert sorted((op["op"], op["path"]) for op in ops) == sorted(expected)
        assert canonical(apply_patch(old, ops)) == canonical(new)
        assert canonical(jsonpatch.apply_patch(fresh(old), orjson.loads(canonical(ops)))) == canonical(new)


class _CountingList(list):  # type: ignore[type-arg]
    """A list that counts the elements handed out by iterating it or slicing it."""

    touched = 0

    def __iter__(self) -> Any:
        for value in super().__iter__():
            _CountingList.touched += 1
            yield value

    def __getitem__(self, index: Any) -> Any:
        found = super().__getitem__(index)
        _CountingList.touched += len(found) if isinstance(index, slice) else 1
        return found


def test_a_run_is_measured_from_where_it_starts_not_from_the_list_start() -> None:
    # pairing a list whose elements all changed measures a run after every pair: stepping over the
    # elements before each one made that quadratic in the list's length
    from snapstore.delta import _run_length

    n = 100_000
    old, new = _CountingList(range(n)), _CountingList(range(n))
    new[n - 3] = -1
    _CountingList.touched = 0
    assert _run_length(old, n - 5, new, n - 5, 5) == 2
    assert _CountingList.touched <= 2 * 16
    _CountingList.touched = 0
    assert _run_length(old, 10, new, 10, n - 10) == n - 13  # a long run: twice its length at most
    assert _CountingList.touched <= 4 * n


def test_a_long_list_whose_every_element_changed_diffs_to_what_it_became() -> None:
    n = 50_000
    old = [{"id": i, "name": f"n{i}"} for i in range(n)]
    for new in (old[::-1], [-v - 1 for v in range(n)], old[::2], random.Random(3).sample(old, n)):
        assert apply_patch(old, diff(old, new)) == new


def _entity_tables(rng: random.Random, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A table of ``size`` small entities and a copy with a few of them changed: new numbers, a
    number that only changes type (1 to 1.0 to true, 0.0 to -0.0), a nested list grown, a type
    changed, a nested member added or removed, or nothing at all."""
    old = {
        f"e{i:05d}": {
            "hp": rng.randint(0, 3),
            "x": rng.choice([0.0, 1.0, 0.5]),
            "tags": ["a"],
            "up": True,
            "pos": [i, rng.randint(0, 3)],
            "log": [0, 5, 5, 5, 5, 5.0],
        }
        for i in range(size)
    }
    if rng.random() < 0.3:  # the caller's order is not always sorted
        keys = list(old)
        rng.shuffle(keys)
        old = {key: old[key] for key in keys}
    new = orjson.loads(orjson.dumps(old))
    new = {key: new[key] for key in old}
    for _ in range(rng.randint(0, 6)):
        entity = new[rng.choice(list(new))]
        change = rng.randrange(11)
        if change == 0:
            entity["hp"] = rng.randint(4, 9)
        elif change == 1:
            entity["hp"] = float(entity["hp"])  # == calls it equal
        elif change == 2:
            entity["x"] = -entity["x"] if entity["x"] == 0.0 else entity["x"] + 1
        elif change == 3:
            entity["tags"].append("b")
        elif change == 4:
            entity["up"] = 1  # == calls True and 1 equal
        elif change == 5:
            entity["tags"] = "none"
        elif change == 6:
            entity["extra"] = {"n": 1}
        elif change == 7:
            entity["pos"][1] += 1  # a short list: changes its diff does not count against the budget
        elif change == 8:
            entity["log"] = [5, 5, 5, 5.0, 5, 9]  # a shift whose kept part holds a 5 that became 5.0
        elif change == 9:
            entity["log"].append(entity["log"].pop(0))
        else:
            entity.pop("up", None)
    return old, new


@pytest.mark.parametrize("seed", range(60))
def test_a_wide_object_diffs_as_member_by_member_would(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """An object of many members (``delta._WIDE``) with the same keys has its differing members found
    by C calls and the rest confirmed by bytes: the same operations as the member-by-member diff,
    type-exact (a 1 that became 1.0 is a change), at the top level and nested."""
    from snapstore import delta

    rng = random.Random(seed)
    old, new = _entity_tables(rng, delta._WIDE + rng.randint(0, 300))
    top_level = ({"table": old, "n": 1}, {"table": new, "n": 1})
    nested = ({"w": {"table": old}}, {"w": {"table": new}})
    for before, after in (top_level, nested):
        pieces = codec.encode_state(before)[1], codec.encode_state(after)[1]
        assert pieces[0] is not None and pieces[1] is not None
        fast = diff_members(before, after, *pieces)
        with monkeypatch.context() as m:
            m.setattr(delta, "_WIDE", 10**9)
            slow = diff_members(before, after, *pieces)
        assert fast is not None and orjson.dumps(fast) == orjson.dumps(slow)
        patched = apply_patch(orjson.loads(orjson.dumps(before)), orjson.loads(orjson.dumps(fast)))
        assert codec.dumps(patched) == codec.dumps(after)
        for budget in {0, 1, len(fast) - 1, len(fast), len(fast) + 1} - {-1}:  # the same verdict, budget or not
            fast_within = diff_members(before, after, *pieces, budget)
            with monkeypatch.context() as m:
                m.setattr(delta, "_WIDE", 10**9)
                slow_within = diff_members(before, after, *pieces, budget)
            assert orjson.dumps(fast_within) == orjson.dumps(slow_within)


def test_a_wide_object_is_confirmed_by_bytes_a_chunk_at_a_time() -> None:
    """orjson reserves its buffer by the number of items it is given (hundreds of bytes an item for
    small ones): the members of a wide object are confirmed by their bytes a chunk at a time, so
    the diff's memory stays near the object's own JSON."""
    import tracemalloc

    table = {f"k{i}": {"v": i} for i in range(60_000)}
    old, new = {"w": {"table": table}}, {"w": {"table": {**table, "k7": {"v": -1}}}}
    pieces = codec.encode_state(old)[1], codec.encode_state(new)[1]
    assert pieces[0] is not None and pieces[1] is not None
    size = len(codec.dumps(table))

    def peak() -> int:
        tracemalloc.start()
        try:
            assert diff_members(old, new, *pieces) == [{"op": "replace", "path": "/w/table/k7/v", "value": -1}]
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    # (the whole object serialized at once, ``delta._CHUNK`` set past its size, peaked at 16.4 times
    # its JSON with orjson 3.13, against 1.3 a chunk at a time)
    assert peak() < 3 * size


def test_a_wide_object_s_members_shared_with_the_old_one_are_not_serialized(monkeypatch: pytest.MonkeyPatch) -> None:
    """A member that is the very same object on both sides is equal without its bytes: a table of
    large entities against a shallow copy with one entity changed serializes none of them."""
    from snapstore import delta

    old = {f"e{i:04d}": {"text": f"entity {i} " * 100, "n": i} for i in range(600)}
    new = dict(old)
    new["e0003"] = {"text": "y", "n": 3}
    serialized: list[int] = []
    same_bytes = delta._same_bytes

    def counted(a: Any, b: Any) -> bool:
        serialized.append(len(a))
        return same_bytes(a, b)

    monkeypatch.setattr(delta, "_same_bytes", counted)
    assert diff({"w": old}, {"w": new}) == [{"op": "replace", "path": "/w/e0003/text", "value": "y"}]
    assert serialized == []
