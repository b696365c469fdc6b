"""The textbook scenario generators a risk desk would otherwise use: ``gaussian``, ``garch``, ``fhs`` and ``bootstrap``.

Each pairs a config of its model's settings with the ``ScenarioModel`` it fits (``textbook_models.py``);
everything else is the shared ``FinanceGenerator``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from genforge.core import Section

from .scenario_generator import FinanceConfig, FinanceGenerator
from .textbook_models import BootstrapModel, FilteredHistoricalModel, GarchModel, GaussianModel, ScenarioModel


class GaussianModelConfig(Section):
    mean: Literal["sample", "zero"] = Field("sample", description="the daily mean: the sample mean or zero")
    window: int | None = Field(None, ge=20, description="fit on the most recent this many days (None: all)")


class GaussianConfig(FinanceConfig):
    model: GaussianModelConfig = Field(default_factory=GaussianModelConfig)


class GaussianScenarios(FinanceGenerator):
    name: ClassVar[str] = "gaussian"
    Config: ClassVar[type[GaussianConfig]] = GaussianConfig
    description: ClassVar[str] = "independent days from a multivariate normal (the textbook baseline)"
    Model: ClassVar[type[ScenarioModel]] = GaussianModel


class GarchModelConfig(Section):
    vol: Literal["gjr", "garch"] = Field("gjr", description="GJR-GARCH(1,1,1) (leverage) or GARCH(1,1)")
    mean: Literal["zero", "sample"] = Field(
        "zero", description="zero or the sample mean (not arch's fitted constant, which overstates drift)"
    )


class GarchConfig(FinanceConfig):
    model: GarchModelConfig = Field(default_factory=GarchModelConfig)


class GarchScenarios(FinanceGenerator):
    name: ClassVar[str] = "garch"
    Config: ClassVar[type[GarchConfig]] = GarchConfig
    description: ClassVar[str] = "GJR-GARCH or GARCH with Student-t innovations (arch), constant conditional correlation"
    Model: ClassVar[type[ScenarioModel]] = GarchModel


class FhsScenarios(FinanceGenerator):
    name: ClassVar[str] = "fhs"
    Config: ClassVar[type[GarchConfig]] = GarchConfig
    description: ClassVar[str] = "filtered historical simulation: the GJR-GARCH filter with the fit window's own standardised residuals"
    Model: ClassVar[type[ScenarioModel]] = FilteredHistoricalModel


class BootstrapModelConfig(Section):
    window: int | None = Field(500, ge=20, description="resample the most recent this many days (None: all history)")
    block: float | None = Field(None, gt=0, description="mean block length in days (None: arch's optimal_block_length)")


class BootstrapConfig(FinanceConfig):
    model: BootstrapModelConfig = Field(default_factory=BootstrapModelConfig)


class BootstrapScenarios(FinanceGenerator):
    name: ClassVar[str] = "bootstrap"
    Config: ClassVar[type[BootstrapConfig]] = BootstrapConfig
    description: ClassVar[str] = "stationary block bootstrap of recent history (arch's optimal block length)"
    Model: ClassVar[type[ScenarioModel]] = BootstrapModel
