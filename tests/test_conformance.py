"""The community RFC 6902 test vectors, through snapstore's own patch application.

The vectors live outside the repository, in ``../shared/conformance/json-patch-tests``
(or wherever ``SNAPSTORE_SHARED_DIR`` points); see its SOURCE.md. A missing folder
fails the run rather than skipping it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from snapstore.delta import apply_patch
from snapstore.errors import PatchError


def _vector_dir() -> Path:
    base = os.environ.get("SNAPSTORE_SHARED_DIR")
    root = Path(base) if base else Path(__file__).resolve().parents[2] / "shared"
    return root / "conformance" / "json-patch-tests"


def _load() -> list[Any]:
    folder = _vector_dir()
    if not folder.is_dir():
        return [pytest.param(None, id="vectors-missing")]
    params = []
    for name in ("tests.json", "spec_tests.json"):
        # the standard json module keeps 1 and 1.0 apart, as orjson does
        for index, record in enumerate(json.loads((folder / name).read_text(encoding="utf-8"))):
            if "doc" not in record or record.get("disabled"):
                continue
            label = record.get("comment", "")[:60]
            params.append(pytest.param(record, id=f"{name}#{index}:{label}"))
    return params


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


@pytest.mark.parametrize("record", _load())
def test_vector(record: dict[str, Any] | None) -> None:
    if record is None:
        pytest.fail(f"RFC 6902 vectors not found at {_vector_dir()} (set SNAPSTORE_SHARED_DIR)")
    doc, patch = record["doc"], record["patch"]
    before = canonical(doc)
    if "error" in record:
        with pytest.raises(PatchError):
            apply_patch(doc, patch)
    else:
        result = apply_patch(doc, patch)
        if "expected" in record:
            assert canonical(result) == canonical(record["expected"])
    assert canonical(doc) == before  # in_place=False leaves the input alone


def test_vectors_are_present_and_counted() -> None:
    params = _load()
    assert len(params) > 100, f"expected the full vector set at {_vector_dir()}"
