"""A reader of format versions 2, 3 and 4 written from docs/format.md alone (sections 2 to 4), for the golden tests.

It uses struct, zstandard, xxhash, orjson and jsonpatch, and nothing of snapstore: when it
and snapstore agree on the golden store, the document says enough to read a store.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import xxhash
import zstandard

HEADER_MAGIC = b"SNPS\x02"  # §4.3: magic and version; then a 3-byte file_id
HEADER_SIZE = 8
FRAME = struct.Struct("<III")  # length, body_check, head_check
MAX_BODY = 1 << 30
RECORD = struct.Struct("<BBB16s16s16sqqQIIQdH")  # §4.6
WINDOW_RAW = 65536  # §4.7: a delta frame's dictionary
KEY_MODES = (0, 1)
SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def session_key(name: str) -> str:
    """§4.2: percent-encoded UTF-8, shortened with ``~`` and the name's hash past 120 characters."""
    quoted = "".join(chr(b) if b in SAFE else f"%{b:02X}" for b in name.encode("utf-8"))
    if len(quoted) <= 120:
        return quoted
    return quoted[:80] + "~" + xxhash.xxh3_128_hexdigest(name.encode("utf-8"))


@dataclass
class Frames:
    entries: list[bytes]
    torn_at: int | None = None  # offset of a torn tail
    damaged_at: int | None = None  # offset of damage


def read_frames(data: bytes) -> Frames:
    """§4.3: the header, then frames up to the end or the first bad one (torn tail or damage)."""
    if not any(data) or (len(data) < HEADER_SIZE and HEADER_MAGIC.startswith(data[:5])):
        return Frames([])  # not written yet: nothing, zeros, or the start of a header
    assert data[:5] == HEADER_MAGIC, "not a version-2 segment (damage, §4.3)"
    found = Frames([])
    pos = HEADER_SIZE
    while pos < len(data):
        rest = len(data) - pos
        if rest < FRAME.size:
            found.torn_at = pos
            return found
        length, body_check, head_check = FRAME.unpack_from(data, pos)
        if xxhash.xxh32_intdigest(data[pos : pos + 8]) != head_check:
            if not any(data[pos:]):
                found.torn_at = pos
            else:
                found.damaged_at = pos
            return found
        if length > MAX_BODY:
            found.damaged_at = pos
            return found
        end = pos + FRAME.size + length
        if end > len(data):
            found.torn_at = pos
            return found
        body = data[pos + FRAME.size : end]
        if xxhash.xxh32_intdigest(body) != body_check:
            if end == len(data) and not any(body[-8:]):  # never written: zeros where it should end
                found.torn_at = pos
            else:
                found.damaged_at = pos
            return found
        found.entries.append(body)
        pos = end
    return found


@dataclass
class Commit:
    id: str
    record: dict[str, Any]  # the record's JSON members (§3)
    mode: int
    raw_length: int
    payload: bytes  # compressed
    base: str | None = None  # §4.6 flag 8: the snapshot the delta patches (the parent, for an imported state patch)
    raw: bytes = b""  # filled by decode_payloads


def micros_to_text(micros: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_commit(entry: bytes, session: str) -> Commit:
    """§4.6: the 101-byte record, the label, the payload; the id from the record's JSON (§3)."""
    assert entry[0] == 0x02 and len(entry) >= RECORD.size
    (_type, mode, flags, parent, state, delta, micros, turn, size, raw_length, depth, chain_bytes, ratio,
     label_length) = RECORD.unpack_from(entry)  # fmt: skip
    assert mode <= 4 and not flags & ~15
    assert raw_length <= MAX_BODY and size <= MAX_BODY and 0 <= ratio <= 1e6
    if not flags & 4:
        assert delta == bytes(16) and depth == 0 and (mode in KEY_MODES or flags & 8)
    else:
        assert flags & 1, "a delta needs a parent"
    label_start = RECORD.size
    base = None
    if flags & 8:  # version 3: a delta against a base, named in the 16 bytes after the record
        assert not flags & 4 and flags & 1 and mode not in KEY_MODES and chain_bytes == 0
        base, label_start = entry[RECORD.size : RECORD.size + 16].hex(), RECORD.size + 16
    label_end = label_start + label_length
    assert label_end <= len(entry)
    record = {
        "type": "snapstore.snapshot",
        "format": 1,
        "session": session,
        "parent": parent.hex() if flags & 1 else None,
        "state": state.hex(),
        "delta": delta.hex() if flags & 4 else None,
        "label": entry[label_start:label_end].decode("utf-8"),
        "timestamp": micros_to_text(micros),
        "turn": turn if flags & 2 else None,
        "size": size,
        "depth": depth,
        "chain_bytes": chain_bytes,
        "base_ratio": ratio,
    }
    sid = xxhash.xxh3_128_hexdigest(canonical(record))
    return Commit(sid, record, mode, raw_length, entry[label_end:], base)


def raw_dictionary(data: bytes) -> zstandard.ZstdCompressionDict | None:
    if len(data) < 8:
        return None
    return zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def decode_payloads(commits: list[Commit]) -> bytes:
    """§4.7: every payload of one segment, in entry order; returns the segment's raw stream."""
    raw = b""
    run_start = 0
    frame: Any = None
    for commit in commits:
        if commit.mode in KEY_MODES:
            frame = None
            if commit.mode == 1:
                dictionary = raw_dictionary(raw[run_start:])
                assert dictionary is not None, "a patched keyframe needs the run before it"
                reader = zstandard.ZstdDecompressor(dict_data=dictionary, max_window_size=1 << 31)
            else:
                reader = zstandard.ZstdDecompressor(max_window_size=1 << 31)
            out = reader.decompress(commit.payload, max_output_size=commit.raw_length)
            run_start = len(raw)
        else:
            if commit.mode == 2:
                dictionary = raw_dictionary(raw[-WINDOW_RAW:])
                reader = (
                    zstandard.ZstdDecompressor(dict_data=dictionary) if dictionary else zstandard.ZstdDecompressor()
                )
                frame = reader.decompressobj()
            elif commit.mode == 4:
                frame = zstandard.ZstdDecompressor().decompressobj()
            assert frame is not None, "DELTA_CONTINUE without a frame"
            out = frame.decompress(commit.payload)
        assert len(out) == commit.raw_length
        commit.raw = out
        raw += out
    return raw


@dataclass
class Session:
    name: str
    segments: dict[int, list[Any]] = field(default_factory=dict)  # number -> [dict (META) | Commit]
    #: number -> for each INDEX entry (§4.6.1, version 4) of the segment, the ids it gives
    indexes: dict[int, list[list[str]]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    commits: dict[str, tuple[int, Commit]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    head: str | None = None

    def retained(self) -> list[str]:
        """§4.9."""
        start = 0
        through = self.settings.get("evicted_through")
        if through in self.commits:
            start = self.order.index(through) + 1
        limit = self.settings.get("max_snapshots", 10)
        keep = set(self.order[max(start, len(self.order) - limit) :]) | set(self.tags.values())
        return [sid for sid in self.order if sid in keep]

    def state(self, sid: str) -> Any:
        """§4.8: walk to what each payload patches (base, else parent) within the segment to a
        keyframe, apply the deltas, check the hash."""
        number, commit = self.commits[sid]
        path = [commit]
        while path[-1].mode not in KEY_MODES:
            patched = path[-1].base or path[-1].record["parent"]
            assert patched in self.commits and self.commits[patched][0] == number, "a delta patches its own segment"
            assert len(path) <= len(self.commits), "a loop"
            path.append(self.commits[patched][1])
        state = orjson.loads(path[-1].raw)
        for step in reversed(path[:-1]):
            state = jsonpatch.apply_patch(state, orjson.loads(step.raw))
        data = canonical(state)
        assert xxhash.xxh3_128_hexdigest(data) == commit.record["state"] and len(data) == commit.record["size"]
        return state


def read_session(folder: Path) -> Session:
    """Every segment of one session folder, its settings (§4.5) and its payloads decoded."""
    numbers = sorted(int(p.name[:16], 16) for p in folder.glob("*.seg"))
    first = read_frames((folder / f"{numbers[0]:016x}.seg").read_bytes()).entries[0]
    assert first[0] == 0x01
    session = Session(orjson.loads(first[1:])["name"])
    for number in numbers:
        frames = read_frames((folder / f"{number:016x}.seg").read_bytes())
        assert frames.damaged_at is None
        entries: list[Any] = []
        indexes: list[list[str]] = []
        group: list[str] = []  # ids of the COMMIT entries since the last INDEX
        for entry in frames.entries:
            if entry[0] == 0x03:  # §4.6.1: not an entry of the session; checked against the hashes
                (count,) = struct.unpack_from("<I", entry, 1)
                assert len(entry) == 5 + 16 * count
                given = [entry[5 + 16 * i : 21 + 16 * i].hex() for i in range(count)]
                assert given == group, "an INDEX gives the ids of the COMMIT entries of its group"
                indexes.append(given)
                group = []
            elif entry[0] == 0x01:
                body = orjson.loads(entry[1:])
                assert isinstance(body, dict) and canonical(body) == entry[1:]
                entries.append(body)
            else:
                entries.append(parse_commit(entry, session.name))
                group.append(entries[-1].id)
        session.indexes[number] = indexes
        assert isinstance(entries[0], dict) and entries[0].get("checkpoint") is True, "§4.10: a checkpoint first"
        decode_payloads([e for e in entries if isinstance(e, Commit)])
        session.segments[number] = entries
        for entry in entries:
            if isinstance(entry, Commit):
                if entry.id not in session.commits:
                    session.order.append(entry.id)
                session.commits[entry.id] = (number, entry)
                session.head = entry.id
            elif entry.get("checkpoint") is True:
                session.settings = {k: v for k, v in entry.items() if k not in ("checkpoint", "tags", "head")}
                session.tags = dict(entry["tags"])
                if entry.get("head") is not None:
                    session.head = entry["head"]
            else:
                for key, value in entry.items():
                    if key == "head":
                        session.head = value
                    elif key == "tag":
                        if value[1] is None:
                            session.tags.pop(value[0], None)
                        else:
                            session.tags[value[0]] = value[1]
                    else:
                        session.settings[key] = value
    if session.head not in session.commits:
        session.head = session.order[-1] if session.order else None
    session.tags = {t: s for t, s in session.tags.items() if s in session.commits}
    return session
