"""A transformer denoiser over token ids (any vocabulary: SELFIES symbols, notes, ...); bidirectional, or causal on request.

It sees a partly masked sequence and predicts, at every position, a distribution over
the vocabulary. It knows nothing of the noise schedule (see ``masked_diffusion.py``): masked
diffusion with an absorbing state needs no time input, since the number of masks in
the input already tells the network how noisy it is (Sahoo et al. 2024, MDLM).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn


class TransformerConfig(BaseModel):
    """Shape of the denoiser. The defaults train in minutes on a laptop CPU."""

    model_config = ConfigDict(extra="forbid")

    d_model: int = Field(192, ge=16, description="width of the residual stream")
    n_layers: int = Field(4, ge=1, description="transformer blocks")
    n_heads: int = Field(6, ge=1, description="attention heads; must divide d_model")
    mlp_ratio: int = Field(4, ge=1, description="hidden width of the MLP, as a multiple of d_model")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _heads_divide_the_width(self) -> TransformerConfig:
        # Checked with the spec, before a run folder exists or any data is prepared.
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        return self


class Block(nn.Module):
    def __init__(self, d: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, cache: dict | None = None) -> torch.Tensor:
        """``cache`` (decoding only): this block's keys and values of the positions before ``x``, extended in place."""
        b, n, d = x.shape  # (batch, length, d_model)
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        # q, k, v: (batch, heads, length, head_dim); attn_mask: (batch, 1, 1, length), True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.ln2(x))


class TransformerDenoiser(nn.Module):
    def __init__(self, config: TransformerConfig, vocab_size: int, max_len: int, causal: bool = False):
        """``causal``: each position attends only to itself and earlier ones (an autoregressive model on the same backbone)."""
        super().__init__()
        self.causal = causal
        if config.d_model % config.n_heads:
            raise ValueError(f"model.d_model ({config.d_model}) must be a multiple of model.n_heads ({config.n_heads})")
        self.config, self.vocab_size, self.max_len = config, vocab_size, max_len
        d = config.d_model
        self.tok = nn.Embedding(vocab_size, d)
        self.pos = nn.Parameter(torch.zeros(max_len, d))
        self.blocks = nn.ModuleList(Block(d, config.n_heads, config.mlp_ratio, config.dropout) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab_size)
        self.apply(self._init)
        nn.init.normal_(self.pos, std=0.02)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """tokens: (batch, length) ids; pad_mask: (batch, length), True on real tokens.

        Returns logits (batch, length, vocab) in float32.
        """
        n = tokens.shape[1]
        x = self.tok(tokens) + self.pos[:n]
        attn_mask = pad_mask[:, None, None, :]
        if self.causal:  # (batch, 1, length, length): attend to real tokens at or before each position
            attn_mask = attn_mask & torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.head(self.ln_f(x)).float()

    def decode(self, tokens: torch.Tensor, caches: list[dict]) -> torch.Tensor:
        """Causal models: logits (batch, m, vocab) of the next ``m`` positions given ``tokens`` (batch, m) there.

        ``caches`` (one dict per block, start with ``[{} for _ in model.blocks]``) hold the keys
        and values of every earlier position and grow with each call, so drawing a sequence
        token by token costs one position's compute per token instead of the whole prefix's.
        Every position is taken as a real token (no padding inside the prefix).
        """
        if not self.causal:
            raise ValueError("decode needs a causal model: a bidirectional one sees positions that are not drawn yet")
        start, m = (caches[0]["k"].shape[2] if "k" in caches[0] else 0), tokens.shape[1]
        x = self.tok(tokens) + self.pos[start : start + m]
        attn_mask = None if m == 1 else torch.ones(m, start + m, dtype=torch.bool, device=tokens.device).tril(start)
        for block, cache in zip(self.blocks, caches):
            x = block(x, attn_mask, cache)
        return self.head(self.ln_f(x)).float()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
