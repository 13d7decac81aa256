"""Crash safety: a process killed at any moment loses no acknowledged commit.

Two complementary approaches:

* **random kills** (``@pytest.mark.slow``): a writer process
  (tests/reliability_writer.py) commits turns of a deterministic state large
  enough that keyframes, and so new segments and reclaims, come every few
  commits; it logs each returned snapshot id with fsync. The test kills it with
  SIGKILL after a random delay, checks the store, restarts the writer (it
  continues from the session head), and so on; in the second loop a gc loop, a
  retention loop (``set_max_snapshots`` lowering the limit: evictions, segment
  drops and squashes) and a reader run beside it and are killed too. The number
  of kills per loop is ``SNAPSTORE_CRASH_KILLS`` (default 25); the random seed
  is ``SNAPSTORE_CRASH_SEED`` (default: fixed per test).
* **every crash point** (fast, deterministic): a backend wrapper stops the
  process dead (an exception no snapstore code catches) at its k-th write, for
  every k, either before that write or in the middle of it (an append torn
  half-way or as zeros, a rewrite leaving its temporary file, a drop of several
  segments stopped after the first), during a commit that starts a segment and
  reclaims, a plain delta commit, a lowering of the limit, and gc.

After every crash: the store opens, ``verify(read_data=True)`` is clean, every
acknowledged commit that retention keeps is listed and rebuilds to exactly the
recomputed state, at most the in-flight commit is missing or landed, and the
next commit cuts a torn tail and lands.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from conftest_reliability import canonical, count, segment_files, temporary_files
from reliability_writer import RETENTION_SLACK, Zygote, child_env, read_log, state_for, writer_command
from snapstore import SnapshotStore
from snapstore.backends import Backend, DirectoryBackend, MemoryBackend, _framing
from snapstore.backends._memory import _Segment
from snapstore.backends.base import SegmentInfo, SegmentRead
from snapstore.store import session_key
from snapstore.testing import segment_path

KILLS = int(os.environ.get("SNAPSTORE_CRASH_KILLS", "25"))
SESSION = "crash"
KEY = session_key(SESSION)
#: a writer is killed this long (at most) after it starts
MAX_DELAY = 0.4
#: every this many runs, the writer is a freshly started interpreter instead of a fork of the zygote
FRESH_EVERY = 6
#: bytes of padding per state: with max_runs 1 and max_chain 3 a segment holds two runs (8 commits)
PAD = 100_000
POLICY = {"max_chain": 3, "max_runs": 1}
POLICY_ARGS = ["--max-chain", "3", "--max-runs", "1", "--pad", str(PAD)]


def _seed(default: int) -> int:
    return int(os.environ.get("SNAPSTORE_CRASH_SEED", default))


def expected_state(turn: int) -> Any:
    return state_for(turn, "w", PAD)


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
        assert code in (0, -signal.SIGKILL), f"writer {args} failed with exit code {code}"
        return code == -signal.SIGKILL
    pid = zygote.start(args)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    status = zygote.wait(pid)
    if os.WIFEXITED(status):
        assert os.WEXITSTATUS(status) == 0, f"writer {args} failed with exit code {os.WEXITSTATUS(status)}"
        return False
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _kill_helper(zygote: Zygote, pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    status = zygote.wait(pid)
    assert not os.WIFEXITED(status) or os.WEXITSTATUS(status) == 0, f"a helper exited with {os.WEXITSTATUS(status)}"
    count("crash: kills of gc, retention and reader processes")


class CrashChecker:
    """Checks a store after each kill against the writer's log; remembers what it has verified."""

    def __init__(self, root: Path, log: Path, *, keep: tuple[int, int] | None = None, pad: int = PAD) -> None:
        self.root, self.log, self.keep, self.pad = root, log, keep, pad
        self.checked: set[str] = set()  # snapshot ids already rebuilt and compared
        self.landed_unlogged: set[int] = set()
        self.kills = 0
        self.head_turn = -1  # the head's turn at the last check

    def check(self, *, after_kill: bool = True) -> None:
        if after_kill:
            self.kills += 1
        entries = read_log(self.log)
        with SnapshotStore.open(self.root) as store:
            report = store.verify(read_data=True)
            assert report.ok, f"verify after kill {self.kills}: {report.problems}"
            if not store.has_session(SESSION):
                assert not entries, "commits returned but the session is gone"
                return
            sess = store.session(SESSION)
            snaps = sess.snapshots()
            last_logged = entries[-1][0] if entries else -1
            if not snaps:
                assert last_logged == -1, f"kill {self.kills}: the log has turn {last_logged}, the session is empty"
                return
            turns = [snap.turn for snap in snaps]
            first, last = turns[0], turns[-1]
            assert isinstance(first, int) and isinstance(last, int)
            # nothing lost, nothing doubled: consecutive turns ...
            assert turns == list(range(first, last + 1)), f"kill {self.kills}: turns {turns}"
            # ... ending at the last acknowledged commit, or at the one in flight when the kill came
            base = max(last_logged, self.head_turn)
            assert last in (base, base + 1), f"kill {self.kills}: head turn {last}, log {last_logged}, was {base}"
            self.head_turn = last
            if self.keep is None:
                assert first == 0, f"kill {self.kills}: snapshots before turn {first} are gone"
            else:
                low, high = self.keep
                assert min(low, last + 1) <= len(snaps) <= high, f"kill {self.kills}: {len(snaps)} retained"
            ids = [snap.id for snap in snaps]
            for turn, sid in entries:  # every acknowledged commit that retention keeps is listed, same id
                if turn >= first:
                    assert ids[turn - first] == sid, f"kill {self.kills}: turn {turn} is {ids[turn - first]}, log {sid}"
            logged = {turn for turn, _ in entries}
            self.landed_unlogged |= {t for t in turns if t not in logged}
            assert len(self.landed_unlogged) <= self.kills, "more unlogged commits than kills"
            head = sess.head
            assert head is not None and head.id == ids[-1]
            for snap in snaps:
                if snap.id not in self.checked:
                    assert canonical(sess.state(snap.id)) == canonical(state_for(snap.turn or 0, "w", self.pad)), (
                        f"kill {self.kills}: snapshot {snap.id} (turn {snap.turn}) rebuilds to a different state"
                    )
                    self.checked.add(snap.id)
                    count("crash: acknowledged commits checked after a kill")

    def final(self) -> None:
        """gc after the last kill removes every leftover; then everything still rebuilds, from a fresh store."""
        with SnapshotStore.open(self.root) as store:
            store.gc(grace_seconds=0)
        assert temporary_files(self.root) == []
        self.checked.clear()
        self.check(after_kill=False)
        count("crash: in-flight commits found landed (not yet logged)", len(self.landed_unlogged))


@pytest.mark.slow
@pytest.mark.parametrize("fsync", [False, True], ids=["no-fsync", "fsync"])
def test_killed_writer_loses_no_acknowledged_commit(tmp_path: Path, zygote: Zygote, fsync: bool) -> None:
    """SIGKILL a committing writer KILLS times (inside appends, new segments, keyframes): every
    acknowledged commit survives and rebuilds exactly."""
    root, log = tmp_path / "store", tmp_path / "commits.log"
    rng = random.Random(_seed(7 + fsync))
    checker = CrashChecker(root, log)
    args = ["--store", str(root), "--log", str(log), "--session", SESSION, *POLICY_ARGS]
    if fsync:
        args.append("--fsync")
    deadline = time.monotonic() + 60 + 4 * KILLS  # a safety net: a run lasts MAX_DELAY at most
    for run in range(KILLS):
        assert time.monotonic() < deadline, f"crash loop over time after {run} kills"
        killed = _run_and_kill(zygote, args, rng.uniform(0, MAX_DELAY), fresh=run % FRESH_EVERY == 0)
        checker.check()
        if killed:
            count("crash: kills survived")
    assert read_log(log), "no writer run committed anything: the kill delays are too short for this machine"
    assert len(segment_files(root, KEY)) > 1, "the writers never started a second segment"
    checker.final()


@pytest.mark.slow
def test_killed_writer_appending_index_entries_loses_no_acknowledged_commit(tmp_path: Path, zygote: Zygote) -> None:
    """The same loop with small states and long segments: the writer appends an INDEX entry with
    every 64th commit of a segment (format 4), so kills land beside and inside those appends, and
    every check reopens a store whose segments carry them."""
    root, log = tmp_path / "store", tmp_path / "commits.log"
    rng = random.Random(_seed(11))
    checker = CrashChecker(root, log, pad=0)
    args = ["--store", str(root), "--log", str(log), "--session", SESSION]
    deadline = time.monotonic() + 60 + 4 * KILLS
    run = 0
    # the runs go on until the writers have appended INDEX entries to kill beside: how many commits a
    # run makes before its kill depends on the machine's speed (a loaded one made too few for two)
    while run < max(4, KILLS // 3) or _index_entries(root) < 2:
        assert time.monotonic() < deadline, f"crash loop over time after {run} kills"
        killed = _run_and_kill(zygote, args, rng.uniform(0.05, MAX_DELAY / 2), fresh=run % FRESH_EVERY == 0)
        checker.check()
        if killed:
            count("crash: kills survived (INDEX entries)")
        run += 1
    checker.final()


def _index_entries(root: Path) -> int:
    with SnapshotStore.open(root) as store:
        sess = store.session(SESSION)
        backend = store.backend
        raw = [e for info in backend.segments(sess.key) for e in backend.read_segment(sess.key, info.segment).entries]
    return sum(1 for data in raw if data[:1] == b"\x03")


@pytest.mark.slow
def test_killed_writer_collector_retention_and_reader(tmp_path: Path, zygote: Zygote) -> None:
    """A small limit (evictions on every commit, reclaims at every new segment), a gc loop, a loop
    lowering the limit (drops and squashes) and a reader, all killed at random: the retained
    acknowledged commits are always there and exact, and the reader never saw a wrong state."""
    root, log = tmp_path / "store", tmp_path / "commits.log"
    rng = random.Random(_seed(11))
    keep = 4
    checker = CrashChecker(root, log, keep=(keep, keep + RETENTION_SLACK))
    common = ["--store", str(root), "--session", SESSION, "--max-snapshots", str(keep), *POLICY_ARGS]
    writer = [*common, "--log", str(log)]
    helpers = [
        [*common, "--mode", "gc", "--pause", "0.005"],
        [*common, "--mode", "retention", "--pause", "0.01"],
        [*common, "--mode", "read", "--turns", "1000000"],
    ]
    with SnapshotStore.open(root, **POLICY) as store:
        store.session(SESSION, max_snapshots=keep)
    deadline = time.monotonic() + 60 + 4 * KILLS
    for run in range(KILLS):
        assert time.monotonic() < deadline, f"crash loop over time after {run} kills"
        started = [zygote.start(helper) for i, helper in enumerate(helpers) if (run + i) % 3]
        killed = _run_and_kill(zygote, writer, rng.uniform(0, MAX_DELAY), fresh=run % FRESH_EVERY == 0)
        for pid in started:
            time.sleep(rng.uniform(0, 0.02))
            _kill_helper(zygote, pid)
        checker.check()
        if killed:
            count("crash: kills survived")
    assert read_log(log), "no writer run committed anything"
    checker.final()


# -- every crash point, deterministically ----------------------------------


class SimulatedCrash(BaseException):
    """The process died here: no snapstore code catches a BaseException that is not an Exception."""


class CrashingBackend(Backend):
    """Delegates to a real backend but dies at its ``crash_at``-th write (1-based).

    ``how``: "before" (the write never starts), "half" or "zeros" (an append leaves half its
    bytes, or the right length of zeros, as a kill in the middle of a write or a power cut
    after the size was updated would; a rewrite leaves its temporary file; a drop of several
    segments drops the first only).
    """

    def __init__(self, inner: Backend, crash_at: int | None, how: str = "before") -> None:
        self.inner, self.crash_at, self.how, self.writes = inner, crash_at, how, 0
        self.kind = inner.kind
        self.torn = False

    def _crashes(self) -> bool:
        self.writes += 1
        return self.crash_at is not None and self.writes >= self.crash_at

    # reads
    def read_config(self, name: str) -> bytes | None:
        return self.inner.read_config(name)

    def session_keys(self) -> list[str]:
        return self.inner.session_keys()

    def lock_session(self, key: str, timeout: float | None) -> AbstractContextManager[None]:
        return self.inner.lock_session(key, timeout)

    def segments(self, key: str) -> list[SegmentInfo]:
        return self.inner.segments(key)

    def read_segment(self, key: str, segment: int, start: int = 0) -> SegmentRead:
        return self.inner.read_segment(key, segment, start)

    def foreign_entries(self) -> list[str]:
        return self.inner.foreign_entries()

    def describe(self) -> str:
        return self.inner.describe()

    # writes
    def write_config(self, name: str, value: bytes) -> None:
        if self._crashes():
            raise SimulatedCrash("write_config")
        self.inner.write_config(name, value)

    def append(self, key: str, segment: int, entries: Iterable[bytes], expected_end: int) -> int:
        entries = list(entries)
        if self._crashes():
            if self.how != "before" and isinstance(self.inner, DirectoryBackend):
                self._tear(key, segment, entries, expected_end)
            raise SimulatedCrash("append")
        return self.inner.append(key, segment, entries, expected_end)

    def _tear(self, key: str, segment: int, entries: list[bytes], expected_end: int) -> None:
        path = segment_path(self.inner, key, segment)
        data = _framing.frames(entries)
        if expected_end == 0:
            data = _framing.new_header() + data
        torn = data[: len(data) // 2] if self.how == "half" else bytes(len(data))
        with open(path, "r+b" if os.path.exists(path) else "wb") as f:
            f.seek(expected_end)
            f.write(torn)
        self.torn = True

    def replace_segment(self, key: str, segment: int, entries: Iterable[bytes]) -> None:
        entries = list(entries)
        if self._crashes():
            if self.how != "before" and isinstance(self.inner, DirectoryBackend):
                folder = Path(segment_path(self.inner, key, segment)).parent
                (folder / ".tmp-crashed-rewrite").write_bytes(_framing.new_header() + _framing.frames(entries[:1]))
            raise SimulatedCrash("replace_segment")
        self.inner.replace_segment(key, segment, entries)

    def drop_segments(self, key: str, segments: Iterable[int]) -> None:
        numbers = list(segments)
        if self._crashes():
            if self.how != "before" and len(numbers) > 1:
                self.inner.drop_segments(key, numbers[:1])
            raise SimulatedCrash("drop_segments")
        self.inner.drop_segments(key, numbers)

    def delete_session(self, key: str) -> bool:
        if self._crashes():
            raise SimulatedCrash("delete_session")
        return self.inner.delete_session(key)

    def swap_in_session(self, staged: str, key: str) -> None:
        if self._crashes():
            raise SimulatedCrash("swap_in_session")
        self.inner.swap_in_session(staged, key)

    def cleanup_temporary(self, grace_seconds: float = 3600.0) -> int:
        if self._crashes():
            raise SimulatedCrash("cleanup_temporary")
        return self.inner.cleanup_temporary(grace_seconds)


class Golden:
    """A store built once, copied afresh (a directory tree or the memory segments) for each crash point."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind, self.tmp_path, self.copies = kind, tmp_path, 0
        self.backend: Backend = DirectoryBackend(tmp_path / "golden") if kind == "directory" else MemoryBackend()

    def copy(self) -> Backend:
        self.copies += 1
        if isinstance(self.backend, DirectoryBackend):
            root = self.tmp_path / f"copy{self.copies}"
            shutil.copytree(self.backend.root, root, symlinks=True)
            return DirectoryBackend(root, create=False)
        assert isinstance(self.backend, MemoryBackend)
        fresh = MemoryBackend()
        fresh._config = dict(self.backend._config)
        fresh._sessions = {
            key: {n: _Segment(n, list(seg.entries), seg.info.version) for n, seg in segments.items()}
            for key, segments in self.backend._sessions.items()
        }
        return fresh

    def discard(self, backend: Backend) -> None:
        backend.close()
        if isinstance(backend, DirectoryBackend):
            shutil.rmtree(backend.root)


def _listing(backend: Backend) -> list[tuple[int | None, str]]:
    """(turn, id) of every retained snapshot, read through a fresh store after a clean verify."""
    store = SnapshotStore(backend, **POLICY)
    report = store.verify(read_data=True)
    assert report.ok, report.problems
    sess = store.session(SESSION)
    snaps = sess.snapshots()
    for snap in snaps:
        assert canonical(sess.state(snap.id)) == canonical(expected_state(snap.turn or 0)), snap
    assert sess.head is not None and sess.head.id == snaps[-1].id
    return [(snap.turn, snap.id) for snap in snaps]


def _turns(listing: list[tuple[int | None, str]]) -> list[int | None]:
    return [turn for turn, _ in listing]


def _commit_next(backend: Backend) -> None:
    sess = SnapshotStore(backend, **POLICY).session(SESSION)
    head = sess.head
    turn = 0 if head is None or head.turn is None else head.turn + 1
    sess.commit(expected_state(turn), label="w", turn=turn)


def _build(backend: Backend, turns: int, keep: int) -> None:
    sess = SnapshotStore(backend, **POLICY).session(SESSION, max_snapshots=keep)
    for turn in range(turns):
        sess.commit(expected_state(turn), label="w", turn=turn)


#: name -> (turns committed before, the limit, the action crashed); each reclaims, squashes or appends
ACTIONS: dict[str, tuple[int, int, Callable[[SnapshotStore], Any]]] = {
    # the 17th commit is a keyframe that starts segment 3, and reclaim squashes segment 2 (its first run is
    # evicted); lowering the limit drops segment 1 and squashes segment 2; gc squashes segment 2
    "commit-new-segment": (16, 5, lambda store: _commit_next(store.backend)),
    "commit-delta": (13, 5, lambda store: _commit_next(store.backend)),
    "lower-limit": (14, 12, lambda store: store.session(SESSION).set_max_snapshots(3)),
    "gc": (15, 3, lambda store: store.gc(grace_seconds=0)),
}

CRASH_CASES = [
    pytest.param(kind, action, how, id=f"{kind}-{action}-{how}")
    for kind in ("directory", "memory")
    for action in ACTIONS
    for how in (("before", "half", "zeros") if kind == "directory" else ("before",))
]


@pytest.mark.parametrize(("kind", "action", "how"), CRASH_CASES)
def test_crash_at_every_write_leaves_old_or_new(tmp_path: Path, kind: str, action: str, how: str) -> None:
    """The action, stopped at each of its writes in turn (before it, or torn in the middle): afterwards
    the store holds the history before the action or after it, never a broken one, and the next
    commit lands (cutting a torn tail)."""
    turns, keep, act = ACTIONS[action]
    golden = Golden(kind, tmp_path)
    _build(golden.backend, turns, keep)
    before = _listing(golden.backend)
    scratch = golden.copy()
    counter = CrashingBackend(scratch, None)
    act(SnapshotStore(counter, **POLICY))
    after = _turns(_listing(scratch))
    golden.discard(scratch)
    assert counter.writes >= (1 if action == "commit-delta" else 2), f"{action} made {counter.writes} writes"
    for crash_at in range(1, counter.writes + 2):
        backend = golden.copy()
        crashing = CrashingBackend(backend, crash_at, how)
        with contextlib.suppress(SimulatedCrash):
            act(SnapshotStore(crashing, **POLICY))
        listing = _listing(backend)
        assert _turns(listing) in (_turns(before), after), f"write {crash_at}: {_turns(listing)}"
        survivors = {sid for _turn, sid in listing}
        assert all(sid in survivors for turn, sid in before if turn in _turns(listing)), "an old id changed"
        _commit_next(backend)  # cuts a torn tail, if any
        if crashing.torn:
            count("crash: torn appends cut by the next append")
        newest = _listing(backend)
        last = _turns(listing)[-1]
        assert isinstance(last, int) and _turns(newest)[-1] == last + 1
        assert _turns(newest) == list(range(last + 2 - len(newest), last + 2)), f"write {crash_at}: {newest}"
        SnapshotStore(backend, **POLICY).gc(grace_seconds=0)
        assert _listing(backend) == newest
        if isinstance(backend, DirectoryBackend):
            assert temporary_files(backend.root) == []
        golden.discard(backend)
        count("crash: simulated crash points checked")


def test_leftover_temporary_files_are_ignored_then_collected(tmp_path: Path) -> None:
    root = tmp_path / "store"
    backend = DirectoryBackend(root)
    _build(backend, 3, 10)
    folder = root / "sessions" / KEY
    leftovers = [folder / ".tmp-deadbeef", folder / ".tmp-", folder / ".tmp-0123"]
    leftovers.append(root / "config" / ".tmp-5b2b81ad")  # a settings write killed as a store was made
    for path in leftovers:
        path.write_bytes(b"\x00garbage, half written")
    with SnapshotStore.open(root) as store:
        report = store.verify(read_data=True)
        assert report.ok and report.foreign == []
        assert store.sessions() == [SESSION]
        assert store.gc().temporary_files_removed == 0  # young: another process's rewrite in progress
        assert store.gc(grace_seconds=0).temporary_files_removed == len(leftovers)
    assert temporary_files(root) == []
    assert _turns(_listing(DirectoryBackend(root))) == [0, 1, 2]


def test_settings_survive_a_torn_segment_start(tmp_path: Path) -> None:
    """A commit starting a segment, torn inside its checkpoint, then many more commits: the limit stays."""
    keep = 5
    backend = DirectoryBackend(tmp_path / "store")
    _build(backend, 16, keep)
    last = backend.segments(KEY)[-1].segment
    with open(segment_path(backend, KEY, last + 1), "wb") as f:  # the header, and 6 bytes of the first frame
        f.write((_framing.new_header() + _framing.frame(b"checkpoint entry"))[: _framing.HEADER_SIZE + 6])
    for _ in range(24):  # three more segments: the ones holding a checkpoint are reclaimed
        _commit_next(backend)
    store = SnapshotStore(DirectoryBackend(tmp_path / "store"), **POLICY)
    sess = store.session(SESSION)
    assert sess.max_snapshots == keep
    assert _turns(_listing(store.backend)) == list(range(40 - keep, 40))
