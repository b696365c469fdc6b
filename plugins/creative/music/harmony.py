"""Harmony on the chorale grid: the key a piece is in, the chord on each beat, and how a piece ends.

- ``key_of``: Krumhansl–Kessler key finding (the correlation of a piece's duration-weighted
  pitch-class histogram with each key's profile), over all 24 keys or the candidates given.
- ``chord_on``: the chord a set of sounding pitches spells — its root, its type (major, minor,
  diminished or augmented triad, a seventh chord) and its inversion (the bass against the root);
  ``other`` where the pitch classes spell none (a passing sonority, an open fifth).
- ``ends_on_tonic``: whether the last sonority is a root-position tonic — the bass on the tonic
  and every pitch class in the tonic triad (a Picardy third allowed in minor), the judge
  FIELD_NOTES gives for Bach's endings.
- ``beat_chords``: the chord on every beat (the sonority sounding at each quarter's onset), from
  which ``metrics`` takes chord-type and inversion shares and harmonic rhythm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import grid as G

# Krumhansl & Kessler's probe-tone profiles, tonic first
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

MAJOR_TRIAD, MINOR_TRIAD = (0, 4, 7), (0, 3, 7)
DOMINANT_SEVENTH = (7, 11, 2, 5)  # V7 above the tonic, in both modes (minor's raised leading tone)

# chord templates: intervals above the root -> type
CHORDS: dict[tuple[int, ...], str] = {
    (0, 4, 7): "major",
    (0, 3, 7): "minor",
    (0, 3, 6): "diminished",
    (0, 4, 8): "augmented",
    (0, 4, 7, 10): "seventh",  # dominant seventh
    (0, 3, 7, 10): "seventh",  # minor seventh
    (0, 4, 7, 11): "seventh",  # major seventh
    (0, 3, 6, 10): "seventh",  # half-diminished
    (0, 3, 6, 9): "seventh",  # diminished seventh
    (0, 4, 10): "seventh",  # a seventh chord without its fifth, as chorales often write it
    (0, 3, 10): "seventh",
}
INVERSIONS = ("root", "first", "second", "third")


@dataclass(frozen=True)
class Key:
    tonic: int  # pitch class, C = 0
    minor: bool

    def __str__(self) -> str:
        names = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
        return f"{names[self.tonic]} {'minor' if self.minor else 'major'}"

    @classmethod
    def named(cls, name: str) -> Key:
        """A key as music21 and ``corpus.parse_score`` name it ("F# minor"; a mode other than minor counts as major)."""
        from music21 import pitch

        tonic, mode = name.rsplit(" ", 1)
        return cls(pitch.Pitch(tonic).pitchClass, mode == "minor")

    @property
    def triad(self) -> tuple[int, ...]:
        """The tonic triad's pitch classes (minor: with its minor third)."""
        return tuple((self.tonic + i) % 12 for i in (MINOR_TRIAD if self.minor else MAJOR_TRIAD))


ALL_KEYS = tuple(Key(t, m) for m in (False, True) for t in range(12))


def pc_weights(grid: np.ndarray) -> np.ndarray:
    """(12,) sounding sixteenths per pitch class (C first), all voices."""
    p = G.pitches(np.asarray(grid))
    return np.bincount(p[p >= 0] % 12, minlength=12).astype(float)


def key_of(weights: np.ndarray, candidates: tuple[Key, ...] = ALL_KEYS) -> Key | None:
    """The candidate key whose Krumhansl–Kessler profile correlates best with ``weights`` (12,); None for silence."""
    if weights.sum() <= 0:
        return None
    best, best_r = None, -np.inf
    for key in candidates:
        profile = np.roll(MINOR_PROFILE if key.minor else MAJOR_PROFILE, key.tonic)
        r = np.corrcoef(weights, profile)[0, 1] if weights.std() > 0 else 0.0
        if r > best_r:
            best, best_r = key, r
    return best


def chord_on(pitches: list[int] | np.ndarray) -> tuple[int | None, str, str | None]:
    """(root pitch class, type, inversion) of the sounding MIDI ``pitches`` (any order; ``other`` and None where no chord is spelt)."""
    pitches = [int(p) for p in pitches if p >= 0]
    if not pitches:
        return None, "rest", None
    pcs = sorted({p % 12 for p in pitches})
    bass = min(pitches) % 12
    for root in pcs:
        shape = tuple(sorted((pc - root) % 12 for pc in pcs))
        kind = CHORDS.get(shape)
        if kind:
            interval = (bass - root) % 12  # the bass above the root: 0 root position, a third first, a fifth second, a seventh third
            inversion = 0 if interval == 0 else 1 if interval in (3, 4) else 2 if interval in (6, 7, 8) else 3
            return root, kind, INVERSIONS[inversion]
    return None, "other", None


def last_sonority(grid: np.ndarray) -> list[int]:
    """The MIDI pitches sounding at the grid's last step where any voice sounds."""
    p = G.pitches(np.asarray(grid))
    sounding = np.flatnonzero((p >= 0).any(axis=0))
    return [] if not len(sounding) else [int(x) for x in p[:, sounding[-1]] if x >= 0]


def ends_on_tonic(grid: np.ndarray, key: Key | None = None) -> bool:
    """Whether the last sonority is a root-position tonic of ``key`` (None: ``key_of`` the whole piece).

    Bass on the tonic; every pitch class sounding in the tonic triad (in minor, a Picardy third allowed).
    """
    key = key or key_of(pc_weights(grid))
    chord = last_sonority(grid)
    if key is None or not chord:
        return False
    allowed = set(key.triad) | ({(key.tonic + 4) % 12} if key.minor else set())
    return min(chord) % 12 == key.tonic and {p % 12 for p in chord} <= allowed


def beat_chords(grid: np.ndarray) -> list[tuple[int | None, str, str | None]]:
    """``chord_on`` the sonority at each beat's onset (every ``STEPS_PER_BEAT`` steps) where all four voices sound."""
    p = G.pitches(np.asarray(grid))
    out = []
    for t in range(0, p.shape[1], G.STEPS_PER_BEAT):
        col = p[:, t]
        if (col >= 0).all():
            out.append(chord_on(col))
    return out
