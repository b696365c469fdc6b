"""The ``market`` evaluator: how realistic scenarios are, and how their risk forecasts backtest.

Against the held-out test period: marginals (Wasserstein-1 and KS of 1-, 5-, 20-day
returns, skew and kurtosis, VaR/ES), dependence (ACF scores of r, |r|, r²; leverage;
cross-asset correlation) and memorisation (nearest-neighbour distance to training windows
against that of test windows). Each metric's ``floor`` is the real test period scored as
if it were a generator: cut into scenarios as long as the generated ones, it shows what
sampling noise alone costs (short paths bias the ACF, for one). When the generator left a
``backtest.parquet`` beside its scenarios, its VaR/ES forecasts are scored too: hits,
Kupiec (coverage) and Christoffersen (independence) p-values and the FZ0 loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from pydantic import Field

from genforge.core import DataError, Evaluation, Evaluator, EvaluatorConfig, Metric, Reference, Samples
from genforge.core.kinds import Scenarios

from . import backtest, metrics, plots
from .data import wide_form

# name -> (higher is better?, what it is); names as score_paths returns them
PATH_METRICS: dict[str, tuple[bool | None, str]] = {
    "w1_1d": (False, "Wasserstein-1 of 1-day returns vs the test period (percent)"),
    "w1_5d": (False, "Wasserstein-1 of 5-day returns vs the test period"),
    "w1_20d": (False, "Wasserstein-1 of 20-day returns vs the test period"),
    "ks_1d": (False, "KS statistic of 1-day returns vs the test period"),
    "ks_5d": (False, "KS statistic of 5-day returns"),
    "ks_20d": (False, "KS statistic of 20-day returns"),
    "skew": (None, "skew of 1-day returns"),
    "kurtosis": (None, "excess kurtosis of 1-day returns"),
    "skew_rank": (None, "share of scenarios whose skew is below the test period's (0.5 ideal)"),
    "kurtosis_rank": (None, "share of scenarios whose excess kurtosis is below the test period's (0.5 ideal)"),
    "var_1": (None, "1-day VaR at 1 % (percent loss)"),
    "es_1": (None, "1-day expected shortfall at 1 %"),
    "var_5": (None, "1-day VaR at 5 %"),
    "es_5": (None, "1-day expected shortfall at 5 %"),
    "acf_r": (False, "ACF score of returns, ||ACF_test - mean ACF_scenarios|| over lags 1..acf_lags"),
    "acf_abs": (False, "ACF score of |returns| (volatility clustering)"),
    "acf_sq": (False, "ACF score of squared returns"),
    "acf_lags": (None, "lags in the ACF scores"),
    "leverage_fake": (None, "mean corr(r_t, r^2_{t+k}) over k = 1..5 (negative in equity markets)"),
    "leverage_real": (None, "the same on the test period"),
    "leverage_error": (False, "mean |difference| of the leverage curves, lags 1..5"),
    "correlation_error": (False, "mean |difference| of cross-asset correlations"),
    "nn_fake": (None, "median distance of scenario windows to their nearest training window"),
    "nn_test": (None, "the same for test windows"),
    "nn_ratio": (True, "nn_fake / nn_test: well below 1 means copies of the training data"),
}


class MarketConfig(EvaluatorConfig):
    max_scenarios: int = Field(
        10_000,
        ge=10,
        description="scenarios scored: those numbered below this (independent draws: a random subset); "
        "memory and time stay bounded at any sample.n (the sample step's own risk summary uses every scenario)",
    )
    max_lag: int = Field(100, ge=1, description="lags of the ACF scores")
    memorisation_window: int = Field(20, ge=2, description="days per window in the memorisation check")
    fan_chart_days: int = Field(250, ge=10, description="real days shown before the scenarios in the fan chart")
    seed: int = Field(0, ge=0)


class MarketEvaluator(Evaluator):
    name: ClassVar[str] = "market"
    kinds: ClassVar[tuple[str, ...]] = ("scenarios",)
    Config: ClassVar[type[MarketConfig]] = MarketConfig
    description: ClassVar[str] = (
        "stylised facts, tail risk and memorisation vs the test period; VaR/ES backtest (Kupiec, Christoffersen, FZ0)"
    )

    def evaluate(self, samples: Samples, reference: Reference, out_dir: Path, config: MarketConfig) -> Evaluation:
        kind = Scenarios()
        fake, assets = wide_form(kind.load(samples.path, scenarios=config.max_scenarios))
        test, test_assets = wide_form(kind.load(reference.test))
        if set(assets) == set(test_assets):  # same assets in another order
            fake = fake[..., [assets.index(a) for a in test_assets]]
        elif len(assets) != len(test_assets):
            raise DataError(
                f"the scenarios have {len(assets)} asset(s) ({', '.join(assets)}), the reference {len(test_assets)} ({', '.join(test_assets)})"
            )
        # otherwise other names for as many assets (asset0, ... from another tool): matched in order
        assets = test_assets
        test = test[0]
        train = wide_form(kind.load(reference.train))[0][0] if reference.train else None
        scores = metrics.score_paths(fake, test, train)
        floor = metrics.score_paths(test_windows(test, fake.shape[1], len(fake), config.seed), test, train)
        out = [
            Metric("scenarios", float(len(fake)), None, description="scenarios scored"),
            Metric("horizon", float(fake.shape[1]), None, description="days per scenario"),
        ]
        for name, value in scores.items():
            better, text = PATH_METRICS.get(name, (None, ""))
            out.append(Metric(name, float(value), better, _floor(floor.get(name)), text))
        out += horizon_risk_metrics(fake, assets)
        figures = self._figures(fake, test, assets, reference, out_dir, config, samples.meta.get("history_end"))
        table = samples.path.parent / backtest.FILENAME
        if table.exists():
            frame = pd.read_parquet(table)
            out += backtest_metrics(frame)
            figures["backtest"] = backtest_figure(frame, out_dir / "backtest.png")
        return Evaluation(self.name, out, figures)

    @staticmethod
    def _figures(
        fake: np.ndarray,
        test: np.ndarray,
        assets: list[str],
        reference: Reference,
        out_dir: Path,
        config: MarketConfig,
        history_end: str | None,
    ) -> dict[str, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        figures = {"tails": plots.tail_histograms(test[:, 0], fake[:, :, 0].ravel(), out_dir / "tails.png")}
        curves = metrics.acf_curves(test, fake, config.max_lag)
        if curves:  # one-day scenarios have no autocorrelation to draw
            figures["acf"] = plots.acf_plot(curves, out_dir / "acf.png")
        prices = reference.test.parent / "prices.parquet"  # a prepared folder keeps the prices beside the reference
        if prices.exists():
            figures["fan_chart"] = fan_chart(
                fake, pd.read_parquet(prices), assets[0], reference, out_dir / "fan_chart.png", config.fan_chart_days, history_end
            )
        return figures


def _floor(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def test_windows(test: np.ndarray, length: int, n: int, seed: int) -> np.ndarray:
    """The test period cut into up to ``n`` scenarios of ``length`` days (random starts), or whole when shorter."""
    if length >= len(test):
        return test[None]
    starts = np.random.default_rng(seed).choice(len(test) - length + 1, size=min(n, len(test) - length + 1), replace=False)
    return np.stack([test[s : s + length] for s in np.sort(starts)])


def horizon_risk_metrics(fake: np.ndarray, assets: list[str]) -> list[Metric]:
    """VaR and ES of the horizon P&L at 95 % and 99 % (equal-weight book when several assets): the desk's figures."""
    risks = backtest.horizon_risk(fake, assets)
    risk = risks[backtest.book(risks)]
    out = []
    for level, _ in backtest.LEVELS:
        var, es = risk[f"var_{level}"], risk[f"es_{level}"]
        out += [
            Metric(f"horizon_var_{level}", var, None, description=f"VaR {level} % of the {fake.shape[1]}-day P&L (percent log return)"),
            Metric(f"horizon_es_{level}", es, None, description=f"expected shortfall {level} % of the {fake.shape[1]}-day P&L"),
        ]
    return out


def backtest_metrics(frame: pd.DataFrame) -> list[Metric]:
    """Hits, Kupiec and Christoffersen p-values and FZ0 per horizon and level, for the book (the portfolio, or the one asset)."""
    book = backtest.book(frame["asset"])
    out = []
    for (h, alpha), part in frame[frame["asset"] == book].groupby(["horizon", "alpha"], sort=True):
        s = metrics.backtest_scores(part["realized"].to_numpy(), part["var"].to_numpy(), part["es"].to_numpy(), float(alpha))
        key = f"backtest_{int(h)}d_{alpha * 100:g}pct"
        days = len(part)
        out += [
            Metric(
                f"{key}_hits",
                s["hits"],
                None,
                description=f"{book}: days of {days} whose {int(h)}-day loss beat VaR {alpha:.0%} (expected {alpha * days:.1f})",
            ),
            Metric(f"{key}_kupiec_p", s["kupiec_p"], True, description="Kupiec unconditional coverage p-value (reject below 0.05)"),
            Metric(
                f"{key}_christoffersen_p",
                s["christoffersen_p"],
                True,
                description="Christoffersen independence p-value (reject below 0.05)",
            ),
            Metric(f"{key}_fz0", s["fz0"], False, description="FZ0 joint VaR/ES loss (lower is better)"),
        ]
    return out


def backtest_figure(frame: pd.DataFrame, out: Path) -> Path:
    book = backtest.book(frame["asset"])
    alpha = float(frame["alpha"].min())
    part = frame[(frame["asset"] == book) & (frame["horizon"] == frame["horizon"].min()) & (frame["alpha"] == alpha)]
    return plots.backtest_plot(pd.to_datetime(part["date"]).to_numpy(), part["realized"].to_numpy(), part["var"].to_numpy(), out, alpha)


def fan_chart(
    fake: np.ndarray, prices: pd.DataFrame, asset: str, reference: Reference, out: Path, days: int, history_end: str | None
) -> Path:
    """Scenario price paths of the first asset from the last real price they were given, over what happened next."""
    if history_end is None:  # scenarios from another tool: assume they start with the test period
        test_index = pd.read_parquet(reference.test.parent / "returns.parquet").query("split == 'test'").index
        history_end = str((test_index[0] - pd.Timedelta(days=1)).date())
    series = prices[asset].dropna()
    before = series[series.index <= pd.Timestamp(history_end)].iloc[-days:]
    start = float(before.iloc[-1])
    scenario_prices = start * np.exp(np.cumsum(fake[:, :, 0], axis=1) / 100)
    horizon = fake.shape[1]
    future = series[series.index > before.index[-1]].iloc[:horizon]
    return plots.fan_chart(
        before.index.to_numpy(),
        before.to_numpy(),
        scenario_prices,
        out,
        real_future=future.to_numpy() if len(future) == horizon else None,
        future_dates=future.index.to_numpy() if len(future) == horizon else None,
        title=f"{asset}: {len(fake)} scenarios of {horizon} days from {before.index[-1].date()}",
    )
