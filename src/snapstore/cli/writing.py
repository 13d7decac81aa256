"""Commands that change a store: ``init``, ``commit``, ``restore``, ``rollback`` and ``delete-session``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from .common import (
    CliError,
    existing_session,
    load_json,
    open_existing,
    open_store,
    shown_store,
    snapshot_json,
    store_path,
    warn_if_half_a_thread,
    write_file,
)
from .output import count, emit, isatty, say, write_bytes
from .references import in_session, resolve


def cmd_init(args: argparse.Namespace) -> int:
    from ..store import SnapshotStore

    path = store_path(args)
    existing = open_existing(path)
    if existing is not None:
        existing.close()
        say(f"snapstore store already exists at {shown_store(path)}")
    else:
        SnapshotStore.open(path).close()
        say(f"initialized empty snapstore store at {shown_store(path)}")
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    if args.file == "-":
        data, source = sys.stdin.buffer.read(), "standard input"
    else:
        try:
            data, source = Path(args.file).read_bytes(), args.file
        except OSError as exc:
            raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    state = load_json(data, source)
    _check_commit(args, state, source)
    with open_store(args) as store:
        before: list[str] = []
        tagged: set[str] = set()
        if store.has_session(args.session):
            existing = store.session(args.session)
            before, tagged = existing.snapshot_ids(), set(existing.tags.values())
        lowering = args.max_snapshots is not None and args.max_snapshots < len(before)
        # the commit itself is one of the snapshots the new limit keeps; tagged ones stay whatever it is
        kept = set(before[len(before) - args.max_snapshots + 1 :]) | tagged if lowering else set(before)
        going = sum(1 for sid in before if sid not in kept)
        if lowering and going and not args.force:
            raise CliError(
                f"session {args.session!r} holds {count(len(before), 'snapshot')}: --max-snapshots "
                f"{args.max_snapshots} with this commit would evict the oldest {going}; add --force to do so"
            )
        if lowering:  # asked for with --force: the one call that evicts on purpose
            sess = store.session(args.session)
            sess.set_max_snapshots(args.max_snapshots)
        else:
            sess = store.session(args.session, max_snapshots=args.max_snapshots)
        extra: dict[str, Any] = {} if args.label is None else {"label": args.label}
        snap = sess.commit(state, turn=args.turn, **extra)
        evicted = [sid for sid in before if sid not in set(sess.snapshot_ids())]
        limit = sess.max_snapshots
    if evicted and lowering:
        # a lowered limit is said out loud (on stderr: stdout stays the new id alone, for scripts)
        say(
            f"{args.session}: the session keeps {limit}; evicted {count(len(evicted), 'snapshot')} "
            f"({', '.join(sid[:12] for sid in evicted)})",
            sys.stderr,
        )
    if not emit(args, {**snapshot_json(snap), "evicted": evicted}):
        say(snap.id)
    return 0


def _check_commit(args: argparse.Namespace, state: Any, source: str) -> None:
    """Refuse a commit's flags and state before the store is touched: ``store.session`` makes the
    session, and a commit refused after it would leave an empty one behind."""
    from .. import codec
    from ..errors import InvalidStateError
    from ..session import MAX_INT64

    if args.max_snapshots is not None and not 1 <= args.max_snapshots <= MAX_INT64:
        raise CliError(f"--max-snapshots must be an integer from 1 to 2^63-1, not {args.max_snapshots}")
    if args.turn is not None and not -MAX_INT64 - 1 <= args.turn <= MAX_INT64:
        raise CliError(f"--turn must be a 64-bit integer, not {args.turn}")
    if args.label is not None:
        try:
            size = len(args.label.encode("utf-8"))
        except UnicodeEncodeError:
            raise CliError("--label is not valid unicode (undecodable bytes on the command line)") from None
        if size > 65535:
            raise CliError(f"--label is {size} bytes; a label holds at most 65535")
    try:
        codec.encode_canonical(state)  # what the commit would refuse (too deep, a huge integer...), refused first
    except InvalidStateError as exc:
        raise CliError(f"{source}: {exc}") from None


def cmd_restore(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        sess, sid = resolve(store, args.id)
        state = sess.state(sid)
    data = orjson.dumps(state, option=orjson.OPT_SORT_KEYS)  # canonical JSON: hashes to the snapshot's state hash
    if args.output is None or args.output == "-":
        write_bytes(data + b"\n")
        return 0
    write_file(args.output, data, force=args.force)
    say(f"wrote the state of {sid[:12]} ({sess.name}) to {args.output} ({len(data)} bytes)")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        sess = existing_session(store, args.session)
        sess.rollback(in_session(store, sess, args.id))
        head = sess.head
    assert head is not None
    if emit(args, {"session": sess.name, "head": snapshot_json(head)}):
        return 0
    turn = "" if head.turn is None else f", turn {head.turn}"
    say(f"{sess.name}: head is now {head.id[:12]} ({head.label!r}{turn}); the next commit continues from it")
    return 0


def confirm(question: str) -> bool:
    """Ask on the terminal; False when there is no terminal to ask on."""
    if not (isatty(sys.stdin) and isatty(sys.stderr)):
        return False
    say(question + " [y/N] ", sys.stderr, end="")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def cmd_delete_session(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        sess = existing_session(store, args.session)
        retained = len(sess)
        warn_if_half_a_thread(args.session, "deleting")
        question = f"delete session {args.session!r} and its {count(retained, 'snapshot')}?"
        if not args.yes and not confirm(question):
            raise CliError(f"session {args.session!r} not deleted: confirm on a terminal, or add --yes")
        store.delete_session(args.session)
    if emit(args, {"deleted": args.session, "snapshots": retained}):
        return 0
    say(f"deleted session {args.session} ({count(retained, 'snapshot')})")
    return 0
