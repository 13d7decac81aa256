"""A session deleted and written again by another process within one tick of a file system's clock.

On a file system whose times are whole seconds, and which hands a freed inode number to the next
file made (ext4 with 128-byte inodes does both), a session deleted and written again within one
second comes back with the same segment names, the same inode numbers and the same change times.
A handle that had the session open must still see new files, not take them for the ones it knew,
whether it looks again at once or seconds later: else its next commit follows the deleted history
(a snapshot whose parent is gone), or it reads a head that is gone.

The tests need such a file system: ``SNAPSTORE_TEST_COARSE_FS`` names a folder on one, or, run as
root where ``mkfs.ext4`` and loop mounts work, they make a 64 MB one under their temporary folder
and unmount it after. Anywhere else they are skipped.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from snapstore import SnapshotStore

_WORKER = """
import sys
from snapstore import SnapshotStore

store = SnapshotStore.open(sys.argv[1], max_runs=1, max_chain=2)
print("ready", flush=True)
for line in sys.stdin:
    command, *args = line.split()
    if command == "write":  # the session written anew, what was there deleted (a reset, an import)
        if "s" in store.sessions():
            store.delete_session("s")
        session = store.session("s", max_snapshots=1000)
        for turn in range(int(args[0])):
            session.commit({"who": args[1], "turn": turn, "log": [f"line {k}" for k in range(turn % 7)],
                            "body": "x" * 300_000})
    elif command == "gc":
        store.gc(grace_seconds=0)
    print("done", flush=True)
"""
#: seconds a worker may take to answer; past it the test fails instead of hanging
ANSWER = 60.0
#: longer than the margin after which a change time of whole seconds is trusted (3 s)
AGED = 3.5


def _state(who: str, turn: int) -> dict[str, object]:
    return {"who": who, "turn": turn, "log": [f"line {k}" for k in range(turn % 7)], "body": "x" * 300_000}


@pytest.fixture
def coarse_folder(tmp_path: Path) -> Iterator[Path]:
    given = os.environ.get("SNAPSTORE_TEST_COARSE_FS")
    if given:
        folder = Path(given) / f"test-{os.getpid()}-{time.monotonic_ns()}"
        folder.mkdir(parents=True)
        yield folder
        shutil.rmtree(folder, ignore_errors=True)
        return
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None or shutil.which("mount") is None:
        pytest.skip("needs SNAPSTORE_TEST_COARSE_FS, or root with mkfs.ext4 and loop mounts")
    image, mount = tmp_path / "coarse.img", tmp_path / "mnt"
    mount.mkdir()
    with open(image, "wb") as out:
        out.truncate(64 << 20)
    made = subprocess.run(["mkfs.ext4", "-q", "-I", "128", "-F", str(image)], capture_output=True)
    if made.returncode != 0 or subprocess.run(["mount", "-o", "loop", str(image), str(mount)]).returncode != 0:
        pytest.skip("could not make and mount a file system of whole-second times here")
    try:
        yield mount
    finally:
        assert subprocess.run(["umount", "-l", str(mount)]).returncode == 0


@pytest.fixture
def other_process(coarse_folder: Path) -> Iterator[Callable[[str], None]]:
    """Another process on the store in ``coarse_folder``/store: ``ask(command)`` runs one of its commands."""
    probe = coarse_folder / "probe"
    probe.write_bytes(b"")
    whole = os.stat(probe).st_ctime_ns % 1_000_000_000 == 0
    probe.unlink()
    if not whole:
        pytest.skip(f"{coarse_folder} keeps finer times than whole seconds")
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(coarse_folder / "store")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdin is not None and worker.stdout is not None
    stdin, stdout = worker.stdin, worker.stdout

    def answer(expected: str) -> None:
        ready, _, _ = select.select([stdout], [], [], ANSWER)
        assert ready, f"the other process did not answer {expected!r} within {ANSWER} s"
        assert stdout.readline().strip() == expected

    def ask(command: str) -> None:
        stdin.write(command + "\n")
        stdin.flush()
        answer("done")

    try:
        answer("ready")
        yield ask
    finally:
        stdin.close()
        try:
            worker.wait(timeout=ANSWER)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _within_one_second(steps: Callable[[], None]) -> None:
    """Run ``steps`` within one second of the clock, trying again from the next second if they spill over."""
    for _attempt in range(3):
        time.sleep(1.02 - time.time() % 1)
        second = int(time.time())
        steps()
        if int(time.time()) == second:
            return
    pytest.skip("this machine could not delete and write the session again within one second")


@pytest.mark.parametrize("looks_again", ["at once", "seconds later"])
@pytest.mark.parametrize("last_listing", ["after its own commit", "after another process's gc"])
def test_a_session_written_again_within_the_second_is_seen_by_a_handle_that_had_it_open(
    coarse_folder: Path, other_process: Callable[[str], None], last_listing: str, looks_again: str
) -> None:
    root = coarse_folder / "store"
    holder = SnapshotStore.open(root, max_runs=1, max_chain=2)
    fresh_store = None
    try:
        session = holder.session("s", max_snapshots=1000)
        own_commit = last_listing == "after its own commit"
        for turn in range(9 if own_commit else 10):  # segments 1-3, or 1-4 with one commit in the 4th
            session.commit(_state("old", turn))
        if not own_commit:  # what a rewrite a crash interrupted leaves, for the other process's gc
            leftover = root / "sessions" / session.key / (".tmp-" + "0" * 32)
            leftover.write_bytes(b"")
            os.utime(leftover, (time.time() - 7200, time.time() - 7200))

        def steps() -> None:
            if own_commit:
                session.commit(_state("old", 9))  # starts segment 4; the holder lists under the lock
            else:
                other_process("gc")  # the folder changes
                session.set_max_snapshots(1000)  # the holder takes the lock and lists; writes nothing
            other_process(f"write {12 if own_commit else 10} new")

        _within_one_second(steps)
        if looks_again == "seconds later":
            time.sleep(AGED)  # the change times have aged past the margin
        mine = session.commit(_state("holder", 100))
        fresh_store = SnapshotStore.open(root)
        fresh = fresh_store.session("s")
        assert fresh_store.verify().problems == []
        assert fresh.state(mine.id) == _state("holder", 100)
        assert mine.parent in fresh.snapshot_ids()
        assert [s.id for s in session.snapshots()] == [s.id for s in fresh.snapshots()]
    finally:
        for store in (fresh_store, holder):
            if store is not None:
                store.close()


def test_a_reader_that_looked_within_the_second_sees_the_session_written_again(
    coarse_folder: Path, other_process: Callable[[str], None]
) -> None:
    root = coarse_folder / "store"
    SnapshotStore.open(root, max_runs=1, max_chain=2).close()
    reader, fresh_store = SnapshotStore.open(root), None
    seen = []
    try:

        def steps() -> None:
            seen.clear()
            other_process("write 12 old")
            seen.append(reader.session("s").head)
            other_process("write 12 new")

        _within_one_second(steps)
        time.sleep(AGED)
        fresh_store = SnapshotStore.open(root)
        fresh = fresh_store.session("s")
        assert seen[0] is not None and seen[0].id not in fresh.snapshot_ids()
        head, fresh_head = reader.session("s").head, fresh.head
        assert head is not None and fresh_head is not None and head.id == fresh_head.id
        assert reader.session("s").state(head.id) == fresh.state(fresh_head.id) == _state("new", 11)
    finally:
        for store in (fresh_store, reader):
            if store is not None:
                store.close()
