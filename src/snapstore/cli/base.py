"""What the entry point needs before any command runs: the names, the one error type, the flags' spelling.

Kept apart from the commands so that ``snapstore --help`` and usage errors load nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ENV_STORE = "SNAPSTORE_PATH"
DEFAULT_STORE = ".snapstore"
PROG = "snapstore"


class CliError(Exception):
    """An error to report as one line (plus optional detail lines) and exit 1."""

    def __init__(self, message: str, extra: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.extra = list(extra)


# the library's keyword arguments, as the command line spells them
_FLAGS = {"on_conflict": "--on-conflict", "max_snapshots": "--max-snapshots"}
_KEYWORD_VALUES = re.compile(r"\b(" + "|".join(_FLAGS) + r")=('[^']*'(?:(?:, | or )'[^']*')*|\S+)")


# the library's methods, as the command line does the same
_METHODS = [
    (re.compile(r"call set_max_snapshots\((\d+)\)"), r"commit with --max-snapshots \1 --force"),
    (re.compile(r"\bset_max_snapshots\b(?:\(\))?"), "--max-snapshots"),
    (re.compile(r" \(or SnapshotStore\.upgrade\([^)]*\)\)"), ""),
]


def speak_flags(message: str) -> str:
    """A library message, with ``on_conflict='merge' or 'rename'`` spelled ``--on-conflict merge or rename``
    and ``set_max_snapshots(3)`` spelled ``--max-snapshots 3 --force``."""

    def flag(match: re.Match[str]) -> str:
        return f"{_FLAGS[match.group(1)]} {match.group(2).replace(chr(39), '')}"

    message = _KEYWORD_VALUES.sub(flag, message)
    for pattern, spelling in _METHODS:
        message = pattern.sub(spelling, message)
    return message


def cli_message(error: Exception) -> str:
    """What the command line says for a library error: its message in the command line's words.

    An id that retention evicted gets the command line's ways of keeping snapshots, from the
    error's details rather than its text.
    """
    details = getattr(error, "details", None) or {}
    if details.get("reason") == "evicted" and "max_snapshots" in details:
        where = details.get("where", "its session")
        return (
            f"snapshot {details.get('snapshot')} is no longer retained in {where}: evicted by retention (the "
            f"session keeps its last {details['max_snapshots']} snapshots and its tagged ones) or by forget; to "
            "keep more, raise the limit with `snapstore commit SESSION FILE --max-snapshots N`, or tag a "
            "snapshot with `snapstore tag` so that retention keeps it"
        )
    return speak_flags(str(error))
