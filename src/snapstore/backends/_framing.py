"""How the directory engine frames entries in a segment file: pure functions, no I/O.

A segment file is an 8-byte header followed by frames::

    header     := "SNPS" || version (u8, 2) || file_id (3 bytes)
    frame      := length (u32 LE) || body_check (u32 LE) || head_check (u32 LE) || body
    body_check := xxh32(body, seed 0)
    head_check := xxh32(length || body_check, seed 0)

A bad frame is a *torn tail* (a crash in the middle of an append, cut before
the next append) when it is the last thing in the file: fewer than 12 bytes
left, a good frame header whose body runs past the end, one whose body fails its
check while ending exactly at the end with its last 8 bytes zero (never written),
or nothing but zero bytes from there on.
Anything else is *damage*: reported, never cut. The header's own check keeps a
damaged length from passing for a torn tail (which would cut good frames).

``file_id`` is random, drawn each time a segment file is written from its start
(created, or replaced by a rewrite); readers accept any value. With the file's
inode number it makes the segment's version: an inode alone comes back when a
rewrite reuses the one a rewrite before it freed, and a reader that cached the old
segment would then go on reading the new one from the old end.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import xxhash

SEGMENT_MAGIC = b"SNPS"
SEGMENT_VERSION = 2
SEGMENT_HEADER = SEGMENT_MAGIC + bytes([SEGMENT_VERSION, 0, 0, 0])
HEADER_SIZE = len(SEGMENT_HEADER)
FILE_ID_SIZE = 3
_LENGTHS = struct.Struct("<II")
FRAME = struct.Struct("<III")
FRAME_SIZE = FRAME.size
#: the largest entry a frame may hold; a larger length is damage, never an allocation
MAX_ENTRY = 1 << 30


def frame(body: bytes) -> bytes:
    head = _LENGTHS.pack(len(body), xxhash.xxh32_intdigest(body))
    return head + xxhash.xxh32_intdigest(head).to_bytes(4, "little") + body


def frames(bodies: Iterable[bytes]) -> bytes:
    return b"".join(frame(b) for b in bodies)


@dataclass(frozen=True, slots=True)
class Scan:
    entries: list[bytes]
    end: int  # offset just past the last good frame
    damaged_at: int | None  # offset of a bad frame that is not a torn tail
    torn: bool  # the data ends in an interrupted append


def new_header() -> bytes:
    """The header of a segment file written from its start, with a fresh random ``file_id``."""
    return SEGMENT_HEADER[: HEADER_SIZE - FILE_ID_SIZE] + os.urandom(FILE_ID_SIZE)


def header_ok(data: bytes | memoryview) -> bool:
    return len(data) >= HEADER_SIZE and bytes(data[: HEADER_SIZE - FILE_ID_SIZE]) == SEGMENT_HEADER[:-FILE_ID_SIZE]


def unwritten_header(data: bytes | memoryview) -> bool:
    """Whether a segment file shorter than its header holds nothing written yet: no bytes, zeros
    (space allocated before a crash), or the start of a header whose write a crash cut short. Other
    short contents are damage: a segment cut down to a few bytes by a lost write or a bad copy would
    otherwise read as empty, its commits gone without a word."""
    head = bytes(data[:HEADER_SIZE])
    return not any(head) or SEGMENT_HEADER.startswith(head[: len(SEGMENT_MAGIC) + 1])  # (magic and version)


def header_problem(data: bytes | memoryview) -> str:
    """What is wrong with a segment header ``header_ok`` refused, said after the file's name."""
    version = data[len(SEGMENT_MAGIC)] if len(data) > len(SEGMENT_MAGIC) else None
    if bytes(data[: len(SEGMENT_MAGIC)]) == SEGMENT_MAGIC and version != SEGMENT_VERSION:
        # a newer writer moves the store's config/format first, which this reader refuses whole:
        # under a format it reads, another version here is one damaged byte, and costs this segment
        return (
            f"has a segment header of version {version}, where this snapstore reads version {SEGMENT_VERSION} "
            "(damaged, or copied in from a store of a newer format)"
        )
    return "is not a snapstore segment (bad header)"


def file_id(data: bytes) -> int:
    """The header's ``file_id`` (0 for a file whose header is not written yet)."""
    return int.from_bytes(data[HEADER_SIZE - FILE_ID_SIZE : HEADER_SIZE], "big") if header_ok(data) else 0


def first_frame(data: bytes | memoryview) -> memoryview:
    """``data`` cut where its first frame's header says that frame ends: ``scan`` of the cut checks
    that frame as a scan of everything would (a damaged header, a body past the end) and reads
    the first entry without checking the frames after it."""
    view = memoryview(data)
    return view[: FRAME_SIZE + FRAME.unpack_from(view, 0)[0]] if len(view) >= FRAME_SIZE else view


def scan(data: bytes | memoryview, offset: int) -> Scan:
    """Frames in ``data`` (the file from offset ``offset`` to its end), up to the first bad one."""
    view = memoryview(data)
    size = len(view)
    entries: list[bytes] = []
    append, unpack, xxh32 = entries.append, FRAME.unpack_from, xxhash.xxh32_intdigest
    pos = 0
    # opening a session scans every frame of its segments: the good frame's checks are inlined
    # here, and anything else goes to ``_check_frame`` to be told torn or damaged
    while pos <= size - FRAME_SIZE:
        length, body_check, head_check = unpack(view, pos)
        start = pos + FRAME_SIZE
        end = start + length
        if end > size or length > MAX_ENTRY or xxh32(view[pos : pos + 8]) != head_check:
            break
        body = view[start:end]
        if xxh32(body) != body_check:
            break
        append(bytes(body))
        pos = end
    if pos < size:
        torn = _check_frame(view, pos, size) is True  # the loop stops at a bad frame: torn or damaged
        return Scan(entries, offset + pos, None if torn else offset + pos, torn)
    return Scan(entries, offset + pos, None, False)


def _check_frame(view: memoryview, pos: int, size: int) -> bool | None:
    """None for a good frame at ``pos``; otherwise True for a torn tail, False for damage."""
    if size - pos < FRAME_SIZE:
        return True
    length, body_check, head_check = FRAME.unpack_from(view, pos)
    if xxhash.xxh32_intdigest(view[pos : pos + 8]) != head_check:
        return not any(view[pos:])  # zeros to the end: space allocated but never written
    if length > MAX_ENTRY:
        return False
    body_end = pos + FRAME_SIZE + length
    if body_end > size:
        return True
    if xxhash.xxh32_intdigest(view[pos + FRAME_SIZE : body_end]) != body_check:
        # a body that ends the file is torn only if its end was never written (zeros, as space
        # allocated before a crash reads); a changed byte in a complete last entry is damage
        tail = view[max(pos + FRAME_SIZE, body_end - 8) : body_end]
        return body_end == size and not any(tail)
    return None
