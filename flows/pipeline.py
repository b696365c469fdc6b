"""The pipeline flow: prepare -> train -> sample -> evaluate, generic over registered generators.

Tasks are small and pass run-folder paths, not tensors: every step reads and writes the
run store. Training is retried on failure and resumes from its newest checkpoint.
"""

from __future__ import annotations

from typing import Any

import genforge.flows  # noqa: F401  (Prefect defaults for a laptop)
from prefect import flow, get_run_logger, task

from genforge.core import Run, RunStore
from genforge.core.plugins import get_plugin_manager
from genforge.core.runner import Steps, create_run

from .bridge import PrefectBridge


@task(name="prepare-data", retries=1, retry_delay_seconds=2)
def prepare_data(run_dir: str) -> str:
    """Validate and encode the training data; a cached copy is reused when source and settings match."""
    data = Steps(run_dir).prepare()
    return str(data.path)


@task(name="train", retries=2, retry_delay_seconds=5)
def train(run_dir: str) -> str:
    """Train to the budget; a retry (or `genforge resume`) continues from the newest checkpoint."""
    return str(Steps(run_dir).train().path)


@task(name="sample")
def sample(run_dir: str) -> str:
    return str(Steps(run_dir).sample().path)


@task(name="evaluate")
def evaluate(run_dir: str) -> dict[str, Any]:
    """Run every evaluator registered for the samples' kind; returns the merged metrics."""
    return Steps(run_dir).evaluate().metrics()


@flow(name="genforge-pipeline", flow_run_name="{generator}")
def pipeline(
    generator: str = "molecule-diffusion",
    spec: dict[str, Any] | None = None,
    run: str | None = None,
    store: str | None = None,
) -> str:
    """Prepare, train, sample and evaluate one run; returns the run folder.

    generator: a registered generator's name.
    spec: sections data/model/train/sample/evaluate, validated by the generator's config.
    run: an existing run (id or folder) to resume instead of starting a new one.
    store: the run store's root (default $GENFORGE_HOME).
    """
    logger = get_run_logger()
    pm = get_plugin_manager()
    the_run = RunStore(store).get(run) if run else create_run(generator, spec=spec or {}, root=store, pm=pm)
    run_dir = str(the_run.path)
    logger.info("run folder: %s", run_dir)
    bridge = PrefectBridge()
    pm.register(bridge, name="prefect-bridge")
    steps = Steps(run_dir, pm)
    try:
        steps.started()
        prepare_data(run_dir)
        train(run_dir)
        sample(run_dir)
        evaluate(run_dir)
    except BaseException as exc:
        steps.failed(exc)
        raise
    finally:
        pm.unregister(bridge)
    return run_dir


def run_pipeline(run: Run) -> Run:
    """Run an existing (created or interrupted) run's steps as a Prefect flow."""
    pipeline(generator=run.generator, run=str(run.path))
    return Run(run.path)
