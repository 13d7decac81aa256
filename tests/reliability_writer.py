"""A snapstore writer (or collector, or reader) run as a subprocess by the reliability tests.

The parent test kills it with SIGKILL at random moments, or runs several at
once, and then checks the store. Everything a writer commits is a pure
function of its turn number, its name and its padding (``state_for``), so the
parent can recompute every state without talking to the writer.

Modes::

    commit     commit turns to one session. With --turns N, commit turns 0..N-1 and
               exit; otherwise continue from the session head's turn + 1 until killed
               (or until --stop-file exists). After each commit returns, append
               "<turn> <snapshot id>\\n" to --log, flushed and fsynced, so the parent
               knows which commits were acknowledged. Any error ends the writer with
               exit code 1: writers queue on the session lock, nothing is retried.
    gc         run store.gc() in a loop until killed (or --turns rounds).
    retention  lower and raise the session's limit in a loop (set_max_snapshots
               between --max-snapshots and --max-snapshots + RETENTION_SLACK): each
               lowering evicts and reclaims (drops or squashes segments).
    hold       take the session's write lock, print "ready", and keep it until stdin closes.
    read       read the session in a loop (--turns rounds): listings and states, and with
               --verify a verify(read_data=True) each round. Every state read must be
               state_for(turn, label, pad); exits 3 on a wrong state and 4 when verify
               reports damage.
    zygote     import snapstore once, then fork a fresh process per request, so that a
               kill loop does not pay the interpreter start-up for every run. Reads
               lines from stdin: "run <json argv>" forks a child running main(argv)
               and answers "pid <pid>"; "wait <pid>" reaps it and answers
               "status <raw wait status>". EOF ends the zygote.

--store is a folder or a postgresql:// URL (with --pg-schema naming the schema).
Prints "ready" on stdout (flushed) once the store and session are open (not in
the children of a zygote, whose stdout is the zygote's answer channel).
Needs PYTHONPATH to reach snapstore (the tests pass PYTHONPATH=<repo>/src).
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import orjson

READY = "ready"
WRONG_STATE_EXIT = 3
DAMAGE_EXIT = 4
SCRIPT = os.path.abspath(__file__)
SRC = os.path.join(os.path.dirname(os.path.dirname(SCRIPT)), "src")
#: the retention mode moves the limit between --max-snapshots and this much above it
RETENTION_SLACK = 3
#: characters per padding line (the padding makes states large enough to fill segments)
PAD_LINE = 100


def state_for(turn: int, writer: str = "w", pad: int = 0) -> dict[str, Any]:
    """The state a writer commits at ``turn``: deterministic, growing, mixing every JSON type.

    ``pad`` adds about that many bytes of lines that change every 4 turns, so that
    keyframes (and with them new segments) come often.
    """
    state: dict[str, Any] = {
        "writer": writer,
        "turn": turn,
        "hp": (turn * 37) % 101,
        "gold": turn * 1.25,
        "pos": {"x": turn % 17, "y": (turn * 3) % 11, "alive": turn % 4 != 0},
        "inventory": [f"item-{(turn + i) % 13}" for i in range(turn % 6)],
        "flags": {f"flag{i}": (turn + i) % 3 == 0 for i in range(turn % 5)},
        "transcript": [f"turn {i}: {writer} rolls {(i * 7919) % 20 + 1}" for i in range(turn % 64)],
        "nothing": None if turn % 2 else [],
    }
    if pad:
        group = turn // 4
        state["pad"] = [f"{group:08d}-{i:08d}-".ljust(PAD_LINE, "abcdefghij"[(group + i) % 10]) for i in
                        range(max(pad // (PAD_LINE + 3), 1))]
    return state


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def wait_until(moment: float) -> None:
    """Sleep until ``time.time()`` reaches ``moment``, so that several writers start together."""
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)


def _append_line(fd: int, line: str) -> None:
    os.write(fd, line.encode("utf-8"))
    os.fsync(fd)


def open_store(target: str, *, pg_schema: str | None = None, fsync: bool = False, **settings: Any) -> Any:
    """A store on a folder, or on a PostgreSQL schema when ``target`` is a URL."""
    from snapstore import SnapshotStore

    if target.startswith("postgresql://"):
        from snapstore.backends._postgres import PostgresBackend

        return SnapshotStore(PostgresBackend(target, schema=pg_schema, pool_size=2), **settings)
    return SnapshotStore.open(target, fsync=fsync, **settings)


def _open_store(args: argparse.Namespace) -> Any:
    return open_store(
        args.store,
        pg_schema=args.pg_schema,
        fsync=args.fsync,
        max_chain=args.max_chain,
        max_runs=args.max_runs,
        lock_timeout=args.lock_timeout,
    )


def _session(store: Any, args: argparse.Namespace) -> Any:
    # the limit is set when the session is made; a restarted writer must not lower it
    if store.has_session(args.session):
        return store.session(args.session)
    return store.session(args.session, max_snapshots=args.max_snapshots)


def run_commit(args: argparse.Namespace) -> int:
    store = _open_store(args)
    sess = _session(store, args)
    log_fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    print(READY, flush=True)
    wait_until(args.start_at)
    if args.turns is None:
        head = sess.head
        turn = 0 if head is None or head.turn is None or head.label != args.writer else head.turn + 1
        last = None
    else:
        turn, last = 0, args.turns
    while last is None or turn < last:
        if args.stop_file and os.path.exists(args.stop_file):
            break
        snap = sess.commit(state_for(turn, args.writer, args.pad), label=args.writer, turn=turn)
        _append_line(log_fd, f"{turn} {snap.id}\n")
        turn += 1
    os.close(log_fd)
    store.close()
    return 0


def _rounds(args: argparse.Namespace, step: Any) -> int:
    """Call ``step()`` --turns times (for ever without), pausing --pause seconds between calls."""
    print(READY, flush=True)
    wait_until(args.start_at)
    rounds = 0
    while args.turns is None or rounds < args.turns:
        step()
        rounds += 1
        if args.pause:
            time.sleep(args.pause)
    return 0


def run_gc(args: argparse.Namespace) -> int:
    store = _open_store(args)
    return _rounds(args, lambda: store.gc(grace_seconds=0))


def run_retention(args: argparse.Namespace) -> int:
    store = _open_store(args)
    sess = _session(store, args)

    def lower_and_raise() -> None:
        sess.set_max_snapshots(args.max_snapshots + RETENTION_SLACK)
        sess.set_max_snapshots(args.max_snapshots)

    return _rounds(args, lower_and_raise)


def run_hold(args: argparse.Namespace) -> int:
    from snapstore.store import session_key

    store = _open_store(args)
    _session(store, args)
    with store.backend.lock_session(session_key(args.session), None):
        print(READY, flush=True)
        sys.stdin.read()
    return 0


def run_read(args: argparse.Namespace) -> int:
    from snapstore import SnapshotError

    store = _open_store(args)
    print(READY, flush=True)
    wait_until(args.start_at)
    reads = errors = 0
    for _ in range(args.turns or 100):
        try:
            sess = store.session(args.session)
            for snap in sess.snapshots()[-5:]:
                state = sess.state(snap.id)
                reads += 1
                if canonical(state) != canonical(state_for(snap.turn, snap.label, args.pad)):
                    print(f"WRONG STATE for {snap.id} turn {snap.turn}", file=sys.stderr, flush=True)
                    return WRONG_STATE_EXIT
        except SnapshotError:
            errors += 1  # documented: a snapshot evicted between listing and reading
        if not args.verify:
            continue
        report = store.verify(read_data=True)
        if not report.ok:
            print(f"VERIFY: {report.problems}", file=sys.stderr, flush=True)
            return DAMAGE_EXIT
    print(f"reads {reads} errors {errors}", flush=True)
    return 0


# -- parent side: used by the tests to drive this script -------------------


def child_env() -> dict[str, str]:
    """The environment for a writer subprocess: PYTHONPATH reaches this checkout's snapstore."""
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def writer_command(*args: str) -> list[str]:
    return [sys.executable, SCRIPT, *args]


def read_log(path: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """(turn, snapshot id) of every complete log line; a torn last line is ignored."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    entries: list[tuple[int, str]] = []
    for raw in data.split(b"\n")[:-1]:  # the part after the last newline is a torn (killed) write
        first, _, second = raw.decode("utf-8").partition(" ")
        entries.append((int(first), second))
    return entries


@dataclass
class Outcome:
    """What one writer saw: the (turn, id) of every commit that returned."""

    writer: str
    session: str
    pad: int = 0
    returned: list[tuple[int, str]] = field(default_factory=list)


class WriterProcesses:
    """Writer subprocesses started together; ``join`` checks their exit codes and reads their logs."""

    def __init__(self, workdir: str | os.PathLike[str], store: str, pg_schema: str | None = None) -> None:
        self.workdir, self.store, self.pg_schema = str(workdir), store, pg_schema
        self.start_at = time.time() + 2.0  # every writer starts then (after its interpreter has): all overlap
        self.procs: list[tuple[subprocess.Popen[bytes], Outcome | None, str | None]] = []

    def _args(self, *args: str) -> list[str]:
        found = ["--store", self.store, "--start-at", str(self.start_at), *args]
        return found + (["--pg-schema", self.pg_schema] if self.pg_schema else [])

    def writer(self, session: str, writer: str, turns: int | None, *extra: str, pad: int = 0) -> Outcome:
        log = os.path.join(self.workdir, f"{writer}.log")
        args = ["--log", log, "--session", session, "--writer", writer, "--pad", str(pad), *extra]
        if turns is not None:
            args += ["--turns", str(turns)]
        outcome = Outcome(writer, session, pad)
        self.procs.append((self._popen(self._args(*args)), outcome, log))
        return outcome

    def other(self, *args: str) -> subprocess.Popen[bytes]:
        proc = self._popen(self._args(*args))
        self.procs.append((proc, None, None))
        return proc

    @staticmethod
    def _popen(args: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(writer_command(*args), env=child_env(), stdout=subprocess.DEVNULL)

    def join(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        for proc, outcome, log in self.procs:
            try:
                code = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill_all()
                raise AssertionError(f"a subprocess hung: {proc.args}") from None
            assert code == 0, f"{proc.args} exited with {code}"
            if outcome is not None and log is not None:
                outcome.returned = read_log(log)

    def kill_all(self) -> None:
        for proc, _, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def check_history(store: Any, outcomes: list[Outcome]) -> int:
    """Every returned commit is listed once, in its writer's order, on one linear chain, and rebuilds
    exactly; verify finds nothing. Sessions must keep everything (no eviction). Returns commits checked."""
    report = store.verify(read_data=True)
    assert report.ok, report.problems
    pads = {outcome.writer: outcome.pad for outcome in outcomes}
    checked = 0
    for name in sorted({outcome.session for outcome in outcomes}):
        group = [outcome for outcome in outcomes if outcome.session == name]
        sess = store.session(name)
        snaps = sess.snapshots()
        listed = [snap.id for snap in snaps]
        returned = [sid for outcome in group for _turn, sid in outcome.returned]
        assert len(returned) == len(set(returned)), f"{name}: one id returned twice"
        assert set(returned) <= set(listed), f"{name}: {len(set(returned) - set(listed))} returned commits are lost"
        position = {sid: i for i, sid in enumerate(listed)}
        for outcome in group:  # each writer's commits appear in the order it made them
            order = [position[sid] for _turn, sid in outcome.returned]
            assert order == sorted(order), f"{outcome.writer}: commits out of order"
        for previous, snap in itertools.pairwise(snaps):  # linear: each landed on the head before it
            assert snap.parent == previous.id, f"{name}: {snap.id} does not follow {previous.id}"
        for snap in snaps:
            if snap.label in pads:
                expected = canonical(state_for(snap.turn or 0, snap.label, pads[snap.label]))
                assert canonical(sess.state(snap.id)) == expected, f"{name}: {snap.id} rebuilds wrong"
                checked += 1
        head = sess.head
        assert head is not None and head.id == listed[-1]
    return checked


class Zygote:
    """A pre-imported writer factory (``--mode zygote``): forks writers in milliseconds.

    ``start(args)`` returns the pid of a fresh writer process; the caller kills it
    (``os.kill(pid, SIGKILL)``) and then must ``wait(pid)``, which reaps it.
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            writer_command("--mode", "zygote"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_env(),
            text=True,
            bufsize=1,
        )

    def _ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"writer zygote exited (code {self.proc.poll()})")
        return answer.strip()

    def start(self, args: list[str]) -> int:
        kind, _, pid = self._ask("run " + orjson.dumps(args).decode()).partition(" ")
        assert kind == "pid", f"zygote answered {kind} {pid}"
        return int(pid)

    def wait(self, pid: int) -> int:
        """Reap a child; its raw wait status (``os.WIFSIGNALED`` etc. decode it)."""
        kind, _, status = self._ask(f"wait {pid}").partition(" ")
        assert kind == "status", f"zygote answered {kind} {status}"
        return int(status)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- child side ---------------------------------------------------------------


def run_zygote() -> int:
    import snapstore  # noqa: F401  (the point: children start with it imported)

    for line in sys.stdin:
        command, _, rest = line.strip().partition(" ")
        if command == "run":
            argv = orjson.loads(rest)
            pid = os.fork()
            if pid == 0:  # the child: a writer that never returns into this loop
                code = 1
                try:
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, 1)  # keep the answer channel clean
                    code = main(argv)
                except BaseException:
                    traceback.print_exc()
                finally:
                    sys.stderr.flush()
                    os._exit(code)
            print(f"pid {pid}", flush=True)
        elif command == "wait":
            _pid, status = os.waitpid(int(rest), 0)
            print(f"status {status}", flush=True)
        else:
            print(f"error unknown command {command!r}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", help="store folder or postgresql:// URL (every mode but zygote)")
    parser.add_argument("--pg-schema", default=None, help="the PostgreSQL schema of the store")
    parser.add_argument("--mode", choices=("commit", "gc", "retention", "hold", "read", "zygote"), default="commit")
    parser.add_argument("--log", help="commit mode: file receiving '<turn> <id>' per returned commit")
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--session", default="crash")
    parser.add_argument("--writer", default="w", help="writer name: part of every state and the commit label")
    parser.add_argument("--pad", type=int, default=0, help="bytes of padding in every state (state_for)")
    parser.add_argument("--max-snapshots", type=int, default=100_000)
    parser.add_argument("--max-chain", type=int, default=5000)
    parser.add_argument("--max-runs", type=int, default=4)
    parser.add_argument("--lock-timeout", type=float, default=60.0)
    parser.add_argument("--turns", type=int, default=None)
    parser.add_argument("--verify", action="store_true", help="read mode: verify the store every round")
    parser.add_argument("--stop-file", default=None, help="commit mode: stop once this file exists")
    parser.add_argument("--pause", type=float, default=0.0, help="gc and retention modes: seconds between rounds")
    parser.add_argument("--start-at", type=float, default=0.0, help="wait until this time.time() to start")
    args = parser.parse_args(argv)
    if args.mode == "zygote":
        return run_zygote()
    if not args.store:
        parser.error("--store is required")
    if args.mode == "commit":
        if not args.log:
            parser.error("commit mode needs --log")
        return run_commit(args)
    if args.mode == "gc":
        return run_gc(args)
    if args.mode == "retention":
        return run_retention(args)
    if args.mode == "hold":
        return run_hold(args)
    return run_read(args)


if __name__ == "__main__":
    sys.exit(main())
