"""Does the demo's fine-tune help? Variants of continuing the shipped checkpoint, scored alike.

    python benchmarks/molecule_finetune.py                      # all variants, 1.5 CPU-minutes each (about 17 minutes)
    python benchmarks/molecule_finetune.py --variants none,demo --minutes 1.5

Each variant continues `moses-pretrained` on the shipped 100k subset for the demo's budget
(`none`: one step at a negligible learning rate, i.e. the shipped weights), samples the
demo's 1,000 molecules and scores them (FCD/Test, Filters), and reports the held-out
MDLM loss of the sampling weights on 2,000 MOSES test molecules with the same masks for
every variant (4 mask draws) — the figure least moved by sampling noise.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from genforge.core.runner import create_run, run_all
from genforge.plugins.healthcare.generator import DIFFUSION, MoleculeDiffusion
from genforge.plugins.healthcare.tokens import PAD_ID

BASE = ["model.init_from=moses-pretrained", "train.warmup_steps=10"]
VARIANTS = {
    "none": ["train.lr=1e-9", "train.max_steps=1", "train.max_minutes=null"],
    "lr3e-4": ["train.lr=3e-4"],  # the demo until 2026-11-28
    "lr3e-5": ["train.lr=3e-5"],
    "lr3e-4-anchored": ["train.lr=3e-4", "train.ema_warmup=false"],
    "demo": ["train.lr=3e-5", "train.ema_warmup=false"],  # the demo now (MoleculeDiffusion.demo_spec)
}


def heldout_loss(weights: Path, smiles: list[str], draws: int = 4) -> float:
    model, tok, meta = MoleculeDiffusion.load_model(weights)
    rows = []
    for s in smiles:
        try:
            ids = tok.encode(s)
        except Exception:  # a molecule the vocabulary cannot write
            continue
        if len(ids) <= meta["max_len"]:
            rows.append(ids)
    x = torch.full((len(rows), max(map(len, rows))), PAD_ID, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.tensor(r)
    losses = []
    with torch.no_grad():
        for rep in range(draws):
            torch.manual_seed(rep)  # the same masks for every model
            for i in range(0, len(x), 250):
                loss, _ = DIFFUSION.loss(model, x[i : i + 250], x[i : i + 250] != PAD_ID)
                losses.append(float(loss))
    return float(np.mean(losses))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--minutes", type=float, default=1.5, help="training budget of each variant")
    args = ap.parse_args()
    rows = []
    for name in args.variants.split(","):
        t0 = time.perf_counter()
        run = create_run("molecule-diffusion", overrides=BASE + [f"train.max_minutes={args.minutes}"] + VARIANTS[name])
        run_all(run)
        metrics = run.metrics()["metrics"]
        data = run.read_json("data.json")
        smiles = [line.strip() for line in open(Path(data["path"]) / "test.smi") if line.strip()][:2000]
        training = run.read_json("training.json")
        rows.append(
            (
                name,
                training.get("step"),
                heldout_loss(run.path / "model.safetensors", smiles),
                metrics.get("FCD/Test"),
                metrics.get("Filters"),
                time.perf_counter() - t0,
            )
        )
        print(f"{name}: done in {rows[-1][-1]:.0f} s", flush=True)
    print("\n| variant | steps | held-out loss (nats/token) | FCD/Test | Filters | seconds |\n|---|---|---|---|---|---|")
    for name, steps, loss, fcd, filters, secs in rows:
        print(f"| {name} | {steps} | {loss:.4f} | {fcd:.3f} | {filters:.3f} | {secs:.0f} |")


if __name__ == "__main__":
    main()
