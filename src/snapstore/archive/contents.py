"""What an archive holds once read, and the states it rebuilds.

The index is kept in compact arrays and the payloads in a spool file, so that
memory does not grow with the archive. A state is rebuilt by walking parent
links to something that can be read now (the state rebuilt last, one kept in the
cache of rebuilt states, a base state in the archive, a state patch already
resolved, or a snapshot the store's session holds) and applying deltas forward;
every rebuilt state is checked against the hash its record gives before it is used.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from array import array
from collections import OrderedDict
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, BinaryIO

import orjson

from .. import codec
from ..codec import Kind
from ..delta import apply_patch
from ..errors import ArchiveError, InvalidStateError, PatchError, SnapshotError
from ..history import SessionLog
from ..objects import SessionDoc, SnapshotRecord
from ..recency import touch
from .checks import check_payload, fail, refuse_copies
from .layout import KIND_NAMES, KIND_STATE_PATCH, PROGRESS_EVERY, IdIndex, Links, Progress, links

if TYPE_CHECKING:
    from ..store import SnapshotStore


#: the cache of states rebuilt on the way to others holds at most this many bytes of canonical JSON
REBUILT_CACHE_BYTES = 64 << 20
#: and at most this many states
REBUILT_CACHE_ENTRIES = 4096
#: a walk back that repeats deltas applied before keeps the state every this many steps on its way forward
CHECKPOINT_EVERY = 32


class RebuiltStates:
    """States of snapshots met on the way to others, as canonical bytes checked against their records'
    hashes, the least recently used out first.

    Kept as bytes, not values: a rebuild patches its state in place, so each use parses its own copy.
    """

    def __init__(self, max_bytes: int = REBUILT_CACHE_BYTES, max_entries: int = REBUILT_CACHE_ENTRIES) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.size = 0
        self._states: OrderedDict[str, bytes] = OrderedDict()

    def get(self, sid: str) -> bytes | None:
        data = self._states.get(sid)
        if data is not None:
            self._states.move_to_end(sid)
        return data

    def pop(self, sid: str) -> bytes | None:
        data = self._states.pop(sid, None)
        if data is not None:
            self.size -= len(data)
        return data

    def put(self, sid: str, data: bytes) -> None:
        if len(data) > self.max_bytes // 4 or sid in self._states:
            return  # one state may not push out most of the others
        self.size += len(data)
        for gone in touch(self._states, sid, data, self.max_entries):
            self.size -= len(gone)
        while self.size > self.max_bytes:
            self.size -= len(self._states.popitem(last=False)[1])

    def clear(self) -> None:
        self._states.clear()
        self.size = 0


def spool_error(archive: str, spool_dir: str | os.PathLike[str] | None, exc: OSError) -> ArchiveError:
    try:
        folder = str(spool_dir) if spool_dir is not None else tempfile.gettempdir()
    except OSError:
        # gettempdir looks for a folder it can write a file in: none was (full, read-only or missing,
        # which is how the spool failed), and asking again raised its FileNotFoundError past this error
        folder = "a temporary folder"
    return ArchiveError(
        f"cannot import archive {archive}: writing its temporary spool file in {folder} failed: "
        f"{exc.strerror or exc} (errno {exc.errno}); nothing was imported",
        {"path": folder, "errno": exc.errno, "reason": "spool failed", "archive": archive},
    )


class ArchiveContents:
    """An archive's objects as read into the spool, and the states they rebuild."""

    def __init__(
        self,
        store: SnapshotStore,
        source: BinaryIO,
        spool: IO[bytes],
        name: str,
        max_size: int,
        progress: Progress | None,
    ) -> None:
        self.store = store
        self.source = source
        self.spool = spool
        self.name = name
        self.max_size = max_size
        self.progress = progress
        # the index, in body order: ids (numbered by entry), offsets, lengths, kinds
        self.table = IdIndex()
        self.offsets = array("Q")
        self.lengths = array("I")
        self.kinds = bytearray()
        #: per entry, nonzero when a session document reaches it (``_ArchiveReader._mark_used``): an entry
        #: none reaches is checked against its id alone and is, to everything after, not in the archive
        self.used = bytearray()
        self.resolved: dict[int, tuple[int, int]] = {}  # state patch entry -> (spool offset, length)
        #: state hash -> (the snapshot a state patch patches, spool offset and length of the patch's
        #: canonical JSON): kept so that an import stores the state as that patch, not whole
        self.patches: dict[str, tuple[str, int, int]] = {}
        self.docs: list[SessionDoc] = []
        self.tags: dict[str, dict[str, str]] = {}  # session -> its tags (name -> id)
        #: session -> how many of its last listed snapshots are in its retention window, when not all
        self.windows: dict[str, int] = {}
        self.version = 0  # the archive's version, from its header
        self.body_size = 0
        self._locals: dict[str, SessionLog | None] = {}
        self._last: tuple[str, Any] | None = None  # the state rebuilt last, to go on from
        #: states met on walks that repeat work, so that an order other than parent before child (a
        #: document listing newest first, siblings of one parent) does not walk back to its base each time
        self._rebuilt = RebuiltStates()
        self._applied = bytearray()  # archive records whose delta this pass applied already
        self.spool_dir: str | os.PathLike[str] | None = None  # where the spool file is (for messages)

    def _spool(self, data: bytes) -> None:
        """Append to the spool file; a full disk (or any write error) is an ArchiveError naming the folder."""
        try:
            self.spool.write(data)
            self.spool.flush()
        except OSError as exc:
            raise spool_error(self.name, self.spool_dir, exc) from exc

    def _payload(self, i: int) -> bytes:
        """An object's payload (for a state patch: the state it was resolved to)."""
        return self._spooled(*(self.resolved.get(i) or (self.offsets[i], self.lengths[i])))

    def _spooled(self, start: int, length: int) -> bytes:
        self.spool.seek(start)
        data = self.spool.read(length)
        if len(data) != length:
            raise fail(f"archive {self.name}: spool file is short", "spool", path=self.name)
        return data

    # -- lookups -------------------------------------------------------------
    def _find(self, key: str) -> int:
        """The entry number of an object in the archive that a session document reaches, or -1."""
        i = self.table.find(bytes.fromhex(key))
        return i if i >= 0 and self.used[i] else -1

    def _entry(self, key: str, need: Kind) -> int:
        """The entry holding object ``key`` (or -1), checked to serve as a ``need``.

        Kinds are labels (§3.2): byte-identical payloads of two kinds, such as the state ``[]``
        and the empty patch ``[]``, are one object, labelled with the kind written first. An
        entry labelled otherwise is used when its payload parses as the kind needed.
        """
        i = self._find(key)
        label = self.kinds[i] if i >= 0 else 0
        if i < 0 or label == need or (need == Kind.STATE and label == KIND_STATE_PATCH):
            return i
        if label == KIND_STATE_PATCH and i not in self.resolved:
            raise fail(
                f"archive {self.name}: object {key} is needed as a {need.name.lower()} before the state patch "
                "holding it is rebuilt",
                "bad order",
                path=self.name,
                object=key,
            )
        if need != Kind.STATE:  # any payload is canonical JSON (checked), hence a state
            try:
                check_payload(self.name, key, int(need), self._payload(i))
            except ArchiveError:
                raise fail(
                    f"archive {self.name}: object {key} is a {KIND_NAMES[label]} and does not parse as the "
                    f"{need.name.lower()} it is used as",
                    "wrong kind",
                    path=self.name,
                    object=key,
                ) from None
        return i

    def local(self, name: str) -> SessionLog | None:
        """The store's session of that name as it is now (None when the store has none)."""
        if name not in self._locals:
            from ..store import session_key

            log = SessionLog(self.store.backend, session_key(name), name)
            log.refresh()
            self._locals[name] = log if log.segments else None
        return self._locals[name]

    def forget_local(self, name: str) -> None:
        self._locals.pop(name, None)

    def record(self, sid: str, local: SessionLog | None = None) -> Links:
        """A record's links, from the archive or else from the store's session ``local``."""
        i = self._entry(sid, Kind.RECORD)
        if i >= 0:
            return links(self._payload(i))  # checked by _check_objects
        if local is not None and sid in local.commits:
            record = local.commits[sid].record
            return Links(record.parent, record.delta, record.state, record.session)
        raise fail(
            f"archive {self.name}: snapshot {sid} is neither in the archive nor in the store",
            "missing object",
            path=self.name,
            object=sid,
        )

    def full_record(self, sid: str) -> SnapshotRecord:
        """An archive record (checked by ``_check_objects``)."""
        return SnapshotRecord.from_payload(sid, self._payload(self._entry(sid, Kind.RECORD)))

    def _patch_from_parent(self, record: SnapshotRecord) -> bytes | None:
        """The canonical patch from the record's parent to its state, when the archive carries its state
        as a state patch against that parent (a snapshot first stored against another base: its record
        names no delta); None otherwise."""
        found = self.patches.get(record.state)
        if found is None or record.parent is None or found[0] != record.parent:
            return None
        return self._spooled(found[1], found[2])

    def delta_payload(self, key: str) -> bytes | None:
        i = self._entry(key, Kind.DELTA)
        return self._payload(i) if i >= 0 else None

    def _require(self, key: str, need: Kind, needed_by: str) -> None:
        if self._entry(key, need) < 0:
            raise fail(
                f"archive {self.name}: {need.name.lower()} {key} needed by snapshot {needed_by} is not in the archive",
                "missing object",
                path=self.name,
                object=key,
                snapshot=needed_by,
            )

    # -- states --------------------------------------------------------------
    def _resolve_patches(self) -> None:
        """Rebuild every state patch (in index order) and keep the states in the spool."""
        self._new_pass()
        for i in range(len(self.kinds)):
            if self.kinds[i] != KIND_STATE_PATCH or not self.used[i]:
                continue  # (one no document reaches is never rebuilt: nothing could use its state)
            key = self.table.key(i).hex()
            body = orjson.loads(self._payload(i))
            parent = body["parent"]
            # a patch's parent is a snapshot: what the archive holds under that id must read as a record
            found = self._entry(parent, Kind.RECORD)
            local = self.local(links(self._payload(found)).session) if found >= 0 else None
            state = self._rebuild(parent, frozenset(), local, f"state patch {key}")
            try:
                ops = refuse_copies(self.name, key, body["patch"])
                patch = codec.dumps(ops)  # before it applies: its values go into the state
                state = apply_patch(state, ops, in_place=True)
                data = codec.dumps(state)
            except (PatchError, TypeError, orjson.JSONEncodeError) as exc:
                raise fail(
                    f"archive {self.name}: state patch {key} does not apply: {exc}", "bad state patch", object=key
                ) from None
            del state
            if len(data) != body["size"] or codec.object_id(data) != key:
                raise fail(
                    f"archive {self.name}: state patch {key} rebuilds to a state of {len(data)} bytes hashing "
                    f"{codec.object_id(data)}; it names a state of {body['size']} bytes hashing {key}",
                    "hash mismatch",
                    path=self.name,
                    object=key,
                )
            self.spool.seek(0, os.SEEK_END)
            self.resolved[i] = (self.spool.tell(), len(data))
            self._spool(data)
            self.patches[key] = (parent, self.spool.tell(), len(patch))
            self._spool(patch)
        self._new_pass()

    def _readable_state(self, key: str) -> int:
        """The archive entry holding a state that can be read now, or -1."""
        i = self._find(key)
        if i >= 0 and (self.kinds[i] != KIND_STATE_PATCH or i in self.resolved):
            return i
        return -1

    def _rebuild(self, sid: str, bases: frozenset[str], local: SessionLog | None, needed_by: str) -> Any:
        """The state of snapshot ``sid`` (a fresh value): from the state rebuilt last, a state cached on an
        earlier walk, a base state in the archive or a snapshot the store's session holds, then the deltas
        forward."""
        path: list[Links] = []
        entries: list[int] = []  # the archive entry of each record on the path
        current = sid
        while True:
            if self._last is not None and self._last[0] == current:
                state = self._last[1]
                self._last = None  # patched in place from here on
                break
            # (a snapshot's own state is not needed again this pass: it goes on as the state rebuilt last)
            cached = self._rebuilt.pop(current) if current == sid else self._rebuilt.get(current)
            if cached is not None:
                state = orjson.loads(cached)  # a copy of its own: it is patched in place
                break
            if local is not None and current in local.commits and self._find(current) < 0:
                try:
                    state = local.rebuild(current)
                except SnapshotError as exc:
                    raise fail(
                        f"archive {self.name}: {needed_by} needs snapshot {current} of the store, which cannot be "
                        f"read: {exc}",
                        "missing object",
                        object=current,
                    ) from None
                break
            record = self.record(current, local)
            if record.delta is None or current in bases or self._readable_state(record.state) >= 0:
                entry = self._readable_state(record.state)
                if entry < 0:
                    raise fail(
                        f"archive {self.name}: {needed_by} needs the state of snapshot {current}, which cannot be "
                        f"rebuilt (state {record.state} is missing)",
                        "missing object",
                        object=record.state,
                    )
                state = orjson.loads(self._payload(entry))
                break
            if record.parent is None or len(path) > len(self.kinds):
                raise fail(
                    f"archive {self.name}: snapshot {sid} has a broken or cyclic parent chain", "cyclic chain",
                    object=current,
                )  # fmt: skip
            path.append(record)
            entries.append(self._find(current))
            current = record.parent
        # a walk over deltas this pass applied already repeats work, and the next may again (snapshots
        # listed newest first, siblings of one parent): it keeps the states it passes, every one on a short
        # walk, else its target's parent and one every CHECKPOINT_EVERY steps, so that the next rebuild
        # near here walks back that far at most. Walks that repeat nothing keep nothing: an archive in
        # parent-before-child order goes on from the state rebuilt last and holds one state at a time
        applied = self._applied
        repeats = len(path) > 1 and any(applied[i] for i in entries)
        every = 1 if len(path) <= CHECKPOINT_EVERY else CHECKPOINT_EVERY
        for at in range(len(path) - 1, -1, -1):
            step = path[at]
            assert step.delta is not None
            i = self._entry(step.delta, Kind.DELTA)
            if i < 0:
                raise fail(
                    f"archive {self.name}: delta {step.delta} of snapshot {sid}'s chain is not in the archive",
                    "missing object",
                    path=self.name,
                    object=step.delta,
                )
            ops = orjson.loads(self._payload(i))
            try:
                state = apply_patch(state, refuse_copies(self.name, step.delta, ops), in_place=True)
            except PatchError as exc:
                raise fail(
                    f"archive {self.name}: delta {step.delta} does not apply: {exc}", "bad delta", object=step.delta
                ) from None
            applied[entries[at]] = 1
            if repeats and at and (at == 1 or at % every == 0):
                self._keep(path[at - 1].parent, step.state, state)
        return state

    def _keep(self, sid: str | None, state_hash: str, state: Any) -> None:
        """Cache a state met on a walk, when it is what its record says (what a rebuild of it must give)."""
        try:
            data = codec.dumps(state)
        except TypeError:  # nested deeper than orjson writes: a walk past it does without
            return
        if sid is not None and codec.object_id(data) == state_hash:
            self._rebuilt.put(sid, data)

    def state_bytes(self, sid: str, record: SnapshotRecord, bases: frozenset[str], local: SessionLog | None) -> bytes:
        """The canonical bytes of a snapshot's state, rebuilt and checked against its record."""
        state = self._rebuild(sid, bases, local, f"snapshot {sid}")
        try:
            # as a commit encodes it, two levels spare: deltas can nest a state deeper than orjson
            # writes, or than a commit takes (252), and such a state would leave the session stuck
            data = codec.encode_state(state)[0]
        except InvalidStateError as exc:
            raise fail(
                f"archive {self.name}: snapshot {sid} rebuilds to a state the store cannot keep: {exc}",
                "not JSON",
                path=self.name,
                object=sid,
            ) from None
        if len(data) != record.size or codec.object_id(data) != record.state:
            raise fail(
                f"archive {self.name}: snapshot {sid} rebuilds to a state hashing {codec.object_id(data)} "
                f"({len(data)} bytes); its record says {record.state} ({record.size} bytes)",
                "hash mismatch",
                path=self.name,
                object=sid,
            )
        self._last = (sid, state)
        return data

    def forget_last(self) -> None:
        self._new_pass()

    def _new_pass(self) -> None:
        """Forget what the last pass over snapshots kept: it holds memory, and each pass makes its own."""
        self._last = None
        self._rebuilt.clear()
        self._applied = bytearray(len(self.kinds))

    # -- session documents ---------------------------------------------------
    def check_chains(self, doc: SessionDoc, local: SessionLog | None) -> None:
        """Every listed snapshot's chain reaches a base through listed records of this session,
        with every delta and base state in the archive, or reaches a snapshot the store's session holds."""
        listed = {*doc.snapshots, *doc.evicted}
        bases = set(doc.bases)
        ok = bytearray(len(self.kinds))  # archive records whose chain is known good

        def known(sid: str) -> bool:
            i = self._find(sid)
            if i >= 0:
                return bool(ok[i])
            return local is not None and sid in local.commits

        for root in itertools.chain(doc.evicted, doc.snapshots):
            path: list[int] = []
            on_path: set[str] = set()
            current = root
            while not known(current):
                if current not in listed:
                    raise fail(
                        f"archive {self.name}: the chain of snapshot {root} in session {doc.name!r} runs through "
                        f"{current}, which the session document does not list",
                        "unlisted record",
                        session=doc.name,
                        snapshot=root,
                        object=current,
                    )
                if current in on_path:
                    raise fail(
                        f"archive {self.name}: snapshot {root} has a cyclic parent chain",
                        "cyclic chain",
                        object=current,
                    )
                on_path.add(current)
                record = self.record(current)
                path.append(self._find(current))
                if record.session != doc.name:
                    raise fail(
                        f"archive {self.name}: session {doc.name!r} lists snapshot {current} of session "
                        f"{record.session!r}",
                        "bad session document",
                        session=doc.name,
                        object=current,
                    )
                if record.delta is None or current in bases:  # a base: its state, not its delta
                    if self._readable_state(record.state) < 0:
                        self._require(record.state, Kind.STATE, current)
                    break
                self._require(record.delta, Kind.DELTA, current)
                current = record.parent  # type: ignore[assignment]
            for i in path:
                ok[i] = 1

    def progress_at(self, done: int, total: int, what: str) -> None:
        if self.progress is not None and (done % PROGRESS_EVERY == 0 or done == total):
            self.progress(done, total, what)

    def states(
        self, doc: SessionDoc, ids: list[str], local: SessionLog | None
    ) -> Iterator[tuple[str, SnapshotRecord, bytes, bytes | None]]:
        """(id, record, state bytes, delta payload or None) of each snapshot in ``ids``, each state checked."""
        bases = frozenset(doc.bases)
        self._new_pass()
        for sid in ids:
            record = self.full_record(sid)
            data = self.state_bytes(sid, record, bases, local)
            delta = self.delta_payload(record.delta) if record.delta is not None else self._patch_from_parent(record)
            yield sid, record, data, delta
        self._new_pass()
