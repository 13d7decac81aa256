"""Make the golden store ``tests/golden/store-v4/`` and ``tests/golden/expected-v4/*.json``. Run ONCE.

Format version 4 adds one entry type to version 3: INDEX (docs/format.md §4.6.1), the ids of
the COMMIT entries since the segment's last INDEX, which a writer appends after every 64th. This
store is written by the engine itself, with the clock and segment headers of
``make_golden_v2.py`` and at most 3 runs a segment:

* ``chronicle``: a session made in format 3 (no INDEX entries: 80 commits), the store then moved
  to format 4 by ``SnapshotStore.upgrade`` (its format file alone), and 120 more commits: the
  first commit after the upgrade appends an INDEX covering every commit of the open segment
  (more than 64 by then), and every 64th commit of a segment after that one more.

``expected-v4/chronicle.json`` holds the session as a reader must find it (as
``expected-v2/*.json`` do), and for each segment the ids each of its INDEX entries gives.

How it was made (from the repository root)::

    PYTHONPATH=src .venv/bin/python tests/golden/make_golden_v4.py

It refuses to overwrite an existing ``store-v4`` unless given ``--force``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
STORE = HERE / "store-v4"
EXPECTED = HERE / "expected-v4"

sys.path.insert(0, str(HERE.parents[1] / "src"))
sys.path.insert(0, str(HERE))

import make_golden_v2 as v2  # noqa: E402  (its clock and headers)

from snapstore import SnapshotStore  # noqa: E402
from snapstore.entries import index_ids  # noqa: E402
from snapstore.session import Session  # noqa: E402


def chronicle(turn: int) -> dict[str, Any]:
    return {"turn": turn, "weather": ["clear", "rain", "fog"][turn % 3], "gold": turn * 3, "morale": turn / 8}


def export(sess: Session) -> dict[str, Any]:
    """``make_golden_v2.export``, and for each segment the ids each of its INDEX entries gives."""
    data = v2.export(sess)
    for segment in data["segments"]:
        read = sess._store.backend.read_segment(sess.key, segment["segment"])
        segment["indexes"] = [index_ids(raw) for raw in read.entries if raw[:1] == b"\x03"]
    return data


def main() -> None:
    v2.start_afresh(STORE, EXPECTED)

    SnapshotStore.open(STORE).backend.write_config("format", b"3")  # made as a format-3 build makes it
    with SnapshotStore.open(STORE, max_runs=3) as store:
        assert store.format == 3
        sess = store.session("chronicle", max_snapshots=200)
        for turn in range(80):
            sess.commit(chronicle(turn), label=f"day {turn}", turn=turn)
    report = SnapshotStore.upgrade(STORE)
    assert report.upgraded and (report.from_version, report.to_version) == ("3", "4")
    with SnapshotStore.open(STORE, max_runs=3) as store:
        assert store.format == 4
        sess = store.session("chronicle")
        for turn in range(80, 200):
            sess.commit(chronicle(turn), label=f"day {turn}", turn=turn)
        exported = {"chronicle": export(sess)}
        for row in exported["chronicle"]["snapshots"][:-1]:
            if row["turn"] % 10:
                del row["state"]  # (every tenth state, and the last, is enough to compare)
        report = store.verify()
        assert report.ok, report.problems

    # the markers that make version-1 code refuse the store (docs/format.md §6) are left out, as the
    # version-2 golden store has none: git keeps no empty folder, and no reader of versions 2 to 4 needs them
    shutil.rmtree(STORE / "refs")
    shutil.rmtree(STORE / "objects")
    check(exported["chronicle"])
    for slug, data in exported.items():
        (EXPECTED / f"{slug}.json").write_bytes(
            orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"
        )
    total = sum(p.stat().st_size for p in STORE.rglob("*") if p.is_file())
    print(f"wrote {STORE} ({total} bytes of files) and {len(exported)} expected-v4/*.json files")


def check(session: dict[str, Any]) -> None:
    """Refuse a golden store that lacks what it is meant to show."""
    indexes = [ids for segment in session["segments"] for ids in segment["indexes"]]
    assert len(indexes) >= 2, "INDEX entries"
    assert any(len(ids) > 64 for ids in indexes), "an INDEX covering a format-3 segment's commits"
    assert any(len(ids) == 64 for ids in indexes), "an INDEX after 64 commits"
    assert any(segment["entries"][-1].get("commit") and segment["indexes"] for segment in session["segments"]), (
        "commits after the last INDEX of a segment"
    )


if __name__ == "__main__":
    main()
