"""Objects and refs in PostgreSQL tables (psycopg 3 and a connection pool).

Needs the optional extra: ``pip install snapstore[postgres]`` (``psycopg[binary]``
and ``psycopg-pool``). This module is only imported when a ``postgresql://`` URL
is opened, so it is the only place that touches psycopg.

Tables, created on first use in one schema (the ``schema`` argument, created if
missing, else the connection's ``current_schema()``, which the URL can set with
``?options=-csearch_path%3Dname``), their names optionally preceded by
``table_prefix`` (so several stores can share one schema)::

    snapstore_objects(key text primary key, data bytea not null)   insert-if-absent, never updated
    snapstore_refs(name text primary key, value text not null)     changed only by compare-and-swap
    snapstore_meta(key text primary key, value text)               'schema_version' = '1'

Key columns use the "C" collation: byte order, and ``LIKE 'prefix%'`` can use the index.
Creation is serialised between processes with a transaction-level advisory lock,
and a store written by a newer schema version is refused (``FormatVersionError``).

Every operation is one statement on a pooled connection in autocommit mode (or one
transaction for ``put_many``), so it happens whole or not at all. Driver and network
errors surface as ``BackendError`` with ``details["cause"]``.

Named locks are session-level advisory locks (``pg_advisory_lock`` /
``pg_advisory_lock_shared``) on a 64-bit hash of the schema and the name; each
holder keeps its own connection from a second pool for the duration, so threads of
one process exclude each other exactly like separate processes do, and a crashed
holder's lock goes away with its connection. Lock connections come from their own
pool so that lock holders can never starve ordinary operations of connections.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import BackendError, FormatVersionError
from .base import Backend, ObjectMissing, check_key, check_ref_name

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as _exc:  # the optional extra is not installed
    psycopg = None  # type: ignore[assignment]
    _IMPORT_ERROR: ImportError | None = _exc
else:
    _IMPORT_ERROR = None

#: the table layout this code writes and understands
SCHEMA_VERSION = 1

OBJECTS_TABLE = "snapstore_objects"
REFS_TABLE = "snapstore_refs"
META_TABLE = "snapstore_meta"

_KEYS_BATCH = 1000  # keys fetched per round trip by iter_keys
_PUT_MANY_ROWS = 1000  # objects per INSERT statement in put_many...
_PUT_MANY_BYTES = 32 * 1024 * 1024  # ...or fewer, when they are big
_PRECHECK_BYTES = 64 * 1024  # above this, put() asks whether the key exists before sending the data
_SECRET_PARAMS = ("password", "sslpassword")
_TABLE_PREFIX = re.compile(r"[A-Za-z0-9_]{0,40}\Z")


class PostgresBackend(Backend):
    """A store in a PostgreSQL database, shared safely by threads and processes.

    ``url`` is a libpq URL (``postgresql://user:password@host:port/dbname?...``) or
    key=value connection string. ``pool_size`` bounds the connections used for
    object and ref operations, ``lock_pool_size`` (default: ``pool_size``) the locks
    held at once. ``schema`` names the PostgreSQL schema holding the tables (created
    when missing); by default the connection's current schema. ``table_prefix``
    (letters, digits, underscores) goes before each table name: ``t1_`` gives
    ``t1_snapstore_objects`` and so on. Locks are per schema and prefix. ``connect_timeout``
    applies to new connections (unless the URL sets one), ``pool_timeout`` to
    waiting for a free connection.
    """

    kind = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 8,
        schema: str | None = None,
        table_prefix: str = "",
        lock_pool_size: int | None = None,
        connect_timeout: float = 10.0,
        pool_timeout: float = 30.0,
        application_name: str = "snapstore",
    ) -> None:
        self.url = url
        self._display = redact_url(url)
        if _IMPORT_ERROR is not None:
            raise BackendError(
                "the PostgreSQL backend needs psycopg 3 and psycopg-pool: pip install snapstore[postgres]",
                {"cause": f"{type(_IMPORT_ERROR).__name__}: {_IMPORT_ERROR}", "url": self._display},
            )
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if lock_pool_size is None:
            lock_pool_size = pool_size
        if lock_pool_size < 1:
            raise ValueError("lock_pool_size must be at least 1")
        if schema is not None and (not isinstance(schema, str) or not schema or "\x00" in schema):
            raise ValueError(f"invalid schema name {schema!r}")
        if not isinstance(table_prefix, str) or not _TABLE_PREFIX.match(table_prefix):
            raise ValueError(f"invalid table prefix {table_prefix!r}: up to 40 letters, digits and underscores")
        self.table_prefix = table_prefix
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise BackendError(
                f"invalid PostgreSQL URL {self._display}: {_first_line(exc)}",
                {"cause": f"{type(exc).__name__}: {exc}", "url": self._display},
            ) from exc
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = max(1, round(connect_timeout))
        if "application_name" not in params:
            kwargs["application_name"] = application_name
        self._kwargs = kwargs
        self._closed = False
        self._close_mutex = threading.Lock()

        # Set up (and check the format) on a connection of its own: an unreachable
        # server or a refused login fails here, with the driver's own message.
        self.schema = self._setup(schema)

        self._pool = ConnectionPool(
            url,
            kwargs=kwargs,
            min_size=1,
            max_size=pool_size,
            open=False,
            check=ConnectionPool.check_connection,  # replaces connections a restart or timeout killed
            timeout=pool_timeout,
            name=f"snapstore:{self._display}",
        )
        self._lock_pool = ConnectionPool(
            url,
            kwargs=kwargs,
            min_size=0,
            max_size=lock_pool_size,
            open=False,
            check=ConnectionPool.check_connection,
            timeout=pool_timeout,
            name=f"snapstore-locks:{self._display}",
        )
        self._pool.open(wait=False)
        self._lock_pool.open(wait=False)

    def __repr__(self) -> str:
        return f"PostgresBackend({self._display!r}, schema={self.schema!r}, table_prefix={self.table_prefix!r})"

    def describe(self) -> str:
        return _where(self._display, self.schema, self.table_prefix)

    # -- setup ---------------------------------------------------------
    def _setup(self, schema: str | None) -> str:
        try:
            with psycopg.connect(self.url, **self._kwargs) as conn:
                if schema is None:
                    schema = conn.execute("SELECT current_schema()").fetchone()[0]  # type: ignore[index]
                    if schema is None:
                        raise BackendError(
                            f"no schema to keep the tables in at {self._display}: "
                            "the search_path names no existing schema; pass schema=...",
                            {"url": self._display},
                        )
                self._compose_queries(conn, schema)
                found = self._read_version(conn, schema)
                if found is None:
                    self._create_tables(conn, schema)
                    found = self._read_version(conn, schema)
        except psycopg.Error as exc:
            raise self._driver_error("open store", exc) from exc
        self._check_version(found, schema)
        return schema

    def _read_version(self, conn: psycopg.Connection[Any], schema: str) -> str | None:
        exists = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = %s",
            [schema, self.table_prefix + META_TABLE],
        ).fetchone()
        if exists is None:
            return None
        row = conn.execute(self._q["read_version"]).fetchone()
        return None if row is None else row[0]

    def _create_tables(self, conn: psycopg.Connection[Any], schema: str) -> None:
        ident = sql.Identifier
        with conn.transaction():
            # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog:
            # let one creator at a time in (the lock ends with the transaction).
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [_hash64("snapstore-ddl", schema)])
            if conn.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", [schema]).fetchone() is None:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident(schema)))
            conn.execute(
                sql.SQL('CREATE TABLE IF NOT EXISTS {} (key text COLLATE "C" PRIMARY KEY, data bytea NOT NULL)').format(
                    ident(schema, self.table_prefix + OBJECTS_TABLE)
                )
            )
            conn.execute(
                sql.SQL(
                    'CREATE TABLE IF NOT EXISTS {} (name text COLLATE "C" PRIMARY KEY, value text NOT NULL)'
                ).format(ident(schema, self.table_prefix + REFS_TABLE))
            )
            conn.execute(
                sql.SQL('CREATE TABLE IF NOT EXISTS {} (key text COLLATE "C" PRIMARY KEY, value text)').format(
                    ident(schema, self.table_prefix + META_TABLE)
                )
            )
            # last, so a store whose version row exists has all its tables
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (key, value) VALUES ('schema_version', %s) ON CONFLICT (key) DO NOTHING"
                ).format(ident(schema, self.table_prefix + META_TABLE)),
                [str(SCHEMA_VERSION)],
            )

    def _check_version(self, found: str | None, schema: str) -> None:
        where = _where(self._display, schema, self.table_prefix)
        details = {"url": self._display, "schema": schema, "found": found, "supported": SCHEMA_VERSION}
        try:
            version = int(found)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            version = 0
        if version > SCHEMA_VERSION:
            raise FormatVersionError(
                f"the store in {where} has schema version {version}, written by a newer snapstore; "
                f"this one understands version {SCHEMA_VERSION}: upgrade snapstore",
                details,
            )
        if version < 1:
            raise FormatVersionError(f"unknown snapstore schema version {found!r} in {where}", details)

    def _compose_queries(self, conn: psycopg.Connection[Any], schema: str) -> None:
        tables = {
            "objects": sql.Identifier(schema, self.table_prefix + OBJECTS_TABLE),
            "refs": sql.Identifier(schema, self.table_prefix + REFS_TABLE),
            "meta": sql.Identifier(schema, self.table_prefix + META_TABLE),
        }
        texts = {
            "get": "SELECT data FROM {objects} WHERE key = %s",
            "size": "SELECT octet_length(data) FROM {objects} WHERE key = %s",
            "has": "SELECT 1 FROM {objects} WHERE key = %s",
            "put": "INSERT INTO {objects} (key, data) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
            "put_many": (
                "INSERT INTO {objects} (key, data) SELECT * FROM unnest(%s::text[], %s::bytea[]) "
                "ON CONFLICT (key) DO NOTHING"
            ),
            "overwrite": (
                "INSERT INTO {objects} (key, data) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data"
            ),
            "delete": "DELETE FROM {objects} WHERE key = %s",
            "keys": "SELECT key FROM {objects} WHERE key > %s ORDER BY key LIMIT %s",
            "read_ref": "SELECT value FROM {refs} WHERE name = %s",
            "ref_absent": "SELECT NOT EXISTS (SELECT 1 FROM {refs} WHERE name = %s)",
            "create_ref": "INSERT INTO {refs} (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
            "update_ref": "UPDATE {refs} SET value = %s WHERE name = %s AND value = %s",
            "delete_ref": "DELETE FROM {refs} WHERE name = %s AND value = %s",
            "refs": "SELECT name, value FROM {refs} WHERE name LIKE %s",
            "read_version": "SELECT value FROM {meta} WHERE key = 'schema_version'",
        }
        # Rendered once to plain strings, so psycopg can prepare them.
        self._q = {name: sql.SQL(text).format(**tables).as_string(conn) for name, text in texts.items()}

    # -- plumbing ------------------------------------------------------
    @contextmanager
    def _connection(self, action: str, **details: Any) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise BackendError(f"cannot {action}: the backend for {self.describe()} is closed", {"url": self._display})
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise self._driver_error(action, exc, **details) from exc

    def _driver_error(self, action: str, exc: BaseException, **details: Any) -> BackendError:
        cause = f"{type(exc).__name__}: {exc}"
        message = f"PostgreSQL: cannot {action} at {self._display}: {_first_line(exc)}"
        if isinstance(exc, PoolTimeout):
            # The pool only says it waited; find out whether the server is reachable at all.
            probe = self._probe()
            if probe is None:
                message += " (the server answers: all pooled connections are busy)"
            else:
                message = f"PostgreSQL: cannot {action} at {self._display}: {_first_line(probe)}"
                cause = f"{type(probe).__name__}: {probe}"
        info: dict[str, Any] = {"url": self._display, "cause": cause, **details}
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate:
            info["sqlstate"] = sqlstate
        return BackendError(message, info)

    def _probe(self) -> BaseException | None:
        try:
            with psycopg.connect(self.url, **{**self._kwargs, "connect_timeout": 3}):
                return None
        except psycopg.Error as exc:
            return exc

    # -- objects -------------------------------------------------------
    def get(self, key: str) -> bytes:
        check_key(key)
        with self._connection("read object", object=key) as conn:
            row = conn.execute(self._q["get"], [key], binary=True).fetchone()
        if row is None:
            raise ObjectMissing(f"object {key} not found", {"object": key})
        return bytes(row[0])

    def size(self, key: str) -> int:
        check_key(key)
        with self._connection("read object size", object=key) as conn:
            row = conn.execute(self._q["size"], [key]).fetchone()
        if row is None:
            raise ObjectMissing(f"object {key} not found", {"object": key})
        return int(row[0])

    def has(self, key: str) -> bool:
        check_key(key)
        with self._connection("look up object", object=key) as conn:
            return conn.execute(self._q["has"], [key]).fetchone() is not None

    def put(self, key: str, data: bytes) -> bool:
        check_key(key)
        _check_data(key, data)
        with self._connection("write object", object=key) as conn:
            if len(data) > _PRECHECK_BYTES and conn.execute(self._q["has"], [key]).fetchone() is not None:
                return False  # don't ship megabytes the table already holds
            return conn.execute(self._q["put"], [key, data]).rowcount == 1

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> int:
        """Insert in batches of up to 1000 rows per statement, all in one transaction.

        A bad key or a failure anywhere rolls back every batch of the call.
        """
        batches = _batches(items)
        first = next(batches, None)  # validated before a connection is taken
        if first is None:
            return 0
        written = 0
        with self._connection("write objects", objects=len(first[0])) as conn, conn.transaction():
            for keys, blobs in itertools.chain([first], batches):
                written += conn.execute(self._q["put_many"], [keys, blobs]).rowcount
        return written

    def delete(self, key: str) -> None:
        check_key(key)
        with self._connection("delete object", object=key) as conn:
            conn.execute(self._q["delete"], [key])

    def iter_keys(self) -> Iterator[str]:
        """Keys in batches (keyset pagination): no connection is held between batches.

        Keys added or deleted during the iteration may or may not be seen.
        """
        if self._closed:
            raise BackendError(
                f"cannot list objects: the backend for {self.describe()} is closed", {"url": self._display}
            )
        return self._iter_keys()

    def _iter_keys(self) -> Iterator[str]:
        last = ""
        while True:
            with self._connection("list objects") as conn:
                rows = conn.execute(self._q["keys"], [last, _KEYS_BATCH]).fetchall()
            for (key,) in rows:
                yield key
            if len(rows) < _KEYS_BATCH:
                return
            last = rows[-1][0]

    def _raw_overwrite(self, key: str, data: bytes) -> None:
        """Test backdoor for ``snapstore.testing.raw_corrupt``: replace the stored bytes.

        The store never calls this: objects are otherwise never updated.
        """
        check_key(key)
        with self._connection("overwrite object", object=key) as conn:
            conn.execute(self._q["overwrite"], [key, bytes(data)])

    # -- refs ----------------------------------------------------------
    def read_ref(self, name: str) -> str | None:
        check_ref_name(name)
        with self._connection("read ref", ref=name) as conn:
            row = conn.execute(self._q["read_ref"], [name]).fetchone()
        return None if row is None else row[0]

    def cas_ref(self, name: str, expected: str | None, new: str | None) -> bool:
        check_ref_name(name)
        for value in (expected, new):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"ref values are str or None, not {type(value).__name__}")
        # One statement each: the row lock taken by UPDATE/DELETE, re-checked after a
        # concurrent change commits (READ COMMITTED), makes every case race-free.
        with self._connection("update ref", ref=name) as conn:
            if expected is None and new is None:
                return bool(conn.execute(self._q["ref_absent"], [name]).fetchone()[0])  # type: ignore[index]
            if expected is None:
                cur = conn.execute(self._q["create_ref"], [name, new])
            elif new is None:
                cur = conn.execute(self._q["delete_ref"], [name, expected])
            else:
                cur = conn.execute(self._q["update_ref"], [new, name, expected])
            return cur.rowcount == 1

    def iter_refs(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        if not isinstance(prefix, str):
            raise TypeError(f"ref prefix must be str, not {type(prefix).__name__}")
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._connection("list refs", prefix=prefix) as conn:
            rows = conn.execute(self._q["refs"], [pattern]).fetchall()
        return iter(sorted((name, value) for name, value in rows))

    # -- locks ---------------------------------------------------------
    def lock(self, name: str, *, shared: bool = False) -> AbstractContextManager[None]:
        check_ref_name(name)
        if self._closed:
            raise BackendError(f"cannot take lock {name}: the backend for {self.describe()} is closed", {"lock": name})
        return self._held(name, _hash64("snapstore-lock", self.schema, self.table_prefix, name), shared)

    @contextmanager
    def _held(self, name: str, lock_id: int, shared: bool) -> Iterator[None]:
        mode = "shared" if shared else "exclusive"
        try:
            conn = self._lock_pool.getconn()
        except psycopg.Error as exc:
            raise self._driver_error(f"take {mode} lock {name}", exc, lock=name) from exc
        try:
            conn.execute("SELECT pg_advisory_lock_shared(%s)" if shared else "SELECT pg_advisory_lock(%s)", [lock_id])
        except BaseException as exc:  # also KeyboardInterrupt while waiting: psycopg cancels the query
            self._discard_lock_connection(conn)  # closing the session drops the lock if it was granted
            if isinstance(exc, psycopg.Error):
                raise self._driver_error(f"take {mode} lock {name}", exc, lock=name) from exc
            raise
        try:
            yield
        except BaseException:
            self._release(conn, name, lock_id, shared, quiet=True)  # don't hide the body's error
            raise
        self._release(conn, name, lock_id, shared, quiet=False)

    def _release(self, conn: psycopg.Connection[Any], name: str, lock_id: int, shared: bool, *, quiet: bool) -> None:
        problem: BaseException | None = None
        try:
            row = conn.execute(
                "SELECT pg_advisory_unlock_shared(%s)" if shared else "SELECT pg_advisory_unlock(%s)", [lock_id]
            ).fetchone()
            released = bool(row and row[0])
        except psycopg.Error as exc:
            released, problem = False, exc
        if released:
            self._lock_pool.putconn(conn)
            return
        # The session that held the lock died (server restart, killed backend, network):
        # the lock was lost while the block ran.
        self._discard_lock_connection(conn)
        if not quiet:
            raise BackendError(
                f"lock {name} on {self._display} was lost while held: its connection failed",
                {
                    "lock": name,
                    "url": self._display,
                    "cause": f"{type(problem).__name__}: {problem}"
                    if problem
                    else "the server no longer held the lock",
                },
            )

    def _discard_lock_connection(self, conn: psycopg.Connection[Any]) -> None:
        try:
            conn.close()
        finally:
            self._lock_pool.putconn(conn)  # a closed connection is dropped and replaced by the pool

    # -- lifecycle -----------------------------------------------------
    def close(self) -> None:
        with self._close_mutex:
            if self._closed:
                return
            self._closed = True
        for pool in (self._pool, self._lock_pool):
            pool.close()


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


def _where(display: str, schema: str, prefix: str) -> str:
    return f"{display} (schema {schema}" + (f", tables {prefix}snapstore_*)" if prefix else ")")


def _hash64(*parts: str) -> int:
    """A signed 64-bit number for an advisory lock (the key space is bigint)."""
    digest = hashlib.blake2b("\x00".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_data(key: str, data: object) -> None:
    # psycopg would happily turn a str into bytea by parsing escapes: refuse it.
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"object {key}: data must be bytes, not {type(data).__name__}")


def _batches(items: Iterable[tuple[str, bytes]]) -> Iterator[tuple[list[str], list[bytes]]]:
    keys: list[str] = []
    blobs: list[bytes] = []
    seen: set[str] = set()
    size = 0
    for key, data in items:
        check_key(key)
        _check_data(key, data)
        if key in seen:  # the same key twice in one batch: content-addressed, keep the first
            continue
        seen.add(key)
        keys.append(key)
        blobs.append(bytes(data))
        size += len(data)
        if len(keys) >= _PUT_MANY_ROWS or size >= _PUT_MANY_BYTES:
            yield keys, blobs
            keys, blobs, seen, size = [], [], set(), 0
    if keys:
        yield keys, blobs
