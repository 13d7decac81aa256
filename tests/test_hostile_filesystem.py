"""The directory store when something other than snapstore changes its files under it (found by an
outside trial of hostile file systems): each case with real files and a real second process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import cli_env, run
from snapstore import LockTimeoutError, SnapshotStore

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
