"""Corruption: damaged entries are detected, reported by verify, and contained to their segment.

The store (tests/corruption_world.py) holds session ``s`` in three segments
and session ``other`` in one. Each case damages stored bytes in the medium
itself (a file, the memory engine's lists, a PostgreSQL row) and checks, on a
fresh handle: a damaged snapshot raises ``CorruptObjectError`` (never a wrong
state); ``verify()`` reports the damage; snapshots in other segments and other
sessions still read exactly. Torn tails (an append cut short, or space
allocated but never written) are not damage: they are cut on the next append
and no acknowledged commit is lost. Damage followed by good frames is never cut.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import xxhash

from conftest import postgres_url_or_skip
from conftest_reliability import copy_store_dir, count, directory_files, segment_files
from corruption_world import SEGMENT_TURNS, TURNS, World, populate, state_of, verify_problems
from snapstore import SnapshotError
from snapstore.backends import Backend, DirectoryBackend, MemoryBackend, _framing
from snapstore.store import session_key
from snapstore.testing import damage_entry

KEY = session_key("s")

@pytest.fixture(scope="module")
def golden_directory(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    root = tmp_path_factory.mktemp("golden") / "store"
    world = populate(DirectoryBackend(root))
    world.backend.close()
    return root, world.ids


@pytest.fixture(params=["directory", "memory", "postgres"])
def make_world(
    request: pytest.FixtureRequest, tmp_path: Path, golden_directory: tuple[Path, dict[str, list[str]]]
) -> Iterator[Callable[[], World]]:
    made: list[Backend] = []

    def make() -> World:
        backend: Backend
        if request.param == "directory":
            root, ids = golden_directory
            backend = DirectoryBackend(copy_store_dir(root, tmp_path / f"store{len(made)}"), create=False)
            made.append(backend)
            return World(backend, {k: list(v) for k, v in ids.items()})
        if request.param == "memory":
            backend = MemoryBackend()
        else:
            from snapstore.backends._postgres import PostgresBackend

            backend = PostgresBackend(postgres_url_or_skip(), table_prefix=f"t{uuid.uuid4().hex[:12]}_")
        made.append(backend)
        return populate(backend)

    yield make
    for backend in made:
        backend.close()


def _damage(world: World, turn: int) -> int:
    segment, index = world.entry_index("s", turn)
    damage_entry(world.backend, KEY, segment, index)
    count("corruption: corrupted cases")
    return segment


#: which commit entry is damaged: a delta in the middle of a run, a keyframe patched against the run before it
VICTIMS = {"delta": 10, "patched-keyframe": 12, "independent-keyframe": 8}


@pytest.mark.parametrize("victim", list(VICTIMS))
def test_a_damaged_entry_is_detected_never_read_wrong(make_world: Callable[[], World], victim: str) -> None:
    world = make_world()
    turn = VICTIMS[victim]
    segment = _damage(world, turn)
    outcome = world.read_all()  # fails on any wrong state
    damaged_sid = world.ids["s"][turn]
    assert outcome[damaged_sid] in ("corrupt", "missing"), f"the damaged snapshot reads {outcome[damaged_sid]}"
    problems = verify_problems(world.store())
    assert any(p.startswith("s:") for p in problems), f"verify did not report damage in segment {segment}"
    assert not any(p.startswith("other:") for p in problems), problems


@pytest.mark.parametrize("victim", list(VICTIMS))
def test_a_damaged_entry_takes_at_most_its_segment(make_world: Callable[[], World], victim: str) -> None:
    world = make_world()
    segment = _damage(world, VICTIMS[victim])
    outcome = world.read_all()
    for name, ids in world.ids.items():
        for turn, sid in enumerate(ids):
            if name == "other" or turn not in SEGMENT_TURNS[segment]:
                assert outcome[sid] == "exact", f"{name} turn {turn} (outside the damaged segment) reads {outcome[sid]}"


def test_verify_lists_every_damage_at_once(make_world: Callable[[], World]) -> None:
    world = make_world()
    _damage(world, 2)
    _damage(world, 18)
    segment, index = world.entry_index("other", 1)
    damage_entry(world.backend, session_key("other"), segment, index)
    problems = verify_problems(world.store())
    assert any(p.startswith("other:") for p in problems), problems
    for segment, damaged_turn in ((1, 2), (3, 18)):  # each damage named: its segment, or a snapshot it breaks
        names = [f"segment {segment}"] + [world.ids["s"][t] for t in SEGMENT_TURNS[segment] if t >= damaged_turn]
        assert any(name in p for p in problems if p.startswith("s:") for name in names), (segment, problems)
    outcome = world.read_all()
    assert all(outcome[world.ids["s"][turn]] == "exact" for turn in SEGMENT_TURNS[2])



def test_a_structure_only_verify_names_a_damaged_segment(make_world: Callable[[], World]) -> None:
    """``verify(read_data=False)`` (``snapstore verify --quick``) decompresses nothing, but a
    segment whose indexing met damage is still reported, by its number, and only in its session."""
    world = make_world()
    segment = _damage(world, VICTIMS["delta"])
    report = world.store().verify(read_data=False)
    problems = [f"{p.session}: {p.message}" for p in report.problems]
    assert not report.ok and report.states_rebuilt == 0
    assert all(p.startswith("s:") for p in problems), problems
    if isinstance(world.backend, DirectoryBackend):  # a frame's checksum: found without reading payloads
        assert any(f"segment {segment}" in p for p in problems), problems


# -- the directory engine's files: headers, torn tails, damage never cut ------------------------


@pytest.fixture
def directory_world(golden_directory: tuple[Path, dict[str, list[str]]], tmp_path: Path) -> Iterator[World]:
    root, ids = golden_directory
    backend = DirectoryBackend(copy_store_dir(root, tmp_path / "store"), create=False)
    yield World(backend, {k: list(v) for k, v in ids.items()})
    backend.close()


def _last_segment(world: World) -> Path:
    assert isinstance(world.backend, DirectoryBackend)
    return segment_files(world.backend.root, KEY)[-1]


def _frame_offsets(data: bytes) -> list[int]:
    """Where each frame of a segment file starts."""
    offsets, pos = [], _framing.HEADER_SIZE
    while pos < len(data):
        offsets.append(pos)
        pos += _framing.FRAME_SIZE + _framing.FRAME.unpack_from(data, pos)[0]
    return offsets


@pytest.mark.parametrize("byte", [0, 3, 4])
def test_a_damaged_segment_header_is_detected(directory_world: World, byte: int) -> None:
    """The magic and the version byte are checked (bytes 5 to 7 are a random file id, read as is)."""
    path = segment_files(directory_world.backend.describe(), KEY)[1]
    data = bytearray(path.read_bytes())
    data[byte] ^= 0x20
    path.write_bytes(bytes(data))
    count("corruption: corrupted cases")
    outcome = directory_world.read_all()
    assert all(outcome[directory_world.ids["s"][t]] == "corrupt" for t in SEGMENT_TURNS[2])
    # the version byte names both versions: a header of another version is that segment's damage
    said = "bad header"
    if byte == 4:
        said = f"has a segment header of version {data[4]}, where this snapstore reads version 2"
    assert any(said in p for p in verify_problems(directory_world.store()))
    # and verify goes on to the session's other segments (it stopped at the header, checking none)
    store = directory_world.store()
    report = store.verify(read_data=True)
    assert report.segments_checked == len(segment_files(directory_world.backend.describe(), KEY)) + 1  # + "other"
    listed = sum(len(store.session(name).snapshot_ids()) for name in store.sessions())
    assert report.snapshots_checked == report.states_rebuilt == listed > len(directory_world.ids["other"])


@pytest.mark.parametrize(
    ("short", "damage"), [(b"ABCD", "bad header"), (b"SNPS\x03\x00", "version 3"), (b"SNPS\x02", None)]
)
def test_a_segment_cut_shorter_than_its_header_is_damage_unless_its_header_was_being_written(
    directory_world: World, short: bytes, damage: str | None
) -> None:
    """Under 8 bytes, a file read as an empty segment whatever it held: the last segment cut down to
    "ABCD" lost its commits and verify called the store sound (a review). Only nothing, zeros or the
    start of a header (a crash cut its write short) is a segment not written yet."""
    path = segment_files(directory_world.backend.describe(), KEY)[-1]
    path.write_bytes(short)
    problems = verify_problems(directory_world.store())
    if damage is None:
        assert not any("sessions/s/" in p for p in problems)
    else:
        assert any(path.name in p and damage in p for p in problems), problems
    head = directory_world.store().session("s").commit({"after": "the cut"})  # never appended to it
    assert path.read_bytes() == short or damage is None
    assert directory_world.store().session("s").state(head.id) == {"after": "the cut"}


TORN_TAILS: dict[str, Callable[[bytes], bytes]] = {
    "half-a-frame": lambda frame: frame[: len(frame) // 2],
    "less-than-a-frame-header": lambda frame: frame[:5],
    "frame-header-only": lambda frame: frame[: _framing.FRAME_SIZE],
    "all-but-the-last-byte": lambda frame: frame[:-1],
    "zeros-of-a-frame": lambda frame: bytes(len(frame)),
    "a-few-zeros": lambda frame: bytes(3),
    "frame-header-then-zeros": lambda frame: frame[: _framing.FRAME_SIZE] + bytes(len(frame) - _framing.FRAME_SIZE),
}


@pytest.mark.parametrize("tail", list(TORN_TAILS))
def test_a_torn_tail_is_cut_by_the_next_append_and_nothing_acknowledged_is_lost(
    directory_world: World, tail: str
) -> None:
    path = _last_segment(directory_world)
    good = path.read_bytes()
    frame = _framing.frame(b"\x02" + os.urandom(300))  # what an interrupted append was writing
    with open(path, "ab") as f:
        f.write(TORN_TAILS[tail](frame))
    count("corruption: corrupted cases")
    outcome = directory_world.read_all()
    assert set(outcome.values()) == {"exact"}, "a torn tail hid an acknowledged commit"
    assert verify_problems(directory_world.store()) == []
    sess = directory_world.store().session("s")
    snap = sess.commit(state_of("s", TURNS), label="s", turn=TURNS)
    data = path.read_bytes()
    assert data.startswith(good) and len(data) > len(good), "the torn tail was not cut at the last good frame"
    assert _frame_offsets(data)[-1] == len(good), "the new entry does not follow the last acknowledged one"
    directory_world.ids["s"].append(snap.id)
    assert set(directory_world.read_all().values()) == {"exact"}
    assert verify_problems(directory_world.store()) == []
    count("crash: torn appends cut by the next append")


def test_damage_followed_by_good_frames_is_never_cut(directory_world: World) -> None:
    """A damaged frame in the middle of the open segment: a commit refuses, or lands in a new segment;
    gc leaves it too. The damaged file stays exactly as it was (cutting it would lose good frames)."""
    path = _last_segment(directory_world)
    data = bytearray(path.read_bytes())
    offsets = _frame_offsets(bytes(data))
    middle = offsets[len(offsets) // 2] + _framing.FRAME_SIZE + 2
    data[middle] ^= 0x01
    path.write_bytes(bytes(data))
    count("corruption: corrupted cases")
    landed = None
    with contextlib.suppress(SnapshotError):
        landed = directory_world.store().session("s").commit(state_of("s", TURNS), label="s", turn=TURNS)
    with contextlib.suppress(SnapshotError):
        directory_world.store().gc(grace_seconds=0)
    assert path.read_bytes() == bytes(data), "a commit or gc changed the damaged segment"
    assert any(p.startswith("s:") for p in verify_problems(directory_world.store()))
    if landed is not None:  # in a segment of its own: it reads back, and so does everything before the damage
        directory_world.ids["s"].append(landed.id)
        outcome = directory_world.read_all()
        assert outcome[landed.id] == "exact"
        assert all(outcome[directory_world.ids["s"][t]] == "exact" for t in range(SEGMENT_TURNS[3].start))


@pytest.mark.parametrize("where", ["first-body-byte", "middle-body-byte", "last-byte"])
def test_a_flipped_byte_in_the_last_frame_is_damage_not_a_torn_tail(directory_world: World, where: str) -> None:
    path = _last_segment(directory_world)
    data = bytearray(path.read_bytes())
    start = _frame_offsets(bytes(data))[-1] + _framing.FRAME_SIZE
    offset = {"first-body-byte": start, "middle-body-byte": (start + len(data)) // 2, "last-byte": len(data) - 1}
    data[offset[where]] ^= 0x01
    path.write_bytes(bytes(data))
    count("corruption: corrupted cases")
    head = directory_world.ids["s"][-1]
    assert directory_world.read_all()[head] != "missing", "the acknowledged head vanished without an error"
    assert verify_problems(directory_world.store()), "verify says ok"


def test_gc_on_a_damaged_store_changes_nothing(directory_world: World) -> None:
    """Nothing is evicted here: gc on a store with a damaged segment must not drop or rewrite anything."""
    _damage(directory_world, 10)
    assert isinstance(directory_world.backend, DirectoryBackend)
    before = directory_files(directory_world.backend.root)
    with contextlib.suppress(SnapshotError):  # refusing is safe
        directory_world.store().gc(grace_seconds=0)
    assert directory_files(directory_world.backend.root) == before


def test_an_entry_reframed_with_good_checksums_still_fails_its_hash(directory_world: World) -> None:
    """Checksums are not the only defence: a commit entry whose payload byte changed and whose frame
    was written again with matching checksums still never reads as a wrong state."""
    path = segment_files(directory_world.backend.describe(), KEY)[1]
    data = path.read_bytes()
    offsets = _frame_offsets(data)
    start = offsets[3]  # a delta of the segment's first run
    length = _framing.FRAME.unpack_from(data, start)[0]
    body = bytearray(data[start + _framing.FRAME_SIZE : start + _framing.FRAME_SIZE + length])
    body[-1] ^= 0x01  # the last byte of the compressed payload
    path.write_bytes(data[:start] + _framing.frame(bytes(body)) + data[start + _framing.FRAME_SIZE + length :])
    count("corruption: corrupted cases")
    outcome = directory_world.read_all()  # fails on a wrong state
    assert "corrupt" in {outcome[directory_world.ids["s"][t]] for t in SEGMENT_TURNS[2]}
    assert any(p.startswith("s:") for p in verify_problems(directory_world.store()))


def test_a_segment_claiming_a_huge_frame_is_refused_without_allocating(directory_world: World) -> None:
    """A frame header (with a valid check) claiming 2^31 bytes in the middle of a segment is damage."""
    path = segment_files(directory_world.backend.describe(), KEY)[0]
    data = path.read_bytes()
    start = _frame_offsets(data)[2]
    head = _framing.FRAME.pack(1 << 31, 0, 0)[:8]
    forged = head + xxhash.xxh32_intdigest(head).to_bytes(4, "little")
    path.write_bytes(data[:start] + forged + data[start + _framing.FRAME_SIZE :])
    count("corruption: corrupted cases")
    outcome = directory_world.read_all()
    assert all(outcome[directory_world.ids["s"][t]] != "exact" for t in SEGMENT_TURNS[1] if t >= 1)
    read = directory_world.backend.read_segment(KEY, 1)
    assert read.damaged_at == start and len(read.entries) == 2
