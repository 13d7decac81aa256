"""Figures of the reliability tests, printed at the end of a pytest run, and their shared helpers.

The tests in test_crash.py, test_concurrency.py, test_writers_queue.py,
test_corruption.py, test_blast_radius.py, test_bad_input.py and test_fuzz.py
add to ``FIGURES`` as they go (``count``), and the ``pytest_terminal_summary``
hook below prints the totals. Register this module as a plugin from
tests/conftest.py::

    pytest_plugins = ["conftest_reliability"]

(or run ``pytest -p conftest_reliability`` from tests/). Without it the tests
still run; only the summary is not printed.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

#: name -> total; the order here is the order of the summary
FIGURES: dict[str, int] = {
    "crash: kills survived": 0,
    "crash: kills of gc, retention and reader processes": 0,
    "crash: writer runs started": 0,
    "crash: simulated crash points checked": 0,
    "crash: torn appends cut by the next append": 0,
    "crash: acknowledged commits checked after a kill": 0,
    "crash: in-flight commits found landed (not yet logged)": 0,
    "concurrency: writers (processes + threads)": 0,
    "concurrency: commits checked": 0,
    "concurrency: lock timeouts seen": 0,
    "concurrency: gc and reclaim runs during commits": 0,
    "concurrency: reads during writes": 0,
    "concurrency: verify runs during writes": 0,
    "corruption: corrupted cases": 0,
    "corruption: single-byte damages tried": 0,
    "corruption: single-byte damages harmless (header file id)": 0,
    "bad input: bad inputs tried": 0,
    "bad input: valid edge cases round-tripped": 0,
    "fuzz: parser inputs": 0,
    "fuzz: state machine steps": 0,
}


def count(name: str, amount: int = 1) -> None:
    """Add to one figure (a name not listed above is appended to the summary)."""
    FIGURES[name] = FIGURES.get(name, 0) + amount


def pytest_sessionfinish(session: Any) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: its figures go to the controller, which prints them
        workeroutput["reliability_figures"] = dict(FIGURES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """A pytest-xdist worker's figures, added up on the controller: the tests count in the workers, so
    the controller's own figures stay zero and the summary was left out of every ``-n`` run."""
    for name, amount in getattr(node, "workeroutput", {}).get("reliability_figures", {}).items():
        count(name, amount)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not any(FIGURES.values()):
        return
    terminalreporter.write_sep("-", "reliability figures")
    width = max(len(name) for name in FIGURES)
    for name, value in FIGURES.items():
        if value:
            terminalreporter.write_line(f"{name:<{width}}  {value:>8}")


# -- helpers shared by the reliability tests ------------------------------


def canonical(value: object) -> bytes:
    """Type-exact comparison key (1, 1.0 and true differ)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def backend_contents(store: Any) -> tuple[dict[str, list[tuple[int, list[bytes]]]], dict[str, bytes | None]]:
    """Every session's segments with their entries, and the config: compare before/after to prove
    that nothing was written."""
    backend = store.backend
    sessions = {
        key: [(info.segment, backend.read_segment(key, info.segment).entries) for info in backend.segments(key)]
        for key in backend.session_keys()
    }
    return sessions, {"format": backend.read_config("format")}


def directory_files(root: str | os.PathLike[str]) -> dict[str, bytes]:
    """Every file under a store folder with its bytes (symbolic links with their target)."""
    files = {}
    base = Path(root)
    for path in sorted(base.rglob("*")):
        if path.is_symlink():
            files[str(path.relative_to(base))] = b"-> " + os.fsencode(os.readlink(path))
        elif path.is_file():
            files[str(path.relative_to(base))] = path.read_bytes()
    return files


def copy_store_dir(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Copy a directory store and return the new root. Files are copied, not linked, so that
    tests may damage them in place."""
    shutil.copytree(source, target, symlinks=True)
    return Path(target)


def temporary_files(root: str | os.PathLike[str]) -> list[Path]:
    """Leftovers of interrupted writes (``.tmp-*``) anywhere under a store folder."""
    return sorted(p for p in Path(root).rglob(".tmp-*") if p.is_file() or p.is_symlink())


def segment_files(root: str | os.PathLike[str], key: str) -> list[Path]:
    """A directory store's segment files of one session key, oldest first."""
    folder = Path(root) / "sessions" / key
    return sorted(folder.glob("*.seg")) if folder.is_dir() else []


class StoreTarget:
    """Where writer processes meet: a store folder, or a PostgreSQL schema of its own (dropped after)."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        from conftest import postgres_url_or_skip

        self.kind = kind
        self.schema: str | None = None
        if kind == "directory":
            self.location = str(tmp_path / "store")
        else:
            self.location = postgres_url_or_skip()
            self.schema = f"rel_{uuid.uuid4().hex[:10]}"

    def open(self, **settings: Any) -> Any:
        from reliability_writer import open_store

        return open_store(self.location, pg_schema=self.schema, **settings)

    def drop(self) -> None:
        if self.schema is not None:
            with self.open() as store, store.backend._pool.connection() as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


@pytest.fixture(params=["directory", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreTarget]:
    """A directory store, then a PostgreSQL one (the tests that use it run on both)."""
    found = StoreTarget(request.param, tmp_path)
    try:
        yield found
    finally:
        found.drop()


@pytest.fixture
def processes(tmp_path: Path, target: StoreTarget) -> Iterator[Any]:
    """Writer subprocesses on ``target`` (reliability_writer.WriterProcesses), killed if still running."""
    from reliability_writer import WriterProcesses

    procs = WriterProcesses(tmp_path, target.location, target.schema)
    try:
        yield procs
    finally:
        procs.kill_all()
