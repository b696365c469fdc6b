"""Chorale metrics: hand-made grids with known answers, and real chorales inside the corpus's bands."""

from __future__ import annotations

import numpy as np
import pytest

from genforge.plugins.creative.music import corpus as C
from genforge.plugins.creative.music import grid as G
from genforge.plugins.creative.music import metrics as M

CHORALES = ("bwv66.6", "bwv269", "bwv347", "bwv153.1", "bwv10.7", "bwv4.8")


@pytest.fixture(scope="module")
def chorales():
    from music21 import corpus

    return [C.parse_score(corpus.getWork(f"bach/{name}"), key_analysis=False)[0] for name in CHORALES]


def test_real_chorales_sit_in_the_corpus_bands(chorales):
    """The corpus (368 chorales): entropy 3.00 +- 0.10, scale consistency 0.93, polyphony 3.92, range 35 +- 2.8."""
    rows = [M.piece_metrics(g) for g in chorales]
    for row in rows:
        assert 2.6 < row["pitch_class_entropy"] < 3.3  # bwv269, plain G major, is 2.68: below the corpus's p5
        assert row["scale_consistency"] > 0.85 and row["polyphony"] > 3.8
        assert 28 <= row["pitch_range"] <= 42 and row["out_of_range_overall"] == 0
        assert 1.5 < row["note_density"] < 6
    summary = M.corpus_metrics(chorales)
    mean = {k: v["mean"] for k, v in summary["metrics"].items()}
    assert summary["n"] == len(chorales)
    assert 2.8 < mean["pitch_class_entropy"] < 3.2
    assert 0.88 < mean["scale_consistency"] < 0.98 and mean["polyphony"] > 3.8 and 31 <= mean["pitch_range"] <= 39
    assert mean["parallels_per_100_beats"] < 2 and mean["voice_crossings_per_100_beats"] < 5
    assert sum(summary["pitch_class_histogram"]) == pytest.approx(1)
    for v in summary["metrics"].values():
        assert v["p5"] <= v["mean"] <= v["p95"]


def test_histograms_and_distance(chorales):
    h = M.pitch_class_histogram(chorales[0])
    assert h.shape == (12,) and h.sum() == pytest.approx(1)
    assert h[6] > h[0]  # F# minor: F# common, C natural rare
    assert M.histogram_distance(h, h) == pytest.approx(0, abs=1e-12)
    assert M.histogram_distance(np.eye(12)[0], np.eye(12)[1]) == pytest.approx(1)
    assert 0 < M.histogram_distance(h, M.pitch_class_histogram(chorales[1])) < 0.5
    c_major = G.encode_notes([[(i * 4, i * 4 + 4, 60 + s)] for i, s in enumerate([0, 4, 7, 11])])
    assert M.scale_consistency(c_major) == 1 and M.pitch_class_entropy(c_major) == pytest.approx(2)
    silent = np.zeros((4, 8), int)
    assert M.pitch_class_entropy(silent) == 0 and M.polyphony(silent) == 0 and M.pitch_range(silent) == 0


def _two_voices(soprano, bass, length):
    """Soprano and bass from (start, end, pitch) lists; alto and tenor silent."""
    return G.encode_notes([soprano, [], [], bass], length)


def test_parallels_counts_fifths_and_octaves_only_in_similar_motion():
    grid = _two_voices(
        soprano=[
            (0, 4, 67),
            (4, 8, 69),  # G-C fifth -> A-D fifth, both up: one parallel fifth
            (12, 16, 72),
            (16, 20, 74),  # C-C octave -> D-D octave, both up: one parallel octave
            (24, 28, 67),
            (28, 32, 74),  # fifth -> twelfth in contrary motion: not counted
            (36, 40, 67),
            (40, 48, 69),  # fifth -> sixth -> fifth, one voice at a time: not counted
            (52, 56, 60),
            (56, 60, 60),
        ],  # unison struck again: no motion, not counted
        bass=[
            (0, 4, 60),
            (4, 8, 62),
            (12, 16, 60),
            (16, 20, 62),
            (24, 28, 60),
            (28, 32, 55),
            (36, 42, 60),
            (42, 48, 62),
            (52, 56, 60),
            (56, 60, 60),
        ],
        length=64,
    )
    assert M.parallels(grid) == {"fifths": 1, "octaves": 1}
    assert M.parallels_per_100_beats(grid) == pytest.approx(100 * 2 / 16)
    m = M.piece_metrics(grid)
    assert m["parallel_fifths_per_100_beats"] == m["parallel_octaves_per_100_beats"] == pytest.approx(100 / 16)
    # a rest between two fifths breaks the succession
    assert M.parallels(_two_voices([(0, 4, 67), (6, 8, 69)], [(0, 4, 60), (6, 8, 62)], 8)) == {"fifths": 0, "octaves": 0}
    # the inner voices count too: alto and tenor a fifth apart moving down together
    inner = G.encode_notes([[], [(0, 4, 67), (4, 8, 65)], [(0, 4, 60), (4, 8, 58)], []])
    assert M.parallels(inner) == {"fifths": 1, "octaves": 0}


def test_voice_crossings_are_counted_as_events():
    grid = G.encode_notes(
        [
            [(0, 8, 60), (8, 32, 72)],
            [(0, 4, 64), (4, 8, 59), (8, 12, 67), (12, 16, 67), (16, 32, 64)],  # above the soprano for steps 0-3: one event
            [(8, 12, 69), (12, 16, 65), (16, 20, 62), (20, 24, 64), (24, 28, 66)],  # above the alto at 8-11 and 24-27: two
            [(0, 32, 48)],
        ]
    )
    assert M.voice_crossings(grid) == 3  # the tenor's unison with the alto (20-23) is no crossing
    assert M.voice_crossings_per_100_beats(grid) == pytest.approx(100 * 3 / 8)


def test_out_of_range_share():
    grid = G.encode_notes([[(0, 4, 84), (4, 16, 72)], [], [], [(0, 16, 40)]])  # soprano's 84 is above its 81
    share = M.out_of_range_share(grid)
    assert share == {"overall": 4 / 32, "soprano": 0.25, "alto": 0.0, "tenor": 0.0, "bass": 0.0}
    assert M.voice_ranges(grid) == {"soprano": 12, "alto": 0, "tenor": 0, "bass": 0}
    assert M.polyphony(grid) == 2 and M.note_density(grid) == pytest.approx(3 / 4)


def test_the_sampling_rule_bans_exactly_the_notes_the_parallels_metric_counts():
    """For every pair of voices, the struck notes the rule would have banned are the parallels the metric counts."""
    import torch

    from genforge.plugins.creative.music.counterpoint import banned_pitches, decode

    rng = np.random.default_rng(0)
    total = 0
    for _ in range(150):
        steps = 24
        # narrow pitches and frequent strikes: many fifths and octaves in similar motion
        g = np.where(rng.random((4, steps)) < 0.4, G.HOLD, G.pitch_token(60) + rng.integers(0, 8, (4, steps)))
        g[rng.random((4, steps)) < 0.08] = G.REST
        for u in range(4):
            for j in range(u + 1, 4):
                pair = np.full_like(g, G.REST)
                pair[u], pair[j] = g[u], g[j]
                p, struck = decode(torch.from_numpy(pair)[None])
                banned = 0
                for t in np.flatnonzero(struck[0, j].numpy()):
                    banned += int(banned_pitches(p, struck, int(t), j)[0, int(p[0, j, t]) - G.PITCH_LOW])
                assert banned == sum(M.parallels(pair).values())
                total += banned
    assert total > 50  # the check saw many parallels (64 here), not a vacuous agreement
