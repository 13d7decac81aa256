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


def speak_flags(message: str) -> str:
    """A library message, with ``on_conflict='merge' or 'rename'`` spelled ``--on-conflict merge or rename``."""

    def flag(match: re.Match[str]) -> str:
        return f"{_FLAGS[match.group(1)]} {match.group(2).replace(chr(39), '')}"

    return _KEYWORD_VALUES.sub(flag, message)
