"""Concurrency (issue #7): writers, readers and gc at once lose nothing and show nothing half-done.

The guarantee checked (design.md, "Concurrency"; session.py ``COMMIT_ATTEMPTS``):

* refs change only by compare-and-swap, so of two commits racing on one session
  one wins and the other sees the ref moved: it reloads the new head, recomputes
  its delta against it and tries again, up to ``COMMIT_ATTEMPTS`` (20) times, and
  only then raises ``ConcurrentUpdateError`` having committed nothing. So every
  ``commit`` either returns a snapshot that is then listed and rebuilds exactly,
  or raises ``ConcurrentUpdateError`` and changes nothing. History stays linear:
  each listed snapshot's parent is the one listed before it.
* objects and refs are written to a temporary file and linked/renamed into
  place, so a reader sees a whole object or ref, or none: every read returns the
  exact committed state or raises a documented ``SnapshotError``.
* writers hold the ``gc`` lock shared from their first object write to their ref
  swap and gc takes it exclusively, so gc running alongside deletes nothing a
  commit is about to reference.

Writers are subprocesses (tests/reliability_writer.py) and threads, on the
directory backend; the memory backend is exercised with threads.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest_reliability import canonical, count, read_ref_file
from reliability_writer import WRONG_STATE_EXIT, child_env, read_log, state_for, wait_until, writer_command
from snapstore import ConcurrentUpdateError, SnapshotError, SnapshotStore
from snapstore.backends import Backend, DirectoryBackend, MemoryBackend
from snapstore.codec import decode_object
from snapstore.session import COMMIT_ATTEMPTS

BIG = 100_000  # max_snapshots: nothing is evicted


@dataclass
class Outcome:
    """What one writer saw: returned (turn, id) pairs and how many commits it had to redo."""

    writer: str
    session: str
    returned: list[tuple[int, str]] = field(default_factory=list)
    conflicts: int = 0


def thread_writer(make_session: Callable[[], Any], outcome: Outcome, turns: int, start_at: float = 0.0) -> None:
    sess = make_session()
    wait_until(start_at)
    rng = random.Random(outcome.writer)
    turn = 0
    while turn < turns:
        time.sleep(rng.uniform(0, 0.003))  # spread the fast thread writers over the slower processes
        try:
            snap = sess.commit(state_for(turn, outcome.writer), label=outcome.writer, turn=turn)
        except ConcurrentUpdateError:
            outcome.conflicts += 1  # nothing was committed: commit the same turn again
            continue
        outcome.returned.append((turn, snap.id))
        turn += 1


class Threads:
    """Start functions in threads; ``join`` re-raises the first failure."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, target: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:
                self.errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "a thread hung"
        if self.errors:
            raise self.errors[0]


class Processes:
    """Writer subprocesses (reliability_writer.py); ``join`` checks their exit codes."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.start_at = time.time() + 2.0  # every writer (process or thread) starts then: all overlap
        self.procs: list[tuple[subprocess.Popen[bytes], Outcome | None, Path | None]] = []

    def writer(self, root: Path, session: str, writer: str, turns: int, *extra: str) -> Outcome:
        log = self.tmp_path / f"{writer}.log"
        args = ["--store", str(root), "--log", str(log), "--session", session, "--writer", writer]
        args += ["--turns", str(turns), "--max-snapshots", str(BIG), "--start-at", str(self.start_at), *extra]
        outcome = Outcome(writer, session)
        proc = subprocess.Popen(writer_command(*args), env=child_env(), stdout=subprocess.DEVNULL)
        self.procs.append((proc, outcome, log))
        return outcome

    def other(self, *args: str) -> subprocess.Popen[bytes]:
        args = (*args, "--start-at", str(self.start_at))
        proc = subprocess.Popen(writer_command(*args), env=child_env(), stdout=subprocess.DEVNULL)
        self.procs.append((proc, None, None))
        return proc

    def join(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        for proc, outcome, log in self.procs:
            try:
                code = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(f"a subprocess hung: {proc.args}") from None
            assert code == 0, f"{proc.args} exited with {code}"
            if outcome is not None and log is not None:
                outcome.returned, outcome.conflicts = read_log(log)

    def kill_all(self) -> None:
        for proc, _, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.kill_all()


def check_outcomes(store: SnapshotStore, outcomes: list[Outcome]) -> None:
    """Every returned commit is listed once, in each writer's order, on a linear history, and rebuilds."""
    report = store.verify(read_data=True)
    assert report.ok, report.problems
    by_session: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_session.setdefault(outcome.session, []).append(outcome)
        count("concurrency: writers (processes + threads)")
        count("concurrency: lost CAS races retried into ConcurrentUpdateError", outcome.conflicts)
    for name, group in by_session.items():
        sess = store.session(name)
        listed = sess.snapshot_ids()
        returned = [sid for outcome in group for _turn, sid in outcome.returned]
        assert len(returned) == len(set(returned)), f"{name}: one id returned twice"
        assert sorted(listed) == sorted(returned), f"{name}: listed {len(listed)}, returned {len(returned)}"
        position = {sid: i for i, sid in enumerate(listed)}
        for outcome in group:  # each writer's commits appear in the order it made them
            order = [position[sid] for _turn, sid in outcome.returned]
            assert order == sorted(order), f"{outcome.writer}: commits out of order"
        records = [store.objects.record(sid) for sid in listed]
        assert records[0].parent is None
        for previous, record in zip(listed, records[1:], strict=False):  # linear: each landed on the head before it
            assert record.parent == previous
        for sid, record in zip(listed, records, strict=True):
            assert canonical(sess.state(sid)) == canonical(state_for(record.turn, record.label)), sid
            count("concurrency: commits checked")
        head = sess.head
        assert head is not None and head.id == listed[-1]


# -- writers -------------------------------------------------------------------------------


def test_processes_and_threads_commit_to_one_store(tmp_path: Path, processes: Processes) -> None:
    """3 processes and 4 threads: 5 writers on one session (two threads sharing one Session object),
    2 on sessions of their own; all at once on a directory store."""
    root = tmp_path / "store"
    SnapshotStore.open(root).session("shared", max_snapshots=BIG)
    outcomes = [
        processes.writer(root, "shared", "p0", 30),
        processes.writer(root, "shared", "p1", 30),
        processes.writer(root, "solo-p2", "p2", 30),
    ]
    shared_handle = SnapshotStore.open(root)  # one store, one Session object, two threads
    threads = Threads()
    for writer, session, make in (
        ("t0", "shared", lambda: shared_handle.session("shared")),
        ("t1", "shared", lambda: shared_handle.session("shared")),
        ("t2", "shared", lambda: SnapshotStore.open(root).session("shared")),
        ("t3", "solo-t3", lambda: SnapshotStore.open(root).session("solo-t3", max_snapshots=BIG)),
    ):
        outcome = Outcome(writer, session)
        outcomes.append(outcome)
        threads.start(thread_writer, make, outcome, 60, processes.start_at)
    threads.join()
    processes.join()
    check_outcomes(SnapshotStore.open(root), outcomes)


def test_memory_backend_threads(tmp_path: Path) -> None:
    """Threads on one MemoryBackend: shared Session objects, separate handles, separate sessions, gc."""
    backend = MemoryBackend()
    SnapshotStore(backend).session("shared", max_snapshots=BIG)
    shared_handle = SnapshotStore(backend)
    outcomes = []
    threads = Threads()
    for writer, session, make in (
        ("m0", "shared", lambda: shared_handle.session("shared")),
        ("m1", "shared", lambda: shared_handle.session("shared")),
        ("m2", "shared", lambda: SnapshotStore(backend).session("shared")),
        ("m3", "shared", lambda: SnapshotStore(backend, max_chain=2).session("shared")),
        ("m4", "solo-m4", lambda: SnapshotStore(backend).session("solo-m4", max_snapshots=BIG)),
    ):
        outcome = Outcome(writer, session)
        outcomes.append(outcome)
        threads.start(thread_writer, make, outcome, 60)
    stop = threading.Event()
    threads.start(_gc_loop, lambda: SnapshotStore(backend), stop)
    for writer in (t for t in threads.threads[:-1]):
        writer.join(240)
    stop.set()
    threads.join()
    check_outcomes(SnapshotStore(backend), outcomes)


def _gc_loop(make_store: Callable[[], SnapshotStore], stop: threading.Event) -> None:
    store = make_store()
    while not stop.is_set():
        store.gc()
        count("concurrency: gc runs during commits")
        time.sleep(0.002)


def test_gc_running_alongside_committers_loses_nothing(tmp_path: Path, processes: Processes) -> None:
    root = tmp_path / "store"
    SnapshotStore.open(root).session("shared", max_snapshots=BIG)
    outcomes = [processes.writer(root, "shared", "p0", 30), processes.writer(root, "solo-p1", "p1", 30)]
    collector = processes.other("--store", str(root), "--mode", "gc", "--turns", "150", "--pause", "0.01")
    # with a small retention too: evictions, reclaims and gc at once
    small = SnapshotStore.open(root, max_chain=3).session("small", max_snapshots=3)
    small_ids = []
    threads = Threads()
    outcome = Outcome("t0", "shared")
    outcomes.append(outcome)
    threads.start(thread_writer, lambda: SnapshotStore.open(root).session("shared"), outcome, 60, processes.start_at)
    stop = threading.Event()
    threads.start(_gc_loop, lambda: SnapshotStore.open(root), stop)
    wait_until(processes.start_at)
    for t in range(40):
        small_ids.append(small.commit(state_for(t, "small"), label="small", turn=t).id)
    threads.threads[0].join(240)
    stop.set()
    threads.join()
    processes.join()
    assert collector.returncode == 0
    store = SnapshotStore.open(root)
    check_outcomes(store, outcomes)
    sess = store.session("small")
    assert sess.snapshot_ids() == small_ids[-3:]
    for t, sid in zip(range(37, 40), small_ids[-3:], strict=True):
        assert canonical(sess.state(sid)) == canonical(state_for(t, "small"))


# -- readers -------------------------------------------------------------------------------


def _reader(root: Path, stop: threading.Event, seen: dict[str, int], seed: int) -> None:
    """Read everything a reader can, in a loop: any result must be exactly what was committed."""
    rng = random.Random(seed)
    store = SnapshotStore.open(root)
    while not stop.is_set():
        try:
            sess = store.session("shared")
            ids = sess.snapshot_ids()
            for sid in rng.sample(ids, min(3, len(ids))):
                record = store.objects.record(sid)
                state = sess.state(sid)
                assert canonical(state) == canonical(state_for(record.turn, record.label)), f"wrong state {sid}"
                seen["states"] += 1
            head = sess.head
            if head is not None:
                assert canonical(sess.state(head.id)) == canonical(state_for(head.turn, head.label))
            sess.snapshots()
            store.sessions()
        except SnapshotError as exc:  # documented (e.g. a snapshot evicted meanwhile); counted
            seen[type(exc).__name__] = seen.get(type(exc).__name__, 0) + 1


def _raw_reader(root: Path, stop: threading.Event, seen: dict[str, int]) -> None:
    """Read ref files and object files directly: never a torn value."""
    backend = DirectoryBackend(root)
    ref = root / "refs" / "sessions" / "shared"
    while not stop.is_set():
        value = read_ref_file(ref).strip()  # a symbolic link's target (or a file's text)
        assert len(value) == 32 and all(c in "0123456789abcdef" for c in value), value
        seen["refs"] += 1
        for key in list(backend.iter_keys())[-20:]:
            try:
                blob = backend.get(key)
            except SnapshotError:
                continue  # deleted meanwhile (a replaced session document)
            decode_object(key, blob)  # a CorruptObjectError here would be a half-written object
            seen["objects"] += 1


def test_readers_never_see_half_written_objects_refs_or_wrong_states(tmp_path: Path, processes: Processes) -> None:
    root = tmp_path / "store"
    SnapshotStore.open(root).session("shared", max_snapshots=BIG).commit(state_for(0, "seed"), label="seed", turn=0)
    outcomes = [processes.writer(root, "shared", "p0", 40), processes.writer(root, "shared", "p1", 40)]
    reader_proc = processes.other("--store", str(root), "--mode", "read", "--session", "shared", "--turns", "60")
    stop = threading.Event()
    seen: dict[str, int] = {"states": 0, "refs": 0, "objects": 0}
    threads = Threads()
    threads.start(_reader, root, stop, seen, 1)
    threads.start(_reader, root, stop, seen, 2)
    threads.start(_raw_reader, root, stop, seen)
    outcome = Outcome("t0", "shared")
    thread_writer(lambda: SnapshotStore.open(root).session("shared"), outcome, 60, processes.start_at)
    for proc, _, _ in processes.procs:
        try:
            proc.wait(240)
        except subprocess.TimeoutExpired:
            break
    stop.set()
    threads.join()
    processes.join()
    assert reader_proc.returncode != WRONG_STATE_EXIT
    assert seen["states"] > 0 and seen["refs"] > 0 and seen["objects"] > 0
    count("concurrency: reads during writes", seen["states"] + seen["refs"] + seen["objects"])
    count("concurrency: reads refused with a SnapshotError", sum(v for k, v in seen.items() if k[0].isupper()))
    store = SnapshotStore.open(root)
    seed_id = store.session("shared").snapshot_ids()[0]
    seed = Outcome("seed", "shared", [(0, seed_id)])
    check_outcomes(store, [seed, *outcomes, outcome])


# -- known races, reproduced deterministically ---------------------------------------------


class HookBackend(Backend):
    """Delegates to a real backend; runs ``hooks[key]()`` once, just before the first ``get(key)``."""

    kind = "memory"

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.hooks: dict[str, Callable[[], None]] = {}

    def get(self, key: str) -> bytes:
        hook = self.hooks.pop(key, None)
        if hook is not None:
            hook()
        return self.inner.get(key)

    def put(self, key: str, data: bytes) -> bool:
        return self.inner.put(key, data)

    def has(self, key: str) -> bool:
        return self.inner.has(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def iter_keys(self) -> Iterator[str]:
        return self.inner.iter_keys()

    def read_ref(self, name: str) -> str | None:
        return self.inner.read_ref(name)

    def cas_ref(self, name: str, expected: str | None, new: str | None) -> bool:
        return self.inner.cas_ref(name, expected, new)

    def iter_refs(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        return self.inner.iter_refs(prefix)

    def lock(self, name: str, *, shared: bool = False) -> AbstractContextManager[None]:
        return self.inner.lock(name, shared=shared)


def test_commit_retries_when_a_concurrent_reclaim_removes_the_head_it_read() -> None:
    """Another writer evicts and reclaims the head this handle has just read (small max_snapshots):
    the commit reloads the new head and lands on it. (It used to escape as SnapshotNotFound: ~1.5% of
    commits with 3 threads x 300 commits at max_snapshots=3.)"""
    inner = MemoryBackend()
    SnapshotStore(inner, max_chain=2).session("s", max_snapshots=2).commit({"turn": 0})
    other = SnapshotStore(inner, max_chain=2).session("s")
    hooked = HookBackend(inner)
    mine = SnapshotStore(hooked, max_chain=2).session("s")
    mine.commit({"turn": 1, "by": "mine"})  # mine's cached head is now this snapshot
    for t in range(2, 4):
        other.commit({"turn": t, "by": "other"})
    assert other.head is not None
    head_id = other.head.id  # mine will rebuild this (it moved), and the hook removes it first

    last: list[str] = []

    def meanwhile() -> None:  # another writer: 12 commits, evicting and reclaiming head_id
        for t in range(4, 16):
            last[:] = [other.commit({"turn": t, "by": "other"}).id]
        assert not inner.has(head_id)

    hooked.hooks[head_id] = meanwhile
    try:
        snap = mine.commit({"turn": 99, "by": "mine"})
    except ConcurrentUpdateError:
        return  # documented outcome: nothing committed
    assert last and snap.parent == last[0]  # landed on the other writer's newest head
    assert canonical(mine.state(snap.id)) == canonical({"turn": 99, "by": "mine"})


@pytest.mark.parametrize("reader", ["verify", "sessions"])
def test_store_wide_reads_during_a_commit(reader: str) -> None:
    inner = MemoryBackend()
    writer = SnapshotStore(inner).session("s", max_snapshots=BIG)
    writer.commit({"turn": 0})
    doc_key = inner.read_ref(SnapshotStore.session_ref("s"))
    assert doc_key is not None
    hooked = HookBackend(inner)
    hooked.hooks[doc_key] = lambda: writer.commit({"turn": 1})  # lands between the ref read and the doc read
    store = SnapshotStore(hooked)
    if reader == "verify":
        report = store.verify(read_data=False)
        assert report.ok, report.problems
    else:
        assert store.sessions() == ["s"]


@pytest.mark.timeout(60)
def test_commit_attempts_are_bounded() -> None:
    """A writer that keeps losing the race gives up with ConcurrentUpdateError and commits nothing."""
    inner = MemoryBackend()
    SnapshotStore(inner).session("s", max_snapshots=BIG).commit({"turn": 0})
    rival = SnapshotStore(inner).session("s")  # no eviction: a reclaim would wait for our shared gc lock

    class AlwaysLoses(HookBackend):
        def cas_ref(self, name: str, expected: str | None, new: str | None) -> bool:
            if name.startswith("sessions/"):
                rival.commit({"rival": time.monotonic_ns()})  # moves the ref first, every time
            return self.inner.cas_ref(name, expected, new)

    sess = SnapshotStore(AlwaysLoses(inner)).session("s")
    before = SnapshotStore(inner).session("s").snapshot_ids()
    with pytest.raises(ConcurrentUpdateError) as err:
        sess.commit({"mine": True})
    assert err.value.details["attempts"] == COMMIT_ATTEMPTS
    after = SnapshotStore(inner).session("s").snapshot_ids()
    assert after[: len(before)] == before and len(after) == len(before) + COMMIT_ATTEMPTS
    store = SnapshotStore(inner)
    assert all("mine" not in store.session("s").state(sid) for sid in after)
