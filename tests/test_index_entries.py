"""INDEX entries (format 4, docs/format.md §4.6.1): what writers append, and what readers take from them.

An INDEX entry gives the ids of the COMMIT entries before it so that a reader opening a segment
need not hash each record. It must change nothing a reader finds: every test here compares a
session read with the INDEX entries against the same session read with them taken out, and a
record whose INDEX entry gives it a wrong id must never be served under that id.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import EntriesExamined, canonical
from snapstore import SnapshotStore
from snapstore.entries import INDEX, INDEX_EVERY, decode_entry, encode_index, index_ids, split_index
from snapstore.errors import CorruptObjectError

SESSION = "chronicle"


def world(turn: int, writer: int = 0) -> dict[str, Any]:
    return {"turn": turn, "by": writer, "log": [f"line {t}" for t in range(max(0, turn - 5), turn)], "ratio": turn / 3}


def index_entries(store: SnapshotStore, key: str) -> dict[int, list[list[str]]]:
    """Segment number -> the ids each of its INDEX entries gives."""
    found: dict[int, list[list[str]]] = {}
    for info in store.backend.segments(key):
        raw = store.backend.read_segment(key, info.segment).entries
        found[info.segment] = [index_ids(data) or [] for data in raw if data[:1] == bytes([INDEX])]
    return found


def session_view(store: SnapshotStore) -> dict[str, Any]:
    """Everything a reader finds of the session, through a fresh handle."""
    sess = fresh_handle(store)
    snaps = sess.snapshots()
    return {
        "ids": sess.snapshot_ids(),
        "head": None if sess.head is None else sess.head.id,
        "records": [(s.id, s.parent, s.label, s.turn, s.size, s.state_hash, s.kind) for s in snaps],
        "states": {s.id: canonical(sess.state(s.id)) for s in snaps},
    }


def fresh_handle(store: SnapshotStore) -> Any:
    """The session through another store object over the same engine: nothing cached is shared
    (not closed: closing it would close the engine the test's store uses)."""
    return SnapshotStore(store.backend).session(SESSION, create=False)


def strip_index_entries(store: SnapshotStore, key: str) -> None:
    for info in store.backend.segments(key):
        raw = store.backend.read_segment(key, info.segment).entries
        kept = [data for data in raw if data[:1] != bytes([INDEX])]
        if kept != raw:
            store.backend.replace_segment(key, info.segment, kept)


def replace_index(store: SnapshotStore, key: str, change: Callable[[list[str]], bytes]) -> int:
    """Replace the first INDEX entry of the session by ``change(its ids)``; returns its segment."""
    for info in store.backend.segments(key):
        raw = list(store.backend.read_segment(key, info.segment).entries)
        for position, data in enumerate(raw):
            if data[:1] == bytes([INDEX]):
                raw[position] = change(index_ids(data) or [])
                store.backend.replace_segment(key, info.segment, raw)
                return info.segment
    raise AssertionError("no INDEX entry")


def test_a_writer_appends_an_index_entry_after_every_64th_commit(make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store()
    sess = store.session(SESSION, max_snapshots=1000)
    ids = [sess.commit(world(turn), label=f"t{turn}").id for turn in range(2 * INDEX_EVERY + 10)]
    indexes = [ids for per_segment in index_entries(store, sess.key).values() for ids in per_segment]
    assert indexes, "INDEX entries are written"
    covered = [sid for group in indexes for sid in group]
    assert covered == [sid for sid in ids if sid in covered]  # in commit order, each once
    assert all(len(group) >= INDEX_EVERY for group in indexes)
    assert store.verify().ok


@pytest.mark.parametrize("tags", [1000, 2000])
def test_tagging_one_snapshot_n_times_examines_entries_linear_in_n(
    make_store: Callable[..., SnapshotStore], entries_examined: EntriesExamined, tags: int
) -> None:
    """Each append asks which COMMIT entries the next INDEX entry names: it used to scan every entry
    since the last INDEX entry, which settings entries alone never bring, so n tags examined n**2/2
    entries (50,000 tags took 62 s through the API, 42 s by importing an archive)."""
    store = make_store()
    sess = store.session(SESSION)
    sid = sess.commit(world(0)).id
    entries_examined.count = 0
    for n in range(tags):
        sess.tag(sid, f"tag {n}")
    assert len(sess.tags) == tags
    assert entries_examined.count <= 4 * tags  # 1000 tags examined 501,501 entries before


def test_index_entries_name_the_commits_between_settings_entries(make_store: Callable[..., SnapshotStore]) -> None:
    """The COMMIT entries an INDEX entry names are kept as entries come (tags and head moves between
    them): each group still names every commit since the previous one, in order."""
    store = make_store()
    sess = store.session(SESSION, max_snapshots=1000)
    ids: list[str] = []
    for turn in range(3 * INDEX_EVERY):
        ids.append(sess.commit(world(turn), label=f"t{turn}").id)
        if turn % 3 == 0:
            sess.tag(ids[-1], f"turn {turn}")
        if turn % 50 == 49:
            sess.rollback(ids[-2])
            sess.rollback(ids[-1])
    indexes = [group for per_segment in index_entries(store, sess.key).values() for group in per_segment]
    assert len(indexes) >= 2
    covered = [sid for group in indexes for sid in group]
    assert covered == [sid for sid in ids if sid in covered]
    assert all(len(group) >= INDEX_EVERY for group in indexes)
    with_index = session_view(store)
    strip_index_entries(store, sess.key)
    assert session_view(store) == with_index
    assert store.verify().ok


@pytest.mark.parametrize("history", ["linear", "two writers", "rollback and tags", "evicting"])
def test_a_session_reads_the_same_with_or_without_its_index_entries(
    make_store: Callable[..., SnapshotStore], history: str
) -> None:
    store = make_store()
    sess = store.session(SESSION, max_snapshots=40 if history == "evicting" else 1000)
    if history == "two writers":
        other = SnapshotStore(store.backend).session(SESSION)
        for turn in range(150):
            (sess if turn % 3 else other).commit(world(turn, turn % 3 == 0), label=f"t{turn}")
    else:
        ids = [sess.commit(world(turn), label=f"t{turn}").id for turn in range(200)]
        if history == "rollback and tags":
            sess.tag(ids[10], "start")
            sess.rollback(ids[70])
            for turn in range(70, 150):
                sess.commit(world(turn, 2), label=f"branch {turn}")
    assert any(index_entries(store, sess.key).values())
    with_index = session_view(store)
    strip_index_entries(store, sess.key)
    assert not any(index_entries(store, sess.key).values())
    assert session_view(store) == with_index
    assert store.verify().ok


def test_reading_a_segment_part_way_takes_no_id_from_an_index_whose_group_began_before() -> None:
    commits = [bytes([2]) + bytes([i]) for i in range(4)]
    meta = bytes([1]) + b"{}"
    ids = [f"{i:032x}" for i in range(4)]
    whole = [meta, commits[0], commits[1], encode_index(ids[:2]), commits[2], commits[3], encode_index(ids[2:])]
    kept, vouched, covered = split_index(whole, from_start=True)
    assert kept == [meta, *commits] and vouched == [None, *ids] and covered == 5
    # read from the second commit on: the first INDEX's group began before the read
    kept, vouched, covered = split_index(whole[2:], from_start=False)
    assert kept == commits[1:] and vouched == [None, ids[2], ids[3]] and covered == 3
    # an INDEX whose count does not match its group gives nothing
    wrong = [meta, commits[0], encode_index(ids[:2])]
    assert split_index(wrong, from_start=True)[1] == [None, None]
    assert split_index([meta, commits[0], bytes([INDEX, 1, 0, 0, 0])], from_start=True)[1] == [None, None]
    assert split_index([meta, *commits], from_start=True) == ([meta, *commits], None, None)


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda g: [*g[:9], "ab" * 16, *g[10:]], id="a made-up id"),
        pytest.param(lambda g: [*g[:5], g[6], g[5], *g[7:]], id="two ids swapped"),
        pytest.param(lambda g: [*g[:-2], g[-1], g[-1]], id="an id given twice"),
        pytest.param(lambda g: [*g[:-1], "cd" * 16], id="the last id made up"),
    ],
)
def test_an_index_entry_that_misstates_ids_is_not_taken(
    dir_store: SnapshotStore, forge: Callable[[list[str]], list[str]]
) -> None:
    """A wrong INDEX entry (a writer's bug; frames made to match) disagrees with what the records
    say of each other (a child names its parent's true id): the segment's ids are then hashed, as
    without the entry, and verify, quick or full, names the entry."""
    sess = dir_store.session(SESSION, max_snapshots=1000)
    for turn in range(INDEX_EVERY + 5):
        sess.commit(world(turn), label=f"t{turn}")
    expected = session_view(dir_store)
    replace_index(dir_store, sess.key, lambda given: encode_index(forge(given)))
    assert session_view(dir_store) == expected
    for read_data in (False, True):
        report = dir_store.verify(read_data=read_data)
        assert len(report.problems) == 1 and "index entry" in report.problems[0].message


def test_a_misstated_id_of_a_snapshot_no_child_names_is_refused_when_read(dir_store: SnapshotStore) -> None:
    """A snapshot a rollback left behind has no child to contradict a wrong id: it is listed under
    it, and reading it is refused as damage, never served; verify names the INDEX entry."""
    sess = dir_store.session(SESSION, max_snapshots=1000)
    ids = [sess.commit(world(turn), label=f"t{turn}").id for turn in range(40)]
    sess.rollback(ids[30])  # ids[31:40] are a branch; ids[39] has no child
    for turn in range(40, INDEX_EVERY + 20):
        sess.commit(world(turn, 1), label=f"b{turn}")
    forged = "ab" * 16
    replace_index(dir_store, sess.key, lambda given: encode_index([*given[:39], forged, *given[40:]]))
    reopened = fresh_handle(dir_store)
    with pytest.raises(CorruptObjectError, match="another id"):
        reopened.state(forged)
    assert canonical(reopened.state(ids[38])) == canonical(world(38))
    assert len(dir_store.verify(read_data=False).problems) == 1


def test_an_index_entry_with_the_wrong_count_is_not_used_and_verify_names_it(dir_store: SnapshotStore) -> None:
    sess = dir_store.session(SESSION, max_snapshots=1000)
    ids = [sess.commit(world(turn), label=f"t{turn}").id for turn in range(INDEX_EVERY + 5)]
    replace_index(dir_store, sess.key, lambda given: encode_index(given[:-1]))
    reopened = fresh_handle(dir_store)
    assert reopened.snapshot_ids() == ids
    assert canonical(reopened.state(ids[3])) == canonical(world(3))
    report = dir_store.verify()
    assert len(report.problems) == 1
    assert f"gives {INDEX_EVERY - 1} ids for {INDEX_EVERY} commits" in report.problems[0].message


def test_a_record_that_does_not_hash_to_its_indexed_id_is_damage_when_read(dir_store: SnapshotStore) -> None:
    """The INDEX is right but the record after it was changed (frame checksums made to match, as a
    writer's bug would leave it): no state is rebuilt for it, and verify names it."""
    sess = dir_store.session(SESSION, max_snapshots=1000)
    ids = [sess.commit(world(turn), label=f"t{turn}").id for turn in range(INDEX_EVERY + 5)]
    raw = list(dir_store.backend.read_segment(sess.key, 1).entries)
    position = next(
        i for i, data in enumerate(raw) if data[:1] == b"\x02" and decode_entry(data, SESSION, "t").id == ids[20]
    )
    changed = bytearray(raw[position])
    changed[51] ^= 1  # the record's timestamp, a microsecond off: still a valid record, another id
    raw[position] = bytes(changed)
    dir_store.backend.replace_segment(sess.key, 1, raw)
    reopened = fresh_handle(dir_store)
    with pytest.raises(CorruptObjectError, match="another id"):
        reopened.state(ids[20])
    assert canonical(reopened.state(ids[30])) == canonical(world(30))
    # a listing shows records as their INDEX entries name them, unhashed, as it shows ids
    assert [s.id for s in reopened.snapshots()] == ids
    assert not dir_store.verify().ok


def test_a_format_3_store_gets_no_index_entries_until_upgraded(tmp_path: Path) -> None:
    root = tmp_path / "store"
    SnapshotStore.open(root).backend.write_config("format", b"3")  # a store a format-3 build made
    with SnapshotStore.open(root) as store:
        assert store.format == 3 and not store.index_entries
        sess = store.session(SESSION, max_snapshots=1000)
        for turn in range(INDEX_EVERY + 10):
            sess.commit(world(turn))
        assert not any(index_entries(store, sess.key).values())
    report = SnapshotStore.upgrade(root)
    assert (report.upgraded, report.from_version, report.to_version) == (True, "3", "4")
    with SnapshotStore.open(root) as store:
        sess = store.session(SESSION)
        sess.commit(world(500))
        (only,) = [ids for per_segment in index_entries(store, sess.key).values() for ids in per_segment]
        assert only == sess.snapshot_ids()  # the first commit after the upgrade covers the segment
        assert store.verify().ok


def test_a_squashed_segment_is_rewritten_with_index_entries(make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store(max_chain=6, max_runs=2)
    rewrites: list[list[bytes]] = []
    original = store.backend.replace_segment

    def noting(key: str, segment: int, entries: Any) -> None:
        entries = list(entries)
        rewrites.append(entries)
        original(key, segment, entries)

    store.backend.replace_segment = noting  # type: ignore[method-assign]
    sess = store.session(SESSION, max_snapshots=5)
    ids = [sess.commit(world(turn)).id for turn in range(18)]
    sess.tag(ids[17], "kept")  # kept past the limit, in a run after its segment's first: squashed
    for turn in range(18, 120):
        sess.commit(world(turn))
    store.gc()
    store.backend.replace_segment = original  # type: ignore[method-assign]
    squashed = [entries for entries in rewrites if any(data[:1] == b"\x02" for data in entries)]
    assert squashed, "the layout squashes a segment"
    for entries in squashed:
        assert entries[-1][:1] == bytes([INDEX])  # indexed whole
        kept, vouched, _covered = split_index(entries, from_start=True)
        assert vouched is not None
        assert [decode_entry(d, SESSION, "t").id for d in kept if d[:1] == b"\x02"] == [v for v in vouched if v]
    view = session_view(store)
    assert "kept" in fresh_handle(store).tags
    strip_index_entries(store, sess.key)
    assert session_view(store) == view
    assert store.verify().ok


def test_a_reader_reading_on_from_an_index_entry_takes_the_next_ones_ids(
    dir_store: SnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handle whose last read ended with an INDEX entry knows where the next group starts: the
    ids of what another writer appended after it come from the next INDEX entry, not hashed."""
    from snapstore import history

    writer = dir_store.session(SESSION, max_snapshots=1000)
    for turn in range(INDEX_EVERY):
        writer.commit(world(turn))
    reader = fresh_handle(dir_store)
    assert len(reader.snapshot_ids()) == INDEX_EVERY  # read through the first INDEX entry
    for turn in range(INDEX_EVERY, 2 * INDEX_EVERY):
        writer.commit(world(turn))
    hashed: list[bytes] = []
    decode = history.decode_entry
    monkeypatch.setattr(history, "decode_entry", lambda data, *a, **k: hashed.append(data) or decode(data, *a, **k))
    assert reader.snapshot_ids() == writer.snapshot_ids()
    assert not [data for data in hashed if data[:1] == b"\x02"]
    assert canonical(reader.state(writer.snapshot_ids()[-1])) == canonical(world(2 * INDEX_EVERY - 1))


def test_a_commit_entry_too_short_for_its_record_is_damage_even_with_an_index(dir_store: SnapshotStore) -> None:
    """An INDEX entry giving an id to a COMMIT shorter than a record: the commit is damage (the
    segment is read up to it), not an error from reading its fields by offset."""
    sess = dir_store.session(SESSION, max_snapshots=1000)
    ids = [sess.commit(world(turn)).id for turn in range(INDEX_EVERY)]
    raw = list(dir_store.backend.read_segment(sess.key, 1).entries)
    position = next(
        i for i, data in enumerate(raw) if data[:1] == b"\x02" and decode_entry(data, SESSION, "t").id == ids[40]
    )
    raw[position] = raw[position][:50]
    dir_store.backend.replace_segment(sess.key, 1, raw)
    reopened = fresh_handle(dir_store)
    assert reopened.snapshot_ids() == ids[:40]  # what precedes the damage
    assert canonical(reopened.state(ids[39])) == canonical(world(39))
    assert not dir_store.verify().ok


@pytest.mark.parametrize("how", ["before", "half", "zeros"])
def test_a_commit_whose_append_carries_an_index_entry_stopped_at_any_write_leaves_old_or_new(
    tmp_path: Path, how: str
) -> None:
    """The commit that completes 64 commits appends [COMMIT, INDEX] in one write: stopped before it,
    or torn in the middle (half its bytes, or zeros of its length), the session holds the history
    before or after it, verify finds nothing wrong, and the next commit cuts the tear and, with the
    segment's commits since its last INDEX at 64 or more, writes an INDEX entry then."""
    from snapstore.backends import DirectoryBackend
    from test_crash import CrashingBackend, SimulatedCrash

    golden = DirectoryBackend(tmp_path / "golden")
    sess = SnapshotStore(golden).session(SESSION, max_snapshots=1000)
    before = [sess.commit(world(turn), turn=turn).id for turn in range(INDEX_EVERY - 1)]
    assert not any(index_entries(SnapshotStore(golden), sess.key).values())
    golden.close()
    for crash_at in (1, 2):
        root = tmp_path / f"copy-{crash_at}"
        shutil.copytree(tmp_path / "golden", root, symlinks=True)
        crashing = CrashingBackend(DirectoryBackend(root, create=False), crash_at, how)
        with contextlib.suppress(SimulatedCrash):
            SnapshotStore(crashing).session(SESSION).commit(world(INDEX_EVERY - 1), turn=INDEX_EVERY - 1)
        store = SnapshotStore(DirectoryBackend(root, create=False))
        assert store.verify().ok
        listed = store.session(SESSION).snapshot_ids()
        assert listed[: len(before)] == before and len(listed) in (len(before), len(before) + 1)
        for turn in range(len(listed), INDEX_EVERY + 2):
            store.session(SESSION).commit(world(turn), turn=turn)
        # (a tear that kept the COMMIT whole and cut its INDEX: the next commit's INDEX covers both)
        (group,) = [ids for per_segment in index_entries(store, sess.key).values() for ids in per_segment]
        assert len(group) in (INDEX_EVERY, INDEX_EVERY + 1)
        assert store.verify().ok and session_view(store)["ids"][: len(group)] == group
        store.close()
