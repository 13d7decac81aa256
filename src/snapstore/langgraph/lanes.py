"""One (thread, namespace) of a LangGraph thread as two snapstore sessions.

The checkpoints session gets one commit per checkpoint. Its state is the checkpoint (encoded
by ``encoding.ValueCodec``) plus ``history``, one entry per checkpoint of the namespace
(parent, metadata, the snapshot holding it, the snapshot holding its writes), so one read of
the head answers ``list`` filters and finds any checkpoint without a scan. The head holds its
own checkpoint, so the head's entry names no snapshot; an entry is filled in when the next
commit moves the head away from it.

The writes session gets one commit per ``put_writes``; its state holds the writes of the
checkpoints the history does not point at yet (usually one or two), so a step's writes cost a
commit the size of those writes, not of the thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..session import Session
from ..store import SnapshotStore
from .names import lane_names

FORMAT = "snapstore.langgraph/1"
#: snapstore's largest retention limit: a checkpointer keeps every checkpoint until told otherwise
RETAIN_ALL = 2**63 - 1

State = dict[str, Any]
#: (checkpoint id, the state holding it, its write entries, its encoded metadata)
Entries = list[tuple[str, State, list[Any], Any]]


class Lane:
    """The sessions of one (thread, namespace), with the heads this process last read or wrote."""

    def __init__(self, store: SnapshotStore, thread_id: str, checkpoint_ns: str) -> None:
        self.store = store
        self.thread_id = thread_id
        self.checkpoint_ns = checkpoint_ns
        self.names = lane_names(thread_id, checkpoint_ns)
        # parallel tasks of one step write the same checkpoint's writes from several threads
        self.lock = threading.RLock()
        self._heads: dict[str, tuple[str, State]] = {}

    # -- sessions ------------------------------------------------------
    def _session(self, name: str, create: bool) -> Session | None:
        if create:
            return self.store.session(name, max_snapshots=RETAIN_ALL)
        if not self.store.has_session(name):
            return None
        return self.store.session(name)

    def _head(self, name: str) -> tuple[str | None, State | None]:
        sess = self._session(name, create=False)
        head = sess.head if sess is not None else None
        if sess is None or head is None:
            return None, None
        cached = self._heads.get(name)
        if cached is not None and cached[0] == head.id:
            return cached
        state = sess.state(head.id)
        self._heads[name] = (head.id, state)
        return head.id, state

    def _state(self, name: str, snapshot_id: str) -> State:
        sess = self._session(name, create=False)
        if sess is None:
            raise KeyError(name)
        cached = self._heads.get(name)
        if cached is not None and cached[0] == snapshot_id:
            return cached[1]
        state: State = sess.state(snapshot_id)
        return state

    def _commit(self, name: str, state: State, label: str, turn: int | None) -> str:
        sess = self._session(name, create=True)
        assert sess is not None
        snap = sess.commit(state, label=label, turn=turn)
        self._heads[name] = (snap.id, state)  # never mutated after this: the next commit builds a new dict
        return snap.id

    def _frame(self, checkpoint_id: str) -> State:
        return {
            "saver": FORMAT,
            "thread_id": self.thread_id,
            "checkpoint_ns": self.checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }

    # -- reading -------------------------------------------------------
    def head(self) -> State | None:
        return self._head(self.names.checkpoints)[1]

    def load(self, checkpoint_id: str | None) -> tuple[State, dict[str, Any]] | None:
        """(state holding the checkpoint, the head's history); the newest checkpoint when id is None."""
        head = self.head()
        if head is None:
            return None
        history: dict[str, Any] = head["history"]
        if checkpoint_id is None:
            checkpoint_id = max(history)
        if checkpoint_id == head["checkpoint_id"]:
            return head, history
        entry = history.get(checkpoint_id)
        if entry is None or entry["snapshot"] is None:
            return None
        return self._state(self.names.checkpoints, entry["snapshot"]), history

    def writes_of(self, checkpoint_id: str, history: dict[str, Any]) -> list[Any]:
        """The stored write entries of a checkpoint: [task_id, idx, channel, value, task_path]."""
        _wsid, whead = self._head(self.names.writes)
        if whead is not None and checkpoint_id in whead["writes"]:
            return list(whead["writes"][checkpoint_id])
        entry = history.get(checkpoint_id)
        if entry is None or entry["writes"] is None:
            return []
        return list(self._state(self.names.writes, entry["writes"])["writes"][checkpoint_id])

    # -- writing -------------------------------------------------------
    def commit_checkpoint(
        self, checkpoint_id: str, parent_id: str | None, checkpoint: Any, values: State, metadata: Any
    ) -> None:
        with self.lock:
            sid, head = self._head(self.names.checkpoints)
            history = dict(head["history"]) if head is not None else {}
            if head is not None and sid is not None and head["checkpoint_id"] != checkpoint_id:
                moved = head["checkpoint_id"]
                history[moved] = {**history[moved], "snapshot": sid}
            previous = history.get(checkpoint_id)
            history[checkpoint_id] = {
                "parent": parent_id,
                "snapshot": None,
                "writes": previous["writes"] if previous is not None else None,
                "metadata": metadata,
            }
            # the writes head's checkpoints in the history now point at it: the next writes commit
            # may leave them out, and they are found through the history from then on
            wsid, whead = self._head(self.names.writes)
            for owner in whead["writes"] if whead is not None else ():
                if owner in history:
                    history[owner] = {**history[owner], "writes": wsid}
            state = {
                **self._frame(checkpoint_id),
                "parent_checkpoint_id": parent_id,
                "checkpoint": checkpoint,
                "channel_values": values,
                "history": history,
            }
            self._commit(self.names.checkpoints, state, f"checkpoint {checkpoint_id}", _step(metadata))

    def commit_writes(self, checkpoint_id: str, entries: list[Any]) -> None:
        """Store a checkpoint's writes (all of them, as ``entries``) as the new writes head.

        The head keeps the writes of every checkpoint the history does not point at yet: with
        LangGraph's default (async) durability, a step's writes can land before or after the
        checkpoint they belong to, and before the writes of the step before.
        """
        with self.lock:
            head = self.head()
            history: dict[str, Any] = head["history"] if head is not None else {}
            old_wsid, whead = self._head(self.names.writes)
            still_open = {
                owner: owned
                for owner, owned in (whead["writes"] if whead is not None else {}).items()
                if owner not in history or history[owner]["writes"] != old_wsid
            }
            still_open[checkpoint_id] = entries
            frame = {**self._frame(checkpoint_id), "writes": still_open}
            self._commit(self.names.writes, frame, f"writes {checkpoint_id}", None)

    # -- whole-lane operations ---------------------------------------------
    def entries(self, keep: Callable[[str, dict[str, Any]], bool] = lambda _cid, _entry: True) -> Entries:
        """Every kept checkpoint, oldest first."""
        found = self.load(None)
        if found is None:
            return []
        _state, history = found
        out: Entries = []
        for checkpoint_id in sorted(history):
            if keep(checkpoint_id, history[checkpoint_id]):
                loaded = self.load(checkpoint_id)
                if loaded is not None:
                    writes = self.writes_of(checkpoint_id, history)
                    out.append((checkpoint_id, loaded[0], writes, history[checkpoint_id]["metadata"]))
        return out

    def replay(self, entries: Entries) -> None:
        """Commit checkpoints (as ``entries`` gives them) on top of this lane, in order."""
        with self.lock:
            for checkpoint_id, state, writes, metadata in entries:
                self.commit_checkpoint(
                    checkpoint_id, state["parent_checkpoint_id"], state["checkpoint"], state["channel_values"], metadata
                )
                if writes:
                    self.commit_writes(checkpoint_id, writes)

    def delete(self) -> None:
        with self.lock:
            for name in self.names:
                if self.store.has_session(name):
                    self.store.delete_session(name)
                self._heads.pop(name, None)


def _step(metadata: Any) -> int | None:
    """The step of an inline-encoded metadata, shown as the snapshot's turn in ``snapstore log``."""
    step = metadata.get("step") if type(metadata) is dict else None
    return step if type(step) is int and -(2**63) <= step < 2**63 else None
