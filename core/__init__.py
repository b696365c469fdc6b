"""genforge.core: the host. What a plugin author imports lives here.

    from genforge.core import hookimpl, Generator, Evaluator, GeneratorConfig, Metric
"""

from importlib import metadata as _metadata

from . import store
from .config import GeneratorConfig, SampleConfig, Section, TrainConfig, load_spec
from .contracts import (
    SAMPLE_KINDS,
    Checkpoint,
    DataSource,
    Evaluation,
    Evaluator,
    Generator,
    Metric,
    PreparedData,
    Reference,
    Report,
    RunInfo,
    Samples,
)
from .errors import ConfigError, DataError, GenforgeError, RunNotFound, TrainingDiverged, TrainingFailed, UnknownNameError
from .hookspecs import hookimpl, hookspec
from .store import Run, RunStore
from .training import Trainer, TrainResult

try:
    __version__ = _metadata.version("genforge")
except _metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"

__all__ = [
    "SAMPLE_KINDS", "Checkpoint", "ConfigError", "DataError", "DataSource", "Evaluation", "Evaluator",
    "Generator", "GeneratorConfig", "GenforgeError", "Metric", "PreparedData", "Reference", "Report", "Run",
    "RunInfo", "RunNotFound", "RunStore", "SampleConfig", "Samples", "Section", "TrainConfig", "TrainResult",
    "Trainer", "TrainingDiverged", "TrainingFailed", "UnknownNameError", "hookimpl", "hookspec", "load_spec", "store",
]
