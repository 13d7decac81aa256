"""What learning a session's history costs: decoding its entries, looking at its segments, opening it.

    python -m benchmarks.index_costs [--commits 2000]

Commits ``--commits`` small states (a counter and a window of 30 log lines) to one session of a
fresh directory store, then prints, best of several tries:

* decoding every entry of the session's segments (``entries.decode_entry``, as opening a session
  and every refresh do), per entry, and taking a commit whose id an INDEX entry gives (format 4,
  ``entries.vouched_entry``: its record is checked and hashed only when first used);
* one look at the session's segments (``Backend.segments``, what every refresh starts with),
  right after the session's folder changed (its times set to now) and again once its times are
  older than the listing-reuse margin (the same work twice in a build that lists every time);
* opening the session on a fresh store handle (``SnapshotStore.open``, ``Session.head``), and
  opening it and listing its records (``Session.snapshots``).

Only public names and ``entries.decode_entry`` are used, so the same command runs against an
earlier build put first on ``PYTHONPATH``, for a comparison in one sitting.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from .baselines import import_snapstore
from .timing import best_seconds

#: longer than the directory engine's listing-reuse margin (50 ms)
AGE_SECONDS = 0.2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=2000)
    args = parser.parse_args(argv)
    snapstore = import_snapstore()
    from snapstore.entries import decode_entry

    folder = Path(tempfile.mkdtemp(prefix="snapstore-index-"))
    try:
        store = snapstore.SnapshotStore.open(folder / "store")
        session = store.session("s", max_snapshots=args.commits)
        state: dict[str, object] = {"n": 0, "log": []}
        for turn in range(args.commits):
            state = {"n": turn, "log": [*state["log"], f"line {turn}"][-30:]}  # type: ignore[misc]
            session.commit(state, label=f"turn {turn}", turn=turn)
        backend, key = store.backend, session.key
        entries = [e for info in backend.segments(key) for e in backend.read_segment(key, info.segment).entries]
        entries = [e for e in entries if e[:1] != b"\x03"]  # INDEX entries (format 4) are not decoded
        decode = best_seconds(lambda: [decode_entry(e, "s", "bench") for e in entries], 5) / len(entries)
        vouched = None
        try:
            from snapstore.entries import vouched_entry  # format 4
        except ImportError:
            pass
        else:
            ids = [getattr(decode_entry(e, "s", "bench"), "id", None) for e in entries]
            pairs = [(e, sid) for e, sid in zip(entries, ids, strict=True) if sid is not None]
            vouched = best_seconds(lambda: [vouched_entry(e, sid, "s", "bench") for e, sid in pairs], 5) / len(pairs)
        segments = len(backend.segments(key))
        os.utime(folder / "store" / "sessions" / key)  # the folder just changed: looks list it
        fresh = best_seconds(lambda: backend.segments(key), 20)
        time.sleep(AGE_SECONDS)
        backend.segments(key)
        aged = best_seconds(lambda: backend.segments(key), 200)
        store.close()

        def open_session() -> None:
            reopened = snapstore.SnapshotStore.open(folder / "store")
            assert reopened.session("s").head is not None
            reopened.close()

        opening = statistics.median(best_seconds(open_session, 1) for _ in range(15))

        def list_records() -> None:
            reopened = snapstore.SnapshotStore.open(folder / "store")
            assert len(reopened.session("s").snapshots()) == args.commits
            reopened.close()

        listing = statistics.median(best_seconds(list_records, 1) for _ in range(15))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{args.commits} commits: {len(entries)} entries in {segments} segment(s)")
    print(f"decode an entry                             {decode * 1e6:8.2f} µs")
    if vouched is not None:
        print(f"take a commit an INDEX entry gives the id of {vouched * 1e6:7.2f} µs")
    print(f"look at the segments, folder just changed   {fresh * 1e6:8.1f} µs")
    print(f"look at the segments, folder unchanged      {aged * 1e6:8.1f} µs")
    print(f"open the session (median of 15)             {opening * 1e3:8.2f} ms")
    print(f"open it and list its records (median of 15) {listing * 1e3:8.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
