"""Chorales into grids: real Bach chorales from music21's corpus (a handful), the parsing rules, folders, the cache, augmentation."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from genforge.core import DataError
from genforge.plugins.creative.music import corpus as C
from genforge.plugins.creative.music import grid as G

CHORALES = ("bwv66.6", "bwv269", "bwv347", "bwv153.1", "bwv10.7", "bwv4.8")


@pytest.fixture(scope="module")
def chorales():
    from music21 import corpus

    started = time.perf_counter()
    parsed = {name: C.parse_score(corpus.getWork(f"bach/{name}")) for name in CHORALES}
    per_piece = (time.perf_counter() - started) / len(CHORALES)
    assert per_piece < 2.0, f"{per_piece:.2f} s per chorale"  # measured here: about 0.1 s with key analysis
    return parsed


def test_real_chorales_become_four_voice_grids(chorales):
    from music21 import corpus

    for name, (grid, info) in chorales.items():
        assert grid.ndim == 2 and grid.shape[0] == 4 and grid.dtype == np.int64
        assert ((grid >= 0) & (grid < G.VOCAB)).all()
        assert grid.shape[1] == info["steps"] and info["moved"] == 0 and info["dropped"] == 0
        assert info["part_names"] == ["Soprano", "Alto", "Tenor", "Bass"] and not info["reordered"]  # already S, A, T, B
        p = G.pitches(grid)
        full = (p >= 0).all(axis=0)
        ordered = (p[0] >= p[1]) & (p[1] >= p[2]) & (p[2] >= p[3])
        assert ordered[full].mean() > 0.8, name  # voices cross now and then (bwv10.7: 14 % of its steps)
        assert p[0][p[0] >= 0].mean() > p[1][p[1] >= 0].mean() > p[2][p[2] >= 0].mean() > p[3][p[3] >= 0].mean()
        for row, voice in zip(p, G.VOICES):  # inside the corpus's ranges
            low, high = G.RANGES[voice]
            assert low <= row[row >= 0].min() and row.max() <= high, (name, voice)
    grid, info = chorales["bwv66.6"]
    assert info["key"] == "F# minor" and info["key_source"] == "analysis"
    assert info["time_signature"] == "4/4" and info["bars"] == 10 and info["pickup_steps"] == 4
    assert grid.shape[1] * 0.25 == corpus.parse("bach/bwv66.6").highestTime
    assert chorales["bwv269"][1]["time_signature"] == "3/4"


def test_more_than_four_parts_is_skipped():
    from music21 import corpus

    with pytest.raises(C.SkipPiece) as skip:
        C.parse_score(corpus.getWork("bach/bwv1.6"))  # horns and strings beside the choir: 5 parts
    assert skip.value.reason == "not four parts"


def _score(voices, parts_order=(0, 1, 2, 3)):
    """A four-part music21 score from per-voice lists of (offset, quarterLength, pitch or [pitches] or 'grace' item)."""
    from music21 import chord, note, stream

    score = stream.Score()
    for v in parts_order:
        part = stream.Part()
        part.partName = ("Soprano", "Alto", "Tenor", "Bass")[v]
        for offset, ql, what, *tie in voices[v]:
            n = chord.Chord(what, quarterLength=ql) if isinstance(what, list) else note.Note(what, quarterLength=ql)
            if ql == 0:
                n = n.getGrace()
            if tie:
                from music21 import tie as m21tie

                n.tie = m21tie.Tie(tie[0])
            part.insert(offset, n)
        score.insert(0, part)
    return score


SIMPLE = [[(0, 2, 72), (2, 2, 71)], [(0, 4, 67)], [(0, 4, 64)], [(0, 4, 48)]]


def test_rules_ties_grace_chords_rounding():
    voices = [
        [(0, 1, 72, "start"), (1, 1, 72, "stop"), (2, 0, 74), (2, 1, [71, 76]), (3, 0.0625, 74), (3.0625, 0.9375, 72)],
        [(0, 4, 67)],
        [(0, 2, 64), (2.0625, 1.9375, 62)],  # an onset a 64th late: moved to the grid
        [(0, 2, [36, 48]), (2, 2, 43)],
    ]
    grid, info = C.parse_score(_score(voices), key_analysis=False, max_moved=1.0)  # 3 of 10 notes move: allowed here
    assert G.notes(grid) == [
        [(0, 8, 72), (8, 12, 76), (12, 16, 72)],  # tie held; chord -> top; a 64th dropped, its neighbour moved
        [(0, 16, 67)],
        [(0, 8, 64), (8, 16, 62)],
        [(0, 8, 36), (8, 16, 43)],  # bass chord -> bottom
    ]
    assert info["grace_skipped"] == 1 and info["chords_reduced"] == 2
    assert info["dropped"] == 1 and info["moved"] == 3 and info["key"] is None


def test_parts_are_ordered_by_pitch():
    grid, info = C.parse_score(_score(SIMPLE, parts_order=(3, 1, 0, 2)), key_analysis=False)
    assert info["reordered"] and info["part_names"] == ["Soprano", "Alto", "Tenor", "Bass"]
    assert [v[0][2] for v in G.notes(grid)] == [72, 67, 64, 48]


@pytest.mark.parametrize(
    "voices, reason",
    [
        ([[(i / 3, 1 / 3, 72) for i in range(12)]] + SIMPLE[1:], "off the sixteenth grid"),  # triplets
        ([[(0, 4, 100)]] + SIMPLE[1:], "pitch out of vocabulary"),
        (SIMPLE[:3], "not four parts"),
    ],
)
def test_pieces_that_cannot_be_a_grid(voices, reason):
    from music21 import stream

    score = _score(voices, parts_order=range(len(voices))) if len(voices) == 4 else stream.Score()
    if len(voices) != 4:
        for v in voices:
            score.insert(0, _score([v] * 4).parts[0])
    with pytest.raises(C.SkipPiece) as skip:
        C.parse_score(score, key_analysis=False)
    assert skip.value.reason == reason


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A user folder: a good MusicXML chorale (in a subfolder), a broken MIDI file, a three-part piece, a text file."""
    from music21 import corpus

    root = tmp_path_factory.mktemp("music")
    (root / "sub").mkdir()
    corpus.parse("bach/bwv66.6").write("musicxml", fp=str(root / "sub" / "chorale.musicxml"))
    (root / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    three = _score(SIMPLE)
    three.remove(three.parts[3])
    three.write("musicxml", fp=str(root / "three.xml"))
    (root / "notes.txt").write_text("not music")
    return root


def test_load_folder_counts_what_it_skips(folder, tmp_path, monkeypatch):
    grids, infos, skipped = C.load_folder(folder, cache_dir=tmp_path)
    assert len(grids) == 1 and grids[0].shape == (4, 144) and infos[0]["key"] == "F# minor"
    assert skipped == Counter({"unreadable": 1, "not four parts": 1})
    seen = []
    monkeypatch.setattr(C, "_parse_all", lambda *a: seen.append(a))  # a second load reads the cache
    again = C.load_folder(folder, cache_dir=tmp_path)
    assert not seen and (again[0][0] == grids[0]).all() and again[1] == infos and again[2] == skipped


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        C.load_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no MIDI or MusicXML files"):
        C.load_folder(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.mid").write_bytes(b"nonsense")
    with pytest.raises(DataError, match="1 unreadable"):
        C.load_folder(tmp_path / "bad")


def test_load_bach_caches_by_limit(tmp_path, monkeypatch):
    grids, infos, skipped = C.load_bach(tmp_path, limit=3)  # bwv1.6 (5 parts), bwv10.7, bwv101.7
    assert len(grids) + sum(skipped.values()) == 3 and skipped["not four parts"] == 1
    assert [i["source"].rsplit("/", 1)[-1] for i in infos] == ["bwv10.7.mxl", "bwv101.7.mxl"]
    assert len(list(tmp_path.glob("*first3.npz"))) == 1 and len(list(tmp_path.glob("*first3.json"))) == 1
    assert not list(tmp_path.glob("*.tmp"))
    monkeypatch.setattr(C, "_parse_all", lambda *a: pytest.fail("parsed again"))
    cached = C.load_bach(tmp_path, limit=3)
    assert all((a == b).all() and a.dtype == np.int64 for a, b in zip(cached[0], grids)) and cached[1:] == (infos, skipped)


def test_augment_transposes_within_ranges_and_keeps_the_key(chorales):
    grid, info = chorales["bwv66.6"]
    out, out_infos = C.augment([grid], infos=[info])
    shifts = [i["transposed"] for i in out_infos]
    assert 0 in shifts and len(shifts) >= 5 and set(shifts) <= set(range(-5, 7))
    for g, i in zip(out, out_infos):
        p = G.pitches(g)
        assert (p - G.pitches(grid))[p >= 0].tolist() == [i["transposed"]] * int((p >= 0).sum())
        for row, voice in zip(p, G.VOICES):
            low, high = G.RANGES[voice]
            assert low - 2 <= row[row >= 0].min() and row.max() <= high + 2
    assert dict(zip(shifts, (i["key"] for i in out_infos)))[2] == "G# minor"
    assert C.transpose_key("B- major", 1) == "B major" and C.transpose_key("C minor", -1) == "B minor"
    assert C.augment([grid], semitones=[40])[0] == []  # out of every range


def test_home_key_moves_each_piece_to_c_major_or_a_minor(chorales):
    grids = [g for g, _ in chorales.values()]
    keys = [i["key"] for _, i in chorales.values()]
    out, shifts = C.to_home_key(grids, keys)
    assert C.to_home_key(grids, [None] * len(grids))[1] == shifts  # no key given: the same key by music21's analysis of the notes
    for g, moved, key, k in zip(grids, out, keys, shifts):
        assert -6 <= k <= 6 and C.transpose_key(key, k) == ("A minor" if key.endswith("minor") else "C major")
        p = G.pitches(g)
        assert ((G.pitches(moved) - p)[p >= 0] == k).all()
    # a piece without a key is analysed from its notes: bwv66.6 is in F# minor, so it goes down 9 or up 3
    grid, info = chorales["bwv66.6"]
    assert info["key"] == "F# minor" and C.grid_key(grid) == "F# minor"
    assert C.home_shift(grid, None) == C.home_shift(grid, "F# minor") == 3
    # D# minor is 6 semitones from A minor either way: a low piece goes up, a high one down
    assert C.home_shift(G.transpose(grid, -3), "D# minor") == 6 and C.home_shift(G.transpose(grid, 9), "D# minor") == -6
    assert C.nearest_shift(grid, 13) == 1 and C.nearest_shift(grid, -11) == 1


def test_samples_go_to_a_corpus_key_that_keeps_them_in_range(chorales):
    grid, _ = chorales["bwv66.6"]
    high = G.transpose(grid, 4)  # near the top of every range: moving up a further 5 would leave it
    assert C._outside(high, 5) > C._outside(high, -2)
    rng = np.random.default_rng(0)
    drawn = Counter(C.draw_shift(high, {"5": 50, "-2": 1, "-3": 1}, rng) for _ in range(40))
    assert set(drawn) <= {-2, -3} and len(drawn) == 2  # the common key is refused, the two that fit are drawn by their counts
    drawn = Counter(C.draw_shift(grid, {"2": 3, "-1": 1, "3": 9}, rng) for _ in range(400))
    assert set(drawn) == {2, -1} and 250 < drawn[2] < 350  # both fit (+3 would not): drawn 3 : 1


def test_planned_keys_hold_the_corpus_mix_in_random_order():
    rng = np.random.default_rng(0)
    offsets = {"-2": 60, "0": 30, "5": 10}
    plan = C.plan_shifts(offsets, 50, rng)
    assert Counter(plan) == {-2: 30, 0: 15, 5: 5} and plan != sorted(plan)  # exact shares, shuffled
    for n in (1, 7, 64):  # what is left after the whole shares goes to keys by their fractions: never more than one extra each
        for _ in range(20):
            plan = Counter(C.plan_shifts(offsets, n, rng))
            assert sum(plan.values()) == n and all(abs(plan[int(k)] - n * c / 100) < 1 for k, c in offsets.items())
