"""A PostgreSQL store opened by a role granted SELECT only (a reporting or backup role): every read
works, ``read_only`` says so, and every write is a ReadOnlyStoreError that says the store is read-only,
as a read-only folder's are, with nothing written."""

from __future__ import annotations

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
