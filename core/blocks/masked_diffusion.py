"""Masked (absorbing-state) discrete diffusion over token ids: the training loss and the samplers.

Domain-free: sequences are token ids, one id (``mask_id``) is the absorbing state, and
an optional ``pad_id`` fills positions past each sequence's end. The network is any
module called as ``model(tokens, pad_mask) -> logits`` of shape (batch, length, vocab)
(``TransformerDenoiser`` is one); it knows nothing of the schedule.

Forward process: each real token is replaced by the mask independently with probability
``t`` (the log-linear schedule of MDLM, alpha_t = 1 - t). The network predicts the clean
token at masked positions; the MDLM bound weights the cross-entropy at time t by 1/t
(``weighting="elbo"``); ``weighting="flat"`` averages it over the masked positions instead
(MaskGIT's objective: no bound, but no 1/t variance from nearly clean sequences).

Samplers start from masks (every real position, or only the cells not ``given``) and
reveal tokens over ``steps`` rounds:

* ``margin`` (default): each round reveals the masked positions where the denoiser is
  surest, measured by the gap between its two most probable tokens (the top-probability
  margin of Kim et al. 2025, "Train for the worst, plan for the best");
* ``confidence``: each round reveals the masked positions whose sampled token is most
  probable (MaskGIT-style), with Gumbel noise (scaled by the temperature) on the
  confidence so that samples stay diverse;
* ``ancestral``: the exact reverse process of MDLM; each masked position is revealed
  with probability (t - s) / t.

Any strategy can draw its tokens from the nucleus (``top_p``) of the denoiser's prediction.

Infilling: pass ``given`` (batch, length) ids with ``mask_id`` where the sampler should
generate; every other cell is kept as given (a melody to harmonise, a scaffold to
decorate, a phrase to continue).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

Strategy = Literal["margin", "confidence", "ancestral"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
Weighting = Literal["elbo", "flat"]


def gumbel_noise(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel draws from uniforms in [0, 1): -log(-log u), finite at both ends."""
    return -torch.log((-torch.log(u.clamp(1e-20, 1.0))).clamp(min=1e-20))


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Top-p (nucleus) filtering of probabilities over the last axis (Holtzman et al. 2020).

    Keeps the smallest set of most probable tokens whose mass reaches ``top_p`` (always the
    most probable one) and renormalises; ``top_p`` >= 1 returns ``probs`` unchanged.
    """
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p
    out = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
    return out / out.sum(-1, keepdim=True)


@dataclass(frozen=True)
class MaskedDiffusion:
    """The absorbing-state process for a vocabulary.

    mask_id: the id of the mask (absorbing) token.
    pad_id: the id past each sequence's end, never masked nor generated (None: no padding).
    forbid: further ids the samplers never emit (e.g. a beginning-of-sequence token).
    t_min: the smallest masking rate drawn in training (keeps the 1/t weight finite).
    weighting: the training loss: "elbo" (MDLM's bound, cross-entropy weighted by 1/t, in
        nats per real token) or "flat" (mean cross-entropy over the masked positions).
    """

    mask_id: int
    pad_id: int | None = None
    forbid: tuple[int, ...] = ()
    t_min: float = 1e-3
    weighting: Weighting = "elbo"

    def __post_init__(self) -> None:
        if self.weighting not in get_args(Weighting):
            raise ValueError(f"unknown loss weighting {self.weighting!r}; use one of {', '.join(get_args(Weighting))}")

    # -- training --------------------------------------------------------------------
    def loss(
        self, model: torch.nn.Module, tokens: torch.Tensor, pad_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss (``weighting``), and the cross-entropy at masked positions.

        tokens: (batch, length) clean ids.
        pad_mask: (batch, length) True on real tokens (None: every position is real).
        """
        if pad_mask is None:
            pad_mask = torch.ones_like(tokens, dtype=torch.bool)
        b = tokens.shape[0]
        # Stratified times (one per sequence, spread over [0, 1)) cut the variance of the 1/t weight.
        t = (torch.rand((), device=tokens.device) + torch.arange(b, device=tokens.device) / b) % 1.0
        t = t * (1 - self.t_min) + self.t_min  # (batch,)
        masked = (torch.rand(tokens.shape, device=tokens.device) < t[:, None]) & pad_mask
        noisy = torch.where(masked, torch.full_like(tokens, self.mask_id), tokens)
        logits = model(noisy, pad_mask)  # (batch, length, vocab)
        ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")  # (batch, length)
        masked_ce = (ce * masked).sum() / masked.sum().clamp(min=1)
        if self.weighting == "flat":
            return masked_ce, {"masked_ce": masked_ce.detach()}
        loss = (ce * masked / t[:, None]).sum() / pad_mask.sum().clamp(min=1)
        # a tensor, not a float: reading it would wait for the GPU
        return loss, {"masked_ce": masked_ce.detach()}

    @torch.no_grad()
    def masked_nll(
        self,
        model: torch.nn.Module,
        tokens: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        rate: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> float:
        """Mean negative log-likelihood (nats) of held-out cells masked at ``rate``, given the rest.

        An evaluation number: how well the network fills in cells of real data it did not train on.
        """
        if pad_mask is None:
            pad_mask = torch.ones_like(tokens, dtype=torch.bool)
        u = torch.rand(tokens.shape, device=tokens.device, generator=generator)
        masked = (u < rate) & pad_mask
        noisy = torch.where(masked, torch.full_like(tokens, self.mask_id), tokens)
        logits = self._forbid(model(noisy, pad_mask).float())
        ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
        return float((ce * masked).sum() / masked.sum().clamp(min=1))

    # -- sampling ----------------------------------------------------------------------
    def _forbid(self, logits: torch.Tensor) -> torch.Tensor:
        for i in (self.mask_id, self.pad_id, *self.forbid):
            if i is not None:
                logits[..., i] = -math.inf
        return logits

    @torch.no_grad()
    def sample(
        self,
        model: torch.nn.Module,
        lengths: torch.Tensor | None = None,
        steps: int = 32,
        temperature: float = 1.0,
        strategy: Strategy = "margin",
        generator: torch.Generator | None = None,
        given: torch.Tensor | None = None,
        top_p: float = 1.0,
    ) -> torch.Tensor:
        """Draw sequences. Returns (batch, length) ids, ``pad_id`` past each sequence's end.

        lengths: (batch,) real lengths; the output has max(lengths) columns. With ``given``
            and no ``lengths``, every position of ``given`` is real.
        given: (batch, length) ids with ``mask_id`` where to generate; other cells are kept.
        generator: the sampler's random stream (reproducible on any device).
        top_p: nucleus sampling: each drawn token comes from the smallest set of most probable
            tokens holding this much of the mass (1: the whole distribution). The reveal order
            (margin, confidence) is scored on the unfiltered probabilities.
        """
        if lengths is None and given is None:
            raise ValueError("sample needs lengths, given, or both")
        device = (lengths if lengths is not None else given).device
        if lengths is None:
            lengths = torch.full((given.shape[0],), given.shape[1], device=device)
        b, n = lengths.shape[0], int(lengths.max()) if given is None else given.shape[1]
        pad_mask = torch.arange(n, device=device)[None, :] < lengths[:, None]
        pad = self.pad_id if self.pad_id is not None else self.mask_id
        x = torch.where(pad_mask, torch.full((b, n), self.mask_id, device=device), torch.full((b, n), pad, device=device))
        if given is not None:
            x = torch.where(pad_mask & (given != self.mask_id), given.to(device), x)
        to_fill = (x == self.mask_id).sum(1)  # (batch,) cells to generate

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(shape, device=device, generator=generator)

        for k in range(steps):
            still = x == self.mask_id  # (batch, length)
            if not still.any():
                break
            logits = self._forbid(model(x, pad_mask)) / max(temperature, 1e-6)
            probs = logits.softmax(-1)  # (batch, length, vocab)
            # Inverse-CDF sampling with our own generator keeps runs reproducible on any device.
            u = rand(b, n, 1)
            drawn = (nucleus(probs, top_p).cumsum(-1) < u).sum(-1).clamp(max=probs.shape[-1] - 1)  # (batch, length)
            if strategy == "ancestral":
                t, s = 1 - k / steps, 1 - (k + 1) / steps
                reveal = still & (rand(b, n) < (t - s) / t)
            elif strategy in ("margin", "confidence"):
                # Reveal so that the fraction still masked follows cos(pi/2 * progress) (MaskGIT).
                left = torch.floor(to_fill * math.cos(math.pi / 2 * (k + 1) / steps)).long()  # masks to keep
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
