"""Harmony and the final cadence: chords are named right, Bach's endings are judged as FIELD_NOTES counts them, and
the sampler's ending rule ends every piece — free or harmonised, from an untrained network — on a dominant and a held
root-position tonic without breaking the counterpoint rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genforge.plugins.creative.music import grid as G
from genforge.plugins.creative.music import harmony as H
from genforge.plugins.creative.music import metrics as M
from genforge.plugins.creative.music.cadence import plan_endings
from genforge.plugins.creative.music.evaluator import final_cadences
from genforge.plugins.creative.music.generator import ChoraleDiffusion, ChoraleModelConfig, ChoraleSampleConfig, build, compose


def test_chords_are_named_by_root_type_and_inversion():
    assert H.chord_on([48, 64, 67, 72]) == (0, "major", "root")  # C E G C
    assert H.chord_on([52, 60, 67, 72]) == (0, "major", "first")  # E in the bass
    assert H.chord_on([43, 60, 64, 72]) == (0, "major", "second")  # G in the bass
    assert H.chord_on([45, 60, 64, 69]) == (9, "minor", "root")  # A C E A
    assert H.chord_on([43, 59, 65, 74]) == (7, "seventh", "root")  # G B F D: V7 without its fifth's doubling
    assert H.chord_on([47, 62, 65, 67]) == (7, "seventh", "first")  # V7 over B
    assert H.chord_on([48, 55, 60, 67])[1] == "other"  # an open fifth spells no chord
    assert H.key_of(np.bincount([0, 0, 4, 7, 7, 2, 5, 9, 11, 0], minlength=12).astype(float)) == H.Key(0, False)


def grid_of(columns: list[list[int]], beats: int = 1) -> np.ndarray:
    """A grid of chords (S, A, T, B pitches), each held ``beats`` quarter notes."""
    g = np.full((4, len(columns) * beats * G.STEPS_PER_BEAT), G.HOLD, np.int64)
    for i, chord in enumerate(columns):
        g[:, i * beats * G.STEPS_PER_BEAT] = [G.pitch_token(p) for p in chord]
    return g


def test_endings_and_harmony_metrics_on_written_progressions():
    # I - IV - V7 - I in C: ends on a root-position tonic; every beat's chord changes
    authentic = grid_of([[72, 67, 64, 48], [72, 69, 65, 53], [71, 65, 62, 43], [72, 67, 64, 48]])
    assert H.ends_on_tonic(authentic, H.Key(0, False))
    m = M.piece_metrics(authentic)
    assert m["harmonic_rhythm"] == 1
    assert m["root_triads"] == 0.75 and m["sevenths"] == 0.25 and m["first_inversions"] == 0
    assert m["leap_bass"] == pytest.approx((5 + 10 + 5) / 3)
    # ... - I6: the bass on the third is no root-position ending; nor a half cadence on V
    assert not H.ends_on_tonic(grid_of([[71, 67, 62, 43], [72, 67, 60, 52]]), H.Key(0, False))
    assert not H.ends_on_tonic(grid_of([[72, 67, 64, 48], [71, 67, 62, 43]]), H.Key(0, False))
    # A minor ending on a Picardy third (A C# E) counts, as FIELD_NOTES' judge allows
    assert H.ends_on_tonic(grid_of([[71, 68, 64, 52], [73, 69, 64, 45]]), H.Key(9, True))


def test_bach_endings_counted_as_field_notes_count_them():
    from music21 import corpus

    from genforge.plugins.creative.music.corpus import parse_score

    names = ("bwv66.6", "bwv269", "bwv347", "bwv10.7", "bwv4.8")
    grids = [parse_score(corpus.getWork(f"bach/{n}"), key_analysis=False)[0] for n in names]
    assert final_cadences(grids) == 1.0  # music21 hears bwv347 in A major; Krumhansl–Kessler alone says E major, a half cadence


@pytest.fixture(scope="module")
def untrained():
    model = ChoraleModelConfig(d_model=32, n_heads=2, n_layers=1, window=16, hop=8, order="autoregressive")
    torch.manual_seed(0)
    return build(model).eval(), model  # notes at random: nothing but the rules makes an ending


@pytest.mark.parametrize("home", [True, False])
def test_free_pieces_end_on_a_dominant_then_a_held_root_position_tonic(untrained, home):
    net, model = untrained
    meta = {"model": model.model_dump(), **({"key_offsets": {"0": 3, "2": 2, "-3": 1}} if home else {})}
    cfg = ChoraleSampleConfig(n=12, bars=3, top_p=1.0)
    given = ChoraleDiffusion.given(12, 48, None, torch.device("cpu"))
    pieces, moves = compose(net, meta, given, cfg, torch.Generator().manual_seed(0))

    def faults(grids) -> int:
        return sum(sum(M.parallels(g).values()) + M.voice_crossings(g) for g in grids)

    # where the ending and the counterpoint rules leave no note the ending wins: a few faults in 12 pieces of random
    # notes, against dozens without the rules
    unruled = cfg.model_copy(update={"avoid_parallels": False, "avoid_crossings": False, "final_cadence": False})
    assert faults(pieces) * 8 < faults(compose(net, meta, given, unruled, torch.Generator().manual_seed(0))[0]), faults(pieces)
    for g, k in zip(pieces, moves):
        p = G.pitches(g)
        final, dominant = p[:, -8], p[:, -12]
        tonic = (final[3]) % 12
        assert (G.onsets(g)[:, -7:] == 0).all() and (p[:, -8:] == final[:, None]).all()  # struck, then held to the end
        key = H.Key(tonic, (final[:3] % 12 == (tonic + 3) % 12).any())
        assert {int(x) % 12 for x in final} <= set(key.triad) and (key.triad[1] in {int(x) % 12 for x in final})  # a full triad
        assert dominant[3] % 12 == (tonic + 7) % 12  # V in the bass before it
        assert all(G.RANGES[v][0] <= x <= G.RANGES[v][1] for v, x in zip(G.VOICES, final))  # each voice in its range
        if home:
            assert (tonic - k) % 12 in (0, 9)  # C major or A minor where the model writes
    loose = compose(net, meta, given, cfg.model_copy(update={"final_cadence": False}), torch.Generator().manual_seed(0))[0]
    assert sum(H.ends_on_tonic(g, H.Key(int(G.pitches(g)[3, -1]) % 12, False)) for g in loose) < 6  # without the rule: rarely


def test_a_harmonised_melody_ends_where_its_last_note_is_struck(untrained):
    net, model = untrained
    # a G-major tune ending ... A4 (quarter) G4 (half, then a quarter rest's worth held): the final chord under the G
    melody = np.full(48, G.HOLD, np.int64)
    for step, pitch in [(0, 67), (4, 71), (8, 72), (12, 74), (16, 71), (20, 69), (24, 71), (28, 69), (32, 69), (36, 67)]:
        melody[step] = G.pitch_token(pitch)
    given = ChoraleDiffusion.given(6, 48, melody, torch.device("cpu"))
    ends = plan_endings(given, home=False)
    assert list(ends.final) == [36] * 6 and list(ends.dominant) == [32] * 6
    cfg = ChoraleSampleConfig(n=6, top_p=1.0)
    pieces, _ = compose(net, {"model": model.model_dump()}, given, cfg, torch.Generator().manual_seed(1))
    for g in pieces:
        assert np.array_equal(g[0], melody)  # the melody as given
        p = G.pitches(g)
        assert p[3, 36] % 12 == 7 and p[3, 32] % 12 == 2  # G under the last note, D (V of G) under the one before
        assert {int(x) % 12 for x in p[:, 36]} <= {7, 11, 2} and (p[:, 36:] == p[:, 36:37]).all()


def test_fermatas_marked_in_a_melody_are_read_and_become_cadences(untrained, tmp_path):
    from music21 import expressions, meter, note, stream

    from genforge.plugins.creative.music.melody import read_melody

    part = stream.Part([meter.TimeSignature("4/4")])
    for i, (pitch, quarters) in enumerate([("G4", 1), ("A4", 1), ("B4", 2), ("D5", 1), ("C5", 1), ("A4", 1), ("G4", 1)]):
        n = note.Note(pitch, quarterLength=quarters)
        if i in (2, 6):  # a fermata on the half note B4 (a phrase end) and on the last note
            n.expressions.append(expressions.Fermata())
        part.append(n)
    path = tmp_path / "tune.musicxml"
    stream.Score([part]).write("musicxml", fp=str(path))
    tokens, info = read_melody(path)
    assert info["fermatas"] == [8, 28]
    net, model = untrained
    given = ChoraleDiffusion.given(6, len(tokens), tokens, torch.device("cpu"))
    ends = plan_endings(given, home=False, fermatas=info["fermatas"])
    assert ends.phrases == {8: 16} and list(ends.final) == [28] * 6  # the last note's fermata is the final cadence
    cfg = ChoraleSampleConfig(n=6, top_p=1.0)
    pieces, _ = compose(net, {"model": model.model_dump()}, given, cfg, torch.Generator().manual_seed(2), info["fermatas"])
    for g in pieces:
        p = G.pitches(g)
        under = {int(x) % 12 for x in p[:, 8]}
        assert p[3, 8] % 12 == 7 and under <= {7, 11, 2}  # B is in G's tonic triad: I, root position, under the fermata
        assert (p[1:, 8:16] == p[1:, 8:9]).all()  # held for the fermata's half note


def test_a_free_piece_ends_a_phrase_every_two_bars_on_i_or_v_held(untrained):
    from genforge.plugins.creative.music.generator import generate, range_bounds

    net, model = untrained
    given = ChoraleDiffusion.given(8, 64, None, torch.device("cpu"))
    ends = plan_endings(given, home=False, phrase_bars=2)
    assert ends.phrases == {24: 32} and list(ends.final) == [56] * 8  # bars 1-2 end on a half note; bar 4's is the final
    cfg = ChoraleSampleConfig(n=8, bars=4, top_p=1.0)
    pieces = generate(net, {"model": model.model_dump()}, given, cfg, torch.Generator().manual_seed(3), range_bounds([0] * 8), ends)
    for b, g in enumerate(pieces):
        key = ends.keys[(b, 24)]
        p = G.pitches(g)
        tonic, fifth = key.tonic, (key.tonic + 7) % 12
        root = int(p[3, 24]) % 12
        assert root in (tonic, fifth)  # I or V, in root position
        chord = set(key.triad) if root == tonic else {fifth, (key.tonic + 11) % 12, (key.tonic + 2) % 12}
        assert {int(x) % 12 for x in p[:, 24]} <= chord and (p[:, 24:32] == p[:, 24:25]).all()  # held to the phrase's end
