"""Shared fixtures: every store-level test runs on each engine available here."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, SupportsIndex

import orjson
import pytest

from snapstore import SnapshotStore
from snapstore.backends import Backend, DirectoryBackend
from snapstore.backends.base import SegmentRead
from snapstore.reclaim import Reclaimer

POSTGRES_URL_ENV = "SNAPSTORE_TEST_POSTGRES_URL"

# the reliability tests' figures (kills survived, writers, damage cases, bad inputs) in the summary
pytest_plugins = ["conftest_reliability"]


def canonical(value: object) -> bytes:
    """Type-exact comparison key: 1, 1.0 and true differ."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def store_contents(store: SnapshotStore) -> dict[str, object]:
    """Everything a store holds, through its backend: the format, and every session's segments
    (number, version and entries). Compare before and after a call to prove it wrote nothing."""
    backend = store.backend
    return {
        "format": backend.read_config("format"),
        "sessions": {
            key: [
                (info.segment, info.version, backend.read_segment(key, info.segment).entries)
                for info in backend.segments(key)
            ]
            for key in backend.session_keys()
        },
    }


def copy_backend(source: Backend, target: Backend) -> None:
    """Copy a store from one backend into an empty one, entry for entry, through the backend API."""
    format_version = source.read_config("format")
    assert format_version is not None
    target.write_config("format", format_version)
    for key in source.session_keys():
        for info in source.segments(key):
            target.append(key, info.segment, source.read_segment(key, info.segment).entries, 0)


def rewrite_entry(store: SnapshotStore, key: str, segment: int, index: int, flip_at: int = -1) -> bytes:
    """Flip one byte of a stored entry (by default its last, in the payload) by rewriting its segment.

    The segment is replaced through the backend's own ``replace_segment``, so the damage passes
    any framing check and only the layers above (hashes, decompression) can catch it, on every
    engine. Returns the entry as it was.
    """
    entries = list(store.backend.read_segment(key, segment).entries)
    original = entries[index]
    damaged = bytearray(original)
    damaged[flip_at] ^= 0x5A
    entries[index] = bytes(damaged)
    store.backend.replace_segment(key, segment, entries)
    return original


class CountingBackend(DirectoryBackend):
    """The directory backend, noting which segments it reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.read: list[int] = []

    def read_segment(self, key: str, segment: int, start: int = 0) -> SegmentRead:
        self.read.append(segment)
        return super().read_segment(key, segment, start)


class EntriesExamined:
    """How many of its sessions' loaded entries a store's code took out of their lists (by slices,
    loops and indexing): a count of work that does not depend on the machine's speed."""

    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def entries_examined(monkeypatch: pytest.MonkeyPatch) -> EntriesExamined:
    """Every ``LoadedSegment`` made from here on keeps its entries in a list that counts what is taken out."""
    from snapstore import history, session

    examined = EntriesExamined()

    class CountingEntries(list[Any]):
        def __getitem__(self, item: SupportsIndex | slice) -> Any:
            found = super().__getitem__(item)
            examined.count += len(found) if isinstance(item, slice) else 1
            return found

        def __iter__(self) -> Iterator[Any]:
            for entry in super().__iter__():
                examined.count += 1
                yield entry

    @dataclasses.dataclass
    class CountingSegment(history.LoadedSegment):
        def __post_init__(self) -> None:
            self.entries = CountingEntries(self.entries)

    monkeypatch.setattr(history, "LoadedSegment", CountingSegment)
    monkeypatch.setattr(session, "LoadedSegment", CountingSegment)
    return examined


class NeverReclaims(Reclaimer):
    """A reclaimer that keeps every segment: a store's reference for what reclaim must not change,
    or a way to build a layout before reclaiming it."""

    def reclaim(self, session: object, log: object) -> int:
        return 0


def make_read_only(root: Path) -> None:
    """Every file under ``root`` read-only (0444) and every folder 0555, symlinks left as they are."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if not os.path.islink(os.path.join(folder, name)):
                os.chmod(os.path.join(folder, name), 0o444)
        os.chmod(folder, 0o555)


def postgres_url_or_skip() -> str:
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{POSTGRES_URL_ENV} is not set on CI: .ci/run must start PostgreSQL")
        pytest.skip(f"PostgreSQL tests need {POSTGRES_URL_ENV}=postgresql://... (or run .ci/run, which starts one)")
    return url


@contextlib.contextmanager
def own_postgres_database(prefix: str) -> Iterator[tuple[str, str]]:
    """(an admin URL, the connection string of a database made for the caller alone), dropped after.

    For tests that take the database itself down, or that need no other transaction in it: the
    suite's workers run side by side in the shared one, and an open transaction there holds back
    the pruning of every table in it."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    url = postgres_url_or_skip()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url, make_conninfo(**{**conninfo_to_dict(url), "dbname": name})
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _postgres_store(**settings: object) -> SnapshotStore:
    from snapstore.backends._postgres import PostgresBackend

    url = postgres_url_or_skip()
    backend = PostgresBackend(url, table_prefix=f"t{uuid.uuid4().hex[:12]}_")
    return SnapshotStore(backend, **settings)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "directory", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., SnapshotStore]]:
    """A factory of stores on one engine; calling it again reopens the same storage (not for memory)."""
    opened: list[SnapshotStore] = []
    kind = request.param
    memory_backend = None
    pg_prefix = f"t{uuid.uuid4().hex[:12]}_"

    def factory(**settings: object) -> SnapshotStore:
        nonlocal memory_backend
        if kind == "memory":
            from snapstore.backends import MemoryBackend

            memory_backend = memory_backend or MemoryBackend()
            store = SnapshotStore(memory_backend, **settings)  # type: ignore[arg-type]
        elif kind == "directory":
            store = SnapshotStore.open(tmp_path / "store", **settings)  # type: ignore[arg-type]
        else:
            from snapstore.backends._postgres import PostgresBackend

            backend = PostgresBackend(postgres_url_or_skip(), table_prefix=pg_prefix)
            store = SnapshotStore(backend, **settings)  # type: ignore[arg-type]
        opened.append(store)
        return store

    factory.kind = kind  # type: ignore[attr-defined]
    yield factory
    for store in opened:
        if kind == "memory":
            continue
        store.close()


@pytest.fixture
def store(make_store: Callable[..., SnapshotStore]) -> SnapshotStore:
    return make_store()


@pytest.fixture
def dir_store(tmp_path: Path) -> Iterator[SnapshotStore]:
    with SnapshotStore.open(tmp_path / "store") as s:
        yield s
