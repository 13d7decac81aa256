"""Older PostgreSQL table layouts open as layout 4 with every state they held.

A layout-2 store (one row per entry) is rewritten as layout 3, then as layout 4; a layout-3
store (streams in page-sized rows, TOAST tables, a primary key on every row) as layout 4.
Each old store is written with the layout docs/format.md gives for it: the same sessions,
segments and entries a memory store holds after the same commits.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from conftest import canonical, postgres_url_or_skip
from snapstore import SnapshotStore

SCHEMA_2 = [
    'CREATE TABLE {s}.snapstore_config (name text COLLATE "C" PRIMARY KEY, value bytea NOT NULL)',
    'CREATE TABLE {s}.snapstore_segments (session text COLLATE "C" NOT NULL, segment bigint NOT NULL,'
    " entries bigint NOT NULL, bytes bigint NOT NULL, version bigint NOT NULL, PRIMARY KEY (session, segment))",
    'CREATE TABLE {s}.snapstore_entries (session text COLLATE "C" NOT NULL, segment bigint NOT NULL,'
    " pos bigint NOT NULL, data bytea NOT NULL, PRIMARY KEY (session, segment, pos))",
    "CREATE SEQUENCE {s}.snapstore_segment_version",
    'CREATE TABLE {s}.snapstore_meta (key text COLLATE "C" PRIMARY KEY, value text)',
    "INSERT INTO {s}.snapstore_meta (key, value) VALUES ('schema_version', '2')",
]


def states(turn: int) -> Any:
    big = random.Random(turn).randbytes(turn * 997 % 20000).hex()  # keyframes span several rows
    return {"turn": turn, "flag": turn % 3 == 0, "ratio": turn / 7, "one": 1.0 if turn % 2 else 1, "big": big}


def _source() -> tuple[SnapshotStore, dict[str, dict[str, bytes]]]:
    """A memory store with two sessions, and every state each retains, canonical."""
    source = SnapshotStore.memory()
    expected: dict[str, dict[str, bytes]] = {}
    for name, turns in (("alpha", 40), ("beta with space", 7)):
        sess = source.session(name, max_snapshots=25)
        for turn in range(1, turns + 1):
            sess.commit(states(turn), label=f"t{turn}", turn=turn)
        expected[name] = {i: canonical(sess.state(i)) for i in sess.snapshot_ids()}
    return source, expected


def _url(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@contextmanager
def writing_new_schema(url: str, prefix: str, on_search_path: bool = False) -> Iterator[tuple[Any, str]]:
    """A connection and the name of a schema ``prefix``_<random> it has just created, in one
    transaction; with ``on_search_path``, unqualified names are the schema's."""
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_url(url, schema) if on_search_path else url, autocommit=True) as conn, conn.transaction():
        conn.execute(f'CREATE SCHEMA "{schema}"')
        yield conn, schema


@pytest.fixture
def schema_2_store() -> Iterator[tuple[str, dict[str, dict[str, bytes]]]]:
    url = postgres_url_or_skip()
    source, expected = _source()
    backend = source.backend
    with writing_new_schema(url, "schema2") as (conn, schema):
        for text in SCHEMA_2:
            conn.execute(text.format(s=f'"{schema}"'))
        value = backend.read_config("format")
        if value is not None:
            conn.execute(f'INSERT INTO "{schema}".snapstore_config VALUES (%s, %s)', ["format", value])
        for key, segment, entries in segments_of(backend):
            conn.execute(
                f'INSERT INTO "{schema}".snapstore_segments VALUES (%s, %s, %s, %s,'
                f" nextval('\"{schema}\".snapstore_segment_version'))",
                [key, segment, len(entries), sum(map(len, entries))],
            )
            for pos, data in enumerate(entries):
                conn.execute(
                    f'INSERT INTO "{schema}".snapstore_entries VALUES (%s, %s, %s, %s)', [key, segment, pos, data]
                )
    source.close()
    yield _url(url, schema), expected
    drop_schema(url, schema)


def segments_of(backend: Any) -> Iterator[tuple[str, int, list[bytes]]]:
    """(session key, segment number, entries) of every segment ``backend`` holds."""
    for key in backend.session_keys():
        for info in backend.segments(key):
            yield key, info.segment, backend.read_segment(key, info.segment).entries


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_a_schema_2_store_opens_as_layout_4_with_every_state(
    schema_2_store: tuple[str, dict[str, dict[str, bytes]]],
) -> None:
    import psycopg

    url, expected = schema_2_store
    store = SnapshotStore.open(url)
    try:
        assert store.sessions() == sorted(expected)
        for name, by_id in expected.items():
            sess = store.session(name)
            assert sess.snapshot_ids() == list(by_id)
            for snapshot_id, state in by_id.items():
                assert canonical(sess.state(snapshot_id)) == state
        store.verify()
        # the upgraded store takes commits, and a second handle reads them
        sess = store.session("alpha")
        new = sess.commit(states(41), label="after", turn=41)
    finally:
        store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1")
        ]
        version = conn.execute("SELECT value FROM snapstore_meta WHERE key = 'schema_version'").fetchone()
    assert tables == ["snapstore_entries", "snapstore_meta"] and version == ("4",)
    again = SnapshotStore.open(url)
    try:
        assert canonical(again.session("alpha").state(new.id)) == canonical(states(41))
        for snapshot_id, state in expected["beta with space"].items():
            assert canonical(again.session("beta with space").state(snapshot_id)) == state
    finally:
        again.close()


def _contents(url: str) -> dict[str, Any]:
    """Every table of the store's schema: its columns and its rows, sorted."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        tables = [t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        found: dict[str, Any] = {}
        for table in sorted(tables):
            columns = conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
                [table],
            ).fetchall()
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
            found[table] = (columns, sorted(rows, key=repr))
        return found


def refused_while_a_view_holds(
    url: str, expected: dict[str, dict[str, bytes]], view: str, contents: Callable[[str], Any] = _contents
) -> Any:
    """Opening fails while ``view`` (a view on a table the upgrade rewrites or drops) exists, and
    changes nothing of ``contents``; once the view is dropped the store opens with every state.
    Returns the contents from before."""
    import psycopg

    from snapstore.errors import BackendError

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE VIEW in_use AS {view}")
    before = contents(url)
    with pytest.raises(BackendError) as info:
        SnapshotStore.open(url)
    assert "cause" in info.value.details
    assert contents(url) == before
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP VIEW in_use")
    store = SnapshotStore.open(url)
    try:
        for name, by_id in expected.items():
            assert [canonical(store.session(name).state(i)) for i in by_id] == list(by_id.values())
    finally:
        store.close()
    return before


def test_an_upgrade_that_fails_leaves_the_schema_2_store_as_it_was(
    schema_2_store: tuple[str, dict[str, dict[str, bytes]]],
) -> None:
    url, expected = schema_2_store
    # the upgrade's last step, dropping the schema-2 tables, fails
    before = refused_while_a_view_holds(url, expected, "SELECT * FROM snapstore_config")
    assert "snapstore_segments" in before and before["snapstore_meta"][1] == [("schema_version", "2")]


def test_keyframes_span_whole_page_rows_after_the_upgrade(
    schema_2_store: tuple[str, dict[str, dict[str, bytes]]],
) -> None:
    import psycopg

    url, _expected = schema_2_store
    SnapshotStore.open(url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        sizes = [n for (n,) in conn.execute("SELECT octet_length(data) FROM snapstore_entries")]
        toast = conn.execute("SELECT reltoastrelid FROM pg_class WHERE oid = 'snapstore_entries'::regclass")
        assert max(sizes) > 8000 and toast.fetchone() == (0,)  # rows of a whole page, and no TOAST table


@contextmanager
def format_1_store_beside(statements: list[str]) -> Iterator[str]:
    """A schema holding a format-1 store and the empty tables ``statements`` create beside it (with
    ``schema_version`` '1'), after a ``PostgresBackend`` opened it once and found the format-1 store
    and no session: its URL (search_path set to the schema), the schema dropped afterwards."""
    import psycopg

    from snapstore.backends._postgres import PostgresBackend

    url = postgres_url_or_skip()
    schema = f"format1_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_url(url, schema), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        for text in [
            *statements,
            "INSERT INTO snapstore_meta (key, value) VALUES ('schema_version', '1')",
            'CREATE TABLE snapstore_refs (name text COLLATE "C" PRIMARY KEY, value text NOT NULL)',
            'CREATE TABLE snapstore_objects (key text COLLATE "C" PRIMARY KEY, data bytea NOT NULL)',
            "INSERT INTO snapstore_refs VALUES ('config/format', '1')",
        ]:
            conn.execute(text)
    try:
        backend = PostgresBackend(url, schema=schema)
        try:
            assert backend.legacy_format() == "1" and backend.session_keys() == []
        finally:
            backend.close()
        yield _url(url, schema)
    finally:
        drop_schema(url, schema)


def test_a_format_1_store_opened_by_schema_2_code_keeps_its_version() -> None:
    """Schema-2 code created its (empty) tables beside format-1 ones: they go, and '1' stays for the upgrade."""
    import psycopg

    beside = [text.replace("{s}.", "") for text in SCHEMA_2[:-1]]
    with format_1_store_beside(beside) as url, psycopg.connect(url, autocommit=True) as conn:
        tables = [t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        version = conn.execute("SELECT value FROM snapstore_meta WHERE key = 'schema_version'")
        assert sorted(tables) == ["snapstore_entries", "snapstore_meta", "snapstore_objects", "snapstore_refs"]
        assert version.fetchone() == ("1",)
