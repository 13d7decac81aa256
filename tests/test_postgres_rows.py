"""PostgreSQL segments kept as one stream in page-sized rows: reads from every position, appends of every size.

Positions are byte offsets in the stream, so a read from an entry that begins in one row and
ends in another, or in the tail the segment's row holds, must return exactly the entries after it.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import postgres_url_or_skip


@pytest.fixture
def backend() -> Iterator[Any]:
    import psycopg

    from snapstore.backends._postgres import PostgresBackend

    url = postgres_url_or_skip()
    schema = f"rows_{uuid.uuid4().hex[:12]}"
    opened = PostgresBackend(url, schema=schema, pool_size=2)
    try:
        yield opened
    finally:
        opened.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _rows(backend: Any) -> list[tuple[int, int]]:
    """(pos, length) of every entries row, in order."""
    with backend._connection("list rows") as conn:
        found = conn.execute(
            f'SELECT pos, octet_length(data) FROM "{backend.schema}".snapstore_entries ORDER BY session, segment, pos'
        ).fetchall()
    return [(int(pos), int(size)) for pos, size in found]


def test_every_position_reads_the_entries_after_it(backend: Any) -> None:
    rng = random.Random(13)
    sizes = [0, 1, 3000, 40, 9000, 20000, 5, 1979, 1980, 1981, 8108, 70000, 12, 600, 600, 600, 600, 4000]
    entries = [rng.randbytes(n) for n in sizes]
    ends = [0]
    for entry in entries:  # one append per entry, as commits write them
        ends.append(backend.append("s", 0, [entry], ends[-1]))
    more = [rng.randbytes(n) for n in (100, 30000, 7)]  # and several in one append
    ends.append(backend.append("s", 0, more, ends[-1]))
    entries += more
    rows = _rows(backend)
    assert {size for _pos, size in rows} >= {8108, 1980}  # whole-page and quarter-page rows both written
    assert [pos for pos, _size in rows] == sorted({pos for pos, _size in rows})
    assert all(a + n == b for (a, n), (b, _m) in itertools.pairwise(rows)), "rows follow one another with no gap"
    whole = backend.read_segment("s", 0)
    assert whole.entries == entries and whole.end == ends[-1] and whole.damaged_at is None
    for index, start in enumerate(ends[:-1]):
        read = backend.read_segment("s", 0, start)
        expected = entries[index:] if index < len(sizes) else more
        assert read.entries == expected and read.end == ends[-1], index
    assert backend.read_segment("s", 0, ends[-1]).entries == []
    assert backend.segments("s")[0].stored_bytes == ends[-1]


def test_a_position_inside_an_entry_whose_bytes_read_as_lengths_past_the_stream_reads_as_damage(
    backend: Any,
) -> None:
    end = backend.append("s", 0, [b"\xff" * 5000, b"after"], 0)
    for start in (1, 2, 3, 4, 100, 2500, 4999):
        read = backend.read_segment("s", 0, start)
        assert read.damaged_at == start and read.entries == [], start
    assert backend.read_segment("s", 0).entries == [b"\xff" * 5000, b"after"]
    assert backend.read_segment("s", 0).end == end


def test_a_replaced_segment_is_cut_as_one_append_of_it_would_cut_it(backend: Any) -> None:
    rng = random.Random(7)
    entries = [rng.randbytes(n) for n in (30000, 700, 700, 5000, 300)]
    end = backend.append("a", 0, entries, 0)
    backend.replace_segment("b", 0, [b"replaced"])
    backend.replace_segment("b", 0, entries)
    rows = _rows(backend)
    assert len(rows) % 2 == 0 and rows[: len(rows) // 2] == rows[len(rows) // 2 :]
    assert backend.read_segment("b", 0).entries == entries and backend.read_segment("b", 0).end == end
    [info] = backend.segments("b")
    backend.replace_segment("b", 0, entries[:2])
    assert backend.read_segment("b", 0).entries == entries[:2]
    assert backend.segments("b")[0].version != info.version


def test_the_append_that_creates_a_segment_leaves_it_no_tail(backend: Any) -> None:
    """Its rest becomes one more row, so the segment's new row in snapstore_meta is small; later
    appends keep their rest as the tail."""
    from snapstore.backends._postgres_sql import row_sizes

    whole, quarter = row_sizes("s")
    first = [b"k" * (whole + quarter + 100)]  # one whole row, one quarter row, and a rest
    end = backend.append("s", 0, first, 0)
    assert _rows(backend) == [(0, whole), (whole, quarter), (whole + quarter, end - whole - quarter)]
    assert _tail(backend, "s", 0) == b""
    end = backend.append("s", 0, [b"small"], end)
    assert len(_rows(backend)) == 3 and _tail(backend, "s", 0) == (5).to_bytes(4, "big") + b"small"
    assert backend.read_segment("s", 0).entries == [*first, b"small"] and backend.read_segment("s", 0).end == end


def _tail(backend: Any, key: str, segment: int) -> bytes:
    from snapstore.backends._postgres_sql import SEGMENT_ROW

    with backend._connection("read a tail") as conn:
        row = conn.execute(
            f'SELECT data FROM "{backend.schema}".snapstore_meta WHERE key = %s',
            [SEGMENT_ROW.format(key=key, segment=segment)],
            binary=True,
        ).fetchone()
    return bytes(row[0])


@pytest.mark.parametrize(
    ("url", "settings", "error", "says"),
    [
        (42, {}, "BackendError", "a PostgreSQL URL is a str, not int"),
        ("dbname=x bogus_option=1", {}, "BackendError", "invalid PostgreSQL URL"),
        ("postgresql://u:secret@h/db", {"pool_size": 0}, "ValueError", "pool_size must be an integer of at least 1"),
        ("postgresql://u:secret@h/db", {"lock_pool_size": True}, "ValueError", "lock_pool_size must be an integer"),
        ("postgresql://u:secret@h/db", {"schema": ""}, "ValueError", "invalid schema name"),
        ("postgresql://u:secret@h/db", {"schema": "s" * 64}, "ValueError", "longer than PostgreSQL's 63 bytes"),
        ("postgresql://u:secret@h/db", {"table_prefix": "a-b"}, "ValueError", "invalid table prefix 'a-b'"),
    ],
)
def test_bad_settings_are_refused_before_any_connection(
    url: Any, settings: dict[str, Any], error: str, says: str
) -> None:
    # no server: every one of these is refused before a connection is tried, and no password is shown
    from snapstore.backends._postgres import PostgresBackend

    with pytest.raises(Exception) as err:
        PostgresBackend(url, **settings)
    assert type(err.value).__name__ == error and says in str(err.value), err.value
    assert "secret" not in str(err.value)
