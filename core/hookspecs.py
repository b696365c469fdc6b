"""Hook specifications: the plugin API of genforge.

A plugin is a module or object with functions named like these and marked with
``genforge.core.hookimpl``. Registration hooks return what the plugin brings;
lifecycle hooks are listeners, called for every run (the plugin registered last first,
as pluggy calls them), and their return values are ignored. Every hook is documented in ``docs/plugin_hooks.md``
(a test checks it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .contracts import DataSource, Evaluator, Generator, Report, RunInfo, Samples
    from .kinds import SampleKind

PROJECT = "genforge"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- registration -----------------------------------------------------------------


@hookspec
def genforge_generators() -> list[type[Generator]]:
    """Return the generator classes this plugin brings."""


@hookspec
def genforge_evaluators() -> list[Evaluator]:
    """Return the evaluators this plugin brings; each is run on every sample kind it accepts."""


@hookspec
def genforge_datasets() -> list[DataSource]:
    """Return the named data sources this plugin brings, each of a sample kind."""


@hookspec
def genforge_sample_kinds() -> list[SampleKind]:
    """Return sample kinds this plugin adds to the built-in ones (molecules, images, music, scenarios)."""


@hookspec
def genforge_commands(app: Any) -> None:
    """Add commands to the ``genforge`` command line: ``app`` is its typer.Typer; decorate functions with ``app.command()``."""


# -- lifecycle (listeners) ----------------------------------------------------------


@hookspec
def genforge_run_started(run: RunInfo, spec: dict[str, Any]) -> None:
    """Called when a run starts or resumes, with its resolved spec."""


@hookspec
def genforge_data_prepared(run: RunInfo, stats: dict[str, Any]) -> None:
    """Called after the prepare step, with its counts (rows read, kept, rejected by reason)."""


@hookspec
def genforge_train_progress(run: RunInfo, step: int, total: int | None, metrics: dict[str, float]) -> None:
    """Called every few training steps with the step, the step budget (None for a time budget) and metrics."""


@hookspec
def genforge_step_progress(run: RunInfo, stage: str, done: int, total: int | None) -> None:
    """Called while a step other than training runs (``stage`` "sample": samples written so far of ``total``)."""


@hookspec
def genforge_checkpoint_saved(run: RunInfo, step: int, path: str) -> None:
    """Called after a checkpoint has been written completely (it is safe to copy ``path``)."""


@hookspec
def genforge_samples_ready(run: RunInfo, samples: Samples) -> None:
    """Called when samples have been written to the run store."""


@hookspec
def genforge_run_finished(run: RunInfo, report: Report) -> None:
    """Called when a run has been evaluated, with its merged report."""


@hookspec
def genforge_run_failed(run: RunInfo, error: BaseException) -> None:
    """Called when a step of a run raises; the run's checkpoints are kept for ``genforge resume``."""
