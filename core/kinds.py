"""Sample kinds: what a generator produces, with one on-disk format, a writer, a loader, a count and a preview.

Built in (plugins add more through ``genforge_sample_kinds``):

=========== ====================================================================================
kind        on disk (inside the run's ``samples/`` folder)
=========== ====================================================================================
molecules   ``samples.smi``: one line-notation string per line (an empty line for a sample that
            did not decode, so that validity counts it). Reads ``.smi``/``.txt``/``.csv``, ``.gz`` too.
images      ``images.npz`` holding ``images``: uint8 (N, H, W) or (N, H, W, C), plus ``png/NNNNN.png``
            and, optionally, ``labels`` (N,) int. Reads such a ``.npz``, or a folder of PNG/JPEG files.
music       ``midi/NNNNN.mid``: one Standard MIDI File per piece, one track per voice (voices kept
            apart). Reads a folder of MIDI or MusicXML files, or one file.
scenarios   ``scenarios.parquet`` in long form: columns ``scenario`` (int), ``step`` (int),
            ``asset`` (str), ``value`` (float); one row per scenario, step and asset.
=========== ====================================================================================

A kind's ``check(path)`` raises a one-line ``DataError`` for a path of the wrong form
(a folder where a file is expected, a missing column), so ``genforge evaluate KIND PATH``
fails clearly before any evaluator runs.
"""

from __future__ import annotations

import contextlib
import gzip
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .errors import DataError

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SCENARIO_COLUMNS = ("scenario", "step", "asset", "value")


class SampleKind:
    """One kind of sample. Subclass it and register an instance through ``genforge_sample_kinds``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    filename: ClassVar[str]  # what ``write`` creates inside a samples folder

    def write(self, samples: Any, folder: Path) -> Path:
        """Write ``samples`` (the kind's in-memory form) into ``folder``; returns the path evaluators read."""
        raise NotImplementedError

    def load(self, path: Path) -> Any:
        """The samples at ``path`` in the kind's in-memory form."""
        raise NotImplementedError

    def count(self, path: Path) -> int:
        return len(self.load(path))

    def check(self, path: Path) -> None:
        """Raise ``DataError`` (one line, in the user's words) when ``path`` cannot hold this kind."""
        if not Path(path).exists():
            raise DataError(f"{path} does not exist")

    def preview(self, path: Path, out: Path, n: int = 16) -> Path | None:
        """A PNG picture of (some of) the samples, or None where the kind has no picture."""
        return None


def read_as(kind: SampleKind, path: Path, step: str = "check") -> Any:
    """``kind.check(path)`` (or ``count``, ``load``) with any failure of a user's file as one ``DataError`` naming it.

    The host calls a kind's methods through this where a person gave the path (``genforge evaluate``,
    the evaluate step), so that a plugin's loader failing on binary bytes or a bad row is one line,
    not a ``UnicodeDecodeError`` from deep inside.
    """
    try:
        return getattr(kind, step)(Path(path))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"{path} cannot be read as {kind.name} samples ({type(exc).__name__}: {exc}); {kind.name} samples are {kind.description or kind.name}"
        ) from None


def _save(fig, out: Path) -> Path:
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class Molecules(SampleKind):
    name = "molecules"
    description = "one line-notation string per line (.smi; .txt, .csv and .gz read too)"
    filename = "samples.smi"
    csv_column: ClassVar[str] = "smiles"  # the column read from a CSV file (case-insensitive)

    def write(self, samples: list[str], folder: Path) -> Path:
        from .store import atomic_write_text

        path = Path(folder) / self.filename
        atomic_write_text(path, "".join(s + "\n" for s in samples))
        return path

    @contextlib.contextmanager
    def stream(self, folder: Path):
        """Write samples batch by batch: ``with kind.stream(folder) as write: write(batch)``; renamed into place when complete."""
        from .store.files import temp_file

        path = Path(folder) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file(path)
        try:
            with os.fdopen(fd, "w") as fh:

                def write(batch: list[str]) -> None:
                    try:
                        fh.write("".join(s + "\n" for s in batch))
                        fh.flush()  # each batch on disk before the next is drawn
                    except OSError as exc:  # a full disk: name the file (the partial one is removed below)
                        raise OSError(exc.errno, exc.strerror, str(path)) from None

                yield write
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def check(self, path: Path) -> None:
        super().check(path)
        if Path(path).is_dir():
            raise DataError(f"{path} is a folder; {self.name} samples are a text file with {self.description}")

    def load(self, path: Path) -> list[str]:
        """One string per row, keeping empty rows (they are samples that did not decode)."""
        path = Path(path)
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", newline="", encoding="utf-8-sig", errors="replace") as fh:  # a BOM is not data
            if path.name.endswith((".csv", ".csv.gz")):
                import csv

                reader = csv.reader(fh)
                header = [h.strip().lower() for h in next(reader, [])]
                if self.csv_column not in header:
                    raise DataError(f"{path}: no column named {self.csv_column!r} (columns: {', '.join(header) or 'none'})")
                col = header.index(self.csv_column)
                return [row[col].strip() if len(row) > col else "" for row in reader]
            return [line.split()[0] if line.split() else "" for line in fh]

    def preview(self, path: Path, out: Path, n: int = 24) -> Path | None:
        """The first samples as text (a plugin's evaluator draws them properly, e.g. as structures)."""
        rows = [s or "(did not decode)" for s in self.load(path)[:n]]
        if not rows:
            return None
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(8, 0.25 * len(rows) + 0.4))
        ax.axis("off")
        for i, s in enumerate(rows):
            ax.text(
                0,
                1 - (i + 0.5) / len(rows),
                s if len(s) < 90 else s[:87] + "...",
                family="monospace",
                fontsize=8,
                va="center",
                transform=ax.transAxes,
            )
        return _save(fig, out)


class Images(SampleKind):
    name = "images"
    description = "an images.npz of uint8 (N, H, W[, C]) arrays, or a folder of PNG/JPEG files"
    filename = "images.npz"

    def write(self, samples: np.ndarray | dict[str, np.ndarray], folder: Path) -> Path:
        """``samples``: uint8 (N, H, W[, C]), or ``{"images": ..., "labels": ...}``; also writes ``png/``."""
        arrays = dict(samples) if isinstance(samples, dict) else {"images": samples}
        images = np.asarray(arrays["images"])
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"images must be uint8 (N, H, W[, C]); got {images.dtype} {images.shape}")
        folder = Path(folder)
        (folder / "png").mkdir(parents=True, exist_ok=True)
        path = folder / self.filename
        from .store.files import temp_file

        fd, tmp = temp_file(path)  # written whole, then renamed: never a half-written images.npz
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        from PIL import Image

        for i, img in enumerate(images):
            Image.fromarray(img.squeeze(-1) if img.ndim == 3 and img.shape[-1] == 1 else img).save(folder / "png" / f"{i:05d}.png")
        return path

    def check(self, path: Path) -> None:
        super().check(path)
        path = Path(path)
        if path.is_dir():
            if not any(p.suffix.lower() in _IMAGE_SUFFIXES for p in path.iterdir()):
                raise DataError(f"{path} holds no PNG or JPEG files; {self.name} are {self.description}")
        elif path.suffix != ".npz":
            raise DataError(f"{path} is not a .npz file or a folder; {self.name} are {self.description}")
        else:
            try:
                with np.load(path) as z:
                    names = z.files
            except (OSError, ValueError) as exc:
                raise DataError(f"{path} cannot be read as a .npz file ({exc}); {self.name} are {self.description}") from None
            if "images" not in names:
                raise DataError(f"{path} has no 'images' array (arrays: {', '.join(names)}); {self.name} are {self.description}")

    def load(self, path: Path) -> np.ndarray:
        """uint8 (N, H, W[, C]); a folder's files must share one size."""
        path = Path(path)
        if path.is_dir():
            from PIL import Image

            files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
            arrays = [np.asarray(Image.open(p)) for p in files]
            shapes = {a.shape for a in arrays}
            if len(shapes) > 1:
                raise DataError(f"{path}: images of different sizes {sorted(shapes)[:3]}; resize them to one size first")
            return np.stack(arrays) if arrays else np.zeros((0, 1, 1), np.uint8)
        with np.load(path) as z:
            if "images" not in z:
                raise DataError(f"{path} has no 'images' array (arrays: {', '.join(z.files)})")
            return z["images"]

    def preview(self, path: Path, out: Path, n: int = 16) -> Path | None:
        images = self.load(path)[:n]
        if not len(images):
            return None
        plt = _pyplot()
        cols = min(8, len(images))
        rows = -(-len(images) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.2), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, img in zip(axes.flat, images):
            ax.imshow(img.squeeze(), cmap="gray" if img.ndim == 2 or img.shape[-1] == 1 else None, vmin=0, vmax=255)
        fig.tight_layout(pad=0.1)
        return _save(fig, out)


class Music(SampleKind):
    name = "music"
    description = "a folder of MIDI (.mid) or MusicXML files, one piece each, or one such file"
    filename = "midi"
    suffixes: ClassVar[tuple[str, ...]] = (".mid", ".midi", ".musicxml", ".xml", ".mxl")  # the files a piece may come in

    def write(self, samples: list[bytes], folder: Path) -> Path:
        """``samples``: the bytes of one Standard MIDI File per piece (one track per voice)."""
        out = Path(folder) / self.filename
        out.mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(samples):
            if not bytes(data[:4]) == b"MThd":
                raise ValueError(f"piece {i} is not a Standard MIDI File (no MThd header)")
            (out / f"{i:05d}.mid").write_bytes(data)
        return out

    def check(self, path: Path) -> None:
        super().check(path)
        path = Path(path)
        if path.is_dir() and not self.load(path):
            raise DataError(f"{path} holds no MIDI or MusicXML files; {self.name} samples are {self.description}")
        if path.is_file() and path.suffix.lower() not in self.suffixes:
            raise DataError(f"{path} is not a MIDI or MusicXML file; {self.name} samples are {self.description}")

    def load(self, path: Path) -> list[Path]:
        """The pieces' files, sorted (parsing them is the evaluators' business): a samples folder that holds
        ``midi/`` (as ``write`` makes it) counts that, not the same pieces again in other formats beside it."""
        path = Path(path)
        if path.is_file():
            return [path]
        if (path / self.filename).is_dir() and (found := self.load(path / self.filename)):
            return found
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in self.suffixes)

    def preview(self, path: Path, out: Path, n: int = 1) -> Path | None:
        """A piano roll of the first MIDI piece, one colour per track (voice)."""
        midi = next((p for p in self.load(path) if p.suffix.lower() in (".mid", ".midi")), None)
        if midi is None:
            return None
        tracks, tpq = read_midi_notes(midi.read_bytes())
        if not any(tracks):
            return None
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(10, 3.5))
        for i, notes in enumerate(tracks):
            for start, end, pitch in notes:
                ax.broken_barh([(start / tpq, max(end - start, 1) / tpq)], (pitch - 0.4, 0.8), color=f"C{i % 10}")
            if notes:
                ax.plot([], [], color=f"C{i % 10}", lw=6, label=f"track {i}")
        ax.set_xlabel("beats (quarter notes)")
        ax.set_ylabel("MIDI pitch")
        ax.set_title(midi.name, fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        fig.tight_layout()
        return _save(fig, out)


def _vlq(data: bytes, pos: int) -> tuple[int, int]:
    """A MIDI variable-length quantity at ``pos``: (value, position after it)."""
    value = 0
    while True:
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos


def read_midi_notes(data: bytes) -> tuple[list[list[tuple[int, int, int]]], int]:
    """Notes of a Standard MIDI File: per track, (start tick, end tick, pitch); and ticks per quarter note.

    Enough for a picture (no tempo map, no SMPTE time); evaluators that need more use a MIDI library.
    """
    if data[:4] != b"MThd":
        raise DataError("not a Standard MIDI File (no MThd header)")
    n_tracks, division = int.from_bytes(data[10:12], "big"), int.from_bytes(data[12:14], "big")
    pos, tracks = 8 + int.from_bytes(data[4:8], "big"), []
    for _ in range(n_tracks):
        if data[pos : pos + 4] != b"MTrk":
            break
        end = pos + 8 + int.from_bytes(data[pos + 4 : pos + 8], "big")
        pos, tick, status, on, notes = pos + 8, 0, 0, {}, []
        while pos < end:
            delta, pos = _vlq(data, pos)
            tick += delta
            if data[pos] >= 0x80:
                status, pos = data[pos], pos + 1
            if status in (0xFF, 0xF0, 0xF7):  # meta (type byte first) or sysex: skip its data
                length, pos = _vlq(data, pos + (status == 0xFF))
                pos += length
            else:
                kind, size = status & 0xF0, 1 if status & 0xF0 in (0xC0, 0xD0) else 2
                args = data[pos : pos + size]
                pos += size
                if kind == 0x90 and args[1] > 0:
                    on[args[0]] = tick
                elif kind in (0x80, 0x90) and args[0] in on:
                    notes.append((on.pop(args[0]), tick, args[0]))
        tracks.append(notes)
        pos = end
    return tracks, division if division < 0x8000 else 480


class Scenarios(SampleKind):
    name = "scenarios"
    description = "a Parquet file with columns scenario, step, asset, value (one row per scenario, step and asset; more columns allowed)"
    filename = "scenarios.parquet"

    def write(self, samples, folder: Path) -> Path:
        """``samples``: a DataFrame in long form, or an array (scenarios, steps, assets) whose assets are named asset0, asset1, ..."""
        path = Path(folder) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        self._long(samples).to_parquet(path, index=False)
        return path

    @contextlib.contextmanager
    def stream(self, folder: Path):
        """Write scenarios part by part with bounded memory: ``with kind.stream(folder) as write: write(part)``.

        Each part is what ``write`` takes (a long DataFrame numbered by the caller, or an array
        (scenarios, steps, assets), numbered on from the previous array) and becomes a row group of
        one Parquet file, the same file ``write`` makes. It is written to a temporary file beside
        ``scenarios.parquet`` and renamed into place when the block ends; an error leaves no file
        (an ``OSError``, such as a full disk, names ``scenarios.parquet``). Yields ``write``.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .store.files import temp_file

        path = Path(folder) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file(path)  # its mode follows the umask, as every file of the store
        os.close(fd)
        writer: pq.ParquetWriter | None = None
        numbered = 0  # scenarios numbered so far in array parts

        @contextlib.contextmanager
        def naming_the_file():
            try:
                yield
            except OSError as exc:  # pyarrow's say neither file: name the one being written
                if exc.filename:
                    raise
                raise OSError(exc.errno, f"{exc.strerror or exc} (writing {path})", str(path)) from exc

        def write(part) -> None:
            nonlocal writer, numbered
            frame = self._long(part, first=numbered)
            numbered += part.shape[0] if isinstance(part, np.ndarray) else 0
            table = pa.Table.from_pandas(frame, preserve_index=False)  # as DataFrame.to_parquet converts it
            with naming_the_file():
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="snappy")
                elif not table.schema.equals(writer.schema, check_metadata=False):
                    table = table.cast(writer.schema)
                writer.write_table(table)

        try:
            yield write
            if writer is None:  # nothing written: an empty file of the same form
                write(self._long(np.zeros((1, 1, 1))).iloc[:0])
            with naming_the_file():
                writer.close()
                os.replace(tmp, path)
        finally:
            if writer is not None and writer.is_open:
                with contextlib.suppress(Exception):
                    writer.close()
            Path(tmp).unlink(missing_ok=True)

    @staticmethod
    def _long(samples, first: int = 0):
        """A long DataFrame of the four columns, from a long DataFrame or an array (scenarios, steps, assets) numbered from ``first``."""
        import pandas as pd

        if isinstance(samples, np.ndarray):
            s, t, a = samples.shape
            frame = pd.DataFrame(
                {
                    "scenario": np.repeat(np.arange(first, first + s), t * a),
                    "step": np.tile(np.repeat(np.arange(t), a), s),
                    "asset": np.tile([f"asset{i}" for i in range(a)], s * t),
                    "value": samples.reshape(-1).astype(float),
                }
            )
        else:
            frame = samples
        missing = [c for c in SCENARIO_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"scenarios need columns {', '.join(SCENARIO_COLUMNS)}; missing {', '.join(missing)}")
        # a generator's own columns (a date per step, say) follow the four, kept as given
        return frame[[*SCENARIO_COLUMNS, *(c for c in frame.columns if c not in SCENARIO_COLUMNS)]]

    def check(self, path: Path) -> None:
        super().check(path)
        path = Path(path)
        if path.is_dir() or path.suffix != ".parquet":
            raise DataError(f"{path} is not a .parquet file; {self.name} are {self.description}")
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            columns = pq.read_schema(path).names
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path} cannot be read as Parquet ({exc}); {self.name} are {self.description}") from None
        missing = [c for c in SCENARIO_COLUMNS if c not in columns]
        if missing:
            raise DataError(f"{path} lacks column(s) {', '.join(missing)}; {self.name} are {self.description}")

    def load(self, path: Path, scenarios: int | None = None):
        """The long table; with ``scenarios``, only the first that many scenarios by id (read by row group: memory
        stays that of those scenarios, however many the file holds, and whatever its ids: 0.., 1000.., or gaps)."""
        import pandas as pd

        filters = None
        if scenarios is not None:
            ids = self._ids(path)
            if len(ids) > scenarios:
                filters = [("scenario", "<=", int(ids[scenarios - 1]))] if scenarios > 0 else [("scenario", "<", int(ids[0]))]
        return pd.read_parquet(path, columns=list(SCENARIO_COLUMNS), filters=filters)

    def _ids(self, path: Path) -> np.ndarray:
        """The distinct scenario ids, sorted, read a batch of one column at a time."""
        import pyarrow.parquet as pq

        seen: set[int] = set()
        for batch in pq.ParquetFile(path).iter_batches(columns=["scenario"], batch_size=1 << 20):
            seen.update(np.unique(batch.column(0).to_numpy()).tolist())
        return np.array(sorted(seen))

    def count(self, path: Path) -> int:
        """Distinct scenarios."""
        return len(self._ids(path))

    def preview(self, path: Path, out: Path, n: int = 16) -> Path | None:
        frame = self.load(path, scenarios=1000)  # the bands of the first thousand scenarios: a picture, not a measurement
        if frame.empty:
            return None
        plt = _pyplot()
        assets = list(dict.fromkeys(frame["asset"]))[:4]
        fig, axes = plt.subplots(1, len(assets), figsize=(4 * len(assets), 3), squeeze=False)
        for ax, asset in zip(axes.flat, assets):
            paths = frame[frame["asset"] == asset].pivot(index="step", columns="scenario", values="value")
            q = paths.quantile([0.05, 0.25, 0.5, 0.75, 0.95], axis=1).T
            ax.fill_between(q.index, q[0.05], q[0.95], alpha=0.2, label="5-95 %")
            ax.fill_between(q.index, q[0.25], q[0.75], alpha=0.35, label="25-75 %")
            ax.plot(paths.iloc[:, : min(n, paths.shape[1])], lw=0.6, alpha=0.6)
            ax.set_title(str(asset))
            ax.set_xlabel("step")
        axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        return _save(fig, out)


BUILTIN_KINDS: tuple[SampleKind, ...] = (Molecules(), Images(), Music(), Scenarios())
