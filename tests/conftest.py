"""Shared fixtures. Each test session gets its own GENFORGE_HOME and PREFECT_HOME."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="genforge-tests-"))
os.environ["GENFORGE_HOME"] = str(_SESSION_HOME / "genforge")
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests import `helpers` and this module's TINY

# Small, fast settings for a whole molecule run (seconds on 2 cores).
TINY = [
    "data.max_molecules=300",
    "data.max_reference=200",
    "data.workers=1",
    "model.d_model=32",
    "model.n_heads=2",
    "model.n_layers=1",
    "train.max_steps=12",
    "train.max_minutes=null",
    "train.batch_size=16",
    "train.checkpoint_every=5",
    "train.log_every=2",
    "sample.n=40",
    "sample.steps=8",
    "evaluate.rdkit.grid=6",
    "evaluate.rdkit.max_reference=100",
    "evaluate.moses.max_reference=100",
]


def tiny_spec(*extra: str) -> dict:
    """TINY (plus ``extra`` overrides) as a spec tree, the shape a flow's ``spec`` parameter takes."""
    from genforge.core.config import apply_override, parse_override

    tree: dict = {}
    for item in [*TINY, *extra]:
        keys, value = parse_override(item)
        apply_override(tree, keys, value)
    return tree


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    """A fresh run store for one test."""
    monkeypatch.setenv("GENFORGE_HOME", str(tmp_path / "store"))
    return tmp_path / "store"


@pytest.fixture
def tiny() -> list[str]:
    return list(TINY)
