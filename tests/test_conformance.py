"""The community RFC 6902 test vectors (json-patch/json-patch-tests), run through ``apply_patch``.

The vectors are vendored in ``tests/data/json-patch-tests`` with their upstream
license; SOURCE.md there gives their source, version, hashes and record format.
A missing or changed file fails the run: it is never skipped.

Each record becomes one test, named by its file, index and comment:

* ``expected``: the result must equal it type-exact (canonical bytes, so member
  order does not matter: RFC 6902 objects are unordered);
* ``error``: ``apply_patch`` must raise ``PatchError`` (and nothing else);
* neither: the patch must apply without error;
* ``disabled: true``: reported as skipped, with the vector's own comment;
* a record with only ``comment`` is a note, not a test; it is counted, not run.

Number equality, a deliberate departure. RFC 6902 section 4.6 says numbers are
equal when numerically equal, so per the RFC a ``test`` of ``1.0`` passes
against ``1`` (and ``0.0`` against ``-0.0``). snapstore compares type-exact:
for it ``1``, ``1.0`` and ``true`` are three different values, because its
states must round-trip with their types, and ``test`` agrees with ``diff``.
We checked every vector: none depends on that rule (each ``test`` compares
strings, null, booleans, integers with integers, or objects and arrays that
differ only in member order, which canonical bytes ignore), so all of them
run unchanged; ``test_number_equality_departs_from_rfc_on_purpose`` below
pins the departure down. Loading with ``orjson`` keeps ``1`` and ``1.0`` apart
in the vectors themselves.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from snapstore.delta import apply_patch
from snapstore.errors import PatchError

VECTOR_DIR = Path(__file__).resolve().parent / "data" / "json-patch-tests"
VECTOR_FILES = ("tests.json", "spec_tests.json")


def vector_dir() -> Path:
    return VECTOR_DIR


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def is_note(record: dict[str, Any]) -> bool:
    return "patch" not in record and "doc" not in record


def load_records() -> list[tuple[str, int, dict[str, Any]]]:
    folder = vector_dir()
    records = []
    for name in VECTOR_FILES:
        for index, record in enumerate(orjson.loads((folder / name).read_bytes())):
            records.append((name, index, record))
    return records


def vector_params() -> list[Any]:
    folder = vector_dir()
    missing = [name for name in VECTOR_FILES if not (folder / name).is_file()]
    if missing:
        # collection must not crash: one test that fails and says where it looked
        return [pytest.param(("missing", -1, {"missing": missing}), id="vectors-missing")]
    params = []
    for name, index, record in load_records():
        if is_note(record):
            continue
        label = " ".join(str(record.get("comment", "")).split())[:70]
        marks = [pytest.mark.skip(reason=f"disabled in the suite: {label}")] if record.get("disabled") else []
        params.append(pytest.param((name, index, record), id=f"{name}#{index} {label}".strip(), marks=marks))
    return params


@pytest.mark.parametrize("vector", vector_params())
def test_vector(vector: tuple[str, int, dict[str, Any]]) -> None:
    name, _index, record = vector
    if name == "missing":
        pytest.fail(
            f"RFC 6902 test vectors not found: {vector_dir()} lacks {record['missing']} "
            "(they are part of the repository and of the sdist)"
        )
    doc, patch = record["doc"], record["patch"]
    before = canonical(doc)
    if "error" in record:
        with pytest.raises(PatchError) as caught:
            apply_patch(doc, patch)
        assert {"index", "op", "path", "reason"} <= caught.value.details.keys()
        with pytest.raises(PatchError):
            apply_patch(orjson.loads(before), patch, in_place=True)
    else:
        result = apply_patch(doc, patch)
        in_place = apply_patch(orjson.loads(before), patch, in_place=True)
        assert canonical(in_place) == canonical(result)
        if "expected" in record:
            assert canonical(result) == canonical(record["expected"])
    assert canonical(doc) == before  # in_place=False leaves the input alone


def test_every_record_is_accounted_for() -> None:
    """The vectors are all there, and each record is a note, disabled, or checked."""
    folder = vector_dir()
    assert folder.is_dir(), f"RFC 6902 test vectors not found at {folder}"
    kinds = {"note": 0, "disabled": 0, "expected": 0, "error": 0, "applies": 0}
    for _name, _index, record in load_records():
        if is_note(record):
            kinds["note"] += 1
        elif record.get("disabled"):
            kinds["disabled"] += 1
        else:
            assert "doc" in record and "patch" in record, record
            kinds["expected" if "expected" in record else "error" if "error" in record else "applies"] += 1
    assert sum(kinds.values()) == 112, kinds  # 95 in tests.json + 17 in spec_tests.json at commit 2a928f9
    assert kinds["disabled"] == 4, kinds
    assert kinds["expected"] + kinds["error"] + kinds["applies"] == 108, kinds


def test_vendored_files_match_their_source_note() -> None:
    """The hashes in SOURCE.md are those of the files beside it, and the license travels with them."""
    note = (VECTOR_DIR / "SOURCE.md").read_text(encoding="utf-8")
    for name in VECTOR_FILES:
        digest = hashlib.sha256((VECTOR_DIR / name).read_bytes()).hexdigest()
        assert f"| `{name}` | {(VECTOR_DIR / name).stat().st_size:,} | `{digest}` |" in note, name
    assert "Apache License" in (VECTOR_DIR / "LICENSE").read_text(encoding="utf-8")


def test_number_equality_departs_from_rfc_on_purpose() -> None:
    """RFC 6902 4.6 would pass these ``test`` operations; snapstore compares type-exact."""
    for doc, value in ((1, 1.0), (1.0, 1), (0.0, -0.0), (2**53, float(2**53)), ([1, {"a": 2}], [1, {"a": 2.0}])):
        with pytest.raises(PatchError) as caught:
            apply_patch({"n": doc}, [{"op": "test", "path": "/n", "value": value}])
        assert caught.value.details["reason"] == "test failed"
    # where the RFC and type-exactness agree: a boolean is not a number, a string is not a number
    for doc, value in ((True, 1), (1, True), (0, False), (10, "10")):
        with pytest.raises(PatchError):
            apply_patch({"n": doc}, [{"op": "test", "path": "/n", "value": value}])
    # equal numbers of one type, and objects in another member order, do pass
    assert apply_patch(
        {"n": 1.5, "o": {"a": 1, "b": [2]}},
        [
            {"op": "test", "path": "/n", "value": 1.5},
            {"op": "test", "path": "/o", "value": {"b": [2], "a": 1}},
        ],
    ) == {"n": 1.5, "o": {"a": 1, "b": [2]}}
