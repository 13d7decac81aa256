"""Bad input (issue #7): refused with a typed SnapshotError, and nothing written.

Every case runs on a memory and a directory store that already hold a
session, and compares every segment's entries, the store's format and
(directory) every file but the lock files before and after the refused call. Valid edge cases
(unicode keys, extreme integers, the deepest nesting allowed, a 50 MB string)
must round-trip type-exactly, also through deltas and from a reopened store.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
import pytest
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, computed_field, field_serializer, model_validator

from conftest import copy_backend, store_contents
from conftest_reliability import canonical, count, directory_files
from snapstore import (
    AmbiguousSnapshotId,
    BackendError,
    InvalidNameError,
    InvalidStateError,
    SnapshotError,
    SnapshotNotFound,
    SnapshotStore,
)
from snapstore.backends import Backend, DirectoryBackend, MemoryBackend
from snapstore.codec import object_id
from snapstore.entries import compress_keyframe, encode_commit, encode_meta
from snapstore.objects import SnapshotRecord
from snapstore.store import session_key

BASE_STATE = {"hp": 10, "items": ["sword"], "pos": {"x": 0, "y": 0}, "none": None, "list": [None, 1]}


def _populate(store: SnapshotStore) -> None:
    sess = store.session("s", max_snapshots=5)
    sess.commit(BASE_STATE, label="first", turn=1)
    sess.commit({**BASE_STATE, "hp": 9}, label="second", turn=2)


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One populated store of each kind, copied for every test."""
    root = tmp_path_factory.mktemp("golden") / "store"
    _populate(SnapshotStore(DirectoryBackend(root)))
    memory = MemoryBackend()
    _populate(SnapshotStore(memory))
    return {"directory": root, "memory": memory}


class Fixture:
    def __init__(self, kind: str, tmp_path: Path, golden: dict[str, Any]) -> None:
        self.kind, self.root = kind, tmp_path / "store"
        if kind == "directory":
            shutil.copytree(golden["directory"], self.root, symlinks=True)  # format markers are links
            self.backend: Backend = DirectoryBackend(self.root, create=False)
        else:
            self.backend = MemoryBackend()
            copy_backend(golden["memory"], self.backend)
        self.store = SnapshotStore(self.backend)
        self.sess = self.store.session("s")
        self.first, self.head = self.sess.snapshots()

    def reopen(self) -> SnapshotStore:
        return SnapshotStore(DirectoryBackend(self.root, create=False) if self.kind == "directory" else self.backend)

    def contents(self) -> Any:
        files = None
        if self.kind == "directory":  # a lock file is made by taking a lock, and holds nothing
            files = {k: v for k, v in directory_files(self.root).items() if os.path.basename(k) != "lock"}
        return store_contents(self.store), files

    @contextmanager
    def writes_nothing(self) -> Iterator[None]:
        before = self.contents()
        head, length = self.sess.head, len(self.sess)
        yield
        assert self.contents() == before, "a refused call wrote something"
        assert self.sess.head == head and len(self.sess) == length
        count("bad input: bad inputs tried")


@pytest.fixture(params=["memory", "directory"])
def fx(request: pytest.FixtureRequest, tmp_path: Path, golden: dict[str, Any]) -> Fixture:
    return Fixture(request.param, tmp_path, golden)


def refused(fx: Fixture, error: type[SnapshotError], call: Callable[[], Any]) -> SnapshotError:
    with fx.writes_nothing(), pytest.raises(error) as err:
        call()
    assert isinstance(err.value, SnapshotError)
    assert isinstance(err.value.details, dict) and err.value.details, "the error names nothing"
    assert str(err.value)
    return err.value


# -- states JSON cannot represent ----------------------------------------------------


def _cycle_dict() -> dict[str, Any]:
    a: dict[str, Any] = {"k": 1}
    a["self"] = {"again": a}
    return a


def _cycle_list() -> list[Any]:
    a: list[Any] = [1]
    a.append([a])
    return a


def _nested(depth: int, leaf: Any = 1, *, as_list: bool = False) -> Any:
    node: Any = leaf
    for _ in range(depth):
        node = [node] if as_list else {"n": node}
    return node


class Color(enum.Enum):
    RED = "red"


NOT_JSON: dict[str, Any] = {
    "nan": float("nan"),
    "inf": float("inf"),
    "-inf": float("-inf"),
    "nan-in-list": [1.0, math.nan],
    "int-key": {1: "x"},
    "none-key": {None: "x"},
    "bool-key": {True: "x"},
    "tuple-key": {(1, 2): "x"},
    "float-key": {1.5: "x"},
    "nested-int-key": {"ok": {2: "x"}},
    "cycle-dict": _cycle_dict(),
    "cycle-list": _cycle_list(),
    "set": {1, 2},
    "frozenset": frozenset({"a"}),
    "bytes": b"raw",
    "bytearray": bytearray(b"raw"),
    "memoryview": memoryview(b"raw"),
    "tuple": (1, 2),
    "datetime": datetime.datetime(2024, 1, 2, 3, 4, 5),
    "aware-datetime": datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc),
    "date": datetime.date(2024, 1, 2),
    "time": datetime.time(3, 4),
    "timedelta": datetime.timedelta(seconds=3),
    "decimal": decimal.Decimal("1.5"),
    "complex": 1 + 2j,
    "object": object(),
    "function": len,
    "class": SnapshotStore,
    "ellipsis": ...,
    "range": range(3),
    "enum": Color.RED,
    "uuid": uuid.UUID(int=7),
    "path": Path("/tmp"),
    "int-2**64": 2**64,
    "int-below-int64": -(2**63) - 1,
    "int-googol": 10**100,
    "nested-2**64": {"deep": [[2**64]]},
    "dict-depth-300": _nested(300),
    "list-depth-300": _nested(300, as_list=True),
    "depth-100000": _nested(100_000, as_list=True),
    "lone-surrogate": "\ud800",
    "lone-low-surrogate-inside": "a\udc80b",
    "surrogate-key": {"\udfff": 1},
}


@pytest.mark.parametrize("where", ["whole-state", "member", "nested-member"])
@pytest.mark.parametrize("name", list(NOT_JSON))
def test_states_json_cannot_represent_are_refused(fx: Fixture, name: str, where: str) -> None:
    value = NOT_JSON[name]
    if where == "whole-state":
        state = value
    elif where == "member":
        state = {**BASE_STATE, "bad": value}
    else:
        state = {**BASE_STATE, "pos": {"x": 0, "y": [0, {"z": value}]}}
    err = refused(fx, InvalidStateError, lambda: fx.sess.commit(state))
    assert "reason" in err.details


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1])
def test_an_integer_out_of_range_is_refused_naming_the_range_a_state_may_hold(fx: Fixture, value: int) -> None:
    """The range is orjson's (int64 and uint64 together): the message says so, not a narrower one."""
    for state in ({"a": value}, {"a": [1, {"b": value}]}):
        err = refused(fx, InvalidStateError, lambda state=state: fx.sess.commit(state))
        assert err.details["reason"] == "integer outside the 64-bit range a state may hold (-2^63 … 2^64-1)"
    assert [canonical(fx.sess.state(fx.sess.commit({"a": v}).id)) for v in (2**64 - 1, -(2**63))] == [
        b'{"a":18446744073709551615}',
        b'{"a":-9223372036854775808}',
    ]


def test_first_commit_refusals_write_nothing(fx: Fixture) -> None:
    """The first commit of a session takes another path (no head to diff against)."""
    sess = fx.store.session("fresh")
    before = fx.contents()
    for name, value in NOT_JSON.items():
        with pytest.raises(InvalidStateError):
            sess.commit({"bad": value})
        count("bad input: bad inputs tried")
        assert fx.contents() == before, name
    assert len(sess) == 0 and sess.head is None


# A value that orjson writes exactly like the head's bytes: NaN and Infinity become null, a tuple
# becomes a list, an enum its value, a UUID its string, a Fragment whatever it holds. A delta
# commit skips what is byte-identical to the head, so each must be caught by comparing the state
# with its reading, wherever it stands: a whole member, inside a changed member, in an added item.
SAME_BYTES_AS_HEAD = {
    "nan-where-head-has-null": ("none", math.nan, "/none"),
    "inf-where-head-has-null": ("list", [float("inf"), 1], "/list/0"),
    "-inf-where-head-has-null": ("list", [float("-inf"), 1], "/list/0"),
    "tuple-where-head-has-list": ("items", ("sword",), "/items"),
    "enum-where-head-has-its-value": ("color", Color.RED, "/color"),
    "uuid-where-head-has-its-string": ("uuid", uuid.UUID(int=7), "/uuid"),
    "fragment-where-head-has-its-bytes": ("hp", orjson.Fragment(b"10"), "/hp"),
    "nan-float-subclass-where-head-has-null": ("none", type("Ratio", (float,), {})("nan"), "/none"),
    "nan-inside-a-changed-member": ("pos", {"x": 1, "y": 0, "z": None, "w": math.nan}, "/pos/w"),
    "nan-beside-a-change": ("pos", {"x": 1, "y": math.nan}, "/pos/y"),
}


@pytest.mark.parametrize("case", list(SAME_BYTES_AS_HEAD))
def test_unrepresentable_value_equal_to_the_heads_bytes_is_refused(fx: Fixture, case: str) -> None:
    key, value, path = SAME_BYTES_AS_HEAD[case]
    head = {**BASE_STATE, "uuid": str(uuid.UUID(int=7)), "color": "red", "pos": {"x": 0, "y": None}}
    fx.sess.commit(head)
    for _turn in range(2):  # once on the first delta, once more after the head cache was rebuilt
        err = refused(fx, InvalidStateError, lambda: fx.sess.commit({**head, key: value}))
        if path is not None:
            assert err.details["path"] == path, err
    assert canonical(fx.sess.state(fx.sess.head.id)) == canonical(head)  # the cache was not left patched


@pytest.mark.parametrize("value", [("sword",), math.nan, Color.RED])
@pytest.mark.parametrize("depth", ["top", "nested"])
def test_a_renamed_member_holding_a_value_json_cannot_give_back_is_refused(fx: Fixture, value: Any, depth: str) -> None:
    """A rename is found by the value's bytes (a move), and a tuple, NaN or an enum writes the bytes
    of the list, null or string the head holds: the move alone would store it as the head's."""
    plain = orjson.loads(orjson.dumps(value))  # what orjson writes it as: a list, null, a string
    head = {"turn": 1, "old": plain} if depth == "top" else {"turn": 1, "bag": {"old": plain}}
    renamed = {"turn": 2, "new": value} if depth == "top" else {"turn": 2, "bag": {"new": value}}
    fx.sess.commit(head)
    refused(fx, InvalidStateError, lambda: fx.sess.commit(renamed))
    assert canonical(fx.sess.state(fx.sess.head.id)) == canonical(head)
    good = {"turn": 3, "new": plain} if depth == "top" else {"turn": 3, "bag": {"new": plain}}
    snap = fx.sess.commit(good)  # the same rename with the plain value lands, and reads back
    assert canonical(fx.reopen().session("s").state(snap.id)) == canonical(good)


def test_a_refused_delta_commit_leaves_the_next_commit_right(fx: Fixture) -> None:
    """A refusal happens after the cached head was patched: the next commit must not diff against that."""
    fx.sess.commit({"a": None, "b": 1})
    with pytest.raises(InvalidStateError):
        fx.sess.commit({"a": math.nan, "b": 2})
    snap = fx.sess.commit({"a": None, "b": 3})
    assert fx.reopen().session("s").state(snap.id) == {"a": None, "b": 3}
    assert fx.store.verify(read_data=True).ok


def test_refusals_name_the_value_and_where_it_is(fx: Fixture) -> None:
    err = refused(fx, InvalidStateError, lambda: fx.sess.commit({"npcs": [{"name": "x", "hp": math.inf}]}))
    assert err.details["path"] == "/npcs/0/hp" and "NaN and Infinity" in str(err) and "/npcs/0/hp" in str(err)
    err = refused(fx, InvalidStateError, lambda: fx.sess.commit({"a/b": {"~": (1,)}}))
    assert err.details["path"] == "/a~1b/~0" and "tuple" in str(err)


class LenientDict(dict):  # claims equality with anything
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = None  # type: ignore[assignment]


class ExplodingFloat(float):
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("boom")

    __ne__ = __eq__  # type: ignore[assignment]
    __hash__ = float.__hash__


class HostileDict(dict):  # every reading method fails: only the base type's storage is usable
    def items(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("items")

    def keys(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("keys")

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("iter")


class HostileList(list):
    def __iter__(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("iter")

    def __len__(self) -> int:
        raise RuntimeError("len")


class LenientColor(enum.Enum):
    RED = "red"

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("boom")

    __hash__ = enum.Enum.__hash__


# Values whose own methods lie or fail: a refusal must still say InvalidStateError and write nothing.
HOSTILE = {
    "lenient-dict-hiding-nan": {"npc": LenientDict(hp=math.nan)},
    "lenient-dict-hiding-tuple": {"npc": LenientDict(pos=(1, 2))},
    "float-subclass-whose-eq-raises-holding-nan": {"a": ExplodingFloat("nan")},
    "hostile-dict-holding-nan": {"a": HostileDict(x=math.nan)},
    "hostile-list-holding-inf": {"a": HostileList([1, math.inf])},
    "enum-whose-eq-raises": {"c": LenientColor.RED},
}


@pytest.mark.parametrize("where", ["first-commit", "delta-commit"])
@pytest.mark.parametrize("case", list(HOSTILE))
def test_values_whose_own_methods_lie_or_fail_are_refused(fx: Fixture, case: str, where: str) -> None:
    sess = fx.store.session("s") if where == "delta-commit" else fx.store.session("fresh")
    refused(fx, InvalidStateError, lambda: sess.commit(HOSTILE[case]))


@pytest.mark.parametrize("where", ["first-commit", "delta-commit"])
def test_subclasses_are_read_through_their_base_type(fx: Fixture, where: str) -> None:
    """Overridden iteration or lookups cannot change what is stored: the stored items are read."""
    sess = fx.store.session("s") if where == "delta-commit" else fx.store.session("fresh")
    snap = sess.commit({"d": HostileDict(x=1, y=[2]), "l": HostileList([3, {"z": 4}])})
    assert canonical(fx.reopen().session(sess.name).state(snap.id)) == canonical(
        {"d": {"x": 1, "y": [2]}, "l": [3, {"z": 4}]}
    )


def test_a_model_that_does_not_serialize_is_refused(fx: Fixture) -> None:
    class Loose(BaseModel):
        model_config = {"arbitrary_types_allowed": True}
        thing: Any = None

    refused(fx, InvalidStateError, lambda: fx.sess.commit(Loose(thing=object())))


@pytest.mark.parametrize(
    "where",
    ["dict-field", "any-field", "list-of-any", "nested-model-any", "float-field"],
)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_in_a_model_are_refused_wherever_they_stand(fx: Fixture, where: str, value: float) -> None:
    """pydantic's model_dump(mode="json") writes NaN and Infinity as null in values without a declared
    type (a dict or Any field), where a float field keeps them: a commit would store null instead."""

    class Inner(BaseModel):
        anything: Any = None

    class Sheet(BaseModel):
        blob: dict = {}
        anything: Any = None
        items: list = []
        inner: Inner = Inner()
        ratio: float = 0.5

    fields = {
        "dict-field": {"blob": {"ratio": value}},
        "any-field": {"anything": value},
        "list-of-any": {"items": [1, value]},
        "nested-model-any": {"inner": Inner(anything=value)},
        "float-field": {"ratio": value},
    }
    model = Sheet(**fields[where])
    before = fx.sess.head
    with pytest.raises(InvalidStateError, match="NaN and Infinity"):
        fx.sess.commit(model)
    assert fx.reopen().session("s").head == before


def test_a_model_is_stored_as_its_model_dump_in_json_mode(fx: Fixture) -> None:
    """Aliases, field and model serializers and computed fields write what model_dump(mode="json") writes."""

    class Item(BaseModel):
        model_config = ConfigDict(serialize_by_alias=True, populate_by_name=True)
        name: str = Field("torch", alias="Name")
        secret: str = Field("hidden", exclude=True)
        weight: decimal.Decimal = decimal.Decimal("1.50")

        @computed_field  # type: ignore[prop-decorator]
        @property
        def label(self) -> str:
            return self.name.upper()

    class Pack(BaseModel):
        items: list[Item] = [Item(), Item(Name="rope")]
        notes: dict[str, Any] = {"a": [1, 2.0, True, None]}

        @field_serializer("notes", when_used="json")
        def _notes(self, notes: dict[str, Any]) -> dict[str, Any]:
            return {**notes, "written": "json"}

    class Log(BaseModel):  # its settings apply to values of no declared type too (found by a review)
        model_config = ConfigDict(ser_json_timedelta="float", ser_json_bytes="base64")
        cooldown: datetime.timedelta = datetime.timedelta(seconds=1.5)
        extra: dict[str, Any] = {}
        older: list[Log] = []  # a model that refers to itself: its schema is a reference

    class Checked(Log):  # a validator wraps the model's schema in another (found by a second review)
        @model_validator(mode="after")
        def _ok(self) -> Checked:
            return self

    log = Log(extra={"wait": datetime.timedelta(seconds=2), "blob": b"\xff\x00"}, older=[Log(extra={"b": b"x"})])
    checked = Checked(extra={"wait": datetime.timedelta(seconds=3), "blob": b"\x01"})
    for model in (Pack(), log, checked):
        snap = fx.sess.commit(model)
        assert canonical(fx.reopen().session("s").state(snap.id)) == canonical(model.model_dump(mode="json"))


def test_a_model_rebuilt_with_another_serializer_is_stored_as_it_now_dumps(fx: Fixture) -> None:
    """The serializer made for a model class is made again when pydantic rebuilds the class."""

    class Turn(BaseModel):
        x: int = 1

    fx.sess.commit(Turn(x=1))
    Turn.model_fields["x"].annotation = Annotated[int, PlainSerializer(lambda v: f"#{v}", when_used="json")]
    Turn.model_rebuild(force=True)
    snap = fx.sess.commit(Turn(x=2))
    assert fx.reopen().session("s").state(snap.id) == {"x": "#2"} == Turn(x=2).model_dump(mode="json")


def test_a_state_byte_identical_to_a_settings_entry_is_stored_as_a_state(tmp_path: Path) -> None:
    """A state whose canonical bytes are those of the session's own settings entry (its checkpoint)
    is a keyframe like any other: entries are typed, so the two can never be taken for each other."""
    store = SnapshotStore.open(tmp_path / "store", max_chain=0)  # every commit a keyframe
    sess = store.session("s")
    key = sess.key
    checkpoint = store.backend.read_segment(key, store.backend.segments(key)[0].segment).entries[0]
    settings_state = orjson.loads(checkpoint[1:])
    assert settings_state["checkpoint"] is True and settings_state["name"] == "s"
    snap = sess.commit(settings_state)
    sess.commit({"after": 1})
    assert store.verify(read_data=True).ok
    again = SnapshotStore.open(tmp_path / "store").session("s")
    assert canonical(again.state(snap.id)) == canonical(settings_state)
    assert again.max_snapshots == 10 and again.tags == {}  # the state was not read as settings


# Subclasses of the JSON types are instances of them: each is written, and reads back, as its base
# type (design.md, "Validation"), and the base type's methods are used, so overrides cannot change
# what is stored. Enums that are ints or strings are such subclasses; other enums are refused.
class Shouty(str):
    def __str__(self) -> str:
        return self.upper()


class Level(enum.IntEnum):
    ONE = 1


class Mood(enum.StrEnum):
    CALM = "calm"


class Rate(int, enum.Enum):
    """An int enum whose ``.value`` is a float: orjson writes it as that value (1.0) when told to pass
    subclasses through, as the state's serializer is, and as the int (1) when not."""

    ONE = 1

    def __new__(cls, value: int) -> Rate:
        member = int.__new__(cls, value)
        member._value_ = float(value)
        return member


SUBCLASSES = {
    "OrderedDict": (collections.OrderedDict(b=1, a=2), {"a": 2, "b": 1}),
    "defaultdict": (collections.defaultdict(list, a=[1]), {"a": [1]}),
    "str-subclass": (type("Name", (str,), {})("zoë"), "zoë"),
    "str-subclass-overriding-str": (Shouty("quiet"), "quiet"),
    "int-subclass": (type("Count", (int,), {})(3), 3),
    "float-subclass": (type("Ratio", (float,), {})(0.5), 0.5),
    "list-subclass": (type("Items", (list,), {})([1, 2]), [1, 2]),
    "IntEnum": (Level.ONE, 1),
    "StrEnum": (Mood.CALM, "calm"),
    "int-enum-of-a-float-value": (Rate.ONE, 1.0),
    "nested": ({"deep": [collections.OrderedDict(z=[type("Count", (int,), {})(4)])]}, {"deep": [{"z": [4]}]}),
}


@pytest.mark.parametrize("case", list(SUBCLASSES))
@pytest.mark.parametrize("where", ["first-commit", "delta-commit"])
def test_subclasses_of_json_types_are_written_as_their_base_type(fx: Fixture, case: str, where: str) -> None:
    value, expected = SUBCLASSES[case]
    sess = fx.store.session(where)
    if where == "delta-commit":
        sess.commit({"v": None, "other": 1})
    snap = sess.commit({"v": value, "other": 1})
    got = fx.reopen().session(where).state(snap.id)
    assert canonical(got) == canonical({"v": expected, "other": 1})
    assert type(got["v"]) is type(expected)
    after = sess.commit({"v": value, "other": 2})  # the stored states differ in /other only
    assert [op["path"] for op in sess.diff(snap.id, after.id)] == ["/other"]


@pytest.mark.parametrize(
    ("head", "state", "expected"),
    [
        pytest.param({"v": 1}, {"v": Rate.ONE}, {"v": 1.0}, id="member"),
        pytest.param({"v": [1, 2, 3]}, {"v": [Rate.ONE, 2, 3]}, {"v": [1.0, 2, 3]}, id="list-element"),
        pytest.param({"v": {"a": 1, "b": 2}}, {"v": {"a": Rate.ONE, "b": 2}}, {"v": {"a": 1.0, "b": 2}}, id="nested"),
        pytest.param({"v": [1.0, 2, 3]}, {"v": [Rate.ONE, 2, 3]}, {"v": [1.0, 2, 3]}, id="unchanged"),
    ],
)
def test_an_enum_stored_as_its_value_is_diffed_as_that_value(
    fx: Fixture, head: Any, state: Any, expected: Any
) -> None:
    """The delta to a state holding an enum member whose ``.value`` has another type than the member
    (stored as that value) says what the state's hash says: the diff compared, and the patch wrote,
    such a member as orjson writes an int (1), while the state's bytes hold its value (1.0), so the
    delta dropped the change (a list's element, == to its int) or wrote 1 (a member replaced) and
    the snapshot never rebuilt again (CorruptObjectError, and verify's problem)."""
    fx.sess.commit(head)
    snap = fx.sess.commit(state)
    got = fx.reopen().session("s").state(snap.id)
    assert canonical(got) == canonical(expected)
    assert fx.reopen().verify(read_data=True).ok


# -- valid edge cases round-trip exactly ---------------------------------------------

UNICODE_TEXT = [
    "",
    "/",
    "~",
    "~0",
    "~1",
    "a/b",
    "~/~",
    "/~1/",
    "-",
    "0",
    "01",
    " ",
    "é",  # NFC
    "e\u0301",  # NFD: a different key from the NFC one, both must survive
    "\u0301",  # a lone combining mark
    "a\u0301\u0302\u0303",
    "\U0001f600",  # astral: a surrogate pair in UTF-16
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # ZWJ sequence
    "\ufeff",  # BOM
    "\u202e",  # right-to-left override
    "\x00",
    "\x1f",
    "\x7f",
    "\u2028",
    "\uffff",
    "\U0010ffff",
    '"',
    "\\",
    "\n\r\t",
    "名前",
]


def test_unicode_keys_and_values_round_trip_through_deltas(fx: Fixture) -> None:
    states = [
        {key: value for key, value in zip(UNICODE_TEXT, reversed(UNICODE_TEXT), strict=True)},
        {key: [key, {key: key}] for key in UNICODE_TEXT},  # every value changes: replace operations
        {key: [key, {key: key, "new": 1}] for key in UNICODE_TEXT[::2]},  # removals and additions
        {"nested": {key: {key: [key]} for key in UNICODE_TEXT}},
        {key: None for key in UNICODE_TEXT[1::2]},
    ]
    ids = [fx.sess.commit(state).id for state in states]
    count("bad input: valid edge cases round-tripped", len(states))
    reopened = fx.reopen().session("s")
    for sid, state in zip(ids, states, strict=True):
        assert canonical(reopened.state(sid)) == canonical(state)
        assert canonical(fx.sess.state(sid)) == canonical(state)
    assert len({"é", "e\u0301"} & set(reopened.state(ids[0]))) == 2
    assert fx.reopen().verify(read_data=True).ok


EXTREMES: dict[str, Any] = {
    "int64-min": -(2**63),
    "uint64-max": 2**64 - 1,
    "int-vs-float-vs-bool": [1, 1.0, True, 0, 0.0, False, -0.0],
    "float-extremes": [5e-324, 1.7976931348623157e308, -2.2250738585072014e-308, 1e16, 0.1],
    "empty-containers": {"": {}, "l": [], "s": ""},
    "dict-depth-248": _nested(248),
    "list-depth-248": _nested(248, as_list=True),
    "wide": {f"k{i}": i for i in range(5000)},
    "long-list": list(range(20000)),
}


@pytest.mark.parametrize("name", list(EXTREMES))
def test_extreme_valid_values_round_trip(fx: Fixture, name: str) -> None:
    value = EXTREMES[name]
    snaps = [fx.sess.commit({"v": value}), fx.sess.commit({"v": value, "w": 1}), fx.sess.commit(value)]
    count("bad input: valid edge cases round-tripped")
    reopened = fx.reopen().session("s")
    for snap, expected in zip(snaps, [{"v": value}, {"v": value, "w": 1}, value], strict=True):
        assert canonical(reopened.state(snap.id)) == canonical(expected)


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        pytest.param("first-commit", "dict"),
        pytest.param("first-commit", "list"),
        pytest.param("delta-commit", "dict"),
        pytest.param("delta-commit", "list"),
    ],
)
def test_nesting_depth_boundary(tmp_path: Path, golden: dict[str, Any], path: str, shape: str) -> None:
    """Around the depth limit every state is either refused with InvalidStateError (writing nothing)
    or stored whole: readable from a fresh store and passing verify."""
    refused_from = None
    for depth in range(245, 260):
        fx = Fixture("memory", tmp_path, golden)
        sess = fx.store.session("fresh") if path == "first-commit" else fx.sess
        state = _nested(depth, as_list=shape == "list")
        before = fx.contents()
        try:
            snap = sess.commit(state)
        except InvalidStateError:
            assert fx.contents() == before, f"refusing depth {depth} wrote something"
            count("bad input: bad inputs tried")
            refused_from = depth if refused_from is None else refused_from
            continue
        assert refused_from is None, f"depth {depth} accepted after depth {refused_from} was refused"
        reopened = SnapshotStore(fx.backend)
        assert canonical(reopened.session(sess.name).state(snap.id)) == canonical(state), depth
        assert reopened.verify(read_data=True).ok
        count("bad input: valid edge cases round-tripped")
    assert refused_from is not None and refused_from <= 256


def test_fifty_megabyte_string(fx: Fixture) -> None:
    """A 50 MB string (incompressible hex) commits, deltas against it and reads back exactly."""
    big = os.urandom(25 * 1024 * 1024).hex()
    first = fx.sess.commit({"big": big, "n": 1})
    second = fx.sess.commit({"big": big, "n": 2})
    third = fx.sess.commit({"big": big[:-1] + "!", "n": 2})
    count("bad input: valid edge cases round-tripped", 3)
    reopened = fx.reopen().session("s")
    assert reopened.state(first.id)["big"] == big
    assert reopened.state(second.id) == {"big": big, "n": 2}
    assert reopened.state(third.id)["big"][-2:] == big[-2] + "!"


def test_pydantic_model_with_datetime_is_committed_as_json(fx: Fixture) -> None:
    class Turn(BaseModel):
        when: datetime.datetime
        ratio: float

    when = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    snap = fx.sess.commit(Turn(when=when, ratio=1.0))
    assert canonical(fx.reopen().session("s").state(snap.id)) == canonical(
        {"when": "2024-05-06T07:08:09Z", "ratio": 1.0}
    )


# -- wrong argument types to public methods ------------------------------------------

WRONG_ARGUMENTS: dict[str, tuple[type[SnapshotError], Callable[[Fixture], Any]]] = {
    "commit-label-int": (InvalidStateError, lambda f: f.sess.commit({}, label=5)),
    "commit-label-none": (InvalidStateError, lambda f: f.sess.commit({}, label=None)),
    "commit-label-bytes": (InvalidStateError, lambda f: f.sess.commit({}, label=b"x")),
    "commit-turn-str": (InvalidStateError, lambda f: f.sess.commit({}, turn="3")),
    "commit-turn-bool": (InvalidStateError, lambda f: f.sess.commit({}, turn=True)),
    "commit-turn-float": (InvalidStateError, lambda f: f.sess.commit({}, turn=3.0)),
    "state-none": (SnapshotNotFound, lambda f: f.sess.state(None)),
    "state-int": (SnapshotNotFound, lambda f: f.sess.state(12345678)),
    "state-bytes": (SnapshotNotFound, lambda f: f.sess.state(f.head.id.encode())),
    "state-list": (SnapshotNotFound, lambda f: f.sess.state([f.head.id])),
    "snapshot-int": (SnapshotNotFound, lambda f: f.sess.snapshot(5)),
    "resolve-none": (SnapshotNotFound, lambda f: f.sess.resolve(None)),
    "diff-none": (SnapshotNotFound, lambda f: f.sess.diff(None, f.head.id)),
    "diff-int": (SnapshotNotFound, lambda f: f.sess.diff(f.head.id, 7)),
    "rollback-none": (SnapshotNotFound, lambda f: f.sess.rollback(None)),
    "rollback-snapshot-object": (SnapshotNotFound, lambda f: f.sess.rollback(f.first)),
    "set-max-zero": (SnapshotError, lambda f: f.sess.set_max_snapshots(0)),
    "set-max-negative": (SnapshotError, lambda f: f.sess.set_max_snapshots(-1)),
    "set-max-str": (SnapshotError, lambda f: f.sess.set_max_snapshots("3")),
    "set-max-bool": (SnapshotError, lambda f: f.sess.set_max_snapshots(True)),
    "set-max-float": (SnapshotError, lambda f: f.sess.set_max_snapshots(2.0)),
    "set-max-none": (SnapshotError, lambda f: f.sess.set_max_snapshots(None)),
    "session-max-str": (SnapshotError, lambda f: f.store.session("s", max_snapshots="5")),
    "session-max-zero": (SnapshotError, lambda f: f.store.session("new", max_snapshots=0)),
    "find-none": (SnapshotNotFound, lambda f: f.store.find(None)),
    "find-int": (SnapshotNotFound, lambda f: f.store.find(0xDEADBEEF)),
    "has-session-int": (InvalidNameError, lambda f: f.store.has_session(5)),
    "delete-session-none": (InvalidNameError, lambda f: f.store.delete_session(None)),
    "session-usage-bytes": (InvalidNameError, lambda f: f.store.session_usage(b"s")),
    "memory-max-chain-str": (SnapshotError, lambda f: SnapshotStore.memory(max_chain="5")),
    "memory-max-chain-negative": (SnapshotError, lambda f: SnapshotStore.memory(max_chain=-1)),
    "memory-rebuild-budget-below-one": (SnapshotError, lambda f: SnapshotStore.memory(rebuild_budget=0.5)),
    "memory-rebuild-budget-nan": (SnapshotError, lambda f: SnapshotStore.memory(rebuild_budget=math.nan)),
    "memory-rebuild-budget-bool": (SnapshotError, lambda f: SnapshotStore.memory(rebuild_budget=True)),
    "memory-max-runs-zero": (SnapshotError, lambda f: SnapshotStore.memory(max_runs=0)),
    "memory-lock-timeout-negative": (SnapshotError, lambda f: SnapshotStore.memory(lock_timeout=-1)),
    "memory-lock-timeout-str": (SnapshotError, lambda f: SnapshotStore.memory(lock_timeout="1")),
    "session-max-lowered-below-count": (SnapshotError, lambda f: f.store.session("s", max_snapshots=1)),
    "tag-empty-name": (SnapshotError, lambda f: f.sess.tag(f.head.id, "")),
    "tag-int-name": (SnapshotError, lambda f: f.sess.tag(f.head.id, 5)),
    "tag-hex-name": (SnapshotError, lambda f: f.sess.tag(f.head.id, "deadbeefcafe")),
    "tag-control-character": (SnapshotError, lambda f: f.sess.tag(f.head.id, "boss\n")),
    "tag-long-name": (SnapshotError, lambda f: f.sess.tag(f.head.id, "t" * 101)),
    "tag-unknown-id": (SnapshotNotFound, lambda f: f.sess.tag("0" * 32, "boss")),
    "tag-none-id": (SnapshotNotFound, lambda f: f.sess.tag(None, "boss")),
    "untag-unknown": (SnapshotNotFound, lambda f: f.sess.untag("nope")),
    "untag-int": (SnapshotError, lambda f: f.sess.untag(5)),
    "forget-zero": (SnapshotError, lambda f: f.sess.forget(0)),
    "forget-str": (SnapshotError, lambda f: f.sess.forget("1")),
    "forget-bool": (SnapshotError, lambda f: f.sess.forget(True)),
    "rollback-model-not-a-model": (SnapshotError, lambda f: f.sess.rollback(f.head.id, model=dict)),
    "open-create-false-missing": (SnapshotError, lambda f: SnapshotStore.open(f.root.parent / "nope", create=False)),
}


@pytest.mark.parametrize("case", list(WRONG_ARGUMENTS))
def test_wrong_arguments_are_refused(fx: Fixture, case: str) -> None:
    error, call = WRONG_ARGUMENTS[case]
    refused(fx, error, lambda: call(fx))


# Each of these used to escape as the named bare exception (the comments say why); fixed, kept as
# regressions.
WRONG_ARGUMENTS_BUGS: dict[str, tuple[str, Callable[[Fixture], Any]]] = {
    # session.py Session.commit checks type(turn) but not its range: orjson refuses it while writing
    # the record, after the delta or state object was stored (an orphan: "writes nothing" is broken)
    "commit-turn-beyond-64-bits": ("TypeError", lambda f: f.sess.commit({"hp": 1, "x": "y" * 80}, turn=2**70)),
    # the same for a label orjson cannot encode
    "commit-label-lone-surrogate": ("TypeError", lambda f: f.sess.commit({"hp": 2, "x": "z" * 80}, label="\ud800")),
    # session.py check_max_snapshots has no upper bound: the session document cannot be encoded
    "set-max-beyond-64-bits": ("TypeError", lambda f: f.sess.set_max_snapshots(2**64)),
    "session-max-beyond-64-bits": ("TypeError", lambda f: f.store.session("new", max_snapshots=2**70)),
    # store.py SnapshotStore.__init__ does not check compression_level: zstandard fails on first write
    "compression-level-str": ("TypeError", lambda f: SnapshotStore(f.backend, compression_level="high").session("n")),
    "compression-level-too-high": ("ValueError", lambda f: SnapshotStore(f.backend, compression_level=99).session("n")),
}


@pytest.mark.parametrize("case", list(WRONG_ARGUMENTS_BUGS))
def test_wrong_arguments_that_used_to_escape(fx: Fixture, case: str) -> None:
    _exc, call = WRONG_ARGUMENTS_BUGS[case]
    refused(fx, SnapshotError, lambda: call(fx))


def test_an_empty_store_path_is_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BackendError, match="path is empty") as raised:
        SnapshotStore.open("")
    assert raised.value.details["reason"] == "empty path" and not list(tmp_path.iterdir())


def test_a_limit_past_the_largest_names_the_range_and_the_value() -> None:
    with pytest.raises(SnapshotError, match=r"1 to 2\^63-1\), not 10{30}") as raised:
        SnapshotStore.memory().session("s", max_snapshots=10**30)
    assert raised.value.details["argument"] == "max_snapshots"
    with pytest.raises(SnapshotError, match=r"not 10{19}\.\.\. \(401 characters\)"):  # not cut to another number
        SnapshotStore.memory().session("s", max_snapshots=10**400)


@pytest.mark.parametrize("keep_last", [0, -1, "1", True])
def test_forget_names_the_argument_it_was_given(fx: Fixture, keep_last: Any) -> None:
    with pytest.raises(SnapshotError, match="keep_last must be a positive integer") as raised:
        fx.sess.forget(keep_last)
    assert raised.value.details["argument"] == "keep_last"


def test_an_unknown_id_is_called_evicted_only_where_retention_has_evicted() -> None:
    sess = SnapshotStore.memory().session("s", max_snapshots=3)
    sess.tag(sess.commit({"n": 0}).id, "start")
    with pytest.raises(SnapshotNotFound) as never:
        sess.rollback("deadbeef")
    assert str(never.value) == "snapshot deadbeef not found in session 's'"  # nothing ever left it
    with pytest.raises(SnapshotNotFound, match="nor is it a tag of session 's'; its tags: 'start'"):
        sess.rollback("nosuchtag")
    for n in range(1, 6):
        sess.commit({"n": n})
    with pytest.raises(SnapshotNotFound, match="not retained") as evicting:
        sess.rollback("deadbeef")  # after evictions, an unknown id may be one evicted long ago
    assert evicting.value.details["reason"] == "not retained"


@pytest.mark.parametrize("target", ["a-file", None, 123])
def test_opening_a_store_at_a_wrong_target(tmp_path: Path, target: Any) -> None:
    if target == "a-file":
        target = tmp_path / "a-file"
        target.write_text("not a store")
    with pytest.raises(SnapshotError) as raised:
        SnapshotStore.open(target)
    if isinstance(target, Path):  # SqliteSaver's checkpoints.sqlite, given to a saver or a store
        assert str(raised.value).endswith("it is a file; a directory store is a folder")
    count("bad input: bad inputs tried")


@pytest.mark.parametrize("url", ["sqlite:///checkpoints.db", "file:///tmp/store", "redis://localhost:6379"])
def test_a_url_of_another_kind_is_refused_and_makes_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative "sqlite:" folder would land here
    with pytest.raises(BackendError, match=r"is a \w+:// URL: a store is a directory path") as raised:
        SnapshotStore.open(url)
    assert raised.value.details == {"target": url, "reason": "unsupported URL scheme"}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    ["sqlite:checkpoints.db", "SQLite:x", "sqlite+aiosqlite:x.db", "file:store", "postgresql+psycopg:db", "redis:x"],
)
def test_a_url_of_another_kind_without_slashes_is_refused_and_makes_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """``from_path("sqlite:checkpoints.db")``, a saver switched from SQLite by hand, made a folder
    named so; a folder of that name is still reached as ``./sqlite:checkpoints.db``."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BackendError, match=r"starts like a URL \([\w+]+:\): a store is a directory path") as raised:
        SnapshotStore.open(url)
    assert raised.value.details == {"target": url, "reason": "unsupported URL scheme"}
    assert list(tmp_path.iterdir()) == []
    for path in (f"./{url}", Path(url)):  # a pathlib.Path is a path whatever it looks like
        with SnapshotStore.open(path) as store:
            store.session("s").commit({"turn": 1})
        assert [p.name for p in tmp_path.iterdir()] == [url]


def test_colon_memory_colon_opens_a_memory_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with SnapshotStore.open(":memory:") as store:
        store.session("s").commit({"turn": 1})
        assert store.describe() == SnapshotStore.memory().describe()
    assert list(tmp_path.iterdir()) == []


# -- unknown and ambiguous ids ---------------------------------------------------------


def test_unknown_ids(fx: Fixture) -> None:
    other = fx.store.session("other").commit({"other": True})
    for _ in range(6):  # evict the first snapshot of s (max_snapshots 5)
        fx.sess.commit({"hp": _})
    evicted = fx.first.id
    assert evicted not in fx.sess.snapshot_ids()
    unknown = [
        "0" * 32,
        "f" * 32,
        evicted,
        evicted[:12],
        other.id,  # exists, in another session
        other.id[:10],
        fx.head.id[:7],  # too short to be a prefix
        "",
        "   ",
        "zzzzzzzz",
        fx.head.id + "0",  # too long
        fx.head.id[:16] + "-" + fx.head.id[17:],
        "../" + fx.head.id,
    ]
    for bad in unknown:
        for call in (fx.sess.state, fx.sess.snapshot, fx.sess.rollback, lambda i: fx.sess.diff(i, fx.head.id)):
            refused(fx, SnapshotNotFound, lambda call=call, bad=bad: call(bad))
    for bad in ("0" * 32, evicted, fx.head.id[:7], "zz"):
        refused(fx, SnapshotNotFound, lambda bad=bad: fx.store.find(bad))
    # ids are matched case- and space-insensitively: these are the same snapshot, not errors
    assert fx.sess.resolve(" " + fx.sess.head.id.upper() + "\n") == fx.sess.head.id


def _colliding_records(session: str, state_key: str) -> tuple[list[SnapshotRecord], list[str]]:
    """Two keyframe records whose ids share their first 8 hex digits (found by varying the label)."""
    seen: dict[str, tuple[SnapshotRecord, str]] = {}
    for i in range(2_000_000):
        record = SnapshotRecord(
            session=session,
            parent=None,
            state=state_key,
            delta=None,
            label=f"collide {i}",
            timestamp="2024-01-01T00:00:00.000000Z",
            turn=i,
            size=8,
            depth=0,
            chain_bytes=0,
            base_ratio=1.0,
        )
        sid = object_id(record.to_payload())
        if sid[:8] in seen:
            first, first_id = seen[sid[:8]]
            return [first, record], [first_id, sid]
        seen[sid[:8]] = (record, sid)
    raise AssertionError("no 32-bit prefix collision found")


def test_ambiguous_prefix(fx: Fixture) -> None:
    """A hand-made session whose two snapshot ids share 8 hex digits: the prefix is ambiguous everywhere."""
    state = b'{"hp":7}'
    records, ids = _colliding_records("amb", object_id(state))
    checkpoint = encode_meta({"checkpoint": True, "name": "amb", "max_snapshots": 10, "tags": {}})
    keyframes = []
    for record in records:
        mode, compressed = compress_keyframe(state, 3, None)
        keyframes.append(encode_commit(record, mode, len(state), compressed))
    key = session_key("amb")
    with fx.backend.lock_session(key, 10):
        fx.backend.append(key, 1, [checkpoint, *keyframes], 0)
    sess = fx.store.session("amb")
    assert sess.snapshot_ids() == ids and sess.head is not None and sess.head.id == ids[1]
    prefix = ids[0][:8]
    for call in (sess.state, sess.snapshot, sess.rollback, sess.resolve, fx.store.find):
        err = refused(fx, AmbiguousSnapshotId, lambda call=call: call(prefix))
        assert err.details["candidates"] == sorted(ids)
    for sid in ids:  # the full ids (or any longer distinct prefix) still work
        assert sess.state(sid) == {"hp": 7}
        assert sess.snapshot(sid[:20]).id == sid
    assert fx.store.verify(read_data=True).ok


# -- session names -----------------------------------------------------------------------

BAD_NAMES = [
    "",
    "/",
    "a/b",
    "/abs",
    "trailing/",
    "..",
    "../x",
    "x/..",
    "a..b",
    ".",
    "a\\b",
    "\\",
    "a\x00b",
    "tab\tname",
    "new\nline",
    "\x7f",
    "x" * 201,
    "a\ud800",
    None,
    5,
    b"bytes",
    ["s"],
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[:20] for n in BAD_NAMES])
def test_bad_session_names(fx: Fixture, name: Any) -> None:
    for call in (fx.store.session, fx.store.has_session, fx.store.delete_session, fx.store.session_usage):
        refused(fx, InvalidNameError, lambda call=call: call(name))
    refused(fx, InvalidNameError, lambda: fx.store.session(name, max_snapshots=3))


GOOD_NAMES = ["~", "%", "%2F", "%2e%2e", "a b", "名前", "é", "e\u0301", "-", "_", "a.b", ".hidden", "x" * 200]
GOOD_NAMES += ["\U0001f600", "CON", "A", "a", "a%", "quote'\"", "semi;colon", "star*", "q?"]


def test_odd_but_valid_session_names_round_trip(fx: Fixture) -> None:
    made = {}
    for name in GOOD_NAMES:
        made[name] = fx.store.session(name).commit({"name": name}).id
        count("bad input: valid edge cases round-tripped")
    store = fx.reopen()
    assert store.sessions() == sorted([*GOOD_NAMES, "s"])
    for name, sid in made.items():
        assert store.has_session(name)
        assert store.session(name).state(sid) == {"name": name}
    if fx.kind == "directory":
        names = os.listdir(fx.root / "sessions")
        # percent-encoded names; a long name becomes a prefix, "~" and a hash of the name
        assert all(set(n) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-%~") for n in names)
        assert all(len(n) <= 200 for n in names)
        assert len(names) == len(GOOD_NAMES) + 1


EMPTY_SESSION_CALLS: dict[str, Callable[[Any], Any]] = {
    "tag": lambda sess: sess.tag(None, "boss"),
    "rollback": lambda sess: sess.rollback(None),
    "snapshot": lambda sess: sess.snapshot(None),
    "state": lambda sess: sess.state(None),
    "resolve": lambda sess: sess.resolve(None),
    "diff": lambda sess: sess.diff(None, None),
}


@pytest.mark.parametrize("call", list(EMPTY_SESSION_CALLS))
def test_no_id_on_a_session_without_snapshots_is_refused_and_writes_nothing(tmp_path: Path, call: str) -> None:
    """A session with no head has None where a head would be: an id of None once matched it, and
    ``tag`` wrote a tag naming the snapshot 'None' (the session then failed verify for good) where
    the other calls escaped as a bare KeyError."""
    store = SnapshotStore.open(tmp_path / "store")
    sess = store.session("empty")
    store.session("other").commit({"n": 1})  # the store holds something: what a refused call must not touch
    before = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "store").rglob("*") if p.is_file())
    with pytest.raises(SnapshotNotFound, match="snapshot id must be a string, not NoneType"):
        EMPTY_SESSION_CALLS[call](sess)
    after = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert after == before
    store.close()
    reopened = SnapshotStore.open(tmp_path / "store")
    assert reopened.verify().ok and reopened.session("empty").tags == {}
