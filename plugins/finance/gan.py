"""The scenario GAN's parts: Lambert W gaussianisation, the path generator and the critic.

Returns are heavy-tailed; a network fed them raw spends its capacity on rare days. So each
asset's returns are standardised and gaussianised with the inverse Lambert W transform
(Goerg 2015; Quant GANs, Wiese et al. 2020): u = sign(z)·√(W(δz²)/δ), with δ fitted by
maximum likelihood and capped below 1/4 (at δ ≥ 1/4 the restored tails have no finite
kurtosis). The networks work on u; scenarios are restored with z = u·exp(δu²/2).

The generator is recurrent and conditional: a GRU reads the history window, then each
day it emits x_t = μ(h_t) + σ(h_t)·ε(h_t, noise_t) and feeds x_t back into its state, so
volatility clusters along a path as it does in markets. σ and μ are functions of the
state alone, which lets training add a Gaussian likelihood term on the real next days
(the gaussianised returns make that likelihood apt); the critic shapes ε and the paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import optimize, special
from torch import nn

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
    def fit(cls, returns: np.ndarray, lambert_w: bool = True) -> "Transform":
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
    def from_dict(cls, d: dict) -> "Transform":
        return cls(**{k: np.asarray(v, dtype=np.float64) for k, v in d.items()})


class PathGenerator(nn.Module):
    """history (B, L, A) + noise (B, T, A + noise_dim) -> paths (B, T, A), in gaussianised units."""

    def __init__(self, assets: int, hidden: int = 32, noise_dim: int = 8):
        super().__init__()
        # both read each day as (x, |x|): the size of a move, not its sign, drives volatility
        self.encoder = nn.GRU(2 * assets, hidden, batch_first=True)  # reads the history window
        self.cell = nn.GRUCell(2 * assets, hidden)  # carries the state along the generated path
        self.loc = nn.Linear(hidden, assets)
        self.log_scale = nn.Linear(hidden, assets)
        self.noise_dim = assets + noise_dim  # one noise per asset (ε's base) and noise_dim more for its shape
        self.shape = nn.Sequential(nn.Linear(hidden + self.noise_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, assets))
        # ε = noise + correction, the correction starting at zero: the untrained generator is the
        # Gaussian likelihood model, and the critic teaches it the tails and the paths' shape.
        nn.init.zeros_(self.shape[-1].weight)
        nn.init.zeros_(self.shape[-1].bias)

    def start(self, history: torch.Tensor) -> torch.Tensor:
        """The state after the history: (B, L, A) -> (B, hidden)."""
        return self.encoder(_features(history))[1][0]

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ and σ of the next day given the state: (B, hidden) -> 2 × (B, A)."""
        return self.loc(h), F.softplus(self.log_scale(h)) + 1e-3

    def roll(self, h: torch.Tensor, noise: torch.Tensor, limit: torch.Tensor | None = None) -> torch.Tensor:
        """Generate from state h (B, hidden) with noise (B, T, self.noise_dim) -> (B, T, A); days held within ±limit (A,)."""
        out = []
        for t in range(noise.shape[1]):
            mu, sigma = self.heads(h)
            eps = noise[:, t, : mu.shape[-1]] + self.shape(torch.cat([h, noise[:, t]], dim=-1))
            x = mu + sigma * eps
            if limit is not None:
                x = torch.maximum(torch.minimum(x, limit), -limit)
            out.append(x)
            h = self.cell(_features(x), h)
        return torch.stack(out, dim=1)

    def forward(self, history: torch.Tensor, noise: torch.Tensor, limit: torch.Tensor | None = None) -> torch.Tensor:
        return self.roll(self.start(history), noise, limit)

    def nll(self, h: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        """Gaussian negative log-likelihood of the real next days (B, T, A) from state h (B, hidden), fed the real days."""
        total = 0.0
        for t in range(future.shape[1]):
            mu, sigma = self.heads(h)
            total = total + (torch.log(sigma) + 0.5 * ((future[:, t] - mu) / sigma) ** 2).mean()
            h = self.cell(_features(future[:, t]), h)
        return total / future.shape[1]


def _features(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.abs()], dim=-1)


class Critic(nn.Module):
    """(B, T, A) sequences (history tail + path) -> (B,) scores; dilated temporal convolutions over x and x²."""

    def __init__(self, assets: int, length: int, channels: int = 64):
        super().__init__()
        layers, c_in = [], 2 * assets
        for dilation in (1, 2, 4, 8):
            layers += [nn.Conv1d(c_in, channels, kernel_size=3, dilation=dilation, padding=dilation), nn.LeakyReLU(0.2)]
            c_in = channels
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(channels * length, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.cat([x, x**2], dim=-1).transpose(1, 2)  # (B, 2A, T)
        return self.head(self.body(features).flatten(1)).squeeze(-1)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: (‖∇ critic(x̂)‖ − 1)² at random points between real and fake sequences."""
    eps = torch.rand(real.shape[0], 1, 1, device=real.device)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)[0]
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
