"""``snapstore upgrade`` and ``gc --dry-run`` / foreign entries, run as the real command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cli_support import run
from snapstore import SnapshotStore
from snapstore.errors import SnapshotError
from test_upgrade import tree_digest

GOLDEN_V1 = Path(__file__).parent / "golden" / "store-v1"


def test_a_format_1_store_is_refused_with_the_command_that_upgrades_it(tmp_path: Path) -> None:
    store = tmp_path / "old"
    shutil.copytree(GOLDEN_V1, store, symlinks=True)
    refused = run("log", store=store)
    assert refused.returncode == 1
    assert f"run `snapstore --store {store} upgrade`" in refused.stderr

    upgraded = run("upgrade", "--json", store=store)
    assert upgraded.returncode == 0, upgraded.stderr
    report = json.loads(upgraded.stdout)
    assert report["upgraded"] is True and report["from_version"] == "1" and report["to_version"] == "4"
    assert report["snapshots"] == report["states_verified"] > 0

    again = run("upgrade", store=store)
    assert again.returncode == 0 and "already has format 4: nothing to do" in again.stdout
    verified = run("verify", "--json", store=store)
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] is True
    assert SnapshotStore.open(store, create=False).sessions()  # the library reads it too


def test_gc_dry_run_and_verify_list_foreign_entries_and_delete_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with SnapshotStore.open(store) as opened:
        opened.session("campaign").commit({"turn": 1})
    (store / "notes.txt").write_text("not the store's")
    before = sorted(p.relative_to(store).as_posix() for p in store.rglob("*"))

    dry = run("gc", "--dry-run", "--json", store=store)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["foreign"] == ["notes.txt"]
    assert json.loads(run("verify", "--json", store=store).stdout)["foreign"] == ["notes.txt"]
    assert run("gc", store=store).returncode == 0
    assert sorted(p.relative_to(store).as_posix() for p in store.rglob("*")) == before
    assert (store / "notes.txt").read_text() == "not the store's"


def test_a_failed_upgrade_says_the_store_is_unchanged_and_leaves_it_byte_for_byte(tmp_path: Path) -> None:
    store = tmp_path / "old"
    shutil.copytree(GOLDEN_V1, store, symlinks=True)
    damaged = sorted(p for p in (store / "objects").rglob("*") if p.is_file())[0]
    data = bytearray(damaged.read_bytes())
    data[-3] ^= 0xFF  # one byte inside the compressed payload
    damaged.chmod(0o644)
    damaged.write_bytes(bytes(data))
    before = tree_digest(store)

    failed = run("upgrade", store=store)
    assert failed.returncode == 1 and failed.stdout == ""
    line = failed.stderr.strip()
    assert "\n" not in line and line.startswith("snapstore: error: object ")
    assert "does not decompress" in line
    assert line.endswith(f"; the upgrade stopped: {store} is unchanged and still has format 1")
    assert tree_digest(store) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]  # no half-built store left beside it
    refused = run("log", store=store)
    assert refused.returncode == 1 and "has format version 1" in refused.stderr

    with pytest.raises(SnapshotError) as raised:  # the library's error says it too, in its details
        SnapshotStore.upgrade(store)
    assert raised.value.details["store_unchanged"] is True
    assert raised.value.message.endswith(f"{store} is unchanged and still has format 1")
    assert tree_digest(store) == before


def test_upgrading_a_format_2_store_says_nothing_needed_rewriting(tmp_path: Path) -> None:
    """A format-2 store moves to format 4 by its format file alone: "0 snapshots, 0 states verified"
    read as if nothing had been checked that should have been."""
    store = tmp_path / "store"
    shutil.copytree(Path(__file__).parent / "golden" / "store-v2", store, symlinks=True)
    upgraded = run("upgrade", "--store", str(store))
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.startswith(f"upgraded {store} from format 2 to 4: ")
    assert upgraded.stdout.rstrip().endswith("read as they are (nothing to rewrite or verify)")
    with SnapshotStore.open(store) as opened:
        assert opened.verify().ok


def test_upgrading_a_store_of_a_newer_format_names_the_versions(tmp_path: Path) -> None:
    """Every other command said "has format version 5; this build reads versions 2 to 4"; upgrade
    said "no snapstore store at ...", which sends a user looking for the wrong problem."""
    store = tmp_path / "store"
    with SnapshotStore.open(store) as opened:
        opened.session("s").commit({"n": 1})
    (store / "config" / "format").write_bytes(b"5")
    before = tree_digest(store)
    refused = run("upgrade", "--store", str(store))
    assert refused.returncode == 1
    assert "has format version 5; this build upgrades stores to version 4" in refused.stderr
    assert tree_digest(store) == before
