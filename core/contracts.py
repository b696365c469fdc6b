"""The contracts between the host and its plugins: generators, evaluators, data sources.

A generator is stateless between its three steps; every step reads and writes the run
store, so each step can run in another process or on another machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .config import GeneratorConfig
    from .store import Run
    from .training import Trainer

# Sample kinds: each has one on-disk format.
#   molecules  -> samples.smi   (one SMILES per line; an empty line for a sample that did not decode)
#   images     -> samples.npz   (uint8 arrays) + PNG previews
#   music      -> *.mid
#   scenarios  -> samples.parquet
SAMPLE_KINDS: dict[str, str] = {
    "molecules": "samples.smi",
    "images": "samples.npz",
    "music": "samples",
    "scenarios": "samples.parquet",
}


@dataclass
class Samples:
    """Samples on disk: ``path`` in the kind's format, ``count`` samples drawn."""

    kind: str
    path: Path
    count: int
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreparedData:
    """What a generator's prepare step leaves for fit and sample: a folder and a summary.

    ``fingerprint`` identifies the content (source bytes + preparation settings), so the
    same data is prepared once and reused by every run that asks for it.
    ``stats`` holds the counts a person should see: rows read, kept, rejected by reason.
    """

    path: Path
    fingerprint: str
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Checkpoint:
    """The trained weights a sampler needs, and the step they were taken at."""

    path: Path
    step: int


@dataclass(frozen=True)
class Metric:
    """A named number. ``floor`` is the same metric measured on real data, where it has one."""

    name: str
    value: float
    higher_is_better: bool | None = None
    floor: float | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        v = None if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)) else self.value
        return {
            "name": self.name,
            "value": v,
            "higher_is_better": self.higher_is_better,
            "floor": self.floor,
            "description": self.description,
        }


@dataclass
class Evaluation:
    """What one evaluator says of one set of samples: metrics and figures (PNG files)."""

    evaluator: str
    metrics: list[Metric] = field(default_factory=list)
    figures: dict[str, Path] = field(default_factory=dict)
    plugin: str = ""


@dataclass
class Report:
    """Everything evaluated for a run, merged over evaluators."""

    run_id: str
    evaluations: list[Evaluation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Plain metric names -> values (the first evaluator to name a metric wins)."""
        out: dict[str, float] = {}
        for ev in self.evaluations:
            for m in ev.metrics:
                out.setdefault(m.name, m.value)
        return out

    def figures(self) -> dict[str, Path]:
        return {f"{ev.evaluator}/{k}": p for ev in self.evaluations for k, p in ev.figures.items()}


@dataclass(frozen=True)
class RunInfo:
    """What a lifecycle listener is told about a run."""

    run_id: str
    generator: str
    path: Path


class DataSource:
    """A named source of reference and training data ("moses", "sp500", ...).

    ``load(split)`` returns the raw records of a split in the source's kind; ``describe``
    says where the data comes from and under which licence.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    description: ClassVar[str] = ""

    def files(self) -> dict[str, Path]:
        """Split name -> local file. Sources that must fetch data do it here."""
        raise NotImplementedError


class Generator:
    """One model. Subclasses set ``name``, ``kind`` and ``Config`` and implement the steps."""

    name: ClassVar[str]
    kind: ClassVar[str]
    Config: ClassVar[type["GeneratorConfig"]]
    description: ClassVar[str] = ""
    # The spec `genforge demo` runs: overrides of the config's defaults (empty: the defaults).
    demo_spec: ClassVar[dict[str, Any]] = {}

    def prepare(self, config: "GeneratorConfig", run: "Run") -> PreparedData:
        """Read, validate and encode the training data; reuse a cached copy when the inputs match."""
        raise NotImplementedError

    def fit(self, data: PreparedData, config: "GeneratorConfig", trainer: "Trainer") -> Checkpoint:
        """Train through the core engine, which checkpoints and resumes."""
        raise NotImplementedError

    def sample(self, checkpoint: Checkpoint, config: "GeneratorConfig", run: "Run") -> Samples:
        """Draw ``config.sample.n`` samples and write them to the run store."""
        raise NotImplementedError

    def reference(self, data: PreparedData, config: "GeneratorConfig") -> "Reference":
        """The real data evaluators compare samples with."""
        raise NotImplementedError


@dataclass
class Reference:
    """Real data for evaluators: ``test`` to compare distributions with, ``train`` for novelty."""

    kind: str
    test: Path
    train: Path | None = None
    name: str = ""


class Evaluator:
    """Scores samples of the kinds it accepts against reference data."""

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]

    def evaluate(self, samples: Samples, reference: Reference, out_dir: Path, config: Any) -> Evaluation:
        raise NotImplementedError
