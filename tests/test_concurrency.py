"""Readers, verify, gc and retention changes while writers commit: nothing lost, no damage seen.

Readers take no lock: an entry never changes once appended, a squashed segment
is replaced whole, a dropped one disappears whole. So a reader running while
writers commit, evict and reclaim sees every state it reads exactly as
committed, or a documented ``SnapshotNotFound`` (the snapshot was evicted
between listing and reading); never a ``CorruptObjectError``; and ``verify``
run meanwhile reports nothing (a snapshot evicted or squashed while it was
checked is skipped, not missing). gc and retention changes take the session's
write lock, so they lose nothing either. Writers are subprocesses
(tests/reliability_writer.py) and threads; the directory store and PostgreSQL.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from conftest_reliability import StoreTarget, canonical, count
from reliability_writer import (
    DAMAGE_EXIT,
    WRONG_STATE_EXIT,
    Outcome,
    WriterProcesses,
    check_history,
    state_for,
)
from snapstore import SnapshotNotFound, SnapshotStore
from snapstore.backends import MemoryBackend

BIG = 100_000  # max_snapshots: nothing is evicted
#: the small session's limit and padding: evictions on every commit, a new segment every few
KEEP = 4
PAD = 100_000
SMALL_POLICY = ["--max-chain", "3", "--max-runs", "1", "--pad", str(PAD)]

class Loops:
    """Functions run in threads until ``stop``; ``join`` re-raises the first failure."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, target: Callable[[threading.Event], None]) -> None:
        def run() -> None:
            try:
                target(self.stop)
            except BaseException as exc:
                self.errors.append(exc)
                self.stop.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self, timeout: float = 240) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "a thread hung"
        if self.errors:
            raise self.errors[0]


def reader(open_: Callable[[], SnapshotStore], name: str, pad: int, seen: dict[str, int], seed: int) -> Any:
    """Read a session in a loop: listings, the head, states (exact, or evicted meanwhile)."""

    def loop(stop: threading.Event) -> None:
        rng = random.Random(seed)
        store = open_()
        try:
            while not stop.is_set():
                sess = store.session(name)
                snaps = sess.snapshots()
                for snap in rng.sample(snaps, min(3, len(snaps))):
                    try:
                        state = sess.state(snap.id)
                    except SnapshotNotFound:
                        seen["evicted while read"] += 1
                        continue
                    expected = state_for(snap.turn or 0, snap.label, pad)
                    assert canonical(state) == canonical(expected), f"{name}: {snap.id} read as a wrong state"
                    seen["states"] += 1
                assert sess.head is not None or not snaps
        finally:
            store.close()

    return loop


def verifier(open_: Callable[[], SnapshotStore], seen: dict[str, int]) -> Any:
    """verify(read_data=True) in a loop: it must report nothing while writers commit and evict."""

    def loop(stop: threading.Event) -> None:
        store = open_()
        try:
            while not stop.is_set():
                report = store.verify(read_data=True)
                assert report.ok, f"verify during commits reported {report.problems}"
                seen["verify runs"] += 1
        finally:
            store.close()

    return loop


def _check_small_session(store: SnapshotStore, outcome: Outcome) -> None:
    """The evicting session: its last KEEP acknowledged commits are listed, exact, on one chain."""
    sess = store.session(outcome.session)
    snaps = sess.snapshots()
    assert [snap.id for snap in snaps] == [sid for _turn, sid in outcome.returned[-KEEP:]]
    for previous, snap in itertools.pairwise(snaps):
        assert snap.parent == previous.id
    for turn, sid in outcome.returned[-KEEP:]:
        assert canonical(sess.state(sid)) == canonical(state_for(turn, outcome.writer, PAD))


def test_readers_and_verify_while_writers_commit_and_evict(target: StoreTarget, processes: WriterProcesses) -> None:
    """Two writer processes on one session keeping everything, one on a session evicting on every
    commit (drops and squashes as segments roll), readers and a verify loop in threads, and a reader
    process that verifies too: no wrong state, no damage reported, nothing lost."""
    with target.open() as store:
        store.session("shared", max_snapshots=BIG)
        store.session("small", max_snapshots=KEEP)
    shared = [processes.writer("shared", f"p{i}", 30) for i in range(2)]
    small = processes.writer("small", "evictor", 40, *SMALL_POLICY, pad=PAD)
    read_proc = processes.other("--mode", "read", "--verify", "--session", "small", "--pad", str(PAD),
                                 "--turns", "15")
    seen = {"states": 0, "evicted while read": 0, "verify runs": 0}
    loops = Loops()
    loops.start(reader(target.open, "shared", 0, seen, 1))
    loops.start(reader(target.open, "small", PAD, seen, 2))
    loops.start(verifier(target.open, seen))
    try:
        processes.join()
    finally:
        loops.join()
    assert read_proc.returncode not in (WRONG_STATE_EXIT, DAMAGE_EXIT)
    assert seen["states"] > 0 and seen["verify runs"] > 0
    with target.open() as store:
        count("concurrency: commits checked", check_history(store, shared))
        _check_small_session(store, small)
    count("concurrency: writers (processes + threads)", 3)
    count("concurrency: reads during writes", seen["states"])
    count("concurrency: verify runs during writes", seen["verify runs"])


def test_gc_and_retention_changes_alongside_committers_lose_nothing(
    target: StoreTarget, processes: WriterProcesses
) -> None:
    """Writer processes, a gc loop and a loop lowering and raising a session's limit, at once."""
    with target.open() as store:
        store.session("shared", max_snapshots=BIG)
        store.session("small", max_snapshots=KEEP)
    shared = [processes.writer("shared", "p0", 30), processes.writer("shared", "p1", 30)]
    small = processes.writer("small", "evictor", 30, *SMALL_POLICY, pad=PAD)
    processes.other("--mode", "gc", "--turns", "40", "--pause", "0.01")
    processes.other("--mode", "retention", "--session", "small", "--max-snapshots", str(KEEP), "--turns", "40",
                    "--pause", "0.01")
    processes.join()
    count("concurrency: gc and reclaim runs during commits", 80)
    with target.open() as store:
        count("concurrency: commits checked", check_history(store, shared))
        store.gc(grace_seconds=0)  # whatever the retention loop left evicted but stored
        _check_small_session(store, small)
        assert store.verify(read_data=True).ok
    count("concurrency: writers (processes + threads)", 3)


def test_memory_backend_threads_with_gc_and_verify() -> None:
    """Threads on one MemoryBackend (shared Session objects, separate handles), gc and verify loops."""
    backend = MemoryBackend()
    SnapshotStore(backend).session("shared", max_snapshots=BIG)
    shared_handle = SnapshotStore(backend, max_chain=3)
    outcomes = [Outcome(f"m{i}", "shared") for i in range(4)]
    makers = [
        lambda: shared_handle.session("shared"),
        lambda: shared_handle.session("shared"),
        lambda: SnapshotStore(backend).session("shared"),
        lambda: SnapshotStore(backend, max_chain=2).session("shared"),
    ]
    seen = {"states": 0, "evicted while read": 0, "verify runs": 0}
    loops = Loops()
    loops.start(verifier(lambda: SnapshotStore(backend), seen))
    loops.start(reader(lambda: SnapshotStore(backend), "shared", 0, seen, 3))

    def collect(stop: threading.Event) -> None:
        store = SnapshotStore(backend)
        while not stop.is_set():
            store.gc(grace_seconds=0)
            count("concurrency: gc and reclaim runs during commits")

    loops.start(collect)
    writers = Loops()
    for make, outcome in zip(makers, outcomes, strict=True):
        def write(stop: threading.Event, make: Callable[[], Any] = make, outcome: Outcome = outcome) -> None:
            sess = make()
            for turn in range(40):
                snap = sess.commit(state_for(turn, outcome.writer), label=outcome.writer, turn=turn)
                outcome.returned.append((turn, snap.id))

        writers.start(write)
    try:
        for thread in writers.threads:
            thread.join(240)
        writers.join()
    finally:
        loops.join()
    count("concurrency: commits checked", check_history(SnapshotStore(backend), outcomes))
    count("concurrency: writers (processes + threads)", len(outcomes))
    count("concurrency: reads during writes", seen["states"])


class HookBackend(MemoryBackend):
    """A memory engine that runs ``hook()`` once, just before the ``skip + 1``-th full read of segment 1."""

    def __init__(self) -> None:
        super().__init__()
        self.hook: Callable[[], None] | None = None
        self.skip = 0

    def read_segment(self, key: str, segment: int, start: int = 0) -> Any:
        if self.hook is not None and segment == 1 and start == 0:
            if self.skip:
                self.skip -= 1
            else:
                hook, self.hook = self.hook, None
                hook()
        return super().read_segment(key, segment, start)


def _reclaim_between_index_and_read(dropped: bool, skip: int) -> tuple[HookBackend, Any, list[Any]]:
    """A session whose segment 1 another handle squashes (or drops) right after a reader indexed it.

    Segments hold two runs (K0 d1 d2 d3 K4 d5 d6 d7, then K8...); with a limit of 6 the keyframe of
    turn 12 squashes segment 1 (its first run is no longer needed), the one of turn 16 drops it.
    """
    backend = HookBackend()
    writer = SnapshotStore(backend, max_chain=3, max_runs=1).session("s", max_snapshots=6)
    for turn in range(9):
        writer.commit(state_for(turn, "w", PAD), label="w", turn=turn)
    reader_sess = SnapshotStore(backend).session("s")
    listed = reader_sess.snapshots()

    def reclaim() -> None:
        for turn in range(9, 17 if dropped else 13):
            writer.commit(state_for(turn, "w", PAD), label="w", turn=turn)

    backend.hook, backend.skip = reclaim, skip
    return backend, reader_sess, listed


def test_a_reader_never_sees_damage_when_a_squash_replaces_its_segment() -> None:
    """Every state the reader listed reads exactly, or is SnapshotNotFound (evicted meanwhile)."""
    backend, reader_sess, listed = _reclaim_between_index_and_read(dropped=False, skip=0)
    for snap in listed:
        try:
            state = reader_sess.state(snap.id)
        except SnapshotNotFound:
            continue
        assert canonical(state) == canonical(state_for(snap.turn or 0, "w", PAD))
    assert backend.hook is None, "the reclaim did not run"


def test_opening_a_session_while_a_reclaim_drops_its_first_segment() -> None:
    backend, _reader, _listed = _reclaim_between_index_and_read(dropped=True, skip=0)
    sess = SnapshotStore(backend).session("s")
    assert backend.hook is None, "the reclaim did not run"
    assert [snap.turn for snap in sess.snapshots()] == list(range(11, 17))


@pytest.mark.parametrize("reclaimed", ["squashed", "dropped"])
def test_verify_skips_what_a_reclaim_removes_while_it_runs(reclaimed: str) -> None:
    backend, _reader, _listed = _reclaim_between_index_and_read(dropped=reclaimed == "dropped", skip=1)
    report = SnapshotStore(backend).verify(read_data=True)  # indexes segment 1, then reads its payloads
    assert backend.hook is None, "the reclaim did not run"
    assert report.ok, report.problems
