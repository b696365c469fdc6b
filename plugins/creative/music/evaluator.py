"""The ``chorale`` evaluator: do generated four-part pieces load back, and do they sound like the held-out chorales?

Every sample file (MIDI or MusicXML) is parsed back with music21 through ``corpus.parse_score``,
the parser the training data went through: ``loads_back`` is the share that became a four-part
grid. The pieces are then scored with ``metrics`` (see its docstring for each definition)
against the reference's real chorales — the held-out ones, and the training ones where the
reference has them — and every metric's ``floor`` is the same number measured on real chorales:

- means over pieces (pitch-class entropy, scale consistency, range, polyphony, note density)
  and the ``in_band_*`` shares (pieces inside the real pieces' p5-p95 band): the real figures
  come from every stretch of the reference's real pieces — test and training: a band
  describes the corpus, it scores nothing — as long as the samples (their median length)
  that starts a whole number of 4/4 bars (16 sixteenths) into its piece, so that an 8-bar
  sample is compared with 8-bar stretches of Bach, not whole chorales (range and entropy grow
  with length). A band of the 37 test chorales alone moves with the split: over 200 random
  splits of the 368 Bach chorales, the other 331's stretches inside a 37-piece range band
  ran from 0.87 to 0.96 (p10-p90; ``benchmarks/chorale_bands.py``); the default split's
  band, [31, 39] semitones, holds 0.874 of them, where the corpus's is [29, 38].
  Overlapping stretches rather than consecutive windows only (a quantile does not jump
  with where one cut happens to fall),
  each weighted so that a piece counts by its length, as with consecutive windows
  (``stretches``). A band's floor is the share of the test pieces' stretches inside it: a
  p5-p95 band holds about 90 % of real pieces whichever pieces place it, so the floor is near 0.9,
  and a share far above it means samples less varied than Bach, not better. With
  ``data.transpose`` the training grids include the transposed copies (with
  ``max_pieces``, a draw of them), so a piece counts by how many of its copies are there;
  the bands barely move (the three statistics do not change with the key; only which
  pieces have more copies that stay in range). Without training pieces in the reference,
  the test pieces' stretches alone give the bands;
- rates pooled over all beats of all pieces (voice crossings, parallel fifths and octaves per
  100 beats) and out-of-range shares pooled over note-steps: floor = the real test pieces;
- ``pc_histogram_distance`` (samples' pooled pitch-class histogram vs the test set's) and
  ``parallels_ratio`` (samples' parallels rate / the test set's): floor = a real set against
  the test set in the same way: as many training pieces as there are samples when the
  reference has a training set, else one half of the test pieces against the other; the mean
  over ``FLOOR_DRAWS`` seeded draws (a single draw of 64 pieces moved the histogram floor 4x,
  by which keys it happened to hold). Which one was used is said in the metric's description.

Reference data is a ``.npz`` written by ``save_grids`` (``tokens`` (4, total T): the grids end to
end; ``lengths`` (n,); optional ``keys``), or a folder of MIDI/MusicXML files.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import Field

from genforge.core import DataError, Evaluation, Evaluator, EvaluatorConfig, Metric, Reference, Samples, report_progress
from genforge.core.kinds import Music

from . import corpus, harmony, metrics, render
from . import grid as G
from .data import load_grids

# -- reference data on disk ---------------------------------------------------------------


def music_paths(path: Path) -> list[Path]:
    """The MIDI/MusicXML files ``read_pieces`` reads: the file itself, or those under the folder (only its ``midi/`` when it has one)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; give a folder of MIDI or MusicXML files, or one such file")
    if path.is_file():
        if path.suffix.lower() not in corpus.MUSIC_SUFFIXES:
            raise DataError(f"{path} is not a MIDI or MusicXML file ({', '.join(corpus.MUSIC_SUFFIXES)})")
        return [path]
    return Music().load(path)  # a run's samples folder: its midi/ only (other renderings beside it would count twice)


def parse_files(files: list[Path]) -> tuple[list[np.ndarray], list[Path], Counter]:
    """Each file through ``corpus.parse_score`` (no key analysis): (grids, the files they came from, skip reasons counted)."""
    grids, parsed, skipped = [], [], Counter()
    for i, f in enumerate(files):
        report_progress("reading music files", i, len(files))
        try:
            grid, _ = corpus.parse_score(f, key_analysis=False)
        except corpus.SkipPiece as skip:
            skipped[skip.reason] += 1
        else:
            grids.append(grid)
            parsed.append(Path(f))
    report_progress("reading music files", len(files), len(files))
    return grids, parsed, skipped


def read_pieces(path: Path, max_files: int | None = None, seed: int = 0) -> tuple[list[np.ndarray], int, Counter]:
    """A MIDI/MusicXML file or folder (see ``music_paths``) as (grids, files tried, skip reasons counted).

    ``max_files``: a seeded random subset of the files beyond this (kept in name order).
    Files that do not parse are skipped and counted, never raised.
    """
    files = _subset(music_paths(path), max_files, seed)
    grids, _, skipped = parse_files(files)
    return grids, len(files), skipped


def _subset(items: list, n: int | None, seed: int) -> list:
    if n is None or len(items) <= n:
        return list(items)
    return [items[i] for i in np.sort(np.random.default_rng(seed).choice(len(items), n, replace=False))]


def _reasons(skipped: Counter) -> str:
    return ", ".join(f"{n} {r}" for r, n in skipped.most_common()) or "none skipped"


def reference_grids(path: Path, max_pieces: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """Reference pieces: a ``.npz`` of grids, or MIDI/MusicXML; ``DataError`` when it holds none."""
    path = Path(path)
    if path.suffix == ".npz":
        grids = _subset(load_grids(path), max_pieces, seed)
        skipped, n = Counter(), len(grids)
    else:
        grids, n, skipped = read_pieces(path, max_pieces, seed)
    if not grids:
        raise DataError(f"the reference {path} holds no four-part pieces ({n} read, {_reasons(skipped)}); give held-out chorales")
    return grids


# -- numbers over a set of pieces ---------------------------------------------------------


def _normalised(counts: np.ndarray) -> np.ndarray:
    return counts / counts.sum() if counts.sum() else counts


@dataclass
class PieceSet:
    """Per-piece numbers of a set of grids, and what pools them: beats and note-steps per piece."""

    values: dict[str, np.ndarray]  # piece_metrics name -> (n,)
    beats: np.ndarray  # (n,) quarter notes per piece
    note_steps: np.ndarray  # (n, 4) steps each voice sounds
    pc_counts: np.ndarray  # (n, 12) note-steps per pitch class, C first
    weights: np.ndarray | None = None  # (n,) how much each piece counts in ``mean``, ``band`` and ``in_band`` (None: alike)

    @classmethod
    def of(cls, grids: list[np.ndarray], weights: np.ndarray | None = None) -> PieceSet:
        rows = [metrics.piece_metrics(g) for g in grids]
        sounding = [G.pitches(g) for g in grids]
        counts = np.array([np.bincount(p[p >= 0] % 12, minlength=12) for p in sounding], float)
        return cls(
            values={name: np.array([r[name] for r in rows], float) for name in rows[0]},
            beats=np.array([g.shape[1] / G.STEPS_PER_BEAT for g in grids], float),
            note_steps=np.array([(p >= 0).sum(axis=1) for p in sounding], float),
            pc_counts=counts,
            weights=None if weights is None else np.asarray(weights, float),
        )

    def __len__(self) -> int:
        return len(self.beats)

    def _defined(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """A metric's values and weights over the pieces where it is defined (a piece too short for a chord: NaN)."""
        v = self.values[name]
        ok = np.isfinite(v)
        return v[ok], None if self.weights is None else self.weights[ok]

    def mean(self, name: str) -> float:
        """The weighted mean over the pieces where the metric is defined (NaN where none is)."""
        v, w = self._defined(name)
        return float(np.average(v, weights=w)) if len(v) else float("nan")

    def defined_band(self, name: str) -> tuple[float, float]:
        """``band`` over the pieces where the metric is defined."""
        v, w = self._defined(name)
        return p5_p95(v, w) if len(v) else (float("nan"), float("nan"))

    def rate(self, name: str) -> float:
        """A per-100-beats metric pooled over every beat of every piece."""
        return float((self.values[name] * self.beats).sum() / max(self.beats.sum(), 1e-12))

    def out_of_range(self, voice: str | None = None) -> float:
        """Share of note-steps outside the usual range, pooled over pieces (one voice, or all)."""
        cols = range(len(G.VOICES)) if voice is None else [G.VOICES.index(voice)]
        steps = sum(self.note_steps[:, c].sum() for c in cols)
        outside = sum((self.values[f"out_of_range_{G.VOICES[c]}"] * self.note_steps[:, c]).sum() for c in cols)
        return float(outside / steps) if steps else 0.0

    def band(self, name: str) -> tuple[float, float]:
        """The p5-p95 band of a metric over the pieces (``p5_p95``, weighted by the pieces' weights)."""
        return p5_p95(self.values[name], self.weights)

    def in_band(self, name: str, band: tuple[float, float]) -> float:
        v = self.values[name]
        return float(np.average((v >= band[0]) & (v <= band[1]), weights=self.weights))

    def histogram(self) -> np.ndarray:
        """(12,) the pooled pitch-class histogram, C first."""
        return _normalised(self.pc_counts.sum(axis=0))

    def profile(self) -> np.ndarray:
        """(12,) the pooled histogram of the pieces each moved to C (its major scale's tonic, or the relative major's)."""
        fit = np.stack([self.pc_counts[:, (metrics.MAJOR_SCALE + tonic) % 12].sum(axis=1) for tonic in range(12)], axis=1)  # (n, 12)
        tonics = fit.argmax(axis=1)
        return _normalised(sum((np.roll(c, -t) for c, t in zip(self.pc_counts, tonics)), np.zeros(12)))

    def parallels(self) -> float:
        return self.rate("parallels_per_100_beats")


# name -> (piece_metrics name, what it is); floor: the mean of the real pieces' stretches (test and training); near the floor is best
MEANS: dict[str, tuple[str, str]] = {
    "pc_entropy": ("pitch_class_entropy", "mean pitch-class entropy of a piece, bits"),
    "scale_consistency": ("scale_consistency", "mean largest share of note-steps inside one major or natural-minor scale"),
    "pitch_range": ("pitch_range", "mean highest minus lowest pitch of a piece, semitones"),
    "polyphony": ("polyphony", "mean number of voices sounding when any sounds"),
    "note_density": ("note_density", "mean notes struck per beat, all voices"),
}
# name -> (piece_metrics name, of what); share of pieces inside the real pieces' p5-p95 band (test and training stretches);
# floor: the test stretches' share; far above it means less varied than Bach, not better
BANDS: dict[str, tuple[str, str]] = {
    "in_band_entropy": ("pitch_class_entropy", "pitch-class entropy"),
    "in_band_scale": ("scale_consistency", "scale consistency"),
    "in_band_range": ("pitch_range", "pitch range"),
}
# name -> (piece_metrics name, what it is); per 100 beats, pooled; lower is better
RATES: dict[str, tuple[str, str]] = {
    "voice_crossings": ("voice_crossings_per_100_beats", "voice-crossing events per 100 beats (adjacent voices)"),
    "parallel_fifths": ("parallel_fifths_per_100_beats", "parallel fifths per 100 beats (any two voices)"),
    "parallel_octaves": ("parallel_octaves_per_100_beats", "parallel octaves and unisons per 100 beats (any two voices)"),
}


# name -> (piece_metrics name, what it is): harmony and voice leading the sampling rules leave to the model; the value is
# the mean over pieces, the floor the mean of the real stretches, and the description gives the real stretches' p5-p95 band
HARMONY: dict[str, tuple[str, str]] = {
    "root_triads": ("root_triads", "share of beat chords that are root-position triads"),
    "first_inversions": ("first_inversions", "share of beat chords that are first-inversion triads"),
    "second_inversions": ("second_inversions", "share of beat chords that are second-inversion triads"),
    "sevenths": ("sevenths", "share of beat chords that are seventh chords"),
    "non_chords": ("non_chords", "share of beat sonorities that spell no triad or seventh chord"),
    "harmonic_rhythm": ("harmonic_rhythm", "share of successive beats whose chord changes"),
    **{f"leap_{v}": (f"leap_{v}", f"mean {v} interval between successive notes, semitones") for v in G.VOICES},
}
# what the autoregressive sampler's rules enforce (sample.<setting> in the samples' details): metric names it makes 0 or 1
ENFORCED: dict[str, tuple[str, ...]] = {
    "avoid_parallels": ("parallel_fifths", "parallel_octaves", "parallels_ratio"),
    "avoid_crossings": ("voice_crossings",),
    "keep_range": ("out_of_range", *(f"out_of_range_{v}" for v in G.VOICES)),
    "final_cadence": ("final_cadence",),
}


def final_cadences(grids: list[np.ndarray]) -> float:
    """Share of ``grids`` ending on a root-position tonic of music21's key of the piece (``harmony.ends_on_tonic``)."""
    ends = []
    for g in grids:
        key = corpus.grid_key(g)
        ends.append(key is not None and harmony.ends_on_tonic(g, harmony.Key.named(key)))
    return float(np.mean(ends)) if ends else float("nan")


def p5_p95(values: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """The p5-p95 band of ``values``; weighted: the inverse of the weighted distribution function (numpy's
    ``percentile(weights=)`` needs numpy 2)."""
    if weights is None:
        return float(np.percentile(values, 5)), float(np.percentile(values, 95))
    order = np.argsort(values, kind="stable")
    cdf = np.cumsum(weights[order]) / weights.sum()
    low, high = (
        values[order][min(np.searchsorted(cdf, q * (1 - 1e-12)), len(cdf) - 1)] for q in (0.05, 0.95)
    )  # the first value whose CDF reaches q
    return float(low), float(high)


def _finite(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


class ChoraleEvalConfig(EvaluatorConfig):
    max_pieces: int = Field(
        500, ge=1, description="pieces read from the samples and from each reference set (a seeded random subset beyond this)"
    )
    rolls: int = Field(4, ge=0, description="sample pieces drawn as piano rolls (0: none)")
    seed: int = Field(0, description="seed of the subsets and of the test set's split in two halves")


class ChoraleEvaluator(Evaluator):
    name: ClassVar[str] = "chorale"
    kinds: ClassVar[tuple[str, ...]] = ("music",)
    Config: ClassVar[type[ChoraleEvalConfig]] = ChoraleEvalConfig
    description: ClassVar[str] = (
        "MIDI/MusicXML loads back; pitch-class histogram, ranges and counterpoint (parallels, crossings) vs real chorales"
    )

    def evaluate(self, samples: Samples, reference: Reference, out_dir: Path, config: ChoraleEvalConfig) -> Evaluation:
        files = _subset(music_paths(samples.path), config.max_pieces, config.seed)
        if not files:
            raise DataError(f"{samples.path} holds no MIDI or MusicXML files ({', '.join(corpus.MUSIC_SUFFIXES)})")
        grids, parsed, skipped = parse_files(files)
        if not grids:
            raise DataError(f"none of the {len(files)} music files in {samples.path} loads back as a four-part piece ({_reasons(skipped)})")
        test_grids = reference_grids(reference.test, config.max_pieces, config.seed)
        train_grids = reference_grids(reference.train, config.max_pieces, config.seed) if reference.train else None
        fake, test = PieceSet.of(grids), PieceSet.of(test_grids)
        length = int(np.median([g.shape[1] for g in grids]))
        corpus_grids = test_grids + (train_grids or [])  # the real pieces at the samples' length: the bands and means
        cut, held = PieceSet.of(*stretches(corpus_grids, length)), PieceSet.of(*stretches(test_grids, length))
        pieces_words = (
            f"the {len(test_grids)} test and {len(train_grids)} training pieces" if train_grids else f"the {len(test_grids)} test pieces"
        )
        cut_words = (
            f"{len(cut)} stretches of {pieces_words}, {length / G.STEPS_PER_BEAT:g} beats long (the samples' median length), starting a bar apart, "
            "each piece counted by its length"
        )
        pairs, how = _real_pairs(test_grids, test, train_grids, len(grids), config.seed)

        def floor(measure) -> float | None:  # a real-vs-real figure: its mean over the draws
            return float(np.mean([measure(a, b) for a, b in pairs])) if pairs else None

        out: list[Metric] = []
        notes: list[str] = []

        def add(name: str, value: float, higher: bool | None, floor: float | None, text: str) -> None:
            if not np.isfinite(value):  # cannot be computed on these pieces: left out, and said why
                notes.append(f"{name} left out: {text}")
                return
            out.append(Metric(name, float(value), higher, _finite(floor), text))

        add(
            "loads_back",
            len(grids) / len(files),
            True,
            None,
            f"share of the {len(files)} files music21 parsed into a four-part grid (skipped: {_reasons(skipped)})",
        )
        add("pieces", len(grids), None, None, f"pieces scored; the reference test set has {len(test)}")
        add(
            "pc_histogram_distance",
            metrics.histogram_distance(fake.histogram(), test.histogram()),
            False,
            floor(lambda a, b: metrics.histogram_distance(a.histogram(), b.histogram())),
            f"Jensen-Shannon distance (bits) of the pooled pitch-class histogram vs the test set's (floor: {how})",
        )
        add(
            "pc_profile_distance",
            metrics.histogram_distance(fake.profile(), test.profile()),
            False,
            floor(lambda a, b: metrics.histogram_distance(a.profile(), b.profile())),
            f"the same with each piece first moved to C (the tonic of the major scale that holds most of it), so keys do not count (floor: {how})",
        )
        for name, (key, text) in MEANS.items():
            add(name, fake.mean(key), None, cut.mean(key), f"{text} (floor: {cut_words})")
        for name, (key, words) in BANDS.items():
            band = cut.band(key)
            add(
                name,
                fake.in_band(key, band),
                True,
                held.in_band(key, band),
                f"share of pieces whose {words} lies in the p5-p95 band [{band[0]:.3g}, {band[1]:.3g}] of {cut_words} (floor: the test pieces' {len(held)} stretches)",
            )
        add(
            "out_of_range",
            fake.out_of_range(),
            False,
            test.out_of_range(),
            "share of note-steps outside the voice's usual range (grid.RANGES), all voices",
        )
        for voice in G.VOICES:
            low, high = G.RANGES[voice]
            add(
                f"out_of_range_{voice}",
                fake.out_of_range(voice),
                False,
                test.out_of_range(voice),
                f"share of {voice} note-steps outside MIDI {low}..{high}",
            )
        for name, (key, text) in RATES.items():
            add(name, fake.rate(key), False, test.rate(key), f"{text}, pooled over pieces (floor: the real test pieces)")
        for name, (key, text) in HARMONY.items():
            low, high = cut.defined_band(key)
            add(
                name,
                fake.mean(key),
                None,
                cut.mean(key),
                f"{text}; Bach's band [{low:.3g}, {high:.3g}] (p5-p95) and floor (mean): {cut_words}",
            )
        add(
            "final_cadence",
            final_cadences(grids),
            True,
            final_cadences(test_grids),
            "share of pieces whose last sonority is a root-position tonic (bass on the tonic, every pitch class in the tonic triad, "
            "a Picardy third allowed) of the key music21 hears in the whole piece (floor: the whole test chorales)",
        )
        add(
            "parallels_ratio",
            _ratio(fake.parallels(), test.parallels()),
            False,
            floor(lambda a, b: _ratio(a.parallels(), b.parallels())),
            f"(fifths + octaves) per beat, samples / test set (target <= 2; undefined when the test set has none; floor: {how})",
        )

        enforced = [m for setting, names in ENFORCED.items() if samples.meta.get(setting) for m in names]
        if enforced:
            shown = [m for m in out if m.name in enforced]
            for i, m in enumerate(out):
                if m.name in enforced:
                    out[i] = Metric(
                        m.name, m.value, m.higher_is_better, m.floor, f"{m.description} [enforced by construction: the sampler's rules]"
                    )
            notes.append(
                "enforced by construction — these samples were drawn under the sampler's rules, so these figures say what the rules "
                "did, not what the model learnt (where the final cadence and the counterpoint rules leave no note, the cadence wins): "
                f"{', '.join(m.name for m in shown)}"
            )

        out_dir.mkdir(parents=True, exist_ok=True)
        figures = {}
        if config.rolls:
            figures["piano_rolls"] = render.piano_roll(
                grids[: config.rolls], out_dir / "piano_rolls.png", titles=[p.name for p in parsed[: config.rolls]]
            )
        figures["counterpoint"] = counterpoint_chart(fake, test, out_dir / "counterpoint.png")
        return Evaluation(self.name, out, figures, notes=notes)


BAR = 4 * G.STEPS_PER_BEAT  # a 4/4 bar, in grid steps


def windows(grids: list[np.ndarray], length: int, hop: int | None = None) -> list[np.ndarray]:
    """Each piece cut into windows of ``length`` steps starting every ``hop`` steps (None: ``length``, consecutive windows).

    A piece no longer than ``length`` is kept whole; steps after the last whole window are dropped.
    """
    out = []
    for g in grids:
        if g.shape[1] <= length:
            out.append(g)
        else:
            out += [
                G.crop(g, start, length) for start in range(0, g.shape[1] - length + 1, hop or length)
            ]  # held notes re-struck at a window's start
    return out


def stretches(grids: list[np.ndarray], length: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Every stretch of ``length`` steps starting a bar apart (``windows``), and a weight for each: a piece's stretches
    share its length in windows (``max(T, length) / length``), so that a piece counts by its length, as consecutive
    windows would count it, however many stretches it holds."""
    out, weights = [], []
    for g in grids:
        cut = windows([g], length, hop=BAR)
        out += cut
        weights += [max(g.shape[1], length) / length / len(cut)] * len(cut)
    return out, np.array(weights)


FLOOR_DRAWS = 8  # real-vs-real floors are means over this many random draws: one draw of 64 pieces' keys moved a distance 4x


def _real_pairs(
    test_grids: list[np.ndarray], test: PieceSet, train: list[np.ndarray] | None, n: int, seed: int
) -> tuple[list[tuple[PieceSet, PieceSet]], str]:
    """Pairs of real sets to measure a samples-vs-test comparison on, drawn ``FLOOR_DRAWS`` times: (pairs, in words)."""
    if train:
        if len(train) <= n:
            return [(PieceSet.of(train), test)], f"the {len(train)} training pieces vs the test set"
        return [
            (PieceSet.of(_subset(train, n, seed + i)), test) for i in range(FLOOR_DRAWS)
        ], f"{n} training pieces vs the test set, mean of {FLOOR_DRAWS} draws"
    if len(test_grids) < 2:
        return [], "none, the test set has one piece"
    half = len(test_grids) // 2
    pairs = []
    for i in range(FLOOR_DRAWS):
        order = np.random.default_rng(seed + i).permutation(len(test_grids))
        pairs.append((PieceSet.of([test_grids[j] for j in order[:half]]), PieceSet.of([test_grids[j] for j in order[half:]])))
    return pairs, f"one half of the test pieces vs the other ({half} vs {len(test_grids) - half}), mean of {FLOOR_DRAWS} draws"


def counterpoint_chart(fake: PieceSet, real: PieceSet, out: Path) -> Path:
    """Bars of voice crossings, parallel fifths and parallel octaves per 100 beats: samples beside the real test pieces."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = (("samples", fake, "tab:red"), ("real test", real, "tab:blue"))
    fig, axes = plt.subplots(1, len(RATES), figsize=(8, 2.8))
    for ax, (key, text) in zip(axes, RATES.values()):  # one panel each: crossings outnumber parallels
        values = [pieces.rate(key) for _, pieces, _ in sets]
        bars = ax.bar([f"{what}\n({len(pieces)} pieces)" for what, pieces, _ in sets], values, color=[c for *_, c in sets])
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_title(text.split(" per ")[0], fontsize=9)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.15)
    axes[0].set_ylabel("per 100 beats")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
