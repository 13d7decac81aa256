"""Make the golden store ``tests/golden/store-v3/`` and ``tests/golden/expected-v3/*.json``. Run ONCE.

Format version 3 adds one kind of COMMIT entry to version 2: a delta stored against a
snapshot other than its parent (flag 8 and ``base``, docs/format.md §4.6), which a writer
writes when another writer moved the head since its last commit. This store is written by the
engine itself, with the clock, segment headers and small-state settings of
``make_golden_v2.py`` (segments of up to 4 KiB of raw payload here, three runs), by two
store handles taking turns on one session (as two writer processes do), so that most of its
commits are flag-8 entries:

* ``guild hall``: two writers, each moving its own part of a shared state, taking turns for
  30 commits with a limit of 6 snapshots and a tag on the first commit whose chain starts at a
  patched keyframe, so that reclaiming drops
  segments and squashes the tagged one's (rewritten from the tagged snapshot's run on, flag-8
  entries with their bases), then one writer alone for a few commits (deltas against their
  parents again).

``expected-v3/guild-hall.json`` holds the session as a reader must find it (as
``expected-v2/*.json`` do), and for each commit entry its ``base`` (null unless flag 8).

How it was made (from the repository root)::

    PYTHONPATH=src .venv/bin/python tests/golden/make_golden_v3.py

It refuses to overwrite an existing ``store-v3`` unless given ``--force``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
STORE = HERE / "store-v3"
EXPECTED = HERE / "expected-v3"

sys.path.insert(0, str(HERE.parents[1] / "src"))
sys.path.insert(0, str(HERE))

import make_golden_v2 as v2  # noqa: E402  (its clock, headers, squash watch and export)

from snapstore import SnapshotStore, keyframes  # noqa: E402
from snapstore.entries import CommitEntry, decode_entry  # noqa: E402
from snapstore.session import Session  # noqa: E402


def hall(writer: str, k: int, other: int) -> dict[str, Any]:
    counts = {"quartermaster": other, "scribe": other}
    counts[writer] = k
    return {
        "guild": "the lantern guild",
        "counts": counts,
        "ledger": [f"entry {i}: {['coin', 'rope', 'lamp oil'][i % 3]} x{i % 4 + 1}" for i in range(12)],
        "last": {"by": writer, "k": k, "ratio": k / 4},
    }


def export(sess: Session) -> dict[str, Any]:
    data = v2.export(sess)
    for segment in data["segments"]:
        read = sess._store.backend.read_segment(sess.key, segment["segment"])
        for row, raw in zip(segment["entries"], read.entries, strict=True):
            if "commit" in row:
                entry = decode_entry(raw, sess.name, "golden")
                assert isinstance(entry, CommitEntry)
                row["base"] = entry.base if raw[2] & 8 else None
    return data


def main() -> None:
    v2.start_afresh(STORE, EXPECTED)
    keyframes.SMALL_SEGMENT_BYTES = 4096  # type: ignore[misc]

    with SnapshotStore.open(STORE, max_chain=3, max_runs=3) as first, SnapshotStore.open(
        STORE, max_chain=3, max_runs=3
    ) as second:
        assert first.format == 3
        v2.watch_squashes(first)
        v2.watch_squashes(second)
        a = first.session("guild hall", max_snapshots=6)
        b = second.session("guild hall")
        tagged = False
        for k in range(15):
            for writer, sess, other in (("quartermaster", a, k - 1), ("scribe", b, k)):
                snap = sess.commit(hall(writer, k, other), label=f"{writer} {k}", turn=2 * k + (sess is b))
                chain = sess._current().chain(snap.id)
                if not tagged and chain[0].mode == 1 and len(chain) >= 2:
                    # kept past the limit, from a run after its segment's first: the segment is squashed
                    sess.tag(snap.id, "charter")
                    tagged = True
        for k in range(15, 18):
            a.commit(hall("quartermaster", k, 14), label=f"quartermaster {k}", turn=15 + k)
        exported = {"guild-hall": export(a)}
        report = first.verify()
        assert report.ok, report.problems

    # the markers that make version-1 code refuse the store (docs/format.md §6) are left out, as the
    # version-2 golden store has none: git keeps no empty folder, and no reader of versions 2 and 3 needs them
    shutil.rmtree(STORE / "refs")
    shutil.rmtree(STORE / "objects")
    check(exported["guild-hall"])
    for slug, data in exported.items():
        (EXPECTED / f"{slug}.json").write_bytes(
            orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"
        )
    total = sum(p.stat().st_size for p in STORE.rglob("*") if p.is_file())
    print(f"wrote {STORE} ({total} bytes of files) and {len(exported)} expected-v3/*.json files")


def check(hall_session: dict[str, Any]) -> None:
    """Refuse a golden store that lacks what it is meant to show."""
    rows = [e for s in hall_session["segments"] for e in s["entries"] if "commit" in e]
    assert sum(1 for e in rows if e["base"] is not None) >= 3, "flag-8 entries"
    assert any(e["base"] is None and e["mode"] not in (0, 1) for e in rows), "deltas against parents"
    assert hall_session["squashed"], "a squashed segment"
    squashed = [s for s in hall_session["segments"] if s["segment"] in hall_session["squashed"]]
    assert any(e.get("base") for s in squashed for e in s["entries"]), "a squash kept a flag-8 entry"


if __name__ == "__main__":
    main()
