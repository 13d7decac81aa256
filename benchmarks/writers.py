"""Writers on one session: do they queue, lose nothing, and keep their throughput?

    python -m benchmarks.writers [--writers 1 2 4 8 16] [--commits 50] [--postgres URL] [--cpu] [--own-states]
                                 [--wait-forever]

For each writer count, that many processes commit to one session of a fresh
store at once, each commit a read-modify-write of the shared game state
(about 50 kB: the writer's own counter and a new log line), or with --own-states a state of the
writer's own that it never reads back from the session (the same change to it each commit), then
the store is checked: every id a
writer got back must be in the history and rebuild to what that writer
committed. Reported per engine and writer count: failures, lost commits,
throughput (commits/s) as a ratio to one writer's, and commit latency (median,
p99). The one writer commits as many times as the most writers do together (800
for 16 x 50), so its rate is measured over as long a history and as long a time.
Then the starvation case: one writer commits a ~2 MB state 10 times while 4
writers with small states commit in a tight loop; it reports how many of the big
writer's commits landed. With --cpu, each row also gives the writers' CPU time per commit and
the cores they kept busy on average (CPU time over the run's wall time): where the time goes.
With --phases, each row also splits a commit's time by where it went, summed over the writers
and divided by the commits: the commit's own work before it takes the session's lock, the phases
it runs holding the lock (reading the records other writers appended, decoding their payloads,
applying their deltas to this writer's cached head, then diffing and appending its own), and the
rest of its latency, waiting for the lock and being handed it. With --wait-forever, the stores are
opened with ``lock_timeout=None``: a directory writer then waits for the session's lock in the
kernel on its own thread, woken once, where with a timeout (the default, 60 s) the lock's waiting
thread waits and then wakes the writer.

The PostgreSQL column runs when --postgres (or SNAPSTORE_BENCH_POSTGRES_URL)
names a server; each run uses its own table prefix. A writer still running two minutes after it
started prints its stacks (and again every two minutes), and a writer count whose results do not
all come within ten minutes stops the run, naming the writers still running: a hang reports itself
instead of waiting for ever.
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
import multiprocessing as mp
import os
import queue
import resource
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from .baselines import import_snapstore
from .timing import wrap_timed

SESSION = "shared"
#: seconds the benchmark waits for a writer's results before it stops the run as hung
WRITER_TIMEOUT = 600.0
#: seconds after which a writer prints its stacks (and again every as many)
WRITER_STACKS_AFTER = 120.0
DEFAULT_WRITERS = [1, 2, 4, 8, 16]


def _open(target: str, prefix: str, wait_forever: bool = False) -> Any:
    """The store; with ``wait_forever``, opened with ``lock_timeout=None`` (a writer waits for the
    session's lock on its own thread, with no timeout, instead of on the lock's waiting thread)."""
    snapstore = import_snapstore()
    settings = {"lock_timeout": None} if wait_forever else {}
    if target.startswith("postgresql://"):
        from snapstore.backends._postgres import PostgresBackend

        return snapstore.SnapshotStore(PostgresBackend(target, table_prefix=prefix), **settings)
    return snapstore.SnapshotStore.open(target, **settings)


def _initial(big: bool) -> dict[str, Any]:
    lore = " ".join(f"entry {i}: the keep on the hill has {i % 7} towers" for i in range(50_000 if big else 1_200))
    return {"rules": {"edition": 5, "homebrew": ["crit-fumbles", "flanking"]}, "lore": lore, "counters": {}, "log": []}


def _next(state: dict[str, Any], writer: int, k: int) -> dict[str, Any]:
    state["counters"][str(writer)] = k
    state["log"] = [*state["log"], f"writer {writer} commit {k}"][-20:]
    return state


#: (owner, function, label, when it counts): the phases --phases times inside a commit, in the order of
#: its table's columns; "held" ones run under the session's lock, "in held" ones only count when called
#: from one (the first three: inside the catch-up, whose own time is the fourth), "before" ones only
#: count when called by the commit before it takes the lock
PHASES = [
    ("codec", "encode_canonical", "serialize, hash (before the lock)", "before"),
    ("SessionLog", "refresh", "read others' records", "in held"),
    ("Session", "_sync_open", "decode others' payloads", "in held"),
    ("Session", "_caught_up_head", "apply others' deltas, hash", "in held"),
    ("Session", "_catch_up", "catch up, the rest", "held"),
    ("Session", "_prepare", "diff, check, compress, record", "held"),
    ("Session", "_append", "append", "held"),
]
LOCK_HELD = [label for _owner, _name, label, when in PHASES if when != "before"]


def _time_phases(spent: dict[str, int]) -> None:
    """Wrap the engine's functions named in PHASES so that calls add their time to ``spent`` (a
    phase called inside another counts for the inner one only)."""
    from snapstore import history, session

    owners = {"codec": session.codec, "Session": session.Session, "SessionLog": history.SessionLog}
    running: list[str] = []
    committing = [False]
    commit = session.Session.commit

    @functools.wraps(commit)
    def marked(*args: Any, **kwargs: Any) -> Any:
        committing[0] = True
        try:
            return commit(*args, **kwargs)
        finally:
            committing[0] = False

    session.Session.commit = marked  # type: ignore[method-assign]
    for owner_name, name, label, when in PHASES:
        wrap_timed(owners[owner_name], name, label, spent, running, functools.partial(_counts, when, committing))


def _counts(when: str, committing: list[bool], running: list[str]) -> bool:
    """Whether a call of a phase that counts ``when`` is timed, given the phases running around it."""
    if not committing[0]:
        return False
    return when == "held" or (when == "before" and not running) or (when == "in held" and bool(running))


def _writer(
    target: str,
    prefix: str,
    writer: int,
    commits: int,
    big: bool,
    start: Any,
    out: Any,
    phases: bool = False,
    own_states: bool = False,
    wait_forever: bool = False,
) -> None:
    spent: dict[str, int] = {}
    if phases:
        _time_phases(spent)
    # a writer still running long after the others would have finished prints where it is, every
    # WRITER_STACKS_AFTER seconds, on the benchmark's stderr: a hang reports itself
    faulthandler.dump_traceback_later(WRITER_STACKS_AFTER, repeat=True)
    store = _open(target, prefix, wait_forever)
    sess = store.session(SESSION, max_snapshots=1_000_000)
    start.wait()
    cpu_before = _cpu_seconds()
    results: list[Any] = [("start", time.time())]
    snapstore = import_snapstore()
    own: dict[str, Any] | None = None
    for k in range(commits):
        # read-modify-write of the shared state, as workers sharing one session do; with
        # own_states, each writer commits a state of its own that it never reads back from the
        # session; the big writer commits its own large state
        if big:
            state = _initial(True)
        elif own_states:
            own = state = own if own is not None else _initial(False)
        else:
            head = sess.head
            state = _initial(False) if head is None else sess.state(head.id)
        state = _next(state, writer, k)
        expected = snapstore.codec.object_id(snapstore.codec.dumps(state))
        began = time.perf_counter()
        try:
            snap = sess.commit(state, label=f"w{writer}-{k}")
            results.append((snap.id, expected, k, time.perf_counter() - began, None, writer))
        except Exception as exc:  # the benchmark counts failures instead of stopping
            results.append((None, expected, k, time.perf_counter() - began, f"{type(exc).__name__}: {exc}", writer))
    results.append(("end", time.time()))
    results.append(("cpu", _cpu_seconds() - cpu_before))
    results.append(("phases", spent))
    out.put(results)
    store.close()
    faulthandler.cancel_dump_traceback_later()


def _cpu_seconds() -> float:
    """CPU time of this process so far (all its threads, user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _verifier(target: str, prefix: str, stop: Any, out: Any) -> None:
    store = _open(target, prefix)
    runs = problems = 0
    while not stop.is_set():
        report = store.verify()
        runs += 1
        problems += len(report.problems)
    out.put((runs, problems))
    store.close()


def _run(
    target: str,
    writers: int,
    commits: int,
    big_writer: bool = False,
    verifying: bool = False,
    phases: bool = False,
    own_states: bool = False,
    wait_forever: bool = False,
) -> dict[str, Any]:
    prefix = f"w{uuid.uuid4().hex[:10]}_"
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(writers), ctx.Queue()
    procs = []
    for w in range(writers):
        big = big_writer and w == 0
        n = 10 if big else commits
        args = (target, prefix, w, n, big, start, out, phases, own_states, wait_forever)
        procs.append(ctx.Process(target=_writer, args=args))
    stop, verified = ctx.Event(), ctx.Queue()
    checker = ctx.Process(target=_verifier, args=(target, prefix, stop, verified)) if verifying else None
    if checker is not None:
        checker.start()
    for p in procs:
        p.start()
    rows = []
    for _ in procs:
        try:
            rows += out.get(timeout=WRITER_TIMEOUT)
        except queue.Empty:
            alive = [p.pid for p in procs if p.is_alive()]
            for p in procs:
                p.terminate()
            raise SystemExit(
                f"{writers} writers: no result from a writer in {WRITER_TIMEOUT:.0f} s (still running: {alive}); "
                "their stacks are above"
            ) from None
    verify_runs = verify_problems = 0
    if checker is not None:
        stop.set()
        verify_runs, verify_problems = verified.get()
        checker.join()
    starts = [row[1] for row in rows if row[0] == "start"]
    ends = [row[1] for row in rows if row[0] == "end"]
    cpu = sum(row[1] for row in rows if row[0] == "cpu")
    spent: dict[str, int] = {}
    for row in rows:
        if row[0] == "phases":
            for label, ns in row[1].items():
                spent[label] = spent.get(label, 0) + ns
    results = [row for row in rows if row[0] not in ("start", "end", "cpu", "phases")]
    elapsed = max(ends) - min(starts)
    for p in procs:
        p.join()
    store = _open(target, prefix)
    sess = store.session(SESSION)
    history = set(sess.snapshot_ids())
    lost = wrong = 0
    for sid, expected, _k, _dt, error, _who in results:
        if error is None:
            if sid not in history:
                lost += 1
            elif sess.snapshot(sid).state_hash != expected:
                wrong += 1
            else:
                sess.state(sid)  # rebuilt and checked against that hash, or raises
    verified = store.verify(read_data=False).ok
    store.close()
    latencies = sorted(r[3] for r in results if r[4] is None)
    landed = [r for r in results if r[4] is None]
    return {
        "writers": writers,
        "commits": len(results),
        "failures": sum(1 for r in results if r[4] is not None),
        "errors": sorted({r[4] for r in results if r[4]})[:3],
        "lost": lost,
        "wrong": wrong,
        "verified": verified,
        "throughput": len(landed) / elapsed,
        "median_ms": statistics.median(latencies) * 1e3 if latencies else None,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3 if latencies else None,
        "big_landed": sum(1 for r in landed if r[5] == 0) if big_writer else None,
        # the writers' CPU per commit (their whole loop: reads, the commit, waiting for the lock)
        # and how many of the machine's cores they kept busy on average
        "cpu_ms": cpu / len(results) * 1e3 if results else None,
        "cores_busy": cpu / elapsed,
        "verify_runs": verify_runs,
        "verify_problems": verify_problems,
        # each phase's time per commit (ms), summed over the writers, and their mean latency
        "phases_ms": {label: ns / len(results) / 1e6 for label, ns in spent.items()} if results else {},
        "mean_ms": statistics.fmean(latencies) * 1e3 if latencies else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, nargs="+", default=DEFAULT_WRITERS)
    parser.add_argument("--commits", type=int, default=50)
    parser.add_argument("--postgres", default=os.environ.get("SNAPSTORE_BENCH_POSTGRES_URL"))
    parser.add_argument(
        "--out", type=Path, default=None,
        help="where the table goes (default results/writers.md; with --phases results/writers-phases.md, "
        "with --verify-only results/writers-verify.md)",
    )
    parser.add_argument(
        "--verify-only", action="store_true",
        help="only compare 4 writers' throughput with and without a verify loop running beside them",
    )
    parser.add_argument(
        "--cpu", action="store_true",
        help="also report the writers' CPU per commit and the cores they kept busy (where a commit's time goes)",
    )
    parser.add_argument(
        "--own-states", action="store_true",
        help="each writer commits a state of its own instead of a read-modify-write of the session's head",
    )
    parser.add_argument(
        "--wait-forever", action="store_true",
        help="open the stores with lock_timeout=None: a writer waits for the session's lock with no timeout, "
        "on its own thread (on the directory store), instead of up to the default 60 s on the lock's waiting thread",
    )
    parser.add_argument(
        "--phases", action="store_true",
        help="also split a commit's time into its work before the lock, its phases holding the lock, and the wait",
    )
    args = parser.parse_args(argv)
    if args.out is None:  # each kind of run keeps its own file: a --phases run does not overwrite the plain one
        kind = "-verify" if args.verify_only else "-phases" if args.phases else ""
        kind += "-own" if args.own_states and not args.verify_only else ""
        kind += "-wait-forever" if args.wait_forever and not args.verify_only else ""
        args.out = Path(__file__).parent / "results" / f"writers{kind}.md"
    if args.verify_only:
        return _verify_alongside(args)
    engines = [("directory", None)] + ([("postgresql", args.postgres)] if args.postgres else [])
    cpu_head = " CPU ms/commit | cores busy |" if args.cpu else ""
    lines = [
        "| engine | writers | commits | failures | lost | wrong | commits/s | vs 1 writer | median ms | p99 ms |"
        + cpu_head,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |" + " --- | --- |" * args.cpu,
    ]
    starvation: list[str] = []
    columns = _phase_columns()
    phase_lines = ["| engine | writers | " + " | ".join(columns) + " |", "| --- | --- |" + " ---: |" * len(columns)]
    for engine, url in engines:
        one = None
        for n in args.writers:
            # one writer commits as many times as the most writers do all together: its rate is
            # the ratios' denominator, and 50 commits (20 ms) measured it to within a factor of 1.5
            commits = args.commits * max(args.writers) if n == 1 else args.commits
            with tempfile.TemporaryDirectory() as tmp:
                target = url or str(Path(tmp) / "store")
                r = _run(
                    target, n, commits, phases=args.phases, own_states=args.own_states, wait_forever=args.wait_forever
                )
            one = one or r["throughput"]
            ratio = r["throughput"] / one
            lines.append(
                f"| {engine} | {n} | {r['commits']} | {r['failures']} | {r['lost']} | {r['wrong']} "
                f"| {r['throughput']:.0f} | {ratio:.2f}x | {r['median_ms']:.1f} | {r['p99_ms']:.1f} |"
                + (f" {r['cpu_ms']:.2f} | {r['cores_busy']:.2f} |" if args.cpu else "")
            )
            print(lines[-1], r["errors"] or "", flush=True)
            if args.phases:
                phase_lines.append(_phase_row(engine, n, r))
                print(phase_lines[-1], flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            target = url or str(Path(tmp) / "store")
            r = _run(target, 5, args.commits * 4, big_writer=True, wait_forever=args.wait_forever)
        starvation.append(
            f"| {engine} | {r['big_landed']} of 10 | {r['failures']} | {r['lost']} | {r['wrong']} | {r['p99_ms']:.1f} |"
        )
        print(starvation[-1], flush=True)
    text = "\n".join(
        [
            "# Writers on one session",
            "",
            f"`python -m benchmarks.writers{_writers_option(args.writers)} --commits {args.commits}"
            f"{' --own-states' if args.own_states else ''}{' --wait-forever' if args.wait_forever else ''}"
            f"{' --cpu' if args.cpu else ''}"
            f"{' --phases' if args.phases else ''}`, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
            f"Python {sys.version.split()[0]}.",
            "",
            *lines,
            "",
            "Starvation: one writer commits a 2 MB state 10 times while 4 writers with small states commit "
            "in a tight loop.",
            "",
            "| engine | big writer's commits landed | failures | lost | wrong | p99 ms |",
            "| --- | --- | --- | --- | --- | --- |",
            *starvation,
            "",
            *(
                [
                    "Where a commit's time goes (--phases): milliseconds per commit, each phase's time summed over "
                    "the writers and divided by the commits; the wait is the mean latency less the phases.",
                    "",
                    *phase_lines,
                    "",
                ]
                if args.phases
                else []
            ),
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


def _writers_option(writers: list[int]) -> str:
    return "" if writers == DEFAULT_WRITERS else " --writers " + " ".join(map(str, writers))


def _phase_columns() -> list[str]:
    return [label for _owner, _name, label, _when in PHASES] + ["lock held, all", "wait for the lock", "mean latency"]


def _phase_row(engine: str, writers: int, r: dict[str, Any]) -> str:
    spent = r["phases_ms"]
    cells = [spent.get(label, 0.0) for _owner, _name, label, _when in PHASES]
    held = sum(spent.get(label, 0.0) for label in LOCK_HELD)
    mean = r["mean_ms"] or 0.0
    wait = mean - held - spent.get(PHASES[0][2], 0.0)
    figures = " | ".join(f"{v:.3f}" for v in [*cells, held, wait, mean])
    return f"| {engine} | {writers} | {figures} |"


def _verify_alongside(args: argparse.Namespace) -> int:
    """4 writers, with and without a process running store.verify() in a loop beside them."""
    engines = [("directory", None)] + ([("postgresql", args.postgres)] if args.postgres else [])
    lines = [
        "| engine | commits/s without verify | with verify | ratio | verify runs | problems reported |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for engine, url in engines:
        figures = []
        for verifying in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                figures.append(_run(url or str(Path(tmp) / "store"), 4, args.commits * 2, verifying=verifying))
        plain, checked = figures
        lines.append(
            f"| {engine} | {plain['throughput']:.0f} | {checked['throughput']:.0f} | "
            f"{checked['throughput'] / plain['throughput']:.2f}x | {checked['verify_runs']} | "
            f"{checked['verify_problems']} |"
        )
        print(lines[-1], flush=True)
    out = args.out
    out.write_text(
        "\n".join(
            [
                "# Writers with verify running beside them",
                "",
                f"`python -m benchmarks.writers --verify-only --commits {args.commits}`, "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores.",
                "",
                *lines,
                "",
            ]
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
