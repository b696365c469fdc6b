"""Scores for generated market-return scenarios: marginals, stylised facts, tail risk, memorisation, VaR backtests.

Conventions throughout:

* Returns are daily log returns in percent, so a k-day return is the sum of k daily ones.
* A real series is ``(T, A)``: T days, A assets. Generated scenarios are ``(n, T', A)``: n paths of T' days each.
  A function on paths takes a real series as ``(1, T, A)``.
* Risk is reported as positive losses: VaR_α = −q_α and ES_α = −E[r | r ≤ q_α].
* A statistic the data cannot support (too few days for a horizon, a lag or a per-scenario moment) is left out
  of the returned dict rather than reported as NaN.

Sources: the stylised facts of Cont (2001); the ACF and leverage scores of Wiese et al. (2020), "Quant GANs";
the FZ0 loss of Patton, Ziegel & Chen (2019); the coverage tests of Kupiec (1995) and Christoffersen (1998).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from scipy import fft, special, stats

_MIN_OBS = 10  # fewer observations than this make a statistic noise: it is skipped, not reported
_NN_BLOCK_BYTES = 64 * 2**20  # one block of query-to-pool squared distances in nearest_neighbour_distance


def _real(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"a real series must be (T, A), got shape {x.shape}")
    return x


def _paths(x, assets: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 3 or (assets is not None and x.shape[2] != assets):
        raise ValueError(f"generated paths must be (n, T', A) with A = {assets or 'the assets'}, got shape {x.shape}")
    return x


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")


def var_es(x, alpha: float) -> tuple[float, float]:
    """Empirical VaR and ES of a 1-D sample of returns at tail level ``alpha`` (0.01: the 1 % tail).

    VaR_α = −q_α, q_α the α-quantile (``np.quantile``'s default, linear interpolation); ES_α = −mean(x[x ≤ q_α]).
    Both are positive when the tail is a loss.
    """
    var, es = var_es_rows(np.ravel(np.asarray(x, dtype=float))[None, :], alpha)
    return float(var[0]), float(es[0])


def var_es_rows(x, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """VaR and ES of each row of ``x`` (m, n) → (var (m,), es (m,)), as in :func:`var_es`; for backtests, a row a day."""
    _check_alpha(alpha)
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"var_es_rows needs an (m, n) array with n ≥ 1, got shape {x.shape}")
    q = np.quantile(x, alpha, axis=1)
    tail = x <= q[:, None]  # never empty: the interpolated quantile is at least the row minimum
    es = -np.where(tail, x, 0.0).sum(axis=1) / tail.sum(axis=1)
    return -q, es


def horizon_returns(paths, k: int) -> np.ndarray:
    """Non-overlapping k-day returns of paths (n, T, A) → (m, A), pooled over paths.

    Each path is cut into T // k blocks of k consecutive days (an incomplete tail is dropped) and each block summed;
    blocks never straddle two paths. For a real series pass ``x[None]``.
    """
    if k < 1:
        raise ValueError(f"the horizon must be at least one day, got {k}")
    paths = _paths(paths)
    n, t, a = paths.shape
    m = t // k
    return paths[:, : m * k].reshape(n, m, k, a).sum(axis=2).reshape(n * m, a)


def marginal_scores(real, fake, horizons: Iterable[int] = (1, 5, 20)) -> dict[str, float]:
    """Distance between the real (T, A) and generated (n, T', A) k-day return distributions.

    Per horizon k: ``w1_{k}d``, the Wasserstein-1 distance (in percent return), and ``ks_{k}d``, the two-sample
    Kolmogorov–Smirnov statistic, each the mean over assets. A horizon with < 10 k-day returns on a side is skipped.
    """
    real = _real(real)
    fake = _paths(fake, real.shape[1])
    out = {}
    for k in horizons:
        r, f = horizon_returns(real[None], k), horizon_returns(fake, k)
        if min(len(r), len(f)) < _MIN_OBS:
            continue
        cols = range(real.shape[1])
        out[f"w1_{k}d"] = float(np.mean([stats.wasserstein_distance(r[:, j], f[:, j]) for j in cols]))
        # only the statistic is used: the asymptotic mode skips scipy's exact p-value, slow on large samples
        ks = [stats.ks_2samp(r[:, j], f[:, j], method="asymp").statistic for j in cols]
        out[f"ks_{k}d"] = float(np.mean(ks))
    return out


def moments(x) -> dict[str, float]:
    """Sample ``skew`` and excess ``kurtosis`` (bias-corrected) of returns x (m, A), mean over assets (NaN if constant)."""
    x = _real(x)
    return {"skew": float(np.mean(stats.skew(x, axis=0, bias=False))), "kurtosis": float(np.mean(stats.kurtosis(x, axis=0, bias=False)))}


def moment_ranks(real, fake) -> dict[str, float]:
    """Where the real series' 1-day skew and excess kurtosis fall among the scenarios' own values.

    ``skew_rank`` / ``kurtosis_rank``: the fraction of scenarios (n, T', A) whose own statistic is below the real
    (T, A) one, ties counted half, mean over assets. 0.5 is ideal; 0 or 1 means the real value lies outside
    everything generated. Empty when a scenario has fewer than 10 days.
    """
    real = _real(real)
    fake = _paths(fake, real.shape[1])
    if min(real.shape[0], fake.shape[1]) < _MIN_OBS:
        return {}
    out = {}
    for name, fn in (("skew", stats.skew), ("kurtosis", stats.kurtosis)):
        ref, own = fn(real, axis=0, bias=False), fn(fake, axis=1, bias=False)  # (A,), (n, A)
        # mid-rank: a generator whose every scenario matches the real value exactly scores 0.5
        below = (own < ref).mean(axis=0) + 0.5 * (own == ref).mean(axis=0)
        out[f"{name}_rank"] = float(below.mean())
    return out


def tail_risk(x, alphas: Iterable[float] = (0.01, 0.05)) -> dict[str, float]:
    """VaR and ES of returns x (m, A) per tail level, mean over assets: ``var_1``, ``es_1`` (α = 0.01), ``var_5``, ..."""
    x = _real(x)
    out = {}
    for alpha in alphas:
        var, es = var_es_rows(x.T, alpha)  # one row per asset
        out[f"var_{100 * alpha:g}"] = float(var.mean())
        out[f"es_{100 * alpha:g}"] = float(es.mean())
    return out


def acf(x, max_lag: int) -> np.ndarray:
    """Sample autocorrelation of x (..., T) at lags 1..max_lag along the last axis → (..., max_lag).

    Each series is demeaned and its lag-k autocovariance (biased: divided by T, as statsmodels' ``acf``) divided by
    the lag-0 one. A constant series has autocorrelation 0 by convention.
    """
    x = np.asarray(x, dtype=float)
    t = x.shape[-1]
    if not 1 <= max_lag < t:
        raise ValueError(f"max_lag must lie in 1..T-1 = 1..{t - 1}, got {max_lag}")
    xc = x - x.mean(axis=-1, keepdims=True)
    nfft = fft.next_fast_len(2 * t - 1, real=True)  # padding to ≥ 2T−1 makes the circular correlation linear
    spec = fft.rfft(xc, nfft, axis=-1)
    acov = fft.irfft(spec.real**2 + spec.imag**2, nfft, axis=-1)[..., : max_lag + 1]
    var0 = acov[..., :1]
    return np.divide(acov[..., 1:], var0, out=np.zeros(acov[..., 1:].shape), where=var0 > 0)


_ACF_OF: dict[str, Callable[[np.ndarray], np.ndarray]] = {"r": lambda r: r, "abs": np.abs, "sq": np.square}


def _acfs(real: np.ndarray, fake: np.ndarray, max_lag: int) -> tuple[int, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The lag count L and, per transform, the real ACFs (A, L) and the scenarios' ACFs (n, A, L)."""
    lags = min(max_lag, fake.shape[1] - 1, real.shape[0] - 1)
    if lags < 1:
        return lags, {}
    return lags, {name: (acf(f(real).T, lags), acf(np.swapaxes(f(fake), 1, 2), lags)) for name, f in _ACF_OF.items()}


def acf_scores(real, fake, max_lag: int = 100) -> dict[str, float]:
    """How well scenarios (n, T', A) reproduce the real (T, A) autocorrelation of r, |r| and r².

    ``acf_r``, ``acf_abs``, ``acf_sq``: ‖ACF_real − mean over scenarios of ACF_scenario‖₂ over lags 1..L,
    L = min(max_lag, T'−1, T−1), mean over assets (0 is perfect); ``acf_lags``: L. Empty when L < 1.
    """
    real = _real(real)
    lags, curves = _acfs(real, _paths(fake, real.shape[1]), max_lag)
    if not curves:
        return {}
    out = {f"acf_{name}": float(np.linalg.norm(r - s.mean(axis=0), axis=-1).mean()) for name, (r, s) in curves.items()}
    return out | {"acf_lags": float(lags)}


def acf_curves(real, fake, max_lag: int = 100, asset: int = 0, band: tuple[float, float] = (0.05, 0.95)) -> dict:
    """The ACF curves behind :func:`acf_scores`, for one asset (column ``asset``), for plots.

    Returns {"r" | "abs" | "sq": (real (L,), scenario mean (L,), band low (L,), band high (L,))}, the band being
    the ``band`` quantiles over scenarios at each lag. Empty when L < 1.
    """
    real = _real(real)
    _, curves = _acfs(real[:, [asset]], _paths(fake, real.shape[1])[..., [asset]], max_lag)
    out = {}
    for name, (r, s) in curves.items():
        lo, hi = np.quantile(s[:, 0], band, axis=0)
        out[name] = (r[0], s[:, 0].mean(axis=0), lo, hi)
    return out


def _corr_last(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis; 0 where a side is constant (there is no co-movement)."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    return np.divide((a * b).sum(axis=-1), den, out=np.zeros(den.shape), where=den > 0)


def leverage(x, lags: Iterable[int] = range(1, 6)) -> np.ndarray:
    """Leverage effect of returns x (..., T): lev(k) = corr(r_t, r²_{t+k}) per lag → (..., len(lags)).

    Negative in equity markets: falls raise later volatility more than rises do.
    """
    x = np.asarray(x, dtype=float)
    lags, t = list(lags), x.shape[-1]
    if min(lags) < 1 or t - max(lags) < 2:
        raise ValueError(f"lags must lie in 1..T-2 = 1..{t - 2}, got {lags}")
    return np.stack([_corr_last(x[..., : t - k], np.square(x[..., k:])) for k in lags], axis=-1)


def leverage_score(real, fake, lags: Iterable[int] = range(1, 6)) -> dict[str, float]:
    """Leverage of the real series (T, A) against the scenarios' (n, T', A).

    ``leverage_real``: mean over lags and assets; ``leverage_fake``: the same, also averaged over scenarios;
    ``leverage_error``: mean absolute difference of the two lag curves. Empty with < 10 pairs at the longest lag.
    """
    real = _real(real)
    fake, lags = _paths(fake, real.shape[1]), list(lags)
    if min(real.shape[0], fake.shape[1]) - max(lags) < _MIN_OBS:
        return {}
    lev_real = leverage(real.T, lags)  # (A, L)
    lev_fake = leverage(np.swapaxes(fake, 1, 2), lags).mean(axis=0)  # (A, L)
    return {
        "leverage_real": float(lev_real.mean()),
        "leverage_fake": float(lev_fake.mean()),
        "leverage_error": float(np.abs(lev_real - lev_fake).mean()),
    }


def correlation_error(real, fake) -> float | None:
    """Mean absolute difference of the off-diagonal 1-day cross-asset correlations, real (T, A) against scenarios
    (n, T', A) pooled into one sample. None for a single asset."""
    real = _real(real)
    a = real.shape[1]
    fake = _paths(fake, a)
    if a == 1:
        return None
    i, j = np.triu_indices(a, 1)
    real_c = _corr_last(real.T[i], real.T[j])
    pooled = fake.reshape(-1, a).T
    return float(np.abs(real_c - _corr_last(pooled[i], pooled[j])).mean())


def windows(x, length: int, stride: int = 1) -> np.ndarray:
    """Sliding windows of ``length`` days of x (T, A), every ``stride`` days → (m, length·A), flattened day by day
    (day 1's A returns, then day 2's, ...); (0, length·A) when T < length."""
    x = _real(x)
    t, a = x.shape
    if t < length:
        return np.empty((0, length * a))
    w = np.lib.stride_tricks.sliding_window_view(x, length, axis=0)[::stride]  # (m, A, length)
    return np.swapaxes(w, 1, 2).reshape(len(w), length * a)


def nearest_neighbour_distance(queries, pool, chunk: int | None = None) -> np.ndarray:
    """Euclidean distance of each query (q, d) to its nearest row of ``pool`` (p, d) → (q,).

    Queries go ``chunk`` rows at a time, by default as many as keep one (chunk, p) float64 block at 64 MB
    (q = 10,000, p = 4,000, d = 40 peaks near 100 MB).
    """
    q, p = np.asarray(queries, dtype=float), np.asarray(pool, dtype=float)
    if q.ndim != 2 or p.ndim != 2 or q.shape[1] != p.shape[1] or len(p) == 0:
        raise ValueError(f"need queries (q, d) and a non-empty pool (p, d), got {q.shape} and {p.shape}")
    chunk = chunk or max(1, _NN_BLOCK_BYTES // (8 * len(p)))
    p_sq = np.einsum("ij,ij->i", p, p)
    out = np.empty(len(q))
    for s in range(0, len(q), chunk):
        block = q[s : s + chunk]
        d2 = block @ p.T  # ‖q − p‖² up to ‖q‖², constant per row and so irrelevant to the argmin
        d2 *= -2.0
        d2 += p_sq
        nearest = d2.argmin(axis=1)
        # the winner's distance recomputed directly: the expansion cancels badly for near copies
        out[s : s + chunk] = np.linalg.norm(block - p[nearest], axis=1)
    return out


def memorisation(fake, train, test, length: int = 20, max_windows: int = 2000, seed: int = 0) -> dict[str, float]:
    """Does the generator copy its training data? Distances of windows to the training windows.

    One window of ``length`` days is cut from each scenario (n, T', A) at a random start (at most ``max_windows``
    scenarios, drawn with a seeded rng); ``nn_fake`` is their median Euclidean distance to the nearest training
    window (every window of ``train`` (T1, A)). ``nn_test`` is the same for windows of the held-out ``test`` (T2, A)
    (at most ``max_windows``): the distance a fresh draw of the market has. ``nn_ratio`` = nn_fake / nn_test is
    ≪ 1 for a generator that replays training data; ≈ 1 or more is fine. When T' < length all three sets use
    windows of T' days; ``memorisation_length`` gives the length used. Empty when train or test is shorter.
    """
    train, test = _real(train), _real(test)
    a = train.shape[1]
    fake = _paths(fake, a)
    if test.shape[1] != a:
        raise ValueError(f"test has {test.shape[1]} assets, train {a}")
    n, t_fake, _ = fake.shape
    length = min(length, t_fake)  # short scenarios are compared whole
    pool, ref = windows(train, length), windows(test, length)
    if len(pool) == 0 or len(ref) == 0:
        return {}
    rng = np.random.default_rng(seed)
    pick = rng.choice(n, size=min(n, max_windows), replace=False)
    starts = rng.integers(0, t_fake - length + 1, size=len(pick))
    gen = fake[pick[:, None], starts[:, None] + np.arange(length)].reshape(len(pick), length * a)
    if len(ref) > max_windows:
        ref = ref[rng.choice(len(ref), size=max_windows, replace=False)]
    nn_fake = float(np.median(nearest_neighbour_distance(gen, pool)))
    nn_test = float(np.median(nearest_neighbour_distance(ref, pool)))
    if nn_test == 0:
        raise ValueError("the test windows repeat training windows: the test period overlaps the training data")
    return {"nn_fake": nn_fake, "nn_test": nn_test, "nn_ratio": nn_fake / nn_test, "memorisation_length": float(length)}


def _loglik(zeros: int, ones: int, p: float | None = None) -> float:
    """Bernoulli log-likelihood of ``zeros`` misses and ``ones`` hits at hit probability p, by default the fitted
    rate ones / (zeros + ones). xlogy makes 0·ln 0 = 0: no hits, or only hits, give a finite value."""
    if p is None:
        p = ones / (zeros + ones) if zeros + ones else 0.0
    return float(special.xlogy(zeros, 1 - p) + special.xlogy(ones, p))


def kupiec(hits, alpha: float) -> tuple[float, float]:
    """Kupiec's unconditional coverage test of VaR hits (bool (n,)) at level alpha → (LR, p-value).

    LR = −2[ℓ(α) − ℓ(π̂)], ℓ the Bernoulli log-likelihood of the hits and π̂ their rate; χ²₁ under correct coverage.
    Finite with no hits or only hits (0·ln 0 = 0). A small p rejects the VaR.
    """
    _check_alpha(alpha)
    hits = np.ravel(np.asarray(hits, dtype=bool))
    if hits.size == 0:
        raise ValueError("kupiec needs at least one day")
    x = int(hits.sum())
    n = hits.size
    lr = max(0.0, -2.0 * (_loglik(n - x, x, alpha) - _loglik(n - x, x)))  # clip rounding below 0
    return lr, float(stats.chi2.sf(lr, 1))


def christoffersen(hits) -> tuple[float, float]:
    """Christoffersen's Markov test that VaR hits (bool (n,)) are independent from day to day → (LR, p).

    LR = −2[ℓ(π̂) − ℓ(π̂₀₁, π̂₁₁)], one hit rate against separate rates after a miss and after a hit; χ²₁ under
    independence. Transition counts of 0 are handled (0·ln 0 = 0). A small p means the hits cluster.
    """
    h = np.ravel(np.asarray(hits, dtype=bool))
    if h.size < 2:
        raise ValueError("christoffersen needs at least two days")
    prev, nxt = h[:-1], h[1:]
    n00, n01 = int(np.sum(~prev & ~nxt)), int(np.sum(~prev & nxt))
    n10, n11 = int(np.sum(prev & ~nxt)), int(np.sum(prev & nxt))
    restricted = _loglik(n00 + n10, n01 + n11)
    markov = _loglik(n00, n01) + _loglik(n10, n11)
    lr = max(0.0, -2.0 * (restricted - markov))
    return lr, float(stats.chi2.sf(lr, 1))


def conditional_coverage(hits, alpha: float) -> tuple[float, float]:
    """Christoffersen's conditional coverage test: LR_cc = LR_uc + LR_ind, χ²₂ under hits that are right in number and
    independent → (LR, p). A small p rejects the VaR on either ground."""
    lr = kupiec(hits, alpha)[0] + christoffersen(hits)[0]
    return lr, float(stats.chi2.sf(lr, 2))


def fz0_loss(y, var, es, alpha: float) -> float:
    """Mean FZ0 loss of VaR/ES forecasts for realised returns y (n,); lower is better.

    With v = −var and e = −es (the forecasts as returns, both negative), per day
    −1{y ≤ v}(v − y)/(α e) + v/e + ln(−e) − 1, a strictly consistent scoring function for the pair (VaR, ES).
    ``var`` and ``es`` are (n,) or scalars. A forecast with ES ≤ 0 (no loss expected even in
    the tail: a collapsed model) has no finite score: the loss is then ``inf``, the worst.
    """
    _check_alpha(alpha)
    y, var, es = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (y, var, es)))
    if np.any(es <= 0):
        return float("inf")
    v, e = -var, -es
    loss = (y <= v) * (y - v) / (alpha * e) + v / e + np.log(-e) - 1.0  # −1{y ≤ v}(v − y) written as 1{y ≤ v}(y − v)
    return float(loss.mean())


def backtest_scores(y, var, es, alpha: float) -> dict[str, float]:
    """Backtest of daily VaR/ES forecasts against realised returns y (n,).

    A hit is a day with y ≤ −VaR. Returns ``hits`` (their number), ``hit_rate`` (α is right), ``kupiec_p``,
    ``christoffersen_p``, ``cc_p`` (conditional coverage) and ``fz0`` (mean FZ0 loss).
    """
    y = np.asarray(y, dtype=float)
    hits = y <= -np.asarray(var, dtype=float)
    return {
        "hits": int(hits.sum()),
        "hit_rate": float(hits.mean()),
        "kupiec_p": kupiec(hits, alpha)[1],
        "christoffersen_p": christoffersen(hits)[1] if hits.size > 1 else float("nan"),
        "cc_p": conditional_coverage(hits, alpha)[1] if hits.size > 1 else float("nan"),
        "fz0": fz0_loss(y, var, es, alpha),
    }


def score_paths(fake, real_test, train=None, max_lag: int = 100, window: int = 20) -> dict[str, float]:
    """All scenario scores of generated paths (n, T', A) against a held-out real series (T, A).

    Combines :func:`marginal_scores`, :func:`moments` and :func:`tail_risk` of the scenarios' pooled 1-day returns,
    :func:`moment_ranks`, :func:`acf_scores` (up to ``max_lag``), :func:`leverage_score`, :func:`correlation_error`
    (several assets only) and, given the training series (T1, A), :func:`memorisation` (``window``-day windows).
    Statistics the scenario length cannot support are absent.
    """
    real = _real(real_test)
    fake = _paths(fake, real.shape[1])
    daily = fake.reshape(-1, real.shape[1])
    out = marginal_scores(real, fake) | moments(daily) | moment_ranks(real, fake) | tail_risk(daily)
    out |= acf_scores(real, fake, max_lag) | leverage_score(real, fake)
    corr = correlation_error(real, fake)
    if corr is not None:
        out["correlation_error"] = corr
    if train is not None:
        out |= memorisation(fake, train, real, window)
    return {k: float(v) for k, v in out.items()}
