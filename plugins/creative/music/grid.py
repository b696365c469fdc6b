"""The chorale grid: four voices on a sixteenth-note time step, one token per voice and step.

A grid is an int array of shape (4, T): rows soprano, alto, tenor, bass (``VOICES``), columns
sixteenth-note steps (a quarter-note beat is 4 steps). Tokens:

========================= ===============================================================
token                     meaning
========================= ===============================================================
``REST`` = 0              the voice is silent at this step
``HOLD`` = 1              the note this voice sounded at the previous step continues
2 .. 70                   a note begins (is struck) here: MIDI pitch ``PITCH_LOW + token - 2``
                          (``PITCH_LOW`` = 28, E1, .. ``PITCH_HIGH`` = 96, C7; 69 pitches)
``MASK`` = 71             not music: the masked-diffusion model's "unknown" token
========================= ===============================================================

``VOCAB`` = 71 tokens are music; ``N_TOKENS`` = 72 with ``MASK``. A repeated note is a new pitch
token (struck again); a tie or a long note is a pitch token followed by ``HOLD``s.

The pitch window 28..96 covers the chorales' voices (bass 36 to soprano 81) with an octave
to spare, so that transposing for augmentation stays in it.

Decoding a model's output: a ``HOLD`` with nothing to hold (at step 0, or after a ``REST``),
a ``MASK`` left unfilled, or any other id outside the vocabulary is read as a ``REST``.
``notes``, ``pitches`` and everything built on them (MIDI, MusicXML, audio, metrics) follow
this one rule, so an ill-formed sample still decodes, with silence where it is ill-formed;
``clean`` rewrites a grid to that reading.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

VOICES = ("soprano", "alto", "tenor", "bass")  # grid rows, top to bottom
# each voice's usual range, MIDI pitch (lowest, highest) over the Bach chorales (music21 corpus)
RANGES = {"soprano": (57, 81), "alto": (53, 74), "tenor": (48, 69), "bass": (36, 64)}

REST = 0
HOLD = 1
PITCH_LOW = 28  # E1
PITCH_HIGH = 96  # C7
VOCAB = 2 + (PITCH_HIGH - PITCH_LOW + 1)  # 71 musical tokens
MASK = VOCAB  # 71
N_TOKENS = VOCAB + 1  # 72, the size of a model's embedding table

STEPS_PER_BEAT = 4  # sixteenths per quarter note


def pitch_token(pitch: int) -> int:
    """The token that strikes MIDI ``pitch``; ``ValueError`` outside ``PITCH_LOW..PITCH_HIGH``."""
    if not PITCH_LOW <= pitch <= PITCH_HIGH:
        raise ValueError(f"MIDI pitch {pitch} is outside the vocabulary {PITCH_LOW}..{PITCH_HIGH}")
    return 2 + int(pitch) - PITCH_LOW


def token_pitch(token: int) -> int | None:
    """The MIDI pitch a token strikes, or None for REST, HOLD, MASK and unknown ids."""
    return PITCH_LOW + int(token) - 2 if 2 <= token < VOCAB else None


def encode_notes(voices: Sequence[Iterable[tuple[int, int, int]]], length: int | None = None) -> np.ndarray:
    """A grid from notes: ``voices`` holds, per voice (S, A, T, B), ``(start_step, end_step, pitch)`` with end exclusive.

    ``length`` is T (default: the last note's end). Within a voice, a note that begins while an
    earlier one still sounds cuts it short. Notes past ``length`` are cut; a note of zero
    length is ignored. Raises ``ValueError`` for a pitch outside the vocabulary.
    """
    if len(voices) != len(VOICES):
        raise ValueError(f"expected {len(VOICES)} voices (S, A, T, B); got {len(voices)}")
    voices = [sorted(v) for v in voices]
    if length is None:
        length = max((end for v in voices for _, end, _ in v), default=0)
    grid = np.full((len(VOICES), length), REST, dtype=np.int64)
    for row, notes_ in zip(grid, voices):
        for start, end, pitch in notes_:
            start, end = max(int(start), 0), min(int(end), length)
            if end <= start:
                continue
            row[start] = pitch_token(pitch)
            row[start + 1 : end] = HOLD
    return grid


def _check(grid: np.ndarray, batch: bool = False) -> np.ndarray:
    """An int grid (4, T); with ``batch``, also a stack of them (..., 4, T)."""
    grid = np.asarray(grid)
    if (grid.ndim != 2 and not (batch and grid.ndim > 2)) or grid.shape[-2] != len(VOICES) or not np.issubdtype(grid.dtype, np.integer):
        raise ValueError(f"a grid is an int array (4, T); got {grid.dtype} {grid.shape}")
    return grid


def pitches(grid: np.ndarray) -> np.ndarray:
    """(4, T) int — or (..., 4, T) for a stack of grids: the MIDI pitch each voice sounds at each step, -1 where
    silent (``HOLD`` resolved; a ``MASK`` is silence)."""
    grid = _check(grid, batch=True)
    struck = (grid >= 2) & (grid < VOCAB)
    own = np.where(struck, grid - 2 + PITCH_LOW, -1)  # what each step says by itself
    # a HOLD reads the last step before it that is not a HOLD (a rest there, or a leading HOLD: silence)
    last = np.maximum.accumulate(np.where(grid != HOLD, np.arange(grid.shape[-1]), 0), axis=-1)
    return np.take_along_axis(own, last, axis=-1).astype(np.int64)


def onsets(grid: np.ndarray) -> np.ndarray:
    """(4, T) bool — or (..., 4, T): where a note is struck (a pitch token)."""
    grid = _check(grid, batch=True)
    return (grid >= 2) & (grid < VOCAB)


def notes(grid: np.ndarray) -> list[list[tuple[int, int, int]]]:
    """Per voice (S, A, T, B), its notes as ``(start_step, end_step, pitch)``, end exclusive, in time order."""
    grid = _check(grid)
    sounding = pitches(grid)
    struck = onsets(grid)
    out = []
    for row, hit in zip(sounding, struck):
        voice, start = [], None
        for t, p in enumerate(row):
            if start is not None and (hit[t] or p < 0):
                voice.append((start, t, int(row[start])))
                start = None
            if hit[t]:
                start = t
        if start is not None:
            voice.append((start, len(row), int(row[start])))
        out.append(voice)
    return out


def clean(grid: np.ndarray) -> np.ndarray:
    """The grid as it decodes: a ``HOLD`` with nothing to hold, ``MASK`` and unknown ids become ``REST``."""
    grid = _check(grid)
    return encode_notes(notes(grid), grid.shape[1])


def transpose(grid: np.ndarray, semitones: int, *, fold: bool = False) -> np.ndarray | None:
    """The grid moved by ``semitones``; when some pitch would leave ``PITCH_LOW..PITCH_HIGH``: None,
    or with ``fold``, that note moved by octaves back into the vocabulary."""
    grid = _check(grid)
    struck = (grid >= 2) & (grid < VOCAB)
    if struck.any() and not fold:
        low, high = grid[struck].min() - 2 + PITCH_LOW, grid[struck].max() - 2 + PITCH_LOW
        if low + semitones < PITCH_LOW or high + semitones > PITCH_HIGH:
            return None
    out = grid.copy()
    out[struck] += int(semitones)
    if fold:
        while ((out < 2) & struck).any() or ((out >= VOCAB) & struck).any():
            out[struck & (out < 2)] += 12
            out[struck & (out >= VOCAB)] -= 12
    return out


def crop(grid: np.ndarray, start: int, length: int) -> np.ndarray:
    """Steps ``start .. start+length`` as a grid of its own, padded with rests past the end.

    A note already sounding at ``start`` is struck there (its ``HOLD`` becomes its pitch token),
    so the crop never begins with a ``HOLD``.
    """
    grid = _check(grid)
    out = np.full((grid.shape[0], length), REST, dtype=np.int64)
    piece = grid[:, start : start + length]
    out[:, : piece.shape[1]] = piece
    if piece.shape[1] and start > 0:
        sounding = pitches(grid[:, : start + 1])[:, start]
        held = (out[:, 0] == HOLD) & (sounding >= 0)
        out[held, 0] = sounding[held] - PITCH_LOW + 2
    out[:, 0][out[:, 0] == HOLD] = REST
    return out


def windows(grid: np.ndarray, length: int, hop: int) -> np.ndarray:
    """(N, 4, length): training windows starting every ``hop`` steps, each cut with ``crop``.

    Windows lie inside the piece; a piece shorter than ``length`` gives one window padded with
    rests. Take ``hop`` a multiple of 4 (a beat), or of the bar, so that windows start on a beat.
    """
    grid = _check(grid)
    starts = range(0, max(grid.shape[1] - length, 0) + 1, hop)
    return np.stack([crop(grid, s, length) for s in starts])
