"""LangGraph's official checkpointer conformance suite against SnapstoreSaver on each engine.

Every capability, base and extended, must be detected and pass; a failure prints the suite's
own message for each failing check.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES, Capability

from snapstore import SnapshotStore
from snapstore.langgraph import SnapstoreSaver


@pytest.mark.parametrize("capability", sorted(c.value for c in ALL_CAPABILITIES))
def test_conformance(capability: str, make_store: Callable[..., SnapshotStore]) -> None:
    @checkpointer_test(name=f"SnapstoreSaver[{make_store.kind}]")  # type: ignore[attr-defined]
    async def saver_on_store() -> AsyncIterator[SnapstoreSaver]:
        yield SnapstoreSaver(make_store())

    report = asyncio.run(validate(saver_on_store, capabilities={capability}))
    result = report.results[capability]
    assert result.detected, f"SnapstoreSaver does not implement {capability}"
    assert result.passed, "\n".join(result.failures)
    assert result.tests_passed > 0 and result.tests_failed == 0


def test_every_capability_is_implemented() -> None:
    from langgraph.checkpoint.conformance.capabilities import DetectedCapabilities

    detected = DetectedCapabilities.from_instance(SnapstoreSaver(SnapshotStore.memory()))
    assert detected.missing == frozenset()
    assert Capability.PRUNE in detected.detected


def test_conformance_with_one_cached_namespace() -> None:
    """The suite interleaves threads: with room for one cached head, every other read reloads."""
    store = SnapshotStore.memory()

    @checkpointer_test(name="SnapstoreSaver[memory, cached_threads=1]")
    async def saver_on_store() -> AsyncIterator[SnapstoreSaver]:
        yield SnapstoreSaver(store, cached_threads=1)

    report = asyncio.run(validate(saver_on_store))
    failures = [f for result in report.results.values() for f in result.failures]
    assert not failures, "\n".join(failures)
    assert all(result.passed for result in report.results.values())
