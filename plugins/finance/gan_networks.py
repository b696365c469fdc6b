"""The scenario GAN's networks: the conditional path generator and the critic, in gaussianised units (``lambert_w.py``).

The generator is recurrent and conditional: a GRU reads the history window, then each
day it emits x_t = μ(h_t) + σ(h_t)·ε(h_t, noise_t) and feeds x_t back into its state, so
volatility clusters along a path as it does in markets. σ and μ are functions of the
state alone, which lets training add a Gaussian likelihood term on the real next days
(the gaussianised returns make that likelihood apt); the critic shapes ε and the paths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
        self.shape = nn.Sequential(
            nn.Linear(hidden + self.noise_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, assets)
        )
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
