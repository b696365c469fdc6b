"""Every finance generator through one protocol, several seeds, one table (mean ± sd), with the noise floor and the Monte-Carlo errors.

    python benchmarks/finance.py [--seeds 0,1,2] [--generators scenario-gan,gjr-garch-t,garch-t,fhs,gaussian,bootstrap-500d]
                                 [--set train.max_steps=1000 ...]

Each (generator, seed) is a full in-process run (prepare, fit, sample, evaluate) on the
shipped S&P 500 series: 1,000 scenarios of 250 days from the first test day (2015-01-02)
scored against the test period 2015-2018, and the conditional backtest over those 1,006
days (textbook models refitted every 250 days). The backtest is of a long position: simple
returns. The textbook models' one-day VaR/ES are exact (no draws: the same on every seed);
every drawn forecast (the GAN's, every 10-day one) comes from 2,000 scenarios, and a cell
"(MC x)" gives the Monte-Carlo standard error the run itself states (mean over seeds): an
ordering of two models holds outside that noise when their gap is several times it. The
noise-floor row is the real test period scored as a generator (cut into 250-day scenarios).
Then it times drawing 10,000 scenarios of 250 days from each trained model on the CPU
(median of 3 after a warm-up), and, for the textbook models, recomputes the one-day 1 %
backtest in log-return units (the definition before the book of simple returns) from the
exact forecasts, for comparison with earlier records.
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
    ("backtest_1d_1pct_cc_p", "CC p 1%", "{:.3g}"),
    ("backtest_1d_1pct_fz0", "FZ0 1%", "{:.3f}"),
    ("backtest_1d_1pct_exceptions_250d", "exc. last 250d", "{:.1f}"),
    ("backtest_1d_2.5pct_fz0", "FZ0 2.5%", "{:.3f}"),
    ("backtest_1d_2.5pct_es_z2", "Z2 2.5%", "{:.3f}"),
    ("backtest_1d_2.5pct_es_z2_p", "Z2 p", "{:.3f}"),
    ("backtest_1d_5pct_hits", "hits 5%", "{:.1f}"),
    ("backtest_1d_5pct_fz0", "FZ0 5%", "{:.3f}"),
    ("backtest_10d_1pct_fz0", "FZ0 10d 1%", "{:.3f}"),
    ("w1_1d", "W1 1d", "{:.3f}"),
    ("kurtosis", "ex. kurt", "{:.2f}"),
    ("acf_abs", "ACF |r|", "{:.3f}"),
    ("leverage_fake", "leverage 1-5", "{:.3f}"),
    ("nn_ratio", "NN ratio", "{:.2f}"),
]
# generator name in the table -> (registered generator, extra overrides)
VARIANTS = {
    "scenario-gan": ("scenario-gan", []),
    "gjr-garch-t": ("garch", ["model.vol=gjr"]),
    "garch-t": ("garch", ["model.vol=garch"]),
    "fhs": ("fhs", []),
    "gaussian": ("gaussian", []),
    "bootstrap-500d": ("bootstrap", []),
}


def cell(values: list[float], fmt: str, se: list[float] | None = None) -> str:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return "–"
    text = fmt.format(v.mean()) + (f" ± {fmt.format(v.std(ddof=1))}" if len(v) > 1 and v.std() > 0 else "")
    if se:
        mc = float(np.mean(se))
        text += f" (MC {fmt.format(mc)})" if mc > 0 else " (exact)"
    return text


def log_unit_backtest(generator: str, extra: list[str]) -> tuple[int, float]:
    """The one-day 1 % backtest of a textbook model in log-return units from its exact forecasts: (hits, FZ0)."""
    from genforge.core.plugin_manager import get_generator
    from genforge.plugins.finance import metrics, risk
    from genforge.plugins.finance.data import MarketDataConfig, load_prices, split_dates, to_returns

    cfg = MarketDataConfig(series=["sp500"])
    returns, _ = to_returns(load_prices(cfg)[0])
    split = split_dates(returns, cfg)
    x = returns.to_numpy()
    first = int(np.argmax(split.to_numpy() == "test"))
    gen = get_generator(generator)()
    model = gen.make_model(gen.Config.model_validate({"model": dict(e.removeprefix("model.").split("=") for e in extra)}))
    var, es = [], []
    for start in range(first, len(x), 250):
        model.fit(x[:start])
        days = np.arange(start, min(start + 250, len(x)))
        v, e = risk.exact_var_es(model.exact(x, days, 1), 0.01, as_simple=False)
        var.append(v[:, 0])
        es.append(e[:, 0])
    var, es = np.concatenate(var), np.concatenate(es)
    y = x[first:, 0]
    return int((y <= -var).sum()), metrics.fz0_loss(y, var, es, 0.01)


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
        cells = [cell(metrics.get(k, []), f, metrics.get(f"{k}_se")) for k, _, f in COLUMNS]
        print(f"| {label} | " + " | ".join(cells) + f" | {cell(timings[label], '{:.2f}')} |")
    print("| real test period (noise floor) | " + " | ".join(f.format(floor[k]) if k in floor else "–" for k, _, f in COLUMNS) + " | – |")
    print(f"\nseeds {seeds}; mean ± sd over seeds, (MC x) the Monte-Carlo standard error the runs state; FZ0 lower is better;")
    print("p below 0.05 rejects (CC: conditional coverage; Z2: Acerbi-Székely's ES test, one-sided).")
    print("\nOne-day 1 % backtest in log-return units (the earlier definition), exact forecasts:")
    for label in args.generators.split(","):
        generator, extra = VARIANTS[label]
        if generator in ("garch", "fhs", "gaussian", "bootstrap"):
            hits, fz0 = log_unit_backtest(generator, extra)
            print(f"  {label}: hits {hits}, FZ0 {fz0:.4f}")


if __name__ == "__main__":
    main()
