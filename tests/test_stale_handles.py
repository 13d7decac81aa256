"""A handle that read a session before another handle changed it answers for the session as it stands.

Every read looks at the store first (a listing of the session's segments): a snapshot that another
handle evicted, or a session another handle deleted, is refused by a handle that knew it, as by a
fresh one. Reading without that look (trusting the handle's index for ids it knows) was tried and
withdrawn: it served evicted snapshots and deleted sessions from memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import canonical
from snapstore import SnapshotNotFound, SnapshotStore
from snapstore.backends import MemoryBackend


@pytest.fixture(params=["memory", "directory"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], SnapshotStore]:
    """Opens another handle on one store each time it is called."""
    if request.param == "memory":
        backend = MemoryBackend()
        return lambda: SnapshotStore(backend)
    return lambda: SnapshotStore.open(tmp_path / "store")


def test_a_snapshot_another_handle_evicted_is_refused(opener: Callable[[], SnapshotStore]) -> None:
    writer = opener().session("s", max_snapshots=3)
    ids = [writer.commit({"turn": turn, "hp": [1, 1.0, True]}).id for turn in range(3)]
    reader = opener().session("s")
    assert canonical(reader.state(ids[0])) == canonical({"turn": 0, "hp": [1, 1.0, True]})
    for turn in range(3, 5):
        writer.commit({"turn": turn})
    with pytest.raises(SnapshotNotFound, match="no longer retained") as refused:
        reader.state(ids[0])
    assert refused.value.details["reason"] == "evicted"
    assert canonical(reader.state(ids[2])) == canonical({"turn": 2, "hp": [1, 1.0, True]})


def test_a_session_another_handle_deleted_is_refused_by_its_writer_and_readers(
    opener: Callable[[], SnapshotStore],
) -> None:
    writer = opener().session("s")
    ids = [writer.commit({"turn": turn}).id for turn in range(3)]
    reader = opener().session("s")
    assert reader.state(ids[0]) == {"turn": 0}
    opener().delete_session("s")
    for handle in (writer, reader):
        for sid in (ids[2], ids[0]):  # the head (held in memory by the writer) and an older one
            with pytest.raises(SnapshotNotFound, match="does not exist"):
                handle.state(sid)


def test_a_forgotten_snapshot_is_refused_by_a_handle_that_knew_it(opener: Callable[[], SnapshotStore]) -> None:
    writer = opener().session("s")
    ids = [writer.commit({"turn": turn}).id for turn in range(3)]
    reader = opener().session("s")
    assert reader.state(ids[0]) == {"turn": 0}
    writer.forget(1)  # all but the last
    with pytest.raises(SnapshotNotFound):
        reader.state(ids[0])


def test_a_snapshot_forgotten_in_a_session_without_a_limit_is_said_to_be_forgotten(
    opener: Callable[[], SnapshotStore],
) -> None:
    """Found by an outside trial on a LangGraph saver's session, which keeps every snapshot: the
    error told the user to raise a limit already at its maximum."""
    sess = opener().session("s", max_snapshots=2**63 - 1)
    ids = [sess.commit({"turn": turn}).id for turn in range(4)]
    sess.forget(2)
    with pytest.raises(SnapshotNotFound, match="removed by forget") as refused:
        opener().session("s").state(ids[0])
    assert "raise the limit" not in str(refused.value) and refused.value.details["reason"] == "evicted"
    assert opener().session("s").state(ids[3]) == {"turn": 3}
