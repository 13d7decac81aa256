"""The head's pointer rows (format 3: ``"<snapshot id> <checkpoint id>"``) looked up by checkpoint
id: the first lookup scans from the newest row, the next ones use a dict; both must give what
a dict built in order gives (a later record of a checkpoint wins)."""

from __future__ import annotations

import random

import pytest

from snapstore.langgraph.lanes import SNAPSHOT_ID_LENGTH, Pointers, pointer_row


@pytest.mark.parametrize("seed", range(30))
def test_a_lookup_gives_the_later_record_of_a_checkpoint(seed: int) -> None:
    rng = random.Random(seed)
    ids = ["1", "11", "a 1", "1f1f-0", "x1", "", "1 1", "ü"]  # suffixes of each other, spaces, empty
    rows, expected = [], {}
    for _ in range(rng.randrange(0, 40)):
        checkpoint_id, snapshot_id = rng.choice(ids), f"{rng.getrandbits(128):032x}"
        rows.append(pointer_row(snapshot_id, checkpoint_id))
        expected[checkpoint_id] = snapshot_id
    for asked in (rng.choice(ids), *ids):  # the first scans, the rest use the dict
        pointers = Pointers(rows)
        assert pointers.get(asked) == expected.get(asked)
        assert [pointers.get(other) for other in ids] == [expected.get(other) for other in ids]
    assert Pointers(rows).with_({"new": "0" * 32}).as_dict() == {**expected, "new": "0" * 32}


def test_a_pointer_row_refuses_an_id_that_is_not_a_snapshot_id() -> None:
    with pytest.raises(ValueError, match="32 characters"):
        pointer_row("abc", "checkpoint")
    assert len(pointer_row("f" * SNAPSHOT_ID_LENGTH, "c")) == SNAPSHOT_ID_LENGTH + 2
