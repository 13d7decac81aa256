"""Archives: export and import round trips, conflict policies, and every refusal of a bad archive.

The bad archives are built here from the byte layout in docs/format.md ("Archive format,
version 1"), independently of snapstore's writer: read an archive into its parts, change one
thing, write it back with (or without) fresh checksums. Archives written by the format-1
store (tests/data/archive-v1, made by that build) must import into today's store.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import random
import struct
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import xxhash
import zstandard

import format_v2_reader
from conftest import EntriesExamined, canonical
from snapstore import FormatVersionError, Session, SnapshotError, SnapshotNotFound, SnapshotStore
from snapstore import archive as archive_module
from snapstore.archive import ArchiveError, ExportReport, ImportReport, check_archive, import_archive, importer
from snapstore.archive import contents as archive_contents
from snapstore.archive import sessions as archive_sessions
from snapstore.backends import MemoryBackend
from snapstore.codec import MAX_OBJECT_SIZE, object_id

TRAILER = struct.Struct("<QQQQQ16s16sQ4s4s")
ENTRY = struct.Struct("<32sQIB3s")
STATE, DELTA, RECORD, STATE_PATCH = 1, 2, 3, 5
V1_ARCHIVES = Path(__file__).parent / "data" / "archive-v1"


# ---------------------------------------------------------------- archive surgery


@dataclass
class Parts:
    """An archive taken apart: change a field, then ``build`` writes it back."""

    version: int
    payloads: list[bytes]
    entries: list[list[Any]]  # [hex id, offset, length, kind]
    manifest: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Parts:
        data = path.read_bytes()
        assert data[:4] == b"SNPA" and data[-4:] == b"SNPT"
        fields = TRAILER.unpack(data[-TRAILER.size :])
        frames_length, body_size, payloads_size, manifest_size, count = fields[:5]
        assert 8 + frames_length + TRAILER.size == len(data)
        body = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data[8 : -TRAILER.size]), read_across_frames=True)
        raw = body.read()
        assert len(raw) == body_size
        manifest = orjson.loads(raw[payloads_size : payloads_size + manifest_size])
        entries = []
        payloads = []
        for key, offset, length, kind, _reserved in ENTRY.iter_unpack(raw[payloads_size + manifest_size :]):
            entries.append([key.decode(), offset, length, kind])
            payloads.append(raw[offset : offset + length])
        assert len(entries) == count
        return cls(data[4], payloads, entries, manifest)

    def index(self, key: str) -> int:
        return next(i for i, e in enumerate(self.entries) if e[0] == key)

    def body(self) -> tuple[bytes, bytes, bytes]:
        """(payloads, manifest, index), with offsets and lengths recomputed from the payloads."""
        offset = 0
        for entry, payload in zip(self.entries, self.payloads, strict=True):
            entry[1], entry[2] = offset, len(payload)
            offset += len(payload)
        manifest = orjson.dumps(self.manifest, option=orjson.OPT_SORT_KEYS)
        index = b"".join(ENTRY.pack(k.encode(), o, n, kind, b"\0\0\0") for k, o, n, kind in self.entries)
        return b"".join(self.payloads), manifest, index

    def build(self, path: Path, *, raw_index: bytes | None = None, **override: Any) -> Path:
        payloads, manifest, index = self.body()
        if raw_index is not None:
            index = raw_index
        body = override.pop("body", payloads + manifest + index)
        frames = override.pop("frames", None) or zstandard.ZstdCompressor(level=3).compress(body)
        fields = {
            "frames_length": len(frames),
            "body_size": len(body),
            "payloads_size": len(payloads),
            "manifest_size": len(manifest),
            "count": len(index) // ENTRY.size,
            "frames_hash": xxhash.xxh3_128_digest(frames),
            "meta_hash": xxhash.xxh3_128_digest(manifest + index),
        }
        fields.update(override)
        head = struct.pack("<QQQQQ16s16s", *fields.values())
        trailer = TRAILER.pack(*fields.values(), xxhash.xxh3_64_intdigest(head), b"\0" * 4, b"SNPT")
        path.write_bytes(b"SNPA" + bytes([self.version, 0, 0, 0]) + frames + trailer)
        return path


def contents(store: SnapshotStore) -> tuple[list[tuple[str, int, list[bytes]]], list[str]]:
    """Everything a refused import must leave alone: every session's segments, entry by entry, and
    (directory store) every file."""
    backend = store.backend
    segments = [
        (key, info.segment, backend.read_segment(key, info.segment).entries)
        for key in backend.session_keys()
        for info in backend.segments(key)
    ]
    files: list[str] = []
    root = getattr(backend, "root", None)
    if root is not None:
        files = sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())
    return segments, files


WORDS = ["ab", "cd", "ef", "gh", "ij"]


def play(sess: Any, turns: int, *, start: int = 0, seed: int = 7) -> list[Any]:
    """Commit a small game: a growing log plus values whose types must survive (1, 1.0, true)."""
    rng = random.Random(seed)
    snaps = []
    state: dict[str, Any] = {"log": [], "hero": {"hp": 10, "gold": 0.0}, "mode": 1, "zoë/~": "ünï"}
    for turn in range(start, start + turns):
        state["log"].append({"turn": turn, "text": " ".join(rng.choice(WORDS) for _ in range(12))})
        state["hero"]["hp"] = rng.randint(0, 20)
        state["hero"]["gold"] = float(turn) / 2
        state["mode"] = (1, 1.0, True)[turn % 3]
        if turn % 7 == 0:
            state[f"k{turn}"] = {"nested": [turn, -0.0, None]}
        snaps.append(sess.commit(state, label=f"turn {turn}", turn=turn))
    return snaps


@pytest.fixture
def source() -> SnapshotStore:
    """Two sessions with keyframes, retained and evicted snapshots."""
    store = SnapshotStore.memory(max_chain=6)
    play(store.session("campaign", max_snapshots=40), 55)
    play(store.session("side quest"), 12, seed=3)
    return store


@pytest.fixture
def archive(source: SnapshotStore, tmp_path: Path) -> Path:
    path = tmp_path / "all.snaparchive"
    source.export(path)
    return path


def assert_same_session(a: SnapshotStore, b: SnapshotStore, name: str, b_name: str | None = None) -> None:
    x, y = a.session(name), b.session(b_name or name)
    assert y.snapshot_ids() == x.snapshot_ids()
    assert y.head is not None and x.head is not None and y.head.id == x.head.id
    for sid in x.snapshot_ids():
        assert canonical(y.state(sid)) == canonical(x.state(sid))
        # how a snapshot is stored (``kind``) is the importing store's keyframe policy's choice
        assert dataclasses.replace(y.snapshot(sid), kind="full") == dataclasses.replace(x.snapshot(sid), kind="full")


# ---------------------------------------------------------------- round trips


def test_round_trip_all_sessions_into_an_empty_store(
    source: SnapshotStore, archive: Path, make_store: Callable[..., SnapshotStore]
) -> None:
    target = make_store()
    report = target.import_archive(archive)
    assert isinstance(report, ImportReport)
    assert sorted(report.created) == ["campaign", "side quest"]
    assert report.objects_present == 0 and report.objects_written > 0
    assert target.sessions() == ["campaign", "side quest"]
    for name in target.sessions():
        assert_same_session(source, target, name)
    assert target.session("campaign").max_snapshots == 40
    assert target.verify().ok
    # the imported store goes on where the source left off
    target.session("campaign").commit({"next": True})
    assert target.verify().ok


def test_export_report_and_archive_is_smaller_than_the_store(source: SnapshotStore, tmp_path: Path) -> None:
    path = tmp_path / "a.snaparchive"
    report = source.export(path)
    assert isinstance(report, ExportReport)
    assert report.path == str(path) and report.archive_bytes == path.stat().st_size
    assert report.sessions == ["campaign", "side quest"]
    assert report.snapshots == 40 + 10
    assert report.archive_bytes < source.stats()["stored_bytes"]  # one zstd-19 stream: deltas share context
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_keyframes_with_a_parent_travel_as_state_patches(archive: Path) -> None:
    kinds = [e[3] for e in Parts.read(archive).entries]
    assert kinds.count(STATE_PATCH) >= 5
    # payloads first in chain order, records after every delta and state
    last_chain = max(i for i, k in enumerate(kinds) if k != RECORD)
    assert all(k == RECORD for k in kinds[last_chain + 1 :])


def test_export_one_session(source: SnapshotStore, tmp_path: Path) -> None:
    path = tmp_path / "one.snaparchive"
    report = source.export(path, sessions=["side quest"])
    assert report.sessions == ["side quest"]
    target = SnapshotStore.memory()
    target.import_archive(path)
    assert target.sessions() == ["side quest"]
    assert_same_session(source, target, "side quest")
    assert target.verify().ok


def test_export_chosen_snapshots_by_prefix(source: SnapshotStore, tmp_path: Path) -> None:
    sess = source.session("campaign")
    ids = sess.snapshot_ids()
    chosen = [ids[3], ids[20], ids[-5]]
    path = tmp_path / "some.snaparchive"
    report = source.export(path, snapshots=[sid[:10] for sid in chosen])
    assert report.sessions == ["campaign"] and report.snapshots == 3
    target = SnapshotStore.memory()
    target.import_archive(path)
    copy = target.session("campaign")
    assert copy.snapshot_ids() == chosen
    assert copy.head is not None and copy.head.id == chosen[-1]  # the source's head was not chosen
    for sid in chosen:
        assert canonical(copy.state(sid)) == canonical(sess.state(sid))
    assert target.verify().ok
    # only what the chosen snapshots need: far fewer records than the session holds
    kinds = [e[3] for e in Parts.read(path).entries]
    assert kinds.count(RECORD) <= 3 * 7  # max_chain=6: at most 7 records per chain
    # gc in the target keeps everything the imported chains need
    target.gc()
    assert target.verify().ok
    assert canonical(target.session("campaign").state(chosen[0])) == canonical(sess.state(chosen[0]))


def test_export_snapshots_within_named_sessions_and_unknown_ids(source: SnapshotStore, tmp_path: Path) -> None:
    sid = source.session("side quest").snapshot_ids()[2]
    with pytest.raises(SnapshotNotFound):
        source.export(tmp_path / "x", sessions=["campaign"], snapshots=[sid])
    with pytest.raises(SnapshotNotFound):
        source.export(tmp_path / "x", snapshots=["0123456789abcdef"])
    with pytest.raises(SnapshotNotFound):
        source.export(tmp_path / "x", sessions=["nope"])
    assert not list(tmp_path.glob("x*")) and not list(tmp_path.glob(".x*"))
    source.export(tmp_path / "ok", sessions="side quest", snapshots=sid[:8])
    target = SnapshotStore.memory()
    target.import_archive(tmp_path / "ok")
    assert target.session("side quest").snapshot_ids() == [sid]


def test_merging_a_longer_archive_writes_only_what_the_session_lacks(source: SnapshotStore, tmp_path: Path) -> None:
    ids = source.session("campaign").snapshot_ids()
    early, full = tmp_path / "early.snaparchive", tmp_path / "full.snaparchive"
    source.export(early, snapshots=ids[:10])
    source.export(full, sessions=["campaign"])
    target = SnapshotStore.open(tmp_path / "target")
    target.import_archive(early)
    report = target.import_archive(full, on_conflict="merge")
    assert report.merged == ["campaign"]
    assert report.snapshots_present == 10 and report.snapshots_written == len(ids) - 10
    (merged,) = report.sessions
    assert merged.previous_head == ids[9] and merged.head == ids[-1]
    assert any("head moved" in note and "extends" in note for note in merged.notes)
    copy, original = target.session("campaign"), source.session("campaign")
    assert copy.snapshot_ids() == ids
    for sid in ids:
        assert canonical(copy.state(sid)) == canonical(original.state(sid))
    assert target.verify().ok


def test_import_same_archive_twice_is_a_no_op(archive: Path, tmp_path: Path) -> None:
    target = SnapshotStore.open(tmp_path / "target")
    target.import_archive(archive)
    before = contents(target)
    report = target.import_archive(archive)
    assert sorted(report.unchanged) == ["campaign", "side quest"]
    assert report.objects_written == 0 and not report.created
    assert contents(target) == before


def test_delta_records_stored_whole_travel_as_bases(source: SnapshotStore, tmp_path: Path) -> None:
    """Importing chosen snapshots stores the first of each chain whole (its parent stays behind) while
    its record, and id, still name a delta: exported again, the archive lists it as a base."""
    ids = source.session("campaign").snapshot_ids()
    chosen = [ids[3], ids[4], ids[20]]
    first, second = tmp_path / "first.snaparchive", tmp_path / "second.snaparchive"
    source.export(first, snapshots=chosen)
    middle = SnapshotStore.open(tmp_path / "middle")
    middle.import_archive(first)
    middle.export(second)
    (doc,) = Parts.read(second).manifest["sessions"]
    assert doc["snapshots"] == chosen and doc["evicted"] == []
    assert ids[3] in doc["bases"] and ids[4] not in doc["bases"]  # ids[4] is a delta on ids[3]
    target = SnapshotStore.memory()
    target.import_archive(second)
    assert_same_session(middle, target, "campaign")
    for sid in chosen:
        assert canonical(target.session("campaign").state(sid)) == canonical(source.session("campaign").state(sid))
    assert target.verify().ok


def test_rolled_back_session_with_forks_round_trips(tmp_path: Path) -> None:
    store = SnapshotStore.memory(max_chain=4)
    sess = store.session("fork", max_snapshots=100)
    snaps = play(sess, 12)
    sess.rollback(snaps[5].id)
    play(sess, 9, start=100, seed=11)
    path = tmp_path / "f.snaparchive"
    store.export(path)
    target = SnapshotStore.memory()
    target.import_archive(path)
    assert_same_session(store, target, "fork")
    assert target.verify().ok


def test_empty_store_and_empty_session(tmp_path: Path) -> None:
    empty = SnapshotStore.memory()
    empty.export(tmp_path / "none")
    target = SnapshotStore.memory()
    assert target.import_archive(tmp_path / "none") == ImportReport()
    empty.session("blank", max_snapshots=3)
    empty.export(tmp_path / "blank")
    target.import_archive(tmp_path / "blank")
    assert target.sessions() == ["blank"] and len(target.session("blank")) == 0
    assert target.session("blank").max_snapshots == 3


def test_progress_is_reported_at_least_every_n_objects(source: SnapshotStore, tmp_path: Path) -> None:
    calls: list[tuple[int, int | None, str]] = []
    path = tmp_path / "p.snaparchive"
    report = source.export(path, progress=lambda d, t, w: calls.append((d, t, w)))
    done = [d for d, _t, w in calls if w == "exporting objects"]
    assert done[-1] == report.objects and calls[-1][1] == report.objects
    assert all(b - a <= archive_module.PROGRESS_EVERY for a, b in zip([0, *done], done, strict=False))
    calls.clear()
    SnapshotStore.memory().import_archive(path, progress=lambda d, t, w: calls.append((d, t, w)))
    phases = {w for _d, _t, w in calls}
    assert {"reading archive", "verifying objects", "checking states", "importing snapshots"} <= phases
    for phase in ("verifying objects", "checking states", "importing snapshots"):
        done = [d for d, _t, w in calls if w == phase]
        totals = {t for _d, t, w in calls if w == phase}
        assert len(totals) == 1 and done[-1] == totals.pop()
        assert all(b - a <= archive_module.PROGRESS_EVERY for a, b in zip([0, *done], done, strict=False))


# ---------------------------------------------------------------- conflicts


def test_existing_session_with_other_snapshots_is_refused_by_default(archive: Path, tmp_path: Path) -> None:
    target = SnapshotStore.open(tmp_path / "target")
    play(target.session("campaign"), 3, seed=99)
    before = contents(target)
    with pytest.raises(ArchiveError, match="'campaign'") as info:
        target.import_archive(archive)
    assert info.value.details["sessions"] == ["campaign"]
    assert "on_conflict" in str(info.value)
    assert contents(target) == before


def test_conflict_merge_of_another_history_keeps_the_local_head_and_says_so(
    source: SnapshotStore, archive: Path
) -> None:
    target = SnapshotStore.memory()
    local = play(target.session("campaign", max_snapshots=5), 3, seed=99)
    report = target.import_archive(archive, on_conflict="merge")
    assert report.merged == ["campaign"] and report.created == ["side quest"]
    sess = target.session("campaign")
    remote = source.session("campaign").snapshot_ids()
    assert sess.snapshot_ids() == [s.id for s in local] + remote
    assert sess.head is not None and sess.head.id == local[-1].id
    merged = next(item for item in report.sessions if item.session == "campaign")
    assert merged.head == local[-1].id and merged.previous_head == local[-1].id
    assert any("head stays" in note and "does not extend" in note for note in merged.notes)
    # raised so that the import evicts nothing, and said so
    assert sess.max_snapshots == merged.max_snapshots == len(local) + len(remote)
    assert merged.previous_max_snapshots == 5
    assert any(f"raised from 5 to {len(local) + len(remote)}" in note for note in report.notes())
    for sid in remote:
        assert canonical(sess.state(sid)) == canonical(source.session("campaign").state(sid))
    assert target.verify().ok
    assert target.import_archive(archive, on_conflict="merge").unchanged == ["campaign", "side quest"]


def test_conflict_merge_never_lowers_the_limit(source: SnapshotStore, tmp_path: Path) -> None:
    ids = source.session("side quest").snapshot_ids()
    path = tmp_path / "side.snaparchive"
    source.export(path, sessions=["side quest"])
    target = SnapshotStore.memory()
    sess = target.session("side quest", max_snapshots=500)
    play(sess, 2, seed=1)
    report = target.import_archive(path, on_conflict="merge")
    (merged,) = report.sessions
    assert sess.max_snapshots == merged.max_snapshots == 500 and merged.previous_max_snapshots is None
    assert not any("max_snapshots" in note for note in merged.notes)
    assert sess.snapshot_ids()[2:] == ids


def test_conflict_replace_swaps_in_the_archive_document(source: SnapshotStore, archive: Path) -> None:
    target = SnapshotStore.memory()
    cached = target.session("campaign")
    play(cached, 3, seed=99)
    report = target.import_archive(archive, on_conflict="replace")
    assert report.replaced == ["campaign"]
    assert_same_session(source, target, "campaign")
    assert cached.head is not None and cached.head.id == source.session("campaign").head.id  # type: ignore[union-attr]
    target.gc()
    assert target.verify().ok


@pytest.mark.parametrize("policy", ["error", "merge", "replace", "rename"])
def test_a_session_holding_the_whole_archive_is_left_alone_whatever_the_policy(
    source: SnapshotStore, archive: Path, policy: str
) -> None:
    """No conflict, nothing for on_conflict to decide: a second import renamed the sessions again,
    and replace dropped a commit made since the first import."""
    target = SnapshotStore.memory()
    target.import_archive(archive)
    target.session("campaign").set_max_snapshots(100)  # the commit below evicts nothing
    since = target.session("campaign").commit({"made": "after the import"})
    before = contents(target)
    report = target.import_archive(archive, on_conflict=policy)
    assert report.unchanged == ["campaign", "side quest"]
    assert not report.renamed and not report.replaced and not report.created and not report.merged
    assert contents(target) == before
    head = target.session("campaign").head
    assert head is not None and head.id == since.id


def test_conflict_rename_imports_beside(source: SnapshotStore, archive: Path) -> None:
    target = SnapshotStore.memory()
    mine = play(target.session("campaign"), 3, seed=99)
    report = target.import_archive(archive, on_conflict="rename")
    assert report.renamed == {"campaign": "campaign-imported"}
    assert target.session("campaign").snapshot_ids() == [s.id for s in mine[-3:]]
    # snapshot ids hash their session's name: the renamed copy has new ids, mapped in the report
    original, copy = source.session("campaign"), target.session("campaign-imported")
    (renamed,) = [item for item in report.sessions if item.action == "renamed"]
    assert copy.snapshot_ids() == [renamed.renamed_ids[sid] for sid in original.snapshot_ids()]
    assert not set(copy.snapshot_ids()) & set(original.snapshot_ids())
    assert copy.head is not None and original.head is not None
    assert copy.head.id == renamed.renamed_ids[original.head.id] == renamed.head
    for sid in original.snapshot_ids():
        assert canonical(copy.state(renamed.renamed_ids[sid])) == canonical(original.state(sid))
        theirs, ours = original.snapshot(sid), copy.snapshot(renamed.renamed_ids[sid])
        assert (ours.label, ours.turn, ours.timestamp, ours.state_hash) == (
            theirs.label, theirs.turn, theirs.timestamp, theirs.state_hash
        )  # fmt: skip
        assert ours.session == "campaign-imported"
    assert any("new ids" in note for note in renamed.notes)
    again = target.import_archive(archive, on_conflict="rename")
    assert again.renamed["campaign"] == "campaign-imported-2"
    assert target.verify().ok


@pytest.mark.parametrize("policy", ["error", "merge", "replace", "rename"])
def test_session_created_during_the_import_follows_the_policy(
    source: SnapshotStore, archive: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    target = SnapshotStore.memory()
    plan = archive_sessions.plan_sessions

    def racing(reader: Any, on_conflict: str) -> Any:
        actions = plan(reader, on_conflict)  # planned as "create": the store had no such session
        play(reader.store.session("campaign"), 2, seed=42)  # then another writer creates it
        return actions

    monkeypatch.setattr(archive_sessions, "plan_sessions", racing)
    if policy == "error":
        with pytest.raises(ArchiveError, match="created by someone else"):
            target.import_archive(archive)
        assert len(target.session("campaign")) == 2
        return
    report = target.import_archive(archive, on_conflict=policy)
    remote = source.session("campaign").snapshot_ids()
    if policy == "merge":
        assert report.merged == ["campaign"] and len(target.session("campaign")) == 2 + len(remote)
    elif policy == "replace":
        assert report.replaced == ["campaign"] and target.session("campaign").snapshot_ids() == remote
    else:
        assert report.renamed == {"campaign": "campaign-imported"}
        (renamed,) = [item for item in report.sessions if item.action == "renamed"]
        assert target.session("campaign-imported").snapshot_ids() == [renamed.renamed_ids[sid] for sid in remote]
        assert len(target.session("campaign")) == 2
    assert target.verify().ok


def test_unknown_conflict_policy(archive: Path) -> None:
    with pytest.raises(SnapshotError, match="on_conflict"):
        SnapshotStore.memory().import_archive(archive, on_conflict="overwrite")


# ---------------------------------------------------------------- export_state


def test_export_state_writes_pretty_type_exact_json(tmp_path: Path) -> None:
    store = SnapshotStore.memory()
    sess = store.session("s")
    state = {"b": 1, "a": [1.0, True, None, -0.0, 1e16], "ü": "Zoë ~/", "n": {"z": 1.5, "y": 2}}
    snap = sess.commit(state)
    sess.commit({"other": 1})
    path = tmp_path / "state.json"
    written = sess.export_state(snap.id[:8], path)
    data = path.read_bytes()
    assert written == len(data)
    assert data == orjson.dumps(state, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    assert data.startswith(b'{\n  "a": [\n    1.0,\n    true,')
    assert "Zoë".encode() in data  # UTF-8, not \u escapes
    assert canonical(orjson.loads(data)) == canonical(state)
    with pytest.raises(SnapshotNotFound):
        sess.export_state("ffffffffffff", tmp_path / "nope.json")
    assert not (tmp_path / "nope.json").exists()


def test_export_state_that_cannot_be_written_is_a_typed_error_and_leaves_the_path_as_it_was(tmp_path: Path) -> None:
    """Found by an outside trial: a missing folder raised Python's own FileNotFoundError, and a
    file was written in place, so a failure part way left it half written."""
    sess = SnapshotStore.memory().session("s")
    snap = sess.commit({"turn": 1})
    missing = tmp_path / "no-such-folder" / "state.json"
    with pytest.raises(ArchiveError, match="no-such-folder") as raised:
        sess.export_state(snap.id, missing)
    assert raised.value.details["path"] == str(missing) and raised.value.details["errno"] == errno.ENOENT
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(ArchiveError, match="a-folder"):
        sess.export_state(snap.id, folder)
    kept = tmp_path / "kept.json"
    kept.write_bytes(b"what was there")
    sess.export_state(snap.id, kept)
    assert orjson.loads(kept.read_bytes()) == {"turn": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder", "kept.json"]  # no temporary left


# ---------------------------------------------------------------- refusals


@pytest.fixture
def target(tmp_path: Path) -> SnapshotStore:
    """A directory store with data of its own, to show a refused import changes nothing."""
    store = SnapshotStore.open(tmp_path / "target")
    play(store.session("mine"), 4, seed=5)
    return store


def refused(target: SnapshotStore, path: Path, error: type[Exception] = ArchiveError, **kw: Any) -> SnapshotError:
    before = contents(target)
    with pytest.raises(error) as info:
        target.import_archive(path, **kw)
    assert contents(target) == before
    assert str(info.value)
    return info.value  # type: ignore[return-value]


@pytest.mark.parametrize("keep", [0, 3, 8, 20, 95, "half", -200, -89, -88, -60, -1])
def test_truncated_archive(archive: Path, target: SnapshotStore, tmp_path: Path, keep: int | str) -> None:
    data = archive.read_bytes()
    cut = len(data) // 2 if isinstance(keep, str) else keep
    bad = tmp_path / "cut.snaparchive"
    bad.write_bytes(data[:cut])
    error = refused(target, bad)
    assert error.details["reason"] in ("truncated", "bad magic", "length mismatch", "trailer checksum")


def test_appended_bytes(archive: Path, target: SnapshotStore, tmp_path: Path) -> None:
    bad = tmp_path / "long.snaparchive"
    bad.write_bytes(archive.read_bytes() + b"\0" * 10)
    refused(target, bad)


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1 :]


@pytest.mark.parametrize("where", [8, 100, "middle", -89])
def test_flipped_byte_in_compressed_stream(archive: Path, target: SnapshotStore, tmp_path: Path, where: Any) -> None:
    data = archive.read_bytes()
    at = len(data) // 2 if where == "middle" else where % len(data)
    bad = tmp_path / "flip.snaparchive"
    bad.write_bytes(flip(data, at))
    assert refused(target, bad).details["reason"] == "data checksum"


@pytest.mark.parametrize("at", range(0, 72, 9))
def test_flipped_byte_in_trailer(archive: Path, target: SnapshotStore, tmp_path: Path, at: int) -> None:
    data = archive.read_bytes()
    bad = tmp_path / "flip.snaparchive"
    bad.write_bytes(flip(data, len(data) - TRAILER.size + at))
    assert refused(target, bad).details["reason"] == "trailer checksum"


@pytest.mark.parametrize("region", ["manifest", "index"])
def test_flipped_byte_in_manifest_or_index(archive: Path, target: SnapshotStore, tmp_path: Path, region: str) -> None:
    """The frames are re-compressed with a fresh stream checksum; only the metadata checksum can tell."""
    parts = Parts.read(archive)
    payloads, manifest, index = parts.body()
    meta_hash = xxhash.xxh3_128_digest(manifest + index)  # the checksum of the unchanged metadata
    if region == "manifest":
        manifest = flip(manifest, len(manifest) // 2)
    else:
        index = flip(index, ENTRY.size * 3 + 5)
    bad = parts.build(tmp_path / "meta.snaparchive", body=payloads + manifest + index, meta_hash=meta_hash)
    assert refused(target, bad).details["reason"] == "meta checksum"


@pytest.mark.parametrize("kind", [DELTA, RECORD, STATE])
def test_tampered_object_with_recomputed_checksums(
    archive: Path, target: SnapshotStore, tmp_path: Path, kind: int
) -> None:
    parts = Parts.read(archive)
    i = next(i for i, e in enumerate(parts.entries) if e[3] == kind)
    payload = parts.payloads[i]
    digit = next(at for at in range(len(payload)) if payload[at : at + 1].isdigit())
    parts.payloads[i] = payload[:digit] + (b"7" if payload[digit : digit + 1] != b"7" else b"8") + payload[digit + 1 :]
    error = refused(target, parts.build(tmp_path / "tampered.snaparchive"))
    assert error.details["reason"] == "hash mismatch"
    assert error.details["object"] == parts.entries[i][0]
    assert parts.entries[i][0] in str(error)


def test_tampered_state_patch_is_caught_when_rebuilt(archive: Path, target: SnapshotStore, tmp_path: Path) -> None:
    parts = Parts.read(archive)
    i = next(i for i, e in enumerate(parts.entries) if e[3] == STATE_PATCH)
    body = orjson.loads(parts.payloads[i])
    body["patch"].append({"op": "add", "path": "/sneaky", "value": 1})
    parts.payloads[i] = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    error = refused(target, parts.build(tmp_path / "patch.snaparchive"))
    assert error.details["reason"] == "hash mismatch" and error.details["object"] == parts.entries[i][0]


@pytest.mark.parametrize("names", [DELTA, STATE])
def test_state_patch_whose_parent_is_not_a_snapshot_is_refused(
    archive: Path, target: SnapshotStore, tmp_path: Path, names: int
) -> None:
    """A patch's parent is a snapshot's id; one naming a delta or a state object (re-signed, so the
    checksums hold) is refused by a typed error, not read as a record (a TypeError or KeyError)."""
    parts = Parts.read(archive)
    i = next(i for i, e in enumerate(parts.entries) if e[3] == STATE_PATCH)
    body = orjson.loads(parts.payloads[i])
    body["parent"] = next(e[0] for e in parts.entries if e[3] == names)
    parts.payloads[i] = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    error = refused(target, parts.build(tmp_path / "parent.snaparchive"))
    assert error.details["reason"] == "wrong kind" and error.details["object"] == body["parent"]


def test_a_session_two_handles_wrote_imports_as_compact_as_it_was(tmp_path: Path) -> None:
    """Two handles taking turns store each commit against the state that handle last held (a
    record naming no delta); the archive carries those states as patches from their parents, and
    the import stores them as such deltas again, not each as a keyframe (8x the bytes before)."""
    rng = random.Random(2)
    source = SnapshotStore.open(tmp_path / "source")
    other = SnapshotStore.open(tmp_path / "source")
    a, b = source.session("g", max_snapshots=1000), other.session("g")
    state: dict[str, Any] = {"items": {str(i): {"v": rng.random(), "w": i} for i in range(3000)}}
    for turn in range(60):
        for key in rng.sample(sorted(state["items"]), 20):
            state["items"][key]["v"] = rng.random()
        (a if turn % 2 else b).commit(state, turn=turn)
    other.close()
    keyframes = sum(s.kind == "full" for s in a.snapshots())
    assert keyframes <= 4  # nearly all deltas
    source.export(tmp_path / "g.snaparchive")
    target = SnapshotStore.open(tmp_path / "target")
    target.import_archive(tmp_path / "g.snaparchive")
    assert_same_session(source, target, "g")
    imported = target.session("g").snapshots()
    assert sum(s.kind == "full" for s in imported) <= keyframes
    assert target.stats()["stored_bytes"] < 1.2 * source.stats()["stored_bytes"]
    assert SnapshotStore.open(tmp_path / "target").verify(read_data=True).ok
    for sid in target.session("g").snapshot_ids():  # read back by a fresh handle, each checked against its hash
        assert canonical(SnapshotStore.open(tmp_path / "target").session("g").state(sid)) == canonical(
            source.session("g").state(sid)
        )
    # and by the reader written from docs/format.md alone: a COMMIT whose base is its parent (§4.6)
    written = format_v2_reader.read_session(tmp_path / "target" / "sessions" / "g")
    assert sum(commit.base == commit.record["parent"] for _number, commit in written.commits.values()) > 40
    for sid in target.session("g").snapshot_ids():
        assert canonical(written.state(sid)) == canonical(source.session("g").state(sid))


def _two_writer_archive(tmp_path: Path, turns: int = 12) -> tuple[SnapshotStore, Path]:
    """A session two handles wrote in turns (records naming no delta), exported."""
    source = SnapshotStore.open(tmp_path / "source")
    other = SnapshotStore.open(tmp_path / "source")
    a, b = source.session("g", max_snapshots=1000), other.session("g")
    state: dict[str, Any] = {"n": 0, "pad": list(range(500))}
    for turn in range(turns):
        state["n"] = turn
        (a if turn % 2 else b).commit(state, turn=turn)
    other.close()
    source.export(tmp_path / "g.snaparchive")
    return source, tmp_path / "g.snaparchive"


def test_a_record_naming_no_delta_but_a_chain_is_imported_whole(tmp_path: Path) -> None:
    """A record stored whole says depth 0 and no chain bytes; one (from another writer) that names
    chain bytes passes the archive's checks, and is imported as a full state, readable, not as a
    delta against its parent that the store would then read as damage."""
    source, path = _two_writer_archive(tmp_path, 4)
    parts = Parts.read(path)
    doc = parts.manifest["sessions"][0]
    head = doc["head"]
    i = parts.index(head)
    record = orjson.loads(parts.payloads[i])
    assert record["delta"] is None
    record["chain_bytes"] = 5
    parts.payloads[i] = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    new = parts.entries[i][0] = object_id(parts.payloads[i])
    doc["head"], doc["snapshots"] = new, [new if sid == head else sid for sid in doc["snapshots"]]
    target = SnapshotStore.open(tmp_path / "target")
    target.import_archive(parts.build(tmp_path / "b.snaparchive"))
    target.close()
    reopened = SnapshotStore.open(tmp_path / "target")
    assert reopened.verify(read_data=True).ok
    assert canonical(reopened.session("g").state(new)) == canonical(source.session("g").state(head))
    assert reopened.session("g").snapshot(new).kind == "full"


def test_an_import_keeps_to_the_stores_max_chain(tmp_path: Path) -> None:
    source, path = _two_writer_archive(tmp_path, 30)
    assert source.stats()["longest_chain"] > 3
    target = SnapshotStore.open(tmp_path / "target", max_chain=3)
    target.import_archive(path)
    assert target.stats()["longest_chain"] <= 3
    assert_same_session(source, target, "g")


def test_state_patch_that_copies_is_refused(archive: Path, target: SnapshotStore, tmp_path: Path) -> None:
    """``copy`` could double a state per operation: import does not rebuild through it."""
    parts = Parts.read(archive)
    i = next(i for i, e in enumerate(parts.entries) if e[3] == STATE_PATCH)
    body = orjson.loads(parts.payloads[i])
    body["patch"] = [{"op": "copy", "from": "/log", "path": f"/c{n}"} for n in range(40)] + body["patch"]
    parts.payloads[i] = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    assert refused(target, parts.build(tmp_path / "copy.snaparchive")).details["reason"] == "copy operation"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"hp": 7}', "not canonical"),  # hashes fine, but is not the canonical bytes of its state
        (b"[" * 300 + b"]" * 300, "not JSON"),  # deeper than snapstore can write back
        (b"{not json", "not JSON"),
    ],
)
def test_state_that_cannot_be_stored(
    archive: Path, target: SnapshotStore, tmp_path: Path, payload: bytes, reason: str
) -> None:
    parts = Parts.read(archive)
    i = next(i for i, e in enumerate(parts.entries) if e[3] == STATE)
    parts.payloads[i] = payload
    parts.entries[i][0] = object_id(payload)
    name_as_the_heads_state(parts, parts.entries[i][0])  # an object no document reaches is not parsed
    assert refused(target, parts.build(tmp_path / "state.snaparchive")).details["reason"] == reason


def name_as_the_heads_state(parts: Parts, key: str) -> None:
    """Make the newest snapshot of "side quest" name object ``key`` as its state, so that a session
    document reaches it: one none reaches is checked against its id alone."""
    doc = next(d for d in parts.manifest["sessions"] if d["name"] == "side quest")
    newest = parts.index(doc["head"])
    record = orjson.loads(parts.payloads[newest])
    record["state"] = key
    parts.payloads[newest] = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    parts.entries[newest][0] = doc["head"] = doc["snapshots"][-1] = object_id(parts.payloads[newest])


def relist(parts: Parts, old: str, new: str) -> None:
    """Give a record's new id wherever the session documents list its old one (a record no document
    reaches is checked against its id alone)."""
    for doc in parts.manifest["sessions"]:
        for member in ("snapshots", "evicted", "bases"):
            doc[member] = [new if sid == old else sid for sid in doc[member]]
        if doc["head"] == old:
            doc["head"] = new
        doc.get("tags", {}).update({tag: new for tag, sid in doc.get("tags", {}).items() if sid == old})


def test_kinds_are_labels_a_delta_labelled_state_still_imports(
    source: SnapshotStore, archive: Path, tmp_path: Path
) -> None:
    """Format §3.2: an object is its payload; the kind only says what was written first."""
    parts = Parts.read(archive)
    i = next(i for i, e in enumerate(parts.entries) if e[3] == DELTA)
    parts.entries[i][3] = STATE
    target = SnapshotStore.memory()
    target.import_archive(parts.build(tmp_path / "label.snaparchive"))
    assert_same_session(source, target, "campaign")
    assert target.verify().ok


def test_an_object_that_does_not_parse_as_what_it_is_used_as(
    archive: Path, target: SnapshotStore, tmp_path: Path
) -> None:
    """The newest record rewritten to name another record as its delta."""
    parts = Parts.read(archive)
    doc = next(d for d in parts.manifest["sessions"] if d["name"] == "side quest")
    newest = parts.index(doc["head"])
    record = orjson.loads(parts.payloads[newest])
    assert record["delta"] is not None
    record["delta"] = doc["snapshots"][0]
    parts.payloads[newest] = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    parts.entries[newest][0] = doc["head"] = doc["snapshots"][-1] = object_id(parts.payloads[newest])
    error = refused(target, parts.build(tmp_path / "kind.snaparchive"))
    assert error.details["reason"] == "wrong kind" and error.details["object"] == doc["snapshots"][0]


def test_record_with_a_bad_timestamp(archive: Path, target: SnapshotStore, tmp_path: Path) -> None:
    parts = Parts.read(archive)
    doc = next(d for d in parts.manifest["sessions"] if d["name"] == "side quest")
    newest = parts.index(doc["head"])
    record = orjson.loads(parts.payloads[newest])
    record["timestamp"] = "yesterday"
    parts.payloads[newest] = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    parts.entries[newest][0] = doc["head"] = doc["snapshots"][-1] = object_id(parts.payloads[newest])
    error = refused(target, parts.build(tmp_path / "time.snaparchive"))
    assert error.details["reason"] == "bad record" and "timestamp" in str(error)


def test_unchanged_commit_whose_empty_patch_is_also_a_state(tmp_path: Path) -> None:
    """The state [] and the empty patch [] are one object: the archive holds it once and import uses it as both."""
    store = SnapshotStore.memory()
    sess = store.session("f")
    ids = [sess.commit([]).id, sess.commit([]).id, sess.commit([1]).id, sess.commit([1]).id]
    path = tmp_path / "f.snaparchive"
    store.export(path)
    target = SnapshotStore.memory()
    target.import_archive(path)
    assert target.session("f").snapshot_ids() == ids
    assert [target.session("f").state(sid) for sid in ids] == [[], [], [1], [1]]
    assert target.verify().ok


def test_chain_rewired_into_a_loop(target: SnapshotStore, tmp_path: Path) -> None:
    """The first record rewritten to descend from the last: with content-addressed ids a true cycle
    cannot be built (each id hashes its parent's), but the walk must stop and refuse all the same."""
    store = SnapshotStore.memory(max_chain=100)
    play(store.session("loop"), 3)
    path = tmp_path / "loop.snaparchive"
    store.export(path)
    parts = Parts.read(path)
    doc = parts.manifest["sessions"][0]
    doc["bases"] = []
    first = parts.index(doc["snapshots"][0])
    record = orjson.loads(parts.payloads[first])
    record["parent"], record["delta"] = doc["snapshots"][-1], next(e[0] for e in parts.entries if e[3] == DELTA)
    parts.payloads[first] = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    parts.entries[first][0] = object_id(parts.payloads[first])
    doc["snapshots"][0] = parts.entries[first][0]
    error = refused(target, parts.build(tmp_path / "cycle.snaparchive"))
    assert error.details["reason"] in ("missing object", "cyclic chain", "unlisted record")


def test_object_swapped_for_another_valid_object(archive: Path, target: SnapshotStore, tmp_path: Path) -> None:
    """A consistent archive whose record names a delta that is not there."""
    parts = Parts.read(archive)
    i = next(i for i, e in enumerate(parts.entries) if e[3] == DELTA)
    replacement = orjson.dumps([{"op": "add", "path": "/x", "value": 1}])
    parts.payloads[i] = replacement
    parts.entries[i][0] = object_id(replacement)
    error = refused(target, parts.build(tmp_path / "swap.snaparchive"))
    assert error.details["reason"] == "missing object"


def test_chain_through_an_unlisted_snapshot(archive: Path, target: SnapshotStore, tmp_path: Path) -> None:
    parts = Parts.read(archive)
    doc = next(d for d in parts.manifest["sessions"] if d["name"] == "campaign")
    assert doc["evicted"]  # the chains of the oldest retained snapshots run through evicted ones
    doc["evicted"] = []
    assert refused(target, parts.build(tmp_path / "unlisted.snaparchive")).details["reason"] == "unlisted record"


def test_snapshot_missing_from_archive_and_store(archive: Path, target: SnapshotStore, tmp_path: Path) -> None:
    parts = Parts.read(archive)
    parts.manifest["sessions"][0]["snapshots"].append("0" * 32)
    assert refused(target, parts.build(tmp_path / "missing.snaparchive")).details["reason"] == "missing object"


def test_check_archive_refuses_what_an_import_into_an_empty_store_refuses(
    archive: Path, target: SnapshotStore, tmp_path: Path
) -> None:
    """``check_archive`` is what the command line asks before it makes a PostgreSQL store to import
    into; it read the archive but not its chains, so an archive whose chains break passed it, and
    the import then refused it after the store's tables were made (a new user's trial)."""
    unlisted = Parts.read(archive)
    next(d for d in unlisted.manifest["sessions"] if d["name"] == "campaign")["evicted"] = []
    missing = Parts.read(archive)
    missing.manifest["sessions"][0]["snapshots"].append("0" * 32)
    for name, parts in (("unlisted", unlisted), ("missing", missing)):
        path = parts.build(tmp_path / f"{name}.snaparchive")
        reason = refused(target, path).details["reason"]
        with pytest.raises(ArchiveError) as checked:
            check_archive(path)
        assert checked.value.details["reason"] == reason, name
    check_archive(archive)  # a good one passes


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "", "x\n", 7])
def test_bad_session_name(archive: Path, target: SnapshotStore, tmp_path: Path, name: Any) -> None:
    parts = Parts.read(archive)
    parts.manifest["sessions"][0]["name"] = name
    error = refused(target, parts.build(tmp_path / "name.snaparchive"))
    assert error.details["reason"] in ("bad session name", "bad session document")
    assert not (tmp_path / "x").exists() and not (tmp_path / "target" / "x").exists()


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update(type="zip"),
        lambda m: m.update(format="1"),
        lambda m: m.update(sessions={}),
        lambda m: m["sessions"][0].update(max_snapshots=0),
        lambda m: m["sessions"][0].update(head="f" * 32),
        lambda m: m["sessions"][0].update(snapshots=["../../etc/passwd"]),
        lambda m: m["sessions"][0]["snapshots"].append(m["sessions"][0]["snapshots"][0]),
        lambda m: m["sessions"].append(m["sessions"][0]),
        lambda m: m["sessions"][0].pop("bases"),
    ],
)
def test_malformed_manifest(archive: Path, target: SnapshotStore, tmp_path: Path, change: Any) -> None:
    parts = Parts.read(archive)
    change(parts.manifest)
    refused(target, parts.build(tmp_path / "manifest.snaparchive"))


def test_malformed_index(archive: Path, target: SnapshotStore, tmp_path: Path) -> None:
    parts = Parts.read(archive)
    _payloads, _manifest, index = parts.body()
    entries = [list(e) for e in ENTRY.iter_unpack(index)]
    cases = {
        "bad hex": lambda es: es[0].__setitem__(0, b"../../../../etc/passwd".ljust(32, b"x")),
        "upper hex": lambda es: es[0].__setitem__(0, es[0][0].upper()),
        "gap": lambda es: es[1].__setitem__(1, es[1][1] + 1),
        "unknown kind": lambda es: es[0].__setitem__(3, 4),
        "reserved": lambda es: es[0].__setitem__(4, b"\0\0\1"),
        "duplicate": lambda es: es.__setitem__(1, [es[0][0], *es[1][1:]]),
    }
    for label, change in cases.items():
        changed = [list(e) for e in entries]
        change(changed)
        raw = b"".join(ENTRY.pack(*e) for e in changed)
        bad = parts.build(tmp_path / f"index-{label}.snaparchive", raw_index=raw)
        assert refused(target, bad).details["reason"] in ("bad index", "hash mismatch"), label


def test_object_declared_over_the_size_limit(archive: Path, target: SnapshotStore, tmp_path: Path) -> None:
    parts = Parts.read(archive)
    _payloads, _manifest, index = parts.body()
    entries = [list(e) for e in ENTRY.iter_unpack(index)]
    entries[-1][2] = MAX_OBJECT_SIZE + 1
    bad = parts.build(tmp_path / "big.snaparchive", raw_index=b"".join(ENTRY.pack(*e) for e in entries))
    error = refused(target, bad)
    assert error.details["reason"] == "bad index" and str(MAX_OBJECT_SIZE) in str(error)


def test_declared_huge_is_refused_before_decompressing(archive: Path, target: SnapshotStore, tmp_path: Path) -> None:
    parts = Parts.read(archive)
    _payloads, manifest, index = parts.body()
    huge = 32 << 30
    bad = parts.build(tmp_path / "huge.snaparchive", body_size=huge, payloads_size=huge - len(manifest) - len(index))
    error = refused(target, bad)
    assert error.details["reason"] == "too large" and error.details["limit"] == 16 << 30
    assert refused(target, archive, max_size=1000).details["reason"] == "too large"


def test_decompression_bomb_stops_at_the_declared_size(archive: Path, target: SnapshotStore, tmp_path: Path) -> None:
    """Declares the real body's size but inflates to 2 GiB: refused after reading just past the declared size."""
    parts = Parts.read(archive)
    payloads, manifest, index = parts.body()
    body = payloads + manifest + index
    cctx = zstandard.ZstdCompressor(level=1)
    out = io.BytesIO()
    with cctx.stream_writer(out, closefd=False) as writer:
        writer.write(body)
        zeros = bytes(64 << 20)
        for _ in range(32):
            writer.write(zeros)
    bomb = out.getvalue()
    assert len(bomb) < 1 << 20
    path = parts.build(tmp_path / "bomb.snaparchive", frames=bomb, body=body)
    spool = tmp_path / "spool"
    spool.mkdir()
    before = contents(target)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ArchiveError, match="inflates beyond") as info:
            import_archive(target, path, spool_dir=spool)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 5
    assert peak < 8 << 20
    assert info.value.details["reason"] == "too large"
    assert contents(target) == before and not list(spool.iterdir())


def test_bomb_in_the_manifest_declared_small(archive: Path, target: SnapshotStore, tmp_path: Path) -> None:
    """Trailer sizes that disagree with each other are refused before any decompression."""
    parts = Parts.read(archive)
    manifest = parts.body()[1]
    bad = parts.build(tmp_path / "sizes.snaparchive", manifest_size=len(manifest) + 1)
    assert refused(target, bad).details["reason"] == "bad trailer"


def test_newer_archive_version(archive: Path, target: SnapshotStore, tmp_path: Path) -> None:
    data = bytearray(archive.read_bytes())
    data[4] = 3
    bad = tmp_path / "v3.snaparchive"
    bad.write_bytes(bytes(data))
    error = refused(target, bad, FormatVersionError)
    assert "version 3" in str(error) and "version 2" in str(error)
    assert error.details == {"path": str(bad), "version": 3, "supported": 2}


def test_newer_manifest_format(archive: Path, target: SnapshotStore, tmp_path: Path) -> None:
    parts = Parts.read(archive)
    parts.manifest["format"] = 3
    error = refused(target, parts.build(tmp_path / "m3.snaparchive"), FormatVersionError)
    assert "3" in str(error) and "2" in str(error)


def test_a_manifest_of_another_version_than_its_header_is_refused(
    archive: Path, target: SnapshotStore, tmp_path: Path
) -> None:
    parts = Parts.read(archive)
    assert parts.version == 1 and parts.manifest["format"] == 1
    parts.manifest["format"] = 2  # a version-2 manifest behind a version-1 header
    assert refused(target, parts.build(tmp_path / "mixed.snaparchive")).details["reason"] == "bad manifest"
    for other in (1.0, True):  # equal to 1 in Python, not the integer 1
        parts.manifest["format"] = other
        assert refused(target, parts.build(tmp_path / "float.snaparchive")).details["reason"] == "bad manifest"


def _kept_by_its_tag_alone(store: SnapshotStore) -> tuple[Session, str]:
    """A session whose first snapshot is behind the retention window, kept by its tag alone."""
    sess = store.session("s", max_snapshots=3)
    first = sess.commit({"n": 0}).id
    sess.tag(first, "keep")
    for n in range(1, 4):
        sess.commit({"n": n, "one": (1, 1.0, True)[n % 3]})
    sess.set_max_snapshots(1)
    sess.set_max_snapshots(3)  # evicted stays evicted: the first is behind the line, kept by its tag
    return sess, first


@pytest.mark.parametrize("on_conflict", ["error", "replace", "rename"])
def test_a_snapshot_kept_by_its_tag_alone_goes_with_its_tag_after_an_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_conflict: str
) -> None:
    """Version 2: the session document says how many listed snapshots are in the window. Without it
    the import put a snapshot behind the window back into it, and untagging it there kept it listed
    where the source evicts it (found by a differential fuzzer of the store against a model of its
    documented retention)."""
    source = SnapshotStore.memory()
    sess, first = _kept_by_its_tag_alone(source)
    path = tmp_path / "tagged.snaparchive"
    source.export(path)
    parts = Parts.read(path)
    assert parts.version == 2 and parts.manifest["format"] == 2
    assert parts.manifest["sessions"][0]["window"] == 1 and parts.manifest["sessions"][0]["tags"] == {"keep": first}
    target = SnapshotStore.open(tmp_path / "target")
    if on_conflict != "error":
        target.session("s").commit({"theirs": True})

    def no_second_write(*_args: Any) -> Any:
        raise AssertionError("the line goes in the import's own write (two let a crash or a writer between)")

    monkeypatch.setattr(Session, "forget", no_second_write)
    report = target.import_archive(path, on_conflict=on_conflict)
    monkeypatch.undo()
    name = report.sessions[0].session
    imported = target.session(name)
    if on_conflict != "rename":
        assert_same_session(source, target, "s", name)
    assert len(imported.snapshot_ids()) == len(sess.snapshot_ids()) == 2
    sess.untag("keep")
    imported.untag("keep")
    assert len(imported.snapshot_ids()) == len(sess.snapshot_ids()) == 1  # gone with its tag, in both
    imported.set_max_snapshots(3)
    assert len(imported.snapshot_ids()) == 1  # and evicted stays evicted


def test_an_archive_whose_sessions_keep_nothing_behind_their_window_is_version_1(
    archive: Path, source: SnapshotStore
) -> None:
    """What every earlier release reads: version 2 only where a document needs its window."""
    parts = Parts.read(archive)
    assert parts.version == 1 and parts.manifest["format"] == 1
    assert all("window" not in doc for doc in parts.manifest["sessions"])


@pytest.mark.parametrize(
    ("window", "reason"),
    [
        (0, "has a window of 0"),
        (2, "has a window of 2"),
        ("1", "has a window of '1'"),
        (None, "behind its window untagged"),
        ("null", "has a window of None"),  # a null window is a malformed one, not none
    ],
)
def test_a_window_that_does_not_fit_the_document_is_refused(
    target: SnapshotStore, tmp_path: Path, window: Any, reason: str
) -> None:
    source = SnapshotStore.memory()
    _kept_by_its_tag_alone(source)
    path = tmp_path / "tagged.snaparchive"
    source.export(path)
    parts = Parts.read(path)
    doc = parts.manifest["sessions"][0]
    if window is None:
        del doc["tags"]  # the snapshot behind the window, untagged: nothing would retain it
    elif window == "null":
        doc["window"] = None
    else:
        doc["window"] = window
    error = refused(target, parts.build(tmp_path / "bad.snaparchive"))
    assert error.details["reason"] == "bad session document" and reason in str(error)


def test_a_window_in_a_version_1_document_is_a_member_version_1_does_not_have(tmp_path: Path) -> None:
    """Version 1 readers skip members they do not know (as ``tags`` was, before them): a window in a
    version-1 archive is read as they read it, not applied."""
    source = SnapshotStore.memory()
    _kept_by_its_tag_alone(source)
    path = tmp_path / "tagged.snaparchive"
    source.export(path)
    parts = Parts.read(path)
    parts.version = parts.manifest["format"] = 1
    target = SnapshotStore.memory()
    target.import_archive(parts.build(tmp_path / "v1.snaparchive"))
    imported = target.session("s")
    imported.untag("keep")
    assert len(imported.snapshot_ids()) == 2  # in the window, as a version-1 import puts it


GOLDEN_ARCHIVE_V1 = Path(__file__).parent / "golden" / "archive-v1.snaparchive"


def test_a_version_1_archive_written_before_version_2_is_read(tmp_path: Path) -> None:
    """tests/golden/archive-v1.snaparchive was written by the release before version 2
    (tests/golden/make_archive_v1.py): it imports, every state as expected."""
    expected = orjson.loads(GOLDEN_ARCHIVE_V1.with_suffix(".json").read_bytes())
    assert GOLDEN_ARCHIVE_V1.read_bytes()[4] == 1
    store = SnapshotStore.open(tmp_path / "store")
    store.import_archive(GOLDEN_ARCHIVE_V1)
    for name, session in expected.items():
        sess = store.session(name)
        assert sess.snapshot_ids() == [snap["id"] for snap in session["snapshots"]]
        assert sess.tags == session["tags"] and sess.max_snapshots == session["max_snapshots"]
        for snap in session["snapshots"]:
            assert orjson.dumps(sess.state(snap["id"]), option=orjson.OPT_SORT_KEYS) == orjson.dumps(
                snap["state"], option=orjson.OPT_SORT_KEYS
            )
    assert store.verify().ok


def test_not_an_archive(target: SnapshotStore, tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_bytes(b'{"hello": "world"}' * 20)
    assert refused(target, bad).details["reason"] == "bad magic"


# ---------------------------------------------------------------- streaming


def build_long_session(store: SnapshotStore, turns: int) -> tuple[list[str], Any]:
    """A session of ``turns`` snapshots, each state a sliding window of six 3 KB messages."""
    rng = random.Random(1)
    sess = store.session("long", max_snapshots=turns)
    state: dict[str, Any] = {"turn": 0, "log": []}
    ids: list[str] = []
    for turn in range(turns):
        if len(state["log"]) >= 6:
            del state["log"][0]
        state["log"].append(rng.randbytes(1500).hex())
        state["turn"] = turn
        ids.append(sess.commit(state, turn=turn).id)
    return ids, state


def test_thousands_of_snapshots_stream_in_bounded_memory(tmp_path: Path) -> None:
    """Export and import of a 2,000-snapshot session hold neither the archive nor the states in memory.

    What they do hold is per-snapshot bookkeeping (ids and records: a few hundred bytes each)
    and one state at a time (import rebuilds each state and checks it against its hash).
    """
    store = SnapshotStore.memory()
    ids, last = build_long_session(store, 2_000)
    sess = store.session("long")
    assert canonical(sess.state(ids[-1])) == canonical(last)
    path = tmp_path / "long.snaparchive"
    target = SnapshotStore.memory()

    tracemalloc.start()
    try:
        report = store.export(path, level=3)
        export_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        imported = target.import_archive(path)
        kept, import_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.snapshots == 2_000 and imported.created == ["long"]
    states = sum(snap.size for snap in sess.snapshots())
    assert states > 30 << 20  # every state in full: 2,000 x 18 KB
    assert export_peak < states / 5, (export_peak, states)
    # the memory store keeps what was imported (``kept``); beyond that, import held little at any time
    assert import_peak - kept < states / 5, (import_peak, kept, states)
    copy = target.session("long")
    assert len(copy) == 2_000
    for sid in (ids[0], ids[1234], ids[-1]):
        assert canonical(copy.state(sid)) == canonical(sess.state(sid))


def counting_deltas(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many deltas an import applies (one count per ``apply_patch`` of the importer's rebuilds)."""
    applied = [0]
    real = archive_contents.apply_patch

    def counted(*args: Any, **kwargs: Any) -> Any:
        applied[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(archive_contents, "apply_patch", counted)
    return applied


def delta_chain(turns: int, max_snapshots: int) -> tuple[SnapshotStore, Session, list[str]]:
    """A session of ``turns`` small snapshots stored as one chain of deltas (no keyframe)."""
    store = SnapshotStore.memory(rebuild_budget=1e9, max_chain=100_000)
    sess = store.session("chain", max_snapshots=max_snapshots)
    return store, sess, [sess.commit({"n": n, "items": list(range(n % 40))}).id for n in range(turns)]


def test_a_chain_listed_newest_first_imports_in_linear_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each snapshot whose parent was not rebuilt just before it walked back to the base: a document
    listing 2,000 snapshots newest first took 31 s to import against 0.3 s in order (an outside trial)."""
    store, _sess, ids = delta_chain(300, 300)
    path = tmp_path / "chain.snaparchive"
    store.export(path)
    parts = Parts.read(path)
    (doc,) = parts.manifest["sessions"]
    assert doc["snapshots"] == ids and not any(kind == STATE_PATCH for _k, _o, _n, kind in parts.entries)
    doc["snapshots"].reverse()
    reversed_path = parts.build(tmp_path / "reversed.snaparchive")
    applied = counting_deltas(monkeypatch)
    target = SnapshotStore.memory()
    target.import_archive(reversed_path)
    # two passes (check, write), each a few walks over the chain: not one walk per snapshot (90,000)
    assert applied[0] <= 12 * len(ids), applied[0]
    copy = target.session("chain")
    assert copy.snapshot_ids() == ids[::-1]  # written in the document's order, which retention counts on
    for sid in ids:
        assert canonical(copy.state(sid)) == canonical(store.session("chain").state(sid))


def test_siblings_of_one_parent_at_the_end_of_a_chain_import_in_linear_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each sibling after the first walked back over the whole chain (1,000 siblings off a 2,000-delta
    chain took 32 s to import: an outside trial)."""
    store, sess, ids = delta_chain(300, 500)
    siblings = []
    for n in range(200):
        sess.rollback(ids[-1])
        siblings.append(sess.commit({"n": 300, "sibling": n}).id)
    path = tmp_path / "siblings.snaparchive"
    store.export(path)
    applied = counting_deltas(monkeypatch)
    target = SnapshotStore.memory()
    target.import_archive(path)
    assert applied[0] <= 4 * (len(ids) + len(siblings)), applied[0]  # one walk per sibling: 120,000
    assert_same_session(store, target, "chain")


def test_export_leaves_no_partial_file_on_failure(source: SnapshotStore, tmp_path: Path) -> None:
    path = tmp_path / "fail.snaparchive"

    def boom(done: int, total: int | None, what: str) -> None:
        if what == "exporting objects" and done >= 64:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        source.export(path, progress=boom)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- archives written by the format-1 store


def expected_v1() -> dict[str, Any]:
    expected: dict[str, Any] = orjson.loads((V1_ARCHIVES / "expected.json").read_bytes())
    return expected


def test_an_archive_written_by_the_format_1_store_imports_with_its_ids(
    make_store: Callable[..., SnapshotStore],
) -> None:
    target = make_store()
    report = target.import_archive(V1_ARCHIVES / "store.snaparchive")
    expected = expected_v1()
    assert sorted(report.created) == sorted(expected) == target.sessions()
    for name, want in expected.items():
        sess = target.session(name)
        assert sess.snapshot_ids() == want["snapshots"]  # ids hash the same record JSON as in format 1
        assert sess.head is not None and sess.head.id == want["head"]
        assert sess.max_snapshots == want["max_snapshots"]
        for sid, state in want["states"].items():
            assert canonical(sess.state(sid)) == canonical(state)
    assert target.verify().ok
    # and the session goes on from there
    target.session("campaign").commit({"after": "import"})
    assert target.verify().ok


def test_chosen_snapshots_written_by_the_format_1_store_import(tmp_path: Path) -> None:
    want = expected_v1()["campaign"]
    target = SnapshotStore.open(tmp_path / "target")
    target.import_archive(V1_ARCHIVES / "chosen.snaparchive")
    sess = target.session("campaign")
    assert sess.snapshot_ids() == want["chosen"]
    assert sess.head is not None and sess.head.id == want["chosen"][-1]
    for sid in want["chosen"]:
        assert canonical(sess.state(sid)) == canonical(want["states"][sid])
    assert target.verify().ok


def test_a_format_1_archive_exported_again_keeps_ids_and_states(tmp_path: Path) -> None:
    """Imported, then exported by today's store: the same sessions, ids and states, and session
    documents with exactly the members format 1 wrote (no tags: these sessions have none)."""
    middle = SnapshotStore.open(tmp_path / "middle")
    middle.import_archive(V1_ARCHIVES / "store.snaparchive")
    again = tmp_path / "again.snaparchive"
    middle.export(again)
    original = Parts.read(V1_ARCHIVES / "store.snaparchive").manifest["sessions"]
    for old, new in zip(original, Parts.read(again).manifest["sessions"], strict=True):
        assert set(new) == set(old)
        assert (new["name"], new["head"], new["snapshots"], new["max_snapshots"]) == (
            old["name"], old["head"], old["snapshots"], old["max_snapshots"]
        )  # fmt: skip
    target = SnapshotStore.memory()
    target.import_archive(again)
    for name, want in expected_v1().items():
        assert target.session(name).snapshot_ids() == want["snapshots"]
        for sid, state in want["states"].items():
            assert canonical(target.session(name).state(sid)) == canonical(state)


# ---------------------------------------------------------------- tags


def test_tags_travel_and_keep_an_old_snapshot_retained(tmp_path: Path) -> None:
    """Retention keeps a tagged snapshot beyond the limit; without its tag the import would evict it."""
    store = SnapshotStore.memory(max_chain=6)
    kept = store.session("tagged", max_snapshots=5)
    early = play(kept, 3)
    kept.tag(early[1].id, "start")
    play(kept, 20, start=3)
    assert kept.tags == {"start": early[1].id} and early[1].id in kept.snapshot_ids()
    path = tmp_path / "tags.snaparchive"
    store.export(path)
    (doc,) = Parts.read(path).manifest["sessions"]
    assert doc["tags"] == {"start": early[1].id}
    target = SnapshotStore.memory()
    target.import_archive(path)
    copy = target.session("tagged")
    assert copy.tags == kept.tags and copy.snapshot_ids() == kept.snapshot_ids()
    assert canonical(copy.state("start")) == canonical(kept.state("start"))
    assert target.verify().ok


def test_importing_a_snapshot_with_many_tags_examines_entries_linear_in_them(
    tmp_path: Path, entries_examined: EntriesExamined
) -> None:
    """An import writes a settings entry per tag, and each append used to scan every entry since the
    segment's last INDEX entry (settings entries bring none): 50,000 tags on one snapshot took 42 s
    to import, n**2/2 entries examined."""
    tags = 2000
    store = SnapshotStore.memory()
    sess = store.session("tagged")
    sid = sess.commit({"turn": 0}).id
    for n in range(tags):
        sess.tag(sid, f"tag {n}")
    path = tmp_path / "tags.snaparchive"
    store.export(path)
    target = SnapshotStore.open(tmp_path / "target")
    entries_examined.count = 0
    target.import_archive(path)
    assert entries_examined.count <= 4 * tags  # 2,003,003 before
    assert target.session("tagged").tags == sess.tags
    assert target.verify().ok


@pytest.mark.parametrize(
    ("tags", "reason"),
    [
        ({"x": "0" * 32}, "bad session document"),  # a snapshot the document does not list
        ({"": None}, "bad session document"),
        ([], "bad session document"),
        ({"deadbeefdeadbeef": "SNAPSHOT"}, "bad session document"),  # a tag that looks like an id
    ],
)
def test_malformed_tags(archive: Path, target: SnapshotStore, tmp_path: Path, tags: Any, reason: str) -> None:
    parts = Parts.read(archive)
    doc = parts.manifest["sessions"][0]
    if isinstance(tags, dict):
        tags = {k: doc["snapshots"][0] if v == "SNAPSHOT" else v for k, v in tags.items()}
    doc["tags"] = tags
    assert refused(target, parts.build(tmp_path / "tags.snaparchive")).details["reason"] == reason


# ---------------------------------------------------------------- the temporary file


def leftover(folder: Path, name: str, content: bytes, age: float) -> Path:
    path = folder / name
    path.write_bytes(content)
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_export_removes_leftovers_of_killed_exports_after_a_grace_period(source: SnapshotStore, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    hour = 3600
    stale = leftover(folder, ".a.snaparchive.tmp-4242-0123456789abcdef", b"SNPA\x01\0\0\0partial", 2 * hour)
    empty = leftover(folder, ".b.snaparchive.tmp-17-fedcba9876543210", b"", 2 * hour)
    young = leftover(folder, ".a.snaparchive.tmp-4243-0123456789abcdef", b"SNPA\x01", 60)
    other = leftover(folder, ".notes.txt.tmp-1-0123456789abcdef", b"someone else's file", 2 * hour)
    named = leftover(folder, "a.snaparchive.tmp-1-0123456789abcdef", b"SNPA", 2 * hour)  # not hidden: not ours
    link = folder / ".c.snaparchive.tmp-5-0123456789abcdef"
    link.symlink_to(stale)
    report = source.export(folder / "a.snaparchive")
    assert report.temporary_files_removed == 2
    assert not stale.exists() and not empty.exists()
    assert young.exists() and other.exists() and named.exists() and link.is_symlink()
    assert sorted(p.name for p in folder.iterdir() if ".tmp-" not in p.name) == ["a.snaparchive"]


FULL_DISK = """
import json, resource, sys
from snapstore import SnapshotStore
from snapstore.archive import ArchiveError, import_archive
store_path, operation, archive, limit = sys.argv[1:5]
store = SnapshotStore.open(store_path)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    if operation == "export":
        store.export(archive)
    else:
        import_archive(store, archive, spool_dir=sys.argv[5])
except ArchiveError as exc:
    print(json.dumps({"message": str(exc), **exc.details}))
"""


def with_file_size_limit(*args: str) -> dict[str, Any]:
    """Run an export or import in a process whose files may not grow past a limit: the kernel refuses
    the write that would (EFBIG), as it refuses one on a full disk (ENOSPC)."""
    run = subprocess.run(
        [sys.executable, "-c", FULL_DISK, *args], capture_output=True, text=True, timeout=120, check=True
    )
    details: dict[str, Any] = orjson.loads(run.stdout)
    return details


def test_a_write_failure_while_exporting_is_an_archive_error_and_leaves_the_target(tmp_path: Path) -> None:
    """A file-size limit makes the kernel refuse the write (EFBIG), as a full disk would (ENOSPC)."""
    store = SnapshotStore.open(tmp_path / "store")
    play(store.session("big", max_snapshots=100), 60)
    target = tmp_path / "out" / "big.snaparchive"
    target.parent.mkdir()
    target.write_bytes(b"the previous archive")
    details = with_file_size_limit(str(tmp_path / "store"), "export", str(target), "1000")
    assert details["reason"] == "write failed" and details["errno"] == 27  # EFBIG
    assert details["path"] == str(target) and str(target) in details["message"] and "errno 27" in details["message"]
    assert target.read_bytes() == b"the previous archive"
    assert os.listdir(target.parent) == ["big.snaparchive"]


def test_a_write_failure_while_spooling_an_import_is_an_archive_error(archive: Path, tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path / "target")
    play(store.session("mine"), 3)
    before = contents(store)
    spool = tmp_path / "spool"
    spool.mkdir()
    details = with_file_size_limit(str(tmp_path / "target"), "import", str(archive), "2000", str(spool))
    assert details["reason"] == "spool failed" and details["errno"] == 27 and details["path"] == str(spool)
    assert str(spool) in details["message"] and "errno 27" in details["message"]
    assert contents(store) == before and not list(spool.iterdir())



def test_an_archive_path_that_names_no_archive_file_is_an_archive_error(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path / "target")
    play(store.session("mine"), 3)
    before = contents(store)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it to read would wait for a writer: refused before it is opened
    cases = {tmp_path / "absent.snaparchive": "no such file", tmp_path: "it is a folder", fifo: "not a regular file"}
    for path, says in cases.items():
        for attempt in (lambda p: store.import_archive(p), check_archive):
            with pytest.raises(ArchiveError) as err:
                attempt(path)
            assert f"cannot read archive {path}: " in str(err.value) and says in str(err.value)
            assert err.value.details["path"] == str(path)
    assert contents(store) == before

# ---------------------------------------------------------------- every number read is range-checked

U64_MAX = 2**64 - 1


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("frames_length", U64_MAX, "length mismatch"),
        ("body_size", U64_MAX, "too large"),
        ("payloads_size", U64_MAX, "bad trailer"),
        ("manifest_size", U64_MAX, "too large"),
        ("count", U64_MAX, "too large"),
    ],
)
def test_trailer_numbers_out_of_range(
    archive: Path, target: SnapshotStore, tmp_path: Path, field: str, value: int, reason: str
) -> None:
    parts = Parts.read(archive)
    override: dict[str, Any] = {field: value}
    error = refused(target, parts.build(tmp_path / f"{field}.snaparchive", **override))
    assert error.details["reason"] == reason and error.details["field"] == field


@pytest.mark.parametrize(("field", "value"), [("offset", U64_MAX), ("length", 2**32 - 1), ("length", 0)])
def test_index_numbers_out_of_range(
    archive: Path, target: SnapshotStore, tmp_path: Path, field: str, value: int
) -> None:
    parts = Parts.read(archive)
    _payloads, _manifest, index = parts.body()
    entries = [list(e) for e in ENTRY.iter_unpack(index)]
    entries[2][1 if field == "offset" else 2] = value
    bad = parts.build(tmp_path / "index.snaparchive", raw_index=b"".join(ENTRY.pack(*e) for e in entries))
    error = refused(target, bad)
    assert error.details["reason"] == "bad index" and error.details["field"] == field


@pytest.mark.parametrize(
    ("field", "value"),
    [("generation", U64_MAX), ("generation", -1), ("max_snapshots", U64_MAX), ("max_snapshots", 2**63)],
)
def test_session_numbers_out_of_range(
    archive: Path, target: SnapshotStore, tmp_path: Path, field: str, value: int
) -> None:
    """A generation of 2**64-1 imported once made every later commit fail with a bare TypeError."""
    parts = Parts.read(archive)
    parts.manifest["sessions"][0][field] = value
    error = refused(target, parts.build(tmp_path / "doc.snaparchive"))
    assert error.details["reason"] == "bad session document" and error.details["field"] == field
    assert str(value) in str(error)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("turn", 2**63, "number out of range"),
        ("size", MAX_OBJECT_SIZE + 1, "number out of range"),
        ("size", -1, "number out of range"),
        ("depth", 2**32, "number out of range"),
        ("depth", -1, "number out of range"),
        ("chain_bytes", -1, "number out of range"),
        ("base_ratio", 1e300, "number out of range"),
        ("base_ratio", -0.5, "number out of range"),
        ("label", "x" * 65536, "bad record"),
    ],
)
def test_record_numbers_out_of_range(
    archive: Path, target: SnapshotStore, tmp_path: Path, field: str, value: Any, reason: str
) -> None:
    parts = Parts.read(archive)
    doc = next(d for d in parts.manifest["sessions"] if d["name"] == "side quest")
    newest = parts.index(doc["head"])
    record = orjson.loads(parts.payloads[newest])
    record[field] = value
    parts.payloads[newest] = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    parts.entries[newest][0] = doc["head"] = doc["snapshots"][-1] = object_id(parts.payloads[newest])
    error = refused(target, parts.build(tmp_path / "record.snaparchive"))
    assert error.details["reason"] == reason and error.details["object"] == parts.entries[newest][0]
    if reason == "number out of range":
        assert error.details["field"] == field


def test_keyframe_record_with_a_depth_is_refused(archive: Path, target: SnapshotStore, tmp_path: Path) -> None:
    """A full-state record says depth 0; the store's record layout keeps no other."""
    parts = Parts.read(archive)
    i = next(
        i for i, e in enumerate(parts.entries) if e[3] == RECORD and orjson.loads(parts.payloads[i])["delta"] is None
    )
    record = orjson.loads(parts.payloads[i])
    record["depth"] = 3
    parts.payloads[i] = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    old, parts.entries[i][0] = parts.entries[i][0], object_id(parts.payloads[i])
    relist(parts, old, parts.entries[i][0])
    error = refused(target, parts.build(tmp_path / "depth.snaparchive"))
    assert error.details["reason"] == "number out of range" and error.details["field"] == "depth"


def test_state_patch_size_out_of_range(archive: Path, target: SnapshotStore, tmp_path: Path) -> None:
    parts = Parts.read(archive)
    i = next(i for i, e in enumerate(parts.entries) if e[3] == STATE_PATCH)
    body = orjson.loads(parts.payloads[i])
    body["size"] = U64_MAX
    parts.payloads[i] = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    assert refused(target, parts.build(tmp_path / "patch.snaparchive")).details["reason"] == "bad state patch"


# ---------------------------------------------------------------- exporting while writers commit


@pytest.mark.parametrize("change", ["drop", "squash"])
def test_segments_reclaimed_under_an_export_are_read_again(tmp_path: Path, change: str) -> None:
    """Export takes no lock. Here another handle reclaims session b's segments (dropping them, or
    squashing one so that it is rewritten) after the export planned b and before it reads b: the
    export reads b again and carries what b holds then."""
    settings: dict[str, Any] = {"max_chain": 3, "max_runs": 1 if change == "drop" else 8}
    store = SnapshotStore.open(tmp_path / "store", **settings)
    play(store.session("a", max_snapshots=100), 70)  # written first: progress is reported during it
    b = store.session("b", max_snapshots=50)
    blob = random.Random(5).randbytes(100_000).hex()  # keyframes too large to share a segment
    planned = [b.commit({"turn": turn, "blob": blob, "even": turn % 2 == 0}).id for turn in range(30)]
    other = SnapshotStore.open(tmp_path / "store", **settings).session("b")
    segments_before = [(info.segment, info.version) for info in store.backend.segments(b.key)]
    assert len(segments_before) > 2 or change == "squash"
    changed: list[list[str]] = []

    def reclaim_b(done: int, total: int | None, what: str) -> None:
        if not changed:
            changed.append(other.forget(2) if change == "squash" else other.set_max_snapshots(2))
            other.clear_old_snapshots()

    path = tmp_path / "live.snaparchive"
    store.export(path, progress=reclaim_b)
    assert changed and changed[0]  # the reclaim happened mid-export and evicted snapshots the plan listed
    assert [(info.segment, info.version) for info in store.backend.segments(b.key)] != segments_before
    target = SnapshotStore.memory()
    target.import_archive(path)
    assert (
        target.session("b").snapshot_ids()
        == planned[-2:]
        == SnapshotStore.open(tmp_path / "store").session("b").snapshot_ids()
    )
    for sid in planned[-2:]:
        assert canonical(target.session("b").state(sid)) == canonical(b.state(sid))
    assert_same_session(store, target, "a")
    assert target.verify().ok


def test_merge_adds_the_archive_tags_and_keeps_local_ones(source: SnapshotStore, tmp_path: Path) -> None:
    sess = source.session("side quest")
    ids = sess.snapshot_ids()
    sess.tag(ids[0], "first")
    sess.tag(ids[1], "mine")
    path = tmp_path / "tags.snaparchive"
    source.export(path, sessions=["side quest"], snapshots=["first", ids[1], ids[-1]])  # a tag selects, too
    assert Parts.read(path).manifest["sessions"][0]["tags"] == {"first": ids[0], "mine": ids[1]}
    target = SnapshotStore.memory()
    local = target.session("side quest")
    own = play(local, 2, seed=8)
    local.tag(own[0].id, "mine")
    report = target.import_archive(path, on_conflict="merge")
    assert local.tags == {"first": ids[0], "mine": own[0].id}
    assert f"side quest: tag 'mine' kept on {own[0].id} (the archive puts it on {ids[1]})" in report.notes()


def test_an_archive_listing_more_than_its_limit_says_what_retention_evicted(archive: Path, tmp_path: Path) -> None:
    parts = Parts.read(archive)
    doc = next(d for d in parts.manifest["sessions"] if d["name"] == "side quest")
    doc["max_snapshots"] = 4
    report = SnapshotStore.memory().import_archive(parts.build(tmp_path / "over.snaparchive"))
    assert "side quest: 6 of the archive's 10 snapshots were evicted at once" in " ".join(report.notes())


def test_export_to_a_long_file_name(source: SnapshotStore, tmp_path: Path) -> None:
    """The temporary name adds a prefix and a suffix; it must still fit where the target's name fits."""
    target = tmp_path / ("x" * 240 + ".snaparchive")
    source.export(target, sessions=["side quest"])
    assert SnapshotStore.memory().import_archive(target).created == ["side quest"]
    assert os.listdir(tmp_path) == [target.name]


class _ReclaimOnRead(MemoryBackend):
    """A memory engine that runs ``during`` once, just before its ``at``-th segment read."""

    during: Callable[[], Any] | None = None
    at = 0

    def read_segment(self, key: str, segment: int, start: int = 0) -> Any:
        if self.during is not None:
            self.at -= 1
            if self.at == 0:
                during, self.during = self.during, None
                during()
        return super().read_segment(key, segment, start)


def _export_with_a_change_at_read(
    backend: _ReclaimOnRead, change: Callable[[], Any], at: int, tmp_path: Path
) -> tuple[SnapshotStore, bool]:
    """Export ``backend``'s store with ``change`` run before its ``at``-th segment read, and import the
    archive into a memory store: that store, and whether the change ran (the export read that often)."""
    backend.during, backend.at = change, at
    out = tmp_path / f"s{at}.snaparchive"
    SnapshotStore(backend).export(out)
    restored = SnapshotStore.memory()
    restored.import_archive(out)
    return restored, backend.during is None


def test_an_export_planned_before_a_reclaim_writes_the_session_as_it_is_after_it(tmp_path: Path) -> None:
    """Two writers taking turns store deltas against their own base, which the export rebuilds;
    a rebuild that met a reclaim read the session again under the export, and the export went on
    with the plan made before it: "snapshot ... was reclaimed" or a bare KeyError (found by a
    trial exporting beside two writers and gc). Here the reclaim lands before each read in turn."""
    for at in range(1, 40):
        backend = _ReclaimOnRead()
        one, two = SnapshotStore(backend, max_chain=4), SnapshotStore(backend, max_chain=4)
        first, second = one.session("s", max_snapshots=12), two.session("s")
        committed = {}
        for turn in range(14):
            state = {"turn": turn, "log": [f"line {t}" for t in range(turn)]}
            committed[(first if turn % 2 else second).commit(state).id] = canonical(state)

        def reclaim(store: SnapshotStore = one) -> None:
            store.session("s").set_max_snapshots(3)
            store.gc()

        restored, landed = _export_with_a_change_at_read(backend, reclaim, at, tmp_path)
        now = SnapshotStore(backend).session("s")
        ids = restored.session("s").snapshot_ids()
        assert ids[-3:] == now.snapshot_ids()  # the newest three at least, whenever the reclaim landed
        assert all(canonical(restored.session("s").state(sid)) == committed[sid] for sid in ids)
        if not landed:
            break  # the export read less than ``at`` times: every landing place was tried
    assert at > 5


def test_a_state_patch_whose_parent_a_writer_evicts_under_the_export_still_imports(tmp_path: Path) -> None:
    """A keyframe goes as a patch from its parent when the parent's chain is already in the archive.
    A writer that evicted and reclaimed the parent before the export planned the session again left
    the patch in the archive and the parent's record out: the archive exported without a word and
    would not import ("snapshot ... is neither in the archive nor in the store"; an outside trial
    exporting beside a writer: 22 of 30 archives). Here the writer's commits land before each read
    of the export in turn."""
    lore = random.Random(3).randbytes(150_000).hex()  # keyframes too large to share a segment
    for at in range(1, 80):
        backend = _ReclaimOnRead()
        settings: dict[str, Any] = {"max_chain": 1, "max_runs": 1}
        sess = SnapshotStore(backend, **settings).session("s", max_snapshots=6)
        committed = {}
        for turn in range(6):
            state = {"turn": turn, "lore": lore, "log": [f"line {t}" for t in range(turn)]}
            committed[sess.commit(state).id] = canonical(state)
        writer = SnapshotStore(backend, **settings).session("s")

        def commit_more(writer: Session = writer, committed: dict[str, bytes] = committed) -> None:
            for turn in range(100, 113):
                state = {"turn": turn, "lore": lore, "log": [f"later {t}" for t in range(turn - 100)]}
                committed[writer.commit(state).id] = canonical(state)

        restored, landed = _export_with_a_change_at_read(backend, commit_more, at, tmp_path)
        ids = restored.session("s").snapshot_ids()
        assert all(canonical(restored.session("s").state(sid)) == committed[sid] for sid in ids)
        assert restored.verify().ok
        if not landed:
            break  # the export read less than ``at`` times: every landing place was tried
    assert at > 5


def test_states_nested_as_deep_as_a_state_may_be_export_and_import(tmp_path: Path) -> None:
    """A state replaced whole where its parent's chain is in the archive goes as a patch from the
    parent; the patch's own levels took a state nested as deep as a store takes past what orjson
    writes, and export died on a bare TypeError (found by a trial)."""
    deep: Any = 1
    for _ in range(251):
        deep = [deep]
    store = SnapshotStore.open(tmp_path / "store")
    sess = store.session("t")
    states = [["x" * 50_000, deep, i] if i % 2 else {"pad": "x" * 50_000, "i": i} for i in range(4)]
    ids = [sess.commit(state).id for state in states]
    assert store.verify().ok
    store.export(tmp_path / "a.snaparchive")
    restored = SnapshotStore.memory()
    restored.import_archive(tmp_path / "a.snaparchive")
    for sid, state in zip(ids, states, strict=True):
        assert canonical(restored.session("t").state(sid)) == canonical(state)


def test_a_session_a_merge_filled_in_behind_its_newest_snapshots_exports_and_imports(tmp_path: Path) -> None:
    """A merge that brings back snapshots retention had let go appends them after their children:
    such a session lists a child before its parent, and its archive must import (a check refusing
    that order refused these archives, found by a review)."""
    settings: dict[str, Any] = {"max_chain": 1, "max_runs": 1}
    first = SnapshotStore.open(tmp_path / "a", **settings)
    sess = first.session("s", max_snapshots=10)
    states = [{"n": n, "pad": "x" * 2000} for n in range(4)]
    for state in states:
        sess.commit(state)
    first.export(tmp_path / "full.snaparchive")
    second = SnapshotStore.open(tmp_path / "b", **settings)
    second.import_archive(tmp_path / "full.snaparchive")
    second.session("s").set_max_snapshots(2)
    second.gc()
    second.import_archive(tmp_path / "full.snaparchive", on_conflict="merge")
    listed = second.session("s").snapshots()
    assert [canonical(second.session("s").state(snap.id)) for snap in listed] != [canonical(s) for s in states]
    second.export(tmp_path / "b.snaparchive")
    third = SnapshotStore.memory()
    third.import_archive(tmp_path / "b.snaparchive")
    assert [snap.id for snap in third.session("s").snapshots()] == [snap.id for snap in listed]


def test_a_malformed_session_document_is_named_once_by_its_place(
    archive: Path, target: SnapshotStore, tmp_path: Path
) -> None:
    parts = Parts.read(archive)
    parts.manifest["sessions"][0]["max_snapshots"] = 0
    path = tmp_path / "limit.snaparchive"
    error = refused(target, parts.build(path))
    assert error.details["reason"] == "bad session document"
    assert str(error).startswith(f"archive {path}: session document #0 of the manifest's sessions is malformed")
    assert str(error).count(str(path)) == 1
    parts.manifest["sessions"][0]["max_snapshots"] = 10
    parts.manifest["sessions"][0]["format"] = 99  # a session document of a newer format
    path = tmp_path / "newer.snaparchive"
    with pytest.raises(FormatVersionError) as raised:
        target.import_archive(parts.build(path))
    assert str(raised.value).startswith(f"archive {path}: ") and str(raised.value).count(str(path)) == 1
    assert raised.value.details["path"] == str(path)


def test_a_session_document_nested_deeper_than_orjson_writes_is_refused(
    archive: Path, target: SnapshotStore, tmp_path: Path
) -> None:
    """orjson reads 1024 levels and writes 254: a document member nested between the two passed the
    manifest's parse and died re-encoding the document, a bare TypeError (found by a trial)."""
    parts = Parts.read(archive)
    payloads, manifest, index = parts.body()
    manifest = manifest.replace(b'"bases":', b'"deep":' + b"[" * 300 + b"0" + b"]" * 300 + b',"bases":', 1)
    path = parts.build(
        tmp_path / "deep.snaparchive", body=payloads + manifest + index, manifest_size=len(manifest),
        meta_hash=xxhash.xxh3_128_digest(manifest + index),
    )  # fmt: skip
    error = refused(target, path)
    assert error.details["reason"] == "bad session document"
    assert "nested too deeply" in str(error)


def with_manifest(parts: Parts, manifest: bytes, path: Path) -> Path:
    payloads, _manifest, index = parts.body()
    return parts.build(
        path, body=payloads + manifest + index, manifest_size=len(manifest),
        meta_hash=xxhash.xxh3_128_digest(manifest + index),
    )  # fmt: skip


def test_a_manifest_compressed_beyond_what_an_exporter_writes_is_refused_before_it_is_parsed(
    target: SnapshotStore, tmp_path: Path
) -> None:
    """Parsed whole, ``[{},{},...]`` takes some 30 times its size: a 2.7 KB archive whose manifest was
    30 MB of it took 1.06 GB to import, and at the manifest's 1 GiB limit 100 KB would take 33 GB (a trial)."""
    source = SnapshotStore.memory()
    source.session("s").commit({"a": 1})
    source.export(tmp_path / "small.snaparchive")
    parts = Parts.read(tmp_path / "small.snaparchive")
    manifest = b'{"format":1,"sessions":[' + b"{}," * (2 << 20) + b'{}],"type":"snapstore.archive"}'
    path = with_manifest(parts, manifest, tmp_path / "bomb.snaparchive")
    assert path.stat().st_size < 2048 and len(manifest) > 6 << 20
    tracemalloc.start()
    try:
        error = refused(target, path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error.details["reason"] == "too large" and error.details["field"] == "manifest_size"
    assert peak < len(manifest) // 4, peak  # refused from the trailer: neither read nor parsed (180 MB parsed)


def with_objects(parts: Parts, payloads: list[tuple[bytes, int]], path: Path, level: int = 3) -> Path:
    """The archive with more objects (payload, kind) after its own, no session document reaching them."""
    for payload, kind in payloads:
        parts.payloads.append(payload)
        parts.entries.append([object_id(payload), 0, 0, kind])
    payloads_bytes, manifest, index = parts.body()
    body = payloads_bytes + manifest + index
    return parts.build(path, frames=zstandard.ZstdCompressor(level=level).compress(body), body=body)


def test_an_object_no_session_uses_is_checked_against_its_id_and_never_parsed(
    target: SnapshotStore, tmp_path: Path
) -> None:
    """Checked as the states a session uses, an unused 30 MB state of ``[{},{},...]`` in a 3 KB archive
    took 2.9 GB and 8.2 s to import (a trial of hostile archives): a parse takes some 100 times what
    that JSON compresses to, and a state may compress that well in earnest, so no ratio tells it from
    a real one. An object no document reaches is now hashed a piece at a time, and nothing else."""
    source = SnapshotStore.memory()
    source.session("s").commit({"a": 1})
    source.export(tmp_path / "small.snaparchive")
    unused = b"[" + b"{}," * (2 << 20) + b"{}]"  # 6 MiB: some 580 MB parsed
    path = with_objects(Parts.read(tmp_path / "small.snaparchive"), [(unused, STATE)], tmp_path / "u.snaparchive", 19)
    assert path.stat().st_size < 4096
    tracemalloc.start()
    try:
        report = target.import_archive(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(unused) // 2, peak  # (not even its bytes whole: read 1 MiB at a time)
    assert [item.session for item in report.sessions if item.action == "created"] == ["s"]
    assert target.session("s").state(target.session("s").head.id) == {"a": 1}
    assert target.verify().ok


def test_objects_no_session_uses_may_be_anything_their_ids_hash(
    source: SnapshotStore, archive: Path, target: SnapshotStore, tmp_path: Path
) -> None:
    """An exporter writes objects no document reaches (a session planned again when a writer reclaims
    under the export keeps what it already wrote): they are not refused for what they hold, nor used,
    nor written; one whose bytes do not hash to its id is refused, as any object's."""
    state_patch = orjson.dumps({"parent": "0" * 32, "patch": [{"op": "copy", "from": "", "path": "/a"}], "size": 9})
    odd = [
        (b"{not json", STATE), (b'{"hp": 7}', STATE), (b"[" * 300 + b"]" * 300, DELTA), (b"[1,2]", RECORD),
        (b'{"b":1,"a":2}', DELTA),
    ]  # fmt: skip
    parts = Parts.read(archive)
    parts.payloads.append(state_patch)  # its id hashes the state it would rebuild: nothing to check it by
    parts.entries.append([object_id(b'{"never": "rebuilt"}'), 0, 0, STATE_PATCH])
    path = with_objects(parts, odd, tmp_path / "odd.snaparchive")
    before = {name: target.session(name).snapshot_ids() for name in target.sessions()}
    report = target.import_archive(path)
    assert sorted(item.session for item in report.sessions) == ["campaign", "side quest"]
    for name in ("campaign", "side quest"):
        assert_same_session(source, target, name)
    assert {name: target.session(name).snapshot_ids() for name in before} == before
    assert target.verify().ok
    check_archive(path)
    parts = Parts.read(archive)
    parts.payloads.append(b"[1,2,3]")
    parts.entries.append([object_id(b"[1,2,4]"), 0, 0, STATE])
    error = refused(SnapshotStore.memory(), with_objects(parts, [], tmp_path / "bad.snaparchive"))
    assert error.details["reason"] == "hash mismatch" and error.details["object"] == object_id(b"[1,2,4]")


def test_an_ordinary_archive_checks_every_object_it_carries(
    archive: Path, target: SnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every object an exporter writes for its sessions is reached by a document, and checked whole."""
    checked: list[str] = []
    patches: list[str] = []
    real_check, real_patch = importer.check_payload, importer.check_state_patch

    def check(archive: str, key: str, kind: int, payload: bytes) -> None:
        checked.append(key)
        real_check(archive, key, kind, payload)

    def check_patch(archive: str, key: str, payload: bytes) -> int:
        patches.append(key)
        return real_patch(archive, key, payload)

    monkeypatch.setattr(importer, "check_payload", check)
    monkeypatch.setattr(importer, "check_state_patch", check_patch)
    parts = Parts.read(archive)
    assert any(e[3] == STATE_PATCH for e in parts.entries) and any(e[3] == STATE for e in parts.entries)
    target.import_archive(archive)
    assert sorted([*checked, *patches]) == sorted(e[0] for e in parts.entries)
    assert sorted(patches) == sorted(e[0] for e in parts.entries if e[3] == STATE_PATCH)


def test_manifests_an_exporter_writes_compressed_hundreds_of_times_still_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Empty sessions with long names are the most compressible manifest an export writes (270 times for
    30,000 of them, 10 MB): judged by the ratio alone, with no floor, they still import."""
    source = SnapshotStore.memory()
    for n in range(1_500):
        source.session(f"{'x' * 194}{n:06d}")
    path = tmp_path / "empty.snaparchive"
    source.export(path, level=22)
    manifest = len(orjson.dumps(Parts.read(path).manifest))
    assert manifest > 150 * path.stat().st_size, (manifest, path.stat().st_size)
    monkeypatch.setattr(importer, "MANIFEST_FLOOR", 0)
    target = SnapshotStore.memory()
    assert len(target.import_archive(path).created) == 1_500


@pytest.mark.parametrize("levels", [253, 300])
def test_deltas_that_nest_a_state_deeper_than_a_commit_takes_are_refused(
    target: SnapshotStore, tmp_path: Path, levels: int
) -> None:
    """Each delta is shallow enough, yet they nest the state they rebuild deeper than a commit takes
    (252 levels): at 253 the import wrote it and the session's next commit failed, past orjson's 254
    the import died on a bare TypeError (found by a trial)."""
    source = SnapshotStore.memory()
    sess = source.session("s")
    deep: Any = 0
    for _ in range(200):
        deep = [deep]
    first = sess.commit({"x": deep})
    second = sess.commit({"x": orjson.loads(orjson.dumps(deep).replace(b"0", b"1"))})
    source.export(tmp_path / "a.snaparchive")
    parts = Parts.read(tmp_path / "a.snaparchive")
    record = orjson.loads(parts.payloads[parts.index(second.id)])
    ops = orjson.loads(parts.payloads[parts.index(record["delta"])])
    assert [op["op"] for op in ops] == ["replace"]
    value: Any = 1
    for _ in range(levels - 201):  # the state is an object (1 level), then 200 lists to the leaf
        value = [value]
    ops[0]["value"] = value
    delta = orjson.dumps(ops)
    parts.payloads[parts.index(record["delta"])] = delta
    parts.entries[parts.index(record["delta"])][0] = object_id(delta)
    state: Any = {"x": deep}
    leaf = state["x"]
    while leaf[0] != 0:
        leaf = leaf[0]
    leaf[0] = value
    try:
        data = orjson.dumps(state, option=orjson.OPT_SORT_KEYS)
        record["state"], record["size"] = object_id(data), len(data)
    except orjson.JSONEncodeError:  # deeper than orjson writes: the rebuild fails before any hash is compared
        pass
    record["delta"] = object_id(delta)
    payload = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    parts.payloads[parts.index(second.id)] = payload
    parts.entries[parts.index(second.id)][0] = new_id = object_id(payload)
    document = parts.manifest["sessions"][0]
    document["snapshots"] = [first.id, new_id]
    document["head"] = new_id
    error = refused(target, parts.build(tmp_path / "deep.snaparchive"))
    assert error.details["reason"] == "not JSON"
    assert "nests at most 252 levels" in str(error)


@pytest.mark.parametrize("version", [1.0, True, "1", 0, -1, None, [1]])
def test_a_session_document_whose_format_is_no_version_number_is_malformed(
    archive: Path, target: SnapshotStore, tmp_path: Path, version: Any
) -> None:
    """1.0 and true equal 1 in Python and passed as the document's format; "1", 0 or null were
    refused as a newer format (FormatVersionError, 'has format '1'; this build reads 1'), where
    the document is malformed (a hostile-archive trial). A newer version stays FormatVersionError."""
    parts = Parts.read(archive)
    parts.manifest["sessions"][0]["format"] = version
    error = refused(target, parts.build(tmp_path / "format.snaparchive"))
    assert error.details["reason"] == "bad session document"
    assert "no version number" in str(error)
