"""The built-in sample kinds: each writes its one format, loads it back, counts it, draws it, and rejects the wrong form."""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import pytest

from genforge.core import DataError, UnknownNameError
from genforge.core.kinds import Images, Molecules, Music, Scenarios, read_midi_notes
from genforge.core.plugin_manager import get_kind, make_plugin_manager

PNG = b"\x89PNG\r\n\x1a\n"


def test_molecules_round_trip_keeps_empty_rows_and_reads_csv(tmp_path):
    kind = Molecules()
    path = kind.write(["CCO", "", "c1ccccc1"], tmp_path)
    assert path.name == "samples.smi" and kind.load(path) == ["CCO", "", "c1ccccc1"] and kind.count(path) == 3
    csv = tmp_path / "lib.csv"
    csv.write_text("id,SMILES\na,CCN\nb,\n")
    assert kind.load(csv) == ["CCN", ""]
    (tmp_path / "other.csv").write_text("id,name\n1,x\n")
    with pytest.raises(DataError, match="no column named 'smiles' \\(columns: id, name\\)"):
        kind.load(tmp_path / "other.csv")
    with pytest.raises(DataError, match="is a folder; molecules samples are a text file"):
        kind.check(tmp_path)
    assert kind.preview(path, tmp_path / "text.png").read_bytes()[:8] == PNG


def test_images_round_trip_with_labels_pngs_and_a_preview(tmp_path):
    kind = Images()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 8, 8), dtype=np.uint8)
    path = kind.write({"images": images, "labels": np.arange(5)}, tmp_path / "s")
    assert np.array_equal(kind.load(path), images) and kind.count(path) == 5
    assert sorted(p.name for p in (tmp_path / "s" / "png").iterdir()) == [f"{i:05d}.png" for i in range(5)]
    assert np.array_equal(kind.load(tmp_path / "s" / "png"), images)  # a folder of PNGs reads the same
    assert kind.preview(path, tmp_path / "p.png").read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="must be uint8"):
        kind.write(images.astype(float), tmp_path / "t")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no PNG or JPEG files"):
        kind.check(tmp_path / "empty")


def _track(*events: bytes) -> bytes:
    body = b"".join(events) + b"\x00\xff\x2f\x00"
    return b"MTrk" + struct.pack(">I", len(body)) + body


# Two voices: C4 then E4 (running status, note-on velocity 0 as note-off, a tempo meta event between), and C3 held.
MIDI = (
    b"MThd"
    + struct.pack(">IHHH", 6, 1, 2, 480)
    + _track(b"\x00\x90\x3c\x40", b"\x00\xff\x51\x03\x07\xa1\x20", b"\x83\x60\x80\x3c\x40", b"\x00\x90\x40\x40", b"\x83\x60\x40\x00")
    + _track(b"\x00\x91\x30\x40", b"\x87\x40\x81\x30\x00")
)


def test_music_is_a_folder_of_midi_files_with_a_piano_roll(tmp_path):
    kind = Music()
    assert read_midi_notes(MIDI) == ([[(0, 480, 60), (480, 960, 64)], [(0, 960, 48)]], 480)
    folder = kind.write([MIDI, MIDI], tmp_path)
    assert kind.count(folder) == 2 and [p.name for p in kind.load(folder)] == ["00000.mid", "00001.mid"]
    (tmp_path / "musicxml").mkdir()
    (tmp_path / "musicxml" / "00000.musicxml").write_text("<score-partwise/>")  # the same piece in another format
    assert kind.count(tmp_path) == 2 and kind.load(tmp_path) == kind.load(folder)  # a samples folder: its midi/
    assert kind.count(tmp_path / "musicxml") == 1
    assert kind.preview(folder, tmp_path / "roll.png").read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="not a Standard MIDI File"):
        kind.write([b"RIFF...."], tmp_path / "x")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="is not a MIDI or MusicXML file"):
        kind.check(tmp_path / "notes.txt")


def test_scenarios_are_long_form_parquet(tmp_path):
    kind = Scenarios()
    paths = np.cumsum(np.random.default_rng(0).normal(size=(30, 20, 2)), axis=1)
    path = kind.write(paths, tmp_path)
    frame = kind.load(path)
    assert list(frame.columns) == ["scenario", "step", "asset", "value"] and len(frame) == 30 * 20 * 2
    assert kind.count(path) == 30
    back = frame[frame.asset == "asset1"].pivot(index="scenario", columns="step", values="value").to_numpy()
    assert np.allclose(back, paths[:, :, 1])
    assert kind.preview(path, tmp_path / "fan.png").read_bytes()[:8] == PNG
    pd.DataFrame({"scenario": [0], "step": [0], "value": [1.0]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="lacks column\\(s\\) asset"):
        kind.check(tmp_path / "bad.parquet")
    (tmp_path / "fake.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="cannot be read as Parquet"):
        kind.check(tmp_path / "fake.parquet")


@pytest.mark.parametrize("ids", [range(0, 30), range(1000, 1030), range(0, 300, 10)], ids=["0..", "1000..", "gaps"])
def test_scenarios_load_the_first_n_by_id_whatever_the_ids(tmp_path, ids):
    """The market evaluator's cap (evaluate.market.max_scenarios) reads the first N scenarios by id, not ids below N."""
    kind = Scenarios()
    paths = np.random.default_rng(0).normal(size=(30, 5, 1))
    frame = kind._long(paths)
    frame["scenario"] = np.asarray(list(ids))[frame["scenario"].to_numpy()]
    path = tmp_path / "scenarios.parquet"
    frame.to_parquet(path, index=False)
    capped = kind.load(path, scenarios=12)
    assert sorted(capped["scenario"].unique()) == sorted(ids)[:12] and len(capped) == 12 * 5
    assert len(kind.load(path, scenarios=100)) == 30 * 5


def test_an_unknown_kind_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="unknown sample kind 'pictures'; known: molecules, images, music, scenarios"):
        get_kind("pictures", make_plugin_manager(load_entrypoints=False))


def test_a_failed_streamed_write_names_the_file_and_leaves_no_partial_one(tmp_path, monkeypatch):
    """A disk that fills while molecules are written: the error names the samples file; no half file is left."""
    import errno
    import os

    from genforge.core.kinds import Molecules

    real_fdopen = os.fdopen

    class FullDisk:  # the second batch finds the disk full
        def __init__(self, fh):
            self.fh, self.writes = fh, 0

        def write(self, text):
            self.writes += 1
            if self.writes > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(text)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.fh.__exit__(*exc)

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: FullDisk(real_fdopen(fd, *a, **k)))
    with pytest.raises(OSError) as err, Molecules().stream(tmp_path) as write:
        write(["CCO"])
        write(["c1ccccc1"])
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "samples.smi")
    assert list(tmp_path.iterdir()) == []  # neither samples.smi nor its temporary file
