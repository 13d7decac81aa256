"""When to start a new segment with a keyframe, and when that keyframe must stand alone.

The rule is a cost model, not a count: rebuilding a snapshot costs decoding
its segment's raw stream up to the chain's keyframe, parsing the keyframe, applying the chain's deltas
and hashing the result; loading one full state costs decompressing and
parsing it. A delta is refused once the estimated rebuild would pass
``rebuild_budget`` full loads. Costs are in *bytes-parsed equivalents*: one
unit is the time ``orjson.loads`` takes for one byte of JSON. The weights below
are not a single measurement: ``python -m benchmarks.rebuild_costs`` prints what
a machine measures beside them, and those figures move several-fold with the
machine's load and the garbage collector. They were set from such runs on the
benchmark workload and adjusted so the 1,000-turn benchmark's segments come out
as docs/design.md ("Keyframe policy") describes.

A new keyframe is *patched* (compressed against the open segment's raw
stream, in that segment) while the segment holds fewer than ``max_runs``
keyframes, its raw stream stays within ``max_segment_factor`` states (or
``SMALL_SEGMENT_BYTES`` for small states), and decoding that stream still
leaves the new run's chain a minimal cost within the budget; otherwise it
starts a new segment on its own. So the budget bounds every rebuild's estimate,
however long a session runs (a cold rebuild late in a long segment measures
10-35% above it: ``python -m benchmarks.rebuild_costs --estimates 10``), and the
caps bound the history one damaged byte can take with it: one segment.

A delta is not offered at all when the turn changed more than it is worth: a commit's diff stops
at ``max_delta_changes`` changes and the commit stores a keyframe (docs/design.md, "Turns that
change most of the state").
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SnapshotError

#: decompressing one raw byte, relative to parsing one byte of JSON
DECODE_WEIGHT = 0.4
#: applying a delta: a fixed part (parse the ops, walk the pointers) and a part per byte of ops
DELTA_FIXED = 2000
DELTA_BYTE_WEIGHT = 5.0
#: re-serializing and hashing the rebuilt state, relative to parsing it
VERIFY_WEIGHT = 0.3
#: what any read costs before its first byte (a file or a query, a decompressor)
LOAD_FIXED = 4000
#: a chain may always cost this much (100 kB parsed, about 0.2 ms at 2 ns a byte): small states keep their deltas
MIN_CHAIN_COST = 100_000
#: a segment may grow to this many raw bytes whatever the keyframe count (small states)
SMALL_SEGMENT_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class KeyframePolicy:
    rebuild_budget: float = 3.0
    max_runs: int = 12
    max_segment_factor: float = 12.0
    max_chain: int = 5000

    def __post_init__(self) -> None:
        budget = self.rebuild_budget
        if type(budget) not in (int, float) or not budget >= 1.0:  # ``not >=`` also refuses NaN
            raise SnapshotError("rebuild_budget must be a number >= 1", {"rebuild_budget": repr(budget)})
        if type(self.max_runs) is not int or self.max_runs < 1:
            raise SnapshotError("max_runs must be an integer >= 1", {"max_runs": repr(self.max_runs)})
        if type(self.max_chain) is not int or self.max_chain < 0:
            raise SnapshotError("max_chain must be an integer >= 0", {"max_chain": repr(self.max_chain)})

    @staticmethod
    def delta_cost(raw_length: int) -> int:
        return DELTA_FIXED + int(raw_length * DELTA_BYTE_WEIGHT)

    def wants_keyframe(self, chain_cost: int, state_size: int, decoded_before: int) -> bool:
        """Whether the next snapshot should be a keyframe rather than a delta.

        ``decoded_before``: raw bytes of the segment a rebuild decodes before the chain's keyframe.
        """
        return chain_cost > MIN_CHAIN_COST and not self._within_budget(chain_cost, state_size, decoded_before)

    def may_patch(self, runs: int, segment_raw_bytes: int, state_size: int) -> bool:
        """Whether a new keyframe may join the open segment, compressed against its raw stream.

        Besides the run and size caps, the new run must leave its chain room within the budget:
        rebuilding any of its snapshots decodes the whole segment before it, so a segment whose
        stream alone would use up the budget ends, and the keyframe starts a new one.
        """
        total = segment_raw_bytes + state_size
        if total <= SMALL_SEGMENT_BYTES:
            return True
        if runs >= self.max_runs or total > self.max_segment_factor * max(state_size, 1):
            return False
        return self._within_budget(MIN_CHAIN_COST, state_size, segment_raw_bytes)

    def _within_budget(self, chain_cost: int, state_size: int, decoded_before: int) -> bool:
        return self.rebuild_cost(chain_cost, state_size, decoded_before) <= self.rebuild_budget * full_load_cost(
            state_size
        )

    @staticmethod
    def rebuild_cost(chain_cost: int, state_size: int, decoded_before: int) -> float:
        """Estimated cost of rebuilding a snapshot cold: decode, parse its keyframe, apply its chain, verify."""
        return LOAD_FIXED + state_size * (1 + VERIFY_WEIGHT) + decoded_before * DECODE_WEIGHT + chain_cost


def full_load_cost(state_size: int) -> float:
    """Estimated cost of loading one full compressed state of ``state_size`` raw bytes."""
    return LOAD_FIXED + state_size * (1 + DECODE_WEIGHT)


#: a delta with more changes than one per this many bytes of its state costs more to make and
#: apply than storing the state as a keyframe (patched against the segment's raw stream) costs
BYTES_PER_CHANGE = 400
#: the changes any delta may have, however small its state
MIN_DELTA_CHANGES = 256
#: after a commit whose diff stopped, its session's next diffs stop this many times sooner...
BUSY_DIVISOR = 4
#: ...except every this many in a row, which get the whole budget again
WHOLE_BUDGET_EVERY = 8


def max_delta_changes(state_size: int, stopped_in_a_row: int) -> int:
    """How many changes a commit's diff may find before the commit stores a keyframe instead of
    a delta (``delta.diff_members``'s ``max_changes``), after ``stopped_in_a_row`` commits of the
    session whose diffs stopped. While a session is busy its diffs get a fraction of the budget,
    so that each one it gives up costs little; every ``WHOLE_BUDGET_EVERY``-th gets the whole
    budget, so that a session back to turns a delta is worth (but a fraction of the budget is
    not) stores deltas again within that many commits, instead of keyframes for as long as it runs."""
    budget = max(MIN_DELTA_CHANGES, state_size // BYTES_PER_CHANGE)
    return budget if stopped_in_a_row % WHOLE_BUDGET_EVERY == 0 else budget // BUSY_DIVISOR


#: ``Session.settle``'s default: a head whose rebuild is estimated above this many full loads is
#: stored again on its own (a reader then pays one load instead)
SETTLE_COST = 1.5


def worth_settling(rebuild_cost: float, state_size: int, min_cost: float) -> bool:
    """Whether storing a head again whole saves its next reader enough: its estimated rebuild costs
    more than ``min_cost`` full loads, and more than one load by over ``MIN_CHAIN_COST``."""
    load = full_load_cost(state_size)
    return rebuild_cost - load > MIN_CHAIN_COST and rebuild_cost > min_cost * load
