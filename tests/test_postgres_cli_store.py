"""The CLI on a PostgreSQL database that holds no store: a read-only command and an import that
fails leave no tables behind (a mistyped database, an application's own, stays as it was)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_support import one_error_line, run
from conftest import postgres_url_or_skip
from snapstore import SnapshotStore


@pytest.fixture
def empty_schema() -> Iterator[tuple[str, Any]]:
    """A URL whose connections see only a new, empty schema, and a way to list its tables."""
    import psycopg

    url = postgres_url_or_skip()
    name = f"cli_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{name}"')

        def tables() -> list[str]:
            rows = admin.execute("SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = %s", [name])
            return sorted(row[0] for row in rows)

        separator = "&" if "?" in url else "?"
        try:
            yield f"{url}{separator}options=-csearch_path%3D{name}", tables
        finally:
            admin.execute(f'DROP SCHEMA "{name}" CASCADE')


def test_reading_commands_and_a_failed_import_make_no_tables(empty_schema: tuple[str, Any], tmp_path: Path) -> None:
    url, tables = empty_schema
    for argv in (("log",), ("sessions",), ("verify",), ("gc",)):
        refused = run(*argv, "--store", url)
        assert refused.returncode == 1 and "no snapstore store at" in refused.stderr, (argv, refused.stderr)
    assert tables() == []
    archive = tmp_path / "good.snaparchive"
    with SnapshotStore.memory() as source:
        source.session("s").commit({"n": 1})
        source.export(archive)
    damaged = tmp_path / "damaged.snaparchive"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    failed = run("import", str(damaged), "--store", url)
    assert failed.returncode == 1 and "damaged" in failed.stderr, failed.stderr
    assert tables() == []  # the store the import would have made was never made
    imported = run("import", str(archive), "--store", url)
    assert imported.returncode == 0, imported.stderr
    assert tables() != []
    assert run("log", "s", "--store", url).returncode == 0


def _schema_of(url: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return str(conn.execute("SELECT current_schema()").fetchone()[0])  # type: ignore[index]


@pytest.mark.parametrize(
    ("table", "found"),
    [
        ("snapstore_meta (id integer, note text)", "its columns are (id integer, note text)"),
        ('snapstore_meta (key text COLLATE "C", value text)', "it has no primary key"),
    ],
)
def test_a_table_of_another_named_snapstore_meta_is_named_and_kept(
    empty_schema: tuple[str, Any], table: str, found: str
) -> None:
    """Neither a reading command nor init reads or writes someone else's snapstore_meta: both say whose
    it is not, what differs, and where to keep the store instead (no SQL error, no "run init")."""
    import psycopg

    url, tables = empty_schema
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table}")
    for argv in (("sessions",), ("init",)):
        refused = run(*argv, "--store", url)
        line = one_error_line(refused.stderr)
        assert refused.returncode == 1, (argv, refused.stderr)
        assert "snapstore_meta in " in line and "is not snapstore's" in line and found in line, line
        assert "another schema" in line and "table prefix" in line, line
        assert "schema=" not in line and "does not exist" not in line and "ON CONFLICT" not in line, line
    assert tables() == ["snapstore_meta"]  # nothing made beside it


def test_init_in_a_schema_the_url_names_but_that_is_missing(empty_schema: tuple[str, Any]) -> None:
    """The URL's search_path names a schema, and init does not create it: the error says how to, in the
    command line's terms (no library keyword), and a store is made once the schema exists."""
    import psycopg

    url, _tables = empty_schema
    missing = f"cli_missing_{uuid.uuid4().hex[:8]}"
    where = url.replace(f"search_path%3D{_schema_of(url)}", f"search_path%3D{missing}")
    refused = run("init", "--store", where)
    line = one_error_line(refused.stderr)
    assert refused.returncode == 1 and f"search_path ({missing})" in line and "CREATE SCHEMA" in line, line
    assert "schema=" not in line and "pass " not in line, line
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{missing}"')
        try:
            assert run("init", "--store", where).returncode == 0
        finally:
            conn.execute(f'DROP SCHEMA "{missing}" CASCADE')


def test_an_import_cut_off_part_way_keeps_what_it_imported_and_a_rerun_finishes(
    empty_schema: tuple[str, Any], tmp_path: Path
) -> None:
    """The server ends the import's connection when it writes its second session (a trigger stands in for
    an administrator or a restart, at a known point): the first session stays, the error says so and how to
    finish, and the same import run again imports the rest."""
    import psycopg

    url, _tables = empty_schema
    archive = tmp_path / "two.snaparchive"
    with SnapshotStore.memory() as source:
        for name in ("a", "b"):
            for turn in range(3):
                source.session(name).commit({"session": name, "turn": turn}, turn=turn)
        source.export(archive)
    assert run("init", "--store", url).returncode == 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION cut_off_b() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.key LIKE 'segment/b/%' THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;"
            " RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER cut_off_b BEFORE INSERT ON snapstore_meta FOR EACH ROW EXECUTE FUNCTION cut_off_b()"
        )
        failed = run("import", str(archive), "--store", url)
        assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
        error = [line for line in failed.stderr.splitlines() if line.startswith("snapstore: error: ")]
        assert len(error) == 1 and "terminating connection" in error[0], failed.stderr
        assert "the sessions it imported before this failure stay" in error[0], error[0]
        assert "running the same import again" in error[0], error[0]
        listed = run("sessions", "--json", "--store", url)
        assert [s["name"] for s in json.loads(listed.stdout)] == ["a"], listed.stdout
        conn.execute("DROP TRIGGER cut_off_b ON snapstore_meta")
    again = run("import", str(archive), "--store", url)
    assert again.returncode == 0, again.stderr
    assert "created b" in again.stdout and "a already up to date" in again.stdout, again.stdout
    assert run("verify", "--store", url).returncode == 0


def test_the_store_url_is_printed_without_its_password(empty_schema: tuple[str, Any]) -> None:
    """docs/postgres.md: the password is redacted in every message. The backend's errors were;
    the command line's own lines printed the URL as given."""
    url, _tables = empty_schema
    scheme, rest = url.split("://", 1)
    userinfo, host = rest.split("@", 1) if "@" in rest else ("postgres", rest)
    with_password = f"{scheme}://{userinfo.split(':', 1)[0]}:s3cret-pw@{host}"  # the test server trusts it
    printed = [run("log", "--store", with_password), run("init", "--store", with_password)]
    printed += [run("init", "--store", with_password), run("upgrade", "--store", with_password)]
    for proc in printed:
        assert "s3cret-pw" not in proc.stdout + proc.stderr and ":***@" in proc.stdout + proc.stderr, proc


def test_an_archive_whose_chains_break_makes_no_tables(empty_schema: tuple[str, Any], tmp_path: Path) -> None:
    """An archive refused for its chains (a snapshot listed that it does not carry) was refused only
    once the store's tables were made: the check before making them read the archive, not its chains
    (a new user's trial). The database is left as it was."""
    from test_archive import Parts

    url, tables = empty_schema
    archive = tmp_path / "good.snaparchive"
    with SnapshotStore.memory() as source:
        for n in range(3):
            source.session("s").commit({"n": n})
        source.export(archive)
    parts = Parts.read(archive)
    parts.manifest["sessions"][0]["snapshots"].append("0" * 32)
    broken = parts.build(tmp_path / "missing.snaparchive")
    failed = run("import", str(broken), "--store", url)
    assert failed.returncode == 1, failed.stderr
    assert one_error_line(failed.stderr).startswith(f"snapstore: error: archive {broken}: ")
    assert tables() == []
