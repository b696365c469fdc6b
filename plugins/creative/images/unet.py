"""The U-Net denoiser: residual blocks, group norm, self-attention at low resolution, a sinusoidal noise embedding.

The network knows nothing of the noise schedule (as in diffusers' ``models/unets``): it
maps an input image, a noise label and a class label to an output image of the same
shape. How inputs and outputs are scaled by the noise level, how training draws noise
levels and how sampling walks them down is ``edm.py``'s business.

Shapes: images (N, C, H, W); noise labels (N,) float; class labels (N,) long, where the
index ``n_classes`` is the "no class" label classifier-free guidance trains with; augment
labels (N,) long in [0, n_augment): which flip or quarter turn the training image was given
(EDM's non-leaking augmentation; 0, the identity, at sampling).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from genforge.core import Section


class UNetConfig(Section):
    channels: int = Field(16, ge=8, description="channels at full resolution")
    channel_mult: list[int] = Field(
        [1, 2, 2],
        min_length=1,
        description="channels per resolution level, as multiples of `channels`; each level after the first halves the resolution",
    )
    res_blocks: int = Field(1, ge=1, description="residual blocks per level (the decoder has one more)")
    attention_at: int = Field(
        4,
        ge=0,
        description="self-attention at resolutions of this many pixels and below, besides the middle block (0: the middle block only)",
    )
    heads: int = Field(1, ge=1, description="attention heads")
    dropout: float = Field(0.0, ge=0, lt=1)
    groups: int = Field(8, ge=1, description="groups of the group norms (must divide every level's channels)")

    @model_validator(mode="after")
    def _groups(self) -> UNetConfig:
        for m in self.channel_mult:
            if (self.channels * m) % self.groups:
                raise ValueError(
                    f"model.groups ({self.groups}) must divide every level's channels (model.channels x channel_mult: {self.channels * m})"
                )
            if (self.channels * m) % self.heads:
                raise ValueError(f"model.heads ({self.heads}) must divide every level's channels ({self.channels * m})")
        return self

    def check_resolution(self, resolution: int) -> None:
        """Raise ValueError when ``resolution`` does not halve cleanly through every level."""
        factor = 2 ** (len(self.channel_mult) - 1)
        if resolution % factor:
            raise ValueError(
                f"data.resolution {resolution} must be divisible by {factor} (2 to the number of levels in model.channel_mult minus one)"
            )


def noise_embedding(labels: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) noise labels -> (N, dim) sinusoids at frequencies from 1 to 1/10,000."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=labels.device, dtype=torch.float32) / half)
    angles = labels.float()[:, None] * 100 * freqs[None]  # labels (ln σ / 4) lie in about [-2, 2]: spread them
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, then the embedding as a scale and shift, -> SiLU -> dropout -> conv; plus the skip."""

    def __init__(self, cin: int, cout: int, emb: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (N, cout, H, W)
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Self-attention over the pixels of a (low-resolution) feature map."""

    def __init__(self, ch: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = (
            self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        )  # (N, heads, HW, c/heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, heads, HW, c/heads)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class UNet(nn.Module):
    """An image-to-image U-Net conditioned on a noise label and (optionally) a class label."""

    def __init__(self, config: UNetConfig, image_channels: int, resolution: int, n_classes: int = 0, n_augment: int = 0):
        super().__init__()
        config.check_resolution(resolution)
        self.config, self.n_classes, self.n_augment = config, n_classes, n_augment
        ch, emb = config.channels, config.channels * 4
        self.emb_dim = ch
        self.noise_mlp = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))
        # class n_classes is "no class" (classifier-free guidance drops labels to it while training)
        self.class_emb = nn.Embedding(n_classes + 1, emb) if n_classes else None
        self.augment_emb = nn.Embedding(n_augment, emb) if n_augment else None
        self.conv_in = nn.Conv2d(image_channels, ch, 3, padding=1)

        def block(cin: int, cout: int, res: int) -> nn.ModuleList:
            layers = [ResBlock(cin, cout, emb, config.groups, config.dropout)]
            if config.attention_at and res <= config.attention_at:
                layers.append(Attention(cout, config.heads, config.groups))
            return nn.ModuleList(layers)

        self.down, skips, res, cur = nn.ModuleList(), [ch], resolution, ch
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.res_blocks):
                self.down.append(block(cur, ch * mult, res))
                cur = ch * mult
                skips.append(cur)
            if level < len(config.channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(cur, cur, 3, stride=2, padding=1)]))
                res //= 2
                skips.append(cur)
        self.mid = nn.ModuleList(
            [
                ResBlock(cur, cur, emb, config.groups, config.dropout),
                Attention(cur, config.heads, config.groups),
                ResBlock(cur, cur, emb, config.groups, config.dropout),
            ]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for _ in range(config.res_blocks + 1):
                self.up.append(block(cur + skips.pop(), ch * mult, res))
                cur = ch * mult
            if level > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cur, cur, 3, padding=1)]))
                res *= 2
        self.norm_out = nn.GroupNorm(config.groups, cur)
        self.conv_out = nn.Conv2d(cur, image_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        augment_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.noise_mlp(noise_embedding(noise_labels, self.emb_dim))  # (N, 4ch)
        if self.class_emb is not None:
            if class_labels is None:
                class_labels = torch.full((len(x),), self.n_classes, device=x.device, dtype=torch.long)
            emb = emb + self.class_emb(class_labels)
        if self.augment_emb is not None:  # None at sampling: the untransformed pictures (label 0)
            if augment_labels is None:
                augment_labels = torch.zeros(len(x), device=x.device, dtype=torch.long)
            emb = emb + self.augment_emb(augment_labels)
        emb = F.silu(emb)
        h = self.conv_in(x)
        skips = [h]
        for layers in self.down:
            h = self._run(layers, h, emb)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for layers in self.up:
            if isinstance(layers[0], ResBlock):
                h = torch.cat([h, skips.pop()], dim=1)
            h = self._run(layers, h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))

    @staticmethod
    def _run(layers: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h
