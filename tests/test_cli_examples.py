"""The JSON files docs/cli.md's session commits (docs/examples/) give what that transcript shows:
each state's size, and the diff from turn 2 to turn 3, so a user who copies them and runs the
commands sees the same shapes (the ids and times are their own)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import orjson

from cli_support import run

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_the_documented_session_runs_from_the_example_files(tmp_path: Path) -> None:
    for path in EXAMPLES.glob("*.json"):
        shutil.copy(path, tmp_path)
    store = tmp_path / ".snapstore"
    assert run("init", cwd=tmp_path).returncode == 0
    ids = []
    for turn, name in ((1, "turn1"), (2, "turn2"), (3, "turn3")):
        label = ("--label", f"turn {turn}", "--turn", str(turn))
        made = run("commit", "campaign-42", f"{name}.json", *label, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        ids.append(made.stdout.strip())
    assert run("rollback", "campaign-42", ids[1][:8], cwd=tmp_path).returncode == 0
    replayed = run("commit", "campaign-42", "turn3-replayed.json", "--label", "turn 3 (replayed)", "--turn", "3",
                   cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    logged = orjson.loads(run("log", "campaign-42", "--json", store=store).stdout)
    assert [entry["size"] for entry in logged] == [138, 159, 179, 198]  # as the transcript's SIZE column
    diff = run("diff", ids[1][:8], ids[2][:8], store=store).stdout.splitlines()[2:]
    doc = DOC.read_text(encoding="utf-8")
    documented = re.split(r"\$ snapstore diff [0-9a-f]{8} [0-9a-f]{8}\n", doc, maxsplit=1)[1].split("$ ", 1)[0]
    assert diff == documented.splitlines()[2:]
    # the transcript's state hashes are the shipped files' (a file edited since would show)
    ndjson = doc.split("$ snapstore log campaign-42 -n 2 --ndjson\n", 1)[1].split("$ ", 1)[0].splitlines()
    shown = [orjson.loads(line)["state_hash"] for line in ndjson]
    assert shown == [entry["state_hash"] for entry in logged[-2:]]
