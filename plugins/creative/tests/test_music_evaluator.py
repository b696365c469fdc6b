"""The chorale evaluator: real chorales written as MIDI score near their floors, random notes far from them;
files that do not load back are counted; the reference .npz round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from genforge.core import DataError, Reference, Samples
from genforge.core.testing import check_evaluator
from genforge.plugins.creative.music import corpus as C
from genforge.plugins.creative.music import grid as G
from genforge.plugins.creative.music import render as R
from genforge.plugins.creative.music.data import load_grids, save_grids
from genforge.plugins.creative.music.evaluator import ChoraleEvaluator, music_paths, read_pieces

# the first three play the generator's samples, the last three the held-out reference
# (bwv153.1 holds the only parallel fifth of the six, so the reference's rate is not zero)
CHORALES = ("bwv66.6", "bwv269", "bwv347", "bwv153.1", "bwv10.7", "bwv4.8")
BROKEN = b"MThd\x00\x00\x00\x06\x00\x01\x00\x05\x01\xe0MTrk\xff\xff\xff\xffnot a track"


def random_grid(seed: int, beats: int = 48) -> np.ndarray:
    """A bad generator: a random pitch anywhere in the vocabulary for every voice on every eighth note."""
    rng = np.random.default_rng(seed)
    grid = np.full((4, beats * G.STEPS_PER_BEAT), G.HOLD, np.int64)
    grid[:, ::2] = rng.integers(2, G.VOCAB, (4, grid.shape[1] // 2))
    return grid


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Folders: good/midi (3 chorales), bad/midi (3 random grids), mixed (2 chorales, 1 broken file); test.npz, train.npz."""
    from music21 import corpus

    root = tmp_path_factory.mktemp("chorale-eval")
    grids = [C.parse_score(corpus.getWork(f"bach/{name}"), key_analysis=False)[0] for name in CHORALES]
    for i, g in enumerate(grids[:3]):
        R.write_midi(g, root / "good" / "midi" / f"{i:05d}.mid")
        if i < 2:
            R.write_midi(g, root / "mixed" / f"{i:05d}.mid")
    (root / "mixed" / "00002.mid").write_bytes(BROKEN)
    for i in range(3):
        R.write_midi(random_grid(i), root / "bad" / "midi" / f"{i:05d}.mid")
    save_grids(root / "test.npz", grids[3:], ["A major", None, "F major"])
    save_grids(root / "train.npz", grids[:3])
    return root, grids


def evaluate(path, root, train=None, **config):
    ev = ChoraleEvaluator()
    samples = Samples("music", path, len(music_paths(path)))
    reference = Reference("music", root / "test.npz", root / train if train else None)
    result = check_evaluator(ev, samples, reference, root / "figures" / path.name, ev.Config(**config))
    return result, {m.name: m for m in result.metrics}


def test_grids_round_trip_through_npz(data, tmp_path):
    root, grids = data
    back = load_grids(root / "test.npz")
    assert len(back) == 3 and all(b.dtype == np.int64 and np.array_equal(a, b) for a, b in zip(grids[3:], back))
    with np.load(root / "test.npz", allow_pickle=False) as z:  # no pickled objects: keys are a unicode array
        assert z["keys"].dtype.kind == "U" and list(z["keys"]) == ["A major", "", "F major"]
        assert z["tokens"].shape == (4, sum(g.shape[1] for g in grids[3:])) and list(z["lengths"]) == [g.shape[1] for g in grids[3:]]
    assert load_grids(save_grids(tmp_path / "empty.npz", [])) == []
    wide = np.array([[2, 300], [0, 1], [0, 0], [0, 0]])  # ids past uint8 are kept
    assert np.array_equal(load_grids(save_grids(tmp_path / "wide.npz", [wide]))[0], wide)
    np.savez(tmp_path / "wrong.npz", tokens=np.zeros((4, 10)), lengths=np.array([4]))
    for bad in (tmp_path / "wrong.npz", tmp_path / "missing.npz"):
        with pytest.raises(DataError):
            load_grids(bad)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_read_pieces_parses_a_folder_back_to_the_same_grids(data):
    root, grids = data
    back, n, skipped = read_pieces(root / "good")  # the samples folder: its midi/ is read
    assert n == 3 and not skipped and all(np.array_equal(a, b) for a, b in zip(grids[:3], back))
    one, n, _ = read_pieces(root / "good" / "midi" / "00001.mid")
    assert n == 1 and np.array_equal(one[0], grids[1])
    back, n, skipped = read_pieces(root / "mixed")
    assert len(back) == 2 and n == 3 and skipped == {"unreadable": 1}


def test_short_pieces_are_compared_with_stretches_of_bach_as_long(data, tmp_path):
    """8-bar excerpts of real chorales are scored against the test pieces cut to 8 bars, not against whole chorales."""
    from genforge.plugins.creative.music.evaluator import windows

    root, grids = data
    eight_bars = 8 * 4 * G.STEPS_PER_BEAT
    assert [w.shape[1] for w in windows([np.zeros((4, 300), np.int64)], 128)] == [128, 128]  # a shorter tail is dropped
    assert [w.shape[1] for w in windows([np.zeros((4, 100), np.int64)], 128)] == [100]  # a shorter piece is kept whole
    from genforge.plugins.creative.music.evaluator import PieceSet, stretches

    cut, weights = stretches([np.zeros((4, 300), np.int64), np.zeros((4, 100), np.int64)], 128)
    assert len(cut) == 12 and weights.tolist() == pytest.approx(
        [300 / 128 / 11] * 11 + [1.0]
    )  # a piece counts by its length, not its stretches
    low, high = np.arange(11, dtype=np.int64) + 40, np.full((1,), 60)
    flat = [np.full((4, 16), G.pitch_token(int(p)), np.int64) for p in np.concatenate([low, high])]
    for g in flat:
        g[3] = G.pitch_token(40)  # pitch range: the top note less 40
    ranged = PieceSet.of(flat, weights=np.array([1 / 11] * 11 + [10.0]))  # the lone wide piece outweighs the eleven narrow ones
    assert ranged.mean("pitch_range") == pytest.approx((5 + 10 * 20) / 11) and ranged.band("pitch_range") == (
        6.0,
        20.0,
    )  # p5: 5 % of the weight lies below the seventh narrow piece
    assert ranged.in_band("pitch_range", (15, 25)) == pytest.approx(10 / 11)
    bars = np.arange(300) // 16 % 8 + 2  # one pitch per bar: a window's first token names the bar it starts on
    assert [int(w[0, 0]) for w in windows([np.tile(bars, (4, 1))], 128, hop=16)] == [
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        2,
        3,
        4,
    ]  # every bar: 11 fit in 300
    for i, g in enumerate(grids[:3]):
        for j, w in enumerate(windows([g], eight_bars)[:3]):
            R.write_midi(w, tmp_path / "midi" / f"{i}{j}.mid")
    _, m = evaluate(tmp_path / "midi", root)
    assert "32 beats long" in m["pitch_range"].description and "32 beats long" in m["in_band_range"].description
    assert m["pitch_range"].value == pytest.approx(m["pitch_range"].floor, abs=2.5)
    assert m["in_band_range"].value >= 0.6 and m["in_band_entropy"].value >= 0.6

    # with a training set, the bands and means come from the test and training pieces' stretches; a band's floor stays the test pieces'
    _, both = evaluate(tmp_path / "midi", root, train="train.npz")
    test_cut, train_cut = (PieceSet.of(*stretches(g, eight_bars)) for g in (grids[3:], grids[:3]))
    corpus_cut = PieceSet.of(*stretches(grids[3:] + grids[:3], eight_bars))
    band = corpus_cut.band("pitch_class_entropy")
    assert f"{len(test_cut) + len(train_cut)} stretches of the 3 test and 3 training pieces" in both["in_band_entropy"].description
    assert f"[{band[0]:.3g}, {band[1]:.3g}]" in both["in_band_entropy"].description and band != test_cut.band("pitch_class_entropy")
    assert both["in_band_entropy"].floor == pytest.approx(
        test_cut.in_band("pitch_class_entropy", band)
    )  # 0.92: the test pieces in the corpus's band
    assert both["in_band_entropy"].floor != pytest.approx(
        test_cut.in_band("pitch_class_entropy", test_cut.band("pitch_class_entropy"))
    )  # not their own (0.97)
    assert both["in_band_entropy"].floor != pytest.approx(corpus_cut.in_band("pitch_class_entropy", band))  # nor every stretch's
    assert both["pitch_range"].floor == pytest.approx(corpus_cut.mean("pitch_range")) != pytest.approx(m["pitch_range"].floor)


def test_real_chorales_score_near_their_floors(data):
    root, _ = data
    result, m = evaluate(root / "good" / "midi", root)
    assert m["loads_back"].value == 1 and m["pieces"].value == 3
    assert m["pc_profile_distance"].value < 0.06  # 0.033; the floor, one test piece vs two, 0.065
    assert m["pc_histogram_distance"].value < 0.25  # 0.17: three pieces in other keys than the test set's three
    assert m["parallels_ratio"].value < 3 and m["out_of_range"].value == m["out_of_range"].floor == 0
    for name in ("pc_entropy", "scale_consistency", "pitch_range", "polyphony"):
        assert m[name].value == pytest.approx(m[name].floor, rel=0.15), name
    assert m["note_density"].value == pytest.approx(
        m["note_density"].floor, rel=0.2
    )  # 4.17 vs 3.61: bwv10.7, the longest test piece, half as dense
    assert m["voice_crossings"].value < 3 * m["voice_crossings"].floor
    assert m["parallel_fifths"].floor > 0 and "half of the test pieces" in m["pc_histogram_distance"].description
    assert {"in_band_entropy", "in_band_scale", "in_band_range", "out_of_range_bass", "parallel_octaves"} <= set(m)
    assert set(result.figures) == {"piano_rolls", "counterpoint"}

    # with a training set, the floor compares as many training pieces with the test set: here the samples themselves
    _, m = evaluate(root / "good", root, train="train.npz", rolls=0)
    assert "3 training pieces" in m["pc_histogram_distance"].description
    assert m["pc_histogram_distance"].floor == pytest.approx(m["pc_histogram_distance"].value)
    assert m["parallels_ratio"].floor == pytest.approx(m["parallels_ratio"].value)


def test_random_notes_score_far_worse_than_real_chorales(data):
    root, _ = data
    _, m = evaluate(root / "bad" / "midi", root)
    assert m["loads_back"].value == 1
    assert m["out_of_range"].value > 0.3 and m["out_of_range"].floor == 0  # 0.63
    assert m["parallels_ratio"].value > 5  # 12: 3.5 fifths and 3.5 octaves per 100 beats against 0.57 and 0
    assert m["parallel_fifths"].value > 3 * m["parallel_fifths"].floor and m["parallel_octaves"].value > m["parallel_octaves"].floor
    assert m["voice_crossings"].value > 20 * m["voice_crossings"].floor  # 148 against 2.8
    assert m["in_band_entropy"].value == m["in_band_scale"].value == m["in_band_range"].value == 0
    assert m["pc_profile_distance"].value > m["pc_profile_distance"].floor  # 0.115 against 0.065
    assert m["pitch_range"].value > 1.5 * m["pitch_range"].floor


def test_files_that_do_not_load_back_are_counted(data):
    root, _ = data
    result, m = evaluate(root / "mixed", root, rolls=0)
    assert m["loads_back"].value == pytest.approx(2 / 3) and m["pieces"].value == 2
    assert "1 unreadable" in m["loads_back"].description
    assert set(result.figures) == {"counterpoint"}


def test_nothing_to_score_is_one_line_data_error(data, tmp_path):
    root, grids = data
    ev = ChoraleEvaluator()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.mid").write_bytes(BROKEN)
    (tmp_path / "broken" / "b.mid").write_bytes(b"")
    (tmp_path / "none").mkdir()
    save_grids(tmp_path / "empty.npz", [])
    cases = [
        (tmp_path / "broken", root / "test.npz", ("none of the 2 music files", "2 unreadable")),
        (tmp_path / "none", root / "test.npz", ("holds no MIDI or MusicXML files",)),
        (root / "good", tmp_path / "empty.npz", ("holds no four-part pieces",)),
        (root / "good", tmp_path / "broken", ("holds no four-part pieces", "2 unreadable")),
    ]
    for samples, test, words in cases:
        with pytest.raises(DataError) as err:
            ev.evaluate(Samples("music", samples, 2), Reference("music", test), tmp_path / "figures", ev.Config())
        assert all(w in str(err.value) for w in words) and "\n" not in str(err.value), str(err.value)


def test_a_folder_of_midi_files_is_a_reference_too(data):
    root, _ = data
    ev = ChoraleEvaluator()
    result = ev.evaluate(
        Samples("music", root / "bad", 3), Reference("music", root / "good"), root / "figures" / "midi-reference", ev.Config(rolls=1)
    )
    m = {x.name: x for x in result.metrics}
    assert m["out_of_range"].value > 0.3 and m["out_of_range"].floor == 0
    # two real pieces with no parallels: the ratio is undefined, so it is left out and said why (never NaN)
    assert "parallels_ratio" not in m and any(n.startswith("parallels_ratio left out") and "1 vs 2" in n for n in result.notes)


def test_harmony_metrics_carry_bachs_band_and_rule_made_figures_are_marked(data):
    root, _ = data
    ev = ChoraleEvaluator()
    path = root / "good"
    meta = {"avoid_parallels": True, "avoid_crossings": True, "keep_range": True, "final_cadence": True}
    samples = Samples("music", path, len(music_paths(path)), meta)
    result = check_evaluator(ev, samples, Reference("music", root / "test.npz", None), root / "figures" / "marked", ev.Config())
    got = {m.name: m for m in result.metrics}
    for name in ("root_triads", "first_inversions", "sevenths", "non_chords", "harmonic_rhythm", "leap_bass", "final_cadence"):
        assert got[name].floor is not None and np.isfinite(got[name].value), name
    assert "Bach's band [" in got["root_triads"].description and "enforced by construction" not in got["root_triads"].description
    assert got["final_cadence"].value == 1.0  # the three Bach chorales end on root-position tonics
    marked = [n for n, m in got.items() if "[enforced by construction" in m.description]
    assert {"parallel_fifths", "voice_crossings", "out_of_range_bass", "final_cadence"} <= set(marked)
    assert any(note.startswith("enforced by construction") for note in result.notes)
    unmarked, plain = evaluate(path, root)
    assert not any("enforced by construction" in m.description for m in plain.values())  # another tool's files: nothing marked
