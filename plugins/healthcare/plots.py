"""The molecule evaluator's pictures: a grid of sampled molecules and the property histograms against the reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TITLES = {  # the properties the histograms show, as the RDKit evaluator names them
    "qed": "drug-likeness (QED)",
    "sa": "synthetic accessibility (1 easy - 10 hard)",
    "logp": "Crippen logP",
    "mw": "molecular weight",
    "heavy_atoms": "heavy atoms per molecule",
    "aromatic_rings": "aromatic rings per molecule",
}


def draw_grid(mols: list, path: Path, per_row: int = 6) -> Path | None:
    """A PNG grid of molecules, or None where RDKit's drawing libraries cannot load (a bare GPU box)."""
    try:
        from rdkit.Chem import Draw
    except ImportError:  # rdMolDraw2D needs libXrender/cairo, which headless images may lack
        return None

    img = Draw.MolsToGridImage(mols, molsPerRow=per_row, subImgSize=(220, 180))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(str(path))
    return path


def draw_distributions(sample_props: dict, ref_props: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["heavy_atoms", "qed", "sa", "logp", "mw", "aromatic_rings"]
    fig, axes = plt.subplots(2, 3, figsize=(11, 6))
    for ax, k in zip(axes.flat, keys):
        lo = min(sample_props[k].min(initial=np.inf), ref_props[k].min(initial=np.inf))
        hi = max(sample_props[k].max(initial=-np.inf), ref_props[k].max(initial=-np.inf))
        bins = np.arange(lo - 0.5, hi + 1.5) if k in ("heavy_atoms", "aromatic_rings") else np.linspace(lo, hi, 40)
        ax.hist(ref_props[k], bins=bins, density=True, alpha=0.5, label="reference")
        ax.hist(sample_props[k], bins=bins, density=True, alpha=0.5, label="samples")
        ax.set_title(TITLES[k])
    axes.flat[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
