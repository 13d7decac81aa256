"""Make the golden store ``tests/golden/store-v2/`` and ``tests/golden/expected-v2/*.json``. Run ONCE.

The golden store is a small directory store written by format version 2 and
committed, so that tests/test_golden.py can check that every later build
(and a reader written from docs/format.md alone) still reads it. Tests never run
this script; they copy the committed store and read the copy.

How it was made (from the repository root)::

    PYTHONPATH=src .venv/bin/python tests/golden/make_golden_v2.py

It refuses to overwrite an existing ``store-v2`` unless given ``--force``. Builds since format 3
write format-3 stores: the committed ``store-v2`` is the one a format-2 build wrote, and only
``make_golden_v3.py`` (which borrows this script's clock, headers and export) runs today.

Deterministic: commit times come from a fixed clock (2026-01-02T03:04:05Z plus
one second per commit) and segment headers get sequential ``file_id`` values, so
a rerun with the same zstd library writes the same snapshot ids and the same
bytes. The store is written by the engine itself (``SnapshotStore``), with two
settings turned down so that a few hundred bytes of state exercise what large
states do: segments close at 2 KiB of raw payload instead of 256 KiB
(``keyframes.SMALL_SEGMENT_BYTES``) and a chain holds at most 3 deltas.

What is in it (docs/format.md, "Version 2"):

* ``campaign``: a game whose history spans several segments, each with an
  independent keyframe, patched keyframes (``KEY_PATCHED``) and delta streams
  (``DELTA_FRAME`` then ``DELTA_CONTINUE``); a tag on an early snapshot keeps it
  (and its segment) past the retention limit of 8, so reclaiming squashed that
  segment (rewritten to start at the tagged snapshot's run); a rollback (a
  ``head`` META) followed by commits that branch from it;
* ``Zoë's table`` (folder ``Zo%C3%AB%27s%20table``): states whose values only survive
  a type-exact round trip (1 / 1.0 / true, -0.0, 64-bit extremes, non-ASCII,
  keys with ``/`` and ``~``), and a lowered limit (a ``max_snapshots`` META);
* a session whose name is too long for a folder name (its key is a prefix of the
  quoted name, ``~`` and the xxh3-128 of the name), where ``forget`` wrote an
  ``evicted_through`` META.

Each ``expected-v2/<slug>.json`` holds one session as a reader must find it: its
key, settings, head, tags, retained snapshots (record fields and state), every
segment's entries in order (META bodies; commit ids and modes), and which
segments were squashed.
"""

from __future__ import annotations

import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
STORE = HERE / "store-v2"
EXPECTED = HERE / "expected-v2"

sys.path.insert(0, str(HERE.parents[1] / "src"))

from make_golden import tricky  # noqa: E402  (the version-1 golden store's type-exact states)

from snapstore import SnapshotStore, keyframes, session  # noqa: E402
from snapstore.backends import _framing  # noqa: E402
from snapstore.entries import CommitEntry, MetaEntry, decode_entry  # noqa: E402
from snapstore.objects import format_timestamp  # noqa: E402
from snapstore.session import Session  # noqa: E402
from snapstore.store import session_key  # noqa: E402

LONG_NAME = "a session name longer than a folder name may be: " + "saga " * 20 + "(end)"
_clock = [datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)]
_file_ids = [0]
squashed: dict[str, set[int]] = {}


def fixed_now() -> str:
    _clock[0] += timedelta(seconds=1)
    return format_timestamp(_clock[0])


def sequential_header() -> bytes:
    _file_ids[0] += 1
    return _framing.SEGMENT_HEADER[: _framing.HEADER_SIZE - 3] + _file_ids[0].to_bytes(3, "big")


def game(turn: int, branch: str = "main") -> dict[str, Any]:
    return {
        "turn": turn,
        "branch": branch,
        "hero": {"name": "Ada", "hp": 30 - turn % 7, "gold": turn * 2.5, "alive": True},
        "inventory": ["sword", "rope"] + [f"gem {i}" for i in range(turn % 5)],
        "log": [f"turn {t}: the party {['rests', 'fights', 'travels'][t % 3]}" for t in range(max(0, turn - 6), turn)],
        "map": {"x": turn % 4, "y": -(turn // 4), "seen": list(range(0, turn, 3))},
    }


def watch_squashes(store: SnapshotStore) -> None:
    """Note which segments reclaiming rewrote (replace_segment is only called to squash)."""
    backend = store.backend
    original = backend.replace_segment

    def replace(key: str, segment: int, entries: Any) -> None:
        squashed.setdefault(key, set()).add(segment)
        original(key, segment, entries)

    backend.replace_segment = replace  # type: ignore[method-assign]


def export(sess: Session) -> dict[str, Any]:
    store = sess._store
    log = sess._current()
    segments = []
    for info in store.backend.segments(sess.key):
        read = store.backend.read_segment(sess.key, info.segment)
        entries = []
        for data in read.entries:
            if data[:1] == b"\x03":
                continue  # an INDEX entry (format 4, make_golden_v4.py): not an entry of the session
            entry = decode_entry(data, sess.name, "golden")
            if isinstance(entry, MetaEntry):
                entries.append({"meta": entry.body})
            else:
                assert isinstance(entry, CommitEntry)
                entries.append({"commit": entry.id, "mode": entry.mode})
        segments.append({"segment": info.segment, "entries": entries})
    head = sess.head
    return {
        "session": sess.name,
        "key": sess.key,
        "max_snapshots": sess.max_snapshots,
        "head": None if head is None else head.id,
        "tags": sess.tags,
        "squashed": sorted(squashed.get(sess.key, set()) & {s["segment"] for s in segments}),
        "segments": segments,
        "snapshots": [
            {
                "id": snap.id,
                "parent": snap.parent,
                "label": snap.label,
                "timestamp": log.commits[snap.id].record.timestamp,
                "turn": snap.turn,
                "kind": snap.kind,
                "size": snap.size,
                "state_hash": snap.state_hash,
                "delta": log.commits[snap.id].record.delta,
                "depth": log.commits[snap.id].record.depth,
                "state": sess.state(snap.id),
            }
            for snap in sess.snapshots()
        ],
    }


def start_afresh(store: Path, expected: Path) -> None:
    """Refuse to replace a golden store without --force; then a fixed clock and sequential headers."""
    if store.exists():
        if "--force" not in sys.argv[1:]:
            sys.exit(f"{store} exists: the golden store is made once (pass --force to replace it)")
        shutil.rmtree(store)
    shutil.rmtree(expected, ignore_errors=True)
    expected.mkdir()
    session._now = fixed_now  # type: ignore[attr-defined]
    _framing.new_header = sequential_header  # type: ignore[assignment]


def main() -> None:
    start_afresh(STORE, EXPECTED)
    keyframes.SMALL_SEGMENT_BYTES = 2048  # type: ignore[misc]

    exported: dict[str, dict[str, Any]] = {}
    with SnapshotStore.open(STORE, max_chain=3, max_runs=2) as store:
        watch_squashes(store)
        sess = store.session("campaign", max_snapshots=8)
        ids = [sess.commit(game(t), label=f"turn {t}", turn=t).id for t in range(1, 7)]
        sess.tag(ids[5], "boss-fight")
        ids += [sess.commit(game(t), label=f"turn {t}", turn=t).id for t in range(7, 30)]
        sess.rollback(ids[-4])
        for t in range(27, 30):
            sess.commit(game(t, "what if"), label=f"turn {t} (branch)", turn=t)
        exported["campaign"] = export(sess)

        zoe = store.session("Zoë's table", max_snapshots=6)
        for t in range(6):
            zoe.commit(tricky(t), label=f"turn {t}", turn=t)
        zoe.set_max_snapshots(4)
        exported["zoe-table"] = export(zoe)

        long = store.session(LONG_NAME, max_snapshots=10)
        for t in range(5):
            long.commit({"n": t, "note": "kept" if t >= 3 else "forgotten"}, label="", turn=None)
        long.forget(2)
        exported["long-name"] = export(long)

        report = store.verify()
        assert report.ok, report.problems

    check(exported)
    for slug, data in exported.items():
        (EXPECTED / f"{slug}.json").write_bytes(
            orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"
        )
    total = sum(p.stat().st_size for p in STORE.rglob("*") if p.is_file())
    print(f"wrote {STORE} ({total} bytes of files) and {len(exported)} expected-v2/*.json files")


def check(exported: dict[str, dict[str, Any]]) -> None:
    """Refuse a golden store that lacks what it is meant to show."""
    campaign = exported["campaign"]
    modes = {e["mode"] for s in campaign["segments"] for e in s["entries"] if "commit" in e}
    metas = [e["meta"] for s in campaign["segments"] for e in s["entries"] if "meta" in e]
    assert len(campaign["segments"]) >= 3, "campaign spans several segments"
    assert modes == {0, 1, 2, 3}, f"every compression mode, found {modes}"
    assert campaign["squashed"], "a squashed segment"
    assert any("head" in m for m in metas) and any("tag" in m for m in metas)
    assert campaign["snapshots"][-1]["label"].endswith("(branch)"), "commits after the rollback branch from it"
    assert session_key(LONG_NAME) == exported["long-name"]["key"] and "~" in exported["long-name"]["key"]
    zoe_metas = [e["meta"] for s in exported["zoe-table"]["segments"] for e in s["entries"] if "meta" in e]
    assert any(set(m) == {"max_snapshots"} for m in zoe_metas)
    long_metas = [e["meta"] for s in exported["long-name"]["segments"] for e in s["entries"] if "meta" in e]
    assert any("evicted_through" in m for m in long_metas)


if __name__ == "__main__":
    main()
