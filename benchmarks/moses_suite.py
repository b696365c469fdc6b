"""The MOSES metric suite on a file of SMILES: every metric, and the time each took.

    python benchmarks/moses_suite.py FILE [--n 30000] [--seed 0] [--jobs N] [--kl] [--check-filters]

FILE: .smi/.csv[.gz] of SMILES (e.g. the MOSES training set, to compare with MOSES's
published "Train" row: FCD/Test 0.008, SNN/Test 0.642, Frag/Test 1.000, Scaf/Test 0.991,
IntDiv 0.857, Filters 1.0). ``--n`` draws that many rows at random (seed ``--seed``).
``--kl`` adds GuacaMol's KL score (on the first 10,000 molecules, as GuacaMol defines it).
``--check-filters`` also runs every MCF/PAINS SMARTS unscreened and counts disagreements.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from genforge.plugins.healthcare.data import read_smiles
from genforge.plugins.healthcare.moses_metrics import guacamol_kl_score, load_reference, moses_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--n", type=int, default=30000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--kl", action="store_true", help="also GuacaMol's KL score against the 10,000 shipped MOSES test molecules")
    ap.add_argument("--check-filters", action="store_true", help="compare the screened filters with every SMARTS run unscreened")
    args = ap.parse_args()
    smiles = list(read_smiles(args.file))
    if len(smiles) > args.n:
        smiles = [smiles[i] for i in sorted(np.random.default_rng(args.seed).choice(len(smiles), args.n, replace=False))]
    t0 = time.perf_counter()
    for name in ("test", "test_scaffolds"):
        load_reference(name)
    t_ref = time.perf_counter() - t0
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    metrics = moses_metrics(smiles, n_jobs=args.jobs, timings=timings)
    total = time.perf_counter() - t0
    if args.kl:
        import gzip

        from genforge.plugins.healthcare.moses_metrics import DATA

        ref = gzip.open(DATA / "moses_test.smi.gz", "rt").read().split()
        t1 = time.perf_counter()
        metrics["KL"], _ = guacamol_kl_score(smiles, ref, args.jobs)
        timings["GuacaMol KL"] = round(time.perf_counter() - t1, 2)
    print(f"{len(smiles)} molecules from {args.file}, {args.jobs} processes")
    print(json.dumps(metrics, indent=1))
    print(f"loading the reference statistics: {t_ref:.1f} s")
    for k, v in timings.items():
        print(f"  {k:55s} {v:8.2f} s")
    print(
        f"suite total: {total:.1f} s"
        + (f" (+ KL {timings['GuacaMol KL']:.1f} s = {total + timings['GuacaMol KL']:.1f} s)" if args.kl else "")
    )
    if args.check_filters:
        from genforge.plugins.healthcare.moses_metrics import pmap

        t1 = time.perf_counter()
        fast = pmap(_filters_pair, smiles, args.jobs)
        valid = [f for f in fast if f is not None]
        differ = sum(a != b for a, b in valid)
        print(
            f"filters screened vs every SMARTS: {differ} disagreements in {len(valid)} molecules "
            f"(pass rate {np.mean([a for a, _ in valid]):.4f}; {time.perf_counter() - t1:.1f} s)"
        )


def _filters_pair(smiles: str):
    from genforge.plugins.healthcare.moses_metrics import get_mol, passes_filters

    mol = get_mol(smiles)
    return None if mol is None else (passes_filters(mol), passes_filters(mol, screen=False))


if __name__ == "__main__":
    main()
