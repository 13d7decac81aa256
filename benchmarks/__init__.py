"""Benchmark harness for snapstore (not part of the installed package).

Run it from the repository root::

    python -m benchmarks.run --turns 1000

See docs/benchmarks.md for what each figure means.
"""
