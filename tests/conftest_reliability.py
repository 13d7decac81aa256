"""Figures of the reliability tests (issue #7), printed at the end of a pytest run.

The tests in test_crash.py, test_concurrency.py, test_corruption.py,
test_bad_input.py and test_fuzz.py add to ``FIGURES`` as they go (``count``),
and the ``pytest_terminal_summary`` hook below prints the totals. Register
this module as a plugin from tests/conftest.py::

    pytest_plugins = ["conftest_reliability"]

(or run ``pytest -p conftest_reliability`` from tests/). Without it the tests
still run; only the summary is not printed.

Also holds small helpers the reliability tests share.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

#: name -> total; the order here is the order of the summary
FIGURES: dict[str, int] = {
    "crash: kills survived": 0,
    "crash: writer runs started": 0,
    "crash: simulated crash points checked": 0,
    "crash: returned commits checked after a kill": 0,
    "crash: in-flight commits found landed (not yet logged)": 0,
    "crash: temporary files left by kills": 0,
    "crash: orphan objects collected by gc after kills": 0,
    "concurrency: writers (processes + threads)": 0,
    "concurrency: commits checked": 0,
    "concurrency: lost CAS races retried into ConcurrentUpdateError": 0,
    "concurrency: gc runs during commits": 0,
    "concurrency: reads during writes": 0,
    "concurrency: reads refused with a SnapshotError": 0,
    "corruption: corrupted cases": 0,
    "corruption: single-byte damages decoded": 0,
    "bad input: bad inputs tried": 0,
    "bad input: valid edge cases round-tripped": 0,
    "fuzz: parser inputs": 0,
    "fuzz: state machine steps": 0,
}


def count(name: str, amount: int = 1) -> None:
    """Add to one figure (a name not listed above is appended to the summary)."""
    FIGURES[name] = FIGURES.get(name, 0) + amount


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not any(FIGURES.values()):
        return
    terminalreporter.write_sep("-", "reliability figures (issue #7)")
    width = max(len(name) for name in FIGURES)
    for name, value in FIGURES.items():
        if value:
            terminalreporter.write_line(f"{name:<{width}}  {value:>8}")


# -- helpers shared by the reliability tests ------------------------------


def canonical(value: object) -> bytes:
    """Type-exact comparison key (1, 1.0 and true differ)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def backend_contents(store: Any) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    """Every object's bytes and every ref: compare before/after to prove nothing was written."""
    backend = store.backend
    objects = {key: backend.get(key) for key in backend.iter_keys()}
    return objects, list(backend.iter_refs())


def directory_files(root: str | os.PathLike[str]) -> dict[str, bytes]:
    """Every file and symbolic link (refs are links) under a store folder, with its bytes or target."""
    files = {}
    base = Path(root)
    for path in sorted(base.rglob("*")):
        if path.is_symlink():
            files[str(path.relative_to(base))] = b"-> " + os.fsencode(os.readlink(path))
        elif path.is_file():
            files[str(path.relative_to(base))] = path.read_bytes()
    return files


def copy_store_dir(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Copy a directory store's files (not its empty fan-out folders) and return the new root.

    Open the copy with ``DirectoryBackend(root, create=False)``: creating a store makes 256
    fan-out folders, and making (and later deleting) hundreds of stores' worth of folders
    costs minutes on some disks; ``put`` makes a missing fan-out folder when it needs one.
    Files are copied, not linked, so that tests may damage them in place.
    """
    import shutil

    source, target = Path(source), Path(target)
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_symlink():  # a ref: a link whose target is its value
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(path), destination)
        elif path.is_file():
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
    (target / "locks").mkdir(parents=True, exist_ok=True)
    (target / "objects").mkdir(parents=True, exist_ok=True)
    return target


def temporary_files(root: str | os.PathLike[str]) -> list[Path]:
    """Leftovers of interrupted writes (``.tmp-*``) anywhere under a store folder."""
    return sorted(p for p in Path(root).rglob(".tmp-*") if p.is_file() or p.is_symlink())


def read_ref_file(path: str | os.PathLike[str]) -> str:
    """A directory ref's raw value: a symbolic link's target, or (the other form) a file's text."""
    if os.path.islink(path):
        return os.readlink(path)
    return Path(path).read_text(encoding="utf-8")


def write_ref_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace a directory ref by a regular file holding ``data`` (the form readers also accept)."""
    path = Path(path)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_bytes(data)
