"""Every finance generator through one protocol, several seeds, one table (mean ± sd), with the noise floor.

    python benchmarks/finance.py [--seeds 0,1,2] [--generators scenario-gan,garch,gjr,gaussian,bootstrap]
                                 [--set train.max_steps=1000 ...]

Each (generator, seed) is a full in-process run (prepare, fit, sample, evaluate) on the
shipped S&P 500 series: 1,000 scenarios of 250 days from the first test day (2015-01-02)
scored against the test period 2015-2018, and the conditional backtest over those 1,006
days (2,000 scenarios per day; textbook models refitted every 250 days). The noise-floor
row is the real test period scored as a generator (cut into 250-day scenarios). Then it
times drawing 10,000 scenarios of 250 days from each trained model on the CPU (median
of 3 after a warm-up).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

COLUMNS = [  # (metric, header, format)
    ("backtest_1d_1pct_hits", "hits 1%", "{:.1f}"),
    ("backtest_1d_1pct_kupiec_p", "Kupiec p 1%", "{:.3f}"),
    ("backtest_1d_1pct_christoffersen_p", "Christ. p 1%", "{:.3g}"),
    ("backtest_1d_1pct_fz0", "FZ0 1%", "{:.3f}"),
    ("backtest_1d_5pct_hits", "hits 5%", "{:.1f}"),
    ("backtest_1d_5pct_kupiec_p", "Kupiec p 5%", "{:.3f}"),
    ("backtest_1d_5pct_christoffersen_p", "Christ. p 5%", "{:.3g}"),
    ("backtest_1d_5pct_fz0", "FZ0 5%", "{:.3f}"),
    ("backtest_10d_1pct_fz0", "FZ0 10d 1%", "{:.3f}"),
    ("w1_1d", "W1 1d", "{:.3f}"),
    ("ks_20d", "KS 20d", "{:.3f}"),
    ("kurtosis", "ex. kurt", "{:.2f}"),
    ("acf_abs", "ACF |r|", "{:.3f}"),
    ("acf_sq", "ACF r²", "{:.3f}"),
    ("leverage_fake", "leverage 1-5", "{:.3f}"),
    ("nn_ratio", "NN ratio", "{:.2f}"),
]
# generator name in the table -> (registered generator, extra overrides)
VARIANTS = {
    "scenario-gan": ("scenario-gan", []),
    "gjr-garch-t": ("garch", ["model.vol=gjr"]),
    "garch-t": ("garch", ["model.vol=garch"]),
    "gaussian": ("gaussian", []),
    "bootstrap-500d": ("bootstrap", []),
}


def cell(values: list[float], fmt: str) -> str:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return "–"
    return fmt.format(v.mean()) + (f" ± {fmt.format(v.std(ddof=1))}" if len(v) > 1 else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--generators", default=",".join(VARIANTS))
    ap.add_argument("--set", action="append", default=[], help="an override for every run (e.g. data.series=[sp500,nasdaq])")
    args = ap.parse_args()
    os.environ.setdefault("GENFORGE_HOME", tempfile.mkdtemp(prefix="genforge-finance-bench-"))
    from genforge.core.runner import Steps, create_run, run_all
    from genforge.plugins.finance.data import load_split
    from genforge.plugins.finance.scenario_generator import HISTORY

    seeds = [int(s) for s in args.seeds.split(",")]
    rows: dict[str, dict[str, list[float]]] = {}
    floor: dict[str, float] = {}
    timings: dict[str, list[float]] = {}
    for label in args.generators.split(","):
        generator, extra = VARIANTS[label]
        for seed in seeds:
            t0 = time.perf_counter()
            run = create_run(generator, overrides=[*extra, *args.set, f"train.seed={seed}", f"sample.seed={seed}"])
            report = run_all(run)
            seconds = time.perf_counter() - t0
            for ev in report.evaluations:
                for m in ev.metrics:
                    rows.setdefault(label, {}).setdefault(m.name, []).append(m.value)
                    if m.floor is not None:
                        floor.setdefault(m.name, m.floor)
            steps = Steps(run.path)
            checkpoint = steps.checkpoint()
            model = steps.generator.load_model(checkpoint)
            history = load_split(Path(checkpoint.path).parent / HISTORY)[0].to_numpy()
            model.simulate(history, 1_000, 250, np.random.default_rng(seed))  # warm-up (allocations, thread pool)
            laps = []
            for _ in range(3):
                t1 = time.perf_counter()
                paths = model.simulate(history, 10_000, 250, np.random.default_rng(seed))
                laps.append(time.perf_counter() - t1)
            timings.setdefault(label, []).append(float(np.median(laps)))
            print(
                f"{label} seed {seed}: run {seconds:.0f} s, 10,000 x 250 days in {timings[label][-1]:.2f} s ({paths.shape}), {run.path}",
                flush=True,
            )
    print()
    print("| generator | " + " | ".join(h for _, h, _ in COLUMNS) + " | 10k×250d (s) |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for label, metrics in rows.items():
        print(f"| {label} | " + " | ".join(cell(metrics.get(k, []), f) for k, _, f in COLUMNS) + f" | {cell(timings[label], '{:.2f}')} |")
    print("| real test period (noise floor) | " + " | ".join(f.format(floor[k]) if k in floor else "–" for k, _, f in COLUMNS) + " | – |")
    print(f"\nseeds {seeds}; mean ± sd over seeds; FZ0 lower is better; Kupiec/Christoffersen p below 0.05 reject.")


if __name__ == "__main__":
    main()
