"""A snapstore writer (or collector) run as a subprocess by the reliability tests.

The parent test kills it with SIGKILL at random moments, or runs several at
once, and then checks the store. Everything a writer commits is a pure
function of its turn number (``state_for``), so the parent can recompute
every state without talking to the writer.

Modes::

    commit  commit turns to one session. With --turns N, commit turns 0..N-1 and
            exit; otherwise continue from the session head's turn + 1 until killed.
            After each commit returns, append "<turn> <snapshot id>\\n" to --log,
            flushed and fsynced, so the parent knows which commits returned.
    gc      run store.gc() in a loop until killed (or --turns rounds).
    read    read the session in a loop (--turns rounds); every state read must be
            state_for(record.turn, record.label); exits 3 on a wrong state.
    zygote  import snapstore once, then fork a fresh writer per request, so that a
            kill loop does not pay the interpreter start-up for every run. Reads
            lines from stdin: "run <json argv>" forks a child running main(argv)
            and answers "pid <pid>"; "wait <pid>" reaps it and answers
            "status <raw wait status>". EOF ends the zygote.

Prints "ready" on stdout (flushed) once the store and session are open (not in
the children of a zygote, whose stdout is the zygote's answer channel).
Needs PYTHONPATH to reach snapstore (the tests pass PYTHONPATH=<repo>/src).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from typing import Any

import orjson

READY = "ready"
WRONG_STATE_EXIT = 3
SCRIPT = os.path.abspath(__file__)
SRC = os.path.join(os.path.dirname(os.path.dirname(SCRIPT)), "src")


def state_for(turn: int, writer: str = "w") -> dict[str, Any]:
    """The state a writer commits at ``turn``: deterministic, growing, mixing every JSON type."""
    return {
        "writer": writer,
        "turn": turn,
        "hp": (turn * 37) % 101,
        "gold": turn * 1.25,
        "pos": {"x": turn % 17, "y": (turn * 3) % 11, "alive": turn % 4 != 0},
        "inventory": [f"item-{(turn + i) % 13}" for i in range(turn % 6)],
        "flags": {f"flag{i}": (turn + i) % 3 == 0 for i in range(turn % 5)},
        "transcript": [f"turn {i}: {writer} rolls {(i * 7919) % 20 + 1}" for i in range(turn)],
        "nothing": None if turn % 2 else [],
    }


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


def _open_store(args: argparse.Namespace) -> Any:
    from snapstore import SnapshotStore

    return SnapshotStore.open(
        args.store, fsync=args.fsync, max_chain=args.max_chain, max_chain_factor=args.max_chain_factor
    )


def run_commit(args: argparse.Namespace) -> int:
    from snapstore import ConcurrentUpdateError

    store = _open_store(args)
    sess = store.session(args.session, max_snapshots=args.max_snapshots)
    log_fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    print(READY, flush=True)
    wait_until(args.start_at)
    if args.turns is None:
        head = sess.head
        turn = 0 if head is None or head.turn is None else head.turn + 1
        last = None
    else:
        turn, last = 0, args.turns
    while last is None or turn < last:
        try:
            snap = sess.commit(state_for(turn, args.writer), label=args.writer, turn=turn)
        except ConcurrentUpdateError:
            _append_line(log_fd, f"conflict {turn}\n")
            continue  # the documented outcome of a lost race: nothing was committed, try again
        _append_line(log_fd, f"{turn} {snap.id}\n")
        turn += 1
    os.close(log_fd)
    return 0


def run_gc(args: argparse.Namespace) -> int:
    store = _open_store(args)
    print(READY, flush=True)
    wait_until(args.start_at)
    rounds = 0
    while args.turns is None or rounds < args.turns:
        store.gc()
        rounds += 1
        if args.pause:
            time.sleep(args.pause)
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
            for sid in sess.snapshot_ids()[-5:]:
                record = store.objects.record(sid)
                state = sess.state(sid)
                reads += 1
                if canonical(state) != canonical(state_for(record.turn, record.label)):
                    print(f"WRONG STATE for {sid} turn {record.turn}", file=sys.stderr, flush=True)
                    return WRONG_STATE_EXIT
        except SnapshotError:
            errors += 1  # documented: e.g. a snapshot evicted between listing and reading
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


def read_log(path: str | os.PathLike[str]) -> tuple[list[tuple[int, str]], int]:
    """((turn, snapshot id) of every complete log line, number of conflict lines); a torn last line is ignored."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], 0
    entries: list[tuple[int, str]] = []
    conflicts = 0
    for raw in data.split(b"\n")[:-1]:  # the part after the last newline is a torn (killed) write
        first, _, second = raw.decode("utf-8").partition(" ")
        if first == "conflict":
            conflicts += 1
        else:
            entries.append((int(first), second))
    return entries, conflicts


class Zygote:
    """A pre-imported writer factory (``--mode zygote``): forks writers in milliseconds.

    ``start(args)`` returns the pid of a fresh writer process; the caller kills it
    (``os.kill(pid, SIGKILL)``) and then must ``wait(pid)``, which reaps it.
    """

    def __init__(self) -> None:
        import subprocess

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
    parser.add_argument("--store", help="store directory (every mode but zygote)")
    parser.add_argument("--mode", choices=("commit", "gc", "read", "zygote"), default="commit")
    parser.add_argument("--log", help="commit mode: file receiving '<turn> <id>' per returned commit")
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--session", default="crash")
    parser.add_argument("--writer", default="w", help="writer name: part of every state and the commit label")
    parser.add_argument("--max-snapshots", type=int, default=100_000)
    parser.add_argument("--max-chain", type=int, default=50)
    parser.add_argument("--max-chain-factor", type=float, default=2.0)
    parser.add_argument("--turns", type=int, default=None)
    parser.add_argument("--pause", type=float, default=0.0, help="gc mode: seconds between rounds")
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
    return run_read(args)


if __name__ == "__main__":
    sys.exit(main())
