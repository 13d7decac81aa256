"""A PostgreSQL commit whose transaction is lost as its lock lets go (the server dropped the
connection before COMMIT): the commit raises, and the handle forgets what it appended under the
lock, so its next commit is built on what the database holds, not on the snapshot that was
rolled back. The server really terminates the lock's connection (``pg_terminate_backend``), at
the moment the lock's transaction is about to commit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import canonical, postgres_url_or_skip
from snapstore import SnapshotStore
from snapstore.errors import BackendError


@pytest.fixture
def schema() -> Iterator[tuple[str, str]]:
    import psycopg

    url = postgres_url_or_skip()
    name = f"lost_{uuid.uuid4().hex[:12]}"
    try:
        yield url, name
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _store(url: str, schema: str) -> SnapshotStore:
    from snapstore.backends._postgres import PostgresBackend

    return SnapshotStore(PostgresBackend(url, schema=schema, pool_size=2))


def test_a_commit_whose_transaction_is_lost_is_not_built_on(
    schema: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from snapstore.backends._postgres import PostgresBackend

    url, name = schema
    store = _store(url, name)
    sess = store.session("victim")
    states: list[Any] = [{"turn": n, "log": ["a", "b", "c", "d"][:n]} for n in range(1, 5)]
    first, second = sess.commit(states[0]).id, sess.commit(states[1]).id
    real_finish = PostgresBackend._finish
    with psycopg.connect(url, autocommit=True) as admin:

        def the_server_drops_the_connection(self: Any, held: Any, *, commit: bool) -> None:
            admin.execute("SELECT pg_terminate_backend(%s)", [held.conn.info.backend_pid])
            real_finish(self, held, commit=commit)

        monkeypatch.setattr(PostgresBackend, "_finish", the_server_drops_the_connection)
        with sess.keeping_decoded(), pytest.raises(BackendError, match="may not have been committed"):
            sess.commit(states[2])  # inside a block a reader opens around reads (the LangGraph saver's)
        monkeypatch.setattr(PostgresBackend, "_finish", real_finish)
        assert sess._log._keeping == 0  # the block ended on the log read again, as it began
    fourth = sess.commit(states[3])
    assert fourth.parent == second  # the lost commit is not the parent
    head = sess.head_state()
    assert head is not None and head[0].id == fourth.id and canonical(head[1]) == canonical(states[3])
    again = _store(url, name)
    try:
        reopened = again.session("victim")
        assert reopened.snapshot_ids() == [first, second, fourth.id]
        assert canonical(reopened.state(fourth.id)) == canonical(states[3])
        assert again.verify().ok
    finally:
        again.close()
        store.close()
