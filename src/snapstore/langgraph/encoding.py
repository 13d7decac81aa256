"""How LangGraph values become JSON that snapstore diffs well, and come back unchanged.

A value is stored as a tree of JSON nodes:

* a JSON object is a ``dict`` whose keys are all strings, its values encoded the same way; in
  the graph's values (channels, pending writes) only one whose keys are already in sorted order
  (the order a JSON object is stored and read back in), so that every dict keeps its order;
* a JSON array is always a tagged node: ``["L", e1, e2, ...]`` is a ``list`` of encoded
  elements (so a list that grows by appends grows by appends in the delta), and
  ``["S", type, piece, piece, ...]`` is one value written by the saver's serializer (``serde``),
  its bytes kept exactly: the pieces alternate, starting with the first, between bytes as latin-1
  text (one character per byte) and runs of ``TEXT_RUN`` or more characters of UTF-8 text as that
  text (``serialized_pieces``);
* strings, 64-bit integers, finite floats, booleans and ``None`` stand for themselves.

Only LangGraph's stock ``JsonPlusSerializer`` lets plain values and dicts stand for themselves,
because for them the result is exactly what that serializer would give back. Under any other
serializer (an ``EncryptedSerializer``, a custom one) every value except the list structure
goes through it, so encryption still covers every stored value.
"""

from __future__ import annotations

import hashlib
import io
import math
import operator
import pickle
import re
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import BaseModel

from ..errors import CorruptObjectError

LIST_TAG = "L"
SERIALIZED_TAG = "S"
#: the stock serializer's type name for what it writes as msgpack
MSGPACK = "msgpack"
#: and for what it pickles, with ``pickle_fallback``, when msgpack cannot write it
PICKLE = "pickle"
#: a msgpack array of up to 2**32 - 1 elements, its length in the next four bytes (big-endian)
_ARRAY32 = b"\xdd"
#: a run of UTF-8 text inside serialized bytes at least this many characters long is stored as text
TEXT_RUN = 64
#: a run of text in bytes decoded with ``surrogateescape``, which gives every byte that is not UTF-8 as
#: U+DC80 to U+DCFF: found by the regex engine alone, so bytes that are mostly not text (a ciphertext,
#: a binary value) cost one scan, not a Python step per short run
_NOT_TEXT_CHAR = re.compile("[\udc80-\udcff]")
_TEXT_RUN = re.compile(f"(?<![^\udc80-\udcff])[^\udc80-\udcff]{{{TEXT_RUN},}}")  # (from a run's start only)
#: deeper structure is handed to the serializer whole: snapstore caps nesting, and so should we
MAX_DEPTH = 48
_INT_RANGE = (-(2**63), 2**64 - 1)
_PROTOCOL = pickle.HIGHEST_PROTOCOL


def _inline_keys(value: dict[Any, Any], keep_order: bool) -> bool:
    """Whether a dict may be stored as a JSON object: string keys with a JSON form and, when its
    order is to be kept, already in the order the store writes them (sorted; for such keys, code
    point order is their UTF-8 byte order). Another order would come back sorted, where the
    serializer keeps insertion order."""
    keys = list(value)
    return all(type(k) is str and _plain_text(k) for k in keys) and (not keep_order or keys == sorted(keys))


def _plain_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: no JSON form
        return False
    return True


Ciphertexts = dict[tuple[str, bytes], list[str]]


class Sealed:
    """A channel's ciphertexts in the checkpoint before, by their plaintext's digest, and the
    ones its new value uses.

    An ``EncryptedSerializer`` draws a fresh nonce at every call, so a message encrypted again
    at each step would be new bytes at each step and the message list would no longer diff as an
    append. A value whose plaintext is unchanged keeps its ciphertext instead: that tells a
    reader of the store no more than the delta already does (which elements did not change).
    """

    def __init__(self, previous: Ciphertexts | None = None) -> None:
        self.previous: Ciphertexts = previous or {}
        self.current: Ciphertexts = {}


class _NotPlain(Exception):
    pass


class _PlainPickler(pickle.Pickler):
    """Pickles exact builtins only: pickle calls ``reducer_override`` for every other object."""

    def reducer_override(self, obj: Any) -> Any:
        raise _NotPlain


#: what ``model_dump`` reads of a model: its fields, extra fields, private attributes (which a
#: computed field may use)
_MODEL_STATE = operator.attrgetter("__dict__", "__pydantic_extra__", "__pydantic_private__")


#: a kept serialization: (the model, its type, the pickle of its state then, the stored node)
Kept = tuple[Any, type, bytes, list[str]]


class Reuse:
    """The serialized models of a channel's last value, by object identity, to reuse for the
    same objects in the next value when they did not change.

    A message list's value at each step holds the same message objects as the step before, plus
    the new ones: serializing all of them again at every step costs O(N) serializer calls per
    step. A model is "unchanged" when it is the same object, of the same type, and its whole
    state (fields, extras, private attributes) pickles to the same bytes, with nothing in it
    but exact builtins (anything else is serialized again): an in-place change of any field, at
    any depth, or of a value's type (1 to 1.0) is a change. What the stock serializer writes
    for a pydantic model (``model_dump``) is a function of that state.
    """

    def __init__(self, previous: dict[int, Kept] | None = None) -> None:
        self.previous: dict[int, Kept] = previous or {}
        self.current: dict[int, Kept] = {}
        self._buffer = io.BytesIO()
        self._pickler = _PlainPickler(self._buffer, protocol=_PROTOCOL)

    def take(self, values: list[Any]) -> list[list[str] | None]:
        """For each value, the node kept for it if it is the same object and unchanged since."""
        # pickle's own dumps is the fast path; bytes equal to a plain-only pickle (``keep``) mean
        # the state is plain-only too (any other object writes opcodes a plain pickle never has)
        previous, current, dumps, state_of = self.previous, self.current, pickle.dumps, _MODEL_STATE
        out: list[list[str] | None] = []
        for value in values:
            kept = previous.get(id(value))
            if kept is not None and kept[0] is value and kept[1] is type(value):
                try:
                    unchanged = dumps(state_of(value), _PROTOCOL) == kept[2]
                except Exception:  # whatever a value's own pickling raises: it is serialized again
                    unchanged = False
                if unchanged:
                    current[id(value)] = kept
                    out.append(kept[3])
                    continue
            out.append(None)
        return out

    def keep(self, model: BaseModel, node: list[str]) -> None:
        fingerprint = self._fingerprint(model)
        if fingerprint is not None:
            self.current[id(model)] = (model, type(model), fingerprint, node)

    def keep_decoded(self, values: list[Any], nodes: list[Any]) -> None:
        """Keep the models of a list just decoded from ``nodes``. A node kept in ``previous`` (the
        same list object) holds a model of its type whose state pickled to its fingerprint: a model
        of that type decoded from it is kept with that fingerprint, its pickle not taken again (if
        it decoded to another state, the next ``take`` sees a change and serializes it again)."""
        current = self.current
        by_node = {id(kept[3]): kept for kept in self.previous.values()}
        for model, node in zip(values, nodes, strict=True):
            kind = type(model)
            before = by_node.get(id(node))
            if before is not None and before[1] is kind:
                fingerprint: bytes | None = before[2]
            elif isinstance(model, BaseModel):
                fingerprint = self._fingerprint(model)
            else:
                continue
            if fingerprint is not None:
                current[id(model)] = (model, kind, fingerprint, node)

    def _fingerprint(self, model: BaseModel) -> bytes | None:
        buffer = self._buffer
        buffer.seek(0)
        buffer.truncate()
        self._pickler.clear_memo()
        try:
            self._pickler.dump(_MODEL_STATE(model))
        except (_NotPlain, AttributeError, pickle.PicklingError, TypeError, ValueError, RecursionError):
            return None
        return buffer.getvalue()


class ValueCodec:
    """Encodes values for a snapshot and decodes them back, through ``serde``."""

    def __init__(self, serde: SerializerProtocol) -> None:
        self.serde = serde
        self.inline = type(serde) is JsonPlusSerializer
        self.encrypted = serde if isinstance(serde, EncryptedSerializer) else None
        inner = self.encrypted.serde if self.encrypted is not None else serde
        #: the serializer writes a list or a dict whole as msgpack, where a bytearray inside becomes
        #: bytes; the saver writes each element alone, so one inside is written as the bytes it reads as
        self.msgpack_whole = isinstance(inner, JsonPlusSerializer)
        #: and it pickles the whole when msgpack cannot write a part (``pickle_fallback``): a value with
        #: such a part is written whole too, or its other parts would come back as msgpack gives them
        self.pickles_whole = self.msgpack_whole and bool(getattr(inner, "pickle_fallback", False))

    def encode(
        self,
        value: Any,
        depth: int = 0,
        sealed: Sealed | None = None,
        reuse: Reuse | None = None,
        keep_order: bool = False,
    ) -> Any:
        """``value`` as a tree of JSON nodes. With ``keep_order`` (a channel's value, a pending
        write: the graph's data) a dict whose keys are not in sorted order is written by ``serde``
        whole, so that it comes back in its own order; without it (the checkpoint's own fields,
        its metadata: LangGraph reads them by key) it is stored as a JSON object, keys sorted."""
        kind = type(value)
        if self.inline:
            if value is None or kind is bool:
                return value
            if kind is str:
                return value if _plain_text(value) else self.serialized(value, sealed)
            if kind is int:
                return value if _INT_RANGE[0] <= value <= _INT_RANGE[1] else self.serialized(value, sealed)
            if kind is float:
                return value if math.isfinite(value) else self.serialized(value, sealed)
            if kind is dict and depth < MAX_DEPTH and _inline_keys(value, keep_order):
                members = {k: self.encode(v, depth + 1, sealed, reuse, keep_order) for k, v in value.items()}
                if not self.pickles_whole:
                    return members
                if depth == 0 and not keep_order:
                    return self._members_if_pickled(value, members)
                return self._whole_if_pickled(value, members, sealed)
            if reuse is not None and isinstance(value, BaseModel):
                node = self.serialized(value)
                reuse.keep(value, node)
                return node
        if kind is list and depth < MAX_DEPTH:
            if reuse is not None:
                taken = reuse.take(value)
                encoded = (
                    self.encode(v, depth + 1, sealed, reuse, keep_order) if node is None else node
                    for node, v in zip(taken, value, strict=True)
                )
                elements = [LIST_TAG, *encoded]
            else:
                elements = [LIST_TAG, *(self.encode(v, depth + 1, sealed, None, keep_order) for v in value)]
            if not self.pickles_whole:
                return elements
            return self._whole_if_pickled(value, elements, sealed)
        if depth and isinstance(value, bytearray) and self.msgpack_whole:
            value = bytes(value)  # as the serializer's msgpack writes one inside a list or dict
        return self.serialized(value, sealed)

    def _members_if_pickled(self, value: dict[str, Any], members: dict[str, Any]) -> dict[str, Any]:
        """``_whole_if_pickled`` for the checkpoint's own fields and its metadata, which stay a JSON
        object (LangGraph reads them by key, a filter reads the metadata's members, and ``snapstore
        log`` shows its step): when the serializer would have pickled the whole, every member that is
        not a plain JSON value (which pickle and msgpack give back alike) is pickled alone, as the
        whole pickle would have kept it."""
        if not any(_pickled(member) for member in members.values()):
            return members
        return {
            key: member if _plain_json(member) else [SERIALIZED_TAG, PICKLE, *serialized_pieces(pickle.dumps(alone))]
            for (key, member), alone in zip(members.items(), value.values(), strict=True)
        }

    def _whole_if_pickled(self, value: Any, node: Any, sealed: Sealed | None) -> Any:
        """``node``, the value's parts each written alone (an object's members, a list's elements);
        or, under a serializer that pickles what msgpack cannot write, the value written whole when a
        part was pickled: the serializer would have pickled the whole value, keeping what msgpack
        changes in its other parts (a tuple, a pydantic model's private attributes), and
        InMemorySaver gives them back so."""
        parts = node.values() if type(node) is dict else node[1:]
        if any(_pickled(part) for part in parts):
            return self.serialized(value, sealed)
        return node

    def serialized(self, value: Any, sealed: Sealed | None = None) -> list[str]:
        if self.encrypted is not None and sealed is not None:
            # EncryptedSerializer.dumps_typed, done in its two halves so the first can be looked up
            type_name, plain = self.encrypted.serde.dumps_typed(value)
            key = (type_name, hashlib.blake2b(plain, digest_size=32).digest())
            node = sealed.previous.get(key) or sealed.current.get(key)
            if node is None:
                cipher_name, data = self.encrypted.cipher.encrypt(plain)
                node = [SERIALIZED_TAG, f"{type_name}+{cipher_name}", data.decode("latin-1")]  # no text in it
            sealed.current[key] = node
            return node
        type_name, data = self.serde.dumps_typed(value)
        return [SERIALIZED_TAG, type_name, *serialized_pieces(data)]

    def ciphertexts(self, stored: Any) -> Ciphertexts:
        """The ciphertexts in a stored value, by plaintext digest (decrypting each once): what a
        process that reopens a thread reuses for its first checkpoint."""
        found: Ciphertexts = {}
        pending = [stored]
        while self.encrypted is not None and pending:
            node = pending.pop()
            if type(node) is dict:
                pending.extend(node.values())
            elif type(node) is list and node and node[0] == LIST_TAG:
                pending.extend(node[1:])
            elif _serialized(node) and "+" in node[1]:
                type_name, cipher_name = node[1].split("+", 1)
                plain = self.encrypted.cipher.decrypt(cipher_name, serialized_bytes(node))
                found[(type_name, hashlib.blake2b(plain, digest_size=32).digest())] = node
        return found

    def decode_kept(self, node: Any, reuse: Reuse) -> Any:
        """``decode``, keeping in ``reuse`` the models of a list as ``encode`` keeps those it
        serializes: a run that carries on from the value it was given reuses their nodes."""
        if not (type(node) is list and node and node[0] == LIST_TAG):
            return self.decode(node)
        elements = node[1:]
        out = [self.decode(element) for element in elements]
        reuse.keep_decoded(out, elements)
        return out

    def decode(self, node: Any) -> Any:
        kind = type(node)
        if kind is list:
            if node and node[0] == LIST_TAG:
                return self._decode_list(node[1:])
            if _serialized(node):
                return self.serde.loads_typed((node[1], serialized_bytes(node)))
            raise CorruptObjectError(
                "a stored LangGraph value has an unknown array form",
                {"reason": "unknown value node", "node": repr(node)[:80]},
            )
        if kind is dict:
            return {k: self.decode(v) for k, v in node.items()}
        return node

    def _decode_list(self, elements: list[Any]) -> list[Any]:
        """A list's elements; under the stock serializer, a list of values it wrote as msgpack (a
        message list) in one call: a msgpack array of their bytes decodes to what each would alone."""
        packed = _packed_bytes(elements) if self.inline and len(elements) > 1 else None
        if packed is not None:
            values = self.serde.loads_typed((MSGPACK, packed))
            if type(values) is list and len(values) == len(elements):
                return values
        return [self.decode(element) for element in elements]


def _packed_bytes(elements: list[Any]) -> bytes | None:
    """A msgpack array of a list's elements when every one is a value the stock serializer wrote
    as msgpack (None otherwise): the array's header, then ``serialized_bytes`` of each, with the
    latin-1 pieces that stand side by side (a message's last and the next one's first) encoded as
    one string, which halves the calls a long message list costs."""
    parts = [_ARRAY32 + len(elements).to_bytes(4, "big")]
    latin: list[str] = []
    for node in elements:
        if not (type(node) is list and len(node) >= 3 and node[0] == SERIALIZED_TAG and node[1] == MSGPACK):
            return None
        latin.append(node[2])
        for position in range(3, len(node)):
            if position % 2:  # a run of UTF-8 text
                parts.append("".join(latin).encode("latin-1"))
                parts.append(node[position].encode("utf-8"))
                latin = []
            else:
                latin.append(node[position])
    parts.append("".join(latin).encode("latin-1"))
    return b"".join(parts)


def _pickled(node: Any) -> bool:
    """Whether a stored node is a value the serializer pickled (``pickle_fallback``; encrypted or not)."""
    return _serialized(node) and node[1].split("+", 1)[0] == PICKLE


def _plain_json(node: Any) -> bool:
    """Whether a stored node is a string, number, boolean or null standing for itself."""
    return node is None or type(node) in (str, int, float, bool)


def _serialized(node: Any) -> bool:
    """Whether a stored node is one value written by ``serde``: ``["S", type, piece, ...]``."""
    return type(node) is list and len(node) >= 3 and node[0] == SERIALIZED_TAG


def serialized_pieces(data: bytes) -> list[str]:
    """Bytes ``serde`` wrote, as the pieces of their ``["S", type, ...]`` node: latin-1 text and
    UTF-8 text, alternating, the first always latin-1 (empty when the bytes open with text).

    A message's msgpack bytes as one latin-1 string hold characters above 127 (msgpack's own
    markers), and orjson parses such a string, and writes it again for the hash check, on its slow
    path, character by character; a long run of plain text on its own is copied. So a long tool
    result costs a reopened read a fraction of what it did, and ``snapstore show`` and ``diff``
    print its text as text. Any bytes go: what is not UTF-8 (``surrogateescape`` marks it) stays in
    the latin-1 pieces, with runs of text shorter than ``TEXT_RUN``."""
    if len(data) < TEXT_RUN or _mostly_not_text(data):
        return [data.decode("latin-1")]
    text = data.decode("utf-8", "surrogateescape")
    pieces: list[str] = []
    position = 0
    for run in _TEXT_RUN.finditer(text):
        pieces.append(_latin_1(text[position : run.start()]))
        pieces.append(run.group())
        position = run.end()
    if position < len(text) or not pieces:
        pieces.append(_latin_1(text[position:]))
    return pieces


def _mostly_not_text(data: bytes) -> bool:
    """Whether bytes open as a binary value or a ciphertext does, a quarter of their first bytes not
    UTF-8: searching them for runs of text would cost tens of ms a MiB to find none."""
    head = data[: 4 * TEXT_RUN].decode("utf-8", "surrogateescape")
    return len(_NOT_TEXT_CHAR.findall(head)) * 4 > len(head)


def _latin_1(text: str) -> str:
    """Decoded bytes (``surrogateescape``) as the latin-1 text of those bytes."""
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


def serialized_bytes(node: list[Any]) -> bytes:
    """The bytes of a ``["S", type, piece, ...]`` node (``serialized_pieces`` read back)."""
    if len(node) == 3:  # one latin-1 piece: every node the saver wrote before text runs were kept apart
        return node[2].encode("latin-1")
    return b"".join([piece.encode("utf-8" if position % 2 else "latin-1") for position, piece in enumerate(node[2:])])
