"""Session names and planted files a filesystem or a hostile user would trip on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from snapstore import SnapshotStore
from snapstore.errors import CorruptObjectError, FormatVersionError
from snapstore.store import session_key


@pytest.mark.parametrize("name", ["é" * 40, " " * 90, "ß" * 200, "%" * 200, "日本語" * 66])
def test_a_name_whose_encoding_exceeds_a_file_name_is_stored_under_a_bounded_key(tmp_path: Path, name: str) -> None:
    key = session_key(name)
    assert len(key.encode()) <= 200  # well inside the 255 bytes of a file name
    store = SnapshotStore.open(tmp_path / "store")
    first = store.session(name).commit({"turn": 1}).id
    reopened = SnapshotStore.open(tmp_path / "store")
    assert name in reopened.sessions()
    assert reopened.session(name).snapshot_ids() == [first]
    assert reopened.verify().ok


def test_two_long_names_sharing_a_prefix_are_two_sessions(tmp_path: Path) -> None:
    a, b = "é" * 100 + "a", "é" * 100 + "b"
    assert session_key(a) != session_key(b)
    store = SnapshotStore.open(tmp_path / "store")
    store.session(a).commit({"who": "a"})
    store.session(b).commit({"who": "b"})
    again = SnapshotStore.open(tmp_path / "store")
    assert sorted(again.sessions()) == sorted([a, b])
    assert again.session(a).state(again.session(a).head.id) == {"who": "a"}  # type: ignore[union-attr]


def test_a_planted_format_file_is_refused_without_quoting_it(tmp_path: Path) -> None:
    root = tmp_path / "store"
    SnapshotStore.open(root).close()
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-PASSWORD-1234")
    os.unlink(root / "config" / "format")
    os.link(secret, root / "config" / "format")  # a hard link to a file outside the store
    with pytest.raises(FormatVersionError) as caught:
        SnapshotStore.open(root)
    assert "SECRET" not in str(caught.value) and "SECRET" not in repr(caught.value.details)


def test_a_folder_that_holds_another_sessions_history_is_refused_and_left_alone(tmp_path: Path) -> None:
    """On a file system that folds case, the folder of session "Party" answers for "party" too; the
    name its history records is read at opening, so one session never reads or takes another's
    commits. Simulated by moving the folder to the other name's key; nothing is written."""
    root = tmp_path / "store"
    store = SnapshotStore.open(root)
    store.session("Party").commit({"hp": 1})
    store.close()
    sessions = root / "sessions"
    (sessions / session_key("Party")).rename(sessions / session_key("party"))
    before = {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    again = SnapshotStore.open(root)
    for create in (False, True):
        with pytest.raises(CorruptObjectError, match="holds session 'Party', not 'party'"):
            again.session("party", create=create)
    again.close()
    assert {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} == before
