"""Molecule diffusion at benchmark scale: train within a wall-clock budget, sample, score with MOSES.

    GENFORGE_MOSES=/path/to/molsets-0.3.1-py3-none-any.whl \\
      python benchmarks/molecules_gpu.py [--minutes 5] [--samples 30000] [--compile] [--set key=value ...]

Runs the generator's own steps (no Prefect) on the full MOSES training set
(``data.source=moses-full``): prepare (cached by fingerprint), fit for ``--minutes`` of
training, sample ``--samples`` molecules, then the MOSES suite. Prints the MOSES table
row, heavy-atom and aromatic-ring means against the test set, and the throughputs
(training tokens/s, sampled molecules/s). ``--set`` overrides any spec field, e.g.
``--set data.representation=smiles`` for the SMILES-token model. On a CPU, try it small:
``--minutes 0.2 --samples 200 --set data.source=moses --set model.n_layers=1``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from genforge.core.runner import Steps, create_run
from genforge.plugins.healthcare.evaluator import parse, read_samples
from genforge.plugins.healthcare.moses_metrics import moses_metrics

ROW = ["validity", "unique@1k", "unique@10k", "FCD/Test", "FCD/TestSF", "SNN/Test", "SNN/TestSF", "Frag/Test",
       "Scaf/Test", "Scaf/TestSF", "IntDiv", "IntDiv2", "Filters", "novelty"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--samples", type=int, default=30000)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--compile", action="store_true", help="torch.compile the denoiser for training (train.compile=true)")
    args = ap.parse_args()
    overrides = [
        "data.source=moses-full", "data.max_reference=10000",
        "model.d_model=256", "model.n_layers=6", "model.n_heads=8",
        f"train.max_minutes={args.minutes}", "train.max_steps=null", "train.batch_size=512", "train.lr=1.5e-3",
        "train.warmup_steps=300", "train.checkpoint_every=5000", "train.log_every=200",
        f"sample.n={args.samples}", "sample.batch_size=2000",
    ] + (["train.compile=true"] if args.compile else []) + args.overrides
    run = create_run("molecule-diffusion", overrides=overrides)
    steps = Steps(run)
    t0 = time.perf_counter()
    data = steps.prepare()
    t_prepare = time.perf_counter() - t0
    checkpoint = steps.train(data)
    model = run.read_json("model.json")
    samples = steps.sample(checkpoint)
    raw = read_samples(samples.path)
    train = set((data.path / "train.smi").read_text().split("\n"))
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    m = moses_metrics(raw, train, timings=timings)
    t_suite = time.perf_counter() - t0
    valid = [mol for mol in map(parse, raw) if mol is not None]
    test = [mol for mol in map(parse, (data.path / "test.smi").read_text().split("\n")[:5000]) if mol is not None]
    from rdkit.Chem import rdMolDescriptors

    def means(mols: list) -> tuple[float, float]:
        return (float(np.mean([x.GetNumHeavyAtoms() for x in mols])), float(np.mean([rdMolDescriptors.CalcNumAromaticRings(x) for x in mols])))

    (ha, ar), (ha_ref, ar_ref) = means(valid), means(test)
    print(f"run folder: {run.path}")
    print(f"data: {data.stats['train']['kept']} training molecules ({data.stats.get('cache')} cache, prepare {t_prepare:.0f} s), "
          f"{data.stats['representation']} tokens, vocabulary {data.stats['vocab_size']}")
    print(f"model: {model['parameters']:,} parameters, {model['step']} steps in {model['train_seconds']} s, "
          f"{model['last_metrics'].get('tokens_per_s', float('nan')):,.0f} training tokens/s (last window)")
    print(f"sampling: {samples.count} molecules, {samples.meta['molecules_per_s']:,.0f} molecules/s; suite {t_suite:.0f} s")
    print("| " + " | ".join(ROW) + " |")
    print("|" + "---|" * len(ROW))
    print("| " + " | ".join(f"{m.get(k, float('nan')):.3f}" for k in ROW) + " |")
    print(f"heavy atoms {ha:.2f} (test {ha_ref:.2f}); aromatic rings {ar:.2f} (test {ar_ref:.2f})")
    print(json.dumps({"metrics": m, "timings": timings}, indent=1))


if __name__ == "__main__":
    main()
