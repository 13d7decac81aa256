"""The ``snapstore`` command line (also ``python -m snapstore``).

A thin layer over the public library API, one module per group of commands
(``reading``, ``writing``, ``archives``, ``maintenance``): it parses arguments,
calls ``SnapshotStore`` and ``Session`` methods and prints what they return. It
holds no storage logic of its own, and it imports the storage engine only when
a command runs. See docs/cli.md for every command.

Exit codes: 0 success; 1 an error (one ``snapstore: error: ...`` line on
stderr) or problems found by ``verify``; 2 a usage error; 130 interrupted (Ctrl-C);
143 terminated (SIGTERM, handled by ``console``), what the command began undone as for Ctrl-C.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .. import __version__
from ..errors import AmbiguousSnapshotId, SnapshotError
from .base import ENV_STORE, PROG, CliError, cli_message
from .commands import COMMANDS, build_parser, handler

__all__ = ["COMMANDS", "CliError", "build_parser", "console", "main"]

EXIT_OK = 0
EXIT_ERROR = 1  # an error, or problems found by verify
EXIT_USAGE = 2  # bad arguments (argparse's own code)
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process the signal ended
EXIT_OUTPUT_CLOSED = 141  # 128 + SIGPIPE: what cat, seq or git give when their reader stops first


class _Terminated(BaseException):
    """SIGTERM (a service manager stopping the command, ``kill``), raised where the command is so
    that what it began is undone as for Ctrl-C: an import removes the sessions it was creating and
    the store it made, an export its temporary file."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated


def console() -> int:
    """The ``snapstore`` command as a process runs it (the console script, ``python -m snapstore``):
    ``main``, with SIGTERM handled as Ctrl-C is. Only a process's own entry point takes the signal
    over: an application calling ``main`` keeps its own handler."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return main()
    except _Terminated:  # before the command began, or after it ended: nothing to undo
        _error("terminated")
        return EXIT_TERMINATED


def _error(message: str, extra: Iterable[str] = ()) -> None:
    from .output import one_line

    # messages quote what they were given (a state's keys in a JSON Pointer, a pointer, a label):
    # escaped, so the error stays one line and nothing in it drives the terminal
    sys.stderr.write(f"{PROG}: error: {one_line(message)}\n")
    for line in extra:
        sys.stderr.write(one_line(line) + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__version__)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return _run(args)


#: the engine's modules, imported with the command's (``_run``): most of what a command imports later
_ENGINE = ("snapstore.store", "snapstore.archive", "snapstore.delta")
_STOPPING = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back while the command's modules are imported, and delivered as the
    block ends. Raised while Python compiles a module, or in the import system's own callbacks,
    ``KeyboardInterrupt`` is lost ("Exception ignored in ...") and the command went on to the end,
    exit status 0, where it must stop and undo what it began (130 or 143)."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a signal that came meanwhile is raised now


def _run(args: Any) -> int:
    # the PostgreSQL driver's pool logs each connection it could not make or had to drop; a command
    # says what failed in its own error line, and those lines (with no handler configured, Python
    # prints them bare) would bury it: --debug shows them. (logging is imported only then: it is a
    # few ms of every command's start.)
    target = getattr(args, "store", None) or os.environ.get(ENV_STORE) or ""
    if args.debug or not target.startswith(("postgresql://", "postgres://")):
        return _run_quietly(args)
    import logging

    driver = logging.getLogger("psycopg")
    level = driver.level
    driver.setLevel(logging.CRITICAL)
    try:
        return _run_quietly(args)
    finally:
        driver.setLevel(level)


def _run_quietly(args: Any) -> int:
    try:
        with _signals_held():
            command = handler(args.handler)
            for module in _ENGINE:
                importlib.import_module(module)
        return int(command(args))
    except KeyboardInterrupt:
        if args.debug:
            raise
        _error("interrupted")
        return EXIT_INTERRUPTED
    except _Terminated:
        if args.debug:
            raise
        _error("terminated")
        return EXIT_TERMINATED
    except BrokenPipeError:
        # the reader went away (snapstore log | head): stop quietly, with the code a shell gives a
        # command that SIGPIPE ended (not 1, which says this command failed: what it did stands)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_OUTPUT_CLOSED
    except CliError as exc:
        if args.debug:
            raise
        _error(exc.message, exc.extra)
        return EXIT_ERROR
    except AmbiguousSnapshotId as exc:
        if args.debug:
            raise
        from .common import open_existing, store_path
        from .references import ambiguous, describe_candidates

        try:  # the candidates' sessions, turns and labels, as the store-wide commands list them
            store = open_existing(store_path(args))
        except SnapshotError:
            store = None
        try:
            _error(ambiguous(exc), describe_candidates(store, exc))
        finally:
            if store is not None:
                store.close()
        return EXIT_ERROR
    except SnapshotError as exc:
        if args.debug:
            raise
        _error(cli_message(exc))  # the library's keyword arguments and methods, as this command line spells them
        return EXIT_ERROR
    except OSError as exc:
        if args.debug:
            raise
        _error(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        return EXIT_ERROR
