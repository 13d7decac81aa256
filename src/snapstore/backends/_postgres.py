"""Segments of entries in PostgreSQL tables (psycopg 3 and connection pools).

Needs the optional extra: ``pip install snapstore[postgres]`` (``psycopg[binary]``
and ``psycopg-pool``). This module is only imported when a ``postgresql://`` URL
is opened, so it is the only place that touches psycopg.

Tables, created on first use in one schema (the ``schema`` argument, created if
missing, else the connection's ``current_schema()``, which the URL can set with
``?options=-csearch_path%3Dname``), their names optionally preceded by
``table_prefix`` (so several stores can share one schema)::

    snapstore_meta(key text primary key, value text, data bytea, size bigint, version bigint)
        'schema_version' = '4' (the row format 1 and 2 read too); 'config/<name>': a config value
        in data; 'segment/<session key>/<segment, 16 hex digits>': a segment's size, version and tail
    snapstore_entries(session text, segment bigint, pos bigint, data bytea not null),
        indexed on (session, segment)
    snapstore_segment_version   a sequence: every segment written whole gets a new version

Every column is STORAGE PLAIN and neither table has a TOAST table (table layout 4; a
pg_restore gives them empty ones again). A relation of one of these names that snapstore
did not make (``foreign_reason``) is refused before anything reads or writes it.
A segment is one stream of length-prefixed entries (``_postgres_stream``); a position
is a byte offset in it. Its rows in ``snapstore_entries`` hold whole and quarter pages
of the stream, its row in ``snapstore_meta`` the rest (the tail). ``append`` is one
statement: it moves the segment's row on only if the row's size is still
``expected_end`` (compare-and-swap, atomic even without the session lock), and writes
the whole and quarter pages of tail + new entries as rows (and, when it creates the
segment's row, the rest as one more row: a new row carries no tail). A reader reads the
segment's row and its rows in one statement, so a replace (one transaction) is seen
whole or not at all. Opening a layout-2 store (one row per entry, segments and config
in tables of their own) rewrites it as layout 3, then a layout-3 store as layout 4,
each in one transaction.

A format-1 store (``snapstore_objects``, ``snapstore_refs``) in the same schema and
prefix stays readable through ``legacy_reader()``; its ``schema_version`` row stays
'1' until the first config value of this format is written, so format-1 code refuses
the store from then on.

Session locks: ``lock_session`` takes a transaction-scoped advisory lock
(``pg_advisory_xact_lock`` on a 64-bit hash of the schema, the prefix and the key)
on a connection from a pool of its own, which stays in that transaction for the
``with`` block: the lock holder's appends, replaces, drops and reads of that session
(from the same thread) run in it, so a commit is one transaction, rolled back if
the block raises. PostgreSQL queues lock waiters in arrival order, so writers take
turns, and a crashed holder's lock ends with its connection. Creation of the tables
is serialised with the same kind of lock. Driver and network errors surface as
``BackendError`` with ``details["cause"]``.
"""

from __future__ import annotations

import math
import re
import select
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, TypeVar

from ..errors import (
    BackendError,
    ConcurrentUpdateError,
    FormatVersionError,
    LockTimeoutError,
    ReadOnlyStoreError,
    SnapshotError,
)
from ._checks import check_config_name, check_config_value, check_position, entry_list
from ._legacy import OBJECT_KEY, LegacyObjectMissing
from ._postgres_sql import (
    CONFIG_ROW,
    CONFIG_TABLE,
    CREATE_STATEMENTS,
    CREATE_VERSION,
    ENTRIES_TABLE,
    HAS_TOAST,
    LEGACY_OBJECTS_TABLE,
    LEGACY_REFS_TABLE,
    LEGACY_SCHEMA_VERSION,
    MAX_NAME_BYTES,
    META_TABLE,
    PLAIN_TABLES,
    PRIMARY_KEY,
    QUERIES,
    RELATIONS,
    SCHEMA_VERSION,
    SEGMENT_INDEX,
    SEGMENT_INDEX_STATEMENT,
    SEGMENT_ROW,
    SEGMENTS_TABLE,
    TABLE_PREFIX,
    UPGRADE_ENTRIES_TABLE,
    UPGRADE_FINISH,
    UPGRADE_PREPARE,
    UPGRADE_READ_ENTRIES,
    UPGRADE_READ_SEGMENTS,
    UPGRADE_TO_4_LOCK,
    UPGRADE_TO_4_VERSION,
    VERSION_SEQUENCE,
    first_line,
    foreign_reason,
    hash64,
    redact_driver_message,
    redact_url,
    row_sizes,
    where,
)
from ._postgres_stream import frame_entries, read_stream
from .base import (
    SERVER_NOT_SERVING,
    STAGED_GRACE_SECONDS,
    Backend,
    SegmentInfo,
    SegmentMissing,
    SegmentRead,
    check_segment,
    check_session_key,
    is_staged,
    staged_before,
)
from .locking import check_timeout, lock_timeout_error

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

T = TypeVar("T")

_LOCK_NOT_AVAILABLE = "55P03"
#: seconds a lock waiter may spend getting a connection, whatever its lock timeout
_CONNECT_ALLOWANCE = 5.0
#: errors that say this connection may not write, by SQLSTATE: a ReadOnlyStoreError, as a read-only folder gives
_INSUFFICIENT_PRIVILEGE = "42501"
_READ_ONLY_TRANSACTION = "25006"  # a standby, default_transaction_read_only
_READ_ONLY_STATES = {
    _INSUFFICIENT_PRIVILEGE: "its role may not write the store's tables",
    _READ_ONLY_TRANSACTION: "the server takes no writes",
}
#: seconds a lock waits for the pool to make a connection before it makes one of its own
_POOL_CONNECT_WAIT = 0.25
#: seconds after a lock made its own connection in which the next ones do not wait for the pool
_STALLED_FOR = 2.0
#: the shortest wait asked of the lock pool (a wait of 0 is refused before idle connections are looked at)
_MIN_POOL_WAIT = 0.005
#: a read's rows by position (the segment's own row is -1)
_position = itemgetter(0)


class _DroppedConnection(Exception):
    """A pooled connection the server had closed: the round trip can be retried on another."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class _Held:
    """A session lock held by one thread: its connection, inside the lock's transaction."""

    conn: Any
    key: str
    #: the session's segments, read in the lock's round trip; handed to the first ``segments`` call
    prefetched: list[SegmentInfo] | None = None
    #: ((segment, start), rows of ``read_segment``), read in the lock's round trip for the caller's
    #: ``read_from``; handed to the first ``read_segment`` of that segment from that position
    prefetched_read: tuple[tuple[int, int], list[Any]] | None = None
    #: the transaction failed (an error aborted it): nothing more runs in it, and it is rolled back
    failed: BaseException | None = field(default=None)


class PostgresBackend(Backend):
    """A store in a PostgreSQL database, shared safely by threads and processes.

    ``url`` is a libpq URL (``postgresql://user:password@host:port/dbname?...``) or
    key=value connection string. ``pool_size`` bounds the connections used for reads
    and unlocked writes, ``lock_pool_size`` (default: ``pool_size``) the session locks
    held at once by this process (more lockers wait for a connection, as they would for
    the lock). ``schema`` names the PostgreSQL schema holding the tables (created when
    missing); by default the connection's current schema. ``table_prefix`` (letters,
    digits, underscores) goes before each table name: ``t1_`` gives ``t1_snapstore_entries``
    and so on. Locks are per schema and prefix. ``connect_timeout`` applies to new
    connections (unless the URL sets one), ``pool_timeout`` to waiting for a free connection.
    With ``create=False`` a database (schema, prefix) holding no store is refused with
    ``BackendError`` before anything is created in it.
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
        create: bool = True,
    ) -> None:
        if not isinstance(url, str):
            raise BackendError(f"a PostgreSQL URL is a str, not {type(url).__name__}", {"url": repr(url)})
        self.url = url
        self._display = redact_url(url)
        if _IMPORT_ERROR is not None:
            raise BackendError(
                "the PostgreSQL backend needs psycopg 3 and psycopg-pool: pip install snapstore[postgres]",
                {"cause": f"{type(_IMPORT_ERROR).__name__}: {_IMPORT_ERROR}", "url": self._display},
            )
        if type(pool_size) is not int or pool_size < 1:
            raise ValueError(f"pool_size must be an integer of at least 1, not {pool_size!r}")
        if lock_pool_size is None:
            lock_pool_size = pool_size
        if type(lock_pool_size) is not int or lock_pool_size < 1:
            raise ValueError(f"lock_pool_size must be an integer of at least 1, not {lock_pool_size!r}")
        if schema is not None and (not isinstance(schema, str) or not schema or "\x00" in schema):
            raise ValueError(f"invalid schema name {schema!r}")
        if schema is not None and len(schema.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            # the server would cut it: two names alike in their first 63 bytes would be one store,
            # whose writers took different locks
            raise ValueError(f"schema name {schema!r} is longer than PostgreSQL's {MAX_NAME_BYTES} bytes")
        if not isinstance(table_prefix, str) or not TABLE_PREFIX.match(table_prefix):
            raise ValueError(
                f"invalid table prefix {table_prefix!r}: up to 38 letters, digits and underscores (the longest "
                f"name the store makes, the prefix and snapstore_entries_segment, must fit {MAX_NAME_BYTES} bytes)"
            )
        self.table_prefix = table_prefix
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            said = redact_driver_message(str(exc), url).rstrip()  # it may quote the password
            raise BackendError(
                f"invalid PostgreSQL URL {self._display}: {first_line(said)}",
                {"cause": f"{type(exc).__name__}: {said}", "url": self._display},
            ) from None
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = max(1, round(connect_timeout))
        if "application_name" not in params:
            kwargs["application_name"] = application_name
        self._kwargs = kwargs
        self._pool_timeout = pool_timeout
        self._closed = False
        self._close_mutex = threading.Lock()
        self._local = threading.local()
        #: connections a lock made outside the pool (``_lock_connection``), closed when it lets go
        self._unpooled: weakref.WeakSet[Any] = weakref.WeakSet()
        self._unpooled_count = 0
        #: pooled lock connections this backend's locks hold now (the pool's own count has its
        #: connection attempts in it, which wait out a back-off while the server is down)
        self._pooled_out = 0
        self._unpooled_mutex = threading.Lock()
        self._operations_out = 0  # connections operations (not locks) use now: pooled or their own
        self._read_only_reason: str | None = None
        self._own_made_at = -math.inf  # when a lock last made a connection of its own
        self._layout_version = SCHEMA_VERSION
        self._create = create

        # Set up (and check the format) on a connection of its own: an unreachable
        # server or a refused login fails here, with the driver's own message.
        self.schema = self._setup(schema)

        self._pool = ConnectionPool(
            url,
            kwargs=kwargs,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=pool_timeout,
            name=f"snapstore:{self._display}",
        )
        self._lock_pool = ConnectionPool(
            url,
            kwargs=kwargs,
            min_size=0,
            max_size=lock_pool_size,
            open=False,
            timeout=pool_timeout,
            name=f"snapstore-locks:{self._display}",
        )
        self._pool.open(wait=False)
        self._lock_pool.open(wait=False)

    def __repr__(self) -> str:
        return f"PostgresBackend({self._display!r}, schema={self.schema!r}, table_prefix={self.table_prefix!r})"

    def describe(self) -> str:
        return where(self._display, self.schema, self.table_prefix)

    # -- setup ---------------------------------------------------------
    def _setup(self, schema: str | None) -> str:
        try:
            with psycopg.connect(self.url, **self._kwargs) as conn:
                if schema is None:
                    schema = conn.execute("SELECT current_schema()").fetchone()[0]  # type: ignore[index]
                    if schema is None:
                        # The command line reaches a schema only through the URL, so this says how to fix
                        # the URL or the database; a missing schema is created only when named outright.
                        path = conn.execute("SHOW search_path").fetchone()[0]  # type: ignore[index]
                        raise BackendError(
                            f"no schema to keep the tables in at {self._display}: its search_path ({path}) "
                            "names no schema that exists; create the schema first (CREATE SCHEMA name), or name "
                            "an existing one in the URL (?options=-csearch_path%3Dname)",
                            {"url": self._display, "search_path": path, "reason": "no schema"},
                        )
                self._refuse_foreign(conn, schema)
                self._compose_queries(conn, schema)
                found = self._read_version(conn, schema)
                if found is None and not self._create:  # a database of other tables: nothing made in it
                    raise BackendError(
                        f"no snapstore store at {where(self._display, schema, self.table_prefix)}",
                        {"url": self._display, "schema": schema, "reason": "no store"},
                    )
                if found != str(SCHEMA_VERSION):
                    self._check_version(found, schema)  # refuse a newer store before creating anything
                    # schema-2 tables: a schema-2 store, or a format-1 store that schema-2 code opened
                    if self._has_table(conn, schema, SEGMENTS_TABLE):
                        self._upgrade_row_per_entry(conn, schema)
                    if self._read_version(conn, schema) == "3":
                        self._upgrade_plain_rows(conn, schema)
                    self._create_tables(conn, schema)
                    found = self._read_version(conn, schema)
                self._read_only_reason = self._cannot_write(conn, schema)
                self.read_only = self._read_only_reason is not None
        except psycopg.Error as exc:
            raise self._driver_error("open store", exc) from exc
        self._layout_version = self._check_version(found, schema)
        return schema

    def _cannot_write(self, conn: psycopg.Connection[Any], schema: str) -> str | None:
        """Why this connection may not write the store, None when it may: the server takes no writes
        (a standby, ``default_transaction_read_only``), or its role lacks a privilege a write uses
        (granted SELECT only, or INSERT without DELETE)."""
        tables = self._tables(schema)
        meta, entries, sequence = (tables[name].as_string(conn) for name in ("meta", "entries", "sequence"))
        # one privilege a call: given several, has_table_privilege says whether any is held
        row = conn.execute(
            "SELECT current_setting('transaction_read_only') = 'on',"
            " has_table_privilege(%s, 'INSERT') AND has_table_privilege(%s, 'UPDATE')"
            " AND has_table_privilege(%s, 'DELETE') AND has_table_privilege(%s, 'INSERT')"
            " AND has_table_privilege(%s, 'UPDATE') AND has_table_privilege(%s, 'DELETE')"
            " AND (has_sequence_privilege(%s, 'USAGE') OR has_sequence_privilege(%s, 'UPDATE'))",
            [meta, meta, meta, entries, entries, entries, sequence, sequence],
        ).fetchone()
        if row is None:
            return None
        if row[0]:
            return _READ_ONLY_STATES[_READ_ONLY_TRANSACTION]
        return None if row[1] else _READ_ONLY_STATES[_INSUFFICIENT_PRIVILEGE]

    def _writable(self, action: str) -> None:
        """Refuse a write to a store opened read-only before it reaches the server: a role allowed
        some writes and not others would otherwise make some and fail at the next that needs more
        (a reclaim's DELETE), leaving its sessions stuck."""
        if self.read_only:
            raise ReadOnlyStoreError(
                f"PostgreSQL: cannot {action}: the store at {self.describe()} is read-only here "
                f"({self._read_only_reason}; as found when the store was opened)",
                {"url": self._display, "action": action, "reason": "read-only"},
            )

    def _refuse_foreign(self, conn: psycopg.Connection[Any], schema: str) -> None:
        """Refuse a table, sequence or index named as one of the store's that snapstore did not make,
        before anything reads or writes it: the statements would fail on its columns half way, or
        skip it (CREATE ... IF NOT EXISTS) and write into someone else's table."""
        roles = {
            self.table_prefix + META_TABLE: "meta",
            self.table_prefix + ENTRIES_TABLE: "entries",
            self.table_prefix + VERSION_SEQUENCE: "sequence",
            self.table_prefix + SEGMENT_INDEX: "index",
        }
        found: dict[str, tuple[str, list[tuple[str, str, str | None, bool]], str | None]] = {}
        for name, kind, column, type_name, collation, in_key, indexed in conn.execute(
            RELATIONS, {"schema": schema, "names": list(roles)}
        ):
            _kind, columns, _indexed = found.setdefault(name, (kind, [], indexed))
            if column is not None:  # a table without columns still has its one row
                columns.append((column, type_name, collation, in_key))
        for name, (kind, columns, indexed) in found.items():
            reason = foreign_reason(roles[name], kind, columns, indexed, self.table_prefix)
            if reason is not None:
                raise BackendError(
                    f"{name} in {where(self._display, schema, self.table_prefix)} is not snapstore's: {reason}; "
                    "no store can be kept beside it: keep the store in another schema (created first, and named "
                    "in the URL: ?options=-csearch_path%3Dname) or under another table prefix, or rename or drop "
                    f"{name} if nothing needs it",
                    {"url": self._display, "schema": schema, "relation": name, "reason": "foreign table"},
                )

    def _has_table(self, conn: psycopg.Connection[Any], schema: str, table: str) -> bool:
        found = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = %s",
            [schema, self.table_prefix + table],
        ).fetchone()
        return found is not None

    def _read_version(self, conn: psycopg.Connection[Any], schema: str) -> str | None:
        if not self._has_table(conn, schema, META_TABLE):
            return None
        row = conn.execute(self._q["read_version"]).fetchone()
        return None if row is None else row[0]

    def _tables(self, schema: str) -> dict[str, sql.Identifier]:
        """The schema-qualified names of this store's tables and sequence, for ``sql.SQL.format``,
        and the name its entries index is created with (in the table's schema)."""
        return {
            "segment_index": sql.Identifier(self.table_prefix + SEGMENT_INDEX),
            **{
                name: sql.Identifier(schema, self.table_prefix + table)
                for name, table in (
                    ("meta", META_TABLE),
                    ("config", CONFIG_TABLE),
                    ("segments", SEGMENTS_TABLE),
                    ("entries", ENTRIES_TABLE),
                    ("sequence", VERSION_SEQUENCE),
                    ("new_entries", UPGRADE_ENTRIES_TABLE),
                    ("legacy_objects", LEGACY_OBJECTS_TABLE),
                    ("legacy_refs", LEGACY_REFS_TABLE),
                )
            },
        }

    def _create_tables(self, conn: psycopg.Connection[Any], schema: str) -> None:
        names = self._tables(schema)
        with conn.transaction():
            # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog:
            # let one creator at a time in (the lock ends with the transaction).
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [hash64("snapstore-ddl", schema)])
            if conn.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", [schema]).fetchone() is None:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            for text in CREATE_STATEMENTS:
                conn.execute(sql.SQL(text).format(**names))
            self._layout_4_storage(conn, names)
            conn.execute(sql.SQL(CREATE_VERSION).format(**names))

    def _layout_4_storage(self, conn: psycopg.Connection[Any], names: dict[str, sql.Identifier]) -> None:
        """What layout 4 keeps of the tables besides their columns: no primary key on the entries (its
        index has one key per segment) and no TOAST table, each table that still has one rewritten
        with every column PLAIN (``PLAIN_TABLES``). Tables created by layout 3 get it too: a layout-3
        store, or a format-1 store that layout-3 code opened."""
        entries = names["entries"].as_string(conn)
        keys = [key for (key,) in conn.execute(PRIMARY_KEY, [entries]).fetchall()]
        toasted = [
            text
            for table, text in PLAIN_TABLES.items()
            if conn.execute(HAS_TOAST, [names[table].as_string(conn)]).fetchone() == (True,)
        ]
        if keys or toasted:
            # both tables first, in the order an append takes them: an append waits, never deadlocks
            conn.execute(sql.SQL(UPGRADE_TO_4_LOCK).format(**names))
        for key in keys:
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(names["entries"], sql.Identifier(key)))
        for text in toasted:
            conn.execute(sql.SQL(text).format(**names))
        conn.execute(sql.SQL(SEGMENT_INDEX_STATEMENT).format(**names))

    def _upgrade_plain_rows(self, conn: psycopg.Connection[Any], schema: str) -> None:
        """Rewrite a layout-3 store as layout 4, all or nothing, in one transaction.

        The rows stay as they are (layout 4 reads them as they were written); the entries table
        loses its primary key for an index of one key per segment, both tables lose their TOAST
        tables, and ``schema_version`` '3' becomes '4'.
        """
        names = self._tables(schema)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [hash64("snapstore-ddl", schema)])
            if self._read_version(conn, schema) != "3":
                return  # another process upgraded it while this one waited for the lock
            self._layout_4_storage(conn, names)  # (which locks both tables before it alters one)
            conn.execute(sql.SQL(UPGRADE_TO_4_VERSION).format(**names))

    def _upgrade_row_per_entry(self, conn: psycopg.Connection[Any], schema: str) -> None:
        """Rewrite the schema-2 tables (one row per entry) as schema 3, all or nothing, in one transaction.

        Each segment's entries become one stream, cut as one append of it would cut it; config values
        move into the meta table; the schema-2 tables are dropped and ``schema_version`` '2'
        becomes '3' (a format-1 store keeps its '1'). Every segment gets a new version, so no
        reader goes on from a position of the old layout.
        """
        names: dict[str, sql.Composable] = {**self._tables(schema)}
        names["entries_name"] = sql.Identifier(self.table_prefix + ENTRIES_TABLE)
        names["new_entries_pkey"] = sql.Identifier(schema, self.table_prefix + UPGRADE_ENTRIES_TABLE + "_pkey")
        names["entries_pkey_name"] = sql.Identifier(self.table_prefix + ENTRIES_TABLE + "_pkey")
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [hash64("snapstore-ddl", schema)])
            if not self._has_table(conn, schema, SEGMENTS_TABLE):
                return  # another process upgraded it while this one waited for the lock
            for text in UPGRADE_PREPARE:
                conn.execute(sql.SQL(text).format(**names))
            segments = conn.execute(sql.SQL(UPGRADE_READ_SEGMENTS).format(**names)).fetchall()
            for key, segment in segments:
                rows = conn.execute(sql.SQL(UPGRADE_READ_ENTRIES).format(**names), [key, segment], binary=True)
                stream = frame_entries([bytes(data) for (data,) in rows])
                conn.execute(self._q["upgrade_append"], _whole_segment_params(str(key), int(segment), stream))
            for text in UPGRADE_FINISH:
                conn.execute(sql.SQL(text).format(**names))

    def _check_version(self, found: str | None, schema: str) -> int:
        place = where(self._display, schema, self.table_prefix)
        details = {"url": self._display, "schema": schema, "found": found, "supported": SCHEMA_VERSION}
        if found is None:
            return SCHEMA_VERSION  # nothing here yet: the tables are about to be created
        version = int(found) if found.isdigit() and len(found) < 10 else 0
        if version > SCHEMA_VERSION:
            raise FormatVersionError(
                f"the store in {place} has schema version {version}, written by a newer snapstore; "
                f"this one understands versions up to {SCHEMA_VERSION}: upgrade snapstore",
                details,
            )
        if version < LEGACY_SCHEMA_VERSION:
            raise FormatVersionError(f"unknown snapstore schema version {found!r} in {place}", details)
        return version

    def _compose_queries(self, conn: psycopg.Connection[Any], schema: str) -> None:
        names: dict[str, sql.Composable] = {**self._tables(schema)}
        # nextval takes the sequence's name as text: the quoted identifier, inside a literal
        names["sequence"] = sql.SQL(names["sequence"].as_string(conn).replace("'", "''"))
        # Rendered once to plain strings, so psycopg can prepare them.
        self._q = {name: sql.SQL(text).format(**names).as_string(conn) for name, text in QUERIES.items()}
        upgrading = {**names, "entries": names["new_entries"]}
        self._q["upgrade_append"] = sql.SQL(QUERIES["append"]).format(**upgrading).as_string(conn)

    # -- plumbing ------------------------------------------------------
    def _check_open(self, action: str) -> None:
        if self._closed:
            raise BackendError(f"cannot {action}: the backend for {self.describe()} is closed", {"url": self._display})

    @contextmanager
    def _connection(self, action: str, **details: Any) -> Iterator[psycopg.Connection[Any]]:
        self._check_open(action)
        try:
            with self._operation_connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise self._driver_error(action, exc, **details) from exc

    def _run(self, action: str, work: Callable[[Any], T], *, write: bool, retry: bool = True, **details: Any) -> T:
        """``work(connection)`` on a pooled connection, in a transaction of its own when ``write``.

        A connection the server closed while it sat in the pool, unnoticed by the pool's
        check, fails its first statement: ``retry`` work (reads, and writes that may run
        twice) then runs again on another connection (after a restart, every pooled one
        may be dead).
        """
        self._check_open(action)
        attempts = self._pool.max_size + 1
        for attempt in range(1, attempts + 1):
            conn = None
            try:
                with self._operation_connection() as conn:
                    if _closed_by_server(conn) and attempt < attempts:
                        continue  # back to the pool, which drops it and makes another
                    if not write:
                        return work(conn)
                    with conn.transaction():
                        return work(conn)
            except psycopg.Error as exc:
                if retry and attempt < attempts and conn is not None and (conn.broken or conn.closed):
                    continue
                raise self._driver_error(action, exc, write=write, **details) from exc
        raise AssertionError("unreachable")

    @contextmanager
    def _operation_connection(self) -> Iterator[Any]:
        """A pooled connection for one operation; or, when the pool gives none within
        ``_POOL_CONNECT_WAIT`` while fewer than ``pool_size`` operations hold one, a connection of
        its own, closed after it. A pool whose connections failed while the server was down waits
        out a back-off before it connects again, which grows with the outage: reads waited for it
        and reported every pooled connection busy for as long again after the server was back
        (found by a trial: 100 s after 140 s down), where commits, which connect on their own, landed."""
        with self._unpooled_mutex:
            free = self._operations_out < self._pool.max_size
            self._operations_out += 1
        try:
            try:
                # never 0: psycopg_pool then raises at once, without looking at its idle connections
                pooled = self._pool.getconn(timeout=_POOL_CONNECT_WAIT if free else self._pool_timeout)
            except PoolTimeout:
                if not free:
                    raise
                own = psycopg.connect(self.url, **self._kwargs)
                try:
                    yield own
                finally:
                    own.close()
                return
            try:
                yield pooled
            finally:
                self._pool.putconn(pooled)
        finally:
            with self._unpooled_mutex:
                self._operations_out -= 1

    def _held(self, key: str) -> _Held | None:
        held: dict[str, _Held] | None = getattr(self._local, "held", None)
        return None if held is None else held.get(key)

    def _on_session(
        self, key: str, action: str, work: Callable[[Any], T], *, write: bool, retry: bool = True, **details: Any
    ) -> T:
        """``work`` in the lock holder's transaction when this thread holds ``key``'s lock, else ``_run``."""
        held = self._held(key)
        if held is None:
            return self._run(action, work, write=write, retry=retry, session_key=key, **details)
        if held.failed is not None:
            raise BackendError(
                f"cannot {action}: the transaction of session {key}'s lock failed earlier "
                "and is rolled back when the lock is released",
                {"session_key": key, "cause": f"{type(held.failed).__name__}: {held.failed}"},
            )
        if write:
            held.prefetched = held.prefetched_read = None
        try:
            return work(held.conn)
        except psycopg.Error as exc:
            held.failed = exc
            raise self._driver_error(action, exc, write=write, session_key=key, **details) from exc

    def _driver_error(self, action: str, exc: BaseException, *, write: bool = False, **details: Any) -> BackendError:
        """The error to raise for a driver's ``exc`` in ``action`` (``write``: one that writes)."""
        cause = f"{type(exc).__name__}: {exc}"
        message = f"PostgreSQL: cannot {action} at {self._display}: {first_line(exc)}"
        sqlstate = getattr(exc, "sqlstate", None) or ""
        # a privilege refused is read-only only for a write to a store opened read-only: a read refused
        # (a role that may not read either), or a write refused by a privilege revoked since, is the
        # server's error as it gives it
        refused_write = write and self.read_only
        read_only = _READ_ONLY_STATES.get(sqlstate) if sqlstate != _INSUFFICIENT_PRIVILEGE or refused_write else None
        if read_only is not None:
            place = self.describe() if hasattr(self, "schema") else self._display  # (no schema while opening)
            message = f"PostgreSQL: cannot {action}: the store at {place} is read-only here ({read_only}): "
            message += first_line(exc)
        probe = None
        if isinstance(exc, PoolTimeout):
            # The pool only says it waited; find out whether the server is reachable at all.
            probe = self._probe()
            if probe is None:
                message += " (the server answers: all pooled connections are busy)"
            else:
                message = f"PostgreSQL: cannot {action} at {self._display}: {first_line(probe)}"
                cause = f"{type(probe).__name__}: {probe}"
        info: dict[str, Any] = {"url": self._display, "cause": cause, **details}
        if sqlstate:
            info["sqlstate"] = sqlstate
        if _not_serving(probe if probe is not None else exc, getattr(probe, "sqlstate", None) or sqlstate):
            # the server did not serve (down, restarting, refusing connections): nothing is known
            # about the stored data, which ``verify`` must not call damaged
            info["reason"] = SERVER_NOT_SERVING
        return (ReadOnlyStoreError if read_only is not None else BackendError)(message, info)

    def _probe(self) -> BaseException | None:
        try:
            with psycopg.connect(self.url, **{**self._kwargs, "connect_timeout": 3}):
                return None
        except psycopg.Error as exc:
            return exc

    # -- configuration -------------------------------------------------
    def read_config(self, name: str) -> bytes | None:
        check_config_name(name)
        row = self._run(
            "read config",
            lambda conn: conn.execute(self._q["read_config"], [CONFIG_ROW.format(name=name)], binary=True).fetchone(),
            write=False,
            config=name,
        )
        return None if row is None else bytes(row[0])

    def write_config(self, name: str, value: bytes) -> None:
        self._writable(f"write the store's setting {name}")
        value = check_config_value(check_config_name(name), value)

        def write(conn: Any) -> None:
            conn.execute(self._q["write_config"], [CONFIG_ROW.format(name=name), value])
            if self._layout_version < SCHEMA_VERSION:
                # this layout's data is here now: format-1 code must refuse the store from this point on
                conn.execute(self._q["bump_version"])

        self._run("write config", write, write=True, config=name)
        self._layout_version = SCHEMA_VERSION

    # -- sessions ------------------------------------------------------
    def session_keys(self) -> list[str]:
        return [key for key in self._keys() if not is_staged(key)]

    def _keys(self) -> list[str]:
        rows = self._run("list sessions", lambda conn: conn.execute(self._q["session_keys"]).fetchall(), write=False)
        return [key for (key,) in rows]

    def segments(self, key: str) -> list[SegmentInfo]:
        check_session_key(key)
        held = self._held(key)
        if held is not None and held.prefetched is not None:
            found, held.prefetched = held.prefetched, None
            return found
        bounds = _row_bounds(key)
        rows = self._on_session(
            key, "list segments", lambda conn: conn.execute(self._q["segments"], bounds).fetchall(), write=False
        )
        return _segment_infos(rows)

    def read_segment(self, key: str, segment: int, start: int = 0) -> SegmentRead:
        check_session_key(key)
        check_segment(segment)
        check_position(start, "start")
        held = self._held(key)
        if held is not None and held.prefetched_read is not None and held.prefetched_read[0] == (segment, start):
            rows, held.prefetched_read = held.prefetched_read[1], None
        else:
            params = _read_params(key, segment, start)
            rows = self._on_session(
                key,
                "read segment",
                lambda conn: conn.execute(self._q["read_segment"], params, binary=True).fetchall(),
                write=False,
                segment=segment,
            )
        rows.sort(key=_position)
        if not rows or rows[0][0] != -1:
            raise SegmentMissing(f"segment {segment} of session {key} not found", {"segment": segment})
        _row, size, tail = rows[0]
        tail = tail or b""
        first = rows[1][0] if len(rows) > 1 else size - len(tail)
        return read_stream(first, [data for _pos, _size, data in rows[1:]] + [tail], size, start)

    def append(self, key: str, segment: int, entries: Iterable[bytes], expected_end: int) -> int:
        check_session_key(key)
        self._writable(f"write session {key}")
        check_segment(segment)
        check_position(expected_end, "expected_end")
        params = _append_params(key, segment, frame_entries(entry_list(entries)), expected_end)
        # not retried: an append that reached the server before its connection failed may have landed
        row = self._on_session(
            key,
            "append to segment",
            lambda conn: conn.execute(self._q["append"], params).fetchone(),
            write=True,
            retry=False,
            segment=segment,
        )
        if row is None:
            raise ConcurrentUpdateError(
                f"segment {segment} of session {key} no longer ends at {expected_end}",
                {"session_key": key, "segment": segment, "expected_end": expected_end},
            )
        return int(row[0])

    def replace_segment(self, key: str, segment: int, entries: Iterable[bytes]) -> None:
        check_session_key(key)
        self._writable(f"rewrite session {key}")
        check_segment(segment)
        params = _whole_segment_params(key, segment, frame_entries(entry_list(entries)))

        def replace(conn: Any) -> None:  # two statements in one transaction: readers see the old or the new
            conn.execute(self._q["drop_segments"], params)
            conn.execute(self._q["append"], params)  # to nothing: cut as one append, with a new version

        self._on_session(key, "replace segment", replace, write=True, segment=segment)

    def drop_segments(self, key: str, segments: Iterable[int]) -> None:
        check_session_key(key)
        self._writable(f"reclaim segments of session {key}")
        numbers = [check_segment(s) for s in segments]
        if not numbers:
            return
        params = {"key": key, "segments": numbers, "rows": [SEGMENT_ROW.format(key=key, segment=n) for n in numbers]}
        self._on_session(key, "drop segments", lambda conn: conn.execute(self._q["drop_segments"], params), write=True)

    def delete_session(self, key: str) -> bool:
        check_session_key(key)
        self._writable(f"delete session {key}")
        row = self._on_session(
            key,
            "delete session",
            lambda conn: conn.execute(self._q["delete_session"], {"key": key, **_row_bounds(key)}).fetchone(),
            write=True,
            retry=False,  # a second run would find nothing and report False
        )
        return bool(row and row[0])

    def swap_in_session(self, staged: str, key: str) -> None:
        self.swap_in_sessions([(staged, key)])

    def swap_in_sessions(self, pairs: list[tuple[str, str]]) -> None:
        """Every swap in one transaction: that of the lock of these sessions this thread took last.

        The caller releases its locks in the reverse order it took them (``with`` blocks, an
        ``ExitStack``), so that transaction commits first, while the other sessions are still
        locked: a crash before its commit leaves every session as it was, and no writer commits
        on one session before the others are swapped too. Each lock's own transaction held its
        swap before, and the first to commit left the others' sessions old until theirs did."""
        keys = [key for _staged, key in pairs]
        for staged, key in pairs:
            self._writable(f"replace session {key}")
            check_session_key(staged)
            check_session_key(key)
            if self._held(key) is None:  # outside the lock's transaction the delete would stand alone
                raise BackendError(f"swap_in_session needs session {key}'s lock", {"session_key": key})
        registry: dict[str, _Held] = self._local.held
        last = [key for key in registry if key in keys][-1]

        def swap(conn: Any) -> tuple[str, str] | None:
            for staged, key in pairs:
                conn.execute(self._q["delete_session"], {"key": key, **_row_bounds(key)})
                params = {
                    "key": key,
                    "staged": staged,
                    "prefix": SEGMENT_ROW.format(key=key, segment=0)[:-16],
                    "cut": len(SEGMENT_ROW.format(key=staged, segment=0)) - 16 + 1,
                    **_row_bounds(staged),
                }
                if not int(conn.execute(self._q["rename_session"], params).fetchone()[0]):
                    return staged, key
            return None

        missing = self._on_session(last, "swap in session", swap, write=True, retry=False)
        for key in keys:  # what a lock read in its round trip is the old history's
            held = registry[key]
            held.prefetched = held.prefetched_read = None
        if missing is not None:
            # raised through the locks, whose transactions are rolled back: the sessions stay as they were
            staged, key = missing
            raise BackendError(f"no staged history under {staged}", {"session_key": key, "staged": staged})

    def cleanup_temporary(self, grace_seconds: float = 3600.0) -> int:
        """Staged histories an interrupted replace left, once begun ``STAGED_GRACE_SECONDS`` ago
        (the rows keep no time of their own), each deleted holding its lock, never while it is held."""
        if self.read_only:
            return 0
        begun_before = time.time() - max(grace_seconds, STAGED_GRACE_SECONDS)
        removed = 0
        for key in self._keys():
            if not (is_staged(key) and staged_before(key, begun_before)):
                continue
            try:
                with self.lock_session(key, 0):
                    removed += self.delete_session(key)
            except LockTimeoutError:
                continue
        return removed

    # -- session locks -------------------------------------------------
    def lock_session(self, key: str, timeout: float | None) -> AbstractContextManager[None]:
        return self._locked(key, timeout, None)

    def lock_session_reading(
        self, key: str, timeout: float | None, read_from: tuple[int, int]
    ) -> AbstractContextManager[None]:
        check_segment(read_from[0])
        check_position(read_from[1], "read_from")
        return self._locked(key, timeout, read_from)

    def _locked(
        self, key: str, timeout: float | None, read_from: tuple[int, int] | None
    ) -> AbstractContextManager[None]:
        check_session_key(key)
        check_timeout(timeout)
        self._check_open(f"lock session {key}")
        return self._held_lock(key, timeout, read_from)

    @contextmanager
    def _held_lock(self, key: str, timeout: float | None, read_from: tuple[int, int] | None) -> Iterator[None]:
        started = time.monotonic()
        held = self._acquire(key, timeout, started, read_from)
        registry: dict[str, _Held] = self._local.__dict__.setdefault("held", {})
        registry[key] = held
        try:
            yield
        except BaseException:
            del registry[key]
            self._finish(held, commit=False)
            raise
        del registry[key]
        self._finish(held, commit=True)

    def _acquire(self, key: str, timeout: float | None, started: float, read_from: tuple[int, int] | None) -> _Held:
        # A connection the server dropped while it sat in the pool, unnoticed by the pool's
        # check (no FIN arrived yet), fails the first round trip, which is then retried on
        # another connection.
        attempts = self._lock_pool.max_size + 1
        for attempt in range(1, attempts + 1):
            held = _Held(self._lock_connection(key, timeout, started), key)
            try:
                held.prefetched, held.prefetched_read = self._begin_locked(held.conn, key, timeout, started, read_from)
                return held
            except _DroppedConnection as exc:
                self._discard(held.conn)
                if attempt == attempts:
                    raise self._driver_error(f"lock session {key}", exc.cause, session_key=key) from exc.cause
            except SnapshotError:
                self._finish(held, commit=False)  # the wait ran out or failed: end the aborted transaction
                raise
            except BaseException:
                self._discard(held.conn)  # e.g. KeyboardInterrupt while waiting: closing drops a granted lock
                raise
        raise AssertionError("unreachable")

    def _lock_connection(self, key: str, timeout: float | None, started: float) -> Any:
        """A connection for a lock's transaction.

        When every lock connection of this process is taken (held by its locks), the writers
        holding them are ahead in the queue: waiting for one counts against the lock timeout.
        Otherwise a connection is idle or about to be made, which is not waiting for a writer:
        that gets ``_CONNECT_ALLOWANCE`` seconds even with a shorter timeout. A pool whose
        connections failed while the server was down waits out a back-off of seconds before it
        connects again (its attempts counted in its size): after ``_POOL_CONNECT_WAIT`` the lock
        makes a connection of its own instead, closed when it lets go, while this process's
        locks hold fewer than ``lock_pool_size``; for ``_STALLED_FOR`` seconds after one was made,
        locks take an idle pooled connection or make their own without waiting.
        """
        dead = 0
        connect_by: float | None = None
        capped = False
        while True:
            stats = self._lock_pool.get_stats()
            most = stats.get("pool_max", 1)
            free = stats.get("pool_available", 0) > 0 or self._lock_connections_held() < most
            now = time.monotonic()
            left = None if timeout is None else max(timeout - (now - started), 0.0)
            if free and connect_by is None:
                connect_by = now + max(self._pool_timeout if left is None else left, _CONNECT_ALLOWANCE)
            connecting = free and connect_by is not None and now < connect_by
            if connecting:
                assert connect_by is not None
                stalled = not capped and now - self._own_made_at < _STALLED_FOR
                pool_wait = _MIN_POOL_WAIT if stalled else min(connect_by - now, _POOL_CONNECT_WAIT)
            else:
                pool_wait = self._pool_timeout if left is None else left
            try:
                # never 0: psycopg_pool then raises at once, without looking at its idle connections
                conn = self._lock_pool.getconn(timeout=max(pool_wait, _MIN_POOL_WAIT))
            except PoolTimeout as exc:
                if connecting:
                    own = self._own_connection(key, most)
                    if own is not None:
                        return own
                    capped = True  # this process's locks hold them all: wait for one (not a spin)
                    continue
                if self._probe() is not None:  # the server does not answer: that is the error
                    raise self._driver_error(f"lock session {key}", exc, session_key=key) from exc
                if timeout is not None:
                    raise lock_timeout_error(key, time.monotonic() - started) from exc
                # no timeout: keep queueing behind this process's other writers
            except psycopg.Error as exc:
                raise self._driver_error(f"lock session {key}", exc, session_key=key) from exc
            else:
                if not _closed_by_server(conn) or dead >= most:
                    with self._unpooled_mutex:
                        self._pooled_out += 1
                    return conn
                dead += 1
                self._lock_pool.putconn(conn)  # closed: the pool drops it and makes another

    def _lock_connections_held(self) -> int:
        with self._unpooled_mutex:
            return self._unpooled_count + self._pooled_out

    def _own_connection(self, key: str, most: int) -> Any:
        """A lock's connection of its own, when those and the pooled ones locks hold stay within
        ``most`` (else None); when the server does not answer, that is the error."""
        with self._unpooled_mutex:
            if self._unpooled_count + self._pooled_out >= most:
                return None
            self._unpooled_count += 1
        try:
            conn = psycopg.connect(self.url, **self._kwargs)
        except BaseException as exc:
            with self._unpooled_mutex:
                self._unpooled_count -= 1
            if isinstance(exc, psycopg.Error):
                raise self._driver_error(f"lock session {key}", exc, session_key=key) from exc
            raise
        self._unpooled.add(conn)
        self._own_made_at = time.monotonic()
        return conn

    def _begin_locked(
        self, conn: Any, key: str, timeout: float | None, started: float, read_from: tuple[int, int] | None
    ) -> tuple[list[SegmentInfo], tuple[tuple[int, int], list[Any]] | None]:
        """Open the lock's transaction, wait for the lock, list the session's segments and, with
        ``read_from``, read that segment's entries from that position: the listing, and
        (``read_from``, those rows) for ``_Held.prefetched_read``.

        One round trip (several statements in one simple query): the lock, then the listing and
        the read a commit makes first. A commit then costs, in round trips: this one, the append
        (one statement), and COMMIT (one): three (four when the caller's hint was stale: another
        writer started a segment since it looked).
        """
        # 0 is PostgreSQL's "no limit"; a timeout that ran out while connecting still gets one try
        left = None if timeout is None else timeout - (time.monotonic() - started)
        wait_ms = 0 if left is None else max(1, math.ceil(left * 1000))
        lock_id = hash64("snapstore-session", self.schema, self.table_prefix, key)
        # no parameters: psycopg sends a simple query, which may hold several statements
        client = psycopg.ClientCursor(conn)
        listing = client.mogrify(self._q["segments"], _row_bounds(key))
        reading = ""
        if read_from is not None:
            reading = "; " + client.mogrify(self._q["read_segment"], _read_params(key, *read_from))
        text = (
            f"BEGIN; SET LOCAL lock_timeout = {wait_ms}; SELECT pg_advisory_xact_lock({lock_id});"
            " SET LOCAL lock_timeout TO DEFAULT; " + listing + reading
        )
        try:
            cur = conn.execute(text)
            results = []
            while True:
                if cur.description is not None:
                    results.append(cur.fetchall())
                if not cur.nextset():
                    break
            rows = results[-2] if read_from is not None else results[-1]
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise _DroppedConnection(exc) from exc
            if getattr(exc, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                raise lock_timeout_error(key, time.monotonic() - started) from None
            raise self._driver_error(f"lock session {key}", exc, session_key=key) from exc
        return _segment_infos(rows), (None if read_from is None else (read_from, results[-1]))

    def _finish(self, held: _Held, *, commit: bool) -> None:
        """End the lock's transaction (which releases the lock) and give the connection back."""
        conn, key, failed = held.conn, held.key, held.failed
        try:
            conn.execute("COMMIT" if commit and failed is None else "ROLLBACK")
        except BaseException as exc:
            self._discard(conn)  # (Ctrl-C meanwhile too: closing ends the transaction and its lock)
            if not isinstance(exc, psycopg.Error):
                raise
            if commit:
                raise BackendError(
                    f"PostgreSQL: the writes made under session {key}'s lock may not have been committed "
                    f"at {self._display}: {first_line(exc)}",
                    {"session_key": key, "url": self._display, "cause": f"{type(exc).__name__}: {exc}"},
                ) from exc
            return  # the block's own error is the one to report; the connection is gone with the lock
        self._give_back(conn)
        if commit and failed is not None:
            # the block went on after an error aborted its transaction (COMMIT would only roll back)
            raise BackendError(
                f"PostgreSQL: nothing written under session {key}'s lock was kept: "
                f"an earlier statement failed ({first_line(failed)})",
                {"session_key": key, "url": self._display, "cause": f"{type(failed).__name__}: {failed}"},
            )

    def _give_back(self, conn: Any) -> None:
        """A lock's connection back to the pool, or closed when it was one of the lock's own."""
        if conn in self._unpooled:
            self._unpooled.discard(conn)
            with self._unpooled_mutex:
                self._unpooled_count -= 1
            conn.close()
            return
        with self._unpooled_mutex:
            self._pooled_out -= 1
        self._lock_pool.putconn(conn)

    def _discard(self, conn: Any) -> None:
        try:
            conn.close()
        finally:
            self._give_back(conn)  # a closed connection is dropped and replaced by the pool

    # -- format 1 ------------------------------------------------------
    def legacy_format(self) -> str | None:
        tables = [self.schema, self.table_prefix + LEGACY_OBJECTS_TABLE, self.table_prefix + LEGACY_REFS_TABLE]

        def look(conn: Any) -> Any:
            row = conn.execute(self._q["legacy_tables"], tables).fetchone()
            if not row or row[0] != 2:
                return None
            return conn.execute(self._q["legacy_ref"], ["config/format"]).fetchone()

        found = self._run("look for a format-1 store", look, write=False)
        return None if found is None else str(found[0])

    def legacy_reader(self) -> _PostgresLegacyReader | None:
        return None if self.legacy_format() is None else _PostgresLegacyReader(self)

    # -- lifecycle -----------------------------------------------------
    def close(self) -> None:
        with self._close_mutex:
            if self._closed:
                return
            self._closed = True
        for pool in (self._pool, self._lock_pool):
            pool.close()


class _PostgresLegacyReader:
    """``LegacyReader`` over the format-1 tables ``snapstore_objects`` and ``snapstore_refs``."""

    def __init__(self, backend: PostgresBackend) -> None:
        self._backend = backend

    def _q(self, name: str) -> str:
        return self._backend._q[name]

    def read_ref(self, name: str) -> str | None:
        if not isinstance(name, str):
            raise SnapshotError(f"invalid v1 ref name {name!r}", {"ref": repr(name)})
        row = self._backend._run(
            "read v1 ref", lambda conn: conn.execute(self._q("legacy_ref"), [name]).fetchone(), write=False, ref=name
        )
        return None if row is None else str(row[0])

    def iter_refs(self, prefix: str = "") -> list[tuple[str, str]]:
        if not isinstance(prefix, str):
            raise SnapshotError(f"a ref prefix is a str, not {type(prefix).__name__}", {"prefix": repr(prefix)})
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._backend._run(
            "list v1 refs",
            lambda conn: conn.execute(self._q("legacy_refs"), [pattern]).fetchall(),
            write=False,
            prefix=prefix,
        )
        return sorted((str(name), str(value)) for name, value in rows)

    def get(self, key: str) -> bytes:
        if not isinstance(key, str) or not OBJECT_KEY.fullmatch(key):
            raise SnapshotError(f"invalid v1 object id {key!r}", {"object": repr(key)})
        row = self._backend._run(
            "read v1 object",
            lambda conn: conn.execute(self._q("legacy_get"), [key], binary=True).fetchone(),
            write=False,
            object=key,
        )
        if row is None:
            raise LegacyObjectMissing(f"v1 object {key} not found", {"object": key})
        return bytes(row[0])


def _row_bounds(key: str) -> dict[str, str]:
    """The range of snapstore_meta row names that holds a session's segments (the key has no '/')."""
    first = SEGMENT_ROW.format(key=key, segment=0)[:-16]
    return {"first": first, "after": first[:-1] + chr(ord("/") + 1)}


def _append_params(key: str, segment: int, data: bytes, expected_end: int) -> dict[str, Any]:
    """The parameters of the ``append`` statement: ``data`` (framed entries) after ``expected_end``."""
    whole, quarter = row_sizes(key)
    return {
        "row": SEGMENT_ROW.format(key=key, segment=segment),
        "key": key,
        "segment": segment,
        "expected": expected_end,
        "end": expected_end + len(data),
        "data": data,
        "whole": whole,
        "quarter": quarter,
    }


def _whole_segment_params(key: str, segment: int, stream: bytes) -> dict[str, Any]:
    """A segment written whole: its rows dropped (``drop_segments``), then its stream appended to nothing."""
    return {
        **_append_params(key, segment, stream, 0),
        "segments": [segment],
        "rows": [SEGMENT_ROW.format(key=key, segment=segment)],
    }


def _read_params(key: str, segment: int, start: int) -> dict[str, Any]:
    """The parameters of the ``read_segment`` statement."""
    return {"row": SEGMENT_ROW.format(key=key, segment=segment), "key": key, "segment": segment, "start": start}


def _segment_infos(rows: list[Any]) -> list[SegmentInfo]:
    """``SegmentInfo`` from (row name, size, version) rows: the segment number ends the row name, in hex."""
    return [SegmentInfo(int(name[-16:], 16), int(size), int(version)) for name, size, version in rows]


def _closed_by_server(conn: Any) -> bool:
    """Whether a connection taken from a pool was closed by the server while it sat there.

    The check costs no round trip when the connection is healthy: an idle connection has
    nothing to read unless the server spoke, and when it closed the session (a restart,
    pg_terminate_backend, an idle timeout) its last message and EOF are waiting. Only then
    is the connection asked; a dead one is closed here, so its pool replaces it. (The pool's
    own ``check`` asks every connection, and serves a client slowly when several are dead.)
    """
    if conn.closed:
        return True
    poller = select.poll()  # not select(): descriptors past 1023 are common in a busy server
    poller.register(conn.fileno(), select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        ConnectionPool.check_connection(conn)
    except psycopg.Error:
        conn.close()
        return True
    return False


#: SQLSTATEs of a server that stopped serving this connection: an administrator's or a crash's
#: shutdown, a server that cannot accept connections now, too many connections
_NOT_SERVING_STATES = frozenset(("57P01", "57P02", "57P03", "53300"))


#: a connection the server answered and refused (a role or database that does not exist, a wrong
#: password, no pg_hba.conf entry): libpq gives no SQLSTATE for it, only the server's FATAL line;
#: the FATAL lines of a server starting, stopping, recovering or full, or of a database closed to
#: connections for a while (ALLOW_CONNECTIONS false), are not serving, as their SQLSTATEs are
_REFUSED_BY_THE_SERVER = re.compile(r"FATAL:\s+(.*)", re.IGNORECASE)
_NOT_SERVING_LINES = re.compile(
    r"the database system is|too many clients|too many connections|connection slots are reserved"
    r"|terminating connection|not currently accepting connections",
    re.IGNORECASE,
)
#: and one libpq itself refuses: SSL required of a server that answered without it, or a value of
#: the connection string it cannot use ("invalid sslmode value", "invalid integer value")
_REFUSED_BY_THE_CLIENT = re.compile(r"SSL was required|server does not support SSL|invalid \w+ value")


def _not_serving(exc: BaseException, sqlstate: str) -> bool:
    """Whether ``exc`` is the server not serving: a connection that failed or was lost (no SQLSTATE:
    libpq's own, or class 08) or one of ``_NOT_SERVING_STATES``; not an error a statement met on a
    server that serves (a lock timeout, a file missing from the data directory, a full disk), nor a
    connection the server refused for what the URL says (retrying a wrong password never helps)."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    if not sqlstate:
        said = str(exc)
        refused = _REFUSED_BY_THE_SERVER.search(said)
        if refused is not None:
            return _NOT_SERVING_LINES.search(refused.group(1)) is not None
        return _REFUSED_BY_THE_CLIENT.search(said) is None
    return sqlstate.startswith("08") or sqlstate in _NOT_SERVING_STATES
