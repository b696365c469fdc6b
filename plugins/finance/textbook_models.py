"""The textbook scenario models a risk desk would otherwise use: Gaussian, GARCH / GJR-GARCH, filtered historical simulation,
block bootstrap.

Each model has one interface, shared with the scenario GAN, so that the sample step and
the risk backtest treat them alike::

    model.fit(returns)                              # (T, A) percent log returns
    paths = model.simulate(history, n, horizon, rng)  # history (T', A) -> (n, horizon, A)
    model.state() / Model.from_state(state)         # JSON-able parameters (the checkpoint)
    model.exact(returns, days, horizon)             # each day's exact distribution of the next days, or None
    model.fit_record()                              # the last fit: parameters, standard errors, diagnostics

``simulate`` conditions on ``history`` where the model can (GARCH filters its variance
through it; the bootstrap resamples its most recent window); the Gaussian ignores it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from scipy import stats

from .risk import Marginal

# a parameter this close to a bound of arch's optimiser sits on it: the fit is named in the report
BOUND_TOLERANCE = 1e-6


class ScenarioModel:
    """The interface every finance model implements (see the module docstring)."""

    name: ClassVar[str]

    def fit(self, returns: np.ndarray) -> None:
        raise NotImplementedError

    def simulate(self, history: np.ndarray, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def conditional(self, returns: np.ndarray, days: np.ndarray, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        """Scenarios from each of ``days`` on, given the returns before it: (len(days), n, horizon, A).

        The risk backtest's call; models that can share work across days override it.
        """
        return np.stack([self.simulate(returns[:d], n, horizon, rng) for d in days])

    def exact(self, returns: np.ndarray, days: np.ndarray, horizon: int) -> Marginal | None:
        """Each of ``days``' exact distribution of every asset's next-``horizon``-day log return given the returns
        before it, where the model knows it in closed form (the risk backtest then needs no draws); else None."""
        return None

    def fit_record(self) -> list[dict[str, Any]]:
        """The last fit, one record per asset: ``params``, and where the model has them ``std_err``, ``loglik``,
        ``converged``, ``on_bound`` (the parameters at a bound of the optimiser) and what else describes it."""
        return []

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ScenarioModel:
        raise NotImplementedError


class GaussianModel(ScenarioModel):
    """Independent days drawn from one multivariate normal fitted to the returns (the textbook baseline)."""

    name = "gaussian"

    def __init__(self, mean: Literal["sample", "zero"] = "sample", window: int | None = None):
        self.mean_kind, self.window = mean, window
        self.mu: np.ndarray | None = None
        self.cov: np.ndarray | None = None

    def fit(self, returns: np.ndarray) -> None:
        x = returns[-self.window :] if self.window else returns
        self.mu = x.mean(0) if self.mean_kind == "sample" else np.zeros(x.shape[1])
        self.cov = np.atleast_2d(np.cov(x, rowvar=False))

    def simulate(self, history: np.ndarray, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        chol = np.linalg.cholesky(self.cov)
        z = rng.standard_normal((n, horizon, len(self.mu)))
        return self.mu + z @ chol.T

    def exact(self, returns: np.ndarray, days: np.ndarray, horizon: int) -> Marginal:
        # a sum of h independent normal days: N(h·μ, h·σ²), whatever came before
        d = len(days)
        sd = np.sqrt(np.diag(self.cov))
        return Marginal(np.tile(horizon * self.mu, (d, 1)), np.tile(np.sqrt(horizon) * sd, (d, 1)))

    def fit_record(self) -> list[dict[str, Any]]:
        return [{"params": {"mu": float(m), "sd": float(np.sqrt(v))}} for m, v in zip(self.mu, np.diag(self.cov))]

    def state(self) -> dict[str, Any]:
        return {"mean_kind": self.mean_kind, "window": self.window, "mu": self.mu.tolist(), "cov": self.cov.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GaussianModel:
        model = cls(state["mean_kind"], state["window"])
        model.mu, model.cov = np.asarray(state["mu"]), np.asarray(state["cov"])
        return model


class GarchModel(ScenarioModel):
    """GARCH(1,1) or GJR-GARCH(1,1,1) with Student-t innovations per asset (``arch``), joined by constant conditional correlation.

    The mean is zero or the sample mean, never ``arch``'s constant-mean fit: on the S&P 500
    it finds 0.062 %/day against a sample mean of 0.013 %, and that drift compounds over a
    horizon. Assets are joined by a Gaussian copula with the correlation of the standardised
    residuals, each keeping its own t tail.
    """

    name = "garch"

    def __init__(self, vol: Literal["garch", "gjr"] = "gjr", mean: Literal["sample", "zero"] = "zero"):
        self.vol, self.mean_kind = vol, mean
        self.params: list[dict[str, float]] = []  # per asset: mu, omega, alpha, gamma, beta, nu
        self.corr: np.ndarray | None = None

    def fit(self, returns: np.ndarray) -> None:
        from arch import arch_model

        self.params, residuals, self.records = [], [], []
        for a in range(returns.shape[1]):
            mu = float(returns[:, a].mean()) if self.mean_kind == "sample" else 0.0
            spec = arch_model(returns[:, a] - mu, mean="Zero", vol="GARCH", p=1, o=1 if self.vol == "gjr" else 0, q=1, dist="t")
            res = spec.fit(disp="off")
            self.records.append(_arch_record(spec, res, returns[:, a] - mu))
            p = res.params
            self.params.append(
                {
                    "mu": mu,
                    "omega": float(p["omega"]),
                    "alpha": float(p["alpha[1]"]),
                    "gamma": float(p["gamma[1]"]) if self.vol == "gjr" else 0.0,
                    "beta": float(p["beta[1]"]),
                    "nu": float(p["nu"]),
                }
            )
            residuals.append(np.asarray(res.std_resid))
        self.residuals = np.stack(residuals, axis=1)  # (T, A): the fit window's standardised residuals
        self.corr = np.atleast_2d(np.corrcoef(self.residuals, rowvar=False)) if len(residuals) > 1 else np.ones((1, 1))

    def fit_record(self) -> list[dict[str, Any]]:
        return getattr(self, "records", [])

    def exact(self, returns: np.ndarray, days: np.ndarray, horizon: int) -> Marginal | None:
        if horizon != 1:
            return None  # the variance of later days depends on the draws before them: drawn
        scale = np.sqrt(self._variances(returns[: int(max(days))])[np.asarray(days)])
        nu = np.array([p["nu"] for p in self.params])
        mu = np.array([p["mu"] for p in self.params])
        return Marginal(np.tile(mu, (len(days), 1)), scale * np.sqrt((nu - 2) / nu), nu=nu)  # unit-variance t

    def _variances(self, history: np.ndarray) -> np.ndarray:
        """Conditional variances (T+1, A): row t is the variance of day t given days before it (row T: tomorrow)."""
        eps = history - np.array([p["mu"] for p in self.params])
        omega, alpha, gamma, beta = (np.array([p[k] for p in self.params]) for k in ("omega", "alpha", "gamma", "beta"))
        # arch's backcast: an exponentially weighted mean of the first squared residuals
        w = 0.94 ** np.arange(min(75, len(eps)))
        var = (w[:, None] * eps[: len(w)] ** 2).sum(0) / w.sum()
        out = np.empty((len(eps) + 1, eps.shape[1]))
        out[0] = var
        for t, e in enumerate(eps):
            var = omega + (alpha + gamma * (e < 0)) * e**2 + beta * var
            out[t + 1] = var
        return out

    def innovations(self, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        """Unit-variance Student-t draws (n, horizon, A), correlated across assets through a Gaussian copula."""
        n, horizon = shape
        a = len(self.params)
        z = rng.standard_normal((n, horizon, a)) @ np.linalg.cholesky(self.corr).T
        u = stats.norm.cdf(z)
        out = np.empty_like(z)
        for i, p in enumerate(self.params):
            nu = p["nu"]
            out[..., i] = stats.t.ppf(u[..., i], nu) * np.sqrt((nu - 2) / nu)
        return out

    def simulate(self, history: np.ndarray, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        return self._forward(self._variances(history)[-1][None], n, horizon, rng)[0]

    def conditional(self, returns: np.ndarray, days: np.ndarray, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        # one pass of the variance recursion serves every day
        return self._forward(self._variances(returns[: int(max(days))])[np.asarray(days)], n, horizon, rng)

    def _forward(self, var0: np.ndarray, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        """Paths (D, n, horizon, A) from starting variances var0 (D, A)."""
        mu = np.array([p["mu"] for p in self.params])
        omega, alpha, gamma, beta = (np.array([p[k] for p in self.params]) for k in ("omega", "alpha", "gamma", "beta"))
        d = len(var0)
        eta = self.innovations(rng, (d * n, horizon)).reshape(d, n, horizon, len(mu))
        var = np.repeat(var0[:, None, :], n, axis=1)
        out = np.empty_like(eta)
        for t in range(horizon):
            e = np.sqrt(var) * eta[:, :, t]
            out[:, :, t] = mu + e
            var = omega + (alpha + gamma * (e < 0)) * e**2 + beta * var
        return out

    def state(self) -> dict[str, Any]:
        return {"vol": self.vol, "mean_kind": self.mean_kind, "params": self.params, "corr": self.corr.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GarchModel:
        model = cls(state["vol"], state["mean_kind"])
        model.params, model.corr = state["params"], np.asarray(state["corr"])
        return model


class BootstrapModel(ScenarioModel):
    """Stationary block bootstrap of the most recent ``window`` days (all of them when None).

    The mean block length comes from ``arch.bootstrap.optimal_block_length`` on the squared
    returns: the dependence that matters for risk is in volatility, which squared returns
    carry and raw returns hardly show. With ``window=500`` and a one-day horizon this is the
    desk's 500-day historical simulation. Resampling is done here, vectorised over
    scenarios, because ``arch``'s bootstrap draws one full-length resample at a time.
    """

    name = "bootstrap"

    def __init__(self, window: int | None = 500, block: float | None = None):
        self.window, self.block = window, block
        self.fitted_block: float | None = None

    def fit(self, returns: np.ndarray) -> None:
        from arch.bootstrap import optimal_block_length

        x = returns[-self.window :] if self.window else returns
        if self.block:
            self.fitted_block = float(self.block)
        else:
            lengths = optimal_block_length(x**2)["stationary"].to_numpy()
            self.fitted_block = float(max(1.0, np.nanmax(lengths)))

    def simulate(self, history: np.ndarray, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        pool = history[-self.window :] if self.window else history
        m = len(pool)
        idx = np.empty((n, horizon), dtype=np.int64)
        idx[:, 0] = rng.integers(0, m, n)
        restart = rng.random((n, horizon)) < 1.0 / self.fitted_block
        fresh = rng.integers(0, m, (n, horizon))
        for t in range(1, horizon):
            idx[:, t] = np.where(restart[:, t], fresh[:, t], (idx[:, t - 1] + 1) % m)  # blocks wrap around (stationary bootstrap)
        return pool[idx]

    def exact(self, returns: np.ndarray, days: np.ndarray, horizon: int) -> Marginal | None:
        if horizon != 1:
            return None
        # tomorrow is one of the window's days, each as likely: the historical simulation's own distribution
        if not self.window or int(min(days)) < self.window:
            return None  # windows of different lengths (all history, or a short one): drawn
        pools = np.stack([returns[d - self.window : d] for d in days])
        d, a = len(days), returns.shape[1]
        return Marginal(np.zeros((d, a)), np.ones((d, a)), values=pools)

    def fit_record(self) -> list[dict[str, Any]]:
        return [{"params": {"window": self.window, "mean_block": self.fitted_block}}]

    def state(self) -> dict[str, Any]:
        return {"window": self.window, "block": self.block, "fitted_block": self.fitted_block}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BootstrapModel:
        model = cls(state["window"], state["block"])
        model.fitted_block = state["fitted_block"]
        return model


class FilteredHistoricalModel(GarchModel):
    """Filtered historical simulation: the GARCH filter's variance, with innovations drawn from the fit window's own
    standardised residuals instead of a Student t (Barone-Adesi et al., 1999; the desk's usual baseline).

    A day's innovations are one day's residuals of every asset together (their dependence as it was), drawn with
    replacement; ``nu`` is fitted (the filter's likelihood) but does not shape the draws.
    """

    name = "fhs"

    def innovations(self, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        n, horizon = shape
        return self.residuals[rng.integers(0, len(self.residuals), (n, horizon))]

    def exact(self, returns: np.ndarray, days: np.ndarray, horizon: int) -> Marginal | None:
        if horizon != 1:
            return None
        scale = np.sqrt(self._variances(returns[: int(max(days))])[np.asarray(days)])
        mu = np.array([p["mu"] for p in self.params])
        return Marginal(np.tile(mu, (len(days), 1)), scale, values=self.residuals)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "residuals": self.residuals.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FilteredHistoricalModel:
        model = cls(state["vol"], state["mean_kind"])
        model.params, model.corr = state["params"], np.asarray(state["corr"])
        model.residuals = np.asarray(state["residuals"], dtype=float)
        return model


def _arch_record(spec, res, x: np.ndarray) -> dict[str, Any]:
    """What a fit by ``arch`` says about itself: parameters, standard errors, log-likelihood, convergence, bounds met."""
    names = list(res.params.index)
    bounds = [*spec.volatility.bounds(x), *spec.distribution.bounds(x)]
    on_bound = [
        name
        for name, value, (lo, hi) in zip(names, res.params.to_numpy(), bounds)
        if value - lo <= BOUND_TOLERANCE * max(1.0, abs(lo)) or hi - value <= BOUND_TOLERANCE * max(1.0, abs(hi))
    ]
    persistence = float(res.params.get("alpha[1]", 0) + res.params.get("gamma[1]", 0) / 2 + res.params.get("beta[1]", 0))
    return {
        "params": {k: float(v) for k, v in res.params.items()},
        "std_err": {k: float(v) for k, v in res.std_err.items()},
        "loglik": float(res.loglikelihood),
        "converged": int(res.convergence_flag) == 0,
        "optimizer": str(getattr(res.optimization_result, "message", "")),
        "on_bound": on_bound,
        "persistence": persistence,
        "days": int(len(x)),
    }
