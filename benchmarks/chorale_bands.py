"""Chorales: how well a p5-p95 band of the held-out chorales describes the rest of Bach.

    python benchmarks/chorale_bands.py [--bars 8] [--splits 200] [--test 37]

The ``chorale`` evaluator's bands (pitch-class entropy, scale consistency, pitch range) are
quantiles of real 8-bar stretches. This script prepares the Bach chorales as a run does
(the default ``data`` settings, cached under ``$GENFORGE_HOME/cache``) and prints:

- the bands of the held-out pieces alone, of the training pieces, and of all of them, with
  each set's stretches' share inside each band (``evaluator.stretches``: a bar apart, each
  piece counted by its length);
- over ``--splits`` random splits of all the pieces into ``--test`` and the rest, the rest's
  share inside the ``--test`` pieces' band: how much of Bach a band from so few pieces
  holds, which is what a "≥ 90 % of samples in band" target meets at best; and how often
  each range band came out.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

KEYS = {"entropy": "pitch_class_entropy", "scale": "scale_consistency", "range": "pitch_range"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bars", type=int, default=8)
    p.add_argument("--splits", type=int, default=200)
    p.add_argument("--test", type=int, default=37, help="held-out pieces per random split")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from genforge.core.store import home
    from genforge.plugins.creative.music import data as chorale_data
    from genforge.plugins.creative.music.evaluator import PieceSet, p5_p95, stretches

    folder, *_ = chorale_data.prepare(chorale_data.ChoraleDataConfig(), home() / "cache")
    test, train = (chorale_data.load_grids(folder / f"{name}.npz") for name in ("test", "train"))
    length = args.bars * 16
    sets = {
        "held-out": PieceSet.of(*stretches(test, length)),
        "training": PieceSet.of(*stretches(train, length)),
        "all": PieceSet.of(*stretches(test + train, length)),
    }
    print(
        f"{len(test)} held-out and {len(train)} training pieces; stretches of {args.bars} bars: "
        + ", ".join(f"{name} {len(s)}" for name, s in sets.items())
    )
    print("\n| band of | " + " | ".join(f"{k} band | held-out / training / all inside" for k in KEYS) + " |")
    print("|---|" + "---|---|" * len(KEYS))
    for name, ref in sets.items():
        cells = []
        for key in KEYS.values():
            band = ref.band(key)
            cells += [f"{band[0]:.3g}–{band[1]:.3g}", " / ".join(f"{s.in_band(key, band):.3f}" for s in sets.values())]
        print(f"| {name} | " + " | ".join(cells) + " |")

    pieces = [PieceSet.of(*stretches([g], length)) for g in test + train]  # one set per piece: a split concatenates them
    rng = np.random.default_rng(args.seed)
    shares: dict[str, list[float]] = {k: [] for k in KEYS}
    range_bands: Counter = Counter()
    for _ in range(args.splits):
        order = rng.permutation(len(pieces))
        held, rest = order[: args.test], order[args.test :]
        for short, key in KEYS.items():
            values = lambda idx: np.concatenate([pieces[i].values[key] for i in idx])  # noqa: E731
            weights = lambda idx: np.concatenate([pieces[i].weights for i in idx])  # noqa: E731
            band = p5_p95(values(held), weights(held))
            if short == "range":
                range_bands[f"{band[0]:g}–{band[1]:g}"] += 1
            inside = (values(rest) >= band[0]) & (values(rest) <= band[1])
            shares[short].append(float(np.average(inside, weights=weights(rest))))
    print(
        f"\n{args.splits} random splits of {len(pieces)} pieces: the other {len(pieces) - args.test}'s share inside the band of {args.test}"
    )
    for short, got in shares.items():
        a = np.array(got)
        print(
            f"  {short:8s} mean {a.mean():.3f}  p10 {np.percentile(a, 10):.3f}  median {np.median(a):.3f}  p90 {np.percentile(a, 90):.3f}  "
            f"splits where it reaches 0.90: {(a >= 0.9).mean():.2f}"
        )
    print("  the range bands of the splits' held-out pieces, semitones: " + ", ".join(f"{b} in {n}" for b, n in range_bands.most_common()))


if __name__ == "__main__":
    main()
