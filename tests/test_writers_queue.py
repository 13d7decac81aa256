"""Writers queue instead of racing: many processes on one session lose nothing and fail nothing.

A commit takes the session's write lock (an OS file lock on a directory store,
a transaction-scoped advisory lock on PostgreSQL), catches up with what other
writers appended, appends, and lets go. So every commit of N writer processes
returns, lands on the head before it (one linear chain) and rebuilds exactly;
a writer with a large state is not starved by writers with small ones; and a
writer that cannot get the lock in ``lock_timeout`` seconds gets
``LockTimeoutError`` naming the session and the time it waited, having written
nothing. The same on the directory store and on PostgreSQL. Throughput and
latency are the benchmark's business (benchmarks/): nothing here measures time.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest_reliability import StoreTarget, backend_contents, count
from reliability_writer import (
    READY,
    Outcome,
    WriterProcesses,
    check_history,
    child_env,
    state_for,
    writer_command,
)
from snapstore import LockTimeoutError
from snapstore.store import session_key

BIG = 100_000  # max_snapshots: nothing is evicted
WRITERS = 8
COMMITS = 25
#: the large writer's state (about 2 MB of JSON) and its commits; the small writers never stop before it does
LARGE_STATE = 2_000_000
LARGE_COMMITS = 10
SMALL_WRITERS = 4


def _create(target: StoreTarget, name: str) -> None:
    with target.open() as store:
        store.session(name, max_snapshots=BIG)


def test_eight_writer_processes_on_one_session_lose_nothing(target: StoreTarget, processes: WriterProcesses) -> None:
    """8 processes x 25 commits to one session: every commit returns (a writer exits 1 on any error),
    every returned id is in the history once, on one chain, and rebuilds exactly."""
    _create(target, "shared")
    outcomes = [processes.writer("shared", f"p{i}", COMMITS) for i in range(WRITERS)]
    processes.join()
    with target.open() as store:
        checked = check_history(store, outcomes)
        assert len(store.session("shared")) == WRITERS * COMMITS
    assert checked == WRITERS * COMMITS
    assert all(len(outcome.returned) == COMMITS for outcome in outcomes)
    count("concurrency: writers (processes + threads)", WRITERS)
    count("concurrency: commits checked", checked)


def test_a_large_state_writer_is_not_starved(tmp_path: Path, target: StoreTarget, processes: WriterProcesses) -> None:
    """A writer committing a ~2 MB state 10 times while 4 writers with small states commit to the same
    session in a tight loop lands all 10 of its commits (they run until it has finished)."""
    _create(target, "shared")
    stop = tmp_path / "stop"
    small = [processes.writer("shared", f"small{i}", None, "--stop-file", str(stop)) for i in range(SMALL_WRITERS)]
    large = processes.writer("shared", "large", LARGE_COMMITS, pad=LARGE_STATE)
    large_proc = processes.procs[-1][0]
    try:
        code = large_proc.wait(timeout=240)
    finally:
        stop.touch()  # the small writers stop once the large one is done (or has failed)
    assert code == 0, "the large-state writer failed (a LockTimeoutError means it was starved)"
    processes.join()
    assert len(large.returned) == LARGE_COMMITS
    assert all(outcome.returned for outcome in small), "a small writer never committed: they did not compete"
    with target.open() as store:
        count("concurrency: commits checked", check_history(store, [large, *small]))
    count("concurrency: writers (processes + threads)", SMALL_WRITERS + 1)


def _holder(target: StoreTarget, name: str) -> subprocess.Popen[str]:
    """A process that holds the session's write lock until its stdin closes."""
    args = ["--mode", "hold", "--store", target.location, "--session", name, "--max-snapshots", str(BIG)]
    if target.schema:
        args += ["--pg-schema", target.schema]
    proc = subprocess.Popen(
        writer_command(*args), env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == READY, "the lock holder did not start"
    return proc


def test_lock_timeout_names_the_session_and_writes_nothing(target: StoreTarget) -> None:
    name = "held session"
    with target.open() as store:
        store.session(name, max_snapshots=BIG).commit(state_for(0), turn=0)
    holder = _holder(target, name)
    try:
        with target.open(lock_timeout=0.2) as store:
            sess = store.session(name)
            before = backend_contents(store)
            head = sess.head
            attempts = (
                lambda: sess.commit(state_for(1), turn=1),
                lambda: sess.set_max_snapshots(3),
                lambda: sess.tag(head.id, "kept"),  # type: ignore[union-attr]
                lambda: sess.forget(1),
                lambda: store.delete_session(name),
            )
            for attempt in attempts:
                with pytest.raises(LockTimeoutError) as err:
                    attempt()
                details = err.value.details
                assert details["session_key"] == session_key(name) and details["session"] == name
                assert f"session {name!r} stayed locked" in str(err.value)  # its name, not its key
                assert "retry, or open the store with a longer lock_timeout" in str(err.value)  # what to do
                waited = details["waited_seconds"]
                assert isinstance(waited, float) and waited > 0 and f"{waited:.3f}" in str(err.value)
                count("concurrency: lock timeouts seen")
            assert backend_contents(store) == before, "a commit that timed out wrote something"
            assert sess.head == head
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    with target.open(lock_timeout=0.2) as store:  # the lock is free again: the same commit goes through
        snap = store.session(name).commit(state_for(1), turn=1)
        assert store.session(name).head == snap


def test_threads_of_one_process_queue_too(target: StoreTarget) -> None:
    """4 threads, two of them sharing one Session object, on one session: nothing lost, one chain."""
    _create(target, "shared")
    stores = [target.open() for _ in range(3)]
    outcomes = [Outcome(f"t{i}", "shared") for i in range(4)]
    handles = [stores[0].session("shared"), stores[0].session("shared"), stores[1].session("shared"),
               stores[2].session("shared")]
    errors: list[BaseException] = []

    def run(sess: Any, outcome: Outcome) -> None:
        try:
            for turn in range(COMMITS):
                snap = sess.commit(state_for(turn, outcome.writer), label=outcome.writer, turn=turn)
                outcome.returned.append((turn, snap.id))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=pair) for pair in zip(handles, outcomes, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    assert not any(thread.is_alive() for thread in threads), "a writer thread hung"
    assert not errors, errors
    try:
        count("concurrency: commits checked", check_history(stores[0], outcomes))
    finally:
        for store in stores:
            store.close()
    count("concurrency: writers (processes + threads)", len(outcomes))


def test_gc_goes_on_past_a_session_another_writer_keeps_locked(target: StoreTarget) -> None:
    """gc takes each session's lock in turn: one a writer holds past the lock timeout is skipped and
    reported, not the end of the whole collection (it raised LockTimeoutError, and the sessions
    after it were not collected)."""
    with target.open() as store:
        for name in ("a busy one", "b idle", "c idle"):
            store.session(name, max_snapshots=BIG).commit(state_for(0), turn=0)
    holder = _holder(target, "a busy one")
    try:
        with target.open(lock_timeout=0.2) as store:
            report = store.gc()
            assert report.sessions_busy == ["a busy one"]
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    with target.open(lock_timeout=0.2) as store:
        assert store.gc().sessions_busy == []
