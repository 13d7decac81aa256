"""The ``snapstore`` command line (also ``python -m snapstore``).

A thin layer over the public library API, one module per group of commands
(``reading``, ``writing``, ``archives``, ``maintenance``): it parses arguments,
calls ``SnapshotStore`` and ``Session`` methods and prints what they return. It
holds no storage logic of its own, and it imports the storage engine only when
a command runs. See docs/cli.md for every command.

Exit codes: 0 success; 1 an error (one ``snapstore: error: ...`` line on
stderr) or problems found by ``verify``; 2 a usage error; 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from .. import __version__
from ..errors import AmbiguousSnapshotId, SnapshotError
from .base import PROG, CliError, cli_message
from .commands import COMMANDS, build_parser, handler

__all__ = ["COMMANDS", "CliError", "build_parser", "main"]

EXIT_OK = 0
EXIT_ERROR = 1  # an error, or problems found by verify
EXIT_USAGE = 2  # bad arguments (argparse's own code)
EXIT_INTERRUPTED = 130


def _error(message: str, extra: Iterable[str] = ()) -> None:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    for line in extra:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__version__)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(handler(args.handler)(args))
    except KeyboardInterrupt:
        if args.debug:
            raise
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (snapstore log | head): stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_ERROR
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
