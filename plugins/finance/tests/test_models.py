"""The textbook scenario models on real S&P 500 / NASDAQ returns, and the conditional VaR/ES backtest.

Fixed seeds, a few thousand scenarios: each tolerance is several standard errors wide.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from genforge.plugins.finance import backtest, metrics
from genforge.plugins.finance.risk import simple
from genforge.plugins.finance.textbook_models import BootstrapModel, FilteredHistoricalModel, GarchModel, GaussianModel

MODELS = {"gaussian": GaussianModel, "garch": GarchModel, "fhs": FilteredHistoricalModel, "bootstrap": BootstrapModel}


def first_test_day(split: pd.Series) -> int:
    return int(np.argmax(split.to_numpy() == "test"))


def fitted(name: str, x: np.ndarray, **kw):
    model = MODELS[name](**kw)
    model.fit(x)
    return model


@pytest.mark.parametrize("name", MODELS)
def test_fit_then_simulate_gives_finite_paths_and_the_state_round_trips(name, sp500):
    returns, split = sp500
    x = returns.to_numpy()[: first_test_day(split)]
    model = fitted(name, x)
    paths = model.simulate(x, 64, 20, np.random.default_rng(0))
    assert paths.shape == (64, 20, 1) and np.isfinite(paths).all()
    assert 0.3 < paths.std() < 3  # percent daily returns, not fractions or basis points
    again = model.simulate(x, 64, 20, np.random.default_rng(0))
    assert np.array_equal(paths, again)
    loaded = MODELS[name].from_state(json.loads(json.dumps(model.state())))  # the checkpoint is JSON
    assert type(loaded) is type(model)
    assert np.array_equal(loaded.simulate(x, 64, 20, np.random.default_rng(0)), paths)
    assert not np.array_equal(model.simulate(x, 64, 20, np.random.default_rng(1)), paths)


def test_gjr_finds_a_leverage_effect_that_its_paths_reproduce(sp500):
    returns, split = sp500
    x = returns.to_numpy()[: first_test_day(split)]
    gjr = fitted("garch", x, vol="gjr")
    (p,) = gjr.params
    assert p["gamma"] > 0.05 and p["mu"] == 0.0 and 2 < p["nu"] < 30
    assert p["alpha"] + p["gamma"] / 2 + p["beta"] < 1  # covariance stationary
    assert fitted("garch", x, vol="garch").params[0]["gamma"] == 0.0

    rng = np.random.default_rng(0)
    lev_gjr = metrics.leverage(np.swapaxes(gjr.simulate(x, 500, 250, rng), 1, 2)).mean(axis=(0, 1))  # lags 1..5
    lev_gauss = metrics.leverage(np.swapaxes(fitted("gaussian", x).simulate(x, 500, 250, rng), 1, 2)).mean(axis=(0, 1))
    # measured: GJR -0.04 to -0.05 at each lag, the Gaussian within 0.003 of 0 (standard error about 0.003)
    assert lev_gjr.mean() < -0.025 and (lev_gjr < 0).all(), lev_gjr
    assert abs(lev_gauss.mean()) < 0.01, lev_gauss
    assert metrics.leverage(x.T).mean() < -0.05  # the data's own


def _gjr_variance(model: GarchModel, history: np.ndarray) -> float:
    """Tomorrow's conditional variance, by the GJR recursion written out (started at the sample variance:
    after thousands of days the start is forgotten)."""
    (p,) = model.params
    var = float(np.var(history))
    for e in history[:, 0] - p["mu"]:
        var = p["omega"] + (p["alpha"] + p["gamma"] * (e < 0)) * e**2 + p["beta"] * var
    return var


def test_garch_conditional_is_simulate_on_the_history_before_each_day(sp500):
    returns, split = sp500
    x = returns.to_numpy()
    model = fitted("garch", x[: first_test_day(split)])
    crash = int(np.argmin(x[:, 0]))  # 2008-10-15, -9.5 %: a day's scenarios must not know its return
    calm = first_test_day(split) + 100
    days = np.array([crash, crash + 1, calm])
    cond = model.conditional(x, days, 5000, 10, np.random.default_rng(1))
    assert cond.shape == (3, 5000, 10, 1) and np.isfinite(cond).all()
    stds = []
    for i, d in enumerate(days):
        direct = model.simulate(x[:d], 5000, 10, np.random.default_rng(2 + i))
        one_day, direct_one_day = cond[i, :, 0, 0].std(), direct[:, 0, 0].std()
        assert one_day == pytest.approx(direct_one_day, rel=0.05), (d, one_day, direct_one_day)
        assert one_day == pytest.approx(np.sqrt(_gjr_variance(model, x[:d])), rel=0.05)
        assert cond[i].sum(axis=1).std() == pytest.approx(direct.sum(axis=1).std(), rel=0.06)  # 10-day sums
        stds.append(one_day)
    assert stds[1] > 1.2 * stds[0]  # the crash raises the next day's variance (4.6 -> 5.9), not its own
    assert stds[0] > 2 * stds[2]  # October 2008 against a calm day of 2015


def test_bootstrap_draws_only_recent_days_in_blocks(sp500_nasdaq):
    returns, _ = sp500_nasdaq
    x = returns.to_numpy()[:3000]
    model = fitted("bootstrap", x, window=250, block=5.0)
    assert model.fitted_block == 5.0
    paths = model.simulate(x, 500, 50, np.random.default_rng(0))
    assert paths.shape == (500, 50, 2)
    recent = {tuple(row) for row in x[-250:]}
    assert all(tuple(day) in recent for day in paths.reshape(-1, 2))  # whole days (both assets), from the window only
    assert not {tuple(row) for row in x[:-250]} & {tuple(day) for day in paths.reshape(-1, 2)}
    # stationary bootstrap: the next day continues the block with probability 1 - 1/block
    where = {tuple(row): i for i, row in enumerate(x[-250:])}
    idx = np.vectorize(lambda s, t: where[tuple(paths[s, t])])(*np.indices(paths.shape[:2]))
    continued = (np.diff(idx, axis=1) % 250 == 1).mean()
    assert continued == pytest.approx(0.8, abs=0.02)
    # an earlier history is an earlier window
    earlier = model.simulate(x[:1000], 100, 5, np.random.default_rng(0))
    window = {tuple(row) for row in x[750:1000]}
    assert all(tuple(day) in window for day in earlier.reshape(-1, 2))
    # the default block length comes from arch's optimal_block_length on squared returns
    assert fitted("bootstrap", x).fitted_block >= 1.0


@pytest.mark.parametrize("name", MODELS)
def test_two_assets_keep_their_correlation(name, sp500_nasdaq):
    returns, split = sp500_nasdaq
    x = returns.to_numpy()[: first_test_day(split)]
    kw = {"window": None} if name == "bootstrap" else {}
    model = fitted(name, x, **kw)
    paths = model.simulate(x, 2000, 20, np.random.default_rng(0))
    assert paths.shape == (2000, 20, 2) and np.isfinite(paths).all()
    real = np.corrcoef(x.T)[0, 1]
    assert real == pytest.approx(0.88, abs=0.02)
    fake = np.corrcoef(paths.reshape(-1, 2).T)[0, 1]
    assert fake == pytest.approx(real, abs=0.05), (name, fake, real)
    assert metrics.correlation_error(x, paths) < 0.05


# -- the backtest ----------------------------------------------------------------------------


def test_backtest_table_of_garch_on_sp500(sp500):
    returns, split = sp500
    first = first_test_day(split)
    sliced = returns.iloc[: first + 45]
    model = fitted("garch", returns.to_numpy()[:first])
    table, draws = backtest.forecast(model, sliced, first, n=300, refit_every=None, seed=0)
    assert list(table.columns) == ["date", "asset", "horizon", "alpha", "var", "es", "var_se", "es_se", "var_es_cov", "exact", "realized"]
    assert set(table["asset"]) == {"sp500"} and set(table["alpha"]) == {0.01, 0.025, 0.05} and set(table["horizon"]) == {1, 10}
    assert (table["var"] > 0).all() and (table["es"] >= table["var"]).all()
    one = table[(table["horizon"] == 1) & (table["alpha"] == 0.01)]
    assert list(one["date"]) == list(sliced.index[first:])  # every test day
    assert np.allclose(one["realized"], simple(sliced["sp500"].to_numpy()[first:]))  # a long position's simple return
    # the next day of GJR-GARCH-t is known exactly; ten days are drawn, with their Monte-Carlo errors
    assert one["exact"].all() and (one["var_se"] == 0).all()
    ten = table[(table["horizon"] == 10) & (table["alpha"] == 0.01)]
    assert not ten["exact"].any() and (ten["var_se"] > 0).all() and (ten["es_se"] > 0).all()
    assert list(ten["date"]) == list(sliced.index[[first, first + 10, first + 20, first + 30]])  # every 10th, whole windows only
    assert np.allclose(
        ten["realized"], [simple(sliced["sp500"].iloc[d : d + 10].sum()) for d in (first, first + 10, first + 20, first + 30)]
    )
    # the ES test's null draws: 250 a forecast day (exact days too), simple returns as the forecasts
    assert len(draws) == 45 + 4 and all(len(d) == backtest.NULL_DRAWS for d in draws["draws"])
    # 1 % below 5 %, 10 days wider than 1 (about sqrt(10))
    five = table[(table["horizon"] == 1) & (table["alpha"] == 0.05)]
    assert (one["var"].to_numpy() > five["var"].to_numpy()).all()
    ratio = ten["var"].mean() / one["var"].iloc[[0, 10, 20, 30]].mean()
    assert 2 < ratio < 4.5, ratio


def test_backtest_forecasts_see_only_the_days_before(sp500):
    returns, split = sp500
    first = first_test_day(split)
    sliced = returns.iloc[: first + 30].copy()
    model = fitted("garch", returns.to_numpy()[:first])
    before, _ = backtest.forecast(model, sliced, first, n=300, horizons=(1,), refit_every=None, seed=3)
    shocked = sliced.copy()
    shocked.iloc[first + 20, 0] = -10.0  # a crash on the 21st test day
    after, _ = backtest.forecast(model, shocked, first, n=300, horizons=(1,), refit_every=None, seed=3)
    cols = ["var", "es"]
    up_to = before["date"] <= sliced.index[first + 20]
    assert np.array_equal(before.loc[up_to, cols].to_numpy(), after.loc[up_to, cols].to_numpy())
    assert (after.loc[~up_to, "var"].to_numpy() > 1.5 * before.loc[~up_to, "var"].to_numpy()).all()


def test_backtest_refits_on_all_days_before_each_block(sp500):
    returns, split = sp500
    first = first_test_day(split)
    sliced = returns.iloc[: first + 45]
    model, seen = GaussianModel(), []
    fit = model.fit
    model.fit = lambda x: (seen.append(len(x)), fit(x))
    fits = []
    table, _ = backtest.forecast(model, sliced, first, n=200, horizons=(1,), refit_every=20, fits=fits)
    assert seen == [first, first + 20, first + 40]
    assert [f["days"] for f in fits] == seen and fits[1]["window"] == [str(sliced.index[0].date()), str(sliced.index[first + 19].date())]
    assert table["date"].nunique() == 45


def test_backtest_progress_ends_at_its_total(sp500):
    returns, split = sp500
    first = first_test_day(split)
    calls = []
    model = fitted("gaussian", returns.to_numpy()[:first])
    backtest.forecast(model, returns.iloc[: first + 45], first, n=100, refit_every=None, progress=lambda d, t: calls.append((d, t)))
    assert calls and all(d <= t for d, t in calls)
    done, total = calls[-1]
    assert done == total == 45 + 4, calls[-1]  # 45 one-day forecasts, 4 whole 10-day windows (days 0, 10, 20, 30; not 40)


def test_two_assets_add_the_weighted_book_of_simple_returns(sp500_nasdaq):
    returns, split = sp500_nasdaq
    first = first_test_day(split)
    sliced = returns.iloc[: first + 25]
    model = fitted("garch", returns.to_numpy()[:first])
    w = np.array([0.7, 0.3])
    table, _ = backtest.forecast(model, sliced, first, n=400, horizons=(1, 10), alphas=(0.05,), weights=w, refit_every=None)
    assert set(table["asset"]) == {"sp500", "nasdaq", backtest.BOOK}
    assert (table["var"] > 0).all() and (table["es"] >= table["var"]).all()
    wide = table[table["horizon"] == 1].pivot(index="date", columns="asset", values=["realized", "var", "exact"])
    assert len(wide) == 25
    # the book's return is the weighted sum of its positions' simple returns, not the mean of log returns
    assert np.allclose(wide["realized"][backtest.BOOK], simple(sliced.to_numpy()[first:]) @ w)
    assert wide["exact"][["sp500", "nasdaq"]].all().all() and not wide["exact"][backtest.BOOK].any()  # the book is drawn
    # diversification: the book's VaR is below the weighted sum of its positions' (correlation about 0.88)
    ratio = wide["var"][backtest.BOOK] / (wide["var"][["sp500", "nasdaq"]] @ w)
    assert 0.9 < ratio.mean() < 1.0 and ratio.max() < 1.1, ratio.describe()
    assert len(table[(table["horizon"] == 10) & (table["asset"] == backtest.BOOK)]) == 2  # days 0 and 10 (20 + 10 > 25)


def test_null_draws_are_as_many_on_exact_and_drawn_days_when_scenarios_are_few(sp500):
    """200 scenarios a day, fewer than the 250 null draws kept: exact one-day and drawn ten-day forecasts keep 200 each, and
    the ES test reads them (a mix of 250 and 200 failed the evaluator)."""
    from genforge.plugins.finance.evaluator import backtest_metrics

    returns, split = sp500
    first = first_test_day(split)
    model = fitted("bootstrap", returns.to_numpy()[:first], window=500)
    table, draws = backtest.forecast(model, returns.iloc[: first + 30], first, n=200, refit_every=None)
    assert {len(d) for d in draws["draws"]} == {200}
    names = {m.name for m in backtest_metrics(table, draws)}
    assert {"backtest_1d_2.5pct_es_z2_p", "backtest_10d_2.5pct_es_z2_p"} <= names
