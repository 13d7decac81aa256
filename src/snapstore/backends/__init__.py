"""Storage engines behind one narrow interface (see ``base.Backend``)."""

from __future__ import annotations

import os
import re

from ..errors import BackendError
from ._directory import DirectoryBackend
from ._memory import MemoryBackend
from .base import Backend, SegmentMissing

#: what starts a URL (RFC 3986's scheme and "://"); a directory path that looks like one is refused
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
#: the schemes of other stores and of files (a driver after "+" too: "sqlite+aiosqlite:"), written
#: without "//" ("sqlite:checkpoints.db"), which a str target is refused for too; a folder of such a
#: name is still reached as "./sqlite:checkpoints.db", or through a pathlib.Path
_OTHER_STORE = re.compile(
    r"((?:sqlite3?|duckdb|file|ftp|postgres(?:ql)?|redis|rediss|valkey|mongodb|mysql|mariadb|https?|s3|gs)"
    r"(?:\+[A-Za-z0-9.-]+)?):",
    re.IGNORECASE,
)

#: a libpq ``key=value`` connection string ("host=db port=5432 dbname=app"): its first keyword, one
#: libpq 18 knows (``psycopg.pq.Conninfo.get_defaults()``, written out: psycopg is an optional
#: extra), then "=". PostgresSaver takes this form, and a user switching from it must not find the
#: checkpoints in a folder of that name; such a folder is still reached as "./host=..."
_LIBPQ_KEYWORDS = re.compile(
    r"\s*(application_name|channel_binding|client_encoding|connect_timeout|dbname|fallback_application_name"
    r"|gssdelegation|gssencmode|gsslib|host|hostaddr|keepalives|keepalives_count|keepalives_idle"
    r"|keepalives_interval|krbsrvname|load_balance_hosts|max_protocol_version|min_protocol_version"
    r"|oauth_client_id|oauth_client_secret|oauth_issuer|oauth_scope|options|passfile|password|port"
    r"|replication|require_auth|requirepeer|scram_client_key|scram_server_key|service"
    r"|ssl_max_protocol_version|ssl_min_protocol_version|sslcert|sslcertmode|sslcompression|sslcrl"
    r"|sslcrldir|sslkey|sslkeylogfile|sslmode|sslnegotiation|sslpassword|sslrootcert|sslsni"
    r"|target_session_attrs|tcp_user_timeout|user)\s*="
)

#: the targets that name a store in this process's memory (":memory:" as SqliteSaver spells it)
MEMORY_TARGETS = frozenset({":memory:", "memory:"})

__all__ = ["MEMORY_TARGETS", "Backend", "DirectoryBackend", "MemoryBackend", "SegmentMissing", "open_backend"]


def open_backend(target: str | os.PathLike[str] | Backend, *, fsync: bool = False, create: bool = True) -> Backend:
    """A backend for a path, a ``postgresql://`` URL or libpq ``key=value`` string, ``:memory:`` (or
    ``memory:``) or an existing backend."""
    if isinstance(target, Backend):
        return target
    if not isinstance(target, (str, os.PathLike)):
        raise BackendError(
            f"a store is a path, a postgresql:// URL or a backend, not {type(target).__name__}",
            {"target": repr(target)},
        )
    text = os.fspath(target)
    if text.startswith(("postgresql://", "postgres://")) or (isinstance(target, str) and _LIBPQ_KEYWORDS.match(text)):
        from ._postgres import PostgresBackend  # optional extra: imported only when asked for

        return PostgresBackend(text, create=create)
    if isinstance(target, str) and text in MEMORY_TARGETS:
        return MemoryBackend(discard_on_close=True)
    scheme = _URL_SCHEME.match(text)
    if scheme is not None:
        # a URL of another kind (a SqliteSaver's "sqlite:///x.db", a "file://" URL) would otherwise
        # become a folder named after its scheme in the working directory
        raise BackendError(
            f"{text!r} is a {scheme.group(1)}:// URL: a store is a directory path, a postgresql:// URL or :memory:",
            {"target": text, "reason": "unsupported URL scheme"},
        )
    other = _OTHER_STORE.match(text) if isinstance(target, str) else None
    if other is not None:
        raise BackendError(
            f"{text!r} starts like a URL ({other.group(1)}:): a store is a directory path, a postgresql:// URL or "
            f":memory: (a folder of that name is reached as ./{text})",
            {"target": text, "reason": "unsupported URL scheme"},
        )
    if not text:
        raise BackendError(
            "a store's path is empty: give a directory path (\".\" for the current one), a postgresql:// URL "
            "or :memory:",
            {"target": text, "reason": "empty path"},
        )
    return DirectoryBackend(text, fsync=fsync, create=create)
