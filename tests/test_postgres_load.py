"""Several worker processes commit to one PostgreSQL store at once.

Each worker opens its own store on the same database (as a fleet of servers would),
commits to sessions of its own and to one session every worker shares, and reports
every snapshot id its commits returned. Writers queue on the session's advisory lock,
so no commit fails: a worker ends on the first error. Afterwards every returned id
must be listed and rebuild to the state that was committed, the shared session must
be one chain, and ``verify`` must find nothing wrong.
"""

from __future__ import annotations

import multiprocessing
import uuid
from typing import Any

import orjson

from conftest import postgres_url_or_skip
from snapstore import SnapshotStore
from snapstore.backends._postgres import PostgresBackend

WORKERS = 3
COMMITS = 40
SESSIONS_PER_WORKER = 3


def state_for(worker: int, session: str, n: int) -> dict[str, Any]:
    return {
        "worker": worker,
        "session": session,
        "n": n,
        "log": [f"w{worker} turn {i}" for i in range(n % 25)],
        "score": n * 1.5,
        "flags": {"odd": n % 2 == 1, "n/~": n},
    }


def worker_main(url: str, schema: str, worker: int, out: Any) -> None:
    store = SnapshotStore(PostgresBackend(url, schema=schema))
    made: list[tuple[str, str, int, str]] = []
    failure = None
    try:
        for n in range(COMMITS):
            name = "shared" if n % 2 == 0 else f"w{worker}-s{n % SESSIONS_PER_WORKER}"
            state = state_for(worker, name, n)
            snap = store.session(name, max_snapshots=10_000).commit(state, label=f"w{worker}", turn=n)
            made.append((name, snap.id, n, orjson.dumps(state, option=orjson.OPT_SORT_KEYS).decode()))
    except Exception as exc:  # reported to the parent, which fails the test with it
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        store.close()
    out.put((worker, made, failure))


def test_workers_commit_concurrently_and_nothing_is_lost() -> None:
    url = postgres_url_or_skip()
    schema = f"load_{uuid.uuid4().hex[:10]}"
    SnapshotStore(PostgresBackend(url, schema=schema)).close()  # create the tables once
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=worker_main, args=(url, schema, w, out)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    failures = [failure for _worker, _made, failure in results if failure]
    assert not failures, failures
    made = [m for _worker, ms, _failure in results for m in ms]
    assert len(made) == WORKERS * COMMITS
    backend = PostgresBackend(url, schema=schema)
    store = SnapshotStore(backend)
    try:
        shared_ids = [sid for name, sid, _n, _s in made if name == "shared"]
        listed = {name: set(store.session(name).snapshot_ids()) for name in {m[0] for m in made}}
        for name, sid, _n, expected in made:
            assert sid in listed[name], f"commit {sid} to {name} was lost"
            got = orjson.dumps(store.session(name).state(sid), option=orjson.OPT_SORT_KEYS).decode()
            assert got == expected
        # the shared history is one chain: each commit's parent is the commit before it
        snaps = store.session("shared").snapshots()
        assert [s.id for s in snaps if s.id in set(shared_ids)] == [s.id for s in snaps]
        assert [s.parent for s in snaps[1:]] == [s.id for s in snaps[:-1]]
        report = store.verify()
        assert report.ok, report.problems
    finally:
        with backend._pool.connection() as conn:  # drop the throwaway schema
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        store.close()
