"""The archive's fixed parts (docs/format.md, "Archive format"): header, index entry
and trailer layouts, the index kinds, and what export and import both use: a compact set of ids
and a record's links."""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable
from typing import NamedTuple

import orjson

from ..codec import Kind

Progress = Callable[[int, "int | None", str], None]

#: the newest archive version this build reads and writes. Version 2 adds a session document's
#: ``window`` member; an archive none of whose sessions needs it is written as version 1, which
#: every earlier release reads
ARCHIVE_VERSION = 2
#: the version of an archive whose documents all have version 1's members
ARCHIVE_VERSION_PLAIN = 1
MAGIC = b"SNPA"
TRAILER_MAGIC = b"SNPT"
HEADER = struct.Struct("<4sB3s")  # magic, version, reserved (zero)
TRAILER = struct.Struct("<QQQQQ16s16sQ4s4s")  # see docs/format.md §A.6
TRAILER_CHECKED = 72  # bytes of the trailer covered by its own check value
ENTRY = struct.Struct("<32sQIB3s")  # hex id, offset, length, kind, reserved (zero)
MANIFEST_TYPE = "snapstore.archive"

#: index kind of a state stored as a patch from its parent snapshot's state
KIND_STATE_PATCH = 5
KINDS = {int(Kind.STATE), int(Kind.DELTA), int(Kind.RECORD), KIND_STATE_PATCH}
KIND_NAMES = {1: "state", 2: "delta", 3: "record", KIND_STATE_PATCH: "state patch"}
DEFAULT_LEVEL = 19
CHUNK = 1 << 20
#: progress is reported at least every this many objects
PROGRESS_EVERY = 64


class IdIndex:
    """A compact set of 16-byte ids, numbered in the order they were added.

    An open-addressing hash table over one bytearray: about 50 bytes per id,
    against about 100 for a Python set of bytes. Slots come from Python's
    randomised ``hash``, so ids chosen by an archive's author cannot be made to
    collide.
    """

    def __init__(self) -> None:
        self.ids = bytearray()  # 16 bytes per id, in the order added
        self._hashes = array("q")  # hash of each id, to compare ids only when their hashes match
        self._slots = array("q", [-1]) * 64
        self._mask = 63

    def __len__(self) -> int:
        return len(self._hashes)

    def key(self, number: int) -> bytes:
        return bytes(self.ids[16 * number : 16 * number + 16])

    def _slot(self, key: bytes, hashed: int) -> int:
        slots, hashes, mask = self._slots, self._hashes, self._mask
        at = hashed & mask
        while True:
            number = slots[at]
            if number < 0 or (hashes[number] == hashed and self.ids[16 * number : 16 * number + 16] == key):
                return at
            at = (at + 1) & mask

    def find(self, key: bytes) -> int:
        """The id's number, or -1."""
        return self._slots[self._slot(key, hash(key))]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.find(key) >= 0

    def add(self, key: bytes) -> bool:
        """Add an id; False when it was already there."""
        hashed = hash(key)
        at = self._slot(key, hashed)
        if self._slots[at] >= 0:
            return False
        number = len(self)
        self.ids += key
        self._hashes.append(hashed)
        self._slots[at] = number
        if 2 * (number + 1) > self._mask:
            self._grow()
        return True

    def _grow(self) -> None:
        self._mask = 2 * self._mask + 1
        slots = self._slots = array("q", [-1]) * (self._mask + 1)
        for number, hashed in enumerate(self._hashes):
            at = hashed & self._mask
            while slots[at] >= 0:
                at = (at + 1) & self._mask
            slots[at] = number


class Links(NamedTuple):
    """What chain walks need of a record."""

    parent: str | None
    delta: str | None
    state: str
    session: str


def links(payload: bytes) -> Links:
    """A record's links from payload bytes that passed ``SnapshotRecord.from_payload`` (or came from the store)."""
    body = orjson.loads(payload)
    return Links(body["parent"], body["delta"], body["state"], body["session"])
