"""Molecule data: the sources the plugin ships or fetches, file readers, RDKit validation.

Every input molecule goes through RDKit: a row that does not parse, does not sanitize,
or cannot be written in the chosen representation is skipped and counted by reason,
never fatal. What survives is stored as canonical SMILES.
"""

from __future__ import annotations

import csv
import os
import urllib.parse
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import ClassVar

from genforge.core import DataError, DataSource, store
from genforge.core.inputs import text_lines

PACKAGE_DATA = Path(__file__).parent / "moses"  # the shipped MOSES subset
MOSES_URL = "https://media.githubusercontent.com/media/molecularsets/moses/master/data/{split}.csv"
MOSES_WHEEL_MEMBERS = {"train": "moses/dataset/data/train.csv.gz", "test": "moses/dataset/data/test.csv.gz"}


class MosesSubset(DataSource):
    """100,000 training and 10,000 test SMILES drawn from MOSES (seed 0), shipped with genforge."""

    name: ClassVar[str] = "moses"
    kind: ClassVar[str] = "molecules"
    description: ClassVar[str] = (
        "MOSES subset shipped with genforge: 100k train / 10k test SMILES (MIT, Polykovskiy et al. 2020); "
        "regenerate with python scripts/healthcare/make_moses_subset.py"
    )
    reference_split: ClassVar[str | None] = "test"  # `genforge evaluate molecules FILE` compares with moses-test

    def files(self) -> dict[str, Path]:
        return {split: PACKAGE_DATA / f"moses_{split}.smi.gz" for split in ("train", "test")}


class MosesFull(DataSource):
    """The full MOSES sets (1.58 M train, 176k test).

    Looked for, in order, in ``$GENFORGE_MOSES`` (a folder with train.csv[.gz] and
    test.csv[.gz], or the ``molsets-0.3.1`` wheel), then in ``$GENFORGE_HOME/data/moses``;
    when neither has them they are downloaded there from the MOSES repository.
    """

    name: ClassVar[str] = "moses-full"
    kind: ClassVar[str] = "molecules"
    description: ClassVar[str] = "full MOSES train/test (MIT); $GENFORGE_MOSES folder or molsets wheel, else downloaded"

    def files(self) -> dict[str, Path]:
        given = os.environ.get("GENFORGE_MOSES")
        cache = store.home() / "data" / "moses"
        if given and Path(given).is_file() and given.endswith(".whl"):
            return self._from_wheel(Path(given), cache)
        for folder in ([Path(given)] if given else []) + [cache]:
            found = {s: _first_existing(folder, s) for s in ("train", "test")}
            if all(found.values()):
                return found  # type: ignore[return-value]
        cache.mkdir(parents=True, exist_ok=True)
        out = {}
        for split in ("train", "test"):
            target = cache / f"{split}.csv"
            if not target.exists():
                url = MOSES_URL.format(split=split)
                try:
                    with urllib.request.urlopen(url, timeout=60) as resp:
                        store.atomic_write_bytes(target, resp.read())
                except OSError as exc:
                    raise DataError(
                        f"MOSES {split} set not found locally and {url} could not be fetched ({exc}); "
                        "set GENFORGE_MOSES to a folder with train.csv/test.csv or to the molsets-0.3.1 wheel "
                        "(pip download --no-deps molsets==0.3.1)"
                    ) from None
            out[split] = target
        return out

    @staticmethod
    def _from_wheel(wheel: Path, cache: Path) -> dict[str, Path]:
        cache.mkdir(parents=True, exist_ok=True)
        out = {}
        with zipfile.ZipFile(wheel) as zf:
            for split, member in MOSES_WHEEL_MEMBERS.items():
                target = cache / f"{split}.csv.gz"
                if not target.exists():
                    store.atomic_write_bytes(target, zf.read(member))
                out[split] = target
        return out


def _first_existing(folder: Path, split: str) -> Path | None:
    for name in (f"{split}.csv", f"{split}.csv.gz", f"{split}.smi", f"{split}.smi.gz"):
        if (folder / name).exists():
            return folder / name
    return None


# -- reading files -------------------------------------------------------------------


def read_smiles_rows(path: str | Path, column: str | None = None) -> Iterator[tuple[str, str | None]]:
    """(SMILES field, None) for every row of a .smi / .csv / .txt file (optionally .gz), or ("", why) for a row it cannot read.

    CSV: the column named ``column``, else the first column whose header is "smiles" (any
    case); a row with more or fewer cells than the header is not read (an unquoted comma in a
    name would shift the SMILES column: another field must never be taken for a SMILES). SMI:
    the first whitespace-separated field; a header line "smiles" is skipped. A blank row, a row
    that is not UTF-8, a line longer than any SMILES file holds: ("", why), for the caller to count.
    A file that is no text file at all (a folder, binary data, a FIFO) is one ``DataError``.
    """
    path = Path(path)
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    lines = text_lines(path, "data file")
    if stem.endswith(".csv"):
        header = None
        for number, text, problem in lines:
            if problem:
                raise DataError(f"{path}, line {number} (the header): {problem}; give a UTF-8 CSV with a SMILES column")
            header = next(csv.reader([text]), [])
            break
        if header is None:
            return
        names = [h.strip().lower() for h in header]
        wanted = (column or "smiles").lower()
        if wanted not in names:
            raise DataError(f"{path.name}: no column {column or 'SMILES'!r} in the header ({', '.join(header)}); set data.smiles_column")
        idx = names.index(wanted)
        for _, text, problem in lines:
            if problem:
                yield "", problem
                continue
            try:
                row = next(csv.reader([text]), [])
            except csv.Error as exc:
                yield "", f"not a CSV row ({exc})"
                continue
            if not any(cell.strip() for cell in row):
                yield "", "empty or unreadable row"
            elif len(row) != len(header):
                yield "", "a different number of cells from the header"
            else:
                yield row[idx].strip(), None
    else:
        for number, text, problem in lines:
            if problem:
                yield "", problem
                continue
            field = text.split()[0] if text.split() else ""
            if number == 1 and field.lower() == "smiles":
                continue
            yield field, None if field else "empty or unreadable row"


def read_smiles(path: str | Path, column: str | None = None) -> Iterator[str]:
    """The SMILES fields of ``read_smiles_rows`` ("" for a row it cannot read, which validation counts as empty)."""
    for smiles, _ in read_smiles_rows(path, column):
        yield smiles


# -- validation ----------------------------------------------------------------------


def validate_one(args: tuple[str, str, bool]) -> tuple[str, list[str] | None, str | None]:
    """(raw SMILES, representation, group_indices) -> (canonical SMILES, token strings, rejection reason)."""
    from rdkit import Chem, RDLogger

    from .tokens import TokenError, Tokenizer

    RDLogger.DisableLog("rdApp.*")
    raw, representation, group = args
    if not raw:
        return "", None, "empty or unreadable row"
    mol = Chem.MolFromSmiles(raw, sanitize=False)
    if mol is None or mol.GetNumAtoms() == 0:
        return "", None, "unparseable SMILES"
    try:
        Chem.SanitizeMol(mol)
    except Exception as exc:  # RDKit raises several sanitization exception types
        return "", None, f"sanitization failed ({type(exc).__name__})"
    canonical = Chem.MolToSmiles(mol)
    try:
        pieces = Tokenizer(representation, ["<pad>", "<mask>"], group).split(canonical)
    except TokenError:
        return canonical, None, f"{representation.upper()} cannot encode"
    return canonical, pieces, None


def validate_all(
    raw: list[str], representation: str, group_indices: bool, workers: int | None = None
) -> tuple[list[str], list[list[str]], Counter]:
    """Validate and tokenize in parallel. Returns kept canonical SMILES, their tokens, and rejection counts."""
    jobs = [(s, representation, group_indices) for s in raw]
    workers = workers or min(os.cpu_count() or 1, 16)
    if workers > 1 and len(jobs) >= 20_000:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(validate_one, jobs, chunksize=2000))
    else:
        results = [validate_one(j) for j in jobs]
    kept, pieces, rejected = [], [], Counter()
    for canonical, toks, reason in results:
        if reason:
            rejected[reason] += 1
        else:
            kept.append(canonical)
            pieces.append(toks)
    return kept, pieces, rejected


def drop_unusable(
    kept: list[str], pieces: list[list[str]], rejected: Counter, max_length: int, vocabulary: dict | None = None
) -> tuple[list[str], list[list[str]]]:
    """Drop molecules that are too long, hold tokens outside ``vocabulary``, or repeat; count each in ``rejected``.

    Duplicates would weigh some molecules twice and inflate novelty's denominator.
    """
    out_smiles, out_pieces, seen = [], [], set()
    for smiles, toks in zip(kept, pieces):
        if len(toks) > max_length:
            rejected[f"longer than {max_length} tokens"] += 1
        elif vocabulary is not None and any(t not in vocabulary for t in toks):
            rejected["token not in the pretrained model's vocabulary"] += 1
        elif smiles in seen:
            rejected["duplicate"] += 1
        else:
            seen.add(smiles)
            out_smiles.append(smiles)
            out_pieces.append(toks)
    return out_smiles, out_pieces
