"""What the command line does to files and stores: import makes its store, output files are never
overwritten silently, verify reads the data, deleting and shrinking ask first, the demo cleans up,
and ``--help`` loads no command.

Every check runs the real ``snapstore`` command in a subprocess (cli_support.py).
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import orjson

from cli_support import cli_env, command, ok, one_error_line, run, run_many


def make_store(path: Path, name: str = "s", count: int = 3) -> list[str]:
    ok("init", store=path)
    states = [b'{"hp": %d}' % n for n in range(count)]
    return [ok("commit", name, "-", "--turn", str(n), store=path, stdin=s).strip() for n, s in enumerate(states)]


def test_import_creates_the_store(tmp_path: Path) -> None:
    source, archive = tmp_path / "source", tmp_path / "a.snaparchive"
    ids = make_store(source)
    ok("export", str(archive), store=source)
    target = tmp_path / "new" / "store"  # not even its parent exists
    out = ok("import", str(archive), store=target)
    assert out.splitlines()[0] == f"initialized empty snapstore store at {target}"
    assert out.splitlines()[1].startswith(f"imported {archive}: created s;")
    assert [e["id"] for e in orjson.loads(ok("log", "--json", store=target))] == ids
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "created s" in ok("import", str(archive), store=empty)  # an empty folder becomes the store
    assert "imported " + str(archive) + ": s already up to date;" in ok("import", str(archive), store=empty)


def test_an_empty_store_is_refused_not_taken_for_the_default(tmp_path: Path) -> None:
    """``--store ""`` or an empty $SNAPSTORE_PATH (a variable set from an empty one) named no store:
    the default store in the working directory is not what was asked for, and init must not make it."""
    for args, env in ((("--store", "", "init"), cli_env()), (("init",), cli_env(SNAPSTORE_PATH=""))):
        proc = run(*args, cwd=tmp_path, env=env)
        assert proc.returncode != 0 and "empty" in one_error_line(proc.stderr), proc.stderr
        assert not list(tmp_path.iterdir())


def test_a_failed_import_leaves_no_store_behind(tmp_path: Path) -> None:
    source, archive = tmp_path / "source", tmp_path / "bad.snaparchive"
    make_store(source)
    ok("export", str(archive), store=source)
    archive.write_bytes(archive.read_bytes()[:-10])  # truncated
    fresh, empty = tmp_path / "fresh", tmp_path / "empty"
    empty.mkdir()
    missing, truncated, into_empty = run_many(
        ("--store", str(fresh), "import", str(tmp_path / "missing.snaparchive")),
        ("--store", str(fresh), "import", str(archive)),
        ("--store", str(empty), "import", str(archive)),
    )
    assert missing.returncode == 1 and "missing.snaparchive" in one_error_line(missing.stderr)
    assert truncated.returncode == 1 and one_error_line(truncated.stderr)
    assert into_empty.returncode == 1 and list(empty.iterdir()) == []
    assert not fresh.exists()


def test_import_conflict_speaks_cli_flags(tmp_path: Path) -> None:
    store, other, archive = tmp_path / "store", tmp_path / "other", tmp_path / "a.snaparchive"
    make_store(store)
    make_store(other, count=1)
    ok("export", str(archive), store=store)
    proc = run("import", str(archive), store=other)
    assert proc.returncode == 1
    line = one_error_line(proc.stderr)
    assert "--on-conflict merge, replace or rename" in line and "on_conflict=" not in line
    assert "renamed s to s-imported" in ok("import", str(archive), "--on-conflict", "rename", store=other)


def test_import_merge_says_where_the_head_went(tmp_path: Path) -> None:
    """A newer archive merged in moves the head to the archive's, and the output says so."""
    source, target = tmp_path / "source", tmp_path / "target"
    ids = make_store(source)
    ok("export", str(tmp_path / "one.snaparchive"), store=source)
    ok("import", str(tmp_path / "one.snaparchive"), store=target)
    newer = [ok("commit", "s", "-", store=source, stdin=b'{"hp": %d}' % n).strip() for n in (7, 8)]
    ok("export", str(tmp_path / "two.snaparchive"), store=source)
    lines = ok("import", str(tmp_path / "two.snaparchive"), "--on-conflict", "merge", store=target).splitlines()
    assert lines[0].startswith("imported ") and "merged into s; 2 snapshots written, 3 already present" in lines[0]
    assert lines[1].startswith(f"  s: head moved from {ids[-1]} to {newer[-1]}")
    log = orjson.loads(ok("log", "s", "--json", store=target))
    assert [e["id"] for e in log] == ids + newer and log[-1]["head"]
    sessions = orjson.loads(ok("sessions", "--json", store=target))
    assert sessions[0]["max_snapshots"] == 10  # the limit stays


def test_export_and_restore_keep_existing_files(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ids = make_store(store)
    archive, state = tmp_path / "a.snaparchive", tmp_path / "state.json"
    archive.write_bytes(b"precious")
    state.write_bytes(b"precious")
    export, restore = run_many(("export", str(archive)), ("restore", ids[0], "-o", str(state)), store=store)
    for proc in (export, restore):
        assert proc.returncode == 1 and "already exists; add --force to overwrite it" in one_error_line(proc.stderr)
    assert archive.read_bytes() == state.read_bytes() == b"precious"
    ok("export", str(archive), "--force", store=store)
    ok("restore", ids[0], "-o", str(state), "--force", store=store)
    assert state.read_bytes() == b'{"hp":0}' and archive.read_bytes()[:4] != b"prec"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.snaparchive", "state.json", "store"]  # no temporaries
    fresh = tmp_path / "fresh.json"
    ok("restore", ids[1], "-o", str(fresh), store=store)
    assert fresh.read_bytes() == b'{"hp":1}'


def test_verify_reads_the_data_unless_quick(tmp_path: Path) -> None:
    """The default rebuilds every state (as ``store.verify()`` does); ``--quick`` rebuilds none."""
    store = tmp_path / "store"
    make_store(store, count=4)
    default, quick, old_flag = (orjson.loads(p.stdout) for p in run_many(
        ("verify", "--json"), ("verify", "--quick", "--json"), ("verify", "--read-data", "--json"), store=store))
    assert default["ok"] and default["read_data"] and default["states_rebuilt"] == 4
    assert quick["ok"] and not quick["read_data"] and quick["states_rebuilt"] == 0
    assert old_flag == default
    text, quick_text = run_many(("verify",), ("verify", "--quick"), store=store)
    assert text.stdout.splitlines()[0].endswith("; rebuilt 4 states")
    assert "(--quick: structure only; without it all stored data is read and every state rebuilt)" in quick_text.stdout


def test_lowering_the_limit_needs_force(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ids = make_store(store, count=5)
    refused = run("commit", "s", "-", "--max-snapshots", "2", store=store, stdin=b'{"hp": 9}')
    assert refused.returncode == 1
    line = one_error_line(refused.stderr)
    assert "holds 5 snapshots: --max-snapshots 2 with this commit would evict the oldest 4; add --force" in line
    assert [e["id"] for e in orjson.loads(ok("log", "--json", store=store))] == ids  # nothing changed
    forced = run("commit", "s", "-", "--max-snapshots", "2", "--force", store=store, stdin=b'{"hp": 9}')
    assert forced.returncode == 0 and re.fullmatch(r"[0-9a-f]{32}\n", forced.stdout)
    assert forced.stderr == f"s: the session keeps 2; evicted 4 snapshots ({', '.join(i[:12] for i in ids[:4])})\n"
    raised = run("commit", "s", "-", "--max-snapshots", "10", store=store, stdin=b'{"hp": 10}')
    assert raised.returncode == 0 and raised.stderr == ""


def test_the_refusal_counts_what_the_forced_commit_would_evict(tmp_path: Path) -> None:
    """The new commit is one of the snapshots a lowered limit keeps, and a tagged one stays: the
    refusal says as many as --force then evicts (it said one fewer, and counted tagged ones)."""
    store = tmp_path / "store"
    ids = make_store(store, count=6)
    ok("tag", "s", ids[1][:8], "kept", store=store)
    refused = run("commit", "s", "-", "--max-snapshots", "3", store=store, stdin=b'{"hp": 9}')
    assert "holds 6 snapshots: --max-snapshots 3 with this commit would evict the oldest 3;" in one_error_line(
        refused.stderr
    )
    forced = run("commit", "s", "-", "--max-snapshots", "3", "--force", store=store, stdin=b'{"hp": 9}')
    assert forced.returncode == 0
    evicted = ", ".join(i[:12] for i in (ids[0], *ids[2:4]))
    assert forced.stderr == f"s: the session keeps 3; evicted 3 snapshots ({evicted})\n"


def test_a_lower_limit_that_evicts_nothing_needs_no_force(tmp_path: Path) -> None:
    """Every snapshot the lower limit would leave behind is tagged: nothing is evicted, so nothing is
    refused (it said 'would evict the oldest 0; add --force')."""
    store = tmp_path / "store"
    ids = make_store(store, count=3)
    for n, sid in enumerate(ids):
        ok("tag", "s", sid[:8], f"t{n}", store=store)
    landed = run("commit", "s", "-", "--max-snapshots", "2", store=store, stdin=b'{"hp": 9}')
    assert landed.returncode == 0 and landed.stderr == "", landed.stderr
    assert len(orjson.loads(ok("log", "--json", store=store))) == 4


def test_the_command_line_called_in_process_leaves_logging_as_it_was(tmp_path: Path) -> None:
    """The command line quiets the PostgreSQL driver's log lines while it runs, and only then."""
    import logging

    from snapstore.cli import main

    driver = logging.getLogger("psycopg")
    driver.setLevel(logging.INFO)
    try:
        assert main(["--store", "postgresql://nobody@127.0.0.1:1/nowhere", "log"]) == 1  # nothing listens there
        assert driver.level == logging.INFO
    finally:
        driver.setLevel(logging.NOTSET)


def test_delete_session_asks_first(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_store(store, "doomed")
    make_store(store, "kept", count=1)
    refused = run("delete-session", "doomed", store=store)  # no terminal to ask on
    assert refused.returncode == 1 and "add --yes" in one_error_line(refused.stderr)
    unknown = run("delete-session", "nobody", "--yes", store=store)
    assert unknown.returncode == 1 and "session 'nobody' does not exist" in one_error_line(unknown.stderr)
    assert on_terminal(["delete-session", "doomed"], store, answer=b"n\n")[0] == 1
    code, screen = on_terminal(["delete-session", "doomed"], store, answer=b"y\n")
    assert code == 0 and "delete session 'doomed' and its 3 snapshots? [y/N]" in screen
    assert "deleted session doomed (3 snapshots)" in screen and "doomed" not in ok("sessions", store=store)
    assert orjson.loads(ok("delete-session", "kept", "--yes", "--json", store=store)) == {"deleted": "kept",
                                                                                          "snapshots": 1}
    assert ok("sessions", store=store).startswith("no sessions")


def on_terminal(args: list[str], store: Path, answer: bytes) -> tuple[int, str]:
    """Run with stdin, stdout and stderr on a pseudo-terminal, typing ``answer``: (exit code, what it showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*command(), "--store", str(store), *args], stdin=slave, stdout=slave, stderr=slave,
                            env=cli_env(TERM="dumb"))
    os.close(slave)
    os.write(master, answer)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


def test_demo_cleans_up_and_starts_fresh(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = cli_env(TMPDIR=str(scratch))
    proc = subprocess.run([*command(), "demo"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "verify: ok" in proc.stdout, proc.stderr
    assert list(scratch.iterdir()) == []  # the temporary store is gone
    kept = subprocess.run([sys.executable, "-m", "snapstore.demo", "--keep"], capture_output=True, text=True,
                          env=env, timeout=120)
    folder = Path(re.search(r"^kept (\S+):", kept.stdout, re.M).group(1))  # type: ignore[union-attr]
    assert kept.returncode == 0 and folder.is_dir() and folder.parent.parent == scratch
    assert run("verify", store=folder).returncode == 0

    tour = tmp_path / "tour"
    first, second = ok("demo", str(tour)), ok("demo", str(tour))  # a rerun starts from nothing
    assert "4 snapshots checked, 4 states rebuilt against their hashes, 4 retained" in first
    assert first.splitlines()[-1] == second.splitlines()[-1]
    assert len(orjson.loads(ok("log", "--json", store=tour))) == 4
    ok("commit", "mine", "-", store=tour, stdin=b"{}")
    refused = run("demo", str(tour))
    assert refused.returncode == 1 and "holds other sessions (mine)" in refused.stderr
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    refused = run("demo", str(tmp_path / "notes"))
    assert refused.returncode == 1 and (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


PROBE = """
import sys
from snapstore.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
print(" ".join(sorted(name for name in sys.modules if name.startswith(("snapstore", "pydantic")))))
"""


def test_help_loads_no_command() -> None:
    loaded = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=cli_env(),
                            timeout=60).stdout.split()
    commands = {"reading", "writing", "archives", "maintenance", "common", "output", "graph"}
    assert "snapstore.cli.commands" in loaded and not commands & {n.rsplit(".", 1)[-1] for n in loaded}
    assert "snapstore.archive" not in loaded


def test_help_does_not_import_pydantic() -> None:
    """pydantic is for the drop-in manager and models passed to commit: the command line never needs it."""
    loaded = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=cli_env(),
                            timeout=60).stdout.split()
    assert "pydantic" not in loaded


def test_an_import_stopped_by_sigterm_removes_the_session_it_was_creating(tmp_path: Path) -> None:
    """A service manager or ``kill`` stops a command with SIGTERM: an import left the session it
    was writing half there with nothing to say so, where Ctrl-C removes it.
    It is undone as for Ctrl-C, and the import exits 143 with one error line."""
    import signal
    import time

    from snapstore import SnapshotStore

    source = SnapshotStore.open(tmp_path / "source")
    big = source.session("big", max_snapshots=1000)
    state: dict[str, object] = {"log": []}
    for turn in range(400):
        state["log"] = [*state["log"], f"turn {turn}: " + os.urandom(600).hex()][-200:]  # type: ignore[list-item]
        big.commit(state)
    source.export(tmp_path / "big.snaparchive")
    target = SnapshotStore.open(tmp_path / "target")
    target.session("kept").commit({"kept": True})
    key_folder = tmp_path / "target" / "sessions" / big.key
    proc = subprocess.Popen(
        [*command(), "--store", str(tmp_path / "target"), "import", str(tmp_path / "big.snaparchive")],
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not (key_folder.is_dir() and any(p.name.startswith("0") for p in key_folder.iterdir())):
        assert proc.poll() is None, "the import ended before it was stopped"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.decode().strip().splitlines() == [
        "snapstore: note: the import writes one session at a time: the sessions it imported before it was "
        "stopped stay in the store, and running the same import again with --on-conflict merge imports the rest",
        "snapstore: error: terminated",
    ]
    reopened = SnapshotStore.open(tmp_path / "target")
    assert reopened.sessions() == ["kept"]
    assert reopened.verify().ok


def test_a_sigterm_while_the_command_is_being_loaded_stops_it(tmp_path: Path) -> None:
    """A signal that landed while the command's modules were imported (compiled, without cached
    bytecode) was lost, "Exception ignored in ...", and the import went on to the end, exit 0, in
    about one try in seven. Each try here signals at another moment of that first half second: the
    command stops, or the process ends before it took the signal over; nothing is imported either way."""
    import signal
    import time

    from snapstore import SnapshotStore

    source = SnapshotStore.open(tmp_path / "source")
    for name in ("a", "b", "c"):
        sess, state = source.session(name, max_snapshots=1000), {"log": [""]}
        for turn in range(300):
            state["log"] = [*state["log"], f"turn {turn}: " + os.urandom(300).hex()][-100:]
            sess.commit(state)
    source.export(tmp_path / "big.snaparchive")
    env = {**cli_env(), "PYTHONDONTWRITEBYTECODE": "1"}  # every try compiles the modules: the widest window
    outcomes = []
    for attempt in range(16):
        target = tmp_path / f"target-{attempt}"
        proc = subprocess.Popen(
            [*command(), "--store", str(target), "import", str(tmp_path / "big.snaparchive")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        time.sleep(0.01 + 0.02 * attempt)
        if proc.poll() is not None:  # a fast machine: the import was over; that try says nothing
            proc.communicate()
            continue
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
        outcomes.append(proc.returncode)
        assert proc.returncode in (143, -signal.SIGTERM), (attempt, proc.returncode, err.decode())
        if proc.returncode == 143:
            assert err.decode().strip() == "snapstore: error: terminated", err.decode()
        assert not target.exists() or SnapshotStore.open(target).sessions() == []
    assert 143 in outcomes and len(outcomes) >= 6


def test_an_application_calling_main_keeps_its_own_sigterm_handler(tmp_path: Path) -> None:
    """Only the process's entry point (``console``) takes SIGTERM over: ``main`` called by an
    application left the application's handler replaced while it ran (found by a review)."""
    import io
    import signal

    from snapstore.cli import main

    received: list[int] = []

    class SignalledWhileRead(io.BytesIO):  # the state arrives on stdin; SIGTERM lands while it is read
        def read(self, size: int | None = -1) -> bytes:
            os.kill(os.getpid(), signal.SIGTERM)
            return super().read(size)

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    stdin = sys.stdin
    try:
        assert main(["--store", str(tmp_path / "store"), "init"]) == 0
        sys.stdin = io.TextIOWrapper(SignalledWhileRead(b'{"turn": 1}'))
        assert main(["--store", str(tmp_path / "store"), "commit", "s", "-"]) == 0
        assert received == [signal.SIGTERM]  # the application's handler had it, not the command's
    finally:
        sys.stdin = stdin
        signal.signal(signal.SIGTERM, previous)
