"""Do chorales end like chorales? An independent count of root-position tonic endings, with music21 alone.

    python benchmarks/chorale_endings.py [--run RUN_ID] [--n 64] [--harmonisations 16] [--bach 60]

Nothing here uses genforge's own metrics or key finding: every file is read back with music21
from the MIDI genforge wrote, its key is music21's ``analyze('key')`` of the whole piece (for
the harmonisations, the hymn tune's own key, G major), and the judge is FIELD_NOTES':
the last sonority (every note sounding at the last onset) has the bass on the tonic and every
pitch class in the tonic triad, a Picardy third allowed in minor.

1. Bach: the first ``--bach`` four-part chorales of music21's corpus (FIELD_NOTES: 51 of 60).
2. Sampled: ``genforge sample RUN --set sample.n=N`` (a trained ``chorale-diffusion`` run;
   default the newest), each MIDI file judged.
3. Harmonised: a G-major hymn tune written for this benchmark (8 bars, four 2-bar phrases,
   ``HYMN``) harmonised ``--harmonisations`` times (``genforge harmonise --n``), each judged
   in G major.

It prints the counts and shares, and for the failures what the last sonority was.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# The hymn tune (our own): (pitch, quarter notes); four phrases of two 4/4 bars, each ending on a half note.
HYMN = [
    ("G4", 1), ("G4", 1), ("A4", 1), ("B4", 1), ("C5", 1), ("B4", 1), ("A4", 2),
    ("B4", 1), ("C5", 1), ("D5", 1), ("D5", 1), ("E5", 1), ("D5", 1), ("B4", 2),
    ("C5", 1), ("B4", 1), ("A4", 1), ("G4", 1), ("A4", 1), ("B4", 1), ("A4", 2),
    ("D5", 1), ("B4", 1), ("C5", 1), ("A4", 1), ("B4", 1), ("A4", 1), ("G4", 2),
]  # fmt: skip


def write_hymn(path: Path) -> Path:
    from music21 import meter, note, stream, tempo

    part = stream.Part()
    part.append(meter.TimeSignature("4/4"))
    part.append(tempo.MetronomeMark(number=80))
    for pitch, quarters in HYMN:
        part.append(note.Note(pitch, quarterLength=quarters))
    stream.Score([part]).write("midi", fp=str(path))
    return path


def last_sonority(score) -> list:
    """The pitches sounding at the score's last onset (notes and chords of every part)."""
    flat = score.flatten().notes
    last = max(n.offset for n in flat)
    sounding = []
    for n in flat:
        if n.offset <= last < n.offset + max(n.quarterLength, 1e-9) or n.offset == last:
            sounding.extend(n.pitches)
    return sounding


def judge(path_or_score, key=None) -> tuple[bool, str]:
    """(root-position tonic?, what the ending was) for one piece; ``key`` a music21 Key (None: analysed)."""
    from music21 import converter

    score = converter.parse(str(path_or_score)) if not hasattr(path_or_score, "flatten") else path_or_score
    k = key or score.analyze("key")
    pitches = last_sonority(score)
    if not pitches:
        return False, "silent"
    tonic = k.tonic.pitchClass
    triad = {tonic, (tonic + (3 if k.mode == "minor" else 4)) % 12, (tonic + 7) % 12}
    allowed = triad | ({(tonic + 4) % 12} if k.mode == "minor" else set())
    bass = min(pitches, key=lambda p: p.ps)
    ok = bass.pitchClass == tonic and {p.pitchClass for p in pitches} <= allowed
    return ok, f"{k.tonic.name} {k.mode}: bass {bass.nameWithOctave}, {' '.join(sorted({p.name for p in pitches}))}"


def report(title: str, results: list[tuple[bool, str]], show: int = 6) -> None:
    good = sum(ok for ok, _ in results)
    print(f"{title}: {good} of {len(results)} end on a root-position tonic ({good / max(len(results), 1):.2f})")
    for _, what in [r for r in results if not r[0]][:show]:
        print(f"    not: {what}")


def genforge(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "genforge.flows.cli", *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"genforge {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="latest", help="a trained chorale-diffusion run (default: the newest)")
    p.add_argument("--n", type=int, default=64, help="pieces to sample and judge (0: none)")
    p.add_argument("--harmonisations", type=int, default=16, help="harmonisations of the hymn tune to judge (0: none)")
    p.add_argument("--bach", type=int, default=60, help="Bach chorales to judge first (0: none)")
    p.add_argument("--set", action="append", default=[], help="sampling override for the sampled pieces (repeatable)")
    args = p.parse_args()

    from music21 import corpus
    from music21 import key as m21key

    if args.bach:
        results = []
        for path in corpus.getComposer("bach"):
            if len(results) >= args.bach:
                break
            score = corpus.parse(path)
            if len(score.parts) != 4:
                continue
            results.append(judge(score))
        report(f"Bach, the first {len(results)} four-part chorales", results)

    if args.n:
        out = genforge("sample", args.run, "--set", f"sample.n={args.n}", *[a for s in args.set for a in ("--set", s)])
        found = re.search(r"run \S+ in (\S+), sampling from", out)
        if found is None:
            raise SystemExit(f"could not find the sampling run in genforge sample's output:\n{out[-1500:]}")
        folder = Path(found.group(1)) / "samples"
        midi = sorted(folder.rglob("*.mid"))
        report(f"sampled ({folder}), {len(midi)} pieces", [judge(f) for f in midi])

    if args.harmonisations:
        tmp = Path(tempfile.mkdtemp(prefix="hymn-"))
        hymn = write_hymn(tmp / "hymn.mid")
        out_dir = tmp / "harmonised"
        genforge("harmonise", str(hymn), "--run", args.run, "--n", str(args.harmonisations), "--out", str(out_dir))
        midi = sorted(out_dir.rglob("*.mid"))
        report(f"harmonisations of the G-major hymn tune ({out_dir})", [judge(f, m21key.Key("G")) for f in midi])
    print(json.dumps({"note": "judge: music21 only (analyze('key'); last onset's sonority)"}))


if __name__ == "__main__":
    main()
