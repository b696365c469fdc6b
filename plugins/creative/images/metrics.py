"""Scores for generated images, computed on feature vectors: Fréchet distance, KID, precision/recall, nearest copies.

Conventions throughout:

* A set of feature vectors is ``(n, d)``: n images, d features (from ``features.extract`` or ``pixel_vectors``).
  "Real" is the reference set (training or held-out images), "fake" the generated one.
* Distances are Euclidean. They are computed in float32 blocks with ``torch.cdist`` so that a 10,000 × 10,000
  comparison never holds more than one block (about 64 MB) of distances at a time.
* Features from a small network have dead units and very unequal scales; fit a ``FeatureSpace`` on the real
  features and score ``space.apply(real)`` against ``space.apply(fake)``.

Sources: Heusel et al. (2017), FID; Bińkowski et al. (2018), KID; Kynkäänniemi et al. (2019), "Improved
precision and recall metric for assessing generative models".
"""

from __future__ import annotations

import numpy as np
import torch

_MIN_STD = 1e-6  # a feature this flat on the real set is a dead unit: dividing by its std would blow it up
_BLOCK_BYTES = 64 * 2**20  # one (rows, len(base)) float32 block of distances


def _features(x, name: str = "features") -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) array, got shape {x.shape}")
    return x


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _features(a, "a"), _features(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two feature sets differ in width: {a.shape[1]} and {b.shape[1]} features")
    return a, b


class FeatureSpace:
    """The real set's live features, standardised by the real mean and std.

    ``real`` is (n, d). Only the features whose std on ``real`` exceeds 1e-6 are kept (``keep``, a boolean (d,)
    mask); a dead ReLU unit is constant and would otherwise make the covariance singular and the Fréchet
    distance explode. ``apply(feats)`` maps (m, d) to (m, d_kept) float64: the real set then has mean 0 and std 1
    in every kept feature, so no single feature dominates the distances.
    """

    def __init__(self, real):
        real = _features(real, "real")
        std = real.std(axis=0)
        self.keep = std > _MIN_STD  # (d,)
        if not self.keep.any():
            raise ValueError(
                f"every one of the {real.shape[1]} features is constant on the real set: "
                "the feature extractor sees no difference between the real images"
            )
        self.mean = real.mean(axis=0)[self.keep]  # (d_kept,)
        self.std = std[self.keep]  # (d_kept,)

    @property
    def dim(self) -> int:
        return int(self.keep.sum())

    def apply(self, feats) -> np.ndarray:
        """(m, d) features → (m, d_kept) float64 standardised by the real set's statistics."""
        feats = _features(feats)
        if feats.shape[1] != len(self.keep):
            raise ValueError(f"these features have {feats.shape[1]} dimensions, the space was fitted on {len(self.keep)}")
        return (feats[:, self.keep] - self.mean) / self.std


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """The symmetric square root of a positive semi-definite (d, d) matrix; round-off negatives clipped to 0."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_from_moments(mu_a, cov_a, mu_b, cov_b) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½) for means (d,) and covariances (d, d).

    Tr (Σa Σb)^½ is taken as Σ √λ over the eigenvalues λ of √Σa Σb √Σa, which is symmetric positive
    semi-definite and has the same spectrum as Σa Σb: real throughout, no complex square root to discard.
    The result is clamped at 0 (round-off can make identical inputs score −1e-12).
    """
    mu_a, mu_b = np.asarray(mu_a, dtype=np.float64), np.asarray(mu_b, dtype=np.float64)
    cov_a, cov_b = np.atleast_2d(cov_a).astype(np.float64), np.atleast_2d(cov_b).astype(np.float64)
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    middle = (middle + middle.T) / 2  # symmetric up to round-off; eigvalsh wants it exact
    tr_cross = np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0.0, None)).sum()
    diff = mu_a - mu_b
    fd = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_cross
    return float(max(fd, 0.0))


def frechet_distance(a, b) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (n, d) and b (m, d); n, m ≥ 2.

    With Inception features this is the FID; here it is on whatever features are given (see ``FeatureSpace``).
    Sample covariances use n − 1. For samples of n from one Gaussian in d dimensions it is about
    2d/n + d(d+1)/(2n) rather than 0, so compare models on equal sample sizes.
    """
    a, b = _pair(a, b)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a covariance needs at least 2 samples per set, got {len(a)} and {len(b)}")
    return frechet_from_moments(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def kid(a, b, subset_size: int = 1000, subsets: int = 50, seed: int = 0) -> float:
    """Kernel Inception Distance of feature sets a (n, d) and b (m, d): unbiased MMD², averaged over subsets.

    Kernel k(x, y) = (x·y / d + 1)³. Each of ``subsets`` rounds draws ``s = min(subset_size, n, m)`` rows of
    each set without replacement (numpy rng seeded by ``seed``) and computes the unbiased estimate
    mean_{i≠j} k(aᵢ, aⱼ) + mean_{i≠j} k(bᵢ, bⱼ) − 2 mean_{i,j} k(aᵢ, bⱼ). Being unbiased, it scatters
    around 0 (negative values included) when a and b come from one distribution.
    """
    a, b = _pair(a, b)
    s = min(int(subset_size), len(a), len(b))
    if s < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(int(subsets)):
        x = a[rng.choice(len(a), s, replace=False)]  # (s, d)
        y = b[rng.choice(len(b), s, replace=False)]  # (s, d)
        kxx = (x @ x.T / d + 1.0) ** 3  # (s, s)
        kyy = (y @ y.T / d + 1.0) ** 3
        kxy = (x @ y.T / d + 1.0) ** 3
        off = s * (s - 1)
        total += ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / off - 2.0 * kxy.mean()
    return float(total / int(subsets))


def _tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))


def _blocks(n_rows: int, n_base: int, chunk: int | None = None):
    """Row ranges of at most ``chunk`` rows (by default one 64 MB float32 block of distances to n_base rows)."""
    chunk = chunk or max(1, _BLOCK_BYTES // (4 * max(n_base, 1)))
    for start in range(0, n_rows, chunk):
        yield start, min(start + chunk, n_rows)


def _kth_neighbour_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row of x (n, d) to its k-th nearest other row → (n,)."""
    out = torch.empty(len(x))
    for lo, hi in _blocks(len(x), len(x)):
        dist = torch.cdist(x[lo:hi], x)  # (rows, n); the row itself is among the k + 1 smallest, at 0
        out[lo:hi] = dist.topk(k + 1, dim=1, largest=False).values[:, k]
    return out


def _covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of points (m, d) inside at least one ball (centres (n, d), radii (n,))."""
    inside = 0
    for lo, hi in _blocks(len(points), len(centres)):
        dist = torch.cdist(points[lo:hi], centres)  # (rows, n)
        inside += int((dist <= radii[None, :]).any(dim=1).sum())
    return inside / len(points)


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of fake (m, d) against real (n, d).

    Each set's manifold is the union of balls around its points, each ball's radius the distance to that
    point's k-th nearest neighbour in its own set. Precision is the share of fake points inside the real
    manifold (are the samples realistic?); recall the share of real points inside the fake manifold (do the
    samples cover the data?). Both in [0, 1]; both sets need more than k points.
    """
    real, fake = _pair(real, fake)
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} points per set, got {len(real)} real and {len(fake)} fake")
    r, f = _tensor(real), _tensor(fake)
    precision = _covered(f, r, _kth_neighbour_radius(r, k))
    recall = _covered(r, f, _kth_neighbour_radius(f, k))
    return precision, recall


def nearest(query, base, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Nearest row of base (p, d) to each row of query (n, d) → (distances float64 (n,), indices int64 (n,)).

    The search runs in float32 blocks of ``chunk`` query rows; the winner's distance is then recomputed in
    float64 directly, since the float32 ‖q‖² + ‖b‖² − 2q·b expansion cancels badly for near copies — the
    case a memorisation check is looking for.
    """
    q, p = _pair(query, base)
    qt, pt = _tensor(q), _tensor(p)
    idx = np.empty(len(q), dtype=np.int64)
    for lo, hi in _blocks(len(q), len(p), chunk):
        idx[lo:hi] = torch.cdist(qt[lo:hi], pt).argmin(dim=1).numpy()
    dist = np.linalg.norm(q - p[idx], axis=1)
    return dist, idx


def pixel_vectors(images) -> np.ndarray:
    """uint8 images (N, H, W) or (N, H, W, C) → float32 (N, H·W·C), scaled so distances are per-pixel RMS.

    Pixels go to [0, 1] and each vector is divided by √(H·W·C), so the Euclidean distance between two rows is
    the root-mean-square difference per pixel value: 0 for a copy, 1/255 ≈ 0.004 for an off-by-one-level
    copy, 1 between black and white.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) == 0:
        raise ValueError(f"expected uint8 images (N, H, W) or (N, H, W, C), got {images.dtype} {images.shape}")
    flat = images.reshape(len(images), -1).astype(np.float32)
    return flat / np.float32(255.0 * np.sqrt(flat.shape[1]))
