"""Chorale data: the Bach chorales in music21's corpus (the default) or a user's folder, as voice grids.

prepare parses every piece into a (4, T) grid on sixteenths (``corpus.py``; cached by
music21 version and parser version, so the corpus is parsed once per machine), holds out
``test_fraction`` of the pieces (whole pieces, by a seeded permutation) as the evaluation
reference, and, when asked (``data.transpose``; the default model learns in one key,
``model.home_key``, so none), transposes the training pieces into the keys that keep each
voice in its range. It writes ``train.npz`` and ``test.npz`` (the grids
concatenated in time, with their lengths and keys) and ``stats.json``.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from genforge.core import DataConfig, DataError, DataSource, store

from . import corpus
from . import grid as G

PREPARE_VERSION = "chorales-prepare-1"


class ChoraleDataConfig(DataConfig):
    source: Literal["bach"] = Field("bach", description="bach: the Bach chorales in music21's corpus (used when data.path is unset)")
    path: str | None = Field(None, description="a folder of four-part MIDI/MusicXML files to train on instead (searched recursively)")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="share of the pieces held out as the evaluation reference")
    transpose: int = Field(
        0,
        ge=0,
        le=6,
        description="training pieces also transposed by -transpose+1 .. +transpose semitones where every voice stays in range (0: none; 6 with model.home_key=false: every key)",
    )
    max_pieces: int | None = Field(None, ge=2, description="use only the first this many files (quick trials and tests)")
    key_analysis: bool = Field(True, description="record each piece's key by music21's analysis (else the key signature)")
    seed: int = Field(0, ge=0)


def save_grids(path: Path, grids: list[np.ndarray], keys: list[str | None] | None = None) -> Path:
    """Grids (each (4, T_i)) to a ``.npz``: ``tokens`` (4, sum T_i) end to end, ``lengths`` (n,), ``keys`` (n,) str.

    Written atomically, without pickle (a key of None is stored as ""); tokens as uint8 when they fit.
    """
    grids = [np.asarray(g) for g in grids]
    for i, g in enumerate(grids):
        if g.ndim != 2 or g.shape[0] != len(G.VOICES) or not np.issubdtype(g.dtype, np.integer):
            raise ValueError(f"grid {i} is {g.dtype} {g.shape}; a grid is an int array (4, T)")
    if keys is not None and len(keys) != len(grids):
        raise ValueError(f"{len(keys)} keys for {len(grids)} grids")
    tokens = np.concatenate(grids, axis=1) if grids else np.zeros((len(G.VOICES), 0), np.int64)
    small = tokens.size == 0 or (tokens.min() >= 0 and tokens.max() < 256)
    arrays = {"tokens": tokens.astype(np.uint8 if small else np.int64), "lengths": np.array([g.shape[1] for g in grids], np.int64)}
    if keys is not None:
        arrays["keys"] = np.array(["" if k is None else str(k) for k in keys], dtype=np.str_)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    store.atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def load_grids(path: Path) -> list[np.ndarray]:
    """The grids (int64, each (4, T_i)) of a ``.npz`` written by ``save_grids``; ``DataError`` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; give the .npz of chorale grids the generator's prepare step wrote")
    try:
        with np.load(path, allow_pickle=False) as z:
            tokens, lengths = z["tokens"], z["lengths"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path} is not a .npz of chorale grids (arrays 'tokens' (4, T) and 'lengths'): {exc}") from None
    if tokens.ndim != 2 or tokens.shape[0] != len(G.VOICES) or lengths.ndim != 1 or (lengths < 0).any() or lengths.sum() != tokens.shape[1]:
        raise DataError(
            f"{path}: 'tokens' {tokens.shape} and 'lengths' (sum {int(lengths.sum())}) do not fit; tokens must be (4, sum of lengths)"
        )
    tokens = tokens.astype(np.int64)
    return [tokens[:, a:b] for a, b in zip(np.cumsum(lengths) - lengths, np.cumsum(lengths))]


def load_keys(path: Path) -> list[str | None]:
    """The key of each grid in a ``.npz`` written by ``save_grids`` ("F# minor"; None where unknown or not recorded)."""
    with np.load(Path(path), allow_pickle=False) as z:
        keys = [str(k) or None for k in z["keys"]] if "keys" in z else None
        n = len(z["lengths"])
    if keys is not None and len(keys) != n:
        raise DataError(f"{path}: {len(keys)} keys for {n} grids; rewrite it with save_grids")
    return keys if keys is not None else [None] * n


def prepare(cfg: ChoraleDataConfig, cache_root: Path, progress=None) -> tuple[Path, str, dict, str]:
    """The prepared folder for ``cfg``: (path, fingerprint, stats, "hit" or "miss")."""
    parse_cache = cache_root / "chorale-grids"
    if cfg.path:
        grids, infos, skipped = corpus.load_folder(
            Path(cfg.path).expanduser(), progress, cache_dir=parse_cache, key_analysis=cfg.key_analysis
        )
        source = f"folder {Path(cfg.path).expanduser()}"
    else:
        grids, infos, skipped = corpus.load_bach(parse_cache, cfg.max_pieces, progress, key_analysis=cfg.key_analysis)
        source = "music21 corpus: Bach chorales"
    if cfg.path and cfg.max_pieces:
        grids, infos = grids[: cfg.max_pieces], infos[: cfg.max_pieces]
    content = hashlib.sha256(b"".join(g.astype(np.int16).tobytes() for g in grids)).hexdigest()
    key = hashlib.sha256(json.dumps([PREPARE_VERSION, content, cfg.model_dump(exclude={"path"})], sort_keys=True).encode()).hexdigest()[:16]
    out = cache_root / f"chorales-{key}"

    def write(folder: Path) -> dict:
        if len(grids) < 2:
            raise DataError(
                f"{source}: {len(grids)} usable piece(s); at least 2 are needed (one to train on, one held out){' — raise data.max_pieces' if cfg.max_pieces else ''}"
            )
        order = np.random.default_rng(cfg.seed).permutation(len(grids))
        n_test = max(1, round(len(grids) * cfg.test_fraction))
        test_idx, train_idx = sorted(order[:n_test]), sorted(order[n_test:])
        shifts = range(-cfg.transpose + 1, cfg.transpose + 1) if cfg.transpose else [0]
        train, train_infos = corpus.augment([grids[i] for i in train_idx], shifts, [infos[i] for i in train_idx])
        save_grids(folder / "train.npz", train, [i.get("key") for i in train_infos])
        save_grids(folder / "test.npz", [grids[i] for i in test_idx], [infos[i].get("key") for i in test_idx])
        stats = {
            "source": source,
            "train": {
                "read": sum(skipped.values()) + len(grids),
                "kept": len(train_idx),
                "held_out": len(test_idx),
                "rejected": dict(skipped),
            },
            "test": {"read": len(test_idx), "kept": len(test_idx), "held_out": 0, "rejected": {}},
            "training_grids": len(train),  # the pieces in train.npz: with data.transpose, every kept transposed copy (originals included)
            "sixteenths": {"train": int(sum(g.shape[1] for g in train)), "test": int(sum(grids[i].shape[1] for i in test_idx))},
        }
        store.atomic_write_text(folder / "stats.json", json.dumps(stats, indent=1))
        return stats

    stats, cache = store.prepared_once(out, write)
    return out, key, {**stats, "source": source}, cache  # the folder this run read, whichever filled the cache


class BachChorales(DataSource):
    """The Bach chorales of music21's corpus as prepared for ``chorale-diffusion`` (its default data)."""

    name: ClassVar[str] = "bach-chorales"
    kind: ClassVar[str] = "music"
    reference_split: ClassVar[str | None] = "test"  # `genforge evaluate music X` compares with the held-out chorales
    train_split: ClassVar[str | None] = "train"  # and takes the bands and floors from every chorale, as a run does
    description: ClassVar[str] = (
        "Bach's four-part chorales from music21's corpus (368 of 433 files), 10 % held out; parsed once (about 1.5 minutes)"
    )

    def files(self) -> dict[str, Path]:
        path, *_ = prepare(ChoraleDataConfig(), store.home() / "data")
        return {"train": path / "train.npz", "test": path / "test.npz"}
