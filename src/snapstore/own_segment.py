"""Rebuilding an older snapshot from its own segment, without indexing the segments after it.

A handle that indexed only a session's newest segments (``SessionLog.partial``) and is asked for
an older snapshot would index every segment from that snapshot's to the newest
(``SessionLog.reach``), decoding each entry and hashing its record for its id: at a thousand
LangGraph turns, 3,000 entries to read one checkpoint 200 steps back. Two facts make most of that
unnecessary when retention cannot have evicted anything:

* whether a snapshot is readable then depends only on whether it is stored before any damaged
  entry of its segment (format.md §4.5): no ``evicted_through`` mark, and a limit above any
  count of commits the segments could hold;
* a snapshot's chain lies in its own segment (a delta never names a base in another one), and
  the record of its child names its id, raw, as the parent (or, stored against it, as the base).

So the segments older than the indexed ones are read newest first and searched for those 16
bytes, entry by entry, without decoding anything; where a child is found, the entries before it
are checked as an index checks them (damage there makes the snapshot unreadable) and decoded
one by one, newest first, until one hashes to the id; then the chain back to its
keyframe, and the payloads up to it are decompressed as a rebuild always does. A search reads
at most ``SEARCH_SEGMENTS`` older segments, and a handle stops searching once its searches have
read as many segments as the session has (``SessionLog.searched_alone``): one reading many older
snapshots indexes the log once instead of reading it again for each. Anything
unexpected (no child found, damage, a chain that breaks, a hash that does not check) gives up and
leaves the answer to the whole-log path, which alone says why a snapshot cannot be read.
"""

from __future__ import annotations

from typing import Any

from .backends.base import SegmentInfo, SegmentMissing
from .entries import (
    COMMIT,
    KEY_MODES,
    RECORD_SIZE,
    CommitEntry,
    SegmentReader,
    check_entry,
    commit_payload,
    decode_entry,
    names_snapshot,
    split_index,
    vouched_entry,
)
from .errors import CorruptObjectError
from .history import IndexedCommit, SessionLog, check_settings

#: what ``rebuild_from_own_segment`` returns when it leaves the answer to the whole-log path
UNDECIDED: Any = object()

#: the fewest bytes a commit adds to a segment's stored size on any engine: its record (the
#: directory engine also counts a frame around it, the memory engine does not)
_MIN_COMMIT_BYTES = RECORD_SIZE
#: older segments one read searches, newest first, before it leaves the snapshot to the index
SEARCH_SEGMENTS = 4
_COMMIT = bytes([COMMIT])


def rebuild_from_own_segment(log: SessionLog, sid: str) -> Any:
    """The verified state of ``sid``, a full snapshot id not among ``log``'s indexed segments, read
    from its own segment alone; ``UNDECIDED`` when that cannot be done soundly or cheaply."""
    if not log.partial or not log.segments or sid in log.commits or sid in log.tags:
        return UNDECIDED
    if log.settings.get("evicted_through") is not None or len(log.order) >= log.max_snapshots:
        return UNDECIDED  # retention may have evicted it, as the indexed segments tell without a listing
    try:
        listed = log.backend.segments(log.key)
        if log.searched_alone >= len(listed) or not _limit_above_any_count(log, listed):
            return UNDECIDED  # reading many older snapshots: indexing the log once costs less
        older = sorted((info.segment for info in listed if info.segment < min(log.segments)), reverse=True)
        return _rebuild(log, sid, older[:SEARCH_SEGMENTS])
    except (SegmentMissing, CorruptObjectError):  # reclaimed or damaged: the whole log says what happened
        return UNDECIDED


def _limit_above_any_count(log: SessionLog, listed: list[SegmentInfo]) -> bool:
    """Whether the retention limit is above the most commits the session's segments could hold:
    with no eviction mark, no stored snapshot can then be out of retention."""
    return log.max_snapshots > sum(info.stored_bytes for info in listed) // _MIN_COMMIT_BYTES


def _rebuild(log: SessionLog, sid: str, older: list[int]) -> Any:
    """Find ``sid`` in the segments ``older`` than the indexed ones (newest first) and rebuild it."""
    raw_id = bytes.fromhex(sid)
    # a child among the indexed commits: the snapshot ends an older segment (or is further back)
    named_later = any(c.entry.base == sid or c.entry.parent == sid for c in log.commits.values())
    for number in older:
        log.searched_alone += 1
        read = log.backend.read_segment(log.key, number)
        if read.damaged_at is not None:
            return UNDECIDED
        entries, vouched, _covered = split_index(read.entries, from_start=True)
        child = next((i for i, data in enumerate(entries) if names_snapshot(data, raw_id)), None)
        if child is None and not named_later:
            continue  # neither it nor anything after it is here
        before = len(entries) if child is None else child
        # An index stops at a segment's first damaged entry (§4.4): a snapshot after one is lost.
        # Every entry up to the child is checked as an index checks it (its id is not hashed).
        _check_entries(log, number, entries[:before])
        found = _find(log, number, entries, sid, before, vouched)
        if found is not None:
            return _rebuild_at(log, number, entries, found, vouched)
        if child is None or any(data[:1] == _COMMIT for data in entries[:child]):
            return UNDECIDED  # a branch, or a copy elsewhere: not the common case this path is for
        named_later = True  # its child opens this segment: it ends an older one
    return UNDECIDED


def _check_entries(log: SessionLog, number: int, entries: list[bytes]) -> None:
    """Raise CorruptObjectError where an index of the segment would find damage among ``entries``."""
    where = log.where(number)
    for data in entries:
        meta = check_entry(data, where)
        if meta is not None:
            check_settings(meta.body, log.name)


def _find(
    log: SessionLog, number: int, entries: list[bytes], sid: str, before: int, vouched: list[str | None] | None
) -> tuple[int, CommitEntry] | None:
    """The entry, among ``entries[:before]`` (checked), whose record hashes to ``sid`` (or that an
    INDEX entry gives as ``sid``: its record is hashed when the rebuild checks it), newest first."""
    where = log.where(number)
    for ordinal in range(before - 1, -1, -1):
        data = entries[ordinal]
        if data[:1] == _COMMIT:
            given = vouched[ordinal] if vouched is not None else None
            if given is not None:
                if given == sid:
                    return ordinal, vouched_entry(data, sid, log.name, where, with_payload=False)
                continue
            entry = decode_entry(data, log.name, where, with_payload=False)
            if isinstance(entry, CommitEntry) and entry.id == sid:
                return ordinal, entry
    return None


def _rebuild_at(
    log: SessionLog,
    number: int,
    entries: list[bytes],
    found: tuple[int, CommitEntry],
    vouched: list[str | None] | None,
) -> Any:
    """Rebuild the snapshot found at ``found`` from its segment's ``entries``, verified."""
    path: list[IndexedCommit] = []
    ordinal, entry = found
    while True:
        path.append(IndexedCommit(entry.id, entry, entry.mode, entry.raw_length, number, ordinal, entry.base))
        if entry.mode in KEY_MODES:
            break
        base = entry.base
        step = _find(log, number, entries, base, ordinal, vouched) if base is not None else None
        if step is None:
            return UNDECIDED  # a chain that leaves what is here: the whole log says why
        ordinal, entry = step
    path.reverse()
    wanted = {commit.ordinal: commit.id for commit in path}
    items: list[tuple[str, int, int, bytes]] = []
    for at, data in enumerate(entries[: path[-1].ordinal + 1]):
        parts = commit_payload(data)
        if parts is not None:
            # the stream is decoded from the segment's start (a patched keyframe and a delta frame
            # take what precedes them as their dictionary); only the chain's payloads are kept
            items.append((wanted.get(at, f"#{at}"), *parts))
    reader = SegmentReader(log.where(number))
    reader.decompress_all(items)
    return log.apply_chain(path, reader.chain_payloads(wanted.values()))
