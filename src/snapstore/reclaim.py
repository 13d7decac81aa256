"""Reclaiming space: dropping whole segments nobody needs, squashing the ones that still matter.

A snapshot must stay readable when it is retained, the head, or tagged; and the
eviction line (the newest snapshot retention evicted) stays stored while anything
older does, so that the window is counted from it. A segment holding none of
those is dropped whole; the open (last) segment is always kept. A kept segment
whose first runs (keyframe and chain) hold none of them is *squashed*: rewritten
to start at its first needed run, with an independent keyframe, every later
payload compressed again and every record unchanged, so ids stay; a later
snapshot whose chain started before the cut (one retention let go) goes with the
runs cut away. Nothing else rewrites stored history. Everything here runs under
the session's write lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from .entries import (
    DELTA_WINDOW,
    INDEX_EVERY,
    KEY_MODES,
    CommitEntry,
    DeltaStream,
    MetaEntry,
    against_base,
    compress_keyframe,
    decode_entry,
    encode_commit,
    encode_index,
    encode_meta,
    without_index,
)
from .history import SessionLog

if TYPE_CHECKING:
    from .session import Session


class _Cut(NamedTuple):
    """Where reclaim cuts one segment around the wanted snapshots."""

    at: int | None  # entry index of the earliest keyframe a wanted snapshot rebuilds from (None: none wanted)
    starts: dict[str, int]  # each snapshot's keyframe entry index (``SessionLog.keyframe_ordinals``)
    dead_runs: int  # whole runs before ``at``: squashed away when any

    def survivors(self, commits: list[str]) -> list[str]:
        """Of the segment's ``commits``, the ones still stored after reclaim."""
        at = self.at
        if not self.dead_runs or at is None:
            return commits  # not squashed: every commit of it stays
        return [sid for sid in commits if self.starts.get(sid, -1) >= at]


def _cut(log: SessionLog, number: int, wanted: set[str]) -> _Cut:
    starts = log.keyframe_ordinals(number)
    at = min((starts[sid] for sid in wanted if sid in starts), default=None)
    before = log.segments[number].entries[:at] if at is not None else []
    dead = sum(1 for e in before if isinstance(e, CommitEntry) and e.mode in KEY_MODES)
    return _Cut(at, starts, dead)


class Reclaimer:
    def __init__(self, level: int) -> None:
        self.level = level

    def wanted(self, log: SessionLog) -> set[str]:
        """Snapshots that must stay readable: retained, tagged, and the head."""
        wanted = set(log.retained()) | set(log.tags.values())
        if log.head is not None:
            wanted.add(log.head)
        return wanted

    def reclaim(self, session: Session, log: SessionLog) -> int:
        """Squash and drop what retention left behind; returns how many segments were dropped."""
        last = log.last_segment
        if last is None or not log.evictable():
            return 0
        wanted = self.wanted(log)
        keep = {log.commits[sid].segment for sid in wanted if sid in log.commits} | {last.number}
        line = self._eviction_line(log)
        if line is not None and line not in wanted:
            survivors = self._survivors(log, wanted, keep)
            if line not in survivors and any(sid in survivors for sid in log.order[: log.order.index(line)]):
                wanted.add(line)  # stored, not listed: the window still starts after it
                keep.add(log.commits[line].segment)
        # oldest first: a crash part-way leaves newer segments, never an older one without the
        # eviction line (dropped only when nothing older stays)
        drop = sorted(n for n in log.segments if n not in keep)
        if drop:
            session._store.backend.drop_segments(session.key, drop)
        squashed = False
        for number in sorted(keep):
            cut = _cut(log, number, wanted)
            if cut.dead_runs:
                self.squash(session, log, number, cut)
                squashed = True
        if drop or squashed:
            log.refresh(locked=True)
            session.forget_open_segment()
        return len(drop)

    @staticmethod
    def _eviction_line(log: SessionLog) -> str | None:
        """The newest snapshot retention has evicted, as far as the stored commits tell: the one a
        raised limit would record (``SessionLog.eviction_mark``), else the recorded mark.

        Where the window starts is counted from it. When reclaim dropped it but kept an older
        snapshot (tagged, a head, or a commit of a kept run), a raised limit or a tag leaving
        would count from that older one and bring back what the line had evicted: so the line
        is kept stored whenever anything older is (one run at most; it is never listed). Kept
        before anything is dropped, it also holds when a crash stops reclaim part-way.
        """
        mark = log.eviction_mark()
        if mark is None:
            recorded = log.settings.get("evicted_through")
            mark = recorded if recorded in log.commits else None
        return mark

    @staticmethod
    def _survivors(log: SessionLog, wanted: set[str], keep: set[int]) -> set[str]:
        """The snapshots still stored after reclaiming around ``wanted`` (``keep``: the segments kept)."""
        found: set[str] = set()
        for number in keep:
            if number in log.segments:
                commits = [e.id for e in log.segments[number].entries if isinstance(e, CommitEntry)]
                found.update(_cut(log, number, wanted).survivors(commits))
        return found

    def squash(self, session: Session, log: SessionLog, number: int, cut: _Cut) -> None:
        """Rewrite a segment from its first needed run (``cut``) on; every payload is compressed again."""
        payloads, _raw = log.segment_payloads(number)
        read = session._store.backend.read_segment(session.key, number)
        if log.segments[number].damage is not None or read.damaged_at is not None:
            return  # a damaged segment is left as it is: verify reports it, nothing rewrites around it
        entries = [decode_entry(data, log.name, log.where(number)) for data in without_index(read.entries)]
        start, starts_at = cut.at, cut.starts
        assert start is not None
        # a commit after the cut whose chain starts before it (a snapshot retention let go, stored
        # against a parent or a base the cut removes) could never be rebuilt again: it goes too
        # the settings entries before the cut stay (the segment's checkpoint first); commits go
        rewritten = [encode_meta(e.body) for e in entries[:start] if isinstance(e, MetaEntry)]
        raw = bytearray()
        run_start = 0
        stream: DeltaStream | None = None
        indexing, group = session._store.index_entries, []
        for entry in entries[start:]:
            if isinstance(entry, MetaEntry):
                rewritten.append(encode_meta(entry.body))
                continue
            if starts_at.get(entry.id, -1) < start:
                continue
            payload = payloads.get(entry.id)
            if payload is None:
                return  # a payload that does not decode: leave the segment for verify to report
            if entry.mode in KEY_MODES:
                mode, compressed = compress_keyframe(payload, self.level, bytes(raw[run_start:]) if raw else None)
                stream, run_start = None, len(raw)
            else:
                if stream is None:
                    stream = DeltaStream(self.level, bytes(raw[-DELTA_WINDOW:]))
                mode, compressed = stream.compress(payload)
            based = entry.base if against_base(entry.mode, entry.record) else None
            rewritten.append(encode_commit(entry.record, mode, len(payload), compressed, based))
            raw += payload
            group.append(entry.id)
            if indexing and len(group) >= INDEX_EVERY:
                rewritten.append(encode_index(group))
                group = []
        if indexing and group:
            rewritten.append(encode_index(group))  # a rewritten segment is indexed whole
        session._store.backend.replace_segment(session.key, number, rewritten)
