"""The finance plugin's scenario metrics and plots on simulated data with known answers (fixed seeds, CPU, seconds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from genforge.plugins.finance import metrics, plots


def ar1(rng, n: int, phi: float) -> np.ndarray:
    e = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x


def gjr(rng, n: int, omega=0.05, a=0.02, gamma=0.15, beta=0.85) -> np.ndarray:
    """A GJR-GARCH(1,1) series: negative returns raise next day's variance more (a leverage effect)."""
    z = rng.standard_normal(n)
    r = np.empty(n)
    s2 = omega / (1 - a - gamma / 2 - beta)
    for t in range(n):
        r[t] = math.sqrt(s2) * z[t]
        s2 = omega + (a + gamma * (r[t] < 0)) * r[t] ** 2 + beta * s2
    return r


def test_acf_recovers_ar1_and_vanishes_for_iid():
    rng = np.random.default_rng(0)
    x = ar1(rng, 20_000, 0.6)
    got = metrics.acf(x, 5)
    assert np.allclose(got, 0.6 ** np.arange(1, 6), atol=0.03)
    xc = x - x.mean()  # the biased estimator, written out at lag 3
    assert got[2] == pytest.approx((xc[:-3] @ xc[3:]) / (xc @ xc), rel=1e-9)
    iid = rng.standard_normal((3, 5_000))
    assert metrics.acf(iid, 20).shape == (3, 20)
    assert np.abs(metrics.acf(iid, 20)).max() < 4 / math.sqrt(5_000)
    assert np.all(metrics.acf(np.ones(50), 3) == 0)  # constant: 0, not NaN
    with pytest.raises(ValueError):
        metrics.acf(x[:5], 5)


def test_var_es_of_a_standard_normal():
    x = np.random.default_rng(1).standard_normal(400_000)
    var, es = metrics.var_es(x, 0.01)
    assert var == pytest.approx(2.326, abs=0.03)
    assert es == pytest.approx(2.665, abs=0.03)
    rows = np.random.default_rng(2).standard_normal((7, 500))
    v, e = metrics.var_es_rows(rows, 0.05)
    assert np.allclose(np.array([metrics.var_es(r, 0.05) for r in rows]), np.column_stack([v, e]))
    assert np.all(e >= v)


def test_horizon_returns_sum_blocks_within_paths():
    paths = np.arange(2 * 7 * 1, dtype=float).reshape(2, 7, 1)
    got = metrics.horizon_returns(paths, 3)  # 2 blocks per path, the 7th day dropped
    assert got[:, 0].tolist() == [0 + 1 + 2, 3 + 4 + 5, 7 + 8 + 9, 10 + 11 + 12]


def test_marginal_scores_separate_a_scaled_distribution():
    rng = np.random.default_rng(3)
    real = rng.standard_normal((2_000, 2))
    same = metrics.marginal_scores(real, rng.standard_normal((40, 100, 2)))
    scaled = metrics.marginal_scores(real, 2 * rng.standard_normal((40, 100, 2)))
    assert set(same) == {"w1_1d", "ks_1d", "w1_5d", "ks_5d", "w1_20d", "ks_20d"}
    assert same["w1_1d"] < 0.1 < 0.5 < scaled["w1_1d"]
    assert same["ks_1d"] < scaled["ks_1d"]
    short = metrics.marginal_scores(real[:150], rng.standard_normal((40, 100, 2)))
    assert "w1_20d" not in short and "w1_5d" in short  # 7 twenty-day returns in 150 days: too few


def test_moments_and_ranks():
    rng = np.random.default_rng(4)
    heavy = rng.standard_t(4, size=(3_000, 1))
    assert metrics.moments(heavy)["kurtosis"] > 2
    normal_paths = rng.standard_normal((200, 250, 1))
    assert metrics.moment_ranks(heavy, normal_paths)["kurtosis_rank"] > 0.95
    ranks = metrics.moment_ranks(rng.standard_normal((250, 1)), normal_paths)
    assert 0.05 < ranks["skew_rank"] < 0.95 and 0.05 < ranks["kurtosis_rank"] < 0.95
    assert metrics.moment_ranks(heavy, normal_paths[:, :5]) == {}


def test_tail_risk_names_levels_in_percent():
    x = np.random.default_rng(5).standard_normal((100_000, 2))
    got = metrics.tail_risk(x, (0.01, 0.05, 0.025))
    assert set(got) == {"var_1", "es_1", "var_5", "es_5", "var_2.5", "es_2.5"}
    assert got["var_5"] == pytest.approx(1.645, abs=0.03)


def test_acf_scores_see_volatility_clustering():
    rng = np.random.default_rng(6)
    real = gjr(rng, 3_000)[:, None]
    clustered = np.stack([gjr(rng, 250) for _ in range(40)])[..., None]
    iid = rng.standard_normal((40, 250, 1))
    good, bad = metrics.acf_scores(real, clustered, 20), metrics.acf_scores(real, iid, 20)
    assert good["acf_lags"] == 20 and bad["acf_sq"] > good["acf_sq"] and bad["acf_abs"] > good["acf_abs"]
    assert metrics.acf_scores(real, iid[:, :1]) == {}  # one-day scenarios have no lags
    curves = metrics.acf_curves(real, iid, 10)
    assert set(curves) == {"r", "abs", "sq"}
    real_acf, mean, lo, hi = curves["sq"]
    assert real_acf.shape == mean.shape == lo.shape == hi.shape == (10,) and np.all(lo <= hi)


def test_leverage_negative_with_a_leverage_effect_and_zero_for_iid():
    rng = np.random.default_rng(7)
    lev = metrics.leverage(gjr(rng, 30_000))
    assert lev.shape == (5,) and lev.mean() < -0.05
    assert np.abs(metrics.leverage(rng.standard_normal(30_000))).max() < 0.03
    score = metrics.leverage_score(gjr(rng, 5_000)[:, None], rng.standard_normal((50, 250, 1)))
    assert score["leverage_real"] < -0.03 and abs(score["leverage_fake"]) < 0.02
    assert score["leverage_error"] > 0.03


def test_correlation_error():
    rng = np.random.default_rng(8)
    cov = [[1.0, 0.7], [0.7, 1.0]]
    real = rng.multivariate_normal([0, 0], cov, size=3_000)
    same = rng.multivariate_normal([0, 0], cov, size=(20, 100))
    assert metrics.correlation_error(real, same) < 0.05
    assert metrics.correlation_error(real, rng.standard_normal((20, 100, 2))) == pytest.approx(0.7, abs=0.07)
    assert metrics.correlation_error(real[:, :1], same[..., :1]) is None


def test_nearest_neighbour_distance_matches_brute_force():
    rng = np.random.default_rng(9)
    q, p = rng.standard_normal((57, 6)), rng.standard_normal((40, 6))
    brute = np.sqrt(((q[:, None] - p[None]) ** 2).sum(-1)).min(1)
    assert np.allclose(metrics.nearest_neighbour_distance(q, p, chunk=10), brute)
    assert np.all(metrics.nearest_neighbour_distance(p[:5], p) == 0)  # exact copies: exactly 0
    w = metrics.windows(np.arange(10.0).reshape(5, 2), 3)
    assert w.shape == (3, 6) and w[1].tolist() == [2, 3, 4, 5, 6, 7]


def test_memorisation_flags_copies_not_fresh_draws():
    rng = np.random.default_rng(10)
    train, test = rng.standard_normal((1_500, 2)), rng.standard_normal((500, 2))
    starts = rng.integers(0, 1_500 - 60, size=300)
    copies = np.stack([train[s : s + 60] for s in starts])
    assert metrics.memorisation(copies, train, test, max_windows=300)["nn_ratio"] < 0.1
    fresh = metrics.memorisation(rng.standard_normal((300, 60, 2)), train, test, max_windows=300)
    assert 0.85 < fresh["nn_ratio"] < 1.15 and fresh["memorisation_length"] == 20
    short = metrics.memorisation(rng.standard_normal((300, 5, 2)), train, test, max_windows=300)
    assert short["memorisation_length"] == 5


def test_kupiec_coverage():
    n, alpha = 1_000, 0.01
    hits = np.zeros(n, bool)
    hits[::100] = True  # exactly alpha * n
    assert metrics.kupiec(hits, alpha)[1] > 0.99
    hits[::20] = True  # five times too many
    assert metrics.kupiec(hits, alpha)[1] < 1e-10
    for edge in (np.zeros(n, bool), np.ones(n, bool)):
        lr, p = metrics.kupiec(edge, alpha)
        assert math.isfinite(lr) and 0 <= p <= 1
    assert metrics.kupiec(np.zeros(n, bool), alpha)[1] < 0.01  # 10 expected, none seen


def test_christoffersen_independence():
    rng = np.random.default_rng(11)
    iid = rng.random(2_000) < 0.05
    assert metrics.christoffersen(iid)[1] > 0.1
    clustered = np.zeros(2_000, bool)
    for s in rng.choice(np.arange(0, 2_000, 10), size=20, replace=False):
        clustered[s : s + 5] = True  # same 5 % rate, in runs of five days
    assert metrics.christoffersen(clustered)[1] < 1e-6
    for edge in (np.zeros(50, bool), np.ones(50, bool), np.array([False] * 49 + [True])):
        lr, p = metrics.christoffersen(edge)
        assert math.isfinite(lr) and 0 <= p <= 1


def test_fz0_prefers_the_true_var_and_es():
    alpha = 0.025
    y = np.random.default_rng(12).standard_normal(100_000)
    z = stats.norm.ppf(alpha)
    var, es = -z, stats.norm.pdf(z) / alpha
    true = metrics.fz0_loss(y, var, es, alpha)
    assert true < metrics.fz0_loss(y, 1.3 * var, 1.3 * es, alpha)
    assert true < metrics.fz0_loss(y, 0.7 * var, 0.7 * es, alpha)
    assert metrics.fz0_loss(y, var, 0.0, alpha) == float("inf")  # a collapsed forecast scores worst, not a crash
    got = metrics.backtest_scores(y[:1_000], np.full(1_000, var), np.full(1_000, es), alpha)
    assert set(got) == {"hits", "hit_rate", "kupiec_p", "christoffersen_p", "cc_p", "fz0"}
    hits = y[:1_000] <= -var  # conditional coverage: the two LRs added, on two degrees of freedom
    lr = metrics.kupiec(hits, alpha)[0] + metrics.christoffersen(hits)[0]
    assert got["cc_p"] == pytest.approx(stats.chi2.sf(lr, 2)) and metrics.conditional_coverage(hits, alpha)[0] == pytest.approx(lr)
    assert 0.01 < got["hit_rate"] < 0.04 and got["kupiec_p"] > 0.01


def test_score_paths_gives_plain_finite_floats():
    rng = np.random.default_rng(13)
    train, test = rng.standard_normal((600, 2)), rng.standard_normal((300, 2))
    got = metrics.score_paths(rng.standard_normal((30, 60, 2)), test, train)
    assert {"w1_1d", "skew", "kurtosis_rank", "var_1", "es_5", "acf_sq", "leverage_error", "correlation_error", "nn_ratio"} <= set(got)
    assert all(type(v) is float and math.isfinite(v) for v in got.values())
    one_day = metrics.score_paths(rng.standard_normal((500, 1, 1)), test[:, :1], train[:, :1])
    assert "acf_r" not in one_day and "leverage_real" not in one_day and "correlation_error" not in one_day
    assert all(math.isfinite(v) for v in one_day.values()) and one_day["memorisation_length"] == 1


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(14)
    dates = np.arange("2024-01-01", "2024-04-10", dtype="datetime64[D]")
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(dates))))
    scenarios = prices[-1] * np.exp(np.cumsum(rng.normal(0, 0.01, (200, 20)), axis=1))
    real = rng.standard_normal((500, 1))
    paths = rng.standard_normal((50, 100, 1))
    out = [
        plots.fan_chart(dates, prices, scenarios, tmp_path / "fan.png", real_future=scenarios[0]),
        plots.fan_chart(None, prices, scenarios, tmp_path / "fan_days.png"),
        plots.tail_histograms(real[:, 0], paths.ravel(), tmp_path / "tails.png"),
        plots.acf_plot(metrics.acf_curves(real, paths, 20), tmp_path / "acf.png"),
        plots.backtest_plot(dates, rng.standard_normal(len(dates)), np.full(len(dates), 2.0), tmp_path / "bt.png", 0.025),
    ]
    for path in out:
        assert path.exists() and path.stat().st_size > 1_000 and path.read_bytes()[:4] == b"\x89PNG"
