"""``python -m snapstore``: the same command line as the ``snapstore`` script."""

from .cli import main

raise SystemExit(main())
