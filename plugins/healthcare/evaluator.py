"""The RDKit evaluator: validity, uniqueness, novelty, diversity and property distributions.

Definitions follow MOSES (Polykovskiy et al. 2020, moses/metrics):
validity = samples that RDKit parses and sanitizes / all samples drawn (raw, before any filtering);
uniqueness = distinct canonical SMILES / valid; novelty = distinct valid not in the training set / distinct valid;
IntDiv = 1 - mean pairwise Tanimoto similarity of Morgan fingerprints (radius 2, 1024 bits).
Property distributions (QED, SA, logP, molecular weight, heavy atoms, rings) are compared
with the reference set by their means and the Wasserstein-1 distance.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from genforge.core import Evaluation, Evaluator, EvaluatorConfig, Metric, Reference, Samples
from genforge.core.kinds import Molecules
from genforge.core.store import atomic_write_text

from .plots import draw_distributions, draw_grid

PROPERTIES = {
    "qed": "drug-likeness (QED)",
    "sa": "synthetic accessibility (1 easy - 10 hard)",
    "logp": "Crippen logP",
    "mw": "molecular weight",
    "heavy_atoms": "heavy atoms per molecule",
    "aromatic_rings": "aromatic rings per molecule",
    "rings": "rings per molecule",
}


def _rdkit():
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    return Chem


def parse(smiles: str):
    """A sanitized RDKit molecule, or None (empty strings and zero-atom molecules are invalid)."""
    from .moses_metrics import get_mol

    mol = get_mol(smiles)
    return mol if mol is not None and mol.GetNumAtoms() > 0 else None


def size_stats(mols: list) -> dict[str, np.ndarray]:
    """Heavy atoms and aromatic rings: cheap, and where SELFIES models go wrong first."""
    from rdkit.Chem import rdMolDescriptors

    return {
        "heavy_atoms": np.array([m.GetNumHeavyAtoms() for m in mols], dtype=float),
        "aromatic_rings": np.array([rdMolDescriptors.CalcNumAromaticRings(m) for m in mols], dtype=float),
    }


def properties(mols: list) -> dict[str, np.ndarray]:
    from rdkit.Chem import QED, Crippen, Descriptors, rdMolDescriptors
    from rdkit.Contrib.SA_Score import sascorer

    out: dict[str, list[float]] = {k: [] for k in ("qed", "sa", "logp", "mw", "rings")}
    for m in mols:
        out["qed"].append(QED.qed(m))
        out["sa"].append(sascorer.calculateScore(m))
        out["logp"].append(Crippen.MolLogP(m))
        out["mw"].append(Descriptors.MolWt(m))
        out["rings"].append(rdMolDescriptors.CalcNumRings(m))
    values = {k: np.asarray(v, dtype=float) for k, v in out.items()} | size_stats(mols)
    return {k: values[k] for k in PROPERTIES}  # in PROPERTIES' order, as tables and figures show them


def internal_diversity(mols: list, max_n: int = 5000, seed: int = 0) -> float:
    """IntDiv1 = 1 - mean Tanimoto over all pairs incl. i == j (MOSES), on at most ``max_n`` molecules."""
    from .moses_metrics import agg_tanimoto, morgan_fingerprints

    if not mols:
        return float("nan")
    if len(mols) > max_n:
        idx = np.random.default_rng(seed).choice(len(mols), max_n, replace=False)
        mols = [mols[i] for i in idx]
    fps = morgan_fingerprints(mols)
    (mean_sim,) = agg_tanimoto(fps, fps, "mean", (1,))
    return float(1 - mean_sim.mean())


def wasserstein1(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(a, b)) if len(a) and len(b) else float("nan")


def reference_properties(path: Path, max_n: int) -> dict[str, np.ndarray]:
    """Properties of the reference set, cached next to it (reference files are immutable).

    The cache is written atomically; an unreadable one (damaged by hand, or by an older
    genforge) is a miss and is rebuilt.
    """
    cache = path.with_name(f"{path.stem}.properties-{max_n}.json")
    try:
        cached = json.loads(cache.read_text())
        if isinstance(cached, dict) and set(cached) == set(PROPERTIES):
            return {k: np.asarray(v) for k, v in cached.items()}
    except (OSError, ValueError):
        pass
    smiles = [s for s in read_samples(path) if s]
    if len(smiles) > max_n:  # a seeded random subset: files may be ordered (MOSES's are)
        smiles = [smiles[i] for i in sorted(np.random.default_rng(0).choice(len(smiles), max_n, replace=False))]
    props = properties([m for m in map(parse, smiles) if m is not None])
    try:
        atomic_write_text(cache, json.dumps({k: v.tolist() for k, v in props.items()}))
    except OSError:  # a read-only reference folder: compute again next time
        pass
    return props


def read_samples(path: Path) -> list[str]:
    """SMILES, one per row, keeping empty rows (they count as invalid samples): the ``molecules`` kind's loader.

    ``samples.smi`` (genforge's format) and any ``.smi``/``.txt`` file, gzipped or not: the
    first field of each line, so "SMILES name" libraries work; ``.csv[.gz]``: the column named "smiles".
    """
    return Molecules().load(Path(path))


def training_set(reference: Reference) -> set[str] | None:
    """Canonical SMILES of the reference's training data, for novelty (None when there is none)."""
    if reference.train is None or not Path(reference.train).exists():
        return None
    smiles = read_samples(reference.train)
    if Path(reference.train).name == "train.smi":  # written canonical by the prepare step
        return set(smiles)
    from .moses_metrics import canonical_smiles, pmap

    return {c for c in pmap(canonical_smiles, smiles, os.cpu_count() or 1, chunksize=5000) if c}


class RDKitConfig(EvaluatorConfig):
    grid: int = Field(24, ge=0, description="sample molecules drawn in the report's picture")
    max_reference: int = Field(2000, ge=10, description="reference molecules used for property distributions")


class MosesConfig(EvaluatorConfig):
    kl_score: bool = Field(True, description="GuacaMol's KL-divergence score against MOSES test molecules")
    max_reference: int = Field(2000, ge=10, description="MOSES test molecules the KL score compares with")
    ref_molecules: int = Field(
        10_000,
        ge=2,
        description="a reference that is not MOSES's test set: at most this many of its molecules (a seeded subset) for FCD/Ref, SNN/Ref, ...",
    )
    workers: int | None = Field(None, ge=1, description="processes for the MOSES suite (default: all cores)")


class MoleculeEvaluator(Evaluator):
    name: ClassVar[str] = "rdkit"
    kinds: ClassVar[tuple[str, ...]] = ("molecules",)
    Config: ClassVar[type[RDKitConfig]] = RDKitConfig
    description: ClassVar[str] = "validity, uniqueness, novelty, diversity and property distributions (RDKit)"

    def evaluate(self, samples: Samples, reference: Reference, out_dir: Path, config: RDKitConfig) -> Evaluation:
        Chem = _rdkit()
        grid_n = config.grid
        max_ref = config.max_reference
        raw = read_samples(samples.path)
        mols = [parse(s) for s in raw]
        valid = [m for m in mols if m is not None]
        canon = [Chem.MolToSmiles(m) for m in valid]
        unique: dict[str, Any] = {}
        for s, m in zip(canon, valid):
            unique.setdefault(s, m)
        train = training_set(reference)
        n = max(len(raw), 1)
        metrics = [
            Metric("n_samples", len(raw), None, description="samples drawn"),
            Metric("validity", len(valid) / n, True, 1.0, "valid / all samples drawn (RDKit sanitization)"),
            Metric("uniqueness", len(unique) / max(len(valid), 1), True, 1.0, "distinct canonical SMILES / valid"),
        ]
        if train is not None:
            novel = sum(1 for s in unique if s not in train)
            metrics.append(
                Metric("novelty", novel / max(len(unique), 1), True, None, "distinct valid not in the training set / distinct valid")
            )
        uniq_mols = list(unique.values())
        metrics.append(
            Metric("int_div", internal_diversity(uniq_mols) if uniq_mols else float("nan"), True, None, "IntDiv1, Morgan r2 1024 bits")
        )

        ref_props = reference_properties(reference.test, max_ref)
        sample_props = properties(valid) if valid else {k: np.zeros(0) for k in PROPERTIES}
        for key, label in PROPERTIES.items():
            s_mean = float(sample_props[key].mean()) if len(sample_props[key]) else float("nan")
            r_mean = float(ref_props[key].mean())
            metrics.append(Metric(f"{key}_mean", s_mean, None, r_mean, f"mean {label} of valid samples (reference: the reference set's)"))
            metrics.append(
                Metric(
                    f"{key}_w1",
                    wasserstein1(sample_props[key], ref_props[key]),
                    False,
                    None,
                    f"Wasserstein-1 of {label}, samples vs reference",
                )
            )
        ha = sample_props["heavy_atoms"].mean() if valid else float("nan")
        metrics.append(
            Metric(
                "heavy_atoms_rel_diff",
                float(ha / ref_props["heavy_atoms"].mean() - 1),
                None,
                0.0,
                "mean heavy atoms, samples / reference - 1",
            )
        )

        figures = {}
        if uniq_mols and grid_n:
            grid = draw_grid(uniq_mols[:grid_n], out_dir / "molecules.png")
            if grid is not None:
                figures["samples"] = grid
        if valid:
            figures["properties"] = draw_distributions(sample_props, ref_props, out_dir / "properties.png")
        return Evaluation(self.name, metrics, figures)


MOSES_TEST_REFERENCES = ("moses-test", "moses-full-test")  # the reference names of MOSES's own test split


def is_moses_test(reference: Reference) -> bool:
    """Whether the reference is MOSES's test split (its data sources' ``test``), whose statistics genforge ships."""
    return reference.name in MOSES_TEST_REFERENCES


REFERENCE_STATS_VERSION = 1  # in the cache's name: a change to the suite's statistics is a new name, never a stale file


def own_reference_statistics(path: Path, max_n: int, workers: int | None):
    """The MOSES suite's statistics of a reference file, cached by its content under ``$GENFORGE_HOME/cache/references``.

    A changed file is a new digest (never a stale cache); a cache that cannot be read (cut
    short, damaged) is deleted and computed again; it is written whole or not at all.
    """
    import hashlib
    import io

    from genforge.core.store import atomic_write_bytes, home

    from .moses_metrics import read_reference, reference_statistics, save_reference

    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    cache = home() / "cache" / "references" / f"moses-v{REFERENCE_STATS_VERSION}-{digest}-{max_n}.npz"
    if cache.exists():
        try:
            return read_reference(cache)
        except Exception:  # noqa: BLE001 - any unreadable cache (BadZipFile, EOFError, ...) is a miss
            cache.unlink(missing_ok=True)
    smiles = [s for s in read_samples(path) if s]
    if len(smiles) > max_n:  # a seeded random subset: files may be ordered
        smiles = [smiles[i] for i in sorted(np.random.default_rng(0).choice(len(smiles), max_n, replace=False))]
    stats = reference_statistics(smiles, "Ref", n_jobs=workers)
    buffer = io.BytesIO()
    save_reference(stats, buffer)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache, buffer.getvalue())
    except OSError:  # a read-only store: compute again next time
        pass
    return stats


def _suite_description(key: str) -> str:
    """What a MOSES-suite figure is measured against."""
    if key == "novelty":
        return "MOSES suite, against the training data"
    if "/" in key or key in ("logP", "SA", "QED", "weight"):  # FCD/Test, SNN/Ref, logP, logP/Ref, ...
        return "MOSES suite, against the given reference" if key.endswith("/Ref") else "MOSES suite, against MOSES"
    return "MOSES suite"  # validity, uniqueness, IntDiv, Filters: of the samples alone


class MosesEvaluator(Evaluator):
    """The MOSES benchmark suite (and GuacaMol's KL score) against MOSES's own test sets, and against the run's reference.

    Metric names are MOSES's (``FCD/Test``, ``SNN/TestSF``, ``IntDiv2``, ...), so any model's
    numbers can be put in the MOSES table. When the reference is not MOSES's test split (a
    user's library given with ``--reference``, ``data.test_path``, or the part of a user's
    file held out), the suite is also computed against it, named with ``/Ref`` (``FCD/Ref``,
    ``SNN/Ref``, ``Frag/Ref``, ``Scaf/Ref``, ``logP/Ref``, ...), so that nobody mistakes them
    for MOSES-Test figures. Novelty is against the run's training data.
    """

    name: ClassVar[str] = "moses"
    kinds: ClassVar[tuple[str, ...]] = ("molecules",)
    Config: ClassVar[type[MosesConfig]] = MosesConfig
    description: ClassVar[str] = (
        "the MOSES suite (FCD, SNN, Frag, Scaf, IntDiv, Filters) and GuacaMol's KL score against MOSES's test sets, and against your own reference (/Ref)"
    )

    def evaluate(self, samples: Samples, reference: Reference, out_dir: Path, config: MosesConfig) -> Evaluation:
        from .moses_metrics import DATA, guacamol_kl_score, moses_metrics

        raw = read_samples(samples.path)
        train = training_set(reference)
        timings: dict[str, float] = {}
        sets: list = ["test", "test_scaffolds"]
        notes = []
        if not is_moses_test(reference):
            try:
                sets.append(own_reference_statistics(reference.test, config.ref_molecules, config.workers))
            except ValueError as exc:  # e.g. fewer than 2 valid reference molecules: the MOSES figures still come
                notes.append(f"no /Ref figures against {reference.name}: {exc}")
        values = moses_metrics(raw, train, tuple(sets), n_jobs=config.workers, timings=timings)
        higher = {"validity": True, "novelty": True, "IntDiv": True, "IntDiv2": True, "Filters": True}
        metrics = []
        for key, v in values.items():
            better = higher.get(key, key.startswith(("unique@", "SNN/", "Frag/", "Scaf/")) or None)
            if key.startswith(("FCD/", "logP", "SA", "QED", "weight")):
                better = False
            metrics.append(Metric(key, v, better, None, _suite_description(key)))
        if config.kl_score:
            test = gzip.open(DATA / "moses_test.smi.gz", "rt").read().split()
            try:
                score, _ = guacamol_kl_score(raw, test[: config.max_reference], config.workers)
                metrics.append(Metric("KL", score, True, None, "GuacaMol KL-divergence score vs MOSES test"))
            except ValueError as exc:  # a handful of near-identical molecules: no density to compare, not a failed evaluation
                notes.append(f"KL left out: {exc}")
        return Evaluation(self.name, metrics, notes=notes)
