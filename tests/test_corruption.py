"""Corruption (issue #7): damaged bytes are detected, named, listed by verify, and contained.

Every case damages one stored thing in a store holding three sessions:

* ``s``: ten snapshots of a growing state, keyframes at 0, 4 and 8 (max_chain 3);
* ``tiny``: three tiny states, so that its objects are stored raw (no zstd);
* ``other``: three snapshots that share nothing damaged.

and checks, on a fresh handle (no caches): reading anything that depends on
the damage raises ``CorruptObjectError`` (``SnapshotNotFound`` when the object
is missing, as documented) whose ``details["object"]`` names the damaged
object; everything else still rebuilds to exactly what was committed;
``verify()`` lists the damage and exactly the snapshots it breaks; and ``gc``
on a damaged store deletes nothing that was live before the damage.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest_reliability import canonical, copy_store_dir, count, write_ref_file
from reliability_writer import child_env, state_for
from snapstore import CorruptObjectError, FormatVersionError, SnapshotError, SnapshotNotFound, SnapshotStore
from snapstore import codec as codec_module
from snapstore.backends import Backend, DirectoryBackend, MemoryBackend
from snapstore.codec import HEADER_SIZE, Kind
from snapstore.testing import raw_corrupt


@dataclass
class World:
    """A populated store and what was committed to it."""

    backend: Backend
    ids: dict[str, list[str]]
    states: dict[str, Any] = field(default_factory=dict)  # snapshot id -> committed state

    def store(self) -> SnapshotStore:
        return SnapshotStore(self.backend)  # a fresh handle: every read goes to the medium

    def record(self, sid: str) -> Any:
        return self.store().objects.record(sid)

    def session_doc_key(self, name: str) -> str:
        key = self.backend.read_ref(SnapshotStore.session_ref(name))
        assert key is not None
        return key


def _populate(backend: Backend) -> World:
    store = SnapshotStore(backend, max_chain=3, max_chain_factor=1e9)
    world = World(backend, {})
    for name, make in (
        ("s", lambda t: state_for(t)),
        ("tiny", lambda t: {"hp": t}),
        ("other", lambda t: state_for(t, "other")),
    ):
        sess = store.session(name, max_snapshots=100)
        turns = 10 if name == "s" else 3
        world.ids[name] = []
        for t in range(turns):
            state = make(t)
            sid = sess.commit(state, turn=t).id
            world.ids[name].append(sid)
            world.states[sid] = state
    kinds = [world.record(sid).is_keyframe for sid in world.ids["s"]]
    assert kinds == [True, False, False, False] * 2 + [True, False]
    return world


@pytest.fixture(scope="module")
def goldens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, World]:
    root = tmp_path_factory.mktemp("golden") / "store"
    return {"directory": _populate(DirectoryBackend(root)), "memory": _populate(MemoryBackend())}


@pytest.fixture
def make_world(goldens: dict[str, World], tmp_path: Path) -> Callable[[str], World]:
    """A fresh copy of the populated store of a kind (copy_store_dir says why copies)."""

    def make(kind: str) -> World:
        golden = goldens[kind]
        backend: Backend
        if isinstance(golden.backend, DirectoryBackend):
            backend = DirectoryBackend(copy_store_dir(golden.backend.root, tmp_path / "store"), create=False)
        else:
            assert isinstance(golden.backend, MemoryBackend)
            backend = MemoryBackend()
            backend._objects, backend._refs = dict(golden.backend._objects), dict(golden.backend._refs)
        return World(backend, {k: list(v) for k, v in golden.ids.items()}, dict(golden.states))

    return make


# -- victims: (what to damage, which snapshots of which session break) -------------


def _s(world: World, indexes: range) -> tuple[str, list[str]]:
    return "s", [world.ids["s"][i] for i in indexes]


VICTIMS: dict[str, Callable[[World], tuple[str, str, list[str]]]] = {
    # a keyframe's state object: the snapshots whose chains start there break
    "state": lambda w: (w.record(w.ids["s"][4]).state, *_s(w, range(4, 8))),
    # a delta in the middle of a chain: it and the deltas after it break
    "delta": lambda w: (w.record(w.ids["s"][5]).delta, *_s(w, range(5, 8))),
    # a record in the middle of a chain: it and the snapshot chained through it break
    "record": lambda w: (w.ids["s"][6], *_s(w, range(6, 8))),
    # a raw (uncompressed) state object
    "raw-state": lambda w: (w.record(w.ids["tiny"][0]).state, "tiny", list(w.ids["tiny"])),
    # a session document: the whole session is unreadable, the others are not
    "session": lambda w: (w.session_doc_key("s"), "s", list(w.ids["s"])),
}


def _other_object_of_kind(world: World, victim: str) -> bytes:
    """The stored bytes of another object of the same kind (a valid object under the wrong key)."""
    kind, _, _ = codec_module.read_header(victim, world.backend.get(victim))
    for key in sorted(world.backend.iter_keys()):
        if key != victim:
            blob = world.backend.get(key)
            try:
                if codec_module.read_header(key, blob)[0] == kind:
                    return blob
            except SnapshotError:
                continue  # damaged earlier in the same test
    raise AssertionError("no other object of that kind")


def _flip(blob: bytes, offset: int, mask: int = 0x10) -> bytes:
    damaged = bytearray(blob)
    damaged[offset] ^= mask
    return bytes(damaged)


DAMAGES: dict[str, Callable[[World, str, bytes], bytes | None]] = {
    "bit-flip-in-body": lambda w, key, blob: _flip(blob, HEADER_SIZE + (len(blob) - HEADER_SIZE) // 2),
    "bit-flip-in-last-byte": lambda w, key, blob: _flip(blob, len(blob) - 1, 0x01),
    "bit-flip-in-magic": lambda w, key, blob: _flip(blob, 1),
    "bit-flip-in-kind": lambda w, key, blob: _flip(blob, 5, 0x04),
    "bit-flip-in-size": lambda w, key, blob: _flip(blob, 8, 0x02),
    "truncated-to-half": lambda w, key, blob: blob[: len(blob) // 2],
    "truncated-by-one-byte": lambda w, key, blob: blob[:-1],
    "header-only": lambda w, key, blob: blob[:HEADER_SIZE],
    "zero-length": lambda w, key, blob: b"",
    "another-objects-bytes": lambda w, key, blob: _other_object_of_kind(w, key),
    "missing": lambda w, key, blob: None,
}


def damage(world: World, key: str, how: str) -> None:
    blob = world.backend.get(key)
    damaged = DAMAGES[how](world, key, blob)
    if damaged is None:
        world.backend.delete(key)
    else:
        assert damaged != blob
        raw_corrupt(world.backend, key, damaged)
    count("corruption: corrupted cases")


def expected_error(how: str) -> type[SnapshotError]:
    return SnapshotNotFound if how == "missing" else CorruptObjectError


def _check_session_readable(world: World, store: SnapshotStore, name: str, broken: set[str]) -> None:
    sess = store.session(name)
    for sid in world.ids[name]:
        if sid not in broken:
            assert canonical(sess.state(sid)) == canonical(world.states[sid]), f"{name}: {sid} changed"


CASES = [
    (victim, how)
    for victim in VICTIMS
    for how in DAMAGES
    if not (victim == "session" and how == "missing")  # a ref to a missing document: its own test below
]


@pytest.mark.parametrize("kind", ["directory", "memory"])
@pytest.mark.parametrize(("victim", "how"), CASES, ids=[f"{v}-{h}" for v, h in CASES])
def test_damage_is_named_listed_and_contained(
    make_world: Callable[[str], World], kind: str, victim: str, how: str
) -> None:
    world = make_world(kind)
    key, session, broken = VICTIMS[victim](world)
    damage(world, key, how)
    store = world.store()
    error = expected_error(how)

    if victim == "session":
        with pytest.raises(error) as err:
            store.session(session)
        assert err.value.details.get("object") == key, err.value
    else:
        sess = store.session(session)
        for sid in broken:
            with pytest.raises(error) as err:
                sess.state(sid)
            assert err.value.details.get("object") == key, f"{sid}: {err.value}"
            assert key in str(err.value)
        if victim == "record":
            with pytest.raises(error):
                sess.snapshot(key)
    # nothing else is affected
    for name in world.ids:
        if name != session or victim != "session":
            _check_session_readable(world, store, name, set(broken) if name == session else set())

    report = store.verify(read_data=True)
    assert not report.ok
    assert key in {p.object for p in report.problems}, report.problems
    if victim != "session":
        assert {p.snapshot for p in report.problems if p.snapshot} == set(broken)
    else:
        assert {p.session for p in report.problems} - {None} == {session}


def _live_objects(world: World) -> set[str]:
    store = world.store()
    with store.backend.lock("gc"):
        return store._mark()


GC_CASES = [
    pytest.param(victim, how, id=f"{victim}-{how}")
    for victim in ("state", "delta", "record", "session")
    for how in ("bit-flip-in-body", "zero-length", "missing")
    if not (victim == "session" and how == "missing")
]


@pytest.mark.parametrize(("victim", "how"), GC_CASES)
def test_gc_on_a_damaged_store_deletes_nothing_live(make_world: Callable[[str], World], victim: str, how: str) -> None:
    """gc either refuses (a SnapshotError) or deletes only what was garbage before the damage."""
    world = make_world("memory")
    live = _live_objects(world)
    key, _session, _broken = VICTIMS[victim](world)
    damage(world, key, how)
    with contextlib.suppress(SnapshotError):  # refusing is safe
        world.store().gc()
    remaining = set(world.backend.iter_keys())
    assert live - {key} <= remaining, f"gc deleted live objects: {sorted(live - {key} - remaining)}"


@pytest.mark.parametrize("kind", ["directory", "memory"])
def test_verify_lists_every_damage_at_once(make_world: Callable[[str], World], kind: str) -> None:
    world = make_world(kind)
    victims = {name: VICTIMS[name](world) for name in ("state", "delta", "record", "raw-state")}
    victims["other-doc"] = (world.session_doc_key("other"), "other", list(world.ids["other"]))
    hows = ["bit-flip-in-body", "missing", "zero-length", "truncated-to-half", "another-objects-bytes"]
    for (key, _session, _broken), how in zip(victims.values(), hows, strict=True):
        damage(world, key, how)
    report = world.store().verify(read_data=True)
    named = {p.object for p in report.problems}
    assert {key for key, _, _ in victims.values()} <= named
    broken = {sid for name in ("state", "delta", "record", "raw-state") for sid in victims[name][2]}
    assert {p.snapshot for p in report.problems if p.snapshot} == broken
    assert {p.session for p in report.problems if p.session} >= {"s", "tiny", "other"}
    # the snapshots of s before the damage still rebuild
    sess = world.store().session("s")
    for sid in world.ids["s"][:4] + world.ids["s"][8:]:
        assert canonical(sess.state(sid)) == canonical(world.states[sid])


@pytest.mark.parametrize("kind", ["directory", "memory"])
def test_object_moved_to_the_wrong_hash(make_world: Callable[[str], World], kind: str) -> None:
    """A delta file renamed onto another delta's name: one is missing, the other is wrong."""
    world = make_world(kind)
    source = world.record(world.ids["s"][2]).delta  # snapshots 2, 3 need it
    target = world.record(world.ids["s"][9]).delta  # snapshot 9 needs it
    assert source and target
    if isinstance(world.backend, DirectoryBackend):
        os.replace(world.backend._object_path(source), world.backend._object_path(target))
    else:
        raw_corrupt(world.backend, target, world.backend.get(source))
        world.backend.delete(source)
    count("corruption: corrupted cases")
    sess = world.store().session("s")
    for sid, key, error in (
        (world.ids["s"][2], source, SnapshotNotFound),
        (world.ids["s"][3], source, SnapshotNotFound),
        (world.ids["s"][9], target, CorruptObjectError),
    ):
        with pytest.raises(error) as err:
            sess.state(sid)
        assert err.value.details["object"] == key
    for i in (0, 1, 4, 5, 6, 7, 8):
        sid = world.ids["s"][i]
        assert canonical(sess.state(sid)) == canonical(world.states[sid])
    report = world.store().verify(read_data=True)
    assert {source, target} <= {p.object for p in report.problems}
    assert {p.snapshot for p in report.problems if p.snapshot} == {world.ids["s"][i] for i in (2, 3, 9)}


@pytest.mark.parametrize("kind", ["directory", "memory"])
def test_bytes_appended_to_an_object(make_world: Callable[[str], World], kind: str) -> None:
    """Refused after a raw body (size mismatch). After a zstd frame, decoding stops at the frame's end
    and the payload still matches its hash: the state reads back exact, and verify stays quiet.
    Harmless (nothing wrong is ever returned), noted in docs/design.md ("What survives what")."""
    world = make_world(kind)
    raw_key = world.record(world.ids["tiny"][0]).state
    zstd_key = world.record(world.ids["s"][8]).state
    for key in (raw_key, zstd_key):
        raw_corrupt(world.backend, key, world.backend.get(key) + b"\x00junk")
        count("corruption: corrupted cases")
    store = world.store()
    with pytest.raises(CorruptObjectError) as err:
        store.session("tiny").state(world.ids["tiny"][0])
    assert err.value.details["object"] == raw_key
    sid = world.ids["s"][8]
    assert canonical(store.session("s").state(sid)) == canonical(world.states[sid])
    assert {p.object for p in store.verify().problems} == {raw_key}


def test_every_single_bit_flip_is_detected_or_harmless(make_world: Callable[[str], World]) -> None:
    """Every bit of one object of each kind, flipped in turn, read through the store.

    The outcome is always a SnapshotError naming the object or, when the flip changes
    nothing the reader relies on (the reserved byte, the kind byte turned into another
    valid kind, a bit zstd does not use), the exact committed state; never a wrong
    state, never another exception.
    """
    world = make_world("memory")
    s = world.ids["s"]
    targets = {
        "state": (world.record(s[8]).state, s[8]),
        "delta": (world.record(s[9]).delta, s[9]),
        "record": (s[9], s[9]),
        "raw-state": (world.record(world.ids["tiny"][0]).state, world.ids["tiny"][0]),
        "session": (world.session_doc_key("s"), s[9]),
    }

    def may_go_unnoticed(blob: bytes, offset: int) -> bool:
        # the reserved byte carries nothing; the kind byte is informational (docs/format.md §3.2: one
        # object may serve two kinds), so another valid kind there is harmless too; inside a zstd
        # frame some bits do not change what it decodes to (unused header bits, unused table
        # entries): harmless, since the payload still hashes to the id. Anything else must be noticed.
        zstd = blob[6] == 1
        return offset == 7 or (offset == 5 and blob[5] in {k.value for k in Kind}) or (zstd and offset >= HEADER_SIZE)

    for name, (key, sid) in targets.items():
        original = world.backend.get(key)
        session = "tiny" if name == "raw-state" else "s"
        for offset in range(len(original)):
            for bit in range(8):
                damaged = _flip(original, offset, 1 << bit)
                raw_corrupt(world.backend, key, damaged)
                count("corruption: single-byte damages decoded")
                try:
                    state = world.store().session(session).state(sid)
                except (CorruptObjectError, FormatVersionError) as exc:
                    assert exc.details.get("object") == key, f"{name} byte {offset} bit {bit}: {exc}"
                    continue
                assert may_go_unnoticed(damaged, offset), f"{name}: flipping byte {offset} bit {bit} went unnoticed"
                assert canonical(state) == canonical(world.states[sid])
        raw_corrupt(world.backend, key, original)


@pytest.mark.parametrize("kind", ["directory", "memory"])
def test_zstd_frame_claiming_a_huge_size_is_corrupt(make_world: Callable[[str], World], kind: str) -> None:
    """One flipped bit in the frame header descriptor makes the frame claim exabytes: refused as corrupt
    before anything is allocated (it used to escape as a bare MemoryError, crashing verify)."""
    world = make_world(kind)
    key = world.record(world.ids["s"][8]).state
    blob = world.backend.get(key)
    assert blob[HEADER_SIZE : HEADER_SIZE + 4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    raw_corrupt(world.backend, key, _flip(blob, HEADER_SIZE + 4, 0x80))  # frame content size: 2 -> 8 bytes
    count("corruption: corrupted cases")
    with pytest.raises(CorruptObjectError) as err:
        world.store().session("s").state(world.ids["s"][8])
    assert err.value.details["object"] == key
    report = world.store().verify(read_data=True)
    assert key in {p.object for p in report.problems}


# -- refs --------------------------------------------------------------------------


def _write_ref_raw(world: World, name: str, data: bytes, *, link: bool = False) -> None:
    ref = SnapshotStore.session_ref(name)
    if isinstance(world.backend, DirectoryBackend):
        path = world.backend.root / "refs" / ref
        if link:
            path.unlink()
            os.symlink(data, path)
        else:
            write_ref_file(path, data)
    else:
        assert isinstance(world.backend, MemoryBackend)
        world.backend._refs[ref] = data.decode("utf-8", "surrogateescape").strip()
    count("corruption: corrupted cases")


GARBLED_REFS = {
    "text": b"this is not an id\n",
    "short-hex": b"0123abcd\n",
    "empty": b"",
    "binary": b"\xff\xfe\x00garbage\x80",
    # a directory ref is a symbolic link whose target is the value: garbled targets too
    "link-text": b"not an id",
    "link-binary": b"\xff\xfegarbage",
}

GARBLED_CASES = [
    pytest.param(kind, garbage, id=f"{kind}-{garbage}")
    for kind in ("directory", "memory")
    for garbage in GARBLED_REFS
    if kind == "directory" or garbage in ("text", "short-hex")  # a memory ref is text, never torn
]


@pytest.mark.parametrize(("kind", "garbage"), GARBLED_CASES)
def test_garbled_session_ref_is_corrupt_and_contained(
    make_world: Callable[[str], World], kind: str, garbage: str
) -> None:
    world = make_world(kind)
    _write_ref_raw(world, "s", GARBLED_REFS[garbage], link=garbage.startswith("link-"))
    store = world.store()
    _check_session_readable(world, store, "other", set())
    report = store.verify(read_data=True)  # must report, not raise
    assert not report.ok and {p.session for p in report.problems} == {"s"}
    with pytest.raises(CorruptObjectError) as err:
        store.session("s")
    assert "s" in str(err.value) and err.value.details.get("ref") == SnapshotStore.session_ref("s")


def test_ref_garbled_into_a_folder_link_hides_nothing_from_gc(make_world: Callable[[str], World]) -> None:
    world = make_world("directory")
    assert isinstance(world.backend, DirectoryBackend)
    live = _live_objects(world)
    _write_ref_raw(world, "s", b"../../objects/ab", link=True)  # a link to an existing folder
    store = world.store()
    report = store.verify(read_data=True)
    with contextlib.suppress(SnapshotError):
        store.gc()
    lost = live - set(world.backend.iter_keys())
    assert not lost, f"gc deleted {len(lost)} objects of the hidden session"
    assert not report.ok, "verify says ok with session s's ref garbled"


@pytest.mark.parametrize("kind", ["directory", "memory"])
def test_session_ref_to_an_object_of_another_kind(make_world: Callable[[str], World], kind: str) -> None:
    world = make_world(kind)
    record_id = world.ids["s"][3]
    _write_ref_raw(world, "s", (record_id + "\n").encode())
    store = world.store()
    with pytest.raises(CorruptObjectError) as err:
        store.session("s")
    assert err.value.details["object"] == record_id
    _check_session_readable(world, store, "other", set())
    report = store.verify(read_data=True)
    assert record_id in {p.object for p in report.problems}


@pytest.mark.parametrize("kind", ["directory", "memory"])
def test_session_ref_to_another_sessions_document(make_world: Callable[[str], World], kind: str) -> None:
    world = make_world(kind)
    _write_ref_raw(world, "s", (world.session_doc_key("other") + "\n").encode())
    store = world.store()
    assert not store.verify(read_data=True).ok
    with pytest.raises(CorruptObjectError):
        store.session("s")


def _session_open_in_subprocess(root: Path, name: str, timeout: float) -> subprocess.CompletedProcess[str] | None:
    code = textwrap.dedent(
        f"""
        from snapstore import SnapshotStore, SnapshotError
        try:
            SnapshotStore.open({str(root)!r}).session({name!r})
        except SnapshotError as exc:
            print(type(exc).__name__, exc.details.get("object"))
        """
    )
    try:
        return subprocess.run(
            [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return None


def test_session_ref_to_a_missing_document_raises(tmp_path: Path, make_world: Callable[[str], World]) -> None:
    world = make_world("directory")
    doc = world.session_doc_key("s")
    damage(world, doc, "missing")  # the same as a ref garbled into an id of nothing
    store = world.store()
    _check_session_readable(world, store, "other", set())
    report = store.verify(read_data=True)
    assert doc in {p.object for p in report.problems}
    result = _session_open_in_subprocess(tmp_path / "store", "s", timeout=8)
    assert result is not None, "store.session() did not return within 8 s"
    assert result.stdout.split() == ["SnapshotNotFound", doc], result.stderr
