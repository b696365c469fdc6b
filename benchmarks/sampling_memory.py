"""Peak memory of the sample step at growing sample counts: samples stream to disk, so it should stay flat.

    python benchmarks/sampling_memory.py [--n 1000,200000]
    python benchmarks/sampling_memory.py --generator garch --n 10000,100000,1000000 --set sample.backtest=false

Without ``--generator``: trains a tiny molecule model (seconds), then samples each n in a fresh
process. With ``--generator NAME`` (a finance generator such as ``garch``, ``gaussian``,
``bootstrap``): fits it with its defaults (the shipped S&P 500, scenarios of ``sample.horizon``
days, 250 by default), each ``--set`` applied to the run, then samples each n in a fresh process.
Prints the process's peak resident memory (ru_maxrss) and the rate. CPU only; the figures go in
benchmarks/record/host.md (molecules) or benchmarks/record/finance.md (finance generators).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = """
import json, resource, sys, time
from genforge.core.runner import Steps
steps = Steps(sys.argv[1])
steps.config.sample.n = int(sys.argv[2])
t0 = time.perf_counter()
samples = steps.sample()
print(json.dumps({"n": samples.count, "seconds": time.perf_counter() - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "file_mb": samples.path.stat().st_size / 2**20}))
"""


def trained_run(args: argparse.Namespace):
    """A run whose model is ready to sample: the tiny molecule model, or the named generator fitted with its defaults."""
    from genforge.core.runner import Steps, create_run

    if args.generator:
        run = create_run(args.generator, overrides=list(args.set))
    else:
        from genforge.core.testing import overrides_from_spec
        from genforge.plugins.healthcare.generator import MoleculeDiffusion

        tiny = overrides_from_spec(MoleculeDiffusion.test_spec)
        run = create_run("molecule-diffusion", overrides=[*tiny, "train.max_steps=50", f"sample.batch_size={args.batch_size}", *args.set])
    steps = Steps(run)
    steps.train(steps.prepare())
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", default="1000,200000", help="sample counts, comma-separated")
    ap.add_argument("--batch-size", type=int, default=500, help="the molecule model's sample.batch_size")
    ap.add_argument(
        "--generator", default=None, help="a generator to fit with its defaults instead of the tiny molecule model (e.g. garch)"
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override for the run (repeatable)")
    args = ap.parse_args()
    os.environ.setdefault("GENFORGE_HOME", tempfile.mkdtemp(prefix="genforge-sampling-memory-"))
    run = trained_run(args)
    print(f"model ready: {run.path}")
    print("| samples | seconds | samples/s | peak RSS (MB) | file (MB) |")
    print("|---|---|---|---|---|")
    for n in (int(x) for x in args.n.split(",")):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, str(run.path), str(n)], capture_output=True, text=True)
        if out.returncode:
            print(
                f"| {n:,} | failed after {time.perf_counter() - t0:.0f} s (exit {out.returncode}): {out.stderr.strip()[-300:]} |",
                flush=True,
            )
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {r['n']:,} | {r['seconds']:.1f} | {r['n'] / r['seconds']:,.0f} | {r['peak_rss_mb']:,.0f} | {r['file_mb']:.1f} |", flush=True
        )


if __name__ == "__main__":
    main()
