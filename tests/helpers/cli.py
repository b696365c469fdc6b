"""The genforge command line called in this process (``genforge.flows.cli.invoke``), as the host's tests use it.

    r = genforge("run", "toy-gausian")
    assert r.code == 2 and r.stderr.startswith("error: unknown generator")

What a fresh process proves that this cannot (the console script's exit code, signals, imports)
is tested with real processes in tests/test_cli.py.
"""

from __future__ import annotations

from genforge.flows.cli import invoke as genforge  # noqa: F401


def sets(items: list[str]) -> list[str]:
    """``["a=1", "b=2"]`` -> ``["--set", "a=1", "--set", "b=2"]``."""
    return [a for item in items for a in ("--set", item)]
