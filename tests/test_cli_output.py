"""What the command line prints: log's columns, graph, --oneline and -n; --json and --ndjson; show ID:POINTER.

Every check runs the real ``snapstore`` command in a subprocess (cli_support.py)
against a real directory store.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import orjson
import pytest

from cli_support import ok, one_error_line, run, run_many
from snapstore.cli.base import speak_flags


@dataclasses.dataclass
class Forked:
    store: Path
    ids: dict[str, str]  # name -> full id


@pytest.fixture(scope="module")
def forked(tmp_path_factory: pytest.TempPathFactory) -> Forked:
    """Session camp: t1 - t2 - t3, rollback to t2, t3b (the head); rollback to t1, t2c: two forks."""
    store = tmp_path_factory.mktemp("forked") / "store"
    ok("init", store=store)
    ids: dict[str, str] = {}

    def commit(name: str, turn: int, hp: int) -> None:
        state = orjson.dumps({"turn": turn, "hp": hp, "party": {"Zoë": {"hp": hp}}})
        ids[name] = ok("commit", "camp", "-", "--turn", str(turn), "--label", name, store=store, stdin=state).strip()

    commit("t1", 1, 10)
    commit("t2", 2, 9)
    commit("t3", 3, 0)
    ok("rollback", "camp", ids["t2"], store=store)
    commit("t3b", 3, 8)
    ok("rollback", "camp", ids["t1"], store=store)
    commit("t2c", 2, 7)
    ok("rollback", "camp", ids["t3b"], store=store)  # the head is on the first branch again
    ok("commit", "other", "-", store=store, stdin=b'{"x": 1}')
    return Forked(store, ids)


def short(forked: Forked, *names: str) -> list[str]:
    return [forked.ids[name][:12] for name in names]


def test_log_has_a_parent_column(forked: Forked) -> None:
    out = ok("log", "camp", store=forked.store)
    lines = out.splitlines()
    assert lines[0] == f"session camp: 5 snapshots, head {forked.ids['t3b'][:12]}"
    assert lines[1].split() == ["ID", "PARENT", "KIND", "TURN", "TIME", "SIZE", "LABEL"]
    parents = {row.lstrip("* ").split()[0]: row.lstrip("* ").split()[1] for row in lines[2:]}
    t1, t2, t3, t3b, t2c = short(forked, "t1", "t2", "t3", "t3b", "t2c")
    assert parents == {t1: "-", t2: t1, t3: t2, t3b: t2, t2c: t1}  # turn 3b follows turn 3, yet its parent is t2


def test_graph_draws_the_forks_rollbacks_made(forked: Forked) -> None:
    t1, t2, t3, t3b, t2c = short(forked, "t1", "t2", "t3", "t3b", "t2c")
    oldest_first, newest_first = run_many(
        ("log", "camp", "--graph", "--oneline"), ("log", "camp", "--graph", "--oneline", "--reverse"),
        store=forked.store,
    )
    assert oldest_first.stdout.splitlines() == [
        f"* {t1} [turn 1] t1",
        "|\\",
        f"| * {t2c} [turn 2] t2c",  # the branch left behind, drawn whole before the one leading to the head
        f"* {t2} [turn 2] t2",
        "|\\",
        f"| * {t3} [turn 3] t3",
        f"@ {t3b} (head) [turn 3] t3b",
    ]
    assert newest_first.stdout.splitlines() == [
        f"@ {t3b} (head) [turn 3] t3b",
        f"| * {t3} [turn 3] t3",
        "|/",
        f"* {t2} [turn 2] t2",
        f"| * {t2c} [turn 2] t2c",
        "|/",
        f"* {t1} [turn 1] t1",
    ]
    table = ok("log", "camp", "--graph", store=forked.store).splitlines()
    assert table[1].split()[0] == "ID" and table[3] == "|\\" and table[4].startswith(f"| *  {t2c}  {t1}  ")


def test_graph_without_the_forks_parent(tmp_path: Path) -> None:
    """A parent that retention evicted leaves two trees, drawn apart."""
    store = tmp_path / "store"
    ok("init", store=store)
    first = ok("commit", "s", "-", "--max-snapshots", "3", store=store, stdin=b'{"n": 1}').strip()
    second = ok("commit", "s", "-", store=store, stdin=b'{"n": 2}').strip()
    ok("rollback", "s", first, store=store)
    third = ok("commit", "s", "-", store=store, stdin=b'{"n": 3}').strip()
    fourth = ok("commit", "s", "-", store=store, stdin=b'{"n": 4}').strip()  # evicts first, the fork
    lines = ok("log", "s", "--graph", "--oneline", store=store).splitlines()
    assert lines == [f"* {second[:12]} auto", "", f"* {third[:12]} auto", f"@ {fourth[:12]} (head) auto"]


def test_max_count_and_oneline(forked: Forked) -> None:
    t2c, t3b = short(forked, "t2c", "t3b")
    newest, none, everyone, negative = run_many(
        ("log", "camp", "-n", "2", "--oneline"), ("log", "camp", "--max-count", "0", "--json"),
        ("log", "--oneline", "-n", "1"), ("log", "-n", "-1"), store=forked.store,
    )
    assert newest.stdout.splitlines() == [f"{t3b} (head) [turn 3] t3b", f"{t2c} [turn 2] t2c"]
    assert orjson.loads(none.stdout) == []
    lines = everyone.stdout.splitlines()  # every session: a title line each, then its newest snapshot
    assert lines[0] == f"session camp: 5 snapshots (showing the newest 1), head {t3b}" and lines[1].startswith(t2c)
    assert lines[2].startswith("session other: 1 snapshot") and lines[3].endswith("(head) auto")
    assert negative.returncode == 1 and "-n/--max-count must be 0 or more" in one_error_line(negative.stderr)
    table = ok("log", "camp", "-n", "2", store=forked.store).splitlines()
    assert table[0] == f"session camp: 5 snapshots (showing the newest 2), head {t3b}" and len(table) == 4


def test_json_and_ndjson_print_the_same_records(forked: Forked) -> None:
    t3b = forked.ids["t3b"]
    calls = [("sessions",), ("log", "camp"), ("diff", forked.ids["t1"], t3b), ("stats",), ("verify",),
             ("show", t3b[:8])]
    as_json = run_many(*((*c, "--json") for c in calls), store=forked.store)
    as_ndjson = run_many(*((*c, "--ndjson") for c in calls), store=forked.store)
    for args, whole, lines in zip(calls, as_json, as_ndjson, strict=True):
        assert whole.returncode == lines.returncode == 0, (args, whole.stderr, lines.stderr)
        assert whole.stdout.count("\n") == 1, args  # --json: one document on one line
        document = orjson.loads(whole.stdout)
        records = [orjson.loads(line) for line in lines.stdout.splitlines()]
        assert records == (document if isinstance(document, list) else [document]), args
    sessions, log, diff = (orjson.loads(p.stdout) for p in as_json[:3])
    assert [s["name"] for s in sessions] == ["camp", "other"]
    assert [e["id"] for e in log][-1] == forked.ids["t2c"] and [e["head"] for e in log].count(True) == 1
    assert {"op": "replace", "path": "/hp", "value": 8} in diff
    both = run("log", "--json", "--ndjson", store=forked.store)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_writing_commands_print_json(tmp_path: Path) -> None:
    store, archive = tmp_path / "store", tmp_path / "a.snaparchive"
    ok("init", store=store)
    first = orjson.loads(ok("commit", "s", "-", "--json", "--label", "one", store=store, stdin=b'{"a": 1}'))
    assert first["label"] == "one" and first["parent"] is None and first["evicted"] == [] and len(first["id"]) == 32
    second = orjson.loads(ok("commit", "s", "-", "--ndjson", store=store, stdin=b'{"a": 2}'))
    assert second["parent"] == first["id"]
    rolled = orjson.loads(ok("rollback", "s", first["id"][:8], "--json", store=store))
    assert rolled["session"] == "s" and rolled["head"]["id"] == first["id"]
    exported = orjson.loads(ok("export", str(archive), "--json", store=store))
    assert exported["sessions"] == ["s"] and exported["snapshots"] == 2 and exported["archive_bytes"] > 0
    imported = orjson.loads(ok("import", str(archive), "--ndjson", store=tmp_path / "copy"))
    assert imported["created"] == ["s"] and imported["created_store"] is True and imported["snapshots_written"] == 2
    gc = orjson.loads(ok("gc", "--json", store=store))
    assert gc["objects_deleted"] == gc["bytes_freed"] == gc["temporary_files_removed"] == 0


def test_show_takes_id_colon_pointer(forked: Forked) -> None:
    t3b = forked.ids["t3b"]
    colon, flag, whole, described, both, past = run_many(
        ("show", f"{t3b[:8]}:/party/Zoë/hp"), ("show", t3b[:8], "--pointer", "/party/Zoë/hp"),
        ("show", f"{t3b[:8]}:", "--compact"), ("show", f"{t3b[:8]}:/party", "--json"),
        ("show", f"{t3b[:8]}:/hp", "--pointer", "/turn"), ("show", f"{t3b[:8]}:/party/Bob"),
        store=forked.store,
    )
    assert colon.stdout == flag.stdout == "8\n"
    assert whole.stdout == '{"hp":8,"party":{"Zoë":{"hp":8}},"turn":3}\n'
    assert orjson.loads(described.stdout) == {"id": t3b, "session": "camp", "pointer": "/party",
                                              "value": {"Zoë": {"hp": 8}}}
    assert both.returncode == 1 and "drop --pointer /turn" in one_error_line(both.stderr)
    assert past.returncode == 1 and "no member 'Bob' at /party" in one_error_line(past.stderr)


def test_library_keywords_become_flags() -> None:
    message = "archive a: the store already has session(s) 'c'; import with on_conflict='merge', 'replace' or 'rename'"
    assert speak_flags(message).endswith("import with --on-conflict merge, replace or rename")
    assert speak_flags("max_snapshots=0 is not a positive integer") == "--max-snapshots 0 is not a positive integer"
    assert speak_flags("nothing to translate: on_conflict") == "nothing to translate: on_conflict"


def test_names_that_would_drive_a_terminal_are_printed_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Session and tag names refuse C0 controls but may hold the C1 ones (U+009B starts a terminal's
    escape sequence), U+2028/U+2029 and the bidirectional controls (U+202E reverses the rest of the
    line: a table's later columns, the names after it), and an archive brings names from elsewhere:
    every line for people prints them escaped, as it prints labels."""
    from snapstore.cli import main

    store = str(tmp_path / "store")
    session, tag = "s\u009b31mX", "t\u009bag"
    printed = []

    def snapstore(*args: str, stdin: bytes | None = None) -> None:
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        assert main(["--store", store, *args]) == 0, args
        out, err = capsys.readouterr()
        printed.append(out + err)

    snapstore("init")
    snapstore("commit", session, "-", stdin=b'{"a": 1}')
    snapstore("commit", "line\u2028sep", "-", stdin=b'{"a": 1}')
    snapstore("commit", "rtl\u202eeman\u2066", "-", "--label", "turn \u202e1", stdin=b'{"a": 1}')
    snapstore("log", "rtl\u202eeman\u2066")
    snapstore("commit", session, "-", stdin=b'{"a": 2}')
    first = orjson.loads(run("log", session, "--json", store=Path(store)).stdout)[-1]["id"]
    snapstore("sessions")
    snapstore("log", session)
    snapstore("tag", session, first, tag)
    snapstore("log", session, "--oneline")
    snapstore("untag", session, tag)
    snapstore("rollback", session, first)
    snapstore("export", str(tmp_path / "a.snaparchive"))
    snapstore("--store", str(tmp_path / "copy"), "import", str(tmp_path / "a.snaparchive"))
    snapstore("commit", session, "-", "--max-snapshots", "1", "--force", stdin=b'{"a": 3}')
    snapstore("delete-session", session, "--yes")
    text = "".join(printed)
    assert "\u009b" not in text and "\u2028" not in text and "\u202e" not in text and "\u2066" not in text
    assert "s\\x9b31mX" in text and "line\\u2028sep" in text and "t\\x9bag" in text
    assert "rtl\\u202eeman\\u2066" in text and "turn \\u202e1" in text


def test_files_of_any_name_left_in_the_store_are_listed_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """verify and gc list what snapstore did not write: a file's name may hold any control
    character (found in review: an escape sequence set the terminal's title, a newline a fake line)."""
    from snapstore import SnapshotStore
    from snapstore.cli import main

    store = tmp_path / "store"
    with SnapshotStore.open(store) as opened:
        opened.session("s").commit({"a": 1})
    (store / "sessions" / "x\x1b]0;PWNED\x07\x1b[31mred\nfake line: ok").touch()
    for command in ("verify", "gc"):
        main(["--store", str(store), command])
        out, _err = capsys.readouterr()
        assert "\x1b" not in out and "\x07" not in out and "\nfake line" not in out, out
        assert "x\\x1b]0;PWNED\\x07\\x1b[31mred\\x0afake line: ok" in out
