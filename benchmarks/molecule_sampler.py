"""Compare samplers of a trained molecule-diffusion model: strategy x temperature x steps x top-p.

    python benchmarks/molecule_sampler.py RUN_OR_WEIGHTS [--n 2000] [--device auto]

RUN_OR_WEIGHTS: a run folder, a model.safetensors, or `moses-pretrained`. Prints, per
sampler: validity, uniqueness, novelty (against the run's training data when known),
mean heavy atoms and aromatic rings against the reference, molecules per second, and
MOSES's FCD/Test, SNN/Test, IntDiv and Filters of the samples (`--no-moses` skips them).
FCD depends on the sample size: compare rows of one run, not with 30,000-sample tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from genforge.core.blocks import STRATEGIES
from genforge.core.training import choose_device
from genforge.plugins.healthcare.evaluator import parse, size_stats
from genforge.plugins.healthcare.generator import DIFFUSION, MoleculeDiffusion, resolve_init
from genforge.plugins.healthcare.moses_metrics import moses_metrics
from genforge.plugins.healthcare.tokens import PAD_ID


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--temperatures", default="0.9,1.0")
    ap.add_argument("--steps", default="16,32,64")
    ap.add_argument(
        "--top-p", default="0.95", help="nucleus masses to try, comma-separated (1: the whole distribution; 0.95: the generator's default)"
    )
    ap.add_argument("--no-moses", action="store_true", help="skip FCD/SNN/IntDiv/Filters (the MOSES suite)")
    ap.add_argument("--reference", help="SMILES file to compare with (default: the run's prepared test set)")
    args = ap.parse_args()

    weights = resolve_init(args.model)
    device = choose_device(args.device)
    model, tokenizer, meta = MoleculeDiffusion.load_model(weights, device)
    run_dir = weights.parent
    data = json.loads((run_dir / "data.json").read_text()) if (run_dir / "data.json").exists() else None
    train = set(Path(data["path"], "train.smi").read_text().split("\n")) if data else None
    ref_file = args.reference or (Path(data["path"], "test.smi") if data else None)
    ref = None
    if ref_file:
        ref = size_stats([m for m in map(parse, Path(ref_file).read_text().split("\n")[:2000]) if m is not None])
        print(f"reference: heavy atoms {ref['heavy_atoms'].mean():.2f}, aromatic rings {ref['aromatic_rings'].mean():.2f}")
    print(f"model: {model.num_parameters():,} parameters on {device}")
    hist = torch.tensor(meta["length_histogram"], dtype=torch.float)
    print("strategy    T     steps  top_p  valid   unique  novel   heavy  arom   mol/s      FCD/Test  SNN    IntDiv  Filters")
    for strategy in args.strategies.split(","):
        for temp in map(float, args.temperatures.split(",")):
            for steps, top_p in [(s, p) for s in map(int, args.steps.split(",")) for p in map(float, args.top_p.split(","))]:
                gen = torch.Generator(device=device).manual_seed(0)
                cpu_gen = torch.Generator().manual_seed(0)
                out: list[str] = []
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    while len(out) < args.n:
                        b = min(args.batch_size, args.n - len(out))
                        lengths = torch.multinomial(hist, b, replacement=True, generator=cpu_gen).to(device)
                        x = DIFFUSION.sample(model, lengths, steps, temp, strategy, generator=gen, top_p=top_p)
                        out.extend(tokenizer.decode(r[r != PAD_ID].tolist()) for r in x.cpu())
                rate = len(out) / (time.perf_counter() - t0)
                mols = [parse(s) for s in out]
                valid = [m for m in mols if m is not None]
                from rdkit import Chem

                canon = {Chem.MolToSmiles(m) for m in valid}
                novel = f"{len(canon - train) / max(len(canon), 1):.3f}" if train is not None else "  –  "  # training set unknown
                props = size_stats(valid)
                suite = (
                    ""
                    if args.no_moses
                    else "  {FCD/Test:8.3f}  {SNN/Test:.3f}  {IntDiv:.3f}   {Filters:.3f}".format(
                        **moses_metrics(out, references=("test",), device=device.type)
                    )
                )
                print(
                    f"{strategy:11s} {temp:4.2f} {steps:5d}  {top_p:4.2f}   {len(valid) / len(out):.3f}   {len(canon) / max(len(valid), 1):.3f}   "
                    f"{novel}   {props['heavy_atoms'].mean():5.2f}  {props['aromatic_rings'].mean():.2f}   {rate:8.1f}{suite}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
