"""Running the real ``snapstore`` command in a subprocess, for the CLI tests.

The console script installed beside the interpreter is what users run; where it is
missing (the package imported from a source tree without installing it) the same
entry point runs as ``python -m snapstore``. Either way ``src/`` of this checkout
comes first on the path, so the code under test is this tree's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
SCRIPT = Path(sys.executable).parent / "snapstore"


def command() -> list[str]:
    return [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "snapstore"]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SNAPSTORE_PATH", "NO_COLOR")}
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run(*args: str, store: Path | None = None, stdin: bytes | None = None, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``snapstore [--store STORE] ARGS`` in a subprocess; text output."""
    cmd = [*command(), *(["--store", str(store)] if store else []), *args]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, cwd=cwd, env=env or cli_env(), timeout=60)
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")
    )


def run_many(*calls: tuple[str, ...], store: Path | None = None) -> list[subprocess.CompletedProcess[str]]:
    """Independent read-only invocations, in parallel."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda args: run(*args, store=store), calls))


def ok(*args: str, store: Path | None = None, stdin: bytes | None = None, cwd: Path | None = None) -> str:
    """Run a command that must succeed quietly; its stdout."""
    proc = run(*args, store=store, stdin=stdin, cwd=cwd)
    assert proc.returncode == 0 and proc.stderr == "", (args, proc.returncode, proc.stderr)
    return proc.stdout


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("snapstore: error: ")
    return lines[0]
