"""Maintenance commands: ``verify``, ``gc``, ``upgrade`` and ``demo``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from .common import PROG, open_store
from .output import Progress, count, emit, human, one_line, say


def public_fields(report: Any) -> dict[str, Any]:
    """A report's fields and the figures it computes (``objects_checked``, ``objects_deleted``) as JSON values."""
    result = dataclasses.asdict(report)
    for name in ("objects_checked", "objects_deleted"):
        if hasattr(report, name):
            result[name] = getattr(report, name)
    return result


def _read(report: Any, verb: str, adjective: str = "") -> str:
    """How many units of storage a report counts: segments where the store keeps them, else objects."""
    segments = getattr(report, f"segments_{verb}", None)
    if segments is not None:
        return count(segments, adjective + "segment")
    return count(getattr(report, "objects_deleted" if verb == "dropped" else "objects_checked"), adjective + "object")


def cmd_verify(args: argparse.Namespace) -> int:
    read_data = not args.quick
    with open_store(args) as store, Progress() as progress:
        progress.status(f"verifying {store.describe()}" + ("" if read_data else " (structure only)"))
        report = store.verify(read_data=read_data)
    result = {**public_fields(report), "ok": report.ok, "read_data": read_data}
    if emit(args, result):
        return 0 if report.ok else 1
    checked = f"checked {count(report.sessions_checked, 'session')}, {count(report.snapshots_checked, 'snapshot')}"
    if read_data:
        checked += f", {_read(report, 'checked')}; rebuilt {count(report.states_rebuilt, 'state')}"
    else:
        checked += " (--quick: structure only; without it all stored data is read and every state rebuilt)"
    say(checked)
    _print_foreign(report.foreign)
    if report.ok:
        say("ok: no problems found")
        return 0
    say(f"{count(len(report.problems), 'problem')} found:")
    for problem in report.problems:
        where = [f"session {problem.session}"] if problem.session else []
        if problem.snapshot:
            where.append(f"snapshot {problem.snapshot[:12]}")
        say(f"  - {one_line(problem.message)}" + (f" [{', '.join(where)}]" if where else ""))  # (names paths)
    return 1


def _print_foreign(foreign: list[str]) -> None:
    if foreign:
        what = "1 entry" if len(foreign) == 1 else f"{len(foreign)} entries"
        say(f"{what} in the store that snapstore did not write (left alone):")
        for path in foreign:
            say(f"  {one_line(path)}")  # any file's name: C0 controls and all, escaped


def cmd_gc(args: argparse.Namespace) -> int:
    with open_store(args) as store, Progress() as progress:
        progress.status(f"collecting unreferenced data in {store.describe()}")
        report = store.gc(dry_run=args.dry_run)
    read_only = store.read_only
    if not emit(args, {**public_fields(report), "dry_run": args.dry_run, "read_only": read_only}):
        if args.dry_run:
            say("dry run: nothing deleted")
        elif read_only:
            say(f"the store at {store.describe()} is read-only here: nothing deleted")
        else:
            squashed = f", squashed {count(report.segments_squashed, 'segment')}" if report.segments_squashed else ""
            say(
                f"deleted {_read(report, 'dropped', 'unreferenced ')}{squashed} ({human(report.bytes_freed)} freed),"
                f" removed {count(report.temporary_files_removed, 'leftover temporary file')}"
            )
            if report.sessions_busy:
                say(
                    f"skipped {count(len(report.sessions_busy), 'session')} another writer kept locked "
                    f"past the lock timeout: {', '.join(report.sessions_busy)} (run gc again later)"
                )
            for name, why in report.sessions_failed.items():
                say(f"{PROG}: warning: skipped session {name}: {one_line(why)}", sys.stderr)
        _print_foreign(report.foreign)
    return 1 if report.sessions_failed else 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    from ..upgrade import upgrade_store
    from .common import shown_store, store_path

    target = store_path(args)
    with Progress() as progress:
        report = upgrade_store(
            target,
            progress=lambda phase, detail: progress.status(f"{phase} {detail}".strip()),
            lock_timeout=args.lock_timeout,
        )
    if emit(args, dataclasses.asdict(report)):
        return 0
    if not report.upgraded:
        say(f"{shown_store(target)} already has format {report.to_version}: nothing to do")
    elif report.from_version in ("2", "3"):  # its segments are format 4's: only the format file changed
        say(
            f"upgraded {shown_store(target)} from format {report.from_version} to {report.to_version}: "
            f"{count(report.sessions, 'session')}, read as they are (nothing to rewrite or verify)"
        )
    else:
        say(
            f"upgraded {shown_store(target)} from format {report.from_version} to {report.to_version}: "
            f"{count(report.sessions, 'session')}, {count(report.snapshots, 'snapshot')}, "
            f"{count(report.states_verified, 'state')} verified"
        )
    if report.leftovers:
        say("removed leftovers of an interrupted upgrade: " + ", ".join(report.leftovers))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import main as demo_main

    return demo_main(([args.dir] if args.dir else []) + (["--keep"] if args.keep else []))
