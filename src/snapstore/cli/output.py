"""How the command line prints: tables and sizes for people, JSON and NDJSON for programs, progress on a terminal."""

from __future__ import annotations

import argparse
import os
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


def json_line(value: Any) -> None:
    write_bytes(orjson.dumps(value, option=orjson.OPT_SORT_KEYS) + b"\n")


def compact(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode("utf-8")


def emit(args: argparse.Namespace, value: Any) -> bool:
    """Print ``value`` as ``--json`` or ``--ndjson`` asked; False when the output is for people.

    NDJSON prints each item of a list on its own line, and anything else as its one line.
    """
    mode = getattr(args, "output", None)
    if mode is None:
        return False
    if mode == "ndjson" and isinstance(value, list):
        write_bytes(b"".join(orjson.dumps(item, option=orjson.OPT_SORT_KEYS) + b"\n" for item in value))
    else:
        json_line(value)
    return True


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
