"""Make ``tests/data/archive-v1/``: archives written by snapstore's format-1 store. Run ONCE, with that build.

Archives keep their own format across store formats: a store of any later
format must import what a format-1 store exported. These files are that
evidence, so they are written by the last build whose store was format 1
(commit 6e42a8e) and committed; regenerating them with a later build would
replace the evidence instead of checking it. Tests never run this script.

How they were made (from the repository root)::

    mkdir -p /tmp/snapstore-v1 && git archive 6e42a8e src | tar -x -C /tmp/snapstore-v1
    PYTHONPATH=/tmp/snapstore-v1/src .venv/bin/python tests/data/archive-v1/make_archive_v1.py

What is in them:

* ``store.snaparchive``: every session of a store holding
  - ``campaign``: 30 turns with ``max_chain=6`` (keyframes, some travelling as state
    patches) and a retention of 12 (the oldest retained chains run through evicted
    records), then a rollback to turn 24 and 4 more turns: two branches;
  - ``long chain``: 80 turns with one keyframe and a retention of 4, reclaimed, so its
    document lists a squashed base;
  - ``empty``: the states ``[]``, ``[]``, ``[1]``: the empty patch and the empty state are
    one object;
* ``chosen.snaparchive``: three chosen snapshots of ``campaign`` (its head not among them);
* ``expected.json``: per session, what importing ``store.snaparchive`` must give: the
  retention limit, head, retained ids in order, and every retained state.
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from snapstore import SnapshotStore

HERE = Path(__file__).resolve().parent


def play(sess: Any, turns: int, start: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    ids = []
    state: dict[str, Any] = {"log": [], "hero": {"hp": 10, "gold": 0.0}, "mode": 1, "zoë/~": "ünï"}
    for turn in range(start, start + turns):
        state["log"].append({"turn": turn, "text": " ".join(rng.choice(["ab", "cd", "ef"]) for _ in range(10))})
        state["hero"]["hp"] = rng.randint(0, 20)
        state["hero"]["gold"] = float(turn) / 2
        state["mode"] = (1, 1.0, True)[turn % 3]
        if turn % 7 == 0:
            state[f"k{turn}"] = {"nested": [turn, -0.0, None, 2**63 - 1]}
        ids.append(sess.commit(state, label=f"turn {turn}", turn=turn).id)
    return ids


def main() -> None:
    if (HERE / "store.snaparchive").exists() and "--force" not in sys.argv:
        sys.exit("archives exist: they are evidence of format 1; pass --force only if it was written wrongly")
    with tempfile.TemporaryDirectory() as tmp:
        store = SnapshotStore.open(Path(tmp) / "s", max_chain=6)
        campaign = store.session("campaign", max_snapshots=12)
        ids = play(campaign, 30, 0, 7)
        campaign.rollback(ids[24])
        play(campaign, 4, 100, 11)
        long_store = SnapshotStore.open(Path(tmp) / "s", max_chain=10_000, max_chain_factor=1e9)
        long_chain = long_store.session("long chain", max_snapshots=4)
        play(long_chain, 80, 0, 3)
        long_store.reclaim(long_chain)
        assert long_chain._current().bases
        empty = store.session("empty")
        for state in ([], [], [1]):
            empty.commit(state)
        store.export(HERE / "store.snaparchive")
        chosen = campaign.snapshot_ids()
        store.export(HERE / "chosen.snaparchive", snapshots=[chosen[1], chosen[5], chosen[8]])
        expected = {}
        for name in store.sessions():
            sess = store.session(name)
            expected[name] = {
                "max_snapshots": sess.max_snapshots,
                "head": sess.head.id if sess.head else None,
                "snapshots": sess.snapshot_ids(),
                "states": {sid: sess.state(sid) for sid in sess.snapshot_ids()},
                "chosen": [chosen[1], chosen[5], chosen[8]] if name == "campaign" else [],
            }
        (HERE / "expected.json").write_bytes(orjson.dumps(expected, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
