"""genforge.core: the host. What a plugin author imports lives here.

    from genforge.core import hookimpl, Generator, Evaluator, EvaluatorConfig, GeneratorConfig, Metric

Shared modelling blocks (a transformer denoiser, masked discrete diffusion) are in
``genforge.core.blocks``; the pytest plugin with fixtures and conformance checks is
``genforge.core.testing``.
"""

from importlib import metadata as _metadata

from . import store
from .config import DataConfig, GeneratorConfig, OptimizerConfig, PhaseConfig, PromoteConfig, SampleConfig, Section, TrainConfig, load_spec
from .contracts import (
    Checkpoint,
    DataSource,
    Evaluation,
    Evaluator,
    EvaluatorConfig,
    Generator,
    Metric,
    PreparedData,
    Reference,
    Report,
    RunInfo,
    Samples,
)
from .errors import (
    ConfigError,
    DataError,
    EvaluatorFailed,
    GenforgeError,
    LeaseLost,
    RunBusy,
    RunGone,
    RunNotFound,
    StopRun,
    TrainingDiverged,
    TrainingFailed,
    UnknownNameError,
)
from .hookspecs import hookimpl, hookspec
from .kinds import SampleKind
from .progress import report_progress
from .store import Run, RunStore
from .training import Trainer, TrainResult

try:
    __version__ = _metadata.version("genforge")
except _metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"

__all__ = [
    "Checkpoint",
    "ConfigError",
    "DataConfig",
    "DataError",
    "DataSource",
    "Evaluation",
    "EvaluatorFailed",
    "Evaluator",
    "EvaluatorConfig",
    "Generator",
    "GeneratorConfig",
    "PromoteConfig",
    "GenforgeError",
    "LeaseLost",
    "Metric",
    "OptimizerConfig",
    "PhaseConfig",
    "PreparedData",
    "Reference",
    "Report",
    "Run",
    "RunBusy",
    "RunGone",
    "RunInfo",
    "RunNotFound",
    "RunStore",
    "SampleConfig",
    "SampleKind",
    "Samples",
    "Section",
    "StopRun",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "TrainingFailed",
    "UnknownNameError",
    "hookimpl",
    "hookspec",
    "load_spec",
    "report_progress",
    "store",
]
