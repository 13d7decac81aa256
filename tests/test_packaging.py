"""What pyproject.toml promises matches the package: its dependencies, its version, its type information."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import snapstore

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "snapstore"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

# import name -> distribution name, where they differ
DISTRIBUTION = {"psycopg_pool": "psycopg-pool"}
# optional imports: the extra that provides each, and the distribution listed there that installs it
OPTIONAL = {
    "psycopg": ("postgres", "psycopg"),
    "psycopg_pool": ("postgres", "psycopg-pool"),
    "pytest": ("test", "pytest"),
    "langgraph": ("langgraph", "langgraph"),
    "langchain_core": ("langgraph", "langgraph"),  # a dependency of langgraph's own
}


def third_party_imports() -> dict[str, set[str]]:
    """Top-level names of every non-standard-library module src/snapstore imports, and the files importing each."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "snapstore":
                    found.setdefault(top, set()).add(path.relative_to(PACKAGE).as_posix())
    return found


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower() for req in requirements}


def test_runtime_dependencies_are_exactly_what_the_library_imports() -> None:
    imported = third_party_imports()
    required = {DISTRIBUTION.get(name, name) for name in imported if name not in OPTIONAL}
    assert requirement_names(PROJECT["dependencies"]) == required, imported
    assert "jsonpatch" not in imported  # the tests' reference implementation, not the library's
    extras = PROJECT["optional-dependencies"]
    for name, (extra, distribution) in OPTIONAL.items():
        assert distribution in requirement_names(extras[extra]), (name, extra)
    assert "jsonpatch" in requirement_names(extras["test"])


def test_the_version_is_written_once() -> None:
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", snapstore.__version__)


def test_license_and_type_information_ship() -> None:
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert (PACKAGE / "py.typed").is_file()
    assert "Operating System :: POSIX" in PROJECT["classifiers"]  # the directory store needs fcntl


def test_the_backend_test_suite_imports_without_pytest() -> None:
    probe = "import sys, snapstore.testing; print('pytest' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0 and result.stdout == "False\n", result.stderr
