"""Chorales: the ``chorale`` evaluator's table for unconditional generation and for harmonising held-out melodies.

    python benchmarks/music.py [--orders masked,autoregressive] [--run ORDER=RUN_ID ...] [--set train.max_minutes=6 ...]
                               [--n 64] [--bars 8]

For each order (one backbone, two ways of training it), trains ``chorale-diffusion`` at its
default settings on the Bach chorales (or takes ``--run``), then:

- unconditional: ``--n`` pieces of ``--bars`` bars, scored against the held-out chorales;
- harmonisation: the soprano line of every ``--bars``-bar stretch of the held-out chorales
  that starts a bar apart (the evaluator's stretches: 208 of 8 bars; a shorter chorale
  whole) given, alto/tenor/bass generated, scored the same way; ``soprano kept`` is the
  share of pieces whose soprano comes back note for note (from the written MIDI files).

The ``real`` row is each metric's floor: the means of the stretches of every real chorale
(held-out and training); a band's share, that of the held-out stretches inside it (the
bands, printed under the table, come from every real chorale's stretches); the PC
distances and the parallels ratio, training pieces against the held-out ones; rates and
out-of-range shares, the held-out pieces. The last column reads the same pieces against
the bands of the held-out stretches alone (the evaluator's before 2026-12-06). Held-out
likelihood comes from the run (``training.json``): masked-cell NLL at rate 0.5 for the
masked order, next-cell NLL for the autoregressive one.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

COLUMNS = [
    ("loads_back", "loads", "{:.2f}"),
    ("pc_histogram_distance", "PC hist JS", "{:.3f}"),
    ("pc_profile_distance", "PC profile JS", "{:.3f}"),
    ("pc_entropy", "PC entropy", "{:.2f}"),
    ("in_band_entropy", "in band: entropy", "{:.3f}"),
    ("in_band_scale", "scale", "{:.3f}"),
    ("in_band_range", "range", "{:.3f}"),
    ("scale_consistency", "scale cons.", "{:.3f}"),
    ("out_of_range", "out of range", "{:.3f}"),
    ("voice_crossings", "crossings /100 beats", "{:.2f}"),
    ("parallel_fifths", "par. 5ths", "{:.2f}"),
    ("parallel_octaves", "par. 8ves", "{:.2f}"),
    ("parallels_ratio", "parallels / real", "{:.2f}"),
    ("polyphony", "polyphony", "{:.2f}"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", default="masked,autoregressive")
    p.add_argument("--run", action="append", default=[], help="ORDER=RUN_ID: score this trained run instead of training one")
    p.add_argument("--set", action="append", default=[], help="override for the trained runs (repeatable)")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--bars", type=int, default=8)
    p.add_argument(
        "--sample",
        action="append",
        default=[],
        help="sampling setting FIELD=VALUE instead of the run's (e.g. strategy=ancestral, temperature=0.8)",
    )
    args = p.parse_args()
    os.environ.setdefault("GENFORGE_HOME", tempfile.mkdtemp(prefix="music-bench-home-"))

    import torch

    from genforge.core import Samples
    from genforge.core.runner import Steps, create_run, run_all
    from genforge.core.store import RunStore
    from genforge.plugins.creative.music import grid as G
    from genforge.plugins.creative.music.corpus import parse_score
    from genforge.plugins.creative.music.data import load_grids
    from genforge.plugins.creative.music.evaluator import BAR, ChoraleEvaluator, PieceSet, read_pieces, stretches, windows
    from genforge.plugins.creative.music.generator import ChoraleDiffusion, compose, write_pieces

    given_runs = dict(item.split("=", 1) for item in args.run)
    held_out: dict[str, PieceSet] = {}

    def held_out_bands(folder: Path, length: int) -> dict[str, str]:
        """The in-band shares against the bands of the held-out stretches alone (the evaluator's bands before 2026-12-06)."""
        if "test" not in held_out:
            held_out["test"] = PieceSet.of(*stretches(load_grids(reference.test), length))
        test = held_out["test"]
        fake = PieceSet.of(read_pieces(folder)[0])
        keys = ("pitch_class_entropy", "scale_consistency", "pitch_range")
        return {
            "held_out_bands": " / ".join(f"{fake.in_band(k, test.band(k)):.3f}" for k in keys),
            "held_out_bands_real": " / ".join(f"{test.in_band(k, test.band(k)):.3f}" for k in keys),
        }

    evaluator, ev_config = ChoraleEvaluator(), ChoraleEvaluator.Config(rolls=0)
    rows, out_root = [], Path(tempfile.mkdtemp(prefix="music-bench-"))
    for order in args.orders.split(","):
        if order in given_runs:
            run = RunStore().get(given_runs[order])
        else:
            run = create_run("chorale-diffusion", overrides=[f"model.order={order}", *args.set])
            t0 = time.time()
            run_all(run)
            print(f"{order}: trained and evaluated run {run.id} in {time.time() - t0:.0f} s", flush=True)
        training = run.read_json("training.json")
        details = training["details"]
        nll = details.get("heldout_masked_nll", details.get("heldout_nll"))
        print(
            f"{order}: {training['step']} steps in {training['train_seconds']:.0f} s, {training['parameters']:,} parameters, "
            f"{training['throughput']['value']:.0f} {training['throughput']['unit']}; held-out NLL {nll} ({details.get('heldout_note')})"
        )
        steps = Steps(run)
        reference = steps.generator.reference(steps.prepared(), steps.config)
        net, meta = ChoraleDiffusion.load_model(steps.checkpoint().path)
        cfg = type(steps.config.sample).model_validate(
            {
                **steps.config.sample.model_dump(),
                **dict(kv.split("=", 1) for kv in args.sample),
                "n": args.n,
                "bars": args.bars,
                "previews": 0,
            }
        )
        print(
            f"{order}: sampling with strategy={cfg.strategy} temperature={cfg.temperature} steps={cfg.steps} top_p={cfg.top_p}", flush=True
        )
        length = args.bars * 16

        # unconditional
        gen = torch.Generator().manual_seed(0)
        t0 = time.time()
        pieces, _ = compose(net, meta, ChoraleDiffusion.given(args.n, length, None, torch.device("cpu")), cfg, gen)
        seconds = time.time() - t0
        folder = out_root / f"{order}-free"
        write_pieces(list(pieces), folder, cfg)
        ev = evaluator.evaluate(Samples("music", folder, len(pieces)), reference, folder / "eval", ev_config)
        values = {m.name: m.value for m in ev.metrics} | held_out_bands(folder, length)
        floors = {m.name: m.floor for m in ev.metrics}
        held_out_bands_real = values["held_out_bands_real"]
        bands = {m.name: m.description for m in ev.metrics}
        rows.append((order, "unconditional", f"{len(pieces) / seconds:.1f}", nll, values))

        # harmonisation of the held-out sopranos
        tests = windows([g for g in load_grids(reference.test) if g.shape[1] >= 16], length, hop=BAR)
        sopranos = np.stack([np.pad(g[0, :length], (0, max(0, length - g.shape[1])), constant_values=G.REST) for g in tests])
        given = ChoraleDiffusion.given(len(sopranos), length, None, torch.device("cpu"))
        given[:, 0] = torch.from_numpy(sopranos)
        t0 = time.time()
        harmonised, _ = compose(net, meta, given, cfg, torch.Generator().manual_seed(0))
        seconds = time.time() - t0
        folder = out_root / f"{order}-harmonised"
        write_pieces(list(harmonised), folder, cfg)
        kept = np.mean(
            [
                G.notes(parse_score(f, key_analysis=False)[0])[0] == G.notes(np.stack([s] * 4))[0]
                for f, s in zip(sorted((folder / "midi").glob("*.mid")), sopranos)
            ]
        )
        ev = evaluator.evaluate(Samples("music", folder, len(harmonised)), reference, folder / "eval", ev_config)
        values = {m.name: m.value for m in ev.metrics} | {"soprano_kept": kept} | held_out_bands(folder, length)
        rows.append((order, f"harmonise {len(sopranos)} held-out soprano stretches", f"{len(harmonised) / seconds:.1f}", nll, values))

    rows.insert(0, ("real", "held-out Bach chorales", "", None, floors | {"held_out_bands": held_out_bands_real}))
    header = (
        ["order", "task", "pieces/s", "held-out NLL"]
        + [h for _, h, _ in COLUMNS]
        + ["out of range S/A/T/B %", "soprano kept", "in band, held-out bands"]
    )
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for order, task, rate, nll, values in rows:
        cells = [fmt.format(values[k]) if values.get(k) is not None and np.isfinite(values[k]) else "–" for k, _, fmt in COLUMNS]
        cells.append(
            " / ".join(f"{values[f'out_of_range_{v}'] * 100:.1f}" for v in G.VOICES) if f"out_of_range_{G.VOICES[0]}" in values else "–"
        )
        kept = values.get("soprano_kept")
        print(
            "| "
            + " | ".join(
                map(
                    str,
                    [order, task, rate, "–" if nll is None else nll]
                    + cells
                    + ["–" if kept is None else f"{kept:.2f}", values.get("held_out_bands", "–")],
                )
            )
            + " |"
        )
    print()
    for name in ("in_band_entropy", "in_band_scale", "in_band_range"):
        print(f"{name}: {bands[name]}")


if __name__ == "__main__":
    main()
