"""``SnapstoreSaver``: a LangGraph checkpointer that stores each thread as snapstore deltas."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    SerializerProtocol,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)

from ..errors import (
    ConcurrentUpdateError,
    CorruptObjectError,
    InvalidNameError,
    InvalidStateError,
    LockTimeoutError,
    SnapshotError,
    SnapshotNotFound,
    shown_value,
)
from ..recency import shed_bytes, touch
from ..store import DEFAULT_WARM_SESSIONS, SnapshotStore
from .encoding import Ciphertexts, Reuse, Sealed, ValueCodec
from .lanes import IncompleteThreadError, Index, Lane, State, channel_values, pause_for_a_delete, stored_heads
from .names import lane_names, parse_checkpoints_name, thread_prefixes

_DONE = object()
T = TypeVar("T")
#: a put or put_writes built again this many times, each time another handle having committed
#: first (nothing written by the attempts that lost), gives up with ConcurrentUpdateError
ATTEMPTS = 20
#: seconds an operation that lost to another writer waits at most before its next attempt, at first
#: and at the longest (the wait doubles each time): 20 attempts wait at most about 0.5 s in all
BACK_OFF_FIRST = 0.0005
BACK_OFF_CAP = 0.032
#: the back-off's own generator: an application seeding ``random`` the same in two processes would
#: otherwise have them wait in lockstep
_JITTER = random.Random()
#: reads of a checkpoint that found the thread rewritten under them, before the last one's error is raised
_READ_ATTEMPTS = 10


def _refuse_unstorable(thread_id: Any, checkpoint_ns: str) -> None:
    """Refuse a thread id or namespace with no stored form: a lone surrogate (which LangGraph's own
    savers take) has none in UTF-8, and refused deep in the store it named the state's
    ``/thread_id`` instead of the run's config."""
    for key, value in (("thread_id", str(thread_id)), ("checkpoint_ns", checkpoint_ns)):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidNameError(
                f"config['configurable'][{key!r}] {value!r} cannot be stored: it holds a lone surrogate, "
                "which has no UTF-8 form",
                {"argument": key, "value": repr(value), "reason": "lone surrogate"},
            ) from None


#: a checkpoint's id is its commit's label ("checkpoint <id>"), which holds at most 64 KiB of UTF-8
MAX_CHECKPOINT_ID_BYTES = 65535 - len("checkpoint ")


def _storable_texts(*values: Any) -> bool:
    """Whether every string among ``values`` has a UTF-8 form: one encoding of them all, the common
    case (``_refuse_unstorable_text`` then names the one that has none)."""
    try:
        "".join(value for value in values if type(value) is str).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _refuse_unstorable_text(argument: str, value: Any, error: type[SnapshotError] = InvalidNameError) -> None:
    """Refuse a string the graph gives (a checkpoint id, a channel's name or version, a task's id
    or path) that has no stored form: a lone surrogate has none in UTF-8 (InMemorySaver keeps it),
    and refused deep in the store it named the state's own members (``/writes/<id>/0/2``) or the
    commit's label instead of the argument. Values that are not strings are the serializer's."""
    if type(value) is not str:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise error(
            f"{argument} {shown_value(value, 60)} cannot be stored: it holds a lone surrogate, which has no "
            "UTF-8 form",
            {"argument": argument, "value": shown_value(value, 60), "reason": "lone surrogate"},
        ) from None


def _refuse_a_long_checkpoint_id(argument: str, value: Any) -> None:
    """Refuse a checkpoint id too long for its commit's label (``MAX_CHECKPOINT_ID_BYTES``)."""
    if type(value) is not str or 4 * len(value) <= MAX_CHECKPOINT_ID_BYTES:
        return  # (at most four bytes a character)
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_CHECKPOINT_ID_BYTES:
        raise InvalidNameError(
            f"{argument} {shown_value(value, 60)} cannot be stored: it is {size:,} bytes of UTF-8, and "
            f"SnapstoreSaver takes at most {MAX_CHECKPOINT_ID_BYTES:,}",
            {"argument": argument, "value": shown_value(value, 60), "reason": "too long"},
        )


def _reading_afresh(lane: Lane, read: Callable[[], T]) -> T:
    """``read()`` of ``lane``, again from the store when another handle rewrote the thread between
    its steps (it read the head, whose index names where each checkpoint and its writes are, and
    the thread's sessions were replaced before it read what the index named): up to
    ``_READ_ATTEMPTS`` times, then the last ``SnapshotNotFound`` is raised."""
    for attempt in range(_READ_ATTEMPTS):
        try:
            return read()
        except SnapshotNotFound as exc:
            if attempt == _READ_ATTEMPTS - 1:
                raise
            if isinstance(exc, IncompleteThreadError):
                # one session of the thread gone, the other there: another process between the two
                # steps of a delete or of a commit written again (a millisecond or so): given that long
                pause_for_a_delete(attempt)
            lane.read_afresh()
    raise AssertionError("unreachable")


def _ids(ids: Any, argument: str) -> list[Any]:
    """The ids of a call taking several: one string is refused, not taken as its characters (a
    prune of thread "12" would otherwise prune threads "1" and "2"), as LangGraph's savers refuse it."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{argument} must be a sequence of ids, not a {type(ids).__name__}: pass [{ids!r}]")
    return list(ids)


def _attempts(lock_timeout: float | None, started: float) -> Iterator[int]:
    """The attempts of one operation: ``ATTEMPTS`` at least, and more for as long as the store's
    ``lock_timeout`` (None: for ever), each lost one followed by a random wait (``_back_off``).

    Two processes writing one thread otherwise take turns in lockstep: the one that lost reads what
    the other wrote and builds again, while the other, whose head is current, commits first again;
    a put gave up after ``ATTEMPTS`` losses in a trial of two graphs on one PostgreSQL thread. A
    commit waits for the session's lock as long as ``lock_timeout``; a put waits its turn as long,
    from ``started``."""
    attempt = 0
    while attempt < ATTEMPTS or lock_timeout is None or time.monotonic() - started < lock_timeout:
        yield attempt
        attempt += 1


def _back_off(attempt: int) -> None:
    """Wait a random while, longer at each lost attempt, before building an operation again, so
    that the writer that lost may find a moment the other is not committing."""
    time.sleep(_JITTER.uniform(0, min(BACK_OFF_CAP, BACK_OFF_FIRST * 2 ** min(attempt, 16))))


def _kept_losing(thread_id: Any, operation: str, attempts: int, started: float) -> ConcurrentUpdateError:
    """The error of an operation whose every attempt, tried for ``lock_timeout`` from ``started``,
    found another handle's commit first: nothing of it is written."""
    waited = round(time.monotonic() - started, 3)
    return ConcurrentUpdateError(
        f"thread {thread_id!r}: other handles kept writing it; {operation} was built again {attempts} times"
        f" over {waited:.1f} s and each time another commit landed first (an operation tries {ATTEMPTS} times"
        " at least, and for as long as the store's lock_timeout)",
        {"thread_id": str(thread_id), "operation": operation, "attempts": attempts, "waited_seconds": waited},
    )


def _check_cache_bounds(cached_threads: Any, cached_bytes: Any) -> None:
    if type(cached_threads) is not int or cached_threads < 0:
        raise SnapshotError(
            "cached_threads must be an integer >= 0", {"argument": "cached_threads", "value": repr(cached_threads)}
        )
    if cached_bytes is not None and (type(cached_bytes) is not int or cached_bytes < 0):
        raise SnapshotError(
            "cached_bytes must be an integer >= 0 or None", {"argument": "cached_bytes", "value": repr(cached_bytes)}
        )


class SnapstoreSaver(BaseCheckpointSaver[int], AbstractContextManager, AbstractAsyncContextManager):
    """A LangGraph checkpointer over a snapstore store (a directory, memory or PostgreSQL).

    Every checkpoint of a (thread, namespace) is a commit of one snapstore session, stored as a
    delta against the previous one: a message list that grows by appends costs the appended
    messages, an unchanged channel costs nothing. Values go through ``serde`` (LangGraph's
    serializer protocol), so a custom serializer or an ``EncryptedSerializer`` still applies.

    One process writes a given thread at a time, as LangGraph runs do; any number may read. A
    put builds on the heads this saver last read or wrote; one that lands on another writer's
    commit is built again on it (``Lane.operation``).
    The saver keeps the head of the ``cached_threads`` (thread, namespace) pairs it used last in
    memory, so the next step of a running thread does not read it back; with ``cached_bytes``,
    only as many of them as keep about that many bytes of canonical JSON together (the one used
    last whatever its size).
    Deleting checkpoints (``delete_thread``, ``delete_for_runs``, ``prune``) drops them from the
    saver at once; their bytes leave the store at its next ``store.gc()``.
    """

    def __init__(
        self,
        store: SnapshotStore,
        *,
        serde: SerializerProtocol | None = None,
        owns_store: bool = False,
        cached_threads: int = 32,
        cached_bytes: int | None = None,
    ):
        _check_cache_bounds(cached_threads, cached_bytes)
        if not isinstance(store, SnapshotStore):
            raise SnapshotError(
                "SnapstoreSaver needs a SnapshotStore (or use SnapstoreSaver.from_conn_string(path))",
                {"argument": "store", "type": type(store).__name__},
            )
        super().__init__(serde=serde)
        self.store = store
        self.codec = ValueCodec(self.serde)
        self._owns_store = owns_store
        # one Lane (and lock) per (thread, namespace) while anything uses it; the heads of the
        # ``cached_threads`` namespaces used last stay cached, the others are read again
        self._lanes: weakref.WeakValueDictionary[tuple[str, str], Lane] = weakref.WeakValueDictionary()
        self._recent: OrderedDict[tuple[str, str], Lane] = OrderedDict()
        self._cached_threads = cached_threads
        self._cached_bytes = cached_bytes
        self._mutex = threading.Lock()
        self._closed = False

    # -- construction ------------------------------------------------------
    @classmethod
    def from_conn_string(
        cls,
        target: str | os.PathLike[str],
        *,
        serde: SerializerProtocol | None = None,
        cached_threads: int = 32,
        cached_bytes: int | None = None,
        **store_settings: Any,
    ) -> SnapstoreSaver:
        """A saver over the store at ``target``: a directory (created if absent), a
        ``postgresql://`` URL, or ``":memory:"``. Use it with ``with`` (or ``async with``):
        the store is closed on exit."""
        _check_cache_bounds(cached_threads, cached_bytes)  # named as the saver's, before the store opens
        # two sessions a cached namespace, each kept warm for its next put, within the same bytes
        store_settings.setdefault("max_warm_sessions", max(DEFAULT_WARM_SESSIONS, 2 * cached_threads))
        store_settings.setdefault("max_warm_bytes", cached_bytes)
        if target == ":memory:":  # (a pathlib.Path of that name is a folder, as everywhere)
            store = SnapshotStore.memory(**store_settings)
        else:
            store = SnapshotStore.open(target, **store_settings)
        return cls(store, serde=serde, owns_store=True, cached_threads=cached_threads, cached_bytes=cached_bytes)

    from_path = from_conn_string

    def close(self) -> None:
        """Settle the heads this saver wrote, then close the store when the saver opened it.

        A head whose rebuild has grown costly (a long chain of deltas since its keyframe) is stored
        again on its own (``Session.settle``), so the process that next reads the thread, a new run
        or a restarted server, loads its latest checkpoint in one read. Only the threads still in
        the saver's cache (``cached_threads``) are settled; a head this saver did not write, or that
        another writer moved since, is left as it is. Closing again does nothing.
        """
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            lanes = list(self._lanes.values())
        try:
            for lane in lanes:
                lane.settle()
        finally:
            if self._owns_store:
                self.store.close()

    def __enter__(self) -> SnapstoreSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> SnapstoreSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)  # settling writes: not on the event loop

    # -- lanes -------------------------------------------------------------
    def _lane(self, thread_id: Any, checkpoint_ns: str) -> Lane:
        key = (str(thread_id), checkpoint_ns)
        with self._mutex:
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = Lane(self.store, *key, grew=self._fit_cached_bytes)
            touch(self._recent, key, lane, self._cached_threads)  # (a lane let go is read again)
            return lane

    def _fit_cached_bytes(self) -> None:
        """A lane's heads changed: the oldest lanes beyond ``cached_bytes`` go (the newest stays)."""
        if self._cached_bytes is not None:
            with self._mutex:
                shed_bytes(self._recent, self._cached_bytes, Lane.kept_bytes)

    def _writing_lane(self, thread_id: Any, checkpoint_ns: str) -> Lane:
        """The lane a write goes to, once its thread id and namespace are known to have a stored form."""
        _refuse_unstorable(thread_id, checkpoint_ns)
        return self._lane(thread_id, checkpoint_ns)

    def _lanes_of(self, thread_id: str | None) -> list[Lane]:
        """The lanes stored for a thread (every thread when None), found by session name."""
        prefix = thread_prefixes(thread_id)[0] if thread_id is not None else ""
        lanes: dict[tuple[str, str], Lane] = {}
        for name in self.store.sessions():
            parsed = parse_checkpoints_name(name) if name.startswith(prefix) else None
            if parsed is None:
                continue
            thread, namespace = parsed
            if thread is None or namespace is None:  # a part too long for the name: the state says
                sess = self.store.session(name)
                head = sess.head
                if head is None:
                    continue
                state = sess.state(head.id)
                thread, namespace = state["thread_id"], state["checkpoint_ns"]
            # a renamed copy of a lane whose name is hashed names that lane in its state: listed once
            lanes.setdefault((thread, namespace), self._lane(thread, namespace))
        return list(lanes.values())

    # -- reading -----------------------------------------------------------
    def _tuple(self, lane: Lane, checkpoint_id: str, state: State, index: Index, kept: bool = False) -> CheckpointTuple:
        decode = self.codec.decode
        checkpoint = decode(state["checkpoint"])
        values = channel_values(state)
        if kept:
            checkpoint["channel_values"] = self._decode_kept(lane, values)
        else:
            checkpoint["channel_values"] = {k: decode(v[1]) for k, v in values.items()}
        writes = sorted(lane.writes_of(checkpoint_id, index), key=lambda w: writes_sort_key(w[4], w[0], w[1]))
        parent = state["parent_checkpoint_id"]
        return CheckpointTuple(
            config=self._config(lane, checkpoint_id),
            checkpoint=checkpoint,
            metadata=decode(index.metadata(checkpoint_id)),
            parent_config=self._config(lane, parent) if parent is not None else None,
            pending_writes=[(w[0], w[2], decode(w[3])) for w in writes],
        )

    @staticmethod
    def _config(lane: Lane, checkpoint_id: str) -> RunnableConfig:
        return {
            "configurable": {
                "thread_id": lane.thread_id,
                "checkpoint_ns": lane.checkpoint_ns,
                "checkpoint_id": checkpoint_id,
            }
        }

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        configurable = config["configurable"]
        lane = self._lane(configurable["thread_id"], configurable.get("checkpoint_ns", ""))
        checkpoint_id = get_checkpoint_id(config)

        def read() -> CheckpointTuple | None:
            found = lane.load(checkpoint_id)
            if found is None:
                return None
            state, index = found
            # a process that puts to this thread carries on from its head: the models get_tuple
            # decodes from the head are kept for its next put (a reader only would pay for nothing,
            # and an older checkpoint read meanwhile must not take the place of the head's)
            kept = self.codec.inline and bool(lane.serialized) and lane.holds_head(state)
            return self._tuple(lane, state["checkpoint_id"], state, index, kept=kept)

        return _reading_afresh(lane, read)

    def _decode_kept(self, lane: Lane, values: State) -> State:
        out = {}
        with lane.lock:
            for channel, (_version, node) in values.items():
                reuse = Reuse(lane.serialized.get(channel))
                out[channel] = self.codec.decode_kept(node, reuse)
                lane.serialized[channel] = reuse.current
        return out

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        configurable = config["configurable"] if config else {}
        thread_id = configurable.get("thread_id")
        thread_id = None if thread_id is None else str(thread_id)  # stored as text, as put stores it
        namespace = configurable.get("checkpoint_ns")
        only_id = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None
        if thread_id is not None and namespace is not None:
            lanes = [self._lane(thread_id, namespace)]
        else:
            lanes = self._lanes_of(thread_id)
            if namespace is not None:  # a namespace across threads: that namespace of each
                lanes = [lane for lane in lanes if lane.checkpoint_ns == namespace]
        remaining = limit
        enumerated = thread_id is None or namespace is None
        for lane in lanes:
            try:
                found = lane.head()
            except CorruptObjectError as exc:
                if enumerated and exc.details.get("reason") == "renamed":
                    continue  # found by its session's name, but not a lane of this thread: a renamed copy
                raise
            if found is None:
                continue
            index = found[1]
            with lane.reading_many():
                for checkpoint_id in sorted(index.rows, reverse=True):
                    if (only_id and checkpoint_id != only_id) or (before_id and checkpoint_id >= before_id):
                        continue
                    if filter:
                        metadata = self.codec.decode(index.metadata(checkpoint_id))
                        if not all(metadata.get(key) == value for key, value in filter.items()):
                            continue
                    if remaining is not None:
                        if remaining <= 0:
                            return
                        remaining -= 1
                    listed, index = self._listed(lane, checkpoint_id, index)
                    if listed is not None:
                        yield listed

    def _listed(self, lane: Lane, checkpoint_id: str, index: Index) -> tuple[CheckpointTuple | None, Index]:
        """One checkpoint of a listing (None when it is no longer stored: a rewrite by another handle
        dropped it) and the index of the head it was read by, else ``index``."""

        def read() -> tuple[CheckpointTuple | None, Index]:
            loaded = lane.load(checkpoint_id)  # by the head as it is now, not as the listing began:
            if loaded is None:  # writes stored for the checkpoint since are its pending writes
                return None, index
            return self._tuple(lane, checkpoint_id, loaded[0], loaded[1]), loaded[1]

        return _reading_afresh(lane, read)

    # -- writing -----------------------------------------------------------
    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        configurable = config["configurable"]
        lane = self._writing_lane(configurable["thread_id"], configurable.get("checkpoint_ns", ""))
        parent_id = configurable.get("checkpoint_id")
        versions = checkpoint["channel_versions"]
        if not _storable_texts(checkpoint["id"], parent_id, *versions, *versions.values()):
            _refuse_unstorable_text("checkpoint['id']", checkpoint["id"])
            _refuse_unstorable_text("config['configurable']['checkpoint_id']", parent_id)
            for channel, version in versions.items():
                _refuse_unstorable_text("a channel name in checkpoint['channel_versions']", channel)
                _refuse_unstorable_text(f"checkpoint['channel_versions'][{channel!r}]", version, InvalidStateError)
        _refuse_a_long_checkpoint_id("checkpoint['id']", checkpoint["id"])
        skeleton = {k: v for k, v in checkpoint.items() if k != "channel_values"}
        encoded_skeleton = self.codec.encode(skeleton)
        encoded_metadata = self.codec.encode(get_checkpoint_metadata(config, metadata))
        with lane.operation():
            started = time.monotonic()
            for attempt in _attempts(self.store.lock_timeout, started):
                with lane.built_on_kept() as missed:
                    values, ciphertexts = self._encode_values(lane, checkpoint, new_versions, parent_id)
                    done = lane.commit_checkpoint(
                        checkpoint["id"], parent_id, encoded_skeleton, values, encoded_metadata
                    )
                if missed[0]:
                    continue
                if self.codec.encrypted is not None:
                    lane.ciphertexts = ciphertexts
                if done:
                    break
                lane.rebase()  # another handle wrote this thread meanwhile: again, on what it left
                _back_off(attempt)
            else:
                raise _kept_losing(configurable["thread_id"], "put", attempt + 1, started)
        returned = self._config(lane, checkpoint["id"])
        returned["configurable"]["thread_id"] = configurable["thread_id"]  # as given, as InMemorySaver does
        return returned

    def _encode_values(
        self, lane: Lane, checkpoint: Checkpoint, new_versions: ChannelVersions, parent_id: str | None
    ) -> tuple[State, dict[str, Ciphertexts]]:
        """{channel: [version, encoded value]} for the channels the checkpoint versions, and
        under an EncryptedSerializer each channel's ciphertexts.

        A channel whose version did not move keeps the parent's encoded value (as LangGraph's
        other savers keep the blob of that version), which also spares serializing it again.
        """
        values = checkpoint["channel_values"]
        parent_values: State | None = None

        def parent() -> State:
            nonlocal parent_values
            if parent_values is None:
                loaded = lane.load(parent_id) if parent_id is not None else None
                parent_values = channel_values(loaded[0]) if loaded is not None else {}
            return parent_values

        known = lane.ciphertexts
        if self.codec.encrypted is not None and known is None:  # first checkpoint here: learn them
            known = {channel: self.codec.ciphertexts(kept[1]) for channel, kept in parent().items()}
        out: State = {}
        ciphertexts: dict[str, Ciphertexts] = {}
        for channel, version in checkpoint["channel_versions"].items():
            if channel not in new_versions:
                kept = parent().get(channel)
                if kept is not None and type(kept[0]) is type(version) and kept[0] == version:
                    out[channel] = kept
                    ciphertexts[channel] = (known or {}).get(channel, {})
                    continue
            if channel in values:
                sealed = Sealed((known or {}).get(channel)) if known is not None else None
                reuse = Reuse(lane.serialized.get(channel)) if self.codec.inline else None
                out[channel] = [
                    version,
                    self.codec.encode(values[channel], sealed=sealed, reuse=reuse, keep_order=True),
                ]
                if reuse is not None:
                    lane.serialized[channel] = reuse.current
                if sealed is not None:
                    ciphertexts[channel] = sealed.current
        return out, ciphertexts

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        configurable = config["configurable"]
        lane = self._writing_lane(configurable["thread_id"], configurable.get("checkpoint_ns", ""))
        checkpoint_id = configurable["checkpoint_id"]
        writes = list(writes)  # read more than once below: an iterator given for them is read once, here
        if not _storable_texts(checkpoint_id, task_id, task_path, *(channel for channel, _value in writes)):
            _refuse_unstorable_text("config['configurable']['checkpoint_id']", checkpoint_id)
            _refuse_unstorable_text("task_id", task_id)
            _refuse_unstorable_text("task_path", task_path)
            for channel, _value in writes:
                _refuse_unstorable_text("a channel name in writes", channel)
        _refuse_a_long_checkpoint_id("config['configurable']['checkpoint_id']", checkpoint_id)
        encoded: dict[int, Any] = {}
        with lane.operation(writes=True):
            started = time.monotonic()
            for attempt in _attempts(self.store.lock_timeout, started):
                with lane.built_on_kept() as missed:
                    found = lane.head()
                    entries = lane.writes_of(checkpoint_id, found[1] if found is not None else None)
                if missed[0]:
                    continue
                index = {(entry[0], entry[1]): i for i, entry in enumerate(entries)}
                changed = False
                for idx, (channel, value) in enumerate(writes):
                    key = (task_id, WRITES_IDX_MAP.get(channel, idx))
                    if key in index and key[1] >= 0:
                        continue  # a task's regular writes are stored once
                    if idx not in encoded:
                        encoded[idx] = self.codec.encode(value, keep_order=True)
                    entry = [task_id, key[1], channel, encoded[idx], task_path]
                    if key in index:
                        entries[index[key]] = entry
                    else:
                        index[key] = len(entries)
                        entries.append(entry)
                    changed = True
                if not changed or lane.commit_writes(checkpoint_id, entries):
                    break
                lane.rebase()  # another handle wrote this thread meanwhile: again, on what it left
                _back_off(attempt)
            else:
                raise _kept_losing(configurable["thread_id"], "put_writes", attempt + 1, started)

    # -- deleting and copying ------------------------------------------------
    def delete_thread(self, thread_id: str) -> None:
        """Delete every namespace of a thread: its two sessions at once, under both their locks and
        only while each still has the head just read (``SnapshotStore.delete_sessions``; read again
        when another writer committed meanwhile), and under its lane's lock, the lane made for the
        delete when this saver holds none (a running thread's lane is let go between its steps once
        it falls out of ``cached_threads``): a put or put_writes of this saver never reads the thread
        between the two deletes, where the writes are gone and the checkpoints pointing at them not
        yet. A put that had read the thread lands on nothing it built on, and is built again on the
        thread as it is then: a run going on makes the thread again from what it writes next, as
        LangGraph's other savers do. (Deleted one after the other, unlocked, a put from elsewhere
        could land between the two and point at writes about to go: the thread never read again.)"""
        checkpoints, writes = thread_prefixes(str(thread_id))
        namespaces = {
            name.removeprefix(checkpoints if name.startswith(checkpoints) else writes)
            for name in self.store.sessions()
            if name.startswith((checkpoints, writes))
        }
        with self._mutex:
            lanes = {lane.names.checkpoints: lane for key, lane in self._lanes.items() if key[0] == str(thread_id)}
        for namespace in sorted(namespaces):
            pair = (checkpoints + namespace, writes + namespace)
            lane = lanes.get(pair[0]) or self._lane_to_delete(str(thread_id), pair)
            with lane.lock if lane is not None else contextlib.nullcontext():
                self._delete_namespace(str(thread_id), pair)
                if lane is not None:
                    lane.read_afresh()
        with self._mutex:
            # let go of the lanes once nobody uses them; one a put holds stays the thread's lane
            # (another made beside it would let two puts of the thread run at once)
            for key in [key for key in self._recent if key[0] == str(thread_id)]:
                self._recent.pop(key, None)

    def _lane_to_delete(self, thread_id: str, names: tuple[str, str]) -> Lane | None:
        """The lane of the namespace whose sessions are ``names``, made when this saver has none (not
        cached: the delete lets it go): a put or put_writes of the thread meanwhile takes this one,
        and its lock. A namespace stored as a hash is named by either session's head; None when
        neither has one (nothing to delete), or it is another thread's (a renamed copy)."""
        parsed = parse_checkpoints_name(names[0])
        namespace = parsed[1] if parsed is not None else None
        for name in names if namespace is None else ():
            try:
                found = self.store.session(name, create=False).head_state()
            except SnapshotNotFound:
                continue
            if found is not None and type(found[1]) is dict and type(found[1].get("checkpoint_ns")) is str:
                namespace = found[1]["checkpoint_ns"]
                break
        if namespace is None or lane_names(thread_id, namespace).checkpoints != names[0]:
            return None
        with self._mutex:
            key = (thread_id, namespace)
            return self._lanes.setdefault(key, Lane(self.store, *key, grew=self._fit_cached_bytes))

    def _delete_namespace(self, thread_id: str, names: tuple[str, str]) -> None:
        started = time.monotonic()
        for attempt in _attempts(self.store.lock_timeout, started):
            heads = stored_heads(self.store, names)
            if all(head is None for head in heads.values()):
                # none, or made and holding no snapshot yet: nothing of the thread to read. (One
                # deleted here unlocked could be a writes session a put has just pointed at.)
                return
            try:
                self.store.delete_sessions(heads)
                return
            except LockTimeoutError:
                raise
            except ConcurrentUpdateError:
                _back_off(attempt)  # a put landed since the heads were read: read again
        raise _kept_losing(thread_id, "delete_thread", attempt + 1, started)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        doomed = {str(run_id) for run_id in _ids(run_ids, "run_ids")}
        if not doomed:
            return

        def keep(_checkpoint_id: str, metadata: Any) -> bool:
            return self.codec.decode(metadata).get("run_id") not in doomed

        lanes = self._lanes_of(None)
        for done, lane in enumerate(lanes):
            try:
                self._rewrite(lane, lambda _index: keep)
            except ConcurrentUpdateError as exc:  # (a LockTimeoutError too, and stays one)
                raise type(exc)(
                    f"{exc.message}; {done} of the {len(lanes)} thread namespaces were rewritten before it, the "
                    "others not: call delete_for_runs again to go on (what it deleted stays deleted)",
                    {**exc.details, "rewritten": done, "namespaces": len(lanes)},
                ) from exc

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        for thread_id in _ids(thread_ids, "thread_ids"):
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue
            for lane in self._lanes_of(str(thread_id)):
                self._rewrite(lane, lambda index, lane=lane: self._keeping_latest(lane, index))

    def _keeping_latest(self, lane: Lane, index: Index) -> Any:
        """What ``prune(keep_latest)`` keeps of the thread as ``index`` (its head) has it: worked out
        again for each attempt of the rewrite, from the head it will be swapped against. Worked out
        once, a put landing before the swap was dropped with everything newer than the first look."""
        kept = self._latest_and_its_seeds(lane, index)
        return lambda checkpoint_id, _metadata: checkpoint_id in kept

    def _latest_and_its_seeds(self, lane: Lane, index: Index) -> set[str]:
        """The latest checkpoint, and the ancestors its delta channels are rebuilt from.

        A ``DeltaChannel`` stores its value only at snapshot steps: a checkpoint between them has
        the channel versioned but no value, and LangGraph rebuilds it from the nearest ancestor
        that has one and the writes since (``get_delta_channel_history``). Keeping the latest
        alone would leave such a channel empty, without an error. LangGraph marks a thread that
        uses one in its checkpoints' metadata, as PostgresSaver reads it: per delta channel,
        ``counters_since_delta_snapshot``, or ``delta_writes_versioned`` (LangGraph.js, which
        names no channel: then every channel the latest versions without a value counts). Each
        such channel keeps the parent chain back to an ancestor holding a value for it, or to the
        root. Any other channel without a value (``__start__``, a ``branch:to:`` trigger) needs
        nothing, so a thread without delta channels keeps its latest checkpoint alone.
        """
        latest = index.latest()
        kept = {latest}
        metadata = self.codec.decode(index.metadata(latest))
        counters = metadata.get("counters_since_delta_snapshot") if type(metadata) is dict else None
        marked = type(metadata) is dict and "delta_writes_versioned" in metadata
        if not counters and not marked:
            return kept
        loaded = lane.load(latest)
        if loaded is None:
            return kept
        state = loaded[0]
        skeleton = self.codec.decode(state["checkpoint"])
        missing = set(skeleton.get("channel_versions", {})) - set(channel_values(state))
        if counters and type(counters) is dict:
            missing &= set(counters)
        parent = state.get("parent_checkpoint_id")
        while missing and parent is not None and parent in index.rows and parent not in kept:
            kept.add(parent)
            loaded = lane.load(parent)
            if loaded is None:
                break
            missing -= set(channel_values(loaded[0]))
            parent = loaded[0].get("parent_checkpoint_id")
        return kept

    def _rewrite(self, lane: Lane, keeping: Any) -> None:
        """Replace a lane by the checkpoints ``keeping(index)`` accepts (a test of a checkpoint id and
        its metadata, for the head ``index`` stands for), if it rejects any.

        The kept checkpoints are written beside the thread and take its place when all are written
        (``Lane.replace_with``): a rewrite that fails or is killed part way leaves the thread as it
        was, where it used to leave the checkpoints replayed so far, its newest ones lost without
        an error. A put another saver makes meanwhile makes the rewrite start again from the
        thread as it is then, rather than be dropped."""
        started = time.monotonic()
        for attempt in _attempts(self.store.lock_timeout, started):
            with lane.lock:
                lane.read_again()
                heads = lane.stored_heads()  # first: a commit after this read fails the swap, not lost
                found = lane.head()
                if found is None:
                    return
                keep = keeping(found[1])  # from this head, at every attempt
                if all(keep(cid, found[1].metadata(cid)) for cid in found[1].rows):
                    return
                if lane.replace_with(lane.entries(keep), heads):
                    return  # (False: another saver committed meanwhile; built again on what it left)
            _back_off(attempt)
        raise _kept_losing(lane.thread_id, "the rewrite", attempt + 1, started)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every namespace of a thread, checkpoints and writes. A namespace the target does not
        have yet appears whole, or not at all when the copy fails; one it has gets the copied
        checkpoints put on top of what it holds."""
        _refuse_unstorable(target_thread_id, "")  # before anything is read
        for source in self._lanes_of(str(source_thread_id)):
            entries = source.entries()
            target = self._writing_lane(target_thread_id, source.checkpoint_ns)
            started = time.monotonic()
            for attempt in _attempts(self.store.lock_timeout, started):
                with target.lock:
                    heads = target.stored_heads()
                    if any(head is not None for head in heads.values()):
                        target.replay(entries)
                        break
                    if target.replace_with(entries, heads):
                        break  # (False: another saver started the target meanwhile: copied on top of it)
                _back_off(attempt)
            else:
                raise _kept_losing(target_thread_id, "the copy", attempt + 1, started)

    # -- async: the same operations on a worker thread -------------------------
    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = self.list(config, filter=filter, before=before, limit=limit)
        while (item := await asyncio.to_thread(next, found, _DONE)) is not _DONE:
            yield item  # type: ignore[misc]

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)
