"""One (thread, namespace) of a LangGraph thread as two snapstore sessions.

The checkpoints session gets one commit per checkpoint. Its state is the checkpoint (encoded
by ``encoding.ValueCodec``) plus four lists that only ever grow at the end, so each commit
adds to them with appends in its delta. Their rows are strings, not arrays: a read of the head
parses, checks and indexes a few thousand fewer objects (format 3):

* ``checkpoint_ids`` and ``history``: every checkpoint of the namespace, and beside each the
  JSON text of ``[parent id, metadata]``, so one read of the head answers ``list`` and its filters;
* ``snapshots``: ``"<snapshot id> <checkpoint id>"``, written when a commit moves the head away
  from a checkpoint: the snapshot that holds it (the head holds its own);
* ``writes_at``: ``"<writes snapshot id> <checkpoint id>"``: where its pending writes are.

``writes_seen`` is the state hash of the writes head the commit pointed at: every checkpoint
whose writes it held got a pointer to it in that commit (``Lane.writes_of``,
``Lane._writes_head_to_point_at``).

A later record of the same checkpoint wins. The writes session gets a commit per ``put_writes``
that adds a write (none when all are stored already, one more when it is built again after
another handle's commit); its state holds the writes of the checkpoints ``writes_at`` does not point at
yet (usually one or two), so a step's writes cost a commit the size of those writes.

Formats 1 and 2 kept each row as an array (``[checkpoint id, parent id, metadata]``,
``[checkpoint id, snapshot id]``); their threads read as before and carry on in format 3.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from ..errors import ConcurrentUpdateError, CorruptObjectError, LockTimeoutError, SnapshotError, SnapshotNotFound
from ..objects import Snapshot
from ..session import ANY_HEAD, Session
from ..store import SnapshotStore
from .encoding import Ciphertexts, Kept
from .names import lane_names

#: the layout a saver writes (docs/langgraph.md, "How a thread is stored"); 4: serialized values keep
#: their long runs of text apart from the rest of their bytes
LAYOUT = 4
_FORMAT_PREFIX = "snapstore.langgraph/"
FORMAT = f"{_FORMAT_PREFIX}{LAYOUT}"
#: a snapshot id is 32 hex digits: a pointer row is the id, a space, the checkpoint id
SNAPSHOT_ID_LENGTH = 32
#: a channel's stored value is the state's member ``value:<channel>``, its version in ``value_versions``
VALUE_PREFIX = "value:"
#: snapstore's largest retention limit: a checkpointer keeps every checkpoint until told otherwise
RETAIN_ALL = 2**63 - 1

State = dict[str, Any]
#: (checkpoint id, the state holding it, its write entries, its encoded metadata)
Entries = list[tuple[str, State, list[Any], Any]]


def channel_values(state: State) -> State:
    """{channel: [version, stored value]} of a checkpoint's state.

    Each value is a member of the state of its own (format 2), so that snapstore's commit, which
    compares a state member by member by their bytes, finds a message list that only grew by
    comparing its bytes once, instead of serializing it twice more inside a shared member.
    Format 1 kept them all in one member, ``channel_values``, read as such.
    """
    if "channel_values" in state:
        found: State = state["channel_values"]
        return found
    return {channel: [version, state[VALUE_PREFIX + channel]] for channel, version in state["value_versions"].items()}


def _value_members(values: State) -> State:
    members: State = {VALUE_PREFIX + channel: kept[1] for channel, kept in values.items()}
    members["value_versions"] = {channel: kept[0] for channel, kept in values.items()}
    return members


def history_row(parent_id: str | None, metadata: Any) -> str:
    """A checkpoint's row in ``history``: the JSON text of [parent id, encoded metadata], keys
    sorted (as the store orders a state's), so equal metadata is one row text."""
    return orjson.dumps([parent_id, metadata], option=orjson.OPT_SORT_KEYS).decode()


def pointer_row(snapshot_id: str, checkpoint_id: str) -> str:
    """A row of ``snapshots`` or ``writes_at``."""
    if len(snapshot_id) != SNAPSHOT_ID_LENGTH:
        raise ValueError(f"a snapshot id is {SNAPSHOT_ID_LENGTH} characters, not {snapshot_id!r}")
    return f"{snapshot_id} {checkpoint_id}"


class Pointers:
    """One of the head's pointer lists (``snapshots``, ``writes_at``) by checkpoint id.

    The first question scans the rows from the newest: a reopened read asks one, most often of a
    recent checkpoint. The next builds the dict."""

    __slots__ = ("_asked", "_found", "_rows")

    def __init__(self, rows: list[str] | None = None, found: dict[str, str] | None = None) -> None:
        self._rows = rows or []
        self._found = found
        self._asked = False

    def get(self, checkpoint_id: str) -> str | None:
        if self._found is None and not self._asked:
            self._asked = True
            cut, size = SNAPSHOT_ID_LENGTH, SNAPSHOT_ID_LENGTH + 1 + len(checkpoint_id)
            for row in reversed(self._rows):  # the later record of a checkpoint wins
                if len(row) == size and row.endswith(checkpoint_id):
                    return row[:cut]
            return None
        return self.as_dict().get(checkpoint_id)

    def as_dict(self) -> dict[str, str]:
        if self._found is None:
            cut = SNAPSHOT_ID_LENGTH
            self._found = {row[cut + 1 :]: row[:cut] for row in self._rows}
        return self._found

    def with_(self, added: dict[str, str]) -> Pointers:
        return Pointers(found={**self.as_dict(), **added})


class Index:
    """The head's lists by checkpoint id: its history row, the snapshot holding it, the snapshot
    holding its pending writes."""

    __slots__ = ("rows", "snapshots", "writes", "writes_seen")

    def __init__(
        self,
        rows: dict[str, Any],
        snapshots: Pointers | None = None,
        writes: Pointers | None = None,
        writes_seen: str | None = None,
    ) -> None:
        #: checkpoint id -> its ``history`` row (format 3) or (parent id, metadata) (formats 1, 2)
        self.rows = rows
        self.snapshots = snapshots or Pointers()
        self.writes = writes or Pointers()
        #: the state hash of the writes head the head's commit saw (format 3; None: not recorded, or
        #: there was none)
        self.writes_seen = writes_seen

    @classmethod
    def of(cls, state: State) -> Index:
        if "checkpoint_ids" not in state:  # formats 1 and 2: rows as arrays
            rows = {row[0]: (row[1], row[2]) for row in state["history"]}
            return cls(rows, Pointers(found=dict(state["snapshots"])), Pointers(found=dict(state["writes_at"])))
        ids, history = state["checkpoint_ids"], state["history"]
        if len(ids) != len(history):
            raise CorruptObjectError(
                "a LangGraph checkpoint's head has checkpoint ids and history rows that do not pair",
                {"thread_id": state.get("thread_id"), "ids": len(ids), "rows": len(history)},
            )
        rows = dict(zip(ids, history, strict=True))
        return cls(rows, Pointers(state["snapshots"]), Pointers(state["writes_at"]), state.get("writes_seen"))

    def entry(self, checkpoint_id: str) -> tuple[str | None, Any]:
        """(parent id, encoded metadata) of a checkpoint the index holds."""
        row = self.rows[checkpoint_id]
        if type(row) is str:
            parent, metadata = orjson.loads(row)
            return parent, metadata
        return row[0], row[1]

    def metadata(self, checkpoint_id: str) -> Any:
        return self.entry(checkpoint_id)[1]

    def latest(self) -> str:
        return max(self.rows)


def _history_lists(head: State | None) -> tuple[list[str], list[str], list[str], list[str]]:
    """The head's checkpoint_ids, history, snapshots and writes_at, as format 3 writes them (a head
    of formats 1 and 2 has its rows converted: the first commit of format 3 rewrites them once)."""
    if head is None:
        return [], [], [], []
    if "checkpoint_ids" in head:
        return list(head["checkpoint_ids"]), list(head["history"]), list(head["snapshots"]), list(head["writes_at"])
    return (
        [row[0] for row in head["history"]],
        [history_row(row[1], row[2]) for row in head["history"]],
        [pointer_row(sid, cid) for cid, sid in head["snapshots"]],
        [pointer_row(sid, cid) for cid, sid in head["writes_at"]],
    )


class Lane:
    """The sessions of one (thread, namespace), with the heads this process last read or wrote."""

    def __init__(
        self, store: SnapshotStore, thread_id: str, checkpoint_ns: str, grew: Callable[[], None] | None = None
    ) -> None:
        self.store = store
        self._grew = grew  # told when a head this lane keeps changed (the saver's bound by bytes)
        self.thread_id = thread_id
        self.checkpoint_ns = checkpoint_ns
        self.names = lane_names(thread_id, checkpoint_ns)
        # parallel tasks of one step write the same checkpoint's writes from several threads
        self.lock = threading.RLock()
        # each session's head as this lane last read or wrote it ((None, None): no session)
        self._heads: dict[str, tuple[str | None, State | None]] = {}
        # the canonical size of each head's state as this lane last read or wrote it (``kept_bytes``)
        self._head_sizes: dict[str, int] = {}
        # the sessions this lane committed to: the heads closing the saver may settle
        self._written: set[str] = set()
        # each session's head as this lane last read or wrote it: (snapshot id, its state's hash);
        # and the snapshot this lane last committed to each session
        self._head_hashes: dict[str, tuple[str, str]] = {}
        self._own: dict[str, str] = {}
        # the heads one put or put_writes builds on (see ``operation``), and the thread doing it
        self._asked: dict[str, tuple[str | None, State | None]] = {}
        self._operating: int | None = None
        # within an operation built again (``rebase``): the heads are read, not taken from memory
        self._reread = False
        self._missed = 0  # within an operation: how often what it was built on was found gone
        self._sessions: dict[str, Session] = {}
        self._index: tuple[str, Index] | None = None
        # under an EncryptedSerializer: each channel's ciphertexts in the head, to reuse (None: not read yet)
        self.ciphertexts: dict[str, Ciphertexts] | None = None
        # each channel's serialized models in the last value this process put or decoded from
        # the head (encoding.Reuse)
        self.serialized: dict[str, dict[int, Kept]] = {}

    def kept_bytes(self) -> int:
        """About what this lane keeps in memory between steps, in bytes: the canonical JSON of the
        heads it holds (their objects, and the serialized values kept beside them, take a few
        times that). An estimate read without the lane's lock."""
        sizes = self._head_sizes
        return sum(sizes.get(name, 0) for name, (_sid, state) in list(self._heads.items()) if state is not None)

    # -- sessions ------------------------------------------------------
    def _session(self, name: str, create: bool) -> Session | None:
        # kept: asking the store again costs a listing of the session's files, at every call
        sess = self._sessions.get(name)
        if sess is not None:
            return sess
        if create:
            sess = self.store.session(name, max_snapshots=RETAIN_ALL)
        else:
            try:
                sess = self.store.session(name, create=False)
            except SnapshotNotFound:
                return None
        self._sessions[name] = sess
        return sess

    @contextlib.contextmanager
    def operation(self, writes: bool = False) -> Iterator[None]:
        """One put or put_writes (``writes``), under the lane's lock, built on the heads this lane
        last read or wrote, without asking the store again (asking costs a listing of the
        session's files and a read of what changed, more than the rest of a small step).

        One process writes a thread at a time, and a run reads its thread before it writes to it,
        so those heads are the store's as a rule. Each commit checks it under the session's lock
        (``Session.commit(parent=...)``): it is made only on the head it was built on. When another
        handle committed in between, nothing is written, ``commit_checkpoint`` or ``commit_writes``
        says so, and the caller builds the operation again (``rebase``) on the heads the store has
        now, so nothing either handle wrote is dropped.

        A put_writes on a lane that keeps no writes head reads both heads from the store: the
        writes head it would read alone could be newer than the checkpoints head it keeps, whose
        index then lacks the pointer to writes that head no longer holds, and its commit, on the
        store's writes head, would not be seen as stale.
        """
        with self.lock:
            self._operating = threading.get_ident()
            self._missed = 0
            if writes and self._heads.get(self.names.writes) is None:
                self._reread = True
            try:
                yield
            finally:
                self._operating = None
                self._asked.clear()
                self._reread = False

    def _head(self, name: str) -> tuple[str | None, State | None]:
        if self._operating != threading.get_ident():
            return self._read_head(name)
        found = self._asked.get(name)
        if found is None:
            found = None if self._reread else self._heads.get(name)
            if found is None:
                found = self._read_head(name)
            self._asked[name] = found
        return found

    def rebase(self) -> None:
        """Within an operation whose commit found the head moved by another handle (and wrote
        nothing): build it again on the heads the store has now, every one read again.

        (Committing anyway, on top of the other handle's, and building again on that one lost
        checkpoints when two handles kept writing one thread: each could build on the other's
        commit that a third had already superseded.)"""
        self._asked.clear()
        self._reread = True

    @contextlib.contextmanager
    def built_on_kept(self) -> Iterator[list[bool]]:
        """Within an operation, around building it on what this lane kept: when that names a
        snapshot another handle removed (it rewrote the thread: ``delete_for_runs``, ``prune``,
        ``delete_thread``), the lane forgets all it kept (``read_again``) and the yielded flag says
        to build again, on what the store holds. Up to ``_MISSES`` times an operation (a thread
        deleted while it runs is made again), then raised. One session of the thread gone and the
        other there (``IncompleteThreadError``) is another handle between the two deletes of a
        ``delete_thread`` (this saver's own holds the lane's lock): waited for a little longer at each
        attempt, as a read waits (``saver._reading_afresh``), up to ``_INCOMPLETE_MISSES`` times."""
        missed = [False]
        try:
            yield missed
        except SnapshotNotFound as exc:
            self._missed += 1
            incomplete = isinstance(exc, IncompleteThreadError)
            if self._missed > (_INCOMPLETE_MISSES if incomplete else _MISSES):
                raise
            if incomplete:
                pause_for_a_delete(self._missed)
            self.read_again()
            missed[0] = True

    def read_again(self) -> None:
        """Forget every head this lane kept: the rest of the operation reads them from the store."""
        self._heads.clear()
        self._sessions.clear()
        self._head_hashes.clear()
        self._own.clear()
        self._asked.clear()
        self._index = None
        self._reread = True
        self.ciphertexts = None

    def read_afresh(self) -> None:
        """For a read that found a snapshot the thread's index named gone: forget what this lane
        kept, so the next read asks the store. Another handle replaced the thread's sessions
        between the read's steps (``prune``, ``delete_for_runs``, ``copy_thread``, ``delete_thread``),
        whose two sessions swap one after the other. Waits for an operation another thread runs on
        the lane, whose heads these are."""
        with self.lock:
            self.read_again()
            self._reread = False  # (outside an operation: the next one starts from the store anyway)

    def _read_head(self, name: str) -> tuple[str | None, State | None]:
        cached = self._heads.get(name)
        sess = self._session(name, create=False)
        try:
            found = self._head_of(name, sess, cached)
        except SnapshotNotFound:  # deleted by another handle since this one kept it
            self._sessions.pop(name, None)
            found = self._head_of(name, self._session(name, create=False), cached)
        if found is cached:
            return found
        return self._remember(name, cached, found)

    def _head_of(
        self, name: str, sess: Session | None, cached: tuple[str | None, State | None] | None
    ) -> tuple[str | None, State | None]:
        """A session's head id and state: ``cached`` while it is still the head; a head not kept is
        read with its state at once (one read of the newest segment for both)."""
        if sess is None:
            return None, None
        if cached is None or cached[1] is None:
            found = sess.head_state()
            self._refuse_lost_tail(name, sess)
            if found is None:
                return None, None
            self._refuse_unreadable(name, found[1])
            self._head_hashes[name] = (found[0].id, found[0].state_hash)
            self._head_sizes[name] = found[0].size
            return found[0].id, found[1]
        head = sess.head
        if head is None or head.id != cached[0]:
            self._refuse_lost_tail(name, sess)
        if head is None:
            return None, None
        self._head_hashes[name] = (head.id, head.state_hash)
        if head.id == cached[0]:
            return cached
        state = sess.state(head.id)
        self._refuse_unreadable(name, state)
        self._head_sizes[name] = head.size
        return head.id, state

    def _refuse_unreadable(self, name: str, state: State) -> None:
        """A head this lane must not read as its own: a later layout's, or another thread's."""
        _refuse_a_newer_layout(name, state)
        self._refuse_another_threads(name, state)

    def _refuse_another_threads(self, name: str, state: State) -> None:
        """A session under this lane's name whose head is another thread's: a renamed copy (an import
        with on_conflict="rename" renames a session, and its snapshots get new ids, where the thread's
        states name the old ones). Read as this lane, its older checkpoints would not be found."""
        holds = (state.get("thread_id"), state.get("checkpoint_ns"))
        if holds == (self.thread_id, self.checkpoint_ns):
            return
        raise CorruptObjectError(
            f"session {name!r} holds LangGraph thread {holds[0]!r} (namespace {holds[1]!r}), not thread "
            f"{self.thread_id!r} (namespace {self.checkpoint_ns!r}): a copy under another name (import "
            "--on-conflict rename renames a session and gives its snapshots new ids, which a thread's "
            "checkpoints cannot follow). Import a thread with merge or replace, or into another store",
            {"thread_id": self.thread_id, "checkpoint_ns": self.checkpoint_ns, "session": name, "reason": "renamed"},
        )

    def _refuse_lost_tail(self, name: str, sess: Session) -> None:
        """A head read from a session whose newest segment is damaged may be older than the one
        last committed (``Session.tail_damage``): a graph would silently go on from an older
        checkpoint, or find no thread at all, and commit over what was lost. Refused instead, until
        someone chooses how to go on (a backup merged in, or the head moved on purpose)."""
        damage = sess.tail_damage
        if damage is None:
            return
        raise CorruptObjectError(
            f"LangGraph thread {self.thread_id!r} (namespace {self.checkpoint_ns!r}) cannot be read as it "
            f"stands: {damage}. What was written after the damage is lost, so the newest checkpoint that "
            "still reads may not be the thread's latest. To go on: merge a backup of the store into it "
            f"(snapstore import BACKUP --on-conflict merge), or move session {name!r}'s head on purpose "
            f"(snapstore rollback {name} ID, with an id from snapstore log {name})",
            {
                "thread_id": self.thread_id,
                "checkpoint_ns": self.checkpoint_ns,
                "session": name,
                "reason": "damage",
                "damage": damage,
            },
        )

    def _stored_head(self, name: str) -> Snapshot | None:
        """A session's head as the store has it now, its state not rebuilt (None: no session)."""
        sess = self._session(name, create=False)
        try:
            return sess.head if sess is not None else None
        except SnapshotNotFound:  # deleted by another handle since this one kept it
            self._sessions.pop(name, None)
            return None

    def _writes_head_to_point_at(
        self, sid: str | None, head: State | None
    ) -> tuple[str | None, State | None, str | None]:
        """(id, state, state hash) of the writes head a checkpoint commit on ``head`` (snapshot
        ``sid``) points at.

        The one this lane keeps when this lane committed ``head``; otherwise the store's: a handle
        that committed a checkpoint since this lane looked may have written writes too, and a
        pointer to an older writes head would be a later row naming fewer writes than the
        checkpoint has (a reader, or the next writes commit, which drops a checkpoint whose pointer
        names the head, would take it for all of them), or, after a rewrite, a snapshot that is
        gone. Writes another handle wrote without putting a checkpoint stay in its writes head until
        a pointer names them, so on this lane's own head the kept writes head is good enough.
        """
        name = self.names.writes
        wsid, whead = self._head(name)
        kept = self._head_hashes.get(name)
        own = sid is not None and sid == self._own.get(self.names.checkpoints)
        if own and (wsid is None or (kept is not None and kept[0] == wsid)):
            return wsid, whead, kept[1] if wsid is not None and kept is not None else None
        # the same state is not enough: a rewrite (delete_for_runs) stores it again under a new id
        wsid, whead = self._read_head(name)  # records the head's state hash in _head_hashes
        if self._operating == threading.get_ident():
            self._asked[name] = (wsid, whead)
        return wsid, whead, self._head_hashes[name][1] if wsid is not None else None

    def _remember(
        self, name: str, before: tuple[str | None, State | None] | None, found: tuple[str | None, State | None]
    ) -> tuple[str | None, State | None]:
        """Keep a head read outside an operation for the next one, unless a commit of this lane
        replaced what was kept while it was read (a reader on another thread must not put an
        older head back for the next put to build on)."""
        with self.lock:
            if self._heads.get(name) is before:
                self._heads[name] = found
        if self._grew is not None:
            self._grew()
        return found

    def _state(self, name: str, snapshot_id: str) -> State:
        cached = self._heads.get(name)
        if cached is not None and cached[0] == snapshot_id and cached[1] is not None:
            return cached[1]
        sess = self._session(name, create=False)
        if sess is None:
            raise self._missing(name)
        state: State = sess.state(snapshot_id)
        return state

    def _missing(self, name: str) -> CorruptObjectError:
        """A session the thread's other session names is not in the store: deleted meanwhile (the
        thread's sessions go one after the other), which a read again settles, or never there
        (exported or copied alone), which it does not: the error is a ``SnapshotNotFound`` too, so
        that what reads again on one does, and says what is wrong when it is raised at last."""
        checkpoints, writes = self.names
        return IncompleteThreadError(
            f"LangGraph thread {self.thread_id!r} (namespace {self.checkpoint_ns!r}) is incomplete: its "
            f"session {name!r} is not in the store, and the thread's checkpoints name snapshots in it. A "
            f"thread is two sessions, {checkpoints!r} and {writes!r}: export and import them together",
            {"thread_id": self.thread_id, "checkpoint_ns": self.checkpoint_ns, "session": name, "reason": "missing"},
        )

    def _commit(self, name: str, state: State, label: str, turn: int | None) -> str | None:
        """Commit ``state`` as ``name``'s head; within an operation, only on the head it was built
        on: when another handle moved it, nothing is written and None returned (the caller builds
        the operation again, ``rebase``)."""
        operating = self._operating == threading.get_ident()
        parent = self._asked.get(name, (None, None))[0] if operating else ANY_HEAD
        try:
            for attempt in range(_COMMIT_ATTEMPTS):
                try:
                    sess = self._session(name, create=True)
                    assert sess is not None
                    snap = sess.commit(state, label=label, turn=turn, parent=parent)
                    break
                except SnapshotNotFound:  # deleted by another handle since this one kept it: start it again
                    self._sessions.pop(name, None)
                    if attempt == _COMMIT_ATTEMPTS - 1:
                        raise
        except LockTimeoutError:
            raise  # another writer holds the lock (stopped, or stuck): no commit landed to build on
        except ConcurrentUpdateError:
            if not operating:
                raise
            return None
        self._heads[name] = (snap.id, state)  # never mutated after this: the next commit builds a new dict
        self._head_hashes[name] = (snap.id, snap.state_hash)
        self._head_sizes[name] = snap.size
        self._own[name] = snap.id
        if self._grew is not None:
            self._grew()
        self._written.add(name)
        if operating:
            self._asked[name] = (snap.id, state)
        return snap.id

    def settle(self) -> None:
        """Store again, on its own, each head this lane committed whose rebuild has grown costly
        (``Session.settle``), so that the next process to read the thread loads it in one read.

        Only a head this lane wrote and that is still the session's head: another saver's, or one
        another process moved, is left as it is. Settling is a saving, not a promise: one that
        fails (a lock held too long, the thread deleted meanwhile) leaves the head as it was."""
        with self.lock:
            for name in sorted(self._written):
                sess, kept = self._sessions.get(name), self._heads.get(name)
                if sess is None or kept is None or kept[0] is None:
                    continue
                try:
                    settled = sess.settle(head=kept[0])
                except SnapshotError:
                    continue
                if settled is not None:
                    self._heads[name] = (settled.id, kept[1])  # the same state: the next put builds on it
                    self._head_hashes[name] = (settled.id, settled.state_hash)
                    self._own[name] = settled.id

    def _frame(self, checkpoint_id: str) -> State:
        return {
            "saver": FORMAT,
            "thread_id": self.thread_id,
            "checkpoint_ns": self.checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }

    # -- reading -------------------------------------------------------
    def head(self) -> tuple[State, Index] | None:
        """The checkpoints session's head state and its index."""
        sid, state = self._head(self.names.checkpoints)
        if sid is None or state is None:
            return None
        kept = self._index  # read once: a reader on another thread may replace it meanwhile
        if kept is None or kept[0] != sid:
            kept = self._index = (sid, Index.of(state))
        return state, kept[1]

    @contextlib.contextmanager
    def reading_many(self) -> Iterator[None]:
        """Within the block, reading one checkpoint after another (``list``, newest first) decodes
        each segment of the thread's two sessions once, not once a checkpoint: what a read decoded
        is held for the next, older one, until the block ends."""
        with contextlib.ExitStack() as held:
            for name in self.names:
                sess = self._session(name, create=False)
                if sess is not None:
                    held.enter_context(sess.keeping_decoded())
            yield

    def load(self, checkpoint_id: str | None) -> tuple[State, Index] | None:
        """(the state holding a checkpoint, the head's index); the newest checkpoint when id is None."""
        if checkpoint_id is None:
            return self._load(None)
        sess = self._session(self.names.checkpoints, create=False)
        if sess is None:
            return None
        with sess.keeping_decoded():  # the head, then the older checkpoint: its segment decoded once
            return self._load(checkpoint_id)

    def _load(self, checkpoint_id: str | None) -> tuple[State, Index] | None:
        found = self.head()
        if found is None:
            return None
        head, index = found
        if checkpoint_id is None:
            checkpoint_id = index.latest()
        if checkpoint_id == head["checkpoint_id"]:
            return head, index
        snapshot = index.snapshots.get(checkpoint_id)
        if snapshot is None or checkpoint_id not in index.rows:
            return None
        return self._state(self.names.checkpoints, snapshot), index

    def holds_head(self, state: State) -> bool:
        """Whether ``state`` is the checkpoints session's head as this lane last read or wrote it."""
        cached = self._heads.get(self.names.checkpoints)
        return cached is not None and cached[1] is state

    def writes_of(self, checkpoint_id: str, index: Index | None) -> list[Any]:
        """The stored write entries of a checkpoint: [task_id, idx, channel, value, task_path].

        The head's commit gave every checkpoint of its index whose writes were in the writes head
        it saw (``writes_seen``, format 3: that head's state hash) a pointer to it. While the
        writes head still holds that state, a reader outside an operation takes a checkpoint's
        pointer, or none, without rebuilding the writes head to look in it.
        """
        if index is not None and index.writes_seen is not None and self._session(self.names.writes, False) is None:
            raise self._missing(self.names.writes)  # the head's commit saw a writes head: it must be there
        outside = self._operating != threading.get_ident()
        seen = index.writes_seen if index is not None and outside else None
        stored = self._stored_head(self.names.writes) if seen is not None else None
        if stored is None or stored.state_hash != seen:
            wsid, whead = self._head(self.names.writes)
            if whead is not None and checkpoint_id in whead["writes"]:
                return list(whead["writes"][checkpoint_id])
            moved = wsid is not None and self._head_hashes.get(self.names.writes, ("", ""))[1] != seen
            if outside and moved and (index is None or index.writes.get(checkpoint_id) is None):
                # the writes head moved past the one this index saw, and no longer holds the
                # checkpoint's writes: a writer pointed the checkpoint at them in a checkpoints head
                # it committed first, which a head read now holds (pointers are never taken back)
                fresh = self.head()
                if fresh is not None and fresh[1].writes.get(checkpoint_id) is not None:
                    index = fresh[1]
        snapshot = index.writes.get(checkpoint_id) if index is not None else None
        if snapshot is None:
            return []
        return list(self._state(self.names.writes, snapshot)["writes"][checkpoint_id])

    # -- writing -------------------------------------------------------
    def commit_checkpoint(
        self, checkpoint_id: str, parent_id: str | None, checkpoint: Any, values: State, metadata: Any
    ) -> bool:
        """Commit a checkpoint as the new head; False when another handle moved the head first, and
        nothing is written (see ``operation``)."""
        with self.lock:
            sid, head = self._head(self.names.checkpoints)
            found = self.head()
            index = found[1] if found is not None else Index({})
            row = history_row(parent_id, metadata)
            checkpoint_ids, history, snapshots, writes_at = _history_lists(head)
            checkpoint_ids.append(checkpoint_id)
            history.append(row)
            moved: dict[str, str] = {}
            if head is not None and sid is not None and head["checkpoint_id"] != checkpoint_id:
                snapshots.append(pointer_row(sid, head["checkpoint_id"]))
                moved[head["checkpoint_id"]] = sid
            # the writes head's checkpoints get their pointer now: the next writes commit may
            # leave them out, and they are found through writes_at from then on
            pointed: dict[str, str] = {}
            unpointed = len(writes_at)
            wsid, whead, seen = self._writes_head_to_point_at(sid, head)
            if whead is not None and wsid is not None:
                for owner in whead["writes"]:
                    known = owner in index.rows or owner == checkpoint_id
                    if known and index.writes.get(owner) != wsid:
                        writes_at.append(pointer_row(wsid, owner))
                        pointed[owner] = wsid
            rows = {**index.rows, checkpoint_id: row}
            new_index = Index(rows, index.snapshots.with_(moved), index.writes.with_(pointed), seen)
            state = {
                **self._frame(checkpoint_id),
                "parent_checkpoint_id": parent_id,
                "checkpoint": checkpoint,
                **_value_members(values),
                "checkpoint_ids": checkpoint_ids,
                "history": history,
                "snapshots": snapshots,
                "writes_at": writes_at,
                "writes_seen": seen,
            }
            label, step = f"checkpoint {checkpoint_id}", _step(metadata)
            new_sid = self._commit(self.names.checkpoints, state, label, step)
            if new_sid is not None and sid is None and wsid is not None and not self._holds_writes(wsid):
                # the thread's first checkpoint (made again after a delete) points at a writes head
                # a delete from another handle took after it was read (it found writes and no
                # checkpoints): written again without it, or every read would call the thread
                # incomplete; and the kept writes head forgotten, or the next put, building on it as
                # its own, would point at it again. (A delete that finds checkpoints deletes both
                # under both locks, and a commit on what it deleted is refused and built again.)
                for kept in (self._heads, self._head_hashes, self._asked, self._own, self._sessions):
                    kept.pop(self.names.writes, None)
                state = {**state, "writes_at": writes_at[:unpointed], "writes_seen": None}
                healed = Index(rows, index.snapshots.with_(moved), index.writes, None)
                again = self._commit(self.names.checkpoints, state, label, step)
                if again is not None:  # (refused: another handle built on the first commit; it stays)
                    new_sid, new_index = again, healed
            if new_sid is None:
                return False
            self._index = (new_sid, new_index)
            return True

    def _holds_writes(self, snapshot_id: str) -> bool:
        """Whether the writes session (as the store has it now, not as this lane kept it) holds ``snapshot_id``."""
        try:
            return snapshot_id in self.store.session(self.names.writes, create=False).snapshot_ids()
        except SnapshotNotFound:
            return False

    def commit_writes(self, checkpoint_id: str, entries: list[Any]) -> bool:
        """Store a checkpoint's writes (all of them, as ``entries``) in a new writes head; False
        when another handle moved the head first, and nothing is written (see ``operation``).

        The head keeps the writes of every checkpoint ``writes_at`` does not point at yet: with
        LangGraph's default (async) durability, a step's writes can land before or after the
        checkpoint they belong to, and before the writes of the step before.
        """
        with self.lock:
            found = self.head()
            index = found[1] if found is not None else Index({})
            old_wsid, whead = self._head(self.names.writes)
            still_open = {
                owner: owned
                for owner, owned in (whead["writes"] if whead is not None else {}).items()
                if owner not in index.rows or index.writes.get(owner) != old_wsid
            }
            still_open[checkpoint_id] = entries
            frame = {**self._frame(checkpoint_id), "writes": still_open}
            return self._commit(self.names.writes, frame, f"writes {checkpoint_id}", None) is not None

    # -- whole-lane operations ---------------------------------------------
    def entries(self, keep: Callable[[str, Any], bool] = lambda _cid, _metadata: True) -> Entries:
        """Every checkpoint ``keep(id, encoded metadata)`` accepts, oldest first."""
        found = self.head()
        if found is None:
            return []
        index = found[1]
        out: Entries = []
        for checkpoint_id in sorted(index.rows):
            metadata = index.metadata(checkpoint_id)
            loaded = self.load(checkpoint_id) if keep(checkpoint_id, metadata) else None
            if loaded is not None:
                out.append((checkpoint_id, loaded[0], self.writes_of(checkpoint_id, index), metadata))
        return out

    def replay(self, entries: Entries) -> None:
        """Commit checkpoints (as ``entries`` gives them) on top of this lane, in order."""
        with self.lock:
            for checkpoint_id, state, writes, metadata in entries:
                self.commit_checkpoint(
                    checkpoint_id, state["parent_checkpoint_id"], state["checkpoint"], channel_values(state), metadata
                )
                if writes:
                    self.commit_writes(checkpoint_id, writes)

    def stored_heads(self) -> dict[str, str | None]:
        """Each of the lane's sessions' head as the store holds it now (None: no such session)."""
        return stored_heads(self.store, self.names)

    def replace_with(self, entries: Entries, heads: dict[str, str | None]) -> bool:
        """Put ``entries`` (``replay``'s) in the place of both of the lane's sessions: written beside
        them, then put in their places in one step each, while each still has the head ``heads``
        names; False when one has not (another handle committed), and nothing changes. A failure or
        a crash while the new sessions are written leaves the thread as it was; readers see it whole
        until the sessions are swapped (SnapshotStore.replacing_sessions). No entries: the sessions
        go. A lock held past the timeout raises ``LockTimeoutError``: waiting again would not help."""
        with self.lock:
            try:
                if not entries:  # nothing kept: the sessions go, under the same check
                    self.store.delete_sessions(heads)
                    self.serialized = {}
                else:
                    limits: dict[str, int | None] = {name: RETAIN_ALL for name in self.names}
                    writer = Lane(self.store, self.thread_id, self.checkpoint_ns)
                    with self.store.replacing_sessions(limits, heads=heads) as staged:
                        writer._sessions.update(staged)
                        writer.replay(entries)
            except LockTimeoutError:
                raise
            except ConcurrentUpdateError:
                return False
            self.read_again()
            return True


#: a commit to a session deleted meanwhile makes it again: as often as a thread is deleted under it
_COMMIT_ATTEMPTS = 8
#: an operation finding what it was built on gone reads again up to this many times
_MISSES = 3
#: ... and finding one of the thread's sessions gone, the other there: 36 ms of waits in all
_INCOMPLETE_MISSES = 8


def pause_for_a_delete(attempt: int) -> None:
    """Wait a little longer at each attempt (a millisecond an attempt) for another process between
    the two deletes of a thread's sessions: 36 ms over eight attempts."""
    time.sleep(0.001 * attempt)


class IncompleteThreadError(CorruptObjectError, SnapshotNotFound):
    """``Lane._missing``: damage to the thread when raised at last, a reason to read again before."""


def stored_heads(store: SnapshotStore, names: Iterable[str]) -> dict[str, str | None]:
    """Each named session's head as the store holds it now (None: no such session, or no snapshot)."""
    heads: dict[str, str | None] = {}
    for name in names:
        try:
            head = store.session(name, create=False).head
        except SnapshotNotFound:
            head = None
        heads[name] = head.id if head is not None else None
    return heads


def _refuse_a_newer_layout(name: str, state: State) -> None:
    """A head written by a later saver's layout, which this saver may not read or carry on right."""
    written = state.get("saver")
    prefix = _FORMAT_PREFIX
    number = written[len(prefix) :] if type(written) is str and written.startswith(prefix) else ""
    if number.isascii() and number.isdigit() and int(number) > LAYOUT:
        raise SnapshotError(
            f"session {name!r} was written by a newer snapstore ({written}; this one writes {FORMAT}): "
            "upgrade snapstore to read it",
            {"session": name, "layout": written, "reason": "newer layout"},
        )


def _step(metadata: Any) -> int | None:
    """The step of an inline-encoded metadata, shown as the snapshot's turn in ``snapstore log``."""
    step = metadata.get("step") if type(metadata) is dict else None
    return step if type(step) is int and -(2**63) <= step < 2**63 else None
