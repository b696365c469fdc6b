"""Fixtures of the healthcare plugin's tests: a fresh store (genforge.core.testing's) and the generator's tiny spec."""

from __future__ import annotations

import pytest

from genforge.core.testing import overrides_from_spec
from genforge.plugins.healthcare.generator import MoleculeDiffusion


@pytest.fixture
def store(genforge_home):
    return genforge_home


@pytest.fixture
def tiny() -> list[str]:
    return overrides_from_spec(MoleculeDiffusion.test_spec)
