"""Chorales into grids: music21's Bach chorales, or a user's folder of MusicXML/MIDI, through one parser.

``parse_score`` reads one piece into a (4, T) grid (see ``grid``) or raises ``SkipPiece`` with
a reason; the loaders count skipped pieces by reason. The rules, decided here once:

- Voices: the parts that hold at least one note must be exactly four ("not four parts"
  otherwise; a chorale with obbligato instruments has more). They are ordered by mean pitch,
  highest first, into S, A, T, B. The Bach chorales' parts are already in that order
  (checked in the tests); a MIDI file's tracks need not be.
- Time: each note's start and end are rounded to the nearest sixteenth. A note that moves is
  counted (``moved``); one that shrinks to nothing (a 64th ornament) is dropped and counted
  (``dropped``, also among ``moved``). When more than ``max_moved`` (10 %) of a piece's notes move, it is not music
  on a sixteenth grid (triplets, an unquantised performance): "off the sixteenth grid".
- Ties become ``HOLD``; grace notes are skipped (counted). A chord inside a part, or two notes
  struck together in one part, is reduced to one note: the highest for S, A and T, the lowest
  for the bass, so the outer voices keep their outer notes (counted as ``chords_reduced``).
- A pitch outside the grid's vocabulary (28..96): "pitch out of vocabulary". A file music21
  cannot read: "unreadable".
- Key: music21's key analysis of the piece (``analyze("key")``: Krumhansl-Schmuckler's method with
  Aarden-Essen's weights), as "tonic mode" in
  music21's spelling ("F# minor", "B- major"); with ``key_analysis=False``, the first key
  signature (major when it has no mode), or None.

``load_bach`` caches its result in ``cache_dir`` (reading the 433 files with key analysis took
about 1.5 minutes on 2 cores): ``<key>.npz`` with the grids end to end and their lengths,
and ``<key>.json`` with the infos and skip counts, written last; the key names music21's
version, ``PARSER_VERSION``, the step and the limit.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core import DataError, store
from genforge.core.kinds import Music

from . import grid as G
from . import metrics

PARSER_VERSION = "chorale-grid-1"  # bump when parse_score's output changes for the same file
MUSIC_SUFFIXES = Music.suffixes  # the music sample kind's

Progress = Callable[[int, int, str], None]  # (files done, files in all, file name)


class SkipPiece(Exception):
    """A piece that cannot become a four-voice grid; ``reason`` is one of a few short phrases, for counting."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _read(score_or_path):
    """A music21 Score, from a path or as given."""
    from music21 import converter, stream

    if isinstance(score_or_path, stream.Score):
        return score_or_path, getattr(score_or_path, "filePath", None) or ""
    path = Path(score_or_path)
    try:
        score = converter.parse(path)
    except Exception as exc:  # music21 raises many kinds for a damaged file
        raise SkipPiece("unreadable", f"{path.name}: {type(exc).__name__}") from None
    if isinstance(score, stream.Opus):
        raise SkipPiece("several pieces in one file", path.name)
    if not isinstance(score, stream.Score):
        raise SkipPiece("not four parts", f"{path.name} holds no parts")
    return score, str(path)


def _part_notes(part, voice: int, counts: Counter) -> list[tuple[float, float, int]]:
    """(start, end, pitch) in quarter notes, ties merged, grace notes skipped, chords reduced."""
    out: list[list] = []
    for n in part.flatten().notes:
        if n.duration.isGrace:
            counts["grace_skipped"] += 1
            continue
        if n.isChord:
            counts["chords_reduced"] += 1
            midis = [p.midi for p in n.pitches]
            pitch = min(midis) if voice == 3 else max(midis)
        else:
            pitch = n.pitch.midi
        start, end = float(n.offset), float(n.offset + n.quarterLength)
        tie = n.tie.type if n.tie is not None else None
        if tie in ("stop", "continue") and out and out[-1][2] == pitch and abs(out[-1][1] - start) < 1e-6:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end, pitch])
    return [tuple(x) for x in out]


def _quantise(voices: list[list[tuple[float, float, int]]], step: float, counts: Counter) -> list[list[tuple[int, int, int]]]:
    """Start and end rounded to the nearest step; notes struck together in one voice reduced to one."""
    out = []
    for v, notes in enumerate(voices):
        by_start: dict[int, tuple[int, int, int]] = {}
        for start, end, pitch in notes:
            a, b = int(np.floor(start / step + 0.5)), int(np.floor(end / step + 0.5))
            if abs(a * step - start) > 1e-6 or abs(b * step - end) > 1e-6:
                counts["moved"] += 1
            if b <= a:
                counts["dropped"] += 1
                continue
            if a in by_start:
                counts["chords_reduced"] += 1
                keep = by_start[a]
                if (pitch < keep[2]) if v == 3 else (pitch > keep[2]):
                    by_start[a] = (a, b, pitch)
                continue
            by_start[a] = (a, b, pitch)
        out.append(sorted(by_start.values()))
    return out


def _key(score, key_analysis: bool) -> tuple[str | None, str]:
    if key_analysis:
        try:
            k = score.analyze("key")
            return f"{k.tonic.name} {k.mode}", "analysis"
        except Exception:  # analysis fails on pieces without pitches; fall back to the signature
            pass
    from music21 import key as m21key

    sig = score.recurse().getElementsByClass(m21key.KeySignature).first()
    if sig is None:
        return None, "none"
    k = sig if isinstance(sig, m21key.Key) else sig.asKey("major")
    return f"{k.tonic.name} {k.mode}", "signature"


def parse_score(
    score_or_path, step: float = 0.25, *, key_analysis: bool = True, max_moved: float = 0.1
) -> tuple[np.ndarray, dict[str, Any]]:
    """One piece (a music21 Score, or a path music21 reads) -> (grid (4, T) int64, info); raises ``SkipPiece``.

    ``step`` is the grid's step in quarter notes (0.25: a sixteenth). ``info`` holds: source,
    key, key_source, time_signature ("4/4" or None), bars, pickup_steps (length of an incomplete
    first bar, 0 if none), steps, notes, moved, dropped, chords_reduced, grace_skipped,
    part_names (in S, A, T, B order), reordered (whether the parts were not in that order).
    """
    from music21 import meter

    score, source = _read(score_or_path)
    parts = [p for p in score.parts if any(not n.duration.isGrace for n in p.flatten().notes)]
    if len(parts) != len(G.VOICES):
        raise SkipPiece("not four parts", f"{len(parts)} parts with notes")

    counts: Counter = Counter()

    def mean_pitch(part) -> float:
        ns = [n for n in part.flatten().notes if not n.duration.isGrace]
        weights = np.array([max(float(n.quarterLength), 1e-3) for n in ns])
        return float(np.average([np.mean([p.midi for p in n.pitches]) for n in ns], weights=weights))

    order = sorted(range(len(parts)), key=lambda i: -mean_pitch(parts[i]))
    parts = [parts[i] for i in order]
    raw = [_part_notes(p, v, counts) for v, p in enumerate(parts)]
    n_notes = sum(len(v) for v in raw)
    voices = _quantise(raw, step, counts)
    if n_notes and counts["moved"] > max_moved * n_notes:
        raise SkipPiece("off the sixteenth grid", f"{counts['moved']} of {n_notes} notes moved")
    try:
        grid = G.encode_notes(voices)
    except ValueError as exc:
        raise SkipPiece("pitch out of vocabulary", str(exc)) from None

    key, key_source = _key(score, key_analysis)
    ts = score.recurse().getElementsByClass(meter.TimeSignature).first()
    measures = list(parts[0].getElementsByClass("Measure"))
    pickup = 0
    if measures and measures[0].paddingLeft:
        pickup = int(round(float(measures[0].duration.quarterLength) / step))
    info = {
        "source": source,
        "key": key,
        "key_source": key_source,
        "time_signature": ts.ratioString if ts is not None else None,
        "bars": len(measures),
        "pickup_steps": pickup,
        "steps": int(grid.shape[1]),
        "notes": n_notes,
        "moved": counts["moved"],
        "dropped": counts["dropped"],
        "chords_reduced": counts["chords_reduced"],
        "grace_skipped": counts["grace_skipped"],
        "part_names": [p.partName or "" for p in parts],
        "reordered": order != sorted(order),
    }
    return grid, info


def _parse_all(files: Sequence[Path], step: float, key_analysis: bool, progress: Progress | None):
    grids, infos, skipped = [], [], Counter()
    for i, path in enumerate(files):
        try:
            grid, info = parse_score(path, step, key_analysis=key_analysis)
        except SkipPiece as skip:
            skipped[skip.reason] += 1
        else:
            grids.append(grid)
            infos.append(info)
        if progress is not None:
            progress(i + 1, len(files), Path(path).name)
    return grids, infos, skipped


def _cache_paths(cache_dir: Path, name: str) -> tuple[Path, Path]:
    cache_dir = Path(cache_dir)
    return cache_dir / f"{name}.npz", cache_dir / f"{name}.json"


def _read_cache(cache_dir: Path, name: str):
    npz, meta = _cache_paths(cache_dir, name)
    if not (npz.is_file() and meta.is_file()):
        return None
    try:
        doc = json.loads(meta.read_text())
        with np.load(npz) as z:
            tokens, lengths = z["tokens"].astype(np.int64), z["lengths"]
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache is parsed again
    if len(lengths) != len(doc["infos"]):
        return None  # the .npz of one write and the .json of another
    grids = np.split(tokens, np.cumsum(lengths)[:-1], axis=1) if len(lengths) else []
    return list(grids), doc["infos"], Counter(doc["skipped"])


def _write_cache(cache_dir: Path, name: str, grids, infos, skipped) -> None:
    npz, meta = _cache_paths(cache_dir, name)
    buf = io.BytesIO()
    tokens = np.concatenate(grids, axis=1) if grids else np.zeros((len(G.VOICES), 0))
    np.savez_compressed(buf, tokens=tokens.astype(np.uint8), lengths=np.array([g.shape[1] for g in grids], dtype=np.int64))
    store.atomic_write_bytes(npz, buf.getvalue())
    store.atomic_write_text(meta, json.dumps({"infos": infos, "skipped": dict(skipped)}, indent=1) + "\n")  # last: marks the cache complete


def _cached(cache_dir: Path | None, name: str, files: Sequence[Path], step, key_analysis, progress):
    if cache_dir is not None:
        hit = _read_cache(cache_dir, name)
        if hit is not None:
            return hit
    grids, infos, skipped = _parse_all(files, step, key_analysis, progress)
    if cache_dir is not None:
        _write_cache(cache_dir, name, grids, infos, skipped)
    return grids, infos, skipped


def _m21_version() -> str:
    import music21

    return music21.VERSION_STR


def load_bach(
    cache_dir: Path, limit: int | None = None, progress: Progress | None = None, *, step: float = 0.25, key_analysis: bool = True
) -> tuple[list[np.ndarray], list[dict], Counter]:
    """The Bach chorales of music21's corpus as grids: (grids, infos, skipped reasons counted).

    Reads ``music21.corpus.getComposer('bach')`` (433 files; 368 are four-part), sorted by name;
    ``limit`` takes the first N files (for tests; cached under its own key).
    """
    from music21 import corpus

    files = sorted(corpus.getComposer("bach"), key=lambda p: Path(p).name)
    if limit is not None:
        files = files[:limit]
    name = f"bach-m21_{_m21_version()}-{PARSER_VERSION}-step{step}-ka{int(key_analysis)}-{'all' if limit is None else f'first{limit}'}"
    return _cached(cache_dir, name, files, step, key_analysis, progress)


def music_files(folder: Path) -> list[Path]:
    """The MIDI and MusicXML files under ``folder`` (recursively), sorted."""
    return sorted(
        p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in MUSIC_SUFFIXES
    )  # a corpus: every file (a samples folder, Music.load: its midi/ only)


def load_folder(
    folder: Path, progress: Progress | None = None, *, cache_dir: Path | None = None, step: float = 0.25, key_analysis: bool = True
) -> tuple[list[np.ndarray], list[dict], Counter]:
    """A user's folder of MIDI/MusicXML files (.mid .midi .musicxml .xml .mxl, recursively) as ``load_bach`` returns it.

    Raises ``DataError`` for a missing folder, one without such files, or one none of whose
    pieces could be used (the line counts the reasons). With ``cache_dir``, the result is cached
    under a key made of the files' names, sizes and modification times.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"music folder {folder} does not exist; give a folder of MIDI or MusicXML files")
    files = music_files(folder)
    if not files:
        raise DataError(f"{folder} holds no MIDI or MusicXML files ({', '.join(MUSIC_SUFFIXES)}); add four-part pieces there")
    stamp = hashlib.sha256(
        "\n".join(f"{p.relative_to(folder)}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}" for p in files).encode()
    ).hexdigest()[:16]
    name = f"folder-m21_{_m21_version()}-{PARSER_VERSION}-step{step}-ka{int(key_analysis)}-{stamp}"
    grids, infos, skipped = _cached(cache_dir, name, files, step, key_analysis, progress)
    if not grids:
        reasons = ", ".join(f"{n} {r}" for r, n in skipped.most_common())
        raise DataError(f"none of the {len(files)} files in {folder} is a usable four-part piece ({reasons})")
    return grids, infos, skipped


# tonic names by pitch class, in music21's spelling ("-" is a flat), as key signatures usually spell them
_MAJOR_TONICS = ("C", "D-", "D", "E-", "E", "F", "F#", "G", "A-", "A", "B-", "B")
_MINOR_TONICS = ("C", "C#", "D", "E-", "E", "F", "F#", "G", "G#", "A", "B-", "B")


def transpose_key(key: str | None, semitones: int) -> str | None:
    """A key such as "F# minor" moved by ``semitones`` ("G# minor" for +2); None stays None."""
    if key is None:
        return None
    from music21 import pitch

    tonic, mode = key.rsplit(" ", 1)
    pc = (pitch.Pitch(tonic).pitchClass + semitones) % 12
    return f"{(_MINOR_TONICS if mode == 'minor' else _MAJOR_TONICS)[pc]} {mode}"


def grid_key(grid: np.ndarray, step: float = 0.25) -> str | None:
    """music21's key analysis of the notes of a grid, any voices given ("G minor"; as ``parse_score``'s); None for a silent grid."""
    from music21 import note, stream

    s = stream.Stream()
    for voice in G.notes(grid):
        for start, end, pitch in voice:
            s.insert(start * step, note.Note(pitch, quarterLength=(end - start) * step))
    if not s.notes:
        return None
    k = s.analyze("key")
    return f"{k.tonic.name} {k.mode}"


HOME_KEYS = {"major": 0, "minor": 9}  # the tonic pitch class each mode is moved to: C major, A minor (one scale, no accidentals)


def _outside(grid: np.ndarray, k: int) -> int:
    """Note-steps (sounding sixteenths) of the grid that a move by ``k`` semitones would put outside their voice's usual range."""
    return _count_outside(G.pitches(grid), k)


def _count_outside(sounding: np.ndarray, k: int) -> int:
    return int(metrics.out_of_range_counts(sounding, k).sum())


def _placed(sounding: np.ndarray, up: int) -> tuple[int, int]:
    """(note-steps left out of range, move): ``up`` semitones as the shorter move, either way at 6."""
    up %= 12
    outside, _, down = min((_count_outside(sounding, k), abs(k), -k) for k in (up, up - 12) if -6 <= k <= 6)  # a tie at 6: up
    return outside, -down


def nearest_shift(grid: np.ndarray, up: int) -> int:
    """``up`` semitones as the shorter move (-5..6; at 6 semitones either way, whichever leaves fewer note-steps out of range)."""
    return _placed(G.pitches(grid), up)[1]


def draw_shift(grid: np.ndarray, offsets: dict[str, int], rng: np.random.Generator) -> int:
    """A move (-6..6, ``nearest_shift``) to a key drawn from ``offsets`` ({"semitones": how many pieces}) among those that leave fewest note-steps out of range."""
    sounding = G.pitches(grid)
    placed = {k: _placed(sounding, int(k)) for k in offsets}  # key -> (outside, move), the pitches decoded once
    fewest = min(outside for outside, _ in placed.values())
    best = [k for k in offsets if placed[k][0] == fewest]
    weights = np.array([offsets[k] for k in best], float)
    return placed[best[rng.choice(len(best), p=weights / weights.sum())]][1]


def plan_shifts(offsets: dict[str, int], n: int, rng: np.random.Generator) -> list[int]:
    """``n`` moves to keys of ``offsets`` ({"semitones": how many pieces}) in proportion to their counts, in random order.

    Each key gets its whole share; the pieces left over go to keys drawn by their fractions'
    weights, so a set of pieces holds the corpus's mix of keys, not a random draw from it.
    """
    keys = list(offsets)
    quota = n * np.array([offsets[k] for k in keys], float) / sum(offsets.values())
    counts = np.floor(quota).astype(int)
    if left := n - int(counts.sum()):
        frac = quota - counts
        counts[rng.choice(len(keys), left, replace=False, p=frac / frac.sum())] += 1
    moves = np.repeat([int(k) for k in keys], counts)
    rng.shuffle(moves)
    return moves.tolist()


def home_shift(grid: np.ndarray, key: str | None) -> int:
    """Semitones (-6..6, ``nearest_shift``) that move a piece in ``key`` to C major or A minor.

    ``key`` as ``parse_score`` gives it ("F# minor"; a mode other than minor counts as major); None:
    the grid's own key (``grid_key``); a silent grid stays where it is (0).
    """
    key = key or grid_key(grid)
    if key is None:
        return 0
    from music21 import pitch

    tonic, mode = key.rsplit(" ", 1)
    return nearest_shift(grid, HOME_KEYS.get(mode, 0) - pitch.Pitch(tonic).pitchClass)


def to_home_key(grids: Iterable[np.ndarray], keys: Iterable[str | None]) -> tuple[list[np.ndarray], list[int]]:
    """Each piece moved to C major or A minor by its key (``home_shift``; None: its analysed key): (grids, semitones each moved).

    A note the move would take out of the grid's vocabulary goes an octave back into it.
    """
    moved = [(g, home_shift(g, k)) for g, k in zip(grids, keys)]
    return [G.transpose(g, k, fold=True) for g, k in moved], [k for _, k in moved]


def augment(
    grids: Iterable[np.ndarray], semitones: Iterable[int] = range(-5, 7), infos: Sequence[dict] | None = None, *, range_slack: int = 2
) -> tuple[list[np.ndarray], list[dict]]:
    """Each grid transposed by each of ``semitones`` (0 included: the original), with the infos to match.

    A shifted copy is kept when every voice stays within its usual range (``grid.RANGES``)
    widened by ``range_slack`` semitones each side (and so in the vocabulary); the original
    (shift 0) is always kept. Returned infos are copies
    with ``key`` transposed and ``transposed`` set to the shift.
    """
    grids = list(grids)
    infos = list(infos) if infos is not None else [{} for _ in grids]
    shifts = list(semitones)
    out_grids, out_infos = [], []
    for g, info in zip(grids, infos):
        sounding = G.pitches(g)
        for k in shifts:
            ok = True
            for row, voice in zip(sounding, G.VOICES):
                row = row[row >= 0]
                low, high = G.RANGES[voice]
                if row.size and (row.min() + k < low - range_slack or row.max() + k > high + range_slack):
                    ok = False
                    break
            moved = G.transpose(g, k) if ok or k == 0 else None
            if moved is None:
                continue
            out_grids.append(moved)
            out_infos.append({**info, "key": transpose_key(info.get("key"), k), "transposed": int(k)})
    return out_grids, out_infos
