"""``snapstore.upgrade``: a format-1 store rewritten as format 2, verified, all or nothing.

The input is the committed golden v1 store (tests/golden/store-v1, copied to a
temporary folder) and what tests/golden/expected-*.json say it holds. Crashes are
real: the upgrade runs in a subprocess that is killed with SIGKILL, at each phase
it reports and after delays spread over its run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import canonical, postgres_url_or_skip
from snapstore import (
    CorruptObjectError,
    FormatVersionError,
    LockTimeoutError,
    SnapshotError,
    SnapshotNotFound,
    SnapshotStore,
)
from snapstore.upgrade import UpgradeReport, upgrade_store

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
EXPECTED = {
    p.stem.removeprefix("expected-"): orjson.loads(p.read_bytes()) for p in sorted(GOLDEN.glob("expected-*.json"))
}
SNAPSHOTS = sum(len(e["snapshots"]) for e in EXPECTED.values())


@pytest.fixture
def v1_store(tmp_path: Path) -> Path:
    target = tmp_path / "store"
    shutil.copytree(GOLDEN / "store-v1", target, symlinks=True)
    return target


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and link under ``root`` with its content (a link: its target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[rel] = "folder"
    return found


def check_upgraded(target: str | Path) -> None:
    """The store holds exactly what format 1 held: sessions, ids, records, heads, limits, states."""
    with SnapshotStore.open(target, create=False) as store:
        assert store.sessions() == sorted(e["session"] for e in EXPECTED.values())
        for expected in EXPECTED.values():
            sess = store.session(expected["session"])
            assert sess.max_snapshots == expected["max_snapshots"]
            assert sess.snapshot_ids() == [s["id"] for s in expected["snapshots"]]
            assert sess.head is not None and sess.head.id == expected["head"]
            for snap, want in zip(sess.snapshots(), expected["snapshots"], strict=True):
                # the id hashes the whole record (timestamp, size, depth...): equal ids, equal records
                assert (snap.id, snap.parent, snap.label, snap.turn, snap.kind, snap.state_hash) == (
                    want["id"],
                    want["parent"],
                    want["label"],
                    want["turn"],
                    want["kind"],
                    want["state_hash"],
                )
                assert canonical(sess.state(snap.id)) == canonical(want["state"])
        report = store.verify()
        assert report.ok, report.problems
        assert report.states_rebuilt == SNAPSHOTS


def siblings(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name != target.name)


# ---------------------------------------------------------------- the upgrade


def test_a_v1_store_is_refused_until_upgraded(v1_store: Path) -> None:
    for create in (True, False):
        with pytest.raises(FormatVersionError) as err:
            SnapshotStore.open(v1_store, create=create)
        assert err.value.details["upgrade"] is True and "upgrade" in str(err.value)
    assert not (v1_store / "config" / "format").exists()


def test_upgrade_keeps_every_state_and_id(v1_store: Path) -> None:
    phases: list[tuple[str, str]] = []
    report = upgrade_store(v1_store, progress=lambda phase, detail: phases.append((phase, detail)))
    assert isinstance(report, UpgradeReport)
    assert (report.upgraded, report.from_version, report.to_version) == (True, "1", "4")
    assert (report.sessions, report.snapshots, report.states_verified) == (3, SNAPSHOTS, SNAPSHOTS)
    assert [p for p, _ in phases] == ["locked"] + ["read", "built"] * 3 + ["verified", "switched", "cleaned"]
    check_upgraded(v1_store)
    assert siblings(v1_store) == [], "the format-1 folder and the build folder are gone"
    # what format-1 code reads first says 2, and nothing of format 1 is left
    assert os.readlink(v1_store / "refs" / "config" / "format") == "2"
    assert list((v1_store / "refs").rglob("*")) == [
        v1_store / "refs" / "config",
        v1_store / "refs" / "config" / "format",
    ]
    assert [p.name for p in (v1_store / "objects").iterdir()] == ["ff"] and not any((v1_store / "objects").rglob("*/*"))
    assert not (v1_store / "locks").exists()


def test_upgrading_again_changes_nothing(v1_store: Path) -> None:
    upgrade_store(v1_store)
    before = tree_digest(v1_store)
    report = upgrade_store(str(v1_store))
    assert (report.upgraded, report.from_version, report.sessions) == (False, "4", 0)
    assert tree_digest(v1_store) == before


def test_upgraded_store_goes_on(v1_store: Path) -> None:
    upgrade_store(v1_store)
    with SnapshotStore.open(v1_store) as store:
        for expected in EXPECTED.values():
            sess = store.session(expected["session"])
            state = {"after": "upgrade", "was": sess.state(expected["head"])}
            new = sess.commit(state, label="new")
            assert new.parent == expected["head"]
            assert canonical(sess.state(new.id)) == canonical(state)
            older = expected["snapshots"][1]  # still retained after one more commit
            assert canonical(sess.rollback(older["id"])) == canonical(older["state"])
        assert store.verify().ok


def test_a_path_that_is_no_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SnapshotNotFound):
        upgrade_store(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SnapshotNotFound):
        upgrade_store(tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []
    for memory in ("memory:", ":memory:"):  # both name a store in memory, not a folder of that name
        with pytest.raises(SnapshotError, match="upgrade takes a store folder"):
            upgrade_store(memory)


def test_a_newer_v1_format_is_refused(v1_store: Path) -> None:
    (v1_store / "refs" / "config" / "format").write_bytes(b"3\n")
    before = tree_digest(v1_store)
    with pytest.raises(FormatVersionError) as err:
        upgrade_store(v1_store)
    assert err.value.details["version"] == "3"
    assert tree_digest(v1_store) == before


# ---------------------------------------------------------------- damaged format-1 stores


def _object(root: Path, key: str) -> Path:
    return root / "objects" / key[:2] / key[2:]


def _damage_delta(root: Path) -> str:
    snap = next(s for s in EXPECTED["zoe-table"]["snapshots"] if s["kind"] == "delta")
    record = orjson.loads(_decode(_object(root, snap["id"]).read_bytes()))
    path = _object(root, record["delta"])
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x20
    path.write_bytes(bytes(data))
    return str(record["delta"])


def _remove_record(root: Path) -> str:
    key = EXPECTED["long-chain"]["snapshots"][-1]["id"]
    _object(root, key).unlink()
    return str(key)


def _garble_ref(root: Path) -> str:
    ref = root / "refs" / EXPECTED["doc-example"]["ref"]
    ref.unlink()
    ref.write_text("f" * 32 + "\n")
    return "f" * 32


def _decode(blob: bytes) -> bytes:
    import zstandard

    body = blob[16:]
    return body if blob[6] == 0 else zstandard.ZstdDecompressor().decompress(body)


def _write_object(root: Path, kind: int, payload: bytes) -> str:
    from snapstore import codec

    key, blob = codec.encode_object(codec.Kind(kind), payload)
    path = _object(root, key)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(blob)
    return key


_LEAF = "832900929c4ac8ce989a5ac31dbb87aa"  # the last snapshot of "Zoë's table": no child, not the head
_ZOE_REF = EXPECTED["zoe-table"]["ref"]


def _rewrite_leaf(root: Path, change: Any, raw: bool = False) -> str:
    """Replace the leaf's record by one ``change`` makes of its body (every id kept consistent:
    the new record's id, the session document listing it, the ref naming that document), so the
    store is whole as objects go and wrong only in what ``change`` did; the new record's id."""
    from snapstore.codec import Kind

    body = orjson.loads(_decode(_object(root, _LEAF).read_bytes()))
    changed = change(root, body)
    payload = changed if raw else orjson.dumps(changed, option=orjson.OPT_SORT_KEYS)
    record = _write_object(root, Kind.RECORD, payload)
    ref = root / "refs" / _ZOE_REF
    doc = orjson.loads(_decode(_object(root, ref.read_text().strip()).read_bytes()))
    doc["snapshots"] = [record if sid == _LEAF else sid for sid in doc["snapshots"]]
    ref.write_text(_write_object(root, Kind.SESSION, orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)) + "\n")
    return record


def _delta_not_a_list(root: Path) -> str:
    from snapstore.codec import Kind

    def change(root: Path, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "delta": _write_object(root, Kind.DELTA, b'{"op":"add"}')}

    return _rewrite_leaf(root, change)


def _state_hash_of_another_state(root: Path) -> str:
    other = EXPECTED["zoe-table"]["snapshots"][0]["state_hash"]
    return _rewrite_leaf(root, lambda _root, body: {**body, "state": other})


def _record_not_canonical(root: Path) -> str:
    # the same fields, spaced out: the record's id is the hash of these bytes, which re-encode otherwise
    return _rewrite_leaf(root, lambda _root, body: orjson.dumps(body, option=orjson.OPT_INDENT_2), raw=True)


def _two_refs_for_one_session(root: Path) -> str:
    ref = root / "refs" / _ZOE_REF
    (ref.parent / "Zoe-copy").write_text(ref.read_text())
    return "Zoë's table"


@pytest.mark.parametrize(
    "damage",
    [
        _damage_delta,
        _remove_record,
        _garble_ref,
        _delta_not_a_list,
        _state_hash_of_another_state,
        _record_not_canonical,
        _two_refs_for_one_session,
    ],
)
def test_a_damaged_v1_store_fails_and_stays_as_it_was(v1_store: Path, damage: Any) -> None:
    key = damage(v1_store)
    before = tree_digest(v1_store)
    with pytest.raises(CorruptObjectError) as err:
        upgrade_store(v1_store)
    assert key in str(err.value) or key in err.value.details.values()
    assert tree_digest(v1_store) == before
    assert siblings(v1_store) == []
    with pytest.raises(FormatVersionError):
        SnapshotStore.open(v1_store)


# ---------------------------------------------------------------- SIGKILL at any point

KILLER = """
import os, signal, sys
import snapstore.upgrade
from snapstore.upgrade import upgrade_store
phase, count = sys.argv[2], int(sys.argv[3])
seen = {}
def progress(name, detail):
    print(name, flush=True)
    seen[name] = seen.get(name, 0) + 1
    if name == phase and seen[name] == count:
        os.kill(os.getpid(), signal.SIGKILL)
if phase == "between-renames":  # a system without renameat2, killed between the switch's two renames
    snapstore.upgrade._renameat2 = lambda: None
    rename = os.rename
    def killing_rename(*args, **kwargs):
        rename(*args, **kwargs)
        seen["rename"] = seen.get("rename", 0) + 1
        if seen["rename"] == 1 and str(args[1]).endswith("-v1"):
            print(phase, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    os.rename = killing_rename
upgrade_store(sys.argv[1], progress=progress)
print("done", flush=True)
"""


def _run_upgrade(target: Path, phase: str = "-", count: int = 0) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", KILLER, str(target), phase, str(count)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def check_v1_or_v2(target: Path, original: dict[str, str]) -> str:
    """Which store the folder holds after a crash: the untouched format-1 one, or the complete v2."""
    assert target.is_dir(), "the store's folder must exist at every moment"
    if not (target / "config" / "format").exists():
        now = tree_digest(target)
        assert now == original, "a format-1 store must be exactly as it was"
        with pytest.raises(FormatVersionError):
            SnapshotStore.open(target)
        return "v1"
    check_upgraded(target)
    return "v2"


@pytest.mark.parametrize(
    ("phase", "count", "expected"),
    [
        ("locked", 1, "v1"),
        ("read", 2, "v1"),
        ("built", 3, "v1"),
        ("verified", 1, "v1"),
        ("switched", 1, "v2"),
        ("cleaned", 1, "v2"),
    ],
)
def test_sigkill_at_each_phase(v1_store: Path, phase: str, count: int, expected: str) -> None:
    original = tree_digest(v1_store)
    child = _run_upgrade(v1_store, phase, count)
    out, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, err.decode()
    assert out.decode().split()[-1] == phase
    assert check_v1_or_v2(v1_store, original) == expected
    report = upgrade_store(v1_store)  # the next run finishes the job and removes what was left
    assert report.upgraded == (expected == "v1")
    check_upgraded(v1_store)
    assert siblings(v1_store) == []


def test_sigkill_after_delays_spread_over_the_run(v1_store: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    shutil.copytree(v1_store, reference, symlinks=True)
    started = time.monotonic()
    child = _run_upgrade(reference)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0 and out.decode().split()[-1] == "done", err.decode()
    duration = time.monotonic() - started
    original = tree_digest(v1_store)
    outcomes = set()
    for step in range(1, 13):
        copy = tmp_path / f"run{step}" / "store"
        shutil.copytree(v1_store, copy, symlinks=True)
        child = _run_upgrade(copy)
        time.sleep(duration * step / 12)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=120)
        outcomes.add(check_v1_or_v2(copy, original))
        upgrade_store(copy)
        check_upgraded(copy)
        assert siblings(copy) == []
    assert outcomes <= {"v1", "v2"}


# ---------------------------------------------------------------- format-1 code on the upgraded store


def _v1_source(tmp_path: Path) -> Path:
    """The format-1 package from the repository's history (the commit before the v2 engine)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the git history (a clone, not an sdist)")
    found = subprocess.run(
        ["git", "log", "--format=%H", "-1", "--", "src/snapstore/objects.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    commit = subprocess.run(
        ["git", "log", "--format=%H", "--grep", "Storage engine v2 core", "-1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if found.returncode != 0 or not commit:
        pytest.skip("the commit that introduced format 2 is not in this clone's history")
    target = tmp_path / "v1code"
    target.mkdir()
    archive = subprocess.run(["git", "archive", f"{commit}^", "src/snapstore"], cwd=ROOT, capture_output=True)
    if archive.returncode != 0:
        pytest.skip("the format-1 sources are not in this clone's history")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "src"


V1_OPEN = """
import sys
from snapstore import FormatVersionError, SnapshotStore
try:
    SnapshotStore.open(sys.argv[1], create=sys.argv[2] == "create")
except FormatVersionError as exc:
    print("refused:", exc)
else:
    print("opened")
"""


def test_format_1_code_refuses_the_upgraded_store(v1_store: Path, tmp_path: Path) -> None:
    source = _v1_source(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(source)}

    def open_with_v1(create: str) -> str:
        done = subprocess.run([sys.executable, "-c", V1_OPEN, str(v1_store), create], env=env, capture_output=True)
        return done.stdout.decode().strip() + done.stderr.decode()

    assert open_with_v1("create") == "opened"  # format-1 code reads the golden store
    upgrade_store(v1_store)
    for create in ("create", "no"):
        said = open_with_v1(create)
        assert said.startswith("refused:") and "format version 2" in said and "reads version 1" in said, said
    check_upgraded(v1_store)


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_v1_store(v1_store: Path) -> Iterator[str]:
    """A format-1 store in a fresh schema, holding the golden store's objects and refs (docs/format.md)."""
    import psycopg

    url = postgres_url_or_skip()
    schema = f"upgrade_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f'CREATE TABLE {schema}.snapstore_objects (key text COLLATE "C" PRIMARY KEY, data bytea NOT NULL)')
        conn.execute(f'CREATE TABLE {schema}.snapstore_refs (name text COLLATE "C" PRIMARY KEY, value text NOT NULL)')
        conn.execute(f'CREATE TABLE {schema}.snapstore_meta (key text COLLATE "C" PRIMARY KEY, value text)')
        for path in sorted((v1_store / "objects").glob("*/*")):
            conn.execute(
                f"INSERT INTO {schema}.snapstore_objects VALUES (%s, %s)",
                [path.parent.name + path.name, path.read_bytes()],
            )
        for path in sorted((v1_store / "refs").rglob("*")):
            if path.is_file():
                name = str(path.relative_to(v1_store / "refs"))
                conn.execute(f"INSERT INTO {schema}.snapstore_refs VALUES (%s, %s)", [name, path.read_text().strip()])
        conn.execute(f"INSERT INTO {schema}.snapstore_meta VALUES ('schema_version', '1')")
    separator = "&" if "?" in url else "?"
    yield f"{url}{separator}options=-csearch_path%3D{schema}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def assert_refused_until_upgraded(url: str) -> None:
    from snapstore.backends import open_backend

    backend = open_backend(url)  # closed here: a store refused in its constructor leaves it open
    try:
        with pytest.raises(FormatVersionError) as err:
            SnapshotStore(backend)
        assert err.value.details["upgrade"] is True
    finally:
        backend.close()


def _pg_rows(url: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return {
            "objects": conn.execute("SELECT key, md5(data) FROM snapstore_objects ORDER BY key").fetchall(),
            "refs": conn.execute("SELECT name, value FROM snapstore_refs ORDER BY name").fetchall(),
            "meta": conn.execute("SELECT key, value FROM snapstore_meta WHERE key = 'schema_version'").fetchall(),
        }


def test_postgres_upgrade(pg_v1_store: str) -> None:
    before = _pg_rows(pg_v1_store)
    assert_refused_until_upgraded(pg_v1_store)
    report = upgrade_store(pg_v1_store)
    assert (report.upgraded, report.sessions, report.states_verified) == (True, 3, SNAPSHOTS)
    check_upgraded(pg_v1_store)
    after = _pg_rows(pg_v1_store)
    assert after["objects"] == before["objects"] and after["refs"] == before["refs"], "format-1 rows stay, unused"
    assert after["meta"] == [("schema_version", "4")], "format-1 code refuses the store from now on"
    assert upgrade_store(pg_v1_store).upgraded is False


@pytest.mark.parametrize(("phase", "expected"), [("verified", "v1"), ("copied", "v1"), ("switched", "v2")])
def test_postgres_sigkill(pg_v1_store: str, phase: str, expected: str) -> None:
    before = _pg_rows(pg_v1_store)
    child = _run_upgrade(pg_v1_store, phase, 1)  # type: ignore[arg-type]
    _out, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, err.decode()
    if expected == "v1":
        assert _pg_rows(pg_v1_store) == before, "format-1 rows and schema_version untouched"
        assert_refused_until_upgraded(pg_v1_store)
    else:
        check_upgraded(pg_v1_store)
    assert upgrade_store(pg_v1_store).upgraded == (expected == "v1")
    check_upgraded(pg_v1_store)


# ---------------------------------------------------------------- format-1 writers are waited for


def test_a_v1_commit_in_flight_holds_the_upgrade_off(v1_store: Path) -> None:
    import fcntl

    before = tree_digest(v1_store)
    fd = os.open(v1_store / "locks" / "gc.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # what a format-1 commit holds while it writes
        with pytest.raises(LockTimeoutError) as err:
            upgrade_store(v1_store, lock_timeout=0.2)
        assert "format-1 writers" in str(err.value)
    finally:
        os.close(fd)
    assert tree_digest(v1_store) == before and siblings(v1_store) == []
    upgrade_store(v1_store)
    check_upgraded(v1_store)


# ---------------------------------------------------------------- format-1 stores written here from docs/format.md §7


def write_v1_store(root: Path, sessions: list[dict[str, Any]]) -> dict[str, list[str]]:
    """A format-1 directory store: each session's states as a keyframe and deltas, its document and ref.

    A session spec: name, states, max_snapshots, and optionally ``listed`` (indexes of the snapshots
    its document lists), ``head`` (an index) and ``record_session`` (the name its records carry).
    Returns every session's snapshot ids in commit order.
    """
    from urllib.parse import quote

    from snapstore import codec
    from snapstore.codec import Kind
    from snapstore.delta import diff
    from snapstore.objects import SessionDoc, SnapshotRecord

    def put(kind: Kind, payload: bytes) -> str:
        key, blob = codec.encode_object(kind, payload)
        path = root / "objects" / key[:2] / key[2:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
        return key

    (root / "refs" / "sessions").mkdir(parents=True)
    (root / "locks").mkdir()
    (root / "locks" / "gc.lock").touch()  # what format 1 made at its first commit
    (root / "refs" / "config").mkdir()
    (root / "refs" / "config" / "format").write_text("1\n")
    made = {}
    for spec in sessions:
        ids: list[str] = []
        previous: Any = None
        for turn, state in enumerate(spec["states"]):
            data = codec.dumps(state)
            state_hash = put(Kind.STATE, data) if previous is None else codec.object_id(data)
            delta = None if previous is None else put(Kind.DELTA, codec.dumps(diff(previous, state)))
            record = SnapshotRecord(
                session=spec.get("record_session", spec["name"]),
                parent=ids[-1] if ids else None,
                state=state_hash,
                delta=delta,
                label=f"turn {turn}",
                timestamp=f"2025-06-01T00:00:{turn % 60:02d}.{turn:06d}Z",
                turn=turn,
                size=len(data),
                depth=turn,
                chain_bytes=0,
                base_ratio=1.0,
            )
            ids.append(put(Kind.RECORD, record.to_payload()))
            previous = state
        listed = [ids[i] for i in spec.get("listed", range(len(ids)))]
        head = ids[spec["head"]] if "head" in spec else (ids[-1] if ids else None)
        doc = SessionDoc(spec["name"], spec["max_snapshots"], head, listed, [], [], 1)
        doc_id = put(Kind.SESSION, doc.to_payload())
        (root / "refs" / "sessions" / quote(spec["name"], safe="")).write_text(doc_id + "\n")
        made[spec["name"]] = ids
    return made


def _states(count: int) -> list[dict[str, Any]]:
    return [
        {"turn": t, "hp": 1.0 * t, "log": [f"line {i}" for i in range(t % 40)], "flag": t % 2 == 0}
        for t in range(count)
    ]


def test_upgrade_of_sessions_format_1_could_hold(tmp_path: Path) -> None:
    root = tmp_path / "store"
    states = _states(120)
    ids = write_v1_store(
        root,
        [
            {"name": "long", "states": states, "max_snapshots": 50, "listed": range(70, 120)},
            {"name": "older head", "states": states[:6], "max_snapshots": 3, "listed": [3, 4, 5], "head": 1},
            {"name": "empty", "states": [], "max_snapshots": 7},
        ],
    )
    report = upgrade_store(root)
    assert (report.sessions, report.snapshots, report.states_verified) == (3, 53, 54)
    with SnapshotStore.open(root, create=False) as store:
        assert store.sessions() == ["empty", "long", "older head"]
        long = store.session("long")
        assert long.snapshot_ids() == ids["long"][70:] and long.head is not None and long.head.id == ids["long"][-1]
        for sid, state in zip(ids["long"][70:], states[70:], strict=True):
            assert canonical(long.state(sid)) == canonical(state)
        kinds = {log.mode for log in long._log.commits.values()}
        assert kinds & {2, 3}, "deltas whose parent came along are stored as deltas again"
        older = store.session("older head")
        assert older.snapshot_ids() == ids["older head"][3:6]
        assert older.head is not None and older.head.id == ids["older head"][1]
        assert older._log.rebuild(ids["older head"][1]) == states[1]  # readable, not listed
        assert older.commit({"after": 1}).parent == ids["older head"][1]
        empty = store.session("empty")
        assert len(empty) == 0 and empty.max_snapshots == 7 and empty.head is None
        assert store.verify().ok


def test_records_of_another_session_name_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    write_v1_store(
        root, [{"name": "renamed-imported", "record_session": "renamed", "states": _states(3), "max_snapshots": 5}]
    )
    before = tree_digest(root)
    with pytest.raises(SnapshotError) as err:
        upgrade_store(root)
    assert err.value.details["record_session"] == "renamed" and "renamed-imported" in str(err.value)
    assert tree_digest(root) == before and siblings(root) == []


def test_postgres_upgrade_waits_for_v1_commits(pg_v1_store: str) -> None:
    """docs/format.md §7.7: format-1 commits hold the gc lock shared; the upgrade takes it exclusively."""
    import hashlib

    import psycopg

    before = _pg_rows(pg_v1_store)
    with psycopg.connect(pg_v1_store, autocommit=True) as conn:
        schema = conn.execute("SELECT current_schema()").fetchone()[0]  # type: ignore[index]
        parts = "\x00".join(("snapstore-lock", schema, "", "gc")).encode("utf-8")
        lock_id = int.from_bytes(hashlib.blake2b(parts, digest_size=8).digest(), "big", signed=True)
        conn.execute("SELECT pg_advisory_lock_shared(%s)", [lock_id])
        with pytest.raises(LockTimeoutError):
            upgrade_store(pg_v1_store, lock_timeout=0.3)
    assert _pg_rows(pg_v1_store) == before
    assert upgrade_store(pg_v1_store).upgraded
    check_upgraded(pg_v1_store)


def test_switch_by_two_renames_where_folders_cannot_be_exchanged(
    v1_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import snapstore.upgrade

    monkeypatch.setattr(snapstore.upgrade, "_renameat2", lambda: None)  # as on a system without it
    assert upgrade_store(v1_store).upgraded
    check_upgraded(v1_store)
    assert siblings(v1_store) == []


def test_sigkill_between_the_two_renames(v1_store: Path) -> None:
    child = _run_upgrade(v1_store, "between-renames", 0)
    out, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, err.decode()
    assert out.decode().split()[-1] == "between-renames"
    assert not v1_store.exists(), "the store's path is empty between the two renames"
    report = upgrade_store(v1_store)  # moves the verified build into place
    assert report.upgraded
    check_upgraded(v1_store)
    assert siblings(v1_store) == []
