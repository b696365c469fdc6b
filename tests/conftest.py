"""Shared fixtures. Each test session gets its own GENFORGE_HOME and PREFECT_HOME."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from genforge.core.testing import overrides_from_spec

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="genforge-tests-"))
os.environ["GENFORGE_HOME"] = str(_SESSION_HOME / "genforge")
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests import `helpers` and this module's TINY



def _molecule_overrides() -> list[str]:
    """The molecule generator's tiny spec as --set overrides (imported only by the tests that run it)."""
    from genforge.plugins.healthcare.generator import MoleculeDiffusion

    return overrides_from_spec(MoleculeDiffusion.test_spec)


def __getattr__(name: str):  # `from conftest import TINY`, loaded on first use: the host's tests need no field library
    if name == "TINY":
        return _molecule_overrides()
    raise AttributeError(name)


def tiny_spec(*extra: str) -> dict:
    """TINY (plus ``extra`` overrides) as a spec tree, the shape a flow's ``spec`` parameter takes."""
    from genforge.core.config import apply_override, parse_override

    tree: dict = {}
    for item in [*_molecule_overrides(), *extra]:
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
    return _molecule_overrides()
