"""Replacing a session in one step: ``SnapshotStore.replacing`` and an archive import with
``on_conflict="replace"``. The new history is written under a staged key and takes the session's
place at once (``Backend.swap_in_session``): an import that fails or is killed part-way leaves the
session as it was, never deleted, half-imported or a mix of the two."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import canonical
from snapstore import SnapshotStore
from snapstore.backends import Backend, DirectoryBackend, MemoryBackend
from snapstore.backends.base import STAGED_PREFIX, staged_key
from snapstore.errors import ConcurrentUpdateError, LockTimeoutError
from snapstore.store import session_key
from test_crash import CrashingBackend, SimulatedCrash

NAME = "campaign"


def _state(turn: int, flavour: str) -> dict[str, Any]:
    return {"turn": turn, "flavour": flavour, "log": [f"{flavour} line {i}" for i in range(max(0, turn - 20), turn)]}


def _history(store: SnapshotStore, turns: int, flavour: str) -> list[str]:
    sess = store.session(NAME, max_snapshots=1000)
    return [sess.commit(_state(turn, flavour), turn=turn).id for turn in range(turns)]


def _archive(tmp_path: Path, turns: int = 150) -> tuple[Path, list[str]]:
    """An archive of another history of the same session name."""
    source = SnapshotStore(MemoryBackend())
    ids = _history(source, turns, "archived")
    path = tmp_path / "campaign.snaparchive"
    source.export(path, sessions=[NAME])
    return path, ids


def _held(store: SnapshotStore) -> tuple[list[str], str | None, bytes]:
    """A session as a reader sees it: its snapshot ids, its head, its head's state."""
    sess = store.session(NAME, create=False)
    head = sess.head
    assert head is not None
    return sess.snapshot_ids(), head.id, canonical(sess.state(head.id))


class Interrupted(Exception):
    pass


def _interrupt_after(items: int) -> Callable[[int, int, str], None]:
    def progress(done: int, total: int, what: str) -> None:
        if what == "importing snapshots" and done >= items:
            raise Interrupted(f"stopped after {done} of {total}")

    return progress


def _staged_left(store: SnapshotStore) -> list[str]:
    """Staged keys holding more than a lock file (a replaced session's folder keeps its lock until gc)."""
    backend = store.backend
    if isinstance(backend, DirectoryBackend):
        sessions = Path(backend.root) / "sessions"
        return sorted(
            n for n in os.listdir(sessions) if n.startswith(STAGED_PREFIX) and os.listdir(sessions / n) != ["lock"]
        )
    if isinstance(backend, MemoryBackend):
        return sorted(k for k in backend._sessions if k.startswith(STAGED_PREFIX))
    return sorted(k for k in backend._keys() if k.startswith(STAGED_PREFIX))  # PostgreSQL: keys with rows


def test_a_replace_stopped_part_way_leaves_the_session_as_it_was(
    make_store: Callable[..., SnapshotStore], tmp_path: Path
) -> None:
    """The import fails after writing 64 of the archive's snapshots: the local session keeps its
    snapshots, head and states, no other session appears, and what was written is gone. The same
    import run to its end then gives the archive's session, and only it."""
    store = make_store()
    local = _history(store, 90, "local")
    before = _held(store)
    path, archived = _archive(tmp_path)

    with pytest.raises(Interrupted):
        store.import_archive(path, on_conflict="replace", progress=_interrupt_after(64))
    assert _held(store) == before
    assert _held(make_store()) == before  # and through a store opened afresh
    assert store.sessions() == [NAME]
    assert _staged_left(store) == []
    assert store.verify(read_data=True).ok

    report = store.import_archive(path, on_conflict="replace")
    assert [s.action for s in report.sessions] == ["replaced"]
    ids, head, state = _held(make_store())
    assert ids == archived and head == archived[-1] and state == canonical(_state(149, "archived"))
    assert not set(ids) & set(local)
    assert store.sessions() == [NAME]
    assert _staged_left(store) == []
    assert store.verify(read_data=True).ok


def test_a_session_of_a_long_name_is_replaced(make_store: Callable[..., SnapshotStore], tmp_path: Path) -> None:
    """A long name gives a long key, and an engine may size what it stores by the key (PostgreSQL
    cuts rows to fill a page with the key's length): the staged history's key is at least as long."""
    name = "the long campaign of " + "Zoë and the dragon " * 5
    lore = random.Random(5).randbytes(12_000).hex()  # a keyframe of whole rows: more than a page
    source = SnapshotStore(MemoryBackend())
    sess = source.session(name, max_snapshots=1000)
    archived = [sess.commit({**_state(turn, "archived"), "lore": lore}, turn=turn).id for turn in range(120)]
    path = tmp_path / "long.snaparchive"
    source.export(path, sessions=[name])
    store = make_store()
    local = store.session(name)
    for turn in range(5):
        local.commit(_state(turn, "local"))
    store.import_archive(path, on_conflict="replace")
    replaced = make_store().session(name)
    assert replaced.snapshot_ids() == archived[-replaced.max_snapshots :]
    assert canonical(replaced.state(archived[-1])) == canonical({**_state(119, "archived"), "lore": lore})
    assert store.verify(read_data=True).ok


def test_a_handle_opened_before_a_replace_reads_the_new_session_after_it(
    make_store: Callable[..., SnapshotStore], tmp_path: Path
) -> None:
    store = make_store()
    _history(store, 30, "local")
    reader = store.session(NAME)
    assert reader.head is not None
    path, archived = _archive(tmp_path, turns=40)
    other = make_store() if getattr(make_store, "kind", "") != "memory" else store
    other.import_archive(path, on_conflict="replace")
    head = reader.head
    assert head is not None and head.id == archived[-1]
    assert canonical(reader.state(head.id)) == canonical(_state(39, "archived"))
    reader.commit(_state(40, "archived"), turn=40)  # and writes on from it
    assert store.session(NAME).snapshot_ids()[-2:] == [archived[-1], reader.head.id]  # type: ignore[union-attr]


def test_replacing_writes_a_whole_history_in_one_step(make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store()
    _history(store, 12, "local")
    before = _held(store)
    with pytest.raises(Interrupted), store.replacing(NAME, max_snapshots=5) as staged:
        staged.commit(_state(0, "new"))
        raise Interrupted
    assert _held(store) == before
    with store.replacing(NAME, max_snapshots=5) as staged:
        ids = [staged.commit(_state(turn, "new"), turn=turn).id for turn in range(8)]
        assert _held(store) == before  # readers see the old session until the block ends
    sess = store.session(NAME)
    assert sess.snapshot_ids() == ids[-5:] and sess.max_snapshots == 5
    assert store.sessions() == [NAME] and _staged_left(store) == []
    with store.replacing("a new one") as staged:  # the session need not exist
        staged.commit({"fresh": True})
    assert store.sessions() == ["a new one", NAME]


def test_replacing_sessions_puts_several_in_place_only_while_their_heads_are_as_named(
    make_store: Callable[..., SnapshotStore],
) -> None:
    """What a LangGraph thread's rewrite stands on: two sessions replaced together, and a commit
    made meanwhile to either makes the replace fail whole, nothing changed, instead of being dropped."""
    store = make_store()
    first = [store.session("a").commit({"a": n}).id for n in range(3)][-1]
    heads: dict[str, str | None] = {"a": first, "b": None}
    for late in ("a", "b"):
        replacing = store.replacing_sessions({"a": 5, "b": 5}, heads=heads)
        with pytest.raises(ConcurrentUpdateError) as raised, replacing as staged:
            staged["a"].commit({"a": "new"})
            staged["b"].commit({"b": "new"})
            store.session(late).commit({late: "meanwhile"})  # another writer: the replace must not drop it
        assert raised.value.details["session"] == late
        assert _staged_left(store) == []
        head = store.session(late).head
        assert head is not None and store.session(late).state(head.id) == {late: "meanwhile"}
        heads[late] = head.id
    with store.replacing_sessions({"a": 5, "b": 7}, heads=heads) as staged:
        ids = {name: staged[name].commit({name: "new"}).id for name in ("a", "b")}
    for name in ("a", "b"):
        sess = store.session(name)
        assert sess.snapshot_ids() == [ids[name]] and sess.state(ids[name]) == {name: "new"}
    assert store.session("b").max_snapshots == 7 and _staged_left(store) == []


def _copy(backend: Backend, tmp_path: Path, n: int) -> Backend:
    if isinstance(backend, DirectoryBackend):
        import shutil

        root = tmp_path / f"copy{n}"
        shutil.copytree(backend.root, root, symlinks=True)
        return DirectoryBackend(root, create=False)
    from snapstore.backends._memory import _Segment

    assert isinstance(backend, MemoryBackend)
    fresh = MemoryBackend()
    fresh._config = dict(backend._config)
    fresh._sessions = {
        key: {n: _Segment(n, list(seg.entries), seg.info.version) for n, seg in segments.items()}
        for key, segments in backend._sessions.items()
    }
    return fresh


@pytest.mark.parametrize("kind", ["directory", "memory"])
def test_a_replace_stopped_at_any_write_leaves_one_session_or_the_other(tmp_path: Path, kind: str) -> None:
    """The archive import, stopped before each of its writes in turn (a crash there): the session
    is the old one or the archive's, whole; what the stopped import wrote is invisible (gc removes
    it once a week old, which ``test_a_replace_killed_part_way...`` shows)."""
    golden: Backend = DirectoryBackend(tmp_path / "golden") if kind == "directory" else MemoryBackend()
    golden_store = SnapshotStore(golden)
    _history(golden_store, 40, "local")
    before = _held(golden_store)
    path, archived = _archive(tmp_path, turns=30)
    counter = CrashingBackend(_copy(golden, tmp_path, 0), None)
    SnapshotStore(counter).import_archive(path, on_conflict="replace")
    after = _held(SnapshotStore(counter.inner))
    assert after[0] == archived
    outcomes = set()
    for crash_at in range(1, counter.writes + 1):
        backend = _copy(golden, tmp_path, crash_at)
        with pytest.raises(SimulatedCrash):
            SnapshotStore(CrashingBackend(backend, crash_at)).import_archive(path, on_conflict="replace")
        store = SnapshotStore(backend)
        found = _held(store)
        assert found in (before, after), crash_at
        outcomes.add("old" if found == before else "new")
        assert store.sessions() == [NAME]
        assert store.verify(read_data=True).ok
        store.backend.cleanup_temporary(grace_seconds=-10)
        assert _held(SnapshotStore(backend)) == found and store.sessions() == [NAME]
        backend.close()
    assert "old" in outcomes  # every write before the swap, the import's last, leaves the old session


def test_a_replace_killed_part_way_leaves_the_session_as_it_was(tmp_path: Path) -> None:
    """A real process importing with on_conflict="replace", killed with SIGKILL while it writes:
    the session is as it was, and gc removes what the killed import left once the grace has passed."""
    root = tmp_path / "store"
    store = SnapshotStore.open(root)
    _history(store, 60, "local")
    before = _held(store)
    path, _archived = _archive(tmp_path)
    script = textwrap.dedent(
        f"""
        import os, signal
        from snapstore import SnapshotStore

        def progress(done, total, what):
            if what == "importing snapshots" and done >= 64:
                os.kill(os.getpid(), signal.SIGKILL)

        SnapshotStore.open({str(root)!r}).import_archive({str(path)!r}, on_conflict="replace", progress=progress)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    fresh = SnapshotStore.open(root)
    assert _held(fresh) == before
    assert fresh.sessions() == [NAME]
    (left,) = _staged_left(fresh)  # the killed import's history: invisible
    assert fresh.verify(read_data=True).ok
    # kept by gc until it was begun a week ago (its writer could still be writing: only time tells)
    assert fresh.gc(grace_seconds=-10).temporary_files_removed == 0
    assert _staged_left(fresh) == [left]
    old = f"{STAGED_PREFIX}1-{'0' * 16}"  # as if begun in 1970, untouched since
    os.rename(root / "sessions" / left, root / "sessions" / old)
    for path in [*(root / "sessions" / old).iterdir(), root / "sessions" / old]:
        os.utime(path, (1, 1), follow_symlinks=False)
    assert fresh.gc().temporary_files_removed == 1
    assert _staged_left(fresh) == []
    assert _held(SnapshotStore.open(root)) == before


def test_a_swapped_in_session_keeps_its_lock(tmp_path: Path) -> None:
    """The staged folder takes the session's lock file as its own before it takes the session's
    place: a writer that opened the lock through the old folder and one opening it through the new
    one wait on the same lock."""
    root = tmp_path / "store"
    store = SnapshotStore.open(root)
    _history(store, 3, "local")
    key = session_key(NAME)
    staged = staged_key()
    holder = DirectoryBackend(root)
    holder.append(staged, 1, [b"staged entry"], 0)
    with holder.lock_session(key, 5.0):  # the lock file of the folder as it was
        holder.swap_in_session(staged, key)
        assert holder.read_segment(key, 1).entries == [b"staged entry"]
        other = DirectoryBackend(root)  # opens the lock file of the folder swapped in
        failed: list[BaseException] = []

        def wait() -> None:
            try:
                with other.lock_session(key, 0.2):
                    pass
            except BaseException as exc:
                failed.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        waiter.join(10)
        assert failed and isinstance(failed[0], LockTimeoutError)
    with other.lock_session(key, 5.0):  # free again once the holder lets go
        pass
    assert holder.session_keys() == [key]
    # the folder swapped out keeps only the lock file (a writer that opened it just before the
    # swap takes the lock through it), until gc removes it after the grace period
    (left,) = (n for n in os.listdir(root / "sessions") if n != key)
    assert left.startswith(STAGED_PREFIX) and os.listdir(root / "sessions" / left) == ["lock"]
    assert holder.cleanup_temporary(grace_seconds=3600) == 0
    # the waiting thread of the timed-out wait gets the flock once the holder let go, and lets go of
    # it at once: on a loaded machine gc can look in that instant, find the folder locked and keep it
    removed = 0
    for _attempt in range(100):
        removed = holder.cleanup_temporary(grace_seconds=-10)
        if removed:
            break
        time.sleep(0.02)
    assert removed == 1
    assert sorted(os.listdir(root / "sessions")) == [key]


def test_staged_keys_are_not_sessions_and_cleanup_removes_old_ones(make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store()
    _history(store, 2, "local")
    backend = store.backend
    fresh, old = staged_key(), f"{STAGED_PREFIX}1-{'0' * 16}"  # one made now, one in 1970
    for key in (fresh, old):
        backend.append(key, 1, [b"left by an interrupted replace"], 0)
    if isinstance(backend, DirectoryBackend):  # and untouched since 1970
        folder = Path(backend.root) / "sessions" / old
        for path in [*folder.iterdir(), folder]:
            os.utime(path, (1, 1), follow_symlinks=False)
    assert backend.session_keys() == [session_key(NAME)]
    assert store.sessions() == [NAME]
    if getattr(make_store, "kind", "") == "memory":
        return  # nothing outlives a memory store's process: nothing to clean
    assert backend.cleanup_temporary(grace_seconds=3600) == 1
    assert backend.segments(old) == [] and backend.segments(fresh) != []
    # one begun less than a week ago stays, whatever the grace: its replace may still be writing
    assert backend.cleanup_temporary(grace_seconds=-10) == 0
    assert backend.segments(fresh) != []
    assert store.sessions() == [NAME]


def test_gc_beside_a_replace_still_writing_leaves_its_history_whole(
    make_store: Callable[..., SnapshotStore],
) -> None:
    """gc in another handle, run between the writes of a replace (with no grace at all), removes
    nothing of it: the replace's whole history takes the session's place."""
    store = make_store()
    _history(store, 6, "local")
    other = make_store() if getattr(make_store, "kind", "") != "memory" else store
    with store.replacing(NAME, max_snapshots=100) as staged:
        ids = []
        for turn in range(30):
            ids.append(staged.commit(_state(turn, "new"), turn=turn).id)
            if turn % 10 == 5:
                other.gc(grace_seconds=-10)
    assert make_store().session(NAME).snapshot_ids() == ids
    assert store.verify(read_data=True).ok


def test_a_replace_whose_staged_history_vanished_is_refused(make_store: Callable[..., SnapshotStore]) -> None:
    """gc in another process removes a staged history left untouched for the grace period; should
    it be one a slow replace is still writing, the swap finds nothing and is refused, typed, with
    the session as it was (never emptied)."""
    from snapstore.errors import BackendError

    store = make_store()
    _history(store, 6, "local")
    before = _held(store)
    with pytest.raises(BackendError, match="no staged history"), store.replacing(NAME) as staged:
        staged.commit(_state(0, "new"))
        store.backend.delete_session(staged.key)
    assert _held(make_store()) == before


def test_without_an_atomic_exchange_a_directory_replace_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the system cannot exchange two folders in one step, two renames would leave the
    session missing between them: the replace is refused, typed, and nothing changes."""
    from snapstore.backends import _directory
    from snapstore.errors import BackendError

    store = SnapshotStore.open(tmp_path / "store")
    _history(store, 6, "local")
    before = _held(store)
    path, _archived = _archive(tmp_path, turns=20)
    monkeypatch.setattr(_directory, "_exchange", lambda folder, first, second: False)
    with pytest.raises(BackendError, match="in one step"):
        store.import_archive(path, on_conflict="replace")
    assert _held(SnapshotStore.open(tmp_path / "store")) == before
    assert _staged_left(store) == []


def test_gc_never_removes_a_staged_folder_whose_lock_is_held(tmp_path: Path) -> None:
    """The folder a replace swapped out keeps a second name of the session's lock file: while a
    writer holds the session's lock, gc leaves it, and a refused attempt keeps no lock object or
    waiting thread that a later gc would trust. A staged history being written is left the same way."""
    root = tmp_path / "store"
    store = SnapshotStore.open(root)
    _history(store, 3, "local")
    with store.replacing(NAME) as staged:
        staged.commit(_state(0, "new"))
    key = session_key(NAME)
    (left,) = (n for n in os.listdir(root / "sessions") if n != key)
    collector = DirectoryBackend(root)
    writer = DirectoryBackend(root)
    for _attempt in range(2):
        with writer.lock_session(key, 5.0):
            assert collector.cleanup_temporary(grace_seconds=-10) == 0
            assert os.listdir(root / "sessions" / left) == ["lock"]
    assert not any(k.startswith(STAGED_PREFIX) for k in collector._locks)
    assert not [t for t in threading.enumerate() if t.name.startswith(f"snapstore-lock-{STAGED_PREFIX}")]
    assert collector.cleanup_temporary(grace_seconds=-10) == 1
    assert os.listdir(root / "sessions") == [key]

    old = f"{STAGED_PREFIX}1-{'0' * 16}"  # a week-old staged history whose writer holds its lock
    writer.append(old, 1, [b"an entry"], 0)
    with writer.lock_session(old, 5.0):
        assert collector.cleanup_temporary(grace_seconds=-10) == 0
    assert collector.cleanup_temporary(grace_seconds=-10) == 1
    assert os.listdir(root / "sessions") == [key]


def test_delete_sessions_deletes_only_while_their_heads_are_as_named(
    make_store: Callable[..., SnapshotStore],
) -> None:
    """What a LangGraph rewrite that keeps nothing stands on: a commit made after the rewrite read
    the sessions is not deleted with them (it was, when the rewrite deleted them outside the locks)."""
    store = make_store()
    heads: dict[str, str | None] = {name: store.session(name).commit({name: 1}).id for name in ("a", "b")}
    heads["absent"] = None
    store.session("b").commit({"b": "meanwhile"})
    with pytest.raises(ConcurrentUpdateError) as raised:
        store.delete_sessions(heads)
    assert raised.value.details["session"] == "b" and store.sessions() == ["a", "b"]
    heads["b"] = store.session("b").head.id  # type: ignore[union-attr]
    store.delete_sessions(heads)
    assert store.sessions() == []
