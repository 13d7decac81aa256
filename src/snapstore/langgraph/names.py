"""Session names for a thread's namespaces: readable in ``snapstore log``, unambiguous, within limits.

``langgraph:<thread>:<namespace>`` holds a namespace's checkpoints and
``langgraph-writes:<thread>:<namespace>`` its pending writes. Each part is percent-encoded
(``:``, ``/`` and ``.`` included), so the separators cannot occur inside it; a part too long for
snapstore's 200-character names is replaced by ``#`` and its xxh3-128 hash.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import quote, unquote_to_bytes

import xxhash

CHECKPOINTS_KIND = "langgraph"
WRITES_KIND = "langgraph-writes"
MAX_PART = 80


class LaneNames(NamedTuple):
    checkpoints: str
    writes: str


def name_part(text: str) -> str:
    raw = text.encode("utf-8", "surrogatepass")
    part = quote(raw, safe="").replace(".", "%2E")
    if len(part) > MAX_PART:
        return "#" + xxhash.xxh3_128_hexdigest(raw)
    return part


def thread_prefixes(thread_id: str) -> tuple[str, str]:
    """Name prefixes of every session of a thread (checkpoints, writes)."""
    part = name_part(thread_id)
    return f"{CHECKPOINTS_KIND}:{part}:", f"{WRITES_KIND}:{part}:"


def lane_names(thread_id: str, checkpoint_ns: str) -> LaneNames:
    checkpoints, writes = thread_prefixes(thread_id)
    ns = name_part(checkpoint_ns)
    return LaneNames(checkpoints + ns, writes + ns)


def parse_checkpoints_name(name: str) -> tuple[str | None, str | None] | None:
    """(thread id, namespace) of a checkpoints session's name, None for a part stored as a hash;
    None for a session that is not a checkpoints session."""
    kind, sep, rest = name.partition(":")
    thread, sep2, ns = rest.partition(":")
    if kind != CHECKPOINTS_KIND or not sep or not sep2:
        return None
    return _unpart(thread), _unpart(ns)


def _unpart(part: str) -> str | None:
    if part.startswith("#"):
        return None
    return unquote_to_bytes(part).decode("utf-8", "surrogatepass")
