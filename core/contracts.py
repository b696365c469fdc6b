"""The contracts between the host and its plugins: generators, evaluators, data sources.

A generator is stateless between its three steps; every step reads and writes the run
store, so each step can run in another process or on another machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from .config import Section

if TYPE_CHECKING:
    from .config import GeneratorConfig
    from .store import Run
    from .training import Trainer


@dataclass
class Samples:
    """Samples on disk: ``path`` in the kind's format, ``count`` samples drawn.

    ``meta`` is the generator's own free-form detail (sampler settings, ...): the host
    records it under ``details`` in ``samples.json`` and prints it as it is. The host
    itself times the sample step (``seconds``, ``per_s``).
    """

    kind: str
    path: Path
    count: int
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreparedData:
    """What a generator's prepare step leaves for fit and sample: a folder and a summary.

    ``fingerprint`` identifies the content (source bytes + preparation settings), so the
    same data is prepared once and reused by every run that asks for it.
    ``stats`` holds what a person should see. The host reads these keys (``DATA_KEYS``):
    ``source`` (where the data came from), ``cache`` ("hit", "miss", ...), and ``train`` /
    ``test``, each ``{"read": n, "kept": n, "held_out": n, "rejected": {reason: n}}`` (one
    count per row dropped), and ``notes``: sentences the run's report and summary show (a part
    of the data that was not used, and why). Any other key is the generator's own detail,
    recorded under ``details`` in ``data.json`` and printed as it is.
    """

    path: Path
    fingerprint: str
    stats: dict[str, Any] = field(default_factory=dict)


DATA_KEYS = ("source", "cache", "train", "test", "notes")


@dataclass
class Checkpoint:
    """The trained weights a sampler needs, and the step they were taken at.

    The host records the training itself (steps, parameters, seconds, how it stopped,
    resumed from, throughput) from the engine in ``training.json``; ``details`` is the
    generator's own free-form addition there, and ``notes`` are sentences every summary
    and report shows (e.g. "started from the shipped checkpoint, not from scratch").
    """

    path: Path
    step: int
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


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
    """What one evaluator says of one set of samples: metrics and figures (PNG files).

    ``error`` is set by the host when the evaluator raised: its metrics are then empty,
    and every other evaluator's results are kept. ``notes`` are sentences for the report
    and the summary (e.g. a part of the evaluation that could not be computed, and why).
    ``headline`` is markdown the report shows first, above everything else: the one page a
    reader files (a dated summary of what the numbers mean for them).
    """

    evaluator: str
    metrics: list[Metric] = field(default_factory=list)
    figures: dict[str, Path] = field(default_factory=dict)
    plugin: str = ""
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    headline: str = ""


@dataclass
class Report:
    """Everything evaluated for a run, merged over evaluators."""

    run_id: str
    evaluations: list[Evaluation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Metric names -> values. No evaluator overwrites another's.

        Every metric is there as ``evaluator.metric``; its plain name is there too when it
        is unambiguous: one evaluator gives it, or all that give it agree on the value.
        """
        qualified: dict[str, float] = {}
        by_name: dict[str, list[float]] = {}
        for ev in self.evaluations:
            for m in ev.metrics:
                qualified[f"{ev.evaluator}.{m.name}"] = m.value
                by_name.setdefault(m.name, []).append(m.value)
        plain = {name: values[0] for name, values in by_name.items() if all(_same(v, values[0]) for v in values)}
        return {**plain, **qualified}

    def figures(self) -> dict[str, Path]:
        return {f"{ev.evaluator}/{k}": p for ev in self.evaluations for k, p in ev.figures.items()}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@dataclass(frozen=True)
class RunInfo:
    """What a lifecycle listener is told about a run."""

    run_id: str
    generator: str
    path: Path


class DataSource:
    """A named source of reference and training data, of one sample kind.

    ``files()`` returns each split's local file (a source that must fetch data does it
    there); ``splits`` names the splits, ``description`` says where the data comes from and
    under which licence, and ``reference_split`` / ``train_split`` make it a kind's default
    reference for ``genforge evaluate``.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    description: ClassVar[str] = ""
    # The split `genforge evaluate KIND FILE` compares with when no --reference is given
    # (None: this source is no kind's default reference).
    reference_split: ClassVar[str | None] = None
    # The split it then also gives the evaluators as training data, when no --train is given
    # (None: none; evaluators use training data for novelty and real-vs-real floors).
    train_split: ClassVar[str | None] = None

    def files(self) -> dict[str, Path]:
        """Split name -> local file. Sources that must fetch data do it here."""
        raise NotImplementedError


class Generator:
    """One model. Subclasses set ``name``, ``kind`` and ``Config`` and implement the steps."""

    name: ClassVar[str]
    kind: ClassVar[str]
    Config: ClassVar[type[GeneratorConfig]]
    description: ClassVar[str] = ""
    # The spec `genforge demo NAME` runs: overrides of the config's defaults (empty: the defaults).
    demo_spec: ClassVar[dict[str, Any]] = {}
    # `genforge demo` without a name runs the one generator that sets this.
    default_demo: ClassVar[bool] = False
    # Libraries whose versions decide this generator's results (recorded in versions.json).
    libraries: ClassVar[tuple[str, ...]] = ()
    # Training runs on the accelerator: the pipeline's train step then takes a GPU slot.
    # False for generators that fit in closed form or on the CPU (a closed-form fit, a bootstrap).
    uses_gpu: ClassVar[bool] = True
    # Tiny settings (seconds on a laptop CPU) for tests: genforge.core.testing.check_generator uses them.
    test_spec: ClassVar[dict[str, Any]] = {}
    # The promotion gate (`promote` section, `genforge gate`; docs/models.md): "metrics" that decide (evaluator.metric,
    # each better by "margin", relative), "guards" (metric -> the relative amount it may get worse by), "thresholds"
    # (metric -> the value a new version must reach) and "directions" (metric -> higher is better, for a metric whose
    # evaluator gives none, such as a training detail read as training.<key>). Empty: a run's promote section names them.
    gate: ClassVar[dict[str, Any]] = {}

    def prepare(self, config: GeneratorConfig, run: Run) -> PreparedData:
        """Read, validate and encode the training data; reuse a cached copy when the inputs match."""
        raise NotImplementedError

    def fit(self, data: PreparedData, config: GeneratorConfig, trainer: Trainer) -> Checkpoint:
        """Train through the core engine, which checkpoints and resumes."""
        raise NotImplementedError

    def sample(self, checkpoint: Checkpoint, config: GeneratorConfig, run: Run) -> Samples:
        """Draw ``config.sample.n`` samples and write them to the run store."""
        raise NotImplementedError

    def reference(self, data: PreparedData, config: GeneratorConfig) -> Reference:
        """The real data evaluators compare samples with."""
        raise NotImplementedError

    def condition_on(self, data: PreparedData, checkpoint: Checkpoint, config: GeneratorConfig) -> None:
        """In a run that samples from a registered model version (no training): the data this run prepared, after its
        prepare step, for a generator whose ``sample`` conditions on data (the latest prices) to update what it reads beside
        the checkpoint. Never the weights. Default: nothing (a model that samples from its weights alone)."""
        return None

    def model_files(self, checkpoint: Checkpoint) -> list[Path]:
        """The files of a trained model that ``sample`` reads, in the run folder: a model version keeps these.

        By default the checkpoint's file and, where ``save_weights`` wrote it, its JSON beside it
        (``model.safetensors`` and ``model.json``). A generator whose ``sample`` reads more (a
        vocabulary, a scaler, the history it conditions on) adds those files here.
        """
        path = Path(checkpoint.path)
        meta = path.with_suffix(".json")
        return [path] + ([meta] if meta != path and meta.is_file() else [])


@dataclass
class Reference:
    """Real data for evaluators: ``test`` to compare distributions with, ``train`` for novelty."""

    kind: str
    test: Path
    train: Path | None = None
    name: str = ""


class EvaluatorConfig(Section):
    """An evaluator's settings, under ``evaluate.<evaluator name>`` in a run spec. Subclass it to add fields."""

    enabled: bool = Field(True, description="run this evaluator")
    optional: bool = Field(
        False,
        description="a failure of this evaluator (it raises, or overruns evaluate.timeout_minutes) is noted and the run still "
        "finishes; otherwise the run ends failed, after the other evaluators' metrics and the report are written",
    )


class Evaluator:
    """Scores samples of the kinds it accepts against reference data.

    ``Config`` holds its settings (``evaluate.<name>.<field>`` in a run spec, validated,
    with defaults). ``evaluate`` gets an instance of it and its own folder for figures;
    a metric's name needs to be unique only within the evaluator.
    """

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]
    Config: ClassVar[type[EvaluatorConfig]] = EvaluatorConfig
    description: ClassVar[str] = ""

    def evaluate(self, samples: Samples, reference: Reference, out_dir: Path, config: EvaluatorConfig) -> Evaluation:
        """Score ``samples`` against ``reference``; write figures (PNG) under ``out_dir`` only."""
        raise NotImplementedError
