"""History lost from the middle of a session: a segment file cut short, emptied or removed (a
restore of an old copy, a file system that lost blocks, a hand that deleted a file).

Its snapshots leave the session, and nothing downstream of the loss shows it: the segments after
it read as usual. ``verify`` said "ok" and a read of a lost id blamed retention (found by an
outside trial: 45 of 300 snapshots gone, limit 1,000). Where retention has evicted nothing, a
segment that follows one cut short, empty or missing, and whose first snapshot names a parent no
segment holds, is history lost; elsewhere reclaim drops segments and leaves such parents, and
nothing is reported.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from cli_support import run
from snapstore import SnapshotStore
from snapstore.errors import SnapshotNotFound

SETTINGS = {"max_runs": 1}  # each new keyframe starts a segment


def _turn(rng: random.Random, t: int) -> dict[str, object]:
    """A state whose text is written anew each turn: deltas as large as keyframes, segments that fill up."""
    return {"turn": t, "text": "".join(rng.choice("abcdefghij ") for _ in range(3000))}


def _session_with_segments(root: Path, turns: int = 300) -> tuple[list[str], list[Path]]:
    """A session of ``turns`` commits over several segments; its ids and segment files, oldest first."""
    rng = random.Random(0)
    with SnapshotStore.open(root, **SETTINGS) as store:
        sess = store.session("camp", max_snapshots=1000)
        ids = [sess.commit(_turn(rng, t)).id for t in range(turns)]
        folder = root / "sessions" / sess.key
    segments = sorted(folder.glob("*.seg"))
    assert len(segments) >= 4
    return ids, segments


def _cut_in_half(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _empty(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(0)


LOSSES: dict[str, tuple[Callable[[Path], None], str]] = {
    "cut short": (_cut_in_half, "segment 2 ends in a cut-short entry"),
    "emptied": (_empty, "segment 2 holds no snapshot"),
    "removed": (Path.unlink, "segment 2 is missing"),
}


@pytest.mark.parametrize("loss", LOSSES)
def test_a_segment_lost_from_the_middle_is_reported_and_its_snapshots_are_not_called_evicted(
    tmp_path: Path, loss: str
) -> None:
    ids, segments = _session_with_segments(tmp_path / "store")
    damage, why = LOSSES[loss]
    damage(segments[1])
    store = SnapshotStore.open(tmp_path / "store")
    report = store.verify()
    assert len(report.problems) == 1 and why in report.problems[0].message
    assert "history was lost from the store" in report.problems[0].message
    sess = store.session("camp")
    gone = [sid for sid in ids if sid not in set(sess.snapshot_ids())]
    assert gone
    with pytest.raises(SnapshotNotFound, match="lost history") as raised:  # not found, and why
        sess.state(gone[-1])
    assert raised.value.details["reason"] == "lost history"
    assert sess.state(ids[-1])["turn"] == len(ids) - 1  # what follows the loss still reads
    shown = run("show", gone[-1], store=tmp_path / "store")  # the command line says so too
    assert shown.returncode == 1 and "lost history" in shown.stderr, shown.stderr


@pytest.mark.parametrize("then", ["commit", "merge import"])
def test_a_torn_append_is_cut_before_a_segment_starts_after_it(tmp_path: Path, then: str) -> None:
    """A writer killed mid-append leaves a cut-short entry; when the next write starts a segment, the
    cut was left behind it, and a merge import starting that segment with a history whose parent its
    source had evicted then read as history lost (found by a review). The torn append is cut first."""
    ids, segments = _session_with_segments(tmp_path / "store")
    last = segments[-1]
    whole = last.stat().st_size
    with open(last, "ab") as f:  # a frame's first bytes, as a killed append leaves them
        f.write(b"\x00\x10\x00\x00\x01")
    assert SnapshotStore.open(tmp_path / "store").verify().ok  # a torn last segment is no loss
    if then == "commit":
        with SnapshotStore.open(tmp_path / "store", **SETTINGS) as store:
            store.session("camp").commit({"turn": -1, "text": "x" * 300_000})  # a keyframe, a segment of its own
    else:
        source = SnapshotStore.open(tmp_path / "source")
        other = source.session("camp", max_snapshots=3)
        rng = random.Random(5)
        for t in range(8):
            other.commit({"theirs": t, "text": rng.randbytes(150_000).hex()})
        source.export(tmp_path / "camp.snaparchive")
        with SnapshotStore.open(tmp_path / "store", **SETTINGS) as store:
            store.import_archive(tmp_path / "camp.snaparchive", on_conflict="merge")
    assert len(list(last.parent.glob("*.seg"))) > len(segments)
    assert last.stat().st_size == whole  # the torn bytes cut, what was whole kept
    store = SnapshotStore.open(tmp_path / "store")
    assert store.verify().ok
    assert all(store.session("camp").state(sid) is not None for sid in ids[-3:])


def test_segments_reclaim_dropped_between_kept_ones_are_not_reported(tmp_path: Path) -> None:
    """A tag keeps an old segment while retention drops the ones after it: a gap in the numbering,
    and the oldest retained snapshot's parent in no segment. Retention evicted: not reported."""
    rng = random.Random(1)
    with SnapshotStore.open(tmp_path / "store", **SETTINGS) as store:
        sess = store.session("camp", max_snapshots=3)
        first = sess.commit({"turn": 0, "text": rng.randbytes(100_000).hex()}).id
        sess.tag(first, "start")
        for t in range(1, 12):  # states of 200 kB: each keyframe a segment of its own
            sess.commit({"turn": t, "text": rng.randbytes(100_000).hex()})
        numbers = sorted(int(p.stem, 16) for p in (tmp_path / "store" / "sessions" / sess.key).glob("*.seg"))
    assert numbers[1] != numbers[0] + 1  # a gap between kept segments
    assert SnapshotStore.open(tmp_path / "store").verify().ok


def test_a_merged_history_whose_parent_no_segment_holds_is_not_reported(tmp_path: Path) -> None:
    """A merge import brings in a history from another store, its oldest snapshot's parent evicted
    there: a parent no segment holds, after no segment cut short or missing. Not reported."""
    source = SnapshotStore.open(tmp_path / "source")
    sess = source.session("camp", max_snapshots=5)
    for t in range(10):
        sess.commit({"t": t})
    source.export(tmp_path / "camp.snaparchive")
    target = SnapshotStore.open(tmp_path / "target")
    target.session("camp", max_snapshots=100).commit({"mine": 1})
    target.import_archive(tmp_path / "camp.snaparchive", on_conflict="merge")
    assert target.verify().ok


def test_the_rollback_manager_says_a_snapshot_was_lost_with_history(tmp_path: Path) -> None:
    """The drop-in manager turns "not found" into its own "Snapshot X not found"; a snapshot the
    store lost says why, as damage does."""
    from pydantic import BaseModel

    from snapstore import RollbackError, StateRollbackManager

    class Game(BaseModel):
        session_id: str = "camp"
        text: str = ""

    rng = random.Random(2)
    game = Game()
    with SnapshotStore.open(tmp_path / "store", **SETTINGS) as store:
        mgr = StateRollbackManager(game, max_snapshots=1000, store=store, session_name="camp")
        ids = []
        for _ in range(300):
            game.text = "".join(rng.choice("abcdefghij ") for _ in range(3000))
            ids.append(mgr.create_snapshot().snapshot_id)
        folder = tmp_path / "store" / "sessions" / store.session("camp").key
    _cut_in_half(sorted(folder.glob("*.seg"))[1])
    with SnapshotStore.open(tmp_path / "store") as store:
        mgr = StateRollbackManager(game, max_snapshots=1000, store=store, session_name="camp")
        gone = [sid for sid in ids if sid not in {s["snapshot_id"] for s in mgr.list_snapshots()}]
        with pytest.raises(RollbackError, match="lost history"):
            mgr.rollback_to(gone[-1])
