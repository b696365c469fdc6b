"""Grids out: a music21 score, MIDI and MusicXML files, a piano-roll picture and a short audio preview.

Every output decodes the grid the one way ``grid.notes`` does (an ill-formed ``HOLD`` or a
``MASK`` is silence). Audio comes from FluidSynth with Debian's General MIDI soundfont when
both are installed (``apt install fluidsynth fluid-soundfont-gm``), else from a small additive
synthesis of the grid in numpy; ``render_wav`` returns which one it used.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import grid as G

DEFAULT_TEMPO = 80  # quarter notes per minute: a chorale's walking pace
PART_NAMES = ("Soprano", "Alto", "Tenor", "Bass")
MIDI_PROGRAM = 52  # General MIDI "Choir Aahs" (0-based), all four voices, each on its own channel
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")  # Debian's fluid-soundfont-gm
SAMPLE_RATE = 22050
VOICE_COLOURS = ("tab:red", "tab:orange", "tab:green", "tab:blue")  # S, A, T, B in the piano roll


def to_score(
    grid: np.ndarray,
    step: float = 0.25,
    tempo: float = DEFAULT_TEMPO,
    key: str | None = None,
    time_signature: str = "4/4",
    title: str | None = None,
):
    """A music21 Score of four parts (Soprano, Alto, Tenor, Bass): a note per struck token, rests where silent.

    ``step`` is the grid's step in quarter notes; ``key`` a key such as "F# minor" (as
    ``corpus.parse_score`` gives it) or None. Notes across barlines are tied, as notation needs.
    """
    from music21 import clef, instrument, metadata, meter, note, stream
    from music21 import key as m21key
    from music21 import tempo as m21tempo

    grid = np.asarray(grid)
    length = grid.shape[1] * step
    score = stream.Score()
    if title:
        score.metadata = metadata.Metadata(title=title)
    kinds = (instrument.Soprano, instrument.Alto, instrument.Tenor, instrument.Bass)
    clefs = (clef.TrebleClef, clef.TrebleClef, clef.Treble8vbClef, clef.BassClef)
    for v, voice in enumerate(G.notes(grid)):
        part = stream.Part(id=PART_NAMES[v])
        part.partName = PART_NAMES[v]
        singer = kinds[v]()
        singer.partName = PART_NAMES[v]
        singer.midiProgram = MIDI_PROGRAM
        part.insert(0, singer)
        part.insert(0, clefs[v]())
        if key:
            tonic, mode = key.rsplit(" ", 1)
            part.insert(0, m21key.Key(tonic, mode))
        part.insert(0, meter.TimeSignature(time_signature))
        if v == 0:
            part.insert(0, m21tempo.MetronomeMark(number=tempo))
        at = 0
        for start, end, pitch in voice:
            if start > at:
                part.insert(at * step, note.Rest(quarterLength=(start - at) * step))
            part.insert(start * step, note.Note(pitch, quarterLength=(end - start) * step))
            at = end
        if at * step < length or not voice:
            part.insert(at * step, note.Rest(quarterLength=length - at * step or 4 * step))
        score.insert(0, part.makeNotation())
    return score


def midi_bytes(grid: np.ndarray, step: float = 0.25, tempo: float = DEFAULT_TEMPO, key: str | None = None) -> bytes:
    """A Standard MIDI File (type 1): a conductor track, then one track per voice, S, A, T, B."""
    from music21.midi import translate

    smf = translate.streamToMidiFile(to_score(grid, step, tempo, key))
    # music21 gives parts with one program one channel; a channel per voice, so that a unison's
    # note-off in one voice does not end the other's note in a synthesiser
    for channel, track in enumerate((t for t in smf.tracks if t.hasNotes()), start=1):
        track.setChannel(channel)
    return smf.writestr()


def write_midi(grid: np.ndarray, path: Path, step: float = 0.25, tempo: float = DEFAULT_TEMPO, key: str | None = None) -> Path:
    """``midi_bytes`` written to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(midi_bytes(grid, step, tempo, key))
    return path


def write_musicxml(
    grid: np.ndarray, path: Path, step: float = 0.25, tempo: float = DEFAULT_TEMPO, key: str | None = None, title: str | None = None
) -> Path:
    """The score as MusicXML (uncompressed) at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_score(grid, step, tempo, key, title=title).write("musicxml", fp=str(path))
    return path


def piano_roll(grids: np.ndarray | Sequence[np.ndarray], out_png: Path, titles: Sequence[str] | None = None, step: float = 0.25) -> Path:
    """A PNG with one panel per grid: each voice's notes as bars in its own colour, beats on the x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(grids, np.ndarray) and grids.ndim == 2:
        grids = [grids]
    grids = list(grids)
    fig, axes = plt.subplots(len(grids), 1, figsize=(10, 2.6 * len(grids)), squeeze=False)
    for i, (ax, g) in enumerate(zip(axes[:, 0], grids)):
        for v, voice in enumerate(G.notes(g)):
            bars = [(s * step, (e - s) * step) for s, e, _ in voice]
            for (x, w), (_, _, p) in zip(bars, voice):
                ax.broken_barh([(x, w * 0.97)], (p - 0.4, 0.8), color=VOICE_COLOURS[v])
            ax.plot([], [], color=VOICE_COLOURS[v], lw=6, label=PART_NAMES[v])
        beats = g.shape[1] * step
        ax.set_xlim(0, max(beats, 1))
        ax.set_xticks(np.arange(0, beats + 1e-9, 4))
        ax.grid(axis="x", alpha=0.3)
        ax.set_ylabel("MIDI pitch")
        if titles is not None and i < len(titles):
            ax.set_title(titles[i], fontsize=9)
    axes[-1, 0].set_xlabel("beats (quarter notes)")
    axes[0, 0].legend(fontsize=7, loc="upper right", ncol=4)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def fluidsynth_available() -> bool:
    """Whether the ``fluidsynth`` program and Debian's General MIDI soundfont are both installed."""
    return shutil.which("fluidsynth") is not None and SOUNDFONT.is_file()


def _write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def synthesise(grid: np.ndarray, step: float = 0.25, tempo: float = DEFAULT_TEMPO) -> np.ndarray:
    """Mono float samples in [-1, 1] at ``SAMPLE_RATE``: each note a few harmonics with soft attack and release."""
    seconds_per_step = step * 60.0 / tempo
    n = int(round(grid.shape[1] * seconds_per_step * SAMPLE_RATE))
    out = np.zeros(n)
    harmonics = np.array([1.0, 0.5, 0.25, 0.12])
    harmonics /= harmonics.sum()  # each voice peaks at 1, four voices at 4 before the gain
    attack, release = int(0.012 * SAMPLE_RATE), int(0.06 * SAMPLE_RATE)
    for voice in G.notes(grid):
        for start, end, pitch in voice:
            a = int(round(start * seconds_per_step * SAMPLE_RATE))
            b = min(int(round(end * seconds_per_step * SAMPLE_RATE)), n)
            if b <= a:
                continue
            t = np.arange(b - a) / SAMPLE_RATE
            f = 440.0 * 2 ** ((pitch - 69) / 12)
            tone = sum(h * np.sin(2 * np.pi * f * (k + 1) * t) for k, h in enumerate(harmonics) if f * (k + 1) < SAMPLE_RATE / 2)
            env = np.ones(b - a)
            ra, rr = min(attack, (b - a) // 2), min(release, (b - a) // 2)
            env[:ra] = np.linspace(0, 1, ra, endpoint=False)
            if rr:
                env[-rr:] = np.linspace(1, 0, rr)  # fades to silence by the note's end: no click
            out[a:b] += tone * env
    return 0.22 * out  # four voices at full level stay below 0.9


def _fluidsynth(grid: np.ndarray, step: float, tempo: float, seconds: float) -> np.ndarray:
    """FluidSynth's rendering of the grid's MIDI, mixed to mono at ``SAMPLE_RATE`` and cut to ``seconds``."""
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / "piece.mid", Path(tmp) / "piece.wav"
        write_midi(grid, mid, step, tempo)
        subprocess.run(
            ["fluidsynth", "-ni", "-F", str(wav), "-r", str(SAMPLE_RATE), "-T", "wav", "-O", "s16", str(SOUNDFONT), str(mid)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        with wave.open(str(wav), "rb") as w:
            channels, width = w.getnchannels(), w.getsampwidth()
            frames = w.readframes(w.getnframes())
            rate = w.getframerate()
    if width != 2 or rate != SAMPLE_RATE:
        raise RuntimeError(f"fluidsynth wrote {8 * width}-bit audio at {rate} Hz")
    data = np.frombuffer(frames, "<i2").reshape(-1, channels).mean(axis=1) / 32768.0
    data = data[: int(round(seconds * SAMPLE_RATE))]
    fade = min(len(data), int(0.05 * SAMPLE_RATE))
    if fade:
        data[-fade:] *= np.linspace(1, 0, fade)
    peak = np.abs(data).max() if len(data) else 0.0
    # FluidSynth's default gain (0.2) leaves a choir at about a tenth of full scale: bring the peak to 0.8
    return data * (0.8 / peak) if peak > 1e-4 else data


def render_wav(grid: np.ndarray, path: Path, seconds_max: float = 30, step: float = 0.25, tempo: float = DEFAULT_TEMPO) -> str:
    """A WAV preview (mono, 16-bit, 22050 Hz) of the grid's first ``seconds_max`` seconds; returns the renderer used.

    "fluidsynth" (General MIDI choir, Debian's FluidR3 soundfont) when installed and it runs,
    else "numpy-additive". The numpy rendering lasts exactly min(piece, ``seconds_max``);
    FluidSynth's at most that (its reverb tail is cut with a short fade).
    """
    grid = np.asarray(grid)
    seconds_per_step = step * 60.0 / tempo
    steps = min(grid.shape[1], int(seconds_max / seconds_per_step))
    clip = G.crop(grid, 0, steps) if steps < grid.shape[1] else grid
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fluidsynth_available():
        try:
            _write_wav(path, _fluidsynth(clip, step, tempo, steps * seconds_per_step))
            return "fluidsynth"
        except (OSError, subprocess.SubprocessError, RuntimeError, ValueError):
            pass  # a broken install: the numpy rendering still gives a preview
    _write_wav(path, synthesise(clip, step, tempo))
    return "numpy-additive"
