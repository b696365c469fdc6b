"""genforge's finance plugin: market scenarios for risk.

Registered through the ``genforge`` entry-point group like any outside plugin: the
``scenario-gan`` generator and the textbook ``gaussian``, ``garch``, ``fhs`` (filtered
historical simulation) and ``bootstrap`` generators of the ``scenarios`` sample kind, the ``market`` evaluator (stylised facts,
tail risk, memorisation, the VaR/ES backtest), and the S&P 500 and NASDAQ series that
``arch`` ships as data sources.
"""

from genforge.core import hookimpl

from .data import SP500, Nasdaq
from .evaluator import MarketEvaluator
from .gan_generator import ScenarioGan
from .textbook_generators import BootstrapScenarios, FhsScenarios, GarchScenarios, GaussianScenarios


@hookimpl
def genforge_generators():
    return [ScenarioGan, GaussianScenarios, GarchScenarios, FhsScenarios, BootstrapScenarios]


@hookimpl
def genforge_evaluators():
    return [MarketEvaluator()]


@hookimpl
def genforge_datasets():
    return [SP500(), Nasdaq()]
