"""The keyframe policy bounds every rebuild by its budget, however long a session runs.

A patched keyframe makes every snapshot of its run decode the whole segment before it, so a
segment must end once decoding its stream would leave a new run no room within the budget;
before the budget-aware rule a long session's segments grew to ``max_runs`` runs whatever
their rebuilds cost. These tests check the rule on the policy and on a real store.
"""

from __future__ import annotations

import orjson
import pytest

from snapstore import SnapshotStore
from snapstore.entries import KEY_PATCHED, CommitEntry
from snapstore.keyframes import MIN_CHAIN_COST, SMALL_SEGMENT_BYTES, KeyframePolicy, full_load_cost


def _largest_patchable(policy: KeyframePolicy, state_size: int) -> int:
    """The most raw bytes a segment may hold for a keyframe of ``state_size`` to still join it."""
    low, high = 0, int(policy.max_segment_factor * state_size)
    while low < high:
        middle = (low + high + 1) // 2
        if policy.may_patch(1, middle, state_size):
            low = middle
        else:
            high = middle - 1
    return low


@pytest.mark.parametrize("budget", [1.5, 2.0, 3.0, 5.0])
def test_a_segment_ends_where_its_stream_would_use_up_the_budget(budget: float) -> None:
    policy = KeyframePolicy(rebuild_budget=budget, max_runs=1000, max_segment_factor=1000.0)
    state = 4 * SMALL_SEGMENT_BYTES
    largest = _largest_patchable(policy, state)
    # the keyframe that still joins leaves its chain a minimal cost within the budget; one byte more does not
    assert policy.rebuild_cost(MIN_CHAIN_COST, state, largest) <= budget * full_load_cost(state)
    assert not policy.may_patch(1, largest + 1, state)
    assert policy.rebuild_cost(MIN_CHAIN_COST, state, largest + 1) > budget * full_load_cost(state)


def test_a_larger_budget_allows_longer_segments() -> None:
    state = 4 * SMALL_SEGMENT_BYTES
    lengths = [
        _largest_patchable(KeyframePolicy(rebuild_budget=b, max_runs=1000, max_segment_factor=1000.0), state)
        for b in (1.5, 2.0, 3.0, 5.0)
    ]
    assert lengths == sorted(lengths) and len(set(lengths)) == len(lengths)


def test_the_caps_still_apply_within_the_budget() -> None:
    policy = KeyframePolicy(rebuild_budget=1000.0, max_runs=3, max_segment_factor=4.0)
    state = 4 * SMALL_SEGMENT_BYTES
    assert policy.may_patch(2, state, state)
    assert not policy.may_patch(3, state, state)  # max_runs
    assert not policy.may_patch(1, 4 * state, state)  # more than max_segment_factor states of stream
    assert policy.may_patch(50, 100, 100)  # small states share a segment whatever the count


def _state(turn: int) -> dict[str, object]:
    # a large state (300 kB) whose rows all change a number every turn: runs are many
    rows = [{"id": i, "text": f"row {i} " + "x" * 90, "v": (i * turn) % 97} for i in range(3000)]
    return {"turn": turn, "rows": rows}


def test_a_long_session_starts_segments_instead_of_growing_one_past_the_budget(tmp_path: object) -> None:
    budget = 2.0
    store = SnapshotStore.open(str(tmp_path), rebuild_budget=budget, max_runs=1000)
    session = store.session("long", max_snapshots=1000)
    ids = [session.commit(_state(turn)).id for turn in range(40)]
    log = session._log
    assert len(log.segments) >= 2  # 40 turns of 300 kB do not fit one segment within 2 full loads
    policy = KeyframePolicy(rebuild_budget=budget)
    patched = 0
    for segment in log.segments.values():
        decoded = 0  # raw bytes a rebuild decodes before each keyframe of the segment
        for entry in segment.entries:
            if not isinstance(entry, CommitEntry):
                continue
            if entry.mode == KEY_PATCHED:
                patched += 1
                assert policy.rebuild_cost(MIN_CHAIN_COST, entry.raw_length, decoded) <= budget * full_load_cost(
                    entry.raw_length
                ) or decoded + entry.raw_length <= SMALL_SEGMENT_BYTES
            decoded += entry.raw_length
    assert patched  # the rule ends segments; it does not stop keyframes from being patched
    for turn in (0, 20, 38, 39):
        assert orjson.dumps(session.state(ids[turn]), option=orjson.OPT_SORT_KEYS) == orjson.dumps(
            _state(turn), option=orjson.OPT_SORT_KEYS
        )
    store.close()
