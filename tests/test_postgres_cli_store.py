"""The CLI on a PostgreSQL database that holds no store: a read-only command and an import that
fails leave no tables behind (a mistyped database, an application's own, stays as it was)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_support import run
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
