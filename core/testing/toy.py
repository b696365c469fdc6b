"""A toy plugin: a diagonal-Gaussian generator of real vectors, its own sample kind and an evaluator.

Small and fast, with no field library: core's tests use it, and it shows the whole
plugin contract in one page. Register it in a test with the ``genforge_pm`` fixture::

    def test_something(genforge_pm):
        pm = genforge_pm(ToyPlugin())
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from genforge.core import (
    Checkpoint,
    DataConfig,
    DataError,
    Evaluation,
    Evaluator,
    EvaluatorConfig,
    Generator,
    GeneratorConfig,
    Metric,
    PreparedData,
    Reference,
    Run,
    SampleKind,
    Samples,
    TrainConfig,
    Trainer,
    hookimpl,
    store,
)
from genforge.core.training import load_weights, save_weights


class Vectors(SampleKind):
    """Real vectors: a float32 (N, D) array in ``vectors.npy``."""

    name = "vectors"
    description = "a .npy file of a float (N, D) array"
    filename = "vectors.npy"

    def write(self, samples: np.ndarray, folder: Path) -> Path:
        path = Path(folder) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.asarray(samples, dtype=np.float32))
        return path

    def check(self, path: Path) -> None:
        super().check(path)
        if Path(path).is_dir() or Path(path).suffix != ".npy":
            raise DataError(f"{path} is not a .npy file; {self.name} are {self.description}")

    def load(self, path: Path) -> np.ndarray:
        arr = np.load(path, allow_pickle=False)
        if arr.ndim != 2:
            raise DataError(f"{path} holds a {arr.ndim}-D array; {self.name} are {self.description}")
        return arr

    def preview(self, path: Path, out: Path, n: int = 500) -> Path | None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        x = self.load(path)[:n]
        fig, ax = plt.subplots(figsize=(3, 3))
        ax.scatter(x[:, 0], x[:, 1] if x.shape[1] > 1 else np.zeros(len(x)), s=3)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
        plt.close(fig)
        return out


class ToyData(DataConfig):
    path: str | None = Field(None, description="a CSV file of numbers, one vector per row (default: synthetic data)")
    n: int = Field(2000, ge=10, description="synthetic vectors to draw")
    dim: int = Field(2, ge=1, description="dimension of the synthetic vectors")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="held out as reference")
    seed: int = Field(0, ge=0)


class ToyTrain(TrainConfig):
    max_steps: int | None = Field(200, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.05, gt=0)
    warmup_steps: int = Field(0, ge=0)
    ema: float | None = Field(None, gt=0, lt=1)
    checkpoint_every: int = Field(50, ge=1)


class ToyConfig(GeneratorConfig):
    data: ToyData = Field(default_factory=ToyData)
    train: ToyTrain = Field(default_factory=ToyTrain)


class DiagonalGaussian(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(dim))
        self.log_std = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood per vector (up to a constant); x: (batch, dim)."""
        z = (x - self.mean) / self.log_std.exp()
        return (0.5 * z**2 + self.log_std).sum(-1)


def read_vectors(path: Path) -> tuple[np.ndarray, Counter, int]:
    """Rows of numbers; a row that is not numbers of the first row's width is skipped and counted."""
    rows, rejected, read = [], Counter(), 0
    with open(path, newline="") as fh:
        for row in csv.reader(fh):
            read += 1
            try:
                values = [float(v) for v in row]
            except ValueError:
                rejected["not a number"] += 1
                continue
            if not values or (rows and len(values) != len(rows[0])):
                rejected["wrong number of columns"] += 1
                continue
            rows.append(values)
    return np.asarray(rows, dtype=np.float32), rejected, read


class GaussianGenerator(Generator):
    name: ClassVar[str] = "toy-gaussian"
    kind: ClassVar[str] = "vectors"
    Config: ClassVar[type[ToyConfig]] = ToyConfig
    description: ClassVar[str] = "a diagonal Gaussian fitted by maximum likelihood (a toy for tests and templates)"
    # the promotion gate: a closer mean decides; the spread may not get more than a quarter worse
    gate: ClassVar[dict] = {"metrics": ["moments.mean_abs_error"], "guards": {"moments.std_abs_error": 0.25}}
    demo_spec: ClassVar[dict] = {"train": {"max_steps": 100}}
    test_spec: ClassVar[dict] = {
        "data": {"n": 200},
        "train": {"max_steps": 30, "checkpoint_every": 10, "log_every": 5},
        "sample": {"n": 50},
    }

    def prepare(self, config: ToyConfig, run: Run) -> PreparedData:
        """Read (or draw) the vectors and hold out a test part, cached by content and settings (``prepared_once``)."""
        cfg = config.data
        rng = np.random.default_rng(cfg.seed)
        if cfg.path:
            path = Path(cfg.path).expanduser()
            if not path.is_file():
                raise DataError(f"data.path {cfg.path!r} is not a file")
            x, rejected, read = read_vectors(path)
            source = str(path)
        else:
            x = (rng.normal(size=(cfg.n, cfg.dim)) * 0.5 + np.arange(1, cfg.dim + 1)).astype(np.float32)
            rejected, read, source = Counter(), cfg.n, "synthetic"
        if len(x) < 10:
            raise DataError(f"{source}: {len(x)} usable rows of {read}; need at least 10")
        settings = cfg.model_dump(exclude={"path", "max_rejected"})  # the content, not where it came from
        key = hashlib.sha256(x.tobytes() + json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

        def write(folder: Path) -> dict:
            perm = rng.permutation(len(x))
            n_test = max(2, int(len(x) * cfg.test_fraction))
            np.save(folder / "test.npy", x[perm[:n_test]])
            np.save(folder / "train.npy", x[perm[n_test:]])
            stats = {
                "source": source,
                "train": {"read": read, "kept": len(x) - n_test, "held_out": n_test, "rejected": dict(rejected)},
                "dim": int(x.shape[1]),
            }
            (folder / "stats.json").write_text(json.dumps(stats))
            return stats

        out = run.cache_root / f"toy-{key}"
        stats, cache = store.prepared_once(out, write)
        stats = {**stats, "source": source, "cache": cache}  # the file this run read, whichever filled the cache
        return PreparedData(out, key, stats)

    def fit(self, data: PreparedData, config: ToyConfig, trainer: Trainer) -> Checkpoint:
        x = torch.from_numpy(np.load(data.path / "train.npy"))
        torch.manual_seed(config.train.seed)
        model = DiagonalGaussian(x.shape[1])
        bs, seed = config.train.batch_size, config.train.seed

        def loss_fn(model: nn.Module, step: int):
            idx = torch.from_numpy(np.random.default_rng([seed, step]).integers(0, len(x), bs))
            return model(x[trainer.shard(idx)]).mean(), {"vectors": len(idx)}

        result = trainer.fit(model, loss_fn, count="vectors")
        weights = trainer.run_dir / "toy.safetensors"
        if trainer.is_main:
            save_weights(model, weights, {"dim": int(x.shape[1])})
        return Checkpoint(weights, result.step, details={"dim": int(x.shape[1])})

    def sample(self, checkpoint: Checkpoint, config: ToyConfig, run: Run) -> Samples:
        state, _ = load_weights(checkpoint.path)
        gen = torch.Generator().manual_seed(config.sample.seed)
        z = torch.randn(config.sample.n, state["mean"].shape[0], generator=gen)
        x = (state["mean"] + z * state["log_std"].exp()).numpy()
        path = Vectors().write(x, run.samples_dir)
        return Samples(self.kind, path, len(x))

    def reference(self, data: PreparedData, config: ToyConfig) -> Reference:
        return Reference(self.kind, test=data.path / "test.npy", train=data.path / "train.npy", name=data.stats.get("source", ""))


class MomentsConfig(EvaluatorConfig):
    figure: bool = Field(True, description="draw samples over the reference")


class MomentsEvaluator(Evaluator):
    """How far the samples' mean and spread are from the reference's, beside the real-vs-real floor."""

    name: ClassVar[str] = "moments"
    kinds: ClassVar[tuple[str, ...]] = ("vectors",)
    Config: ClassVar[type[MomentsConfig]] = MomentsConfig

    def evaluate(self, samples: Samples, reference: Reference, out_dir: Path, config: MomentsConfig) -> Evaluation:
        kind = Vectors()
        x, ref = kind.load(samples.path), kind.load(reference.test)
        train = kind.load(reference.train) if reference.train else None

        def errors(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
            return float(np.abs(a.mean(0) - b.mean(0)).mean()), float(np.abs(a.std(0) - b.std(0)).mean())

        mean_err, std_err = errors(x, ref)
        floor = errors(train, ref) if train is not None else (None, None)
        metrics = [
            Metric("n_samples", float(len(x)), None, description="samples scored"),
            Metric("mean_abs_error", mean_err, False, floor[0], "mean over dimensions of |mean(samples) - mean(reference)|"),
            Metric("std_abs_error", std_err, False, floor[1], "mean over dimensions of |std(samples) - std(reference)|"),
        ]
        figures = {}
        if config.figure:
            figures["samples"] = kind.preview(samples.path, out_dir / "samples.png")
        return Evaluation(self.name, metrics, figures)


class ToyPlugin:
    """The toy as a plugin object: ``pm.register(ToyPlugin(), name="toy")``."""

    @hookimpl
    def genforge_sample_kinds(self):
        return [Vectors()]

    @hookimpl
    def genforge_generators(self):
        return [GaussianGenerator]

    @hookimpl
    def genforge_evaluators(self):
        return [MomentsEvaluator()]


# For an entry point (``toy = genforge.core.testing.toy:plugin``): the toy installed like any plugin.
plugin = ToyPlugin()
