"""Regenerate the MOSES subset that ships with the healthcare plugin.

The full MOSES sets live inside the ``molsets==0.3.1`` wheel (MIT licence). Its
pinned dependencies do not build on current Python, so the wheel is downloaded
without installing it and the CSV files are read from the zip::

    pip download --no-deps molsets==0.3.1 -d /tmp/molsets
    python scripts/healthcare/make_moses_subset.py /tmp/molsets/molsets-0.3.1-py3-none-any.whl

Writes ``moses/moses_train.smi.gz`` (100,000 SMILES) and ``moses/moses_test.smi.gz``
(10,000 SMILES), drawn uniformly without replacement with seed 0.
"""

from __future__ import annotations

import argparse
import gzip
import io
import zipfile
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "plugins" / "healthcare" / "moses"  # what the plugin ships
MEMBERS = {"train": "moses/dataset/data/train.csv.gz", "test": "moses/dataset/data/test.csv.gz"}


def read_split(wheel: Path, split: str) -> list[str]:
    with zipfile.ZipFile(wheel) as zf, zf.open(MEMBERS[split]) as raw:
        lines = gzip.open(io.BufferedReader(raw), "rt").read().split("\n")
    assert lines[0].strip() == "SMILES", lines[0]
    return [line.strip() for line in lines[1:] if line.strip()]


def write_subset(smiles: list[str], n: int, seed: int, path: Path) -> None:
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(smiles), size=n, replace=False))
    # mtime=0 keeps the gzip bytes reproducible.
    with open(path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
        gz.write(("\n".join(smiles[i] for i in picked) + "\n").encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheel", type=Path, help="path to molsets-0.3.1-py3-none-any.whl")
    parser.add_argument("--train", type=int, default=100_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    for split, n in (("train", args.train), ("test", args.test)):
        smiles = read_split(args.wheel, split)
        write_subset(smiles, n, args.seed, DATA / f"moses_{split}.smi.gz")
        print(f"{split}: {n} of {len(smiles)} SMILES -> {DATA / f'moses_{split}.smi.gz'}")


if __name__ == "__main__":
    main()
