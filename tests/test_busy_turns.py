"""Turns that change most of a state: the diff stops early and the commit stores a keyframe.

A delta is worth its diff while a turn changes a small part of the state; when most of it changes
(thousands of numbers a turn), making and applying the patch costs several times writing the
state, and the patch is no smaller than the state compressed against the run before it. The diff
then stops at ``max_delta_changes`` and the commit stores a keyframe (patched against the run
before it when the keyframe policy lets it join the segment), checked as a keyframe is.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from snapstore import InvalidStateError, SnapshotStore, keyframes
from snapstore.delta import diff, diff_members
from snapstore.entries import KEY_MODES
from snapstore.keyframes import max_delta_changes


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def pieces(state: dict[str, Any]) -> dict[str, bytes]:
    return {key: canonical(value) for key, value in state.items()}


def world(rng: random.Random, size: int = 400) -> dict[str, Any]:
    return {
        "day": 0,
        "towns": {
            f"t{i:03d}": {"price": rng.randint(1, 99), "stock": rng.randint(0, 500), "mood": 0.5} for i in range(size)
        },
        "notes": ["a quiet start"],
    }


def busy_day(state: dict[str, Any], rng: random.Random, share: float = 0.7) -> dict[str, Any]:
    """Most numbers move; some flip between 1, 1.0 and true, which only their types tell apart."""
    for town in state["towns"].values():
        if rng.random() < share:
            town["price"] = rng.randint(1, 99)
            town["stock"] = rng.choice([1, 1.0, True, -0.0, 0.0, rng.randint(0, 500)])
            town["mood"] = round(rng.random(), 3)
    state["day"] += 1
    return state


def test_a_budgeted_diff_gives_the_whole_patch_or_none() -> None:
    rng = random.Random(3)
    old = world(rng)
    new = busy_day(orjson.loads(canonical(old)), rng)
    full = diff_members(old, new, pieces(old), pieces(new))
    assert full is not None and len(full) > 300
    assert diff_members(old, new, pieces(old), pieces(new), max_changes=len(full)) == full  # exactly enough
    assert diff_members(old, new, pieces(old), pieces(new), max_changes=len(full) - 1) is None
    assert diff_members(old, new, pieces(old), pieces(new), max_changes=50) is None
    # the budget is the call's: a diff right after a stopped one, budgeted or not, is whole
    assert diff(old, new) == full
    assert diff_members(old, new, pieces(old), pieces(new)) == full


def _count(old: dict[str, Any], new: dict[str, Any], budget: int) -> list[Any] | None:
    return diff_members(old, new, pieces(old), pieces(new), max_changes=budget)


@pytest.mark.parametrize(
    "change",
    [
        "top-level values",
        "top-level removals",
        "nested removals",
        "types only",
        "list numbers",
        "list removals",
        "list inserts",
    ],
)
def test_every_kind_of_change_counts_against_the_budget(change: str) -> None:
    """A list's elements count as an object's members do: a heat map of numbers that all move
    each turn cost thousands of operations a commit (15x writing the state) before they counted."""
    old: dict[str, Any] = {f"k{i}": i for i in range(40)}
    old["nested"] = {f"n{i}": i for i in range(40)}
    old["grid"] = [i * 0.5 for i in range(100)]
    old["deep"] = {"inner": {f"d{i}": i for i in range(40)}, "heavier": {f"h{i}": i for i in range(80)}}
    new = orjson.loads(canonical(old))
    if change == "top-level values":
        new.update({f"k{i}": -i - 1 for i in range(30)})
    elif change == "top-level removals":
        for i in range(30):
            del new[f"k{i}"]
    elif change == "nested removals":
        for i in range(30):
            del new["nested"][f"n{i}"]
    elif change == "list numbers":
        new["grid"] = [x + 1 if i % 3 == 0 else x for i, x in enumerate(new["grid"])]
    elif change == "list removals":
        del new["grid"][10:40]
    elif change == "list inserts":
        new["grid"][50:50] = [-1.5] * 30
    else:  # 1 -> 1.0 in an object equal to the old one under == beside a heavier one: found by bytes alone
        new["deep"]["inner"] = {f"d{i}": float(i) for i in range(40)}
    found = _count(old, new, 1000)
    assert found is not None and len(found) >= 30
    assert _count(old, new, len(found)) == found
    assert _count(old, new, 20) is None


def test_the_budget_shrinks_while_diffs_stop_and_is_whole_every_eighth_time() -> None:
    whole = 4_000_000 // keyframes.BYTES_PER_CHANGE
    assert max_delta_changes(4_000_000, 0) == whole
    assert [max_delta_changes(4_000_000, n) for n in range(1, 8)] == [whole // keyframes.BUSY_DIVISOR] * 7
    assert max_delta_changes(4_000_000, 8) == whole and max_delta_changes(4_000_000, 9) < whole
    assert max_delta_changes(100, 0) == keyframes.MIN_DELTA_CHANGES


def _modes(session: Any, ids: list[str]) -> list[int]:
    log = session._current()
    return [log.commits[sid].mode for sid in ids]


def test_busy_turns_are_stored_as_keyframes_even_where_the_policy_takes_any_delta(
    make_store: Callable[..., SnapshotStore],
) -> None:
    rng = random.Random(5)
    state = world(rng)
    store = make_store(rebuild_budget=1000.0)  # any chain is affordable
    session = store.session("s", max_snapshots=100)
    ids = [session.commit(state).id]
    expected = [canonical(state)]
    for _ in range(12):
        ids.append(session.commit(busy_day(state, rng)).id)
        expected.append(canonical(state))
    quiet = dict(state, notes=[*state["notes"], "one line more"])
    ids.append(session.commit(quiet).id)
    expected.append(canonical(quiet))
    modes = _modes(session, ids)
    assert all(mode in KEY_MODES for mode in modes[1:-1]), modes
    assert modes[-1] not in KEY_MODES  # a quiet turn after busy ones is a delta again
    reopened = make_store()
    session = reopened.session("s", create=False)
    assert [canonical(session.state(sid)) for sid in ids] == expected  # 1, 1.0, true and -0.0 kept apart
    report = reopened.verify()
    assert report.ok, report


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    "bad", [math.nan, math.inf, (1, 2), Colour.RED], ids=["nan", "infinity", "tuple", "enum"]
)
def test_a_busy_turn_holding_a_value_json_cannot_give_back_is_refused_and_writes_nothing(
    tmp_path: Path, bad: Any
) -> None:
    rng = random.Random(7)
    state = world(rng)
    with SnapshotStore.open(tmp_path / "store") as store:
        session = store.session("s")
        session.commit(state)
        for _ in range(3):
            session.commit(busy_day(state, rng))
        head, stored = session.head, store.stats()["stored_bytes"]
        assert head is not None
        before = canonical(state)
        busy_day(state, rng)
        state["towns"]["t123"]["mood"] = bad
        with pytest.raises(InvalidStateError) as refused:
            session.commit(state)
        assert "t123" in str(refused.value.details.get("path", "")) + str(refused.value)
        assert session.head == head and store.stats()["stored_bytes"] == stored
        assert canonical(session.state(head.id)) == before
        state["towns"]["t123"]["mood"] = 0.25
        after = session.commit(busy_day(state, rng))
        assert canonical(session.state(after.id)) == canonical(state)
    with SnapshotStore.open(tmp_path / "store", create=False) as store:
        assert canonical(store.session("s", create=False).state(after.id)) == canonical(state)


def test_writers_taking_turns_with_busy_and_quiet_turns_lose_nothing(make_store: Callable[..., SnapshotStore]) -> None:
    """Two handles commit to one session in turn, each on its own copy of the world: a busy turn
    after the other's commit stores a keyframe, a quiet one a delta against what the writer
    holds (or the head); every state reads back exact from a fresh store."""
    rng = random.Random(11)
    state = world(rng)
    expected: dict[str, bytes] = {}
    writers = [make_store().session("s", max_snapshots=1000), make_store().session("s")]
    for turn in range(30):
        if turn % 3 == 2:
            state = dict(state, notes=[*state["notes"], f"turn {turn}"])
        else:
            state = busy_day(orjson.loads(canonical(state)), rng)
        expected[writers[turn % 2].commit(state).id] = canonical(state)
    reopened = make_store()
    session = reopened.session("s", create=False)
    assert len(session.snapshot_ids()) == 30
    assert {sid: canonical(session.state(sid)) for sid in expected} == expected
    report = reopened.verify()
    assert report.ok, report


def change_prices(state: dict[str, Any], count: int, rng: random.Random) -> dict[str, Any]:
    """``count`` changes: the prices of ``count`` towns."""
    for name in rng.sample(sorted(state["towns"]), count):
        state["towns"][name]["price"] += 100
    state["day"] += 1
    return state


def test_after_a_busy_turn_turns_a_delta_is_worth_are_deltas_again_within_eight_commits(
    make_store: Callable[..., SnapshotStore],
) -> None:
    """While diffs stop, the next ones get a quarter of the budget: a turn between a quarter and
    the whole budget is then stored whole, but not for ever; every eighth diff in a row gets the
    whole budget, and from there the session stores deltas again."""
    rng = random.Random(13)
    state = world(rng, size=3000)
    budget = max_delta_changes(len(canonical(state)), 0)
    medium = budget // 2
    assert budget // keyframes.BUSY_DIVISOR < medium and budget < 3 * 3000
    session = make_store(rebuild_budget=1000.0).session("s", max_snapshots=100)  # any delta is affordable
    ids = [session.commit(state).id]
    ids += [session.commit(change_prices(state, medium, rng)).id for _ in range(2)]
    ids.append(session.commit(busy_day(state, rng, share=1.0)).id)  # three changes a town
    ids += [session.commit(change_prices(state, medium, rng)).id for _ in range(10)]
    kinds = "".join("K" if mode in KEY_MODES else "d" for mode in _modes(session, ids))
    assert kinds == "K" + "dd" + "K" + "K" * 7 + "ddd", kinds
    reopened = make_store().session("s", create=False)
    assert canonical(reopened.state(ids[-1])) == canonical(state)


def test_a_handle_whose_cache_was_let_go_after_a_busy_turn_stores_a_quiet_one_as_a_delta(tmp_path: Path) -> None:
    rng = random.Random(17)
    state = world(rng)
    with SnapshotStore.open(tmp_path / "store", max_warm_sessions=1, rebuild_budget=1000.0) as store:
        session = store.session("s")
        session.commit(state)
        session.commit(busy_day(state, rng))
        store.session("other").commit({"elsewhere": True})  # the store keeps one session warm: "s" lets go
        assert session._head_state is None
        quiet = session.commit(dict(state, notes=["a quiet day"]))
        assert _modes(session, [quiet.id])[0] not in KEY_MODES
        assert canonical(session.state(quiet.id)) == canonical(dict(state, notes=["a quiet day"]))
