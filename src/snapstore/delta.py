"""Pure RFC 6902 JSON Patch: ``diff`` two JSON values and ``apply_patch`` to one. No I/O.

Why not jsonpatch's own ``make_patch`` and ``apply_patch``? Both compare
values with Python's ``==``, for which ``1 == 1.0 == True``: a change from
``1`` to ``1.0`` is not seen and a ``test`` of ``1`` passes against ``true``.
snapstore's states must round-trip type-exact, so equality here is equality
of canonical bytes. And ``make_patch`` walks the whole document in Python
(~19 ms on a 1.4 MB state); ``diff`` below compares whole subtrees by their
serialized bytes at C speed, descends only into the ones that differ, and
turns an append-only list (a transcript) into ``add .../-`` operations
without comparing its old elements one by one. jsonpatch stays the reference:
the tests check that it applies our patches to the same result.
"""

from __future__ import annotations

from difflib import SequenceMatcher
from typing import Any

import orjson

from .errors import PatchError

Op = dict[str, Any]

_SORT = orjson.OPT_SORT_KEYS
_dumps = orjson.dumps
_CONTAINERS = (dict, list)
_MISSING = object()


def _canon(value: Any) -> bytes:
    return _dumps(value, option=_SORT)


def escape_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def format_pointer(tokens: list[str]) -> str:
    """JSON Pointer text for a list of reference tokens (``[]`` is the root, ``""``)."""
    return "".join("/" + escape_token(t) for t in tokens)


def parse_pointer(path: Any) -> list[str]:
    """Reference tokens of a JSON Pointer; ``PatchError`` when it is not one."""
    if not isinstance(path, str):
        raise PatchError(f"JSON Pointer must be a string, not {type(path).__name__}", {"path": repr(path)})
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON Pointer {path!r} must start with '/'", {"path": path})
    tokens = path[1:].split("/")
    out = []
    for token in tokens:
        i = token.find("~")
        while i != -1:
            if i + 1 >= len(token) or token[i + 1] not in "01":
                raise PatchError(f"JSON Pointer {path!r} has a bad '~' escape", {"path": path})
            i = token.find("~", i + 2)
        out.append(token.replace("~1", "/").replace("~0", "~"))
    return out


# ---------------------------------------------------------------- diff


def diff(old: Any, new: Any) -> list[Op]:
    """RFC 6902 operations turning ``old`` into ``new``, comparing values type-exact.

    Values inside the returned operations may be the very objects of ``new``
    (not copies): serialize the patch before ``new`` changes.
    """
    ops: list[Op] = []
    _diff(old, new, "", ops, None, None)
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
    for key in old:
        if key not in new:
            ops.append({"op": "remove", "path": "/" + escape_token(key)})
    for key, nval in new.items():
        child = "/" + escape_token(key)
        if key not in old:
            ops.append({"op": "add", "path": child, "value": nval})
            continue
        ob, nb = old_pieces[key], new_pieces[key]
        if ob != nb:
            _diff_element(old[key], nval, child, ops, ob, nb)
    return ops


def _diff(old: Any, new: Any, path: str, ops: list[Op], old_bytes: bytes | None, new_bytes: bytes | None) -> None:
    told, tnew = type(old), type(new)
    if told is dict and tnew is dict:
        _diff_dict(old, new, path, ops)
    elif told is list and tnew is list:
        if old_bytes is None:
            old_bytes, new_bytes = _canon(old), _canon(new)
            if old_bytes == new_bytes:
                return
        _diff_list(old, new, path, ops, old_bytes, new_bytes)  # type: ignore[arg-type]
    elif told is not tnew or old != new or (told is float and _canon(old) != _canon(new)):
        ops.append({"op": "replace", "path": path, "value": new})


def _diff_dict(old: dict[str, Any], new: dict[str, Any], path: str, ops: list[Op]) -> None:
    if len(old) > len(new) or any(key not in new for key in old):
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": path + "/" + escape_token(key)})
    missing = _MISSING
    for key, nval in new.items():
        oval = old.get(key, missing)
        tnew = type(nval)
        if tnew is type(oval):
            if tnew is dict or tnew is list:
                ob, nb = _canon(oval), _canon(nval)
                if ob == nb:
                    continue
                child = path + "/" + escape_token(key)
                if tnew is dict:
                    _diff_dict(oval, nval, child, ops)
                else:
                    _diff_list(oval, nval, child, ops, ob, nb)
                continue
            if oval == nval and (tnew is not float or nval != 0.0 or _canon(oval) == _canon(nval)):
                continue  # equal floats differ only as 0.0 and -0.0
        ops.append(
            {"op": "add" if oval is missing else "replace", "path": path + "/" + escape_token(key), "value": nval}
        )


def _diff_list(old: list[Any], new: list[Any], path: str, ops: list[Op], ob: bytes, nb: bytes) -> None:
    n_old, n_new = len(old), len(new)
    # Append-only: the new list's bytes continue the old list's bytes after a ','.
    # Elements are self-delimiting JSON, so an equal prefix followed by ',' means equal elements.
    if n_new > n_old and (
        n_old == 0 or (len(nb) > len(ob) and nb[len(ob) - 1] == 0x2C and nb.startswith(memoryview(ob)[:-1]))
    ):
        for value in new[n_old:]:
            ops.append({"op": "add", "path": path + "/-", "value": value})
        return
    old_keys = [_canon(v) for v in old]
    new_keys = [_canon(v) for v in new]
    start = 0
    limit = min(n_old, n_new)
    while start < limit and old_keys[start] == new_keys[start]:
        start += 1
    end_old, end_new = n_old, n_new
    while end_old > start and end_new > start and old_keys[end_old - 1] == new_keys[end_new - 1]:
        end_old -= 1
        end_new -= 1
    if end_old - start == end_new - start:
        for i in range(start, end_old):
            _diff_element(old[i], new[i], f"{path}/{i}", ops, old_keys[i], new_keys[i])
        return
    # Different lengths in the middle: match elements, emit edits from the back so indices hold.
    matcher = SequenceMatcher(None, old_keys[start:end_old], new_keys[start:end_new], autojunk=False)
    edits: list[tuple[str, int, int, int, int]] = [
        (tag, i1 + start, i2 + start, j1 + start, j2 + start)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if tag != "equal"
    ]
    # Applying from the back keeps every earlier index valid; new-side indices are then the
    # old-side ones shifted by the edits before them, which are still untouched: j1 - i1 offset
    # is not needed because we address positions on the old side only.
    for tag, i1, i2, j1, j2 in reversed(edits):
        paired = min(i2 - i1, j2 - j1) if tag == "replace" else 0
        for k in range(paired):
            _diff_element(old[i1 + k], new[j1 + k], f"{path}/{i1 + k}", ops, old_keys[i1 + k], new_keys[j1 + k])
        for i in range(i2 - 1, i1 + paired - 1, -1):
            ops.append({"op": "remove", "path": f"{path}/{i}"})
        for offset, j in enumerate(range(j1 + paired, j2)):
            ops.append({"op": "add", "path": f"{path}/{i1 + paired + offset}", "value": new[j]})


def _diff_element(old: Any, new: Any, path: str, ops: list[Op], ob: bytes, nb: bytes) -> None:
    if ob == nb:
        return
    told = type(old)
    if told is type(new) and told is dict:
        _diff_dict(old, new, path, ops)
    elif told is type(new) and told is list:
        _diff_list(old, new, path, ops, ob, nb)
    else:
        ops.append({"op": "replace", "path": path, "value": new})


# ---------------------------------------------------------------- apply


def apply_patch(doc: Any, patch: Any, *, in_place: bool = False) -> Any:
    """Apply RFC 6902 operations; returns the result (the root itself may be replaced).

    With ``in_place=False`` the input is left untouched. ``test`` compares
    canonical bytes, so ``1`` does not equal ``1.0`` or ``true``.
    """
    if not isinstance(patch, list):
        raise PatchError("a JSON Patch must be a list of operations", {"type": type(patch).__name__})
    if not in_place:
        doc = orjson.loads(_dumps(doc))
    for index, op in enumerate(patch):
        try:
            doc = _apply_one(doc, op)
        except PatchError as exc:
            exc.details.setdefault("index", index)
            exc.details.setdefault("op", _short(op))
            raise
    return doc


def _short(op: Any) -> Any:
    if isinstance(op, dict):
        return {k: v for k, v in op.items() if k != "value"}
    return repr(op)[:80]


def _copy(value: Any) -> Any:
    if type(value) in _CONTAINERS:
        return orjson.loads(_dumps(value))
    return value


def _member(op: dict[str, Any], name: str) -> Any:
    if name not in op:
        raise PatchError(f"operation {op.get('op')!r} needs a {name!r} member", {"missing": name})
    return op[name]


def _apply_one(doc: Any, op: Any) -> Any:
    if not isinstance(op, dict):
        raise PatchError("each operation must be an object", {"type": type(op).__name__})
    kind = _member(op, "op")
    tokens = parse_pointer(_member(op, "path"))
    if kind == "add":
        return _add(doc, tokens, _copy(_member(op, "value")))
    if kind == "remove":
        _remove(doc, tokens)
        return doc
    if kind == "replace":
        value = _copy(_member(op, "value"))
        if not tokens:
            return value
        parent, key = _locate(doc, tokens)
        if isinstance(parent, dict):
            if key not in parent:
                raise PatchError(f"cannot replace missing member {op['path']!r}", {"path": op["path"]})
            parent[key] = value
        else:
            parent[_index(parent, key, op["path"], allow_end=False)] = value
        return doc
    if kind == "test":
        expected = _member(op, "value")
        actual = _get(doc, tokens, op["path"])
        try:
            same = _canon(actual) == _canon(expected)
        except (TypeError, orjson.JSONEncodeError):
            same = False
        if not same:
            raise PatchError(f"test failed at {op['path']!r}", {"path": op["path"]})
        return doc
    if kind in ("move", "copy"):
        from_tokens = parse_pointer(_member(op, "from"))
        if kind == "move":
            if tokens[: len(from_tokens)] == from_tokens and len(tokens) > len(from_tokens):
                raise PatchError(
                    f"cannot move {op['from']!r} into its own child {op['path']!r}",
                    {"from": op["from"], "path": op["path"]},
                )
            if tokens == from_tokens:
                _get(doc, from_tokens, op["from"])
                return doc
            value = _get(doc, from_tokens, op["from"])
            _remove(doc, from_tokens)
            return _add(doc, tokens, value)
        return _add(doc, tokens, _copy(_get(doc, from_tokens, op["from"])))
    raise PatchError(f"unknown operation {kind!r}", {"op_name": repr(kind)})


def _locate(doc: Any, tokens: list[str]) -> tuple[Any, str]:
    """The container holding the last token, and that token."""
    node = doc
    for depth, token in enumerate(tokens[:-1]):
        node = _step(node, token, tokens, depth)
    if not isinstance(node, (dict, list)):
        raise PatchError(
            f"{format_pointer(tokens[:-1]) or 'the root'} is not a container", {"path": format_pointer(tokens)}
        )
    return node, tokens[-1]


def _step(node: Any, token: str, tokens: list[str], depth: int) -> Any:
    where = format_pointer(tokens[: depth + 1])
    if isinstance(node, dict):
        if token not in node:
            raise PatchError(f"path {where!r} does not exist", {"path": format_pointer(tokens)})
        return node[token]
    if isinstance(node, list):
        return node[_index(node, token, where, allow_end=False)]
    raise PatchError(f"path {where!r} goes through a scalar", {"path": format_pointer(tokens)})


def _get(doc: Any, tokens: list[str], path: str) -> Any:
    node = doc
    for depth, token in enumerate(tokens):
        node = _step(node, token, tokens, depth)
    return node


def _index(array: list[Any], token: str, path: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(array)
    if not token.isdigit() or not token.isascii() or (len(token) > 1 and token[0] == "0"):
        raise PatchError(f"{token!r} is not an array index (in {path!r})", {"path": path})
    index = int(token)
    if index > len(array) or (index == len(array) and not allow_end):
        raise PatchError(f"array index {index} is out of range (in {path!r})", {"path": path})
    return index


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, key = _locate(doc, tokens)
    if isinstance(parent, dict):
        parent[key] = value
    else:
        parent.insert(_index(parent, key, format_pointer(tokens), allow_end=True), value)
    return doc


def _remove(doc: Any, tokens: list[str]) -> None:
    path = format_pointer(tokens)
    if not tokens:
        raise PatchError("cannot remove the whole document", {"path": path})
    parent, key = _locate(doc, tokens)
    if isinstance(parent, dict):
        if key not in parent:
            raise PatchError(f"cannot remove missing member {path!r}", {"path": path})
        del parent[key]
    else:
        del parent[_index(parent, key, path, allow_end=False)]
