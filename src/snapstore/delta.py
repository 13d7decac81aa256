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
  with ``==`` at C speed, descends only into those that differ, and matches
  lists by their common ends and by shifts (a transcript's appends, a sliding
  window's removals at the front), so its time and memory stay linear in the
  state's size whatever its shape: wide, deep, long lists or huge strings.

Errors: every malformed or non-applying patch raises ``PatchError`` whose
``details`` hold ``index`` (of the operation), ``op``, ``path``, ``reason``
and, when given, ``from``. Nothing else escapes ``apply_patch``, except
``InvalidStateError`` when asked to copy a document that is not JSON.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from functools import partial
from itertools import compress, islice
from math import copysign
from operator import eq, indexOf, is_not, ne, not_
from typing import Any

import orjson

from .errors import InvalidStateError, PatchError

__all__ = [
    "Op",
    "apply_patch",
    "diff",
    "diff_members",
    "dumps_as_stored",
    "escape_token",
    "format_pointer",
    "parse_pointer",
]

Op = dict[str, Any]


def _as_base(value: Any) -> Any:
    from .codec import json_base  # codec builds on this module

    return json_base(value)


#: Canonical JSON of values taken from a state, written as the state's own bytes write them
#: (codec.encode_members): subclasses passed through to their base type's value, so an enum member is
#: written as its ``.value``. Values are compared by these bytes, and a patch's payload is written
#: with them: without the option orjson writes an int enum as its int, and a member whose ``.value``
#: is 1.0 or true, which the state's bytes hold, compared equal to a 1 the head held and was left
#: out of the delta, or written into it as 1 (the snapshot failed its hash on every rebuild).
dumps_as_stored = partial(
    orjson.dumps, default=_as_base, option=orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_MISSING: Any = object()
# same type and ``==`` means type-exact equal for these (floats differ as 0.0 and -0.0)
_EXACT_BY_EQ = frozenset((str, int, bool, type(None)))
_IMMUTABLE_JSON = frozenset((str, int, bool, type(None), float))
_BAD_ESCAPE = re.compile("~(?![01])")
#: canonical bytes longer than this are copied out of orjson's larger buffer before the next serialization
_RIGHT_SIZE_ABOVE = 1 << 16
#: list elements whose canonical bytes are compared at once, confirming a run equal under ==
_CHUNK = 256
#: matches of the middle's first element tried when looking for a sliding window's shift
_SHIFT_TRIES = 8
#: lists of the same length up to this are diffed pairwise, as a dict's members are
_SHORT = 2


class _Budget(threading.local):
    """What a ``diff_members`` call with ``max_changes`` may still spend, per thread (None: no limit)."""

    left: int | None = None


_budget = _Budget()


class _OverBudget(Exception):
    pass


def _spend(changes: int) -> None:
    """Count ``changes`` against the running ``diff_members`` call's budget, if it has one."""
    left = _budget.left
    if left is not None:
        left -= changes
        if left < 0:
            raise _OverBudget
        _budget.left = left


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
#
# Whether two subtrees differ is decided by ``==``: a C-speed walk that stops at the first
# difference and allocates nothing. Serializing subtrees to compare their bytes, at every level
# of the way down, made a diff quadratic in depth (a change under an 8 MB leaf at depth 250
# serialized 250 x 8 MB) and kept those bytes alive down the recursion. ``==`` cannot tell 1,
# 1.0 and true apart, nor 0.0 and -0.0: subtrees it calls equal are confirmed by their canonical
# bytes, and walked by ``_diff_lookalikes`` when those differ. Where ``==`` already said that two
# containers differ and all but one pair of their children are equal, the remaining pair is
# known to differ without comparing it, so a chain of containers is compared once, not per level.


def diff(old: Any, new: Any) -> list[Op]:
    """RFC 6902 operations turning ``old`` into ``new``, comparing values type-exact.

    Applying the operations in order, by ``apply_patch`` or any RFC 6902
    implementation, gives a value whose canonical bytes are ``new``'s. Object
    members may come out in another order; canonical bytes sort keys anyway.

    The ``value`` of an operation may be the very object found in ``new``
    (no copy is made, to keep a commit cheap): serialize the patch before
    ``new`` changes, or copy it. Both inputs are left untouched. Time and memory
    are linear in the size of the inputs, whatever their shape.
    """
    ops: list[Op] = []
    if old is not new:
        try:
            if type(old) is type(new) and type(old) in (dict, list) and old != new:
                _diff_unequal(old, new, "", ops)  # (the documents differ, as a rule: no bytes needed)
            else:
                _diff_value(old, new, "", ops)
        except (MemoryError, RecursionError):
            raise
        except Exception as exc:
            raise _not_json(new, exc) from None
    return ops


def diff_members(
    old: dict[str, Any],
    new: dict[str, Any],
    old_pieces: dict[str, bytes],
    new_pieces: dict[str, bytes],
    max_changes: int | None = None,
) -> list[Op] | None:
    """``diff`` of two objects whose members' canonical bytes are already known.

    A commit serializes each top-level member once anyway (to hash the state),
    and keeps the head's bytes from the previous commit, so unchanged members
    cost one bytes comparison and changed ones start known to differ.

    With ``max_changes``, None as soon as more than that many changes are found: members of
    objects and elements of lists added, removed or replaced (one holding an object or list that
    differs counts where that one's members do), and values that differ only in type (``1`` and
    ``1.0``). A diff stopped early costs what it found so far, where a state whose every part
    changed would cost a walk of all of it.
    """
    _budget.left = max_changes
    try:
        return _diff_members(old, new, old_pieces, new_pieces)
    except _OverBudget:
        return None
    finally:
        _budget.left = None


def _diff_members(
    old: dict[str, Any], new: dict[str, Any], old_pieces: dict[str, bytes], new_pieces: dict[str, bytes]
) -> list[Op]:
    ops: list[Op] = []
    # The members whose bytes differ (or that are new) are found by C calls alone: a Python loop
    # over a million members cost several times serializing them.
    changed = list(compress(new_pieces.keys(), map(ne, map(old_pieces.get, new_pieces.keys()), new_pieces.values())))
    added = [key for key in changed if key not in old]
    try:
        moved: dict[str, str] = {}
        if len(old) > len(new) - len(added):  # some of old's members are gone
            gone = [key for key in old if key not in new]
            moved = _renamed(gone, added, old, new, old_pieces, new_pieces)
            ops.extend(_removals("", gone, moved))
            _spend(len(ops))
        for key in changed:
            nval = new[key]
            oval = old.get(key, _MISSING)
            path = "/" + escape_token(key)
            kind = type(oval)
            if key in moved:
                _spend(1)
                ops.append({"op": "move", "from": "/" + escape_token(moved[key]), "path": path})
            elif oval is _MISSING:
                _spend(1)
                ops.append({"op": "add", "path": path, "value": nval})
            elif kind is not type(nval) or (kind is not dict and kind is not list):
                _spend(1)
                ops.append({"op": "replace", "path": path, "value": nval})
            elif kind is list:  # (bytes that differ only in a 1 / 1.0 or a 0.0 / -0.0 are found below too)
                _diff_list(oval, nval, path, ops, [old_pieces[key], new_pieces[key]])
            else:
                _diff_dict(oval, nval, path, ops)
    except (MemoryError, RecursionError, _OverBudget):
        raise
    except Exception as exc:
        raise _not_json(new, exc) from None
    return ops


def _not_json(new: Any, exc: Exception) -> InvalidStateError:
    """The error for a failure to compare or serialize a value of ``new``.

    Values are compared with ``==``, so a value's own ``__eq__`` runs, and may raise; the error
    then names the first value of ``new`` that is not JSON, when there is one.
    """
    from .codec import describe_unrepresentable  # codec builds on this module

    error = describe_unrepresentable(new)
    if "path" not in error.details:
        error = InvalidStateError(f"cannot diff a value that is not JSON: {exc}", {"reason": str(exc)})
    return error


def _scalar_differs(old: Any, new: Any, kind: type) -> bool:
    """Whether two values of the same type, neither a plain dict nor list, differ type-exact."""
    if old != new:
        return True
    if kind in _EXACT_BY_EQ:
        return False
    if kind is float:  # equal floats differ only as 0.0 and -0.0
        return copysign(1.0, old) != copysign(1.0, new)
    return dumps_as_stored(old) != dumps_as_stored(new)  # subclasses and the like: let the bytes decide


def _same_bytes(old: Any, new: Any) -> bool:
    """Whether two values have the same canonical bytes.

    orjson's buffer for a large result is many times its length, so the first result is copied
    to its own size before the second is made: one such buffer at a time, not two.
    """
    first = dumps_as_stored(old)
    if len(first) > _RIGHT_SIZE_ABOVE:
        first = bytes(memoryview(first))
    return first == dumps_as_stored(new)


def _diff_value(old: Any, new: Any, path: str, ops: list[Op]) -> None:
    """Diff two values that may be equal."""
    kind = type(old)
    if kind is not type(new):
        ops.append({"op": "replace", "path": path, "value": new})
    elif kind is dict or kind is list:
        _diff_containers(old, new, path, ops)
    elif _scalar_differs(old, new, kind):
        ops.append({"op": "replace", "path": path, "value": new})


def _diff_containers(old: Any, new: Any, path: str, ops: list[Op]) -> bool:
    """Diff two containers of one type that may be equal; whether they differ under ``==``.

    Most such pairs are equal (the siblings of a change), so their bytes are compared first:
    one serialization of each, the same as confirming an ``==`` would need.
    """
    first = dumps_as_stored(old)
    if len(first) > _RIGHT_SIZE_ABOVE:
        first = bytes(memoryview(first))  # (see _same_bytes)
    known = [first, dumps_as_stored(new)]
    del first
    if known[0] == known[1]:
        return False
    if old != new:
        if type(old) is list:
            _diff_list(old, new, path, ops, known)  # (which empties ``known`` before it recurses)
        else:
            known.clear()
            _diff_dict(old, new, path, ops)
        return True
    known.clear()
    _diff_lookalikes(old, new, path, ops)  # the bytes differ in a 1 / 1.0 / true or a 0.0 / -0.0
    return False


def _diff_unequal(old: Any, new: Any, path: str, ops: list[Op]) -> None:
    """Diff two values expected to differ under ``==``.

    The expectation may be wrong where only bytes said they differ (a change of 1 to 1.0 looks
    alike to ``==``): the patch is right either way, since scalars are still compared, and lists
    still keep what their ends share.
    """
    kind = type(old)
    if kind is not type(new):
        _spend(1)
        ops.append({"op": "replace", "path": path, "value": new})
    elif kind is not dict and kind is not list:
        if _scalar_differs(old, new, kind):
            _spend(1)
            ops.append({"op": "replace", "path": path, "value": new})
    elif kind is dict:
        _diff_dict(old, new, path, ops)
    else:
        _diff_list(old, new, path, ops)


def _weight(value: Any) -> int:
    """A cheap guess at a container's size, to pick the child pair left uncompared."""
    return len(value) + 1 if type(value) is dict or type(value) is list else 0


def _child(path: str, token: str | int) -> str:
    return f"{path}/{escape_token(token) if type(token) is str else token}"


def _diff_children(pairs: list[tuple[Any, Any, str | int]], explained: bool, path: str) -> dict[int, list[Op]]:
    """The operations of the pairs of children (old, new, key or index) of two containers at
    ``path`` that differ under ``==``, by the pair's index; pairs that are equal have none.

    Unless ``explained`` (a difference under ``==`` was already found among their other
    children), one pair must differ under ``==``: when all pairs but the heaviest are equal,
    that one is diffed as unequal without comparing it first. Most pairs are equal (the
    siblings of a change): containers are compared with ``==`` first (a head sharing the
    state's strings makes that a walk of the containers), the equal ones then confirmed by
    their bytes together, and a pair's pointer is only spelled out when it has operations.
    """
    found: dict[int, list[Op]] = {}
    heavy = -1
    if not explained and pairs:
        heavy = max(range(len(pairs)), key=lambda i: _weight(pairs[i][0])) if len(pairs) > 1 else 0
    alike: list[int] = []  # container pairs equal under ==, whose bytes are confirmed together below
    for index, (o, n, token) in enumerate(pairs):
        if index == heavy:
            continue
        kind = type(o)
        if kind is not type(n) or (kind is not dict and kind is not list):
            if kind is type(n) and not _scalar_differs(o, n, kind):
                continue
            explained = explained or o != n
            found[index] = [{"op": "replace", "path": _child(path, token), "value": n}]
        elif o != n:
            explained = True
            ops: list[Op] = []
            found[index] = ops
            _diff_unequal(o, n, _child(path, token), ops)
        else:
            alike.append(index)
    # Pairs equal under == are equal type-exact unless a 1 / 1.0 / true or a 0.0 / -0.0 differs
    # somewhere: their bytes are compared a chunk of pairs at a time (two serializations per chunk,
    # not per pair), and pair by pair only in a chunk that differs.
    for start in range(0, len(alike), _CHUNK):
        chunk = alike[start : start + _CHUNK]
        if _same_bytes([pairs[i][0] for i in chunk], [pairs[i][1] for i in chunk]):
            continue
        for index in chunk:
            o, n, token = pairs[index]
            if not _same_bytes(o, n):
                ops = found[index] = []
                _diff_lookalikes(o, n, _child(path, token), ops)
    if heavy >= 0:
        o, n, token = pairs[heavy]
        ops = found[heavy] = []
        (_diff_value if explained else _diff_unequal)(o, n, _child(path, token), ops)
    return found


#: an object of at least this many members, all objects, none added or gone (an entity table), has
#: its members that differ found by C calls and the others confirmed by their bytes a chunk at a
#: time (``_wide_dict_ops``), not by a Python step each
_WIDE = 512
_ONLY_OBJECTS = frozenset((dict,))


def _diff_dict(old: dict[str, Any], new: dict[str, Any], path: str, ops: list[Op]) -> None:
    """Diff two dicts that differ under ``==``; operations come in ``new``'s key order. A member
    renamed (one key gone, another added with the same value, type-exact) is a ``move``."""
    if (
        len(new) >= _WIDE
        and len(old) == len(new)
        and old.keys() == new.keys()
        and set(map(type, new.values())) == _ONLY_OBJECTS
        and set(map(type, old.values())) == _ONLY_OBJECTS
    ):
        wide = _wide_dict_ops(old, new, path)
        if wide is not None:
            ops.extend(wide)
            return
    explained = False
    removed = 0
    moved: dict[str, str] = {}
    if not old.keys() <= new.keys():
        explained = True
        gone = [key for key in old if key not in new]
        moved = _renamed(gone, [key for key in new if key not in old], old, new, None, None)
        removals = _removals(path, gone, moved)
        ops.extend(removals)
        removed = len(removals)
    containers: list[tuple[Any, Any, str | int]] = []
    slots: list[Op | int] = []  # an operation, or the index of a container pair diffed below
    for key, nval in new.items():
        oval = old.get(key, _MISSING)
        if oval is nval:
            continue
        if key in moved:
            origin = path + "/" + escape_token(moved[key])
            slots.append({"op": "move", "from": origin, "path": path + "/" + escape_token(key)})
            continue
        kind = type(nval)
        if kind is type(oval):
            if kind is dict or kind is list:
                slots.append(len(containers))
                containers.append((oval, nval, key))
                continue
            if oval != nval:
                explained = True
            elif kind in _EXACT_BY_EQ or not _scalar_differs(oval, nval, kind):
                continue
        else:
            explained = True  # (also for 1 -> 1.0, which == calls equal: the heavy pair is then compared)
        slots.append(
            {"op": "add" if oval is _MISSING else "replace", "path": path + "/" + escape_token(key), "value": nval}
        )
    _spend(removed + len(slots) - len(containers))  # (a pair of containers counts in its own diff)
    found = _diff_children(containers, explained, path) if containers else {}
    for slot in slots:
        if not isinstance(slot, int):
            ops.append(slot)
        elif slot in found:
            ops.extend(found[slot])


def _wide_dict_ops(old: dict[str, Any], new: dict[str, Any], path: str) -> list[Op] | None:
    """``_diff_dict``'s operations for two objects with the same keys whose members are all objects,
    or None to leave them to it.

    An entity table with a few members changed a turn cost a Python step for each of its thousands
    of members, then their bytes serialized again to confirm the equal ones type-exact. Here the
    members that differ under ``==`` are found by C calls and diffed as ``_diff_children`` diffs
    them (for two objects, the heaviest pair's way and the others' give the same operations), and
    the others are confirmed by their bytes a chunk of members at a time, as ``_diff_children``
    confirms pairs (orjson reserves its buffer by the number of items it is given: a chunk bounds
    it). When a chunk's bytes differ (a 1 that became 1.0, a 0.0 that became -0.0, which ``==``
    calls equal), or no member differs under ``==``, None, with the diff's budget as it was: the
    member-by-member diff finds it, spending what it always spent. Its operations are this
    path's when this path gives any, and a diff over its budget here is over it there too.
    """
    keys = list(new)
    differs = list(map(ne, map(old.__getitem__, keys), map(new.__getitem__, keys)))
    changed = list(compress(keys, differs))
    if not changed:
        return None
    budget_left = _budget.left
    ops: list[Op] = []
    for key in changed:
        _diff_unequal(old[key], new[key], _child(path, key), ops)
    alike = list(compress(keys, map(not_, differs)))
    # the very same object on both sides needs no bytes (the member-by-member diff skips it too)
    alike = list(compress(alike, map(is_not, map(old.__getitem__, alike), map(new.__getitem__, alike))))
    for start in range(0, len(alike), _CHUNK):
        chunk = alike[start : start + _CHUNK]
        if not _same_bytes(list(map(old.__getitem__, chunk)), list(map(new.__getitem__, chunk))):
            _budget.left = budget_left
            return None
    return ops


#: at most this many keys gone and as many added in one object are paired up as renames: pairing them
#: compares every gone value with every added one
_MOST_RENAMES = 16


def _removals(path: str, gone: list[str], moved: dict[str, str]) -> list[Op]:
    """A ``remove`` for each key gone from the object at ``path`` and not moved, in old's order (so
    the same inputs always give the same patch)."""
    kept_by_a_move = set(moved.values())
    return [{"op": "remove", "path": path + "/" + escape_token(key)} for key in gone if key not in kept_by_a_move]


def _renamed(
    gone: list[str],
    added: list[str],
    old: dict[str, Any],
    new: dict[str, Any],
    old_bytes: dict[str, bytes] | None,
    new_bytes: dict[str, bytes] | None,
) -> dict[str, str]:
    """New key -> the gone key whose value it holds, type-exact (the same canonical bytes): what a
    ``move`` says in a few bytes where ``remove`` and ``add`` would carry the value again. Each gone
    key serves one new key; none past ``_MOST_RENAMES`` of either. Below the top level a value is
    serialized only when ``==`` has found it equal to one gone (a large member removed costs no
    serialization when nothing was renamed)."""
    if not added or len(gone) > _MOST_RENAMES or len(added) > _MOST_RENAMES:
        return {}
    moved: dict[str, str] = {}
    if old_bytes is not None and new_bytes is not None:  # the top level: every member's bytes in hand
        by_bytes: dict[bytes, list[str]] = {}
        for key in gone:
            by_bytes.setdefault(old_bytes[key], []).append(key)
        for key in added:
            candidates = by_bytes.get(new_bytes[key])
            if candidates:
                moved[key] = candidates.pop(0)
        return moved
    left = list(gone)
    for key in added:  # == first (C speed, stopping at the first difference), bytes to confirm it
        value = new[key]
        for candidate in left:
            if old[candidate] == value and _same_bytes(old[candidate], value):
                moved[key] = candidate
                left.remove(candidate)
                break
    return moved


def _diff_lookalikes(old: Any, new: Any, path: str, ops: list[Op]) -> None:
    """Replace the leaves that differ in type or in the sign of a zero, in two values equal under ``==``.

    Equal under ``==``, the two have the same keys and lengths everywhere, so one walk in step
    visits each node once.
    """
    stack: list[tuple[Any, Any, str]] = [(old, new, path)]
    while stack:
        o, n, where = stack.pop()
        kind = type(o)
        if kind is not type(n):
            _spend(1)
            ops.append({"op": "replace", "path": where, "value": n})
        elif kind is dict:
            stack.extend((child, n[key], f"{where}/{escape_token(key)}") for key, child in o.items())
        elif kind is list:
            stack.extend((child, n[i], f"{where}/{i}") for i, child in enumerate(o))
        elif _scalar_differs(o, n, kind):
            _spend(1)
            ops.append({"op": "replace", "path": where, "value": n})


def _extends(old_bytes: bytes, start: int, new_bytes: bytes) -> bool:
    """Whether the elements of a list's bytes from offset ``start`` (the first element's first
    byte) to its end begin another list's elements, as whole elements."""
    body = memoryview(old_bytes)[start:-1]
    if not body:
        return True
    end = 1 + len(body)  # where the element after them begins ("," or the list's "]")
    return len(new_bytes) > end and new_bytes[end] in b",]" and new_bytes.startswith(body, 1)


#: the first slice ``_run_length`` compares: pairs by position stop at an unequal pair often
_FIRST_RUN_SLICE = 16


def _run_length(old: list[Any], i: int, new: list[Any], j: int, limit: int) -> int:
    """How many elements from old[i] and new[j] on are equal under ``==`` (at most ``limit``).

    Compared a slice at a time, each twice the last: the cost follows the run found, not ``i``
    (``islice`` would step over the first ``i`` elements on every call, and pairing a list whose
    elements all changed calls this once per element: quadratic in the list's length).
    """
    run, size = 0, _FIRST_RUN_SLICE
    while run < limit:
        size = min(size, limit - run)
        try:
            return run + indexOf(map(eq, old[i + run : i + run + size], new[j + run : j + run + size]), False)
        except ValueError:
            run += size
            size *= 2
    return limit


def _run_length_back(old: list[Any], new: list[Any], limit: int) -> int:
    """How many elements at the ends of old and new are equal under ``==`` (at most ``limit``)."""
    try:
        return indexOf(map(eq, islice(reversed(old), limit), islice(reversed(new), limit)), False)
    except ValueError:
        return limit


def _diff_list(old: list[Any], new: list[Any], path: str, ops: list[Op], known: list[bytes] | None = None) -> None:
    """Diff two lists that differ under ``==``.

    ``known``, when given, holds the two lists' canonical bytes; it is emptied before any
    recursion, so that a chain of lists does not keep every level's bytes alive at once.

    A common prefix and suffix are kept; what lies between is matched as a shift (elements
    removed at the front and added at the back, as a sliding window does, or the reverse),
    or else paired by position. Operations run from the back of the list to the front, so
    each one addresses elements by their index in ``old``. There is no general matching of
    equal elements (difflib's): it is quadratic, and a commit must stay linear in the state.
    """
    n_old, n_new = len(old), len(new)
    if n_new == 0:  # emptied: one operation rather than a remove per element
        _spend(1)
        ops.append({"op": "replace", "path": path, "value": new})
        return
    if known and n_new > n_old and _extends(known[0], 1, known[1]):
        known.clear()
        # Append-only: new's bytes are old's without its ']', then ','. A JSON value ends where its
        # own syntax says, so that prefix parses to the same n_old elements, and the rest is new.
        _spend(n_new - n_old)
        ops.extend({"op": "add", "path": path + "/-", "value": value} for value in new[n_old:])
        return
    if n_old == n_new <= _SHORT:  # short lists, chains of them above all: as a dict's children
        if known:
            known.clear()
        found = _diff_children([(old[i], new[i], i) for i in range(n_old)], False, path)
        for index in sorted(found):
            ops.extend(found[index])
        return
    prefix = _run_length(old, 0, new, 0, min(n_old, n_new))
    # with equal lengths, old[prefix] != new[prefix]: leave that pair out of the suffix's scan
    suffix = _run_length_back(old, new, max(0, min(n_old, n_new) - prefix - (n_old == n_new)))
    end_old, end_new = n_old - suffix, n_new - suffix
    if known and (prefix or suffix):
        known.clear()
    edits = _ListEdits(old, new, path, ops, known or None)
    edits.pair(end_old, end_new, suffix)
    edits.middle(prefix, end_old, end_new)
    edits.pair(0, 0, prefix)


class _ListEdits:
    """Emits the operations of ``_diff_list``, each addressing ``old``'s indices."""

    __slots__ = ("known", "new", "old", "ops", "path")

    def __init__(self, old: list[Any], new: list[Any], path: str, ops: list[Op], known: list[bytes] | None) -> None:
        self.old, self.new, self.path, self.ops = old, new, path, ops
        self.known = known  # the lists' canonical bytes, when in hand and the middle is the whole list

    def middle(self, start: int, end_old: int, end_new: int) -> None:
        """Turn old[start:end_old] into new[start:end_new]; old[start] != new[start] when both are there."""
        old_len, new_len = end_old - start, end_new - start
        known, self.known = self.known, None
        cut = grow = 0
        window = False  # a sliding window whose kept elements are checked by their bytes
        if old_len and new_len:
            if known:  # (the middle is then the whole of both lists)
                cut = self._shift_by_bytes(known, end_old, end_new)
                window = cut > 0
            if not cut:
                cut = self._shift(self.old, start, end_old, self.new, start, end_new)
                if cut and known:  # old's bytes after the cut elements begin new's bytes
                    window = _extends(known[0], len(dumps_as_stored(self.old[:cut])), known[1])
            if not cut:
                grow = self._shift(self.new, start, end_new, self.old, start, end_old)
        if known:
            known.clear()  # before the recursion below
        if cut:  # old[start+cut:end_old] begins new's middle: append the rest, then cut the front
            kept = old_len - cut
            self.insert(end_old, start + kept, end_new)
            if not window:
                self.pair(start + cut, start, kept)
            self.remove(start, start + cut)
            return
        if grow:  # new[start+grow:end_new] is old's middle's head: cut old's tail, insert in front
            kept = new_len - grow
            self.remove(start + kept, end_old)
            self.pair(start, start + grow, kept)
            self.insert(start, start, start + grow)
            return
        paired = min(old_len, new_len)
        self.remove(start + paired, end_old)
        self.insert(end_old, start + paired, end_new)
        self.pair(start, start, paired, first_unequal=True)

    def _shift_by_bytes(self, known: list[bytes], end_old: int, end_new: int) -> int:
        """``_shift`` of old into new confirmed by the lists' bytes: old's bytes after the cut
        elements begin new's, so the kept elements are equal type-exact without comparing them
        one by one (a sliding window keeps most of a long list). 0 when the bytes do not show one."""
        old, new = self.old, self.new
        at = 0
        for _ in range(_SHIFT_TRIES):
            try:
                at = old.index(new[0], at + 1, end_old)
            except ValueError:
                return 0
            kept = end_old - at
            if kept > end_new:
                continue
            if kept < at + end_new - kept:
                return 0  # later matches keep even less
            if _extends(known[0], len(dumps_as_stored(old[:at])), known[1]):
                return at
        return 0

    @staticmethod
    def _shift(seq: list[Any], start: int, end: int, other: list[Any], other_start: int, other_end: int) -> int:
        """The smallest ``cut`` > 0 such that seq[start+cut:end] begins other[other_start:other_end]
        and is at least as long as the edits it saves (0: none within a few tries)."""
        length, other_length = end - start, other_end - other_start
        at = start
        for _ in range(_SHIFT_TRIES):
            try:
                at = seq.index(other[other_start], at + 1, end)
            except ValueError:
                return 0
            cut = at - start
            kept = length - cut
            if kept > other_length:
                continue
            if kept >= cut + other_length - kept:
                if _run_length(seq, at, other, other_start, kept) == kept:
                    return cut
            else:
                return 0  # later matches keep even less
        return 0

    def remove(self, start: int, end: int) -> None:
        """Remove old[start:end], from the back."""
        path = self.path
        _spend(end - start)
        self.ops.extend({"op": "remove", "path": f"{path}/{i}"} for i in range(end - 1, start - 1, -1))

    def insert(self, at: int, start: int, end: int) -> None:
        """Insert new[start:end] at old's position ``at``."""
        path, new = self.path, self.new
        _spend(end - start)
        if at == len(self.old):  # nothing was removed before this: the end of the list as it stands
            self.ops.extend({"op": "add", "path": path + "/-", "value": new[j]} for j in range(start, end))
        else:
            self.ops.extend(
                {"op": "add", "path": f"{path}/{at + j - start}", "value": new[j]} for j in range(start, end)
            )

    def pair(self, i: int, j: int, count: int, *, first_unequal: bool = False) -> None:
        """Turn old[i:i+count] into new[j:j+count] element by element, at old's positions."""
        old, new, path = self.old, self.new, self.path
        done = 0
        while done < count:
            run = 0 if first_unequal and not done else _run_length(old, i + done, new, j + done, count - done)
            if run:
                self._confirm(i + done, j + done, run)
                done += run
            if done < count:  # a pair the run stopped at: unequal under ==
                self._replace(old[i + done], new[j + done], f"{path}/{i + done}")
                done += 1

    def _replace(self, old: Any, new: Any, where: str) -> None:
        """Diff an element paired with one that differs; replace it whole when most of it changed
        (paired by position, the two are often different items: a reordered inventory)."""
        found: list[Op] = []
        _diff_unequal(old, new, where, found)
        if len(found) > 1 and 2 * len(found) > len(new):
            self.ops.append({"op": "replace", "path": where, "value": new})
        else:
            self.ops.extend(found)

    def _confirm(self, i: int, j: int, count: int) -> None:
        """Find the lookalikes (1 / 1.0 / true, 0.0 / -0.0) in a run equal under ``==``, a chunk at a time."""
        old, new, path, ops = self.old, self.new, self.path, self.ops
        for offset in range(0, count, _CHUNK):
            size = min(_CHUNK, count - offset)
            a, b = i + offset, j + offset
            if not _same_bytes(old[a : a + size], new[b : b + size]):
                for k in range(size):
                    if not _same_bytes(old[a + k], new[b + k]):
                        _diff_lookalikes(old[a + k], new[b + k], f"{path}/{a + k}", ops)


# ---------------------------------------------------------------- apply


def apply_patch(doc: Any, patch: Any, *, in_place: bool = False, copy_values: bool = True) -> Any:
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
    Values the patch puts in the document are copies (the whole patch is copied
    once, up front), so later edits of the document never reach the patch;
    ``copy_values=False`` skips that copy, for a caller that parsed the patch
    for this call alone and gives its values away (a rebuild, a commit).

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
    if copy_values and patch:
        try:
            patch = orjson.loads(orjson.dumps(patch))
        except orjson.JSONEncodeError:
            return _apply_copying_each(doc, patch)  # finds which operation holds a value that is not JSON
    return _apply_all(doc, patch, _take)


def _apply_all(doc: Any, patch: list[Any], place: Any) -> Any:
    index = 0
    try:
        for index, op in enumerate(patch):  # noqa: B007 (names the failing operation)
            doc = _apply_one(doc, op, place)
    except PatchError as exc:
        raise _name_operation(exc, index, patch[index]) from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        # Not reachable by design; a safety net so callers only ever see PatchError.
        failure = PatchError(f"{type(exc).__name__}: {exc}", {"reason": "operation could not be applied"})
        raise _name_operation(failure, index, patch[index]) from exc
    return doc


def _apply_copying_each(doc: Any, patch: list[Any]) -> Any:
    return _apply_all(doc, patch, _copy_in)


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


def _take(value: Any) -> Any:
    """A value placed in the document as it is: the patch is the caller's to give away."""
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
            return actual == expected and _same_bytes(actual, expected)
        return not _scalar_differs(actual, expected, kind)
    except orjson.JSONEncodeError as exc:
        raise _refuse(f"the value is not JSON: {exc}", "value is not JSON") from None


def _apply_one(doc: Any, op: Any, place: Any) -> Any:
    if not isinstance(op, dict):
        raise _refuse(f"an operation must be an object, not {type(op).__name__}", "operation is not an object")
    kind = op.get("op", _MISSING)
    if kind is _MISSING:
        raise _refuse("the operation has no 'op' member", "missing 'op'")
    path = op.get("path", _MISSING)
    if path is _MISSING:
        raise _refuse("the operation has no 'path' member", "missing 'path'")
    tokens = parse_pointer(path)
    if kind == "add":
        return _add(doc, tokens, place(_member(op, "value")))
    if kind == "remove":
        _remove(doc, tokens)
        return doc
    if kind == "replace":
        value = place(_member(op, "value"))
        if not tokens:
            return value
        parent = _parent(doc, tokens)
        key = tokens[-1]
        if type(parent) is dict:
            if key not in parent:
                raise _refuse(f"no member {key!r} to replace", "path not found")
            parent[key] = value
        else:
            parent[_index(parent, key, len(parent) - 1)] = value
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


def _get(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        kind = type(doc)
        if kind is dict:
            child = doc.get(token, _MISSING)
            if child is _MISSING:
                raise _refuse(f"no member {token!r}", "path not found", location=token)
            doc = child
        elif kind is list:
            doc = doc[_index(doc, token, len(doc) - 1)]
        else:
            raise _refuse(f"cannot look up {token!r} inside a {kind.__name__}", "path goes through a scalar")
    return doc


def _parent(doc: Any, tokens: list[str]) -> Any:
    """The container holding the location ``tokens`` points to."""
    if len(tokens) > 1:
        doc = _get(doc, tokens[:-1])
    if type(doc) is not dict and type(doc) is not list:
        raise _refuse(f"cannot reach {tokens[-1]!r} inside a {type(doc).__name__}", "path goes through a scalar")
    return doc


def _index(array: list[Any], token: str, highest: int) -> int:
    """The position an array index token names, refused above ``highest``."""
    # RFC 6901: ASCII digits, no sign, no leading zero (str.isdigit alone would take '²' or '٣')
    if not (token.isdigit() and token.isascii()) or (token[0] == "0" and len(token) > 1):
        raise _refuse(f"{token!r} is not an array index", "bad array index")
    index = int(token) if len(token) < 20 else highest + 1  # (int() refuses over 4300 digits)
    if index > highest:
        raise _refuse(f"array index {index} is out of range (length {len(array)})", "array index out of range")
    return index


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    key = tokens[-1]
    if type(parent) is dict:
        parent[key] = value  # an existing member is replaced (RFC 6902, 4.1)
    elif key == "-":
        parent.append(value)
    else:
        parent.insert(_index(parent, key, len(parent)), value)
    return doc


def _remove(doc: Any, tokens: list[str]) -> None:
    if not tokens:
        raise _refuse("cannot remove the whole document", "cannot remove the root")
    parent = _parent(doc, tokens)
    key = tokens[-1]
    if type(parent) is dict:
        if key not in parent:
            raise _refuse(f"no member {key!r} to remove", "path not found")
        del parent[key]
    else:
        del parent[_index(parent, key, len(parent) - 1)]
