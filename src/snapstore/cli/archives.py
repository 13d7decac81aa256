"""Archive commands: ``export`` and ``import``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from typing import Any

from ..errors import BackendError, ConcurrentUpdateError
from .base import PROG, cli_message
from .common import (
    CliError,
    existing_session,
    open_existing,
    open_store,
    refuse_to_overwrite,
    shown_store,
    store_path,
    warn_if_a_thread_renamed,
)
from .output import Progress, count, emit, human, say
from .references import looks_like_id, resolve


def _export_summary(report: Any, path: str) -> str:
    text = f"exported {count(len(report.sessions), 'session')}"
    if report.sessions:
        text += f" ({', '.join(report.sessions)})"
    text += f", {count(report.snapshots, 'snapshot')}, {count(report.objects, 'object')}"
    return text + f" to {path} ({human(report.archive_bytes)})"


def _import_summary(report: Any, path: str) -> str:
    parts = []
    for names, verb in (
        (report.created, "created"),
        (report.merged, "merged into"),
        (report.replaced, "replaced"),
    ):
        if names:
            parts.append(f"{verb} {', '.join(names)}")
    if report.unchanged:
        parts.append(f"{', '.join(report.unchanged)} already up to date")
    if report.renamed:
        parts.append("renamed " + ", ".join(f"{old} to {new}" for old, new in report.renamed.items()))
    unit = "snapshot" if hasattr(report, "snapshots_written") else "object"  # what the store's format copies
    written, present = getattr(report, f"{unit}s_written"), getattr(report, f"{unit}s_present")
    parts.append(f"{count(written, unit)} written" + (f", {present} already present" if present else ""))
    summary = f"imported {path}: " + "; ".join(parts)
    notes = report.notes() if callable(getattr(report, "notes", None)) else []
    return "\n".join([summary, *(f"  {note}" for note in notes)])


def cmd_export(args: argparse.Namespace) -> int:
    from ..errors import SnapshotNotFound

    if args.file == "-":  # as restore -o - and commit - would take it: refused, not a file named "-"
        raise CliError("export writes an archive file, not stdout: name the file (./- for a file named -)")
    refuse_to_overwrite(args.file, args.force)
    with open_store(args) as store, Progress() as progress:
        # a session's name stands for its head here as in show and diff; the library takes the rest
        snapshots = [_head_if_session(store, ref, args.session) for ref in args.snapshot] if args.snapshot else None
        try:
            report = store.export(args.file, sessions=args.session or None, snapshots=snapshots, progress=progress)
        except SnapshotNotFound as exc:
            wanted = exc.details.get("snapshot")
            if args.snapshot and isinstance(wanted, str):
                owner, _sid = resolve(store, wanted)  # says why, as show does: evicted, damaged, a tag naming nothing
                if args.session and owner.name not in args.session:
                    raise CliError(
                        f"--snapshot {wanted} names a snapshot of session {owner.name!r}, which is not among the "
                        f"sessions given with --session ({', '.join(repr(name) for name in args.session)})"
                    ) from None
            missing = exc.details.get("session")
            if isinstance(missing, str) and "snapshot" not in exc.details:
                existing_session(store, missing)  # names the sessions there are, as other commands do
            raise
    if not emit(args, dataclasses.asdict(report)):
        say(_export_summary(report, args.file))
    return 0


def _head_if_session(store: Any, reference: str, sessions: list[str] | None) -> str:
    """The id ``resolve`` finds for ``reference`` (a session's name is its head, as in ``show``);
    ``reference`` itself when it is an id, names nothing, or names a snapshot outside ``sessions``
    (the library's error then says why, in the words the user gave)."""
    if looks_like_id(reference):
        return reference
    try:
        sess, sid = resolve(store, reference)
    except CliError:
        return reference
    return sid if not sessions or sess.name in sessions else reference


def cmd_import(args: argparse.Namespace) -> int:
    from ..store import SnapshotStore

    if os.path.isdir(args.file):  # before a store is created for it
        raise CliError(f"cannot read {args.file}: it is a folder; give the path of an archive file")
    if args.file == "-":  # as export - is: stdin is what - means elsewhere, even beside a file named -
        raise CliError("import reads an archive file, not stdin: name the file (./- for a file named -)")
    if not os.path.isfile(args.file):
        raise CliError(f"cannot read {args.file}: no such file")
    path = store_path(args)
    store = open_existing(path)
    created = store is None
    folder_existed = os.path.isdir(path)
    if store is None:  # import makes its store, as init would, and removes it again if the import fails
        if "://" in path:  # tables cannot be taken back as a folder can: a bad archive is refused first
            from ..archive import check_archive

            check_archive(args.file)
        store = SnapshotStore.open(path)
    try:
        with store, Progress() as progress:
            report = store.import_archive(args.file, progress=progress, on_conflict=args.on_conflict)
    except BaseException as exc:
        if created and "://" not in path:
            _remove_new_store(path, folder_existed)
            raise
        if isinstance(exc, (BackendError, ConcurrentUpdateError)):  # the store failed, after the archive was checked
            # The import writes one session at a time, and a database's tables and sessions cannot be
            # taken back as a new folder can: say what stays, and how to finish.
            raise CliError(f"{cli_message(exc)}; {_partial_import(args.on_conflict)}") from exc
        if not isinstance(exc, Exception):  # Ctrl-C or SIGTERM: the session being written is taken back
            say(f"{PROG}: note: {_partial_import(args.on_conflict, stopped=True)}", sys.stderr)
        raise
    for old, new in report.renamed.items():
        warn_if_a_thread_renamed(old, new)
    if emit(args, {**dataclasses.asdict(report), "path": args.file, "created_store": created}):
        return 0
    if created:
        say(f"initialized empty snapstore store at {shown_store(path)}")
    say(_import_summary(report, args.file))
    return 0


def _partial_import(on_conflict: str, stopped: bool = False) -> str:
    """What an import that failed while writing (or was ``stopped``: Ctrl-C, SIGTERM) leaves in a
    store it does not remove."""
    text = (
        "the import writes one session at a time: the sessions it imported before "
        f"{'it was stopped' if stopped else 'this failure'} stay in the store"
    )
    if on_conflict == "rename":
        return (
            f"{text} (importing the archive again would import the renamed ones once more, under other names: "
            "delete those first with snapstore delete-session)"
        )
    if stopped:
        return f"{text}, and running the same import again with --on-conflict merge imports the rest"
    return (
        f"{text}, and running the same import again with --on-conflict merge, once the cause is fixed, imports "
        "the rest (the session it was writing too, should the failure have left part of it)"
    )


def _remove_new_store(path: str, folder_existed: bool) -> None:
    """Undo the store this command created: the folder itself, or what it put in an empty folder."""
    if not folder_existed:
        shutil.rmtree(path, ignore_errors=True)
        return
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)
