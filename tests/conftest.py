"""Shared fixtures: every store-level test runs on each engine available here."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from snapstore import SnapshotStore

POSTGRES_URL_ENV = "SNAPSTORE_TEST_POSTGRES_URL"

# the reliability tests' figures (kills survived, writers, damage cases, bad inputs) in the summary
pytest_plugins = ["conftest_reliability"]


def canonical(value: object) -> bytes:
    """Type-exact comparison key: 1, 1.0 and true differ."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def postgres_url_or_skip() -> str:
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{POSTGRES_URL_ENV} is not set on CI: .ci/run must start PostgreSQL")
        pytest.skip(f"PostgreSQL tests need {POSTGRES_URL_ENV}=postgresql://... (or run .ci/run, which starts one)")
    return url


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
