"""Autoregressive modelling over token ids: next-token training and left-to-right sampling with given cells.

The counterpart of ``masked_diffusion.py`` on the same backbone: a ``TransformerDenoiser``
built with ``causal=True`` reads ``[start] + tokens[:-1]`` and predicts every next token.
Sampling draws one position at a time; cells that are ``given`` (a melody to harmonise, a
prefix to continue) are written as given instead of drawn. Unlike masked diffusion, the
model cannot see given cells that lie ahead of the position it draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .masked_diffusion import nucleus


@dataclass(frozen=True)
class Autoregressive:
    """start_id: the id fed before the first token (never a target); forbid: ids never drawn."""

    start_id: int
    forbid: tuple[int, ...] = ()

    def _inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        start = torch.full_like(tokens[:, :1], self.start_id)
        return torch.cat([start, tokens[:, :-1]], dim=1)

    def loss(
        self, model: torch.nn.Module, tokens: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
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
    def sample(
        self,
        model: torch.nn.Module,
        given: torch.Tensor,
        unknown_id: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        constraint: Callable[[torch.Tensor, int], torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Fill the cells of ``given`` (batch, length) equal to ``unknown_id``, left to right; others are kept.

        constraint: called as ``constraint(x, i)`` before position ``i`` is drawn, with ``x`` the
            tokens so far (positions ``>= i`` not yet drawn, except given cells); returns a
            (batch, vocab) bool tensor of tokens that must not be drawn there (None: no rule).
            A rule of the domain (a grammar, a constraint between positions); a row that forbids every token
            draws from the unconstrained prediction.
        """
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
            if constraint is not None:
                banned = constraint(x, i)
                if banned is not None:
                    ruled = logits.masked_fill(banned.to(logits.device), -math.inf)
                    logits = torch.where((ruled == -math.inf).all(-1, keepdim=True), logits, ruled)
            probs = (logits / max(temperature, 1e-6)).softmax(-1)
            probs = nucleus(probs, top_p)
            u = torch.rand((b, 1), device=x.device, generator=generator)
            drawn = (probs.cumsum(-1) < u).sum(-1).clamp(max=probs.shape[-1] - 1)
            x[:, i] = torch.where(todo, drawn, x[:, i])
        return x
