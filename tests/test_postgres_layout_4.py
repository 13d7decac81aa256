"""PostgreSQL table layout 4: a layout-3 store opens as layout 4 with every state and row it held,
and the tables keep no TOAST table, one index key per segment, and a meta table of one page.

The layout-3 store is written with the layout docs/format.md gives for it (section 5.1): each
segment's stream cut into whole-page rows, then quarter-page rows, the rest kept as the tail in
the segment's row, from the sessions a memory store holds after the same commits.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import canonical, own_postgres_database, postgres_url_or_skip
from snapstore import SnapshotStore
from test_postgres_schema_upgrade import (
    _contents,
    _source,
    _url,
    drop_schema,
    format_1_store_beside,
    refused_while_a_view_holds,
    segments_of,
    states,
    writing_new_schema,
)

LAYOUT_3 = [
    'CREATE TABLE snapstore_meta (key text COLLATE "C" PRIMARY KEY, value text, data bytea, size bigint,'
    " version bigint) WITH (toast_tuple_target = 8160, fillfactor = 50)",
    "ALTER TABLE snapstore_meta ALTER COLUMN data SET STORAGE EXTERNAL",
    'CREATE TABLE snapstore_entries (session text COLLATE "C" NOT NULL, segment bigint NOT NULL,'
    " pos bigint NOT NULL, data bytea NOT NULL, PRIMARY KEY (session, segment, pos)) WITH (toast_tuple_target = 8160)",
    "ALTER TABLE snapstore_entries ALTER COLUMN data SET STORAGE EXTERNAL",
    "CREATE SEQUENCE snapstore_segment_version",
    "INSERT INTO snapstore_meta (key, value) VALUES ('schema_version', '3')",
]


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _row_sizes(key: str) -> tuple[int, int]:
    """(W, Q) of docs/format.md section 5 for a session key of up to 126 bytes."""
    head = _align(_align(25 + len(key.encode()), 8) + 16, 4) + 4
    return 8160 - head, 2032 - head


def _layout_3_rows(key: str, stream: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The entries rows (pos, data) and the tail of a stream written whole by layout 3."""
    whole, quarter = _row_sizes(key)
    wholes = len(stream) // whole * whole
    end = wholes + len(stream) % whole // quarter * quarter
    starts = [*range(0, wholes, whole), *range(wholes, end, quarter)]
    return [(pos, stream[pos : pos + (whole if pos < wholes else quarter)]) for pos in starts], stream[end:]


@pytest.fixture
def layout_3_store() -> Iterator[tuple[str, dict[str, dict[str, bytes]]]]:
    url = postgres_url_or_skip()
    source, expected = _source()
    backend = source.backend
    with writing_new_schema(url, "layout3", on_search_path=True) as (conn, schema):
        for text in LAYOUT_3:
            conn.execute(text)
        config = backend.read_config("format")
        conn.execute("INSERT INTO snapstore_meta (key, data) VALUES ('config/format', %s)", [config])
        for key, segment, entries in segments_of(backend):
            stream = b"".join(len(entry).to_bytes(4, "big") + entry for entry in entries)
            rows, tail = _layout_3_rows(key, stream)
            conn.execute(
                "INSERT INTO snapstore_meta (key, size, version, data)"
                " VALUES (%s, %s, nextval('snapstore_segment_version'), %s)",
                [f"segment/{key}/{segment:016x}", len(stream), tail],
            )
            for pos, data in rows:
                conn.execute("INSERT INTO snapstore_entries VALUES (%s, %s, %s, %s)", [key, segment, pos, data])
    source.close()
    yield _url(url, schema), expected
    drop_schema(url, schema)


def _catalog(url: str) -> dict[str, Any]:
    """What layout 4 changes in the catalog: TOAST tables, the entries table's indexes, the version row."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return {
            "toast": conn.execute(
                "SELECT relname, reltoastrelid <> 0 FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
                " AND relkind = 'r' ORDER BY 1"
            ).fetchall(),
            "indexes": conn.execute(
                "SELECT indexname, indexdef LIKE '%%UNIQUE%%' FROM pg_indexes WHERE schemaname = current_schema()"
                " AND tablename = 'snapstore_entries'"
            ).fetchall(),
            "version": conn.execute("SELECT value FROM snapstore_meta WHERE key = 'schema_version'").fetchone(),
            "rows": conn.execute("SELECT * FROM snapstore_entries ORDER BY session, segment, pos").fetchall(),
            "tails": conn.execute(
                "SELECT key, size, data FROM snapstore_meta WHERE key LIKE 'segment/%%' ORDER BY 1"
            ).fetchall(),
        }


def test_a_layout_3_store_opens_as_layout_4_with_every_state_and_row(
    layout_3_store: tuple[str, dict[str, dict[str, bytes]]],
) -> None:
    url, expected = layout_3_store
    before = _catalog(url)
    assert before["toast"] == [("snapstore_entries", True), ("snapstore_meta", True)]
    assert before["indexes"] == [("snapstore_entries_pkey", True)] and before["version"] == ("3",)
    assert len(before["rows"]) > len(before["tails"]) > 2  # streams of several rows, tails in the meta rows
    store = SnapshotStore.open(url)
    try:
        after = _catalog(url)
        assert after["toast"] == [("snapstore_entries", False), ("snapstore_meta", False)]
        assert after["indexes"] == [("snapstore_entries_segment", False)] and after["version"] == ("4",)
        assert (after["rows"], after["tails"]) == (before["rows"], before["tails"]), "the rows stay as they were"
        for name, by_id in expected.items():
            sess = store.session(name)
            assert sess.snapshot_ids() == list(by_id)
            assert [canonical(sess.state(i)) for i in by_id] == list(by_id.values())
        store.verify()
        new = store.session("alpha").commit(states(41), label="after", turn=41)
    finally:
        store.close()
    again = SnapshotStore.open(url)
    try:
        assert canonical(again.session("alpha").state(new.id)) == canonical(states(41))
    finally:
        again.close()


def test_an_upgrade_that_fails_leaves_the_layout_3_store_as_it_was(
    layout_3_store: tuple[str, dict[str, dict[str, bytes]]],
) -> None:
    url, expected = layout_3_store
    # rewriting the entries' bytes, a step of the upgrade, fails
    before = refused_while_a_view_holds(
        url, expected, "SELECT data FROM snapstore_entries", lambda u: (_contents(u), _catalog(u))
    )
    assert before[1]["version"] == ("3",) and _catalog(url)["version"] == ("4",)


def test_the_meta_table_keeps_one_page_through_a_thousand_commits() -> None:
    """Each commit rewrites its segment's row in the page the row is in, and the rows of new segments
    fit that page: no second page and no free space map, which a second page would bring."""
    # the suite's workers run side by side on the shared server: a server of the test's own when
    # .ci/postgres.sh can start one, else a database of its own there; either way a run another
    # transaction overlapped tells nothing and is made again, in a moment the server is quiet
    with _private_server() as private, contextlib.ExitStack() as stack:
        url = private or stack.enter_context(own_postgres_database("layout4"))[1]
        for _attempt in range(_QUIET_ATTEMPTS):
            found = _meta_table_through_a_thousand_commits(url)
            if found is not None:
                break
        else:
            pytest.skip("another transaction on the server held an older snapshot in every run: pages not pruned")
    holders, segments, sizes = found
    assert holders > 10  # the watch ran all through the commits
    assert segments > 1  # new segments' rows were written into the page too
    assert sizes == (8192, 0)


#: runs of the thousand commits made before the test gives up finding the server quiet
_QUIET_ATTEMPTS = 6


@contextlib.contextmanager
def _private_server() -> Iterator[str | None]:
    """The URL of a PostgreSQL server of the caller's own, started by .ci/postgres.sh and stopped
    after; None where the script (not in a source distribution) or the server's programs are not."""
    import subprocess

    script = Path(__file__).resolve().parent.parent / ".ci" / "postgres.sh"
    if not script.is_file():
        yield None
        return
    env = {k: v for k, v in os.environ.items() if k != "SNAPSTORE_TEST_POSTGRES_URL"}  # (set: start checks it)
    env["SNAPSTORE_PG_PORT"] = "54400"  # (the script takes the next free port from here)
    started = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, env=env, timeout=180)
    exports = dict(re.findall(r"^export (\w+)='?([^'\n]*?)'?$", started.stdout, flags=re.M))
    try:
        yield exports.get("SNAPSTORE_TEST_POSTGRES_URL") if started.returncode == 0 else None
    finally:
        if "SNAPSTORE_PG_DIR" in exports:
            subprocess.run(["bash", str(script), "stop"], env={**env, **exports}, capture_output=True, timeout=180)


def _meta_table_through_a_thousand_commits(url: str) -> tuple[int, int, tuple[int, int]] | None:
    """(watches made, segments, the meta table's (main, free space map) sizes) after a thousand
    commits, or None when another transaction on the server held a snapshot meanwhile."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from snapstore.backends._postgres import PostgresBackend

    schema = f"layout4_{uuid.uuid4().hex[:12]}"
    name = f"snapstore-{schema}"  # the store's connections, told apart from everyone else's
    # Pruning gives a row's old versions back only when no transaction holds an older snapshot:
    # another job's transaction, or the server's own automatic ANALYZE of a table earlier tests
    # wrote, would grow the page; one in another database did too (a database of its own was not
    # enough beside the suite's other workers). Such a snapshot is watched for all through the run.
    held = (
        "SELECT count(*) FROM pg_stat_activity WHERE (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)"
        " AND pid <> pg_backend_pid() AND application_name IS DISTINCT FROM %s"
    )
    holders: list[int] = []
    done = threading.Event()

    def watch() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                row = conn.execute(held, [name]).fetchone()
                holders.append(row[0] if row else 0)
                if done.wait(0.002):
                    return

    watcher = threading.Thread(target=watch)
    watcher.start()
    store = SnapshotStore(PostgresBackend(make_conninfo(url, application_name=name), schema=schema, pool_size=2))
    try:
        sess = store.session("s", max_snapshots=1000)
        state: dict[str, Any] = {"log": []}
        for turn in range(1000):  # each commit adds about 1 KiB of fresh bytes to its segment
            state["log"] = [*state["log"][-400:], uuid.UUID(int=turn * 7919).hex * 24]
            sess.commit(state, turn=turn)
        segments = len(store.backend.segments(sess.key))
        done.set()
        watcher.join()
        with psycopg.connect(url, autocommit=True) as conn:
            sizes = conn.execute(
                "SELECT pg_relation_size(c.oid), pg_relation_size(c.oid, 'fsm') FROM pg_class c"
                " WHERE c.relnamespace = %s::regnamespace AND c.relname = 'snapstore_meta'",
                [schema],
            ).fetchone()
    finally:
        done.set()
        watcher.join()
        store.close()
        drop_schema(url, schema)
    if any(holders):
        return None
    return len(holders), segments, sizes


def test_a_format_1_store_opened_by_layout_3_code_gets_the_tables_of_layout_4_and_keeps_its_version() -> None:
    with format_1_store_beside(LAYOUT_3[:-1]) as url:
        catalog = _catalog(url)
    assert catalog["version"] == ("1",) and catalog["indexes"] == [("snapstore_entries_segment", False)]
    assert catalog["toast"] == [
        ("snapstore_entries", False),
        ("snapstore_meta", False),
        ("snapstore_objects", True),  # format 1's own tables are left as they are
        ("snapstore_refs", True),
    ]
