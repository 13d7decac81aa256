"""A store the process cannot write: every read works through the library and the command line,
and every write is a ReadOnlyStoreError that says so (issue: read-only backups must be checkable)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from cli_support import SRC
from conftest import make_read_only
from snapstore import SnapshotStore

#: the start of a script run by ``_run_as_reader``: everything it may load, loaded first (the
#: interpreter's own files may not be readable by nobody), then, under root, it becomes nobody
_AS_READER = """
import contextlib, gettext, importlib, io, json, locale, os, pkgutil, sys
import snapstore
from snapstore import SnapshotStore
from snapstore.cli import main
from snapstore.errors import ReadOnlyStoreError
for module in pkgutil.walk_packages(snapstore.__path__, "snapstore."):
    if not module.name.startswith(("snapstore.langgraph", "snapstore.backends._postgres", "snapstore.__main__")):
        importlib.import_module(module.name)
if sys.argv[-1] == "as-nobody":
    os.setgid(65534)
    os.setuid(65534)  # nobody: permissions bite (they do not for root)
"""

_CHECK = """
store = SnapshotStore.open(sys.argv[1])
sess = store.session("campaign")
ids = sess.snapshot_ids()
found = {
    "read_only": store.read_only,
    "sessions": store.sessions(),
    "snapshots": len(ids),
    "last": sess.state(ids[-1]),
    "diff": sess.diff(ids[0], ids[-1]),
    "verify": store.verify().ok,
    "quick": store.verify(read_data=False).ok,
    "stats": store.stats()["snapshots"],
    "export": store.export(os.path.join(sys.argv[2], "backup.snaparchive")).snapshots,
    "refused": [],
}
for name, write in [
    ("commit", lambda: sess.commit({"turn": 99})),
    ("rollback", lambda: sess.rollback(ids[0])),
    ("tag", lambda: sess.tag(ids[0], "keep")),
    ("new session", lambda: store.session("another")),
    ("delete", lambda: store.delete_session("campaign")),
]:
    try:
        write()
    except ReadOnlyStoreError as exc:
        assert "read-only" in str(exc), str(exc)
        found["refused"].append(name)
store.gc()  # reclaims nothing, deletes nothing, raises nothing
said = io.StringIO()
with contextlib.redirect_stdout(said):
    found["gc_exit"] = main(["--store", sys.argv[1], "gc"])
found["gc_said"] = said.getvalue()
print(json.dumps(found))
"""


def _run_as_reader(script: str, *args: str) -> tuple[dict[str, Any], str]:
    """What ``script`` (after ``_AS_READER``) printed last, as JSON, and its stderr."""
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    as_nobody = ["as-nobody"] if os.geteuid() == 0 else []
    done = subprocess.run(
        [sys.executable, "-c", _AS_READER + script, *args, *as_nobody],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
        for p in sorted(root.rglob("*"))
    }


def test_every_read_works_and_every_write_is_refused_on_a_read_only_store() -> None:
    base = Path(tempfile.mkdtemp(prefix="snapstore-read-only-store-"))
    root, out = base / "store", base / "out"
    try:
        with SnapshotStore.open(root) as store:
            sess = store.session("campaign")
            for turn in range(5):
                sess.commit({"turn": turn, "log": [f"turn {t}" for t in range(turn)], "hp": 1.0 if turn else 1})
        out.mkdir()
        base.chmod(0o755)
        out.chmod(0o777)  # where the export goes: writable by the reader
        make_read_only(root)
        before = _tree(root)
        found, _said = _run_as_reader(_CHECK, str(root), str(out))
        assert found["read_only"] is True
        assert found["sessions"] == ["campaign"] and found["snapshots"] == 5 and found["stats"] == 5
        assert found["last"] == {"turn": 4, "log": ["turn 0", "turn 1", "turn 2", "turn 3"], "hp": 1.0}
        assert found["diff"] and found["verify"] is True and found["quick"] is True
        assert found["export"] == 5
        assert found["refused"] == ["commit", "rollback", "tag", "new session", "delete"]
        assert found["gc_exit"] == 0 and found["gc_said"] == f"the store at {root} is read-only here: nothing deleted\n"
        assert _tree(root) == before  # nothing was written, nothing removed
        imported = SnapshotStore.memory()
        imported.import_archive(out / "backup.snaparchive")
        original = SnapshotStore.open(root).session("campaign").snapshot_ids()
        assert imported.session("campaign").snapshot_ids() == original
    finally:
        for folder, _dirs, _files in os.walk(base):
            os.chmod(folder, 0o755)
        shutil.rmtree(base)


_MAKE = """
found = {}
try:
    SnapshotStore.open(sys.argv[1])
except ReadOnlyStoreError as exc:
    found["open"] = str(exc)
found["init"] = main(["--store", sys.argv[1], "init"])
print(json.dumps(found))
"""


def test_making_a_store_in_a_folder_it_cannot_write_says_it_is_read_only() -> None:
    """An empty folder the process cannot write: opening a store there to make one is refused as
    read-only, not as "no snapstore store" (which reads as if the path were wrong), and nothing is made."""
    base = Path(tempfile.mkdtemp(prefix="snapstore-read-only-folder-"))
    folder = base / "store"
    try:
        folder.mkdir()
        base.chmod(0o755)
        folder.chmod(0o555)
        found, said = _run_as_reader(_MAKE, str(folder))
        assert found["open"] == f"cannot make a snapstore store at {folder}: it is read-only here"
        assert found["init"] == 1 and "read-only" in said and "no snapstore store" not in said
        assert list(folder.iterdir()) == []
    finally:
        for path, _dirs, _files in os.walk(base):
            os.chmod(path, 0o755)
        shutil.rmtree(base)


_UNREADABLE = """
store = SnapshotStore.open(sys.argv[1])
verified = store.verify()
print(json.dumps({
    "foreign": verified.foreign,
    "problems": [p.message for p in verified.problems],
    "gc_foreign": store.gc().foreign,
}))
"""


def test_a_session_folder_the_process_may_not_open_is_a_problem_not_a_foreign_entry() -> None:
    """A session's folder another user keeps to themselves (``chmod 700``) is one of the store's own:
    ``verify`` names it as a session it cannot read, and neither it nor ``gc`` lists it among the
    entries snapstore did not write (where it was listed before, as if a user had put it there)."""
    base = Path(tempfile.mkdtemp(prefix="snapstore-unreadable-session-"))
    root = base / "store"
    try:
        with SnapshotStore.open(root) as store:
            for name in ("kept", "open"):
                store.session(name).commit({"turn": 1, "name": name})
        (root / "sessions" / "stray").write_bytes(b"put here by hand")
        for path, _dirs, _files in os.walk(base):
            os.chmod(path, 0o755)
        kept = root / "sessions" / "kept"
        kept.chmod(0o700)
        found, _said = _run_as_reader(_UNREADABLE, str(root))
        if os.geteuid() == 0:  # run as nobody; a user running the suite owns the folder and reads it
            assert any("sessions/kept" in message for message in found["problems"]), found
        assert found["foreign"] == ["sessions/stray"], found
        assert found["gc_foreign"] == ["sessions/stray"], found
    finally:
        for path, _dirs, _files in os.walk(base):
            os.chmod(path, 0o755)
        shutil.rmtree(base)
