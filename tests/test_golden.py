"""Golden files: what format versions 1 and 2 wrote must stay readable, byte for byte.

``tests/golden/store-v1/`` is a directory store made once by format version 1
(``tests/golden/make_golden.py``), ``tests/golden/store-v2/`` one made by version 2
(``tests/golden/make_golden_v2.py``); ``tests/golden/expected-*.json`` and
``tests/golden/expected-v2/*.json`` say what they hold. The tests copy them to a
temporary folder and never regenerate them.

Two readers are checked against each: snapstore itself (for version 1, through
``snapstore upgrade``, the only way this release reads it), and a small reader
written from docs/format.md alone (struct, zstandard, xxhash, orjson and jsonpatch;
no snapstore code: below for version 1, tests/format_v2_reader.py for version 2),
which keeps the document honest.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest
import xxhash
import zstandard

import format_v2_reader as v2
from conftest import canonical
from snapstore import FormatVersionError, SnapshotError, SnapshotStore, codec
from snapstore.codec import Kind
from snapstore.objects import SessionDoc, SnapshotRecord
from snapstore.upgrade import upgrade_store
from test_upgrade import check_upgraded

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
GOLDEN_STORE = GOLDEN / "store-v1"
FORMAT_DOC = ROOT / "docs" / "format.md"

EXPECTED = {
    p.stem.removeprefix("expected-"): orjson.loads(p.read_bytes()) for p in sorted(GOLDEN.glob("expected-*.json"))
}

# docs/format.md §7.2: the state {"hp":7}, stored raw
HP7_PAYLOAD = b'{"hp":7}'
HP7_ID = "cc3dbcfdd94ab192d8694747a6b4ad42"
HP7_OBJECT = bytes.fromhex("53 4e 50 4f 01 01 00 00 08 00 00 00 00 00 00 00 7b 22 68 70 22 3a 37 7d")

RECORD_MEMBERS = {
    "type", "format", "session", "parent", "state", "delta", "label",
    "timestamp", "turn", "size", "depth", "chain_bytes", "base_ratio",
}  # fmt: skip
SESSION_MEMBERS = {"type", "format", "name", "max_snapshots", "head", "snapshots", "bases", "evicted", "generation"}
HEADER = struct.Struct("<4sBBBBQ")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def copied(store: Path, tmp_path: Path) -> Path:
    """A copy of a committed golden store under ``tmp_path``, named as the store is."""
    target = tmp_path / store.name
    shutil.copytree(store, target)
    return target


@pytest.fixture
def golden_copy(tmp_path: Path) -> Path:
    return copied(GOLDEN_STORE, tmp_path)


def object_path(root: Path, key: str) -> Path:
    return root / "objects" / key[:2] / key[2:]


def object_keys(root: Path) -> list[str]:
    return sorted(p.parent.name + p.name for p in (root / "objects").glob("*/*"))


def tree_digest(root: Path) -> dict[str, str]:
    """Content of every object and ref file (lock files may appear when a store is opened)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for sub in ("objects", "refs")
        for p in sorted((root / sub).rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- a reader written from docs/format.md


def read_object(root: Path, key: str) -> tuple[int, bytes]:
    """(kind, payload) of one object, checked as §7.1.1 says."""
    blob = object_path(root, key).read_bytes()
    magic, version, kind, codec_id, reserved, size = HEADER.unpack_from(blob)
    assert (magic, version, reserved) == (b"SNPO", 1, 0), key
    assert kind in (1, 2, 3, 4) and codec_id in (0, 1), key
    body = blob[HEADER.size :]
    if codec_id == 0:
        payload = body
    else:
        assert zstandard.get_frame_parameters(body).content_size == size, "zstd frame must carry its content size"
        payload = zstandard.ZstdDecompressor().decompress(body)
    assert len(payload) == size
    assert xxhash.xxh3_128_hexdigest(payload) == key
    assert (codec_id == 0) == (size < 64), "payloads under 64 bytes are raw, others zstd"
    return kind, payload


def read_json(root: Path, key: str, kind: int) -> Any:
    _actual, payload = read_object(root, key)
    # §7.1.1: a reader MUST NOT refuse an object whose kind differs from the one it expects
    # (two kinds share one object when their payloads are equal); ``kind`` only documents intent
    assert canonical(orjson.loads(payload)) == payload, "payloads are canonical JSON"
    return orjson.loads(payload)


def read_ref(root: Path, name: str) -> str:
    text = (root / "refs" / name).read_bytes()
    assert text.endswith(b"\n") and text.count(b"\n") == 1
    return text[:-1].decode()


def rebuild_by_the_document(root: Path, sid: str, bases: list[str]) -> Any:
    """§7.6: walk parents to a keyframe or a base, load its state, apply the deltas forward, check the hash."""
    path = []
    current = sid
    while True:
        record = read_json(root, current, 3)
        if record["delta"] is None or current in bases:
            break
        path.append(record)
        current = record["parent"]
    state = read_json(root, record["state"], 1)
    for step in reversed(path):
        state = jsonpatch.apply_patch(state, read_json(root, step["delta"], 2))
    target = read_json(root, sid, 3)
    assert xxhash.xxh3_128_hexdigest(canonical(state)) == target["state"]
    return state


# ---------------------------------------------------------------- the golden store as committed


def test_golden_files_are_present() -> None:
    assert set(EXPECTED) == {"doc-example", "zoe-table", "long-chain"}
    assert (GOLDEN / "make_golden.py").is_file()
    assert len(object_keys(GOLDEN_STORE)) > 20
    total = sum(p.stat().st_size for p in GOLDEN_STORE.rglob("*") if p.is_file())
    assert total < 32_000  # tiny on purpose


def test_layout_and_refs() -> None:
    assert (GOLDEN_STORE / "refs" / "config" / "format").read_bytes() == b"1\n"
    refs = sorted(str(p.relative_to(GOLDEN_STORE / "refs")) for p in (GOLDEN_STORE / "refs" / "sessions").iterdir())
    assert refs == sorted(e["ref"] for e in EXPECTED.values())
    assert EXPECTED["zoe-table"]["ref"] == "sessions/Zo%C3%AB%27s%20table"  # §7.5: percent-encoded UTF-8
    for path in (GOLDEN_STORE / "objects").rglob("*"):
        assert not path.name.startswith(".tmp-")
        if path.is_file():
            assert re.fullmatch(r"[0-9a-f]{2}", path.parent.name) and re.fullmatch(r"[0-9a-f]{30}", path.name)


def test_every_object_follows_the_document() -> None:
    kinds: dict[int, int] = {}
    codecs: set[int] = set()
    for key in object_keys(GOLDEN_STORE):
        kind, payload = read_object(GOLDEN_STORE, key)
        kinds[kind] = kinds.get(kind, 0) + 1
        codecs.add(object_path(GOLDEN_STORE, key).read_bytes()[6])
        value = orjson.loads(payload)
        assert canonical(value) == payload
        if kind == Kind.RECORD:
            assert set(value) == RECORD_MEMBERS
            assert value["type"] == "snapstore.snapshot" and value["format"] == 1
            assert TIMESTAMP.match(value["timestamp"])
            assert (value["delta"] is None) == (value["depth"] == 0)
            assert value["parent"] is not None or value["delta"] is None
        elif kind == Kind.SESSION:
            assert set(value) == SESSION_MEMBERS
            assert value["type"] == "snapstore.session" and value["format"] == 1
        elif kind == Kind.DELTA:
            assert isinstance(value, list) and all(op["op"] in ("add", "remove", "replace") for op in value)
    assert set(kinds) == {1, 2, 3, 4}, "the golden store holds every kind"
    assert codecs == {0, 1}, "the golden store holds raw and zstd objects"


@pytest.mark.parametrize("slug", sorted(EXPECTED))
def test_document_reader_rebuilds_expected_states(slug: str) -> None:
    expected = EXPECTED[slug]
    doc_key = read_ref(GOLDEN_STORE, expected["ref"])
    doc = read_json(GOLDEN_STORE, doc_key, 4)
    assert doc["name"] == expected["session"]
    assert doc["snapshots"] == [s["id"] for s in expected["snapshots"]]
    for member in ("head", "bases", "evicted", "max_snapshots"):
        assert doc[member] == expected[member]
    for snap in expected["snapshots"]:
        record = read_json(GOLDEN_STORE, snap["id"], 3)
        assert record["session"] == expected["session"]
        assert (record["parent"], record["label"], record["turn"]) == (snap["parent"], snap["label"], snap["turn"])
        assert (record["delta"] is None) == (snap["kind"] == "full")
        assert record["state"] == snap["state_hash"]
        state = rebuild_by_the_document(GOLDEN_STORE, snap["id"], doc["bases"])
        assert canonical(state) == canonical(snap["state"])
        assert record["size"] == len(canonical(state))


def test_expected_states_keep_their_types() -> None:
    """The expected files themselves must not have lost 1 / 1.0 / true or -0.0."""
    states = [s["state"] for s in EXPECTED["zoe-table"]["snapshots"]]
    ones = {canonical(s["one"]) for s in states}
    zeros = {canonical(s["zero"]) for s in states}
    assert ones == {b"1", b"1.0", b"true"}
    assert b"-0.0" in zeros and b"0.0" in zeros
    assert all(s["extremes"]["max_u64"] == 2**64 - 1 and s["extremes"]["min_i64"] == -(2**63) for s in states)


# ---------------------------------------------------------------- snapstore reads the golden store


def test_snapstore_opens_it_only_to_upgrade(golden_copy: Path) -> None:
    before = tree_digest(golden_copy)
    for create in (True, False):
        with pytest.raises(FormatVersionError) as err:
            SnapshotStore.open(golden_copy, create=create)
        assert err.value.details["upgrade"] is True
    assert tree_digest(golden_copy) == before, "refusing a store must not change its objects or refs"


def test_upgraded_golden_store_diffs_and_goes_on(golden_copy: Path) -> None:
    upgrade_store(golden_copy)
    check_upgraded(golden_copy)  # every id, record field and state (tests/test_upgrade.py)
    with SnapshotStore.open(golden_copy) as store:
        for expected in EXPECTED.values():
            sess = store.session(expected["session"])
            snaps = expected["snapshots"]
            for a, b in zip(snaps, snaps[1:] + snaps[:1], strict=True):
                patch = sess.diff(a["id"], b["id"])
                assert canonical(jsonpatch.apply_patch(a["state"], patch)) == canonical(b["state"])
            head_state = sess.state(expected["head"])
            new = sess.commit({"after": "golden", "previous": head_state}, label="new", turn=None)
            assert new.parent == expected["head"]
            assert canonical(sess.state(new.id)) == canonical({"after": "golden", "previous": head_state})
        store.gc()
        report = store.verify()
        assert report.ok, report.problems


# ---------------------------------------------------------------- bytes the document shows


def _doc_example_bytes(heading: str = "### 7.2 Example") -> bytes:
    """The bytes of the first hex dump under ``heading`` in docs/format.md."""
    text = FORMAT_DOC.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    block = section[section.index("```") + 3 :]
    block = block[block.index("\n") + 1 : block.index("```")]
    data = bytearray()
    for line in block.splitlines():
        match = re.match(r"^([0-9a-f]{2}(?: {1,2}[0-9a-f]{2})*)", line)
        assert match, f"unexpected line in the hex dump under {heading}: {line!r}"
        data += bytes.fromhex(match.group(1))
    return bytes(data)


def test_doc_example_object_byte_for_byte() -> None:
    assert _doc_example_bytes() == HP7_OBJECT, "docs/format.md §7.2 changed"
    key, blob = codec.encode_object(Kind.STATE, HP7_PAYLOAD)
    assert key == HP7_ID == xxhash.xxh3_128_hexdigest(HP7_PAYLOAD)
    assert blob == HP7_OBJECT
    assert object_path(GOLDEN_STORE, HP7_ID).read_bytes() == HP7_OBJECT, "the golden store holds the §7.2 object"
    assert codec.read_header(HP7_ID, HP7_OBJECT) == (Kind.STATE, codec.CODEC_RAW, 8)
    assert codec.decode_object(HP7_ID, HP7_OBJECT, Kind.STATE) == HP7_PAYLOAD
    assert EXPECTED["doc-example"]["snapshots"][0]["state_hash"] == HP7_ID


def test_header_layout() -> None:
    _, blob = codec.encode_object(Kind.RECORD, b"x" * 100)
    assert codec.HEADER_SIZE == 16
    assert blob[:4] == b"SNPO" and blob[4] == 1 and blob[5] == 3 and blob[6] == 1 and blob[7] == 0
    assert int.from_bytes(blob[8:16], "little") == 100


def test_current_writer_reproduces_golden_objects() -> None:
    """Records and session documents re-encode to the very bytes version 1 wrote; raw objects too."""
    for key in object_keys(GOLDEN_STORE):
        blob = object_path(GOLDEN_STORE, key).read_bytes()
        kind, codec_id, _size = codec.read_header(key, blob)
        payload = codec.decode_object(key, blob, kind)
        if kind == Kind.RECORD:
            assert SnapshotRecord.from_payload(key, payload).to_payload() == payload
        elif kind == Kind.SESSION:
            assert SessionDoc.from_payload(key, payload).to_payload() == payload
        new_key, new_blob = codec.encode_object(kind, payload)
        assert new_key == key
        assert new_blob[: codec.HEADER_SIZE] == blob[: codec.HEADER_SIZE]
        if codec_id == codec.CODEC_RAW:
            assert new_blob == blob
        else:  # zstd output may differ between zstd releases; what it decodes to may not
            assert codec.decode_object(key, new_blob, kind) == payload



def test_a_damaged_version_1_object_is_refused_by_name_never_read_wrong() -> None:
    """Upgrading reads version-1 objects: every changed byte and every truncation of a raw and a
    zstd object gives back the exact payload (a change the format ignores: the reserved byte) or a
    typed error naming the object, never other bytes and never a bare exception."""
    zstd_payload = orjson.dumps({"log": ["the party rests"] * 20, "hp": 7})
    cases = [(HP7_ID, HP7_OBJECT, HP7_PAYLOAD), (*codec.encode_object(Kind.STATE, zstd_payload), zstd_payload)]
    assert cases[1][1][6] == codec.CODEC_ZSTD
    tried = 0
    for key, blob, payload in cases:
        damaged = [blob[:length] for length in range(len(blob))]
        for offset in range(len(blob)):
            for value in (blob[offset] ^ 0x01, blob[offset] ^ 0x80, 0x00, 0xFF):
                if value != blob[offset]:
                    damaged.append(blob[:offset] + bytes([value]) + blob[offset + 1 :])
        for data in damaged:
            try:
                found = codec.decode_object(key, data, Kind.STATE)
            except SnapshotError as exc:
                assert key in str(exc) or exc.details.get("object") == key, exc
            else:
                assert found == payload
            tried += 1
    assert tried > 5 * len(HP7_OBJECT)


def test_a_malformed_version_1_record_or_session_document_is_refused_by_name() -> None:
    """Every field of the golden store's records and session documents dropped, or given a value of
    another type, and the payload cut or made not JSON: a typed error naming the object, or (where the
    format allows the value) a parse that writes back what it read; never a bare exception."""
    tried = 0
    for key in object_keys(GOLDEN_STORE):
        blob = object_path(GOLDEN_STORE, key).read_bytes()
        kind, _codec, _size = codec.read_header(key, blob)
        if kind not in (Kind.RECORD, Kind.SESSION):
            continue
        parse = SnapshotRecord.from_payload if kind == Kind.RECORD else SessionDoc.from_payload
        payload = codec.decode_object(key, blob, kind)
        body = orjson.loads(payload)
        variants = [payload[:cut] for cut in (0, 1, len(payload) // 2, len(payload) - 1)] + [b"[]", b"null", b"\xff"]
        for field in body:
            variants.append(orjson.dumps({k: v for k, v in body.items() if k != field}))
            for wrong in (None, "x", -1, 2**63, 1.5, True, [], {}, "0" * 32):
                variants.append(orjson.dumps({**body, field: wrong}))
        for data in variants:
            try:
                parsed = parse(key, data)
            except SnapshotError as exc:
                assert key in str(exc) or exc.details.get("object") == key, exc
            else:
                assert orjson.loads(parsed.to_payload()) == orjson.loads(data) or parsed.to_payload() == data
            tried += 1
    assert tried > 100

# ---------------------------------------------------------------- newer versions are refused


def _with_version(blob: bytes, version: int) -> bytes:
    return blob[:4] + bytes([version]) + blob[5:]


def _names_both_versions(error: SnapshotError, key: str = "") -> None:
    message = str(error).replace(key, "<id>") if key else str(error)
    assert re.search(r"\b2\b", message) and re.search(r"\b1\b", message), message
    assert str(error.details["version"]) == "2" and error.details["supported"] == 1


def test_object_version_2_is_refused() -> None:
    blob = _with_version(HP7_OBJECT, 2)
    with pytest.raises(FormatVersionError) as err:
        codec.decode_object(HP7_ID, blob)
    _names_both_versions(err.value, HP7_ID)
    assert err.value.details["object"] == HP7_ID
    with pytest.raises(FormatVersionError):
        codec.read_header(HP7_ID, blob)
    with pytest.raises(SnapshotError):  # version 0 was never written
        codec.decode_object(HP7_ID, _with_version(HP7_OBJECT, 0))


@pytest.mark.parametrize("which", ["state", "record"])
def test_upgrade_refuses_version_2_objects(golden_copy: Path, which: str) -> None:
    first = EXPECTED["doc-example"]["snapshots"][0]
    key = first["state_hash"] if which == "state" else first["id"]
    path = object_path(golden_copy, key)
    path.write_bytes(_with_version(path.read_bytes(), 2))
    before = tree_digest(golden_copy)
    with pytest.raises(FormatVersionError) as err:
        upgrade_store(golden_copy)
    _names_both_versions(err.value, key)
    assert err.value.details["object"] == key
    assert tree_digest(golden_copy) == before


def test_store_format_2_in_version_1_refs_is_refused(golden_copy: Path) -> None:
    (golden_copy / "refs" / "config" / "format").write_bytes(b"2\n")
    with pytest.raises(FormatVersionError) as err:
        upgrade_store(golden_copy)
    _names_both_versions(err.value, str(golden_copy))


def test_record_and_session_format_2_are_refused() -> None:
    record_id = EXPECTED["doc-example"]["snapshots"][0]["id"]
    record = orjson.loads(codec.decode_object(record_id, object_path(GOLDEN_STORE, record_id).read_bytes()))
    payload = canonical({**record, "format": 2})
    with pytest.raises(FormatVersionError) as err:
        SnapshotRecord.from_payload("0" * 32, payload)
    _names_both_versions(err.value, "0" * 32)

    doc_key = read_ref(GOLDEN_STORE, EXPECTED["doc-example"]["ref"])
    doc = orjson.loads(codec.decode_object(doc_key, object_path(GOLDEN_STORE, doc_key).read_bytes()))
    with pytest.raises(FormatVersionError) as err:
        SessionDoc.from_payload("0" * 32, canonical({**doc, "format": 2}))
    _names_both_versions(err.value, "0" * 32)


def test_upgrade_refuses_session_document_of_format_2(golden_copy: Path) -> None:
    ref = EXPECTED["doc-example"]["ref"]
    doc_key = read_ref(golden_copy, ref)
    doc = orjson.loads(codec.decode_object(doc_key, object_path(golden_copy, doc_key).read_bytes()))
    new_key, blob = codec.encode_object(Kind.SESSION, canonical({**doc, "format": 2}))
    path = object_path(golden_copy, new_key)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(blob)
    (golden_copy / "refs" / ref).write_text(new_key + "\n", encoding="utf-8")
    with pytest.raises(FormatVersionError) as err:
        upgrade_store(golden_copy)
    _names_both_versions(err.value, new_key)


# ---------------------------------------------------------------- format version 2

GOLDEN_V2 = GOLDEN / "store-v2"
EXPECTED_V2 = {p.stem: orjson.loads(p.read_bytes()) for p in sorted((GOLDEN / "expected-v2").glob("*.json"))}
DOC_EXAMPLE_V2_ID = "23c915508abcd9f82811422b795b5615"  # docs/format.md §4.12


@pytest.fixture
def golden_v2_copy(tmp_path: Path) -> Path:
    return copied(GOLDEN_V2, tmp_path)


def v2_digest(root: Path) -> dict[str, str]:
    """Content of the config and segment files (the lock files are not data)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "lock"
    }


def test_v2_golden_files_are_present() -> None:
    assert set(EXPECTED_V2) == {"campaign", "zoe-table", "long-name"}
    assert (GOLDEN / "make_golden_v2.py").is_file()
    assert (GOLDEN_V2 / "config" / "format").read_bytes() == b"2"
    folders = sorted(p.name for p in (GOLDEN_V2 / "sessions").iterdir())
    assert folders == sorted(e["key"] for e in EXPECTED_V2.values())
    for expected in EXPECTED_V2.values():
        assert v2.session_key(expected["session"]) == expected["key"]  # §4.2, computed from the document
    assert EXPECTED_V2["zoe-table"]["key"] == "Zo%C3%AB%27s%20table"
    assert "~" in EXPECTED_V2["long-name"]["key"]
    total = sum(p.stat().st_size for p in GOLDEN_V2.rglob("*") if p.is_file())
    assert total < 16_000  # tiny on purpose


def test_v2_golden_store_shows_every_part_of_the_format() -> None:
    campaign = EXPECTED_V2["campaign"]
    modes = {e["mode"] for s in campaign["segments"] for e in s["entries"] if "commit" in e}
    metas = [e["meta"] for s in campaign["segments"] for e in s["entries"] if "meta" in e]
    assert len(campaign["segments"]) >= 3 and modes == {0, 1, 2, 3}
    assert campaign["squashed"] and any("head" in m for m in metas) and any("tag" in m for m in metas)
    assert campaign["tags"] and campaign["snapshots"][0]["id"] in campaign["tags"].values()


@pytest.mark.parametrize("slug", sorted(EXPECTED_V2))
def test_v2_document_reader_reads_the_golden_store(slug: str) -> None:
    expected = EXPECTED_V2[slug]
    session = v2.read_session(GOLDEN_V2 / "sessions" / expected["key"])
    assert session.name == expected["session"]
    found_segments = [
        {
            "segment": number,
            "entries": [{"meta": e} if isinstance(e, dict) else {"commit": e.id, "mode": e.mode} for e in entries],
        }
        for number, entries in session.segments.items()
    ]
    assert found_segments == expected["segments"]
    assert session.retained() == [s["id"] for s in expected["snapshots"]]
    assert (session.head, session.tags) == (expected["head"], expected["tags"])
    assert session.settings.get("max_snapshots", 10) == expected["max_snapshots"]
    for sid in session.order:  # every stored snapshot rebuilds to its hash, listed or not
        session.state(sid)
    for snap in expected["snapshots"]:
        record = session.commits[snap["id"]][1].record
        for member in ("parent", "label", "timestamp", "turn", "size", "delta", "depth"):
            assert record[member] == snap[member], member
        assert record["state"] == snap["state_hash"]
        assert canonical(session.state(snap["id"])) == canonical(snap["state"])


def test_v2_squashed_segment_starts_at_a_needed_run() -> None:
    campaign = EXPECTED_V2["campaign"]
    session = v2.read_session(GOLDEN_V2 / "sessions" / campaign["key"])
    for number in campaign["squashed"]:
        commits = [e for e in session.segments[number] if isinstance(e, v2.Commit)]
        assert commits[0].mode == 0 and commits[0].record["parent"] is not None  # rewritten as independent
        retained = set(session.retained()) | set(session.tags.values())
        assert any(c.id in retained for c in commits)


def test_v2_expected_states_keep_their_types() -> None:
    states = [s["state"] for s in EXPECTED_V2["zoe-table"]["snapshots"]]
    assert {canonical(s["one"]) for s in states} == {b"1", b"1.0", b"true"}
    assert all(s["extremes"]["max_u64"] == 2**64 - 1 and s["extremes"]["min_i64"] == -(2**63) for s in states)


def test_v2_doc_example_segment() -> None:
    """docs/format.md §4.12, read by the document's reader and by snapstore, and written again."""
    from snapstore.backends import _framing
    from snapstore.entries import CommitEntry, MetaEntry, decode_entry, encode_commit, encode_meta

    data = _doc_example_bytes("### 4.12 Example")
    frames = v2.read_frames(data)
    assert (frames.torn_at, frames.damaged_at, len(frames.entries)) == (None, None, 2)
    meta, commit_bytes = frames.entries
    commit = v2.parse_commit(commit_bytes, "doc-example")
    v2.decode_payloads([commit])
    assert commit.id == DOC_EXAMPLE_V2_ID and commit.raw == b'{"hp":7}' and commit.mode == 0
    assert f"`{DOC_EXAMPLE_V2_ID}`" in FORMAT_DOC.read_text(encoding="utf-8")

    scanned = _framing.scan(memoryview(data)[_framing.HEADER_SIZE :], _framing.HEADER_SIZE)
    assert scanned.entries == frames.entries and not scanned.torn and scanned.damaged_at is None
    entry = decode_entry(commit_bytes, "doc-example", "doc")
    assert isinstance(entry, CommitEntry) and entry.id == DOC_EXAMPLE_V2_ID
    assert isinstance(decode_entry(meta, "doc-example", "doc"), MetaEntry)
    written = encode_commit(entry.record, entry.mode, entry.raw_length, entry.payload)
    again = data[:8] + _framing.frames([encode_meta(orjson.loads(meta[1:])), written])
    assert again == data


def test_snapstore_reads_the_v2_golden_store(golden_v2_copy: Path) -> None:
    before = v2_digest(golden_v2_copy)
    with SnapshotStore.open(golden_v2_copy, create=False) as store:
        assert store.sessions() == sorted(e["session"] for e in EXPECTED_V2.values())
        for expected in EXPECTED_V2.values():
            sess = store.session(expected["session"])
            assert sess.max_snapshots == expected["max_snapshots"]
            assert sess.snapshot_ids() == [s["id"] for s in expected["snapshots"]]
            assert sess.head is not None and sess.head.id == expected["head"]
            assert sess.tags == expected["tags"]
            for snap, want in zip(sess.snapshots(), expected["snapshots"], strict=True):
                got = {**snap.to_dict(), "timestamp": snap.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
                assert {k: got[k] for k in ("id", "parent", "label", "timestamp", "turn", "kind", "size")} == {
                    k: want[k] for k in ("id", "parent", "label", "timestamp", "turn", "kind", "size")
                }
                assert canonical(sess.state(snap.id)) == canonical(want["state"])
        report = store.verify()
        assert report.ok, report.problems
        assert report.states_rebuilt == sum(len(e["snapshots"]) for e in EXPECTED_V2.values())
    assert v2_digest(golden_v2_copy) == before, "reading a store must not change it"


def test_v2_golden_store_takes_new_commits(golden_v2_copy: Path) -> None:
    with SnapshotStore.open(golden_v2_copy) as store:
        for expected in EXPECTED_V2.values():
            sess = store.session(expected["session"])
            previous = sess.state(expected["head"])
            new = sess.commit({"after": "golden", "previous": previous}, label="new")
            assert new.parent == expected["head"]
            assert canonical(sess.state(new.id)) == canonical({"after": "golden", "previous": previous})
        report = store.verify()
        assert report.ok, report.problems
    for expected in EXPECTED_V2.values():  # and the document's reader still reads what was appended
        v2.read_session(golden_v2_copy / "sessions" / expected["key"]).state(
            v2.read_session(golden_v2_copy / "sessions" / expected["key"]).order[-1]
        )


def test_v2_torn_tail_and_damage_as_the_document_says(golden_v2_copy: Path) -> None:
    expected = EXPECTED_V2["zoe-table"]
    path = golden_v2_copy / "sessions" / expected["key"] / "0000000000000001.seg"
    data = path.read_bytes()
    good = v2.read_frames(data)
    last = len(data) - (12 + len(good.entries[-1]))  # where the last frame starts

    path.write_bytes(data + data[last : last + 20])  # an append cut short: a torn tail
    assert v2.read_frames(path.read_bytes()).torn_at == len(data)
    with SnapshotStore.open(golden_v2_copy) as store:
        assert store.session(expected["session"]).snapshot_ids() == [s["id"] for s in expected["snapshots"]]

    damaged = bytearray(data)
    damaged[last - 5] ^= 0x01  # inside the body of the frame before the last one
    path.write_bytes(bytes(damaged))
    found = v2.read_frames(bytes(damaged))
    assert found.damaged_at is not None and found.damaged_at < last and found.torn_at is None
    with SnapshotStore.open(golden_v2_copy) as store:
        report = store.verify()
        assert not report.ok and any(p.session == expected["session"] for p in report.problems)
        assert all(p.session == expected["session"] for p in report.problems), "other sessions are intact"



@pytest.mark.parametrize(
    ("change", "torn"),
    [
        (lambda body: body[:-1] + bytes([body[-1] ^ 0x01]), False),  # a changed byte in a whole entry
        (lambda body: body[:-1] + b"\0", False),  # one zero byte at its end is a change too
        (lambda body: body[:-8] + bytes(8), True),  # its end never written: zeros, as a crash leaves
    ],
)
def test_v2_a_last_frame_failing_its_body_check_is_told_torn_or_damaged_as_the_document_says(
    golden_v2_copy: Path, change: Any, torn: bool
) -> None:
    """§4.3: a body failing its check at the end of the file is torn only when its last 8 bytes are
    zeros; the document's reader and snapstore tell the same, and a torn one is cut, damage kept."""
    expected = EXPECTED_V2["zoe-table"]
    path = golden_v2_copy / "sessions" / expected["key"] / "0000000000000001.seg"
    data = path.read_bytes()
    body = v2.read_frames(data).entries[-1]
    assert body[-1] != 0, "the case needs a last byte that is not zero"
    last = len(data) - len(body)  # where the last frame's body starts
    path.write_bytes(data[:last] + change(body))
    found = v2.read_frames(path.read_bytes())
    at = last - 12
    assert (found.torn_at, found.damaged_at) == ((at, None) if torn else (None, at))
    with SnapshotStore.open(golden_v2_copy) as store:
        problems = store.verify().problems
        assert bool(problems) is not torn
        store.session(expected["session"]).commit({"after": "the last frame"})
    left = v2.read_frames(path.read_bytes())
    # a torn tail is cut by the next append; damage is never cut, and the commit starts a new segment
    assert (left.torn_at, left.damaged_at) == ((None, None) if torn else (None, at))

# ---------------------------------------------------------------- format version 3
GOLDEN_V3 = GOLDEN / "store-v3"
EXPECTED_V3 = {p.stem: orjson.loads(p.read_bytes()) for p in sorted((GOLDEN / "expected-v3").glob("*.json"))}


@pytest.fixture
def golden_v3_copy(tmp_path: Path) -> Path:
    return copied(GOLDEN_V3, tmp_path)


def test_v3_golden_store_shows_deltas_against_bases() -> None:
    assert set(EXPECTED_V3) == {"guild-hall"}
    assert (GOLDEN / "make_golden_v3.py").is_file()
    assert (GOLDEN_V3 / "config" / "format").read_bytes() == b"3"
    hall = EXPECTED_V3["guild-hall"]
    rows = [e for s in hall["segments"] for e in s["entries"] if "commit" in e]
    assert sum(1 for e in rows if e["base"] is not None) >= 3
    assert any(e["base"] is None and e["mode"] >= 2 for e in rows)  # and deltas against parents
    squashed = [s for s in hall["segments"] if s["segment"] in hall["squashed"]]
    assert squashed and any(e.get("base") for s in squashed for e in s["entries"])
    total = sum(p.stat().st_size for p in GOLDEN_V3.rglob("*") if p.is_file())
    assert total < 16_000  # tiny on purpose


def test_v3_document_reader_reads_the_golden_store() -> None:
    expected = EXPECTED_V3["guild-hall"]
    session = v2.read_session(GOLDEN_V3 / "sessions" / expected["key"])
    found_segments = [
        {
            "segment": number,
            "entries": [
                {"meta": e} if isinstance(e, dict) else {"commit": e.id, "mode": e.mode, "base": e.base}
                for e in entries
            ],
        }
        for number, entries in session.segments.items()
    ]
    assert found_segments == expected["segments"]
    assert session.retained() == [s["id"] for s in expected["snapshots"]]
    assert (session.head, session.tags) == (expected["head"], expected["tags"])
    for sid in session.order:  # every stored snapshot rebuilds to its hash, listed or not (§4.10)
        session.state(sid)
    for snap in expected["snapshots"]:
        record = session.commits[snap["id"]][1].record
        for member in ("parent", "label", "timestamp", "turn", "size", "delta", "depth"):
            assert record[member] == snap[member], member
        assert canonical(session.state(snap["id"])) == canonical(snap["state"])


def test_snapstore_reads_the_v3_golden_store_and_writes_to_it(golden_v3_copy: Path) -> None:
    expected = EXPECTED_V3["guild-hall"]
    before = v2_digest(golden_v3_copy)
    with SnapshotStore.open(golden_v3_copy, create=False) as store:
        assert store.format == 3
        sess = store.session(expected["session"])
        assert sess.snapshot_ids() == [s["id"] for s in expected["snapshots"]]
        for snap, want in zip(sess.snapshots(), expected["snapshots"], strict=True):
            assert (snap.parent, snap.kind, snap.size) == (want["parent"], want["kind"], want["size"])
            assert canonical(sess.state(snap.id)) == canonical(want["state"])
        assert store.verify().ok
    assert v2_digest(golden_v3_copy) == before, "reading a store must not change it"
    with SnapshotStore.open(golden_v3_copy) as first, SnapshotStore.open(golden_v3_copy) as second:
        a, b = first.session(expected["session"]), second.session(expected["session"])
        for k in range(3):
            for sess, who in ((a, "a"), (b, "b")):
                previous = sess.state(sess.head.id)  # type: ignore[union-attr]
                sess.commit({**previous, "after": f"{who}{k}"})
        assert first.verify().ok
    session = v2.read_session(golden_v3_copy / "sessions" / expected["key"])  # the document's reader too
    assert canonical(session.state(session.order[-1]))[:1] == b"{"
    assert (golden_v3_copy / "config" / "format").read_bytes() == b"3"
    assert not any(session.indexes.values()), "a format-3 store gets no INDEX entries (docs/format.md §4.2)"


def test_v3_doc_example_entry_is_in_the_golden_store() -> None:
    """docs/format.md's flag-8 example is the bytes of an entry of the committed version-3 store."""
    text = FORMAT_DOC.read_text(encoding="utf-8")
    block = text[text.index("A COMMIT with flag 8") :]
    block = block[block.index("```\n") + 4 :]
    block = block[: block.index("\n```")]
    shown = bytes.fromhex("".join(line[:49].replace(" ", "") for line in block.splitlines()))
    data = (GOLDEN_V3 / "sessions" / "guild%20hall" / "0000000000000002.seg").read_bytes()
    matching = [e for e in v2.read_frames(data).entries if e.startswith(shown)]
    assert len(matching) == 1
    commit = v2.parse_commit(matching[0], "guild hall")
    assert commit.base is not None and commit.base != commit.record["parent"]
    assert f"`{commit.base}`" in text and f"`{commit.record['parent']}`" in text


# ---------------------------------------------------------------- format version 4
GOLDEN_V4 = GOLDEN / "store-v4"
EXPECTED_V4 = orjson.loads((GOLDEN / "expected-v4" / "chronicle.json").read_bytes())


@pytest.fixture
def golden_v4_copy(tmp_path: Path) -> Path:
    return copied(GOLDEN_V4, tmp_path)


def test_v4_golden_store_shows_index_entries() -> None:
    assert (GOLDEN / "make_golden_v4.py").is_file()
    assert (GOLDEN_V4 / "config" / "format").read_bytes() == b"4"
    indexes = [ids for segment in EXPECTED_V4["segments"] for ids in segment["indexes"]]
    assert [len(ids) for ids in indexes] == [81, 64]  # the format-3 commits and 1 more, then 64
    commits = [e["commit"] for s in EXPECTED_V4["segments"] for e in s["entries"] if "commit" in e]
    assert indexes[0] + indexes[1] == commits[:145] and len(commits) == 200  # 55 after the last


def test_v4_document_reader_reads_the_golden_store() -> None:
    """The reader written from docs/format.md skips INDEX entries as §4.4 says, checks each against
    the hashes of the records of its group (§4.6.1), and finds the session snapstore wrote."""
    expected = EXPECTED_V4
    session = v2.read_session(GOLDEN_V4 / "sessions" / expected["key"])
    found_segments = [
        {
            "segment": number,
            "entries": [
                {"meta": e} if isinstance(e, dict) else {"commit": e.id, "mode": e.mode} for e in entries
            ],
            "indexes": session.indexes[number],
        }
        for number, entries in session.segments.items()
    ]
    assert found_segments == expected["segments"]
    assert session.retained() == [s["id"] for s in expected["snapshots"]]
    assert (session.head, session.tags) == (expected["head"], expected["tags"])
    for snap in expected["snapshots"]:
        record = session.commits[snap["id"]][1].record
        for member in ("parent", "label", "timestamp", "turn", "size", "delta", "depth"):
            assert record[member] == snap[member], member
        state = session.state(snap["id"])
        if "state" in snap:
            assert canonical(state) == canonical(snap["state"])


def test_snapstore_reads_the_v4_golden_store_and_writes_to_it(golden_v4_copy: Path) -> None:
    expected = EXPECTED_V4
    before = v2_digest(golden_v4_copy)
    with SnapshotStore.open(golden_v4_copy, create=False) as store:
        assert store.format == 4
        sess = store.session(expected["session"])
        assert sess.snapshot_ids() == [s["id"] for s in expected["snapshots"]]
        for snap, want in zip(sess.snapshots(), expected["snapshots"], strict=True):
            assert (snap.parent, snap.kind, snap.size, snap.label) == (
                want["parent"], want["kind"], want["size"], want["label"]
            )
            if "state" in want:
                assert canonical(sess.state(snap.id)) == canonical(want["state"])
        assert store.verify().ok
    assert v2_digest(golden_v4_copy) == before, "reading a store must not change it"
    with SnapshotStore.open(golden_v4_copy) as store:
        sess = store.session(expected["session"])
        for turn in range(200, 210):  # the segment's commits since its last INDEX reach 64: one more
            sess.commit({"turn": turn}, label=f"day {turn}", turn=turn)
        assert store.verify().ok
    session = v2.read_session(golden_v4_copy / "sessions" / expected["key"])  # the document's reader too
    assert [len(ids) for ids in session.indexes[1]] == [81, 64, 64]
    assert session.indexes[1][2] == session.order[145:209]
