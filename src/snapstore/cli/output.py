"""How the command line prints: tables and sizes for people, JSON and NDJSON for programs, progress on a terminal."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Collection
from typing import Any, TextIO

import orjson


def isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def use_color(stream: Any) -> bool:
    return isatty(stream) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def write_bytes(data: bytes) -> None:
    """Write raw bytes to stdout (JSON is always UTF-8, whatever the locale says)."""
    out = sys.stdout
    out.flush()
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        buffer.write(data)
        buffer.flush()
    else:  # a text-only stream (tests capturing output)
        out.write(data.decode("utf-8"))


#: what JSON may hold unescaped but a terminal acts on (DEL, the C1 controls: U+009B starts an
#: escape sequence), a reader takes for a line break (U+2028, U+2029), or a terminal lays out in
#: another order than the bytes (the bidirectional marks, embeddings, overrides and isolates: an
#: override reverses the rest of the line), in UTF-8
_TERMINAL_UNSAFE = re.compile(rb"\x7f|\xc2[\x80-\x9f]|\xe2\x80[\x8e\x8f\xa8-\xae]|\xe2\x81[\xa6-\xa9]|\xd8\x9c")


def _escape_unsafe(match: re.Match[bytes]) -> bytes:
    return b"\\u%04x" % ord(match.group().decode("utf-8"))


def json_text(value: Any, option: int = 0) -> bytes:
    """``value`` as JSON with sorted keys, its unsafe characters written as ``\\u`` escapes:
    the same JSON value, and nothing in it that drives a terminal."""
    data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | option)
    return _TERMINAL_UNSAFE.sub(_escape_unsafe, data)


def json_line(value: Any) -> None:
    write_bytes(json_text(value) + b"\n")


def compact(value: Any) -> str:
    return json_text(value).decode("utf-8")


def emit(args: argparse.Namespace, value: Any) -> bool:
    """Print ``value`` as ``--json`` or ``--ndjson`` asked; False when the output is for people.

    NDJSON prints each item of a list on its own line, and anything else as its one line.
    """
    mode = getattr(args, "output", None)
    if mode is None:
        return False
    if mode == "ndjson" and isinstance(value, list):
        write_bytes(b"".join(json_text(item) + b"\n" for item in value))
    else:
        json_line(value)
    return True


#: control characters (C0, DEL, C1) and the line and paragraph separators, as escapes: a label is
#: free text, and one holding a newline or a terminal's escape sequence must not break a line-per-
#: snapshot listing or drive the terminal
#: the bidirectional marks, embeddings, overrides and isolates: they reorder what a terminal shows of
#: the rest of a line (a table's columns, the names after them), whatever the bytes say
_BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_ESCAPED = (
    {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
    | {0x2028: "\\u2028", 0x2029: "\\u2029"}
    | {c: f"\\u{c:04x}" for c in _BIDI}
)


def one_line(text: str) -> str:
    """``text`` with its control characters written as escapes (``\\n`` as ``\\x0a``)."""
    return text.translate(_ESCAPED)


#: what a session or tag name may hold (they refuse C0 controls) that a terminal acts on (DEL, the
#: C1 controls: U+009B starts an escape sequence) or a reader takes for a line break
_NAME_ESCAPED = {c: _ESCAPED[c] for c in (*range(0x7F, 0xA0), 0x2028, 0x2029, *_BIDI)}


def shown(text: str) -> str:
    """``text`` as ``say`` prints it (for a table's column widths)."""
    return text.translate(_NAME_ESCAPED)


def say(text: str, stream: TextIO | None = None, end: str = "\n") -> None:
    """Print ``text`` for people (stdout, or ``stream``): the names in it are what users chose, and
    an archive from elsewhere brings its own, so what in them would drive the terminal is escaped,
    as ``one_line`` escapes a label. Line breaks of the text itself stay."""
    print(shown(text), file=stream, end=end)


def human(size: int | None) -> str:
    if size is None:
        return "?"
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{size} B"  # pragma: no cover


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def when(snapshot: Any) -> str:
    return str(snapshot.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"))


def table(rows: list[list[str]], right: Collection[int] = ()) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


class Progress:
    """Progress on stderr when stderr is a terminal; silent when it is piped or redirected.

    Call it as the library's ``progress(done, total, what)`` callback, or use
    ``status(text)`` for an operation that reports no steps.
    """

    def __init__(self, stream: TextIO | None = None, *, interval: float = 0.1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = isatty(self.stream)
        self.interval = interval
        self._last = 0.0
        self._shown = False

    def __call__(self, done: int, total: int | None, what: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if total and done < total and now - self._last < self.interval:
            return
        self._last = now
        if total:
            self._show(f"{what}: {done}/{total} ({100 * done // total}%)")
        else:
            self._show(f"{what}: {done}")

    def status(self, text: str) -> None:
        if self.enabled:
            self._show(text + "…")

    def _show(self, text: str) -> None:
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()
