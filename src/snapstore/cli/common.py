"""What the commands share: finding the store, sessions and snapshots, reading JSON input, writing output files.

The library is imported inside the functions that use it, so that ``snapstore --help``
and usage errors do not pay for loading the storage engine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import AmbiguousSnapshotId, BackendError, SnapshotError, SnapshotNotFound
from .base import DEFAULT_STORE, ENV_STORE, PROG, CliError

if TYPE_CHECKING:
    from ..session import Session
    from ..store import SnapshotStore

def store_path(args: argparse.Namespace) -> str:
    """``--store``, else ``$SNAPSTORE_PATH``, else ``./.snapstore``."""
    return getattr(args, "store", None) or os.environ.get(ENV_STORE) or DEFAULT_STORE


def open_existing(path: str) -> SnapshotStore | None:
    """The store at ``path``, or None when nothing is there (a real I/O or connection failure raises)."""
    from ..store import SnapshotStore

    try:
        return SnapshotStore.open(path, create=False)
    except (BackendError, SnapshotNotFound) as exc:
        if "cause" in exc.details:
            raise
        return None


def open_store(args: argparse.Namespace) -> SnapshotStore:
    """Open an existing store; a missing one is a clear error (``init`` and ``import`` create stores)."""
    path = store_path(args)
    store = open_existing(path)
    if store is None:
        raise CliError(f"no snapstore store at {path} (run {PROG} init)")
    return store


def existing_session(store: SnapshotStore, name: str) -> Session:
    """An existing session (``store.session`` would create a missing one)."""
    if not store.has_session(name):
        known = store.sessions()
        hint = f" (sessions: {', '.join(known)})" if known else " (the store has no sessions)"
        raise CliError(f"session {name!r} does not exist{hint}")
    return store.session(name)


def resolve(store: SnapshotStore, snapshot_id: str) -> tuple[Session, str]:
    """The session and full id of a retained snapshot, from an id or a unique 8+ character prefix."""
    try:
        return store.find(snapshot_id)
    except AmbiguousSnapshotId as exc:
        raise CliError(ambiguous(exc), describe_candidates(store, exc)) from None


def ambiguous(exc: AmbiguousSnapshotId) -> str:
    where = exc.details.get("where", "the store")
    return f"snapshot prefix {exc.details.get('snapshot')} is ambiguous in {where}; candidates:"


def describe_candidates(store: SnapshotStore | None, exc: AmbiguousSnapshotId) -> list[str]:
    lines = []
    for candidate in exc.details.get("candidates", []):
        line = f"  {candidate}"
        if store is not None:
            try:
                sess, sid = store.find(candidate)
                snap = sess.snapshot(sid)
                line += f"  {sess.name}  turn {snap.turn}  {snap.label!r}"
            except SnapshotError:
                pass
        lines.append(line)
    return lines


SNAPSHOT_FIELDS = ("id", "session", "parent", "label", "turn", "kind", "size", "state_hash")


def snapshot_json(snapshot: Any) -> dict[str, Any]:
    """A snapshot as the JSON outputs print it: its public fields, the time in ISO 8601 UTC."""
    result = {name: getattr(snapshot, name) for name in SNAPSHOT_FIELDS}
    result["timestamp"] = snapshot.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    tags = getattr(snapshot, "tags", None)
    if tags is not None:
        result["tags"] = list(tags)
    return result


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
            kind = type(node).__name__
            raise CliError(f"{pointer} not found in {where}: {reached or '/'} is a {kind}, not a container")
    return node


_LONG_DIGITS = re.compile(rb"[0-9]{19,}")


def load_json(data: bytes, source: str) -> Any:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CliError(f"{source} is not valid JSON: {exc}") from None
    if _LONG_DIGITS.search(data):
        # orjson silently reads integers beyond 64 bits as floats; refuse them instead of losing digits
        def check_int(text: str) -> int:
            number = int(text)
            if not -(2**63) <= number < 2**64:
                raise CliError(f"{source}: integer {text} is outside the 64-bit range a state may hold")
            return number

        json.loads(data, parse_int=check_int)
    return value


def refuse_to_overwrite(path: str, force: bool) -> None:
    if not force and os.path.lexists(path):
        raise CliError(f"{path} already exists; add --force to overwrite it")


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
