"""The test suite every storage engine must pass, for reuse by engine authors.

Subclass ``BackendTests`` in a test module under a name pytest collects
(``Test...``) and implement ``make_backend()``::

    class TestMyBackend(BackendTests):
        @pytest.fixture(autouse=True)
        def _storage(self, tmp_path):       # autouse fixtures run before ``backend``
            self.root = tmp_path / "store"

        def make_backend(self):
            return MyBackend(self.root)

``make_backend()`` returns a *new handle on the test's storage*: a second call in
the same test must see what the first handle wrote (an in-memory engine may return
the same instance). The ``backend`` fixture opens one handle and closes it after
the test; tests that open more close them themselves.

``raw_corrupt(backend, key, data)`` is a backdoor that overwrites an object's
stored bytes in the medium itself (dict, file, SQL row), bypassing the
never-overwrite rule, so that the store's corruption detection can be tested on
every engine. It knows the bundled engines; other engines override
``BackendTests.raw_corrupt`` (or give their backend a ``_raw_overwrite(key, data)``
method).

``race_cas_in_processes(factory, ...)`` checks that compare-and-swap loses no
update between processes (``factory`` must be picklable, e.g. a
``functools.partial`` of the backend class).

This module imports pytest: it is meant for test code only.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .backends.base import Backend, ObjectMissing, check_key
from .errors import SnapshotError

#: keys every engine must refuse with SnapshotError before touching its medium
BAD_KEYS: list[Any] = [
    "../../etc",
    "../../etc/passwd/0123456789abcdef",  # 32 characters, a path
    "0123456789ABCDEF0123456789ABCDEF",  # uppercase
    "abc",  # short
    "0" * 31,
    "0" * 33,
    "",
    "g" * 32,  # not hex
    " " + "0" * 31,
    "0" * 16 + "/" + "0" * 15,
    None,
    b"0" * 32,
    123,
]

#: ref names every engine must refuse with SnapshotError
BAD_REF_NAMES: list[Any] = [
    "../x",
    "a//b",
    "",
    "/abs",
    "a/",
    "a/../b",
    ".",
    "..",
    "x/./y",
    "a b",
    "a\\b",
    "a\x00b",
    None,
]


def key_for(i: int) -> str:
    """A valid object key, distinct for each ``i``."""
    return f"{i:032x}"


def raw_corrupt(backend: Backend, key: str, data: bytes) -> None:
    """Overwrite (or create) the stored bytes of ``key`` directly in the medium.

    Test backdoor: the store never overwrites an object, so this is how tests
    simulate bit rot or a truncated object on every engine.
    """
    check_key(key)
    data = bytes(data)
    overwrite = getattr(backend, "_raw_overwrite", None)  # PostgresBackend: an SQL upsert
    if overwrite is not None:
        overwrite(key, data)
        return
    from .backends._directory import DirectoryBackend
    from .backends._memory import MemoryBackend

    if isinstance(backend, MemoryBackend):
        with backend._mutex:
            backend._objects[key] = data
    elif isinstance(backend, DirectoryBackend):
        path = backend._object_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    else:
        raise NotImplementedError(
            f"no backdoor into {type(backend).__name__}: override BackendTests.raw_corrupt "
            "or give the backend a _raw_overwrite(key, data) method"
        )


def cas_increment(backend: Backend, ref: str) -> bool:
    """One read-then-CAS increment of an integer ref; True if the CAS won."""
    current = backend.read_ref(ref)
    return backend.cas_ref(ref, current, str(int(current or "0") + 1))


def _cas_worker(factory: Callable[[], Backend], ref: str, increments: int, barrier: Any) -> None:
    backend = factory()
    try:
        barrier.wait(timeout=120)
        done = 0
        while done < increments:
            if cas_increment(backend, ref):
                done += 1
    finally:
        backend.close()


def race_cas_in_processes(
    factory: Callable[[], Backend], *, processes: int = 3, increments: int = 40, ref: str = "race/counter"
) -> None:
    """Processes (spawned) each make ``increments`` successful CAS increments on one ref.

    Each retries until its increments succeed, so a lost update would leave the
    counter short of ``processes * increments``.
    """
    ctx = multiprocessing.get_context("spawn")
    backend = factory()
    try:
        assert backend.cas_ref(ref, None, "0")
        barrier = ctx.Barrier(processes)
        workers = [ctx.Process(target=_cas_worker, args=(factory, ref, increments, barrier)) for _ in range(processes)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=180)
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join()
        assert [w.exitcode for w in workers] == [0] * processes, "a worker process failed (see its traceback above)"
        assert backend.read_ref(ref) == str(processes * increments)
    finally:
        backend.close()


def _run_threads(target: Callable[[], None], count: int, timeout: float = 60) -> None:
    errors: list[BaseException] = []

    def wrapped() -> None:
        try:
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


class BackendTests:
    """Behaviour every ``Backend`` must have. Not collected itself: subclass it as ``Test...``."""

    #: how long a blocked lock waiter is given to (wrongly) get in
    lock_wait = 0.25

    def make_backend(self) -> Backend:
        """A new handle on this test's storage (see the module docstring)."""
        raise NotImplementedError

    def raw_corrupt(self, backend: Backend, key: str, data: bytes) -> None:
        raw_corrupt(backend, key, data)

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        handle = self.make_backend()
        try:
            yield handle
        finally:
            handle.close()

    # -- objects -------------------------------------------------------
    def test_put_get_round_trip(self, backend: Backend) -> None:
        key = key_for(1)
        assert backend.put(key, b"hello") is True
        got = backend.get(key)
        assert got == b"hello"
        assert type(got) is bytes

    def test_put_accepts_bytes_like(self, backend: Backend) -> None:
        assert backend.put(key_for(1), bytearray(b"from bytearray"))  # type: ignore[arg-type]
        assert backend.put(key_for(2), memoryview(b"from memoryview"))  # type: ignore[arg-type]
        assert backend.get(key_for(1)) == b"from bytearray"
        assert backend.get(key_for(2)) == b"from memoryview"
        assert type(backend.get(key_for(1))) is bytes

    def test_put_refuses_text(self, backend: Backend) -> None:
        with pytest.raises(TypeError):
            backend.put(key_for(1), "not bytes")  # type: ignore[arg-type]
        assert not backend.has(key_for(1))

    def test_put_existing_key_returns_false_and_keeps_first(self, backend: Backend) -> None:
        key = key_for(2)
        assert backend.put(key, b"first")
        assert backend.put(key, b"second") is False
        assert backend.get(key) == b"first"

    def test_has_and_delete(self, backend: Backend) -> None:
        key = key_for(3)
        assert backend.has(key) is False
        backend.put(key, b"x")
        assert backend.has(key) is True
        backend.delete(key)
        assert backend.has(key) is False
        with pytest.raises(ObjectMissing):
            backend.get(key)
        assert backend.put(key, b"again") is True  # a deleted key can be written anew
        assert backend.get(key) == b"again"

    def test_delete_missing_is_silent(self, backend: Backend) -> None:
        backend.delete(key_for(4))
        assert list(backend.iter_keys()) == []

    def test_get_missing_raises_object_missing(self, backend: Backend) -> None:
        key = key_for(5)
        with pytest.raises(ObjectMissing) as info:
            backend.get(key)
        assert isinstance(info.value, SnapshotError)
        assert isinstance(info.value, KeyError)
        assert info.value.details.get("object") == key

    def test_size(self, backend: Backend) -> None:
        backend.put(key_for(6), b"12345")
        backend.put(key_for(7), b"")
        assert backend.size(key_for(6)) == 5
        assert backend.size(key_for(7)) == 0
        with pytest.raises(ObjectMissing):
            backend.size(key_for(8))

    def test_iter_keys_lists_exactly_what_is_stored(self, backend: Backend) -> None:
        assert list(backend.iter_keys()) == []
        keys = {key_for(i * 7919) for i in range(1, 1101)}  # more than one batch for batching engines
        assert backend.put_many((k, k.encode()) for k in keys) == len(keys)
        listed = list(backend.iter_keys())
        assert len(listed) == len(keys)
        assert set(listed) == keys
        gone = sorted(keys)[::3]
        for k in gone:
            backend.delete(k)
        assert set(backend.iter_keys()) == keys - set(gone)

    @pytest.mark.parametrize("bad", BAD_KEYS, ids=repr)
    def test_invalid_keys_refused(self, backend: Backend, bad: Any) -> None:
        calls: list[Callable[[], object]] = [
            lambda: backend.get(bad),
            lambda: backend.put(bad, b"data"),
            lambda: backend.has(bad),
            lambda: backend.delete(bad),
            lambda: backend.size(bad),
            lambda: backend.put_many([(bad, b"data")]),
        ]
        for call in calls:
            with pytest.raises(SnapshotError):
                call()
        assert list(backend.iter_keys()) == []

    def test_trailing_newline_refused(self, backend: Backend) -> None:
        with pytest.raises(SnapshotError):
            backend.put(key_for(1) + "\n", b"data")
        with pytest.raises(SnapshotError):
            backend.cas_ref("heads\n", None, "x")

    def test_put_many(self, backend: Backend) -> None:
        backend.put(key_for(10), b"old")
        items = [(key_for(10), b"new"), (key_for(11), b"b"), (key_for(12), b"c"), (key_for(11), b"b")]
        assert backend.put_many(iter(items)) == 2
        assert backend.get(key_for(10)) == b"old"
        assert backend.get(key_for(11)) == b"b"
        assert backend.get(key_for(12)) == b"c"
        assert backend.put_many([]) == 0
        assert backend.put_many(iter(items)) == 0
        assert set(backend.iter_keys()) == {key_for(10), key_for(11), key_for(12)}

    def test_put_many_refuses_invalid_key(self, backend: Backend) -> None:
        with pytest.raises(SnapshotError):
            backend.put_many([(key_for(13), b"ok"), ("../../etc", b"bad")])
        assert set(backend.iter_keys()) <= {key_for(13)}  # engines may or may not keep the good ones

    def test_large_object_round_trip(self, backend: Backend) -> None:
        data = os.urandom(8 * 1024 * 1024)
        assert backend.put(key_for(20), data)
        assert backend.get(key_for(20)) == data
        assert backend.size(key_for(20)) == len(data)
        assert backend.put(key_for(20), data) is False

    def test_binary_bytes_with_nuls(self, backend: Backend) -> None:
        samples = {
            key_for(30): bytes(range(256)) * 4,
            key_for(31): b"\x00" * 1000,
            key_for(32): b"\x00ab\x00\r\n\\x00\xff",
            key_for(33): b"",
        }
        for key, data in samples.items():
            assert backend.put(key, data)
        for key, data in samples.items():
            assert backend.get(key) == data

    def test_concurrent_puts_of_one_key_write_once(self, backend: Backend) -> None:
        key = key_for(40)
        results: list[bool] = []
        barrier = threading.Barrier(8, timeout=30)

        def writer() -> None:
            barrier.wait()
            results.append(backend.put(key, b"same content"))

        _run_threads(writer, 8)
        assert sorted(results) == [False] * 7 + [True]
        assert backend.get(key) == b"same content"

    def test_second_handle_sees_the_data(self, backend: Backend) -> None:
        backend.put(key_for(50), b"shared")
        assert backend.cas_ref("heads/main", None, key_for(50))
        other = self.make_backend()
        try:
            assert other.get(key_for(50)) == b"shared"
            assert other.read_ref("heads/main") == key_for(50)
            assert other.cas_ref("heads/main", key_for(50), key_for(51))
            assert other.put(key_for(50), b"other") is False
        finally:
            other.close()
        assert backend.read_ref("heads/main") == key_for(51)

    def test_raw_corrupt_backdoor_changes_stored_bytes(self, backend: Backend) -> None:
        key = key_for(60)
        backend.put(key, b"pristine bytes")
        self.raw_corrupt(backend, key, b"pristine byteZ")
        assert backend.get(key) == b"pristine byteZ"
        self.raw_corrupt(backend, key, b"trunc")
        assert backend.get(key) == b"trunc"
        assert backend.size(key) == 5
        assert backend.has(key)

    # -- refs ----------------------------------------------------------
    def test_read_missing_ref_is_none(self, backend: Backend) -> None:
        assert backend.read_ref("heads/nothing") is None

    def test_cas_create_succeeds_once(self, backend: Backend) -> None:
        assert backend.cas_ref("heads/a", None, "v1") is True
        assert backend.cas_ref("heads/a", None, "v2") is False
        assert backend.read_ref("heads/a") == "v1"

    def test_cas_with_wrong_expected_changes_nothing(self, backend: Backend) -> None:
        backend.cas_ref("heads/a", None, "v1")
        assert backend.cas_ref("heads/a", "v0", "v2") is False
        assert backend.read_ref("heads/a") == "v1"
        assert backend.cas_ref("heads/a", "v0", None) is False
        assert backend.read_ref("heads/a") == "v1"
        assert backend.cas_ref("heads/missing", "v1", "v2") is False
        assert backend.read_ref("heads/missing") is None
        assert list(backend.iter_refs()) == [("heads/a", "v1")]

    def test_cas_update_and_delete(self, backend: Backend) -> None:
        backend.cas_ref("heads/a", None, "v1")
        assert backend.cas_ref("heads/a", "v1", "v2") is True
        assert backend.read_ref("heads/a") == "v2"
        assert backend.cas_ref("heads/a", "v2", "v2") is True  # same value: still a successful swap
        assert backend.cas_ref("heads/a", "v2", None) is True
        assert backend.read_ref("heads/a") is None
        assert backend.cas_ref("heads/a", "v2", None) is False
        assert backend.cas_ref("heads/a", None, "v3") is True  # re-created after deletion
        assert backend.read_ref("heads/a") == "v3"

    def test_cas_none_to_none_asserts_absence(self, backend: Backend) -> None:
        assert backend.cas_ref("heads/a", None, None) is True
        assert backend.read_ref("heads/a") is None
        backend.cas_ref("heads/a", None, "v1")
        assert backend.cas_ref("heads/a", None, None) is False
        assert backend.read_ref("heads/a") == "v1"

    def test_ref_values_round_trip(self, backend: Backend) -> None:
        values = {"heads/main": key_for(7), "sessions/s1/head": "abc:def/123", "t": "x" * 500}
        for name, value in values.items():
            assert backend.cas_ref(name, None, value)
        for name, value in values.items():
            assert backend.read_ref(name) == value

    def test_iter_refs_with_prefix(self, backend: Backend) -> None:
        names = ["sessions/alpha", "sessions/beta/head", "sessionsx", "other/a_b", "other/aXb", "heads/main"]
        for i, name in enumerate(names):
            assert backend.cas_ref(name, None, f"v{i}")

        def listed(prefix: str) -> list[tuple[str, str]]:
            return sorted(backend.iter_refs(prefix))

        assert listed("") == sorted((n, f"v{i}") for i, n in enumerate(names))
        assert sorted(backend.iter_refs()) == listed("")
        assert listed("sessions/") == [("sessions/alpha", "v0"), ("sessions/beta/head", "v1")]
        assert [n for n, _ in listed("sessions")] == ["sessions/alpha", "sessions/beta/head", "sessionsx"]
        assert listed("other/a_") == [("other/a_b", "v3")]  # '_' is no wildcard
        assert listed("nothing") == []

    def test_percent_escaped_ref_names(self, backend: Backend) -> None:
        # check_ref_name allows '%' after the first component, for callers' escapes
        names = ["sessions/caf%C3%A9/head", "sessions/50%25/head", "sessions/50a/head"]
        for i, name in enumerate(names):
            assert backend.cas_ref(name, None, f"v{i}")
        assert backend.read_ref(names[0]) == "v0"
        assert backend.cas_ref(names[0], "v0", "w0")
        assert backend.read_ref(names[0]) == "w0"
        assert sorted(backend.iter_refs("sessions/50%")) == [("sessions/50%25/head", "v1")]  # '%' is no wildcard
        assert backend.cas_ref(names[1], "v1", None)
        assert backend.read_ref(names[1]) is None

    @pytest.mark.parametrize("bad", BAD_REF_NAMES, ids=repr)
    def test_invalid_ref_names_refused(self, backend: Backend, bad: Any) -> None:
        with pytest.raises(SnapshotError):
            backend.read_ref(bad)
        with pytest.raises(SnapshotError):
            backend.cas_ref(bad, None, "v")
        with pytest.raises(SnapshotError):
            backend.cas_ref(bad, "v", None)
        assert list(backend.iter_refs()) == []

    def test_cas_race_threads_lose_no_update(self, backend: Backend) -> None:
        ref = "race/counter"
        assert backend.cas_ref(ref, None, "0")
        wins: list[int] = []

        barrier = threading.Barrier(8, timeout=30)

        def incrementer() -> None:
            barrier.wait()
            wins.append(sum(1 for _ in range(25) if cas_increment(backend, ref)))

        _run_threads(incrementer, 8)
        assert sum(wins) > 0
        assert backend.read_ref(ref) == str(sum(wins))

    # -- locks ---------------------------------------------------------
    def _assert_blocks_until_released(
        self, holder: Backend, waiter: Backend, *, held_shared: bool, wait_shared: bool
    ) -> None:
        entered = threading.Event()
        leave = threading.Event()

        def other() -> None:
            with waiter.lock("gc", shared=wait_shared):
                entered.set()
                leave.wait(30)

        thread = threading.Thread(target=other, daemon=True)
        with holder.lock("gc", shared=held_shared):
            thread.start()
            assert not entered.wait(self.lock_wait), "the lock let a conflicting holder in"
        assert entered.wait(30), "the waiter never got the lock after it was released"
        leave.set()
        thread.join(30)
        assert not thread.is_alive()

    def test_exclusive_lock_excludes_shared(self, backend: Backend) -> None:
        self._assert_blocks_until_released(backend, backend, held_shared=False, wait_shared=True)

    def test_shared_lock_excludes_exclusive(self, backend: Backend) -> None:
        self._assert_blocks_until_released(backend, backend, held_shared=True, wait_shared=False)

    def test_exclusive_lock_excludes_exclusive(self, backend: Backend) -> None:
        self._assert_blocks_until_released(backend, backend, held_shared=False, wait_shared=False)

    def test_lock_excludes_across_handles(self, backend: Backend) -> None:
        other = self.make_backend()
        try:
            self._assert_blocks_until_released(backend, other, held_shared=False, wait_shared=True)
        finally:
            other.close()

    def test_shared_holders_coexist(self, backend: Backend) -> None:
        barrier = threading.Barrier(3, timeout=30)  # breaks unless all three are inside at once

        def holder() -> None:
            with backend.lock("gc", shared=True):
                barrier.wait()

        _run_threads(holder, 3)

    def test_lock_released_after_exception(self, backend: Backend) -> None:
        with pytest.raises(RuntimeError), backend.lock("gc"):
            raise RuntimeError("boom")
        taken = threading.Event()

        def other() -> None:
            with backend.lock("gc"):
                taken.set()

        _run_threads(other, 1, timeout=30)
        assert taken.is_set()

    def test_different_lock_names_are_independent(self, backend: Backend) -> None:
        got = threading.Event()

        def other() -> None:
            with backend.lock("other"):
                got.set()

        with backend.lock("gc"):
            _run_threads(other, 1, timeout=30)
        assert got.is_set()

    # -- lifecycle -----------------------------------------------------
    def test_describe_and_cleanup(self, backend: Backend) -> None:
        assert isinstance(backend.describe(), str) and backend.describe()
        assert isinstance(backend.kind, str) and backend.kind != "abstract"
        removed = backend.cleanup_temporary()
        assert isinstance(removed, int) and removed >= 0

    def test_close_twice_is_harmless(self) -> None:
        handle = self.make_backend()
        handle.close()
        handle.close()
