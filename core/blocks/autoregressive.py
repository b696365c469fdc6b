"""Autoregressive modelling over token ids: next-token training and left-to-right sampling with given cells.

The counterpart of ``masked_diffusion.py`` on the same backbone: a ``TransformerDenoiser``
built with ``causal=True`` reads ``[start] + tokens[:-1]`` and predicts every next token.
Sampling draws one position at a time; cells that are ``given`` (a melody to harmonise, a
prefix to continue) are written as given instead of drawn. Unlike masked diffusion, the
model cannot see given cells that lie ahead of the position it draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Autoregressive:
    """start_id: the id fed before the first token (never a target); forbid: ids never drawn."""

    start_id: int
    forbid: tuple[int, ...] = ()

    def _inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        start = torch.full_like(tokens[:, :1], self.start_id)
        return torch.cat([start, tokens[:, :-1]], dim=1)

    def loss(self, model: torch.nn.Module, tokens: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean next-token cross-entropy in nats per token. tokens: (batch, length); targets: (batch, length) True where
        a position's token counts (None: all; e.g. a sequence and the end token after it, not the padding beyond)."""
        logits = model(self._inputs(tokens), torch.ones_like(tokens, dtype=torch.bool))
        if targets is None:
            return F.cross_entropy(logits.transpose(1, 2), tokens), {}
        ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
        return (ce * targets).sum() / targets.sum().clamp(min=1), {}

    @torch.no_grad()
    def nll(self, model: torch.nn.Module, tokens: torch.Tensor) -> float:
        """Mean negative log-likelihood (nats per token) of ``tokens`` (batch, length)."""
        return float(self.loss(model, tokens)[0])

    @torch.no_grad()
    def sample(self, model: torch.nn.Module, given: torch.Tensor, unknown_id: int, temperature: float = 1.0,
               top_p: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fill the cells of ``given`` (batch, length) equal to ``unknown_id``, left to right; others are kept."""
        x = given.clone()
        b, n = x.shape
        # A key/value cache (TransformerDenoiser.decode): one position's compute per token; else the whole prefix each time.
        caches = [{} for _ in model.blocks] if getattr(model, "causal", False) and hasattr(model, "decode") else None
        fed = 0  # positions whose inputs the cache holds
        for i in range(n):
            todo = x[:, i] == unknown_id
            if not todo.any():
                continue
            if caches is not None:
                logits = model.decode(self._inputs(x[:, : i + 1])[:, fed:], caches)[:, -1].float()
                fed = i + 1
            else:
                logits = model(self._inputs(x[:, : i + 1]), torch.ones_like(x[:, : i + 1], dtype=torch.bool))[:, i].float()
            for j in (unknown_id, self.start_id, *self.forbid):
                logits[:, j] = -math.inf
            probs = (logits / max(temperature, 1e-6)).softmax(-1)
            if top_p < 1.0:  # nucleus: keep the smallest set of tokens whose mass reaches top_p
                sorted_p, order = probs.sort(-1, descending=True)
                keep = sorted_p.cumsum(-1) - sorted_p < top_p
                probs = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
                probs = probs / probs.sum(-1, keepdim=True)
            u = torch.rand((b, 1), device=x.device, generator=generator)
            drawn = (probs.cumsum(-1) < u).sum(-1).clamp(max=probs.shape[-1] - 1)
            x[:, i] = torch.where(todo, drawn, x[:, i])
        return x
