"""The ``market`` evaluator: how realistic scenarios are, and how their risk forecasts backtest.

Against the held-out test period: marginals (Wasserstein-1 and KS of 1-, 5-, 20-day
returns, skew and kurtosis, VaR/ES), dependence (ACF scores of r, |r|, r²; leverage;
cross-asset correlation) and memorisation (nearest-neighbour distance to training windows
against that of test windows). Each metric's ``floor`` is the real test period scored as
if it were a generator: cut into scenarios as long as the generated ones, it shows what
sampling noise alone costs (short paths bias the ACF, for one). When the generator left a
``backtest.parquet`` beside its scenarios, its VaR/ES forecasts are scored too: hits,
Kupiec (coverage), Christoffersen (independence) and conditional-coverage p-values, the FZ0
loss with its Monte-Carlo standard error, the Basel traffic-light zone and Acerbi-Székely's
Z2 test of ES. The report's head is the desk's one page (``risk_report``): the as-of date,
the book, VaR/ES in money and percent, the backtest's zone and tests, the model and data.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from pydantic import Field

from genforge.core import DataError, Evaluation, Evaluator, EvaluatorConfig, Metric, Reference, Samples
from genforge.core.kinds import Scenarios

from . import backtest, metrics, plots, risk
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
        own_names = list(assets)  # the samples' names, in the order their weights are looked up by
        test, test_assets = wide_form(kind.load(reference.test))
        if set(assets) == set(test_assets):  # same assets in another order
            fake = fake[..., [assets.index(a) for a in test_assets]]
            own_names = list(test_assets)
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
        book = samples.meta.get("book") or {}
        weights = [float((book.get("weights") or {}).get(a, 0.0)) for a in own_names] if book.get("weights") else None
        out += horizon_risk_metrics(fake, assets, weights)
        figures = self._figures(fake, test, assets, reference, out_dir, config, samples.meta.get("history_end"))
        table = samples.path.parent / backtest.FILENAME
        draws_path = samples.path.parent / backtest.DRAWS
        frame = None
        if table.exists():
            frame = pd.read_parquet(table)
            draws = pd.read_parquet(draws_path) if draws_path.exists() else None
            out += backtest_metrics(frame, draws, seed=config.seed)
            figures["backtest"] = backtest_figure(frame, out_dir / "backtest.png")
        fits_path = samples.path.parent / "fits.json"
        fits = json.loads(fits_path.read_text()) if fits_path.exists() else []
        from .scenario_generator import fit_warnings

        notes = fit_warnings(fits)
        headline = ""
        if has_desk_figures(samples.meta):  # samples of this version's sample step (not another tool's, nor an older run's)
            headline = risk_report(samples.meta, out, fits, reference, out_dir)
        return Evaluation(self.name, out, figures, notes=notes, headline=headline)

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


def horizon_risk_metrics(fake: np.ndarray, assets: list[str], weights=None) -> list[Metric]:
    """VaR and ES of the book's horizon return at 95, 97.5 and 99 % (simple returns, percent of the book's value): the desk's figures."""
    risks = backtest.pnl_risk(backtest.horizon_pnl(fake), assets, weights)
    name = backtest.book(risks)
    row = risks[name]
    out = []
    for level, _ in backtest.LEVELS:
        days = fake.shape[1]
        out += [
            Metric(
                f"horizon_var_{level}", row[f"var_{level}"], None, description=f"VaR {level} % of the {days}-day return of {name} (percent)"
            ),
            Metric(
                f"horizon_es_{level}",
                row[f"es_{level}"],
                None,
                description=f"expected shortfall {level} % of the {days}-day return of {name}",
            ),
        ]
    return out


def backtest_metrics(frame: pd.DataFrame, draws: pd.DataFrame | None = None, seed: int = 0) -> list[Metric]:
    """The backtest's scores per horizon and level, for the book (or the one asset's position), with their Monte-Carlo errors.

    Hits, Kupiec, Christoffersen and conditional-coverage p-values, FZ0; the standard errors of hits and FZ0 that
    drawing the forecasts (not the market) causes (0 for exact forecasts); for the one-day 1 % VaR the exceptions of
    the last 250 days and their Basel zone (0 green, 1 yellow, 2 red); with the null draws, Acerbi-Székely's Z2 and
    its simulated p-value.
    """
    book = backtest.book(frame["asset"])
    out = []
    for (h, alpha), part in frame[frame["asset"] == book].groupby(["horizon", "alpha"], sort=True):
        part = part.sort_values("date")
        y, var, es = (part[c].to_numpy() for c in ("realized", "var", "es"))
        ses = [part[c].to_numpy() if c in part else np.zeros(len(part)) for c in ("var_se", "es_se", "var_es_cov")]
        s = metrics.backtest_scores(y, var, es, float(alpha))
        key = f"backtest_{int(h)}d_{alpha * 100:g}pct"
        days = len(part)
        out += [
            Metric(
                f"{key}_hits",
                s["hits"],
                None,
                description=f"{book}: days of {days} whose {int(h)}-day loss beat VaR {alpha:.1%} (expected {alpha * days:.1f})",
            ),
            Metric(f"{key}_hits_se", risk.hits_se(y, var, ses[0]), None, description="Monte-Carlo standard error of the hits"),
            Metric(f"{key}_kupiec_p", s["kupiec_p"], True, description="Kupiec unconditional coverage p-value (reject below 0.05)"),
            Metric(
                f"{key}_christoffersen_p",
                s["christoffersen_p"],
                True,
                description="Christoffersen independence p-value (reject below 0.05)",
            ),
            Metric(f"{key}_cc_p", s["cc_p"], True, description="conditional coverage p-value, LR_uc + LR_ind ~ χ²₂ (reject below 0.05)"),
            Metric(f"{key}_fz0", s["fz0"], False, description="FZ0 joint VaR/ES loss (lower is better)"),
            Metric(
                f"{key}_fz0_se",
                risk.fz0_se(y, var, es, *ses, float(alpha)),
                None,
                description="Monte-Carlo standard error of the FZ0 loss (delta method; 0 for exact forecasts)",
            ),
        ]
        if int(h) == 1 and np.isclose(alpha, 0.01) and days >= 250:
            exceptions = int((y[-250:] <= -var[-250:]).sum())
            zone = [z for _, z in risk.BASEL_ZONES].index(risk.basel_zone(exceptions))
            out += [
                Metric(f"{key}_exceptions_250d", exceptions, None, description="exceptions of the one-day 99 % VaR in the last 250 days"),
                Metric(
                    f"{key}_basel_zone", zone, None, description="Basel traffic light of those: 0 green (0-4), 1 yellow (5-9), 2 red (10+)"
                ),
            ]
        if draws is not None:
            null = draws[(draws["asset"] == book) & (draws["horizon"] == h)].set_index("date").reindex(part["date"])
            if not null["draws"].isna().any():
                z2, p = risk.acerbi_szekely_z2(y, var, es, float(alpha), np.stack(null["draws"].to_numpy()), seed=seed)
                out += [
                    Metric(f"{key}_es_z2", z2, None, description="Acerbi-Székely Z2 of the ES forecasts (0 ideal; negative: ES too small)"),
                    Metric(f"{key}_es_z2_p", p, True, description="its p-value, simulated from the forecasts (reject below 0.05)"),
                ]
    return out


def has_desk_figures(meta: dict) -> bool:
    """Whether the sample step recorded what the one-page report needs: the book and every level's VaR/ES with its error."""
    risks, book = meta.get("risk") or {}, meta.get("book") or {}
    if not risks or book.get("value") is None:
        return False
    row = risks[backtest.book(risks)]
    return all(f"{m}_{lv}{x}" in row for lv, _ in backtest.LEVELS for m in ("var", "es") for x in ("", "_se", "_money"))


def risk_report(meta: dict, scores: list[Metric], fits: list[dict], reference: Reference, out_dir: Path) -> str:
    """The desk's one page: markdown for the report's head, and the same figures as ``risk_report.csv`` in ``out_dir``."""
    book = meta.get("book") or {}
    currency, value = book.get("currency", ""), book.get("value")
    risks = meta["risk"]
    name = backtest.book(risks)
    row = risks[name]
    horizon = meta.get("horizon")
    weights = ", ".join(f"{a} {w:.1%}" for a, w in (book.get("weights") or {}).items())
    data_version = reference.test.parent.name if reference.test else ""
    lines = [
        f"## Risk report as of {meta.get('as_of', meta.get('history_end'))}",
        "",
        f"Book: {weights or name}; value {value:,.0f} {currency} ({book.get('source', '')}). Model {meta.get('model', '')}; "
        f"data {reference.name} ({data_version}). {horizon}-day horizon, simple returns of the positions; "
        "± is the Monte-Carlo standard error.",
        "",
        f"| {horizon}-day level | VaR ({currency}) | ES ({currency}) | VaR (% of the book) | ES (% of the book) |",
        "|---|---|---|---|---|",
    ]
    for lv, _ in backtest.LEVELS:
        money = [f"{row[f'{m}_{lv}_money']:,.0f} ± {row[f'{m}_{lv}_se'] * value / 100:,.0f}" for m in ("var", "es")]
        pct = [f"{row[f'{m}_{lv}']:.2f} ± {row[f'{m}_{lv}_se']:.2f}" for m in ("var", "es")]
        lines.append(f"| {lv} % | " + " | ".join(money + pct) + " |")
    lines.append("")
    by_name = {m.name: m.value for m in scores}
    csv_rows = [
        ("as_of", "", meta.get("as_of", ""), ""),
        ("model", "", meta.get("model", ""), ""),
        ("data", "", f"{reference.name} {data_version}", ""),
    ]
    csv_rows += [("weight", a, w, "share") for a, w in (book.get("weights") or {}).items()]
    csv_rows += [("value", "", value, currency)]
    for lv, _ in backtest.LEVELS:
        for m in ("var", "es"):
            csv_rows += [
                (f"{m}_{lv}", f"{horizon}d", row[f"{m}_{lv}"], "percent"),
                (f"{m}_{lv}_se", f"{horizon}d", row[f"{m}_{lv}_se"], "percent"),
                (f"{m}_{lv}", f"{horizon}d", row.get(f"{m}_{lv}_money"), currency),
            ]
    key = "backtest_1d_1pct"
    if f"{key}_hits" in by_name:
        zone = (
            ("green", "yellow", "red")[int(by_name[f"{key}_basel_zone"])]
            if f"{key}_basel_zone" in by_name
            else "not assessed (under 250 days)"
        )
        tests = [
            f"one-day 99 % VaR: {by_name[f'{key}_hits']:.0f} exceptions over the test period",
            f"{by_name[f'{key}_exceptions_250d']:.0f} in the last 250 days: Basel zone **{zone}**"
            if f"{key}_exceptions_250d" in by_name
            else "",
            f"Kupiec p {by_name[f'{key}_kupiec_p']:.3g}, Christoffersen p {by_name[f'{key}_christoffersen_p']:.3g}, conditional coverage p {by_name[f'{key}_cc_p']:.3g}",
        ]
        es_key = "backtest_1d_2.5pct"
        if f"{es_key}_es_z2" in by_name:
            tests.append(f"ES 97.5 %: Acerbi-Székely Z2 {by_name[f'{es_key}_es_z2']:.3f}, p {by_name[f'{es_key}_es_z2_p']:.3g}")
        lines += ["Backtest: " + "; ".join(t for t in tests if t) + ".", ""]
        csv_rows += [
            (k.removeprefix("backtest_"), "1d", v, "")
            for k, v in by_name.items()
            if k.startswith(("backtest_1d_1pct", "backtest_1d_2.5pct"))
        ]
        csv_rows += [("basel_zone", "1d", zone, "")]
    forecast_fits = [f for f in fits if not f.get("purpose", "").startswith("backtest")]
    for entry in forecast_fits[-1:]:
        params = "; ".join(
            f"{a}: " + ", ".join(f"{k} {v:.4g}" for k, v in (rec.get("params") or {}).items() if isinstance(v, (int, float)))
            for a, rec in zip(entry.get("assets", []), entry.get("fit", []))
        )
        lines += [f"Fit used: {entry['purpose']}, {entry['window'][0]} to {entry['window'][1]} ({entry['days']} days): {params}.", ""]
        csv_rows += [("fit_window", "", f"{entry['window'][0]} {entry['window'][1]}", "")]
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "risk_report.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["item", "detail", "value", "unit"])
        writer.writerows(csv_rows)
    (out_dir / "risk_report.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


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
