"""Convert MOSES's reference statistics into the compact files the healthcare plugin ships.

    pip download --no-deps molsets==0.3.1 -d /tmp/molsets
    python scripts/healthcare/make_moses_stats.py /tmp/molsets/molsets-0.3.1-py3-none-any.whl

From the wheel's ``test_stats.npz`` and ``test_scaffolds_stats.npz`` (pickled dicts that
need ``allow_pickle``) it writes, per reference set, ``moses/stats_<set>.npz`` without
pickles: the FCD mean and covariance (float64), the SNN fingerprints as packed bits,
the logP/SA/QED/weight values (float32), and the BRICS-fragment and scaffold counts
(JSON). ``--check N`` recomputes the fingerprints of the first N reference molecules with
genforge's code and compares them with the official ones bit for bit. The MCF and PAINS
SMARTS used by the Filters metric are copied as ``moses/mcf.csv`` and ``moses/wehi_pains.csv``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import zipfile
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "plugins" / "healthcare" / "moses"  # what the plugin ships
SETS = {"test": "test", "test_scaffolds": "test_scaffolds"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wheel", type=Path)
    ap.add_argument("--check", type=int, default=2000, help="compare this many recomputed fingerprints with the official ones")
    args = ap.parse_args()
    with zipfile.ZipFile(args.wheel) as zf:
        for name in ("mcf.csv", "wehi_pains.csv"):
            (DATA / name).write_bytes(zf.read(f"moses/metrics/{name}"))
        for ref in SETS:
            stats = np.load(io.BytesIO(zf.read(f"moses/dataset/data/{ref}_stats.npz")), allow_pickle=True)["stats"].item()
            np.savez_compressed(
                DATA / f"stats_{ref}.npz",
                fcd_mu=np.asarray(stats["FCD"]["mu"], dtype=np.float64),
                fcd_sigma=np.asarray(stats["FCD"]["sigma"], dtype=np.float64),
                fps=np.packbits(stats["SNN"]["fps"].astype(bool), axis=1),
                **{k: np.asarray(stats[k]["values"], dtype=np.float32) for k in ("logP", "SA", "QED", "weight")},
                frag=np.array(json.dumps(dict(stats["Frag"]["frag"]))),
                scaf=np.array(json.dumps(dict(stats["Scaf"]["scaf"]))),
            )
            lines = gzip.decompress(zf.read(f"moses/dataset/data/{ref}.csv.gz")).decode().split("\n")
            smiles = [s.strip() for s in lines[1:] if s.strip()]
            print(f"{ref}: {len(smiles)} SMILES, {len(stats['Frag']['frag'])} fragments, {len(stats['Scaf']['scaf'])} scaffolds")
            if args.check:
                from genforge.plugins.healthcare.moses_metrics import morgan_fingerprints

                ours = morgan_fingerprints(smiles[: args.check])
                theirs = np.packbits(stats["SNN"]["fps"][: args.check].astype(bool), axis=1)
                print(f"  fingerprints of the first {args.check}: {int((ours == theirs).all(axis=1).sum())} identical to MOSES's")


if __name__ == "__main__":
    main()
