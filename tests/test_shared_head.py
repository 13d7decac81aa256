"""A session's head shares the committed state's strings and numbers, never its containers.

A commit builds the head it diffs the next commit against from copies of the operations' values
(``codec.shared_copy``): new lists and dicts, the same immutable leaves. These tests hold the two
promises that rest on that: what the caller does to its state after a commit never reaches the
store, and every value JSON cannot give back is still refused wherever it stands, also where its
bytes equal the head's (a tuple where the head has a list, NaN where it has null).
"""

from __future__ import annotations

import enum
import math
import uuid
from typing import Any

import orjson
import pytest

from conftest import canonical
from snapstore import InvalidStateError, SnapshotStore


class Colour(enum.Enum):
    RED = "red"


def _reopened(store: SnapshotStore) -> SnapshotStore:
    return SnapshotStore(store.backend)


def test_changing_the_state_after_a_commit_changes_nothing_stored(store: SnapshotStore) -> None:
    sess = store.session("s", max_snapshots=50)
    state: dict[str, Any] = {"party": [{"name": "Zoë", "hp": 10, "tags": ["brave"]}], "log": ["a", "b"], "n": 1.5}
    expected: dict[str, bytes] = {}
    for turn in range(12):
        snap = sess.commit(state, turn=turn)
        expected[snap.id] = canonical(state)
        # change in place what the last commit's delta carried and what it did not
        state["party"][0]["tags"].append(f"t{turn}")
        state["party"][0]["hp"] -= 1
        state["log"].append(f"entry {turn}")
        del state["log"][0]
        if turn % 3 == 0:
            state["party"].append({"name": f"npc {turn}", "hp": turn, "tags": []})
        state["n"] = -0.0 if turn % 2 else 0.0
    for reader in (sess, _reopened(store).session("s")):
        for sid, data in expected.items():
            assert canonical(reader.state(sid)) == data


@pytest.mark.parametrize(
    ("head_value", "lookalike"),
    [
        ([1, 2], (1, 2)),
        (None, math.nan),
        (None, math.inf),
        ("00000000-0000-0000-0000-000000000007", uuid.UUID(int=7)),
        ("red", Colour.RED),
        ({"x": [1]}, {"x": (1,)}),
    ],
    ids=["tuple", "nan", "infinity", "uuid", "enum", "nested-tuple"],
)
@pytest.mark.parametrize("where", ["unchanged-member", "changed-member", "kept-window-element"])
def test_a_value_json_cannot_give_back_is_refused_where_its_bytes_match_the_head(
    store: SnapshotStore, head_value: Any, lookalike: Any, where: str
) -> None:
    sess = store.session("s")
    window = [{"i": i, "v": 0} for i in range(40)]
    base = {"a": {"v": head_value}, "b": {"turn": 0}, "window": window}
    sess.commit(base)
    head, length = sess.head, len(sess)
    assert orjson.dumps(lookalike, option=orjson.OPT_SERIALIZE_NUMPY) == orjson.dumps(head_value)
    if where == "unchanged-member":
        state = {"a": {"v": lookalike}, "b": {"turn": 0}, "window": window}
    elif where == "changed-member":
        state = {"a": {"v": lookalike, "w": 1}, "b": {"turn": 1}, "window": window}
    else:  # a sliding window whose kept part holds the value: found by the window's bytes
        shifted = [*window[3:], *({"i": 40 + i, "v": 0} for i in range(3))]
        shifted[5] = {"i": shifted[5]["i"], "v": lookalike}
        base["window"] = [dict(e) for e in window]
        base["window"][8]["v"] = head_value
        sess.commit(base)
        head, length = sess.head, len(sess)
        state = {"a": {"v": head_value}, "b": {"turn": 1}, "window": shifted}
    with pytest.raises(InvalidStateError) as caught:
        sess.commit(state)
    assert "path" in caught.value.details
    assert sess.head == head and len(sess) == length  # nothing written
    # the session goes on from the head it had, and the head still reads back as it was stored
    good = sess.commit({"a": {"v": head_value}, "b": {"turn": 2}, "window": window})
    assert canonical(_reopened(store).session("s").state(good.id)) == canonical(
        {"a": {"v": head_value}, "b": {"turn": 2}, "window": window}
    )


def test_a_sliding_window_keeps_type_exact_changes_in_its_kept_part(store: SnapshotStore) -> None:
    """A window shift is found from the list's bytes; a 1 that became 1.0 in the kept part makes the
    bytes differ, and must still reach the patch."""
    sess = store.session("s")
    window: list[Any] = [{"i": i, "x": 1} for i in range(30)]
    sess.commit({"w": window})
    shifted = [dict(e) for e in window[2:]] + [{"i": 30, "x": 1}, {"i": 31, "x": 1}]
    shifted[4]["x"] = 1.0
    shifted[7]["x"] = True
    snap = sess.commit({"w": shifted})
    assert canonical(_reopened(store).session("s").state(snap.id)) == canonical({"w": shifted})


def test_the_head_shares_the_states_strings_not_its_containers(store: SnapshotStore) -> None:
    """The mechanism the speed rests on (a head comparison meets the very same strings)."""
    sess = store.session("s")
    text = "".join(["a long line of the transcript"] * 10)
    state = {"log": [{"text": text}], "n": 1}
    sess.commit(state)
    state["log"].append({"text": text + "!"})
    sess.commit(state)
    head = sess._head_state
    assert head["log"] is not state["log"] and head["log"][1] is not state["log"][1]
    assert head["log"][1]["text"] is state["log"][1]["text"]
    assert head["log"][0]["text"] is state["log"][0]["text"]
