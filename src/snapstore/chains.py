"""Delta chains: rebuilding a snapshot's state and choosing when to write a keyframe.

A snapshot's state is found by walking parent links back to the nearest base
(a keyframe, or a snapshot its session has squashed to a full state), then
applying the deltas forward. The walk is an explicit loop, so a broken or
cyclic chain raises an error naming the objects instead of recursing.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from . import codec
from .delta import apply_patch
from .errors import CorruptObjectError, PatchError, SnapshotError
from .objects import ObjectStore, SnapshotRecord


@dataclass(frozen=True, slots=True)
class KeyframePolicy:
    """Write a full state instead of a delta when the chain gets long or heavy.

    The rule is Mercurial revlog's: a delta is refused when the chain since the
    last full state would exceed ``max_chain`` deltas, or when the chain's
    stored bytes would exceed ``max_chain_factor`` times a full state's.
    """

    max_chain: int = 50
    max_chain_factor: float = 2.0

    def __post_init__(self) -> None:
        if type(self.max_chain) is not int or self.max_chain < 0:
            raise SnapshotError("max_chain must be an integer >= 0", {"max_chain": self.max_chain})
        factor = self.max_chain_factor
        if type(factor) not in (int, float) or not factor > 0:  # ``not >`` also refuses NaN
            raise SnapshotError("max_chain_factor must be > 0", {"max_chain_factor": self.max_chain_factor})

    def wants_keyframe(self, parent: SnapshotRecord, delta_stored: int, state_size: int) -> bool:
        if parent.depth + 1 > self.max_chain:
            return True
        full_estimate = state_size * parent.base_ratio
        return parent.chain_bytes + delta_stored > self.max_chain_factor * full_estimate


def chain_to_base(
    objects: ObjectStore, snapshot_id: str, bases: Collection[str] = ()
) -> tuple[SnapshotRecord, list[SnapshotRecord]]:
    """(record whose full state is stored, records whose deltas lead from it), oldest delta first."""
    path: list[SnapshotRecord] = []
    seen: set[str] = set()
    current = snapshot_id
    while True:
        if current in seen:
            raise CorruptObjectError(
                f"snapshot {snapshot_id} has a cyclic parent chain at {current}",
                {"object": current, "snapshot": snapshot_id, "reason": "cyclic chain"},
            )
        seen.add(current)
        record = objects.record(current)
        if record.delta is None or current in bases:
            path.reverse()
            return record, path
        path.append(record)
        assert record.parent is not None  # guaranteed by SnapshotRecord.from_payload
        current = record.parent


def rebuild(objects: ObjectStore, snapshot_id: str, bases: Collection[str] = ()) -> Any:
    """The verified full state of a snapshot: a fresh object the caller owns."""
    base, path = chain_to_base(objects, snapshot_id, bases)
    state = objects.state(base.state)
    for record in path:
        state = apply_delta(objects, record, state)
    target = path[-1] if path else base
    check_state(state, target.state, snapshot_id)
    return state


def apply_delta(objects: ObjectStore, record: SnapshotRecord, state: Any) -> Any:
    """Apply one record's delta in place, turning a damaged delta into a named error."""
    assert record.delta is not None
    ops = objects.delta(record.delta)
    try:
        return apply_patch(state, ops, in_place=True)
    except PatchError as exc:
        raise CorruptObjectError(
            f"delta object {record.delta} does not apply: {exc}",
            {"object": record.delta, "reason": "delta does not apply", "error": str(exc)},
        ) from None


def check_state(state: Any, expected_hash: str, snapshot_id: str) -> None:
    """Refuse a rebuilt state whose canonical bytes do not hash to the recorded state hash."""
    actual = codec.object_id(codec.dumps(state))
    if actual != expected_hash:
        raise CorruptObjectError(
            f"snapshot {snapshot_id} rebuilds to a state hashing {actual}, its record says {expected_hash}",
            {"object": snapshot_id, "snapshot": snapshot_id, "reason": "state hash mismatch", "actual": actual},
        )
