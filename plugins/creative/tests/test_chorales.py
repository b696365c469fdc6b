"""The chorale generator end to end: conformance, both orders, harmonising a melody (CLI too), bad melodies, a broken corpus folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genforge.core import DataError
from genforge.core.plugin_manager import get_generator
from genforge.core.runner import create_run, run_all
from genforge.core.testing import check_generator, quick_run
from genforge.core.testing.conformance import check_config_defaults
from genforge.plugins.creative.music import grid as G
from genforge.plugins.creative.music import render
from genforge.plugins.creative.music.corpus import parse_score
from genforge.plugins.creative.music.data import load_grids
from genforge.plugins.creative.music.melody import read_melody


@pytest.fixture(scope="module")
def chorale() -> np.ndarray:
    from music21 import corpus

    return parse_score(corpus.parse("bach/bwv66.6"), key_analysis=False)[0]


def _melody_file(tmp_path: Path, soprano_row: np.ndarray, name: str = "melody.mid") -> Path:
    """A one-part MIDI file of a soprano line (the other voices silent)."""
    from music21 import converter

    full = np.stack([soprano_row, np.zeros_like(soprano_row), np.zeros_like(soprano_row), np.zeros_like(soprano_row)])
    score = render.to_score(full)
    score.remove([p for p in score.parts][1:])
    path = tmp_path / name
    score.write("midi", fp=str(path))
    assert len(converter.parse(str(path)).parts) == 1
    return path


def soprano_notes(row: np.ndarray) -> list[tuple[int, int, int]]:
    return G.notes(np.stack([row] * 4))[0]


def test_defaults_round_trip():
    check_config_defaults("chorale-diffusion")


def test_chorale_diffusion_passes_the_conformance_checks(genforge_home):
    steps = check_generator("chorale-diffusion")
    run = steps.run
    data = run.read_json("data.json")
    assert data["train"]["read"] == 12 and data["train"]["kept"] + data["train"]["held_out"] + sum(data["train"]["rejected"].values()) == 12
    training = run.read_json("training.json")
    assert training["details"]["order"] == "autoregressive" and np.isfinite(training["details"]["heldout_nll"])
    # trained in C major / A minor (model.home_key): how far each training piece was from there, to send samples back
    offsets = run.read_json("model.json")["key_offsets"]
    assert sum(offsets.values()) == data["train"]["kept"] and all(-6 <= int(k) <= 6 for k in offsets)
    assert "C major / A minor" in training["details"]["heldout_note"] and "home_key" in run.read_json("samples.json")["details"]
    pieces = load_grids(run.samples_dir / "grids.npz")
    assert len(pieces) == 4 and all(p.shape == (4, 32) for p in pieces)  # 2 bars of sixteenths
    assert len(list((run.samples_dir / "midi").glob("*.mid"))) == 4 and len(list((run.samples_dir / "musicxml").glob("*.musicxml"))) == 4
    assert (run.samples_dir / "wav" / "00000.wav").exists()


def test_the_masked_order_on_the_same_backbone(genforge_home):
    spec = get_generator("chorale-diffusion").test_spec
    default = get_generator("chorale-diffusion").Config()
    assert default.model.order == "autoregressive" and default.sample.avoid_parallels
    run = quick_run("chorale-diffusion", {**spec, "model": {**spec["model"], "order": "masked"}})
    training = run.read_json("training.json")
    assert training["details"]["order"] == "masked" and np.isfinite(training["details"]["heldout_masked_nll"])
    assert run.read_json("samples.json")["details"]["order"] == "masked"
    assert run.metrics()["metrics"]["chorale.loads_back"] == 1.0


@pytest.mark.parametrize("order", ["masked", "autoregressive"])
def test_harmonising_keeps_the_melody_exactly(genforge_home, tmp_path, chorale, order):
    spec = get_generator("chorale-diffusion").test_spec
    melody = _melody_file(tmp_path, chorale[0, :48])
    run = quick_run(
        "chorale-diffusion", {**spec, "model": {**spec["model"], "order": order}, "sample": {**spec["sample"], "melody": str(melody)}}
    )
    tokens, _ = read_melody(melody)
    for piece in load_grids(run.samples_dir / "grids.npz"):
        assert G.notes(piece)[0] == soprano_notes(tokens) == soprano_notes(chorale[0, :48])
    assert run.read_json("samples.json")["details"]["melody"]["notes"] == len(G.notes(chorale[:, :48])[0])
    metrics = run.metrics()["metrics"]
    assert metrics["chorale.loads_back"] == 1.0  # every generated file reads back in music21
    assert (run.figures / "chorale" / "piano_rolls.png").exists() and "piano_rolls" in (run.path / "report.md").read_text()


def test_genforge_harmonise_command(genforge_home, tmp_path, chorale):
    from typer.testing import CliRunner

    from genforge.flows.cli import add_plugin_commands, app

    spec = get_generator("chorale-diffusion").test_spec
    run = quick_run("chorale-diffusion", spec)
    melody = _melody_file(tmp_path, chorale[0, :32])
    add_plugin_commands()
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["harmonise", str(melody), "--run", run.id, "--out", str(out), "--n", "2"])
    assert result.exit_code == 0, result.output
    assert "harmonised melody.mid" in result.output
    assert len(list((out / "midi").glob("*.mid"))) == 2 and len(list((out / "musicxml").glob("*.musicxml"))) == 2
    written = parse_score(out / "midi" / "00000.mid", key_analysis=False)[0]  # read back as a musician's program would
    assert G.notes(written)[0] == soprano_notes(read_melody(melody)[0])
    # a seed per piece: the first of --n 2 is the one --n 1 writes with the same seed
    one = tmp_path / "one"
    assert CliRunner().invoke(app, ["harmonise", str(melody), "--run", run.id, "--out", str(one), "--n", "1"]).exit_code == 0
    assert np.array_equal(load_grids(one / "grids.npz")[0], load_grids(out / "grids.npz")[0])
    # a melody written an octave high comes back in its own register (all four parts moved back), or in the choir's
    high = _melody_file(tmp_path, G.transpose(np.stack([chorale[0, :32]] * 4), 12)[0], "high.mid")
    back = tmp_path / "back"
    result = CliRunner().invoke(app, ["harmonise", str(high), "--run", run.id, "--out", str(back)])
    assert result.exit_code == 0 and "moved -12 semitones into the soprano range; the four parts moved back +12" in result.output
    assert G.notes(load_grids(back / "grids.npz")[0])[0] == [(a, b, p + 12) for a, b, p in soprano_notes(read_melody(melody)[0])]
    choir = tmp_path / "choir"
    assert CliRunner().invoke(app, ["harmonise", str(high), "--run", run.id, "--out", str(choir), "--register", "choir"]).exit_code == 0
    assert G.notes(load_grids(choir / "grids.npz")[0])[0] == soprano_notes(read_melody(melody)[0])
    if "numpy-additive" in result.output:  # no FluidSynth here: the preview says how to get the real sound
        assert "apt-get install fluidsynth fluid-soundfont-gm" in result.output


def test_bad_melodies_are_one_line(tmp_path, chorale):
    from music21 import chord, note, stream

    def write(s: stream.Stream, name: str) -> Path:
        path = tmp_path / name
        s.write("midi", fp=str(path))
        return path

    empty = stream.Score([stream.Part([note.Rest(quarterLength=4)])])
    with pytest.raises(DataError, match="holds no notes"):
        read_melody(write(empty, "empty.mid"))
    chords = stream.Score([stream.Part([note.Note("C5"), chord.Chord(["C5", "E5"]), note.Note("D5")])])
    with pytest.raises(DataError, match=r"has chords \(1, the first at beat 2\)"):
        read_melody(write(chords, "chords.mid"))
    text = tmp_path / "notes.mid"
    text.write_text("not a MIDI file")
    with pytest.raises(DataError, match="cannot read melody .*notes.mid as MIDI or MusicXML"):
        read_melody(text)
    wide = stream.Score([stream.Part([note.Note(40), note.Note(90)])])
    with pytest.raises(DataError, match="spans 50 semitones"):
        read_melody(write(wide, "wide.mid"))
    two = stream.Score([stream.Part([note.Note("C5")]), stream.Part([note.Note("C4")])])
    with pytest.raises(DataError, match="has 2 parts"):
        read_melody(write(two, "two.mid"))
    with pytest.raises(DataError, match="does not exist"):
        read_melody(tmp_path / "missing.mid")
    from music21 import instrument, pitch

    drums = stream.Part([instrument.BassDrum()])
    for _ in range(4):
        hit = note.Unpitched(quarterLength=1)
        hit.displayPitch = pitch.Pitch("C2")
        drums.append(hit)
    with pytest.raises(DataError, match=r"has 4 unpitched note\(s\) \(drums or percussion, the first at beat 1\)"):
        read_melody(write(stream.Score([drums]), "drums.mid"))  # before: AttributeError: 'Unpitched' object has no attribute 'pitch'

    # a melody an octave too low is moved into the soprano range, and says so
    low = stream.Score([stream.Part([note.Note(p - 12) for p in (64, 65, 67, 69)])])
    tokens, info = read_melody(write(low, "low.mid"))
    assert info["transposed"] == 12 and [p for _, _, p in soprano_notes(tokens)] == [64, 65, 67, 69]


def test_a_bad_melody_stops_the_run_before_training(genforge_home, tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_text("x")
    run = create_run("chorale-diffusion", spec=get_generator("chorale-diffusion").test_spec, overrides=[f"sample.melody={bad}"])
    with pytest.raises(DataError, match="cannot read melody"):
        run_all(run)
    assert not (run.path / "model.safetensors").exists()


def test_a_corpus_folder_with_broken_files_trains_on_the_rest(genforge_home, tmp_path):
    from music21 import corpus

    folder = tmp_path / "chorales"
    folder.mkdir()
    for name in ("bach/bwv66.6", "bach/bwv269", "bach/bwv347", "bach/bwv153.1"):
        render.write_midi(parse_score(corpus.parse(name), key_analysis=False)[0], folder / f"{name.split('/')[1]}.mid")
    (folder / "broken.mid").write_bytes(b"MThd garbage")
    (folder / "notes.musicxml").write_text("<not xml")
    spec = get_generator("chorale-diffusion").test_spec
    run = quick_run("chorale-diffusion", {**spec, "data": {"path": str(folder), "transpose": 0, "key_analysis": False}})
    data = run.read_json("data.json")
    assert data["train"]["read"] == 6 and sum(data["train"]["rejected"].values()) == 2
    assert data["train"]["kept"] + data["train"]["held_out"] == 4
    assert run.status["state"] == "finished"


def test_an_empty_corpus_folder_is_one_line(genforge_home, tmp_path):
    run = create_run("chorale-diffusion", spec=get_generator("chorale-diffusion").test_spec, overrides=[f"data.path={tmp_path}"])
    with pytest.raises(DataError, match="holds no MIDI or MusicXML files"):
        run_all(run)


def test_melodies_move_only_by_whole_octaves_and_ties_are_one_note(tmp_path):
    from music21 import note, stream, tie

    def write(s: stream.Stream, name: str, fmt: str = "midi") -> Path:
        path = tmp_path / name
        s.write(fmt, fp=str(path))
        return path

    between = stream.Score([stream.Part([note.Note(50), note.Note(70)])])  # no octave shift fits 57-81
    with pytest.raises(DataError, match="cannot be moved by whole octaves"):
        read_melody(write(between, "between.mid"))
    a, b = note.Note("E5", quarterLength=2), note.Note("E5", quarterLength=2)
    a.tie, b.tie = tie.Tie("start"), tie.Tie("stop")
    tied = stream.Score([stream.Part([a, b, note.Note("D5")])])
    tokens, info = read_melody(write(tied, "tied.musicxml", "musicxml"))
    assert info["notes"] == 2 and soprano_notes(tokens) == [(0, 16, 76), (16, 20, 74)]


def test_too_few_pieces_and_an_odd_window_are_one_line(genforge_home, tmp_path, chorale):
    from genforge.core import ConfigError

    spec = get_generator("chorale-diffusion").test_spec
    render.write_midi(chorale, tmp_path / "only.mid")
    run = create_run("chorale-diffusion", spec={**spec, "data": {"path": str(tmp_path), "key_analysis": False}})
    with pytest.raises(DataError, match=r"1 usable piece\(s\); at least 2 are needed"):
        run_all(run)
    with pytest.raises(ConfigError, match="model.window .12. must be an even number of beats"):
        create_run("chorale-diffusion", spec={**spec, "model": {**spec["model"], "window": 12}})
    with pytest.raises(ConfigError, match=r"sample.hop \(16\) must be shorter than model.window \(16\)"):
        create_run("chorale-diffusion", spec={**spec, "sample": {**spec["sample"], "hop": 16}})
    with pytest.raises(ConfigError, match="data.transpose .6. adds nothing when model.home_key"):
        create_run(
            "chorale-diffusion", spec={**spec, "data": {**spec["data"], "transpose": 6}, "model": {**spec["model"], "home_key": True}}
        )
    # transposed copies without a word on home_key (and every run saved before it): the model that learns every key
    from genforge.core.runner import Steps

    every_key = create_run("chorale-diffusion", spec={**spec, "data": {**spec["data"], "transpose": 6}})
    assert Steps(every_key).config.home_key is False and Steps(create_run("chorale-diffusion", spec=spec)).config.home_key is True


def test_left_to_right_sampling_keeps_each_rule_across_windows():
    import torch

    from genforge.plugins.creative.music import metrics as M
    from genforge.plugins.creative.music.generator import ChoraleModelConfig, ChoraleSampleConfig, build, generate, range_bounds

    model = ChoraleModelConfig(d_model=32, n_heads=2, n_layers=1, window=16, hop=8, order="autoregressive")
    torch.manual_seed(0)
    net = build(model).eval()  # untrained: notes at random, so every fault abounds without the rules
    meta = {"model": model.model_dump()}
    given = torch.full((16, 4, 40), G.MASK)  # 40 steps: three windows of 16 that overlap by half
    away = [k % 13 - 6 for k in range(16)]  # each piece to be written 6 below .. 6 above where the model writes it

    def faults(avoid: bool, hop: int | None = None) -> tuple[int, int, int]:
        cfg = ChoraleSampleConfig(n=16, bars=3, temperature=1.0, top_p=1.0, avoid_parallels=avoid, avoid_crossings=avoid, hop=hop)
        pieces = generate(net, meta, given, cfg, torch.Generator().manual_seed(0), range_bounds(away) if avoid else None)
        outside = sum(
            int(((p[v][p[v] >= 0] + k < low) | (p[v][p[v] >= 0] + k > high)).sum())
            for g, k in zip(pieces, away)
            for p in [G.pitches(g)]
            for v, (low, high) in enumerate(G.RANGES.values())
        )
        sounding = sum(int((G.pitches(g) >= 0).sum()) for g in pieces)
        assert sounding > 16 * 40 * 2  # the rules leave notes to draw: most cells sound, not rest
        return sum(sum(M.parallels(p).values()) for p in pieces), sum(M.voice_crossings(p) for p in pieces), outside

    loose, ruled = faults(False), faults(True)
    assert min(loose) > 10 and ruled == (0, 0, 0), (loose, ruled)
    assert faults(True, hop=4) == (
        0,
        0,
        0,
    )  # windows moving on a beat at a time: seven of them, each given three quarters of the one before


def test_a_model_trained_in_the_home_key_is_moved_to_and_from_it(chorale, monkeypatch):
    import torch

    import genforge.plugins.creative.music.generator as gen_module
    from genforge.plugins.creative.music.generator import ChoraleModelConfig, ChoraleSampleConfig, build, compose, generate

    model = ChoraleModelConfig(d_model=32, n_heads=2, n_layers=1, window=16, hop=8)
    torch.manual_seed(0)
    net = build(model).eval()
    cfg = ChoraleSampleConfig(n=5, bars=2, final_cadence=False)  # the key moves alone here (test_cadence.py: the endings)
    given = torch.full((5, 4, 32), G.MASK)
    given[2:4, 0] = torch.from_numpy(chorale[0, :32])  # two pieces harmonise bwv66.6's soprano (F# minor, or A major: +3 home)
    given[4, 3] = torch.from_numpy(chorale[3, :32])  # one re-voices the upper parts over its bass

    # not trained in a home key: generate as it is
    plain, moves = compose(net, {"model": model.model_dump()}, given, cfg, torch.Generator().manual_seed(0))
    usual = gen_module.range_bounds([0] * 5)  # the range rule: the voices' usual ranges as they are
    assert (
        moves == [0] * 5
        and (plain == generate(net, {"model": model.model_dump()}, given, cfg, torch.Generator().manual_seed(0), usual)).all()
    )

    # trained in C major / A minor, every training piece 2 semitones above home
    seen = []

    def spy(*args):
        seen.append((args[2].clone(), generate(*args), args[5]))
        return seen[-1][1]

    monkeypatch.setattr(gen_module, "generate", spy)
    pieces, moves = compose(net, {"model": model.model_dump(), "key_offsets": {"2": 5}}, given, cfg, torch.Generator().manual_seed(0))
    went_in, came_out, bounds = seen[0]
    assert (bounds == gen_module.range_bounds(moves)).all()  # each piece kept to the ranges of the key it goes to
    assert moves[2:4] == [-3, -3]  # the melody went up 3 to A minor and comes back down by as much
    for i in (2, 3):
        assert (G.pitches(went_in[i].numpy()) - G.pitches(given[i].numpy()))[0][G.pitches(given[i].numpy())[0] >= 0].tolist() == [3] * int(
            (G.pitches(given[i].numpy())[0] >= 0).sum()
        )
        assert G.notes(pieces[i])[0] == soprano_notes(chorale[0, :32])
    assert (went_in[:2] == G.MASK).all() and (went_in[2:4, 1:] == G.MASK).all()
    assert G.notes(pieces[4])[3] == G.notes(chorale[:, :32])[3]  # the given bass, exactly
    tenor, bass = G.pitches(pieces[4])[2:]
    assert not ((tenor >= 0) & (bass >= 0) & (tenor < bass)).any()  # nothing drawn sounds below the given bass
    for i in (0, 1):  # free pieces: moved 2 up from what the model wrote, into every voice's range
        written, out = G.pitches(came_out[i]), G.pitches(pieces[i])
        assert moves[i] == 2 and ((out - written)[written >= 0] == 2).all() and (out[written < 0] == -1).all()
        assert all(((row[row >= 0] >= low) & (row[row >= 0] <= high)).all() for row, (low, high) in zip(out, G.RANGES.values()))
