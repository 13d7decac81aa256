"""``tag``, ``untag`` and ``forget``: what a session keeps, from the command line.

Every check runs the real ``snapstore`` command in a subprocess (cli_support.py).
"""

from __future__ import annotations

from pathlib import Path

import orjson

from cli_support import ok, one_error_line, run


def commits(store: Path, count: int, *, limit: int = 10) -> list[str]:
    ok("init", store=store)
    return [
        ok("commit", "s", "-", "--turn", str(n), "--max-snapshots", str(limit), store=store,
           stdin=b'{"turn": %d}' % n).strip()
        for n in range(count)
    ]


def retained(store: Path) -> list[str]:
    return [entry["id"] for entry in orjson.loads(ok("log", "s", "--json", store=store))]


def test_a_tag_outlives_retention_and_names_the_snapshot(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ids = commits(store, 3, limit=3)
    out = ok("tag", "s", ids[0][:8], "before-the-dragon", store=store)
    assert out == f"s: tagged {ids[0][:12]} as before-the-dragon; retention keeps it until it is untagged\n"
    later = [ok("commit", "s", "-", "--turn", str(n), store=store, stdin=b"{}").strip() for n in (3, 4, 5)]
    assert retained(store) == [ids[0], *later]  # kept beside the 3 the limit keeps
    lines = ok("log", "s", "--oneline", store=store).splitlines()
    assert lines[0] == f"{ids[0][:12]} (tag: before-the-dragon) [turn 0] auto"
    assert lines[-1] == f"{later[-1][:12]} (head) [turn 5] auto"
    entry = orjson.loads(ok("log", "s", "--json", store=store))[0]
    assert entry["tags"] == ["before-the-dragon"]
    assert f"head is now {ids[0][:12]}" in ok("rollback", "s", "before-the-dragon", store=store)

    untagged = orjson.loads(ok("untag", "s", "before-the-dragon", "--json", store=store))
    assert untagged == {"session": "s", "tag": "before-the-dragon", "id": ids[0]}
    ok("commit", "s", "-", store=store, stdin=b'{"turn": 6}')
    assert ids[0] not in retained(store)  # untagged, it is evicted like any other
    again = run("untag", "s", "before-the-dragon", store=store)
    assert again.returncode == 1 and "has no tag 'before-the-dragon'" in one_error_line(again.stderr)
    hexlike = run("tag", "s", later[-1][:8], "deadbeef", store=store)
    assert hexlike.returncode == 1 and "must not look like a snapshot id" in one_error_line(hexlike.stderr)


def test_forget_keeps_the_last_n_and_the_tagged(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ids = commits(store, 6)
    ok("tag", "s", ids[1], "keep-me", store=store)
    refused = run("forget", "s", "--keep-last", "2", store=store)  # no terminal to ask on
    assert refused.returncode == 1 and "add --yes" in one_error_line(refused.stderr)
    assert retained(store) == ids
    out = ok("forget", "s", "--keep-last", "2", "--yes", store=store).splitlines()
    assert out[0] == "s: forgot 3 snapshots, 3 retained"
    assert out[1:] == [f"  {sid}" for sid in (ids[0], ids[2], ids[3])]
    assert retained(store) == [ids[1], ids[4], ids[5]]
    nothing = orjson.loads(ok("forget", "s", "--keep-last", "2", "--json", store=store))  # nothing to ask about
    assert nothing == {"session": "s", "evicted": [], "retained": 3}
    assert orjson.loads(ok("sessions", "--json", store=store))[0]["max_snapshots"] == 10  # the limit stays
    zero = run("forget", "s", "--keep-last", "0", "--yes", store=store)
    assert zero.returncode == 1 and "--keep-last must be 1 or more" in one_error_line(zero.stderr)
