"""What the commands share: finding the store, sessions and snapshots, reading JSON input, writing output files.

The library is imported inside the functions that use it, so that ``snapstore --help``
and usage errors do not pay for loading the storage engine.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import stat
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import BackendError, SnapshotNotFound
from .base import DEFAULT_STORE, ENV_STORE, PROG, CliError
from .output import say

if TYPE_CHECKING:
    from ..session import Session
    from ..store import SnapshotStore

def store_path(args: argparse.Namespace) -> str:
    """``--store``, else ``$SNAPSTORE_PATH``, else ``./.snapstore``. One given empty is refused: it
    would otherwise stand for the default store, which is not what was named."""
    given = getattr(args, "store", None)
    if given is None:
        given = os.environ.get(ENV_STORE)
        if given == "":
            raise CliError(f"${ENV_STORE} is set but empty: unset it for {DEFAULT_STORE}, or name a store")
    elif given == "":
        raise CliError(
            f"--store is empty: name a store (a directory path, a postgresql:// URL), or leave it out for "
            f"{DEFAULT_STORE}"
        )
    from ..backends import MEMORY_TARGETS  # (the engine: imported when a command runs, as everywhere here)

    if given in MEMORY_TARGETS:
        # every command is a process of its own: a store in its memory would start empty and be
        # gone when the command ends (init and import would report what they kept, and keep nothing)
        source = "--store" if getattr(args, "store", None) is not None else f"${ENV_STORE}"
        raise CliError(
            f"{source} {given} names a store in memory, which lasts as long as one process, and each "
            f"{PROG} command is one: name a store directory (./{given} for a folder of that name) or a "
            "postgresql:// URL"
        )
    return given or DEFAULT_STORE


def shown_store(path: str) -> str:
    """A store's path or URL as messages print it: a PostgreSQL URL without its password."""
    if path.startswith(("postgresql://", "postgres://")):
        from ..backends._postgres_sql import redact_url  # no driver import: the URL's text alone

        return redact_url(path)
    return path


#: why a store could not be opened, said as it is instead of "run init" (which would fail the same way):
#: the last three are a directory store's file or folder refused (its format file a folder or a link)
_REPORTED_REASONS = (
    "foreign table",
    "no schema",
    "unsupported URL scheme",
    "not a folder",
    "not a regular file",
    "symbolic link",
    "another device",
)


def open_existing(path: str) -> SnapshotStore | None:
    """The store at ``path``, or None when nothing is there (a real I/O or connection failure raises)."""
    from ..store import SnapshotStore

    try:
        return SnapshotStore.open(path, create=False)
    except (BackendError, SnapshotNotFound) as exc:
        # a driver error, or a database where init would fail too (a table of that name that is not
        # snapstore's, no schema to make one in): that is the error to report, not "run init"
        if "cause" in exc.details or exc.details.get("reason") in _REPORTED_REASONS:
            raise
        return None


def open_store(args: argparse.Namespace) -> SnapshotStore:
    """Open an existing store; a missing one is a clear error (``init`` and ``import`` create stores)."""
    path = store_path(args)
    store = open_existing(path)
    if store is None:
        raise CliError(f"no snapstore store at {shown_store(path)} (run {PROG} init)")
    return store


#: how snapstore.langgraph names a thread's two sessions (checkpoints, pending writes); spelled here
#: because importing the saver's module would import LangGraph, an optional extra
_LANGGRAPH_PREFIXES = ("langgraph:", "langgraph-writes:")


def warn_if_half_a_thread(name: str, doing: str) -> None:
    """Say on stderr that ``doing`` (forgetting snapshots of, deleting) one of a LangGraph thread's
    two sessions leaves the thread unreadable by the saver (its checkpoints name snapshots of
    both): the saver's own ``delete_thread``, ``prune`` and ``delete_for_runs`` change both."""
    if name.startswith(_LANGGRAPH_PREFIXES):
        say(
            f"{PROG}: warning: {name} is one of a LangGraph thread's two sessions (langgraph: and "
            f"langgraph-writes:); {doing} one alone leaves the thread unreadable by SnapstoreSaver, whose "
            "delete_thread, prune and delete_for_runs change both",
            sys.stderr,
        )


def warn_if_a_thread_renamed(old: str, new: str) -> None:
    """Say on stderr that a LangGraph thread's session imported under another name is not the thread:
    its snapshots got new ids, which the thread's checkpoints cannot follow."""
    if old.startswith(_LANGGRAPH_PREFIXES):
        say(
            f"{PROG}: warning: {old} (imported as {new}) is a LangGraph thread's session; renamed, its snapshots "
            "have new ids that the thread's checkpoints cannot follow, and SnapstoreSaver refuses to read it: "
            "import a thread with --on-conflict merge or replace",
            sys.stderr,
        )


#: a store with more sessions than this is not listed whole in an error: its closest names are
SESSIONS_LISTED = 10


def sessions_hint(name: str, known: list[str]) -> str:
    """The store's sessions, for an error about a session ``name`` it does not have: every one in a
    small store; in a large one (a LangGraph store holds two a thread and namespace: hundreds) the
    few names closest to it, and where to find the rest, instead of one line of kilobytes."""
    if not known:
        return "the store has no sessions"
    if len(known) <= SESSIONS_LISTED:
        return f"sessions: {', '.join(known)}"
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    shown = f"the closest: {', '.join(close)}" if close else "none close to that name"
    return f"the store has {len(known)} sessions, {shown}; `{PROG} sessions` lists them"


def existing_session(store: SnapshotStore, name: str) -> Session:
    """An existing session (``store.session`` would create a missing one)."""
    if not store.has_session(name):
        raise CliError(f"session {name!r} does not exist ({sessions_hint(name, store.sessions())})")
    return store.session(name)


SNAPSHOT_FIELDS = ("id", "session", "parent", "label", "turn", "kind", "size", "state_hash")


def snapshot_json(snapshot: Any) -> dict[str, Any]:
    """A snapshot as the JSON outputs print it: its public fields, the time in ISO 8601 UTC."""
    result = {name: getattr(snapshot, name) for name in SNAPSHOT_FIELDS}
    result["timestamp"] = snapshot.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    tags = getattr(snapshot, "tags", None)
    if tags is not None:
        result["tags"] = list(tags)
    return result


#: what a JSON value that holds no members is called where a pointer goes through it
_JSON_KINDS = {int: "a number", float: "a number", str: "a string"}


def pointer_get(value: Any, pointer: str, where: str) -> Any:
    """The part of ``value`` a JSON Pointer names."""
    from ..delta import format_pointer, parse_pointer

    node = value
    tokens = parse_pointer(pointer)
    for depth, token in enumerate(tokens):
        reached = format_pointer(tokens[:depth])
        if isinstance(node, dict):
            if token not in node:
                raise CliError(f"{pointer} not found in {where}: no member {token!r} at {reached or '/'}")
            node = node[token]
        elif isinstance(node, list):
            if not re.fullmatch(r"0|[1-9][0-9]*", token):
                raise CliError(f"{pointer} not found in {where}: {token!r} is not an array index at {reached or '/'}")
            if int(token) >= len(node):
                raise CliError(
                    f"{pointer} not found in {where}: index {token} is past the end of the {len(node)}-item"
                    f" array at {reached or '/'}"
                )
            node = node[int(token)]
        else:
            kind = "null" if node is None else "a boolean" if isinstance(node, bool) else _JSON_KINDS.get(type(node))
            raise CliError(f"{pointer} not found in {where}: {reached or '/'} is {kind}, not an object or array")
    return node


_LONG_DIGITS = re.compile(rb"[0-9]{19,}")


class _OutOfRange:
    """An integer the check found outside 64 bits, kept as written to name it and its place."""

    def __init__(self, text: str) -> None:
        self.text = text


class _RepeatedKey(dict[str, Any]):
    """An object in which ``key`` was written more than once."""

    key = ""


def load_json(data: bytes, source: str) -> Any:
    """The JSON document in ``data``; refused when orjson would read it other than as written.

    orjson reads integers beyond 64 bits as lossy floats, and keeps the last of repeated keys,
    both silently. A second reading with the standard library finds either, and where it is, so
    that the error names the JSON Pointer of the value (and the file).
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):  # JSON, but deeper than a state may nest
            raise CliError(
                f"{source} nests too deeply for a state (a state nests at most 252 levels; orjson stops "
                f"reading at 1024): {exc}"
            ) from None
        raise CliError(f"{source} is not valid JSON: {_why_not_json(data, exc)}") from None
    found = False

    def check_int(text: str) -> Any:
        nonlocal found
        number = int(text) if len(text) <= 21 else None  # longer ones are out of range (and slow to convert)
        if number is not None and -(2**63) <= number < 2**64:
            return number
        found = True
        return _OutOfRange(text)

    def check_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        found = True
        repeated = _RepeatedKey(obj)
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                repeated.key = key
                break
            seen.add(key)
        return repeated

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * 1024))  # orjson reads 1024 levels; the standard library recurses
    try:
        # integers of 19+ digits are rare: only then is each integer looked at (a call per integer costs)
        numbers: dict[str, Any] = {"parse_int": check_int} if _LONG_DIGITS.search(data) else {}
        checked = json.loads(data, object_pairs_hook=check_pairs, **numbers)
    finally:
        sys.setrecursionlimit(limit)
    if found:
        raise CliError(_first_refusal(checked, source))
    return value


def _why_not_json(data: bytes, exc: orjson.JSONDecodeError) -> str:
    """orjson's reason, or a plainer one where it names what JSON cannot hold in terms of its own
    parser: bytes that are not UTF-8, and the NaN and Infinity some JSON writers put out."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"it is not UTF-8 text (byte 0x{data[bad.start]:02x} at offset {bad.start})"
    doc, at = (exc.doc, exc.pos) if isinstance(exc.doc, str) else ("", 0)
    for word in ("NaN", "Infinity"):
        if doc.startswith(word, at):
            minus = at > 0 and doc[at - 1] == "-"  # orjson stops past the sign
            return (
                f"{'-' * minus}{word} at line {exc.lineno} column {exc.colno - minus}: NaN and Infinity are not "
                "JSON numbers"
            )
    return str(exc)


def _first_refusal(checked: Any, source: str) -> str:
    """What the check found first, in document order, with its JSON Pointer."""
    from ..delta import format_pointer

    stack: list[tuple[Any, list[str]]] = [(checked, [])]
    while stack:
        node, tokens = stack.pop()
        where = f"{source} at {format_pointer(tokens)}" if tokens else source
        if isinstance(node, _OutOfRange):
            return f"{where}: integer {node.text} is outside the 64-bit range a state may hold (-2^63 … 2^64-1)"
        if isinstance(node, _RepeatedKey):
            return (
                f"{where}: key {node.key!r} appears more than once in {'this' if tokens else 'the top-level'} "
                "object; a state's keys are unique, so the input is refused rather than one value kept"
            )
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        stack.extend((child, [*tokens, str(key)]) for key, child in reversed(list(children)))
    raise AssertionError("the check found a refusal that is not in the document")


def refuse_to_overwrite(path: str, force: bool) -> None:
    """Refuse a path a file cannot be written to as asked: one naming a folder, an existing file
    without ``force``, and anything but a regular file (or a link) even with it: a file is written
    beside the target and renamed over it, which would replace a FIFO or ``/dev/null`` itself."""
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise CliError(f"{path} names a folder; give the path of a file to write")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise CliError(f"{path} is not a regular file (a device, a FIFO or a socket); snapstore writes only files")
    if not force:
        raise CliError(f"{path} already exists; add --force to overwrite it")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_file(path: str, data: bytes, *, force: bool) -> None:
    """Write ``data`` to ``path`` whole or not at all; an existing file is replaced only with ``force``."""
    refuse_to_overwrite(path, force)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=".snapstore-", suffix=".tmp")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            os.fchmod(out.fileno(), 0o666 & ~_umask())  # as open() would make it, not mkstemp's 0600
        if force:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)  # fails if the file appeared meanwhile: never replaced silently
    except FileExistsError:
        raise CliError(f"{path} already exists; add --force to overwrite it") from None
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        Path(temporary).unlink(missing_ok=True)
