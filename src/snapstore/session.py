"""A named history of snapshots: commit, rollback, diff, tags, retention and reclaiming.

Writers queue: a commit takes the session's write lock (``Backend.lock_session``),
catches up with what other writers appended, appends one entry, and lets go.
A session keeps its head state, and the raw stream of its open segment, in
memory; everything else is read from the store when needed.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import zstandard

from . import codec
from .delta import apply_patch, diff, diff_members, dumps_as_stored, parse_pointer
from .entries import (
    COMMIT,
    DELTA_WINDOW,
    INDEX_EVERY,
    KEY_MODES,
    MAX_PAYLOAD,
    CommitEntry,
    DeltaStream,
    SegmentReader,
    compress_keyframe,
    decode_commit,
    decode_entry,
    delta_compressor,
    encode_commit,
    encode_index,
    encode_meta,
    entry_base,
    without_index,
)
from .errors import (
    AmbiguousSnapshotId,
    ArchiveError,
    ConcurrentUpdateError,
    CorruptObjectError,
    InvalidStateError,
    LockTimeoutError,
    PatchError,
    RollbackError,
    SnapshotError,
    SnapshotNotFound,
    shown_value,
)
from .history import (
    IndexedCommit,
    LoadedSegment,
    SessionLog,
    apply_delta_payload,
    check_state,
    is_snapshot_id,
)
from .keyframes import SETTLE_COST, max_delta_changes, worth_settling
from .objects import Snapshot, SnapshotRecord, codec_id, format_timestamp
from .own_segment import UNDECIDED, rebuild_from_own_segment

if TYPE_CHECKING:
    from .store import SnapshotStore

MIN_PREFIX = 8
MAX_INT64 = 2**63 - 1
Model = TypeVar("Model")


#: ``Session.commit``'s default ``parent``: the commit goes on whatever the head is
ANY_HEAD: Any = object()


class _HandleLock:
    """A session handle's re-entrant lock that can also be tried by another handle's thread
    without being taken again by a thread already inside one of this handle's operations."""

    __slots__ = ("_depth", "_lock", "_owner")

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._owner: int | None = None
        self._depth = 0

    def __enter__(self) -> _HandleLock:
        self._lock.acquire()
        self._owner = threading.get_ident()
        self._depth += 1
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def try_acquire(self) -> bool:
        """Taken when no thread holds it; False when another thread does, or this one already does."""
        if self._owner == threading.get_ident() or not self._lock.acquire(blocking=False):
            return False
        self._owner, self._depth = threading.get_ident(), 1
        return True

    def release(self) -> None:
        self._depth -= 1
        if not self._depth:
            self._owner = None
        self._lock.release()


class Session:
    """One named history in a store. Get it with ``store.session(name)``.

    Keeps one copy of its head state (to diff the next commit against) and
    the index of its snapshots' records; memory does not grow with payloads.
    """

    def __init__(self, store: SnapshotStore, name: str, key: str) -> None:
        self._store = store
        self.name = name
        self.key = key
        self._log = SessionLog(store.backend, key, name)
        self._lock = _HandleLock()
        self._head_id: str | None = None
        self._head_state: Any = None
        self._head_pieces: dict[str, bytes] | None = None
        self._open: SegmentReader | None = None  # the open segment, decoded through ``_open_end``
        self._open_segment = -1
        self._open_version = -1
        # the index's record of the open segment the decoder follows: one read again whole (it shrank,
        # as a server that lost its last transactions leaves it) is another object, and another stream
        self._open_loaded: LoadedSegment | None = None
        self._open_end = 0
        # (segment, version, start, end, entry count) of the ``log.fresh`` the decoder last took
        # entries from, through ``end``: a refresh that extends it only adds entries after them
        self._fresh_taken: tuple[int, int, int, int, int] | None = None
        self._stream: DeltaStream | None = None  # this writer's zstd frame in the open segment
        self._stream_end = -1  # the segment's end right after this writer's last append
        self._plain_compressor: zstandard.ZstdCompressor | None = None  # starts frames without a dictionary
        # (head id, its members' bytes, the ops) while the cached head is patched ahead of an append
        self._patched: tuple[str, dict[str, bytes] | None, list[Any]] | None = None
        self._chain_cost: dict[str, int] = {}  # estimated rebuild cost from the keyframe, per snapshot
        self._keyframe_of: dict[str, str] = {}
        self._appending = False  # within ``_writing``: an append was begun under the lock
        # this commit's diff was stopped: more changes than a delta is worth (``max_delta_changes``)
        self._busy = False
        self._stopped_in_a_row = 0  # commits of this handle in a row whose diffs stopped

    def __repr__(self) -> str:
        return f"<Session {self.name!r} in {self._store.describe()}>"

    # -- reading -------------------------------------------------------
    def _current(self, tail: bool = False) -> SessionLog:
        """The session's log, refreshed; with ``tail``, possibly only its newest segment indexed
        (``SessionLog.partial``): enough for the head and the snapshots of that segment."""
        with self._lock:
            self._log.refresh(tail)
            if not self._log.segments:
                raise SnapshotNotFound(f"session {self.name!r} does not exist", {"session": self.name})
            return self._log

    @property
    def max_snapshots(self) -> int:
        with self._lock:
            return self._current().max_snapshots

    @property
    def head(self) -> Snapshot | None:
        # read under the lock: another thread's refresh of this handle may be indexing again
        with self._lock:
            log = self._current(tail=True)
            return None if log.head is None else self._snapshot(log, log.head)

    @property
    def tail_damage(self) -> str | None:
        """Why the session's newest segment stops early, or None when it reads whole.

        Damage takes the rest of its segment with it, so when it lies in the newest segment the
        entries after it are lost: commits, head moves or settings newer than anything that still
        reads. ``head`` is then the newest snapshot that reads, which may be older than the one
        last committed. A reader that must not go on from an older head unawares asks this; the
        next write (a commit, a rollback) starts a new segment, and the answer is None again.
        A torn tail (an append a crash cut short, never acknowledged) is not damage."""
        with self._lock:
            last = self._current(tail=True).last_segment
            return None if last is None else last.damage

    @property
    def tags(self) -> dict[str, str]:
        """Tag name -> snapshot id."""
        with self._lock:
            return dict(self._current().tags)

    def __len__(self) -> int:
        return len(self.snapshot_ids())

    def snapshots(self) -> list[Snapshot]:
        """Retained snapshots, oldest first (creation order)."""
        with self._lock:
            log = self._current()
            return [self._snapshot(log, sid) for sid in log.retained()]

    def snapshot_ids(self) -> list[str]:
        with self._lock:
            return self._current().retained()

    def readable_ids(self) -> list[str]:
        """The retained snapshots, oldest first, then the head when the limit evicted it (a head
        stays readable: commits go on from it)."""
        with self._lock:
            return self._current().readable()

    def snapshot(self, snapshot_id: str) -> Snapshot:
        with self._lock:
            log = self._current()
            return self._snapshot(log, self._resolve(log, snapshot_id))

    def resolve(self, snapshot_id: str) -> str:
        """The full id of a retained snapshot from its id, a unique prefix of 8+ characters, or a tag."""
        with self._lock:
            return self._resolve(self._current(), snapshot_id)

    def _resolve(self, log: SessionLog, snapshot_id: Any) -> str:
        if isinstance(snapshot_id, str) and snapshot_id in log.tags:
            return log.tags[snapshot_id]
        if isinstance(snapshot_id, str) and snapshot_id == log.head:  # the head is always readable
            return log.head
        try:
            return resolve_prefix(snapshot_id, log.readable(), where=f"session {self.name!r}")
        except AmbiguousSnapshotId:
            raise
        except SnapshotNotFound as exc:
            # say why an id that looks like one is not here: evicted, lost to damage, or no longer known
            wanted = snapshot_id.strip().lower() if isinstance(snapshot_id, str) else ""
            if len(wanted) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in wanted):
                if isinstance(snapshot_id, str):  # not an id: it may have been meant as a tag
                    tags = ", ".join(repr(t) for t in sorted(log.tags)) or "none"
                    raise SnapshotNotFound(
                        f"{exc} (nor is it a tag of session {self.name!r}; its tags: {tags})", exc.details
                    ) from None
                raise
            limit = log.max_snapshots
            if any(s.startswith(wanted) for s in log.order):
                # with no limit to raise, only forget (clear_old_snapshots) can have dropped it
                why = (
                    "removed by forget (the session has no limit: it keeps every snapshot it is not told to forget)"
                    if limit >= MAX_INT64
                    else f"evicted by retention or forget (the session keeps its last {limit} snapshots and its "
                    "tagged ones; raise the limit with set_max_snapshots or tag snapshots to keep them)"
                )
                raise SnapshotNotFound(
                    f"snapshot {snapshot_id} is no longer retained in session {self.name!r}: {why}",
                    {**exc.details, "reason": "evicted", "max_snapshots": limit},
                ) from None
            damaged = [n for n, segment in log.segments.items() if segment.damage is not None]
            if damaged:
                raise CorruptObjectError(
                    f"snapshot {snapshot_id} not found in session {self.name!r}, whose segment "
                    f"{', '.join(map(str, damaged))} is damaged and may have held it: "
                    f"{log.segments[damaged[0]].damage}",
                    {**exc.details, "reason": "damage", "segments": damaged},
                ) from None
            lost = log.lost_history()
            if lost:
                raise SnapshotNotFound(
                    f"snapshot {snapshot_id} not found in session {self.name!r}, which lost history it may have "
                    f"held: {lost[0].cause}, and the first snapshot after it names a parent no segment holds "
                    "(verify reports it)",
                    {**exc.details, "reason": "lost history", "segment": lost[0].segment},
                ) from None
            if not _has_evicted(log):  # nothing ever left the session: the id was never in it
                raise
            raise SnapshotNotFound(
                f"snapshot {snapshot_id} not found in session {self.name!r}: not retained (the session "
                f"keeps its last {limit} snapshots and its tagged ones; an id evicted long ago is no "
                "longer known)",
                {**exc.details, "reason": "not retained", "max_snapshots": limit},
            ) from None

    def head_state(self) -> tuple[Snapshot, Any] | None:
        """The head and its full state (verified, the caller's), read at once: a session not read
        before reads its newest segment once for both, where ``head`` then ``state`` read it twice.
        None for a session without commits."""
        with self._lock, self._log.reading_once():
            log = self._current(tail=True)
            if log.head is None:
                return None
            snap = self._snapshot(log, log.head)
            return snap, self._state_of(log, log.head)

    def state(self, snapshot_id: str) -> Any:
        """The full state of a retained snapshot, verified against its hash; the caller owns it."""
        with self._lock, self._log.reading_once():
            log = self._current(tail=True)
            if log.partial and not self._in_tail(log, snapshot_id) and codec_id(snapshot_id):
                state = rebuild_from_own_segment(log, snapshot_id)  # when nothing after it can matter
                if state is not UNDECIDED:
                    return state
                log.reach(snapshot_id)  # an older snapshot: the segments from it to the newest
            if log.partial and not self._in_tail(log, snapshot_id):
                log = self._current()  # a prefix, a tag, or an id stored nowhere: the whole log decides
            sid = self._resolve(log, snapshot_id)
            return self._state_of(log, sid)

    @contextmanager
    def keeping_decoded(self) -> Iterator[None]:
        """Within the block, rebuilding a snapshot and then older ones of the same segment decodes
        that segment once (a reader that needs the head to find which older snapshot to read).
        What was decoded is held until the block ends."""
        with self._lock:
            self._log.keep_decoded()
        try:
            yield
        finally:
            with self._lock:
                self._log.release_decoded()

    @staticmethod
    def _in_tail(log: SessionLog, snapshot_id: Any) -> bool:
        """Whether a partly indexed log answers for ``snapshot_id`` as the whole log would: the head,
        or the full id of a snapshot of its newest segments (whether retention keeps it is counted
        from the newest commit, which those segments hold: ``_resolve`` decides it the same way)."""
        if not isinstance(snapshot_id, str) or snapshot_id in log.tags:
            return False
        return snapshot_id == log.head or snapshot_id in log.commits

    def rollback_model(self, snapshot_id: str, model: type[Model]) -> Model:
        """Roll back like ``rollback`` and return the state validated as ``model`` (a pydantic model class)."""
        validate = getattr(model, "model_validate", None)
        if validate is None:
            raise SnapshotError("model must be a pydantic model class", {"argument": "model"})
        # validated before the head moves: a model that refuses the state leaves the session as it was
        try:
            validated = validate(self.state(snapshot_id))
        except ValueError as exc:  # pydantic's ValidationError
            raise RollbackError(
                f"snapshot {snapshot_id} does not validate as {getattr(model, '__name__', model)}: {exc}",
                {"snapshot": snapshot_id, "model": getattr(model, "__name__", repr(model))},
            ) from exc
        self.rollback(snapshot_id)
        return validated

    def diff(self, a: str, b: str) -> list[dict[str, Any]]:
        """RFC 6902 operations turning snapshot a's state into snapshot b's."""
        return diff(self.state(a), self.state(b))

    def _state_of(self, log: SessionLog, sid: str) -> Any:
        state = self._read_state_of(log, sid)
        if self._store.max_warm_bytes is not None:  # a read may have grown what this handle keeps
            self._store._note_used(self)
        return state

    def _read_state_of(self, log: SessionLog, sid: str) -> Any:
        if sid == self._head_id and self._head_state is not None:
            return codec.loads(self._head_bytes())
        last = log.last_segment
        if last is not None and log.commits[sid].segment == last.number and self._open is not None:
            self._sync_open(log)
            if self._forward_path(log, sid):
                # another writer's commits since the cached head: apply their deltas to it, which
                # costs those deltas, not a rebuild from the keyframe
                self._head_state, self._head_pieces = self._caught_up_head(log, sid)
                self._head_id = sid
                return codec.loads(self._head_bytes())  # the members joined, not serialized again
            if self._open is not None and sid in self._open.spans:
                return self._rebuild_open(log, sid)
        return log.rebuild(sid)

    # -- writing -------------------------------------------------------
    def commit(
        self, state: Any, label: str = "auto", turn: int | None = None, *, parent: Any = ANY_HEAD
    ) -> Snapshot:
        """Snapshot ``state`` (a JSON-compatible value or a pydantic model) as the new head.

        Appends a delta against the head, or starts a new segment with a keyframe
        when the keyframe policy asks for one. A refused commit writes nothing.

        ``parent``: commit only if the session's head is still that snapshot (its full id; None:
        only if the session has none yet), checked under the session's lock; otherwise ``ConcurrentUpdateError``
        and nothing is written. For a read-modify-write whose state must not land on top of a
        commit it never read (by default a commit goes on whatever the head is).
        """
        if parent is not ANY_HEAD and parent is not None:
            if not isinstance(parent, str) or not codec_id(parent.lower()):
                raise SnapshotError(
                    f"parent must be a full snapshot id (32 hex digits) or None, not {parent!r}",
                    {"argument": "parent", "value": repr(parent)},
                )
            parent = parent.lower()
        snap = self._commit(state, label, turn, parent=parent)
        assert snap is not None
        return snap

    def settle(self, min_cost: float = SETTLE_COST, head: str | None = None) -> Snapshot | None:
        """Store the head again, whole and on its own, when rebuilding it is estimated to cost more
        than ``min_cost`` loads of one full state; the new head, or None when nothing was written.

        For a writer that stops writing (at the end of a run, before closing): the next reader of
        the session, often another process, then loads the head from a segment that holds it alone,
        in one read, instead of rebuilding it through the deltas after its keyframe. The new
        snapshot is a child of the head with the same state, label and turn, and counts toward
        retention like any commit: under a limit it evicts the oldest snapshot, as a commit would.
        Only a head this handle committed (or caught up to) is settled, and with ``head`` (an id, a
        unique prefix or a tag), only that snapshot: when another writer has committed since,
        nothing is written. A ``head`` that is neither an id nor a prefix or tag of a retained
        snapshot raises ``SnapshotNotFound``.
        """
        if type(min_cost) not in (int, float) or not min_cost >= 1.0:  # ``not >=`` also refuses NaN
            raise SnapshotError("min_cost must be a number >= 1", {"argument": "min_cost", "value": repr(min_cost)})
        with self._lock:
            mine, state = self._head_id, self._head_state
            if head is not None and head != mine:
                # a prefix or a tag may name the head too; what is not even an id is refused, as
                # elsewhere, where a whole id of another snapshot (one evicted, say) is "not this head"
                try:
                    head = self._resolve(self._current(), head)
                except SnapshotNotFound:
                    if not is_snapshot_id(head):
                        raise
                    return None
            if mine is None or state is None or head not in (None, mine):
                return None
            try:
                log = self._current(tail=True)
            except SnapshotNotFound:  # the session was deleted since this handle wrote it
                return None
            if log.head != mine or mine not in log.commits:
                return None
            record = log.commits[mine].record
            chain_cost = self._chain_cost_of(log, mine)
            cost = self._store.policy.rebuild_cost(chain_cost, record.size, self._decoded_before(log, mine))
            if not worth_settling(cost, record.size, min_cost):
                return None
            return self._commit(state, record.label, record.turn, settling=mine)

    def _decoded_before(self, log: SessionLog, sid: str) -> int:
        """Raw bytes of its segment a rebuild of ``sid`` decodes before the keyframe its chain starts at."""
        keyframe = log.chain(sid)[0]
        entries = log.segments[keyframe.segment].entries[: keyframe.ordinal]
        return sum(entry.raw_length for entry in entries if isinstance(entry, CommitEntry))

    def _commit(
        self, state: Any, label: str, turn: int | None, settling: str | None = None, parent: object = ANY_HEAD
    ) -> Snapshot | None:
        if not isinstance(label, str) or not _encodable(label) or len(label.encode("utf-8")) > 65535:
            raise InvalidStateError(
                "label must be a string of valid unicode (at most 64 KiB)",
                {"argument": "label", "type": type(label).__name__},
            )
        if turn is not None and (type(turn) is not int or not -MAX_INT64 - 1 <= turn <= MAX_INT64):
            raise InvalidStateError(
                "turn must be a 64-bit integer or None", {"argument": "turn", "type": type(turn).__name__}
            )
        state = codec.model_state(state)
        canonical = codec.encode_canonical(state)
        pieces = canonical.pieces
        if canonical.converted:  # subclasses of JSON types were written as their base types: commit that reading
            state = codec.read_back(canonical.data, codec.plain_copy(state))
        if canonical.size > MAX_PAYLOAD:
            raise InvalidStateError(
                f"state is {canonical.size} bytes of JSON; a snapshot holds at most {MAX_PAYLOAD} (1 GiB)",
                {"reason": "state too large", "size": canonical.size},
            )
        with self._lock:
            self._busy = False
            # the patch from the state this handle holds, made before queueing for the session:
            # the delta when no other writer commits meanwhile, else stored against that state
            ahead = None if settling is not None else self._patch_cached(state, pieces, canonical.size)
            try:
                backend, last = self._store.backend, self._log.last_segment
                locked = (
                    backend.lock_session_reading(self.key, self._store.lock_timeout, (last.number, last.end))
                    if last is not None and last.damage is None
                    else backend.lock_session(self.key, self._store.lock_timeout)
                )
                with self._writing(locked):
                    log = self._catch_up()
                    if settling is not None and log.head != settling:
                        return None  # another writer committed meanwhile: the head is not this one's to settle
                    if parent is not ANY_HEAD and log.head != parent:
                        raise ConcurrentUpdateError(
                            f"session {self.name!r}: its head is {log.head}, not {parent}: another writer "
                            "committed first (nothing was written)",
                            {"session": self.name, "head": log.head, "expected": parent},
                        )
                    written, entries, segment, expected, new_head = self._prepare(
                        log, state, canonical, label, turn, ahead, alone=settling is not None
                    )
                    self._append(segment, entries, expected, written)
                    self._stopped_in_a_row = self._stopped_in_a_row + 1 if self._busy else 0
                    sid = written[0]
                    self._head_id, self._head_state, self._head_pieces = sid, new_head, pieces
                    if expected == 0 or log.commits[sid].mode in KEY_MODES:  # started a segment or a run
                        self._reclaim_quietly(log)  # under the lock, as every rewrite of segments is
                    return self._snapshot(log, sid)
            except BaseException:
                if self._patched is not None:  # refused before the append: the cache goes back
                    self._unpatch_head(*self._patched)
                raise

    @contextmanager
    def _writing(self, locked: AbstractContextManager[None]) -> Iterator[None]:
        """The session's write lock, held for a write. What the write appended is in this handle's
        index and decoder before the lock lets go, and on PostgreSQL the lock's transaction commits
        as it lets go: when the write fails once it has appended (an error after the append, which
        rolls it back there) or the lock fails to let go (that COMMIT, a connection the server
        dropped), the append may not be stored, so the handle forgets all it knew of the session
        and reads it again from the store. Building the next commit on an append that was rolled
        back would store a delta against a snapshot nothing holds. A write refused before it
        appended (an unknown id, a missing tag) keeps what the handle knows."""
        self._appending = False
        done = False
        try:
            with naming_timeouts(locked, self.name):
                yield
                done = True
        except BaseException:
            # a delta compressed into this writer's stream and never appended (an error, or Ctrl-C,
            # between the two) would leave the stream ahead of the file: the next one starts anew
            self._stream = None
            if done or self._appending:
                self._forget_what_was_read()
            raise
        finally:
            self._appending = False
        self._store._note_used(self)

    def _let_go(self) -> None:
        """Drop what this handle keeps to make its next commit cheap (the head state, the open
        segment and its compression stream, the index), as a handle just opened holds nothing:
        its next use reads what it needs. Not while an operation of it runs (on any thread)."""
        if self._lock.try_acquire():
            try:
                self._forget_what_was_read()
                self._plain_compressor = None
            finally:
                self._lock.release()

    def kept_bytes(self) -> int:
        """About what this handle keeps between uses, in bytes: its head's canonical JSON and the
        decoded run of the open segment (what ``max_warm_bytes`` counts; the head's objects take a
        few times its JSON). Read without the handle's lock: an estimate, as of now."""
        kept = 0
        pieces, head, head_id, decoder = self._head_pieces, self._head_state, self._head_id, self._open
        if pieces is not None:  # (each member as '"key":value,' in the object's JSON)
            kept += sum(len(key) + len(value) + 4 for key, value in list(pieces.items()))
        elif head is not None and head_id is not None:
            commit = self._log.commits.get(head_id)
            with suppress(SnapshotError):  # a damaged record: read as damage where it is used, not here
                kept += commit.record.size if commit is not None else 0
        if decoder is not None:
            kept += len(decoder.raw)
        return kept

    def _locked_for_write(self) -> AbstractContextManager[None]:
        """The session's write lock, waited for up to the store's timeout, through ``_writing``."""
        return self._writing(self._store.backend.lock_session(self.key, self._store.lock_timeout))

    def _forget_what_was_read(self) -> None:
        self._log = self._log.emptied()
        self._head_id, self._head_state, self._head_pieces = None, None, None
        self._open, self._open_segment, self._open_version, self._open_end = None, -1, -1, 0
        self._open_loaded = None
        self._fresh_taken = None
        self._stream, self._stream_end = None, -1
        self._patched = None
        self._chain_cost, self._keyframe_of = {}, {}

    def _prepare(
        self,
        log: SessionLog,
        state: Any,
        canonical: codec.Canonical,
        label: str,
        turn: int | None,
        ahead: tuple[str, bytes, Any] | None = None,
        alone: bool = False,
    ) -> tuple[tuple[str, SnapshotRecord, bytes], list[bytes], int, int, Any]:
        """(id, record, raw payload) of one commit, its entries, the segment they go to, its end, and
        the new head.

        ``ahead`` is (base, patch, new head) from ``_patch_cached``: the delta itself when the base
        is still the head, else stored against the base when the policy allows (format 3), else dropped.
        ``alone``: a keyframe starting a new segment whatever the policy says (``settle``).
        """
        store = self._store
        pieces = canonical.pieces
        parent = log.head
        last = log.last_segment
        delta_payload: bytes | None = None
        new_head: Any = None
        base: str | None = None
        parent_commit = log.commits.get(parent) if parent is not None else None
        open_has_commit = last is not None and last.runs() > 0  # a segment's first commit is a keyframe
        if open_has_commit and last is not None and last.damage is None:
            try:
                self._open_raw(log)
            except SnapshotError as exc:  # a payload that does not decode: damage, as a bad frame is
                last.damage = str(exc)
                self._open = None
        if last is not None and last.damage is not None:
            open_has_commit = True  # never append after damage: the next commit starts a new segment
        can_delta = (
            not alone
            and parent_commit is not None
            and last is not None
            and last.damage is None
            and parent_commit.segment == last.number
        )
        if ahead is not None and ahead[0] != parent:
            base_commit = log.commits.get(ahead[0])
            if (
                store.base_deltas
                and parent is not None
                and base_commit is not None
                and last is not None
                and last.damage is None
                and base_commit.segment == last.number
            ):
                base, delta_payload, new_head = ahead
                base_of, can_delta = base_commit, True
            elif self._patched is not None:
                self._unpatch_head(*self._patched)  # caught up to the parent instead, below
            ahead = None
        if can_delta and base is None:
            assert parent is not None and parent_commit is not None
            if ahead is not None:
                delta_payload, new_head = ahead[1], ahead[2]
            elif not self._busy:
                patched = self._next_head(log, parent, state, canonical.size, pieces)
                if patched is not None:
                    delta_payload, new_head = patched
            can_delta = delta_payload is not None
            base_of = parent_commit
        if can_delta:
            assert delta_payload is not None
            cost = self._chain_cost_of(log, base_of.id) + store.policy.delta_cost(len(delta_payload))
            if base_of.depth + 1 > store.policy.max_chain or store.policy.wants_keyframe(
                cost, canonical.size, self._run_start(log, base_of.id)
            ):
                can_delta = False
        elif self._busy:
            # the head for the next diff: what the state's bytes read back as, checked by comparison
            # (a state whose parts nearly all changed is mostly numbers and small objects, which
            # ``orjson`` reads and ``==`` compares faster than a copy in Python walks them)
            new_head = codec.read_back(canonical.data, state)
        else:
            # the head for the next diff: a copy sharing the state's strings when it is plain JSON
            # (checked as it is copied), else what its bytes read back as (checked by comparison)
            new_head = codec.shared_copy(state)
            if new_head is codec.NOT_PLAIN:
                new_head = codec.read_back(canonical.data, state)
        timestamp = _now()
        if can_delta:
            assert last is not None and delta_payload is not None
            if self._stream is None or self._stream_end != last.end or self._open is None:
                # another writer appended since this one did: a frame without a dictionary, since
                # loading one costs more than it saves while writers take turns
                contended = self._stream_end not in (-1, last.end)
                window = None if contended else bytes(self._open_raw(log)[-DELTA_WINDOW:])
                if window is None and self._plain_compressor is None:
                    self._plain_compressor = delta_compressor(store.level)
                self._stream = DeltaStream(store.level, window, self._plain_compressor)
            mode, compressed = self._stream.compress(delta_payload)
            # a delta against another base is, in the record (and its id), a snapshot stored whole:
            # the record's delta is the patch from the parent, which this writer never computed; a
            # delta's depth and chain bytes are history's (they count the parent's), as in format 2
            if base is None:
                assert parent_commit is not None
                depth = parent_commit.record.depth + 1
                chain_bytes = parent_commit.record.chain_bytes + len(compressed)
            else:
                depth = chain_bytes = 0
            record = SnapshotRecord(
                session=self.name,
                parent=parent,
                state=canonical.state_hash,
                delta=codec.object_id(delta_payload) if base is None else None,
                label=label,
                timestamp=timestamp,
                turn=turn,
                size=canonical.size,
                depth=depth,
                chain_bytes=chain_bytes,
                base_ratio=base_of.record.base_ratio,
            )
            entry = encode_commit(record, mode, len(delta_payload), compressed, base)
            sid = record.snapshot_id()
            self._chain_cost[sid], self._keyframe_of[sid] = cost, self._keyframe_of.get(base_of.id, base_of.id)
            return (sid, record, delta_payload), [entry], last.number, last.end, new_head
        # a keyframe: a new run in the open segment, patched against its raw stream, or a new segment
        healthy = open_has_commit and last is not None and last.damage is None
        raw_so_far = self._open_size(log) if healthy else 0
        extend = (
            not alone
            and open_has_commit
            and last is not None
            and last.damage is None
            and store.policy.may_patch(last.runs(), raw_so_far, canonical.size)
        )
        previous_raw = self._open.previous_run() if extend and self._open is not None else None
        mode, compressed = compress_keyframe(canonical.data, store.level, previous_raw)
        self._stream = None
        record = SnapshotRecord(
            session=self.name,
            parent=parent,
            state=canonical.state_hash,
            delta=None,
            label=label,
            timestamp=timestamp,
            turn=turn,
            size=canonical.size,
            depth=0,
            chain_bytes=0,
            base_ratio=round(len(compressed) / max(canonical.size, 1), 6),
        )
        entry = encode_commit(record, mode, canonical.size, compressed)
        sid = record.snapshot_id()
        self._chain_cost, self._keyframe_of = {sid: 0}, {sid: sid}
        written = (sid, record, canonical.data)
        if last is not None and (extend or not open_has_commit):
            if not last.entries:  # its checkpoint was torn away: restate the settings first
                return written, [encode_meta(self._checkpoint(log)), entry], last.number, last.end, new_head
            return written, [entry], last.number, last.end, new_head
        number = (last.number + 1) if last is not None else 1
        return written, [encode_meta(self._checkpoint(log)), entry], number, 0, new_head

    def _next_head(
        self, log: SessionLog, parent: str, state: Any, size: int, pieces: dict[str, bytes] | None
    ) -> tuple[bytes, Any] | None:
        """The canonical patch from the head to ``state`` and the new head as stored, refusing a
        ``state`` that differs from what its bytes read back as; None when too much changed."""
        head_state, head_pieces = self._head_for(log, parent)
        return self._patch_head(parent, head_state, head_pieces, state, pieces, size)

    def _patch_cached(
        self, state: Any, pieces: dict[str, bytes] | None, size: int
    ) -> tuple[str, bytes, Any] | None:
        """(base, patch, new head): the patch from the cached head, whatever snapshot it is, to
        ``state``, with the cache patched to it; None when nothing is cached or too much changed."""
        base, head_state = self._head_id, self._head_state
        if base is None or head_state is None:
            return None
        patched = self._patch_head(base, head_state, self._cached_pieces(), state, pieces, size)
        return None if patched is None else (base, *patched)

    def _patch_head(
        self,
        parent: str,
        head_state: Any,
        head_pieces: dict[str, bytes] | None,
        state: Any,
        pieces: dict[str, bytes] | None,
        size: int,
    ) -> tuple[bytes, Any] | None:
        """The patch from ``head_state`` (the cached head, ``parent``'s state) to ``state`` and the
        cache patched in place to it, refusing a ``state`` that differs from what its bytes read back as.

        None, the cache untouched, when the diff finds more changes than a delta of a state of
        ``size`` bytes is worth (``max_delta_changes``): the commit then stores a keyframe."""
        if pieces is not None and head_pieces is not None:
            budget = max_delta_changes(size, self._stopped_in_a_row)
            found = diff_members(head_state, state, head_pieces, pieces, budget)
            if found is None:
                self._busy = True
                return None
            ops = found
        else:
            ops = diff(head_state, state)
        payload = dumps_as_stored(ops)
        # Patched in place (a copy would double the memory): the cache is no snapshot's until the
        # append lands, and a refusal or a failed write puts it back (``_unpatch_head``).
        self._head_id = None
        try:
            applied = _shared_ops(ops)
            if applied is None:  # a value that is not plain JSON: apply what its bytes read back as
                applied = codec.loads(payload)
            new_head = apply_patch(head_state, applied, in_place=True, copy_values=False)
            codec.check_reading(state, new_head)
        except (ValueError, PatchError, InvalidStateError) as exc:
            self._unpatch_head(parent, head_pieces, ops)
            if isinstance(exc, InvalidStateError):
                raise
            raise codec.describe_unrepresentable(state) from None
        self._patched = (parent, head_pieces, ops)
        return payload, new_head

    def _unpatch_head(self, head_id: str, pieces: dict[str, bytes] | None, ops: list[Any]) -> None:
        """Put the cached head back as it was before it was patched in place.

        The top-level members the patch named are parsed again from the head's bytes and the ones
        it added are dropped; without the members' bytes the cache is dropped (rebuilt when needed).
        """
        self._patched = None
        head = self._head_state
        if pieces is None or type(head) is not dict:
            self._head_state = None
            return
        touched: set[str] = set()
        for op in ops:
            for pointer in (op["path"], op.get("from")):
                if pointer is not None:
                    tokens = parse_pointer(pointer)
                    if not tokens:
                        self._head_state = None
                        return
                    touched.add(tokens[0])
        for key in touched:
            if key in pieces:
                head[key] = codec.loads(pieces[key])
            else:
                head.pop(key, None)
        self._head_id, self._head_pieces = head_id, pieces

    def _append(
        self,
        segment: int,
        entries: list[bytes],
        expected: int,
        written: tuple[str, SnapshotRecord, bytes] | None = None,
    ) -> None:
        self._appending = True  # from here a failure under the lock may leave the append rolled back
        last = self._log.last_segment
        if expected == 0 and last is not None and segment > last.number and last.torn and last.damage is None:
            # a crash's torn append is cut before a segment starts after it (an append to it cuts it
            # anyway): left behind, it would look like history cut short (``SessionLog.lost_history``)
            self._store.backend.append(self.key, last.number, [], last.end)
            last.torn = False
        index = self._index_entry(segment, entries, expected, written)
        appended = entries if index is None else [*entries, index]
        try:
            end = self._store.backend.append(self.key, segment, appended, expected)
        except BaseException:
            self._stream = None  # the cache patched ahead of the append goes back in ``commit``
            raise
        self._patched = None
        self._stream_end = end
        self._absorb(segment, entries, expected, end, written)
        if index is not None:
            loaded = self._log.segments[segment]
            loaded.indexed = len(loaded.entries)

    def _index_entry(
        self, segment: int, entries: list[bytes], expected: int, written: tuple[str, SnapshotRecord, bytes] | None
    ) -> bytes | None:
        """The INDEX entry to append after ``entries`` (format 4), once the segment's COMMIT entries since
        its last one number ``INDEX_EVERY``: then a reader opening the segment takes their ids from it
        instead of hashing each record. None before that, or when this writer's index does not hold
        the segment whole from its start to ``expected``."""
        if not self._store.index_entries:
            return None
        earlier: list[str] = []
        if expected:
            loaded = self._log.segments.get(segment)
            if loaded is None or loaded.damage is not None or loaded.end != expected:
                return None
            earlier = loaded.unindexed_commits()
        where = self._log.where(segment)
        new = [
            written[0] if written is not None else decode_commit(data, self.name, where).id
            for data in entries
            if data[0] == COMMIT
        ]
        if len(earlier) + len(new) < INDEX_EVERY:
            return None
        return encode_index([*earlier, *new])

    def _absorb(
        self,
        segment: int,
        entries: list[bytes],
        expected: int,
        end: int,
        written: tuple[str, SnapshotRecord, bytes] | None,
    ) -> None:
        """Add what this writer just appended to the index and the open segment's decoder.

        The commit's own record and raw payload are taken as they are (``written``): decoding
        the bytes just encoded would only repeat the work.
        """
        log = self._log
        where = log.where(segment)
        decoded = [decode_entry(e, self.name, where) if e[0] != COMMIT or written is None else None for e in entries]
        loaded = log.segments.get(segment)
        if loaded is None:
            info = [i for i in self._store.backend.segments(self.key) if i.segment == segment]
            loaded = LoadedSegment(segment, info[0].version if info else 0, 0)
            log.segments[segment] = loaded
        if expected == 0 or loaded.end == 0:
            self._open = SegmentReader(where, last_run_only=True)
            self._open_segment, self._open_version, self._open_loaded = segment, loaded.version, loaded
        elif self._open_segment != segment:
            self._open = None
        for data, entry in zip(entries, decoded, strict=True):
            ordinal = len(loaded.entries)
            if entry is None:
                assert written is not None
                sid, record, raw = written
                entry = CommitEntry(sid, record, data[1], len(raw), b"", entry_base(data, record.parent))
                if self._open is not None:
                    self._open.add_raw(entry.id, raw, entry.mode in KEY_MODES)
            elif isinstance(entry, CommitEntry) and self._open is not None:
                self._open.payload(entry)
            if isinstance(entry, CommitEntry):
                kept = entry.without_payload()
                loaded.entries.append(kept)
                log.index_commit(kept, segment, ordinal)
            else:
                loaded.entries.append(entry)
                log._apply_meta(entry)
        loaded.end = loaded.stored = end
        self._open_end = end

    def _catch_up(self) -> SessionLog:
        """Under the lock: read what other writers appended and bring the decoder along."""
        log = self._log
        log.refresh(locked=True)
        if log.last_segment is None:
            raise SnapshotNotFound(f"session {self.name!r} does not exist", {"session": self.name})
        self._sync_open(log)
        return log

    def _sync_open(self, log: SessionLog) -> None:
        """Decode what was appended to the open segment since this handle last looked (no lock needed:
        appended entries never change; a torn tail is simply not read yet)."""
        last = log.last_segment
        assert last is not None
        if not self._decodes(last):
            self._open = None
            self._stream = None
        elif self._open_end != last.end:
            try:
                fresh, taken = log.fresh, self._fresh_taken
                if fresh is not None and fresh[:3] == (last.number, last.version, self._open_end):
                    # the refresh decoded these entries already, payloads kept: no second read
                    entries, end = fresh[4], fresh[3]
                elif (
                    fresh is not None
                    and taken is not None
                    and fresh[:3] == taken[:3]
                    and taken[3] == self._open_end
                    and len(fresh[4]) >= taken[4]
                ):
                    # a later refresh extended entries this decoder took up to its end: the rest is new
                    entries, end = fresh[4][taken[4] :], fresh[3]
                else:
                    fresh = None
                    read = self._store.backend.read_segment(self.key, last.number, self._open_end)
                    where = log.where(last.number)
                    entries = [decode_entry(data, self.name, where) for data in without_index(read.entries)]
                    end = read.end
                self._fresh_taken = None
                assert self._open is not None  # (``_decodes``)
                for entry in entries:
                    if isinstance(entry, CommitEntry):
                        self._open.payload(entry)
                self._open_end = end
                if fresh is not None:
                    self._fresh_taken = (*fresh[:4], len(fresh[4]))
            except SnapshotError:
                self._open = None
            self._stream = None

    def _decodes(self, last: LoadedSegment) -> bool:
        """Whether this writer's decoder follows the open segment as the index holds it now."""
        return (
            self._open is not None
            and self._open_segment == last.number
            and self._open_version == last.version
            and self._open_loaded is last
        )

    def _open_raw(self, log: SessionLog) -> bytearray:
        """The open segment's raw stream, decoding it from the store when this writer has not yet."""
        last = log.last_segment
        assert last is not None
        if not self._decodes(last):
            read = self._store.backend.read_segment(self.key, last.number)
            reader = SegmentReader(log.where(last.number), last_run_only=True)
            for data in without_index(read.entries):
                entry = decode_entry(data, self.name, log.where(last.number))
                if isinstance(entry, CommitEntry):
                    reader.payload(entry)
            self._open, self._open_segment, self._open_end = reader, last.number, read.end
            self._open_version, self._open_loaded = last.version, last
            self._stream = None
        assert self._open is not None
        return self._open.raw

    def _open_size(self, log: SessionLog) -> int:
        """Raw bytes of the open segment (its decoder keeps only the last run of them)."""
        self._open_raw(log)
        assert self._open is not None
        return self._open.size

    def _rebuild_open(self, log: SessionLog, sid: str) -> Any:
        """``sid`` rebuilt from the open segment's decoder when it holds the whole chain (it keeps
        the last run only), else read from the store."""
        assert self._open is not None
        path = log.chain(sid)
        spans = self._open.spans
        if any(c.id not in spans for c in path):
            return log.rebuild(sid)
        return log.apply_chain(path, {c.id: self._open.payload_of(c.id) for c in path})

    def _head_for(self, log: SessionLog, parent: str) -> tuple[Any, dict[str, bytes] | None]:
        """The parent's state and its members' canonical bytes (the cached head, caught up or rebuilt)."""
        if self._head_id != parent or self._head_state is None:
            self._head_state, self._head_pieces = self._caught_up_head(log, parent)
            self._head_id = parent
        return self._head_state, self._cached_pieces()

    def _cached_pieces(self) -> dict[str, bytes] | None:
        """The cached head's top-level members' canonical bytes, serialized when first needed."""
        if self._head_pieces is None and type(self._head_state) is dict:
            self._head_pieces = codec.encode_members(self._head_state)[1]
        return self._head_pieces

    def _forward_path(self, log: SessionLog, target: str) -> list[IndexedCommit] | None:
        """The commits from the cached head (exclusive) to ``target`` when all are deltas of the open segment."""
        if self._head_id is None or self._head_state is None or self._open is None:
            return None
        path: list[IndexedCommit] = []
        current: str | None = target
        while current != self._head_id:
            commit = log.commits.get(current) if current is not None else None
            if commit is None or commit.mode in KEY_MODES or current not in self._open.spans:
                return None
            path.append(commit)
            current = commit.base
        path.reverse()
        return path

    def _caught_up_head(self, log: SessionLog, parent: str) -> tuple[Any, dict[str, bytes] | None]:
        """The state of ``parent`` and, when known, its members' bytes: the cached head with other
        writers' deltas applied when it is an ancestor in the open segment, else rebuilt. The
        cache is consumed (patched in place)."""
        self._open_raw(log)
        assert self._open is not None
        path = self._forward_path(log, parent)
        if path:
            state, self._head_state, self._head_id = self._head_state, None, None
            for commit in path:
                state = apply_delta_payload(commit, self._open.payload_of(commit.id), state)
            # one serialization both checks the hash and gives the members' bytes the next diff needs
            canonical = codec.encode_canonical(state)
            pieces = canonical.pieces
            expected = log.commits[parent].entry.checked_record.state
            if canonical.state_hash != expected:
                check_state(state, expected, parent)
            return state, pieces
        if path == [] and self._head_state is not None:
            return self._head_state, self._head_pieces
        if parent in self._open.spans:
            return self._rebuild_open(log, parent), None
        return log.rebuild(parent), None

    def _chain_cost_of(self, log: SessionLog, sid: str) -> int:
        """Estimated cost of rebuilding ``sid`` from its keyframe (the policy's units), memoised."""
        found = self._chain_cost.get(sid)
        if found is not None:
            return found
        # back to the nearest snapshot already costed (the parent, as a rule, when other writers
        # committed since this one did), not always to the keyframe
        newer: list[IndexedCommit] = []
        current: str | None = sid
        segment = log.commits[sid].segment if sid in log.commits else -1
        while current is not None and current not in self._chain_cost:
            commit = log.commits.get(current)
            if commit is None or commit.mode in KEY_MODES or commit.segment != segment or len(newer) > len(log.commits):
                newer = []
                break
            newer.append(commit)
            current = commit.base
        if newer and current is not None:
            cost, keyframe = self._chain_cost[current], self._keyframe_of.get(current, current)
            path = newer[::-1]
        else:
            path = log.chain(sid)
            cost, keyframe = 0, path[0].id
            self._chain_cost[keyframe], self._keyframe_of[keyframe] = 0, keyframe
            path = path[1:]
        for commit in path:
            cost += self._store.policy.delta_cost(commit.raw_length)
            self._chain_cost[commit.id], self._keyframe_of[commit.id] = cost, keyframe
        return cost

    def _run_start(self, log: SessionLog, sid: str) -> int:
        """Raw bytes a rebuild of ``sid`` decodes before its keyframe (a segment is read from its start)."""
        self._chain_cost_of(log, sid)
        keyframe = self._keyframe_of.get(sid)
        if self._open is None or keyframe is None or keyframe not in self._open.spans:
            return 0
        return self._open.spans[keyframe][0]

    def _checkpoint(self, log: SessionLog) -> dict[str, Any]:
        body: dict[str, Any] = {"checkpoint": True, "name": self.name}
        body.update(log.settings)
        body["max_snapshots"] = log.max_snapshots
        body["tags"] = dict(log.tags)
        return body

    def _write_meta(self, body: dict[str, Any]) -> None:
        """Append one settings entry to the open segment (the caller holds both locks)."""
        log = self._log
        last = log.last_segment
        assert last is not None
        if last.damage is not None:  # never append after damage: settings open a new segment
            self._append(last.number + 1, [encode_meta(self._checkpoint(log)), encode_meta(body)], 0)
            return
        restated = [] if last.entries else [encode_meta(self._checkpoint(log))]  # a checkpoint torn away
        self._append(last.number, [*restated, encode_meta(body)], last.end)

    # -- bringing snapshots in (archives, upgrades) -----------------------
    def import_snapshots(
        self,
        items: Iterable[tuple[SnapshotRecord, bytes, bytes | None]],
        *,
        max_snapshots: int | None = None,
        head: str | None = None,
        tags: dict[str, str] | None = None,
        evicted_through: str | None = None,
    ) -> list[str]:
        """Append snapshots made elsewhere, keeping their records (and so their ids); returns the ids added.

        ``evicted_through``: the newest of them behind the retention window, as the source's eviction
        line left it (an archive's ``window``): recorded in the same settings entry as the head, so the
        ones up to it are kept by their tags alone, or evicted, as they were there (it moves the
        session's line forward only).

        Each item is (record, the state's canonical bytes, the delta payload or None), parents
        before children; the caller has verified them. For a record naming no delta (a snapshot
        first stored against another base), the payload is the patch from its parent's state when
        the caller has it. A list or tuple is checked whole before anything is written; an
        iterator is consumed as it is written (an archive streams them). A record whose session is
        another name cannot keep its id here (ids hash the session name): rename the records
        first. A snapshot given its patch from its parent is stored as that patch (against the
        parent as its base when its record names no delta) when its parent is in the open segment
        and the keyframe policy allows, otherwise as a full state (its record, and id, unchanged).
        """
        added: list[str] = []
        store = self._store
        # everything that can refuse the import is checked before anything is written (the records of
        # a sequence all up front; an iterator, which an archive import streams, item by item)
        if max_snapshots is not None:
            check_max_snapshots(max_snapshots)
        for name in tags or {}:
            check_tag_name(name)
        if isinstance(items, (list, tuple)):
            for record, _state_bytes, _delta in items:
                self._check_import_session(record)
        with self._lock, self._locked_for_write():
            log = self._catch_up()
            for record, state_bytes, delta_payload in items:
                self._check_import_session(record)
                sid = record.snapshot_id()
                if sid in log.commits:
                    continue
                last = log.last_segment
                assert last is not None
                parent = log.commits.get(record.parent) if record.parent else None
                open_has_commit = last.runs() > 0
                if open_has_commit and last.damage is None:
                    try:
                        self._open_raw(log)
                    except SnapshotError as exc:  # a payload that does not decode: damage
                        last.damage, self._open = str(exc), None
                if last.damage is not None:
                    open_has_commit = True  # never append after damage: start a new segment
                # a record naming no delta (first stored against another base) whose patch from its
                # parent came with it is stored as that patch, against the parent as its base (flag 8)
                # (a record of a snapshot stored whole says depth 0 and no chain bytes: one that says
                # otherwise, from a foreign archive, could not be read as a flag-8 COMMIT)
                against_parent = (
                    record.delta is None and record.depth == 0 and record.chain_bytes == 0 and store.base_deltas
                )
                as_delta = (
                    (record.delta is not None or against_parent)
                    and delta_payload is not None
                    and last.damage is None
                    and parent is not None
                    and parent.segment == last.number
                    and parent.depth + 1 <= store.policy.max_chain
                    and not store.policy.wants_keyframe(
                        self._chain_cost_of(log, parent.id) + store.policy.delta_cost(len(delta_payload)),
                        record.size,
                        self._run_start(log, parent.id),
                    )
                )
                if as_delta:
                    assert delta_payload is not None
                    window = bytes(self._open_raw(log)[-DELTA_WINDOW:])
                    if self._stream is None or self._stream_end != last.end:
                        self._stream = DeltaStream(store.level, window)
                    mode, compressed = self._stream.compress(delta_payload)
                    base = record.parent if record.delta is None else None
                    entry, raw = encode_commit(record, mode, len(delta_payload), compressed, base), delta_payload
                    self._append(last.number, [entry], last.end, (sid, record, raw))
                    self._chain_cost.pop(sid, None)
                else:
                    healthy = open_has_commit and last.damage is None
                    raw_len = self._open_size(log) if healthy else 0
                    extend = healthy and store.policy.may_patch(last.runs(), raw_len, len(state_bytes))
                    previous = self._open.previous_run() if extend and self._open is not None else None
                    mode, compressed = compress_keyframe(state_bytes, store.level, previous)
                    self._stream = None
                    entry = encode_commit(record, mode, len(state_bytes), compressed)
                    if extend or not open_has_commit:
                        restated = [] if last.entries else [encode_meta(self._checkpoint(log))]
                        self._append(last.number, [*restated, entry], last.end, (sid, record, state_bytes))
                    else:
                        checkpoint = encode_meta(self._checkpoint(log))
                        self._append(last.number + 1, [checkpoint, entry], 0, (sid, record, state_bytes))
                added.append(sid)
            settings: dict[str, Any] = {}
            if max_snapshots is not None and max_snapshots != log.max_snapshots:
                settings.update(limit_settings(log, check_max_snapshots(max_snapshots)))
            if head is not None and head in log.commits and head != log.head:
                settings["head"] = head
            if evicted_through is not None and evicted_through in log.commits:
                line = log.settings.get("evicted_through")
                if line not in log.order or log.order.index(evicted_through) > log.order.index(line):
                    settings["evicted_through"] = evicted_through
            if settings:
                self._write_meta(settings)
            for name, sid in (tags or {}).items():
                if sid in log.commits and log.tags.get(name) != sid:
                    self._write_meta({"tag": [check_tag_name(name), sid]})
            self._head_id = self._head_state = self._head_pieces = None
            self._reclaim_quietly(log)
        return added

    def _reclaim(self, log: SessionLog) -> int:
        """Squash and drop what retention left behind (under the lock): it rewrites segments, so a
        failure after it began leaves the handle reading the session again (``_writing``)."""
        self._appending = True
        return self._store.reclaimer.reclaim(self, log)

    def _reclaim_quietly(self, log: SessionLog) -> None:
        """Reclaim after a write that has landed: a failure (a full disk, damage) must not make the
        caller think the write failed; the space waits for gc or the next keyframe."""
        try:
            self._reclaim(log)
        except SnapshotError:
            self.forget_open_segment()

    def _check_import_session(self, record: SnapshotRecord) -> None:
        if record.session != self.name:
            raise SnapshotError(
                f"a record of session {record.session!r} cannot be imported into {self.name!r}",
                {"session": self.name, "record_session": record.session},
            )

    # -- moving the head, settings, tags ----------------------------------
    def rollback(self, snapshot_id: str, model: Any = None) -> Any:
        """Move the head to a retained snapshot and return its state (the caller's own copy).

        Later snapshots stay listed until evicted; the next commit's parent is this one. With
        ``model`` (a pydantic model class) the state comes back validated as that model.
        Rolling back onto the head writes nothing, unless the newest segment is damaged
        (``tail_damage``): the head move then records, in a new segment, that the session goes
        on from this snapshot, and ``tail_damage`` is None from then on.
        """
        if model is not None:
            return self.rollback_model(snapshot_id, model)
        with self._lock:
            log = self._current()
            sid = self._resolve(log, snapshot_id)
            if sid == log.head and not _damaged_tail(log):  # nothing to write, so no lock to wait for
                return self._state_of(log, sid)
        with self._lock, self._locked_for_write():
            log = self._catch_up()
            sid = self._resolve(log, snapshot_id)
            if sid == self._head_id and self._head_state is not None:
                self._write_meta({"head": sid})
                return codec.loads(self._head_bytes())
            state = self._state_of(log, sid)
            if sid != log.head or _damaged_tail(log):
                self._write_meta({"head": sid})
            self._head_id, self._head_state, self._head_pieces = sid, state, None
            return codec.loads(codec.dumps(state))

    def set_max_snapshots(self, max_snapshots: int) -> list[str]:
        """Change the retention limit; returns the ids that a lower limit evicted (oldest first)."""
        check_max_snapshots(max_snapshots)
        with self._lock, self._locked_for_write():
            log = self._catch_up()
            before = log.retained()
            if log.max_snapshots == max_snapshots:
                return []
            self._write_meta(limit_settings(log, max_snapshots))
            after = set(log.retained())
            self._reclaim_quietly(log)  # the limit is written: a failed rewrite must not read as a refusal
            return [sid for sid in before if sid not in after]

    def tag(self, snapshot_id: str, name: str) -> str:
        """Name a retained snapshot; retention keeps a tagged snapshot until it is untagged. Returns its id."""
        check_tag_name(name)
        with self._lock, self._locked_for_write():
            log = self._catch_up()
            sid = self._resolve(log, snapshot_id)
            if log.tags.get(name) != sid:
                # the snapshot the tag leaves may fall out of the window, and the one it names may
                # be a head the limit evicted: evicted, each stays so once no tag holds it
                self._write_meta(_with_mark(log, {"tag": [name, sid]}))
            return sid

    def untag(self, name: str) -> str:
        """Remove a tag; returns the id it named. The snapshot may then be evicted."""
        check_tag_name(name)
        with self._lock, self._locked_for_write():
            log = self._catch_up()
            if name not in log.tags:
                raise SnapshotNotFound(f"session {self.name!r} has no tag {name!r}", {"tag": name})
            sid = log.tags[name]
            self._write_meta(_with_mark(log, {"tag": [name, None]}))
            self._reclaim_quietly(log)
            return sid

    def forget(self, keep_last: int) -> list[str]:
        """Evict all but the last ``keep_last`` snapshots now (tagged ones stay); returns what was evicted.

        The limit for later commits is unchanged.
        """
        check_max_snapshots(keep_last, "keep_last")
        with self._lock, self._locked_for_write():
            log = self._catch_up()
            before = log.retained()
            behind = before[: max(len(before) - keep_last, 0)]
            gone = [sid for sid in behind if sid not in log.tags.values()]
            # the mark goes through the newest of them, tagged or not: a tagged one is kept by its tag
            # alone from now on, and goes with its tag (as one the limit evicted does)
            if behind and log.order.index(behind[-1]) >= log.window_start():
                self._write_meta({"evicted_through": behind[-1]})
            if gone:
                self._reclaim_quietly(log)
            return gone

    def clear_old_snapshots(self) -> int:
        """Reclaim what retention evicted now instead of at the next keyframe; returns segments dropped."""
        with self._lock, self._locked_for_write():
            return self._reclaim(self._catch_up())

    # -- internals -----------------------------------------------------
    def _head_bytes(self) -> bytes:
        if self._head_pieces is None:
            return codec.dumps(self._head_state)
        return codec.join_members(self._head_pieces)

    def _snapshot(self, log: SessionLog, sid: str) -> Snapshot:
        tags = tuple(sorted(t for t, s in log.tags.items() if s == sid))
        commit = log.commits[sid]
        return Snapshot.from_record(sid, commit.record, tags, commit.mode not in KEY_MODES)

    def forget_open_segment(self) -> None:
        """Drop what this handle holds of the open segment (after a reclaim rewrote segments)."""
        self._open = None
        self._stream = None

    def export_state(self, snapshot_id: str, path: Any) -> int:
        """Write one retained snapshot's state to ``path`` as pretty JSON (UTF-8, sorted keys); returns bytes written.

        Integers and floats keep their spelling (``1`` vs ``1.0``), so the file reads back type-exact.
        The file is written beside ``path`` and renamed over it when whole: a write that fails (a
        missing folder, a full disk) raises ``ArchiveError`` naming the path, and ``path`` is as it was.
        """
        import orjson

        data = orjson.dumps(self.state(snapshot_id), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        target = os.fspath(path)
        tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)[:120]}.tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "xb") as out:
                out.write(data)
            os.replace(tmp, target)
        except OSError as exc:
            with suppress(OSError):
                os.unlink(tmp)
            raise ArchiveError(
                f"cannot write the state to {target}: {exc.strerror or exc} (errno {exc.errno}); {target} is unchanged",
                {"path": target, "errno": exc.errno, "reason": "write failed"},
            ) from exc
        return len(data)




@contextmanager
def naming_timeouts(locked: AbstractContextManager[None], session: str) -> Iterator[None]:
    """A session's lock, held as ``locked`` holds it; a ``LockTimeoutError`` waiting for it names
    the session by its name (an engine knows only the session's encoded key)."""
    with ExitStack() as held:
        try:
            held.enter_context(locked)
        except LockTimeoutError as exc:
            raise exc.naming(session) from None
        yield


def limit_settings(log: SessionLog, max_snapshots: int) -> dict[str, Any]:
    """The settings entry for a new limit: a higher one must not bring evicted snapshots back,
    so it also records the newest snapshot already evicted (when there is one)."""
    body: dict[str, Any] = {"max_snapshots": max_snapshots}
    if max_snapshots > log.max_snapshots:
        return _with_mark(log, body)
    return body


def _has_evicted(log: SessionLog) -> bool:
    """Whether retention or ``forget`` has evicted snapshots of the session: a mark says so, or a
    snapshot it retains has a parent it does not (a fork's parent is evicted after the fork)."""
    if log.settings.get("evicted_through") is not None:
        return True
    retained = set(log.retained())
    return any((parent := log.commits[sid].record.parent) is not None and parent not in retained for sid in retained)


def _damaged_tail(log: SessionLog) -> bool:
    last = log.last_segment
    return last is not None and last.damage is not None


def _with_mark(log: SessionLog, body: dict[str, Any]) -> dict[str, Any]:
    """A settings entry that also records the newest snapshot behind the window, when that moves
    the recorded mark forward."""
    mark = log.eviction_mark()
    return body if mark is None else {**body, "evicted_through": mark}


def _shared_ops(ops: list[Any]) -> list[Any] | None:
    """``ops`` with each value a ``codec.shared_copy`` (the head then shares the state's strings),
    or None when a value is not plain JSON."""
    applied = []
    for op in ops:
        if "value" in op:
            value = codec.shared_copy(op["value"])
            if value is codec.NOT_PLAIN:
                return None
            op = {**op, "value": value}
        applied.append(op)
    return applied


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _now() -> str:
    return format_timestamp(datetime.now(timezone.utc))


def check_max_snapshots(value: Any, argument: str = "max_snapshots") -> int:
    if type(value) is not int or not 1 <= value <= MAX_INT64:
        shown = shown_value(value, 40)
        raise SnapshotError(
            f"{argument} must be a positive integer (1 to 2^63-1), not {shown}",
            {"argument": argument, "value": shown},
        )
    return value


def check_tag_name(name: Any) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 100 or not _encodable(name) or any(
        ord(c) < 32 for c in name
    ):
        raise SnapshotError("a tag is 1 to 100 characters of text", {"argument": "tag", "value": repr(name)})
    if len(name) >= MIN_PREFIX and all(c in "0123456789abcdef" for c in name.lower()):
        raise SnapshotError("a tag must not look like a snapshot id (hex digits)", {"tag": name})
    return name


def resolve_prefix(snapshot_id: Any, candidates: Iterable[str], *, where: str) -> str:
    """Match a full id or a unique prefix (8+ hex characters) against ``candidates``."""
    if not isinstance(snapshot_id, str):
        raise SnapshotNotFound(
            f"snapshot id must be a string, not {type(snapshot_id).__name__}", {"snapshot": repr(snapshot_id)}
        )
    wanted = snapshot_id.strip().lower()
    if len(wanted) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in wanted):
        raise SnapshotNotFound(
            f"snapshot {snapshot_id!r} not found: ids are hex, and prefixes need {MIN_PREFIX}+ characters",
            {"snapshot": snapshot_id, "where": where},
        )
    matches = sorted({c for c in candidates if c.startswith(wanted)})
    if not matches:
        raise SnapshotNotFound(
            f"snapshot {snapshot_id} not found in {where}", {"snapshot": snapshot_id, "where": where}
        )
    if len(matches) > 1:
        raise AmbiguousSnapshotId(
            f"snapshot prefix {snapshot_id} is ambiguous in {where}: {', '.join(m[:12] for m in matches)}",
            {"snapshot": snapshot_id, "candidates": matches, "where": where},
        )
    return matches[0]
