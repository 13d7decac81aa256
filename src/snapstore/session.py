"""A named history of snapshots: commit, rollback, diff, retention and squashing."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from . import codec
from .chains import apply_delta, check_state, rebuild
from .codec import Kind
from .delta import apply_patch, diff, diff_members, parse_pointer
from .errors import (
    AmbiguousSnapshotId,
    ConcurrentUpdateError,
    InvalidStateError,
    PatchError,
    SnapshotError,
    SnapshotNotFound,
)
from .objects import SessionDoc, Snapshot, SnapshotRecord, format_timestamp

if TYPE_CHECKING:
    from .store import SnapshotStore

MIN_PREFIX = 8
COMMIT_ATTEMPTS = 20
MAX_INT64 = 2**63 - 1
#: how many commits by other writers a session applies to its cached head instead of rebuilding
CATCH_UP_LIMIT = 16


class Session:
    """One named history in a store. Get it with ``store.session(name)``.

    The session keeps one copy of its head state (to diff the next commit
    against) and a list of ids; memory does not grow with the snapshot count.
    """

    def __init__(self, store: SnapshotStore, name: str, doc_key: str, doc: SessionDoc) -> None:
        self._store = store
        self.name = name
        self._ref = store.session_ref(name)
        self._doc_key = doc_key
        self._doc = doc
        self._head_id: str | None = None
        self._head_state: Any = None
        self._head_pieces: dict[str, bytes] | None = None  # canonical bytes of the head's members
        # (head id, its members' bytes, the ops) while the cached head is patched ahead of a ref swap
        self._patched: tuple[str | None, dict[str, bytes] | None, list[Any]] | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<Session {self.name!r} in {self._store.describe()}>"

    # -- reading -------------------------------------------------------
    @property
    def max_snapshots(self) -> int:
        return self._current().max_snapshots

    @property
    def head(self) -> Snapshot | None:
        doc = self._current()
        return None if doc.head is None else self._snapshot(doc.head)

    def __len__(self) -> int:
        return len(self._current().snapshots)

    def snapshots(self) -> list[Snapshot]:
        """Retained snapshots, oldest first (creation order)."""
        return [self._snapshot(sid) for sid in self._current().snapshots]

    def snapshot_ids(self) -> list[str]:
        return list(self._current().snapshots)

    def snapshot(self, snapshot_id: str) -> Snapshot:
        return self._snapshot(self.resolve(snapshot_id))

    def resolve(self, snapshot_id: str) -> str:
        """The full id of a retained snapshot given its id or a unique prefix of 8+ characters."""
        return resolve_prefix(snapshot_id, self._current().snapshots, where=f"session {self.name!r}")

    def state(self, snapshot_id: str) -> Any:
        """The full state of a retained snapshot, verified against its hash; the caller owns it."""
        sid = self.resolve(snapshot_id)
        with self._lock:
            if sid == self._head_id and self._head_state is not None:
                return codec.loads(self._head_bytes())
            return rebuild(self._store.objects, sid, self._current().bases)

    def diff(self, a: str, b: str) -> list[dict[str, Any]]:
        """RFC 6902 operations turning snapshot a's state into snapshot b's."""
        return diff(self.state(a), self.state(b))

    # -- writing -------------------------------------------------------
    def commit(self, state: Any, label: str = "auto", turn: int | None = None) -> Snapshot:
        """Snapshot ``state`` (a JSON-compatible value or a pydantic model) as the new head.

        Stores a delta against the head, or a full state when the keyframe rule
        asks for one. A refused commit writes nothing and changes nothing.
        """
        if not isinstance(label, str) or not _encodable(label):
            raise InvalidStateError(
                "label must be a string of valid unicode", {"argument": "label", "type": type(label).__name__}
            )
        if turn is not None and (type(turn) is not int or not -MAX_INT64 - 1 <= turn <= MAX_INT64):
            raise InvalidStateError(
                "turn must be a 64-bit integer or None", {"argument": "turn", "type": type(turn).__name__}
            )
        if isinstance(state, BaseModel):
            try:
                state = state.model_dump(mode="json")
            except ValueError as exc:  # pydantic's serialization error: a field it cannot write as JSON
                raise InvalidStateError(
                    f"state cannot be stored as JSON: the model does not serialize: {exc}",
                    {"reason": "model does not serialize", "type": type(state).__name__},
                ) from None
        data, pieces, converted = codec.encode_state(state)
        if converted:  # subclasses of JSON types were written as their base types: commit that reading
            state = codec.read_back(data, codec.plain_copy(state))
        state_hash = codec.object_id(data)
        with self._lock:
            for attempt in range(COMMIT_ATTEMPTS):
                doc = self._current()
                try:
                    written = self._write_snapshot(doc, state, data, pieces, state_hash, label, turn)
                except SnapshotNotFound:
                    # another writer evicted and reclaimed the head we read: retry on its new head
                    if self._store.backend.read_ref(self._ref) == self._doc_key:
                        raise
                    written = None
                if written is not None:
                    return written
                # lost a race: back off a little, at random, so contending writers spread out
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
            raise ConcurrentUpdateError(
                f"session {self.name!r} kept changing under {COMMIT_ATTEMPTS} commit attempts",
                {"session": self.name, "attempts": COMMIT_ATTEMPTS},
            )

    def _next_head(
        self, doc: SessionDoc, state: Any, data: bytes, pieces: dict[str, bytes] | None
    ) -> tuple[bytes | None, Any]:
        """The canonical patch from the head to ``state`` (None for a first commit) and the new head
        as stored, refusing a ``state`` that differs from what its bytes read back as."""
        if doc.head is None:
            return None, codec.read_back(data, state)
        head_state, head_pieces = self._head_for(doc)
        if pieces is not None and head_pieces is not None:
            ops = diff_members(head_state, state, head_pieces, pieces)
        else:
            ops = diff(head_state, state)
        payload = codec.dumps(ops)
        # Patched in place (a copy would double the memory), so until the ref swap succeeds the
        # cache is no snapshot's: a refusal or a lost race puts it back (``_unpatch_head``).
        self._patched = (self._head_id, head_pieces, ops)
        self._head_id = self._head_pieces = None
        try:
            # the stored bytes, parsed, rather than ops, whose values alias the caller's objects
            new_head = apply_patch(head_state, codec.loads(payload), in_place=True)
        except (ValueError, PatchError):  # bytes an orjson.Fragment spliced into the patch
            self._unpatch_head()
            raise codec.describe_unrepresentable(state) from None
        try:
            codec.check_reading(state, new_head)
        except InvalidStateError:
            self._unpatch_head()
            raise
        return payload, new_head

    def _unpatch_head(self) -> None:
        """Put the cached head back as it was before ``_next_head`` patched it in place.

        The top-level members the patch named are parsed again from the head's bytes and the ones
        it added are dropped; the others were not touched. Without the members' bytes (a state
        that is not an object) or after a whole-document patch, the cache stays dropped and the
        next commit rebuilds it from the store.
        """
        patched, self._patched = self._patched, None
        if patched is None:
            return
        head_id, pieces, ops = patched
        head = self._head_state
        if head_id is None or pieces is None or type(head) is not dict:
            return
        touched: set[str] = set()
        for op in ops:
            for pointer in (op["path"], op.get("from")):
                if pointer is not None:
                    tokens = parse_pointer(pointer)
                    if not tokens:
                        return
                    touched.add(tokens[0])
        for key in touched:
            if key in pieces:
                head[key] = codec.loads(pieces[key])
            else:
                head.pop(key, None)
        self._head_id, self._head_pieces = head_id, pieces

    def _write_snapshot(
        self,
        doc: SessionDoc,
        state: Any,
        data: bytes,
        pieces: dict[str, bytes] | None,
        state_hash: str,
        label: str,
        turn: int | None,
    ) -> Snapshot | None:
        """One attempt: write objects, then swing the ref. None when another writer won the race."""
        store, objects = self._store, self._store.objects
        parent = doc.head
        delta_payload, new_head = self._next_head(doc, state, data, pieces)
        try:
            pending: list[tuple[str, bytes]] = []  # written in one batch, before the ref swap
            with store.writing():
                if parent is None or delta_payload is None:
                    record = self._keyframe_record(None, data, state_hash, label, turn, pending)
                else:
                    parent_record = objects.record(parent)
                    delta_key, delta_blob = objects.encode(Kind.DELTA, delta_payload)
                    if store.policy.wants_keyframe(parent_record, len(delta_blob), len(data)):
                        record = self._keyframe_record(parent, data, state_hash, label, turn, pending)
                    else:
                        pending.append((delta_key, delta_blob))
                        record = SnapshotRecord(
                            session=self.name,
                            parent=parent,
                            state=state_hash,
                            delta=delta_key,
                            label=label,
                            timestamp=_now(),
                            turn=turn,
                            size=len(data),
                            depth=parent_record.depth + 1,
                            chain_bytes=parent_record.chain_bytes + len(delta_blob),
                            base_ratio=parent_record.base_ratio,
                        )
                sid, record_blob = objects.encode(Kind.RECORD, record.to_payload())
                pending.append((sid, record_blob))
                new_doc = doc.copy()
                if sid not in new_doc.snapshots:
                    new_doc.snapshots.append(sid)
                new_doc.head = sid
                _evict(new_doc)
                if not self._swap(new_doc, pending):
                    self._unpatch_head()  # lost the race: the next attempt catches up from the old head
                    return None
        except BaseException:
            self._unpatch_head()  # a write failed: the cache goes back to the head it was
            raise
        self._patched = None
        objects.remember(sid, record)
        self._head_id, self._head_state, self._head_pieces = sid, new_head, pieces
        self._store.maybe_reclaim(self, new_doc)
        return Snapshot.from_record(sid, record)

    def _keyframe_record(
        self,
        parent: str | None,
        data: bytes,
        state_hash: str,
        label: str,
        turn: int | None,
        pending: list[tuple[str, bytes]],
    ) -> SnapshotRecord:
        key, blob = self._store.objects.encode(Kind.STATE, data)
        pending.append((key, blob))
        stored = len(blob)
        return SnapshotRecord(
            session=self.name,
            parent=parent,
            state=key,
            delta=None,
            label=label,
            timestamp=_now(),
            turn=turn,
            size=len(data),
            depth=0,
            chain_bytes=0,
            base_ratio=round(stored / max(len(data), 1), 6),
        )

    def rollback(self, snapshot_id: str) -> Any:
        """Move the head to a retained snapshot and return its state (the caller's own copy).

        Later snapshots stay listed until evicted; the next commit's parent is this one.
        """
        with self._lock:
            for _attempt in range(COMMIT_ATTEMPTS):
                doc = self._current()
                sid = resolve_prefix(snapshot_id, doc.snapshots, where=f"session {self.name!r}")
                if sid == self._head_id and self._head_state is not None:
                    if sid == doc.head:  # already the head: nothing to write
                        return codec.loads(self._head_bytes())
                    state = self._head_state
                else:
                    state = rebuild(self._store.objects, sid, doc.bases)
                new_doc = doc.copy()
                new_doc.head = sid
                with self._store.writing():
                    swapped = self._swap(new_doc)
                if swapped:
                    self._head_id, self._head_state, self._head_pieces = sid, state, None
                    return codec.loads(codec.dumps(state))
            raise ConcurrentUpdateError(
                f"session {self.name!r} kept changing during rollback", {"session": self.name}
            )

    def set_max_snapshots(self, max_snapshots: int) -> None:
        """Change the retention limit; shrinking evicts the oldest snapshots at once."""
        check_max_snapshots(max_snapshots)
        with self._lock:
            for _attempt in range(COMMIT_ATTEMPTS):
                doc = self._current()
                if doc.max_snapshots == max_snapshots:
                    return
                new_doc = doc.copy()
                new_doc.max_snapshots = max_snapshots
                _evict(new_doc)
                with self._store.writing():
                    if self._swap(new_doc):
                        break
            else:
                raise ConcurrentUpdateError(f"session {self.name!r} kept changing", {"session": self.name})
        self._store.maybe_reclaim(self, self._doc)

    def clear_old_snapshots(self) -> int:
        """Evict down to ``max_snapshots`` (normally already true); returns how many left."""
        with self._lock:
            doc = self._current()
            new_doc = doc.copy()
            evicted = _evict(new_doc)
            if evicted:
                with self._store.writing():
                    if not self._swap(new_doc):
                        return self.clear_old_snapshots()
        return evicted

    # -- internals -----------------------------------------------------
    def _current(self) -> SessionDoc:
        """The session document the ref points at now (re-read when another handle moved it)."""
        # Under the session's lock: a reader reloading the document in the middle of a commit
        # would make that commit's compare-and-swap, and its delete of the replaced document, wrong.
        with self._lock:
            if self._store.backend.read_ref(self._ref) == self._doc_key:
                return self._doc
            found = self._store.load_session_doc(self._ref, self.name)
            if found is None:
                raise SnapshotNotFound(f"session {self.name!r} does not exist", {"session": self.name})
            self._doc_key, self._doc = found
            return self._doc

    def _swap(self, new: SessionDoc, objects: list[tuple[str, bytes]] | None = None) -> bool:
        """Compare-and-swap the session ref from the document last read to ``new``.

        Each document carries a generation one above the one it replaces, so a
        document's bytes never recur and the replaced one can be deleted at once.
        """
        backend = self._store.backend
        new.generation = self._doc.generation + 1
        new_key, doc_blob = self._store.objects.encode(Kind.SESSION, new.to_payload())
        # the commit's objects and the new document in one batch (one round trip on a server)
        backend.put_many([*(objects or []), (new_key, doc_blob)])
        if not backend.cas_ref(self._ref, self._doc_key, new_key) and backend.read_ref(self._ref) != new_key:
            backend.delete(new_key)  # lost the race (unless an identical twin won: the same outcome)
            return False
        old_key = self._doc_key
        self._doc_key, self._doc = new_key, new
        # The replaced document is deleted at once, unless this very batch stored the same bytes
        # as another object (a keyframe whose state is byte-identical to that document).
        if not any(key == old_key for key, _blob in objects or ()):
            backend.delete(old_key)
        return True

    def _head_for(self, doc: SessionDoc) -> tuple[Any, dict[str, bytes] | None]:
        """The head's state and its members' canonical bytes, rebuilt when another handle moved it."""
        if self._head_id != doc.head or self._head_state is None:
            cached_id, cached = self._head_id, self._head_state
            self._head_id, self._head_pieces = None, None
            self._head_state = self._catch_up(cached_id, cached, doc)
            if self._head_state is None:
                self._head_state = rebuild(self._store.objects, doc.head, doc.bases)  # type: ignore[arg-type]
            self._head_id = doc.head
        if self._head_pieces is None and type(self._head_state) is dict:
            self._head_pieces = codec.encode_state(self._head_state)[1]
        return self._head_state, self._head_pieces

    def _head_bytes(self) -> bytes:
        """Canonical bytes of the cached head: joined from the members' bytes the last commit kept."""
        if self._head_pieces is None:
            return codec.dumps(self._head_state)
        return codec.join_members(self._head_pieces)

    def _catch_up(self, cached_id: str | None, cached: Any, doc: SessionDoc) -> Any:
        """Another writer moved the head a few commits past our cached one: apply just their deltas.

        Returns None when the cached head is not a near ancestor (a rollback, a keyframe or a squash
        base between, whose delta may be gone); the caller then rebuilds from the store. The result
        is verified against its hash.
        """
        head = doc.head
        if cached_id is None or cached is None or head is None:
            return None
        objects, path = self._store.objects, []
        current: str | None = head
        for _step in range(CATCH_UP_LIMIT):
            if current == cached_id:
                break
            if current is None:
                return None
            record = objects.record(current)
            if record.delta is None or current in doc.bases:
                return None
            path.append(record)
            current = record.parent
        else:
            return None
        for record in reversed(path):
            cached = apply_delta(objects, record, cached)
        check_state(cached, objects.record(head).state, head)
        return cached

    def _snapshot(self, sid: str) -> Snapshot:
        return Snapshot.from_record(sid, self._store.objects.record(sid))

    def export_state(self, snapshot_id: str, path: Any) -> int:
        """Write one retained snapshot's state to ``path`` (str or path-like) as pretty JSON; returns bytes written.

        UTF-8, two-space indents, sorted keys. Integers and floats keep their spelling
        (``1`` vs ``1.0``), so the file reads back type-exact.
        """
        import orjson  # local: this method is the module's only user

        data = orjson.dumps(self.state(snapshot_id), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        with open(path, "wb") as f:
            f.write(data)
        return len(data)



def _evict(doc: SessionDoc) -> int:
    """Move the oldest snapshots beyond the limit from the listing to the evicted list."""
    extra = len(doc.snapshots) - doc.max_snapshots
    if extra <= 0:
        return 0
    gone, doc.snapshots = doc.snapshots[:extra], doc.snapshots[extra:]
    doc.evicted.extend(gone)
    return extra


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _now() -> str:
    return format_timestamp(datetime.now(timezone.utc))


def check_max_snapshots(value: Any) -> int:
    if type(value) is not int or not 1 <= value <= MAX_INT64:
        raise SnapshotError(
            "max_snapshots must be a positive integer", {"argument": "max_snapshots", "value": repr(value)}
        )
    return value


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
