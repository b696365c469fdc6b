"""A melody to harmonise: one line of notes from a MIDI or MusicXML file, as soprano tokens on sixteenths.

What a musician gives is checked and said back in one line: a file music21 cannot read,
one with no notes, with several parts, or with chords is refused. A melody outside the
soprano's range (``grid.RANGES``) is moved by whole octaves into it when it fits so
(the output says so); otherwise, or when its span is wider than the range, it is refused.
Notes are read as the corpus parser reads them (ties merged, sixteenths rounded alike).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from genforge.core import DataError
from genforge.core.inputs import check_file

from . import grid as G
from .corpus import _part_notes, _quantise

STEP = 0.25  # quarter notes per sixteenth


def read_melody(path: Path) -> tuple[np.ndarray, dict]:
    """(T,) soprano tokens (pitch, HOLD, REST), and what was done: notes, bars, transposition, the steps of notes under a fermata."""
    path = check_file(path, "melody")  # a folder, a FIFO, a link that leads nowhere: one line
    from music21 import chord, converter, expressions

    try:
        score = converter.parse(str(path))
    except Exception as exc:  # music21 raises many types for files it cannot read
        raise DataError(
            f"cannot read melody {path} as MIDI or MusicXML ({type(exc).__name__}); give a .mid or .musicxml file with one line of notes"
        ) from None
    parts = [p for p in getattr(score, "parts", [score]) if p.recurse().notes]
    if not parts:
        raise DataError(f"melody {path} holds no notes")
    if len(parts) > 1:
        raise DataError(f"melody {path} has {len(parts)} parts; give the melody alone (one part, one note at a time)")
    events = list(parts[0].flatten().notes)
    unpitched = [e for e in events if not hasattr(e, "pitch") and not isinstance(e, chord.Chord)]
    if unpitched:  # drums (MIDI channel 10) read as unpitched notes: no melody to harmonise
        raise DataError(
            f"melody {path} has {len(unpitched)} unpitched note(s) (drums or percussion, the first at beat "
            f"{float(unpitched[0].offset) + 1:g}); give a melody of pitched notes"
        )
    chords = [e for e in events if isinstance(e, chord.Chord)]
    if chords:
        raise DataError(
            f"melody {path} has chords ({len(chords)}, the first at beat {float(chords[0].offset) + 1:g}); give one note at a time"
        )
    counts: Counter = Counter()
    # the corpus parser's own reading: ties merged, grace notes skipped, rounded to sixteenths the same way
    [line] = _quantise([_part_notes(parts[0], 0, counts)], STEP, counts)
    if not line:
        raise DataError(f"melody {path} holds no notes")
    if counts["chords_reduced"]:  # notes that start on the same sixteenth
        raise DataError(f"melody {path} has {counts['chords_reduced']} notes struck together with another; give one note at a time")
    low, high = G.RANGES["soprano"]
    pitches = [p for _, _, p in line]
    lo, hi = min(pitches), max(pitches)
    if hi - lo > high - low:
        raise DataError(
            f"melody {path} spans {hi - lo} semitones (MIDI {lo}-{hi}); a soprano line spans at most {high - low} ({low}-{high})"
        )
    fits = [k for k in range(-48, 49, 12) if low <= lo + k and hi + k <= high]
    if not fits:
        raise DataError(
            f"melody {path} (MIDI {lo}-{hi}) cannot be moved by whole octaves into the soprano range ({low}-{high}); transpose it into that range first"
        )
    shift = min(fits, key=abs)
    line = [(a, b, p + shift) for a, b, p in line]
    length = -(-max(e for _, e, _ in line) // 16) * 16  # whole bars
    tokens = G.encode_notes([line, [], [], []], length)[0]
    onsets = {a for a, _, _ in line}
    fermatas = sorted(
        {
            round(float(n.offset) / STEP)
            for n in parts[0].flatten().notes
            if any(isinstance(e, expressions.Fermata) for e in n.expressions) and round(float(n.offset) / STEP) in onsets
        }
    )  # phrase ends the musician marked (MusicXML keeps them; MIDI has none): cadences there (cadence.py)
    info = {"file": path.name, "notes": len(line), "bars": length // 16, "transposed": shift, "fermatas": fermatas}
    return tokens, info
