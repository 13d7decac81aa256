"""The PostgreSQL engine's SQL: table names, the statements it sends, and helpers that need no driver.

docs/format.md ("PostgreSQL tables") describes the tables; ``_postgres`` runs the statements.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: the table layout this code writes and understands
SCHEMA_VERSION = 2
LEGACY_SCHEMA_VERSION = 1

CONFIG_TABLE = "snapstore_config"
SEGMENTS_TABLE = "snapstore_segments"
ENTRIES_TABLE = "snapstore_entries"
VERSION_SEQUENCE = "snapstore_segment_version"
META_TABLE = "snapstore_meta"
LEGACY_OBJECTS_TABLE = "snapstore_objects"
LEGACY_REFS_TABLE = "snapstore_refs"
#: letters, digits and underscores, before each table name
TABLE_PREFIX = re.compile(r"[A-Za-z0-9_]{0,40}\Z")
_SECRET_PARAMS = ("password", "sslpassword")

#: every statement but the table creation, with {names} for the schema-qualified tables
QUERIES = {
    "read_version": "SELECT value FROM {meta} WHERE key = 'schema_version'",
    "bump_version": "UPDATE {meta} SET value = '2' WHERE key = 'schema_version' AND value = '1'",
    "read_config": "SELECT value FROM {config} WHERE name = %s",
    "write_config": (
        "INSERT INTO {config} (name, value) VALUES (%s, %b) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
    ),
    "session_keys": "SELECT DISTINCT session FROM {segments} ORDER BY session",
    "segments": "SELECT segment, bytes, version FROM {segments} WHERE session = %s ORDER BY segment",
    # One statement, one snapshot: the row and the entries it counts, never half of a replace.
    "read_segment": (
        "SELECT s.entries, e.data FROM {segments} s LEFT JOIN {entries} e"
        " ON e.session = s.session AND e.segment = s.segment AND e.pos >= %(start)s"
        " WHERE s.session = %(key)s AND s.segment = %(segment)s ORDER BY e.pos"
    ),
    # `ok` refuses a stale end when the row is absent; ON CONFLICT ... WHERE re-checks the
    # latest committed row, so two appenders without the lock cannot both win.
    "append": (
        "WITH ok AS (SELECT 1 WHERE coalesce((SELECT entries FROM {segments}"
        "  WHERE session = %(key)s AND segment = %(segment)s), 0) = %(expected)s),"
        " up AS (INSERT INTO {segments} (session, segment, entries, bytes, version)"
        "  SELECT %(key)s, %(segment)s, %(count)s, %(bytes)s, nextval('{sequence}') FROM ok"
        "  ON CONFLICT (session, segment) DO UPDATE"
        "  SET entries = {segments}.entries + EXCLUDED.entries, bytes = {segments}.bytes + EXCLUDED.bytes"
        "  WHERE {segments}.entries = %(expected)s RETURNING entries),"
        " ins AS (INSERT INTO {entries} (session, segment, pos, data)"
        "  SELECT %(key)s, %(segment)s, %(expected)s + t.ord - 1, t.data"
        "  FROM up, unnest(%(data)b::bytea[]) WITH ORDINALITY AS t(data, ord))"
        " SELECT entries FROM up"
    ),
    "clear_entries": "DELETE FROM {entries} WHERE session = %(key)s AND segment = %(segment)s",
    "put_segment": (
        "WITH up AS (INSERT INTO {segments} (session, segment, entries, bytes, version)"
        "  VALUES (%(key)s, %(segment)s, %(count)s, %(bytes)s, nextval('{sequence}'))"
        "  ON CONFLICT (session, segment) DO UPDATE"
        "  SET entries = EXCLUDED.entries, bytes = EXCLUDED.bytes, version = EXCLUDED.version)"
        " INSERT INTO {entries} (session, segment, pos, data)"
        " SELECT %(key)s, %(segment)s, t.ord - 1, t.data FROM unnest(%(data)b::bytea[]) WITH ORDINALITY AS t(data, ord)"
    ),
    "drop_segments": (
        "WITH gone AS (DELETE FROM {segments} WHERE session = %(key)s AND segment = ANY(%(segments)s))"
        " DELETE FROM {entries} WHERE session = %(key)s AND segment = ANY(%(segments)s)"
    ),
    "delete_session": (
        "WITH gone AS (DELETE FROM {segments} WHERE session = %(key)s RETURNING 1),"
        " rows AS (DELETE FROM {entries} WHERE session = %(key)s)"
        " SELECT count(*) FROM gone"
    ),
    "legacy_tables": ("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename IN (%s, %s)"),
    "legacy_ref": "SELECT value FROM {legacy_refs} WHERE name = %s",
    "legacy_refs": "SELECT name, value FROM {legacy_refs} WHERE name LIKE %s",
    "legacy_get": "SELECT data FROM {legacy_objects} WHERE key = %s",
}

#: the format-2 tables, created (if missing) in one transaction under an advisory lock
CREATE_STATEMENTS = [
    'CREATE TABLE IF NOT EXISTS {config} (name text COLLATE "C" PRIMARY KEY, value bytea NOT NULL)',
    'CREATE TABLE IF NOT EXISTS {segments} (session text COLLATE "C" NOT NULL, segment bigint NOT NULL,'
    " entries bigint NOT NULL, bytes bigint NOT NULL, version bigint NOT NULL,"
    " PRIMARY KEY (session, segment))",
    'CREATE TABLE IF NOT EXISTS {entries} (session text COLLATE "C" NOT NULL, segment bigint NOT NULL,'
    " pos bigint NOT NULL, data bytea NOT NULL, PRIMARY KEY (session, segment, pos))",
    # entries are zstd output already: PostgreSQL's own compression would only cost time
    "ALTER TABLE {entries} ALTER COLUMN data SET STORAGE EXTERNAL",
    "CREATE SEQUENCE IF NOT EXISTS {sequence}",
    'CREATE TABLE IF NOT EXISTS {meta} (key text COLLATE "C" PRIMARY KEY, value text)',
    # last, so a store whose version row exists has all its tables; a format-1 store keeps its '1'
    "INSERT INTO {meta} (key, value) VALUES ('schema_version', '2') ON CONFLICT (key) DO NOTHING",
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
