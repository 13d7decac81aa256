"""The PostgreSQL engine's SQL: table names, the statements it sends, and helpers that need no driver.

docs/format.md ("PostgreSQL tables") describes the tables; ``_postgres`` runs the statements.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: the table layout this code writes and understands
SCHEMA_VERSION = 4
LEGACY_SCHEMA_VERSION = 1

META_TABLE = "snapstore_meta"
ENTRIES_TABLE = "snapstore_entries"
VERSION_SEQUENCE = "snapstore_segment_version"
#: the index of snapstore_entries (layout 4): a session's segment, one posting list of its rows
SEGMENT_INDEX = "snapstore_entries_segment"
#: schema-2 tables, read once by the upgrade to schema 3 and dropped by it
CONFIG_TABLE = "snapstore_config"
SEGMENTS_TABLE = "snapstore_segments"
#: where the upgrade builds the new entries table before it replaces the old one
UPGRADE_ENTRIES_TABLE = "snapstore_entries_v3"
LEGACY_OBJECTS_TABLE = "snapstore_objects"
LEGACY_REFS_TABLE = "snapstore_refs"
#: PostgreSQL cuts a name to 63 bytes (NAMEDATALEN - 1)
MAX_NAME_BYTES = 63
#: letters, digits and underscores, before each table name: at most 38, as the longest name the store
#: makes is the prefix and ``snapstore_entries_segment`` (25); a longer prefix made a store whose
#: index name, cut, was not found again at the next open
TABLE_PREFIX = re.compile(r"[A-Za-z0-9_]{0,38}\Z")
_SECRET_PARAMS = ("password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key")

#: snapstore_meta row names: a config value, and a segment's row (the session key has no '/')
CONFIG_ROW = "config/{name}"
SEGMENT_ROW = "segment/{key}/{segment:016x}"
#: 8 KiB pages: 24 bytes of page header, 4 bytes of line pointer per row
PAGE_SPACE = 8192 - 24
LINE_POINTER = 4
#: the largest row a heap page takes (MaxHeapTupleSize)
MAX_ROW = 8160
#: the rows most commits write: four to a page, and a tail short enough that the segment's row in
#: snapstore_meta is updated in place (HOT) at every commit
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
    "bump_version": f"UPDATE {{meta}} SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version' AND value = '1'",
    "read_config": "SELECT data FROM {meta} WHERE key = %s",
    "write_config": (
        "INSERT INTO {meta} (key, data) VALUES (%s, %b) ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data"
    ),
    "session_keys": (
        "SELECT DISTINCT split_part(key, '/', 2) FROM {meta} WHERE key >= 'segment/' AND key < 'segment0' ORDER BY 1"
    ),
    "segments": "SELECT key, size, version FROM {meta} WHERE key >= %(first)s AND key < %(after)s ORDER BY key",
    # One statement, one snapshot: the segment's row (position -1: its size and tail) and the rows
    # from the one holding `start` on (rows follow one another: those before it end at or before
    # `start`), never half of a replace. No ORDER BY: the server would sort the rows' bytes (most
    # of a cold rebuild's read), the reader sorts their positions.
    "read_segment": (
        "SELECT -1, size, data FROM {meta} WHERE key = %(row)s"
        " UNION ALL"
        " SELECT pos, 0, data FROM {entries} WHERE session = %(key)s AND segment = %(segment)s"
        "  AND pos + octet_length(data) > %(start)s"
    ),
    # The segment's stream so far ends with the tail its row holds; the new entries go after it.
    # Whole pages of the result, then quarter pages, become entries rows; what is left is the new
    # tail, or, when the segment's row is new, one more row (a new row is small, so it fits the page
    # the other rows of snapstore_meta are in). `s` is empty unless the row (0 when absent) ends at
    # the writer's end; ON CONFLICT ... WHERE re-checks the latest committed row, so two appenders
    # without the lock cannot both win.
    "append": (
        "WITH cur AS (SELECT size, data FROM {meta} WHERE key = %(row)s),"
        " s AS (SELECT coalesce((SELECT data FROM cur), ''::bytea) || %(data)b AS stream,"
        "  %(expected)s - coalesce((SELECT octet_length(data) FROM cur), 0) AS base,"
        "  EXISTS (SELECT FROM cur) AS tailed"
        "  WHERE coalesce((SELECT size FROM cur), 0) = %(expected)s),"
        " cut AS (SELECT stream, base, tailed, octet_length(stream) AS len,"
        "  octet_length(stream) / %(whole)s * %(whole)s AS wholes_end,"
        "  octet_length(stream) / %(whole)s * %(whole)s"
        "   + octet_length(stream) %% %(whole)s / %(quarter)s * %(quarter)s AS rows_end FROM s),"
        " up AS (INSERT INTO {meta} (key, size, version, data)"
        "  SELECT %(row)s, %(end)s, nextval('{sequence}'),"
        "   CASE WHEN tailed THEN substring(stream FROM rows_end + 1) ELSE ''::bytea END FROM cut"
        "  ON CONFLICT (key) DO UPDATE SET size = EXCLUDED.size, data = EXCLUDED.data"
        "  WHERE {meta}.size = %(expected)s RETURNING size),"
        " rows AS (INSERT INTO {entries} (session, segment, pos, data)"
        "  SELECT %(key)s, %(segment)s, base + o, substring(stream FROM o + 1 FOR n) FROM up, cut,"
        "   LATERAL (SELECT o, %(whole)s AS n FROM generate_series(0, wholes_end - 1, %(whole)s) o"
        "    UNION ALL SELECT o, %(quarter)s FROM generate_series(wholes_end, rows_end - 1, %(quarter)s) o"
        "    UNION ALL SELECT rows_end, len - rows_end WHERE NOT tailed AND len > rows_end) p)"
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
    # a staged history's rows become the session's: their row names and their entries' session, in
    # the transaction of the session's lock, after ``delete_session`` removed what it held
    "rename_session": (
        "WITH moved AS (UPDATE {meta} SET key = %(prefix)s || substr(key, %(cut)s)"
        " WHERE key >= %(first)s AND key < %(after)s RETURNING 1),"
        " rows AS (UPDATE {entries} SET session = %(key)s WHERE session = %(staged)s)"
        " SELECT count(*) FROM moved"
    ),
    "legacy_tables": ("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename IN (%s, %s)"),
    "legacy_ref": "SELECT value FROM {legacy_refs} WHERE name = %s",
    "legacy_refs": "SELECT name, value FROM {legacy_refs} WHERE name LIKE %s",
    "legacy_get": "SELECT data FROM {legacy_objects} WHERE key = %s",
}

#: a format-1 store's meta table gets these columns too
_META_COLUMNS = (
    "ALTER TABLE {meta} ADD COLUMN IF NOT EXISTS data bytea, ADD COLUMN IF NOT EXISTS size bigint,"
    " ADD COLUMN IF NOT EXISTS version bigint"
)

#: the layout-4 tables, created (if missing) in one transaction under an advisory lock; then made PLAIN
#: (``PLAIN_TABLES``) and indexed (``SEGMENT_INDEX_STATEMENT``), and the version row written (``CREATE_VERSION``)
CREATE_STATEMENTS = [
    'CREATE TABLE IF NOT EXISTS {meta} (key text COLLATE "C" PRIMARY KEY, value text)',
    _META_COLUMNS,
    'CREATE TABLE IF NOT EXISTS {entries} (session text COLLATE "C" NOT NULL, segment bigint NOT NULL,'
    " pos bigint NOT NULL, data bytea NOT NULL)",
    "CREATE SEQUENCE IF NOT EXISTS {sequence}",
]
#: not unique: one key per segment, so the index keeps one posting list of its rows, not a key per row
SEGMENT_INDEX_STATEMENT = "CREATE INDEX IF NOT EXISTS {segment_index} ON {entries} (session, segment)"
#: last, so a store whose version row exists has all its tables; a format-1 store keeps its '1'
CREATE_VERSION = (
    f"INSERT INTO {{meta}} (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}') ON CONFLICT (key) DO NOTHING"
)

#: Every column STORAGE PLAIN, and no TOAST table: rows are zstd output cut to fit a page (a tail, a
#: config value of at most 4 KiB), never compressed again nor moved out, and an empty TOAST table still
#: costs its index's page. PostgreSQL 15 gives a table a TOAST table when it is created with columns it
#: may toast; setting PLAIN later keeps it, a rewrite in the same command (a type change with USING)
#: drops it. Run on a table that still has one. snapstore_meta keeps 30% of a page free, more than the
#: largest segment row (2,060 bytes), so pruning makes room for the new version every append writes
#: and that update stays in its page (HOT).
PLAIN_TABLES = {
    "meta": (
        "ALTER TABLE {meta} ALTER COLUMN data TYPE bytea USING data || ''::bytea,"
        " ALTER COLUMN key SET STORAGE PLAIN, ALTER COLUMN value SET STORAGE PLAIN,"
        " ALTER COLUMN data SET STORAGE PLAIN, SET (fillfactor = 70), RESET (toast_tuple_target)"
    ),
    "entries": (
        "ALTER TABLE {entries} ALTER COLUMN data TYPE bytea USING data || ''::bytea,"
        " ALTER COLUMN session SET STORAGE PLAIN, ALTER COLUMN data SET STORAGE PLAIN, RESET (toast_tuple_target)"
    ),
}
HAS_TOAST = "SELECT reltoastrelid <> 0 FROM pg_catalog.pg_class WHERE oid = %s::regclass"
#: each relation of the schema named as one of the store's (``%(names)s``): its kind, its columns (name, type,
#: collation, part of the primary key), and for an index the table it indexes; ``foreign_reason`` judges them
RELATIONS = (
    "SELECT c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod), co.collname,"
    " coalesce(a.attnum = ANY(pk.conkey), false), t.relname"
    " FROM pg_catalog.pg_class c"
    " LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
    "  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
    " LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation"
    " LEFT JOIN pg_catalog.pg_constraint pk ON pk.conrelid = c.oid AND pk.contype = 'p'"
    " LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid"
    " LEFT JOIN pg_catalog.pg_class t ON t.oid = i.indrelid"
    " WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = %(schema)s)"
    "  AND c.relname = ANY(%(names)s)"
    " ORDER BY c.relname, a.attnum"
)
PRIMARY_KEY = "SELECT conname FROM pg_catalog.pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'"

#: layout 3 to 4 (``PostgresBackend._upgrade_plain_rows``), in one transaction: the stream, its rows and
#: tails stay as they are; the tables lose the entries' primary key and their TOAST tables
UPGRADE_TO_4_LOCK = "LOCK TABLE {meta}, {entries} IN ACCESS EXCLUSIVE MODE"
UPGRADE_TO_4_VERSION = f"UPDATE {{meta}} SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version' AND value = '3'"

#: schema 2 to 3, in the transaction that copies the segments across (``PostgresBackend._upgrade_row_per_entry``);
#: the upgrade to layout 4 follows it. Writers of the old layout wait at the lock, then fail on the dropped
#: tables: none commits into a table the upgrade has already read.
UPGRADE_PREPARE = [
    "LOCK TABLE {config}, {segments}, {entries} IN ACCESS EXCLUSIVE MODE",
    _META_COLUMNS,
    "ALTER TABLE {meta} SET (toast_tuple_target = 8160, fillfactor = 50)",
    "ALTER TABLE {meta} ALTER COLUMN data SET STORAGE EXTERNAL",
    'CREATE TABLE {new_entries} (session text COLLATE "C" NOT NULL, segment bigint NOT NULL, pos bigint NOT NULL,'
    " data bytea NOT NULL, PRIMARY KEY (session, segment, pos)) WITH (toast_tuple_target = 8160)",
    "ALTER TABLE {new_entries} ALTER COLUMN data SET STORAGE EXTERNAL",
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


#: (type, collation) of each column of the store's tables: every layout has the first two of the meta
#: table's and all of the entries table's; the three others of the meta table are added on opening
_KEY = ("text", "C")
META_COLUMNS = {"key": _KEY, "value": ("text", None), "data": ("bytea", None), "size": ("bigint", None),
                "version": ("bigint", None)}  # fmt: skip
META_REQUIRED = ("key", "value")
ENTRIES_COLUMNS = {"session": _KEY, "segment": ("bigint", None), "pos": ("bigint", None), "data": ("bytea", None)}
_KINDS = {"r": "a table", "p": "a partitioned table", "v": "a view", "m": "a materialized view", "f": "a foreign table",
          "S": "a sequence", "i": "an index", "I": "a partitioned index", "c": "a composite type"}  # fmt: skip


def _type_text(kind: tuple[str, str | None]) -> str:
    return kind[0] + (f' COLLATE "{kind[1]}"' if kind[1] else "")


def foreign_reason(role: str, kind: str, columns: list[tuple[str, str, str | None, bool]], indexed: str | None,
                   prefix: str) -> str | None:  # fmt: skip
    """Why a relation named as one of the store's (``role``: meta, entries, sequence, index) is not
    snapstore's, or None when it is; ``columns`` are (name, type, collation, in the primary key).

    Every snapstore version that made one of these made it so (the meta table's key text COLLATE "C"
    its primary key; its other three columns added since): anything else was made by someone else, and
    the store's statements would fail on it half way (or, for the index, skip it and leave the entries
    unindexed)."""
    what = _KINDS.get(kind, f"a relation of kind {kind!r}")
    if role == "sequence":
        return None if kind == "S" else f"it is {what}, where snapstore keeps a sequence"
    if role == "index":
        entries = prefix + ENTRIES_TABLE
        if kind != "i":
            return f"it is {what}, where snapstore keeps the index of {entries}"
        return None if indexed == entries else f"it is an index of {indexed}, where snapstore indexes {entries}"
    if kind != "r":
        return f"it is {what}, where snapstore keeps a table"
    expected, required = (META_COLUMNS, META_REQUIRED) if role == "meta" else (ENTRIES_COLUMNS, tuple(ENTRIES_COLUMNS))
    found = {name: (kind_, collation if collation not in (None, "default") else None) for name, kind_, collation, _ in
             columns}  # fmt: skip
    theirs = ", ".join(f"{name} {_type_text(found[name])}" for name, *_ in columns) or "none"
    ours = ", ".join(f"{name} {_type_text(kind_)}" for name, kind_ in expected.items())
    if any(name not in expected for name in found) or any(name not in found for name in required):
        return f"its columns are ({theirs}), snapstore's are ({ours})"
    reasons = [
        f"its column {name} is {_type_text(kind_)}, snapstore's is {_type_text(expected[name])}"
        for name, kind_ in found.items()
        if expected[name] != kind_
    ]
    keys = sorted(name for name, _kind, _collation, in_key in columns if in_key)
    if role == "meta" and keys != ["key"]:
        reasons.append((f"its primary key is ({', '.join(keys)})" if keys else "it has no primary key")
                       + ", snapstore's is (key)")  # fmt: skip
    return "; ".join(reasons) or None


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
    # a value quoted and closed; one whose quote never closes (to the end); else up to the next
    # "keyword=" (an unquoted value with a space, which libpq refuses, is still all secret)
    return re.sub(_SECRET_VALUE, r"\1***", url)


_SECRET_VALUE = re.compile(
    r"(\b(?:(?:ssl)?password|oauth_client_secret|scram_client_key|scram_server_key)\s*=\s*)"
    r"('(?:[^'\\]|\\.)*'|'.*|.*?(?=\s+\w+\s*=|$))",
    re.DOTALL,
)


def redact_driver_message(message: str, url: str) -> str:
    """A driver's message about ``url`` without the parts of ``url`` it quotes: libpq quotes the
    token it could not parse (``invalid percent-encoded token: "my%secret"``), or the whole URL,
    and a password with a stray ``%`` is the usual such token. A token the URL without its password
    still holds (a query parameter's name) is shown: it is what the user must fix."""
    shown = redact_url(url)
    for secret in _secrets(url):  # whole first: one holding a '"' would split the quoted token below
        message = message.replace(secret, "***")

    def quoted(found: re.Match[str]) -> str:
        inside = found.group(1)
        return '"***"' if len(inside) > 1 and inside in url and inside not in shown else found.group(0)

    return re.sub(r'"([^"]*)"', quoted, message)


def _secrets(url: str) -> list[str]:
    """The secret values a connection string holds, as written and decoded, longest first; those
    of three characters or more (a shorter one would blot out letters of the message)."""
    found: list[str] = []
    if "://" in url:
        try:
            parts = urlsplit(url)  # (its password is as written, %-escapes and all)
            found = [parts.password or ""]
            found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k in _SECRET_PARAMS]
        except ValueError:
            pass
    else:
        found = [value.strip("'") for _key, value in _SECRET_VALUE.findall(url)]
    return sorted({value for value in found if len(value) >= 3}, key=len, reverse=True)


def where(display: str, schema: str, prefix: str) -> str:
    return f"{display} (schema {schema}" + (f", tables {prefix}snapstore_*)" if prefix else ")")


def hash64(*parts: str) -> int:
    """A signed 64-bit number for an advisory lock (the key space is bigint)."""
    digest = hashlib.blake2b("\x00".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def first_line(said: BaseException | str) -> str:
    """The first line of a driver's error (or of its message): its name when it says nothing."""
    text = str(said).strip()
    return text.splitlines()[0] if text else ("" if isinstance(said, str) else type(said).__name__)
