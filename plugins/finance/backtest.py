"""The conditional risk backtest: each test day, scenarios given the real history -> VaR and ES forecasts.

For every test day ``d`` (and every ``h``-th day for an ``h``-day horizon, so the windows
do not overlap), the model draws ``n`` scenarios of the next ``h`` days given the returns
before ``d``; the horizon P&L of each scenario (the sum of its log returns) gives VaR and
ES at each level, and the realised horizon return is kept beside them. Models that refit
(the textbook ones) are refitted every ``refit_every`` days on all data before the day,
as a desk would; a trained network is used as trained.

The forecasts are written beside the samples as ``backtest.parquet`` (date, asset, horizon,
alpha, var, es, realized); the evaluator scores them (Kupiec, Christoffersen, FZ0).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from genforge.core import DataError

from .metrics import var_es, var_es_rows
from .textbook_models import ScenarioModel

FILENAME = "backtest.parquet"
PORTFOLIO = "portfolio"  # the equally weighted book of all assets, when there are several
LEVELS = (("95", 0.05), ("99", 0.01))  # the desk's confidence levels and their tail probabilities


def horizon_risk(paths: np.ndarray, assets: list[str]) -> dict[str, dict[str, float]]:
    """VaR and ES of the horizon P&L (sum of log returns, percent) at 95 % and 99 %, per asset and the equal-weight book.

    ``paths`` (n, horizon, A) -> {asset or PORTFOLIO: {"var_95", "es_95", "var_99", "es_99"}}.
    """
    return pnl_risk(horizon_pnl(paths), assets)


def horizon_pnl(paths: np.ndarray) -> np.ndarray:
    """The horizon P&L of each scenario: paths (n, horizon, A) -> (n, A), the sum of its log returns (percent)."""
    return paths.sum(axis=1)


def pnl_risk(pnl: np.ndarray, assets: list[str]) -> dict[str, dict[str, float]]:
    """``horizon_risk`` from the horizon P&L (n, A) alone: what a sampler drawing paths part by part keeps (n floats per asset)."""
    books = {a: pnl[:, i] for i, a in enumerate(assets)}
    if len(assets) > 1:
        books[PORTFOLIO] = pnl.mean(axis=1)
    out = {}
    for book, x in books.items():
        out[book] = {}
        for level, alpha in LEVELS:
            out[book][f"var_{level}"], out[book][f"es_{level}"] = var_es(x, alpha)
    return out


def book(assets) -> str:
    """The book a backtest is scored on: the portfolio when there are several assets, else the one asset."""
    assets = list(dict.fromkeys(assets))
    return PORTFOLIO if PORTFOLIO in assets else assets[0]


def forecast(
    model: ScenarioModel,
    returns: pd.DataFrame,
    first_day: int,
    *,
    n: int = 2000,
    horizons: tuple[int, ...] = (1, 10),
    alphas: tuple[float, ...] = (0.01, 0.05),
    refit_every: int | None = 250,
    seed: int = 0,
    chunk: int = 50,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """VaR/ES forecasts for every day from ``first_day`` on (see the module docstring); returns in percent."""
    x = returns.to_numpy(dtype=np.float64)
    assets = list(map(str, returns.columns))
    books = assets + ([PORTFOLIO] if len(assets) > 1 else [])
    weights = np.full(len(assets), 1.0 / len(assets))
    rng = np.random.default_rng(seed)
    days_all = np.arange(first_day, len(x))
    blocks = [days_all[i : i + refit_every] for i in range(0, len(days_all), refit_every)] if refit_every else [days_all]
    # each horizon's forecast days in each block: every h-th test day whose window ends inside the data
    plan = [[(h, block[((block - first_day) % h == 0) & (block + h <= len(x))]) for h in horizons] for block in blocks]
    total = sum(len(days) for per_block in plan for _, days in per_block)
    done, rows = 0, []
    for block, per_block in zip(blocks, plan):
        if refit_every:
            model.fit(x[: block[0]])
        for h, days in per_block:
            for start in range(0, len(days), chunk):
                part = days[start : start + chunk]
                paths = model.conditional(x, part, n, h, rng)  # (days, n, h, A)
                pnl = paths.sum(axis=2)  # (days, n, A): horizon log return per asset
                realized = np.stack([x[d : d + h].sum(0) for d in part])  # (days, A)
                if len(assets) > 1:
                    pnl = np.concatenate([pnl, (pnl @ weights)[..., None]], axis=-1)
                    realized = np.concatenate([realized, (realized @ weights)[:, None]], axis=-1)
                for alpha in alphas:
                    for b, book in enumerate(books):
                        var, es = var_es_rows(pnl[:, :, b], alpha)
                        rows.append(
                            pd.DataFrame(
                                {
                                    "date": returns.index[part],
                                    "asset": book,
                                    "horizon": h,
                                    "alpha": alpha,
                                    "var": var,
                                    "es": es,
                                    "realized": realized[:, b],
                                }
                            )
                        )
                done += len(part)
                if progress:
                    progress(done, total)
    if not rows:
        raise DataError(
            f"no backtest window fits the {len(days_all)} test day(s): shorten sample.backtest_horizons ({', '.join(map(str, horizons))})"
        )
    return pd.concat(rows, ignore_index=True).sort_values(["horizon", "alpha", "asset", "date"], ignore_index=True)
