"""Masked (absorbing-state) discrete diffusion: the training loss and the samplers.

Forward process: each token is replaced by ``<mask>`` independently with probability
``t`` (the log-linear schedule of MDLM, alpha_t = 1 - t). The model predicts the clean
token at masked positions; the MDLM bound weights the cross-entropy at time t by 1/t.

Samplers start from a sequence of masks whose length is drawn from the training
lengths and reveal tokens over ``steps`` rounds:

* ``margin`` (default): each round reveals the masked positions where the denoiser is
  surest, measured by the gap between its two most probable tokens (the top-probability
  margin of Kim et al. 2025, "Train for the worst, plan for the best");
* ``confidence``: each round reveals the masked positions whose sampled token is most
  probable (MaskGIT-style), with Gumbel noise (scaled by the temperature) on the
  confidence so that samples stay diverse;
* ``ancestral``: the exact reverse process of MDLM; each masked position is revealed
  with probability (t - s) / t.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from .tokens import MASK_ID, PAD_ID

Strategy = Literal["margin", "confidence", "ancestral"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)


def masked_diffusion_loss(
    model: torch.nn.Module, tokens: torch.Tensor, pad_mask: torch.Tensor, t_min: float = 1e-3
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MDLM loss in nats per real token.

    tokens: (batch, length) clean ids, ``PAD_ID`` past each molecule's end.
    pad_mask: (batch, length) True on real tokens.
    """
    b = tokens.shape[0]
    # Stratified times (one per molecule, spread over [0, 1)) cut the variance of the 1/t weight.
    t = (torch.rand((), device=tokens.device) + torch.arange(b, device=tokens.device) / b) % 1.0
    t = t * (1 - t_min) + t_min  # (batch,)
    masked = (torch.rand(tokens.shape, device=tokens.device) < t[:, None]) & pad_mask
    noisy = torch.where(masked, torch.full_like(tokens, MASK_ID), tokens)
    logits = model(noisy, pad_mask)  # (batch, length, vocab)
    ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")  # (batch, length)
    weighted = (ce * masked / t[:, None]).sum()
    n_real = pad_mask.sum().clamp(min=1)
    loss = weighted / n_real
    with torch.no_grad():  # a tensor, not a float: reading it would wait for the GPU
        masked_ce = (ce * masked).sum() / masked.sum().clamp(min=1)
    return loss, {"masked_ce": masked_ce}


def gumbel_noise(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel draws from uniforms in [0, 1): -log(-log u), finite at both ends."""
    return -torch.log((-torch.log(u.clamp(1e-20, 1.0))).clamp(min=1e-20))


def _forbid_specials(logits: torch.Tensor) -> torch.Tensor:
    logits[..., PAD_ID] = -math.inf
    logits[..., MASK_ID] = -math.inf
    return logits


@torch.no_grad()
def sample_tokens(
    model: torch.nn.Module,
    lengths: torch.Tensor,
    steps: int = 32,
    temperature: float = 1.0,
    strategy: Strategy = "margin",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw token sequences of the given lengths. Returns (batch, max(lengths)) ids, PAD past each end."""
    device = lengths.device
    b, n = lengths.shape[0], int(lengths.max())
    pad_mask = torch.arange(n, device=device)[None, :] < lengths[:, None]
    x = torch.where(pad_mask, torch.full((b, n), MASK_ID, device=device), torch.full((b, n), PAD_ID, device=device))

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(shape, device=device, generator=generator)

    for k in range(steps):
        still = x == MASK_ID  # (batch, length)
        if not still.any():
            break
        logits = _forbid_specials(model(x, pad_mask)) / max(temperature, 1e-6)
        probs = logits.softmax(-1)  # (batch, length, vocab)
        # Inverse-CDF sampling with our own generator keeps runs reproducible on any device.
        u = rand(b, n, 1)
        drawn = (probs.cumsum(-1) < u).sum(-1).clamp(max=probs.shape[-1] - 1)  # (batch, length)
        if strategy == "ancestral":
            t, s = 1 - k / steps, 1 - (k + 1) / steps
            reveal = still & (rand(b, n) < (t - s) / t)
        elif strategy in ("margin", "confidence"):
            # Reveal so that the fraction still masked follows cos(pi/2 * progress) (MaskGIT).
            left = torch.floor(lengths * math.cos(math.pi / 2 * (k + 1) / steps)).long()  # masks to keep
            n_reveal = (still.sum(1) - left).clamp(min=0)  # (batch,)
            if strategy == "margin":
                top2 = probs.topk(2, dim=-1).values
                score = top2[..., 0] - top2[..., 1]
            else:
                conf = probs.gather(-1, drawn[..., None]).squeeze(-1).clamp(min=1e-30).log()
                score = conf + temperature * gumbel_noise(rand(b, n))
            score = torch.where(still, score, torch.full_like(score, -math.inf))
            order = score.argsort(dim=1, descending=True)
            rank = torch.empty_like(order)
            rank.scatter_(1, order, torch.arange(n, device=device).expand(b, n))
            reveal = still & (rank < n_reveal[:, None])
        else:
            raise ValueError(f"unknown sampling strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
        x = torch.where(reveal, drawn, x)
    return x
