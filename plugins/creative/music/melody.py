"""A melody to harmonise: one line of notes from a MIDI or MusicXML file, as soprano tokens on sixteenths.

What a musician gives is checked and said back in one line: a file music21 cannot read,
one with no notes, with several parts, or with chords is refused. A melody outside the
soprano's range (``grid.RANGES``) is moved by whole octaves into it when its span fits
(the output says so); one whose span is wider than the range is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genforge.core import DataError

from . import grid as G

STEP = 0.25  # quarter notes per sixteenth


def read_melody(path: Path) -> tuple[np.ndarray, dict]:
    """(T,) soprano tokens (pitch, HOLD, REST), and what was done: notes, bars, transposition."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"melody {path} does not exist")
    from music21 import chord, converter, note

    try:
        score = converter.parse(str(path))
    except Exception as exc:  # music21 raises many types for files it cannot read
        raise DataError(f"cannot read melody {path} as MIDI or MusicXML ({type(exc).__name__}); give a .mid or .musicxml file with one line of notes") from None
    parts = [p for p in getattr(score, "parts", [score]) if p.recurse().notes]
    if not parts:
        raise DataError(f"melody {path} holds no notes")
    if len(parts) > 1:
        raise DataError(f"melody {path} has {len(parts)} parts; give the melody alone (one part, one note at a time)")
    events = list(parts[0].flatten().notes)
    chords = [e for e in events if isinstance(e, chord.Chord)]
    if chords:
        raise DataError(f"melody {path} has chords ({len(chords)}, the first at beat {float(chords[0].offset) + 1:g}); give one note at a time")
    notes = [(float(e.offset), float(e.offset + e.quarterLength), e.pitch.midi) for e in events if isinstance(e, note.Note) and e.quarterLength > 0]
    if not notes:
        raise DataError(f"melody {path} holds no notes")
    low, high = G.RANGES["soprano"]
    pitches = [p for _, _, p in notes]
    lo, hi = min(pitches), max(pitches)
    if hi - lo > high - low:
        raise DataError(f"melody {path} spans {hi - lo} semitones (MIDI {lo}-{hi}); a soprano line spans at most {high - low} ({low}-{high})")
    shift = 0
    while lo + shift < low:
        shift += 12
    while hi + shift > high:
        shift -= 12
    if lo + shift < low:  # fits in span but not in any octave placement: move it to the bottom of the range
        shift = low - lo
    line = [(round(s / STEP), max(round(e / STEP), round(s / STEP) + 1), p + shift) for s, e, p in notes]
    overlapping = sum(1 for a, b in zip(line, line[1:]) if b[0] < a[1] and b[0] == a[0])
    if overlapping:
        raise DataError(f"melody {path} has {overlapping} notes struck together; give one note at a time")
    length = -(-max(e for _, e, _ in line) // 16) * 16  # whole bars
    tokens = G.encode_notes([line, [], [], []], length)[0]
    info = {"file": path.name, "notes": len(line), "bars": length // 16, "transposed": shift}
    return tokens, info
