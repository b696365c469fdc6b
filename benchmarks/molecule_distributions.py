"""Heavy-atom and aromatic-ring distributions of runs' samples against MOSES test molecules.

    python benchmarks/molecule_distributions.py RUN [RUN ...] [--reference 5000]

SELFIES makes every sample valid by construction, so validity alone says little; these
two distributions show whether the molecules have the size and the aromatic systems of
the training data. RUN: a run id, prefix or folder (its samples/samples.smi is read).
Prints, per run and for the reference: valid samples, heavy atoms (mean, 10th/50th/90th
percentile) and the share of molecules with 0, 1, 2, 3+ aromatic rings.
"""

from __future__ import annotations

import argparse
import gzip

import numpy as np

from genforge.core import RunStore
from genforge.plugins.healthcare.evaluator import parse, read_samples, size_stats
from genforge.plugins.healthcare.moses_metrics import DATA


def describe(label: str, smiles: list[str]) -> str:
    mols = [m for m in map(parse, smiles) if m is not None]
    if not mols:
        return f"| {label} | 0 / {len(smiles)} | | | | | | | |"
    sizes = size_stats(mols)
    heavy, arom = sizes["heavy_atoms"], sizes["aromatic_rings"]
    p10, p50, p90 = np.percentile(heavy, [10, 50, 90])
    shares = [np.mean(arom == k) for k in (0, 1, 2)] + [np.mean(arom >= 3)]
    return (
        f"| {label} | {len(mols)} / {len(smiles)} | {heavy.mean():.2f} | {p10:.0f} / {p50:.0f} / {p90:.0f} | "
        + " | ".join(f"{s:.3f}" for s in shares)
        + f" | {arom.mean():.2f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--reference", type=int, default=5000, help="MOSES test molecules (shipped subset) to compare with")
    args = ap.parse_args()
    print("| samples | valid | heavy atoms mean | heavy atoms p10 / p50 / p90 | 0 arom. rings | 1 | 2 | 3+ | arom. rings mean |")
    print("|---|---|---|---|---|---|---|---|---|")
    store = RunStore()
    for run_id in args.runs:
        run = store.get(run_id)
        spec = run.spec
        label = f"{run.id} ({spec['data'].get('representation', '?')})"
        print(describe(label, read_samples(run.path / "samples" / "samples.smi")))
    ref = gzip.open(DATA / "moses_test.smi.gz", "rt").read().split()[: args.reference]
    print(describe(f"MOSES test ({len(ref)})", ref))


if __name__ == "__main__":
    main()
