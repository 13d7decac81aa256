"""Fuzzing.

(a) A hypothesis state machine drives random sequences of commit, rollback,
    retention changes (``set_max_snapshots``, ``forget``), tags, reopen (a new
    SnapshotStore on the same storage), gc, reclaim, verify and archive
    export/import over two sessions, against a model that keeps a full copy of
    every state. After every step: each session's listing equals the model's
    retained ids, the head and the tags match, and every retained snapshot
    rebuilds to the model's state type-exactly (canonical bytes).
(b) The segment and entry parsers (``backends._framing.scan``,
    ``entries.decode_entry``, ``entries.SegmentReader``) on random bytes and on
    mutations of real segments: they raise nothing but ``CorruptObjectError``,
    never return bytes that were not stored, never hang, and never allocate
    more than an entry declares. Archive parsing is fuzzed the same way.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
import xxhash
import zstandard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from conftest import NeverReclaims
from conftest_reliability import canonical, count
from reliability_writer import state_for
from snapstore import SnapshotError, SnapshotNotFound, SnapshotStore, keyframes
from snapstore.backends import MemoryBackend, _framing
from snapstore.entries import (
    DELTA_FRAME,
    KEY_INDEPENDENT,
    KEY_PATCHED,
    CommitEntry,
    SegmentReader,
    decode_entry,
)
from snapstore.errors import CorruptObjectError

SESSIONS = ("f", "g")

# -- strategies ------------------------------------------------------------------------------

TEXT = st.one_of(
    st.sampled_from(["", "/", "~", "~1", "a/b", "é", "e\u0301", "\x00", "\U0001f600", "0", "-"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63), 2**64 - 1, 0.0, -0.0, 1.0, 0.1, 1e16, 5e-324]),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
STATES = st.one_of(st.dictionaries(TEXT, VALUES, max_size=5), st.dictionaries(TEXT, VALUES, max_size=5), VALUES)
TAG_NAMES = st.sampled_from(["keep", "boss-fight", "é"])


def _copy(value: Any) -> Any:
    return orjson.loads(canonical(value))


# -- (a) the state machine ---------------------------------------------------------------------


class StoreMachine(RuleBasedStateMachine):
    """Two sessions on one store, against full copies of every state.

    The model of retention: a session keeps its last ``limit`` commits in creation order
    (after the ones ``forget`` evicted) and every tagged one; a tagged snapshot ``forget``
    passed over goes when it is untagged. Eviction is final: raising the limit again
    brings nothing back.
    """

    backend_kind = "memory"
    policy: ClassVar[dict[str, Any]] = {"max_chain": 3}

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="snapstore-fuzz-")
        self.memory = MemoryBackend()
        self.states: dict[str, bytes] = {}  # snapshot id -> canonical bytes of its state
        self.retained: dict[str, list[str]] = {name: [] for name in SESSIONS}
        self.tags: dict[str, dict[str, str]] = {name: {} for name in SESSIONS}
        self.head: dict[str, str | None] = dict.fromkeys(SESSIONS)
        self.head_state: dict[str, Any] = dict.fromkeys(SESSIONS)
        self.limit: dict[str, int] = dict.fromkeys(SESSIONS, 6)
        self.forgotten: dict[str, set[str]] = {name: set() for name in SESSIONS}  # behind forget's line
        self.store = self._open()

    def _open(self) -> SnapshotStore:
        if self.backend_kind == "memory":
            return SnapshotStore(self.memory, **self.policy)
        return SnapshotStore.open(Path(self.tmp) / "store", **self.policy)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize()
    def make_sessions(self) -> None:
        for name in SESSIONS:
            self.store.session(name, max_snapshots=self.limit[name])

    def _evict(self, name: str) -> None:
        """The model's retention: the last ``limit`` commits not behind the eviction line, plus tagged ones.

        The line is the newest snapshot evicted so far (by the limit or by forget), tagged or not: a
        snapshot older than it stays only while tagged, and goes when untagged, whatever the limit is
        then.
        """
        tagged = set(self.tags[name].values())
        before = self.retained[name]
        recent = [sid for sid in before if sid not in self.forgotten[name]][-self.limit[name] :]
        self.retained[name] = [sid for sid in before if sid in tagged or sid in recent]
        if recent:  # everything behind the window is evicted, a tagged snapshot kept by its tag alone
            self.forgotten[name] |= set(before[: before.index(recent[0])])

    def _commit(self, name: str, state: Any) -> None:
        snap = self.store.session(name).commit(state, label=f"l{len(self.states)}", turn=len(self.states))
        assert snap.id not in self.states
        self.states[snap.id] = canonical(state)
        self.retained[name].append(snap.id)
        self._evict(name)
        self.head[name], self.head_state[name] = snap.id, _copy(state)
        count("fuzz: state machine steps")

    @rule(name=st.sampled_from(SESSIONS), state=STATES)
    def commit(self, name: str, state: Any) -> None:
        self._commit(name, state)

    @rule(name=st.sampled_from(SESSIONS), data=st.data())
    def commit_small_change(self, name: str, data: st.DataObject) -> None:
        """Most commits change a little of the head (so deltas, not keyframes, are written)."""
        base = self.head_state[name]
        state = dict(base) if type(base) is dict else {}
        how = data.draw(st.sampled_from(["set", "delete", "append", "same"]))
        if how == "set":
            state[data.draw(TEXT)] = data.draw(VALUES)
        elif how == "delete" and state:
            del state[data.draw(st.sampled_from(sorted(state)))]
        elif how == "append":
            state["log"] = [*(state.get("log") if type(state.get("log")) is list else []), data.draw(SCALARS)]
        self._commit(name, state)

    @precondition(lambda self: any(self.retained.values()))
    @rule(data=st.data())
    def rollback(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from([n for n in SESSIONS if self.retained[n]]))
        sid = data.draw(st.sampled_from(self.retained[name]))
        use_prefix = data.draw(st.booleans())
        state = self.store.session(name).rollback(sid[:12] if use_prefix else sid)
        assert canonical(state) == self.states[sid]
        self.head[name], self.head_state[name] = sid, _copy(state)
        count("fuzz: state machine steps")

    @rule(name=st.sampled_from(SESSIONS), limit=st.integers(min_value=1, max_value=8))
    def set_max_snapshots(self, name: str, limit: int) -> None:
        before = list(self.retained[name])
        self.limit[name] = limit
        self._evict(name)
        evicted = self.store.session(name).set_max_snapshots(limit)
        assert evicted == [sid for sid in before if sid not in self.retained[name]]
        count("fuzz: state machine steps")

    @rule(name=st.sampled_from(SESSIONS), keep=st.integers(min_value=1, max_value=4))
    def forget(self, name: str, keep: int) -> None:
        tagged = set(self.tags[name].values())
        retained = self.retained[name]
        behind = retained[: max(len(retained) - keep, 0)]
        gone = [sid for sid in behind if sid not in tagged]
        assert self.store.session(name).forget(keep) == gone
        self.retained[name] = [sid for sid in retained if sid not in gone]
        if behind:  # a tagged snapshot behind the line stays while tagged, and goes when untagged
            self.forgotten[name] |= set(retained[: retained.index(behind[-1]) + 1])
        count("fuzz: state machine steps")

    @precondition(lambda self: any(self.retained.values()))
    @rule(data=st.data(), tag=TAG_NAMES)
    def tag(self, data: st.DataObject, tag: str) -> None:
        name = data.draw(st.sampled_from([n for n in SESSIONS if self.retained[n]]))
        sid = data.draw(st.sampled_from(self.retained[name]))
        assert self.store.session(name).tag(sid, tag) == sid
        self.tags[name][tag] = sid
        self._evict(name)  # a tag moved off a snapshot no longer keeps it
        count("fuzz: state machine steps")

    @precondition(lambda self: any(self.tags.values()))
    @rule(data=st.data())
    def untag(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from([n for n in SESSIONS if self.tags[n]]))
        tag = data.draw(st.sampled_from(sorted(self.tags[name])))
        assert self.store.session(name).untag(tag) == self.tags[name].pop(tag)
        self._evict(name)
        count("fuzz: state machine steps")

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self._open()
        count("fuzz: state machine steps")

    @rule()
    def gc(self) -> None:
        self.store.gc(grace_seconds=0)
        count("fuzz: state machine steps")

    @rule(name=st.sampled_from(SESSIONS))
    def reclaim(self, name: str) -> None:
        self.store.session(name).clear_old_snapshots()
        count("fuzz: state machine steps")

    @rule()
    def verify(self) -> None:
        report = self.store.verify(read_data=True)
        assert report.ok, report.problems
        count("fuzz: state machine steps")

    @rule(name=st.sampled_from(SESSIONS))
    def export_and_import(self, name: str) -> None:
        path = Path(self.tmp) / f"{name}.snaparchive"
        path.unlink(missing_ok=True)
        self.store.export(str(path), sessions=[name])
        fresh = SnapshotStore(MemoryBackend())
        fresh.import_archive(str(path))
        sess = fresh.session(name)
        assert sess.snapshot_ids() == self.retained[name]
        for sid in self.retained[name]:
            assert canonical(sess.state(sid)) == self.states[sid]
        assert fresh.verify(read_data=True).ok
        count("fuzz: state machine steps")

    @invariant()
    def matches_the_model(self) -> None:
        fresh = SnapshotStore(self.store.backend, **self.policy)  # no caches: read from the storage
        for name in SESSIONS:
            for store in (self.store, fresh):
                sess = store.session(name)
                assert sess.snapshot_ids() == self.retained[name]
                head = sess.head
                assert (head.id if head else None) == self.head[name]
                assert sess.tags == self.tags[name]
            sess = fresh.session(name)
            for sid in self.retained[name]:
                assert canonical(sess.state(sid)) == self.states[sid]


class DirectoryStoreMachine(StoreMachine):
    backend_kind = "directory"


class LongChainMachine(StoreMachine):
    """Long delta chains and several runs per segment: reclaim squashes instead of dropping."""

    policy: ClassVar[dict[str, Any]] = {"max_chain": 10_000, "max_runs": 4}


_MACHINE_SETTINGS = {
    "deadline": None,
    "stateful_step_count": 30,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
TestMemoryStoreMachine = StoreMachine.TestCase
TestMemoryStoreMachine.settings = settings(max_examples=40, **_MACHINE_SETTINGS)
TestDirectoryStoreMachine = DirectoryStoreMachine.TestCase
TestDirectoryStoreMachine.settings = settings(max_examples=12, **_MACHINE_SETTINGS)
TestLongChainMachine = LongChainMachine.TestCase
TestLongChainMachine.settings = settings(max_examples=15, **{**_MACHINE_SETTINGS, "stateful_step_count": 60})


def test_raising_the_limit_brings_back_nothing() -> None:
    sess = SnapshotStore.memory().session("s", max_snapshots=5)
    ids = [sess.commit({"turn": t}).id for t in range(4)]
    assert sess.set_max_snapshots(1) == ids[:3]
    sess.set_max_snapshots(8)
    assert sess.snapshot_ids() == ids[3:]


def _seen(sess: Any) -> tuple[list[str], dict[str, str], str | None]:
    """A session's listing, tags and head by label (the two stores' ids differ: their times do)."""
    listed = sess.snapshots()
    labels = {snap.id: snap.label for snap in listed}
    head = sess.head
    return [snap.label for snap in listed], {t: labels[sid] for t, sid in sess.tags.items()}, head and head.label


_COMMITS = st.tuples(st.just("commit"), st.integers(0, 3))
RETENTION_STEPS = st.lists(
    st.one_of(  # commits a third of the steps: retention needs history to act on
        _COMMITS,
        _COMMITS,
        _COMMITS,
        st.tuples(st.just("tag"), st.integers(0, 3), st.sampled_from(["a", "b"])),
        st.tuples(st.just("untag"), st.sampled_from(["a", "b"])),
        st.tuples(st.just("limit"), st.integers(1, 5)),
        st.tuples(st.just("forget"), st.integers(1, 3)),
        st.tuples(st.just("rollback"), st.integers(0, 50)),
        st.tuples(st.just("reclaim")),
    ),
    min_size=5,
    max_size=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=RETENTION_STEPS, runs=st.sampled_from([1, 3]))
# the first difference this test found: a tagged snapshot the limit evicted, the segment of the newest
# untagged evicted one dropped, then a raised limit took the tagged one into the window
@example(
    steps=[("commit", 2), ("limit", 1), ("tag", 0, "a"), ("commit", 0), ("commit", 2), ("limit", 2), ("untag", "a")],
    runs=1,
)
def test_reclaim_never_changes_what_a_session_lists(steps: list[tuple[Any, ...]], runs: int) -> None:
    """Random commits, tags, limits, forgets and rollbacks on two stores, one reclaiming after
    every step (a segment for every run, so whole segments go, or three runs to a segment, so
    segments are squashed) and one that never reclaims:
    after every step both list the same snapshots, with the same head and tags. What reclaim
    drops must be what retention had evicted, never what a later raise, untag or forget decides."""
    small = keyframes.SMALL_SEGMENT_BYTES
    keyframes.SMALL_SEGMENT_BYTES = 0  # every keyframe starts a segment
    try:
        stores = [SnapshotStore(MemoryBackend(), max_chain=2, max_runs=runs) for _ in range(2)]
        stores[1].reclaimer = NeverReclaims(stores[1].reclaimer.level)  # the reference
        sessions = [store.session("s", max_snapshots=4) for store in stores]
        n = 0
        for step in steps:
            kind = step[0]
            outcomes = []
            labels = [f"c{n + i}" for i in range(step[1] + 1)] if kind == "commit" else []
            for sess in sessions:
                listed = sess.snapshot_ids()
                try:
                    if kind == "commit":
                        for label in labels:
                            sess.commit({"n": int(label[1:]) // 2, "pad": "x" * 40}, label=label)
                    elif kind in ("tag", "rollback") and listed:
                        target = listed[-1 - step[1] % len(listed)]  # the newest most often
                        sess.tag(target, step[2]) if kind == "tag" else sess.rollback(target)
                    elif kind == "untag":
                        sess.untag(step[1])
                    elif kind == "limit":
                        sess.set_max_snapshots(step[1])
                    elif kind == "forget":
                        sess.forget(step[1])
                    elif kind == "reclaim":
                        sess.clear_old_snapshots()
                    outcomes.append(None)
                except SnapshotNotFound as exc:
                    outcomes.append(type(exc).__name__)
            n += len(labels)
            assert outcomes[0] == outcomes[1], step
            sessions[0].clear_old_snapshots()
            fresh = SnapshotStore(stores[0].backend).session("s")
            assert _seen(sessions[0]) == _seen(sessions[1]) == _seen(fresh), step
        for snap in sessions[0].snapshots():
            state = sessions[0].state(snap.id)
            assert state == {"n": int(snap.label[1:]) // 2, "pad": "x" * 40}
    finally:
        keyframes.SMALL_SEGMENT_BYTES = small


# -- (b) parsing -------------------------------------------------------------------------------


def _real_segment() -> tuple[bytes, list[bytes]]:
    """A directory segment file's bytes (as framed) and its entries: keyframes, deltas, settings."""
    store = SnapshotStore(MemoryBackend(), max_chain=3)
    sess = store.session("s", max_snapshots=100)
    for t in range(7):
        sess.commit(state_for(t), turn=t)
    first = sess.snapshot_ids()[0]
    sess.tag(first, "start")
    sess.rollback(first)
    sess.commit(state_for(99), turn=99)
    entries = store.backend.read_segment("s", 1).entries
    return _framing.SEGMENT_HEADER + _framing.frames(entries), entries


SEGMENT, ENTRIES = _real_segment()


def _scan_checked(data: bytes) -> _framing.Scan:
    """Scan a segment body; what it returns must be consistent with what it was given."""
    found = _framing.scan(data, 0)
    assert 0 <= found.end <= len(data)
    assert sum(len(e) + _framing.FRAME_SIZE for e in found.entries) == found.end
    assert found.damaged_at is None or (found.damaged_at == found.end and not found.torn)
    return found


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_scan_on_random_bytes(data: bytes) -> None:
    count("fuzz: parser inputs")
    _scan_checked(data)


def test_scan_on_every_single_byte_mutation_and_truncation() -> None:
    """A changed byte stops the scan at its frame (everything before it is returned as stored);
    a truncation returns a prefix of the entries and is torn (or exact at a frame boundary)."""
    body = SEGMENT[_framing.HEADER_SIZE :]
    tried = 0
    for offset in range(len(body)):
        for value in {0x00, 0xFF, body[offset] ^ 0x01, body[offset] ^ 0x80}:
            if value == body[offset]:
                continue
            damaged = bytearray(body)
            damaged[offset] = value
            found = _scan_checked(bytes(damaged))
            assert found.entries == ENTRIES[: len(found.entries)], f"byte {offset}: an entry that was not stored"
            assert len(found.entries) < len(ENTRIES)
            tried += 1
    for length in range(len(body)):
        found = _scan_checked(body[:length])
        assert found.entries == ENTRIES[: len(found.entries)] and found.damaged_at is None
        assert found.torn or found.end == length
        tried += 1
    count("fuzz: parser inputs", tried)



def test_the_first_frame_alone_reads_as_a_whole_scan_reads_it() -> None:
    """Opening a session reads a segment's first entry from its first frame alone: under every
    changed byte and every truncation, that gives the entry a scan of everything gives first, or
    none when the scan has none."""
    body = SEGMENT[_framing.HEADER_SIZE :]
    inputs = [body[:length] for length in range(len(body) + 1)]
    for offset in range(min(len(body), 4 * _framing.FRAME_SIZE + len(ENTRIES[0]))):
        for value in (body[offset] ^ 0x01, body[offset] ^ 0x80):
            damaged = bytearray(body)
            damaged[offset] = value
            inputs.append(bytes(damaged))
    for data in inputs:
        whole = _framing.scan(data, 0).entries
        alone = _framing.scan(_framing.first_frame(data), 0).entries
        assert alone == whole[:1]
    assert bytes(_framing.first_frame(body)) == body[: _framing.FRAME_SIZE + len(ENTRIES[0])]
    count("fuzz: parser inputs", len(inputs))

@pytest.mark.timeout(60)
def test_scan_of_frames_claiming_huge_lengths_allocates_nothing() -> None:
    """Valid frame headers claiming up to 4 GiB: torn (at the end) or damage, never an allocation."""
    tracemalloc.start()
    try:
        for length in (1 << 20, _framing.MAX_ENTRY, _framing.MAX_ENTRY + 1, (1 << 32) - 1):
            head = _framing.FRAME.pack(length, 0, 0)[:8]
            frame_head = head + xxhash.xxh32_intdigest(head).to_bytes(4, "little")
            for data in (frame_head, frame_head + b"x" * 100, frame_head + b"x" * 100 + _framing.frame(b"ok")):
                tracemalloc.reset_peak()
                found = _scan_checked(data)
                assert tracemalloc.get_traced_memory()[1] < 1 << 20
                assert found.entries == []
                count("fuzz: parser inputs")
    finally:
        tracemalloc.stop()


def _decode_outcome(data: bytes) -> Any:
    try:
        return decode_entry(data, "s", "fuzz")
    except CorruptObjectError:
        return None


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.sampled_from([b"\x01", b"\x02"]).flatmap(
    lambda kind: st.binary(max_size=300).map(lambda rest: kind + rest))))
def test_decode_entry_on_random_bytes(data: bytes) -> None:
    count("fuzz: parser inputs")
    _decode_outcome(data)


def test_decode_entry_on_every_byte_mutation_and_truncation() -> None:
    tried = 0
    for entry in ENTRIES:
        for offset in range(len(entry)):
            for value in {0x00, 0xFF, entry[offset] ^ 0x01, entry[offset] ^ 0x80}:
                damaged = bytearray(entry)
                damaged[offset] = value
                _decode_outcome(bytes(damaged))
                tried += 1
        for length in range(len(entry)):
            _decode_outcome(entry[:length])
            tried += 1
    count("fuzz: parser inputs", tried)


def _read_segment(entries: list[bytes]) -> list[bytes] | None:
    """Decode and decompress every entry in order, as a reader does; None when refused."""
    reader = SegmentReader("fuzz")
    out = []
    try:
        for data in entries:
            entry = decode_entry(data, "s", "fuzz")
            if isinstance(entry, CommitEntry):
                out.append(reader.payload(entry))
    except CorruptObjectError:
        return None
    return out


def test_segment_reader_on_every_payload_byte_mutation() -> None:
    """A changed payload byte is refused, or decodes to bytes of the length the entry declares
    (the state hash check above the reader refuses what decodes differently)."""
    original = _read_segment(ENTRIES)
    assert original is not None
    tried = 0
    for index, entry in enumerate(ENTRIES):
        decoded = decode_entry(entry, "s", "fuzz")
        if not isinstance(decoded, CommitEntry):
            continue
        start = len(entry) - len(decoded.payload)
        for offset in range(start, len(entry)):
            damaged = bytearray(entry)
            damaged[offset] ^= 0x41
            result = _read_segment([*ENTRIES[:index], bytes(damaged), *ENTRIES[index + 1 :]])
            if result is not None:
                assert [len(p) for p in result] == [len(p) for p in original]
            tried += 1
    count("fuzz: parser inputs", tried)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(range(len(ENTRIES))), st.data())
def test_segment_reader_on_random_edits(index: int, data: st.DataObject) -> None:
    damaged = bytearray(ENTRIES[index])
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        where = data.draw(st.integers(min_value=0, max_value=len(damaged)))
        how = data.draw(st.sampled_from(["set", "insert", "delete"]))
        if how == "insert" or where == len(damaged):
            damaged[where:where] = data.draw(st.binary(min_size=1, max_size=4))
        elif how == "delete":
            del damaged[where : where + data.draw(st.integers(min_value=1, max_value=8))]
        else:
            damaged[where] = data.draw(st.integers(min_value=0, max_value=255))
    count("fuzz: parser inputs")
    _read_segment([*ENTRIES[:index], bytes(damaged), *ENTRIES[index + 1 :]])


def _bomb_entry(mode: int, declared: int) -> CommitEntry:
    """A commit entry declaring ``declared`` raw bytes whose 2 kB payload decompresses to 64 MiB."""
    template = next(decode_entry(e, "s", "fuzz") for e in ENTRIES if e[0] == 0x02)
    assert isinstance(template, CommitEntry)
    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(64 << 20))
    return CommitEntry(template.id, template.record, mode, declared, bomb)


@pytest.mark.parametrize("mode", [KEY_INDEPENDENT, DELTA_FRAME], ids=["keyframe", "delta"])
def test_a_decompression_bomb_allocates_no_more_than_its_entry_declares(mode: int) -> None:
    reader = SegmentReader("fuzz")
    if mode == DELTA_FRAME:
        reader.add_raw("0" * 32, b"x" * 64, True)
    entry = _bomb_entry(mode, 10)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptObjectError):
            reader.payload(entry)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    count("fuzz: parser inputs")
    assert peak < 4 << 20, f"refusing a 10-byte entry allocated {peak >> 20} MiB"


def test_a_patched_keyframe_at_the_start_of_its_segment_is_refused() -> None:
    entry = _bomb_entry(KEY_PATCHED, 10)
    with pytest.raises(CorruptObjectError, match="a patched keyframe with no run of 8 bytes or more before it"):
        SegmentReader("fuzz").payload(entry)
    count("fuzz: parser inputs")


# -- archives ----------------------------------------------------------------------------------


def test_archive_when_a_delta_is_also_a_state(tmp_path: Path) -> None:
    """The state [] and the empty patch [] of an unchanged commit have the same bytes; an archive
    holding both imports."""
    store = SnapshotStore(MemoryBackend())
    sess = store.session("f")
    ids = [sess.commit([]).id, sess.commit([]).id]
    path = tmp_path / "f.snaparchive"
    store.export(str(path), sessions=["f"])
    fresh = SnapshotStore(MemoryBackend())
    fresh.import_archive(str(path))
    assert fresh.session("f").snapshot_ids() == ids
    assert all(fresh.session("f").state(sid) == [] for sid in ids)


def test_archive_parsing_fuzz() -> None:
    store = SnapshotStore(MemoryBackend())
    sess = store.session("s")
    for t in range(4):
        sess.commit(state_for(t), turn=t)
    workdir = Path(tempfile.mkdtemp(prefix="snapstore-archive-fuzz-"))
    try:
        good = workdir / "good.snaparchive"
        store.export(str(good), sessions=["s"])
        data = good.read_bytes()
        damaged_path = workdir / "damaged.snaparchive"
        step = max(1, len(data) // 400)
        variants = [data[:n] for n in range(0, len(data), step)]
        for offset in range(0, len(data), step):
            damaged = bytearray(data)
            damaged[offset] ^= 0xFF
            variants.append(bytes(damaged))
        for variant in variants:
            damaged_path.write_bytes(variant)
            target = SnapshotStore(MemoryBackend())
            try:
                target.import_archive(str(damaged_path))
            except SnapshotError:
                continue
            # accepted: whatever it imported must be exactly what was exported
            for name in target.sessions():
                imported = target.session(name)
                for sid in imported.snapshot_ids():
                    assert canonical(imported.state(sid)) == canonical(sess.state(sid))
            assert target.verify(read_data=True).ok
        count("fuzz: parser inputs", len(variants))
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
