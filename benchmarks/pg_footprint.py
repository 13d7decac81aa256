"""Where a PostgreSQL store's bytes go: every relation and fork after the benchmark's workload.

Commits ``--turns`` states of the benchmark workload (``benchmarks.workload.generate``) into a
store in a schema of its own, as ``benchmarks.run`` does for ``snapstore-pg``, then prints the
size of every relation of the store's tables (heap, TOAST heap, TOAST index, indexes) fork by
fork (main, fsm, vm), their total (the figure ``benchmarks.run`` reports: the sum of
``pg_total_relation_size`` over the tables), the entries' payload alone, and, with
``--baseline``, the naive per-turn ``jsonpatch.make_patch`` + zstd-3 deltas the issue #13 target
is measured against (the sum of their compressed sizes). The schema is dropped at the end.

    SNAPSTORE_BENCH_POSTGRES_URL=postgresql://... python -m benchmarks.pg_footprint --turns 1000 --baseline
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from .baselines import POSTGRES_URL_ENV, ZSTD_LEVEL, store_settings
from .workload import generate

#: the forks PostgreSQL keeps per relation
FORKS = ("main", "fsm", "vm")

RELATIONS = """
SELECT t.relname AS owner, r.relname, r.relkind, r.oid
FROM pg_catalog.pg_class t
JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
JOIN pg_catalog.pg_class r ON r.oid = t.oid OR r.oid = t.reltoastrelid
  OR r.oid IN (SELECT indexrelid FROM pg_catalog.pg_index WHERE indrelid IN (t.oid, t.reltoastrelid))
WHERE n.nspname = %s AND t.relkind = 'r' AND t.relname LIKE 'snapstore\\_%%'
ORDER BY t.relname, r.relkind DESC, r.relname
"""

#: the figure benchmarks.run reports (SnapstorePostgres.bytes_stored)
TOTAL = """
SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname LIKE 'snapstore\\_%%'
"""

#: the store's sequences: relations of their own that benchmarks.run's total (tables only) leaves out
SEQUENCES = """
SELECT c.relname, pg_relation_size(c.oid)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind = 'S' AND c.relname LIKE 'snapstore\\_%%'
"""

KINDS = {"r": "heap", "t": "toast", "i": "index"}


def commit_workload(url: str, schema: str, turns: int, max_snapshots: int) -> None:
    from snapstore import SnapshotStore
    from snapstore.backends._postgres import PostgresBackend

    store = SnapshotStore(PostgresBackend(url, schema=schema), **store_settings())
    try:
        sess = store.session("bench", max_snapshots=max_snapshots)
        for turn, state in enumerate(generate(turns), 1):
            sess.commit(state, label=f"t{turn}", turn=turn)
    finally:
        store.close()


def jsonpatch_zstd_bytes(turns: int) -> int:
    """What the benchmark's ``jsonpatch-zstd`` approach writes: a full state, then one patch per turn."""
    import jsonpatch
    import zstandard

    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    total = 0
    parent: Any = None
    for state in generate(turns):
        if parent is None:
            raw = orjson.dumps(state)
            parent = orjson.loads(raw)
        else:
            patch = jsonpatch.make_patch(parent, state)
            raw = orjson.dumps(patch.patch)
            patch.apply(parent, in_place=True)
        total += len(cctx.compress(raw))
    return total


def report(conn: Any, schema: str) -> tuple[int, int]:
    from psycopg import sql

    rows = conn.execute(RELATIONS, [schema]).fetchall()
    print(f"{'table':<22} {'relation':<34} {'kind':<5} " + " ".join(f"{f:>8}" for f in FORKS) + f" {'total':>9}")
    for owner, relname, relkind, oid in rows:
        sizes = [conn.execute("SELECT pg_relation_size(%s, %s)", [oid, fork]).fetchone()[0] for fork in FORKS]
        print(
            f"{owner:<22} {relname:<34} {KINDS.get(relkind, relkind):<5} "
            + " ".join(f"{s:>8}" for s in sizes)
            + f" {sum(sizes):>9}"
        )
    for name, size in conn.execute(SEQUENCES, [schema]).fetchall():
        print(f"{'(sequence)':<22} {name:<34} {'seq':<5} {size:>8} {'':>8} {'':>8} {size:>9}  not in the total")
    layout = conn.execute(
        sql.SQL("SELECT value FROM {} WHERE key = 'schema_version'").format(sql.Identifier(schema, "snapstore_meta"))
    ).fetchone()
    print(f"table layout (schema_version): {layout[0] if layout else '-'}")
    total = int(conn.execute(TOTAL, [schema]).fetchone()[0])
    payload = int(
        conn.execute(
            sql.SQL("SELECT coalesce(sum(octet_length(data)), 0), count(*) FROM {}").format(
                sql.Identifier(schema, "snapstore_entries")
            )
        ).fetchone()[0]
    )
    return total, payload


def workload_arguments(description: str) -> argparse.ArgumentParser:
    """A parser with the workload's options: ``--turns`` and ``--max-snapshots``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--max-snapshots", type=int, default=1000, help="the session's limit (benchmarks.run: 1000)")
    return parser


def bench_url() -> str | None:
    """The server to measure on, or None (said on stderr) when it is not set."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        print(f"set {POSTGRES_URL_ENV} to a postgresql:// URL", file=sys.stderr)
    return url or None


@contextmanager
def workload_schema(
    url: str, turns: int, max_snapshots: int, keep: bool = False, hold_snapshot: bool = False
) -> Iterator[str]:
    """A schema of its own holding the workload's ``turns`` commits in session "bench", dropped afterwards.

    ``hold_snapshot``: another connection holds a snapshot of the database (a repeatable-read
    transaction that has read) while the commits run, so no page is pruned of the versions they
    leave behind, as when a long transaction runs beside the store.
    """
    import psycopg
    from psycopg import sql

    schema = f"bench_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(url, autocommit=True) as holder:
            if hold_snapshot:
                holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                holder.execute("SELECT 1")  # the transaction's snapshot is taken by its first statement
            commit_workload(url, schema, turns, max_snapshots)
            if hold_snapshot:
                holder.execute("ROLLBACK")
        yield schema
    finally:
        if not keep:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def main(argv: list[str] | None = None) -> int:
    parser = workload_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", action="store_true", help="also compute the jsonpatch + zstd-3 bytes (slow)")
    parser.add_argument("--keep", action="store_true", help="leave the schema in place (its name is printed)")
    parser.add_argument(
        "--hold-snapshot", action="store_true", help="commit while another transaction holds an older snapshot"
    )
    args = parser.parse_args(argv)
    url = bench_url()
    if url is None:
        return 2

    import psycopg

    with (
        workload_schema(url, args.turns, args.max_snapshots, args.keep, args.hold_snapshot) as schema,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        total, payload = report(conn, schema)
    held = ", committed while another transaction held an older snapshot" if args.hold_snapshot else ""
    print(f"\nschema {schema}{' (kept)' if args.keep else ''}, {args.turns} turns{held}")
    print(f"everything the store holds (sum of pg_total_relation_size): {total} B ({total / 1024:.1f} KiB)")
    print(f"entries' payload (sum of octet_length(data)): {payload} B ({payload / 1024:.1f} KiB)")
    if args.baseline:
        naive = jsonpatch_zstd_bytes(args.turns)
        print(f"jsonpatch.make_patch + zstd-{ZSTD_LEVEL} deltas: {naive} B ({naive / 1024:.1f} KiB)")
        print(f"store / naive: {total / naive:.3f}x   payload / naive: {payload / naive:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
