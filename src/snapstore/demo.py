"""A two-minute tour: commit a few turns of a game session, diff them, roll back.

Run with ``python -m snapstore.demo [DIR] [--keep]`` (or ``snapstore demo``). Without DIR
the tour runs in a temporary folder that it removes at the end, unless ``--keep``.
DIR must be a new or empty folder, or the store of an earlier tour: that store's
demo session is deleted first, so every run starts from nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import orjson

from . import SnapshotStore
from .errors import SnapshotError

SESSION = "campaign-42"


class DemoFolderError(SnapshotError):
    """DIR holds something the tour must not touch."""


def _turn(state: dict, n: int) -> None:
    state["turn_count"] = n
    state["conversation_history"].append({"role": "user", "content": f"Turn {n}: I search the room.", "turn": n})
    state["conversation_history"].append({"role": "gm", "content": f"You find {n} gold coins.", "turn": n})
    state["party"]["Zoë"]["gold"] += n
    if n == 3:
        state["party"]["Zoë"]["hp"] = 0  # a bad turn: the GM killed the hero by mistake
        state["flags"]["hero_dead"] = True


def open_fresh(folder: Path) -> SnapshotStore:
    """A store at ``folder`` holding no demo session: new, or an earlier tour's with its session deleted."""
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return SnapshotStore.open(folder)
    try:
        store = SnapshotStore.open(folder, create=False)
    except SnapshotError:
        raise DemoFolderError(f"{folder} is neither empty nor a snapstore store: give the demo a new folder") from None
    others = [name for name in store.sessions() if name != SESSION]
    if others:
        store.close()
        raise DemoFolderError(
            f"{folder} holds other sessions ({', '.join(others)}): the demo runs only in its own store"
        )
    if store.has_session(SESSION):
        store.delete_session(SESSION)  # the last tour's history, so this one starts from nothing
        store.gc()
    return store


def tour(folder: Path) -> None:
    state = {
        "session_id": SESSION,
        "turn_count": 0,
        "conversation_history": [],
        "party": {"Zoë": {"hp": 12, "gold": 0, "inventory": ["rope", "torch"]}},
        "flags": {"hero_dead": False},
    }
    with open_fresh(folder) as store:
        sess = store.session(SESSION, max_snapshots=10)
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
        print(
            f"\nverify: {'ok' if report.ok else 'PROBLEMS'}; {report.snapshots_checked} snapshots checked, "
            f"{report.states_rebuilt} states rebuilt against their hashes, {len(sess)} retained"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m snapstore.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", nargs="?", help="where to make the demo store (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.dir:
        try:
            tour(Path(args.dir))
        except DemoFolderError as exc:
            sys.stderr.write(f"snapstore demo: error: {exc}\n")
            return 1
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="snapstore-demo-"))
    try:
        tour(scratch / "store")
    finally:
        if args.keep:
            print(f"\nkept {scratch / 'store'}: try snapstore --store {scratch / 'store'} log --graph")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
            print(f"\nremoved {scratch} (--keep keeps it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
