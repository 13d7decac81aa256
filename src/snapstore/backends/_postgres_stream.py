"""A PostgreSQL segment as one stream of length-prefixed entries, kept in rows of whole or quarter pages.

A segment's entries, each preceded by its length (4 bytes, big-endian), are one stream of
bytes; a position is a byte offset in it, at the start of an entry. The stream is kept in
rows of ``snapstore_entries`` keyed by the offset of their first byte, plus a tail of fewer
than a quarter page's bytes in the segment's row of ``snapstore_meta``. An append
(``_postgres_sql.QUERIES["append"]``, which also writes a segment whole) cuts the stream into
whole-page rows first, then quarter-page rows, the rest is the tail (or, when the append
creates the segment's row, one more row, so a new segment's row is small). Rows fill their
pages: no TOAST chunks, no half empty pages, one row for about three commits' entries.
"""

from __future__ import annotations

import struct

from ._framing import MAX_ENTRY
from .base import SegmentRead

LENGTH_SIZE = 4
_LENGTH = struct.Struct(">I").unpack_from


def frame_entries(entries: list[bytes]) -> bytes:
    return b"".join(len(entry).to_bytes(LENGTH_SIZE, "big") + entry for entry in entries)


def read_stream(first: int, blocks: list[bytes], size: int, start: int) -> SegmentRead:
    """The entries from ``start`` on, out of the stream's bytes from ``first`` on: its rows from the one
    holding ``start``, in order, then the tail.

    The lengths carry no check of their own: a ``start`` that is not where an entry begins (a
    position of a segment replaced since it was listed) reads as damage only when the lengths it
    meets run past the stream; otherwise the entries' record checks and the states' hashes refuse
    what it reads (docs/format.md, section 5).
    """
    if start >= size:
        return SegmentRead([], size)
    data = b"".join(blocks)  # from a list: one copy of the rows (a generator, or `+ tail`, costs more)
    total = len(data)
    if first + total != size or not first <= start:
        return SegmentRead([], start, damaged_at=start)
    entries: list[bytes] = []
    append = entries.append
    at = start - first
    while at < total:
        body = at + LENGTH_SIZE
        if body > total:
            return SegmentRead(entries, first + at, damaged_at=first + at)
        (length,) = _LENGTH(data, at)
        end = body + length
        if length > MAX_ENTRY or end > total:
            return SegmentRead(entries, first + at, damaged_at=first + at)
        append(data[body:end])
        at = end
    return SegmentRead(entries, size)
