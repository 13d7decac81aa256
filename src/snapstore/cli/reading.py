"""Commands that only read: ``sessions``, ``log``, ``show``, ``diff`` and ``stats``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from ..errors import SnapshotError
from .common import PROG, CliError, existing_session, open_store, pointer_get, snapshot_json
from .graph import graph_rows
from .output import (
    Progress,
    compact,
    count,
    emit,
    human,
    json_text,
    one_line,
    say,
    shown,
    table,
    use_color,
    when,
    write_bytes,
)
from .references import resolve, split_reference


def cmd_sessions(args: argparse.Namespace) -> int:
    from ..session import MAX_INT64

    with open_store(args) as store:
        rows: list[dict[str, Any]] = []
        unreadable: dict[str, str] = {}
        for name in store.sessions():
            try:
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
            except SnapshotError as exc:  # one session that cannot be read hides no other
                unreadable[name] = str(exc)
    for name, why in unreadable.items():
        say(f"{PROG}: warning: cannot read session {name}: {one_line(why)}", sys.stderr)
    code = 1 if unreadable else 0
    if emit(args, rows):
        return code
    if not rows:
        if not unreadable:
            say(f"no sessions (make one with: {PROG} commit SESSION FILE.json)")
        return code
    lines = [["SESSION", "SNAPSHOTS", "LIMIT", "HEAD", "STORED"]]
    for row in rows:
        head_id = row["head"][:12] if row["head"] else "-"
        # the largest limit keeps everything (the LangGraph saver's sessions)
        limit = "all" if row["max_snapshots"] >= MAX_INT64 else str(row["max_snapshots"])
        lines.append([shown(row["name"]), str(row["snapshots"]), limit, head_id, human(row["bytes"])])
    say("\n".join(table(lines, right={1, 2, 4})))
    return code


def cmd_log(args: argparse.Namespace) -> int:
    if args.max_count is not None and args.max_count < 0:
        raise CliError(f"-n/--max-count must be 0 or more, not {args.max_count}")
    with open_store(args) as store:
        names = [existing_session(store, args.session).name] if args.session else store.sessions()
        groups = []
        for name in names:
            sess = store.session(name)
            head = sess.head
            snaps = sess.snapshots()
            damage = sess.tail_damage
            if damage is not None:  # on stderr: the listing itself stays what scripts read
                say(
                    f"{PROG}: warning: {damage}: what was written after the damage is lost, so the head "
                    f"shown may be older than the last commit (snapstore verify; docs/design.md, \"Blast "
                    "radius of one damaged byte\")",
                    sys.stderr,
                )
            if args.max_count is not None:
                snaps = snaps[len(snaps) - args.max_count :] if args.max_count else []
            entries = {}
            for snap in snaps:
                entry = snapshot_json(snap)
                entry["head"] = head is not None and snap.id == head.id
                entries[snap.id] = entry
            groups.append((name, head, len(sess), snaps, entries))
    if args.output is not None:
        emit(args, [entry for *_rest, snaps, entries in groups for entry in _ordered(snaps, entries, args)])
        return 0
    if not groups:
        say("no sessions")
        return 0
    blocks = []
    for name, head, retained, snaps, entries in groups:
        shown = "" if len(snaps) == retained else f" (showing the newest {len(snaps)})"
        title = f"session {name}: {count(retained, 'snapshot')}{shown}, head {head.id[:12] if head else '-'}"
        if args.graph:
            rows = graph_rows(snaps, head.id if head else None, newest_first=args.reverse)
        else:
            ordered = list(reversed(snaps)) if args.reverse else snaps
            rows = [("*" if entries[snap.id]["head"] else "", snap) for snap in ordered]
        if args.oneline:
            lines = [_oneline(mark, snap, entries, args.graph) for mark, snap in rows]
            blocks.append("\n".join(([title] if len(groups) > 1 else []) + lines))
            continue
        lines = [title]
        if rows:
            cells = [["", "ID", "PARENT", "KIND", "TURN", "TIME", "SIZE", "LABEL"]]
            for mark, snap in rows:
                cells.append([mark, *(_columns(snap) if snap is not None else [""] * 7)])
                if snap is not None and snap.tags:
                    cells[-1][-1] += _decorations(snap, False)
            lines += table(cells, right={4, 6})
        blocks.append("\n".join(lines))
    say(("\n" if args.oneline else "\n\n").join(blocks))
    return 0


def _ordered(snaps: list[Any], entries: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    return [entries[snap.id] for snap in (reversed(snaps) if args.reverse else snaps)]


def _columns(snap: Any) -> list[str]:
    return [
        snap.id[:12],
        snap.parent[:12] if snap.parent else "-",
        snap.kind,
        "-" if snap.turn is None else str(snap.turn),
        when(snap),
        human(snap.size),  # of the state as canonical JSON; what the store adds is smaller (sessions, stats)
        one_line(snap.label),
    ]


def _decorations(snap: Any, head: bool) -> str:
    """`` (head, tag: NAME)`` as git decorates a commit; empty for a snapshot that is neither."""
    marks = (["head"] if head else []) + [f"tag: {one_line(name)}" for name in snap.tags]
    return f" ({', '.join(marks)})" if marks else ""


def _oneline(mark: str, snap: Any, entries: dict[str, dict[str, Any]], graph: bool) -> str:
    if snap is None:
        return mark  # a row of the graph that only connects lanes
    text = snap.id[:12] + _decorations(snap, entries[snap.id]["head"])
    if snap.turn is not None:
        text += f" [turn {snap.turn}]"
    text += f" {one_line(snap.label)}"
    return f"{mark} {text}" if graph else text


def cmd_show(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        ident, pointer = split_reference(store, args.id)  # ID:/json/pointer, as git takes rev:path
        if pointer is None:
            pointer = args.pointer
        elif args.pointer is not None:
            raise CliError(f"{args.id} already names a part of the state; drop --pointer {args.pointer}")
        sess, sid = resolve(store, ident)
        value = sess.state(sid)
    if pointer is not None:
        value = pointer_get(value, pointer, f"snapshot {sid[:12]}")
    if emit(args, {"id": sid, "session": sess.name, "pointer": pointer or "", "value": value}):
        return 0
    write_bytes(json_text(value, 0 if args.compact else orjson.OPT_INDENT_2) + b"\n")
    return 0


_RED, _GREEN, _YELLOW, _BOLD, _RESET = "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[1m", "\x1b[0m"


def format_diff(ops: list[dict[str, Any]], old: Any, *, color: bool) -> list[str]:
    """Readable lines for an RFC 6902 patch applied to ``old``: ``+`` added, ``-`` removed, ``~`` replaced,
    ``>`` moved (renamed)."""

    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if color else text

    def old_value(path: str) -> str:
        try:
            return compact(pointer_get(old, path, "old state"))
        except (CliError, SnapshotError):
            return "?"

    lines = []
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        shown = one_line(path) or "(whole state)"  # keys are free text: a newline or an escape stays inert
        if kind == "add":
            lines.append(paint(f"+ {shown}: {compact(op.get('value'))}", _GREEN))
        elif kind == "remove":
            lines.append(paint(f"- {shown}: {old_value(path)}", _RED))
        elif kind == "replace":
            was, now = _old_or_none(old, path), op.get("value")
            if type(was) is str and type(now) is str and max(len(was), len(now)) > LONG_TEXT:
                lines.append(f"{paint('~', _YELLOW)} {shown}: {_text_change(was, now, paint)}")
                continue
            before, after = paint(old_value(path), _RED), paint(compact(now), _GREEN)
            lines.append(f"{paint('~', _YELLOW)} {shown}: {before} → {after}")
        elif kind == "move" and isinstance(op.get("from"), str):  # a member renamed, its value the same
            lines.append(f"{paint('>', _YELLOW)} {one_line(op['from']) or '(whole state)'} → {shown}")
        else:  # copy, test: not written by snapstore's diff, shown as they are
            lines.append(f"{kind} {compact(op)}")
    return lines


#: a text replaced by another where either is longer than this is shown as what changed in it, not whole
LONG_TEXT = 200
#: characters of unchanged text shown on each side of a change, and of a change's removed or added text
_CONTEXT, _SHOWN = 40, 160


def _old_or_none(old: Any, path: str) -> Any:
    try:
        return pointer_get(old, path, "old state")
    except (CliError, SnapshotError):
        return None


def _text_change(was: str, now: str, paint: Any) -> str:
    """One text replaced by another, as the span between their common start and end: a few words of
    context, the removed text in ``[-…-]`` and the added in ``{+…+}`` (each cut to ``_SHOWN``
    characters), and both lengths; escaped as JSON escapes a string, so nothing in it drives a terminal."""
    start = 0
    limit = min(len(was), len(now))
    while start < limit and was[start] == now[start]:
        start += 1
    end = 0
    while end < limit - start and was[-1 - end] == now[-1 - end]:
        end += 1
    removed, added = was[start : len(was) - end], now[start : len(now) - end]

    def text(piece: str, keep: int, tail: bool = False) -> str:
        cut = piece[-keep:] if tail else piece[:keep]
        inner = compact(cut)[1:-1]  # JSON's escapes, without the quotes
        more = len(piece) - len(cut)
        if not more:
            return inner
        return f"…{inner}" if tail else f"{inner}… ({more:,} more)"

    before = text(was[:start], _CONTEXT, tail=True)
    after = text(was[len(was) - end :], _CONTEXT) if end else ""
    change = (paint(f"[-{text(removed, _SHOWN)}-]", _RED) if removed else "") + (
        paint(f"{{+{text(added, _SHOWN)}+}}", _GREEN) if added else ""
    )
    return f'"{before}{change}{after}" ({len(was):,} → {len(now):,} characters)'


def _changed_from(sess: Any, sid: str) -> str:
    """The snapshot ``diff A`` compares ``A`` with: its parent, or when ``A`` is its parent settled
    (``Session.settle`` stores a head again: a child with the same state, label and turn, stored
    whole, as a LangGraph saver leaves every thread it closes) the parent's own, and so on."""
    retained = set(sess.snapshot_ids())
    current = sess.snapshot(sid)
    while True:
        named = current.id[:12] if current.id == sid else f"{current.id[:12]} (of which {sid[:12]} is the settled copy)"
        if current.parent is None:
            raise CliError(f"snapshot {named} has no parent (it starts its chain); give two ids to compare")
        if current.parent not in retained:
            raise CliError(
                f"the parent {current.parent[:12]} of snapshot {named} is no longer retained; give two ids to compare"
            )
        parent = sess.snapshot(current.parent)
        if not _settled_copy(current, parent):
            return parent.id
        current = parent


def _settled_copy(snap: Any, parent: Any) -> bool:
    """Whether ``snap`` is ``parent`` stored again by ``Session.settle``: whole (a keyframe), with its
    state, label and turn. A state committed again unchanged is a delta, unless the keyframe policy
    stored it whole; then it looks the same, and ``diff`` says on stderr which snapshot it compared
    with instead."""
    same = (snap.state_hash, snap.label, snap.turn) == (parent.state_hash, parent.label, parent.turn)
    return same and snap.kind == "full"


def cmd_diff(args: argparse.Namespace) -> int:
    from ..delta import diff as json_diff

    with open_store(args) as store:
        sess_b, b = resolve(store, args.a if args.b is None else args.b)
        if args.b is None:
            sess_a, a = sess_b, _changed_from(sess_b, b)
            parent = sess_b.snapshot(b).parent
            if parent is not None and a != parent:  # on stderr: --json and a reader of the lines are left alone
                say(
                    f"{PROG}: note: {b[:12]} is {parent[:12]} stored again whole, with its state, "
                    f"label and turn, as settling a head stores it (or as the keyframe policy stores a state "
                    f"committed again unchanged): compared with {a[:12]}, the snapshot before",
                    sys.stderr,
                )
        else:
            sess_a, a = resolve(store, args.a)
        old, new = sess_a.state(a), sess_b.state(b)
        snap_a, snap_b = sess_a.snapshot(a), sess_b.snapshot(b)
    ops = json_diff(old, new)
    if emit(args, ops):
        return 0
    color = use_color(sys.stdout)

    def header(mark: str, snap: Any) -> str:
        turn = "" if snap.turn is None else f"  turn {snap.turn}"
        text = f"{mark} {snap.id[:12]}  {snap.session}{turn}  {snap.label!r}"
        return f"{_BOLD}{text}{_RESET}" if color else text

    lines = [header("---", snap_a), header("+++", snap_b)]
    lines += format_diff(ops, old, color=color) if ops else ["(no differences)"]
    say("\n".join(lines))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with open_store(args) as store, Progress() as progress:
        progress.status(f"reading {store.describe()}")
        stats = store.stats()
    if emit(args, stats):
        return 0
    say("\n".join(table(stats_rows(stats))))
    return 0


# how ``stats`` names the figures it knows, in this order; any other figure follows under its own name
_STATS_LABELS = {
    "sessions": "sessions",
    "snapshots": "snapshots",
    "keyframes": "keyframes",
    "longest_chain": "longest chain",
    "segments": "segments",
    "objects": "objects",
    "stored_bytes": "stored",
    "raw_bytes": "uncompressed",
    "compression_ratio": "compression ratio",
    "apparent_bytes": "on disk (apparent)",
    "allocated_bytes": "on disk (allocated)",
    "files": "files",
    "folders": "folders",
}


def stats_rows(stats: dict[str, Any]) -> list[list[str]]:
    rows = []
    for key in [*(k for k in _STATS_LABELS if k in stats), *(k for k in stats if k not in _STATS_LABELS)]:
        value = stats[key]
        if isinstance(value, dict):
            continue  # a breakdown, shown beside its total
        if key == "longest_chain":
            text = count(value, "delta")
        elif key == "compression_ratio":
            text = "-" if value is None else f"{value}x"
        elif key.endswith("_bytes") and isinstance(value, int):
            text = f"{human(value)} ({value} bytes)"
        else:
            text = str(value)
        breakdown = stats.get(f"{key}_by_kind")
        if isinstance(breakdown, dict):
            text += " (" + ", ".join(f"{kind} {number}" for kind, number in breakdown.items()) + ")"
        rows.append([_STATS_LABELS.get(key, key.replace("_", " ")), text])
    return rows
    say("\n".join(table(rows)))
    return 0
