"""The feature extractor the image evaluator scores with: a small CNN trained here, since no Inception weights exist offline.

Two ways to get one:

* ``train_classifier`` on labelled real images (digits, CIFAR classes, ...): its penultimate layer, like
  Inception's pool3 for the FID, holds what tells the classes apart. Preferred whenever labels exist.
* ``random_feature_net``: fixed seeded random weights, for folders without labels. Random convolutional
  features still separate textures and layouts, but their scores are only comparable between runs that use
  the same seed and image size.

Images enter as uint8 (N, H, W) or (N, H, W, C) with C = 1 or 3, and are mapped to floats in [−1, 1], NCHW.
Any size from 8 × 8 works: the network ends in a global average pool.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from genforge.core.progress import report_progress
from genforge.core.store import atomic_write_bytes

_METADATA_KEY = "genforge.feature_net"  # the safetensors metadata entry holding {"config": ..., "meta": ...}
MIN_SIZE = 8  # two stride-2 convolutions leave 2 × 2 of an 8 × 8 image


@dataclass
class FeatureNetConfig:
    channels: int = 1  # 1 for grayscale, 3 for RGB
    n_classes: int = 10  # 0: no classification head (a random-feature net)
    width: int = 32  # channels of the first convolution; the next two have 2× and 4× this
    feature_dim: int = 128  # length of the feature vector the metrics see


def _conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: a feature must not depend on which other images share its batch
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(8, c_out),
        nn.ReLU(),
    )


class FeatureNet(nn.Module):
    """conv(C→w) → conv(w→2w, /2) → conv(2w→4w, /2) → global mean → Linear+ReLU → features → [logits]."""

    def __init__(self, config: FeatureNetConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.body = nn.Sequential(
            _conv_block(config.channels, w, 1),  # (N, w, H, W)
            _conv_block(w, 2 * w, 2),  # (N, 2w, H/2, W/2)
            _conv_block(2 * w, 4 * w, 2),  # (N, 4w, H/4, W/4)
        )
        self.embed = nn.Linear(4 * w, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.n_classes) if config.n_classes > 0 else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W) in [−1, 1] → (N, feature_dim), non-negative (after a ReLU)."""
        h = self.body(x).mean(dim=(2, 3))  # (N, 4w)
        return F.relu(self.embed(h))  # (N, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W) in [−1, 1] → logits (N, n_classes)."""
        if self.head is None:
            raise RuntimeError("this FeatureNet has no classification head (n_classes=0): call features() instead")
        return self.head(self.features(x))


def _as_nchw(images, channels: int | None = None) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) → float32 (N, C, H, W) in [−1, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"expected uint8 images (N, H, W) or (N, H, W, C), got {images.dtype} {images.shape}")
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W, 1)
    n, h, w, c = images.shape
    if min(h, w) < MIN_SIZE:
        raise ValueError(f"images must be at least {MIN_SIZE}×{MIN_SIZE} pixels, got {h}×{w}: upscale them first")
    if channels is not None and c != channels:
        raise ValueError(
            f"the feature network takes {channels}-channel images, these have {c} channels "
            f"(shape {images.shape}): convert them, or build the network for {c} channels"
        )
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # (N, C, H, W) uint8
    return x.float().div_(127.5).sub_(1.0)


def _shift(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image of x (B, C, H, W) by its own random offset in [−pad, pad]², filling with black (−1)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), value=-1.0)  # (B, C, H+2p, W+2p), padded with black
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
    return padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def _build(config: FeatureNetConfig, seed: int) -> FeatureNet:
    with torch.random.fork_rng(devices=[]):  # seeded weights without disturbing the caller's global rng
        torch.manual_seed(seed)
        return FeatureNet(config)


def train_classifier(
    images,
    labels,
    n_classes: int,
    seed: int = 0,
    steps: int = 600,
    batch_size: int = 128,
    lr: float = 3e-3,
    augment: bool = True,
    threads: int | None = None,
) -> FeatureNet:
    """Train a FeatureNet to classify ``images`` uint8 (N, H, W[, C]) by ``labels`` int (N,) in [0, n_classes).

    AdamW with a one-cycle learning-rate schedule peaking at ``lr``, ``steps`` minibatches of ``batch_size``
    drawn with replacement. ``augment`` shifts each image by up to 1 px (2 px from 24 px up), padding with
    black. ``threads`` caps torch's CPU threads for the duration of training. Deterministic for a given seed
    and thread count. Returns the network in eval mode, on the CPU.
    On scikit-learn's digits at 16 × 16 the defaults reach 98.6 % held-out accuracy in about 20 s on one thread.
    """
    labels = np.asarray(labels)
    x = _as_nchw(images)  # (N, C, H, W)
    if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape ({len(x)},), got {labels.dtype} {labels.shape}")
    if len(x) == 0 or labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got {labels.min() if len(x) else 'none'}..{labels.max() if len(x) else ''}")
    y = torch.from_numpy(labels.astype(np.int64))
    pad = 2 if min(x.shape[2:]) >= 24 else 1

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        net = _build(FeatureNetConfig(channels=x.shape[1], n_classes=n_classes), seed)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
        net.train()
        for step in range(steps):
            if step % 50 == 0:
                report_progress("training its feature classifier (steps)", step, steps)
            idx = torch.randint(0, len(x), (batch_size,), generator=gen)
            xb = _shift(x[idx], pad, gen) if augment else x[idx]  # (B, C, H, W)
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        report_progress("training its feature classifier (steps)", steps, steps)
    finally:
        torch.set_num_threads(old_threads)
    return net.eval()


def random_feature_net(channels: int, seed: int = 0) -> FeatureNet:
    """A FeatureNet with no head and fixed random weights drawn from ``seed``: features for unlabelled images."""
    return _build(FeatureNetConfig(channels=channels, n_classes=0), seed).eval()


def save_feature_net(net: FeatureNet, path, meta: dict) -> None:
    """Write net's weights to ``path`` as safetensors, with its config and ``meta`` (JSON-able) as JSON metadata.

    Written atomically (a temporary file in the same folder, then a rename): a reader never sees half a file.
    """
    try:
        header = json.dumps({"config": asdict(net.config), "meta": meta})
    except TypeError as err:
        raise TypeError(f"meta must be JSON-serialisable (str, numbers, lists, dicts): {err}") from None
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write_bytes(Path(path), safetensors_bytes(state, metadata={_METADATA_KEY: header}))


def load_feature_net(path) -> tuple[FeatureNet, dict]:
    """Read a network written by ``save_feature_net`` → (net in eval mode on the CPU, meta)."""
    path = Path(path)
    with safe_open(str(path), framework="pt") as fh:
        header = (fh.metadata() or {}).get(_METADATA_KEY)
        if header is None:
            raise ValueError(f"{path} is a safetensors file but not a saved FeatureNet (no '{_METADATA_KEY}' metadata)")
        state = {k: fh.get_tensor(k) for k in fh.keys()}
    header = json.loads(header)
    net = FeatureNet(FeatureNetConfig(**header["config"]))
    net.load_state_dict(state)
    return net.eval(), header["meta"]


def extract(net: FeatureNet, images, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray | None]:
    """Features and class probabilities of uint8 images (N, H, W) or (N, H, W, C).

    Returns (features float32 (N, feature_dim), probabilities float32 (N, n_classes)), the probabilities
    None for a net without a head. Runs on the device the net's weights are on, ``batch_size`` images at a time.
    """
    x = _as_nchw(images, channels=net.config.channels)  # (N, C, H, W)
    device = next(net.parameters()).device
    feats, probs = [], []
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                report_progress("features (images)", start, len(x))
                f = net.features(x[start : start + batch_size].to(device))  # (B, feature_dim)
                feats.append(f.float().cpu())
                if net.head is not None:
                    probs.append(torch.softmax(net.head(f), dim=1).float().cpu())  # (B, n_classes)
    finally:
        net.train(was_training)
    dim = net.config.feature_dim
    features = torch.cat(feats).numpy() if feats else np.zeros((0, dim), np.float32)
    if net.head is None:
        return features, None
    probabilities = torch.cat(probs).numpy() if probs else np.zeros((0, net.config.n_classes), np.float32)
    return features, probabilities
