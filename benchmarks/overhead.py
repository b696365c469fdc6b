"""What Prefect costs: the same small molecule run through the Prefect pipeline and directly.

    python benchmarks/overhead.py [--steps 200] [--samples 200]

Prints the wall time of each, their ratio, and the fixed start-up cost (importing Prefect
and starting its embedded server, measured with an empty flow). Both runs use the same
prepared data (prepared once beforehand), seed and settings. Uses a temporary
GENFORGE_HOME and PREFECT_HOME unless they are set.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="genforge-overhead-")
    os.environ.setdefault("GENFORGE_HOME", os.path.join(tmp, "genforge"))
    os.environ.setdefault("PREFECT_HOME", os.path.join(tmp, "prefect"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

    from genforge.core.config import apply_override, parse_override
    from genforge.core.runner import create_run, run_all

    overrides = [
        "data.max_molecules=5000",
        "model.d_model=64",
        "model.n_heads=4",
        "model.n_layers=2",
        f"train.max_steps={args.steps}",
        "train.max_minutes=null",
        "train.batch_size=64",
        f"train.checkpoint_every={max(args.steps // 4, 1)}",
        f"sample.n={args.samples}",
        "sample.steps=16",
        "evaluate.rdkit.max_reference=500",
    ]
    # A warm-up run fills the prepared-data and reference-property caches, so both timed runs find them.
    run_all(create_run("molecule-diffusion", overrides=overrides))

    t0 = time.perf_counter()
    run_all(create_run("molecule-diffusion", overrides=overrides))
    direct = time.perf_counter() - t0

    t0 = time.perf_counter()
    from prefect import flow

    import genforge.flows  # noqa: F401  (Prefect defaults)
    from genforge.flows.pipeline import pipeline

    t_import = time.perf_counter() - t0

    @flow(name="empty")
    def empty() -> int:
        return 1

    t0 = time.perf_counter()
    empty()
    startup = time.perf_counter() - t0

    spec: dict = {}
    for item in overrides:
        keys, value = parse_override(item)
        apply_override(spec, keys, value)
    t0 = time.perf_counter()
    pipeline(generator="molecule-diffusion", spec=spec)
    through_prefect = time.perf_counter() - t0

    print(f"settings: {args.steps} training steps, {args.samples} samples, 5,000 molecules (caches warmed by an untimed run)")
    print(f"direct (genforge.core.runner.run_all):     {direct:7.2f} s")
    print(f"Prefect pipeline flow (server running):    {through_prefect:7.2f} s")
    print(f"ratio pipeline / direct:                   {through_prefect / direct:7.3f}")
    print(f"per-run overhead of the flow:              {through_prefect - direct:7.2f} s")
    print(f"fixed start-up: import Prefect             {t_import:7.2f} s")
    print(f"fixed start-up: embedded server + 1st flow {startup:7.2f} s")


if __name__ == "__main__":
    main()
