"""A two-minute tour: commit a few turns of a game session, diff them, roll back.

Run with ``python -m snapstore.demo [STORE_DIR]`` (default: a fresh temporary folder).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import orjson

from . import SnapshotStore


def _turn(state: dict, n: int) -> None:
    state["turn_count"] = n
    state["conversation_history"].append({"role": "user", "content": f"Turn {n}: I search the room.", "turn": n})
    state["conversation_history"].append({"role": "gm", "content": f"You find {n} gold coins.", "turn": n})
    state["party"]["Zoë"]["gold"] += n
    if n == 3:
        state["party"]["Zoë"]["hp"] = 0  # a bad turn: the GM killed the hero by mistake
        state["flags"]["hero_dead"] = True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="snapstore-demo-")) / "store"
    state = {
        "session_id": "campaign-42",
        "turn_count": 0,
        "conversation_history": [],
        "party": {"Zoë": {"hp": 12, "gold": 0, "inventory": ["rope", "torch"]}},
        "flags": {"hero_dead": False},
    }
    with SnapshotStore.open(folder) as store:
        sess = store.session("campaign-42", max_snapshots=10)
        print(f"store: {folder}")
        for n in range(1, 4):
            _turn(state, n)
            snap = sess.commit(state, label=f"turn {n}", turn=n)
            print(f"  committed turn {n}: {snap.id[:12]} ({snap.kind}, state {snap.size} bytes)")
        second, bad = sess.snapshots()[-2:]
        print("\nwhat changed in the bad turn (RFC 6902):")
        for op in sess.diff(second.id, bad.id):
            print("  " + orjson.dumps(op).decode())
        restored = sess.rollback(second.id)
        print(f"\nrolled back to {second.id[:12]}: Zoë has hp {restored['party']['Zoë']['hp']} again")
        restored["turn_count"] = 3
        snap = sess.commit(restored, label="turn 3 (replayed)", turn=3)
        print(f"replayed turn 3 as {snap.id[:12]} (parent {snap.parent[:12] if snap.parent else None})")
        report = store.verify()
        print(f"\nverify: {'ok' if report.ok else 'PROBLEMS'}; {report.objects_checked} objects, "
              f"{report.snapshots_checked} snapshots, {len(sess)} retained")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
