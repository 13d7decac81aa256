"""One session's history as read from its segments: the index, settings, and rebuilding states.

``SessionLog`` reads a session's segments (and, later, only what was appended
since) into an index: every snapshot's record and where it lives, the
settings that META entries set, and which segments depend on which. It holds
records, not payloads: rebuilding a state reads the segments it needs again.

Chains never leave their segment (a delta's parent is always in the same
segment), and a patched keyframe needs only the segment's raw stream before
it, so a segment is read on its own, from its start.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import codec
from .backends.base import Backend, SegmentInfo, SegmentMissing, SegmentRead
from .delta import apply_patch
from .entries import (
    KEY_MODES,
    CommitEntry,
    MetaEntry,
    SegmentReader,
    commit_payload,
    decode_entry,
    split_index,
    vouched_entry,
    without_index,
)
from .errors import CorruptObjectError, PatchError, SnapshotNotFound
from .objects import SnapshotRecord

#: how often a reader lists again when segments vanish under it (reclaimed while it read)
READ_ATTEMPTS = 20
#: the retention limit of a new session
DEFAULT_MAX_SNAPSHOTS = 10
#: compressed payload bytes a log keeps of what other writers appended, for a writer to catch up from
FRESH_LIMIT = 1 << 20
#: decoded raw streams of segments kept per log (the group a rebuild walks)
RAW_CACHE_SEGMENTS = 4


@dataclass(slots=True)
class IndexedCommit:
    id: str
    entry: CommitEntry  # its record is made when first asked for (``record``)
    mode: int
    raw_length: int
    segment: int
    ordinal: int  # index among the segment's entries
    base: str | None = None  # the snapshot the payload patches (CommitEntry.base); None for a keyframe
    depth: int = 0  # payloads applied after the keyframe to rebuild it (the record's depth is history's)

    @property
    def record(self) -> SnapshotRecord:
        return self.entry.record


@dataclass
class LoadedSegment:
    number: int
    version: int
    end: int
    stored: int = -1  # the backend's stored size when last read: unchanged means nothing new
    damage: str | None = None  # why the entries stop early (damage found while reading), if they do
    torn: bool = False  # unread bytes after ``end`` (an append in progress, or a torn one a writer will cut)
    entries: list[CommitEntry | MetaEntry] = field(default_factory=list)
    #: how many of ``entries`` come before the segment's last INDEX entry (format 4): a writer gives
    #: the ids of the COMMIT entries after them in the next one
    indexed: int = 0

    def runs(self) -> int:
        """How many keyframes the segment holds."""
        return self._totals()[0]

    def raw_bytes(self) -> int:
        return self._totals()[1]

    def _totals(self) -> tuple[int, int]:
        counted, runs, raw = self._counted
        for entry in self.entries[counted:]:
            if isinstance(entry, CommitEntry):
                runs += entry.mode in KEY_MODES
                raw += entry.raw_length
        self._counted = (len(self.entries), runs, raw)
        return runs, raw

    _counted: tuple[int, int, int] = (0, 0, 0)  # entries counted, runs, raw bytes (entries only grow)

    def unindexed_commits(self) -> list[str]:
        """Ids of the COMMIT entries after the last INDEX entry (``indexed``), in order: what a writer's
        next INDEX entry names. The caller must not change the list.

        Kept as entries come, as ``_totals`` is: each append asks, and a session of settings entries
        alone (50,000 tags) writes no INDEX entry, so a scan of everything since the last one made
        every append cost the whole segment."""
        since, scanned, ids = self._unindexed
        if since != self.indexed:  # a new INDEX entry (``indexed`` only moves forward): start after it
            since, scanned, ids = self.indexed, self.indexed, []
        for entry in self.entries[scanned:]:  # (a slice copies only what is new; islice would walk the rest)
            if isinstance(entry, CommitEntry):
                ids.append(entry.id)
        self._unindexed = (since, max(scanned, len(self.entries)), ids)
        return ids

    #: ``indexed`` when last asked, entries scanned, the ids found (entries only grow); a new list each segment
    _unindexed: tuple[int, int, list[str]] = field(default_factory=lambda: (0, 0, []), repr=False, compare=False)


class LostHistory(NamedTuple):
    """A segment after history lost from the store (``SessionLog.lost_history``)."""

    segment: int
    first: str  # its first snapshot
    parent: str  # that snapshot's parent, which no segment holds
    cause: str  # what came before it: a segment missing, cut short or holding no snapshot


class _Decoded(NamedTuple):
    """What a rebuild decoded of a segment version, through entry ``upto``: its raw stream, and
    where each snapshot's payload lies in it."""

    segment: int
    version: int
    upto: int
    raw: bytearray
    spans: dict[str, tuple[int, int]]


def _same_segments(now: list[SegmentInfo], listed: list[SegmentInfo]) -> bool:
    """Whether every segment ``listed`` is still there at the same version. A segment started since
    (after the last one listed) is an append, not a reclaim: the next refresh reads it."""
    last = listed[-1].segment if listed else -1
    return [(i.segment, i.version) for i in now if i.segment <= last] == [(i.segment, i.version) for i in listed]


def _without_payloads(entries: list[CommitEntry | MetaEntry]) -> list[CommitEntry | MetaEntry]:
    return [e.without_payload() if isinstance(e, CommitEntry) else e for e in entries]


class SessionLog:
    """The index of one session, refreshed from its backend on demand."""

    def __init__(self, backend: Backend, key: str, name: str) -> None:
        self.backend = backend
        self.key = key
        self.name = name
        self.segments: OrderedDict[int, LoadedSegment] = OrderedDict()
        self.order: list[str] = []  # snapshot ids in creation order
        self.commits: dict[str, IndexedCommit] = {}
        self.settings: dict[str, Any] = {}
        self.head: str | None = None
        self.tags: dict[str, str] = {}
        self._raw_cache: OrderedDict[tuple[int, int, int], tuple[dict[str, bytes], bytes]] = OrderedDict()
        #: what the last refresh appended to the open segment, payloads kept: (segment, version, from
        #: byte, to byte, entries), for a writer's decoder to take instead of reading them again
        self.fresh: tuple[int, int, int, int, list[CommitEntry | MetaEntry]] | None = None
        self._interrupted = False
        #: whether the refresh running read a segment or dropped one (``refresh``); not whether its
        #: index changed: a read on in a file a squash wrote again may add nothing and leave the index
        #: older than the listing it was read under
        self._read_segments = False
        #: the oldest segment indexed when only the newest were (``refresh(tail=True)``), else None
        self._tail_from: int | None = None
        #: while ``keep_decoded`` holds: the last rebuild's decoding, for the next rebuild in that
        #: segment to take from
        self._kept: _Decoded | None = None
        self._keeping = 0
        #: older segments ``own_segment`` read for this log while it stayed partial: once they add up
        #: to the session's segments, older snapshots are indexed instead (a handle walking the whole
        #: history would otherwise read the segments after each snapshot again for every snapshot)
        self.searched_alone = 0
        #: inside ``reading_once``: the newest segment as a refresh read it whole (segment, version,
        #: the read), for the rebuild that follows to decode instead of reading it again; taken once,
        #: and never held past the block (a handle that only indexes holds no segment's bytes)
        self._last_read: tuple[int, int, SegmentRead] | None = None
        self._noting_reads = 0

    # -- loading -------------------------------------------------------
    def where(self, segment: int) -> str:
        return f"session {self.name!r} segment {segment}"

    @property
    def partial(self) -> bool:
        """Whether only the newest segments are indexed (``refresh(tail=True)``): the head, and the
        snapshots of those segments, are known; the order, and anything older, are not."""
        return self._tail_from is not None

    def refresh(self, tail: bool = False, locked: bool = False) -> bool:
        """Read what changed since the last refresh; True when anything did.

        ``tail`` lets a log never read before index its newest segment alone when that segment
        settles the head and the settings (it starts with a checkpoint, holds the head, and is
        undamaged): reopening a session to read its head then costs one segment, not the whole
        log. A refresh without ``tail`` indexes everything. ``locked``: the caller holds the
        session's lock, so no reclaim runs meanwhile and one listing is enough.
        """
        changed = False
        for _attempt in range(READ_ATTEMPTS):
            try:
                listed = self.backend.segments(self.key)
                if tail and not self.segments and self._tail_from is None and len(listed) > 1:
                    self._tail_from = max(info.segment for info in listed)
                self._read_segments = False
                changed = self._refresh_settled(tail, listed) or changed
            except SegmentMissing:
                continue  # reclaimed between listing and reading: list again
            # A reader holds no lock: a reclaim may have dropped or squashed segments between the
            # listing and the reads, so that some were read before it and some after (an older
            # segment, then the eviction line's squashed away: evicted snapshots listed; or a
            # segment read on from where it was known, in the file a squash wrote in its place).
            # When this refresh read anything, the listing is taken again; a segment gone or at
            # another version means a mixed reading, and what changed is read again.
            if locked or not self._read_segments or _same_segments(self.backend.segments(self.key), listed):
                return changed
        raise CorruptObjectError(
            f"session {self.name!r}: segments kept changing while being read", {"session": self.name}
        )

    def reach(self, sid: str) -> None:
        """While only the newest segments are indexed (``partial``), index older ones, newest first,
        until they hold ``sid``: reading a snapshot a few segments back then costs those segments,
        not the whole log. Retention is counted from the newest commit and from the
        ``evicted_through`` mark (a mark not among the indexed segments names an older snapshot,
        or none stored), so whether ``sid`` is retained comes out as the whole log says.

        Adding older segments indexes those after them again (creation order starts at the oldest),
        so each round adds as many as are indexed: the indexed segments double, every segment is
        read once, and all the indexing together costs at most about twice the last round's. When a
        round would take every older segment, or what is indexed does not settle the head, the
        whole log is indexed instead."""
        if self._tail_from is None or sid in self.commits:
            return
        try:
            listed = self.backend.segments(self.key)
            while self._tail_from is not None and sid not in self.commits:
                older = sorted(info.segment for info in listed if info.segment < self._tail_from)
                take = max(1, len(self.segments))
                if take >= len(older):
                    self._refresh_once(False, listed)  # the whole log's index, each segment read once
                    break
                self._tail_from = older[-take]
                self._refresh_settled(True, listed)
        except SegmentMissing:  # reclaimed between listing and reading: index everything afresh
            self.refresh()
            return
        if not _same_segments(self.backend.segments(self.key), listed):
            self.refresh()  # a reclaim ran while the older segments were read (see ``refresh``)

    def _refresh_settled(self, tail: bool, listed: list[SegmentInfo]) -> bool:
        """``_refresh_once``, then the whole log when the segments indexed alone do not settle the
        head and the settings (they come from older segments); True when anything changed."""
        changed = self._refresh_once(tail, listed)
        if self._tail_from is not None and not self._tail_settles():
            self._refresh_once(False, listed)
            changed = True
        return changed

    def _tail_settles(self) -> bool:
        """Whether the segments indexed alone give the head and settings the whole log gives: the
        oldest of them starts with a checkpoint (every setting and tag), none is damaged, and the
        head is one of their snapshots."""
        first = self.segments.get(self._tail_from)  # type: ignore[arg-type]
        opening = first.entries[0] if first is not None and first.entries else None
        return (
            isinstance(opening, MetaEntry)
            and opening.checkpoint
            and all(segment.damage is None for segment in self.segments.values())
            and self.head in self.commits
        )

    def _refresh_once(self, tail: bool = False, listed: list[SegmentInfo] | None = None) -> bool:
        if listed is None:
            listed = self.backend.segments(self.key)
        was_partial = self._tail_from is not None
        if tail and was_partial:
            listed = [info for info in listed if info.segment >= self._tail_from]  # type: ignore[operator]
        else:
            self._tail_from = None  # the older segments are read below, and everything indexed again
        numbers = {info.segment for info in listed}
        # (segment, first new entry) of what was only appended after everything indexed: indexed on
        # its own instead of indexing the whole session again (a writer among others refreshes on
        # every commit)
        appended: list[tuple[int, int]] | None = []
        newest = max(self.segments) if self.segments else 0
        # a refresh that failed part-way (a segment reclaimed while read) left entries read but not
        # indexed: the next one indexes everything again
        changed = interrupted = self._interrupted or (was_partial and self._tail_from is None)
        self._interrupted = True
        for number in [n for n in self.segments if n not in numbers]:
            del self.segments[number]
            changed = True
            appended = None
            self._read_segments = True
        for info in listed:
            known = self.segments.get(info.segment)
            if known is not None and known.version == info.version and known.damage is not None:
                if known.stored == info.stored_bytes:
                    continue  # damaged and unchanged: read once, reported, not read again
                known = None
            if known is not None and known.version == info.version and info.stored_bytes < known.stored:
                # shorter than when it was read: what a server that lost its last transactions (an
                # asynchronous commit, a crash) or a file system that lost a file's tail (no fsync,
                # a power cut) leaves. Entries read then are gone: it is read again whole, so that the
                # index, and the next commit's parent and delta, are what the segment holds now
                known = None
            if known is not None and known.version == info.version:
                # an unchanged size means nothing new, unless unread bytes were counted in it: a torn
                # tail can be cut and replaced by an entry of its very length
                if known.stored == info.stored_bytes and not known.torn:
                    continue
                read = self.backend.read_segment(self.key, info.segment, known.end)
                self._read_segments = True  # (the file read on may be one a squash wrote in its place)
                fresh_tear = read.torn and not read.entries and (not known.torn or known.stored != info.stored_bytes)
                if read.damaged_at is not None or read.end < known.end or fresh_tear:
                    # not a clean continuation (or it ends before what was read of it, as above): read
                    # whole. A tail that does not frame right after the end read, with nothing before
                    # it, is a torn append, or the middle of an entry another handle appended after the
                    # segment lost what was read here: read on from here, the entries read would stay
                    # indexed, and the next append would cut the other handle's entry as a torn tail
                    known = None
                else:
                    # the read starts a group when the last entry read was an INDEX entry
                    starts_group = known.indexed == len(known.entries)
                    raw, vouched, covered = split_index(read.entries, from_start=starts_group)
                    if covered is not None:
                        known.indexed = len(known.entries) + covered
                    if raw:
                        entries, damage = self._decode_until_damage(
                            raw, info.segment, keep=True, vouched=vouched, earlier=known.entries
                        )
                        if appended is not None and info.segment == newest and damage is None:
                            appended.append((info.segment, len(known.entries)))
                            self._keep_fresh(info.segment, info.version, known.end, read.end, entries)
                        else:
                            appended = None
                        known.entries.extend(_without_payloads(entries))
                        known.damage = damage
                        changed = True
                    known.end, known.stored, known.torn = read.end, info.stored_bytes, read.torn
                    continue
            try:
                self._read_segments = True
                read = self.backend.read_segment(self.key, info.segment)
                if self._noting_reads and info is listed[-1] and read.damaged_at is None:
                    self._last_read = (info.segment, info.version, read)
            except SegmentMissing:
                raise
            except CorruptObjectError as exc:  # the segment's own header: this segment is lost, not the session
                self.segments[info.segment] = LoadedSegment(
                    info.segment, info.version, 0, info.stored_bytes, str(exc), False, []
                )
                changed, appended = True, None
                continue
            is_new = info.segment not in self.segments
            raw, vouched, covered = split_index(read.entries, from_start=True)
            entries, damage = self._decode_until_damage(raw, info.segment, vouched=vouched)
            if read.damaged_at is not None and damage is None:
                damage = f"{self.where(info.segment)} is damaged at byte {read.damaged_at}"
            # A damaged segment keeps what precedes the damage: one bad byte costs the rest of its
            # segment, not the session.
            self.segments[info.segment] = LoadedSegment(
                info.segment, info.version, read.end, info.stored_bytes, damage, read.torn, entries, covered or 0
            )
            changed = True
            if appended is not None and is_new and info.segment > newest and damage is None:
                appended.append((info.segment, 0))
            else:
                appended = None
        if changed:
            self.segments = OrderedDict(sorted(self.segments.items()))
            if appended is None or interrupted:
                self._reindex()
            else:
                for number, start in sorted(appended):
                    self._index_segment(number, self.segments[number], start)
                self._forget_missing()
        if appended is None or len(appended) > 1 or interrupted:
            self.fresh = None
        self._interrupted = False
        return changed

    def _keep_fresh(
        self, segment: int, version: int, start: int, end: int, entries: list[CommitEntry | MetaEntry]
    ) -> None:
        fresh = self.fresh
        if fresh is not None and fresh[:2] == (segment, version) and fresh[3] == start:
            start, entries = fresh[2], fresh[4] + entries
        if sum(len(e.payload) for e in entries if isinstance(e, CommitEntry)) > FRESH_LIMIT:
            self.fresh = None  # a reader that never writes: the bytes are read again if ever needed
            return
        self.fresh = (segment, version, start, end, entries)

    def _decode_until_damage(
        self,
        entries: list[bytes],
        segment: int,
        keep: bool = False,
        vouched: list[str | None] | None = None,
        earlier: list[CommitEntry | MetaEntry] | None = None,
    ) -> tuple[list[CommitEntry | MetaEntry], str | None]:
        """Decoded entries up to the first damaged one, and the damage. Payloads are dropped (the
        index keeps records; rebuilds read segments again) unless ``keep``. ``vouched``: the id an
        INDEX entry gives each entry, if any (``entries.split_index``); ``earlier``: the segment's
        entries before these (a read from further on), None when these start the segment."""
        if vouched is not None:
            decoded, damage = self._decode_vouched(entries, segment, keep, vouched, earlier)
            if decoded is not None:
                return decoded, damage
        where = self.where(segment)
        found: list[CommitEntry | MetaEntry] = []
        name = self.name
        for data in entries:
            try:
                found.append(decode_entry(data, name, where, keep))
            except CorruptObjectError as exc:
                return found, str(exc)
        return found, None

    def _decode_vouched(
        self,
        entries: list[bytes],
        segment: int,
        keep: bool,
        vouched: list[str | None],
        earlier: list[CommitEntry | MetaEntry] | None,
    ) -> tuple[list[CommitEntry | MetaEntry] | None, str | None]:
        """``_decode_until_damage`` taking the ids INDEX entries give; (None, None) when they disagree
        with what the records say of each other, and every id must be hashed instead.

        An id is taken unhashed only while the records agree with it: every commit after the
        segment's first names as its parent, and a delta as its base, a snapshot given or hashed
        earlier in the segment, and no id comes twice; and the last id given is hashed. An INDEX
        entry that misstates an id is then found unless the snapshot has no child in its segment
        (a branch left by a rollback): that one is refused when read, and ``verify`` names it."""
        where = self.where(segment)
        name = self.name
        decoded: list[CommitEntry | MetaEntry] = []
        seen: set[str] = set()
        # the segment's commits read before these are indexed: looked up there, not gathered again
        indexed = self.commits if earlier else {}
        first = not any(isinstance(e, CommitEntry) for e in earlier or ())

        def known(sid: str | None) -> bool:
            if sid is None:
                return False
            commit = indexed.get(sid)
            return sid in seen or (commit is not None and commit.segment == segment)

        last_given: CommitEntry | None = None
        for position, data in enumerate(entries):
            sid = vouched[position]
            try:
                entry = vouched_entry(data, sid, name, where, keep) if sid else decode_entry(data, name, where, keep)
            except CorruptObjectError as exc:
                return decoded, str(exc)
            if isinstance(entry, CommitEntry):
                if known(entry.id):
                    return None, None
                if not first and (not known(entry.parent) or (entry.base is not None and not known(entry.base))):
                    return None, None  # (a keyframe after a rollback to another segment: hashed, as before)
                first = False
                seen.add(entry.id)
                if sid:
                    last_given = entry
            decoded.append(entry)
        if last_given is not None:
            try:
                last_given.checked_record  # noqa: B018  (hashed against its id now)
            except CorruptObjectError:
                return None, None
        return decoded, None

    def _reindex(self) -> None:
        self.order, self.commits, self.settings, self.tags, self.head = [], {}, {}, {}, None
        for number, segment in self.segments.items():
            self._index_segment(number, segment, 0)
        self._forget_missing()

    def _index_segment(self, number: int, segment: LoadedSegment, start: int) -> None:
        """Add a segment's entries from ``start`` on to the index, in order."""
        entries = segment.entries
        for ordinal in range(start, len(entries)):
            entry = entries[ordinal]
            if isinstance(entry, MetaEntry):
                try:
                    self._apply_meta(entry)
                except CorruptObjectError as exc:
                    # a malformed settings entry is damage at that entry: the rest of the
                    # segment is not read, as for any other damage
                    segment.damage = segment.damage or str(exc)
                    del entries[ordinal:]
                    self.fresh = None
                    return
                continue
            self.index_commit(entry, number, ordinal)

    def index_commit(self, entry: CommitEntry, segment: int, ordinal: int) -> None:
        """Index one commit entry of ``segment`` (the ``ordinal``-th entry) and make it the head."""
        if entry.id not in self.commits:
            self.order.append(entry.id)
        base = self.commits.get(entry.base) if entry.base is not None else None
        depth = 0 if entry.base is None else base.depth + 1 if base is not None else entry.record.depth
        self.commits[entry.id] = IndexedCommit(
            entry.id, entry, entry.mode, entry.raw_length, segment, ordinal, entry.base, depth
        )
        self.head = entry.id

    def _forget_missing(self) -> None:
        """A head or tag that names a snapshot no longer stored is forgotten."""
        if self._tail_from is not None:
            return  # it may be stored in a segment not indexed
        if self.head is not None and self.head not in self.commits:
            self.head = self.order[-1] if self.order else None
        if any(sid not in self.commits for sid in self.tags.values()):
            self.tags = {tag: sid for tag, sid in self.tags.items() if sid in self.commits}

    def _apply_meta(self, meta: MetaEntry) -> None:
        body = check_settings(meta.body, self.name)
        if meta.checkpoint:
            self.settings = {k: v for k, v in body.items() if k not in ("checkpoint", "tags", "head")}
            self.tags = dict(body.get("tags") or {})
            if body.get("head") is not None:
                self.head = body["head"]
            return
        for key, value in body.items():
            if key == "head":
                self.head = value
            elif key == "tag":
                name, sid = value
                if sid is None:
                    self.tags.pop(name, None)
                else:
                    self.tags[name] = sid
            else:
                self.settings[key] = value

    # -- questions -----------------------------------------------------
    @property
    def max_snapshots(self) -> int:
        return int(self.settings.get("max_snapshots", DEFAULT_MAX_SNAPSHOTS))

    def evictable(self) -> bool:
        """Whether retention leaves anything out (else there is nothing to reclaim)."""
        return len(self.order) > self.max_snapshots or self.settings.get("evicted_through") is not None

    def eviction_mark(self) -> str | None:
        """The newest snapshot behind the current limit's window, tagged or not, when it is newer
        than the recorded ``evicted_through`` (None otherwise): what to record so that a
        higher limit, or an untag after one, never brings an evicted snapshot back. The mark only
        moves forward: a snapshot evicted once stays evicted even when it is tagged again later
        (as a head the limit evicted may be)."""
        order = self.order
        mark = self.settings.get("evicted_through")
        floor = order.index(mark) + 1 if mark in self.commits else 0
        newest_out = self.window_start() - 1
        # a tagged snapshot behind the window is kept by its tag alone: the mark covers it too, so that
        # once its tag goes it goes (its tag kept it from eviction, not the window)
        return order[newest_out] if newest_out >= floor else None

    def window_start(self) -> int:
        """Where in ``order`` the window of retained snapshots starts (tags aside)."""
        order = self.order
        start = 0
        forgotten_through = self.settings.get("evicted_through")
        if forgotten_through in self.commits:
            start = order.index(forgotten_through) + 1
        return max(start, len(order) - self.max_snapshots)

    def retained(self) -> list[str]:
        """Retained snapshots in creation order: the last ``max_snapshots`` not forgotten, and tagged ones."""
        order = self.order
        recent = order[self.window_start() :]
        tagged = set(self.tags.values())
        if not tagged:
            return list(recent)
        keep = set(recent) | tagged
        return [sid for sid in order if sid in keep]

    def readable(self) -> list[str]:
        """The retained snapshots, then the head when the limit evicted it: a head stays readable
        (commits go on from it)."""
        found = self.retained()
        if self.head is not None and self.head not in found:
            found.append(self.head)
        return found

    def lost_history(self) -> list[LostHistory]:
        """Each segment that
        follows a segment missing from the numbering, cut short (a torn last entry) or holding no
        snapshot, and whose first snapshot names a parent no segment holds: history lost from the
        store, the snapshots between that parent and the segment gone without a word to a reader.

        Judged only where retention has evicted nothing (no mark, no more commits than the limit).
        Elsewhere both are ordinary: reclaim drops whole segments, and a rollback's child can outlive
        its evicted parent. Not so here: a segment between two stored ones is dropped only when an
        older one stays, and then the eviction line stays too, which puts more commits in the log than
        the limit. (A merge import can bring in a history whose parent no segment holds, but not after
        a segment cut short or missing; a crash's torn append is not followed by a parent it never wrote.)
        """
        if self.partial or self.settings.get("evicted_through") is not None or len(self.order) > self.max_snapshots:
            return []
        found = []
        numbers = sorted(self.segments)
        for before, number in itertools.pairwise(numbers):
            previous = self.segments[before]
            if number != before + 1:
                gap = f"{before + 1} is" if number == before + 2 else f"{before + 1}-{number - 1} are"
                why = f"segment {gap} missing"
            elif previous.damage is not None:
                continue  # reported as damage: what it held past the damage is lost with it
            elif previous.torn:
                why = f"segment {before} ends in a cut-short entry"
            elif not any(isinstance(entry, CommitEntry) for entry in previous.entries):
                why = f"segment {before} holds no snapshot"
            else:
                continue
            first = next((e for e in self.segments[number].entries if isinstance(e, CommitEntry)), None)
            parent = first.record.parent if first is not None else None
            if first is not None and parent is not None and parent not in self.commits:
                found.append(LostHistory(number, first.id, parent, why))
        return found

    @property
    def last_segment(self) -> LoadedSegment | None:
        return next(reversed(self.segments.values())) if self.segments else None

    def keyframe_ordinals(self, number: int) -> dict[str, int]:
        """For each snapshot of a segment, the entry index of the keyframe its chain starts from."""
        found: dict[str, int] = {}
        for ordinal, entry in enumerate(self.segments[number].entries):
            if isinstance(entry, CommitEntry):
                if entry.mode in KEY_MODES:
                    found[entry.id] = ordinal
                elif entry.base in found:
                    found[entry.id] = found[entry.base]
        return found

    def chain(self, sid: str) -> list[IndexedCommit]:
        """The commits from ``sid``'s keyframe to ``sid``, in order (all in one segment): each
        commit's payload patches the state of the one before it (its base)."""
        path: list[IndexedCommit] = []
        current: str | None = sid
        seen: set[str] = set()
        while True:
            if current is None or current in seen or current not in self.commits:
                raise CorruptObjectError(
                    f"snapshot {sid} has a broken parent chain at {current}",
                    {"snapshot": sid, "object": current, "reason": "broken chain"},
                )
            seen.add(current)
            commit = self.commits[current]
            path.append(commit)
            if commit.mode in KEY_MODES:
                path.reverse()
                if any(c.segment != commit.segment for c in path):
                    raise CorruptObjectError(
                        f"snapshot {sid}: its chain leaves its segment", {"snapshot": sid, "reason": "broken chain"}
                    )
                return path
            current = commit.base

    # -- reading payloads ----------------------------------------------
    @contextmanager
    def reading_once(self) -> Iterator[None]:
        """Within the block, a rebuild of the newest segment decodes the bytes a refresh in the
        block read of it (a session opened and read at once reads that segment once); nothing
        read is held after it."""
        self._noting_reads += 1
        try:
            yield
        finally:
            self._noting_reads -= 1
            if not self._noting_reads:
                self._last_read = None

    def keep_decoded(self) -> None:
        """Until as many ``release_decoded``: a rebuild keeps what it decoded of its segment, and a
        later rebuild of a snapshot before it in the same segment version takes its payloads from
        there instead of decoding the segment again (a reader that rebuilds the head, then an
        older snapshot the head names). Memory holds what is kept until it is released."""
        self._keeping += 1

    def release_decoded(self) -> None:
        self._keeping -= 1
        if not self._keeping:
            self._kept = None

    def emptied(self) -> SessionLog:
        """A log of the same session with nothing indexed yet, asked to keep decoded segments as
        this one was (a ``keeping_decoded`` block open around it still ends on it)."""
        fresh = SessionLog(self.backend, self.key, self.name)
        fresh._keeping = self._keeping
        return fresh

    def _kept_payloads(self, number: int, upto: int, wanted: list[str]) -> dict[str, memoryview] | None:
        kept, loaded = self._kept, self.segments.get(number)
        if kept is None or loaded is None or upto > kept.upto:
            return None
        if (kept.segment, kept.version) != (number, loaded.version):
            return None
        spans = kept.spans
        if any(sid not in spans for sid in wanted):
            return None
        view = memoryview(kept.raw)
        return {sid: view[spans[sid][0] : spans[sid][1]] for sid in wanted}

    def chain_payloads(self, number: int, upto: int, wanted: list[str]) -> Mapping[str, bytes | memoryview]:
        """The raw payloads of ``wanted`` (a rebuild's chain) in one segment, decoding it through
        entry ``upto``, for the rebuild to parse and drop: views of the decoded stream or copies
        (``SegmentReader.chain_payloads`` says which)."""
        if self._kept is not None:
            found = self._kept_payloads(number, upto, wanted)
            if found is not None:
                return found
            self._kept = None  # let go before decoding another: one stream held at a time
        loaded = self.segments.get(number)
        reader, end = self._decode(number, loaded, upto, None if self._keeping else set(wanted))
        if self._keeping and end is not None and loaded is not None:
            self._kept = _Decoded(number, loaded.version, upto, reader.raw, reader.spans)
            return reader.chain_payloads(wanted, kept=True)
        return reader.chain_payloads(wanted)

    def segment_payloads(self, number: int) -> tuple[dict[str, bytes], bytes]:
        """Every commit's raw payload in one segment, and the segment's raw stream."""
        loaded = self.segments.get(number)
        cache_key = (number, loaded.version, loaded.end) if loaded is not None else None
        cached = self._raw_cache.get(cache_key) if cache_key is not None else None
        if cached is not None:
            self._raw_cache.move_to_end(cache_key)  # type: ignore[arg-type]
            return cached
        reader, end = self._decode(number, loaded)
        raw = bytes(reader.raw)
        payloads = {sid: raw[start:stop] for sid, (start, stop) in reader.spans.items()}
        if cache_key is not None and end == cache_key[2]:
            self._raw_cache[cache_key] = (payloads, raw)
            while len(self._raw_cache) > RAW_CACHE_SEGMENTS:
                self._raw_cache.popitem(last=False)
        return payloads, raw

    def _decode(
        self, number: int, loaded: LoadedSegment | None, upto: int | None = None, wanted: set[str] | None = None
    ) -> tuple[SegmentReader, int | None]:
        """A reader holding one segment's raw stream decoded (through entry ``upto`` when given),
        and the end of the file it read when it read whole (damage ends the stream where it lies).
        With ``wanted``, it holds those snapshots' payloads and what decoding needed last, not the
        whole stream: late in a long segment the stream is many states, and memory the process
        touches for the first time costs a page fault a page (docs/design.md)."""
        read = self._take_last_read(number, loaded)
        if read is None:
            read = self.backend.read_segment(self.key, number)
        reader = SegmentReader(self.where(number), keep_only=wanted)
        known = loaded.entries if loaded is not None else []
        whole = read.damaged_at is None
        entries = without_index(read.entries)
        try:
            self._decode_payloads(entries if upto is None else entries[: upto + 1], known, reader, number)
        except CorruptObjectError:
            whole = False  # what decoded before the damage is returned; the rest is lost
        return reader, read.end if whole else None

    def _take_last_read(self, number: int, loaded: LoadedSegment | None) -> SegmentRead | None:
        """The read a refresh just indexed this segment from, if it is what the index holds."""
        last, self._last_read = self._last_read, None
        if last is None or loaded is None or last[:2] != (number, loaded.version) or last[2].end != loaded.end:
            return None
        return last[2]

    def _decode_payloads(
        self, entries: list[bytes], known: list[CommitEntry | MetaEntry], reader: SegmentReader, number: int
    ) -> None:
        items: list[tuple[str, int, int, bytes]] = []
        try:
            for ordinal, data in enumerate(entries):
                indexed = known[ordinal] if ordinal < len(known) else None
                if isinstance(indexed, CommitEntry):  # the index checked this entry's record: skip decoding it
                    parts = commit_payload(data, indexed.state_hash)
                    if parts is None:
                        # rewritten (squashed) since it was indexed: the entries no longer line up with
                        # the index, and pairing them would give payloads to the wrong snapshots
                        raise SegmentMissing(
                            f"{self.where(number)} changed under its index (rewritten since it was read)",
                            {"segment": number, "reason": "changed"},
                        )
                    items.append((indexed.id, *parts))
                    continue
                entry = decode_entry(data, self.name, self.where(number))
                if isinstance(entry, CommitEntry):
                    items.append((entry.id, entry.mode, entry.raw_length, entry.payload))
        finally:
            reader.decompress_all(items)  # what precedes a bad entry is still decoded

    def rebuild(self, sid: str) -> Any:
        """The verified full state of a stored snapshot: a fresh object the caller owns."""
        if sid not in self.commits:
            raise SnapshotNotFound(f"snapshot {sid} is not stored in session {self.name!r}", {"snapshot": sid})
        for _attempt in range(READ_ATTEMPTS):
            try:
                path = self.chain(sid)
                payloads = self.chain_payloads(path[0].segment, path[-1].ordinal, [c.id for c in path])
                return self.apply_chain(path, payloads)
            except (SegmentMissing, CorruptObjectError):
                # reclaimed or squashed since the index was read (the entries no longer match it):
                # read the index again and retry; damage that stays after that is real. What the
                # failed rebuild decoded is not kept: it may be a newer file read against the old index
                self._kept = None
                number = self.commits[sid].segment if sid in self.commits else -1
                before = self.segments[number].version if number in self.segments else None
                self.refresh()
                if (
                    sid in self.commits
                    and self.segments.get(self.commits[sid].segment) is not None
                    and (self.segments[self.commits[sid].segment].version == before)
                ):
                    raise
                if sid not in self.commits:
                    raise SnapshotNotFound(
                        f"snapshot {sid} was reclaimed from session {self.name!r}", {"snapshot": sid}
                    ) from None
        raise CorruptObjectError(f"session {self.name!r}: segments kept vanishing", {"session": self.name})

    def apply_chain(self, path: list[IndexedCommit], payloads: Mapping[str, bytes | memoryview]) -> Any:
        missing = [c.id for c in path if c.id not in payloads]
        if missing:
            segment = self.segments.get(path[0].segment)
            why = (segment.damage if segment is not None else None) or f"{self.where(path[0].segment)} is damaged"
            raise CorruptObjectError(
                f"snapshot {path[-1].id} cannot be rebuilt: {why} (the payload of {missing[0]} is lost)",
                {"snapshot": path[-1].id, "object": missing[0], "segment": path[0].segment, "reason": "damage"},
            )
        try:
            state = codec.loads(payloads[path[0].id])
        except (ValueError, RecursionError):
            raise CorruptObjectError(
                f"the keyframe of snapshot {path[0].id} is not JSON (damage)",
                {"snapshot": path[-1].id, "object": path[0].id, "segment": path[0].segment, "reason": "damage"},
            ) from None
        # The keyframe and every value a delta carries come from canonical bytes, keys sorted: with
        # the objects that gained a member out of order sorted back, the state's plain serialization
        # is its canonical one, and the hash check skips orjson's sorting, which costs three times
        # the serialization on a state out of order (docs/design.md, "Diff, patch and memory").
        reordered: list[Any] = []
        for commit in path[1:]:
            state = apply_delta_payload(commit, payloads[commit.id], state, reordered)
        check_state(state, path[-1].entry.checked_record.state, path[-1].id, sort_objects(reordered))
        return state


_MAX_INT64 = 2**63 - 1


def is_snapshot_id(value: Any) -> bool:
    """Whether ``value`` is a whole snapshot id: 32 lowercase hex digits."""
    return isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def check_settings(body: dict[str, Any], session: str) -> dict[str, Any]:
    """A settings entry's values, each checked where it is read: a hostile value is damage, not a crash later."""

    def bad(key: str) -> CorruptObjectError:
        return CorruptObjectError(
            f"session {session!r}: settings entry has a malformed {key!r}",
            {"session": session, "reason": f"malformed {key}"},
        )

    for key, value in body.items():
        if key == "max_snapshots":
            if type(value) is not int or not 1 <= value <= _MAX_INT64:
                raise bad(key)
        elif key in ("head", "evicted_through"):
            if value is not None and not is_snapshot_id(value):
                raise bad(key)
        elif key == "tags":
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and is_snapshot_id(v) for k, v in value.items()
            ):
                raise bad(key)
        elif key == "tag":
            if not (
                isinstance(value, list)
                and len(value) == 2
                and isinstance(value[0], str)
                and (value[1] is None or is_snapshot_id(value[1]))
            ):
                raise bad(key)
        elif (key == "name" and not isinstance(value, str)) or (key == "checkpoint" and value is not True):
            raise bad(key)
        # other keys: settings of a later version, kept as they are and ignored here
    return body


def apply_delta_payload(
    commit: IndexedCommit, payload: bytes | memoryview, state: Any, reordered: list[Any] | None = None
) -> Any:
    """Apply a stored delta in place on the rebuild path, naming the snapshot when it does not apply.

    The result is always checked against a recorded hash afterwards, so this applier skips the
    per-operation checks of ``delta.apply_patch`` that only shape error messages: an operation
    it cannot apply, or one that applies wrongly, ends as a CorruptObjectError either way.
    ``reordered`` collects what ``apply_trusted`` says about key order.
    """
    try:
        ops = codec.loads(payload)
        if not isinstance(ops, list):
            raise PatchError("a delta is not a list of operations")
        return apply_trusted(state, ops, reordered)
    except (PatchError, ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError) as exc:
        raise CorruptObjectError(
            f"delta of snapshot {commit.id} does not apply: {exc}",
            {"object": commit.id, "snapshot": commit.id, "reason": "delta does not apply"},
        ) from None


def apply_trusted(doc: Any, ops: list[Any], reordered: list[Any] | None = None) -> Any:
    """RFC 6902 add/remove/replace, and a move between objects' members, applied with the fewest
    steps; other operations go to ``apply_patch``.

    Only for patches whose result is verified against a hash: it raises plain exceptions on
    malformed operations and does not insist on canonical array indices. With ``reordered``,
    each object that gains a member sorting before its last one is appended to it, and
    ``UNORDERED`` when an operation may have put members out of order anywhere (``sort_objects``).
    """
    pointers = _POINTERS
    for op in ops:
        kind = op["op"]
        path = op["path"]
        if kind not in _FAST_OPS or not path:
            if kind == "move" and _moved_member(doc, op, reordered):
                continue
            if reordered is not None:
                reordered.append(UNORDERED)
            doc = apply_patch(doc, [op], in_place=True, copy_values=False)
            continue
        found = pointers.get(path)
        if found is None:
            found = _split_pointer(path)
        walk, key = found
        parent = doc
        for token, index in walk:
            # an object takes the token as its key; an array the index worked out when the pointer
            # was split, or, for a token like "+1" that was not worked out, int() of it, as always
            parent = parent[token if type(parent) is not list else int(token) if index is None else index]
        if type(parent) is dict:
            if kind == "replace":
                if key not in parent:
                    raise KeyError(path)
                parent[key] = op["value"]
            elif kind == "remove":
                del parent[key]
            else:
                if reordered is not None and key not in parent and parent and key < next(reversed(parent)):
                    reordered.append(parent)
                parent[key] = op["value"]
        elif type(parent) is list:
            if kind == "add":
                if key == "-":
                    parent.append(op["value"])
                else:
                    index = int(key)
                    if not 0 <= index <= len(parent):
                        raise IndexError(path)
                    parent.insert(index, op["value"])
            elif kind == "replace":
                parent[_list_index(parent, key)] = op["value"]
            else:
                del parent[_list_index(parent, key)]
        else:
            raise TypeError(f"pointer {path!r} goes through a {type(parent).__name__}")
    return doc


def _moved_member(doc: Any, op: dict[str, Any], reordered: list[Any] | None) -> bool:
    """Apply a ``move`` from one object's member to another's (a member renamed, as the diff writes
    it), noting in ``reordered`` an object that gains a member sorting before its last; False, with
    nothing changed, for any other move (``apply_patch`` takes it)."""
    origin, path = op.get("from"), op["path"]
    if type(origin) is not str or not origin or origin == path or path.startswith(origin + "/"):
        return False
    source, gone = _member_of(doc, origin)
    target, key = _member_of(doc, path)
    if type(source) is not dict or type(target) is not dict or gone not in source:
        return False
    value = source.pop(gone)
    if reordered is not None and key not in target and target and key < next(reversed(target)):
        reordered.append(target)
    target[key] = value
    return True


def _member_of(doc: Any, path: str) -> tuple[Any, str]:
    """The container a pointer's last token is in, and that token. (``apply_trusted`` walks its
    add, remove and replace inline: a call for each operation would cost a long rebuild.)"""
    walk, key = _POINTERS.get(path) or _split_pointer(path)
    parent = doc
    for token, index in walk:
        parent = parent[token if type(parent) is not list else int(token) if index is None else index]
    return parent, key


#: JSON pointer -> (each token before the last with its array index when it is all digits, the last
#: token): a session's deltas name the same few paths over and over (``/transcript/-``, a turn
#: counter), and splitting and unescaping them was a third of applying a chain
_POINTERS: dict[str, tuple[tuple[tuple[str, int | None], ...], str]] = {}
_POINTERS_KEPT = 4096
_POINTER_KEPT_LENGTH = 256


def _split_pointer(path: str) -> tuple[tuple[tuple[str, int | None], ...], str]:
    tokens = path.split("/")
    if tokens[0]:
        raise PatchError(f"pointer {path!r} does not start with '/'")
    if "~" in path:
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in tokens]
    # an index worked out only where int() surely takes it: a token is an object's key as often as
    # an array's index, and a key of thousands of digits is a key (int() refuses over 4,300 digits)
    walk = tuple((t, int(t) if len(t) < 19 and t.isdigit() and t.isascii() else None) for t in tokens[1:-1])
    found = (walk, tokens[-1])
    if len(path) <= _POINTER_KEPT_LENGTH:  # the cache stays small whatever the keys
        if len(_POINTERS) >= _POINTERS_KEPT:
            _POINTERS.clear()
        _POINTERS[path] = found
    return found


#: in ``apply_trusted``'s ``reordered``: some object may be out of order, where is not known
UNORDERED: Any = object()


def sort_objects(reordered: list[Any]) -> bool:
    """Put back in sorted order each object ``apply_trusted`` named in ``reordered``; whether the
    whole state is now in canonical order (as when every value came from canonical bytes)."""
    if any(found is UNORDERED for found in reordered):
        return False
    done: set[int] = set()
    for found in reordered:
        if id(found) not in done:
            done.add(id(found))
            members = sorted(found.items())
            found.clear()
            found.update(members)
    return True


_FAST_OPS = frozenset(("add", "remove", "replace"))


def _list_index(parent: list[Any], key: str) -> int:
    index = int(key)
    if not 0 <= index < len(parent):
        raise IndexError(key)
    return index


def check_state(state: Any, expected_hash: str, snapshot_id: str, ordered: bool = False) -> None:
    """Refuse a rebuilt state whose canonical bytes do not hash to the recorded state hash.

    ``ordered`` says the state's objects are believed to be in canonical key order, so its plain
    serialization is tried first (the same bytes, found without sorting); a state whose plain
    bytes hash to the recorded hash is the recorded state. When they do not, the sorted bytes decide.
    """
    if ordered and codec.object_id(codec.dumps_as_ordered(state)) == expected_hash:
        return
    actual = codec.object_id(codec.dumps(state))
    if actual != expected_hash:
        raise CorruptObjectError(
            f"snapshot {snapshot_id} rebuilds to a state hashing {actual}, its record says {expected_hash}",
            {"object": snapshot_id, "snapshot": snapshot_id, "reason": "state hash mismatch", "actual": actual},
        )
