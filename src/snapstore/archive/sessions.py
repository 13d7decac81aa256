"""What an import does to each session, once the whole archive is checked.

Every session's states are rebuilt and checked against their hashes twice: once before
anything is written (so a bad archive is refused whole), and again while they are written
through ``Session.import_snapshots``, which keeps each snapshot's record and id, so nothing
but one state at a time is held in memory. The report says, session by session, what
happened: snapshots added, the head moved or kept, the retention limit raised, ids renamed.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import SnapshotError
from ..history import SessionLog
from ..objects import SessionDoc, SnapshotRecord
from .checks import fail

if TYPE_CHECKING:
    from ..session import Session
    from .contents import ArchiveContents

CONFLICT_POLICIES = ("error", "merge", "replace", "rename")
_RENAME_SUFFIX = "-imported"
_DONE = {"create": "created", "merge": "merged", "replace": "replaced", "rename": "renamed"}


@dataclass
class SessionImport:
    """What an import did to one session."""

    name: str  # the session's name in the archive
    session: str  # the name it was imported under
    action: str  # created | merged | replaced | renamed | unchanged
    added: int = 0  # snapshots written
    present: int = 0  # snapshots of the archive the session already held
    head: str | None = None  # the session's head afterwards
    previous_head: str | None = None  # its head before (merge)
    max_snapshots: int | None = None  # the retention limit afterwards
    previous_max_snapshots: int | None = None  # the limit before, when the import changed it
    renamed_ids: dict[str, str] = field(default_factory=dict)  # archive id -> id here (renamed sessions)
    notes: list[str] = field(default_factory=list)  # what a user should know, in words


@dataclass
class ImportReport:
    """What ``import_archive`` did, session by session (``sessions`` has the details)."""

    created: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)  # archive name -> name it was imported as
    unchanged: list[str] = field(default_factory=list)  # the store already retained every snapshot
    snapshots_written: int = 0
    snapshots_present: int = 0  # snapshots of the archive the store already held
    sessions: list[SessionImport] = field(default_factory=list)

    @property
    def objects_written(self) -> int:  # the name format-1 stores reported (objects then, snapshots now)
        return self.snapshots_written

    @property
    def objects_present(self) -> int:
        return self.snapshots_present

    def notes(self) -> list[str]:
        """One line per thing a user should know: ``session: note``."""
        return [f"{item.session}: {note}" for item in self.sessions for note in item.notes]


@dataclass
class _Action:
    doc: SessionDoc  # as the archive has it
    tags: dict[str, str]
    action: str  # create | merge | replace | rename | unchanged
    target: str  # the name it is written under


def apply_sessions(reader: ArchiveContents, on_conflict: str) -> ImportReport:
    """Check every session's chains and states, then write them; returns what was done."""
    actions, total = check_sessions(reader, on_conflict)
    report = ImportReport()
    progress = [0, total]
    for action in actions:
        item = _write_session(reader, action, on_conflict, progress)
        report.sessions.append(item)
        report.snapshots_written += item.added
        report.snapshots_present += item.present
        if item.action == "renamed":
            report.renamed[item.name] = item.session
        else:
            getattr(report, item.action).append(item.session)
    return report


def check_sessions(reader: ArchiveContents, on_conflict: str) -> tuple[list[_Action], int]:
    """Everything ``apply_sessions`` checks before it writes (§A.7 step 5: every session's chains,
    every state rebuilt against its hash), writing nothing: what to do with each session, and how
    many snapshots that writes."""
    reader._resolve_patches()
    actions = plan_sessions(reader, on_conflict)
    for action in actions:
        reader.check_chains(action.doc, _usable_local(reader, action))
    writes = [(action, _to_write(reader, action)) for action in actions]
    total = sum(len(ids) for _action, ids in writes)
    done = 0
    for action, ids in writes:  # every state rebuilt and checked before anything is written
        for _item in reader.states(action.doc, ids, _usable_local(reader, action)):
            done += 1
            reader.progress_at(done, total, "checking states")
    return actions, total


def plan_sessions(reader: ArchiveContents, on_conflict: str) -> list[_Action]:
    actions: list[_Action] = []
    conflicts: list[str] = []
    taken = {doc.name for doc in reader.docs}
    for doc in reader.docs:
        local = reader.local(doc.name)
        tags = reader.tags.get(doc.name, {})
        if local is None:
            actions.append(_Action(doc, tags, "create", doc.name))
        elif _already_held(doc, local):  # no conflict: nothing for on_conflict to decide
            actions.append(_Action(doc, tags, "unchanged", doc.name))
        elif on_conflict == "error":
            conflicts.append(doc.name)
        elif on_conflict == "rename":
            target = free_name(reader, doc.name, taken)
            taken.add(target)
            actions.append(_Action(doc, tags, "rename", target))
        else:
            actions.append(_Action(doc, tags, on_conflict, doc.name))
    if conflicts:
        raise fail(
            f"archive {reader.name}: the store already has session(s) {', '.join(repr(c) for c in conflicts)} "
            "with other snapshots; import with on_conflict='merge', 'replace' or 'rename'",
            "session exists",
            path=reader.name,
            sessions=conflicts,
        )
    return actions


def _usable_local(reader: ArchiveContents, action: _Action) -> SessionLog | None:
    """The store's session a chain may end in: only one the import keeps and writes into."""
    return reader.local(action.doc.name) if action.action in ("merge", "unchanged") else None


def _to_write(reader: ArchiveContents, action: _Action) -> list[str]:
    """The snapshots the planned action writes: none when unchanged; for a merge, those the session lacks."""
    if action.action == "unchanged":
        return []
    if action.action == "merge":
        local = reader.local(action.doc.name)
        return [sid for sid in snapshots_carried(action.doc) if local is None or sid not in local.commits]
    return snapshots_carried(action.doc)


def snapshots_carried(doc: SessionDoc) -> list[str]:
    """The snapshots an archive carries for a session, and an import into an empty store writes, oldest
    first: the listed ones, and the head when it is not listed (a head retention no longer lists is still
    readable; written first, so that retention counts it out as the source did)."""
    if doc.head is not None and doc.head not in doc.snapshots:
        return [doc.head, *doc.snapshots]
    return list(doc.snapshots)


def _already_held(doc: SessionDoc, local: SessionLog) -> bool:
    """Whether the store's session already holds every snapshot the archive carries for it, the
    archive's head too when it is unlisted: then importing it changes nothing."""
    return set(snapshots_carried(doc)) <= set(local.readable())


def _write_session(reader: ArchiveContents, action: _Action, on_conflict: str, progress: list[int]) -> SessionImport:
    """Create, merge, replace or rename one session; a session created meanwhile follows the policy."""
    store = reader.store
    doc = action.doc
    if action.action == "unchanged":
        local = reader.local(doc.name)
        assert local is not None
        return SessionImport(
            doc.name, doc.name, "unchanged", present=len(doc.snapshots), head=local.head,
            max_snapshots=local.max_snapshots,
        )  # fmt: skip
    how, target = action.action, action.target
    if how in ("create", "rename") and store.has_session(target):
        # planned when the store had no such session, but a writer created it meanwhile: the policy decides
        reader.forget_local(target)
        local = reader.local(target)
        if how == "create" and local is not None and _already_held(doc, local):
            return SessionImport(doc.name, target, "unchanged", present=len(doc.snapshots), head=local.head)
        if on_conflict == "error":
            raise fail(
                f"session {target!r} was created by someone else during the import (sessions before it are imported)",
                "session exists",
                session=target,
            )
        if on_conflict == "rename":
            how, target = "rename", free_name(reader, doc.name, {d.name for d in reader.docs})
        else:
            how = on_conflict
    if how == "merge":
        return _merge(reader, action, progress)
    if how == "replace" and store.has_session(target):
        reader.forget_local(target)
        return _create(reader, action, how, target, progress, replacing=True)
    return _create(reader, action, how, target, progress)


def _items(
    reader: ArchiveContents, action: _Action, ids: list[str], local: SessionLog | None, progress: list[int],
    rename: dict[str, str] | None = None, new_name: str | None = None,
) -> Iterator[tuple[SnapshotRecord, bytes, bytes | None]]:  # fmt: skip
    for sid, record, data, delta in reader.states(action.doc, ids, local):
        if rename is not None and new_name is not None:
            record = dataclasses.replace(
                record, session=new_name, parent=_renamed(reader, record.parent, new_name, rename)
            )
            rename[sid] = record.snapshot_id()
        progress[0] += 1
        reader.progress_at(progress[0], progress[1], "importing snapshots")
        yield record, data, delta


def _renamed(reader: ArchiveContents, sid: str | None, new_name: str, rename: dict[str, str]) -> str | None:
    """The id a record of the archive gets under ``new_name`` (parents outside the archive keep theirs)."""
    path: list[str] = []
    current = sid
    while current is not None and current not in rename and reader._find(current) >= 0:
        path.append(current)
        current = reader.record(current).parent
    for old in reversed(path):
        record = reader.full_record(old)
        parent = rename.get(record.parent, record.parent) if record.parent is not None else None
        rename[old] = dataclasses.replace(record, session=new_name, parent=parent).snapshot_id()
    return rename.get(sid, sid) if sid is not None else None


def _create(
    reader: ArchiveContents, action: _Action, how: str, target: str, progress: list[int], replacing: bool = False
) -> SessionImport:
    """A new session holding the archive's: its limit, head and tags, with ids renamed when the name
    changed. ``replacing``: it takes the place of the store's session of that name in one step once
    written whole (``SnapshotStore.replacing``), which a failure or a crash before then leaves as it was."""
    if replacing:
        with reader.store.replacing(target, max_snapshots=action.doc.max_snapshots) as staged:
            return _write_new(reader, action, how, target, progress, staged)
    try:
        return _write_new(reader, action, how, target, progress, None)
    except BaseException:
        _drop_new_session(reader.store, target)
        raise


def _write_new(
    reader: ArchiveContents, action: _Action, how: str, target: str, progress: list[int], staged: Session | None
) -> SessionImport:
    store, doc = reader.store, action.doc
    wanted = snapshots_carried(doc)
    rename: dict[str, str] | None = None
    if target != doc.name:
        rename = {}
        for sid in wanted:
            _renamed(reader, sid, target, rename)
    mapping = rename or {}
    head = mapping.get(doc.head, doc.head) if doc.head is not None else None
    tags = {tag: mapping.get(sid, sid) for tag, sid in action.tags.items()}
    sess = staged if staged is not None else store.session(target, max_snapshots=doc.max_snapshots)
    items = _items(reader, action, wanted, None, progress, rename, target)
    # the listing is the archive's: an unlisted head (written first) stays readable, and the snapshots
    # behind the window are kept by their tags alone, so that each goes with its tag as in the source;
    # the line goes in the import's own write, with its head (two writes would let a crash or another
    # writer come between them)
    window = reader.windows.get(doc.name)
    behind = wanted[: len(wanted) - (window if window is not None else len(doc.snapshots))] if doc.snapshots else []
    line = mapping.get(behind[-1], behind[-1]) if behind else None
    written = sess.import_snapshots(items, head=head, tags=tags, evicted_through=line)
    item = SessionImport(
        doc.name, target, _DONE[how], added=len(written), head=sess.head.id if sess.head else None,
        max_snapshots=sess.max_snapshots, renamed_ids={old: new for old, new in mapping.items() if old in wanted},
    )  # fmt: skip
    dropped = len(doc.snapshots) - len(sess.snapshot_ids())
    if dropped > 0:
        item.notes.append(
            f"{dropped} of the archive's {len(doc.snapshots)} snapshots were evicted at once: the archive lists "
            f"more than its retention limit of {doc.max_snapshots} keeps"
        )
    if how == "rename":
        item.notes.append(
            f"imported from session {doc.name!r} under a new name: snapshot ids hash their session's name, "
            f"so its {len(written)} snapshot{'s have' if len(written) != 1 else ' has'} new "
            f"{'ids' if len(written) != 1 else 'id'} (the report's renamed_ids maps them)"
        )
    if how == "replace":
        item.notes.append("the session's earlier snapshots were replaced by the archive's, in one step")
    return item


def _drop_new_session(store: Any, name: str) -> None:
    """Remove a session this import created, after a failure (the import writes all of a session or none)."""
    with contextlib.suppress(SnapshotError):
        store.delete_session(name)


def _merge(reader: ArchiveContents, action: _Action, progress: list[int]) -> SessionImport:
    """Add the archive's snapshots the session lacks; move the head when the archive's history extends
    the local one; raise the limit (and say so) when the merged session would otherwise evict."""
    store, doc = reader.store, action.doc
    reader.forget_local(doc.name)
    local = reader.local(doc.name)
    if local is None:  # deleted meanwhile
        return _create(reader, action, "create", doc.name, progress)
    sess = store.session(doc.name)
    present = [sid for sid in doc.snapshots if sid in local.commits]
    wanted = [sid for sid in snapshots_carried(doc) if sid not in local.commits]
    item = SessionImport(
        doc.name, doc.name, "merged", present=len(present), previous_head=local.head,
        max_snapshots=local.max_snapshots,
    )  # fmt: skip
    stale = [sid for sid in present if sid not in set(local.retained())]
    if stale:
        item.notes.append(
            f"{len(stale)} snapshot(s) of the archive are stored here but no longer retained; merge does not "
            "bring them back"
        )
    needed = _limit_needed(local, wanted, action.tags)
    if needed > local.max_snapshots:
        sess.set_max_snapshots(needed)  # raising evicts nothing
        item.previous_max_snapshots, item.max_snapshots = local.max_snapshots, needed
        item.notes.append(
            f"max_snapshots raised from {local.max_snapshots} to {needed} so that the merge evicts nothing"
        )
    head = local.head  # appending moves it: it is written back unless the archive extends it
    if doc.head is not None and doc.head != local.head:
        if _extends(reader, doc.head, local):
            head = doc.head
            item.notes.append(
                f"head moved from {local.head} to {doc.head}: the archive's history extends the local one"
            )
        else:
            item.notes.append(
                f"head stays at {local.head}: the archive's history (head {doc.head}) does not extend the local "
                "one; roll back to it to continue from there"
            )
    tags: dict[str, str] = {}
    for tag, sid in action.tags.items():
        if tag in local.tags and local.tags[tag] != sid:
            item.notes.append(f"tag {tag!r} kept on {local.tags[tag]} (the archive puts it on {sid})")
        else:
            tags[tag] = sid
    written = sess.import_snapshots(_items(reader, action, wanted, local, progress), head=head, tags=tags)
    item.added = len(written)
    item.head = sess.head.id if sess.head else None
    window = reader.windows.get(doc.name)
    if window is not None:
        item.notes.append(
            f"the archive keeps {len(doc.snapshots) - window} snapshot(s) behind its retention window by their "
            "tags alone; a merge keeps this store's own eviction line, so here they count as any other"
        )
    return item


def _limit_needed(local: SessionLog, added: list[str], tags: dict[str, str]) -> int:
    """The smallest limit under which the merged session still retains everything it retains now
    and everything added (appended after the local snapshots, in the archive's order)."""
    order = [*local.order, *added]
    tagged = set(local.tags.values()) | set(tags.values())
    keep = [sid for sid in [*local.retained(), *added] if sid not in tagged]
    if not keep:
        return local.max_snapshots
    position = {sid: n for n, sid in enumerate(order)}
    return len(order) - min(position[sid] for sid in keep)


def _extends(reader: ArchiveContents, head: str, local: SessionLog) -> bool:
    """True when the local head is an ancestor of the archive's head (or the session has no head)."""
    if local.head is None:
        return True
    current: str | None = head
    seen: set[str] = set()
    while current is not None and current not in seen:
        if current == local.head:
            return True
        seen.add(current)
        try:
            current = reader.record(current, local).parent
        except SnapshotError:
            return False  # the ancestry leaves what the archive and the session hold
    return False


def free_name(reader: ArchiveContents, name: str, taken: set[str]) -> str:
    from ..store import MAX_NAME_LENGTH

    for n in range(1, 10_000):
        suffix = _RENAME_SUFFIX if n == 1 else f"{_RENAME_SUFFIX}-{n}"
        candidate = name[: MAX_NAME_LENGTH - len(suffix)] + suffix
        if candidate not in taken and not reader.store.has_session(candidate):
            return candidate
    raise SnapshotError(f"no free name to import session {name!r} under", {"session": name})
