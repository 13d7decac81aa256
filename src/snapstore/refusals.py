"""Where a refused value stands in a state, and why it is refused: the JSON pointer every
``InvalidStateError`` about a state names.

The searches run only once a state has been refused, so they may walk it in Python. Those over a
state read containers through the base types' own methods, so no subclass's code runs while they
look; the one over a pydantic model asks pydantic, field by field, as its own serializer would.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable
from typing import Any

from .delta import escape_token, parse_pointer

#: orjson serializes at most this many nested containers
ORJSON_MAX_DEPTH = 254
_INT_RANGE = range(-(2**63), 2**64)  # what orjson writes: int64 and uint64
INT_RANGE_REASON = "integer outside the 64-bit range a state may hold (-2^63 … 2^64-1)"


def first_unrepresentable(root: Any) -> tuple[Any, str, str] | None:
    """(value, reason, pointer) of the first value in ``root`` that JSON cannot give back as it is
    (NaN, Infinity, a tuple, an enum that is not an int or a string, a UUID...), or None."""
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, enum.Enum) or not isinstance(node, (dict, list)):
            reason = _unrepresentable_leaf(node)
            if reason is not None:
                return node, reason, path
        elif isinstance(node, dict):
            stack.extend((child, f"{path}/{escape_token(key)}") for key, child in reversed(dict.items(node)))
        else:
            stack.extend((child, f"{path}/{index}") for index, child in reversed(list(enumerate(list.copy(node)))))
    return None


def _unrepresentable_leaf(node: Any) -> str | None:
    if isinstance(node, float):
        return None if math.isfinite(float.__float__(node)) else "NaN and Infinity have no JSON form"
    if isinstance(node, (str, int)) or node is None:  # bool is an int; IntEnum and StrEnum are kept as values
        return None
    if isinstance(node, tuple):
        return _tuple_reason(node)
    if isinstance(node, enum.Enum):
        return "enum members are not JSON; store their value"
    return f"type {type(node).__name__} is not JSON"


def _tuple_reason(node: tuple[Any, ...]) -> str:
    if type(node) is tuple:
        return "a tuple is not JSON; pass a list"
    return f"a tuple ({type(node).__name__}) is not JSON; pass a list"


def first_unserializable(root: Any, max_depth: int) -> tuple[Any, str, str] | None:
    """(value, reason, pointer) of the first value in ``root`` that orjson refuses to write, or None.

    ``max_depth`` is how many nested containers ``root`` may hold (orjson's limit less the
    levels kept spare); a cycle is refused where it passes that depth.
    """
    stack: list[tuple[Any, str, int]] = [(root, "", 0)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, dict):
            if depth >= max_depth:
                return _too_deep(root, node, where, max_depth)
            children = []
            for key, child in dict.items(node):
                if type(key) is not str:  # orjson refuses subclasses of str as keys too
                    return key, _key_reason(key), f"{where}/{_key_token(key)}"
                if _has_surrogate(key):
                    return key, "a key with a lone surrogate is not valid UTF-8", f"{where}/{escape_token(key)}"
                children.append((child, f"{where}/{escape_token(key)}", depth + 1))
            stack.extend(reversed(children))
        elif (isinstance(node, list) or type(node) is tuple) and not isinstance(node, enum.Enum):
            # orjson writes a tuple as an array (refused later, when it reads back as a list), but
            # refuses a tuple subclass (a namedtuple) outright: that one is a leaf refused here
            if depth >= max_depth:
                return _too_deep(root, node, where, max_depth)
            items = list.copy(node) if isinstance(node, list) else list(node)
            stack.extend((child, f"{where}/{index}", depth + 1) for index, child in reversed(list(enumerate(items))))
        else:
            reason = _unserializable_leaf(node)
            if reason is not None:
                return node, reason, where
    return None


def _too_deep(root: Any, node: Any, where: str, max_depth: int) -> tuple[Any, str, str]:
    """Why ``node``, past ``max_depth`` at ``where``, is refused: a container that holds itself is named
    where it first comes back, anything else as nested too deeply."""
    found = _first_return(root, "", where, _child)
    if found is not None:
        value, first, pointer = found
        return value, f"contains a cycle: the container at {first or 'the top level'} holds itself", pointer
    return node, f"nested too deeply: a state nests at most {max_depth} levels (orjson stops at 254)", where


def _child(value: Any, token: str) -> Any:
    return value[token] if isinstance(value, dict) else value[int(token)]


def _first_return(
    root: Any, at: str, path: str, child: Callable[[Any, str], Any]
) -> tuple[Any, str, str] | None:
    """Walking ``path`` (a pointer below ``at``) down from ``root``, the first container met again:
    (it, the pointer where it was first met, the pointer where it came back); None when none is."""
    seen: dict[int, str] = {id(root): at}
    value, pointer = root, at
    for token in parse_pointer(path[len(at) :]):
        value = child(value, token)
        pointer += "/" + escape_token(token)
        if isinstance(value, (dict, list, tuple)):
            if id(value) in seen:
                return value, seen[id(value)], pointer
            seen[id(value)] = pointer
    return None


def _unserializable_leaf(node: Any) -> str | None:
    if isinstance(node, enum.Enum):
        return None  # orjson writes its value; whether that reads back is checked later
    if isinstance(node, str):
        return "a string with a lone surrogate is not valid UTF-8" if _has_surrogate(node) else None
    if isinstance(node, tuple):
        return _tuple_reason(node)
    if isinstance(node, int):  # bool too
        return None if int.__int__(node) in _INT_RANGE else INT_RANGE_REASON
    if node is None or isinstance(node, float):
        return None
    if dataclasses.is_dataclass(node):
        return f"a dataclass ({type(node).__name__}) is not JSON; pass dataclasses.asdict() of it"
    if isinstance(node, (set, frozenset)):
        return f"a {type(node).__name__} is not JSON; pass a list"
    if isinstance(node, (bytes, bytearray, memoryview)):
        return f"{type(node).__name__} are not JSON; pass text (base64, say)"
    if type(node).__module__ == "datetime":
        return f"a {type(node).__name__} is not JSON; pass its isoformat() text"
    if type(node).__module__ in ("uuid", "orjson"):  # a UUID or a Fragment: orjson writes it
        return None
    return f"type {type(node).__name__} is not JSON"


def _key_reason(key: Any) -> str:
    if not isinstance(key, str):
        return f"object keys must be strings, not {type(key).__name__}"
    text = str.__str__(key)
    shown = repr(text if len(text) <= 80 else text[:80] + "...")
    return (
        f"object keys must be exactly str, not a subclass of it: key {shown} is a {type(key).__name__}; "
        "pass a plain str (an enum member's .value)"
    )


def _key_token(key: Any) -> str:
    """The reference token naming the member under a key that is not a string."""
    if isinstance(key, str):
        return escape_token(str.__str__(key))
    if key is None or type(key) in (int, float, bool):
        return escape_token(repr(key))
    return escape_token(f"<{type(key).__name__}>")  # (its own repr may run code, or be huge)


def _has_surrogate(text: str) -> bool:
    try:
        str.encode(text, "utf-8")
    except UnicodeEncodeError:
        return True
    return False


def unwritable_in_model(model: Any, pydantic: Any) -> str | None:
    """Where in a model the value pydantic cannot write as JSON stands, as a JSON Pointer into what
    it would have written; None when that cannot be said for sure. On the error path only.

    The field is the first one pydantic cannot write alone (its own serializers and settings
    apply). Within it, the pointer goes down through lists and through dicts whose keys are all
    strings (written as they are) to the first value pydantic cannot write; a dict with other keys,
    which pydantic rewrites, or one nested past what can be stored, ends it there."""
    try:
        return _place_in_model(model, pydantic)
    except Exception:  # a value's own methods failed while we looked: pydantic's message stands alone
        return None


def _place_in_model(model: Any, pydantic: Any) -> str | None:
    cls = type(model)
    if cls.__pydantic_decorators__.model_serializers:
        return None  # a serializer of its own writes whatever keys it likes
    computed = getattr(cls, "model_computed_fields", None)
    if not isinstance(computed, dict):  # pydantic before 2.10 has it on the instance only
        computed = model.model_computed_fields
    names = [*cls.model_fields, *computed, *(getattr(model, "__pydantic_extra__", None) or {})]
    for name in names:
        try:
            model.model_dump(mode="json", include={name})
            continue
        except ValueError:
            pass
        written = model.model_dump(mode="python", include={name})
        if len(written) != 1:
            return None
        ((key, value),) = written.items()
        if not isinstance(key, str):
            return None
        at = "/" + escape_token(key)
        found = _place_in_value(value, at, pydantic.TypeAdapter(Any).dump_python)
        # a cycle is looked for in the model's own values: the dump copies a container before it
        # reaches the one that holds itself, which would put the cycle a level too deep
        return _cycle_start(getattr(model, name, value), at, found, pydantic.BaseModel) if found != at else found
    return None


def _place_in_value(root: Any, at: str, to_jsonable: Any) -> str:
    """The pointer, from ``at``, of the first value in ``root`` that pydantic cannot write alone (see
    ``unwritable_in_model``); ``at`` itself when none is found below it."""
    stack: list[tuple[Any, str, int]] = [(root, at, 1)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, (dict, list, tuple)):
            if depth > ORJSON_MAX_DEPTH - 2:
                return path
            if isinstance(node, dict):
                if not all(isinstance(key, str) for key in node):
                    return path
                children = [(value, f"{path}/{escape_token(key)}") for key, value in node.items()]
            else:
                children = [(value, f"{path}/{index}") for index, value in enumerate(node)]
            stack.extend((child, where, depth + 1) for child, where in reversed(children))
            continue
        try:
            to_jsonable(node, mode="json")
        except (ValueError, TypeError):
            return path
    return at


def _cycle_start(root: Any, at: str, path: str, model_type: type) -> str:
    """Where a value nested past the limit at ``path`` first holds itself (the container a cycle
    comes back to, as a state's refusal names it), else ``path``: a cycle walked to the limit is a
    pointer of hundreds of levels that says nothing of where it is. ``root`` is the field's own
    value, walked through lists, dicts and models (by field name) as far as the pointer goes."""

    def child(value: Any, token: str) -> Any:
        if isinstance(value, model_type):
            return getattr(value, _field_written_as(value, token))
        return _child(value, token)

    try:
        found = _first_return(root, at, path, child)
    except (AttributeError, LookupError, ValueError, TypeError):  # an alias, or a value a serializer rewrote
        return path
    return path if found is None else found[1]


def _field_written_as(model: Any, token: str) -> str:
    """The field of ``model`` its dump writes under ``token``: under ``serialize_by_alias`` the
    field whose serialization alias (or alias) that is (two fields may even swap names), else the
    field of that name."""
    cls = type(model)
    if not cls.model_config.get("serialize_by_alias", False):
        return token
    for name, info in cls.model_fields.items():
        if (info.serialization_alias or info.alias or name) == token:
            return name
    return token
