"""Grids out: MIDI and MusicXML that music21 reads back to the same notes, the MIDI bytes the music kind stores,
the piano roll, the WAV preview."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from genforge.core.kinds import Music, read_midi_notes
from genforge.plugins.creative.music import corpus as C
from genforge.plugins.creative.music import grid as G
from genforge.plugins.creative.music import render as R


@pytest.fixture(scope="module")
def chorale():
    from music21 import corpus

    return C.parse_score(corpus.getWork("bach/bwv66.6"))


def model_like_grid(seed: int = 0, steps: int = 64) -> np.ndarray:
    """Random tokens, MASK and ill-formed HOLDs included: whatever a model may emit."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, G.N_TOKENS, (4, steps))
    grid[rng.random((4, steps)) < 0.4] = G.HOLD
    return grid


def read_back(path) -> list[list[tuple[int, int, int]]]:
    """Per part, (start step, end step, pitch) as music21 reads the file, ties joined."""
    from music21 import converter

    score = converter.parse(path)
    return [
        sorted((round(n.offset * 4), round((n.offset + n.quarterLength) * 4), n.pitch.midi) for n in part.stripTies().flatten().notes)
        for part in score.parts
    ]


@pytest.mark.parametrize("write, suffix", [(R.write_midi, ".mid"), (R.write_musicxml, ".musicxml")])
def test_files_read_back_to_the_same_notes(chorale, write, suffix, tmp_path):
    grid, info = chorale
    path = write(grid, tmp_path / f"chorale{suffix}", key=info["key"])
    assert read_back(path) == G.notes(grid)
    again, again_info = C.parse_score(path, key_analysis=False)
    assert (again == grid).all() and again_info["part_names"] == list(R.PART_NAMES)
    if suffix == ".musicxml":
        assert again_info["key"] == "F# minor"
    model = model_like_grid()
    assert read_back(write(model, tmp_path / f"model{suffix}")) == G.notes(model)


def test_score_parts(chorale):
    from music21 import clef

    score = R.to_score(chorale[0], key="F# minor")
    assert [p.partName for p in score.parts] == ["Soprano", "Alto", "Tenor", "Bass"]
    clefs = [type(p.recurse().getElementsByClass(clef.Clef).first()) for p in score.parts]
    assert clefs == [clef.TrebleClef, clef.TrebleClef, clef.Treble8vbClef, clef.BassClef]
    assert score.highestTime == chorale[0].shape[1] / 4


def test_midi_bytes_fit_the_music_kind(chorale, tmp_path):
    data = R.midi_bytes(chorale[0])
    assert data[:4] == b"MThd"
    tracks, ticks = read_midi_notes(data)
    voices = [t for t in tracks if t]
    assert len(voices) == 4 and [len(v) for v in voices] == [len(v) for v in G.notes(chorale[0])]
    assert {p for _, _, p in voices[0]} == {p for _, _, p in G.notes(chorale[0])[0]}
    from music21 import midi

    smf = midi.MidiFile()
    smf.readstr(data)
    channels = [{e.channel for e in t.events if e.type == midi.ChannelVoiceMessages.NOTE_ON} for t in smf.tracks if t.hasNotes()]
    assert channels == [{1}, {2}, {3}, {4}]  # a channel per voice: a unison's note-off ends one note only
    folder = Music().write([data, R.midi_bytes(model_like_grid(1))], tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["00000.mid", "00001.mid"]


def test_piano_roll(chorale, tmp_path):
    one = R.piano_roll(chorale[0], tmp_path / "one.png")
    two = R.piano_roll([chorale[0], model_like_grid()], tmp_path / "two.png", titles=["bwv66.6", "model"])
    for png in (one, two):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wav_preview(chorale, tmp_path):
    grid = chorale[0]  # 144 sixteenths = 36 beats = 27 s at 80 a minute
    renderer = R.render_wav(grid, tmp_path / "full.wav", seconds_max=60)
    assert renderer == ("fluidsynth" if R.fluidsynth_available() else "numpy-additive")
    with wave.open(str(tmp_path / "full.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22050)
        seconds = w.getnframes() / w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    expected = grid.shape[1] * 0.25 * 60 / R.DEFAULT_TEMPO
    assert expected - 0.5 <= seconds <= expected + 0.01
    assert 3000 < np.abs(audio).max() < 32767  # audible, not clipped
    R.render_wav(grid, tmp_path / "short.wav", seconds_max=5)
    with wave.open(str(tmp_path / "short.wav")) as w:
        assert w.getnframes() / w.getframerate() == pytest.approx(5.0, abs=0.2)
    R.render_wav(model_like_grid(), tmp_path / "model.wav")  # ill-formed tokens play as silence
