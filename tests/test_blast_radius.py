"""The blast radius of one damaged byte in a segment file: at most the rest of its own segment.

Session ``s`` of tests/corruption_world.py lives in three segment files. For
many positions in those files (every header byte, bytes of every frame header,
bytes of every entry's body), one byte is changed in place, the store is read
through a fresh handle, and the byte is put back. For every position:

* no snapshot reads as a state other than the one committed (a damaged one
  raises ``CorruptObjectError`` or is missing);
* ``verify()`` reports the damage, in session ``s`` only; the only bytes whose
  damage may go unreported are the segment header's random file id (bytes 5 to
  7, read as is), and then everything must still read exactly;
* every snapshot outside the damaged segment (the other two segments of ``s``,
  and session ``other``) still reads exactly.

The sampled sweep takes a fixed set of bytes of every frame; the slow sweep
takes every ``SNAPSTORE_BLAST_STRIDE``-th byte of the middle segment (8, or 48
when ``CI=true``; 1 for all of them).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest_reliability import count, segment_files
from corruption_world import SEGMENT_TURNS, World, populate, verify_problems
from snapstore.backends import DirectoryBackend, _framing
from snapstore.store import session_key

CI = os.environ.get("CI") == "true"
#: body bytes tried per entry in the sampled sweep (besides its first and last byte)
BODY_SAMPLES = 1
#: in the slow sweep, every this many bytes of the middle segment (1: all of them)
SLOW_STRIDE = int(os.environ.get("SNAPSTORE_BLAST_STRIDE", "48" if CI else "8"))
FILE_ID = range(_framing.HEADER_SIZE - _framing.FILE_ID_SIZE, _framing.HEADER_SIZE)


@dataclass
class Case:
    segment: int
    offset: int
    last_frame_body: bool  # inside the body of the file's last frame
    outcome: dict[str, str]  # snapshot id -> exact / corrupt / missing / WRONG
    problems: list[str]


def _frames(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each frame of a segment file."""
    found, pos = [], _framing.HEADER_SIZE
    while pos < len(data):
        end = pos + _framing.FRAME_SIZE + _framing.FRAME.unpack_from(data, pos)[0]
        found.append((pos, end))
        pos = end
    return found


def sampled_offsets(data: bytes, rng: random.Random) -> list[int]:
    offsets = list(range(_framing.HEADER_SIZE))
    for start, end in _frames(data):
        offsets += [start, start + rng.randrange(1, _framing.FRAME_SIZE)]  # the length, and the rest
        body = start + _framing.FRAME_SIZE
        if end > body:
            offsets += [body, end - 1] + [rng.randrange(body, end) for _ in range(BODY_SAMPLES)]
    return sorted(set(offsets))


def sweep(world: World, offsets_of: dict[int, list[int]], rng: random.Random) -> list[Case]:
    assert isinstance(world.backend, DirectoryBackend)
    files = segment_files(world.backend.root, session_key("s"))
    cases = []
    for segment, offsets in offsets_of.items():
        path: Path = files[segment - 1]
        original = path.read_bytes()
        last_start = _frames(original)[-1][0] + _framing.FRAME_SIZE
        for offset in offsets:
            damaged = bytearray(original)
            damaged[offset] ^= rng.randrange(1, 256)
            path.write_bytes(bytes(damaged))
            try:
                outcome = world.read_all(wrong_fails=False)
                case = Case(segment, offset, offset >= last_start, outcome, verify_problems(world.store()))
            finally:
                path.write_bytes(original)
            cases.append(case)
            count("corruption: single-byte damages tried")
    return cases


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One store for the module: every case puts its byte back before the next."""
    found = populate(DirectoryBackend(tmp_path_factory.mktemp("blast") / "store"))
    yield found
    found.backend.close()


@pytest.fixture(scope="module")
def sampled(world: World) -> list[Case]:
    rng = random.Random(13)
    assert isinstance(world.backend, DirectoryBackend)
    files = segment_files(world.backend.root, session_key("s"))
    offsets = {n: sampled_offsets(path.read_bytes(), rng) for n, path in enumerate(files, start=1)}
    return sweep(world, offsets, rng)


def _outside(world: World, segment: int) -> list[str]:
    ids = [sid for turn, sid in enumerate(world.ids["s"]) if turn not in SEGMENT_TURNS[segment]]
    return ids + world.ids["other"]


def check_never_wrong(cases: list[Case]) -> None:
    wrong = [(c.segment, c.offset) for c in cases if "WRONG" in c.outcome.values()]
    assert not wrong, f"damaged bytes that read as a wrong state (segment, offset): {wrong}"


def check_detected(cases: list[Case]) -> None:
    undetected = []
    for case in cases:
        if case.last_frame_body:
            continue  # test_a_damaged_byte_in_a_last_frame_is_reported
        if case.offset in FILE_ID:
            assert not case.problems and set(case.outcome.values()) == {"exact"}, (case.offset, case.problems)
            count("corruption: single-byte damages harmless (header file id)")
            continue
        if not any(p.startswith("s:") for p in case.problems):
            undetected.append((case.segment, case.offset))
        assert not any(p.startswith("other:") for p in case.problems), (case.segment, case.offset, case.problems)
    assert not undetected, f"damaged bytes verify did not report (segment, offset): {undetected}"


def check_contained(world: World, cases: list[Case]) -> None:
    escaped = []
    for case in cases:
        lost = [sid for sid in _outside(world, case.segment) if case.outcome[sid] != "exact"]
        if lost:
            escaped.append((case.segment, case.offset, len(lost)))
    assert not escaped, f"damage that took snapshots of other segments (segment, offset, lost): {escaped[:20]}"


def test_a_damaged_byte_never_reads_as_a_wrong_state(sampled: list[Case]) -> None:
    assert len(sampled) > 100
    check_never_wrong(sampled)


def test_a_damaged_byte_is_reported_by_verify(sampled: list[Case]) -> None:
    check_detected(sampled)


def test_a_damaged_byte_takes_at_most_its_segment(world: World, sampled: list[Case]) -> None:
    check_contained(world, sampled)


def test_a_damaged_byte_in_a_last_frame_is_reported(sampled: list[Case]) -> None:
    missed = [(c.segment, c.offset) for c in sampled if c.last_frame_body and not c.problems]
    assert not missed, f"last-frame bytes whose damage went unreported (segment, offset): {missed}"


@pytest.mark.slow
def test_every_byte_of_a_segment(world: World) -> None:
    """The middle segment, every SLOW_STRIDE-th byte: never wrong, always reported."""
    assert isinstance(world.backend, DirectoryBackend)
    path = segment_files(world.backend.root, session_key("s"))[1]
    rng = random.Random(17)
    cases = sweep(world, {2: list(range(0, path.stat().st_size, SLOW_STRIDE))}, rng)
    check_never_wrong(cases)
    check_detected(cases)
