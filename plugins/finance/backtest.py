"""The conditional risk backtest: each test day, the model's forecast of the next days given the real history -> VaR and ES.

For every test day ``d`` (and every ``h``-th day for an ``h``-day horizon, so the windows
do not overlap), the model forecasts the next ``h`` days given the returns before ``d``. Each
position is long one asset; its return over the horizon is the simple return (``risk.py``), and
the book's is the weighted sum of its positions' (``sample.book``). Where the model knows an
asset's distribution exactly (``ScenarioModel.exact``: the textbook models' next day, the
Gaussian at any horizon) that position's VaR and ES are exact; otherwise, and for a book of
several assets, they come from ``n`` scenarios with their Monte-Carlo standard errors. Models
that refit (the textbook ones) are refitted every ``refit_every`` days on all data before the
day, as a desk would; a trained network is used as trained.

The forecasts are written beside the samples as ``backtest.parquet`` (date, asset, horizon,
alpha, var, es, var_se, es_se, var_es_cov, exact, realized; ``asset`` is an asset's position
or ``BOOK``), and ``NULL_DRAWS`` draws of every forecast day as ``backtest_draws.parquet`` (the
simulated p-value of the ES test); the evaluator scores them (coverage, independence, FZ0,
the Basel zone, Acerbi-Székely Z2). Every refit is recorded (``fits``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from genforge.core import DataError

from . import risk
from .textbook_models import ScenarioModel

FILENAME = "backtest.parquet"
DRAWS = "backtest_draws.parquet"
BOOK = "book"  # the weighted book of all assets, when there are several
NULL_DRAWS = 250  # draws kept per forecast day for the ES test's simulated p-value (fewer when n is smaller)
# the desk's confidence levels and their tail probabilities: 97.5 % is FRTB's ES level
LEVELS = (("95", 0.05), ("97.5", 0.025), ("99", 0.01))


def horizon_pnl(paths: np.ndarray) -> np.ndarray:
    """The horizon log return of each scenario: paths (n, horizon, A) -> (n, A), the sum of its daily log returns (percent)."""
    return paths.sum(axis=1)


def horizon_risk(paths: np.ndarray, assets: list[str], weights=None, value: float | None = None) -> dict[str, dict[str, float]]:
    """``pnl_risk`` of paths (n, horizon, A)."""
    return pnl_risk(horizon_pnl(paths), assets, weights, value)


def pnl_risk(pnl: np.ndarray, assets: list[str], weights=None, value: float | None = None) -> dict[str, dict[str, float]]:
    """VaR and ES at 95, 97.5 and 99 % of a long position in each asset and of the book, from every scenario's horizon log return.

    ``pnl`` (n, A) -> {asset or BOOK: {"var_95", "es_95", "var_95_se", ...}} in percent of the position's (the
    book's) value, simple returns; with ``value`` (the book's value in its currency) the book's also in money
    (``var_95_money``, ...). The book is there when there are several assets.
    """
    weights = np.full(len(assets), 1 / len(assets)) if weights is None else np.asarray(weights, dtype=float)
    books = {a: risk.simple(pnl[:, i]) for i, a in enumerate(assets)}
    if len(assets) > 1:
        books[BOOK] = risk.book_returns(pnl, weights)
    out = {}
    for name, x in books.items():
        row = {}
        for level, alpha in LEVELS:
            d = risk.drawn_var_es(x[None], alpha)
            row |= {f"var_{level}": float(d.var[0]), f"es_{level}": float(d.es[0])}
            row |= {f"var_{level}_se": float(d.var_se[0]), f"es_{level}_se": float(d.es_se[0])}
        out[name] = row
    if value is not None:
        name = book(out)
        out[name] |= {f"{k}_money": v * value / 100 for k, v in list(out[name].items())}
    return out


def fit_entry(purpose: str, window: pd.DataFrame, model: ScenarioModel) -> dict:
    """One fit for the record: what it was for, the window (first and last date, days) and the model's own record of it."""
    return {
        "purpose": purpose,
        "window": [str(window.index[0].date()), str(window.index[-1].date())],
        "days": len(window),
        "assets": list(map(str, window.columns)),
        "fit": model.fit_record(),
    }


def book(assets) -> str:
    """The book a backtest is scored on: BOOK when there are several assets, else the one asset's position."""
    assets = list(dict.fromkeys(assets))
    return BOOK if BOOK in assets else assets[0]


def forecast(
    model: ScenarioModel,
    returns: pd.DataFrame,
    first_day: int,
    *,
    n: int = 2000,
    horizons: tuple[int, ...] = (1, 10),
    alphas: tuple[float, ...] = (0.01, 0.025, 0.05),
    weights=None,
    refit_every: int | None = 250,
    seed: int = 0,
    chunk: int = 50,
    progress: Callable[[int, int], None] | None = None,
    fits: list | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """VaR/ES forecasts for every day from ``first_day`` on (see the module docstring): (the forecasts, the null draws).

    ``fits``, when given, receives a record of every refit (the window's first and last date and ``model.fit_record()``).
    """
    x = returns.to_numpy(dtype=np.float64)
    assets = list(map(str, returns.columns))
    books = assets + ([BOOK] if len(assets) > 1 else [])
    weights = np.full(len(assets), 1.0 / len(assets)) if weights is None else np.asarray(weights, dtype=float)
    rng = np.random.default_rng(seed)
    days_all = np.arange(first_day, len(x))
    blocks = [days_all[i : i + refit_every] for i in range(0, len(days_all), refit_every)] if refit_every else [days_all]
    # each horizon's forecast days in each block: every h-th test day whose window ends inside the data
    plan = [[(h, block[((block - first_day) % h == 0) & (block + h <= len(x))]) for h in horizons] for block in blocks]
    total = sum(len(days) for per_block in plan for _, days in per_block)
    done, rows, null = 0, [], []
    kept = min(n, NULL_DRAWS)  # null draws per forecast day: as many on exact days as on drawn ones
    for block, per_block in zip(blocks, plan):
        if refit_every:
            model.fit(x[: block[0]])
            if fits is not None:
                fits.append(fit_entry(f"backtest refit for {returns.index[block[0]].date()} on", returns.iloc[: block[0]], model))
        for h, days in per_block:
            for start in range(0, len(days), chunk):
                part = days[start : start + chunk]
                marginal = model.exact(x, part, h)
                drawn = marginal is None or len(assets) > 1
                paths = model.conditional(x, part, n if drawn else kept, h, rng)  # (days, n, h, A)
                pnl = risk.simple(paths.sum(axis=2))  # (days, n, A): each position's horizon simple return
                realized = risk.simple(np.stack([x[d : d + h].sum(0) for d in part]))  # (days, A)
                if len(assets) > 1:
                    pnl = np.concatenate([pnl, (pnl @ weights)[..., None]], axis=-1)
                    realized = np.concatenate([realized, (realized @ weights)[:, None]], axis=-1)
                for b, name in enumerate(books):
                    null.append(
                        pd.DataFrame(
                            {
                                "date": returns.index[part],
                                "asset": name,
                                "horizon": h,
                                "draws": list(pnl[:, :kept, b].astype(np.float32)),
                            }
                        )
                    )
                for alpha in alphas:
                    exact = risk.exact_var_es(marginal, alpha) if marginal is not None else None
                    for b, name in enumerate(books):
                        if exact is not None and b < len(assets):
                            var, es = exact[0][:, b], exact[1][:, b]
                            var_se = es_se = cov = np.zeros(len(part))
                        else:
                            d = risk.drawn_var_es(pnl[:, :, b], alpha)
                            var, es, var_se, es_se, cov = d.var, d.es, d.var_se, d.es_se, d.cov
                        rows.append(
                            pd.DataFrame(
                                {
                                    "date": returns.index[part],
                                    "asset": name,
                                    "horizon": h,
                                    "alpha": alpha,
                                    "var": var,
                                    "es": es,
                                    "var_se": var_se,
                                    "es_se": es_se,
                                    "var_es_cov": cov,
                                    "exact": exact is not None and b < len(assets),
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
    table = pd.concat(rows, ignore_index=True).sort_values(["horizon", "alpha", "asset", "date"], ignore_index=True)
    draws = pd.concat(null, ignore_index=True).sort_values(["horizon", "asset", "date"], ignore_index=True)
    return table, draws
