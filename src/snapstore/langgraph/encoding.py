"""How LangGraph values become JSON that snapstore diffs well, and come back unchanged.

A value is stored as a tree of JSON nodes:

* a JSON object is a ``dict`` whose keys are all strings, its values encoded the same way;
* a JSON array is always a tagged node: ``["L", e1, e2, ...]`` is a ``list`` of encoded
  elements (so a list that grows by appends grows by appends in the delta), and
  ``["S", type, payload]`` is one value written by the saver's serializer (``serde``), its
  bytes kept exactly as latin-1 text (one character per byte);
* strings, 64-bit integers, finite floats, booleans and ``None`` stand for themselves.

Only LangGraph's stock ``JsonPlusSerializer`` lets plain values and dicts stand for themselves,
because for them the result is exactly what that serializer would give back. Under any other
serializer (an ``EncryptedSerializer``, a custom one) every value except the list structure
goes through it, so encryption still covers every stored value.
"""

from __future__ import annotations

import math
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from ..errors import CorruptObjectError

LIST_TAG = "L"
SERIALIZED_TAG = "S"
#: deeper structure is handed to the serializer whole: snapstore caps nesting, and so should we
MAX_DEPTH = 48
_INT_RANGE = (-(2**63), 2**64 - 1)


def _plain_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: no JSON form
        return False
    return True


class ValueCodec:
    """Encodes values for a snapshot and decodes them back, through ``serde``."""

    def __init__(self, serde: SerializerProtocol) -> None:
        self.serde = serde
        self.inline = type(serde) is JsonPlusSerializer

    def encode(self, value: Any, depth: int = 0) -> Any:
        kind = type(value)
        if self.inline:
            if value is None or kind is bool:
                return value
            if kind is str:
                return value if _plain_text(value) else self.serialized(value)
            if kind is int:
                return value if _INT_RANGE[0] <= value <= _INT_RANGE[1] else self.serialized(value)
            if kind is float:
                return value if math.isfinite(value) else self.serialized(value)
            if kind is dict and depth < MAX_DEPTH and all(type(k) is str and _plain_text(k) for k in value):
                return {k: self.encode(v, depth + 1) for k, v in value.items()}
        if kind is list and depth < MAX_DEPTH:
            return [LIST_TAG, *(self.encode(v, depth + 1) for v in value)]
        return self.serialized(value)

    def serialized(self, value: Any) -> list[str]:
        type_name, data = self.serde.dumps_typed(value)
        return [SERIALIZED_TAG, type_name, data.decode("latin-1")]

    def decode(self, node: Any) -> Any:
        kind = type(node)
        if kind is list:
            if node and node[0] == LIST_TAG:
                return [self.decode(v) for v in node[1:]]
            if len(node) == 3 and node[0] == SERIALIZED_TAG:
                return self.serde.loads_typed((node[1], node[2].encode("latin-1")))
            raise CorruptObjectError(
                "a stored LangGraph value has an unknown array form",
                {"reason": "unknown value node", "node": repr(node)[:80]},
            )
        if kind is dict:
            return {k: self.decode(v) for k, v in node.items()}
        return node
