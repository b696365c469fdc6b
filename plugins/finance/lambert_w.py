"""Lambert W gaussianisation: how the scenario GAN's networks see returns, and how their output is turned back.

Returns are heavy-tailed; a network fed them raw spends its capacity on rare days. So each
asset's returns are standardised and gaussianised with the inverse Lambert W transform
(Goerg 2015; Quant GANs, Wiese et al. 2020): u = sign(z)·√(W(δz²)/δ), with δ fitted by
maximum likelihood and capped below 1/4 (at δ ≥ 1/4 the restored tails have no finite
kurtosis). The networks work on u; scenarios are restored with z = u·exp(δu²/2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize, special

DELTA_CAP = 0.249  # δ must stay below 1/4: above it the restored distribution has no finite kurtosis


def gaussianise(z: np.ndarray, delta: float) -> np.ndarray:
    """Inverse Lambert W (heavy tails -> light): sign(z)·√(W(δz²)/δ)."""
    if delta <= 0:
        return z
    return np.sign(z) * np.sqrt(np.real(special.lambertw(delta * z**2)) / delta)


def restore(u, delta: float):
    """Lambert W (light tails -> heavy): u·exp(δu²/2). numpy arrays or torch tensors."""
    if isinstance(u, torch.Tensor):
        return u * torch.exp(delta * u**2 / 2)
    return u * np.exp(delta * u**2 / 2)


def fit_delta(z: np.ndarray, cap: float = DELTA_CAP) -> tuple[float, float]:
    """Maximum-likelihood (δ, s) of a Lambert W × Gaussian for centred ``z``, δ in [0, cap].

    z = s·u·exp(δu²/2) with u ~ N(0, 1); with y = z/s and u = W_δ⁻¹(y):
    log p(z) = −(1+δ)u²/2 − log(1 + W(δy²)) − log s + const. The scale s is fitted jointly:
    with s fixed at z's standard deviation (which the heavy tails inflate) δ comes out about
    half its value.
    """

    def nll(params: np.ndarray) -> float:
        delta, log_s = float(np.clip(params[0], 1e-6, cap)), params[1]
        y = z / np.exp(log_s)
        w = np.real(special.lambertw(delta * y**2))
        return float(np.sum((1 + delta) * (w / delta) / 2 + np.log1p(w)) + len(z) * log_s)

    res = optimize.minimize(nll, x0=[0.05, np.log(z.std())], method="L-BFGS-B", bounds=[(1e-6, cap), (None, None)])
    return float(res.x[0]), float(np.exp(res.x[1]))


@dataclass
class Transform:
    """Per-asset standardise -> gaussianise -> re-standardise, and back. Arrays are (..., A)."""

    loc: np.ndarray  # mean of the returns
    scale: np.ndarray  # std of the returns
    delta: np.ndarray  # Lambert W tail parameter
    u_loc: np.ndarray  # mean and std of the gaussianised values (so the networks see ~N(0, 1))
    u_scale: np.ndarray
    limit: np.ndarray  # the largest |value| a generated day may take, in network units (see fit)

    @classmethod
    def fit(cls, returns: np.ndarray, lambert_w: bool = True) -> Transform:
        loc, scale = returns.mean(0), returns.std(0)
        z = (returns - loc) / scale
        fits = [fit_delta(z[:, a]) if lambert_w else (0.0, 1.0) for a in range(z.shape[1])]
        delta = np.array([d for d, _ in fits])
        scale = scale * np.array([s for _, s in fits])  # the latent scale: z / s is the Lambert W variable
        z = (returns - loc) / scale
        u = np.stack([gaussianise(z[:, a], delta[a]) for a in range(z.shape[1])], axis=-1)
        # A recurrent generator feeds its days back in: one huge day raises σ, which makes the
        # next huger. Generated days are held to 1.5 × the largest move seen in training (the
        # S&P 500's, 2008-10-13, is +11 %: its limit is ±16.5 %), expressed in network units.
        largest = 1.5 * np.abs(z).max(0)
        limit = np.array([gaussianise(largest[a], delta[a]) for a in range(z.shape[1])])
        return cls(loc, scale, delta, u.mean(0), u.std(0), (limit + np.abs(u.mean(0))) / u.std(0))

    def forward(self, returns: np.ndarray) -> np.ndarray:
        z = (returns - self.loc) / self.scale
        u = np.stack([gaussianise(z[..., a], self.delta[a]) for a in range(z.shape[-1])], axis=-1)
        return (u - self.u_loc) / self.u_scale

    def inverse(self, v: np.ndarray) -> np.ndarray:
        u = v * self.u_scale + self.u_loc
        z = np.stack([restore(u[..., a], self.delta[a]) for a in range(u.shape[-1])], axis=-1)
        return z * self.scale + self.loc

    def to_dict(self) -> dict:
        return {k: np.asarray(getattr(self, k)).tolist() for k in ("loc", "scale", "delta", "u_loc", "u_scale", "limit")}

    @classmethod
    def from_dict(cls, d: dict) -> Transform:
        return cls(**{k: np.asarray(v, dtype=np.float64) for k, v in d.items()})
