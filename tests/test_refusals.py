"""Every refused value is named with its place: the JSON pointer of the value, in the error's
message and in ``details["path"]``, wherever it stands (a nested member, a long list or a wide
object written a chunk at a time, the state itself), on a first commit and on a delta commit.
Nothing is written by a refused commit (the session's head and length stay as they were).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import math
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from snapstore import InvalidStateError, SnapshotStore
from snapstore.session import Session


@dataclasses.dataclass
class Point:
    x: int


Pair = collections.namedtuple("Pair", "x y")


class Rate(float, enum.Enum):  # a float enum, kept as its value as IntEnum and StrEnum are
    HALF = 0.5


class Hue(enum.StrEnum):
    RED = "red"


def _cycle() -> dict[str, Any]:
    node: dict[str, Any] = {"k": 1}
    node["again"] = [node]
    return node


def _nested(depth: int) -> Any:
    node: Any = 1
    for _ in range(depth):
        node = {"n": node}
    return node


# value placed at /npcs/0/born, and the pointer under it (after "/npcs/0/born") the error must name
REFUSED: dict[str, tuple[Any, str]] = {
    "datetime": (datetime.datetime(2024, 1, 2, 3, 4), ""),
    "date": (datetime.date(2024, 1, 2), ""),
    "time": (datetime.time(3, 4), ""),
    "timedelta": (datetime.timedelta(days=1), ""),
    "set": ({1, 2}, ""),
    "frozenset": (frozenset({"a"}), ""),
    "bytes": (b"raw", ""),
    "bytearray": (bytearray(b"raw"), ""),
    "decimal": (decimal.Decimal("1.5"), ""),
    "complex": (1 + 2j, ""),
    "object": (object(), ""),
    "dataclass": (Point(1), ""),
    "int-2**70": (2**70, ""),
    "int-2**64": (2**64, ""),
    "int-below-int64": (-(2**63) - 1, ""),
    "lone-surrogate": ("a\ud800b", ""),
    "int-key": ({"ok": 1, 3: "x"}, "/3"),
    "none-key": ({None: "x"}, "/None"),
    "tuple-key": ({(1, 2): "x"}, "/<tuple>"),
    "str-subclass-key": ({type("Name", (str,), {})("who"): 1}, "/who"),
    "surrogate-key": ({"\udfff": 1}, "/\\udfff"),
    "inside-a-list": ([1, 2, {"when": datetime.date(2024, 1, 2)}], "/2/when"),
    "in-a-tuple": ((1, {2}), "/1"),
    "namedtuple": (Pair(1, 2), ""),
    "in-a-namedtuple": ([Pair(1, {2})], "/0"),
    "too-deep": (_nested(300), "/n" * 249),  # the 253rd nested container: orjson takes 254, less 2 spare
    "cycle": (_cycle(), "/again/0"),  # where the container comes back: it holds itself
    "nan": (math.nan, ""),
    "infinity": (-math.inf, ""),
    "uuid": (uuid.UUID(int=7), ""),
}


@pytest.fixture(params=["memory", "directory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SnapshotStore]:
    yield SnapshotStore.memory() if request.param == "memory" else SnapshotStore.open(tmp_path / "store")


def refused(sess: Session, state: Any) -> InvalidStateError:
    head, length = sess.head, len(sess)
    with pytest.raises(InvalidStateError) as caught:
        sess.commit(state)
    assert sess.head == head and len(sess) == length  # nothing written
    return caught.value


def check_named(error: InvalidStateError, pointer: str) -> None:
    assert error.details["path"] == pointer, error
    assert f"(at {pointer or 'the top level'})" in str(error)
    assert error.details["reason"] and error.details["reason"] in str(error)


@pytest.mark.parametrize("first", [True, False], ids=["first-commit", "delta-commit"])
@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_value_is_named_by_its_pointer(store: SnapshotStore, case: str, first: bool) -> None:
    value, below = REFUSED[case]
    sess = store.session("s")
    if not first:
        sess.commit({"npcs": [{"name": "Zoë", "born": None}], "turn": 1})
    error = refused(sess, {"npcs": [{"name": "Zoë", "born": value}], "turn": 2})
    check_named(error, "/npcs/0/born" + below)


def test_tuple_subclasses_and_str_subclass_keys_say_why(store: SnapshotStore) -> None:
    """Each is refused as its kind is (a tuple, a key that is not exactly a str), named by its place."""
    sess = store.session("s")
    error = refused(sess, {"p": [Pair(1, 2)]})
    check_named(error, "/p/0")
    assert error.details["reason"] == "a tuple (Pair) is not JSON; pass a list" and error.details["type"] == "Pair"
    sess.commit({"rate": 1.0, "p": []})
    error = refused(sess, {"rate": 1.0, "p": [{Hue.RED: 1}]})
    check_named(error, "/p/0/red")
    assert "keys must be exactly str, not a subclass of it: key 'red' is a Hue" in error.details["reason"]


def test_an_enum_of_a_json_type_is_stored_as_its_value(store: SnapshotStore) -> None:
    """A float enum, like IntEnum and StrEnum, is a float: stored as its value, read back as a float."""
    sess = store.session("s")
    snap = sess.commit({"rate": Rate.HALF, "rates": [1.0, Rate.HALF]})
    back = sess.state(snap.id)
    assert back == {"rate": 0.5, "rates": [1.0, 0.5]} and type(back["rate"]) is float


BIG = 3000  # more items than a chunk: long lists and wide objects are written a chunk at a time


@pytest.mark.parametrize(
    ("make", "pointer"),
    [
        (lambda: {"log": [*range(BIG), {1, 2}]}, f"/log/{BIG}"),
        (lambda: {"log": [{"n": i} for i in range(BIG)] + [{"n": 2**64}]}, f"/log/{BIG}/n"),
        (lambda: {"world": {**{f"k{i}": i for i in range(BIG)}, "zz": b"x"}}, "/world/zz"),
        (lambda: {"world": {**{f"k{i}": i for i in range(BIG)}, 7: 1}}, "/world/7"),
        (lambda: {**{f"k{i}": i for i in range(BIG)}, "when": datetime.date(2024, 1, 2)}, "/when"),
        (lambda: {**{f"k{i}": i for i in range(BIG)}, 7: 1}, "/7"),
        (lambda: [*range(BIG), [datetime.time(1, 2)]], f"/{BIG}/0"),
        (lambda: [1, {"a": {3}}], "/1/a"),
        (lambda: {"\ud800": 1}, "/\\ud800"),
    ],
)
def test_refusals_in_long_lists_wide_objects_and_the_state_itself(
    store: SnapshotStore, make: Callable[[], Any], pointer: str
) -> None:
    check_named(refused(store.session("s"), make()), pointer)


def test_long_lists_and_wide_objects_round_trip_exactly(store: SnapshotStore) -> None:
    """Written a chunk at a time, they are byte for byte what orjson writes of the whole."""
    state = {
        "log": [{"n": i, "f": i / 3, "t": "~/é" * (i % 3)} for i in range(BIG)],
        "wide": {f"k{i:05d}/~": [i, float(i), i % 2 == 0] for i in range(BIG, 0, -1)},
        "edge": [[]] * (BIG + 1),
        **{f"top {i}": None for i in range(BIG)},
    }
    expected = orjson.dumps(state, option=orjson.OPT_SORT_KEYS)
    sess = store.session("s")
    first = sess.commit(state)
    state["log"][BIG // 2]["f"] = -0.0
    second = sess.commit(state)
    assert orjson.dumps(sess.state(first.id), option=orjson.OPT_SORT_KEYS) == expected
    assert orjson.dumps(sess.state(second.id), option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        state, option=orjson.OPT_SORT_KEYS
    )
    assert [op["path"] for op in sess.diff(first.id, second.id)] == [f"/log/{BIG // 2}/f"]


def test_a_cycle_is_told_from_a_state_nested_too_deeply() -> None:
    """Both pass orjson's depth; a cycle is named where the container comes back, and what it is
    inside of (the message said 'nested too deeply or contains a cycle' at the 253rd level of either)."""
    sess = SnapshotStore.memory().session("s")
    error = refused(sess, {"npcs": [{"born": _cycle()}]})
    assert error.details["path"] == "/npcs/0/born/again/0"
    assert "contains a cycle: the container at /npcs/0/born holds itself" in str(error)
    itself: dict[str, Any] = {}
    itself["me"] = itself
    error = refused(sess, itself)
    assert error.details["path"] == "/me" and "the container at the top level holds itself" in str(error)
    error = refused(sess, {"deep": _nested(300)})
    assert "nested too deeply: a state nests at most 252 levels" in str(error) and "cycle" not in str(error)
