"""The backend contract (snapstore.testing.BackendContract) on every engine, then what is engine-specific.

PostgreSQL: the tests use the server named by SNAPSTORE_TEST_POSTGRES_URL
(``.ci/run`` starts a throwaway one with ``.ci/postgres.sh``). Without it they are
skipped, except on CI (CI=true), where a missing or unreachable server fails them.
Each PostgreSQL test gets a fresh schema ``snapstore_test_<random>`` (passed as
``PostgresBackend(url, schema=...)``), dropped with CASCADE afterwards.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest

import snapstore.backends
from conftest import postgres_url_or_skip
from snapstore import SnapshotStore
from snapstore.backends import open_backend
from snapstore.backends._directory import DirectoryBackend
from snapstore.backends._memory import MemoryBackend
from snapstore.backends._postgres import PostgresBackend, redact_url
from snapstore.backends.base import SegmentMissing
from snapstore.errors import BackendError, ConcurrentUpdateError, FormatVersionError, LockTimeoutError, SnapshotError
from snapstore.testing import BackendContract, expect_error

POSTGRES_URL_ENV = "SNAPSTORE_TEST_POSTGRES_URL"
ON_CI = os.environ.get("CI") == "true"
HOW_TO_RUN = f"set {POSTGRES_URL_ENV}=postgresql://... or run .ci/run which starts a throwaway server (.ci/postgres.sh)"


class TestMemoryBackend(BackendContract):
    @pytest.fixture(autouse=True)
    def _fresh(self) -> None:
        self._memory = MemoryBackend()

    def make_backend(self) -> MemoryBackend:
        return self._memory  # one process, one medium: every "handle" is the same object


class TestDirectoryBackend(BackendContract):
    detects_damage = True

    @pytest.fixture(autouse=True)
    def _root(self, tmp_path: Path) -> None:
        self.root = tmp_path / "store"

    def make_backend(self) -> DirectoryBackend:
        return DirectoryBackend(self.root)

    def backend_factory(self) -> functools.partial[DirectoryBackend]:
        return functools.partial(DirectoryBackend, self.root)


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


class TestPostgresBackend(BackendContract):
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

    def backend_factory(self) -> functools.partial[PostgresBackend]:
        return functools.partial(PostgresBackend, self.url, schema=self.schema, pool_size=2)

    def _sql(self, text: str, *params: Any) -> list[Any]:
        with _admin(self.url) as conn:
            cur = conn.execute(text.replace("{schema}", f'"{self.schema}"'), list(params) or None)
            return cur.fetchall() if cur.description else []

    def _terminate(self, where: str = "TRUE") -> int:
        rows = self._sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE application_name = %s AND pid <> pg_backend_pid() AND ({where})",
            self.app,
        )
        return len(rows)

    # -- PostgreSQL-specific behaviour ---------------------------------
    def test_tables_and_version_row(self) -> None:
        assert self.backend.session_keys() == []
        tables = self._sql("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", self.schema)
        assert [t for (t,) in tables] == ["snapstore_entries", "snapstore_meta"]
        assert self._sql("SELECT value FROM {schema}.snapstore_meta WHERE key = 'schema_version'") == [("4",)]

    @pytest.mark.parametrize("stored", ["5", "17", "garbage", "0", "99999999999999999999"])
    def test_newer_or_unknown_schema_version_refused(self, stored: str) -> None:
        self.backend.append("s", 0, [b"x"], 0)
        self._sql("UPDATE {schema}.snapstore_meta SET value = %s WHERE key = 'schema_version'", stored)
        with pytest.raises(FormatVersionError) as info:
            self.make_backend()
        assert info.value.details["found"] == stored
        assert info.value.details["supported"] == 4
        if stored in ("5", "17"):
            assert "newer" in str(info.value)

    def test_concurrent_first_use_creates_the_tables_once(self) -> None:
        opened: list[PostgresBackend] = []
        from snapstore.testing import run_threads

        run_threads(lambda: opened.append(self.make_backend(pool_size=1)), 6)
        try:
            opened[0].append("s", 0, [b"x"], 0)
            assert all(b.read_segment("s", 0).entries == [b"x"] for b in opened)
        finally:
            for b in opened:
                b.close()

    def test_table_prefix_separates_stores_in_one_schema(self) -> None:
        one = self.make_backend(table_prefix="one_")
        two = self.make_backend(table_prefix="two_")
        try:
            one.append("s", 0, [b"in one"], 0)
            one.write_config("format", b"2")
            assert two.segments("s") == [] and two.read_config("format") is None
            with one.lock_session("s", 1.0), two.lock_session("s", 1.0):  # same key, other store: independent
                pass
        finally:
            one.close()
            two.close()
        with pytest.raises(ValueError):
            self.make_backend(table_prefix="bad-prefix")

    def test_a_locked_block_is_one_transaction(self) -> None:
        b = self.backend
        outside = self.another_handle()
        with b.lock_session("s", 1.0):
            end = b.append("s", 0, [b"first"], 0)
            b.append("s", 1, [b"second"], 0)
            assert b.read_segment("s", 0).entries == [b"first"]  # the holder reads its own writes
            assert outside.segments("s") == []  # others see nothing before the block ends
        assert [i.segment for i in outside.segments("s")] == [0, 1]
        with pytest.raises(RuntimeError), b.lock_session("s", 1.0):
            b.append("s", 0, [b"rolled back"], end)
            b.drop_segments("s", [1])
            raise RuntimeError("the commit failed half-way")
        assert outside.read_segment("s", 0).entries == [b"first"]
        assert [i.segment for i in outside.segments("s")] == [0, 1]

    def test_a_failed_statement_keeps_nothing_of_the_block(self) -> None:
        b = self.backend
        end = b.append("s", 0, [b"kept"], 0)
        # a rule the server enforces on new rows: the next append that writes a row of segment 0 fails
        self._sql(
            "ALTER TABLE {schema}.snapstore_entries ADD CONSTRAINT planted"
            f" CHECK (segment <> 0 OR pos < {int(end)}) NOT VALID"
        )
        with pytest.raises(BackendError, match="nothing written") as info, b.lock_session("s", 1.0):
            b.append("s", 1, [b"lost with the transaction"], 0)
            with expect_error(BackendError):
                b.append("s", 0, [b"refused by the server" * 1000], end)
            with expect_error(BackendError):
                b.append("s", 2, [b"refused: the transaction failed"], 0)
        assert "cause" in info.value.details
        assert [i.segment for i in b.segments("s")] == [0]
        with b.lock_session("s", 1.0):  # the lock was released
            pass

    def test_the_lock_is_a_transaction_lock_of_the_holder(self) -> None:
        with self.backend.lock_session("s", 1.0):
            rows = self._sql(
                "SELECT a.state FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = %s",
                self.app,
            )
        assert rows == [("idle in transaction",)]
        assert self._sql(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND a.application_name = %s",
            self.app,
        ) == [(0,)]

    def test_a_lock_lost_with_its_connection_is_reported(self) -> None:
        b = self.backend
        with pytest.raises(BackendError, match="may not have been committed") as info, b.lock_session("s", 1.0):
            b.append("s", 0, [b"never committed"], 0)
            assert self._terminate("pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)") == 1
        assert info.value.details["session_key"] == "s" and "cause" in info.value.details
        assert b.segments("s") == []
        with b.lock_session("s", 1.0):  # usable again afterwards
            b.append("s", 0, [b"after"], 0)
        assert b.read_segment("s", 0).entries == [b"after"]

    def test_a_commit_costs_three_round_trips_and_a_read_one(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import psycopg

        b = self.backend
        end = b.append("s", 0, [b"first"], 0)
        with b.lock_session("s", 1.0):
            pass  # the lock's connection is made: making one is not part of a commit
        sent: list[object] = []
        execute = psycopg.Connection.execute

        def counted(conn: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            sent.append(query)
            return execute(conn, query, *args, **kwargs)

        monkeypatch.setattr(psycopg.Connection, "execute", counted)
        with b.lock_session("s", 1.0):
            assert [info.segment for info in b.segments("s")] == [0]  # read with the lock: no round trip
            second = b.append("s", 0, [b"second"], end)
        assert len(sent) == 3, sent  # lock and listing, append, COMMIT
        sent.clear()
        assert b.read_segment("s", 0).end == second
        monkeypatch.undo()
        assert len(sent) == 1, sent  # a reader takes no lock, and the pool asks nothing of a healthy connection
        assert b.read_segment("s", 0).entries == [b"first", b"second"]

    def test_writers_queue_for_the_lock_connections_of_their_process(self) -> None:
        import threading

        b = self.make_backend(lock_pool_size=1)
        self._handles.append(b)
        outcome: list[object] = []
        with b.lock_session("a", 1.0):  # holds the process's only lock connection

            def other_session(timeout: float | None) -> None:
                try:
                    with b.lock_session("b", timeout):
                        outcome.append("b acquired")
                except LockTimeoutError as exc:
                    outcome.append(exc.details["session_key"])

            short = threading.Thread(target=other_session, args=(0.2,))
            short.start()
            short.join(60)
            patient = threading.Thread(target=other_session, args=(None,))
            patient.start()
            time.sleep(0.2)  # room for the patient writer to (wrongly) get in
            outcome.append("a released")
        patient.join(60)
        assert outcome == ["b", "a released", "b acquired"]

    @pytest.mark.parametrize("settle", [0.0, 0.5])
    def test_killed_connections_are_replaced(self, settle: float) -> None:
        import threading

        b = self.backend
        b.append("s", 0, [b"before"], 0)
        together = threading.Barrier(4)

        def hold_a_lock_and_a_read(number: int) -> None:
            with b.lock_session(f"k{number}", 5.0), b._pool.connection():  # type: ignore[attr-defined]
                together.wait(30)  # four connections of each pool open at once, then back in their pools

        run = [threading.Thread(target=hold_a_lock_and_a_read, args=(n,)) for n in range(4)]
        for t in run:
            t.start()
        for t in run:
            t.join(60)
        assert self._terminate() >= 8
        time.sleep(settle)  # 0: the reads race the server closing them; 0.5: the pools' check sees them closed
        assert b.read_segment("s", 0).entries == [b"before"]
        assert locked(b, "s") == [b"before", b"locked"]

    def test_format_1_tables_stay_readable_until_format_2_config_is_written(self) -> None:
        self._sql("CREATE SCHEMA {schema}")
        for statement in (  # docs/format.md, "PostgreSQL tables" (format 1)
            'CREATE TABLE {schema}.snapstore_objects (key text COLLATE "C" PRIMARY KEY, data bytea NOT NULL)',
            'CREATE TABLE {schema}.snapstore_refs (name text COLLATE "C" PRIMARY KEY, value text NOT NULL)',
            'CREATE TABLE {schema}.snapstore_meta (key text COLLATE "C" PRIMARY KEY, value text)',
            "INSERT INTO {schema}.snapstore_meta VALUES ('schema_version', '1')",
            "INSERT INTO {schema}.snapstore_refs VALUES ('config/format', '1'),"
            " ('sessions/a%20b', 'ab' || repeat('0', 30)), ('sessions/c_d', 'cd' || repeat('0', 30)),"
            " ('sessionsX', 'not under sessions/')",
            "INSERT INTO {schema}.snapstore_objects VALUES ('ab' || repeat('0', 30), '\\x00ff00')",
        ):
            self._sql(statement)
        b = self.backend
        assert b.legacy_format() == "1"
        reader = b.legacy_reader()
        assert reader is not None
        assert reader.read_ref("config/format") == "1" and reader.read_ref("sessions/none") is None
        assert reader.iter_refs("sessions/") == [("sessions/a%20b", "ab" + "0" * 30), ("sessions/c_d", "cd" + "0" * 30)]
        assert reader.get("ab" + "0" * 30) == b"\x00\xff\x00"
        with pytest.raises(KeyError):
            reader.get("cd" + "0" * 30)
        with pytest.raises(SnapshotError):
            reader.get("../etc")
        version = "SELECT value FROM {schema}.snapstore_meta WHERE key = 'schema_version'"
        assert self._sql(version) == [("1",)]
        b.append("s", 0, [b"staged by an upgrade"], 0)
        assert self._sql(version) == [("1",)]
        b.write_config("format", b"2")
        assert self._sql(version) == [("4",)]  # format-1 code refuses it now
        assert self.another_handle().legacy_reader() is not None  # still readable for the upgrade

    def test_describe_hides_the_password(self) -> None:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        secret = str(conninfo_to_dict(self.url).get("password") or "")
        url = self.url
        if not secret:  # trust authentication ignores a password: add one to see it hidden
            secret = "s3cret-Pw"
            url = make_conninfo(self.url, password=secret)
        backend = PostgresBackend(url, schema=self.schema, pool_size=1)
        try:
            assert secret not in backend.describe() and secret not in repr(backend)
            assert self.schema in backend.describe()
        finally:
            backend.close()

    def test_schema_from_search_path_in_url(self) -> None:
        if "://" not in self.url or "options=" in self.url:
            pytest.skip("needs a URL without options")
        url = _with_search_path(self.url, self.schema)
        with pytest.raises(BackendError, match="search_path"):
            PostgresBackend(url)  # the schema does not exist yet: current_schema() is NULL
        self._sql("CREATE SCHEMA {schema}")
        backend = open_backend(url)
        try:
            assert isinstance(backend, PostgresBackend) and backend.schema == self.schema
            backend.append("s", 0, [b"via search_path"], 0)
        finally:
            backend.close()
        assert self.backend.read_segment("s", 0).entries == [b"via search_path"]

    @pytest.mark.parametrize(
        ("made", "relation", "found"),
        [
            ("TABLE {schema}.snapstore_meta (id integer, note text)", "snapstore_meta", "its columns are (id integer"),
            ("TABLE {schema}.snapstore_meta (key text, value text)", "snapstore_meta", "it has no primary key"),
            (
                'TABLE {schema}.snapstore_entries (session text COLLATE "C", segment integer, pos bigint,'
                " data bytea)",
                "snapstore_entries",
                "its column segment is integer, snapstore's is bigint",
            ),
            ("TABLE {schema}.snapstore_segment_version (n bigint)", "snapstore_segment_version", "it is a table"),
            ("VIEW {schema}.snapstore_entries AS SELECT 1 AS n", "snapstore_entries", "it is a view"),
        ],
    )
    def test_a_relation_of_another_with_a_store_name_is_refused(self, made: str, relation: str, found: str) -> None:
        """Each name the store's tables and sequence take, held by something snapstore did not make: the
        open names it and says what differs and where else the store can go, reading and writing nothing
        (before, the SQL failed half way, or CREATE ... IF NOT EXISTS skipped it and the store wrote into it)."""
        self._sql("CREATE SCHEMA {schema}")  # no store in it: the contract's backend is made on first use
        self._sql("CREATE " + made)
        for create in (False, True):
            with pytest.raises(BackendError) as info:
                self.make_backend(create=create)
            assert info.value.details["reason"] == "foreign table" and info.value.details["relation"] == relation
            message = str(info.value)
            assert f"{relation} in " in message and "is not snapstore's" in message and found in message, message
            assert "another schema" in message and "another table prefix" in message, message
        relations = self._sql("SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace", self.schema)
        assert [name for (name,) in relations] == [relation]
        other = self.make_backend(table_prefix="mine_")  # the way out the message gives: beside it, under a prefix
        try:
            other.append("s", 0, [b"x"], 0)
        finally:
            other.close()

    def test_an_index_of_another_table_with_the_store_index_name_is_refused(self) -> None:
        self._sql("CREATE SCHEMA {schema}")  # no store in it: the contract's backend is made on first use
        self._sql("CREATE TABLE {schema}.other (n bigint)")
        self._sql("CREATE INDEX snapstore_entries_segment ON {schema}.other (n)")
        with pytest.raises(BackendError, match="it is an index of other, where snapstore indexes snapstore_entries"):
            self.make_backend()

    def test_closed_backend_refuses_work(self) -> None:
        backend = self.make_backend()
        backend.close()
        for call in (
            lambda: backend.segments("s"),
            lambda: backend.append("s", 0, [b"x"], 0),
            lambda: backend.lock_session("s", 1.0),
            lambda: backend.read_config("format"),
        ):
            with pytest.raises(BackendError, match="closed"):
                call()


def locked(backend: Any, key: str) -> list[bytes]:
    from snapstore.testing import locked_append

    locked_append(backend, key, 0, b"locked", 5.0)
    return list(backend.read_segment(key, 0).entries)


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
        # found by an outside trial: values libpq refuses were redacted in part
        ("host=h user=u password=correct horse", "host=h user=u password=***"),
        ("host=h password='correct horse", "host=h password=***"),
        ("password=correct horse user=u", "password=*** user=u"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:my%secret@127.0.0.1:1/db",  # a password with a stray %: the usual one
        "postgresql://app:mysecret@[::1:1/db",
        "host=127.0.0.1 port=1 user=app password=my secret",
        "host=127.0.0.1 port=1 user=app password='my secret",
    ],
)
def test_a_connection_string_libpq_cannot_parse_is_refused_without_its_password(url: str) -> None:
    """libpq quotes the token it cannot parse, or the whole URL, and the refusal repeated it: the
    password reached the message, ``details`` and the CLI's error line (found by an outside trial)."""
    from snapstore.backends._postgres import PostgresBackend

    with pytest.raises(BackendError, match="invalid PostgreSQL URL") as refused:
        PostgresBackend(url)
    shown = str(refused.value) + repr(refused.value.details)
    assert "secret" not in shown and refused.value.__suppress_context__


def test_a_url_parameter_libpq_does_not_know_is_named_not_hidden() -> None:
    """What the user must fix is shown; the password still is not (found by a trial: ``"***"``)."""
    from snapstore.backends._postgres import PostgresBackend

    with pytest.raises(BackendError, match='invalid URI query parameter: "nosuchparam"') as refused:
        PostgresBackend("postgresql://app:hunter2@127.0.0.1:1/db?nosuchparam=1")
    shown = str(refused.value) + repr(refused.value.details)
    assert "hunter2" not in shown and not refused.value.details["cause"].endswith("\n")


@pytest.mark.parametrize("target", ["host=127.0.0.1 port=1 dbname=app connect_timeout=1", "  dbname = app port=1"])
def test_a_libpq_key_value_string_is_a_postgresql_store_not_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    """PostgresSaver takes this form: a user switching from it found the checkpoints in a folder named
    after the string (``SnapstoreSaver.from_conn_string``, the CLI's ``--store`` alike). A folder of
    that name is still reached as ``./host=...`` or through a pathlib.Path."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BackendError, match="PostgreSQL: cannot open store at") as refused:
        SnapshotStore.open(target)  # nothing listens on port 1
    assert refused.value.details["reason"] == "server not serving"
    assert list(tmp_path.iterdir()) == []
    with SnapshotStore.open(Path(target)) as store:
        store.session("s").commit({"turn": 1})
    assert [p.name for p in tmp_path.iterdir()] == [target]


def test_a_libpq_key_value_string_opens_the_postgresql_store_the_url_names() -> None:
    url = postgres_url_or_skip()
    parts = urlsplit(url)
    keywords = f"host={parts.hostname} port={parts.port} dbname={parts.path.lstrip('/')} user={parts.username}"
    prefix = f"kv{uuid.uuid4().hex[:10]}_"
    with SnapshotStore(PostgresBackend(url, table_prefix=prefix)) as by_url:
        made = by_url.session("s").commit({"turn": 1})
    with SnapshotStore(PostgresBackend(keywords, table_prefix=prefix)) as by_keywords:
        assert by_keywords.session("s").head == made


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ("nosuchdb", "does not exist"),
        ("snapstore_test?user=nosuchrole", "does not exist"),
        ("?sslmode=require", "SSL"),
        ("?sslmode=hunter2", "connection is bad"),  # a value libpq cannot use: the URL's to fix
    ],
)
def test_a_connection_the_server_refuses_is_not_called_a_server_not_serving(path: str, refused: str) -> None:
    """A wrong database, role or SSL setting never comes right by retrying, which the reason
    ``server not serving`` invites (libpq gives these no SQLSTATE: the server's FATAL line says it)."""
    parts = urlsplit(postgres_url_or_skip())
    base = f"{parts.scheme}://{parts.netloc}/"
    url = base + (path if not path.startswith("?") else parts.path.lstrip("/") + path)
    with pytest.raises(BackendError, match=refused) as raised:
        PostgresBackend(url)
    assert raised.value.details.get("reason") != "server not serving"


def test_a_role_over_its_connection_limit_is_a_server_not_serving() -> None:
    """A full server (SQLSTATE 53300, which libpq reports as a FATAL line only) comes right by
    waiting, as a server starting or stopping does: a review found it called refused."""
    import psycopg

    url = postgres_url_or_skip()
    role = f"lim{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    try:
        parts = urlsplit(url)
        limited = f"{parts.scheme}://{role}@{parts.hostname}:{parts.port}{parts.path}"
        with pytest.raises(BackendError, match="too many connections") as raised:
            PostgresBackend(limited)
        assert raised.value.details["reason"] == "server not serving"
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP ROLE "{role}"')


def test_every_libpq_keyword_opens_a_key_value_string_as_postgresql() -> None:
    """The keywords are written out (psycopg is an optional extra): a review found 27 of libpq 18's 50
    missing, so "channel_binding=disable host=..." made a folder. Checked against libpq's own list."""
    from snapstore.backends import _LIBPQ_KEYWORDS

    psycopg = pytest.importorskip("psycopg")
    keywords = [option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults()]
    assert len(keywords) > 30 and [k for k in keywords if not _LIBPQ_KEYWORDS.match(f"{k}=x host=h")] == []
    for path in ("hostname=x", "data/host=x", "./host=x", "my host=x"):
        assert not _LIBPQ_KEYWORDS.match(path), path


def test_a_password_holding_a_quote_is_not_shown_in_part() -> None:
    """libpq quotes the token it cannot parse; a password with a '"' in it split that token, and its
    tail was shown (a review)."""
    with pytest.raises(BackendError) as refused:
        PostgresBackend('postgresql://app:ab"cd%zz@127.0.0.1:1/db')
    shown = str(refused.value) + repr(refused.value.details)
    assert "cd%zz" not in shown and 'ab"' not in shown
    with pytest.raises(BackendError) as refused:
        PostgresBackend("host=127.0.0.1 port=1 oauth_client_secret=hunter22 dbname=db connect_timeout=1")
    assert "hunter22" not in str(refused.value) + repr(refused.value.details)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"schema": "tenant_" + "x" * 56 + "_customer_A"}, "is longer than PostgreSQL's 63 bytes"),
        ({"schema": "é" * 32}, "is longer than PostgreSQL's 63 bytes"),  # 64 bytes of UTF-8
        ({"table_prefix": "p" * 39}, "up to 38 letters, digits and underscores"),
    ],
)
def test_names_postgresql_would_cut_are_refused_before_connecting(option: dict[str, str], message: str) -> None:
    """PostgreSQL cuts a name to 63 bytes: two schemas alike in their first 63 were one store whose
    writers took different locks, and a 39- or 40-character prefix made a store whose index, its
    name cut, was not found again at the next open (a bare KeyError)."""
    pytest.importorskip("psycopg")
    with pytest.raises(ValueError, match=message):
        PostgresBackend("postgresql://nobody@127.0.0.1:1/none", connect_timeout=1, **option)  # type: ignore[arg-type]
    # the longest accepted get as far as connecting
    with pytest.raises(BackendError):
        longest = {"schema": "s" * 63, "table_prefix": "p" * 38}
        PostgresBackend("postgresql://nobody@127.0.0.1:1/none", connect_timeout=1, **longest)  # type: ignore[arg-type]


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


def test_open_backend_by_target(tmp_path: Path) -> None:
    assert isinstance(open_backend("memory:"), MemoryBackend)
    directory = open_backend(tmp_path / "store")
    try:
        assert isinstance(directory, DirectoryBackend) and open_backend(directory) is directory
    finally:
        directory.close()
    with pytest.raises(BackendError):
        open_backend(42)  # type: ignore[arg-type]


def test_memory_has_no_format_1_store() -> None:
    assert MemoryBackend().legacy_format() is None and MemoryBackend().legacy_reader() is None


def test_segment_missing_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        MemoryBackend().read_segment("s", 0)
    assert issubclass(SegmentMissing, SnapshotError) and issubclass(LockTimeoutError, ConcurrentUpdateError)
