"""Naming a snapshot from any session: an id, a unique prefix, ``SESSION:TAG``, or ``SESSION`` for its head.

``show``, ``diff``, ``restore`` and ``export --snapshot`` look in every session. A tag belongs
to a session, so across sessions it is written ``SESSION:TAG`` (a bare tag is taken when only
one session has it, as ``store.export`` takes it). A session's name that is no tag names its
head: ``snapstore diff campaign-42`` shows what the last turn changed. When nothing retained matches, each session
is asked why, so that the error says what a session command would: evicted by the retention
limit, lost to damage, or never known; a head that retention no longer lists is still read.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from ..errors import AmbiguousSnapshotId, CorruptObjectError, SnapshotError, SnapshotNotFound
from ..session import MIN_PREFIX
from .base import CliError, cli_message
from .common import sessions_hint

if TYPE_CHECKING:
    from ..session import Session
    from ..store import SnapshotStore

_HEX = frozenset("0123456789abcdef")


def looks_like_id(text: str) -> bool:
    """An id or a prefix long enough to be one (what the library would look up as such)."""
    wanted = text.strip().lower()
    return len(wanted) >= MIN_PREFIX and set(wanted) <= _HEX


def resolve(store: SnapshotStore, reference: str) -> tuple[Session, str]:
    """The session and full id that ``reference`` names: an id, a unique 8+ digit prefix, ``SESSION:TAG``,
    a tag that only one session has, or a session's name (its head)."""
    if not looks_like_id(reference):
        return _by_tag(store, reference)
    try:
        return store.find(reference)
    except AmbiguousSnapshotId as exc:
        raise CliError(ambiguous(exc), describe_candidates(store, exc)) from None
    except SnapshotNotFound as exc:
        return _beyond_retained(store, reference, exc)


def split_reference(store: SnapshotStore, text: str) -> tuple[str, str | None]:
    """``REFERENCE:/json/pointer`` (``show``): where the reference ends and the pointer starts.

    A pointer starts with ``/`` (or is empty: the whole state). An id holds no ``:``, so
    ``ID:POINTER`` splits at the first one; a ``SESSION:TAG`` may hold more (names may), so the
    split is the one whose left part names a session's tag.
    """
    first, colon, after = text.partition(":")
    if not colon:
        return text, None
    if looks_like_id(first) and (after == "" or after.startswith("/")):
        return first, after
    splits = [(text, None)] + [
        (text[:at], text[at + 1 :])
        for at in range(len(text) - 1, -1, -1)
        if text[at] == ":" and (text[at + 1 :] == "" or text[at + 1 :].startswith("/"))
    ]
    for reference, pointer in splits:
        if _tag_target(store, reference) is not None:
            return reference, pointer
    for reference, pointer in splits:
        if _is_session(store, reference):  # SESSION:/pointer: a part of its head
            return reference, pointer
    if looks_like_id(first):
        return first, after  # a pointer without its leading "/": the pointer's error says so
    return splits[-1] if len(splits) > 1 else (text, None)


def in_session(store: SnapshotStore, sess: Session, reference: str) -> str:
    """What a command of one session (``rollback``, ``tag``) passes to it: an id, a prefix or a tag of the
    session, with ``SESSION:TAG`` (as the commands that look in every session take it) read as its id."""
    if looks_like_id(reference) or reference in sess.tags:
        return reference
    found = _tag_target(store, reference)
    if found is None:
        return reference  # the session's own error says what is wrong with it
    owner, sid = found
    if owner.name != sess.name:
        raise CliError(f"{reference} names a snapshot of session {owner.name!r}, not of {sess.name!r}")
    return sid


def _tag_target(store: SnapshotStore, reference: str) -> tuple[Session, str] | None:
    """``SESSION:TAG`` resolved through the session's tags, or None when no split of it does."""
    for at, char in enumerate(reference):
        if char != ":":
            continue
        name, tag = reference[:at], reference[at + 1 :]
        try:
            if not store.has_session(name):
                continue
        except SnapshotError:  # not a valid session name: not this split
            continue
        sess = store.session(name)
        tags = sess.tags
        if tag in tags:
            return sess, tags[tag]
    return None


def _is_session(store: SnapshotStore, name: str) -> bool:
    """Whether the store has a session of that name."""
    try:
        return store.has_session(name)
    except SnapshotError:  # not a valid session name
        return False


def _by_tag(store: SnapshotStore, reference: str) -> tuple[Session, str]:
    found = _tag_target(store, reference)
    if found is not None:
        return found
    holders = {name: store.session(name) for name in store.sessions()}
    having = [name for name, sess in holders.items() if reference in sess.tags]
    if len(having) == 1:
        sess = holders[having[0]]
        return sess, sess.tags[reference]
    if having:
        raise CliError(
            f"tag {reference!r} is in several sessions; name one as SESSION:TAG: "
            + ", ".join(f"{name}:{reference}" for name in having)
        )
    named = holders.get(reference)
    if named is not None:
        head = named.head
        if head is None:
            raise CliError(f"session {reference!r} has no snapshots: it has no head to name")
        return named, head.id
    for at, char in enumerate(reference):
        name, tag = reference[:at], reference[at + 1 :]
        if char == ":" and name in holders:
            known = sorted(holders[name].tags)
            listing = f"its tags: {', '.join(known)}" if known else "it has no tags"
            if tag and not tag.startswith("/"):  # (the head's member was meant, often)
                listing += f"; a part of its state is {name}:/{tag}, a JSON pointer after the colon"
            raise CliError(f"session {name!r} has no tag {tag!r} ({listing})")
    first, colon, _rest = reference.partition(":")
    if colon:
        raise CliError(
            f"snapshot {reference!r} not found: SESSION:TAG names a session, and {first!r} is none "
            f"({sessions_hint(reference, list(holders))})"
        )
    close = difflib.get_close_matches(reference, list(holders), n=3, cutoff=0.75)
    near = f"; the closest session names: {', '.join(close)}" if close else ""
    raise CliError(
        f"snapshot {reference!r} not found: ids are hex, and prefixes need 8+ characters; a tagged snapshot "
        "is named SESSION:TAG (snapstore log SESSION shows its tags), and a session's head by its name "
        f"(snapstore sessions lists them){near}"
    )


def _beyond_retained(store: SnapshotStore, reference: str, exc: SnapshotNotFound) -> tuple[Session, str]:
    """No retained snapshot matches: a head retention no longer lists, or the reason each session gives.

    A single reason is raised as the library's own error (its wording is the command line's in
    ``main``); an id no session knows gets a word on retention only when retention has evicted
    something: in a store that never evicted, it never existed.
    """
    readable: list[tuple[Session, str]] = []
    reasons: list[SnapshotError] = []
    evicting: list[str] = []
    for name in store.sessions():
        sess = store.session(name)
        try:
            readable.append((sess, sess.resolve(reference)))
        except AmbiguousSnapshotId:
            continue  # ambiguous only with the unlisted head: the retained ones did not match
        except (SnapshotNotFound, CorruptObjectError) as why:
            reason = why.details.get("reason")
            if reason in ("evicted", "damage", "lost history"):
                reasons.append(why)
            elif reason == "not retained" and _has_evicted(sess):
                evicting.append(f"session {name!r} keeps its last {sess.max_snapshots}")
    if len(readable) == 1:
        return readable[0]
    if readable:
        candidates = ", ".join(f"{sid[:12]} ({sess.name})" for sess, sid in readable)
        raise CliError(f"snapshot prefix {reference} is ambiguous in the store: {candidates}")
    if len(reasons) == 1:
        raise reasons[0]
    if reasons:
        raise SnapshotNotFound("; ".join(cli_message(why) for why in reasons), exc.details)
    if evicting:
        raise SnapshotNotFound(
            f"snapshot {reference} not found in the store: no session retains it ({', '.join(evicting)} "
            f"snapshots, and {'its' if len(evicting) == 1 else 'their'} tagged ones; an id evicted long ago is "
            "no longer known)",
            {**exc.details, "reason": "not retained"},
        )
    raise exc


def _has_evicted(sess: Session) -> bool:
    """Whether retention (or ``forget``) has evicted snapshots of the session: one it lists has a parent it
    does not list."""
    snaps = sess.snapshots()
    listed = {snap.id for snap in snaps}
    return any(snap.parent is not None and snap.parent not in listed for snap in snaps)


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
                line += f"  {sess.name}  turn {'-' if snap.turn is None else snap.turn}  {snap.label!r}"
            except SnapshotError:
                pass
        lines.append(line)
    return lines
