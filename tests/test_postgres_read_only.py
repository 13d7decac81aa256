"""A PostgreSQL store opened by a role granted SELECT only (a reporting or backup role): every read
works, ``read_only`` says so, and every write is a ReadOnlyStoreError that says the store is read-only,
as a read-only folder's are, with nothing written."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import postgres_url_or_skip
from snapstore import SnapshotStore
from snapstore.errors import ReadOnlyStoreError


@pytest.fixture
def read_only_url() -> Iterator[tuple[str, str, str]]:
    """(the owner's URL, a SELECT-only role's URL, the schema) of a store with one session."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from snapstore.backends._postgres import PostgresBackend

    url = postgres_url_or_skip()
    schema = f"ro_{uuid.uuid4().hex[:12]}"
    role = f"reader_{schema}"
    with SnapshotStore(PostgresBackend(url, schema=schema)) as store:
        sess = store.session("campaign")
        for turn in range(4):
            sess.commit({"turn": turn, "hp": 1.0 if turn else 1, "log": [f"turn {t}" for t in range(turn)]})
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
    try:
        yield url, make_conninfo(**{**conninfo_to_dict(url), "user": role}), schema
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE "{role}"')


def _rows(url: str, schema: str) -> list[Any]:
    import psycopg

    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", [schema]
        ).fetchall()
        return [(t, conn.execute(f'SELECT * FROM "{schema}"."{t}" ORDER BY 1, 2').fetchall()) for (t,) in tables]


def test_a_select_only_role_reads_everything_and_every_write_is_refused_as_read_only(
    read_only_url: tuple[str, str, str], tmp_path: Path
) -> None:
    from snapstore.backends._postgres import PostgresBackend

    owner, reader, schema = read_only_url
    before = _rows(owner, schema)
    with SnapshotStore(PostgresBackend(reader, schema=schema)) as store:
        assert store.read_only
        sess = store.session("campaign")
        ids = sess.snapshot_ids()
        assert len(ids) == 4 and sess.state(ids[-1])["log"] == ["turn 0", "turn 1", "turn 2"]
        assert sess.diff(ids[0], ids[1]) and store.verify().ok
        assert store.export(tmp_path / "backup.snaparchive").snapshots == 4
        refused = []
        for name, write in [
            ("commit", lambda: sess.commit({"turn": 99})),
            ("rollback", lambda: sess.rollback(ids[0])),
            ("tag", lambda: sess.tag(ids[0], "keep")),
            ("new session", lambda: store.session("another")),
            ("delete", lambda: store.delete_session("campaign")),
        ]:
            with pytest.raises(ReadOnlyStoreError, match="read-only") as raised:
                write()
            assert "may not write" in str(raised.value)
            refused.append(name)
        store.gc()  # reclaims nothing, deletes nothing, raises nothing
    assert len(refused) == 5
    assert _rows(owner, schema) == before


def _grant(store: tuple[str, str, str], *grants: str) -> None:
    """Each of ``grants`` run by the owner for the reader's role of the fixture's ``store``."""
    import psycopg

    owner, _reader, schema = store
    with psycopg.connect(owner, autocommit=True) as admin:
        for grant in grants:
            admin.execute(grant.format(schema=f'"{schema}"', role=f'"reader_{schema}"'))


def test_a_role_that_may_write_in_part_is_refused_every_write_before_it_reaches_the_server(
    read_only_url: tuple[str, str, str],
) -> None:
    """INSERT and UPDATE without DELETE: the store opens read-only, and every write is refused on
    the client. Before, the writes the server allowed went through while ``read_only`` said true,
    until the first that needed a DELETE (a reclaim) failed as a plain BackendError, every commit
    after it too: the session stuck for that role."""

    from snapstore.backends._postgres import PostgresBackend

    owner, reader, schema = read_only_url
    _grant(
        read_only_url,
        "GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA {schema} TO {role}",
        "GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
    )
    before = _rows(owner, schema)
    with SnapshotStore(PostgresBackend(reader, schema=schema)) as store:
        assert store.read_only
        sess = store.session("campaign")
        ids = sess.snapshot_ids()
        for write in [
            lambda: sess.commit({"turn": 99}),
            lambda: sess.tag(ids[0], "keep"),
            lambda: sess.rollback(ids[0]),
            lambda: sess.forget(1),
            lambda: sess.set_max_snapshots(2),
            lambda: store.session("another"),
        ]:
            with pytest.raises(ReadOnlyStoreError, match=r"read-only here \(its role may not write"):
                write()
        assert store.gc().segments_dropped == 0
    assert _rows(owner, schema) == before
    # every table privilege, and UPDATE on the sequence instead of USAGE (nextval takes either)
    _grant(
        read_only_url,
        "GRANT DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
        "REVOKE USAGE ON ALL SEQUENCES IN SCHEMA {schema} FROM {role}",
        "GRANT UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
    )
    with SnapshotStore(PostgresBackend(reader, schema=schema)) as store:
        assert not store.read_only
        assert store.session("campaign").commit({"turn": 4}).parent == ids[-1]


def test_read_only_is_what_the_role_may_do_and_a_refused_read_is_no_read_only_error(
    read_only_url: tuple[str, str, str],
) -> None:
    """Write privileges given in part (INSERT without DELETE) still open the store read-only
    (``has_table_privilege`` given several privileges says whether any is held); a role that may
    not read either, or a read refused after the store was opened, is the server's error, not
    "read-only"; and the error raised while the store is being opened is a BackendError (it was an
    AttributeError: the message named the schema before there was one)."""

    from snapstore.backends._postgres import PostgresBackend
    from snapstore.errors import BackendError

    _owner, reader, schema = read_only_url
    _grant(read_only_url, "GRANT INSERT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    with SnapshotStore(PostgresBackend(reader, schema=schema)) as store:
        assert store.read_only  # no UPDATE or DELETE on its tables, no USAGE of its sequence
        sess = store.session("campaign")
        assert sess.state(sess.snapshot_ids()[-1])["turn"] == 3
        _grant(read_only_url, "REVOKE SELECT ON ALL TABLES IN SCHEMA {schema} FROM {role}")
        with pytest.raises(BackendError) as raised:
            store.session("campaign", create=False).snapshot_ids()
        assert type(raised.value) is BackendError and "permission denied" in str(raised.value)
    with pytest.raises(BackendError) as raised:  # may not read its tables: refused at once, by name
        SnapshotStore(PostgresBackend(reader, schema=schema))
    assert type(raised.value) is BackendError and "permission denied" in str(raised.value)


def test_a_server_that_takes_no_writes_refuses_to_make_a_store_as_read_only(
    read_only_url: tuple[str, str, str],
) -> None:
    import psycopg

    from snapstore.backends._postgres import PostgresBackend

    owner, reader, schema = read_only_url
    _grant(read_only_url, "GRANT CREATE ON SCHEMA {schema} TO {role}")
    with psycopg.connect(owner, autocommit=True) as admin:
        admin.execute(f'ALTER ROLE "reader_{schema}" SET default_transaction_read_only = on')
    with pytest.raises(ReadOnlyStoreError, match="read-only here") as raised:
        SnapshotStore(PostgresBackend(reader, schema=schema, table_prefix="another_"))  # no tables yet
    assert raised.value.details["sqlstate"] == "25006"
    with SnapshotStore(PostgresBackend(reader, schema=schema)) as store:  # the one there reads
        assert store.read_only and store.session("campaign").snapshot_ids()


def test_upgrade_on_a_current_store_by_a_read_only_role_has_nothing_to_do(
    read_only_url: tuple[str, str, str],
) -> None:
    """``snapstore upgrade`` takes a lock before it finds the store current: refusing every lock on
    a read-only store made it fail there (a write it never makes)."""
    from psycopg.conninfo import conninfo_to_dict

    from snapstore.upgrade import upgrade_store

    _owner, reader, schema = read_only_url
    found = conninfo_to_dict(reader)
    url = (
        f"postgresql://{found['user']}@{found['host']}:{found['port']}/{found['dbname']}"
        f"?options=-csearch_path%3D{schema}"
    )
    assert upgrade_store(url).upgraded is False


def test_a_role_that_may_not_update_the_entries_table_opens_the_store_read_only(
    read_only_url: tuple[str, str, str],
) -> None:
    """Replacing a session (a LangGraph saver's prune, ``store.replacing``) renames its rows: a role
    with every other privilege opened the store writable and failed there, part way through."""

    from snapstore.backends._postgres import PostgresBackend

    _owner, reader, schema = read_only_url
    _grant(
        read_only_url,
        "GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
        "REVOKE UPDATE ON {schema}.snapstore_entries FROM {role}",
        "GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
    )
    with SnapshotStore(PostgresBackend(reader, schema=schema)) as store:
        assert store.read_only


def test_a_lock_takes_an_idle_pooled_connection_after_one_made_its_own(read_only_url: tuple[str, str, str]) -> None:
    """For two seconds after a lock made its own connection (the pool in its back-off after an
    outage), locks take an idle pooled connection without waiting: asking the pool with a wait of 0
    never looked at its idle ones, so every lock made its own for as long as commits kept coming."""
    from snapstore.backends._postgres import PostgresBackend

    owner, _reader, schema = read_only_url
    backend = PostgresBackend(owner, schema=schema, lock_pool_size=2)
    with SnapshotStore(backend) as store:
        sess = store.session("campaign")
        sess.commit({"turn": 4})  # the lock pool now holds an idle connection
        made = backend._own_made_at = time.monotonic()  # as right after a lock made its own
        for turn in range(5, 8):
            sess.commit({"turn": turn})
        assert backend._own_made_at == made  # none made: the idle pooled one was taken each time



def test_a_lock_interrupted_while_it_commits_lets_its_connection_go(read_only_url: tuple[str, str, str]) -> None:
    """Ctrl-C landing in the lock's COMMIT: the connection was neither given back nor closed, and
    with one lock connection every later lock of the process waited for it, then reported a lock
    timeout. The connection is closed (which ends its transaction and the lock on the server)."""
    from snapstore.backends._postgres import PostgresBackend

    owner, _reader, schema = read_only_url
    backend = PostgresBackend(owner, schema=schema, lock_pool_size=1)
    try:
        with pytest.raises(KeyboardInterrupt), backend.lock_session("a", 1.0):
            held = backend._held("a")
            assert held is not None
            real = held.conn.execute

            def interrupted(query: Any, *args: Any, **kwargs: Any) -> Any:
                if query == "COMMIT":
                    raise KeyboardInterrupt
                return real(query, *args, **kwargs)

            held.conn.execute = interrupted
        assert backend._lock_connections_held() == 0
        with backend.lock_session("a", 1.0):  # before: LockTimeoutError, the one connection kept
            pass
    finally:
        backend.close()
