"""EDM diffusion (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models").

Kept apart from the network (``unet.py``), as diffusers keeps schedulers apart from models:

- ``EDM`` holds the preconditioning (how the network's input and output are scaled by the
  noise level σ, so that it always sees and predicts unit-variance quantities), the
  training objective (log-normal σ, the λ(σ) loss weight) and the sampling noise levels.
- The samplers are functions of a denoiser ``D(x, σ) -> x̂₀`` and those levels:
  ``heun`` (EDM's deterministic 2nd-order sampler: 2·steps−1 network evaluations),
  ``euler`` (1st order — the DDIM update written in σ; one evaluation per step) and
  ``stochastic`` (EDM's Algorithm 2: noise added back each step, ``churn`` sets how much).
- ``guided`` wraps a class-conditional network with classifier-free guidance.

Why EDM rather than DDPM with v-prediction: the preconditioning and the log-normal σ put the
training effort where samples are decided, and its Heun sampler reaches a given quality in
far fewer network evaluations (measured on the digits: Heun at 20 levels, 39 evaluations,
matches Heun at 100; Euler/DDIM at 100 evaluations is still 4 % behind), which is what makes a CPU demo and a fast GPU
evaluation possible; ``sample.steps`` trades time for quality without retraining.

Images are in [-1, 1] (σ_data = 0.5 is EDM's value for such data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (N,C,H,W), σ (N,)) -> denoised x (N,C,H,W)


@dataclass(frozen=True)
class EDM:
    sigma_data: float = 0.5
    p_mean: float = -1.2  # training σ: ln σ ~ N(p_mean, p_std²)
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0  # sampling levels are spaced evenly in σ^(1/ρ)

    def denoise(
        self, net: nn.Module, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None = None, augment: torch.Tensor | None = None
    ) -> torch.Tensor:
        """D(x; σ) = c_skip·x + c_out·F(c_in·x, c_noise, labels[, augment]). ``sigma``: (N,); ``augment``: training only."""
        s = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (s**2 + sd2)
        c_out = s * self.sigma_data / (s**2 + sd2).sqrt()
        c_in = 1 / (s**2 + sd2).sqrt()
        c_noise = sigma.log() / 4
        out = net(c_in * x, c_noise, labels) if augment is None else net(c_in * x, c_noise, labels, augment)
        return c_skip * x + c_out * out.to(x.dtype)

    def loss(
        self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, augment: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """EDM's objective: λ(σ)·|D(x + σε; σ) − x|², λ = (σ² + σ_d²)/(σ·σ_d)², averaged. Random numbers from torch's global generator."""
        n = len(images)
        sigma = (torch.randn(n, device=images.device) * self.p_std + self.p_mean).exp()
        weight = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        noisy = images + torch.randn_like(images) * sigma.reshape(-1, 1, 1, 1)
        err = (self.denoise(net, noisy, sigma, labels, augment) - images).float().pow(2).mean(dim=(1, 2, 3))  # (N,)
        loss = (weight * err).mean()
        # the unweighted error at low and high noise shows what the network has learnt (fine detail vs. layout)
        low, err = sigma < self.sigma_data, err.detach()
        metrics = {
            "mse_low_sigma": err[low].mean() if low.any() else err.new_tensor(float("nan")),
            "mse_high_sigma": err[~low].mean() if (~low).any() else err.new_tensor(float("nan")),
        }
        return loss, metrics

    def sigmas(self, steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(steps + 1,) noise levels from σ_max down to σ_min, then 0 (Karras et al., eq. 5)."""
        if steps < 1:
            raise ValueError("sampling needs at least one step")
        i = torch.arange(steps, dtype=torch.float64, device=device)
        inv = 1 / self.rho
        if steps == 1:
            levels = torch.tensor([self.sigma_max], dtype=torch.float64, device=device)
        else:
            levels = (self.sigma_max**inv + i / (steps - 1) * (self.sigma_min**inv - self.sigma_max**inv)) ** self.rho
        return torch.cat([levels, levels.new_zeros(1)])


def guided(edm: EDM, net: nn.Module, labels: torch.Tensor | None, scale: float, null_label: int) -> Denoiser:
    """A denoiser with classifier-free guidance: D_u + scale·(D_c − D_u). ``scale`` 1: the conditional model alone."""
    if labels is None or scale == 1.0:
        return lambda x, sigma: edm.denoise(net, x, sigma, labels)
    null = torch.full_like(labels, null_label)
    if scale == 0.0:  # the unconditional model alone
        return lambda x, sigma: edm.denoise(net, x, sigma, null)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        both = edm.denoise(net, torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        return uncond + scale * (cond - uncond)

    return denoise


def _sigma(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.expand(len(x)).to(x.dtype)


@torch.no_grad()
def euler(denoise: Denoiser, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Deterministic 1st-order steps along the probability-flow ODE (DDIM in σ). ``noise``: (N,C,H,W) standard normal."""
    x = noise.double() * sigmas[0]
    for cur, nxt in zip(sigmas[:-1], sigmas[1:]):
        d = (x - denoise(x.float(), _sigma(cur, x).float()).double()) / cur
        x = x + (nxt - cur) * d
    return x.float()


@torch.no_grad()
def stochastic(
    denoise: Denoiser,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    churn: float = 40.0,
    s_noise: float = 1.003,
    s_min: float = 0.05,
    s_max: float = 50.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """EDM's Algorithm 2: each step first raises σ by a factor γ (adding fresh noise), then takes a Heun step down.

    ``churn`` is the total stochasticity spread over the steps (0: the deterministic sampler).
    """
    steps = len(sigmas) - 1
    x = noise.double() * sigmas[0]
    gamma_max = min(churn / steps, 2**0.5 - 1)
    for cur, nxt in zip(sigmas[:-1], sigmas[1:]):
        gamma = gamma_max if s_min <= float(cur) <= s_max else 0.0
        hat = cur * (1 + gamma)
        if gamma > 0:
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32).double()
            x = x + (hat**2 - cur**2).sqrt() * s_noise * eps
        d = (x - denoise(x.float(), _sigma(hat, x).float()).double()) / hat
        x_next = x + (nxt - hat) * d
        if nxt > 0:
            d2 = (x_next - denoise(x_next.float(), _sigma(nxt, x).float()).double()) / nxt
            x_next = x + (nxt - hat) * (d + d2) / 2
        x = x_next
    return x.float()


def heun(denoise: Denoiser, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """EDM's Algorithm 1: Euler steps corrected by the trapezoidal rule (none on the last step, to σ = 0).

    It is Algorithm 2 without churn: no noise is added back, so no generator is needed.
    """
    return stochastic(denoise, noise, sigmas, churn=0.0)


SAMPLERS = {"heun": heun, "euler": euler, "stochastic": stochastic}


def evaluations(sampler: str, steps: int) -> int:
    """Network evaluations (per image, per guidance branch) a sampler takes for ``steps`` noise levels."""
    return steps if sampler == "euler" else 2 * steps - 1
