"""The pipeline flow: prepare -> train -> sample -> evaluate, generic over registered generators.

Tasks are small and pass run-folder paths, not tensors: every step reads and writes the
run store. Training is retried on failure and resumes from its newest checkpoint.

Deployed runs: the genforge run id is derived from the Prefect flow run, so when a crashed
flow run is rescheduled (by the automation ``genforge deploy`` creates) and a worker picks
it up again, the flow finds its run folder and resumes training from the last checkpoint.
Training holds a slot of a Prefect global concurrency limit (``$GENFORGE_GPU_LIMIT``;
``gpu`` on a machine with CUDA) for as long as it runs, so two trainings never share a GPU;
a generator with ``uses_gpu = False`` (a closed-form fit) takes no slot.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run as current_flow_run

import genforge.flows  # noqa: F401  (Prefect defaults for a laptop)
from genforge.core import GenforgeError, Run, RunStore, TrainingFailed
from genforge.core import store as store_module
from genforge.core.config import parse_override
from genforge.core.plugin_manager import get_plugin_manager, registry
from genforge.core.runner import Steps, create_run, give_redacted

from .bridge import PrefectBridge

MAX_RESTARTS = int(os.environ.get("GENFORGE_MAX_RESTARTS", "3"))


def gpu_limit_name() -> str | None:
    """The concurrency limit training takes a slot from: ``$GENFORGE_GPU_LIMIT``, else ``gpu`` where CUDA is visible."""
    name = os.environ.get("GENFORGE_GPU_LIMIT")
    if name is not None:
        return name or None  # set but empty: no limit
    import torch

    return "gpu" if torch.cuda.is_available() else None


def gpu_slot(slots: int) -> contextlib.AbstractContextManager:
    """Hold ``slots`` slots of the GPU limit while training (leased: a crashed holder frees them within a minute)."""
    name = gpu_limit_name()
    if not name:
        return contextlib.nullcontext()
    from prefect.concurrency.sync import concurrency

    get_run_logger().info("waiting for %d slot(s) of concurrency limit %r", slots, name)
    return concurrency(name, occupy=slots, lease_duration=60, strict=False)


def load_storage_credentials() -> None:
    """Storage options for a URL run store from the Prefect Secret block ``$GENFORGE_STORAGE_SECRET`` (a JSON object)."""
    name = os.environ.get("GENFORGE_STORAGE_SECRET")
    if not name:
        return
    from prefect.blocks.system import Secret

    options = Secret.load(name).get()
    if not isinstance(options, dict):
        raise GenforgeError(f"Secret block {name!r} must hold a JSON object of storage options (e.g. key, secret, endpoint_url)")
    store_module.set_storage_options(options)


def check_store_allowed(store: str | None) -> None:
    """A deployment's ``store`` parameter may name only this worker's own store or one it allows.

    Whoever can start a deployment picks its parameters: without this, any folder or bucket the
    worker can reach could be read and written as a run store. ``GENFORGE_ALLOWED_STORES`` (comma-
    separated roots) lists the others a worker accepts.
    """
    if store is None:
        return
    allowed = {store_module.store_root().rstrip("/")} | {
        s.strip().rstrip("/") for s in os.environ.get("GENFORGE_ALLOWED_STORES", "").split(",") if s.strip()
    }
    if str(store).rstrip("/") not in allowed:
        raise GenforgeError(
            f"store {store_module.redact_url(str(store))!r} is not this worker's run store ($GENFORGE_HOME) nor in GENFORGE_ALLOWED_STORES; "
            "leave the store parameter out, or allow it on the worker"
        )


def run_id_for_flow_run(generator: str) -> str | None:
    """A run id fixed by the current flow run (None outside a flow run): the same on every restart."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    fr = ctx.flow_run
    return f"{fr.created:%Y%m%d-%H%M%S}-{generator}-{fr.id.hex[:8]}"


def worth_retrying(task, task_run, state) -> bool:
    """Retry what a retry can mend (a lost worker, a flaky file system); not a user's error (a changed data file,
    a wrong spec, a diverged loss, a busy run), which would fail the same way again."""
    exc = getattr(state, "data", None)
    return not isinstance(exc, GenforgeError) or isinstance(exc, TrainingFailed)


@task(name="prepare-data", retries=1, retry_delay_seconds=2, retry_condition_fn=worth_retrying)
def prepare_data(run_dir: str) -> str:
    """Validate and encode the training data; a cached copy is reused when source and settings match."""
    data = Steps(run_dir).prepare()
    return str(data.path)


@task(name="train", retries=2, retry_delay_seconds=5, retry_condition_fn=worth_retrying)
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


@task(name="gate")
def gate(run_dir: str) -> dict[str, Any]:
    """Register the finished run as the model's next version and gate it; publish the verdict (artifacts, an event)."""
    from genforge.core.gate import store_of

    steps = Steps(run_dir)
    verdict = steps.gate()
    publish_verdict(verdict, store_of(steps.run))
    return verdict.to_dict()


def model_resource(model: str) -> str:
    """The Prefect resource id of a registered model: what a deployment trigger matches (``genforge.model.<name>``)."""
    return f"genforge.model.{model}"


def publish_verdict(verdict: Any, store: str | None = None) -> None:
    """The event ``genforge.model.<outcome>``, then the comparison and the model's history as markdown artifacts.

    A first version takes the alias: that is a promotion too (``genforge.model.promoted``), so a
    deployment triggered by promotions samples from a model's first champion as well. The event
    goes first: an artifact that cannot be drawn costs a warning, never the promotion's trigger.
    """
    from prefect.artifacts import create_markdown_artifact
    from prefect.events import emit_event

    from genforge.core.gate import FIRST, history_markdown, verdict_markdown
    from genforge.core.store.registry import Registry

    from .bridge import artifact_key

    registry = Registry(store)
    logger = get_run_logger()
    logger.info("gate: %s", verdict.line())
    outcome = "promoted" if verdict.outcome == FIRST else verdict.outcome
    emit_event(
        event=f"genforge.model.{outcome}",
        resource={"prefect.resource.id": model_resource(verdict.model), "prefect.resource.name": verdict.model},
        payload={
            "model": verdict.model,
            "alias": verdict.alias,
            "version": verdict.challenger,
            "champion": verdict.champion,
            "outcome": verdict.outcome,
            "reasons": verdict.reasons,
            "metrics": {c.metric: {"champion": c.champion, "challenger": c.challenger, "passed": c.passed} for c in verdict.comparisons},
        },
    )
    try:
        create_markdown_artifact(
            verdict_markdown(registry, verdict),
            key=artifact_key("model", verdict.model, "gate"),
            description=f"{verdict.model}:{verdict.challenger} against @{verdict.alias}: {verdict.outcome}",
        )
        create_markdown_artifact(
            history_markdown(registry, verdict.model, alias=verdict.alias),
            key=artifact_key("model", verdict.model, "history"),
            description=f"the versions of model {verdict.model}",
        )
    except Exception as exc:  # a picture that cannot be read, the API busy: the verdict and its event stand
        logger.warning("gate: the comparison of %s:%s could not be published (%s)", verdict.model, verdict.challenger, exc)


def _run_name() -> str:
    """The flow run's name: ``name`` where given (a sweep names each child by its grid point), else the generator."""
    params = current_flow_run.parameters
    return params.get("name") or params["generator"]


@flow(name="genforge-pipeline", flow_run_name=_run_name)
def pipeline(
    generator: str,
    spec: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    run: str | None = None,
    store: str | None = None,
    name: str | None = None,
) -> str:
    """Prepare, train, sample and evaluate one run; returns the run folder.

    generator: a registered generator's name.
    spec: sections data/model/train/sample/evaluate, validated by the generator's config.
    overrides: `--set`-style changes on top of ``spec``, e.g. ["train.max_steps=50"]: a quick try of a
        deployment keeps its spec and changes only these (``--param spec=`` would replace the whole spec).
        With ``run``: only a URL the run recorded redacted, given again (``data.path=https://...?token``).
    run: an existing run (id or folder) to resume instead of starting a new one.
    store: the run store's root (default $GENFORGE_HOME).
    name: the flow run's name (default: the generator's).
    """
    logger = get_run_logger()
    pm = get_plugin_manager()
    for failure in registry(pm).failures:  # said on the worker's stderr too; here for whoever watches the UI
        logger.warning(failure.line())
    for plugin, why in getattr(pm, "skipped", {}).items():
        logger.info("plugin %r not loaded: %s", plugin, why)
    load_storage_credentials()
    check_store_allowed(store)
    runs = RunStore(store)
    attempt = current_flow_run.run_count or 1
    if attempt > MAX_RESTARTS + 1:
        raise GenforgeError(f"flow run restarted {attempt - 1} times (GENFORGE_MAX_RESTARTS={MAX_RESTARTS}); not restarting again")
    run_id = None if run else run_id_for_flow_run(generator)
    # URLs with credentials are recorded redacted; this process remembers the ones its parameters give (a restart needs them).
    store_module.redact_secrets([spec or {}, [parse_override(o)[1] for o in overrides or []]])
    if run:
        the_run = runs.get(run)
        give_redacted(the_run, overrides or [])
    elif run_id and runs.exists(run_id):  # this flow run crashed before and was rescheduled
        the_run = runs.get(run_id)
        logger.warning("attempt %d of this flow run: resuming run %s", attempt, run_id)
    else:
        the_run = create_run(generator, overrides=overrides or (), spec=spec or {}, root=store, pm=pm, run_id=run_id)
    run_dir = str(the_run.path)
    logger.info("run folder: %s%s", run_dir, f" (shared store {store_module.redact_url(the_run.remote)})" if the_run.remote else "")
    bridge = PrefectBridge()
    pm.register(bridge, name="prefect-bridge")
    steps = Steps(run_dir, pm)
    try:
        with the_run.lock("pipeline flow run"):  # another process on this run: RunBusy before anything is touched
            try:
                steps.started()
                prepare_data(run_dir)
                if not steps.trains_nothing:  # a run sampled from a model version takes no GPU slot for training
                    with gpu_slot(steps.config.train.devices) if steps.generator.uses_gpu else contextlib.nullcontext():
                        train(run_dir)
                sample(run_dir)
                evaluate(run_dir)
            except BaseException as exc:
                steps.failed(exc)
                raise
            if steps.config.promote.model and not steps.trains_nothing:
                gate(run_dir)  # after the run finished: a gate that cannot decide leaves a finished run
    finally:
        pm.unregister(bridge)
    return run_dir


@flow(name="genforge-sample", flow_run_name=lambda: current_flow_run.parameters["model"])
def sample_model(model: str, overrides: list[str] | None = None, store: str | None = None) -> str:
    """Sample from a registered model without training: a new run with the version's weights, then sample and evaluate.

    model: ``NAME`` (its champion), ``NAME@alias`` or ``NAME:version``.
    overrides: `--set`-style changes to the version's sample, evaluate or data sections, e.g. ["sample.n=10000"].
    store: the run store's root (default $GENFORGE_HOME).
    """
    from genforge.core.models import create_sample_run

    load_storage_credentials()
    check_store_allowed(store)
    pm = get_plugin_manager()
    run_id = run_id_for_flow_run(model.replace("@", "-").replace(":", "-"))
    runs = RunStore(store)
    if run_id and runs.exists(run_id):  # this flow run crashed before and was rescheduled: its run goes on
        from genforge.core.models import resume_sample_run
        from genforge.core.store.registry import Registry

        the_run = resume_sample_run(runs.get(run_id), Registry(store))
    else:
        the_run = create_sample_run(model, overrides or (), pm=pm, root=store, run_id=run_id)
    get_run_logger().info("run folder: %s (sampling from %s)", the_run.path, model)
    return pipeline(generator=the_run.generator, run=str(the_run.path), store=store)


def run_pipeline(run: Run) -> Run:
    """Run an existing (created or interrupted) run's steps as a Prefect flow."""
    pipeline(generator=run.generator, run=str(run.path))
    return Run(run.path)
