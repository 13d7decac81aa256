"""``python -m snapstore``: the same command line as the ``snapstore`` script."""

from .cli import console

raise SystemExit(console())
