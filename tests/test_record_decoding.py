"""A commit entry's record, decoded without being made: the id and the record stay those of the record written.

Opening a session decodes every entry of its log and hashes each record into its id; the
decoder hashes the record's fields without making a ``SnapshotRecord`` and formats timestamps
from a cache of second prefixes. A slip in either would give snapshots other ids (every stored
id, tag and archive would stop matching) or other times: these tests hold both to the plain
path on random records and moments, and an index made that way to the store written.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from snapstore import SnapshotStore
from snapstore.entries import DELTA_FRAME, DELTA_PLAIN, KEY_INDEPENDENT, CommitEntry, decode_entry, encode_commit
from snapstore.objects import _EPOCH, SnapshotRecord, format_micros, format_timestamp, parse_micros

_HEX = st.text("0123456789abcdef", min_size=32, max_size=32)
#: microseconds from year 1 to year 9999, the range a record's timestamp can name
_MICROS = st.integers(min_value=-62_135_596_800_000_000, max_value=253_402_300_799_999_999)


@settings(max_examples=400, deadline=None)
@given(st.lists(_MICROS, min_size=1, max_size=20))
def test_a_formatted_moment_is_the_plain_formatting_whatever_was_formatted_before(moments: list[int]) -> None:
    for micros in moments:  # a run of moments: each one's cached second must not leak into the next
        text = format_micros(micros)
        assert text == format_timestamp(_EPOCH + timedelta(microseconds=micros))
        assert parse_micros(text) == micros


def test_moments_either_side_of_a_second_and_a_minute_keep_their_own_prefix() -> None:
    for edge in (0, 59_000_000, 60_000_000, 86_400_000_000, -1_000_000):
        for micros in (edge - 1, edge, edge + 1, edge + 999_999, edge + 1_000_000):
            assert format_micros(micros) == format_timestamp(_EPOCH + timedelta(microseconds=micros))


_RECORDS = st.builds(
    SnapshotRecord,
    session=st.text(min_size=1, max_size=20),
    parent=st.none() | _HEX,
    state=_HEX,
    delta=st.none() | _HEX,
    label=st.text(max_size=40),
    timestamp=_MICROS.map(lambda m: format_timestamp(_EPOCH + timedelta(microseconds=m))),
    turn=st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
    size=st.integers(min_value=0, max_value=1 << 30),
    depth=st.integers(min_value=0, max_value=2**32 - 1),
    chain_bytes=st.integers(min_value=0, max_value=2**63 - 1),
    base_ratio=st.floats(min_value=0, max_value=1e6, allow_nan=False),
)


def _encodable(record: SnapshotRecord) -> bool:
    try:
        record.session.encode("utf-8")
        record.label.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: refused before a record is ever made
        return False
    return not (record.delta is not None and record.parent is None)


@settings(max_examples=400, deadline=None)
@given(_RECORDS.filter(_encodable), st.none() | _HEX)
def test_a_decoded_entry_has_the_id_and_record_it_was_written_with(record: SnapshotRecord, base: str | None) -> None:
    if record.delta is not None:  # a delta: stored as a delta against its parent
        data = encode_commit(record, DELTA_FRAME, 3, b"abc")
        expected_base = record.parent
    elif base is not None and record.parent is not None:  # format 3: a delta against another base
        record = replace(record, depth=0, chain_bytes=0)
        data = encode_commit(record, DELTA_PLAIN, 3, b"abc", base)
        expected_base = base
    else:  # a keyframe
        record = replace(record, depth=0)
        data = encode_commit(record, KEY_INDEPENDENT, record.size, b"abc")
        expected_base = None
    entry = decode_entry(data, record.session, "test", with_payload=False)
    assert isinstance(entry, CommitEntry)
    assert entry.id == record.snapshot_id()  # hashed from the fields, the record not made
    assert entry.base == expected_base and entry.payload == b""
    assert entry.record == record
    kept = decode_entry(data, record.session, "test").without_payload()
    assert isinstance(kept, CommitEntry) and kept.payload == b"" and kept.record == record


def test_an_index_made_from_undecoded_records_lists_what_was_committed(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path / "store")
    session = store.session("s", max_snapshots=100)
    committed = [
        session.commit({"turn": turn, "log": ["x"] * turn}, label=f"turn {turn}", turn=turn) for turn in range(30)
    ]
    store.close()
    reopened = SnapshotStore.open(tmp_path / "store").session("s")
    listed = reopened.snapshots()
    assert [s.id for s in listed] == [s.id for s in committed]
    assert [(s.label, s.turn, s.timestamp, s.parent, s.state_hash) for s in listed] == [
        (s.label, s.turn, s.timestamp, s.parent, s.state_hash) for s in committed
    ]
    assert reopened.state(committed[17].id) == {"turn": 17, "log": ["x"] * 17}
