"""The directory store when something other than snapstore changes its files under it (found by an
outside trial of hostile file systems): each case with real files and a real second process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import cli_env, run
from snapstore import BackendError, LockTimeoutError, SnapshotStore

# holds a session's lock, through a handle of its own, until its standard input closes
_HOLDER = """
import sys
from snapstore.backends._directory import DirectoryBackend
with DirectoryBackend(sys.argv[1]).lock_session(sys.argv[2], 10.0):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_writer_whose_lock_file_was_deleted_waits_for_the_writer_holding_the_new_one(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = SnapshotStore.open(root, lock_timeout=0.3)
    sess = store.session("s")
    first = sess.commit({"turn": 0})  # the handle keeps the lock file open between commits
    os.unlink(root / "sessions" / sess.key / "lock")  # a cleanup script, a sync tool
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(root), sess.key],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=cli_env(),
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        # the other process holds the lock file that is there now: the flock of the deleted one is no
        # lock (before: the commit appended beside the other writer's, and two writers lost commits)
        with pytest.raises(LockTimeoutError):
            sess.commit({"turn": 1})
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    after = sess.commit({"turn": 1})
    assert after.parent == first.id
    assert [snap.id for snap in SnapshotStore.open(root).session("s").snapshots()] == [first.id, after.id]
    assert run("verify", store=root).returncode == 0


def test_a_lock_file_replaced_while_held_is_not_taken_for_the_new_one_after_a_wait(tmp_path: Path) -> None:
    """A handle whose kept lock file was replaced while another writer held it waits on the new file
    (its waiting thread opens the name): its next commit must still find its own descriptor on the old
    file. The waiting thread's open took the place of that descriptor's (device, inode), so the flock
    of the old file passed the check and the commit went on beside the writer holding the new one."""
    import fcntl

    root = tmp_path / "store"
    store = SnapshotStore.open(root, lock_timeout=0.3)
    sess = store.session("s")
    sess.commit({"turn": 0})  # the handle keeps the lock file open between commits
    lock = root / "sessions" / sess.key / "lock"
    old = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(old, fcntl.LOCK_EX)  # another writer holds it
        (lock.parent / "lock.new").write_bytes(b"")
        os.replace(lock.parent / "lock.new", lock)  # a sync tool replaces it
        sess.commit({"turn": 1})  # waits on the file at the name, which is free
    finally:
        os.close(old)  # the old file is free from here
    new = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(new, fcntl.LOCK_EX)  # a writer holds the lock file at the name
        with pytest.raises(LockTimeoutError):
            sess.commit({"turn": 2})
    finally:
        os.close(new)
    assert sess.commit({"turn": 2}).parent == sess.snapshots()[-2].id
    store.close()


def _two_segments(root: Path) -> tuple[list[str], Path]:
    """A session whose commits fill two segments; its ids and its folder."""
    import random

    rng = random.Random(0)
    with SnapshotStore.open(root) as store:
        sess = store.session("s", max_snapshots=100)
        # each state written anew and 100 kB: a keyframe each, and segments that fill up
        turns = [{"turn": t, "text": "".join(rng.choice("abcdef ") for _ in range(100_000))} for t in range(6)]
        ids = [sess.commit(state).id for state in turns]
        folder = root / "sessions" / sess.key
    assert len(list(folder.glob("*.seg"))) >= 2
    return ids, folder


@pytest.mark.parametrize("kind", ["folder", "link", "fifo"])
def test_a_segment_replaced_by_something_not_a_file_is_refused_not_passed_over(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "store"
    ids, folder = _two_segments(root)
    last = sorted(folder.glob("*.seg"))[-1]
    moved = tmp_path / "elsewhere.seg"
    os.rename(last, moved)  # a tool that moved the file out and left something in its place
    if kind == "folder":
        last.mkdir()
    elif kind == "link":
        last.symlink_to(moved)
    else:
        os.mkfifo(last)
    store = SnapshotStore.open(root)
    # before: the session read as if its newest segment had never been, its head an older snapshot,
    # verify said ok and a commit went on from that head, forking the history
    for use in (lambda: store.session("s").head, lambda: store.session("s").commit({"turn": -1})):
        with pytest.raises(BackendError, match=re.escape(f"{last.name}: not a regular file")):
            use()
    verified = run("verify", store=root)
    assert verified.returncode == 1 and f"sessions/s/{last.name}: not a regular file" in verified.stdout
    last.rmdir() if kind == "folder" else last.unlink()
    os.rename(moved, last)  # put back: nothing was written meanwhile
    assert store.session("s").head.id == ids[-1]
    assert run("verify", store=root).returncode == 0


# a writer whose every commit starts a segment and drops the one before, and a reader listing the segments
_LIST_BESIDE_DROPS = """
import os, sys, time, multiprocessing
from snapstore import SnapshotStore
from snapstore.errors import BackendError

def write(root, stop):
    sess = SnapshotStore.open(root, max_runs=1).session("s", max_snapshots=2)
    while not stop.is_set():
        sess.commit({"blob": os.urandom(150_000).hex()})  # over a small segment: each a segment of its own

if __name__ == "__main__":
    root = os.path.join(sys.argv[1], "store")
    key = SnapshotStore.open(root).session("s", max_snapshots=2).key
    stop = multiprocessing.Event()
    writer = multiprocessing.Process(target=write, args=(root, stop))
    writer.start()
    backend = SnapshotStore.open(root).backend
    refused, end = [], time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end and len(refused) < 3:
        try:
            backend.segments(key)
        except BackendError as exc:
            refused.append(str(exc))
    stop.set()
    writer.join(60)
    print(max(info.segment for info in backend.segments(key)), refused)
"""


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or not (shutil.which("mke2fs") and shutil.which("unshare")),
    reason="mounts a file system image (root, mke2fs and unshare)",
)
def test_a_segment_dropped_while_listed_on_a_file_system_without_types_is_gone_not_refused(tmp_path: Path) -> None:
    """On a file system whose listings carry no file type (ext2 without 'filetype', some network and
    FUSE ones), a segment a writer dropped after a reader listed it read as a folder or link in its
    place: the reader's session was refused ('not a regular file'), 511858e, where it is gone (the
    listing is taken again). An image mounted in a mount namespace of its own, a writer and a reader."""
    image, mount = tmp_path / "ext2.img", tmp_path / "mnt"
    mount.mkdir()
    with image.open("wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-O", "^filetype", str(image)], check=True, timeout=60)
    (tmp_path / "list.py").write_text(_LIST_BESIDE_DROPS)
    script = f'mount -o loop "{image}" "{mount}" && exec "{sys.executable}" "{tmp_path / "list.py"}" "{mount}" 4'
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    if proc.returncode != 0 and "mount" in proc.stderr and "list.py" not in proc.stderr:
        pytest.skip(f"cannot mount an image here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    last, refused = proc.stdout.split(" ", 1)
    assert refused.strip() == "[]"
    assert int(last) > 20  # the writer dropped segments all along


_IMPORT_WITHOUT_ROOM = """
import resource, signal, sys
from snapstore import SnapshotStore
from snapstore.errors import ArchiveError
store = SnapshotStore.open(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))  # no file may grow: a full disk
try:
    store.import_archive(sys.argv[2])
except ArchiveError as exc:
    print(exc)
"""


def test_an_import_with_no_usable_temporary_folder_is_an_archive_error(tmp_path: Path) -> None:
    source = SnapshotStore.open(tmp_path / "source")
    source.session("s").commit({"turn": 0})
    source.export(tmp_path / "a.snaparchive")
    target = tmp_path / "target"
    SnapshotStore.open(target).close()
    # gettempdir finds no folder it can write in: the spool's error asked it again for the message,
    # and its FileNotFoundError escaped instead of the ArchiveError
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_WITHOUT_ROOM, str(target), str(tmp_path / "a.snaparchive")],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "cannot import archive" in proc.stdout and "nothing was imported" in proc.stdout
    assert SnapshotStore.open(target).sessions() == []


_EVICT_WITHOUT_ROOM = """
import json, os, random, resource, signal, sys
from snapstore import SnapshotStore
root, call = sys.argv[1], sys.argv[2]
rng = random.Random(0)
sess = SnapshotStore.open(root, max_runs=2).session("s", max_snapshots=100)
def text(n):
    return "".join(rng.choice("abcdefgh") for _ in range(n))
# segment 1: two runs, the second tagged; segment 2: a smaller run, the head after it
ids = [sess.commit({"t": t, "b": text(140_000)}).id for t in range(2)]
sess.tag(ids[1], "keep")
sess.commit({"c": text(100_000)})
sess.commit({"x": 2})
open_segment = os.path.join(root, "sessions", sess.key, "0000000000000002.seg")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
# room to append to segment 2, none to rewrite segment 1 from its tagged run (a nearly full disk)
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(open_segment) + 2000, resource.RLIM_INFINITY))
print(json.dumps(sess.forget(1) if call == "forget" else sess.set_max_snapshots(1)))
"""


@pytest.mark.parametrize("call", ["forget", "set_max_snapshots"])
def test_an_eviction_written_whose_rewrite_fails_is_not_reported_as_failed(tmp_path: Path, call: str) -> None:
    root = tmp_path / "store"
    proc = subprocess.run(
        [sys.executable, "-c", _EVICT_WITHOUT_ROOM, str(root), call],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    # before: BackendError ("cannot write ... File too large") from reclaiming, though the eviction
    # (or the new limit) was written and stood: the caller was told it failed
    assert proc.returncode == 0, proc.stderr
    evicted = json.loads(proc.stdout)  # the first run and the untagged one after the tagged run
    store = SnapshotStore.open(root)
    assert len(evicted) == 2 and not set(evicted) & {snap.id for snap in store.session("s").snapshots()}
    store.gc(grace_seconds=0)  # the space, once there is room
    assert run("verify", store=root).returncode == 0


_OUT_OF_DESCRIPTORS = """
import os, resource, sys
from snapstore import SnapshotStore
from snapstore.errors import BackendError
store = SnapshotStore.open(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
os.close(held.pop())  # one left: the folder opens, and listing it (which takes a second) does not
for use in (store.sessions, store.verify, lambda: store.gc(grace_seconds=0)):
    try:
        use()
        print("no error")
    except BackendError as exc:
        print(exc)
for fd in held:
    os.close(fd)
print(store.sessions(), store.session("s").head.turn)
"""


def test_a_listing_out_of_descriptors_is_a_backend_error(tmp_path: Path) -> None:
    root = tmp_path / "store"
    SnapshotStore.open(root).session("s").commit({"turn": 0}, turn=0)
    proc = subprocess.run(
        [sys.executable, "-c", _OUT_OF_DESCRIPTORS, str(root)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    # before: os.scandir's OSError (EMFILE) escaped store.sessions(), verify, gc, export and stats
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        *["cannot list sessions: Too many open files"] * 3,
        "['s'] 0",
    ]


@pytest.mark.parametrize("kind", ["folder", "link"])
def test_a_format_file_replaced_is_reported_by_the_cli_not_called_no_store(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "store"
    SnapshotStore.open(root).session("s").commit({"turn": 0})
    os.unlink(root / "config" / "format")
    if kind == "folder":
        (root / "config" / "format").mkdir()
    else:
        (root / "config" / "format").symlink_to(tmp_path / "elsewhere")
    verified = run("verify", store=root)
    # before: "no snapstore store at ... (run snapstore init)", and init failed with the refusal
    assert verified.returncode == 1
    assert "refused config/format" in verified.stderr and "init" not in verified.stderr
