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

Split over two machines (a GPU host without RDKit or the MOSES wheel, see DEVELOPERS.md):

    python benchmarks/molecules_gpu.py --export DIR [--set ...]       # here: prepare, write a compact copy
    python benchmarks/molecules_gpu.py --data DIR --out OUT --no-suite  # GPU: train and sample only
    python benchmarks/molecules_gpu.py --score OUT [--set ...]         # here: the suite and the row
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from genforge.core.runner import Steps, create_run
from genforge.plugins.healthcare.evaluator import read_samples

ROW = [
    "validity",
    "unique@1k",
    "unique@10k",
    "FCD/Test",
    "FCD/TestSF",
    "SNN/Test",
    "SNN/TestSF",
    "Frag/Test",
    "Scaf/Test",
    "Scaf/TestSF",
    "IntDiv",
    "IntDiv2",
    "Filters",
    "novelty",
]


def overrides(args: argparse.Namespace) -> list[str]:
    return (
        [
            "data.source=moses-full",
            "data.max_reference=10000",
            "model.d_model=256",
            "model.n_layers=6",
            "model.n_heads=8",
            f"train.max_minutes={args.minutes}",
            "train.max_steps=null",
            "train.batch_size=512",
            "train.lr=1.5e-3",
            "train.warmup_steps=300",
            "train.checkpoint_every=5000",
            "train.log_every=200",
            f"sample.n={args.samples}",
            "sample.batch_size=2000",
        ]
        + (["train.compile=true"] if args.compile else [])
        + (["train.device=" + args.device] if args.device else [])
        + ([f"data.path={args.data}"] if args.data else [])
        + args.overrides
    )


def train_and_sample(args: argparse.Namespace) -> tuple[Path, Path, dict]:
    """Prepare (or take --data), fit, sample. Returns the samples file, the prepared folder and a summary."""
    import torch

    run = create_run("molecule-diffusion", overrides=overrides(args))
    steps = Steps(run)
    t0 = time.perf_counter()
    data = steps.prepare()
    t_prepare = time.perf_counter() - t0
    checkpoint = steps.train(data)
    training = run.read_json("training.json")
    samples = steps.sample(checkpoint)
    sampled = run.read_json("samples.json")
    summary = {
        "run": str(run.path),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "data": {
            "molecules": data.stats["train"]["kept"],
            "cache": data.stats.get("cache"),
            "prepare_s": round(t_prepare, 1),
            "representation": data.stats["representation"],
            "vocab_size": data.stats["vocab_size"],
        },
        "model": {
            "parameters": training["parameters"],
            "steps": training["step"],
            "train_s": training["train_seconds"],
            "tokens_per_s": (training.get("throughput") or {}).get("value"),
            "compile": args.compile,
        },
        "sampling": {"molecules": samples.count, "seconds": sampled["seconds"], "molecules_per_s": sampled["per_s"], **samples.meta},
        "spec": (run.path / "spec.yaml").read_text(),
    }
    return samples.path, data.path, summary


def score(raw: list[str], train_file: Path, test_file: Path, summary: dict) -> None:
    from genforge.plugins.healthcare.evaluator import parse, size_stats
    from genforge.plugins.healthcare.moses_metrics import moses_metrics

    train = set(train_file.read_text().split("\n")) if train_file.exists() else None
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    m = moses_metrics(raw, train, timings=timings)
    t_suite = time.perf_counter() - t0
    valid = [mol for mol in map(parse, raw) if mol is not None]
    test = [mol for mol in map(parse, test_file.read_text().split("\n")[:5000]) if mol is not None]

    def means(mols: list) -> tuple[float, float]:
        sizes = size_stats(mols)
        return float(sizes["heavy_atoms"].mean()), float(sizes["aromatic_rings"].mean())

    (ha, ar), (ha_ref, ar_ref) = means(valid), means(test)
    d, mo, sa = summary["data"], summary["model"], summary["sampling"]
    print(f"run folder: {summary['run']} ({summary['device']}, torch {summary['torch']})")
    print(
        f"data: {d['molecules']} training molecules ({d['cache']}, prepare {d['prepare_s']:.0f} s), "
        f"{d['representation']} tokens, vocabulary {d['vocab_size']}"
    )
    print(
        f"model: {mo['parameters']:,} parameters, {mo['steps']} steps in {mo['train_s']} s, "
        f"{(mo['tokens_per_s'] or float('nan')):,.0f} training tokens/s (last window)"
    )
    valid_rate = sa["molecules_per_s"] * m["validity"]
    print(
        f"sampling: {sa['molecules']} molecules, {sa['molecules_per_s']:,.0f} molecules/s ({valid_rate:,.0f} valid/s); suite {t_suite:.0f} s"
    )
    print("| " + " | ".join(ROW) + " |")
    print("|" + "---|" * len(ROW))
    print("| " + " | ".join(f"{m.get(k, float('nan')):.3f}" for k in ROW) + " |")
    print(f"heavy atoms {ha:.2f} (test {ha_ref:.2f}); aromatic rings {ar:.2f} (test {ar_ref:.2f})")
    print(json.dumps({"metrics": m, "timings": timings}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--samples", type=int, default=30000)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--compile", action="store_true", help="torch.compile the denoiser for training (train.compile=true)")
    ap.add_argument("--device", help="train.device (default: cuda when there is one)")
    ap.add_argument("--export", type=Path, metavar="DIR", help="prepare here, write a compact copy of the prepared data to DIR, stop")
    ap.add_argument("--data", type=Path, metavar="DIR", help="train on a prepared folder (from --export) instead of preparing")
    ap.add_argument("--out", type=Path, metavar="DIR", help="copy samples.smi and summary.json to DIR")
    ap.add_argument("--no-suite", action="store_true", help="stop after sampling (a machine without RDKit); score later with --score")
    ap.add_argument(
        "--score", type=Path, metavar="DIR", help="score DIR/samples.smi (from --out) against the data the --set options prepare"
    )
    args = ap.parse_args()

    if args.export or args.score:
        run = create_run("molecule-diffusion", overrides=overrides(args))
        data = Steps(run).prepare()
        if args.export:
            from genforge.plugins.healthcare.generator import export_prepared

            dest = export_prepared(data.path, args.export)
            size = sum(f.stat().st_size for f in dest.iterdir())
            print(f"prepared {data.path} ({data.stats['train']['kept']} molecules) -> {dest}: {size / 1e6:.1f} MB")
            return
        summary = json.loads((args.score / "summary.json").read_text())
        raw = read_samples(args.score / "samples.smi")
        score(raw, data.path / "train.smi", data.path / "test.smi", summary)
        return

    samples, data_path, summary = train_and_sample(args)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(samples, args.out / "samples.smi")
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps({k: v for k, v in summary.items() if k != "spec"}, indent=1))
    if not args.no_suite:
        score(read_samples(samples), data_path / "train.smi", data_path / "test.smi", summary)


if __name__ == "__main__":
    main()
