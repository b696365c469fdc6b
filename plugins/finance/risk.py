"""Risk of a book: VaR and ES exactly where a model's distribution is known, and with their Monte-Carlo error where it is drawn.

Conventions (docs/finance.md, "Positions and money"):

* A model speaks in daily log returns in percent. A position's return over a horizon is its
  *simple* return, ``100·(exp(r/100) − 1)`` for the horizon's log return r, and a book's return
  is the weighted sum of its positions' simple returns (weights: shares of the book's value).
  A long position never loses more than 100 %.
* VaR_α = −q_α and ES_α = −E[X | X ≤ q_α] of the book's return X, both positive for a loss.

**Exact**: where a model knows the next days' distribution of an asset's log return
(``Marginal``: a location-scale Student t or normal, or a location-scale empirical
distribution), a one-asset book's VaR/ES is computed from it, not from draws: VaR by the
quantile, ES by the integral of the quantile function (closed form for the log return;
a Gauss-Legendre quadrature of ``100·expm1(Q(u)/100)`` over u ∈ (0, α) for the simple return;
an exact sum for an empirical distribution, whose VaR is its lower α-quantile).

**Drawn**: from n draws, VaR is ``np.quantile``'s α-quantile and ES the mean of the draws at
or below it; their Monte-Carlo standard errors are the asymptotic ones of these estimators
(the quantile's α(1−α)/(n f(q)²) with f estimated from the order statistics √(nα(1−α)) either
side; ES's [Var(X | X ≤ q) + (1 − α)(q − m)²]/(nα), m the tail mean; and their covariance
(1 − α)(q − m)/(n f(q))). Sources: Manistre & Hancock (2005); Acerbi & Székely (2014) for Z2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

_NODES = ((np.polynomial.legendre.leggauss(96)[0] + 1) / 2, np.polynomial.legendre.leggauss(96)[1] / 2)  # on (0, 1)


@dataclass
class Marginal:
    """Each forecast day's (D) exact distribution of each asset's (A) horizon log return (percent): X = loc + scale·Z.

    Z is Student t with ``nu`` degrees of freedom per asset (``inf``: standard normal), or, when
    ``values`` is given, uniform over its rows: (m, A) shared by every day, or (D, m, A).
    """

    loc: np.ndarray  # (D, A)
    scale: np.ndarray  # (D, A), > 0
    nu: np.ndarray | None = None  # (A,)
    values: np.ndarray | None = None  # (m, A) or (D, m, A)

    @property
    def assets(self) -> int:
        return self.loc.shape[1]


def simple(log_return):
    """A horizon's log return (percent) as the simple return of a long position (percent): 100·(exp(r/100) − 1)."""
    return 100.0 * np.expm1(np.asarray(log_return, dtype=float) / 100.0)


def exact_var_es(m: Marginal, alpha: float, as_simple: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """VaR and ES (D, A) at tail probability ``alpha`` of a long position in each asset, from its exact distribution.

    ``as_simple``: of the simple return (the position's), else of the log return (the model's own unit).
    """
    if m.values is not None:
        return _empirical_var_es(m, alpha, as_simple)
    loc, scale = np.asarray(m.loc, dtype=float), np.asarray(m.scale, dtype=float)
    nu = np.full(loc.shape[1], np.inf) if m.nu is None else np.asarray(m.nu, dtype=float)
    z = np.where(np.isinf(nu), stats.norm.ppf(alpha), stats.t.ppf(alpha, np.where(np.isinf(nu), 1.0, nu)))
    q = loc + scale * z
    if not as_simple:
        # E[Z | Z <= z]: −φ(z)/α (normal), −(ν + z²)/(ν − 1)·f_ν(z)/α (Student t)
        safe_nu = np.where(np.isinf(nu), 3.0, nu)
        tail_t = -(safe_nu + z**2) / (safe_nu - 1) * stats.t.pdf(z, safe_nu) / alpha
        tail = np.where(np.isinf(nu), -stats.norm.pdf(z) / alpha, tail_t)
        return -q, -(loc + scale * tail)
    var = -simple(q)
    c = 1.0 / 100.0
    if np.all(np.isinf(nu)):  # E[e^{cX} 1{X <= q}] = exp(cμ + c²σ²/2)·Φ(z − cσ) for X normal
        partial = np.exp(c * loc + 0.5 * (c * scale) ** 2) * special.ndtr(z - c * scale)
        return var, -100.0 * (partial / alpha - 1.0)

    # ES = −(100/α)∫_0^α expm1(Q(u)/100) du with u = α·w⁴: a smooth integrand on (0, 1) (expm1 is bounded below by −1),
    # which Gauss-Legendre on 96 nodes integrates to about 1e-13 for 2 < ν; the nodes' quantiles serve every day
    w, weight = _NODES
    zw = np.stack([stats.norm.ppf(alpha * w**4) if np.isinf(v) else stats.t.ppf(alpha * w**4, v) for v in nu], axis=-1)  # (96, A)
    mean = np.einsum("dka,k->da", np.expm1((loc[:, None, :] + scale[:, None, :] * zw[None]) / 100.0), 4 * w**3 * weight)
    return var, -100.0 * mean


def _empirical_var_es(m: Marginal, alpha: float, as_simple: bool) -> tuple[np.ndarray, np.ndarray]:
    """The exact VaR/ES of loc + scale·V, V uniform over m values: VaR the lower α-quantile, ES the α-tail's mean with the
    atom at the quantile counted by the share of it inside the tail (Acerbi & Tasche's definition)."""
    values = np.sort(np.asarray(m.values, dtype=float), axis=-2)  # scale > 0 keeps the order of loc + scale·v
    if values.ndim == 2:
        values = values[None]
    x = m.loc[:, None, :] + m.scale[:, None, :] * values  # (D, m, A)
    if as_simple:
        x = simple(x)
    count = x.shape[1]
    k = int(np.ceil(count * alpha - 1e-12))  # the k-th smallest is the lower α-quantile
    k = min(max(k, 1), count)
    var = -x[:, k - 1]
    es = -(x[:, : k - 1].sum(axis=1) / count + (alpha - (k - 1) / count) * x[:, k - 1]) / alpha
    return var, es


@dataclass
class Drawn:
    """VaR and ES estimated from draws (rows), with their Monte-Carlo standard errors and covariance (each (R,))."""

    var: np.ndarray
    es: np.ndarray
    var_se: np.ndarray
    es_se: np.ndarray
    cov: np.ndarray


def drawn_var_es(x, alpha: float) -> Drawn:
    """VaR and ES of each row of draws ``x`` (R, n) at tail probability ``alpha``, with their Monte-Carlo errors (module docstring)."""
    x = np.sort(np.asarray(x, dtype=float), axis=1)
    n = x.shape[1]
    q = np.quantile(x, alpha, axis=1)
    tail = x <= q[:, None]
    k_tail = tail.sum(axis=1)
    mean = np.where(tail, x, 0.0).sum(axis=1) / k_tail
    spread = np.where(tail, (x - mean[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(k_tail - 1, 1)
    k = max(1, int(round(np.sqrt(n * alpha * (1 - alpha)))))
    j = alpha * (n - 1)
    lo, hi = int(np.clip(np.floor(j - k), 0, n - 1)), int(np.clip(np.ceil(j + k), 0, n - 1))
    inv_density = (x[:, hi] - x[:, lo]) / max(hi - lo, 1) * (n - 1)  # 1/f(q): the spacing of order statistics around q
    var_se = np.sqrt(alpha * (1 - alpha) / n) * inv_density
    es_se = np.sqrt((spread + (1 - alpha) * (q - mean) ** 2) / (n * alpha))
    cov = (1 - alpha) * (q - mean) * inv_density / n
    return Drawn(-q, -mean, var_se, es_se, cov)


def book_returns(log_returns, weights) -> np.ndarray:
    """The book's simple return (percent) from each asset's horizon log return (..., A) and the weights (A,)."""
    return simple(log_returns) @ np.asarray(weights, dtype=float)


# the Basel Committee's traffic light for 250 days of 99 % VaR: exceptions up to 4 green, 5-9 yellow, 10 or more red
BASEL_ZONES = ((4, "green"), (9, "yellow"), (250, "red"))


def basel_zone(exceptions: int) -> str:
    """The traffic-light zone of ``exceptions`` of a one-day 99 % VaR over the last 250 days."""
    return next(zone for limit, zone in BASEL_ZONES if exceptions <= limit)


def acerbi_szekely_z2(y, var, es, alpha: float, null_draws, replications: int = 5000, seed: int = 0) -> tuple[float, float]:
    """Acerbi & Székely's Z2 test of ES forecasts → (Z2, p-value); a small p means ES understates the losses.

    Z2 = Σ_t y_t·1{y_t < −VaR_t} / (T·α·ES_t) + 1 (0 when the model is right, negative when losses in the tail exceed ES).
    The p-value is simulated under the model: each replication draws every day's return from its own forecast
    distribution (one of the day's ``null_draws`` (T, M) at random), p = share of replications with Z2 at or below
    the observed one.
    """
    y, var, es = (np.asarray(v, dtype=float) for v in (y, var, es))
    draws = np.asarray(null_draws, dtype=float)
    t = len(y)
    z2 = float(np.sum(y * (y < -var) / (t * alpha * es)) + 1.0)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, draws.shape[1], (replications, t))
    sim = draws[np.arange(t), pick]  # (replications, T)
    z2_null = np.sum(sim * (sim < -var) / (t * alpha * es), axis=1) + 1.0
    return z2, float((np.sum(z2_null <= z2) + 1) / (replications + 1))


def fz0_se(y, var, es, var_se, es_se, cov, alpha: float) -> float:
    """The Monte-Carlo standard error of the mean FZ0 loss of drawn forecasts: the delta method, day by day.

    Each day's loss L(v, e) = 1{y ≤ v}(y − v)/(αe) + v/e + ln(−e) − 1 (v = −VaR, e = −ES) moves with the
    forecasts' errors through ∂L/∂v = −1{y ≤ v}/(αe) + 1/e and ∂L/∂e = −1{y ≤ v}(y − v)/(αe²) − v/e² + 1/e;
    days are drawn independently, so the variances add. Exact forecasts (standard errors 0) add nothing.
    """
    y, var, es, var_se, es_se, cov = (np.asarray(a, dtype=float) for a in (y, var, es, var_se, es_se, cov))
    v, e = -var, -es
    hit = (y <= v).astype(float)
    d_v = -hit / (alpha * e) + 1.0 / e
    d_e = -hit * (y - v) / (alpha * e**2) - v / e**2 + 1.0 / e
    # (v, e) = −(VaR, ES): the variances and the covariance are those of (VaR, ES)
    per_day = d_v**2 * var_se**2 + d_e**2 * es_se**2 + 2 * d_v * d_e * cov
    return float(np.sqrt(np.clip(per_day, 0, None).sum()) / len(y))


def hits_se(y, var, var_se) -> float:
    """The Monte-Carlo standard error of the hit count: a day is a hit with probability Φ((−y − VaR̂)/se) on a redraw."""
    y, var, var_se = (np.asarray(a, dtype=float) for a in (y, var, var_se))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(var_se > 0, special.ndtr((-var - y) / np.where(var_se > 0, var_se, 1.0)), (y <= -var).astype(float))
    return float(np.sqrt(np.sum(p * (1 - p))))
