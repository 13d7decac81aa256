"""Approach adapters: the alternatives snapstore is measured against, and snapstore itself.

Every adapter has the same small interface, driven by ``benchmarks.run``:

``available() -> (ok, reason)``   classmethod; False when an optional dependency is missing
``open(workdir)``                 prepare an empty store in ``workdir`` (a fresh directory)
``commit(state, turn) -> handle`` snapshot the live state; the caller mutates it in place
                                  afterwards, so the adapter must not keep a reference
``restore(handle) -> state``      a fresh, independent copy of that snapshot
``rollback(handle) -> state``     what a game would call to go back (default: restore)
``retained() -> [handle]``        snapshots still retrievable, oldest first
``finalize()``                    end-of-run housekeeping before sizes are read (git gc)
``bytes_on_disk() -> DiskUsage``  apparent and allocated bytes, or None for in-memory stores
``bytes_stored() -> DiskUsage``   the bytes the run reports: bytes_on_disk() by default; a
                                  database store reports its tables instead (not files)
``close()``

Only ``commit`` calls are timed for the commit figures; ``finalize``,
``bytes_on_disk`` and ``bytes_stored`` are never inside a timed region.
"""

from __future__ import annotations

import copy
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import jsonpatch
import orjson
import zstandard

ZSTD_LEVEL = 3

__all__ = [
    "ADAPTERS",
    "Adapter",
    "DiskUsage",
    "DeepcopyList",
    "FullZstdFiles",
    "JsonPatchZstd",
    "GitPerTurn",
    "LangGraphSqlite",
    "SnapstoreDirectory",
    "SnapstoreMemory",
    "SnapstorePostgres",
    "disk_usage",
    "import_snapstore",
]


@dataclass(frozen=True)
class DiskUsage:
    apparent: int    # sum of st_size
    allocated: int   # sum of st_blocks * 512 (what the filesystem really uses)
    files: int


def disk_usage(path: Path) -> DiskUsage:
    """Walk ``path`` (not following symlinks) and add up every file."""
    apparent = allocated = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            apparent += st.st_size
            allocated += st.st_blocks * 512
            files += 1
    return DiskUsage(apparent, allocated, files)


class Adapter:
    """Base class; see the module docstring for the protocol."""

    name: ClassVar[str] = "abstract"
    label: ClassVar[str] = "abstract"
    kind: ClassVar[str] = "baseline"          # "baseline" or "snapstore"
    on_disk: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def __init__(self, max_snapshots: int = 1000) -> None:
        self.max_snapshots = max_snapshots
        self.workdir: Path | None = None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    def open(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)

    def commit(self, state: dict[str, Any], turn: int) -> Any:
        raise NotImplementedError

    def restore(self, handle: Any) -> dict[str, Any]:
        raise NotImplementedError

    def rollback(self, handle: Any) -> dict[str, Any]:
        return self.restore(handle)

    def retained(self) -> list[Any]:
        raise NotImplementedError

    def finalize(self) -> None:
        pass

    def bytes_on_disk(self) -> DiskUsage | None:
        if not self.on_disk or self.workdir is None:
            return None
        return disk_usage(self.workdir)

    def bytes_stored(self) -> DiskUsage | None:
        """What the run reports as the store's size; files under workdir unless overridden."""
        return self.bytes_on_disk()

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------
# in-memory reference: deep copies in a list

class DeepcopyList(Adapter):
    """``copy.deepcopy`` of the state into a bounded list (the usual in-memory undo stack).

    Keeps at most ``max_snapshots`` copies, like snapstore's retention, so the
    two in-memory figures compare like with like. Restore deep-copies again
    so the caller gets an independent object.
    """

    name = "deepcopy"
    label = "deepcopy list"
    on_disk = False
    description = "copy.deepcopy per turn into a list bounded to max_snapshots"

    def open(self, workdir: Path) -> None:
        super().open(workdir)
        self._copies: OrderedDict[int, dict[str, Any]] = OrderedDict()

    def commit(self, state: dict[str, Any], turn: int) -> int:
        self._copies[turn] = copy.deepcopy(state)
        while len(self._copies) > self.max_snapshots:
            self._copies.popitem(last=False)
        return turn

    def restore(self, handle: int) -> dict[str, Any]:
        return copy.deepcopy(self._copies[handle])

    def retained(self) -> list[int]:
        return list(self._copies)

    def close(self) -> None:
        self._copies = OrderedDict()


# ---------------------------------------------------------------------------
# a full zstd-3 file per snapshot

class _ZstdFilesAdapter(Adapter):
    """Shared set-up of the approaches that write one zstd-3 file per snapshot."""

    def open(self, workdir: Path) -> None:
        super().open(workdir)
        self._dir = str(workdir)
        self._cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self._dctx = zstandard.ZstdDecompressor()
        self._turns: list[int] = []


class FullZstdFiles(_ZstdFilesAdapter):
    """``orjson.dumps`` + zstd level 3, one file per snapshot (plain write, no fsync)."""

    name = "full-zstd"
    label = "full zstd-3 file"
    description = "orjson.dumps + zstd-3 of the whole state, one file per snapshot"

    def _path(self, turn: int) -> str:
        # plain strings: pathlib interns every path part, which would show up as
        # memory "held" by the adapter in the tracemalloc pass
        return os.path.join(self._dir, f"{turn:08d}.json.zst")

    def commit(self, state: dict[str, Any], turn: int) -> int:
        blob = self._cctx.compress(orjson.dumps(state))
        with open(self._path(turn), "wb") as f:
            f.write(blob)
        self._turns.append(turn)
        return turn

    def restore(self, handle: int) -> dict[str, Any]:
        with open(self._path(handle), "rb") as f:
            return orjson.loads(self._dctx.decompress(f.read()))

    def retained(self) -> list[int]:
        return list(self._turns)


# ---------------------------------------------------------------------------
# naive RFC 6902 deltas with jsonpatch

class JsonPatchZstd(_ZstdFilesAdapter):
    """``jsonpatch.make_patch(parent, state)`` + zstd-3, one file per delta.

    The first snapshot is a full state; every later one a patch against its
    parent. The adapter keeps the parent in memory and brings it forward by
    applying the patch it just made (cheaper than re-copying the whole state),
    so the commit cost is essentially make_patch + serialise + compress + write.
    Restore walks the chain from the first full state, applying every patch.
    """

    name = "jsonpatch-zstd"
    label = "jsonpatch.make_patch + zstd"
    description = "jsonpatch.make_patch vs parent, zstd-3 per delta file; restore replays the chain"

    def open(self, workdir: Path) -> None:
        super().open(workdir)
        self._parent: dict[str, Any] | None = None

    def _path(self, turn: int) -> str:
        return os.path.join(self._dir, f"{turn:08d}.zst")

    def _read(self, turn: int) -> Any:
        with open(self._path(turn), "rb") as f:
            return orjson.loads(self._dctx.decompress(f.read()))

    def commit(self, state: dict[str, Any], turn: int) -> int:
        if self._parent is None:
            raw = orjson.dumps(state)
            self._parent = orjson.loads(raw)
        else:
            patch = jsonpatch.make_patch(self._parent, state)
            raw = orjson.dumps(patch.patch)
            patch.apply(self._parent, in_place=True)
        with open(self._path(turn), "wb") as f:
            f.write(self._cctx.compress(raw))
        self._turns.append(turn)
        return turn

    def restore(self, handle: int) -> dict[str, Any]:
        doc = self._read(self._turns[0])
        for turn in self._turns[1:]:
            if turn > handle:
                break
            doc = jsonpatch.apply_patch(doc, self._read(turn), in_place=True)
        return doc

    def retained(self) -> list[int]:
        return list(self._turns)

    def close(self) -> None:
        self._parent = None


# ---------------------------------------------------------------------------
# git: one commit of state.json per turn

class GitPerTurn(Adapter):
    """``state.json`` (orjson, 2-space indent) committed with ``git commit -a`` every turn.

    Automatic gc is disabled during the run (it would fire at a random turn);
    ``finalize`` runs ``git gc`` once and the size reported is ``.git`` after it.
    Restore is ``git show <rev>:state.json`` + orjson.loads.
    """

    name = "git"
    label = "git commit per turn"
    description = "state.json (indent 2) + git commit per turn; size of .git after git gc"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if shutil.which("git") is None:
            return False, "no git binary on PATH"
        return True, ""

    def open(self, workdir: Path) -> None:
        super().open(workdir)
        assert self.workdir is not None
        self._repo = self.workdir / "repo"
        self._repo.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(
            GIT_CONFIG_NOSYSTEM="1",
            GIT_CONFIG_GLOBAL=os.devnull,
            GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
            GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid",
        )
        self._env = env
        self._state_path = str(self._repo / "state.json")
        self._ref_path = str(self._repo / ".git" / "refs" / "heads" / "main")
        self._git("init", "-q", "-b", "main")
        self._git("config", "gc.auto", "0")
        self._git("config", "commit.gpgsign", "false")
        self._revs: OrderedDict[int, str] = OrderedDict()
        self.gc_seconds: float | None = None

    def _git(self, *args: str, capture: bool = False) -> bytes:
        res = subprocess.run(
            ["git", *args], cwd=self._repo, env=self._env, check=True,
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        )
        return res.stdout if capture else b""

    def commit(self, state: dict[str, Any], turn: int) -> str:
        with open(self._state_path, "wb") as f:
            f.write(orjson.dumps(state, option=orjson.OPT_INDENT_2))
        if not self._revs:
            self._git("add", "state.json")
        self._git("commit", "-q", "-a", "--no-verify", "-m", f"turn {turn}")
        with open(self._ref_path, "rb") as f:
            rev = f.read().strip().decode()
        self._revs[turn] = rev
        return rev

    def restore(self, handle: str) -> dict[str, Any]:
        return orjson.loads(self._git("show", f"{handle}:state.json", capture=True))

    def retained(self) -> list[str]:
        return list(self._revs.values())

    def finalize(self) -> None:
        import time
        t0 = time.perf_counter()
        self._git("gc", "-q")
        self.gc_seconds = time.perf_counter() - t0

    def bytes_on_disk(self) -> DiskUsage | None:
        return disk_usage(self._repo / ".git")


# ---------------------------------------------------------------------------
# LangGraph's SqliteSaver (optional)

class LangGraphSqlite(Adapter):
    """LangGraph ``SqliteSaver.put`` of a checkpoint whose single channel holds the state.

    This is how a LangGraph agent persists its state: every checkpoint stores
    the full serialised channel values (msgpack via JsonPlusSerializer) in a
    SQLite file, committed per put (SQLite defaults: rollback journal,
    synchronous=FULL).
    """

    name = "langgraph-sqlite"
    label = "LangGraph SqliteSaver"
    description = "langgraph.checkpoint.sqlite.SqliteSaver.put per turn (full state per checkpoint)"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import langgraph.checkpoint.sqlite  # noqa: F401
        except Exception as exc:  # pragma: no cover - optional extra
            return False, f"langgraph.checkpoint.sqlite not importable ({exc.__class__.__name__})"
        return True, ""

    def open(self, workdir: Path) -> None:
        super().open(workdir)
        from langgraph.checkpoint.base.id import uuid6
        from langgraph.checkpoint.sqlite import SqliteSaver

        assert self.workdir is not None
        self._uuid6 = uuid6
        self._conn = sqlite3.connect(str(self.workdir / "checkpoints.sqlite"),
                                     check_same_thread=False)
        self._saver: Any = SqliteSaver(self._conn)  # typed only where the bench extra is installed
        self._saver.setup()
        self._ids: OrderedDict[int, str] = OrderedDict()
        self._thread = "bench"

    def _config(self, checkpoint_id: str | None) -> dict[str, Any]:
        conf: dict[str, Any] = {"thread_id": self._thread, "checkpoint_ns": ""}
        if checkpoint_id is not None:
            conf["checkpoint_id"] = checkpoint_id
        return {"configurable": conf}

    def commit(self, state: dict[str, Any], turn: int) -> str:
        parent = next(reversed(self._ids.values())) if self._ids else None
        cid = str(self._uuid6(clock_seq=turn))
        checkpoint = {
            "v": 1,
            "id": cid,
            "ts": f"2024-01-01T00:00:00.{turn:06d}+00:00",
            "channel_values": {"state": state},
            "channel_versions": {"state": turn},
            "versions_seen": {},
            "pending_sends": [],
            "updated_channels": ["state"],
        }
        self._saver.put(self._config(parent), checkpoint,
                        {"source": "loop", "step": turn, "parents": {}},
                        {"state": turn})
        self._ids[turn] = cid
        return cid

    def restore(self, handle: str) -> dict[str, Any]:
        tup = self._saver.get_tuple(self._config(handle))
        assert tup is not None, handle
        return tup.checkpoint["channel_values"]["state"]

    def retained(self) -> list[str]:
        return list(self._ids.values())

    def close(self) -> None:
        self._conn.close()


# ---------------------------------------------------------------------------
# snapstore

def import_snapstore() -> Any:
    """Import snapstore, falling back to the repository's src/ when it is not installed."""
    try:
        import snapstore
        return snapstore
    except ImportError:
        src = Path(__file__).resolve().parent.parent / "src"
        if src.is_dir() and str(src) not in sys.path:
            sys.path.insert(0, str(src))
        import snapstore
        return snapstore


#: settings every snapstore store of the run is opened with, from a JSON object in the environment
#: (``{"rebuild_budget": 3.0, "max_runs": 5}``): how docs/design.md measures the keyframe policy
STORE_SETTINGS_ENV = "SNAPSTORE_BENCH_STORE_SETTINGS"


def store_settings() -> dict[str, Any]:
    settings = orjson.loads(os.environ.get(STORE_SETTINGS_ENV) or "{}")
    if not isinstance(settings, dict):
        raise ValueError(f"{STORE_SETTINGS_ENV} must be a JSON object of SnapshotStore settings")
    return settings


class SnapstoreAdapter(Adapter):
    kind = "snapstore"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            mod = import_snapstore()
            mod.SnapshotStore  # noqa: B018
        except Exception as exc:
            return False, f"snapstore not usable ({exc.__class__.__name__}: {exc})"
        return True, ""

    def _make_store(self) -> Any:
        raise NotImplementedError

    def open(self, workdir: Path) -> None:
        super().open(workdir)
        self._store = self._make_store()
        self._sess = self._store.session("bench", max_snapshots=self.max_snapshots)

    def commit(self, state: dict[str, Any], turn: int) -> str:
        return self._sess.commit(state, label=f"t{turn}", turn=turn).id

    def restore(self, handle: str) -> dict[str, Any]:
        return self._sess.state(handle)

    def rollback(self, handle: str) -> dict[str, Any]:
        return self._sess.rollback(handle)

    def retained(self) -> list[str]:
        return [s.id for s in self._sess.snapshots()]

    def cold_read(self, handle: str) -> dict[str, Any]:
        """Read one snapshot as a restarted process does: open the store and the session, then ask for
        the snapshot's state, all timed (``last_cold_read_ns``)."""
        t0 = time.perf_counter_ns()
        store = self._cold_store()
        try:
            state = store.session("bench").state(handle)
            self.last_cold_read_ns = time.perf_counter_ns() - t0
            return state
        finally:
            if store.backend is not self._store.backend:
                store.close()

    def cold_rebuild(self, handle: str) -> dict[str, Any]:
        """Rebuild one snapshot through a fresh store handle: no cached head, no decoded segment."""
        store = self._cold_store()
        try:
            sess = store.session("bench")
            sess.snapshot_ids()  # reading the index is opening the store, not the rebuild
            t0 = time.perf_counter_ns()
            state = sess.state(handle)
            self.last_cold_ns = time.perf_counter_ns() - t0
            return state
        finally:
            if store.backend is not self._store.backend:  # a store of its own (directory): close it
                store.close()

    def _cold_store(self) -> Any:
        # another store object over the same engine: its sessions share no cache with ours
        return import_snapstore().SnapshotStore(self._store.backend, **store_settings())

    def stats(self) -> dict[str, Any]:
        return self._store.stats()

    def close(self) -> None:
        self._store.close()


class SnapstoreDirectory(SnapstoreAdapter):
    name = "snapstore-dir"
    label = "snapstore (directory)"
    description = "SnapshotStore.open(dir): zstd RFC 6902 deltas + keyframes, content-addressed"

    def _make_store(self) -> Any:
        assert self.workdir is not None
        return import_snapstore().SnapshotStore.open(self.workdir / "store", **store_settings())

    def _cold_store(self) -> Any:
        assert self.workdir is not None
        return import_snapstore().SnapshotStore.open(self.workdir / "store", **store_settings())


class SnapstoreMemory(SnapstoreAdapter):
    name = "snapstore-mem"
    label = "snapstore (memory)"
    on_disk = False
    description = "SnapshotStore.memory(): same engine, objects kept in memory"

    def _make_store(self) -> Any:
        return import_snapstore().SnapshotStore.memory(**store_settings())


POSTGRES_URL_ENV = "SNAPSTORE_BENCH_POSTGRES_URL"


class SnapstorePostgres(SnapstoreAdapter):
    """The same engine on the PostgreSQL backend, in a schema of its own dropped at close.

    Runs only when ``SNAPSTORE_BENCH_POSTGRES_URL`` names a database. Its size is not
    a file walk: ``bytes_stored`` sums ``pg_total_relation_size`` (heap + TOAST +
    indexes) over the snapstore tables of its schema, for both apparent and allocated.
    """

    name = "snapstore-pg"
    label = "snapstore (PostgreSQL)"
    on_disk = False  # nothing under workdir; see bytes_stored
    description = ("SnapshotStore(PostgresBackend(url, schema=bench_<random>)): same engine, "
                   "segments and entries in PostgreSQL tables")

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if not os.environ.get(POSTGRES_URL_ENV):
            return False, f"set {POSTGRES_URL_ENV} to a postgresql:// URL to run it"
        ok, why = super().available()
        if not ok:
            return ok, why
        try:
            import psycopg  # noqa: F401
            import psycopg_pool  # noqa: F401
        except Exception as exc:  # pragma: no cover - optional extra
            return False, f"psycopg / psycopg_pool not importable ({exc.__class__.__name__}): " \
                          "pip install 'snapstore[postgres]'"
        return True, ""

    def _make_store(self) -> Any:
        import secrets

        from snapstore.backends._postgres import PostgresBackend

        self._url = os.environ[POSTGRES_URL_ENV]
        self._schema = f"bench_{secrets.token_hex(6)}"
        backend = PostgresBackend(self._url, schema=self._schema)
        return import_snapstore().SnapshotStore(backend, **store_settings())

    def _query(self, text: Any, params: list[Any]) -> Any:
        import psycopg

        with psycopg.connect(self._url, autocommit=True) as conn:
            return conn.execute(text, params).fetchone()

    def bytes_stored(self) -> DiskUsage | None:
        row = self._query(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0), count(*) "
            "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname LIKE 'snapstore\\_%%'",
            [self._schema])
        total, tables = int(row[0]), int(row[1])
        return DiskUsage(total, total, tables)

    def data_bytes(self) -> int:
        """sum(octet_length(data)) of the entries table: the payload alone, for reference."""
        from psycopg import sql

        row = self._query(sql.SQL("SELECT coalesce(sum(octet_length(data)), 0) FROM {}").format(
            sql.Identifier(self._schema, "snapstore_entries")), [])
        return int(row[0])

    def close(self) -> None:
        try:
            super().close()
        finally:
            import psycopg
            from psycopg import sql

            with psycopg.connect(self._url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self._schema)))


ADAPTERS: dict[str, type[Adapter]] = {
    cls.name: cls
    for cls in (DeepcopyList, FullZstdFiles, JsonPatchZstd, GitPerTurn,
                LangGraphSqlite, SnapstoreDirectory, SnapstoreMemory, SnapstorePostgres)
}
