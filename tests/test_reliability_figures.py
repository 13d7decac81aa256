"""The reliability figures' summary (conftest_reliability) in a run on several worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cli_support import cli_env

_COUNTING = """
import pytest
from conftest_reliability import count

@pytest.mark.parametrize("n", range(4))
def test_counts(n):
    count("fuzz: parser inputs", 10)
"""


def test_figures_counted_on_worker_processes_are_printed_by_the_controller(tmp_path: Path) -> None:
    """The suite runs on pytest-xdist workers (README, .ci/run): each counts its own figures, and the
    summary, printed by the controller, added up none of them (it printed nothing at all)."""
    (tmp_path / "test_counting.py").write_text(_COUNTING)
    env = cli_env()
    env["PYTHONPATH"] = str(Path(__file__).parent) + os.pathsep + env["PYTHONPATH"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "conftest_reliability", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reliability figures" in proc.stdout, proc.stdout
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("fuzz: parser inputs")]
    assert line.split()[-1] == "40"
