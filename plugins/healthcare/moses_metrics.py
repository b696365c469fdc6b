"""The MOSES metric suite and GuacaMol's KL-divergence score, as their reference code defines them.

MOSES (Polykovskiy et al. 2020, ``moses/metrics/metrics.py`` and ``utils.py``):

* ``validity``: samples RDKit parses and sanitizes / all samples (an empty string is invalid).
  Every other metric uses the valid samples as canonical SMILES, duplicates included.
* ``unique@k``: distinct / k among the first k valid samples (fewer if there are fewer).
* ``novelty``: distinct valid samples not in the training set / distinct valid samples.
* ``FCD/<ref>``: Fréchet distance between Gaussians fitted to ChemNet's penultimate
  activations (``fcd`` package weights, SMILES padded to 350) of the samples and of the reference.
* ``SNN/<ref>``: mean over samples of the highest Tanimoto similarity to a reference
  molecule (Morgan radius 2, 1024 bits).
* ``Frag/<ref>``, ``Scaf/<ref>``: cosine similarity of BRICS-fragment counts and of
  Bemis–Murcko scaffold counts (scaffolds with at least 2 rings).
* ``IntDiv`` / ``IntDiv2``: 1 − mean_i (mean_j T_ij^p)^(1/p), p = 1 / 2, over all pairs incl. i = j.
* ``Filters``: no ring of 8+ atoms, no charge, only C N S O F Cl Br H, no MCF or PAINS match.
* ``logP``, ``SA``, ``QED``, ``weight``: Wasserstein-1 distance to the reference values.

GuacaMol (Brown et al. 2019, ``distribution_learning_benchmark.py``): ``KL`` is the mean of
exp(−KL) over nine descriptors (Gaussian KDE for the four continuous ones, 10-bin
histograms over the reference range for the five counts) and the nearest-neighbour
ECFP4 (4096 bits) similarity within each set, on distinct samples.

Reference sets ("test", "test_scaffolds") come from ``moses/stats_<set>.npz``, converted from
the official MOSES statistics by ``scripts/healthcare/make_moses_stats.py``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).parent / "moses"
REFERENCE_SETS = {"test": "Test", "test_scaffolds": "TestSF"}
FP_BITS = 1024
GUACAMOL_DESCRIPTORS = (
    "BertzCT",
    "MolLogP",
    "MolWt",
    "TPSA",  # continuous
    "NumHAcceptors",
    "NumHDonors",
    "NumRotatableBonds",
    "NumAliphaticRings",
    "NumAromaticRings",  # counts
)


# -- molecules -------------------------------------------------------------------------


def get_mol(smiles: str):
    """MOSES's get_mol: parse and sanitize; None for empty or invalid strings."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    if not smiles:
        return None
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    try:
        Chem.SanitizeMol(mol)
    except ValueError:
        return None
    return mol


def morgan_fingerprints(items: list, bits: int = FP_BITS) -> np.ndarray:
    """Morgan radius-2 fingerprints (1024 bits: MOSES; 4096: GuacaMol's ECFP4) as packed bits: (n, bits / 8) uint8."""
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=bits)
    out = np.zeros((len(items), bits // 8), dtype=np.uint8)
    for i, item in enumerate(items):
        mol = Chem.MolFromSmiles(item) if isinstance(item, str) else item
        if mol is not None:
            out[i] = np.packbits(gen.GetFingerprintAsNumPy(mol).astype(bool))
    return out


@lru_cache(maxsize=1)
def _filters():
    """MOSES's MCF and PAINS SMARTS, each with its RDKit pattern fingerprint (a substructure screen)."""
    import csv

    from rdkit import Chem

    smarts = [row["smarts"] for row in csv.DictReader(open(DATA / "mcf.csv"))]
    smarts += [row[0] for row in csv.reader(open(DATA / "wehi_pains.csv"))]
    patterns = [Chem.MolFromSmarts(s.strip()) for s in smarts]
    return [(p, Chem.PatternFingerprint(p, fpSize=FILTER_FP_BITS)) for p in patterns]


FILTER_FP_BITS = 2048


def passes_filters(mol, screen: bool = True) -> bool:
    """MOSES's ``mol_passes_filters``: ring size < 8, no charges, allowed atoms only, no MCF/PAINS match.

    ``screen``: test a pattern only when its pattern-fingerprint bits are all set in the
    molecule's (RDKit's substructure screen: a match implies the bits, so the answer is the
    same; 3-4x faster). ``screen=False`` runs every SMARTS, exactly as MOSES does.
    """
    from rdkit import Chem, DataStructs

    allowed = {"C", "N", "S", "O", "F", "Cl", "Br", "H"}
    ring_info = mol.GetRingInfo()
    if ring_info.NumRings() and any(len(r) >= 8 for r in ring_info.AtomRings()):
        return False
    if any(a.GetFormalCharge() != 0 for a in mol.GetAtoms()):
        return False
    if any(a.GetSymbol() not in allowed for a in mol.GetAtoms()):
        return False
    h_mol = Chem.AddHs(mol)
    fp = Chem.PatternFingerprint(h_mol, fpSize=FILTER_FP_BITS) if screen else None
    for pattern, pattern_fp in _filters():
        if screen and not DataStructs.AllProbeBitsMatch(pattern_fp, fp):
            continue
        if h_mol.HasSubstructMatch(pattern):
            return False
    smiles = Chem.MolToSmiles(mol, isomericSmiles=False)
    return bool(smiles) and Chem.MolFromSmiles(smiles) is not None


def fragments(mol) -> list[str]:
    from rdkit import Chem
    from rdkit.Chem import BRICS

    return Chem.MolToSmiles(BRICS.BreakBRICSBonds(mol)).split(".")


def scaffold(mol, min_rings: int = 2) -> str | None:
    from rdkit import Chem
    from rdkit.Chem.Scaffolds import MurckoScaffold

    try:
        scaf = MurckoScaffold.GetScaffoldForMol(mol)
    except (ValueError, RuntimeError):
        return None
    smiles = Chem.MolToSmiles(scaf)
    if not smiles or scaf.GetRingInfo().NumRings() < min_rings:
        return None
    return smiles


def _per_molecule(smiles: str) -> dict[str, Any]:
    """Everything MOSES computes per valid molecule, in one pass (runs in worker processes)."""
    from rdkit.Chem import QED, Crippen, Descriptors
    from rdkit.Contrib.SA_Score import sascorer

    mol = get_mol(smiles)
    return {
        "frag": fragments(mol),
        "scaf": scaffold(mol),
        "filters": passes_filters(mol),
        "logP": Crippen.MolLogP(mol),
        "SA": sascorer.calculateScore(mol),
        "QED": QED.qed(mol),
        "weight": Descriptors.MolWt(mol),
    }


def canonical_smiles(smiles: str) -> str | None:
    from rdkit import Chem

    mol = get_mol(smiles)
    return Chem.MolToSmiles(mol) if mol is not None else None


def pmap(fn, items: list, n_jobs: int, chunksize: int = 500) -> list:
    if n_jobs > 1 and len(items) >= 2000:
        with ProcessPoolExecutor(n_jobs) as pool:
            return list(pool.map(fn, items, chunksize=chunksize))
    return [fn(x) for x in items]


# -- similarities ----------------------------------------------------------------------


def _unpack(fps: np.ndarray, dtype):
    import torch

    return torch.from_numpy(np.unpackbits(fps, axis=1)).to(dtype)


def _shared_bits(g, r_t):
    """(m, bits) @ (bits, n) -> (m, n) float32 counts of shared bits.

    int8 inputs use the integer matrix product (VNNI on x86: ~1.5x bf16), bf16 the float one;
    both are exact for 0/1 fingerprints.
    """
    import torch

    if g.dtype == torch.int8:
        if g.shape[0] > 16:
            return torch._int_mm(g, r_t).float()
        return g.float() @ r_t.float()
    return (g @ r_t).float()


@lru_cache(maxsize=1)
def _matmul_dtype():
    """int8 where torch's integer matrix product runs on this CPU, else bf16."""
    import torch

    try:
        a = torch.ones((32, 64), dtype=torch.int8)
        torch._int_mm(a, a.T.contiguous())
        return torch.int8
    except (RuntimeError, AttributeError, NotImplementedError):
        return torch.bfloat16


def agg_tanimoto(
    ref: np.ndarray,
    gen: np.ndarray,
    agg: str = "max",
    powers: tuple[int, ...] = (1,),
    block: int = 4096,
    exclude_self: bool = False,
) -> np.ndarray | list[np.ndarray]:
    """For each ``gen`` fingerprint, the max (or the power means) of its Tanimoto similarities to ``ref``.

    ref, gen: packed fingerprints (n, bits / 8) uint8. Bulk matrix products, as MOSES does;
    0/0 (two empty fingerprints) counts as 1. With ``agg="mean"`` it returns one array per
    power p: (mean_j T_ij^p)^(1/p). ``exclude_self`` (``ref`` is ``gen``): a molecule is not
    its own neighbour.
    """
    import torch

    dtype = _matmul_dtype()
    if dtype == torch.bfloat16:  # bf16 counts are exact up to 256 shared bits
        most = max(int(np.unpackbits(ref, axis=1).sum(1).max(initial=0)), int(np.unpackbits(gen, axis=1).sum(1).max(initial=0)))
        dtype = torch.bfloat16 if most <= 256 else torch.float32
    g_all = _unpack(gen, dtype)
    g_cnt = g_all.float().sum(1)
    best = np.zeros(len(gen))
    sums = [np.zeros(len(gen)) for _ in powers]
    for j in range(0, len(ref), block):
        r = _unpack(ref[j : j + block], dtype)
        r_t = r.T.contiguous()
        r_cnt = r.float().sum(1)
        for i in range(0, len(gen), block):
            tp = _shared_bits(g_all[i : i + block], r_t)  # (gen block, ref block) shared bits
            denom = g_cnt[i : i + block, None] + r_cnt[None, :]
            denom.sub_(tp)
            jac = tp.div_(denom).nan_to_num_(nan=1.0)  # in place: these blocks are the suite's hot loop
            if exclude_self and i == j:
                jac.fill_diagonal_(0.0)
            if agg == "max":
                best[i : i + block] = np.maximum(best[i : i + block], jac.amax(1).numpy())
            else:
                for k, p in enumerate(powers):
                    sums[k][i : i + block] += (jac if p == 1 else jac.pow(p)).sum(1).numpy()
    if agg == "max":
        return best
    return [(acc / len(ref)) ** (1 / p) for acc, p in zip(sums, powers)]


def cos_similarity(ref: dict, gen: dict) -> float:
    if not ref or not gen:
        return float("nan")
    keys = set(ref) | set(gen)
    r = np.array([ref.get(k, 0) for k in keys], dtype=float)
    g = np.array([gen.get(k, 0) for k in keys], dtype=float)
    return float(r @ g / np.linalg.norm(r) / np.linalg.norm(g))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """d² = |mu1 − mu2|² + Tr(S1 + S2 − 2 (S1 S2)^½), with the usual fix for a near-singular product."""
    from scipy import linalg

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(mu1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def chemnet_activations(smiles: list[str], device: str | None = None, batch_size: int = 256) -> np.ndarray:
    """ChemNet's penultimate activations (n, 512) for canonical SMILES, padded to 350 as ChemNet expects.

    Uses the ``fcd`` package's model and one-hot encoding; its own helpers break on current numpy/scipy.
    """
    import fcd
    import torch
    from fcd.utils import SmilesDataset

    model = fcd.load_ref_model()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    out = []
    loader = torch.utils.data.DataLoader(SmilesDataset(smiles), batch_size=batch_size, num_workers=0)
    with torch.no_grad():
        for batch in loader:  # (batch, 350, vocabulary) one-hot / vocabulary size
            out.append(model(batch.transpose(1, 2).float().to(device)).cpu().numpy().astype(np.float32))
    model.to("cpu")
    return np.concatenate(out) if out else np.zeros((0, 512), dtype=np.float32)


# -- reference sets --------------------------------------------------------------------


@dataclass
class MosesReference:
    """What the suite compares samples with: MOSES's own sets, or any set of reference molecules."""

    suffix: str  # the metric names' suffix: "Test" and "TestSF" (MOSES's sets), "Ref" for a user's reference
    fcd_mu: np.ndarray
    fcd_sigma: np.ndarray
    fps: np.ndarray  # packed Morgan fingerprints of the whole set (n, 128) uint8
    frag: dict[str, int]
    scaf: dict[str, int]
    values: dict[str, np.ndarray] | None  # logP, SA, QED, weight (None: no property distances, as for TestSF)

    def property_name(self, key: str) -> str:
        """MOSES names its property distances to its test set plainly (``logP``); any other set's carry its suffix."""
        return key if self.suffix == "Test" else f"{key}/{self.suffix}"


@lru_cache(maxsize=2)
def load_reference(name: str) -> MosesReference:
    """A MOSES reference set, from the compact statistics shipped in ``moses/stats_<name>.npz``."""
    if name not in REFERENCE_SETS:
        raise ValueError(f"unknown MOSES reference {name!r}; one of {', '.join(REFERENCE_SETS)}")
    stats = np.load(DATA / f"stats_{name}.npz")
    return MosesReference(
        REFERENCE_SETS[name],
        stats["fcd_mu"],
        stats["fcd_sigma"],
        stats["fps"],
        json.loads(str(stats["frag"])),
        json.loads(str(stats["scaf"])),
        {k: stats[k] for k in ("logP", "SA", "QED", "weight")} if name == "test" else None,
    )


def _set_statistics(
    canon: list[str], suffix: str, n_jobs: int, device: str | None, lap=lambda name: None
) -> tuple[MosesReference, list[dict]]:
    """The suite's statistics of valid canonical SMILES — the same for samples and for a reference — and the per-molecule records."""
    per = pmap(_per_molecule, canon, n_jobs)
    lap("per-molecule (fragments, scaffolds, filters, properties)")
    fps = np.concatenate(pmap(morgan_fingerprints, [canon[i : i + 2000] for i in range(0, len(canon), 2000)], n_jobs, chunksize=1))
    lap("fingerprints")
    act = chemnet_activations(canon, device)
    lap("ChemNet activations")
    stats = MosesReference(
        suffix,
        act.mean(0),
        np.cov(act.T),
        fps,
        dict(Counter(f for p in per for f in p["frag"])),
        dict(Counter(p["scaf"] for p in per if p["scaf"] is not None)),
        {k: np.array([p[k] for p in per]) for k in ("logP", "SA", "QED", "weight")},
    )
    return stats, per


def reference_statistics(smiles: list[str], suffix: str = "Ref", n_jobs: int | None = None, device: str | None = None) -> MosesReference:
    """The suite's statistics of any reference molecules, computed as for the samples (and as MOSES does for its test set).

    Invalid SMILES are dropped (canonicalised first, as for samples). Raises ValueError when
    fewer than two are valid: a Fréchet distance needs a covariance.
    """
    n_jobs = n_jobs or os.cpu_count() or 1
    canon = [c for c in pmap(canonical_smiles, smiles, n_jobs) if c is not None]
    if len(canon) < 2:
        raise ValueError(f"the reference has {len(canon)} valid molecule(s) of {len(smiles)}; the suite needs at least 2")
    return _set_statistics(canon, suffix, n_jobs, device)[0]


def save_reference(ref: MosesReference, path) -> None:
    """Write a reference's statistics as one ``.npz`` (no pickles), the form ``moses/stats_*.npz`` have; a path or a binary file."""
    arrays = {
        "fcd_mu": ref.fcd_mu,
        "fcd_sigma": ref.fcd_sigma,
        "fps": ref.fps,
        "frag": np.array(json.dumps(ref.frag)),
        "scaf": np.array(json.dumps(ref.scaf)),
        "suffix": np.array(ref.suffix),
    }
    np.savez(path, **arrays | (ref.values or {}))


def read_reference(path: Path) -> MosesReference:
    with np.load(path, allow_pickle=False) as stats:
        keys = ("logP", "SA", "QED", "weight")
        return MosesReference(
            str(stats["suffix"]),
            stats["fcd_mu"],
            stats["fcd_sigma"],
            stats["fps"],
            json.loads(str(stats["frag"])),
            json.loads(str(stats["scaf"])),
            {k: stats[k] for k in keys} if all(k in stats for k in keys) else None,
        )


# -- the suite -------------------------------------------------------------------------


def moses_metrics(
    samples: list[str],
    train: set[str] | None = None,
    references: tuple[str | MosesReference, ...] = ("test", "test_scaffolds"),
    n_jobs: int | None = None,
    device: str | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, float]:
    """All MOSES metrics for raw samples, against each reference.

    ``references``: MOSES's sets by name (``test`` gives ``FCD/Test``, ..., and the property
    distances ``logP``, ``SA``, ``QED``, ``weight``; ``test_scaffolds`` gives ``FCD/TestSF``, ...)
    and any ``MosesReference`` (``reference_statistics``), whose figures carry its suffix
    (``FCD/Ref``, ..., ``logP/Ref``).
    """
    import time

    from scipy.stats import wasserstein_distance

    n_jobs = n_jobs or os.cpu_count() or 1
    timings = timings if timings is not None else {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(timings.get(name, 0.0) + now - t, 3)
        t = now

    canon = pmap(canonical_smiles, samples, n_jobs)
    gen = [s for s in canon if s is not None]
    m: dict[str, float] = {"validity": len(gen) / max(len(samples), 1)}
    for k in (1000, 10000):
        m[f"unique@{k // 1000}k"] = len(set(gen[:k])) / max(len(gen[:k]), 1)
    if train is not None:
        distinct = set(gen)
        m["novelty"] = len(distinct - train) / max(len(distinct), 1)
    lap("validity/unique/novelty")
    if len(gen) < 2:
        return m
    own, per = _set_statistics(gen, "", n_jobs, device, lap)
    for name in references:
        ref = load_reference(name) if isinstance(name, str) else name
        lap("reference sets")
        m[f"FCD/{ref.suffix}"] = frechet_distance(own.fcd_mu, own.fcd_sigma, ref.fcd_mu, ref.fcd_sigma)
        lap("FCD")
        m[f"SNN/{ref.suffix}"] = float(agg_tanimoto(ref.fps, own.fps, "max").mean())
        lap("SNN")
        m[f"Frag/{ref.suffix}"] = cos_similarity(ref.frag, own.frag)
        m[f"Scaf/{ref.suffix}"] = cos_similarity(ref.scaf, own.scaf)
        lap("Frag/Scaf")
        if ref.values is not None:
            for k, v in own.values.items():
                m[ref.property_name(k)] = float(wasserstein_distance(ref.values[k], v))
    t1, t2 = agg_tanimoto(own.fps, own.fps, "mean", (1, 2))
    m["IntDiv"], m["IntDiv2"] = float(1 - t1.mean()), float(1 - t2.mean())
    lap("IntDiv")
    m["Filters"] = float(np.mean([p["filters"] for p in per]))
    return m


# -- GuacaMol ----------------------------------------------------------------------------


def _descriptors(smiles: str) -> list[float]:
    from rdkit.Chem import Descriptors

    mol = get_mol(smiles)
    out = []
    for name in GUACAMOL_DESCRIPTORS:
        v = getattr(Descriptors, name)(mol)
        out.append(float(v) if np.isfinite(v) else 0.0)
    return out


def _nn_similarity_ecfp4(smiles: list[str]) -> np.ndarray:
    """Each molecule's highest ECFP4 (4096-bit) Tanimoto similarity to another molecule of the same set."""
    fps = morgan_fingerprints(smiles, bits=4096)
    return agg_tanimoto(fps, fps, "max", exclude_self=True)


KL_SAMPLES = 10_000  # GuacaMol's KLDivBenchmark scores this many generated molecules


def guacamol_kl_score(
    samples: list[str], reference: list[str], n_jobs: int | None = None, n_samples: int | None = KL_SAMPLES
) -> tuple[float, dict[str, float]]:
    """GuacaMol's KL-divergence score of distinct valid samples against reference SMILES; and each KL.

    As GuacaMol's benchmark, it scores the first ``n_samples`` (10,000) samples; None: all.
    A ``ValueError`` when the samples are too few or too alike for a kernel density (one distinct value).
    """
    from scipy.stats import entropy, gaussian_kde

    n_jobs = n_jobs or os.cpu_count() or 1
    samples = samples[:n_samples] if n_samples else samples
    uniq = sorted({c for c in pmap(canonical_smiles, samples, n_jobs) if c is not None})
    ref = sorted({c for c in pmap(canonical_smiles, reference, n_jobs) if c is not None})
    d_s = np.array(pmap(_descriptors, uniq, n_jobs))
    d_r = np.array(pmap(_descriptors, ref, n_jobs))

    def continuous(p_vals: np.ndarray, q_vals: np.ndarray) -> float:
        if min(len(np.unique(p_vals)), len(np.unique(q_vals))) < 2:  # a density of one value has no kernel estimate
            raise ValueError(f"{len(uniq)} distinct valid sample(s) with a descriptor of one value: too few for a density")
        x = np.linspace(min(p_vals.min(), q_vals.min()), max(p_vals.max(), q_vals.max()), 1000)
        return float(entropy(gaussian_kde(p_vals)(x) + 1e-10, gaussian_kde(q_vals)(x) + 1e-10))

    def discrete(p_vals: np.ndarray, q_vals: np.ndarray) -> float:
        p, bins = np.histogram(p_vals, bins=10, density=True)
        q, _ = np.histogram(q_vals, bins=bins, density=True)
        return float(entropy(p + 1e-10, q + 1e-10))

    kls = {}
    for i, name in enumerate(GUACAMOL_DESCRIPTORS):
        kls[name] = (continuous if i < 4 else discrete)(d_r[:, i], d_s[:, i])
    kls["internal_similarity"] = continuous(_nn_similarity_ecfp4(ref), _nn_similarity_ecfp4(uniq))
    return float(np.mean([np.exp(-v) for v in kls.values()])), kls
