"""Image data: scikit-learn's digits (the default), CIFAR-10, or a user's folder of PNG/JPEG files.

Every source ends the same way: uint8 arrays (N, H, W) for grayscale or (N, H, W, 3) for
RGB at ``data.resolution`` (the shorter side resized, then the centre cropped), with class
labels where the data has them, written once per content and settings as ``train.npz`` and
``test.npz`` (arrays ``images``, ``labels`` (-1: none), ``classes``) plus ``stats.json``.

A user folder is read file by file: a file that is not an image, is truncated or is smaller
than ``MIN_SIDE`` pixels is skipped and counted by reason; a 16-bit PNG, a CMYK JPEG, a
palette image or one with an alpha channel is converted (alpha flattened on white) and
counted by what was done. Sub-folders are classes when every image lies in one of two or
more sub-folders (``logos/``, ``icons/``); otherwise the folder trains one unconditional model.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections import Counter
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from genforge.core import DataConfig, DataError, DataSource, store
from genforge.core.downloads import fetch
from genforge.core.inputs import check_folder

PREPARE_VERSION = "images-prepare-1"  # bump when the prepared arrays change for the same inputs
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MIN_SIDE = 8  # pixels: anything smaller carries no picture worth learning
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR_RECORD = 1 + 32 * 32 * 3  # a label byte, then the red, green and blue planes


class ImageDataConfig(DataConfig):
    source: Literal["digits", "cifar10", "folder"] | None = Field(
        None,
        description="digits (scikit-learn's 8x8 handwritten digits, upscaled), cifar10, or folder (default: folder when data.path is set, else digits)",
    )
    path: str | None = Field(
        None,
        description="folder: the image folder (sub-folders are classes); cifar10: the binary archive (.tar.gz) or its extracted folder (default: download the official archive)",
    )
    resolution: int = Field(16, ge=8, le=512, description="images are resized (shorter side) and centre-cropped to this many pixels square")
    color: Literal["auto", "gray", "rgb"] = Field(
        "auto", description="auto: gray for digits, RGB for CIFAR-10, a folder's images decide (gray if all are)"
    )
    flip: bool | None = Field(
        None,
        description="augment with horizontal flips (None: on for CIFAR-10, off for digits and folders — a flipped digit or logo is another picture)",
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="held out as the evaluation reference (digits and folders; CIFAR-10 has its own test set)"
    )
    max_images: int | None = Field(None, ge=10, description="train on a random subset of this many images")
    max_test: int = Field(10_000, ge=10, description="cap on reference (test) images")
    max_pixels: int | None = Field(
        50_000_000,
        ge=1,
        description="a picture of more pixels (width x height) is skipped and counted, never decoded (50 MP by default; None: no limit)",
    )
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _source(self) -> ImageDataConfig:
        if self.source == "folder" and not self.path:
            raise ValueError("data.source=folder needs data.path (the folder of images)")
        if self.source == "digits" and self.path:
            raise ValueError("data.path is set but data.source is 'digits'; set data.source=folder (or cifar10) or drop data.path")
        return self

    @property
    def origin(self) -> Literal["digits", "cifar10", "folder"]:
        """The source in effect: ``source``, else folder when ``path`` is set, else digits."""
        return self.source or ("folder" if self.path else "digits")

    def flips(self) -> bool:
        return self.origin == "cifar10" if self.flip is None else self.flip


class SkipImage(Exception):
    """A file that cannot be used; its message is the reason counted in the report."""


# -- one image --------------------------------------------------------------------------------


def read_image(data: bytes, name: str = "", max_pixels: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Decode one file to uint8 (H, W) or (H, W, 3); returns the array and the conversions made.

    A picture of more than ``max_pixels`` pixels is skipped (``SkipImage``) from its header, before it is decoded;
    PIL's own decompression-bomb warning is not printed (the size is counted instead).
    """
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if max_pixels and img.size[0] * img.size[1] > max_pixels:
                raise SkipImage(f"larger than data.max_pixels ({max_pixels:,} pixels)")
            img.load()
    except UnidentifiedImageError:
        raise SkipImage("not an image") from None
    except Image.DecompressionBombError:
        raise SkipImage("larger than PIL's decompression-bomb limit") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise SkipImage("truncated" if "truncated" in str(exc).lower() else "unreadable") from None
    if min(img.size) < MIN_SIDE:
        raise SkipImage(f"smaller than {MIN_SIDE} px")
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        notes.append("16-bit converted to 8-bit")
        return np.clip(np.round(arr / top * 255), 0, 255).astype(np.uint8), notes
    if img.mode == "CMYK":
        img = img.convert("RGB")
        notes.append("CMYK converted to RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("L" if img.mode.startswith("L") else "RGB")
        notes.append("alpha flattened on white")
    if img.mode == "1":
        img = img.convert("L")
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return np.asarray(img), notes


def fit_square(arr: np.ndarray, size: int, gray: bool) -> np.ndarray:
    """uint8 (H, W[, 3]) -> (size, size[, 3]): the shorter side resized to ``size``, the centre cropped."""
    from PIL import Image

    img = Image.fromarray(arr)
    img = img.convert("L" if gray else "RGB")
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))


def is_gray(arr: np.ndarray) -> bool:
    return arr.ndim == 2 or bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())


# -- sources -----------------------------------------------------------------------------------


class Loaded:
    """Decoded images of one source, before the split: arrays at the configured size, labels, counts."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: list[str],
        source: str,
        read: int,
        rejected: Counter,
        converted: Counter,
        test: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        self.images, self.labels, self.classes, self.source = images, labels, classes, source
        self.read, self.rejected, self.converted, self.test = read, rejected, converted, test


def folder_files(folder: Path) -> tuple[list[Path], list[str] | None]:
    """Image files under ``folder`` (sorted) and the class names (sub-folders) or None."""
    if Path(folder).expanduser().is_file():
        raise DataError(f"data.path {str(folder)!r} is a file; give a folder of PNG/JPEG images (sub-folders are classes)")
    folder = check_folder(folder, "data.path")  # a loop of links, a FIFO: one line
    # every name that looks like a picture; one that is no regular file (a link that leads nowhere, a FIFO) is
    # counted by load_folder, never opened
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise DataError(f"data.path {str(folder)!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    tops = {p.relative_to(folder).parts[0] for p in files if len(p.relative_to(folder).parts) > 1}
    in_subfolders = all(len(p.relative_to(folder).parts) > 1 for p in files)
    return files, (sorted(tops) if in_subfolders and len(tops) >= 2 else None)


def folder_digest(folder: Path, files: list[Path]) -> str:
    """The folder's content: each file's path inside it (its class) and bytes."""
    h = hashlib.sha256()
    for p in files:
        content = hashlib.sha256(p.read_bytes()).digest() if p.is_file() else b"not a regular file"
        h.update(str(p.relative_to(folder)).encode() + b"\0" + content)
    return h.hexdigest()


def load_folder(folder: Path, cfg: ImageDataConfig, files: list[Path], classes: list[str] | None) -> Loaded:
    # each file is resized as it is read (a folder of photos never sits in memory at full size);
    # colour is decided afterwards: grey when every image was
    squares, grays, labels, rejected, converted = [], [], [], Counter(), Counter()
    for p in files:
        if not p.is_file():  # a dangling link, a loop, a FIFO named like a picture: never opened
            rejected["not a regular file"] += 1
            continue
        try:
            arr, notes = read_image(p.read_bytes(), p.name, cfg.max_pixels)
        except SkipImage as exc:
            rejected[str(exc)] += 1
            continue
        except OSError:
            rejected["unreadable"] += 1
            continue
        converted.update(notes)
        grays.append(is_gray(arr))
        squares.append(fit_square(arr, cfg.resolution, gray=cfg.color == "gray"))
        labels.append(classes.index(p.relative_to(folder).parts[0]) if classes else -1)
    if not squares:
        raise DataError(f"data.path {str(folder)!r}: none of its {len(files)} image files could be read ({_reasons(rejected)})")
    gray = cfg.color == "gray" or (cfg.color == "auto" and all(grays))
    images = np.stack([sq if sq.ndim == 2 else (sq[..., 0] if gray else sq) for sq in squares])
    return Loaded(images, np.asarray(labels, np.int64), classes or [], f"folder {folder}", len(files), rejected, converted)


def load_digits(cfg: ImageDataConfig) -> Loaded:
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels), upscaled to the resolution."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    raw = np.round(d.images * (255 / 16)).astype(np.uint8)
    gray = cfg.color != "rgb"
    images = np.stack([fit_square(a, cfg.resolution, gray) for a in raw])
    return Loaded(images, d.target.astype(np.int64), [str(i) for i in range(10)], "scikit-learn digits", len(raw), Counter(), Counter())


def read_cifar10(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The binary version of CIFAR-10 (``cifar-10-binary.tar.gz`` or its folder): split -> (uint8 (N,32,32,3), labels)."""

    def parse(blobs: list[bytes], name: str) -> tuple[np.ndarray, np.ndarray]:
        raw = np.frombuffer(b"".join(blobs), np.uint8)
        if raw.size == 0 or raw.size % _CIFAR_RECORD:
            raise DataError(f"{path}: the {name} batches are not whole CIFAR-10 binary records ({raw.size} bytes)")
        rec = raw.reshape(-1, _CIFAR_RECORD)
        return rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), rec[:, 0].astype(np.int64)

    batches: dict[str, bytes] = {}
    if path.is_dir():
        for p in sorted(path.rglob("*.bin")):
            batches[p.name] = p.read_bytes()
    else:
        try:
            with tarfile.open(path) as tar:
                for m in tar.getmembers():
                    if m.isfile() and m.name.endswith(".bin"):
                        batches[Path(m.name).name] = tar.extractfile(m).read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{path} is not a readable CIFAR-10 archive ({type(exc).__name__}: {exc})") from None
    train = [batches[k] for k in sorted(batches) if k.startswith("data_batch")]
    if not train or "test_batch.bin" not in batches:
        hint = (
            " (this looks like the Python/pickle version: genforge reads the binary version, cifar-10-binary.tar.gz)"
            if "python" in path.name
            else ""
        )
        raise DataError(f"{path} holds no CIFAR-10 binary batches (data_batch_*.bin, test_batch.bin){hint}")
    return {"train": parse(train, "training"), "test": parse([batches["test_batch.bin"]], "test")}


def load_cifar10(cfg: ImageDataConfig, cache: Path) -> Loaded:
    path = fetch(cfg.path or CIFAR10_URL, cache / "downloads")
    splits = read_cifar10(path)
    gray = cfg.color == "gray"

    def fit(images):
        return images if cfg.resolution == 32 and not gray else np.stack([fit_square(a, cfg.resolution, gray) for a in images])

    (tr, tr_labels), (te, te_labels) = splits["train"], splits["test"]
    return Loaded(
        fit(tr),
        tr_labels,
        list(CIFAR10_CLASSES),
        f"CIFAR-10 ({store.redact_url(cfg.path or CIFAR10_URL)})",
        len(tr),
        Counter(),
        Counter(),
        test=(fit(te), te_labels),
    )


# -- prepare -----------------------------------------------------------------------------------


def _reasons(counter: Counter) -> str:
    return ", ".join(f"{n} {r}" for r, n in counter.most_common()) or "none"


def fingerprint(cfg: ImageDataConfig, content: str) -> str:
    settings = cfg.model_dump(exclude={"flip"})  # flips are applied while training: the arrays do not change
    return hashlib.sha256(json.dumps([PREPARE_VERSION, content, settings], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _absolute(path: str) -> Path:
    """The folder as an absolute path, links kept (a link loop is then refused as not a folder, never a RuntimeError)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def source_content(cfg: ImageDataConfig) -> tuple[str, tuple[list[Path], list[str] | None] | None]:
    """What identifies the source's content (for the cache key), and a folder's listing."""
    if cfg.origin == "digits":
        import sklearn

        return f"sklearn-digits-{sklearn.__version__}", None
    if cfg.origin == "cifar10":
        given = cfg.path or CIFAR10_URL
        local = Path(given).expanduser()
        if local.is_file():
            return f"cifar10-{hashlib.sha256(local.read_bytes()).hexdigest()}", None
        return f"cifar10-{given}", None
    folder = _absolute(cfg.path)
    listing = folder_files(folder)
    return folder_digest(folder, listing[0]), listing


def split(loaded: Loaded, cfg: ImageDataConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """train/test arrays: the source's own test set, else a stratified random ``test_fraction``."""
    rng = np.random.default_rng(cfg.seed)
    if loaded.test is not None:
        train_idx, (test_images, test_labels) = np.arange(len(loaded.images)), loaded.test
        test_pick = rng.permutation(len(test_images))[: cfg.max_test]
        test = (test_images[np.sort(test_pick)], test_labels[np.sort(test_pick)])
    else:
        order = rng.permutation(len(loaded.images))
        test_idx = []
        for label in np.unique(loaded.labels):  # stratified: every class with two or more images in both splits
            members = order[loaded.labels[order] == label]
            if len(members) > 1:
                test_idx.extend(members[: min(len(members) - 1, max(1, round(len(members) * cfg.test_fraction)))])
        test_idx = np.asarray(test_idx, np.int64)
        test_idx = np.sort(rng.permutation(test_idx)[: cfg.max_test])  # a cap takes from every class alike
        if not len(test_idx):
            raise DataError(f"{loaded.source}: too few images to hold any out for evaluation (every class has one image); add images")
        train_idx = np.setdiff1d(np.arange(len(loaded.images)), test_idx)
        test = (loaded.images[test_idx], loaded.labels[test_idx])
    if cfg.max_images and len(train_idx) > cfg.max_images:
        train_idx = np.sort(rng.choice(train_idx, cfg.max_images, replace=False))
    return {"train": (loaded.images[train_idx], loaded.labels[train_idx]), "test": test}


def write_prepared(loaded: Loaded, cfg: ImageDataConfig, folder: Path) -> dict:
    parts = split(loaded, cfg)
    classes = np.asarray(loaded.classes, dtype=str)
    for name, (images, labels) in parts.items():
        np.savez(folder / f"{name}.npz", images=images, labels=labels, classes=classes)
    n_train, n_test = len(parts["train"][0]), len(parts["test"][0])
    held_out = 0 if loaded.test is not None else n_test
    stats = {
        "source": loaded.source,
        "train": {"read": loaded.read, "kept": n_train, "held_out": held_out, "rejected": dict(loaded.rejected)},
        "test": {"read": n_test, "kept": n_test, "held_out": 0, "rejected": {}},
        "converted": dict(loaded.converted),
        # for the run's summary and report, beside the rejected ones: pictures taken, but changed on the way
        "notes": [f"{sum(loaded.converted.values())} picture conversion(s): {_reasons(loaded.converted)}"] if loaded.converted else [],
        "classes": loaded.classes,
        "resolution": cfg.resolution,
        "channels": 1 if loaded.images.ndim == 3 else 3,
    }
    store.atomic_write_text(folder / "stats.json", json.dumps(stats, indent=1))
    return stats


def prepare(cfg: ImageDataConfig, cache_root: Path) -> tuple[Path, str, dict, str]:
    """The prepared folder for ``cfg``: (path, fingerprint, stats, "hit" or "miss")."""
    content, listing = source_content(cfg)
    key = fingerprint(cfg, content)
    out = cache_root / f"images-{key}"

    def write(folder: Path) -> dict:
        if cfg.origin == "digits":
            loaded = load_digits(cfg)
        elif cfg.origin == "cifar10":
            loaded = load_cifar10(cfg, cache_root)
        else:
            loaded = load_folder(_absolute(cfg.path), cfg, *listing)
        return write_prepared(loaded, cfg, folder)

    stats, cache = store.prepared_once(out, write)
    if cfg.origin == "folder":  # the folder this run read, whichever (a copy with the same pictures) filled the cache
        stats = {**stats, "source": f"folder {_absolute(cfg.path)}"}
    return out, key, stats, cache


def load_split(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images uint8, labels int (-1: none), class names) of a prepared split."""
    with np.load(Path(folder) / f"{name}.npz") as z:
        return z["images"], z["labels"], [str(c) for c in z["classes"]]


class Digits(DataSource):
    """scikit-learn's handwritten digits at 16x16 as prepared for ``image-diffusion`` (its default data)."""

    name: ClassVar[str] = "digits"
    kind: ClassVar[str] = "images"
    reference_split: ClassVar[str | None] = "test"  # `genforge evaluate images X` compares with the held-out digits
    description: ClassVar[str] = (
        "scikit-learn's 1,797 handwritten digits, 16x16 grey, 20 % held out by class (the image generator's default)"
    )

    def files(self) -> dict[str, Path]:
        path, *_ = prepare(ImageDataConfig(), store.home() / "data")
        return {"train": path / "train.npz", "test": path / "test.npz"}
