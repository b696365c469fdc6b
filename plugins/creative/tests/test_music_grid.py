"""The chorale grid: the token vocabulary, notes in and out, ill-formed model output, transposition, windows."""

from __future__ import annotations

import numpy as np
import pytest

from genforge.plugins.creative.music import grid as G

# S: a held G4 then A4; A: rest then E4; T: C4 struck twice; B: C3 for the whole bar
NOTES = [[(0, 8, 67), (8, 16, 69)], [(4, 16, 64)], [(0, 4, 60), (4, 8, 60)], [(0, 16, 48)]]


def test_vocabulary_is_compact_and_documented():
    assert (G.REST, G.HOLD) == (0, 1)
    assert G.pitch_token(G.PITCH_LOW) == 2 and G.pitch_token(G.PITCH_HIGH) == G.VOCAB - 1 == 70
    assert G.MASK == G.VOCAB == 71 and G.N_TOKENS == 72
    assert G.token_pitch(G.pitch_token(60)) == 60 and G.token_pitch(G.HOLD) is None and G.token_pitch(G.MASK) is None
    with pytest.raises(ValueError, match="outside the vocabulary"):
        G.pitch_token(G.PITCH_HIGH + 1)
    for voice, (low, high) in G.RANGES.items():
        assert voice in G.VOICES and G.PITCH_LOW <= low < high <= G.PITCH_HIGH


def test_encode_and_decode_notes():
    grid = G.encode_notes(NOTES)
    assert grid.shape == (4, 16) and grid.dtype == np.int64
    assert list(grid[0, :3]) == [G.pitch_token(67), G.HOLD, G.HOLD]
    assert list(grid[1, :5]) == [G.REST] * 4 + [G.pitch_token(64)]
    assert grid[2, 4] == G.pitch_token(60)  # a repeated note is struck again, not held
    assert G.notes(grid) == NOTES
    p = G.pitches(grid)
    assert list(p[0, [0, 7, 8, 15]]) == [67, 67, 69, 69] and list(p[1, [0, 3, 4]]) == [-1, -1, 64]
    assert G.onsets(grid).sum() == 6
    assert G.encode_notes(NOTES, length=20).shape == (4, 20)
    assert G.notes(G.encode_notes(NOTES, length=6))[3] == [(0, 6, 48)]  # cut at the end


def test_ill_formed_output_decodes_as_rests():
    """A HOLD at step 0 or after a rest, and an unfilled MASK, are silence; clean() writes that reading."""
    grid = np.array(
        [
            [G.HOLD, G.HOLD, G.pitch_token(70), G.HOLD],
            [G.pitch_token(60), G.REST, G.HOLD, G.HOLD],
            [G.MASK, G.HOLD, G.pitch_token(50), G.MASK],
            [G.pitch_token(40), G.HOLD, G.HOLD, G.HOLD],
        ]
    )
    assert G.notes(grid) == [[(2, 4, 70)], [(0, 1, 60)], [(2, 3, 50)], [(0, 4, 40)]]
    assert (G.pitches(grid)[:, 0] == [-1, 60, -1, 40]).all()
    cleaned = G.clean(grid)
    assert cleaned[0, 0] == G.REST and cleaned[1, 2] == G.REST and cleaned[2, 3] == G.REST
    assert G.notes(cleaned) == G.notes(grid)
    with pytest.raises(ValueError, match=r"\(4, T\)"):
        G.notes(np.zeros((3, 4), int))


def test_transpose_round_trip_and_vocabulary_edge():
    grid = G.encode_notes(NOTES)
    up = G.transpose(grid, 5)
    assert (G.pitches(up)[G.pitches(grid) >= 0] == G.pitches(grid)[G.pitches(grid) >= 0] + 5).all()
    assert (G.transpose(up, -5) == grid).all()
    assert (up[grid < 2] == grid[grid < 2]).all()  # rests and holds untouched
    assert G.transpose(grid, G.PITCH_HIGH - 69 + 1) is None  # A4 would leave the top
    assert G.transpose(grid, -(48 - G.PITCH_LOW) - 1) is None  # C3 would leave the bottom
    assert G.transpose(grid, G.PITCH_HIGH - 69) is not None
    folded = G.transpose(grid, G.PITCH_HIGH - 69 + 1, fold=True)  # A4 goes an octave down instead of off the top
    shift = G.PITCH_HIGH - 69 + 1
    assert (
        G.pitches(folded)[0, 8] == 69 + shift - 12 and G.pitches(folded)[0, 0] == 67 + shift and (folded[grid < 2] == grid[grid < 2]).all()
    )
    assert (G.transpose(grid, 3, fold=True) == G.transpose(grid, 3)).all()
    masked = grid.copy()
    masked[1, :4] = G.MASK
    down = G.transpose(masked, -(48 - G.PITCH_LOW) - 1, fold=True)  # C3 would leave the bottom: it goes up an octave
    assert G.pitches(down)[3, 0] == 48 - (48 - G.PITCH_LOW) - 1 + 12 and (down[masked >= G.VOCAB] == G.MASK).all()


def test_crop_strikes_a_note_already_sounding():
    grid = G.encode_notes(NOTES)
    part = G.crop(grid, 2, 8)
    assert part.shape == (4, 8)
    assert G.notes(part) == [[(0, 6, 67), (6, 8, 69)], [(2, 8, 64)], [(0, 2, 60), (2, 6, 60)], [(0, 8, 48)]]
    assert not (part[:, 0] == G.HOLD).any()
    tail = G.crop(grid, 12, 8)  # past the end: rests
    assert (tail[:, 4:] == G.REST).all() and G.notes(tail)[3] == [(0, 4, 48)]


def test_windows():
    grid = G.encode_notes(NOTES, length=40)
    w = G.windows(grid, 16, 8)
    assert w.shape == (4, 4, 16)  # starts 0, 8, 16, 24
    assert (w[1] == G.crop(grid, 8, 16)).all()
    assert G.windows(grid[:, :10], 16, 8).shape == (1, 4, 16)  # shorter than a window: one, padded
