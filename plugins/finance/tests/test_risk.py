"""A risk analyst's checks: exact VaR/ES where the distribution is known, honest Monte-Carlo errors where it is drawn,
the ES test, the Basel zone, a book of positions in money, the forward view's fit on file, and dates that cannot fool it.

Each exact figure is checked against an independent computation (``arch``'s own forecast and fit, ``scipy``'s
quadrature of the density); each standard error against the spread of the same estimate over many seeds.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from genforge.core import DataError
from genforge.core.kinds import Scenarios
from genforge.core.runner import Steps, create_run
from genforge.plugins.finance import backtest, risk
from genforge.plugins.finance.data import wide_form
from genforge.plugins.finance.textbook_models import BootstrapModel, FilteredHistoricalModel, GarchModel, GaussianModel


def first_test_day(split: pd.Series) -> int:
    return int(np.argmax(split.to_numpy() == "test"))


def simple_es_by_quadrature(pdf, q: float, alpha: float) -> float:
    """ES of the simple return 100·expm1(X/100) from X's density: −(1/α)∫_{−∞}^{q} 100·expm1(x/100) f(x) dx."""
    value, _ = integrate.quad(lambda x: 100 * np.expm1(x / 100) * pdf(x), -np.inf, q, epsabs=1e-13, epsrel=1e-12, limit=400)
    return -value / alpha


# -- exact where exact exists ----------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.01, 0.025, 0.05])
def test_gjr_garch_t_one_day_var_es_equal_the_analytic_values_of_archs_own_forecast(sp500, alpha):
    from arch import arch_model

    returns, split = sp500
    first = first_test_day(split)
    x = returns.to_numpy()
    model = GarchModel()
    model.fit(x[:first])
    days = np.array([first, first + 1, first + 100])
    exact = model.exact(x, days, 1)
    var, es = risk.exact_var_es(exact, alpha)
    log_var, log_es = risk.exact_var_es(exact, alpha, as_simple=False)
    # independently: arch's fit and its one-day variance forecast, scipy's t quantile and a quadrature of the density
    res = arch_model(x[:first], mean="Zero", vol="GARCH", p=1, o=1, q=1, dist="t").fit(disp="off")
    nu = res.params["nu"]
    assert model.params[0]["nu"] == pytest.approx(nu, rel=1e-12)
    for i, d in enumerate(days):
        fixed = arch_model(x[: d + 1], mean="Zero", vol="GARCH", p=1, o=1, q=1, dist="t")
        sigma = np.sqrt(fixed.fix(res.params).forecast(horizon=1, start=d - 1, reindex=False).variance.to_numpy()[0, 0])
        scale = sigma * np.sqrt((nu - 2) / nu)
        q = scale * stats.t.ppf(alpha, nu)
        assert log_var[i, 0] == pytest.approx(-q, abs=1e-6)
        assert var[i, 0] == pytest.approx(-100 * np.expm1(q / 100), abs=1e-6)
        tail = integrate.quad(lambda z, s=scale: z * stats.t.pdf(z / s, nu) / s, -np.inf, q, epsabs=1e-13, limit=400)[0] / alpha
        assert log_es[i, 0] == pytest.approx(-tail, abs=1e-6)
        assert es[i, 0] == pytest.approx(simple_es_by_quadrature(lambda z, s=scale: stats.t.pdf(z / s, nu) / s, q, alpha), abs=1e-6)


@pytest.mark.parametrize("horizon", [1, 10])
def test_the_gaussian_var_es_are_the_normal_ones_at_any_horizon(sp500, horizon):
    returns, split = sp500
    x = returns.to_numpy()[: first_test_day(split)]
    model = GaussianModel()
    model.fit(x)
    mu, sd = x.mean(), x.std(ddof=1)
    var, es = risk.exact_var_es(model.exact(x, np.array([len(x)]), horizon), 0.01)
    m, s = horizon * mu, np.sqrt(horizon) * sd
    q = m + s * stats.norm.ppf(0.01)
    assert var[0, 0] == pytest.approx(-100 * np.expm1(q / 100), abs=1e-6)
    assert es[0, 0] == pytest.approx(simple_es_by_quadrature(stats.norm(m, s).pdf, q, 0.01), abs=1e-6)


def test_historical_and_filtered_simulation_one_day_are_the_exact_discrete_tails(sp500):
    returns, split = sp500
    first = first_test_day(split)
    x = returns.to_numpy()
    boot = BootstrapModel(window=500)
    boot.fit(x[:first])
    var, es = risk.exact_var_es(boot.exact(x, np.array([first]), 1), 0.01)
    window = np.sort(risk.simple(x[first - 500 : first, 0]))
    assert var[0, 0] == pytest.approx(-window[4])  # the 5th worst of 500 days is the 1 % quantile
    assert es[0, 0] == pytest.approx(-window[:5].mean())  # and ES the mean of the 5 worst
    fhs = FilteredHistoricalModel()
    fhs.fit(x[:first])
    exact = fhs.exact(x, np.array([first]), 1)
    var, es = risk.exact_var_es(exact, 0.025)
    # against a huge draw from the same model: exact and drawn agree within the draw's own error
    drawn = risk.drawn_var_es(risk.simple(fhs.conditional(x, np.array([first]), 400_000, 1, np.random.default_rng(0))[:, :, 0, 0]), 0.025)
    assert abs(var[0, 0] - drawn.var[0]) < 4 * drawn.var_se[0] + 0.01
    sigma = np.sqrt(fhs._variances(x[:first])[-1, 0])
    assert np.allclose(np.sort(exact.values[:, 0]), np.sort(fhs.residuals[:, 0])) and exact.scale[0, 0] == pytest.approx(sigma)


# -- Monte-Carlo errors -----------------------------------------------------------------------------


def test_var_es_standard_errors_match_their_spread_over_seeds():
    rng = np.random.default_rng(0)
    draws = rng.standard_t(5, size=(600, 2000))
    d = risk.drawn_var_es(draws, 0.01)
    # the spread of the 600 estimates against the mean stated error: within 15 %
    assert d.var.std() == pytest.approx(d.var_se.mean(), rel=0.15)
    assert d.es.std() == pytest.approx(d.es_se.mean(), rel=0.15)
    assert np.corrcoef(d.var, d.es)[0, 1] == pytest.approx((d.cov / (d.var_se * d.es_se)).mean(), abs=0.15)


class _Drawn(GaussianModel):
    """The Gaussian without its exact forecasts: every VaR/ES is drawn."""

    def exact(self, returns, days, horizon):
        return None


def test_the_fz0_and_hits_standard_errors_match_their_spread_over_seeds(sp500):
    returns, split = sp500
    first = first_test_day(split)
    sliced = returns.iloc[: first + 200]
    model = _Drawn()
    model.fit(returns.to_numpy()[:first])
    fz0, stated, hits, hits_stated = [], [], [], []
    from genforge.plugins.finance import metrics

    for seed in range(24):
        table, _ = backtest.forecast(model, sliced, first, n=400, horizons=(1,), alphas=(0.025,), refit_every=None, seed=seed)
        y, var, es = table["realized"], table["var"], table["es"]
        fz0.append(metrics.fz0_loss(y, var, es, 0.025))
        stated.append(risk.fz0_se(y, var, es, table["var_se"], table["es_se"], table["var_es_cov"], 0.025))
        hits.append(int((y <= -var).sum()))
        hits_stated.append(risk.hits_se(y, var, table["var_se"]))
    assert 0.6 < np.std(fz0, ddof=1) / np.mean(stated) < 1.6, (np.std(fz0, ddof=1), np.mean(stated))
    assert np.std(hits, ddof=1) < 2.5 * np.mean(hits_stated) + 0.5
    exact = GaussianModel()
    exact.fit(returns.to_numpy()[:first])
    table, _ = backtest.forecast(exact, sliced, first, n=400, horizons=(1,), alphas=(0.025,), refit_every=None)
    assert risk.fz0_se(table["realized"], table["var"], table["es"], table["var_se"], table["es_se"], table["var_es_cov"], 0.025) == 0


# -- the ES test and the traffic light --------------------------------------------------------------


def test_acerbi_szekely_z2_accepts_the_true_es_and_rejects_one_too_small():
    rng = np.random.default_rng(1)
    t, alpha = 1000, 0.025
    y = rng.standard_t(4, t)
    q = stats.t.ppf(alpha, 4)
    es_true = -integrate.quad(lambda z: z * stats.t.pdf(z, 4), -np.inf, q)[0] / alpha
    null = rng.standard_t(4, (t, 250))
    z2, p = risk.acerbi_szekely_z2(y, np.full(t, -q), np.full(t, es_true), alpha, null)
    assert abs(z2) < 0.3 and p > 0.05
    # a normal model of the same variance: its ES misses the t tail
    sd = np.sqrt(4 / 2)
    var_n, es_n = -sd * stats.norm.ppf(alpha), sd * stats.norm.pdf(stats.norm.ppf(alpha)) / alpha
    z2_n, p_n = risk.acerbi_szekely_z2(y, np.full(t, var_n * 0.8), np.full(t, es_n * 0.8), alpha, rng.normal(0, sd * 0.8, (t, 250)))
    assert z2_n < -0.3 and p_n < 0.05


@pytest.mark.parametrize("exceptions, zone", [(0, "green"), (4, "green"), (5, "yellow"), (9, "yellow"), (10, "red"), (30, "red")])
def test_the_basel_traffic_light(exceptions, zone):
    assert risk.basel_zone(exceptions) == zone


# -- a book of positions, in money ------------------------------------------------------------------


def _run(generator: str, sample: dict, data: dict | None = None, **spec):
    data = {"series": ["sp500", "nasdaq"], "start": "2010-01-01", "test_start": "2015-01-02", **(data or {})}
    run = create_run(generator, spec={"data": data, "sample": sample, **spec})
    steps = Steps(run)
    steps.train(steps.prepare())
    return run, steps


def test_a_two_asset_book_in_money_equals_a_direct_computation_on_its_scenarios(genforge_home, tmp_path):
    positions = tmp_path / "positions.csv"
    positions.write_text("asset,notional,currency\nsp500,3500000,EUR\nnasdaq,1500000,EUR\n")
    sample = {"n": 4000, "horizon": 10, "given": "last", "backtest": False, "book": {"positions": str(positions), "currency": "EUR"}}
    run, steps = _run("garch", sample)
    samples = steps.sample()
    details = run.read_json("samples.json")["details"]
    assert details["book"]["weights"] == {"sp500": pytest.approx(0.7), "nasdaq": pytest.approx(0.3)} and details["book"]["value"] == 5e6
    paths, assets = wide_form(Scenarios().load(samples.path))
    simple = 100 * np.expm1(paths.sum(axis=1) / 100)  # each position's 10-day simple return, percent
    book = simple @ np.array([0.7, 0.3])
    for level, alpha in backtest.LEVELS:
        q = np.quantile(book, alpha)
        var, es = -q * 5e6 / 100, -book[book <= q].mean() * 5e6 / 100
        assert details["risk"][backtest.BOOK][f"var_{level}_money"] == pytest.approx(var, abs=0.01)
        assert details["risk"][backtest.BOOK][f"es_{level}_money"] == pytest.approx(es, abs=0.01)


def test_a_long_position_never_loses_more_than_all_of_it(genforge_home):
    # 250 days of the most volatile years: the log return's "ES 99" of such paths passed 100 %, a long position's cannot
    run, steps = _run(
        "garch",
        {"n": 2000, "horizon": 250, "given": "2009-03-09", "backtest": False},
        data={"series": ["sp500"], "start": "2000-01-01", "test_start": "2010-01-04"},
    )
    steps.sample()
    risk_row = run.read_json("samples.json")["details"]["risk"]["sp500"]
    assert 0 < risk_row["var_99"] <= risk_row["es_99"] < 100


def test_weights_that_do_not_add_up_or_name_another_asset_are_refused(genforge_home):
    from genforge.core import ConfigError

    for weights, words in (
        ({"sp500": 0.5, "nasdaq": 0.3}, "add up to 0.8"),
        ({"sp500": 0.7, "dax": 0.3}, "no asset 'dax'"),
        ({"sp500": float("nan"), "nasdaq": 1.0}, "add up to nan"),
    ):
        run, steps = _run("gaussian", {"n": 10, "horizon": 5, "backtest": False, "book": {"weights": weights}})
        with pytest.raises(ConfigError, match=words):
            steps.sample()


# -- the forward view on file, and dates that cannot fool it ----------------------------------------


def test_the_forward_views_refit_is_on_file_and_equals_arch_on_the_same_window(genforge_home, sp500_nasdaq):
    from arch import arch_model

    run, steps = _run("garch", {"n": 50, "horizon": 10, "given": "2016-06-30", "backtest": False})
    samples = steps.sample()
    fits = json.loads((run.samples_dir / "fits.json").read_text())
    assert [f["purpose"] for f in fits] == ["fit before the test period", "forecast from 2016-06-30"]
    forward = fits[1]
    assert forward["window"] == ["2010-01-05", "2016-06-30"]
    returns = sp500_nasdaq[0].loc["2010-01-05":"2016-06-30"]
    assert forward["days"] == len(returns)
    for asset, record in zip(forward["assets"], forward["fit"]):
        res = arch_model(returns[asset].to_numpy(), mean="Zero", vol="GARCH", p=1, o=1, q=1, dist="t").fit(disp="off")
        assert record["params"] == pytest.approx(res.params.to_dict(), rel=1e-9)
        assert record["std_err"] == pytest.approx(res.std_err.to_dict(), rel=1e-6)
        assert record["loglik"] == pytest.approx(res.loglikelihood) and record["converged"] is True
    # the scenarios say when they start and from which model, and date each step (business days after the as-of date)
    frame = pd.read_parquet(samples.path)
    assert set(frame["as_of"]) == {pd.Timestamp("2016-06-30")} and set(frame["model"]) == {f"run {run.id}"}
    steps_dates = frame.drop_duplicates("step").sort_values("step")["date"]
    assert list(steps_dates.dt.date.astype(str))[:3] == ["2016-07-01", "2016-07-05", "2016-07-06"]  # the real days (4 July closed)


def test_a_start_after_the_last_price_is_refused_unless_the_data_is_marked_as_of_it(genforge_home):
    run, steps = _run("gaussian", {"n": 10, "horizon": 5, "given": "2030-01-01", "backtest": False})
    with pytest.raises(DataError, match=r"sample.given=2030-01-01 is after the last price \(2018-12-31"):
        steps.sample()
    run, steps = _run("gaussian", {"n": 10, "horizon": 5, "given": "2019-01-02", "backtest": False}, data={"as_of": "2019-01-02"})
    steps.sample()
    assert run.read_json("samples.json")["details"]["as_of"] == "2019-01-02"


def test_stale_data_fails_the_forward_view_naming_its_age(genforge_home):
    import datetime

    run, steps = _run("gaussian", {"n": 10, "horizon": 5, "given": "last", "backtest": False, "max_age_days": 4})
    age = (datetime.date.today() - datetime.date(2018, 12, 31)).days
    with pytest.raises(DataError, match=f"the data end 2018-12-31, {age} days before today"):
        steps.sample()


def test_a_position_in_another_currency_or_given_by_quantity_is_refused_naming_its_row(genforge_home, tmp_path):
    other = tmp_path / "gbp.csv"
    other.write_text("asset,notional,currency\nsp500,100,USD\nnasdaq,100,GBP\n")
    run, steps = _run("gaussian", {"n": 10, "horizon": 5, "backtest": False, "book": {"positions": str(other)}})
    with pytest.raises(DataError, match=r"row 3: a position in GBP, the book is in USD"):
        steps.sample()
    quantity = tmp_path / "quantity.csv"
    quantity.write_text("asset,quantity\nsp500,10\n")
    run, steps = _run("gaussian", {"n": 10, "horizon": 5, "backtest": False, "book": {"positions": str(quantity)}})
    with pytest.raises(DataError, match="give notional = quantity × price"):
        steps.sample()


def test_a_start_date_in_the_configured_format_is_recorded_as_iso():
    from genforge.plugins.finance.textbook_generators import GarchConfig

    cfg = GarchConfig.model_validate({"data": {"date_format": "DD/MM/YYYY"}, "sample": {"given": "03/04/2016"}})
    assert cfg.sample.given == "2016-04-03"  # the 3rd of April, recorded so that no later reading can take it for March
    with pytest.raises(ValueError, match="sample.given"):
        GarchConfig.model_validate({"sample": {"given": "03/04/2016"}})  # ISO by default: refused as ambiguous
