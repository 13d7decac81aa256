"""Pure RFC 6902 JSON Patch: ``diff`` two JSON values and ``apply_patch`` to one. No I/O.

Why not jsonpatch's own ``make_patch`` and ``apply_patch``? The project
prefers well-kept libraries, and jsonpatch stays our reference (the tests
check that it applies our patches to the same result), but it cannot be the
implementation, for two reasons:

* type-exactness. Its ``test`` operation compares with Python's ``==`` (with
  a type check only at the top of the value), so a ``test`` of ``1`` passes
  against ``1.0``, ``[1]`` against ``[1.0]`` and ``0.0`` against ``-0.0``.
  snapstore's states must round-trip type-exact, so here two values are equal
  exactly when their canonical bytes (``orjson`` with sorted keys) are equal.
  (Its ``make_patch`` does see those changes, in the releases we require.)
* speed. ``make_patch`` walks the whole document in Python (~19 ms and more
  on a 1.4 MB state), on every commit. ``diff`` below compares whole subtrees
  by their canonical bytes at C speed, descends only into those that differ,
  and turns an append-only list (a transcript) into ``add .../-`` operations
  after one ``bytes.startswith``, without comparing old elements one by one.

Errors: every malformed or non-applying patch raises ``PatchError`` whose
``details`` hold ``index`` (of the operation), ``op``, ``path``, ``reason``
and, when given, ``from``. Nothing else escapes ``apply_patch``, except
``InvalidStateError`` when asked to copy a document that is not JSON.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from difflib import SequenceMatcher
from functools import partial
from math import copysign
from typing import Any

import orjson

from .errors import InvalidStateError, PatchError

__all__ = ["Op", "apply_patch", "diff", "diff_members", "escape_token", "format_pointer", "parse_pointer"]

Op = dict[str, Any]

_canon = partial(orjson.dumps, option=orjson.OPT_SORT_KEYS)
_MISSING: Any = object()
# same type and ``==`` means type-exact equal for these (floats differ as 0.0 and -0.0)
_EXACT_BY_EQ = frozenset((str, int, bool, type(None)))
_IMMUTABLE_JSON = frozenset((str, int, bool, type(None), float))
_BAD_ESCAPE = re.compile("~(?![01])")
_ARRAY_INDEX = re.compile("0|[1-9][0-9]*")  # RFC 6901: no sign, no leading zeros, ASCII digits
# SequenceMatcher is quadratic on lists of repeated values; above this many candidate
# pairs (sum over values of old count x new count) the middle is paired by position.
_MATCH_WORK_LIMIT = 50_000


# ---------------------------------------------------------------- JSON Pointer (RFC 6901)


def escape_token(token: str) -> str:
    """One reference token as it appears in a pointer: ``~`` -> ``~0``, ``/`` -> ``~1``."""
    return token.replace("~", "~0").replace("/", "~1")


def format_pointer(tokens: Iterable[str]) -> str:
    """JSON Pointer text for reference tokens (no tokens is the root, ``""``)."""
    return "".join("/" + escape_token(t) for t in tokens)


def parse_pointer(path: Any) -> list[str]:
    """Reference tokens of a JSON Pointer; ``PatchError`` when it is not one."""
    if not isinstance(path, str):
        raise PatchError(
            f"a JSON Pointer must be a string, not {type(path).__name__}",
            {"path": repr(path), "reason": "pointer is not a string"},
        )
    if not path:
        return []
    if path[0] != "/":
        raise PatchError(
            f"JSON Pointer {path!r} must be empty or start with '/'",
            {"path": path, "reason": "pointer does not start with '/'"},
        )
    tokens = path[1:].split("/")
    if "~" in path:
        for i, token in enumerate(tokens):
            if "~" in token:
                if _BAD_ESCAPE.search(token):
                    raise PatchError(
                        f"JSON Pointer {path!r} has a '~' not followed by 0 or 1",
                        {"path": path, "reason": "bad '~' escape in pointer"},
                    )
                tokens[i] = token.replace("~1", "/").replace("~0", "~")
    return tokens


# ---------------------------------------------------------------- diff


def diff(old: Any, new: Any) -> list[Op]:
    """RFC 6902 operations turning ``old`` into ``new``, comparing values type-exact.

    Applying the operations in order, by ``apply_patch`` or any RFC 6902
    implementation, gives a value whose canonical bytes are ``new``'s. Object
    members may come out in another order; canonical bytes sort keys anyway.

    The ``value`` of an operation may be the very object found in ``new``
    (no copy is made, to keep a commit cheap): serialize the patch before
    ``new`` changes, or copy it. Both inputs are left untouched.
    """
    ops: list[Op] = []
    if old is not new:
        try:
            _diff_value(old, new, "", ops)
        except orjson.JSONEncodeError as exc:
            raise InvalidStateError(f"cannot diff a value that is not JSON: {exc}", {"reason": str(exc)}) from None
    return ops


def diff_members(
    old: dict[str, Any], new: dict[str, Any], old_pieces: dict[str, bytes], new_pieces: dict[str, bytes]
) -> list[Op]:
    """``diff`` of two objects whose members' canonical bytes are already known.

    A commit serializes each top-level member once anyway (to hash the state),
    and keeps the head's bytes from the previous commit, so unchanged members
    cost one bytes comparison and changed ones start with their bytes in hand.
    """
    ops: list[Op] = []
    if not old.keys() <= new.keys():
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": "/" + escape_token(key)})
    for key, nval in new.items():
        if key not in old:
            ops.append({"op": "add", "path": "/" + escape_token(key), "value": nval})
            continue
        ob, nb = old_pieces[key], new_pieces[key]
        if ob != nb:
            _diff_known(old[key], nval, "/" + escape_token(key), ops, ob, nb)
    return ops


def _scalar_differs(old: Any, new: Any, kind: type) -> bool:
    """Whether two values of the same type, neither a plain dict nor list, differ type-exact."""
    if old != new:
        return True
    if kind in _EXACT_BY_EQ:
        return False
    if kind is float:  # equal floats differ only as 0.0 and -0.0
        return copysign(1.0, old) != copysign(1.0, new)
    return _canon(old) != _canon(new)  # subclasses and the like: let the bytes decide


def _diff_value(old: Any, new: Any, path: str, ops: list[Op]) -> None:
    kind = type(old)
    if kind is not type(new):
        ops.append({"op": "replace", "path": path, "value": new})
    elif kind is dict:
        _diff_dict(old, new, path, ops)
    elif kind is list:
        ob, nb = _canon(old), _canon(new)
        if ob != nb:
            _diff_list(old, new, path, ops, ob, nb)
    elif _scalar_differs(old, new, kind):
        ops.append({"op": "replace", "path": path, "value": new})


def _diff_known(old: Any, new: Any, path: str, ops: list[Op], ob: bytes, nb: bytes) -> None:
    """Diff two values whose canonical bytes ``ob`` and ``nb`` are in hand."""
    if ob == nb:
        return
    kind = type(old)
    if kind is type(new) and kind is dict:
        _diff_dict(old, new, path, ops)
    elif kind is type(new) and kind is list:
        _diff_list(old, new, path, ops, ob, nb)
    else:
        ops.append({"op": "replace", "path": path, "value": new})


def _diff_dict(old: dict[str, Any], new: dict[str, Any], path: str, ops: list[Op]) -> None:
    if not old.keys() <= new.keys():
        for key in old:  # in old's order, so the same inputs always give the same patch
            if key not in new:
                ops.append({"op": "remove", "path": path + "/" + escape_token(key)})
    for key, nval in new.items():
        oval = old.get(key, _MISSING)
        if oval is nval:
            continue
        kind = type(nval)
        if kind is type(oval):
            if kind is dict or kind is list:
                ob, nb = _canon(oval), _canon(nval)
                if ob != nb:
                    child = path + "/" + escape_token(key)
                    if kind is dict:
                        _diff_dict(oval, nval, child, ops)
                    else:
                        _diff_list(oval, nval, child, ops, ob, nb)
                continue
            if not _scalar_differs(oval, nval, kind):
                continue
        ops.append(
            {"op": "add" if oval is _MISSING else "replace", "path": path + "/" + escape_token(key), "value": nval}
        )


def _diff_list(old: list[Any], new: list[Any], path: str, ops: list[Op], ob: bytes, nb: bytes) -> None:
    """Diff two lists whose canonical bytes ``ob`` and ``nb`` differ."""
    n_old, n_new = len(old), len(new)
    # Append-only: the new list's bytes are the old list's without its ']', then ','.
    # A JSON value ends where its own syntax says (a number ends at the ',' as it did at
    # the ']'), so that prefix parses to the same n_old elements, and the rest is new.
    if n_new > n_old and (
        n_old == 0 or (len(nb) > len(ob) and nb[len(ob) - 1] == 0x2C and nb.startswith(memoryview(ob)[:-1]))
    ):
        ops.extend({"op": "add", "path": path + "/-", "value": value} for value in new[n_old:])
        return
    if n_new == 0:  # emptied: one operation rather than a remove per element
        ops.append({"op": "replace", "path": path, "value": new})
        return
    old_keys = list(map(_canon, old))
    new_keys = list(map(_canon, new))
    start, limit = 0, min(n_old, n_new)
    while start < limit and old_keys[start] == new_keys[start]:
        start += 1
    end_old, end_new = n_old, n_new
    while end_old > start and end_new > start and old_keys[end_old - 1] == new_keys[end_new - 1]:
        end_old -= 1
        end_new -= 1
    if (end_old - start <= 1 and end_new - start <= 1) or _match_work(old_keys, new_keys, start, end_old, end_new):
        edits = [("replace", start, end_old, start, end_new)]
    else:
        # Matching equal elements finds rotations, inserts and removals in the middle.
        matcher = SequenceMatcher(None, old_keys[start:end_old], new_keys[start:end_new], autojunk=False)
        edits = [
            (tag, i1 + start, i2 + start, j1 + start, j2 + start)
            for tag, i1, i2, j1, j2 in matcher.get_opcodes()
            if tag != "equal"
        ]
    # Apply edits from the back: positions before an edit are then still the old list's,
    # so every operation can address old-side indices i1.. directly.
    for _tag, i1, i2, j1, j2 in reversed(edits):
        paired = min(i2 - i1, j2 - j1)
        for k in range(paired):
            _diff_known(old[i1 + k], new[j1 + k], f"{path}/{i1 + k}", ops, old_keys[i1 + k], new_keys[j1 + k])
        for i in range(i2 - 1, i1 + paired - 1, -1):
            ops.append({"op": "remove", "path": f"{path}/{i}"})
        at = i1 + paired
        if at == i2 and i2 == n_old:  # inserting at the end of the list as it stands
            ops.extend({"op": "add", "path": path + "/-", "value": new[j]} for j in range(j1 + paired, j2))
        else:
            ops.extend(
                {"op": "add", "path": f"{path}/{at + offset}", "value": new[j]}
                for offset, j in enumerate(range(j1 + paired, j2))
            )


def _match_work(old_keys: list[bytes], new_keys: list[bytes], start: int, end_old: int, end_new: int) -> bool:
    """True when matching the middles would cost too much (many repeated elements)."""
    if (end_old - start) * (end_new - start) <= _MATCH_WORK_LIMIT:
        return False
    counts = Counter(old_keys[start:end_old])
    work = 0
    for key in new_keys[start:end_new]:
        work += counts.get(key, 0)
        if work > _MATCH_WORK_LIMIT:
            return True
    return False


# ---------------------------------------------------------------- apply


def apply_patch(doc: Any, patch: Any, *, in_place: bool = False) -> Any:
    """Apply RFC 6902 operations to ``doc`` and return the result; always use the return value.

    With ``in_place=False`` (the default) ``doc`` is left untouched and the
    result is a fresh value sharing nothing with ``doc`` or ``patch``: the
    caller owns it. That is a full copy (through orjson, a few ms for 1.4 MB)
    rather than copy-on-write along the touched paths, on purpose: a result
    sharing subtrees with its input would let a game loop that edits its state
    in place corrupt the other one. Hot paths (commit, rebuild) patch their own
    copies with ``in_place=True``, which costs only the operations.

    With ``in_place=True`` ``doc`` is edited and returned, unless an operation
    replaces the root; if an operation fails, ``doc`` may be left half patched.
    Values the patch puts in the document are copies, so later edits of the
    document never reach the patch.

    ``test`` compares type-exact: ``1``, ``1.0`` and ``true`` are all different.
    Removing the whole document (``remove`` at ``""``) is refused.
    """
    if not isinstance(patch, list):
        raise PatchError(
            f"a JSON Patch must be a list of operations, not {type(patch).__name__}",
            {"index": None, "op": None, "path": None, "reason": "patch is not a list"},
        )
    if not in_place:
        doc = _own_copy(doc)
    for index, op in enumerate(patch):
        try:
            doc = _apply_one(doc, op)
        except PatchError as exc:
            raise _name_operation(exc, index, op) from None
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            # Not reachable by design; a safety net so callers only ever see PatchError.
            failure = PatchError(f"{type(exc).__name__}: {exc}", {"reason": "operation could not be applied"})
            raise _name_operation(failure, index, op) from exc
    return doc


def _own_copy(doc: Any) -> Any:
    if type(doc) in _IMMUTABLE_JSON:
        return doc
    try:
        return orjson.loads(orjson.dumps(doc))
    except orjson.JSONEncodeError as exc:
        raise InvalidStateError(
            f"cannot patch a document that is not JSON: {exc}", {"reason": "document is not JSON"}
        ) from None


def _name_operation(exc: PatchError, index: int, op: Any) -> PatchError:
    """The same failure, its message and details naming the operation it came from."""
    details: dict[str, Any] = {"index": index, "op": None, "path": None}
    if isinstance(op, dict):
        details["op"] = op.get("op")
        details["path"] = op.get("path")
        if "from" in op:
            details["from"] = op["from"]
    for key, value in exc.details.items():
        if key == "path" and details["path"] is not None:
            key = "pointer"  # the pointer that failed to parse (may be "from")
        details.setdefault(key, value)
    details.setdefault("reason", exc.message)
    where = f"{details['op']} {details['path']!r}" if isinstance(op, dict) else "not an object"
    return PatchError(f"patch operation {index} ({where}): {exc.message}", details)


def _refuse(message: str, reason: str, **extra: Any) -> PatchError:
    return PatchError(message, {"reason": reason, **extra})


def _member(op: dict[str, Any], name: str) -> Any:
    value = op.get(name, _MISSING)
    if value is _MISSING:
        raise _refuse(f"the operation has no {name!r} member", f"missing {name!r}")
    return value


def _copy_in(value: Any) -> Any:
    """A copy of a JSON value to place in the document (sharing nothing with its source)."""
    if type(value) in _IMMUTABLE_JSON:
        return value
    try:
        return orjson.loads(orjson.dumps(value))
    except orjson.JSONEncodeError as exc:
        raise _refuse(f"the value is not JSON: {exc}", "value is not JSON") from None


def _same(actual: Any, expected: Any) -> bool:
    """Type-exact equality of a document value and a ``test`` value."""
    kind = type(actual)
    if kind is not type(expected):
        return False
    try:
        if kind is dict or kind is list:
            return bool(_canon(actual) == _canon(expected))
        return not _scalar_differs(actual, expected, kind)
    except orjson.JSONEncodeError as exc:
        raise _refuse(f"the value is not JSON: {exc}", "value is not JSON") from None


def _apply_one(doc: Any, op: Any) -> Any:
    if not isinstance(op, dict):
        raise _refuse(f"an operation must be an object, not {type(op).__name__}", "operation is not an object")
    kind = _member(op, "op")
    tokens = parse_pointer(_member(op, "path"))
    if kind == "add":
        return _add(doc, tokens, _copy_in(_member(op, "value")))
    if kind == "remove":
        _remove(doc, tokens)
        return doc
    if kind == "replace":
        value = _copy_in(_member(op, "value"))
        if not tokens:
            return value
        parent, key = _parent(doc, tokens)
        if type(parent) is dict:
            if key not in parent:
                raise _refuse(f"no member {key!r} to replace", "path not found")
            parent[key] = value
        else:
            parent[_index(parent, key, append=False)] = value
        return doc
    if kind == "test":
        expected = _member(op, "value")
        if not _same(_get(doc, tokens), expected):
            raise _refuse("the value differs (compared type-exact)", "test failed")
        return doc
    if kind == "move" or kind == "copy":
        from_tokens = parse_pointer(_member(op, "from"))
        value = _get(doc, from_tokens)
        if kind == "copy":
            return _add(doc, tokens, _copy_in(value))
        if len(tokens) > len(from_tokens) and tokens[: len(from_tokens)] == from_tokens:
            raise _refuse("cannot move a value into one of its own children", "move into own child")
        if tokens == from_tokens:
            return doc
        _remove(doc, from_tokens)
        return _add(doc, tokens, value)
    raise _refuse(f"unknown operation {kind!r}", "unknown operation")


def _step(node: Any, token: str) -> Any:
    if type(node) is dict:
        child = node.get(token, _MISSING)
        if child is _MISSING:
            raise _refuse(f"no member {token!r}", "path not found", location=token)
        return child
    if type(node) is list:
        return node[_index(node, token, append=False)]
    raise _refuse(f"cannot look up {token!r} inside a {type(node).__name__}", "path goes through a scalar")


def _get(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        doc = _step(doc, token)
    return doc


def _parent(doc: Any, tokens: list[str]) -> tuple[Any, str]:
    """The container holding the location ``tokens`` points to, and the last token."""
    parent = _get(doc, tokens[:-1])
    if type(parent) is not dict and type(parent) is not list:
        raise _refuse(f"cannot reach {tokens[-1]!r} inside a {type(parent).__name__}", "path goes through a scalar")
    return parent, tokens[-1]


def _index(array: list[Any], token: str, *, append: bool) -> int:
    """The position a token names in an array; ``-`` (the end) only when appending."""
    if token == "-" and append:
        return len(array)
    if not _ARRAY_INDEX.fullmatch(token):
        raise _refuse(f"{token!r} is not an array index", "bad array index")
    index = int(token) if len(token) < 20 else len(array) + 1  # (int() refuses over 4300 digits)
    if index > len(array) or (index == len(array) and not append):
        raise _refuse(f"array index {index} is out of range (length {len(array)})", "array index out of range")
    return index


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, key = _parent(doc, tokens)
    if type(parent) is dict:
        parent[key] = value  # an existing member is replaced (RFC 6902, 4.1)
    else:
        parent.insert(_index(parent, key, append=True), value)
    return doc


def _remove(doc: Any, tokens: list[str]) -> None:
    if not tokens:
        raise _refuse("cannot remove the whole document", "cannot remove the root")
    parent, key = _parent(doc, tokens)
    if type(parent) is dict:
        if key not in parent:
            raise _refuse(f"no member {key!r} to remove", "path not found")
        del parent[key]
    else:
        del parent[_index(parent, key, append=False)]
