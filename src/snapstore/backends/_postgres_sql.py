"""The PostgreSQL engine's SQL: table names, the statements it sends, and helpers that need no driver.

docs/format.md ("PostgreSQL tables") describes the tables; ``_postgres`` runs the statements.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: the table layout this code writes and understands
SCHEMA_VERSION = 3
LEGACY_SCHEMA_VERSION = 1

META_TABLE = "snapstore_meta"
ENTRIES_TABLE = "snapstore_entries"
VERSION_SEQUENCE = "snapstore_segment_version"
#: schema-2 tables, read once by the upgrade to schema 3 and dropped by it
CONFIG_TABLE = "snapstore_config"
SEGMENTS_TABLE = "snapstore_segments"
#: where the upgrade builds the new entries table before it replaces the old one
UPGRADE_ENTRIES_TABLE = "snapstore_entries_v3"
LEGACY_OBJECTS_TABLE = "snapstore_objects"
LEGACY_REFS_TABLE = "snapstore_refs"
#: letters, digits and underscores, before each table name
TABLE_PREFIX = re.compile(r"[A-Za-z0-9_]{0,40}\Z")
_SECRET_PARAMS = ("password", "sslpassword")

#: snapstore_meta row names: a config value, and a segment's row (the session key has no '/')
CONFIG_ROW = "config/{name}"
SEGMENT_ROW = "segment/{key}/{segment:016x}"
#: 8 KiB pages: 24 bytes of page header, 4 bytes of line pointer per row
PAGE_SPACE = 8192 - 24
LINE_POINTER = 4
#: the largest row a heap page takes (MaxHeapTupleSize)
MAX_ROW = 8160
#: the rows most commits write: four to a page, under TOAST's 2032-byte threshold, and a tail
#: short enough that the segment's row in snapstore_meta is updated in place (HOT) at every commit
QUARTER_ROWS_PER_PAGE = 4


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def row_sizes(key: str) -> tuple[int, int]:
    """(whole, quarter): the data bytes of an entries row that fills a page, and of one of four to a page.

    A row is a 24-byte header, the session key (text: 1 length byte up to 126 bytes, else 4,
    int-aligned), segment and pos (bigint, 8-aligned), data's 4-byte length, then data.
    """
    n = len(key.encode("utf-8"))
    head = 24 + 1 + n if n + 1 <= 127 else _align(24, 4) + 4 + n
    head = _align(_align(head, 8) + 16, 4) + 4
    quarter = (PAGE_SPACE // QUARTER_ROWS_PER_PAGE - LINE_POINTER) // 8 * 8
    return MAX_ROW - head, quarter - head


#: every statement but the table creation, with {names} for the schema-qualified tables
QUERIES = {
    "read_version": "SELECT value FROM {meta} WHERE key = 'schema_version'",
    "bump_version": "UPDATE {meta} SET value = '3' WHERE key = 'schema_version' AND value = '1'",
    "read_config": "SELECT data FROM {meta} WHERE key = %s",
    "write_config": (
        "INSERT INTO {meta} (key, data) VALUES (%s, %b) ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data"
    ),
    "session_keys": (
        "SELECT DISTINCT split_part(key, '/', 2) FROM {meta} WHERE key >= 'segment/' AND key < 'segment0' ORDER BY 1"
    ),
    "segments": "SELECT key, size, version FROM {meta} WHERE key >= %(first)s AND key < %(after)s ORDER BY key",
    # One statement, one snapshot: the segment's row (position -1: its size and tail) and the rows
    # from the one holding `start` on, never half of a replace. No ORDER BY: the server would sort
    # the rows' bytes (most of a cold rebuild's read), the reader sorts their positions.
    "read_segment": (
        "SELECT -1, size, data FROM {meta} WHERE key = %(row)s"
        " UNION ALL"
        " SELECT pos, 0, data FROM {entries} WHERE session = %(key)s AND segment = %(segment)s"
        "  AND pos >= coalesce((SELECT max(pos) FROM {entries} WHERE session = %(key)s"
        "   AND segment = %(segment)s AND pos <= %(start)s), 0)"
        "  AND pos + octet_length(data) > %(start)s"
    ),
    # The segment's stream so far ends with the tail its row holds; the new entries go after it.
    # Whole pages of the result, then quarter pages, become entries rows; what is left is the new
    # tail. `s` is empty unless the row (0 when absent) ends at the writer's end; ON CONFLICT ...
    # WHERE re-checks the latest committed row, so two appenders without the lock cannot both win.
    "append": (
        "WITH cur AS (SELECT size, data FROM {meta} WHERE key = %(row)s),"
        " s AS (SELECT coalesce((SELECT data FROM cur), ''::bytea) || %(data)b AS stream,"
        "  %(expected)s - coalesce((SELECT octet_length(data) FROM cur), 0) AS base"
        "  WHERE coalesce((SELECT size FROM cur), 0) = %(expected)s),"
        " cut AS (SELECT stream, base, octet_length(stream) / %(whole)s AS wholes,"
        "  octet_length(stream) %% %(whole)s / %(quarter)s AS quarters FROM s),"
        " up AS (INSERT INTO {meta} (key, size, version, data)"
        "  SELECT %(row)s, %(end)s, nextval('{sequence}'),"
        "   substring(stream FROM wholes * %(whole)s + quarters * %(quarter)s + 1) FROM cut"
        "  ON CONFLICT (key) DO UPDATE SET size = EXCLUDED.size, data = EXCLUDED.data"
        "  WHERE {meta}.size = %(expected)s RETURNING size),"
        " rows AS (INSERT INTO {entries} (session, segment, pos, data)"
        "  SELECT %(key)s, %(segment)s, base + o, substring(stream FROM o + 1 FOR n) FROM up, cut,"
        "   LATERAL (SELECT i * %(whole)s AS o, %(whole)s AS n FROM generate_series(0, wholes - 1) i"
        "    UNION ALL SELECT wholes * %(whole)s + j * %(quarter)s, %(quarter)s"
        "     FROM generate_series(0, quarters - 1) j) p)"
        " SELECT size FROM up"
    ),
    "drop_segments": (
        "WITH gone AS (DELETE FROM {meta} WHERE key = ANY(%(rows)s))"
        " DELETE FROM {entries} WHERE session = %(key)s AND segment = ANY(%(segments)s)"
    ),
    "delete_session": (
        "WITH gone AS (DELETE FROM {meta} WHERE key >= %(first)s AND key < %(after)s RETURNING 1),"
        " rows AS (DELETE FROM {entries} WHERE session = %(key)s)"
        " SELECT count(*) FROM gone"
    ),
    "legacy_tables": ("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename IN (%s, %s)"),
    "legacy_ref": "SELECT value FROM {legacy_refs} WHERE name = %s",
    "legacy_refs": "SELECT name, value FROM {legacy_refs} WHERE name LIKE %s",
    "legacy_get": "SELECT data FROM {legacy_objects} WHERE key = %s",
}

_ENTRIES_COLUMNS = (
    '(session text COLLATE "C" NOT NULL, segment bigint NOT NULL, pos bigint NOT NULL, data bytea NOT NULL,'
    " PRIMARY KEY (session, segment, pos)) WITH (toast_tuple_target = 8160)"
)
#: rows are zstd output cut to fit a page: never compressed again nor moved out to TOAST
_ENTRIES_STORAGE = "ALTER TABLE {entries} ALTER COLUMN data SET STORAGE EXTERNAL"

#: the schema-3 tables, created (if missing) in one transaction under an advisory lock
CREATE_STATEMENTS = [
    'CREATE TABLE IF NOT EXISTS {meta} (key text COLLATE "C" PRIMARY KEY, value text)',
    # a format-1 store's meta table gets the columns of schema 3
    "ALTER TABLE {meta} ADD COLUMN IF NOT EXISTS data bytea, ADD COLUMN IF NOT EXISTS size bigint,"
    " ADD COLUMN IF NOT EXISTS version bigint",
    # a tail stays in its row (no TOAST chunk); half of each page is kept free for the new
    # version of a segment's row that every commit writes, so that update stays in the page (HOT)
    # and pruning gives the old version's space back
    "ALTER TABLE {meta} SET (toast_tuple_target = 8160, fillfactor = 50)",
    "ALTER TABLE {meta} ALTER COLUMN data SET STORAGE EXTERNAL",
    "CREATE TABLE IF NOT EXISTS {entries} " + _ENTRIES_COLUMNS,
    _ENTRIES_STORAGE,
    "CREATE SEQUENCE IF NOT EXISTS {sequence}",
    # last, so a store whose version row exists has all its tables; a format-1 store keeps its '1'
    "INSERT INTO {meta} (key, value) VALUES ('schema_version', '3') ON CONFLICT (key) DO NOTHING",
]

#: schema 2 to 3, in the transaction that copies the segments across (``PostgresBackend._upgrade_row_per_entry``).
#: Writers of the old layout wait at the lock, then fail on the dropped tables: none commits into a table
#: the upgrade has already read.
UPGRADE_PREPARE = [
    "LOCK TABLE {config}, {segments}, {entries} IN ACCESS EXCLUSIVE MODE",
    CREATE_STATEMENTS[1],
    CREATE_STATEMENTS[2],
    CREATE_STATEMENTS[3],
    "CREATE TABLE {new_entries} " + _ENTRIES_COLUMNS,
    _ENTRIES_STORAGE.replace("{entries}", "{new_entries}"),
    "INSERT INTO {meta} (key, data) SELECT 'config/' || name, value FROM {config}",
]
UPGRADE_READ_SEGMENTS = "SELECT session, segment FROM {segments} ORDER BY session, segment"
UPGRADE_READ_ENTRIES = "SELECT data FROM {entries} WHERE session = %s AND segment = %s ORDER BY pos"
UPGRADE_FINISH = [
    "DROP TABLE {entries}, {segments}, {config}",
    "ALTER TABLE {new_entries} RENAME TO {entries_name}",
    "ALTER INDEX {new_entries_pkey} RENAME TO {entries_pkey_name}",
    "UPDATE {meta} SET value = '3' WHERE key = 'schema_version' AND value = '2'",
]


def redact_url(url: str) -> str:
    """The connection URL (or key=value string) without its password."""
    if "://" in url:
        try:
            parts = urlsplit(url)
        except ValueError:
            return "<unparsable PostgreSQL URL>"
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, hosts = netloc.rsplit("@", 1)
            if ":" in userinfo:
                netloc = userinfo.split(":", 1)[0] + ":***@" + hosts
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(k in _SECRET_PARAMS for k, _ in pairs):
                query = urlencode([(k, "***" if k in _SECRET_PARAMS else v) for k, v in pairs], safe="*/:=%")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return re.sub(r"(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)", r"\1***", url)


def where(display: str, schema: str, prefix: str) -> str:
    return f"{display} (schema {schema}" + (f", tables {prefix}snapstore_*)" if prefix else ")")


def hash64(*parts: str) -> int:
    """A signed 64-bit number for an advisory lock (the key space is bigint)."""
    digest = hashlib.blake2b("\x00".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
