"""Make the golden store ``tests/golden/store-v1/`` and its ``expected-*.json`` files. Run ONCE.

The golden store is a small directory store written by format version 1. It is
committed to the repository so that tests/test_golden.py can check that every
later build still reads what version 1 wrote, byte for byte. Its content is
deterministic, but snapshot records carry commit timestamps, so every run
makes different snapshot ids: regenerating it replaces the evidence instead of
checking it. Tests never run this script; they copy the committed store to a
temporary folder and read the copy.

How it was made (from the repository root)::

    PYTHONPATH=src .venv/bin/python tests/golden/make_golden.py

It refuses to overwrite an existing ``store-v1`` unless given ``--force``; only
regenerate when format version 1 itself was found to be written wrongly, and
then say so in the commit message.

What is in it (see docs/format.md for the layout):

* session ``doc-example``: first state ``{"hp":7}``, the raw keyframe object shown
  byte for byte in docs/format.md §3.3, then deltas (raw and zstd-compressed);
* session ``Zoë's table`` (its ref name is percent-encoded): states full of values
  that must round-trip type-exact (1 / 1.0 / true, -0.0, 64-bit extremes,
  non-ASCII, keys with ``/`` and ``~``), written with ``max_chain=3`` so that it
  holds keyframes and deltas, then a rollback and a branch, so its head is not
  its newest snapshot;
* session ``long-chain``: 72 commits with no keyframe after the first and a
  retention of 3, so reclaiming squashed it: its document lists ``bases`` and
  ``evicted`` snapshots.

Each ``expected-<slug>.json`` holds one session as the test expects to read it:
its listing, head, document lists and every retained snapshot's metadata and state.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
STORE = HERE / "store-v1"

sys.path.insert(0, str(HERE.parents[1] / "src"))

from snapstore import SnapshotStore  # noqa: E402
from snapstore.session import Session  # noqa: E402


def tricky(turn: int) -> dict[str, Any]:
    """A game-like state whose values only survive a type-exact round trip."""
    one: list[Any] = [1, 1.0, True]
    return {
        "turn": turn,
        "hp": 10 - turn,
        "gold": turn * 1.5,
        "one": one[turn % 3],
        "zero": [0, 0.0, -0.0, False][turn % 4],
        "extremes": {"max_u64": 2**64 - 1, "min_i64": -(2**63), "max_i64": 2**63 - 1},
        "floats": [0.1, 1e16, 1.5e-7, 1.2345678901234568e17, 5e-324],
        "text": 'Zoë 名前 😀 "quoted" back\\slash /~ \u0000\u007f',
        "a/b": {"~1": ["x", "y"][: turn % 3], "": None},
        "log": [f"turn {t}" for t in range(turn)],
    }


def export(sess: Session) -> dict[str, Any]:
    doc = sess._current()
    return {
        "session": sess.name,
        "ref": sess._store.session_ref(sess.name),
        "max_snapshots": doc.max_snapshots,
        "head": doc.head,
        "bases": doc.bases,
        "evicted": doc.evicted,
        "snapshots": [
            {
                "id": snap.id,
                "parent": snap.parent,
                "label": snap.label,
                "turn": snap.turn,
                "kind": snap.kind,
                "state_hash": snap.state_hash,
                "state": sess.state(snap.id),
            }
            for snap in sess.snapshots()
        ],
    }


def main() -> None:
    if STORE.exists():
        if "--force" not in sys.argv[1:]:
            sys.exit(f"{STORE} exists: the golden store is made once (pass --force to replace it)")
        shutil.rmtree(STORE)
    for old in HERE.glob("expected-*.json"):
        old.unlink()

    exported: dict[str, dict[str, Any]] = {}

    with SnapshotStore.open(STORE) as store:
        sess = store.session("doc-example", max_snapshots=10)
        sess.commit({"hp": 7}, label="start", turn=1)
        sess.commit({"hp": 7, "name": "Zoë"}, label="named", turn=2)
        sess.commit({"hp": 5, "name": "Zoë", "log": [f"hit {i}" for i in range(12)]}, label="fight", turn=3)
        exported["doc-example"] = export(sess)

    with SnapshotStore.open(STORE, max_chain=3, max_chain_factor=1e9) as store:
        sess = store.session("Zoë's table", max_snapshots=6)
        ids = [sess.commit(tricky(t), label=f"turn {t}", turn=t).id for t in range(8)]
        sess.rollback(ids[4])
        sess.commit({**tricky(4), "branch": "after rollback"}, label="branch", turn=None)
        sess.rollback(ids[5])
        exported["zoe-table"] = export(sess)

    with SnapshotStore.open(STORE, max_chain=10_000, max_chain_factor=1e9) as store:
        sess = store.session("long-chain", max_snapshots=3)
        for t in range(72):
            sess.commit({"turn": t, "recent": list(range(max(0, t - 3), t))}, label="tick", turn=t)
        store.reclaim(sess)
        for t in range(72, 75):
            sess.commit({"turn": t, "recent": list(range(t - 3, t))}, label="tick", turn=t)
        exported["long-chain"] = export(sess)
        store.gc()
        report = store.verify()
        assert report.ok, report.problems

    assert exported["long-chain"]["bases"] and exported["long-chain"]["evicted"], "long-chain was not squashed"
    for slug, data in exported.items():
        (HERE / f"expected-{slug}.json").write_bytes(
            orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"
        )
    total = sum(p.stat().st_size for p in STORE.rglob("*") if p.is_file())
    print(f"wrote {STORE} ({total} bytes of files) and {len(exported)} expected-*.json files")


if __name__ == "__main__":
    main()
