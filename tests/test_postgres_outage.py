"""The first commit after the database came back: its lock's connection pool, whose connections
failed while the server refused them, waits out a back-off of seconds before it connects again.
The commit then connects on its own and lands; it does not wait out the back-off and report a lock
timeout (no writer held the lock). The outage is real: the test database stops accepting
connections (``ALLOW_CONNECTIONS false``) and its connections are terminated, then it accepts
them again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import own_postgres_database
from snapstore import SnapshotStore
from snapstore.errors import BackendError


@pytest.fixture
def database() -> Iterator[tuple[str, str]]:
    """(an admin URL, the URL of a database of this test's own)."""
    with own_postgres_database("outage") as found:
        yield found


def _refusing(admin_url: str, name: str, refuse: bool) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if refuse else "true"}')
        if refuse:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])


def test_the_first_commit_after_an_outage_lands_instead_of_timing_out_on_the_pool(
    database: tuple[str, str],
) -> None:
    from psycopg.conninfo import conninfo_to_dict

    from snapstore.backends._postgres import PostgresBackend

    admin_url, url = database
    name = conninfo_to_dict(url)["dbname"]
    store = SnapshotStore(PostgresBackend(url), lock_timeout=0.5)
    try:
        sess = store.session("s")
        first = sess.commit({"turn": 1}).id
        _refusing(admin_url, name, True)
        with pytest.raises(BackendError, match="not currently accepting connections"):
            sess.commit({"turn": 2})
        time.sleep(3.0)  # the pool keeps failing meanwhile, and its back-off grows
        _refusing(admin_url, name, False)
        landed = sess.commit({"turn": 3})  # before the fix: LockTimeoutError after 5 s of waiting for the pool
        assert landed.parent == first
        assert sess.state(landed.id) == {"turn": 3}
        assert sess.commit({"turn": 4}).parent == landed.id
    finally:
        store.close()


def test_after_a_long_outage_with_a_small_lock_pool_the_first_commit_lands(database: tuple[str, str]) -> None:
    """Commits kept failing through the outage, each leaving the lock pool another connection
    attempt waiting out its back-off: counted as the pool's connections, they left a lock no room
    for one of its own, and the first commit after the outage waited for the pool again and
    reported a lock timeout (found by a trial: pool_size=4, lock_pool_size=2, a commit every
    0.3 s through 10 s down). Only the connections locks hold count now."""
    from psycopg.conninfo import conninfo_to_dict

    from snapstore.backends._postgres import PostgresBackend

    admin_url, url = database
    name = conninfo_to_dict(url)["dbname"]
    store = SnapshotStore(PostgresBackend(url, pool_size=4, lock_pool_size=2), lock_timeout=2.0)
    try:
        sess = store.session("s")
        first = sess.commit({"turn": 1}).id
        _refusing(admin_url, name, True)
        refused, until = 0, time.monotonic() + 8.0  # the pool's back-off grows to 4, then 8 s
        while time.monotonic() < until:
            with pytest.raises(BackendError):
                sess.commit({"turn": 2})
            refused += 1
            time.sleep(0.3)
        _refusing(admin_url, name, False)
        landed = sess.commit({"turn": 3})  # before: LockTimeoutError, no writer holding the lock
        assert refused >= 3 and landed.parent == first and sess.state(landed.id) == {"turn": 3}
        assert [sess.commit({"turn": turn}).id for turn in (4, 5, 6)][-1] == sess.head.id
    finally:
        store.close()


def test_the_first_read_after_an_outage_answers_instead_of_waiting_out_the_pool(database: tuple[str, str]) -> None:
    """Reads take connections from the operations pool, which, its connections failed while the
    server was down, waits out a back-off that grows with the outage before it connects again:
    reads kept failing after the server was back, each reporting every pooled connection busy,
    for as long again as the outage had lasted (found by a trial: 100 s after 140 s down), where
    commits landed. A read now connects on its own when the pool gives none at once."""
    from psycopg.conninfo import conninfo_to_dict

    from snapstore.backends._postgres import PostgresBackend

    admin_url, url = database
    name = conninfo_to_dict(url)["dbname"]
    store = SnapshotStore(PostgresBackend(url, pool_timeout=2.0))
    try:
        first = store.session("s").commit({"turn": 1}).id
        _refusing(admin_url, name, True)
        until = time.monotonic() + 10.0  # the pool's back-off grows past its 2 s timeout
        while time.monotonic() < until:
            with pytest.raises(BackendError):
                store.sessions()
            time.sleep(0.5)
        _refusing(admin_url, name, False)
        assert store.sessions() == ["s"]  # before: "couldn't get a connection after 2.00 sec"
        reader = SnapshotStore(store.backend).session("s")
        assert reader.state(first) == {"turn": 1}
    finally:
        store.close()


def test_verify_during_an_outage_raises_instead_of_reporting_the_store_damaged(database: tuple[str, str]) -> None:
    """A server that stops serving part way through a verify (here: the database refuses connections
    from the moment verify asks for the first session's segments) is an error of reaching the store:
    verify raised nothing and reported each session it could not read as a problem of the store,
    which a monitor would take for damage (a trial saw '5 problems found' during restarts)."""
    from psycopg.conninfo import conninfo_to_dict

    from snapstore.backends._postgres import PostgresBackend

    admin_url, url = database
    name = conninfo_to_dict(url)["dbname"]
    backend = PostgresBackend(url)
    store = SnapshotStore(backend)
    try:
        for n in range(3):
            store.session(f"s{n}").commit({"n": n})
        listing = backend.segments

        def outage_from_here(key: str) -> Any:
            backend.segments = listing  # type: ignore[method-assign]
            _refusing(admin_url, name, True)
            return listing(key)

        backend.segments = outage_from_here  # type: ignore[method-assign]
        with pytest.raises(BackendError) as raised:
            store.verify()
        assert raised.value.details["reason"] == "server not serving"
        _refusing(admin_url, name, False)
        report = store.verify()
        assert report.ok and report.sessions_checked == 3
    finally:
        store.close()


def test_the_command_line_says_an_outage_in_one_line(database: tuple[str, str], tmp_path: Path) -> None:
    """A command on a database that refuses connections says so in one error line, no traceback and
    nothing else on stderr. (The pool's own log lines, which a trial saw around such errors when the
    server restarted under a running command, come from connections lost part way through one, which
    this test does not make; they were checked by hand: docs/cli.md, verify.)"""
    from urllib.parse import urlsplit, urlunsplit

    from psycopg.conninfo import conninfo_to_dict

    from cli_support import run

    admin_url, own = database
    name = conninfo_to_dict(own)["dbname"]
    url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))  # the command line takes a URL
    with SnapshotStore.open(url) as store:
        store.session("s").commit({"n": 1})
    _refusing(admin_url, name, True)
    for argv in (("verify",), ("log", "s"), ("stats",)):
        failed = run(*argv, "--store", url, cwd=tmp_path)
        assert failed.returncode == 1
        assert failed.stderr.startswith("snapstore: error: PostgreSQL: ") and failed.stderr.count("\n") == 1, (
            argv,
            failed.stderr,
        )


def test_verify_reports_a_statement_refused_by_a_serving_server_as_a_problem(database: tuple[str, str]) -> None:
    """Only a server that does not serve (a connection refused or lost, a shutdown) stops verify: an
    error a statement meets on a server that serves (here a lock timeout, as a full disk or a data
    file gone would be) is reported as the problem it is, and the other sessions are checked."""
    import psycopg

    from snapstore.backends._postgres import PostgresBackend

    _admin_url, url = database
    with SnapshotStore(PostgresBackend(url)) as store:
        for n in range(2):
            store.session(f"s{n}").commit({"n": n})
    impatient = PostgresBackend(f"{url} options='-c lock_timeout=200'")
    with psycopg.connect(url) as holder, SnapshotStore(impatient) as store:
        holder.execute("LOCK TABLE snapstore_entries IN ACCESS EXCLUSIVE MODE")  # held until the block ends
        report = store.verify()
        assert not report.ok and report.sessions_checked == 2
        assert all("lock timeout" in problem.message for problem in report.problems), report.problems
        holder.rollback()
        assert store.verify().ok
