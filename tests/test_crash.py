"""Crash safety (issue #7): a writer killed at any moment loses no commit that returned.

Two complementary approaches:

* **random kills** (``@pytest.mark.slow``): a writer process
  (tests/reliability_writer.py) commits turns of a deterministic, growing state
  and logs each returned snapshot id with fsync; the test kills it with
  SIGKILL after a random delay, checks the store, restarts the writer on the
  same store (it continues from the session head), and so on. The number of
  kills per loop is ``SNAPSTORE_CRASH_KILLS`` (default 25); the random seed is
  ``SNAPSTORE_CRASH_SEED`` (default: fixed per test, printed on failure).
* **every crash point** (fast, deterministic): a backend wrapper stops the
  process's writes dead (an exception no snapstore code catches) before its
  k-th mutating call, for every k, during a commit that evicts, squashes and
  reclaims, and during gc. Since every backend operation is atomic (rename or
  link into place), the prefixes of the write sequence are exactly the states
  a crash can leave.

After every crash: the store opens, ``verify(read_data=True)`` is clean, every
commit that returned is listed (unless FIFO retention evicted it) and rebuilds
to exactly the recomputed state, and at most the in-flight commit is missing.
Leftover temporary files are ignored by readers and removed by ``gc``.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from conftest_reliability import canonical, count, temporary_files
from reliability_writer import Zygote, child_env, read_log, state_for, writer_command
from snapstore import SnapshotStore
from snapstore.backends import Backend, DirectoryBackend, MemoryBackend

KILLS = int(os.environ.get("SNAPSTORE_CRASH_KILLS", "25"))
SESSION = "crash"
#: a writer is killed this long (at most) after it starts
MAX_DELAY = 0.3
#: every this many runs, the writer is a freshly started interpreter instead of a fork of the zygote
FRESH_EVERY = 6


def _seed(default: int) -> int:
    return int(os.environ.get("SNAPSTORE_CRASH_SEED", default))


@pytest.fixture
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    try:
        yield z
    finally:
        z.close()


def _run_and_kill(zygote: Zygote, args: list[str], delay: float, *, fresh: bool) -> bool:
    """Start a writer, SIGKILL it after ``delay`` seconds; True if the kill (not an exit) ended it."""
    count("crash: writer runs started")
    if fresh:
        proc = subprocess.Popen(writer_command(*args), env=child_env(), stdout=subprocess.DEVNULL)
        time.sleep(delay * 3)  # the interpreter start-up and the store opening are crash points too
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=60)
        return code == -signal.SIGKILL
    pid = zygote.start(args)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    status = zygote.wait(pid)
    if os.WIFEXITED(status):
        assert os.WEXITSTATUS(status) == 0, f"writer {args} failed with exit code {os.WEXITSTATUS(status)}"
        return False
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


class CrashChecker:
    """Checks a store after each kill against the writer's log; remembers what it has verified."""

    def __init__(self, root: Path, log: Path, *, max_snapshots: int | None = None) -> None:
        self.root, self.log, self.max_snapshots = root, log, max_snapshots
        self.checked: set[str] = set()  # snapshot ids already rebuilt and compared
        self.landed_unlogged: set[int] = set()
        self.kills = 0
        self.head_turn = -1  # the head's turn at the last check

    def check(self, *, after_kill: bool = True) -> list[str]:
        if after_kill:
            self.kills += 1
        entries, _conflicts = read_log(self.log)
        with SnapshotStore.open(self.root) as store:
            report = store.verify(read_data=True)
            assert report.ok, f"verify after kill {self.kills}: {report.problems}"
            if not store.has_session(SESSION):
                assert not entries, "commits returned but the session is gone"
                return []
            sess = store.session(SESSION)
            ids = sess.snapshot_ids()
            records = [store.objects.record(sid) for sid in ids]
            turns = [r.turn for r in records]
            last_logged = entries[-1][0] if entries else -1
            if not ids:
                assert last_logged == -1, f"kill {self.kills}: the log has turn {last_logged}, the session is empty"
                return ids
            first, last = turns[0], turns[-1]
            # no commit is lost and none is doubled: the listing is consecutive turns ...
            assert turns == list(range(first, last + 1)), f"kill {self.kills}: turns {turns}"
            # ... ending at the last returned commit, or at the one in flight when the kill came (the
            # run started from the head found at the previous check, which may be an unlogged commit)
            base = max(last_logged, self.head_turn)
            assert last in (base, base + 1), f"kill {self.kills}: head turn {last}, log {last_logged}, was {base}"
            self.head_turn = last
            if self.max_snapshots is None:
                assert first == 0, f"kill {self.kills}: snapshots before turn {first} are gone"
            else:
                assert len(ids) == min(self.max_snapshots, last + 1), f"kill {self.kills}: {len(ids)} retained"
            for turn, sid in entries:  # every returned commit that retention keeps is listed, same id
                if turn >= first:
                    assert ids[turn - first] == sid, f"kill {self.kills}: turn {turn} is {ids[turn - first]}, log {sid}"
            logged = {turn for turn, _ in entries}
            self.landed_unlogged |= {t for t in turns if t not in logged}
            assert len(self.landed_unlogged) <= self.kills, "more unlogged commits than kills"
            head = sess.head
            assert head is not None and head.id == ids[-1] and head.turn == last
            for sid, record in zip(ids, records, strict=True):
                if sid not in self.checked:
                    assert canonical(sess.state(sid)) == canonical(state_for(record.turn)), (
                        f"kill {self.kills}: snapshot {sid} (turn {record.turn}) rebuilds to a different state"
                    )
                    self.checked.add(sid)
                    count("crash: returned commits checked after a kill")
        return ids

    def final(self) -> None:
        """gc after the last kill removes every leftover; then everything still rebuilds, from a fresh store."""
        count("crash: temporary files left by kills", len(temporary_files(self.root)))
        with SnapshotStore.open(self.root) as store:
            report = store.gc()
            count("crash: orphan objects collected by gc after kills", report.objects_deleted)
        assert temporary_files(self.root) == []
        self.checked.clear()
        ids = self.check(after_kill=False)
        with SnapshotStore.open(self.root) as store:
            assert store.verify(read_data=True).ok
            listed = set(ids)
            assert set(store.backend.iter_keys()) >= listed
        count("crash: in-flight commits found landed (not yet logged)", len(self.landed_unlogged))


@pytest.mark.slow
@pytest.mark.parametrize("fsync", [False, True], ids=["no-fsync", "fsync"])
def test_killed_writer_loses_no_returned_commit(tmp_path: Path, zygote: Zygote, fsync: bool) -> None:
    """SIGKILL a committing writer KILLS times; every returned commit survives and rebuilds exactly."""
    root, log = tmp_path / "store", tmp_path / "commits.log"
    rng = random.Random(_seed(7 + fsync))
    checker = CrashChecker(root, log)
    args = ["--store", str(root), "--log", str(log), "--session", SESSION]
    if fsync:
        args.append("--fsync")
    deadline = time.monotonic() + 60 + 4 * KILLS  # a safety net: a run lasts MAX_DELAY at most
    for run in range(KILLS):
        assert time.monotonic() < deadline, f"crash loop over time after {run} kills"
        killed = _run_and_kill(zygote, args, rng.uniform(0, MAX_DELAY), fresh=run % FRESH_EVERY == 0)
        checker.check()
        if killed:
            count("crash: kills survived")
        if run % 5 == 4:  # now and then, clean up as an operator would; other kills leave their garbage
            count("crash: temporary files left by kills", len(temporary_files(root)))
            with SnapshotStore.open(root) as store:
                count("crash: orphan objects collected by gc after kills", store.gc().objects_deleted)
            assert temporary_files(root) == []
    entries, _ = read_log(log)
    assert entries, "no writer run committed anything: the kill delays are too short for this machine"
    checker.final()


@pytest.mark.slow
def test_killed_writer_and_collector_keep_retained_snapshots(tmp_path: Path, zygote: Zygote) -> None:
    """Small retention (eviction on every commit), alternately short chains (reclaim every 8 commits)
    and long ones (squash every ~65), plus a gc loop, all killed at random: the last max_snapshots
    returned commits are always there and exact."""
    root, log = tmp_path / "store", tmp_path / "commits.log"
    rng = random.Random(_seed(11))
    keep = 5
    checker = CrashChecker(root, log, max_snapshots=keep)
    writer = ["--store", str(root), "--log", str(log), "--session", SESSION, "--max-snapshots", str(keep)]
    # two keyframe policies, alternately: short chains (reclaim collects evicted snapshots every 8
    # commits) and long ones (evicted snapshots stay pinned until a squash writes a base, every ~65)
    policies = [["--max-chain", "3"], ["--max-chain", "100", "--max-chain-factor", "1e9"]]
    collector = ["--store", str(root), "--mode", "gc", "--pause", "0.005"]
    # leftovers of interrupted writes from "before": readers must ignore them, gc must remove them
    SnapshotStore.open(root).close()
    planted = [root / "objects" / "ab" / ".tmp-planted", root / "refs" / ".tmp-planted"]
    for path in planted:
        path.write_bytes(b"half a write")
    deadline = time.monotonic() + 60 + 4 * KILLS  # a safety net: a run lasts MAX_DELAY at most
    for run in range(KILLS):
        assert time.monotonic() < deadline, f"crash loop over time after {run} kills"
        gc_pid = zygote.start(collector) if run % 3 else None
        args = writer + policies[(run // 2) % 2]
        killed = _run_and_kill(zygote, args, rng.uniform(0, MAX_DELAY), fresh=run % FRESH_EVERY == 0)
        if gc_pid is not None:
            time.sleep(rng.uniform(0, 0.02))
            os.kill(gc_pid, signal.SIGKILL)
            status = zygote.wait(gc_pid)
            assert not os.WIFEXITED(status), f"the gc loop exited with {os.WEXITSTATUS(status)}"
            count("crash: kills survived")
        checker.check()
        if killed:
            count("crash: kills survived")
        with SnapshotStore.open(root) as store:  # readers never see torn writes, planted or left by kills
            assert not any(".tmp" in key for key in store.backend.iter_keys())
            assert all(".tmp" not in name for name, _ in store.backend.iter_refs())
    assert read_log(log)[0], "no writer run committed anything"
    checker.final()
    assert not any(p.exists() for p in planted)


# -- every crash point, deterministically ----------------------------------


class SimulatedCrash(BaseException):
    """The process died here: no snapstore code catches a BaseException that is not an Exception."""


class CrashingBackend(Backend):
    """Delegates to a real backend but dies before its ``crash_at``-th mutating call (1-based)."""

    kind = "directory"

    def __init__(self, inner: Backend, crash_at: int | None) -> None:
        self.inner, self.crash_at, self.mutations = inner, crash_at, 0

    def _mutating(self) -> None:
        self.mutations += 1
        if self.crash_at is not None and self.mutations >= self.crash_at:
            raise SimulatedCrash(self.mutations)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def has(self, key: str) -> bool:
        return self.inner.has(key)

    def iter_keys(self) -> Iterator[str]:
        return self.inner.iter_keys()

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def read_ref(self, name: str) -> str | None:
        return self.inner.read_ref(name)

    def iter_refs(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        return self.inner.iter_refs(prefix)

    def lock(self, name: str, *, shared: bool = False) -> AbstractContextManager[None]:
        return self.inner.lock(name, shared=shared)

    def put(self, key: str, data: bytes) -> bool:
        if self.inner.has(key):
            return False  # a no-op write is no crash point
        self._mutating()
        return self.inner.put(key, data)

    def delete(self, key: str) -> None:
        self._mutating()
        self.inner.delete(key)

    def cas_ref(self, name: str, expected: str | None, new: str | None) -> bool:
        self._mutating()
        return self.inner.cas_ref(name, expected, new)

    def cleanup_temporary(self) -> int:
        self._mutating()
        return self.inner.cleanup_temporary()

    def describe(self) -> str:
        return self.inner.describe()


class Golden:
    """A store built once, copied afresh (a directory tree or the memory dicts) for each crash point."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind, self.tmp_path, self.copies = kind, tmp_path, 0
        self.backend: Backend = DirectoryBackend(tmp_path / "golden") if kind == "directory" else MemoryBackend()

    def copy(self) -> Backend:
        self.copies += 1
        if isinstance(self.backend, DirectoryBackend):
            # hard links are safe: objects are never written in place, refs are replaced by rename;
            # empty fan-out folders are skipped (mkdir is slow on some disks; put() makes them on demand)
            root = self.tmp_path / f"copy{self.copies}"
            for path in sorted(self.backend.root.rglob("*")):
                target = root / path.relative_to(self.backend.root)
                if path.is_symlink():  # a ref
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(os.readlink(path), target)
                elif path.is_file():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.link(path, target)
            (root / "locks").mkdir(exist_ok=True)
            return DirectoryBackend(root, create=False)
        assert isinstance(self.backend, MemoryBackend)
        fresh = MemoryBackend()
        fresh._objects, fresh._refs = dict(self.backend._objects), dict(self.backend._refs)
        return fresh

    def discard(self, backend: Backend) -> None:
        if isinstance(backend, DirectoryBackend):
            assert temporary_files(backend.root) == []
            shutil.rmtree(backend.root)


def _build_history(backend: Backend, turns: int, keep: int, **policy: Any) -> list[str]:
    store = SnapshotStore(backend, **policy)
    sess = store.session(SESSION, max_snapshots=keep)
    return [sess.commit(state_for(t), turn=t).id for t in range(turns)]


def _check_retained(backend: Backend, expected_turns: list[int]) -> None:
    store = SnapshotStore(backend)  # a fresh handle: nothing cached from before the crash
    report = store.verify(read_data=True)
    assert report.ok, report.problems
    sess = store.session(SESSION)
    listed = [(store.objects.record(sid).turn, sid) for sid in sess.snapshot_ids()]
    assert [t for t, _ in listed] == expected_turns
    for turn, sid in listed:
        assert canonical(sess.state(sid)) == canonical(state_for(turn))
    assert sess.head is not None and sess.head.turn == expected_turns[-1]


def _mutations_of(action: Any, golden: Golden) -> int:
    """How many mutating backend calls ``action(store)`` makes (run on a scratch copy)."""
    scratch = golden.copy()
    backend = CrashingBackend(scratch, None)
    action(SnapshotStore(backend))
    golden.discard(scratch)
    return backend.mutations


#: (backend, max_chain, commits before the one crashed): the crashed commit reclaims (max_chain 3,
#: evicted snapshots collected) or squashes (long chains: bases written, the evicted tail collected)
CRASHED_COMMITS = [
    pytest.param("directory", 3, 11, id="directory-reclaim"),
    pytest.param("memory", 3, 11, id="memory-reclaim"),
    pytest.param("memory", 10_000, 68, id="memory-squash"),
]


@pytest.mark.parametrize(("kind", "max_chain", "turns"), CRASHED_COMMITS)
def test_commit_crashing_at_every_write_leaves_old_or_new(
    tmp_path: Path, kind: str, max_chain: int, turns: int
) -> None:
    """A commit that evicts and reclaims (or squashes), stopped before each of its writes in turn:
    afterwards the store holds the old history or the new one, never a broken one."""
    keep = 4
    golden = Golden(kind, tmp_path)
    policy = {"max_chain": max_chain, "max_chain_factor": 1e9}
    _build_history(golden.backend, turns, keep, **policy)
    before = golden.backend.read_ref(SnapshotStore.session_ref(SESSION))

    def commit(store: SnapshotStore) -> None:
        store.session(SESSION).commit(state_for(turns), turn=turns)

    total = _mutations_of(lambda store: commit(SnapshotStore(store.backend, **policy)), golden)
    assert total >= 12, f"the commit made only {total} writes: it did not reclaim"
    for crash_at in range(1, total + 2):
        backend = golden.copy()
        try:
            commit(SnapshotStore(CrashingBackend(backend, crash_at), **policy))
            assert crash_at > total
        except SimulatedCrash:
            assert crash_at <= total
        landed = backend.read_ref(SnapshotStore.session_ref(SESSION)) != before
        newest = turns if landed else turns - 1
        _check_retained(backend, list(range(newest - keep + 1, newest + 1)))
        store = SnapshotStore(backend, **policy)
        store.gc()
        store.session(SESSION).commit(state_for(newest + 1), turn=newest + 1)
        _check_retained(backend, list(range(newest - keep + 2, newest + 2)))
        golden.discard(backend)
        count("crash: simulated crash points checked")


@pytest.mark.parametrize("kind", ["directory", "memory"])
def test_gc_crashing_at_every_delete_keeps_everything_retained(tmp_path: Path, kind: str) -> None:
    golden = Golden(kind, tmp_path)
    _build_history(golden.backend, 12, 4, max_chain=3)
    store = SnapshotStore(golden.backend)  # garbage for gc: a deleted session's objects
    other = store.session("other")
    for t in range(6):
        other.commit(state_for(t, "other"))
    store.delete_session("other")
    if isinstance(golden.backend, DirectoryBackend):  # and a torn write
        (golden.backend.root / "objects" / "cd" / ".tmp-leftover").write_bytes(b"torn")
    total = _mutations_of(lambda s: s.gc(), golden)
    assert total >= 10
    for crash_at in range(1, total + 2):
        backend = golden.copy()
        with contextlib.suppress(SimulatedCrash):
            SnapshotStore(CrashingBackend(backend, crash_at)).gc()
        _check_retained(backend, list(range(8, 12)))
        SnapshotStore(backend).gc()  # the interrupted collection finishes
        assert list(backend.iter_refs("sessions/")) == [("sessions/" + SESSION, backend.read_ref("sessions/crash"))]
        _check_retained(backend, list(range(8, 12)))
        golden.discard(backend)
        count("crash: simulated crash points checked")


def test_leftover_temporary_files_are_ignored_then_collected(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _build_history(DirectoryBackend(root), 3, 10)
    leftovers = [
        root / "objects" / "00" / ".tmp-deadbeef",
        root / "objects" / "ff" / ".tmp-",
        root / "refs" / "sessions" / ".tmp-0123",
        root / "refs" / "config" / ".tmp-x",
    ]
    for path in leftovers:
        path.write_bytes(b"\x00garbage, half written")
    leftovers.append(root / "refs" / "sessions" / ".tmp-link")  # a ref swap killed before its rename
    os.symlink("0" * 32, leftovers[-1])
    with SnapshotStore.open(root) as store:
        assert store.verify(read_data=True).ok
        assert store.sessions() == [SESSION]
        assert all(".tmp" not in key for key in store.backend.iter_keys())
        report = store.gc()
        assert report.temporary_files_removed == len(leftovers)
        assert report.objects_deleted == 0
    assert temporary_files(root) == []
    _check_retained(DirectoryBackend(root), [0, 1, 2])
