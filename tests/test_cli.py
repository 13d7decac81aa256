"""The ``snapstore`` command line, end to end.

Every command runs at least once in a real subprocess (the ``snapstore``
script, see cli_support.py) against a real directory store under ``tmp_path``.
Variants of a command's flags run in-process through ``cli.main`` (same code
path, same real store, without paying interpreter start-up each), to keep the
file fast. The commands added for the first hour of a new user (log's graph,
NDJSON, overwrite refusals, import creating its store...) are tested in
test_cli_output.py and test_cli_files.py, all in subprocesses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import pty
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from cli_support import cli_env, command, one_error_line, run, run_many
from snapstore import SnapshotStore, cli
from snapstore.cli.output import Progress
from snapstore.cli.reading import format_diff
from snapstore.codec import object_id
from snapstore.delta import apply_patch
from snapstore.errors import ArchiveError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
COMMANDS = [name for name, *_ in cli.COMMANDS]
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def call(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``cli.main(ARGS)`` in-process: (exit code, stdout, stderr)."""
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse usage errors and --help
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


STATES = [
    {"turn_count": 1, "log": ["hello"], "party": {"Zoë": {"hp": 12, "gold": 1}}, "flags": {"dead": False}},
    {"turn_count": 2, "log": ["hello", "a goblin"], "party": {"Zoë": {"hp": 9, "gold": 3}}, "flags": {"dead": False}},
    {"turn_count": 3, "log": ["hello", "a goblin", "oops"], "party": {"Zoë": {"hp": 0, "gold": 6}},
     "flags": {"dead": True}},
]


@dataclasses.dataclass
class Populated:
    store: Path
    ids: list[str]  # session "campaign-42", oldest first
    other: str  # the one snapshot of session "side"


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Populated:
    """A store made through the CLI: three turns of campaign-42 and one snapshot of session side."""
    root = tmp_path_factory.mktemp("cli")
    store = root / "store"

    def cli_main(*args: str) -> str:  # in-process: commit and init run in subprocesses elsewhere
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert cli.main(["--store", str(store), *args]) == 0
        return out.getvalue().strip()

    cli_main("init")
    ids = []
    for n, state in enumerate(STATES, start=1):
        path = root / f"turn{n}.json"
        path.write_bytes(orjson.dumps(state))
        ids.append(cli_main("commit", "campaign-42", str(path), "--label", f"turn {n}", "--turn", str(n)))
    (root / "side.json").write_bytes(b'{"x": [1, 2.5, null]}')
    return Populated(store, ids, cli_main("commit", "side", str(root / "side.json"), "--max-snapshots", "3"))


# ---------------------------------------------------------------- help, docs, usage


def test_every_command_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    top, one = run_many(("--help",), ("diff", "--help"))
    assert top.returncode == 0 and "exit codes" in top.stdout and "example:" in top.stdout
    assert all(name in top.stdout for name in COMMANDS)
    assert one.returncode == 0 and "usage: snapstore diff" in one.stdout and "snapstore diff 3f2a9c01" in one.stdout
    for name in COMMANDS:
        code, out, _err = call(capsys, name, "--help")
        assert code == 0 and out.startswith(f"usage: snapstore {name}"), name
        description, example = out.split("example:\n")
        assert len(description.split("\n\n")[1]) > 30, f"{name} --help says too little"
        invocation = example.split("\n")[0].strip().replace("--store ./saves ", "").replace("--store ./other ", "")
        assert invocation.startswith(f"snapstore {name}"), (name, example)


def test_docs_mention_every_command() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for name in COMMANDS:
        assert re.search(rf"^#+ .*`snapstore {name}\b", text, re.M), f"docs/cli.md has no section for {name}"
        ran = re.search(rf"^\$ snapstore (--store \S+ )?{name}\b", text, re.M)
        assert ran, f"the docs/cli.md transcript never runs {name}"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    proc = run("frobnicate")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr and "Traceback" not in proc.stderr
    assert call(capsys, "show")[0] == 2  # missing ID
    assert call(capsys, "commit", "s", "f.json", "--turn", "three")[0] == 2
    code, _out, err = call(capsys)
    assert code == 2 and "COMMAND" in err


# ---------------------------------------------------------------- store location


def test_missing_store_is_one_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    procs = run_many(("log",), ("show", "0123456789abcdef"), ("verify",), store=missing)
    for proc in procs:
        assert proc.returncode == 1
        assert one_error_line(proc.stderr) == f"snapstore: error: no snapstore store at {missing} (run snapstore init)"
    assert not missing.exists()  # reading commands never create a store
    empty = tmp_path / "empty-dir"  # a folder that is not a store
    empty.mkdir()
    proc = run("commit", "s", "-", store=empty, stdin=b"{}")
    assert proc.returncode == 1 and "no snapstore store at" in one_error_line(proc.stderr)
    a_file = tmp_path / "checkpoints.sqlite"  # another tool's file: init would not help, and it says why
    a_file.write_bytes(b"SQLite format 3\x00")
    for proc in run_many(("log",), ("init",), store=a_file):
        assert proc.returncode == 1
        assert one_error_line(proc.stderr).endswith(f"{a_file}: it is a file; a directory store is a folder")
    under = a_file / "sub" / "store"  # not there, and cannot be: a part of its path is that file
    for proc in run_many(("log",), ("init",), store=under):
        assert proc.returncode == 1
        assert one_error_line(proc.stderr).endswith(f"{a_file} on its path is a file; a directory store is a folder")
    assert a_file.read_bytes() == b"SQLite format 3\x00"


def test_init_and_store_path_precedence(tmp_path: Path) -> None:
    proc = run("init", cwd=tmp_path)  # default: ./.snapstore
    assert proc.returncode == 0 and proc.stdout == "initialized empty snapstore store at .snapstore\n"
    SnapshotStore.open(tmp_path / ".snapstore", create=False).close()  # a store, not just a folder
    assert run("init", cwd=tmp_path).stdout == "snapstore store already exists at .snapstore\n"
    from_env = tmp_path / "env-store"
    proc = run("init", cwd=tmp_path, env=cli_env(SNAPSTORE_PATH=str(from_env)))
    assert proc.returncode == 0 and from_env.is_dir()
    flag = tmp_path / "flag-store"  # --store wins over the environment, before or after the command
    proc = run("init", "--store", str(flag), cwd=tmp_path, env=cli_env(SNAPSTORE_PATH=str(from_env)))
    assert proc.returncode == 0 and str(flag) in proc.stdout and flag.is_dir()


def _archive_of_one_session(capsys: pytest.CaptureFixture[str], tmp_path: Path, state: Any) -> Path:
    """``tmp_path/a.snaparchive``, exported by the command line from ``tmp_path/source``, a store
    holding one snapshot of ``state`` in session "s"."""
    source = tmp_path / "source"
    with SnapshotStore.open(source) as store:
        store.session("s").commit(state)
    archive = tmp_path / "a.snaparchive"
    assert call(capsys, "--store", str(source), "export", str(archive))[0] == 0
    return archive


def test_a_store_in_memory_is_refused_by_every_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A memory store dies with the command's process: ``init`` and ``import`` said they had made and
    filled one, and the next command found nothing there (and told the user to run ``init``)."""
    archive = _archive_of_one_session(capsys, tmp_path, {"a": 1})
    state = tmp_path / "state.json"
    state.write_text('{"a": 2}')
    for target in (":memory:", "memory:"):
        for args in (("init",), ("import", str(archive)), ("sessions",), ("commit", "s", str(state))):
            code, out, err = call(capsys, "--store", target, *args)
            assert code == 1 and out == "", (target, args, out)
            assert one_error_line(err) == (
                f"snapstore: error: --store {target} names a store in memory, which lasts as long as one process, "
                f"and each snapstore command is one: name a store directory (./{target} for a folder of that name) "
                "or a postgresql:// URL"
            )
    proc = run("init", cwd=tmp_path, env=cli_env(SNAPSTORE_PATH=":memory:"))
    assert proc.returncode == 1 and one_error_line(proc.stderr).startswith("snapstore: error: $SNAPSTORE_PATH :memory:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.snaparchive", "source", "state.json"]  # nothing made
    proc = run("init", "--store", "./:memory:", cwd=tmp_path)  # a folder of that name is reached as a path
    assert proc.returncode == 0 and (tmp_path / ":memory:").is_dir()


# ---------------------------------------------------------------- reading commands


def test_sessions_log_show_in_subprocesses(populated: Populated) -> None:
    a, b, c = populated.ids
    sessions, log, log_json, show, pointer = run_many(
        ("sessions",),
        ("log", "campaign-42"),
        ("log", "--json"),
        ("show", a[:8]),
        ("show", c, "--pointer", "/party/Zoë/hp"),
        store=populated.store,
    )
    assert all(p.returncode == 0 and p.stderr == "" for p in (sessions, log, log_json, show, pointer))

    lines = sessions.stdout.splitlines()
    assert lines[0].split() == ["SESSION", "SNAPSHOTS", "LIMIT", "HEAD", "STORED"]
    assert lines[1].split()[:4] == ["campaign-42", "3", "10", c[:12]]
    assert lines[2].split()[:4] == ["side", "1", "3", populated.other[:12]]

    lines = log.stdout.splitlines()
    assert lines[0] == f"session campaign-42: 3 snapshots, head {c[:12]}"
    assert lines[1].split() == ["ID", "PARENT", "KIND", "TURN", "TIME", "SIZE", "LABEL"]
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows[:2]] == [a[:12], b[:12]] and rows[2][:2] == ["*", c[:12]]
    assert [r[-3:] for r in rows] == [["B", "turn", "1"], ["B", "turn", "2"], ["B", "turn", "3"]]
    assert rows[0][1:4] == ["-", "full", "1"] and rows[1][1:4] == [a[:12], "delta", "2"] and rows[2][2] == b[:12]

    entries = orjson.loads(log_json.stdout)
    assert [e["id"] for e in entries] == [a, b, c, populated.other]
    assert entries[2]["head"] and not entries[0]["head"] and entries[0]["parent"] is None
    assert {e["session"] for e in entries} == {"campaign-42", "side"}
    assert [e["size"] for e in entries] == [len(orjson.dumps(s, option=orjson.OPT_SORT_KEYS)) for s in STATES] + [
        len(b'{"x":[1,2.5,null]}')]
    assert entries[0]["kind"] == "full" and entries[1]["kind"] == "delta" and entries[1]["turn"] == 2

    assert orjson.loads(show.stdout) == STATES[0] and show.stdout.startswith("{\n  ")
    assert pointer.stdout == "0\n"


def test_output_closed_by_its_reader_exits_141_quietly(populated: Populated) -> None:
    """``snapstore log | head``: the reader stopping is no error of the command (it exited 1 with no
    message, which a script under ``set -o pipefail`` took for a failure it could not explain)."""
    for args in (("log", "campaign-42"), ("log", "--json"), ("show", populated.ids[0])):
        proc = subprocess.Popen(
            [*command(), "--store", str(populated.store), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(),
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before the command writes anything
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 141 and err == b"", (args, err)


def test_reading_variants_in_process(populated: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, c = populated.ids
    s = str(populated.store)
    code, out, _ = call(capsys, "--store", s, "log", "campaign-42", "--reverse")
    assert code == 0
    ids_in_order = [line.lstrip("* ").split()[0] for line in out.splitlines()[2:]]  # the ID column
    assert ids_in_order == [c[:12], b[:12], a[:12]]
    code, out, _ = call(capsys, "log", "--store", s)  # every session, one block each
    assert code == 0 and "session campaign-42: 3 snapshots" in out and "session side: 1 snapshot," in out
    code, out, _ = call(capsys, "--store", s, "sessions", "--json")
    rows = orjson.loads(out)
    with SnapshotStore.open(populated.store, create=False) as store:
        assert rows[0] == {"name": "campaign-42", "snapshots": 3, "max_snapshots": 10, "head": c,
                           "bytes": store.session_usage("campaign-42")}
        assert rows[1]["bytes"] == store.session_usage("side") > 0
    code, out, _ = call(capsys, "--store", s, "show", b, "--compact")
    assert code == 0 and out.encode() == orjson.dumps(STATES[1], option=orjson.OPT_SORT_KEYS) + b"\n"
    code, out, _ = call(capsys, "--store", s, "show", populated.other, "--pointer", "/x/1")
    assert (code, out) == (0, "2.5\n")
    code, out, _ = call(capsys, "--store", s, "show", populated.other, "--pointer", "")
    assert orjson.loads(out) == {"x": [1, 2.5, None]}
    for pointer, message in [
        ("/x/3", "index 3 is past the end of the 3-item array at /x"),
        ("/x/01", "'01' is not an array index at /x"),
        ("/y", "no member 'y' at /"),
        ("/x/0/z", "/x/0 is a number, not an object or array"),
        ("/x/2/z", "/x/2 is null, not an object or array"),
        ("x", "start with '/'"),
    ]:
        code, _out, err = call(capsys, "--store", s, "show", populated.other, "--pointer", pointer)
        assert code == 1 and message in one_error_line(err), (pointer, err)


def test_diff(populated: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, c = populated.ids
    readable, as_json, parent = run_many(("diff", a, c), ("diff", b, c, "--json"), ("diff", c), store=populated.store)
    assert readable.returncode == as_json.returncode == parent.returncode == 0
    lines = readable.stdout.splitlines()
    assert lines[:2] == [f"--- {a[:12]}  campaign-42  turn 1  'turn 1'", f"+++ {c[:12]}  campaign-42  turn 3  'turn 3'"]
    assert sorted(lines[2:]) == [  # one line per operation, in the library's order
        '+ /log/-: "a goblin"',
        '+ /log/-: "oops"',
        "~ /flags/dead: false → true",
        "~ /party/Zoë/gold: 1 → 6",
        "~ /party/Zoë/hp: 12 → 0",
        "~ /turn_count: 1 → 3",
    ]
    assert lines.index('+ /log/-: "a goblin"') < lines.index('+ /log/-: "oops"')
    assert "\x1b[" not in readable.stdout  # no colors when piped
    patch = orjson.loads(as_json.stdout)
    assert apply_patch(STATES[1], patch) == STATES[2]
    assert parent.stdout.splitlines()[:2] == [f"--- {b[:12]}  campaign-42  turn 2  'turn 2'",
                                              f"+++ {c[:12]}  campaign-42  turn 3  'turn 3'"]
    s = str(populated.store)
    code, out, _ = call(capsys, "--store", s, "diff", c, c)
    assert code == 0 and out.splitlines()[-1] == "(no differences)"
    code, out, _ = call(capsys, "--store", s, "diff", a, populated.other, "--json")  # across sessions
    assert code == 0 and apply_patch(STATES[0], orjson.loads(out)) == {"x": [1, 2.5, None]}
    code, _out, err = call(capsys, "--store", s, "diff", a)
    assert code == 1 and "has no parent" in one_error_line(err)


def test_a_sessions_name_names_its_head(
    populated: Populated, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the last turn changed took ``log`` to find the head's id first (an outside trial)."""
    a, b, c = populated.ids
    s = str(populated.store)
    code, out, _ = call(capsys, "--store", s, "show", "campaign-42", "--json")
    assert code == 0 and orjson.loads(out) == {"id": c, "session": "campaign-42", "pointer": "", "value": STATES[2]}
    code, out, _ = call(capsys, "--store", s, "diff", "campaign-42")  # the head against its parent
    assert code == 0 and out.splitlines()[:2] == [f"--- {b[:12]}  campaign-42  turn 2  'turn 2'",
                                                  f"+++ {c[:12]}  campaign-42  turn 3  'turn 3'"]
    code, out, _ = call(capsys, "--store", s, "diff", a, "campaign-42", "--json")
    assert code == 0 and apply_patch(STATES[0], orjson.loads(out)) == STATES[2]
    assert call(capsys, "--store", s, "show", "campaign-42:/party/Zoë/hp")[1] == "0\n"
    code, out, _ = call(capsys, "--store", s, "restore", "side")
    assert code == 0 and out == '{"x":[1,2.5,null]}\n'
    code, _out, err = call(capsys, "--store", s, "show", "campaign-43")
    assert code == 1 and "a session's head by its name" in one_error_line(err)
    archive = tmp_path / "head.snaparchive"
    code, _out, err = call(
        capsys, "--store", s, "export", str(archive), "--snapshot", "campaign-42", "--session", "side"
    )
    assert code == 1 and one_error_line(err) == (  # in the words given, not the head's id the name stood for
        "snapstore: error: --snapshot campaign-42 names a snapshot of session 'campaign-42', which is not among "
        "the sessions given with --session ('side')"
    )
    assert call(capsys, "--store", s, "export", str(archive), "--snapshot", "campaign-42")[0] == 0
    with SnapshotStore.open(tmp_path / "imported") as imported:
        imported.import_archive(archive)
        assert imported.session("campaign-42").head_state()[1] == STATES[2]

    store = tmp_path / "store"  # a tag of that name comes first: it named a snapshot before heads did
    with SnapshotStore.open(store) as opened:
        first = opened.session("one").commit({"n": 1}).id
        opened.session("one").commit({"n": 2})
        opened.session("one").tag(first, "two")
        opened.session("two").commit({"n": 3})
    code, out, _ = call(capsys, "--store", str(store), "show", "two", "--compact")
    assert code == 0 and out == '{"n":1}\n'
    code, out, _ = call(capsys, "--store", str(store), "show", "one", "--compact")
    assert code == 0 and out == '{"n":2}\n'


def test_diff_of_a_settled_head_shows_what_its_commit_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A settled head is a child of the head with the same state, label and turn (what a LangGraph
    saver leaves at every close): ``diff SESSION`` printed "(no differences)" for it."""
    store = tmp_path / "store"
    rooms = {f"room {i}": {"text": f"a long description of room {i} " * 8, "visits": 0} for i in range(200)}
    with SnapshotStore.open(store, rebuild_budget=50.0) as opened:
        sess = opened.session("s")
        state: dict[str, Any] = {"turn": 0, "rooms": rooms}
        for turn in range(60):
            state["turn"] = turn
            state["rooms"][f"room {turn}"]["visits"] += 1
            last = sess.commit(state, label=f"turn {turn}", turn=turn)
        settled = sess.settle()
        assert settled is not None and settled.parent == last.id
        before = last.parent
        again = sess.commit(state, label="turn 59", turn=59).id  # the same state, label and turn committed again
    assert before is not None
    code, out, _ = call(capsys, "--store", str(store), "diff", "s", "--json")
    assert code == 0 and orjson.loads(out) == []  # "again", a delta: compared with its parent, the settled copy
    code, out, err = call(capsys, "--store", str(store), "diff", settled.id)
    assert err == (
        f"snapstore: note: {settled.id[:12]} is {last.id[:12]} stored again whole, with its state, label and turn, "
        "as settling a head stores it (or as the keyframe policy stores a state committed again unchanged): "
        f"compared with {before[:12]}, the snapshot before\n"
    )
    assert code == 0 and out.splitlines() == [
        f"--- {before[:12]}  s  turn 58  'turn 58'",
        f"+++ {settled.id[:12]}  s  turn 59  'turn 59'",
        '~ /rooms/room 59/visits: 0 → 1',
        "~ /turn: 58 → 59",
    ]
    assert again != settled.id


def run_on_terminal(*args: str, store: Path, stream: str) -> tuple[int, str, str]:
    """Run with ``stream`` ("stdout" or "stderr") on a real pseudo-terminal: (code, terminal text, other stream)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [*command(), "--store", str(store), *args],
            stdout=slave if stream == "stdout" else subprocess.PIPE,
            stderr=slave if stream == "stderr" else subprocess.PIPE,
            env=cli_env(TERM="xterm"), timeout=60,
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    other = proc.stderr if stream == "stdout" else proc.stdout
    return proc.returncode, b"".join(chunks).decode("utf-8"), other.decode("utf-8")


def test_terminal_output(populated: Populated, tmp_path: Path) -> None:
    """Colors in diff and progress on stderr appear only on a terminal (piped runs are checked elsewhere)."""
    a, _b, c = populated.ids
    code, out, err = run_on_terminal("diff", a, c, store=populated.store, stream="stdout")
    assert code == 0, err
    assert "\x1b[31m12\x1b[0m → \x1b[32m0\x1b[0m" in out  # old red, new green
    assert '\x1b[32m+ /log/-: "oops"\x1b[0m' in out
    assert format_diff([{"op": "remove", "path": "/a"}], {"a": 1}, color=True) == ["\x1b[31m- /a: 1\x1b[0m"]
    archive = tmp_path / "tty.snaparchive"
    code, progress, out = run_on_terminal("export", str(archive), store=populated.store, stream="stderr")
    assert code == 0 and out.startswith("exported 2 sessions")
    assert "exporting objects: " in progress and progress.endswith("\r\x1b[K")  # shown, then cleared


def test_bad_ids(populated: Populated) -> None:
    short, unknown, nonhex, rollback = run_many(
        ("show", populated.ids[0][:7]),
        ("diff", "0000000000000000"),
        ("restore", "not-an-id-at-all"),
        ("rollback", "campaign-42", populated.other),  # exists, but in another session
        store=populated.store,
    )
    assert "prefixes need 8+ characters" in one_error_line(short.stderr) and short.returncode == 1
    assert one_error_line(unknown.stderr) == "snapstore: error: snapshot 0000000000000000 not found in the store"
    assert "ids are hex" in one_error_line(nonhex.stderr) and nonhex.returncode == 1
    assert "not found in session 'campaign-42'" in one_error_line(rollback.stderr) and rollback.returncode == 1


def test_ambiguous_prefix_lists_candidates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two snapshots whose ids share their first 8 hex digits, in a real store.

    A snapshot's id hashes its record, which holds the commit's time, so commits
    cannot be steered, and finding two ids that share 32 bits by committing would
    take ~80,000 commits. So the engine's clock is held still, and the first commit
    of one state is tried in sessions of different names: their records differ
    only in that name, and a birthday search over ~80,000 candidate names (hashing
    records, well under a second) finds two whose ids collide on 8 hex digits.
    Those two commits then go through ``Session.commit`` as any other: the CLI runs
    in a subprocess against a store that ``verify`` accepts as sound.
    """
    import snapstore.session as session_module

    monkeypatch.setattr(session_module, "_now", lambda: "2026-01-01T00:00:00.000000Z")
    path, state = tmp_path / "store", {"hp": 1}
    with SnapshotStore.open(path) as store:
        probe = store.session("probe").commit(state, label="twin", turn=0)
        record = store.session("probe")._current().commits[probe.id].record  # the template the search varies
        seen: dict[str, str] = {}
        for n in range(2_000_000):
            name = f"twin {n}"
            sid = dataclasses.replace(record, session=name).snapshot_id()
            if sid[:8] in seen:
                pair = {seen[sid[:8]]: None, name: None}
                break
            seen[sid[:8]] = name
        else:  # pragma: no cover - probability about 1e-200
            pytest.fail("no 32-bit collision in 2,000,000 tries")
        twins = {store.session(name).commit(state, label="twin", turn=0).id: name for name in pair}
    first, second = sorted(twins)
    assert first[:8] == second[:8]
    prefix = first[:8]
    shown, verified, exact = run_many(("show", prefix), ("verify",), ("show", second), store=path)
    assert verified.returncode == 0, verified.stdout
    assert exact.returncode == 0 and orjson.loads(exact.stdout) == state
    assert shown.returncode == 1 and "Traceback" not in shown.stderr
    lines = shown.stderr.splitlines()
    assert lines[0] == f"snapstore: error: snapshot prefix {prefix} is ambiguous in the store; candidates:"
    assert [line.split()[0] for line in lines[1:]] == [first, second]
    assert [line.split()[1] + " " + line.split()[2] for line in lines[1:]] == [twins[first], twins[second]]
    assert all("turn 0  'twin'" in line for line in lines[1:])
    rolled = run("rollback", twins[first], prefix, store=path)  # within one session the prefix is unique
    assert rolled.returncode == 0, rolled.stderr

    # two in one session: children of one snapshot (a commit, a rollback to the parent, a commit), their
    # records taken from a copy of the store and varied by label; rollback lists them as show does
    with SnapshotStore.open(path) as store:
        parent = store.session("pair").commit(state, label="parent").id
    copy = tmp_path / "copy"
    shutil.copytree(path, copy, symlinks=True)
    with SnapshotStore.open(copy) as store:
        sess = store.session("pair")
        templates = [sess._current().commits[sess.commit({"hp": 2}, label="a").id].record]
        sess.rollback(parent)
        templates.append(sess._current().commits[sess.commit({"hp": 2}, label="b").id].record)
    by_prefix: list[dict[str, str]] = [{}, {}]
    for n in range(2_000_000):
        for side, template in enumerate(templates):
            label = f"{'ab'[side]} {n}"
            sid = dataclasses.replace(template, label=label).snapshot_id()
            by_prefix[side][sid[:8]] = label
            if sid[:8] in by_prefix[1 - side]:
                labels = {side: label, 1 - side: by_prefix[1 - side][sid[:8]]}
                break
        else:
            continue
        break
    else:  # pragma: no cover - probability about 1e-200
        pytest.fail("no 32-bit collision in 2,000,000 tries")
    with SnapshotStore.open(path) as store:
        sess = store.session("pair")
        made = [sess.commit({"hp": 2}, label=labels[0]).id]
        sess.rollback(parent)
        made.append(sess.commit({"hp": 2}, label=labels[1]).id)
    assert made[0] != made[1] and made[0][:8] == made[1][:8]
    refused = run("rollback", "pair", made[0][:8], store=path)
    lines = refused.stderr.splitlines()
    assert lines[0] == f"snapstore: error: snapshot prefix {made[0][:8]} is ambiguous in session 'pair'; candidates:"
    assert [line.split()[:4] for line in lines[1:]] == [[sid, "pair", "turn", "-"] for sid in sorted(made)]



# ---------------------------------------------------------------- writing commands


def test_commit_restore_rollback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    (tmp_path / "one.json").write_text('{"hp": 10, "name": "Zoë"}', encoding="utf-8")
    assert run("init", store=store).returncode == 0
    first = run("commit", "s", str(tmp_path / "one.json"), "--label", "one", "--turn", "1", store=store)
    assert first.returncode == 0 and HEX32.match(first.stdout.strip()) and first.stderr == ""
    first_id = first.stdout.strip()
    second = run("commit", "s", "-", store=store, stdin=b'{"hp": 4, "name": "Zo\xc3\xab"}')
    second_id = second.stdout.strip()
    assert HEX32.match(second_id)

    restored, to_file = run_many(("restore", first_id[:10]), ("restore", first_id, "-o", str(tmp_path / "out.json")),
                                 store=store)
    assert restored.stdout == '{"hp":10,"name":"Zoë"}\n'
    assert to_file.returncode == 0 and "out.json" in to_file.stdout
    with SnapshotStore.open(store, create=False) as opened:
        snap = opened.session("s").snapshot(first_id)
    assert object_id((tmp_path / "out.json").read_bytes()) == snap.state_hash  # canonical bytes

    proc = run("rollback", "s", first_id[:8], store=store)
    assert proc.returncode == 0 and f"head is now {first_id[:12]}" in proc.stdout
    s = str(store)
    code, out, _ = call(capsys, "--store", s, "commit", "s", str(tmp_path / "one.json"), "--max-snapshots", "2")
    third_id = out.strip()
    code, out, _ = call(capsys, "--store", s, "log", "s", "--json")
    entries = orjson.loads(out)
    assert [e["id"] for e in entries] == [second_id, third_id]  # limit 2: the oldest left the listing
    assert entries[-1]["parent"] == first_id and entries[-1]["label"] == "auto" and entries[-1]["head"]

    code, _out, err = call(capsys, "--store", s, "rollback", "nobody", first_id)
    assert code == 1 and "session 'nobody' does not exist (sessions: s)" in one_error_line(err)
    code, _out, err = call(capsys, "--store", s, "log", "nobody")
    assert code == 1 and "does not exist" in one_error_line(err)
    with SnapshotStore.open(store, create=False) as opened:
        assert opened.sessions() == ["s"]  # asking about a session never creates it
    code, _out, err = call(capsys, "--store", s, "restore", third_id, "-o", str(tmp_path / "no" / "such" / "dir.json"))
    assert code == 1 and "cannot write" in one_error_line(err)


def test_commit_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    SnapshotStore.open(store).close()
    bad, logged = run_many(("commit", "s", str(tmp_path / "missing.json")), ("log",), store=store)
    assert bad.returncode == 1
    missing = tmp_path / "missing.json"
    assert one_error_line(bad.stderr) == f"snapstore: error: cannot read {missing}: No such file or directory"
    s = str(store)
    cases = [
        (b'{"a": 1,}', "is not valid JSON: trailing comma"),
        (b"", "is not valid JSON"),
        (b'{"a": NaN}', "is not valid JSON: NaN at line 1 column 7: NaN and Infinity are not JSON numbers"),
        (b'[1, -Infinity]', "is not valid JSON: -Infinity at line 1 column 5: NaN and Infinity are not JSON"),
        (b"\xff\xfe{}", "is not valid JSON: it is not UTF-8 text (byte 0xff at offset 0)"),
        (b'{"a": "\xe9"}', "is not valid JSON: it is not UTF-8 text (byte 0xe9 at offset 7)"),
        (b'{"a": 18446744073709551616}', "integer 18446744073709551616 is outside the 64-bit range"),
        (b'{"a": -9223372036854775809}', "outside the 64-bit range"),
    ]
    for data, message in cases:
        path = tmp_path / "bad.json"
        path.write_bytes(data)
        code, _out, err = call(capsys, "--store", s, "commit", "s", str(path))
        assert code == 1 and message in one_error_line(err), (data, err)
    path.write_bytes(b'{"a": 18446744073709551615, "b": -9223372036854775808, "c": "12345678901234567890123"}')
    code, out, _ = call(capsys, "--store", s, "commit", "s", str(path))  # the 64-bit extremes are fine
    assert code == 0
    code, out, _ = call(capsys, "--store", s, "show", out.strip(), "--compact")
    assert out == '{"a":18446744073709551615,"b":-9223372036854775808,"c":"12345678901234567890123"}\n'
    code, _out, err = call(capsys, "--store", s, "commit", "bad/name", str(path))
    assert code == 1 and "invalid session name" in one_error_line(err)
    assert logged.returncode == 0 and logged.stdout == "no sessions\n"  # a refused commit creates nothing


def test_a_label_with_control_characters_stays_on_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    SnapshotStore.open(store).close()
    s = str(store)
    good = tmp_path / "good.json"
    for n, label in enumerate(["plain", "one\ntwo\x1b[31mRED\x9b", "sep\u2028arated\r"]):
        good.write_bytes(b'{"n": %d}' % n)
        assert call(capsys, "--store", s, "commit", "s", str(good), "--label", label)[0] == 0
    for flags in (("--oneline",), ()):
        code, out, _err = call(capsys, "--store", s, "log", "s", *flags)
        assert code == 0 and "\x1b" not in out and "\x9b" not in out and "\u2028" not in out and "\r" not in out
        assert "one\\x0atwo\\x1b[31mRED\\x9b" in out
        if flags:
            assert len(out.splitlines()) == 3
    assert SnapshotStore.open(store).session("s").snapshots()[1].label == "one\ntwo\x1b[31mRED\x9b"  # stored as given


def _committed_by_the_cli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, states: list[dict[str, object]]
) -> tuple[str, list[str]]:
    """A new store at ``tmp_path/store`` and the ids ``snapstore commit s`` gave ``states``, in order."""
    store = tmp_path / "store"
    SnapshotStore.open(store).close()
    path = tmp_path / "state.json"
    ids = []
    for state in states:
        path.write_bytes(orjson.dumps(state))
        ids.append(call(capsys, "--store", str(store), "commit", "s", str(path))[1].strip())
    return str(store), ids


def test_show_and_diff_escape_what_a_terminal_would_act_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import re

    unsafe = "csi \x9b31m, del \x7f, c1 \x80\x9f, separator \u2028, é 😀"
    states = [{"n": n, "text": text} for n, text in enumerate(["plain", unsafe])]
    s, ids = _committed_by_the_cli(capsys, tmp_path, states)
    raw = re.compile("[\x7f-\x9f\u2028\u2029]")
    for argv in (("show", ids[1]), ("show", ids[1], "--compact"), ("diff", *ids), ("diff", *ids, "--json")):
        code, out, _err = call(capsys, "--store", s, *argv)
        assert code == 0 and not raw.search(out), (argv, out)
        assert "\\u009b31m" in out and "é 😀" in out
    code, out, _err = call(capsys, "--store", s, "show", ids[1], "--compact")
    assert orjson.loads(out) == {"n": 1, "text": unsafe}  # the same JSON value, escaped


def test_diff_of_a_long_text_shows_what_changed_in_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One word changed in a 50 kB chronicle printed both texts whole, 100 kB of output (an outside
    trial): the readable diff shows the span that changed, with context and both lengths."""
    chronicle = "The keep on the hill has three towers. " * 1300
    changed = chronicle.replace("hill", "crag\x1b[2J", 1)
    s, ids = _committed_by_the_cli(capsys, tmp_path, [{"chronicle": chronicle}, {"chronicle": changed}])
    code, out, _err = call(capsys, "--store", s, "diff", *ids)
    assert code == 0 and len(out) < 1000, out
    assert '~ /chronicle: "The keep on the [-hill-]{+crag\\u001b[2J+} has three towers.' in out
    assert f"({len(chronicle):,} → {len(changed):,} characters)" in out and "\x1b" not in out
    code, out, _err = call(capsys, "--store", s, "diff", *ids, "--json")
    assert orjson.loads(out) == [{"op": "replace", "path": "/chronicle", "value": changed}]


def test_diff_shows_a_renamed_member_as_moved(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    room = {"desc": "a hall with three doors", "items": [1, 2.0]}
    states = [{"rooms": {"hall": room}, "turn": 1}, {"rooms": {"great\nhall": room}, "turn": 2}]
    s, ids = _committed_by_the_cli(capsys, tmp_path, states)
    code, out, _err = call(capsys, "--store", s, "diff", *ids)
    assert code == 0 and out.splitlines()[-2:] == ["> /rooms/hall → /rooms/great\\x0ahall", "~ /turn: 1 → 2"], out
    code, out, _err = call(capsys, "--store", s, "diff", *ids, "--json")
    assert {"op": "move", "from": "/rooms/hall", "path": "/rooms/great\nhall"} in orjson.loads(out)


def test_state_paths_and_tags_are_printed_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A key is free text: in a diff line, an error naming its JSON Pointer or a tag in log, it keeps
    its line and does not drive the terminal."""
    key = "k\x1b[2Jz\nnext\x9b\u2028"
    states = [{key: n, "removed" if n == 0 else "added": {key: n}} for n in range(2)]
    s, ids = _committed_by_the_cli(capsys, tmp_path, states)
    store, path = Path(s), tmp_path / "state.json"
    shown = "/k\\x1b[2Jz\\x0anext\\x9b\\u2028"
    for argv in (("diff", *ids), ("diff", ids[1])):
        code, out, _err = call(capsys, "--store", s, *argv)
        lines = out.splitlines()
        assert code == 0 and "\x1b" not in out and "\x9b" not in out and "\u2028" not in out, out
        assert len(lines) == 5 and f"~ {shown}: 0 → 1" in lines, lines
        assert '+ /added: {"k\\u001b[2Jz\\nnext\\u009b\\u2028":1}' in lines  # values stay JSON
    assert format_diff([{"op": "remove", "path": "/\n"}], {"\n": 1}, color=False) == ["- /\\x0a: 1"]
    code, _out, err = call(capsys, "--store", s, "show", f"{ids[1]}:/added/k\x1b[2Jz\nnope")
    assert code == 1 and "\x1b" not in err and "/added/k\\x1b[2Jz\\x0anope not found" in one_error_line(err)
    path.write_bytes(b'{"k\\u001b[2Jz\\n": {"a": 1, "a": 2}}')  # refused: the key is in the error's pointer
    code, _out, err = call(capsys, "--store", s, "commit", "s", str(path))
    assert code == 1 and "\x1b" not in err and "at /k\\x1b[2Jz\\x0a: key 'a' appears" in one_error_line(err)
    SnapshotStore.open(store).session("s").tag(ids[1], "t\x9b2J\u2028")
    code, out, _err = call(capsys, "--store", s, "log", "s", "--oneline")
    assert code == 0 and "tag: t\\x9b2J\\u2028" in out and "\x9b" not in out and len(out.splitlines()) == 2


def test_log_warns_when_the_newest_segment_is_damaged(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with SnapshotStore.open(store) as opened:
        sess = opened.session("s")
        ids = [sess.commit({"n": n, "pad": "x" * 200}).id for n in range(6)]
    segment = sorted((store / "sessions").glob("*/*.seg"))[-1]
    data = bytearray(segment.read_bytes())
    data[len(data) * 3 // 4] ^= 0xFF  # a later commit's frame: the ones after it are lost
    segment.write_bytes(bytes(data))
    logged = run("log", "s", "--oneline", store=store)
    assert logged.returncode == 0
    assert "snapstore: warning: session 's' segment 1 is damaged" in logged.stderr
    assert "the head shown may be older than the last commit" in logged.stderr
    assert ids[-1][:12] not in logged.stdout and ids[0][:12] in logged.stdout
    assert run("log", "s", store=tmp_path / "fine").returncode == 1  # no store there: an error, no warning
    with SnapshotStore.open(store) as opened:
        opened.session("s").commit({"n": 99})  # the next write starts a new segment: no warning after it
    assert "warning" not in run("log", "s", store=store).stderr


def test_a_commit_refused_after_parsing_creates_no_session_and_names_its_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    SnapshotStore.open(store).close()
    s = str(store)
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * 300 + b"]" * 300)  # JSON, but deeper than a state may nest
    deeper = tmp_path / "deeper.json"
    deeper.write_bytes(b"[" * 10_000 + b"]" * 10_000)  # deeper than orjson reads: JSON all the same
    good = tmp_path / "good.json"
    good.write_bytes(b'{"a": 1}')
    cases = [
        ((str(deep),), "deep.json: state cannot be stored as JSON: nested too deeply"),
        ((str(deeper),), "deeper.json nests too deeply for a state (a state nests at most 252 levels"),
        ((str(good), "--max-snapshots", "0"), "--max-snapshots must be an integer from 1 to 2^63-1"),
        ((str(good), "--max-snapshots", "-1"), "--max-snapshots must be an integer from 1 to 2^63-1"),
        ((str(good), "--turn", str(2**63)), "--turn must be a 64-bit integer"),
        ((str(good), "--label", "x" * 65536), "a label holds at most 65535"),
    ]
    for argv, message in cases:
        code, _out, err = call(capsys, "--store", s, "commit", "fresh", *argv)
        assert code == 1 and message in one_error_line(err), (argv, err)
    code, out, _err = call(capsys, "--store", s, "sessions")
    assert code == 0 and out == "no sessions (make one with: snapstore commit SESSION FILE.json)\n"
    code, _out, err = call(capsys, "--store", str(tmp_path / "new"), "import", str(tmp_path))
    assert code == 1 and one_error_line(err).endswith("it is a folder; give the path of an archive file")
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- maintenance


def test_a_session_whose_files_cannot_be_read_hides_no_other_from_sessions_gc_and_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file a user may not read (another user's store, a mode-000 segment: what root, running the
    tests, cannot be refused) stopped ``sessions`` and ``gc`` for every session, and ``verify`` at a
    folder it could not list; each now reports that session and goes on with the others."""
    from snapstore.backends._directory import DirectoryBackend
    from snapstore.errors import BackendError

    store = tmp_path / "store"
    with SnapshotStore.open(store) as opened:
        for name in ("bad", "good"):
            opened.session(name, max_snapshots=2).commit({name: 1})
        bad = opened.session("bad").key

    def refused(method: Any) -> Any:
        def call_it(self: DirectoryBackend, key: str, *args: Any, **kwargs: Any) -> Any:
            if key == bad:
                raise BackendError(f"cannot open folder sessions/{bad}: Permission denied", {"path": bad})
            return method(self, key, *args, **kwargs)

        return call_it

    for method in ("segments", "read_segment", "read_first_entry"):
        monkeypatch.setattr(DirectoryBackend, method, refused(getattr(DirectoryBackend, method)))
    code, out, err = call(capsys, "--store", str(store), "sessions")
    assert code == 1 and out.splitlines()[1].startswith("good ")
    assert err == f"snapstore: warning: cannot read session bad: cannot open folder sessions/{bad}: Permission denied\n"
    code, out, err = call(capsys, "--store", str(store), "gc")
    assert code == 1 and out.startswith("deleted ") and "skipped session bad: cannot open folder" in err
    code, out, err = call(capsys, "--store", str(store), "verify")
    assert code == 1 and "checked 2 sessions" in out and "Permission denied [session bad]" in out, out



def damage_largest_file(store: Path) -> Path:
    """Flip one byte in the middle of the store's largest file: a state, whatever the store's layout."""
    path = max((p for p in store.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return path


def test_corrupted_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with SnapshotStore.open(store) as opened:
        sess = opened.session("s")
        big = {"log": [f"line {n}: " + "the goblin king's long speech " * 3 for n in range(60)]}
        snaps = [sess.commit({**big, **state}, turn=n) for n, state in enumerate(STATES)]
    damage_largest_file(store)
    deep, deep_json, show, debug = run_many(
        ("verify",), ("verify", "--json"), ("show", snaps[-1].id[:8]), ("--debug", "show", snaps[-1].id),
        store=store,
    )
    assert deep.returncode == 1 and deep.stderr == ""
    assert re.search(r"^\d+ problems? found:$", deep.stdout, re.M) and "[session s" in deep.stdout
    report = orjson.loads(deep_json.stdout)
    assert deep_json.returncode == 1 and not report["ok"] and report["read_data"] and report["problems"]
    assert show.returncode == 1 and one_error_line(show.stderr)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert debug.stderr.splitlines()[-1].startswith("snapstore.errors.")  # one of the library's own errors


def test_gc_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    with SnapshotStore.open(store) as opened:
        for name in ("keep", "drop"):
            sess = opened.session(name)
            for n, state in enumerate(STATES):
                sess.commit({**state, "who": name}, turn=n)
        opened.delete_session("drop")
    gc, stats, stats_json = run_many(("gc",), ("stats",), ("stats", "--json"), store=store)  # at the same time
    assert gc.returncode == 0 and gc.stderr == ""  # no progress when stderr is piped
    unit = r"unreferenced (objects?|segments?)"  # what the store's layout keeps
    assert re.fullmatch(rf"deleted \d+ {unit} \(.+\), removed \d+ leftover temporary files?\n", gc.stdout)
    before = orjson.loads(stats_json.stdout)
    assert before["sessions"] == 1 and before["snapshots"] == 3 and before["keyframes"] >= 1
    assert before["longest_chain"] <= 2 and before["compression_ratio"] > 0
    assert stats.returncode == 0 and re.search(r"^compression ratio +[0-9.]+x$", stats.stdout, re.M)
    assert re.search(rf"^longest chain +{before['longest_chain']} deltas?$", stats.stdout, re.M)
    assert re.search(rf"^stored +.* \({before['stored_bytes']} bytes\)$", stats.stdout, re.M)
    for label, key in (("on disk \\(apparent\\)", "apparent_bytes"), ("on disk \\(allocated\\)", "allocated_bytes")):
        assert re.search(rf"^{label} +.* \({before[key]} bytes\)$", stats.stdout, re.M), (key, stats.stdout)
    assert re.search(rf"^files +{before['files']}$", stats.stdout, re.M)
    code, out, _ = call(capsys, "--store", str(store), "gc", "--json")
    report = orjson.loads(out)
    assert code == 0 and report["objects_deleted"] == report["bytes_freed"] == report["temporary_files_removed"] == 0


def test_export_import(populated: Populated, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "backup.snaparchive"
    proc = run("export", str(archive), "--session", "campaign-42", store=populated.store)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # progress only on a terminal
    assert archive.is_file() and archive.stat().st_size > 0
    target = tmp_path / "target"
    assert run("init", store=target).returncode == 0
    proc = run("import", str(archive), store=target)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    code, out, _ = call(capsys, "--store", str(target), "log", "--json")
    assert [e["id"] for e in orjson.loads(out)] == populated.ids
    code, out, _ = call(capsys, "--store", str(target), "show", populated.ids[2])
    assert orjson.loads(out) == STATES[2]
    code, _out, err = call(capsys, "--store", str(target), "import", str(tmp_path / "missing.snaparchive"))
    assert code == 1 and "missing.snaparchive" in one_error_line(err)
    code, out, _ = call(capsys, "--store", str(target), "import", str(archive))  # again: nothing new
    assert code == 0 and "campaign-42" in out
    truncated = tmp_path / "truncated.snaparchive"
    truncated.write_bytes(archive.read_bytes()[:-10])
    code, _out, err = call(capsys, "--store", str(target), "import", str(truncated))
    assert code == 1 and one_error_line(err)
    code, out, _ = call(capsys, "--store", str(populated.store), "export", str(tmp_path / "one.snaparchive"),
                        "--snapshot", populated.ids[1][:8])
    assert code == 0 and out.startswith("exported 1 session (campaign-42)"), out
    missing = tmp_path / "missing-session.snaparchive"
    code, _out, err = call(capsys, "--store", str(populated.store), "export", str(missing), "--session", "nosuch")
    assert code == 1 and one_error_line(err).endswith("session 'nosuch' does not exist (sessions: campaign-42, side)")
    assert not missing.exists()


def test_demo(tmp_path: Path) -> None:
    proc = run("demo", str(tmp_path / "tour"))
    assert proc.returncode == 0, proc.stderr
    assert "rolled back to" in proc.stdout and "verify: ok" in proc.stdout
    assert run("verify", "--read-data", store=tmp_path / "tour").returncode == 0


# ---------------------------------------------------------------- progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal() -> None:
    shown = _Terminal()
    with Progress(shown, interval=0) as progress:
        progress(1, 4, "writing objects")
        progress(4, 4, "writing objects")
        progress.status("verifying")
    text = shown.getvalue()
    assert "writing objects: 1/4 (25%)" in text and "writing objects: 4/4 (100%)" in text and "verifying…" in text
    assert text.endswith("\r\x1b[K")  # the line is cleared at the end
    piped = io.StringIO()
    with Progress(piped) as progress:
        progress(1, 4, "writing objects")
        progress.status("verifying")
    assert piped.getvalue() == ""


@pytest.fixture(autouse=True)
def _no_storecli_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SNAPSTORE_PATH", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    yield


def test_export_and_import_refuse_a_dash_for_the_standard_streams(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``commit -`` reads stdin and ``restore -o -`` writes stdout; ``export -`` wrote a file named "-"."""
    store = tmp_path / "store"
    with SnapshotStore.open(store) as opened:
        opened.session("s").commit({"n": 1})
    monkeypatch.chdir(tmp_path)
    code, out, err = call(capsys, "--store", str(store), "export", "-")
    assert code == 1 and out == "" and one_error_line(err) == (
        "snapstore: error: export writes an archive file, not stdout: name the file (./- for a file named -)"
    )
    code, out, err = call(capsys, "--store", str(tmp_path / "other"), "import", "-")
    assert code == 1 and one_error_line(err).startswith("snapstore: error: import reads an archive file, not stdin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # no file "-", no store "other"
    assert call(capsys, "--store", str(store), "export", "./-")[0] == 0  # a file of that name, said so
    code, _out, err = call(capsys, "--store", str(tmp_path / "other"), "import", "-")  # refused beside it too
    assert code == 1 and "not stdin" in one_error_line(err) and not (tmp_path / "other").exists()
    assert call(capsys, "--store", str(tmp_path / "other"), "import", "./-")[0] == 0  # the file, said so
    with SnapshotStore.open(tmp_path / "other", create=False) as imported:
        assert imported.session("s").head_state()[1] == {"n": 1}


def test_export_and_restore_write_only_regular_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import stat

    store = tmp_path / "store"
    with SnapshotStore.open(store) as opened:
        sid = opened.session("s").commit({"n": 1}).id
    s = str(store)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for argv in (("export", str(fifo), "--force"), ("restore", sid, "-o", str(fifo), "--force")):
        code, _out, err = call(capsys, "--store", s, *argv)
        assert code == 1 and "is not a regular file" in one_error_line(err), (argv, err)
        assert stat.S_ISFIFO(fifo.lstat().st_mode)  # still the FIFO: never renamed over
    for argv in (("export", str(tmp_path / "newdir") + "/"), ("restore", sid, "-o", str(tmp_path / "newdir") + "/")):
        code, _out, err = call(capsys, "--store", s, *argv)
        assert code == 1 and "names a folder" in one_error_line(err), (argv, err)
    assert not (tmp_path / "newdir").exists()
    with SnapshotStore.open(store) as opened, pytest.raises(ArchiveError, match="not a regular file"):
        opened.export(fifo)  # the library refuses it too
    mask = os.umask(0o022)
    try:
        restored = tmp_path / "state.json"
        assert call(capsys, "--store", s, "restore", sid, "-o", str(restored))[0] == 0
        assert stat.S_IMODE(restored.stat().st_mode) == 0o644  # as any file the user makes, not 0600
    finally:
        os.umask(mask)


def test_gc_says_what_it_squashed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A segment rewritten without the runs nobody needs frees bytes without dropping a segment: the
    report counts it (the human line credited the bytes to "0 unreferenced segments")."""
    import random

    store = tmp_path / "store"
    rnd = random.Random(0)  # states of random sizes: keyframes now and then, several runs in a segment
    with SnapshotStore.open(store) as opened:
        sess = opened.session("s", max_snapshots=3)
        for n in range(40):
            sess.commit({"n": n, "pad": "".join(rnd.choice("abcdef") for _ in range(rnd.randint(0, 3000)))})
    code, out, _err = call(capsys, "--store", str(store), "gc", "--json")
    report = orjson.loads(out)
    assert code == 0 and report["segments_squashed"] >= 1 and report["bytes_freed"] > 0
    with SnapshotStore.open(store) as opened:
        assert opened.verify().ok and len(opened.session("s").snapshot_ids()) == 3


def test_sessions_says_all_for_a_session_that_keeps_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The LangGraph saver's sessions keep everything (a limit of 2^63 - 1): the table printed that
    number on every one of them."""
    store = tmp_path / "store"
    with SnapshotStore.open(store) as opened:
        opened.session("kept", max_snapshots=2**63 - 1).commit({"n": 1})
        opened.session("limited", max_snapshots=5).commit({"n": 1})
    code, out, _err = call(capsys, "--store", str(store), "sessions")
    rows = {line.split()[0]: line.split()[2] for line in out.splitlines()[1:]}
    assert code == 0 and rows == {"kept": "all", "limited": "5"}
    code, out, _err = call(capsys, "--store", str(store), "sessions", "--json")
    assert {row["name"]: row["max_snapshots"] for row in orjson.loads(out)} == {"kept": 2**63 - 1, "limited": 5}


def test_changing_one_of_a_langgraph_threads_sessions_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/langgraph.md says to thin or move a thread with the saver; the command line changed one of
    its two sessions without a word, and the thread's history then failed to read (a new user's trial)."""
    store = tmp_path / "store"
    with SnapshotStore.open(store) as opened:
        for name in ("langgraph:t:", "langgraph-writes:t:", "campaign"):
            for n in range(3):
                opened.session(name).commit({"n": n})
    archive = tmp_path / "t.snaparchive"
    s = str(store)
    assert call(capsys, "--store", s, "export", str(archive), "--session", "langgraph:t:",
                "--session", "langgraph-writes:t:")[0] == 0
    code, out, err = call(capsys, "--store", s, "forget", "langgraph:t:", "--keep-last", "1", "--yes")
    assert code == 0 and "forgot 2 snapshots" in out
    assert err == (
        "snapstore: warning: langgraph:t: is one of a LangGraph thread's two sessions (langgraph: and "
        "langgraph-writes:); forgetting snapshots of one alone leaves the thread unreadable by SnapstoreSaver, "
        "whose delete_thread, prune and delete_for_runs change both\n"
    )
    code, _out, err = call(capsys, "--store", s, "delete-session", "langgraph-writes:t:", "--yes")
    assert code == 0 and err.startswith("snapstore: warning: langgraph-writes:t: is one of") and "deleting one" in err
    code, _out, err = call(capsys, "--store", s, "forget", "campaign", "--keep-last", "1", "--yes")
    assert code == 0 and err == ""  # another session: nothing to say
    code, _out, err = call(capsys, "--store", s, "import", str(archive), "--on-conflict", "rename")
    assert code == 0
    warnings = err.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("snapstore: warning: langgraph:t: (imported as ")
    assert warnings[0].endswith("import a thread with --on-conflict merge or replace")


def test_an_import_stopped_part_way_says_what_stays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped by Ctrl-C or SIGTERM, an import into a store that was there before (or a PostgreSQL
    database) said only "interrupted": the sessions it had imported stay, and a rerun with
    --on-conflict merge finishes (what it says when the store fails under it; a new user's trial)."""
    archive = _archive_of_one_session(capsys, tmp_path, {"n": 1})
    target = tmp_path / "target"
    SnapshotStore.open(target).close()

    def stopped(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(SnapshotStore, "import_archive", stopped)
    code, out, err = call(capsys, "--store", str(target), "import", str(archive))
    assert code == 130 and out == ""
    lines = err.splitlines()
    assert lines[0] == (
        "snapstore: note: the import writes one session at a time: the sessions it imported before it was "
        "stopped stay in the store, and running the same import again with --on-conflict merge imports the rest"
    )
    assert lines[1] == "snapstore: error: interrupted"


def test_a_missing_session_in_a_store_of_many_names_the_closest_not_all(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A LangGraph store holds two sessions a thread and namespace: naming every one in the error
    made one line of kilobytes (15 KB for 300 in a trial). Past ten, the closest few and the count."""
    target = tmp_path / "store"
    with SnapshotStore.open(target) as store:
        for i in range(40):
            store.session(f"langgraph:t{i}:").commit({"i": i})
    code, _out, err = call(capsys, "--store", str(target), "log", "langgraph:t3")
    line = one_error_line(err)
    assert code == 1 and line.startswith("snapstore: error: session 'langgraph:t3' does not exist (the store has 40")
    assert "the closest: langgraph:t3:," in line and "`snapstore sessions` lists them" in line and len(line) < 300
    code, _out, err = call(capsys, "--store", str(target), "show", "nosuch:tag")
    assert code == 1 and "none close to that name" in one_error_line(err) and len(one_error_line(err)) < 300
    code, _out, err = call(capsys, "--store", str(target), "show", "langgraph:t3x")
    assert code == 1 and "the closest: langgraph:t3:" in one_error_line(err)
    with SnapshotStore.open(target) as store:
        store.session("campaign-42").commit({"hp": 3})
    for asked in (["show", "campain-42"], ["diff", "campain-42"], ["restore", "campain-42"]):
        code, _out, err = call(capsys, "--store", str(target), *asked)
        assert code == 1 and one_error_line(err).endswith("the closest session names: campaign-42"), asked
