"""The shared backend suite (snapstore.testing.BackendTests) on every engine.

PostgreSQL: the tests use the server named by SNAPSTORE_TEST_POSTGRES_URL
(``.ci/run`` starts a throwaway one with ``.ci/postgres.sh``). Without it they are
skipped, except on CI (CI=true), where a missing or unreachable server fails them.
Each PostgreSQL test gets a fresh schema ``snapstore_test_<random>`` (passed as
``PostgresBackend(url, schema=...)``), dropped with CASCADE afterwards, so tests
never see each other's tables and can share the database with other users.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

import snapstore.backends
from snapstore.backends import DirectoryBackend, MemoryBackend, open_backend
from snapstore.backends._postgres import PostgresBackend, redact_url
from snapstore.errors import BackendError, FormatVersionError, SnapshotError
from snapstore.testing import BackendTests, key_for, race_cas_in_processes

POSTGRES_URL_ENV = "SNAPSTORE_TEST_POSTGRES_URL"
ON_CI = os.environ.get("CI") == "true"
HOW_TO_RUN = f"set {POSTGRES_URL_ENV}=postgresql://... or run .ci/run which starts a throwaway server (.ci/postgres.sh)"


class TestMemoryBackend(BackendTests):
    @pytest.fixture(autouse=True)
    def _fresh(self) -> None:
        self._memory = MemoryBackend()

    def make_backend(self) -> MemoryBackend:
        return self._memory  # one process, one medium: every "handle" is the same object


class TestDirectoryBackend(BackendTests):
    @pytest.fixture(autouse=True)
    def _root(self, tmp_path: Path) -> None:
        self.root = tmp_path / "store"

    def make_backend(self) -> DirectoryBackend:
        return DirectoryBackend(self.root)

    def test_cas_race_across_processes(self) -> None:
        race_cas_in_processes(functools.partial(DirectoryBackend, self.root))

    def test_invalid_keys_leave_no_files(self, tmp_path: Path) -> None:
        backend = self.make_backend()
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        for bad in ("../../etc", "../../../../../../tmp/x0000000000000000000", "0" * 16 + "/" + "0" * 15):
            with pytest.raises(SnapshotError):
                backend.put(bad, b"data")
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# -- PostgreSQL ---------------------------------------------------------------------------
def _unavailable(reason: str) -> NoReturn:
    if ON_CI:
        pytest.fail(f"PostgreSQL backend tests cannot run on CI (CI=true): {reason}; {HOW_TO_RUN}", pytrace=False)
    pytest.skip(f"PostgreSQL backend tests skipped: {reason}; {HOW_TO_RUN}")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        _unavailable(f"{POSTGRES_URL_ENV} is not set")
    try:
        import psycopg
    except ImportError as exc:
        _unavailable(f"psycopg is not installed ({exc}): pip install snapstore[postgres]")
    try:
        with psycopg.connect(url, connect_timeout=10):
            pass
    except psycopg.Error as exc:
        _unavailable(f"the server at {redact_url(url)} cannot be reached ({str(exc).strip().splitlines()[0]})")
    return url


def _admin(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def _with_search_path(url: str, schema: str) -> str:
    """The URL, asking the server to use ``schema`` as the search_path."""
    return url + ("&" if "?" in url else "?") + f"options=-csearch_path%3D{schema}"


class TestPostgresBackend(BackendTests):
    @pytest.fixture(autouse=True)
    def _schema(self, postgres_url: str) -> Iterator[None]:
        self.url = postgres_url
        self.schema = f"snapstore_test_{uuid.uuid4().hex[:12]}"
        self.app = f"snapstore-test-{uuid.uuid4().hex[:8]}"  # to find this test's connections
        yield
        from psycopg import sql

        with _admin(self.url) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))

    def make_backend(self, **options: Any) -> PostgresBackend:
        settings: dict[str, Any] = {"schema": self.schema, "pool_size": 4, "application_name": self.app}
        settings.update(options)
        return PostgresBackend(self.url, **settings)

    def _terminate(self, where: str = "TRUE") -> int:
        with _admin(self.url) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE application_name = %s AND pid <> pg_backend_pid() AND ({where})",
                [self.app],
            ).fetchall()
        return len(rows)

    # -- PostgreSQL-specific behaviour ---------------------------------
    def test_cas_race_across_processes(self) -> None:
        race_cas_in_processes(functools.partial(PostgresBackend, self.url, schema=self.schema, pool_size=2))

    def test_tables_and_version_row(self, backend: PostgresBackend) -> None:
        with _admin(self.url) as conn:
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", [self.schema]
            ).fetchall()
            version = conn.execute(
                f'SELECT value FROM "{self.schema}".snapstore_meta WHERE key = %s', ["schema_version"]
            ).fetchone()
        assert [t for (t,) in tables] == ["snapstore_meta", "snapstore_objects", "snapstore_refs"]
        assert version == ("1",)

    @pytest.mark.parametrize("stored", ["2", "17", "garbage", "0"])
    def test_newer_or_unknown_schema_version_refused(self, backend: PostgresBackend, stored: str) -> None:
        backend.put(key_for(1), b"x")
        with _admin(self.url) as conn:
            conn.execute(
                f'UPDATE "{self.schema}".snapstore_meta SET value = %s WHERE key = %s', [stored, "schema_version"]
            )
        with pytest.raises(FormatVersionError) as info:
            self.make_backend()
        assert info.value.details["found"] == stored
        assert info.value.details["supported"] == 1
        if stored in ("2", "17"):
            assert "newer" in str(info.value)

    def test_concurrent_first_use_creates_the_tables_once(self) -> None:
        opened: list[PostgresBackend] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(6, timeout=30)

        def opener() -> None:
            try:
                barrier.wait()
                opened.append(self.make_backend(pool_size=1))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=opener) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        try:
            assert not errors, errors
            assert len(opened) == 6
            assert opened[0].put(key_for(1), b"x")
            assert all(b.has(key_for(1)) for b in opened)
        finally:
            for b in opened:
                b.close()

    def test_table_prefix_separates_stores_in_one_schema(self) -> None:
        one = self.make_backend(table_prefix="one_")
        two = self.make_backend(table_prefix="two_")
        try:
            assert one.put(key_for(1), b"in one")
            assert not two.has(key_for(1))
            assert two.put(key_for(1), b"in two")
            assert one.get(key_for(1)) == b"in one"
            assert one.cas_ref("heads/main", None, "1")
            assert two.read_ref("heads/main") is None
            with one.lock("gc"), two.lock("gc"):  # same name, other store: independent
                pass
        finally:
            one.close()
            two.close()
        with pytest.raises(ValueError):
            self.make_backend(table_prefix="bad-prefix")

    def test_put_many_is_one_transaction(self, backend: PostgresBackend) -> None:
        items = [(key_for(i), b"x") for i in range(1, 1500)]  # more than one INSERT batch
        items.append(("NOT-A-KEY", b"bad"))
        with pytest.raises(SnapshotError):
            backend.put_many(items)
        assert list(backend.iter_keys()) == []

    def test_describe_hides_the_password(self) -> None:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        secret = str(conninfo_to_dict(self.url).get("password") or "")
        url = self.url
        if not secret:  # trust authentication ignores a password: add one to see it hidden
            secret = "s3cret-Pw"
            url = make_conninfo(self.url, password=secret)
        backend = PostgresBackend(url, schema=self.schema, pool_size=1)
        try:
            assert secret not in backend.describe()
            assert secret not in repr(backend)
            assert self.schema in backend.describe()
        finally:
            backend.close()

    def test_schema_from_search_path_in_url(self) -> None:
        if "://" not in self.url or "options=" in self.url:
            pytest.skip("needs a URL without options")
        url = _with_search_path(self.url, self.schema)
        with pytest.raises(BackendError, match="search_path"):
            PostgresBackend(url)  # the schema does not exist yet: current_schema() is NULL
        with _admin(self.url) as conn:
            conn.execute(f'CREATE SCHEMA "{self.schema}"')
        backend = open_backend(url)
        try:
            assert isinstance(backend, PostgresBackend)
            assert backend.schema == self.schema
            assert backend.put(key_for(1), b"via search_path")
        finally:
            backend.close()
        again = self.make_backend()
        try:
            assert again.get(key_for(1)) == b"via search_path"
        finally:
            again.close()

    def test_killed_connections_are_replaced(self, backend: PostgresBackend) -> None:
        backend.put(key_for(1), b"before")
        assert self._terminate() >= 1
        assert backend.get(key_for(1)) == b"before"  # the pool's check drops dead connections
        assert backend.put(key_for(2), b"after")
        assert backend.cas_ref("heads/a", None, "1")

    def test_lock_lost_with_its_connection_is_reported(self, backend: PostgresBackend) -> None:
        with pytest.raises(BackendError, match="lost") as info, backend.lock("gc"):
            killed = self._terminate("pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)")
            assert killed == 1
        assert info.value.details["lock"] == "gc"
        assert "cause" in info.value.details
        with backend.lock("gc"):  # usable again afterwards
            pass

    def test_locks_are_session_advisory_locks(self) -> None:
        other = self.make_backend()
        try:
            with other.lock("gc", shared=True):
                with _admin(self.url) as conn:
                    held = conn.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ShareLock' AND granted"
                    ).fetchone()
                assert held is not None and held[0] >= 1
        finally:
            other.close()

    def test_closed_backend_refuses_work(self) -> None:
        backend = self.make_backend()
        backend.close()
        with pytest.raises(BackendError):
            backend.get(key_for(1))
        with pytest.raises(BackendError):
            backend.lock("gc")


# -- PostgreSQL without a server ------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:secret@host:5432/db", "postgresql://u:***@host:5432/db"),
        ("postgres://u@host/db", "postgres://u@host/db"),
        ("postgresql://host/db?password=secret&sslmode=require", "postgresql://host/db?password=***&sslmode=require"),
        ("postgresql://u:p%40ss@h1:1,h2:2/db", "postgresql://u:***@h1:1,h2:2/db"),
        ("host=h dbname=d password=secret user=u", "host=h dbname=d password=*** user=u"),
        ("host=h password='se cr\\'et' user=u", "host=h password=*** user=u"),
        ("host=h sslpassword=k1 password=k2", "host=h sslpassword=*** password=***"),
        ("postgresql://h/db?sslpassword=k1", "postgresql://h/db?sslpassword=***"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_unreachable_server_is_a_backend_error() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(BackendError) as info:
        PostgresBackend("postgresql://nobody:secret@127.0.0.1:1/none", connect_timeout=2)
    assert "cause" in info.value.details
    assert "secret" not in str(info.value) and "secret" not in repr(info.value.details)


def test_missing_driver_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    original = importlib.import_module("snapstore.backends._postgres")
    monkeypatch.setattr(snapstore.backends, "_postgres", original, raising=False)  # restored afterwards
    monkeypatch.setitem(sys.modules, "psycopg", None)  # "import psycopg" now fails
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    monkeypatch.delitem(sys.modules, "snapstore.backends._postgres")
    fresh = importlib.import_module("snapstore.backends._postgres")
    with pytest.raises(BackendError, match=r"pip install snapstore\[postgres\]") as info:
        fresh.PostgresBackend("postgresql://u:secret@localhost/db")
    assert "cause" in info.value.details
