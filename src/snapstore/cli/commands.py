"""Every command: its handler, help, description and example, and the argument parser built from them.

Handlers are named as ``module:function`` and imported only when their command runs.
"""

from __future__ import annotations

import argparse
import importlib
import textwrap
from collections.abc import Callable
from typing import Any

from .base import DEFAULT_STORE, ENV_STORE, PROG

Handler = Callable[[argparse.Namespace], int]

COMMANDS: list[tuple[str, str, str, str, str]] = [
    # name, handler, one-line help, description, example(s)
    (
        "init",
        "writing:cmd_init",
        "create an empty store",
        "Create an empty store at the store path (nothing happens if one is already there). "
        "Every other command but import needs an existing store.",
        "snapstore --store ./saves init",
    ),
    (
        "sessions",
        "reading:cmd_sessions",
        "list sessions with snapshot counts, head and bytes stored",
        "List every session: retained snapshots, retention limit, head snapshot and the bytes the session "
        "takes in the store.",
        "snapstore sessions\n  snapstore sessions --ndjson",
    ),
    (
        "log",
        "reading:cmd_log",
        "list a session's snapshots",
        "List retained snapshots oldest first (newest first with --reverse): id prefix, parent, kind (full or "
        "delta), turn, UTC time, size of the state as canonical JSON and label; "
        "'*' marks the head. --graph draws the branches rollbacks create ('@' is the head), --oneline prints "
        "one short line per snapshot, -n N only the N newest. Without SESSION every session is listed, one "
        "block each.",
        "snapstore log campaign-42 --graph --oneline\n  snapstore log campaign-42 -n 20 --reverse\n"
        "  snapstore log --json",
    ),
    (
        "show",
        "reading:cmd_show",
        "print the state at a snapshot, or one part of it",
        "Print the state a snapshot holds as JSON (indented, keys sorted; --compact for one canonical line). "
        "ID:POINTER (as git takes rev:path) or --pointer selects one part with a JSON Pointer (RFC 6901). "
        "ID is a full id or a unique prefix of 8+ hex digits, from any session, or SESSION:TAG for a tagged "
        "snapshot (SESSION:TAG:/pointer for one part of it).",
        "snapstore show 3f2a9c01:/party/Zoë/hp\n  snapstore show 3f2a9c01 --pointer /party/Zoë/hp\n"
        "  snapstore show campaign-42:before-the-dragon:/party",
    ),
    (
        "diff",
        "reading:cmd_diff",
        "show what changed between two snapshots",
        "Show the changes from snapshot A to snapshot B (from A's parent to A when B is omitted): "
        "'+ path: value' added, '- path: old' removed, '~ path: old → new' replaced, '> from → path' moved (a "
        "member renamed), colored when stdout is a "
        "terminal (set NO_COLOR to turn colors off). --json prints the RFC 6902 JSON Patch instead, --ndjson "
        "one operation per line. A and B may belong to different sessions.",
        "snapstore diff 3f2a9c01 7b11e0d4\n  snapstore diff 7b11e0d4 --json",
    ),
    (
        "commit",
        "writing:cmd_commit",
        "snapshot a JSON file as a session's new head",
        "Snapshot the JSON document in FILE ('-' reads standard input) as SESSION's new head, creating the "
        "session if needed, and print the new snapshot's id. A --max-snapshots below the number of snapshots "
        "the session holds evicts the oldest, and needs --force.",
        "snapstore commit campaign-42 state.json --label 'turn 3' --turn 3\n"
        "  curl -s http://localhost:8000/state | snapstore commit campaign-42 -",
    ),
    (
        "restore",
        "writing:cmd_restore",
        "write the state at a snapshot to a file or stdout",
        "Write a snapshot's state as canonical JSON (keys sorted, no whitespace; its xxh3-128 is the "
        "snapshot's state hash) to FILE, or to stdout followed by a newline. An existing FILE is kept unless "
        "--force. The session is not changed: see rollback.",
        "snapstore restore 3f2a9c01 -o state.json",
    ),
    (
        "rollback",
        "writing:cmd_rollback",
        "move a session's head back to an earlier snapshot",
        "Make snapshot ID the head of SESSION: the next commit's parent, so that commit starts a branch "
        "(log --graph draws it). Later snapshots stay listed until retention evicts them.",
        "snapstore rollback campaign-42 3f2a9c01",
    ),
    (
        "export",
        "archives:cmd_export",
        "write sessions to an archive file",
        "Write every session (or the ones named with --session, or the snapshots named with --snapshot and "
        "the chains they need) to a compact archive file that import reads into any store. An existing FILE "
        "is kept unless --force. Shows progress on stderr when it is a terminal.",
        "snapstore export backup.snaparchive --session campaign-42",
    ),
    (
        "import",
        "archives:cmd_import",
        "read an archive file into the store",
        "Read sessions from an archive file written by export into this store, creating the store if the "
        "path holds none. Everything is checked before anything is written; a session that exists with other "
        "snapshots is refused unless --on-conflict says otherwise. Shows progress on stderr when it is a "
        "terminal.",
        "snapstore --store ./other import backup.snaparchive",
    ),
    (
        "verify",
        "maintenance:cmd_verify",
        "check the store for damage; exit 1 if anything is wrong",
        "Check every session's stored data and every retained snapshot's chain, decompress everything, and "
        "rebuild every retained state against its hash. --quick checks only the structure (the framing and "
        "checksums, and every chain), without decompressing or rebuilding. Exits 1 and lists the problems "
        "when anything is wrong.",
        "snapstore verify\n  snapstore verify --quick",
    ),
    (
        "gc",
        "maintenance:cmd_gc",
        "delete stored data no session needs",
        "Delete the stored data that no session needs and the temporary files interrupted writes left "
        "(those older than an hour: a younger one may be another process's write in progress).",
        "snapstore gc",
    ),
    (
        "upgrade",
        "maintenance:cmd_upgrade",
        "rewrite a store of an earlier format in the current one (4), verified, all or nothing",
        "Rewrite a store written by an earlier snapstore (format 1) in the current format: every retained "
        "snapshot is rebuilt and checked against its hash, written to a new store beside it, checked again, "
        "and only then swapped in; on any error or interruption the store is left as it was, and a rerun "
        "finishes an interrupted switch. Snapshot ids do not change. Stop every program using the store first. "
        "A format-2 or format-3 store is moved to format 4 in place (nothing is rewritten: formats 3 and 4 only "
        "add a kind of delta entry and an index entry, which builds that read older formats alone must not meet).",
        "snapstore upgrade\n  snapstore --store ./campaign.snapstore upgrade",
    ),
    (
        "stats",
        "reading:cmd_stats",
        "print counts, bytes, compression ratio, chain lengths and disk usage",
        "Print sessions, snapshots, keyframes (full states), the longest delta chain among retained "
        "snapshots, stored and uncompressed bytes, the compression ratio, and what the store takes on "
        "disk (apparent and allocated bytes, files and folders) as the store reports them.",
        "snapstore stats --json",
    ),
    (
        "tag",
        "retention:cmd_tag",
        "name a snapshot; retention keeps it until untagged",
        "Give snapshot ID of SESSION the name NAME: retention keeps a tagged snapshot however many commits "
        "follow, until it is untagged, and commands that take an ID of the session take NAME too. Tagging "
        "another snapshot with a NAME moves the tag.",
        "snapstore tag campaign-42 3f2a9c01 before-the-dragon\n  snapstore rollback campaign-42 before-the-dragon",
    ),
    (
        "untag",
        "retention:cmd_untag",
        "remove a tag",
        "Remove tag NAME from SESSION. The snapshot it named may then be evicted by retention.",
        "snapstore untag campaign-42 before-the-dragon",
    ),
    (
        "forget",
        "retention:cmd_forget",
        "evict all but a session's last N snapshots now",
        "Evict every snapshot of SESSION but the last N (tagged snapshots stay), after asking on the "
        "terminal (--yes skips the question; without a terminal --yes is required). The retention limit "
        "for later commits does not change.",
        "snapstore forget campaign-42 --keep-last 20 --yes",
    ),
    (
        "delete-session",
        "writing:cmd_delete_session",
        "delete a session and its history",
        "Delete SESSION and every snapshot it retains, after asking on the terminal (--yes skips the "
        "question; without a terminal --yes is required). Objects no other session uses stay until gc.",
        "snapstore delete-session scratch --yes",
    ),
    (
        "demo",
        "maintenance:cmd_demo",
        "run a short guided tour in a scratch store",
        "Commit a few turns of a game session, diff them and roll back, in a temporary folder removed at the "
        "end (--keep keeps it), or in DIR: a new or empty folder, or the store of an earlier demo, which "
        "starts again from nothing. Ignores --store.",
        "snapstore demo\n  snapstore demo ./tour",
    ),
]


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--store",
        metavar="PATH",
        default=default,
        help=(
            f"the store: a directory, a postgresql:// URL or libpq key=value string "
            f"(default: ${ENV_STORE}, else ./{DEFAULT_STORE})"
        ),
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show a traceback for errors",
    )


def handler(name: str) -> Handler:
    """The function behind ``module:function``, imported now."""
    module, function = name.split(":")
    found: Handler = getattr(importlib.import_module(f".{module}", __package__), function)
    return found


def add_output_options(parser: argparse.ArgumentParser, json_help: str, ndjson_help: str) -> None:
    """``--json`` (one JSON document on one line) and ``--ndjson`` (one JSON object per line), exclusive."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--json", dest="output", action="store_const", const="json", help=json_help)
    group.add_argument("--ndjson", dest="output", action="store_const", const="ndjson", help=ndjson_help)
    parser.set_defaults(output=None)


def _force(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--force", action="store_true", help=what)


def build_parser(version: str) -> argparse.ArgumentParser:
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
    parser.add_argument("--version", action="version", version=f"{PROG} {version}")
    _global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub: dict[str, argparse.ArgumentParser] = {}
    for name, target, summary, description, example in COMMANDS:
        sub[name] = commands.add_parser(
            name,
            help=summary,
            description=textwrap.fill(description, 88),
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _global_options(sub[name], suppress=True)
        sub[name].set_defaults(handler=target)
    _add_arguments(sub)
    return parser


def _add_arguments(sub: dict[str, argparse.ArgumentParser]) -> None:
    add_output_options(sub["sessions"], "print a JSON array of sessions", "print one JSON object per session")

    log = sub["log"]
    log.add_argument("session", nargs="?", metavar="SESSION", help="the session (default: every session)")
    log.add_argument("-n", "--max-count", type=int, metavar="N", help="only the N newest snapshots of each session")
    log.add_argument("--reverse", action="store_true", help="newest first")
    log.add_argument("--oneline", action="store_true", help="one short line per snapshot: id, turn, label")
    log.add_argument("--graph", action="store_true", help="draw the branches that rollbacks create")
    add_output_options(log, "print a JSON array of snapshots", "print one JSON object per snapshot")

    show = sub["show"]
    show.add_argument(
        "id", metavar="ID[:POINTER]", help="snapshot id, unique prefix or SESSION:TAG, optionally :/json/pointer"
    )
    show.add_argument("--pointer", metavar="POINTER", help="a JSON Pointer such as /party/0/hp")
    show.add_argument("--compact", action="store_true", help="one line of canonical JSON")
    add_output_options(
        show, "print {id, session, pointer, value} as one JSON object", "the same object, on one line"
    )

    diff = sub["diff"]
    diff.add_argument("a", metavar="A", help="the older snapshot (or the only one: compared with its parent)")
    diff.add_argument("b", metavar="B", nargs="?", help="the newer snapshot")
    add_output_options(diff, "print the RFC 6902 JSON Patch", "print one patch operation per line")

    commit = sub["commit"]
    commit.add_argument("session", metavar="SESSION")
    commit.add_argument("file", metavar="FILE", help="a JSON file, or - for standard input")
    commit.add_argument("--label", help="free text stored with the snapshot (default: 'auto')")
    commit.add_argument("--turn", type=int, metavar="N", help="the turn number to record")
    commit.add_argument("--max-snapshots", type=int, metavar="N", help="set the session's retention limit")
    _force(commit, "allow --max-snapshots to evict snapshots the session holds")
    add_output_options(commit, "print the new snapshot as JSON", "the same object, on one line")

    restore = sub["restore"]
    restore.add_argument("id", metavar="ID")
    restore.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    _force(restore, "replace FILE if it exists")

    rollback = sub["rollback"]
    rollback.add_argument("session", metavar="SESSION")
    rollback.add_argument("id", metavar="ID", help="a snapshot retained by SESSION")
    add_output_options(rollback, "print the session and its new head as JSON", "the same object, on one line")

    export = sub["export"]
    export.add_argument("file", metavar="FILE")
    export.add_argument("--session", action="append", metavar="S", help="export only this session (repeatable)")
    export.add_argument(
        "--snapshot", action="append", metavar="ID", help="export only this snapshot and the chain it needs (repeat)"
    )
    _force(export, "replace FILE if it exists")
    add_output_options(export, "print what was written as JSON", "the same object, on one line")

    import_ = sub["import"]
    import_.add_argument("file", metavar="FILE")
    import_.add_argument(
        "--on-conflict",
        choices=["error", "merge", "replace", "rename"],
        default="error",
        help="when a session of the archive exists with other snapshots: refuse the import (error, the default), "
        "append the archive's snapshots (merge), take the archive's version (replace), "
        "or import it as NAME-imported (rename)",
    )
    add_output_options(import_, "print what happened to each session as JSON", "the same object, on one line")

    verify = sub["verify"]
    verify.add_argument("--quick", action="store_true", help="check the structure only: read no object's bytes")
    verify.add_argument("--read-data", action="store_true", help=argparse.SUPPRESS)  # the default; kept for scripts
    add_output_options(verify, "print the report as JSON", "the same object, on one line")

    gc = sub["gc"]
    gc.add_argument(
        "--dry-run", action="store_true", help="delete nothing: list what is in the store that snapstore did not write"
    )
    add_output_options(gc, "print the report as JSON", "the same object, on one line")

    upgrade = sub["upgrade"]
    upgrade.add_argument(
        "--lock-timeout", type=float, default=60.0, metavar="SECONDS",
        help="how long to wait for format-1 writers to finish (default 60)",
    )
    add_output_options(upgrade, "print the report as JSON", "the same object, on one line")
    add_output_options(sub["stats"], "print the figures as JSON", "the same object, on one line")

    tag = sub["tag"]
    tag.add_argument("session", metavar="SESSION")
    tag.add_argument("id", metavar="ID", help="a snapshot retained by SESSION (or another tag)")
    tag.add_argument("name", metavar="NAME", help="the tag: text that does not look like a snapshot id")
    add_output_options(tag, "print the session, tag and id as JSON", "the same object, on one line")

    untag = sub["untag"]
    untag.add_argument("session", metavar="SESSION")
    untag.add_argument("name", metavar="NAME")
    add_output_options(untag, "print the session, tag and id it named as JSON", "the same object, on one line")

    forget = sub["forget"]
    forget.add_argument("session", metavar="SESSION")
    forget.add_argument("--keep-last", type=int, metavar="N", required=True, help="how many snapshots to keep")
    forget.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_output_options(forget, "print the evicted ids and what is retained as JSON", "the same object, on one line")

    delete = sub["delete-session"]
    delete.add_argument("session", metavar="SESSION")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_output_options(delete, "print what was deleted as JSON", "the same object, on one line")

    demo = sub["demo"]
    demo.add_argument("dir", nargs="?", metavar="DIR", help="where to make the demo store (default: a temporary one)")
    demo.add_argument("--keep", action="store_true", help="keep the temporary folder and print where it is")
