"""A session deleted and written again by another process within one tick of a file system's clock.

On a file system whose times are whole seconds, and which hands a freed inode number to the next
file made (ext4 with 128-byte inodes does both), a session deleted and written again within one
second comes back with the same segment names, the same inode numbers and the same change times.
A handle that had the session open must still see new files, not take them for the ones it knew:
else its next commit follows the deleted history (a snapshot whose parent is gone) or is refused.

The test needs such a file system: ``SNAPSTORE_TEST_COARSE_FS`` names a folder on one, or, run as
root where ``mkfs.ext4`` and loop mounts work, the test makes a 64 MB one under its temporary folder
and unmounts it after. Anywhere else it is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
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
    if command == "recreate":  # delete the session and write it again, as a reset or an import does
        store.delete_session("s")
        session = store.session("s", max_snapshots=1000)
        for turn in range(int(args[0])):
            session.commit({"who": "new", "turn": turn, "log": [f"line {k}" for k in range(turn % 7)],
                            "body": "x" * 300_000})
    elif command == "gc":
        store.gc(grace_seconds=0)
    print("done", flush=True)
"""


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
        subprocess.run(["umount", "-l", str(mount)])


def _whole_seconds(folder: Path) -> bool:
    probe = folder / "probe"
    probe.write_bytes(b"")
    whole = os.stat(probe).st_ctime_ns % 1_000_000_000 == 0
    probe.unlink()
    return whole


@pytest.mark.parametrize("last_listing", ["after its own commit", "after another process's gc"])
def test_a_session_written_again_within_the_second_is_seen_by_a_handle_that_had_it_open(
    coarse_folder: Path, last_listing: str
) -> None:
    if not _whole_seconds(coarse_folder):
        pytest.skip(f"{coarse_folder} keeps finer times than whole seconds")
    root = coarse_folder / "store"
    holder = SnapshotStore.open(root, max_runs=1, max_chain=2)
    session = holder.session("s", max_snapshots=1000)
    own_commit = last_listing == "after its own commit"
    for turn in range(9 if own_commit else 10):  # segments 1-3, or 1-4 with one commit in the 4th
        session.commit(_state("old", turn))
    if not own_commit:  # what a rewrite a crash interrupted leaves, for the other process's gc
        leftover = root / "sessions" / session.key / (".tmp-" + "0" * 32)
        leftover.write_bytes(b"")
        os.utime(leftover, (time.time() - 7200, time.time() - 7200))
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert worker.stdin is not None and worker.stdout is not None
    assert worker.stdout.readline().strip() == "ready"

    def ask(command: str) -> None:
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write(command + "\n")
        worker.stdin.flush()
        assert worker.stdout.readline().strip() == "done"

    try:
        for _attempt in range(3):  # all of it within one second; a slow machine may need another try
            time.sleep(1.02 - time.time() % 1)
            second = int(time.time())
            if own_commit:
                session.commit(_state("old", 9))  # starts segment 4; the holder lists under the lock
            else:
                ask("gc")  # the folder changes
                session.set_max_snapshots(1000)  # the holder takes the lock and lists; writes nothing
            ask("recreate 12" if own_commit else "recreate 10")
            if int(time.time()) == second:
                break
        else:
            pytest.skip("this machine could not delete and write the session again within one second")
        mine = session.commit(_state("holder", 100))
    finally:
        worker.stdin.close()
        worker.wait(timeout=60)
    fresh_store = SnapshotStore.open(root)
    fresh = fresh_store.session("s")
    assert fresh_store.verify().problems == []
    assert fresh.state(mine.id) == _state("holder", 100)
    assert mine.parent in fresh.snapshot_ids()
    assert [s.id for s in session.snapshots()] == [s.id for s in fresh.snapshots()]
    for store in (fresh_store, holder):
        store.close()
