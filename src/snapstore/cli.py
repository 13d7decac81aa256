"""The ``snapstore`` command line (also ``python -m snapstore``).

A thin layer over the public library API: it parses arguments, calls
``SnapshotStore`` and ``Session`` methods and prints what they return. It
holds no storage logic of its own. See docs/cli.md for every command.

Exit codes: 0 success; 1 an error (one ``snapstore: error: ...`` line on
stderr) or problems found by ``verify``; 2 a usage error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
import time
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any, TextIO

import orjson

from . import __version__
from .archive import ExportReport, ImportReport
from .delta import diff as json_diff
from .delta import format_pointer, parse_pointer
from .errors import AmbiguousSnapshotId, BackendError, SnapshotError, SnapshotNotFound
from .session import Session
from .store import SnapshotStore

ENV_STORE = "SNAPSTORE_PATH"
DEFAULT_STORE = ".snapstore"

EXIT_OK = 0
EXIT_ERROR = 1  # an error, or problems found by verify
EXIT_USAGE = 2  # bad arguments (argparse's own code)
EXIT_INTERRUPTED = 130

PROG = "snapstore"


class CliError(Exception):
    """An error to report as one line (plus optional detail lines) and exit 1."""

    def __init__(self, message: str, extra: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.extra = list(extra)


# ---------------------------------------------------------------- output helpers


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _use_color(stream: Any) -> bool:
    return _isatty(stream) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _write_bytes(data: bytes) -> None:
    """Write raw bytes to stdout (JSON is always UTF-8, whatever the locale says)."""
    out = sys.stdout
    out.flush()
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        buffer.write(data)
        buffer.flush()
    else:  # a text-only stream (tests capturing output)
        out.write(data.decode("utf-8"))


def _json_line(value: Any) -> None:
    _write_bytes(orjson.dumps(value, option=orjson.OPT_SORT_KEYS) + b"\n")


def _compact(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode("utf-8")


def _human(size: int | None) -> str:
    if size is None:
        return "?"
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{size} B"  # pragma: no cover


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _when(snapshot: Any) -> str:
    return snapshot.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _table(rows: list[list[str]], right: Collection[int] = ()) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


class Progress:
    """Progress on stderr when stderr is a terminal; silent when it is piped or redirected.

    Call it as the library's ``progress(done, total, what)`` callback, or use
    ``status(text)`` for an operation that reports no steps.
    """

    def __init__(self, stream: TextIO | None = None, *, interval: float = 0.1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream)
        self.interval = interval
        self._last = 0.0
        self._shown = False

    def __call__(self, done: int, total: int | None, what: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if total and done < total and now - self._last < self.interval:
            return
        self._last = now
        if total:
            self._show(f"{what}: {done}/{total} ({100 * done // total}%)")
        else:
            self._show(f"{what}: {done}")

    def status(self, text: str) -> None:
        if self.enabled:
            self._show(text + "…")

    def _show(self, text: str) -> None:
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()


# ---------------------------------------------------------------- store and ids


def store_path(args: argparse.Namespace) -> str:
    """``--store``, else ``$SNAPSTORE_PATH``, else ``./.snapstore``."""
    return getattr(args, "store", None) or os.environ.get(ENV_STORE) or DEFAULT_STORE


def open_store(args: argparse.Namespace) -> SnapshotStore:
    """Open an existing store; a missing one is a clear error (only ``init`` creates stores)."""
    path = store_path(args)
    try:
        return SnapshotStore.open(path, create=False)
    except (BackendError, SnapshotNotFound) as exc:
        if "cause" in exc.details:  # a real I/O or connection failure, not a missing store
            raise
        raise CliError(f"no snapstore store at {path} (run {PROG} init)") from None


def _session(store: SnapshotStore, name: str) -> Session:
    """An existing session (``store.session`` would create a missing one)."""
    if not store.has_session(name):
        known = store.sessions()
        hint = f" (sessions: {', '.join(known)})" if known else " (the store has no sessions)"
        raise CliError(f"session {name!r} does not exist{hint}")
    return store.session(name)


def _resolve(store: SnapshotStore, snapshot_id: str) -> tuple[Session, str]:
    """The session and full id of a retained snapshot, from an id or a unique 8+ character prefix."""
    try:
        return store.find(snapshot_id)
    except AmbiguousSnapshotId as exc:
        raise CliError(_ambiguous(exc), _describe_candidates(store, exc)) from None


def _ambiguous(exc: AmbiguousSnapshotId) -> str:
    where = exc.details.get("where", "the store")
    return f"snapshot prefix {exc.details.get('snapshot')} is ambiguous in {where}; candidates:"


def _describe_candidates(store: SnapshotStore | None, exc: AmbiguousSnapshotId) -> list[str]:
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


def _stored_size(store: SnapshotStore, snapshot_id: str) -> int | None:
    """Bytes one snapshot added to the store: its record and its delta (or full state) object."""
    try:
        record = store.objects.record(snapshot_id)
        return sum(store.backend.size(key) for key in (snapshot_id, record.delta or record.state))
    except SnapshotError:
        return None


def _pointer_get(value: Any, pointer: str, where: str) -> Any:
    """The part of ``value`` a JSON Pointer names."""
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


def _load_json(data: bytes, source: str) -> Any:
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


# ---------------------------------------------------------------- commands


def cmd_init(args: argparse.Namespace) -> int:
    path = store_path(args)
    try:
        SnapshotStore.open(path, create=False).close()
        print(f"snapstore store already exists at {path}")
    except (BackendError, SnapshotNotFound) as exc:
        if "cause" in exc.details:
            raise
        SnapshotStore.open(path).close()
        print(f"initialized empty snapstore store at {path}")
    return EXIT_OK


def cmd_sessions(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        rows: list[dict[str, Any]] = []
        for name in store.sessions():
            sess = store.session(name)
            head = sess.head
            rows.append(
                {
                    "name": name,
                    "snapshots": len(sess),
                    "max_snapshots": sess.max_snapshots,
                    "head": head.id if head else None,
                    "bytes": store.session_usage(name),
                }
            )
    if args.json:
        _json_line(rows)
    elif not rows:
        print(f"no sessions (make one with: {PROG} commit SESSION FILE.json)")
    else:
        table = [["SESSION", "SNAPSHOTS", "LIMIT", "HEAD", "STORED"]]
        for row in rows:
            head_id = row["head"][:12] if row["head"] else "-"
            table.append(
                [row["name"], str(row["snapshots"]), str(row["max_snapshots"]), head_id, _human(row["bytes"])]
            )
        print("\n".join(_table(table, right={1, 2, 4})))
    return EXIT_OK


def cmd_log(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        names = [_session(store, args.session).name] if args.session else store.sessions()
        groups = []
        for name in names:
            sess = store.session(name)
            head = sess.head
            snaps = sess.snapshots()
            if args.reverse:
                snaps.reverse()
            entries = []
            for snap in snaps:
                entry = snap.model_dump(mode="json")
                entry["stored_size"] = _stored_size(store, snap.id)
                entry["head"] = head is not None and snap.id == head.id
                entries.append((snap, entry))
            groups.append((name, head, entries))
    if args.json:
        _json_line([entry for _name, _head, entries in groups for _snap, entry in entries])
        return EXIT_OK
    if not groups:
        print("no sessions")
        return EXIT_OK
    blocks = []
    for name, head, entries in groups:
        lines = [f"session {name}: {_count(len(entries), 'snapshot')}, head {head.id[:12] if head else '-'}"]
        if entries:
            table = [["", "ID", "KIND", "TURN", "TIME", "STORED", "LABEL"]]
            for snap, entry in entries:
                table.append(
                    [
                        "*" if entry["head"] else "",
                        snap.id[:12],
                        snap.kind,
                        "-" if snap.turn is None else str(snap.turn),
                        _when(snap),
                        _human(entry["stored_size"]),
                        snap.label,
                    ]
                )
            lines += _table(table, right={3, 5})
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        sess, sid = _resolve(store, args.id)
        value = sess.state(sid)
    if args.pointer is not None:
        value = _pointer_get(value, args.pointer, f"snapshot {sid[:12]}")
    option = orjson.OPT_SORT_KEYS if args.compact else orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2
    _write_bytes(orjson.dumps(value, option=option) + b"\n")
    return EXIT_OK


_RED, _GREEN, _YELLOW, _BOLD, _RESET = "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[1m", "\x1b[0m"


def format_diff(ops: list[dict[str, Any]], old: Any, *, color: bool) -> list[str]:
    """Readable lines for an RFC 6902 patch applied to ``old``: ``+`` added, ``-`` removed, ``~`` replaced."""

    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if color else text

    def old_value(path: str) -> str:
        try:
            return _compact(_pointer_get(old, path, "old state"))
        except (CliError, SnapshotError):
            return "?"

    lines = []
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        shown = path or "(whole state)"
        if kind == "add":
            lines.append(paint(f"+ {shown}: {_compact(op.get('value'))}", _GREEN))
        elif kind == "remove":
            lines.append(paint(f"- {shown}: {old_value(path)}", _RED))
        elif kind == "replace":
            before, after = paint(old_value(path), _RED), paint(_compact(op.get("value")), _GREEN)
            lines.append(f"{paint('~', _YELLOW)} {shown}: {before} → {after}")
        else:  # move, copy, test: not written by snapstore's diff, shown as they are
            lines.append(f"{kind} {_compact(op)}")
    return lines


def cmd_diff(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        sess_b, b = _resolve(store, args.a if args.b is None else args.b)
        if args.b is None:
            parent = sess_b.snapshot(b).parent
            if parent is None:
                raise CliError(f"snapshot {b[:12]} has no parent (it starts its chain); give two ids to compare")
            if parent not in sess_b.snapshot_ids():
                raise CliError(
                    f"the parent {parent[:12]} of snapshot {b[:12]} is no longer retained; give two ids to compare"
                )
            sess_a, a = sess_b, parent
        else:
            sess_a, a = _resolve(store, args.a)
        old, new = sess_a.state(a), sess_b.state(b)
        snap_a, snap_b = sess_a.snapshot(a), sess_b.snapshot(b)
    ops = json_diff(old, new)
    if args.json:
        _json_line(ops)
        return EXIT_OK
    color = _use_color(sys.stdout)

    def header(mark: str, snap: Any) -> str:
        turn = "" if snap.turn is None else f"  turn {snap.turn}"
        text = f"{mark} {snap.id[:12]}  {snap.session}{turn}  {snap.label!r}"
        return f"{_BOLD}{text}{_RESET}" if color else text

    lines = [header("---", snap_a), header("+++", snap_b)]
    lines += format_diff(ops, old, color=color) if ops else ["(no differences)"]
    print("\n".join(lines))
    return EXIT_OK


def cmd_commit(args: argparse.Namespace) -> int:
    if args.file == "-":
        data, source = sys.stdin.buffer.read(), "standard input"
    else:
        try:
            data, source = Path(args.file).read_bytes(), args.file
        except OSError as exc:
            raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    state = _load_json(data, source)
    with open_store(args) as store:
        sess = store.session(args.session, max_snapshots=args.max_snapshots)
        extra: dict[str, Any] = {} if args.label is None else {"label": args.label}
        snap = sess.commit(state, turn=args.turn, **extra)
    print(snap.id)
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        sess, sid = _resolve(store, args.id)
        state = sess.state(sid)
    data = orjson.dumps(state, option=orjson.OPT_SORT_KEYS)  # canonical JSON: hashes to the snapshot's state hash
    if args.output is None or args.output == "-":
        _write_bytes(data + b"\n")
        return EXIT_OK
    try:
        Path(args.output).write_bytes(data)
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"wrote the state of {sid[:12]} ({sess.name}) to {args.output} ({len(data)} bytes)")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        sess = _session(store, args.session)
        sess.rollback(args.id)
        head = sess.head
    assert head is not None
    turn = "" if head.turn is None else f", turn {head.turn}"
    print(f"{sess.name}: head is now {head.id[:12]} ({head.label!r}{turn}); the next commit continues from it")
    return EXIT_OK


def _export_summary(report: ExportReport, path: str) -> str:
    text = f"exported {_count(len(report.sessions), 'session')}"
    if report.sessions:
        text += f" ({', '.join(report.sessions)})"
    text += f", {_count(report.snapshots, 'snapshot')}, {_count(report.objects, 'object')}"
    return text + f" to {path} ({_human(report.archive_bytes)})"


def _import_summary(report: ImportReport, path: str) -> str:
    parts = []
    for names, verb in (
        (report.created, "created"),
        (report.merged, "merged into"),
        (report.replaced, "replaced"),
        (report.unchanged, "already up to date"),
    ):
        if names:
            parts.append(f"{verb} {', '.join(names)}")
    if report.renamed:
        parts.append("renamed " + ", ".join(f"{old} to {new}" for old, new in report.renamed.items()))
    written = f"{_count(report.objects_written, 'object')} written"
    if report.objects_present:
        written += f", {report.objects_present} already present"
    parts.append(written)
    return f"imported {path}: " + "; ".join(parts)


def cmd_export(args: argparse.Namespace) -> int:
    with open_store(args) as store, Progress() as progress:
        report = store.export(
            args.file, sessions=args.session or None, snapshots=args.snapshot or None, progress=progress
        )
    print(_export_summary(report, args.file))
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    with open_store(args) as store, Progress() as progress:
        report = store.import_archive(args.file, progress=progress, on_conflict=args.on_conflict)
    print(_import_summary(report, args.file))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    with open_store(args) as store, Progress() as progress:
        progress.status(f"verifying {store.describe()}" + (" (reading every object)" if args.read_data else ""))
        report = store.verify(read_data=args.read_data)
    if args.json:
        _json_line(
            {
                "ok": report.ok,
                "read_data": args.read_data,
                "sessions_checked": report.sessions_checked,
                "snapshots_checked": report.snapshots_checked,
                "objects_checked": report.objects_checked,
                "states_rebuilt": report.states_rebuilt,
                "problems": [vars(p) for p in report.problems],
            }
        )
        return EXIT_OK if report.ok else EXIT_ERROR
    checked = f"checked {_count(report.sessions_checked, 'session')}, {_count(report.snapshots_checked, 'snapshot')}"
    if args.read_data:
        checked += f", {_count(report.objects_checked, 'object')}; rebuilt {_count(report.states_rebuilt, 'state')}"
    else:
        checked += " (structure only; --read-data also reads every object and rebuilds every state)"
    print(checked)
    if report.ok:
        print("ok: no problems found")
        return EXIT_OK
    print(f"{_count(len(report.problems), 'problem')} found:")
    for problem in report.problems:
        where = [f"session {problem.session}"] if problem.session else []
        if problem.snapshot:
            where.append(f"snapshot {problem.snapshot[:12]}")
        print(f"  - {problem.message}" + (f" [{', '.join(where)}]" if where else ""))
    return EXIT_ERROR


def cmd_gc(args: argparse.Namespace) -> int:
    with open_store(args) as store, Progress() as progress:
        progress.status(f"collecting unreferenced objects in {store.describe()}")
        report = store.gc()
    if args.json:
        _json_line(vars(report))
    else:
        print(
            f"deleted {_count(report.objects_deleted, 'unreferenced object')} ({_human(report.bytes_freed)}),"
            f" removed {_count(report.temporary_files_removed, 'leftover temporary file')}"
        )
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    with open_store(args) as store, Progress() as progress:
        progress.status(f"reading {store.describe()}")
        stats = store.stats()
    if args.json:
        _json_line(stats)
        return EXIT_OK
    by_kind = ", ".join(f"{kind} {count}" for kind, count in stats["objects_by_kind"].items())
    ratio = stats["compression_ratio"]
    rows = [
        ["sessions", str(stats["sessions"])],
        ["snapshots", str(stats["snapshots"])],
        ["keyframes", str(stats["keyframes"])],
        ["longest chain", _count(stats["longest_chain"], "delta")],
        ["objects", f"{stats['objects']} ({by_kind})"],
        ["stored", f"{_human(stats['stored_bytes'])} ({stats['stored_bytes']} bytes)"],
        ["uncompressed", f"{_human(stats['raw_bytes'])} ({stats['raw_bytes']} bytes)"],
        ["compression ratio", "-" if ratio is None else f"{ratio}x"],
    ]
    print("\n".join(_table(rows)))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main([args.dir] if args.dir else [])


# ---------------------------------------------------------------- parser

_COMMANDS: list[tuple[str, Callable[[argparse.Namespace], int], str, str, str]] = [
    # name, handler, one-line help, description, example(s)
    (
        "init",
        cmd_init,
        "create an empty store",
        "Create an empty store at the store path (nothing happens if one is already there). "
        "Every other command needs an existing store.",
        "snapstore --store ./saves init",
    ),
    (
        "sessions",
        cmd_sessions,
        "list sessions with snapshot counts, head and bytes stored",
        "List every session: retained snapshots, retention limit, head snapshot and the stored bytes of "
        "everything the session keeps (its records, deltas and full states; objects shared by content "
        "with another session count in each).",
        "snapstore sessions\n  snapstore sessions --json",
    ),
    (
        "log",
        cmd_log,
        "list a session's snapshots",
        "List retained snapshots oldest first (newest first with --reverse): id prefix, kind (full or "
        "delta), turn, UTC time, stored bytes (the snapshot's record plus its delta or full state) and label; "
        "'*' marks the head. Without SESSION every session is listed, one block each.",
        "snapstore log campaign-42 --reverse\n  snapstore log --json",
    ),
    (
        "show",
        cmd_show,
        "print the state at a snapshot, or one part of it",
        "Print the state a snapshot holds as JSON (indented, keys sorted; --compact for one canonical line). "
        "--pointer selects one part with a JSON Pointer (RFC 6901). ID is a full id or a unique prefix of 8+ "
        "hex digits, from any session.",
        "snapstore show 3f2a9c01 --pointer /party/Zoë/hp",
    ),
    (
        "diff",
        cmd_diff,
        "show what changed between two snapshots",
        "Show the changes from snapshot A to snapshot B (from A's parent to A when B is omitted): "
        "'+ path: value' added, '- path: old' removed, '~ path: old → new' replaced, colored when stdout is a "
        "terminal (set NO_COLOR to turn colors off). --json prints the RFC 6902 JSON Patch instead. "
        "A and B may belong to different sessions.",
        "snapstore diff 3f2a9c01 7b11e0d4\n  snapstore diff 7b11e0d4 --json",
    ),
    (
        "commit",
        cmd_commit,
        "snapshot a JSON file as a session's new head",
        "Snapshot the JSON document in FILE ('-' reads standard input) as SESSION's new head, creating the "
        "session if needed, and print the new snapshot's id.",
        "snapstore commit campaign-42 state.json --label 'turn 3' --turn 3\n"
        "  curl -s http://localhost:8000/state | snapstore commit campaign-42 -",
    ),
    (
        "restore",
        cmd_restore,
        "write the state at a snapshot to a file or stdout",
        "Write a snapshot's state as canonical JSON (keys sorted, no whitespace; its xxh3-128 is the "
        "snapshot's state hash) to FILE, or to stdout followed by a newline. The session is not changed: "
        "see rollback.",
        "snapstore restore 3f2a9c01 -o state.json",
    ),
    (
        "rollback",
        cmd_rollback,
        "move a session's head back to an earlier snapshot",
        "Make snapshot ID the head of SESSION: the next commit's parent. Later snapshots stay listed "
        "until retention evicts them.",
        "snapstore rollback campaign-42 3f2a9c01",
    ),
    (
        "export",
        cmd_export,
        "write sessions to an archive file",
        "Write every session (or the ones named with --session, or the snapshots named with --snapshot and "
        "the chains they need) to a compact archive file that import reads into any store. Shows progress on "
        "stderr when it is a terminal.",
        "snapstore export backup.snaparchive --session campaign-42",
    ),
    (
        "import",
        cmd_import,
        "read an archive file into the store",
        "Read sessions from an archive file written by export into this store. Everything is checked "
        "before anything is written; a session that exists with other snapshots is refused unless "
        "--on-conflict says otherwise. Shows progress on stderr when it is a terminal.",
        "snapstore --store ./other import backup.snaparchive",
    ),
    (
        "verify",
        cmd_verify,
        "check the store for damage; exit 1 if anything is wrong",
        "Check every session document, snapshot record and chain (every object the chains need must exist). "
        "With --read-data also read every object, check its hash, and rebuild every retained state. "
        "Exits 1 and lists the problems when anything is wrong.",
        "snapstore verify --read-data",
    ),
    (
        "gc",
        cmd_gc,
        "delete objects no session needs",
        "Delete every object that no session needs (left by deleted sessions or interrupted writes) and "
        "leftover temporary files.",
        "snapstore gc",
    ),
    (
        "stats",
        cmd_stats,
        "print object counts, bytes, compression ratio and chain lengths",
        "Print objects by kind, stored and uncompressed bytes, the compression ratio, the number of "
        "keyframes (full states) and the longest delta chain among retained snapshots.",
        "snapstore stats --json",
    ),
    (
        "demo",
        cmd_demo,
        "run a short guided tour in a scratch store",
        "Commit a few turns of a game session, diff them and roll back, in DIR (default: a fresh temporary "
        "folder). Ignores --store.",
        "snapstore demo /tmp/tour",
    ),
]


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--store",
        metavar="PATH",
        default=default,
        help=f"the store: a directory or postgresql:// URL (default: ${ENV_STORE}, else ./{DEFAULT_STORE})",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show a traceback for errors",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Content-addressed, delta-compressed snapshots of JSON session state.",
        epilog=(
            "example:\n  snapstore init\n  snapstore commit campaign-42 state.json --turn 1\n  snapstore log\n\n"
            "exit codes: 0 ok, 1 error or problems found by verify, 2 usage error.\n"
            "Run 'snapstore COMMAND --help' for a command's options."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers: dict[str, argparse.ArgumentParser] = {}
    for name, handler, summary, description, example in _COMMANDS:
        sub = commands.add_parser(
            name,
            help=summary,
            description=textwrap.fill(description, 88),
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _global_options(sub, suppress=True)
        sub.set_defaults(handler=handler)
        subparsers[name] = sub

    subparsers["sessions"].add_argument("--json", action="store_true", help="print JSON")

    log = subparsers["log"]
    log.add_argument("session", nargs="?", metavar="SESSION", help="the session (default: every session)")
    log.add_argument("--reverse", action="store_true", help="newest first")
    log.add_argument("--json", action="store_true", help="print a JSON array of snapshots")

    show = subparsers["show"]
    show.add_argument("id", metavar="ID", help="snapshot id or unique prefix (8+ hex digits)")
    show.add_argument("--pointer", metavar="POINTER", help="a JSON Pointer such as /party/0/hp")
    show.add_argument("--compact", action="store_true", help="one line of canonical JSON")

    diff = subparsers["diff"]
    diff.add_argument("a", metavar="A", help="the older snapshot (or the only one: compared with its parent)")
    diff.add_argument("b", metavar="B", nargs="?", help="the newer snapshot")
    diff.add_argument("--json", action="store_true", help="print the RFC 6902 JSON Patch")

    commit = subparsers["commit"]
    commit.add_argument("session", metavar="SESSION")
    commit.add_argument("file", metavar="FILE", help="a JSON file, or - for standard input")
    commit.add_argument("--label", help="free text stored with the snapshot (default: 'auto')")
    commit.add_argument("--turn", type=int, metavar="N", help="the turn number to record")
    commit.add_argument("--max-snapshots", type=int, metavar="N", help="set the session's retention limit")

    restore = subparsers["restore"]
    restore.add_argument("id", metavar="ID")
    restore.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")

    rollback = subparsers["rollback"]
    rollback.add_argument("session", metavar="SESSION")
    rollback.add_argument("id", metavar="ID", help="a snapshot retained by SESSION")

    export = subparsers["export"]
    export.add_argument("file", metavar="FILE")
    export.add_argument(
        "--session", action="append", metavar="S", help="export only this session (repeat for several)"
    )
    export.add_argument(
        "--snapshot",
        action="append",
        metavar="ID",
        help="export only this snapshot with the chain it needs (repeat for several)",
    )

    import_ = subparsers["import"]
    import_.add_argument("file", metavar="FILE")
    import_.add_argument(
        "--on-conflict",
        choices=["error", "merge", "replace", "rename"],
        default="error",
        help="when a session of the archive exists with other snapshots: refuse the import (error, the default), "
        "append the archive's snapshots (merge), take the archive's version (replace), "
        "or import it as NAME-imported (rename)",
    )

    verify = subparsers["verify"]
    verify.add_argument("--read-data", action="store_true", help="read and hash every object, rebuild every state")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")

    subparsers["gc"].add_argument("--json", action="store_true", help="print the report as JSON")
    subparsers["stats"].add_argument("--json", action="store_true", help="print JSON")
    subparsers["demo"].add_argument("dir", nargs="?", metavar="DIR", help="where to create the demo store")
    return parser


# ---------------------------------------------------------------- entry point


def _error(message: str, extra: Iterable[str] = ()) -> None:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    for line in extra:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        if args.debug:
            raise
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (snapstore log | head): stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_ERROR
    except CliError as exc:
        if args.debug:
            raise
        _error(exc.message, exc.extra)
        return EXIT_ERROR
    except AmbiguousSnapshotId as exc:
        if args.debug:
            raise
        _error(_ambiguous(exc), _describe_candidates(None, exc))
        return EXIT_ERROR
    except SnapshotError as exc:
        if args.debug:
            raise
        _error(str(exc))
        return EXIT_ERROR
    except OSError as exc:
        if args.debug:
            raise
        _error(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
