"""The behaviour every storage engine must have, as a test class engine authors reuse.

Subclass ``BackendContract`` under a name your test runner collects (``Test...``
for pytest) and implement ``make_backend()``::

    class TestMyBackend(BackendContract):
        @pytest.fixture(autouse=True)
        def _storage(self, tmp_path):
            self.root = tmp_path / "store"

        def make_backend(self):
            return MyBackend(self.root)

        def backend_factory(self):          # optional: enables the tests across processes
            return functools.partial(MyBackend, self.root)

``make_backend()`` returns a *new handle on the test's storage*: a second call in
the same test must see what the first handle wrote (an in-memory engine may return
the same instance). It is called lazily from the test body (``self.backend``), after
every fixture ran; handles are closed after each test. ``backend_factory()`` returns
a picklable callable opening such a handle in another process, or None for an engine
that lives in one process (the tests across processes are then skipped).

Hooks with working defaults for the bundled engines: ``damage_entry`` (flip a byte of
a stored entry in the medium itself) and ``tear_tail`` (leave what a crash in the
middle of an append leaves). ``detects_damage`` says whether the engine itself reports
damaged entries (``SegmentRead.damaged_at``) or returns them for the layers above to
catch by their hashes.

The module imports neither pytest nor any engine's driver: skips are
``unittest.SkipTest``, which pytest and unittest both honour. It is test code: it
writes into the medium behind the engine's back.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
import time
import unittest
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .backends.base import MAX_SEGMENT, Backend, SegmentMissing, staged_key
from .errors import BackendError, ConcurrentUpdateError, LockTimeoutError, SnapshotError

#: session keys every engine must refuse before touching its medium
BAD_SESSION_KEYS: list[Any] = ["", ".", "..", "../x", "a/b", "a\\b", "a b", "x" * 201, "é", "a\x00", None, 7, b"k"]
#: segment numbers every engine must refuse
BAD_SEGMENTS: list[Any] = [-1, MAX_SEGMENT + 1, 1.0, True, "1", None]
#: entry lists every engine must refuse whole (nothing appended)
BAD_ENTRY_LISTS: list[Any] = [b"lone bytes", "text", [b"ok", "text"], [b"ok", 5], [None]]
#: config names every engine must refuse
BAD_CONFIG_NAMES: list[Any] = ["", "A", "../x", "x/y", "x" * 65, "1x", None, b"format"]
#: how long a test lets a blocked waiter (wrongly) get in before it checks the order of events
SETTLE = 0.2
#: the longest any test waits for another thread or process before calling it hung
HUNG = 60.0


def damage_entry(backend: Backend, key: str, segment: int, index: int) -> None:
    """Flip one byte inside the stored bytes of entry ``index`` of a segment, in the medium itself.

    Test backdoor: entries never change once written, so this is how tests make bit rot
    on every bundled engine. Other engines override ``BackendContract.damage_entry``.
    """
    from .backends._directory import DirectoryBackend
    from .backends._memory import MemoryBackend

    if isinstance(backend, MemoryBackend):
        with backend._mutex:
            entries = backend._sessions[key][segment].entries
            entries[index] = _flipped(entries[index])
    elif isinstance(backend, DirectoryBackend):
        _damage_directory_entry(backend, key, segment, index)
    elif backend.kind == "postgresql":
        _damage_postgres_entry(backend, key, segment, index)
    else:
        raise NotImplementedError(f"no backdoor into {type(backend).__name__}: override BackendContract.damage_entry")


def tear_tail(backend: Backend, key: str, segment: int, entry: bytes) -> bool:
    """Leave the first part of an append of ``entry`` at a segment's end, as a crash would.

    False when the engine's appends cannot be torn (the bundled memory and PostgreSQL
    engines: an append there is one step, or one transaction).
    """
    from .backends import _framing
    from .backends._directory import DirectoryBackend

    if not isinstance(backend, DirectoryBackend):
        return False
    framed = _framing.frame(entry)
    with open(segment_path(backend, key, segment), "ab") as f:
        f.write(framed[: len(framed) // 2])
    return True


def segment_path(backend: Backend, key: str, segment: int) -> str:
    """The file of a directory engine's segment (tests only: the engine itself opens by descriptor)."""
    from .backends._directory import segment_file

    return os.path.join(backend.describe(), "sessions", key, segment_file(segment))


#: the bits a damaged byte has flipped
_DAMAGE = 0x5A


def _middle(data: bytes) -> int:
    """The byte of an entry that tests damage: its middle one."""
    if not data:
        raise ValueError("an empty entry has no byte to damage")
    return len(data) // 2


def _flipped(data: bytes) -> bytes:
    middle = _middle(data)
    return data[:middle] + bytes([data[middle] ^ _DAMAGE]) + data[middle + 1 :]


def _damage_directory_entry(backend: Backend, key: str, segment: int, index: int) -> None:
    from .backends import _framing

    path = segment_path(backend, key, segment)
    with open(path, "r+b") as f:
        data = f.read()
        pos = _framing.HEADER_SIZE
        for _ in range(index):
            pos += _framing.FRAME_SIZE + _framing.FRAME.unpack_from(data, pos)[0]
        length = _framing.FRAME.unpack_from(data, pos)[0]
        body = pos + _framing.FRAME_SIZE
        f.seek(body)
        f.write(_flipped(data[body : body + length]))


def _damage_postgres_entry(backend: Any, key: str, segment: int, index: int) -> None:
    from psycopg import sql

    from .backends._postgres_sql import SEGMENT_ROW
    from .backends._postgres_stream import LENGTH_SIZE, frame_entries

    entries = backend.read_segment(key, segment).entries
    # the entry's damaged byte as an offset in the segment's stream (docs/format.md, section 5)
    at = len(frame_entries(entries[:index])) + LENGTH_SIZE + _middle(entries[index])
    names = backend._tables(backend.schema)
    params = {
        "key": key, "segment": segment, "at": at, "bits": _DAMAGE, "row": SEGMENT_ROW.format(key=key, segment=segment)
    }
    in_rows = (
        "UPDATE {entries} SET data = set_byte(data, (%(at)s - pos)::int,"
        " get_byte(data, (%(at)s - pos)::int) # %(bits)s)"
        " WHERE session = %(key)s AND segment = %(segment)s AND pos <= %(at)s AND pos + octet_length(data) > %(at)s"
    )
    in_tail = (
        "UPDATE {meta} SET data = set_byte(data, (%(at)s - size + octet_length(data))::int,"
        " get_byte(data, (%(at)s - size + octet_length(data))::int) # %(bits)s) WHERE key = %(row)s"
    )
    with backend._connection("damage entry") as conn:
        if not conn.execute(sql.SQL(in_rows).format(**names), params).rowcount:
            conn.execute(sql.SQL(in_tail).format(**names), params)


def run_threads(target: Callable[[], None], count: int, timeout: float = HUNG) -> None:
    """Run ``target`` in ``count`` threads at once; re-raise the first error, fail if one hangs."""
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def wrapped() -> None:
        try:
            start.wait(timeout)
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "threads hung"
    if errors:
        raise errors[0]


@contextmanager
def expect_error(kind: type[BaseException]) -> Iterator[list[BaseException]]:
    """Like ``pytest.raises``, without pytest: the caught error is ``caught[0]``."""
    caught: list[BaseException] = []
    try:
        yield caught
    except kind as exc:
        caught.append(exc)
    else:
        raise AssertionError(f"{kind.__name__} was not raised")


def locked_append(backend: Backend, key: str, segment: int, entry: bytes, timeout: float | None = None) -> int:
    """What a commit does: under the session's lock, find the segment's end and append there."""
    with backend.lock_session(key, timeout):
        ends = {info.segment: info for info in backend.segments(key)}
        end = backend.read_segment(key, segment).end if segment in ends else 0
        return backend.append(key, segment, [entry], end)


# -- work done in other processes (top level: spawned processes import them) ----------------------
def _paired_appends(factory: Callable[[], Backend], key: str, tag: str, rounds: int, barrier: Any) -> None:
    """Append ``enter`` and ``leave`` entries in two appends under one hold of the lock, ``rounds`` times."""
    backend = factory()
    try:
        barrier.wait(HUNG)
        for i in range(rounds):
            with backend.lock_session(key, HUNG):
                end = backend.read_segment(key, 0).end if backend.segments(key) else 0
                end = backend.append(key, 0, [f"{tag}:{i}:enter".encode()], end)
                time.sleep(0.001)  # room for another writer to (wrongly) get in between
                backend.append(key, 0, [f"{tag}:{i}:leave".encode()], end)
    finally:
        backend.close()


def _try_lock(factory: Callable[[], Backend], key: str, timeout: float | None, results: Any) -> None:
    backend = factory()
    try:
        with backend.lock_session(key, timeout):
            results.put("acquired")
    except LockTimeoutError as exc:
        results.put(f"timeout:{exc.details.get('session_key')}")
    finally:
        backend.close()


def _spawn(target: Callable[..., None], *args: Any) -> Any:
    process = multiprocessing.get_context("spawn").Process(target=target, args=args, daemon=True)
    process.start()
    return process


def _join(*processes: Any) -> None:
    for process in processes:
        process.join(HUNG * 2)
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    assert [p.exitcode for p in processes] == [0] * len(processes), "a process failed (its traceback is above)"


class BackendContract:
    """Behaviour every ``Backend`` must have. Not collected itself: subclass it as ``Test...``."""

    #: the engine reports a damaged entry itself (``damaged_at``) instead of returning it
    detects_damage = False

    # -- what an engine's test class provides ----------------------------
    def make_backend(self) -> Backend:
        """A new handle on this test's storage (see the module docstring)."""
        raise NotImplementedError

    def backend_factory(self) -> Callable[[], Backend] | None:
        """A picklable callable opening a handle in another process, or None."""
        return None

    def damage_entry(self, backend: Backend, key: str, segment: int, index: int) -> None:
        damage_entry(backend, key, segment, index)

    def tear_tail(self, backend: Backend, key: str, segment: int, entry: bytes) -> bool:
        return tear_tail(backend, key, segment, entry)

    # -- handles ---------------------------------------------------------
    def setup_method(self, method: object = None) -> None:
        self._handles: list[Backend] = []

    def teardown_method(self, method: object = None) -> None:
        for handle in reversed(self._handles):
            handle.close()

    @property
    def backend(self) -> Backend:
        if not self._handles:
            self._handles.append(self.make_backend())
        return self._handles[0]

    def another_handle(self) -> Backend:
        handle = self.make_backend()
        if handle is not self.backend:
            self._handles.append(handle)
        return handle

    def _factory_or_skip(self) -> Callable[[], Backend]:
        factory = self.backend_factory()
        if factory is None:
            raise unittest.SkipTest(f"{self.backend.kind} storage lives in one process")
        return factory

    # -- configuration ---------------------------------------------------
    def test_config_round_trip(self) -> None:
        b = self.backend
        assert b.read_config("format") is None
        b.write_config("format", b"2")
        b.write_config("other_value", bytes(range(256)))
        b.write_config("format", b"3")
        assert b.read_config("format") == b"3"
        assert self.another_handle().read_config("other_value") == bytes(range(256))

    def test_config_refuses_bad_names_and_values(self) -> None:
        b = self.backend
        for name in BAD_CONFIG_NAMES:
            with expect_error(SnapshotError):
                b.write_config(name, b"x")
            with expect_error(SnapshotError):
                b.read_config(name)
        for value in ["text", None, b"x" * 4097]:
            with expect_error(SnapshotError):
                b.write_config("format", value)  # type: ignore[arg-type]
        assert b.read_config("format") is None

    # -- segments --------------------------------------------------------
    def test_unknown_session_is_empty(self) -> None:
        b = self.backend
        assert b.segments("nobody") == []
        assert "nobody" not in b.session_keys()
        with expect_error(SegmentMissing) as caught:
            b.read_segment("nobody", 0)
        assert isinstance(caught[0], KeyError) and isinstance(caught[0], SnapshotError)

    def test_append_then_read_back_exactly(self) -> None:
        b = self.backend
        entries = [b"first", b"", bytes(range(256)), b"\x00" * 10, os.urandom(1 << 20)]
        end = b.append("s", 0, entries[:2], 0)
        end = b.append("s", 0, entries[2:], end)
        read = b.read_segment("s", 0)
        assert read.entries == entries and read.end == end and read.damaged_at is None and not read.torn
        [info] = b.segments("s")
        assert info.segment == 0 and info.stored_bytes >= sum(map(len, entries))
        assert b.session_keys() == ["s"]

    def test_read_from_a_position_returns_what_follows(self) -> None:
        b = self.backend
        middle = b.append("s", 0, [b"a", b"b"], 0)
        end = b.append("s", 0, [b"c", b"d"], middle)
        assert b.read_segment("s", 0, middle).entries == [b"c", b"d"]
        assert b.read_segment("s", 0, middle).end == end
        assert b.read_segment("s", 0, end).entries == []
        assert b.read_segment("s", 0, end).end == end

    def test_append_refuses_a_stale_end(self) -> None:
        b = self.backend
        first = b.append("s", 0, [b"a"], 0)
        second = b.append("s", 0, [b"b"], first)
        for stale in (0, first):
            with expect_error(ConcurrentUpdateError):
                b.append("s", 0, [b"lost"], stale)
        assert b.read_segment("s", 0).entries == [b"a", b"b"]
        assert b.read_segment("s", 0).end == second
        with expect_error(ConcurrentUpdateError):
            b.append("s", 7, [b"lost"], first)  # a segment that does not exist ends at 0
        assert [info.segment for info in b.segments("s")] == [0]

    def test_a_lock_taken_with_where_its_holder_reads_reads_the_same(self) -> None:
        b = self.backend
        first = b.append("s", 0, [b"a"], 0)
        end = self.another_handle().append("s", 0, [b"b", b"c"], first)
        with b.lock_session_reading("s", 1.0, (0, first)):
            read = b.read_segment("s", 0, first)
            assert read.entries == [b"b", b"c"] and read.end == end
            assert b.read_segment("s", 0, first).entries == [b"b", b"c"]  # and again, from the engine
            end = b.append("s", 0, [b"d"], end)
        with b.lock_session_reading("s", 1.0, (5, 0)):  # a hint that names nothing: plain reads
            assert b.read_segment("s", 0).entries == [b"a", b"b", b"c", b"d"] and b.segments("s")[0].segment == 0
        with self.another_handle().lock_session("s", 1.0):  # let go both times
            pass

    def test_segments_are_sorted_and_separate(self) -> None:
        b = self.backend
        for segment in (MAX_SEGMENT, 5, 0, 1 << 40):
            b.append("s", segment, [str(segment).encode()], 0)
        b.append("t", 5, [b"other session"], 0)
        assert [info.segment for info in b.segments("s")] == [0, 5, 1 << 40, MAX_SEGMENT]
        assert b.read_segment("s", 1 << 40).entries == [str(1 << 40).encode()]
        assert b.read_segment("t", 5).entries == [b"other session"]
        assert b.session_keys() == ["s", "t"]

    def test_bad_arguments_are_refused_before_anything_is_stored(self) -> None:
        b = self.backend
        for key in BAD_SESSION_KEYS:
            for call in (
                lambda k: b.append(k, 0, [b"x"], 0),
                b.segments,
                lambda k: b.read_segment(k, 0),
                lambda k: b.replace_segment(k, 0, [b"x"]),
                lambda k: b.drop_segments(k, [0]),
                b.delete_session,
                lambda k: b.lock_session(k, 1.0),
            ):
                with expect_error(SnapshotError):
                    call(key)
        for segment in BAD_SEGMENTS:
            with expect_error(SnapshotError):
                b.append("s", segment, [b"x"], 0)
            with expect_error(SnapshotError):
                b.read_segment("s", segment)
        for entries in BAD_ENTRY_LISTS:
            with expect_error(SnapshotError):
                b.append("s", 0, entries, 0)
            with expect_error(SnapshotError):
                b.replace_segment("s", 0, entries)
        for position in (-1, 1.5, None, True):
            with expect_error(SnapshotError):
                b.append("s", 0, [b"x"], position)  # type: ignore[arg-type]
        with expect_error(SnapshotError):
            b.drop_segments("s", [0, -1])
        for timeout in (-1, math.nan, math.inf, "1", True):
            with expect_error(SnapshotError), b.lock_session("s", timeout):  # type: ignore[arg-type]
                pass
        assert b.session_keys() == []
        assert b.segments("s") == []

    def test_a_staged_history_takes_a_sessions_place_in_one_step(self) -> None:
        """``swap_in_session``: the staged history becomes the session (a handle that read the session
        before sees new versions), staged keys are never listed as sessions, and one that holds
        nothing is refused with the session left as it was. An engine that cannot swap in one step
        refuses every swap, leaving everything as it was."""
        b = self.backend
        b.append("s", 1, [b"old 1"], 0)
        b.append("s", 2, [b"old 2"], 0)
        before = b.segments("s")
        staged = staged_key(len("s"))
        b.append(staged, 1, [b"new 1", b"new 2"], 0)
        assert b.session_keys() == ["s"]
        other = self.another_handle()
        assert [info.segment for info in other.segments("s")] == [1, 2]
        try:
            with b.lock_session("s", 5.0):
                b.swap_in_session(staged, "s")
        except BackendError:  # an engine that cannot: nothing changed
            assert b.segments("s") == before and b.read_segment(staged, 1).entries == [b"new 1", b"new 2"]
            return
        after = other.segments("s")
        assert [info.segment for info in after] == [1]
        assert after[0].version != before[0].version
        assert other.read_segment("s", 1).entries == [b"new 1", b"new 2"]
        assert b.segments(staged) == [] and b.session_keys() == ["s"]
        with expect_error(BackendError), b.lock_session("s", 5.0):  # nothing staged under it any more
            b.swap_in_session(staged, "s")
        assert other.read_segment("s", 1).entries == [b"new 1", b"new 2"]

    def test_staged_histories_take_several_sessions_places_together(self) -> None:
        """``swap_in_sessions``: a group whose staged history is missing for one session changes no
        session; a whole group puts every staged history in its session's place."""
        b = self.backend
        keys = ("a", "b")
        staged = {key: staged_key(len(key)) for key in keys}
        for key in keys:
            b.append(key, 1, [f"old {key}".encode()], 0)
        b.append(staged["a"], 1, [b"new a"], 0)  # nothing staged for "b" yet
        group = [(staged[key], key) for key in keys]
        with expect_error(BackendError), b.lock_session("a", 5.0), b.lock_session("b", 5.0):
            b.swap_in_sessions(group)
        for key in keys:
            assert b.read_segment(key, 1).entries == [f"old {key}".encode()]
        assert b.read_segment(staged["a"], 1).entries == [b"new a"]
        b.append(staged["b"], 1, [b"new b"], 0)
        try:
            with b.lock_session("a", 5.0), b.lock_session("b", 5.0):
                b.swap_in_sessions(group)
        except BackendError:  # an engine that cannot swap in one step: nothing changed
            assert [b.read_segment(key, 1).entries for key in keys] == [[b"old a"], [b"old b"]]
            return
        other = self.another_handle()
        for key in keys:
            assert other.read_segment(key, 1).entries == [f"new {key}".encode()]
            assert b.segments(staged[key]) == []
        assert b.session_keys() == ["a", "b"]

    def test_replace_is_whole_and_changes_the_version(self) -> None:
        b = self.backend
        end = b.append("s", 3, [b"a", b"b", b"c"], 0)
        b.append("s", 3, [b"d"], end)
        [before] = b.segments("s")
        b.replace_segment("s", 3, [b"squashed"])
        [after] = b.segments("s")
        assert b.read_segment("s", 3).entries == [b"squashed"]
        assert after.version != before.version
        b.append("s", 3, [b"next"], b.read_segment("s", 3).end)
        assert b.segments("s")[0].version == after.version  # an append is not a rewrite
        b.replace_segment("s", 3, [])
        assert b.segments("s")[0].version not in (before.version, after.version)
        assert b.read_segment("s", 3).entries == []
        b.replace_segment("s", 9, [b"created"])
        assert b.read_segment("s", 9).entries == [b"created"]

    def test_readers_see_a_replaced_segment_old_or_new_never_mixed(self) -> None:
        b = self.backend
        old, new = [b"old"] * 20, [b"new"] * 7
        b.replace_segment("s", 0, old)
        reader = self.another_handle()
        stop = threading.Event()
        seen: set[tuple[bytes, ...]] = set()

        def replace() -> None:
            for i in range(40):
                b.replace_segment("s", 0, new if i % 2 == 0 else old)
            stop.set()

        def read() -> None:
            while not stop.is_set():
                seen.add(tuple(reader.read_segment("s", 0).entries))

        writer = threading.Thread(target=replace)
        readers = [threading.Thread(target=read) for _ in range(2)]
        for t in (writer, *readers):
            t.start()
        for t in (writer, *readers):
            t.join(HUNG)
        assert seen <= {tuple(old), tuple(new)}, "a reader saw half of a replace"

    def test_drop_segments(self) -> None:
        b = self.backend
        for segment in range(4):
            b.append("s", segment, [b"x"], 0)
        b.drop_segments("s", [1, 3, 99])
        b.drop_segments("s", [])
        b.drop_segments("nobody", [0])
        assert [info.segment for info in b.segments("s")] == [0, 2]
        with expect_error(SegmentMissing):
            b.read_segment("s", 1)

    def test_delete_session(self) -> None:
        b = self.backend
        b.append("gone", 0, [b"x"], 0)
        b.append("gone", 1, [b"y"], 0)
        b.append("kept", 0, [b"z"], 0)
        assert b.delete_session("gone") is True
        assert b.delete_session("gone") is False
        assert b.delete_session("never") is False
        assert b.segments("gone") == []
        assert b.session_keys() == ["kept"]
        assert b.read_segment("kept", 0).entries == [b"z"]
        assert b.append("gone", 0, [b"again"], 0)  # the key can be used again

    def test_another_handle_sees_everything(self) -> None:
        b = self.backend
        b.write_config("format", b"2")
        end = b.append("s", 0, [b"a"], 0)
        other = self.another_handle()
        assert other.read_config("format") == b"2"
        assert other.session_keys() == ["s"]
        assert other.read_segment("s", 0).entries == [b"a"]
        other.append("s", 0, [b"b"], end)
        assert b.read_segment("s", 0).entries == [b"a", b"b"]

    # -- damage ------------------------------------------------------------
    def test_damaged_entry_is_reported_never_cut(self) -> None:
        b = self.backend
        end = b.append("s", 0, [b"good entry", b"entry to damage", b"entry after it"], 0)
        self.damage_entry(b, "s", 0, 1)
        read = b.read_segment("s", 0)
        if not self.detects_damage:
            assert read.entries[1] != b"entry to damage" and read.end == end  # for the layers above to catch
            return
        assert read.entries == [b"good entry"]
        assert read.damaged_at is not None and read.damaged_at == read.end
        with expect_error(ConcurrentUpdateError):
            b.append("s", 0, [b"would cut the damaged entries"], read.end)
        assert b.segments("s")[0].stored_bytes >= len(b"entry to damage entry after it")
        assert b.read_segment("s", 0).damaged_at == read.damaged_at

    def test_torn_tail_is_cut_by_the_next_append(self) -> None:
        b = self.backend
        end = b.append("s", 0, [b"committed"], 0)
        if not self.tear_tail(b, "s", 0, b"interrupted append of a longer entry"):
            raise unittest.SkipTest(f"{b.kind} appends cannot be torn")
        read = b.read_segment("s", 0)
        assert read.entries == [b"committed"] and read.end == end and read.damaged_at is None and read.torn
        new_end = b.append("s", 0, [b"next"], end)
        after = b.read_segment("s", 0)
        assert after.entries == [b"committed", b"next"] and after.end == new_end and not after.torn

    def test_an_empty_append_cuts_a_torn_tail_and_adds_nothing(self) -> None:
        """A writer starting a segment after a torn one cuts the torn bytes with an append of no entries."""
        b = self.backend
        end = b.append("s", 0, [b"committed"], 0)
        assert b.append("s", 0, [], end) == end and b.read_segment("s", 0).entries == [b"committed"]
        if not self.tear_tail(b, "s", 0, b"interrupted append of a longer entry"):
            raise unittest.SkipTest(f"{b.kind} appends cannot be torn")
        assert b.append("s", 0, [], end) == end
        after = b.read_segment("s", 0)
        assert after.entries == [b"committed"] and after.end == end and not after.torn

    # -- locks ---------------------------------------------------------------
    def test_lock_makes_other_threads_wait(self) -> None:
        b = self.backend
        events: list[str] = []
        holding, waiter_started = threading.Event(), threading.Event()

        def waiter() -> None:
            waiter_started.set()
            with self.another_handle().lock_session("s", HUNG):
                events.append("waiter in")

        with b.lock_session("s", 1.0):
            events.append("holder in")
            holding.set()
            thread = threading.Thread(target=waiter)
            thread.start()
            waiter_started.wait(HUNG)
            time.sleep(SETTLE)  # room for the waiter to (wrongly) get in
            events.append("holder out")
        thread.join(HUNG)
        assert events == ["holder in", "holder out", "waiter in"]

    def test_lock_serialises_read_then_append_in_threads(self) -> None:
        b = self.backend
        handles = [self.another_handle() for _ in range(4)]
        turn = iter(range(len(handles)))
        mutex = threading.Lock()

        def writer() -> None:
            with mutex:
                mine = handles[next(turn)]
            for i in range(15):
                locked_append(mine, "s", 0, f"{threading.get_ident()}:{i}".encode(), HUNG)

        run_threads(writer, len(handles))
        assert len(b.read_segment("s", 0).entries) == 4 * 15  # none lost, none refused

    def test_lock_excludes_other_processes(self) -> None:
        factory = self._factory_or_skip()
        results = multiprocessing.get_context("spawn").Queue()
        with self.backend.lock_session("s", 1.0):
            _join(_spawn(_try_lock, factory, "s", 0.3, results))
            assert results.get(timeout=HUNG) == "timeout:s"
        _join(_spawn(_try_lock, factory, "s", HUNG, results))
        assert results.get(timeout=HUNG) == "acquired"

    def test_writer_processes_take_turns(self) -> None:
        factory = self._factory_or_skip()
        processes, rounds = 3, 15
        barrier = multiprocessing.get_context("spawn").Barrier(processes)
        _join(*(_spawn(_paired_appends, factory, "s", f"p{n}", rounds, barrier) for n in range(processes)))
        entries = [e.decode() for e in self.backend.read_segment("s", 0).entries]
        assert len(entries) == 2 * processes * rounds
        for enter, leave in zip(entries[0::2], entries[1::2], strict=True):
            assert enter.endswith(":enter") and leave == enter.replace(":enter", ":leave"), (enter, leave)

    def test_lock_timeout_names_the_session(self) -> None:
        b = self.backend
        with b.lock_session("busy-session", None):
            caught: list[BaseException] = []

            def attempt() -> None:
                try:
                    with self.another_handle().lock_session("busy-session", 0.05):
                        pass
                except BaseException as exc:
                    caught.append(exc)

            thread = threading.Thread(target=attempt)
            thread.start()
            thread.join(HUNG)
        [error] = caught
        assert isinstance(error, LockTimeoutError) and isinstance(error, ConcurrentUpdateError)
        assert "busy-session" in str(error) and error.details["session_key"] == "busy-session"
        waited = error.details["waited_seconds"]
        assert isinstance(waited, float) and waited >= 0

    def test_lock_is_not_reentrant_and_does_not_deadlock(self) -> None:
        b = self.backend
        with b.lock_session("s", 1.0):
            with expect_error(LockTimeoutError), b.lock_session("s", 0.05):
                pass
            b.append("s", 0, [b"still held"], 0)
        assert b.read_segment("s", 0).entries == [b"still held"]

    def test_lock_is_released_after_an_error(self) -> None:
        b = self.backend
        with expect_error(RuntimeError), b.lock_session("s", 1.0):
            raise RuntimeError("the block failed")
        with self.another_handle().lock_session("s", 0):
            pass

    def test_locks_of_different_sessions_are_independent(self) -> None:
        b = self.backend
        ends: list[int] = []
        with b.lock_session("a", 1.0):
            thread = threading.Thread(target=lambda: ends.append(locked_append(b, "b", 0, b"x", HUNG)))
            thread.start()
            thread.join(HUNG)
        assert ends == [b.read_segment("b", 0).end]  # taken and used while "a" was held

    def test_readers_are_not_blocked_by_a_held_lock(self) -> None:
        b = self.backend
        b.write_config("format", b"2")
        end = b.append("s", 0, [b"committed"], 0)
        reader = self.another_handle()
        seen: list[Any] = []
        done = threading.Event()

        def read() -> None:
            seen.append(reader.segments("s")[0].segment)
            seen.append(reader.read_segment("s", 0).entries)
            seen.append(reader.session_keys())
            seen.append(reader.read_config("format"))
            done.set()

        with b.lock_session("s", 1.0):
            b.append("s", 0, [b"in the lock"], end)
            thread = threading.Thread(target=read)
            thread.start()
            assert done.wait(HUNG), "a reader waited for the session lock"
        thread.join(HUNG)
        assert seen[0] == 0 and seen[1][0] == b"committed" and seen[2] == ["s"] and seen[3] == b"2"
        assert b.read_segment("s", 0).entries == [b"committed", b"in the lock"]

    # -- lifecycle ---------------------------------------------------------------
    def test_describe_and_housekeeping_on_a_fresh_store(self) -> None:
        b = self.backend
        assert isinstance(b.describe(), str) and b.describe()
        assert b.cleanup_temporary(0) == 0
        assert b.foreign_entries() == []
        assert b.legacy_format() is None and b.legacy_reader() is None

    def test_close_twice_is_harmless(self) -> None:
        handle = self.make_backend()
        handle.close()
        handle.close()
