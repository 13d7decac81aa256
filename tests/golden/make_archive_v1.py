"""Writes tests/golden/archive-v1.snaparchive and archive-v1.json, an archive of archive version 1.

Run from the repository root with the release that writes version 1 (before version 2 existed):

    python tests/golden/make_archive_v1.py

The archive holds two sessions: one with a tag, a rollback and snapshots evicted by its limit, one
with states whose values must keep their types (1, 1.0, true, -0.0, keys with "/" and "~"). The
JSON gives each session's limit, tags and listed snapshots with their states, which the test
compares with what an import of the archive reads back.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import orjson

from snapstore import SnapshotStore

HERE = Path(__file__).parent


def main() -> None:
    store = SnapshotStore.memory(max_chain=4)
    campaign = store.session("campaign-7", max_snapshots=5)
    state = {"party": {"hp": 10, "gold": 0.0}, "log": []}
    ids = []
    for turn in range(9):
        state["log"].append(f"turn {turn}: the party walks on")
        state["party"]["hp"] = 10 - turn % 4
        state["party"]["gold"] = turn / 2
        ids.append(campaign.commit(state, label=f"turn {turn}", turn=turn).id)
    campaign.tag(ids[6], "camp")
    campaign.rollback(ids[6])
    campaign.commit({**state, "branch": "after the rollback"}, label="branch", turn=9)
    odd = store.session("odd ~values")
    for n, value in enumerate([1, 1.0, True, -0.0, 2**63 - 1, "ü/~0"]):
        odd.commit({"value": value, "a/b": {"~1": [n, None]}, "": "empty key"}, label=f"v{n}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "archive.snaparchive"
        store.export(path)
        data = path.read_bytes()
    assert data[4] == 1, "this release writes version 2: run it with the one before"
    (HERE / "archive-v1.snaparchive").write_bytes(data)
    expected = {
        name: {
            "max_snapshots": sess.max_snapshots,
            "tags": sess.tags,
            "snapshots": [{"id": sid, "state": sess.state(sid)} for sid in sess.snapshot_ids()],
        }
        for name in store.sessions()
        for sess in [store.session(name)]
    }
    (HERE / "archive-v1.json").write_bytes(orjson.dumps(expected, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


if __name__ == "__main__":
    main()
