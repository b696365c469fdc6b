"""A quick pipeline runner for tests: the four steps in this process, no Prefect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy

from genforge.core.runner import create_run, run_all
from genforge.core.store import Run


def quick_run(
    generator: str,
    spec: dict[str, Any] | None = None,
    pm: pluggy.PluginManager | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    root: str | Path | None = None,
) -> Run:
    """Create a run of ``generator`` with ``spec`` (and ``--set``-style ``overrides``), run every step; returns the run."""
    run = create_run(generator, overrides=overrides, spec=spec or {}, pm=pm, root=root)
    run_all(run, pm)
    return Run(run.path)


def overrides_from_spec(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """A spec tree as ``--set`` overrides: ``{"train": {"max_steps": 12}}`` -> ``["train.max_steps=12"]``."""
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += overrides_from_spec(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={'null' if value is None else value}")
    return out
