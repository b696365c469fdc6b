"""The image evaluator's pictures: a sample grid, nearest-training-neighbour pairs, the class histogram."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _show(ax, img: np.ndarray) -> None:
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    _pyplot().close(fig)
    return out


def sample_grid(images: np.ndarray, labels: np.ndarray | None, classes: list[str], out: Path, cols: int = 10) -> Path:
    """Samples in a grid; with labels, one column per class asked for (in order), its name on top."""
    if labels is not None and classes:
        order = np.argsort(labels, kind="stable")
        images, labels = images[order], labels[order]
        cols = min(len(np.unique(labels)), 10) or 1
        per = [images[labels == c] for c in np.unique(labels)[:cols]]
        rows = max(len(p) for p in per)
        grid = [[p[r] if r < len(p) else None for p in per] for r in range(rows)]
        titles = [classes[c] if c < len(classes) else str(c) for c in np.unique(labels)[:cols]]
    else:
        cols = min(cols, len(images))
        rows = -(-len(images) // cols)
        grid = [[images[r * cols + c] if r * cols + c < len(images) else None for c in range(cols)] for r in range(rows)]
        titles = None
    plt = _pyplot()
    fig, axes = plt.subplots(len(grid), cols, figsize=(cols * 0.9, len(grid) * 0.9 + 0.3), squeeze=False)
    for r, row in enumerate(grid):
        for c, img in enumerate(row):
            ax = axes[r][c]
            ax.axis("off")
            if img is not None:
                _show(ax, img)
                ax.axis("on")
            if r == 0 and titles:
                ax.set_title(titles[c], fontsize=8)
    fig.suptitle("samples" + (" by the class asked for" if titles else ""), fontsize=9)
    fig.tight_layout(pad=0.2, rect=(0, 0, 1, 0.96))
    return _save(fig, out)


def neighbour_pairs(
    fake: np.ndarray, train: np.ndarray, dist: np.ndarray, idx: np.ndarray, test_dist: np.ndarray, n: int, out: Path
) -> Path:
    """The ``n`` samples closest to the training set beside their nearest training image (the memorisation check)."""
    order = np.argsort(dist)[:n]
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(order), figsize=(len(order) * 1.1, 2.6), squeeze=False)
    for j, i in enumerate(order):
        _show(axes[0][j], fake[i])
        _show(axes[1][j], train[idx[i]])
        axes[0][j].set_title(f"{dist[i]:.3f}", fontsize=7)
    axes[0][0].set_ylabel("sample", fontsize=8)
    axes[1][0].set_ylabel("nearest\ntraining", fontsize=8)
    fig.suptitle(
        f"samples nearest to a training image (RMS distance); held-out real images: median {np.median(test_dist):.3f}, 1st percentile {np.quantile(test_dist, 0.01):.3f}",
        fontsize=8,
    )
    fig.tight_layout(pad=0.3)
    return _save(fig, out)


def class_histogram(classes: list[str], share: np.ndarray, real_share: np.ndarray, out: Path) -> Path:
    """Shares of each class as the feature classifier labels samples and real test images."""
    plt = _pyplot()
    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(classes) + 1.5), 2.8))
    ax.bar(x - 0.2, share, 0.4, label="samples")
    ax.bar(x + 0.2, real_share, 0.4, label="real test images")
    ax.set_xticks(x, classes, rotation=45 if max(map(len, classes)) > 3 else 0, fontsize=8)
    ax.set_ylabel("share (as the classifier labels them)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out)
