"""Commands about what a session keeps: ``tag``, ``untag`` and ``forget``."""

from __future__ import annotations

import argparse

from .base import CliError
from .common import existing_session, open_store, warn_if_half_a_thread
from .output import count, emit, say
from .references import in_session
from .writing import confirm


def cmd_tag(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        sess = existing_session(store, args.session)
        sid = sess.tag(in_session(store, sess, args.id), args.name)
    if not emit(args, {"session": args.session, "tag": args.name, "id": sid}):
        say(f"{args.session}: tagged {sid[:12]} as {args.name}; retention keeps it until it is untagged")
    return 0


def cmd_untag(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        sess = existing_session(store, args.session)
        sid = sess.untag(args.name)
    if not emit(args, {"session": args.session, "tag": args.name, "id": sid}):
        say(f"{args.session}: removed tag {args.name} from {sid[:12]}; retention may now evict it")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    if args.keep_last < 1:
        raise CliError(f"--keep-last must be 1 or more, not {args.keep_last}")
    with open_store(args) as store:
        sess = existing_session(store, args.session)
        tagged = set(sess.tags.values())
        doomed = [sid for sid in sess.snapshot_ids()[: max(len(sess) - args.keep_last, 0)] if sid not in tagged]
        if doomed:
            warn_if_half_a_thread(args.session, "forgetting snapshots of")
        question = f"forget {count(len(doomed), 'snapshot')} of {args.session!r}, keeping the last {args.keep_last}?"
        if doomed and not args.yes and not confirm(question):
            raise CliError(f"nothing forgotten in {args.session!r}: confirm on a terminal, or add --yes")
        evicted = sess.forget(args.keep_last) if doomed else []
        kept = len(sess)
    if not emit(args, {"session": args.session, "evicted": evicted, "retained": kept}):
        say(f"{args.session}: forgot {count(len(evicted), 'snapshot')}, {kept} retained")
        for sid in evicted:
            say(f"  {sid}")
    return 0
