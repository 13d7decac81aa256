"""Argument checks every engine applies before an argument reaches a path, a query or memory."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import SnapshotError
from ._framing import MAX_ENTRY
from .base import CONFIG_NAME

#: the largest config value (a format version, a few settings); larger is refused, never stored
MAX_CONFIG_VALUE = 4096


def check_config_name(name: str) -> str:
    if not isinstance(name, str) or not CONFIG_NAME.fullmatch(name):
        raise SnapshotError(f"invalid config name {name!r}", {"config": repr(name)})
    return name


def check_config_value(name: str, value: bytes) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise SnapshotError(f"config value {name} must be bytes, not {type(value).__name__}", {"config": name})
    value = bytes(value)
    if len(value) > MAX_CONFIG_VALUE:
        raise SnapshotError(
            f"config value {name} is {len(value)} bytes, more than {MAX_CONFIG_VALUE}",
            {"config": name, "size": len(value)},
        )
    return value


def entry_list(entries: Iterable[bytes]) -> list[bytes]:
    """The entries as bytes, refusing anything that is not bytes-like or too large to frame."""
    if isinstance(entries, (bytes, bytearray, memoryview, str)):
        # iterating a lone bytes object would give ints, a str characters: both a caller's mistake
        raise SnapshotError(
            "entries must be an iterable of bytes, not a single value", {"type": type(entries).__name__}
        )
    found: list[bytes] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, (bytes, bytearray, memoryview)):
            raise SnapshotError(f"entry {index} must be bytes, not {type(entry).__name__}", {"entry": index})
        data = bytes(entry)
        if len(data) > MAX_ENTRY:
            raise SnapshotError(
                f"entry {index} is {len(data)} bytes, more than {MAX_ENTRY}", {"entry": index, "size": len(data)}
            )
        found.append(data)
    return found


def check_position(position: int, what: str = "position") -> int:
    if type(position) is not int or position < 0:
        raise SnapshotError(f"invalid {what} {position!r}", {what: repr(position)})
    return position
