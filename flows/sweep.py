"""The sweep flow: fan a grid of specs out as separate deployment runs, then one comparison table.

Each grid point becomes a run of a pipeline deployment (``run_deployment``), so the runs are
queued on that deployment's work pool and as many workers as are polling it train in
parallel (each training still takes its GPU slot). The sweep waits for them and reads each
child's metrics from its ``*-metrics`` table artifact through the Prefect API, so it needs
no shared file system.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType
from prefect.deployments import run_deployment

import genforge.flows  # noqa: F401
from genforge.core import ConfigError, Evaluation, GenforgeError, Metric, Report
from genforge.core.config import apply_override, parse_override
from genforge.core.errors import shown
from genforge.core.store import redact_secrets, redact_url

from .bridge import artifact_key


def grid_points(grid: dict[str, list[Any]], overrides: list[str] | None = None) -> list[dict[str, Any]]:
    """{"train.seed": [0, 1], "train.lr": [1e-3]} -> [{"train.seed": 0, "train.lr": 1e-3}, {"train.seed": 1, ...}].

    ``overrides`` (the sweep's `--set`-style changes for every run) may not name a field of the grid.
    """
    both = sorted({".".join(parse_override(o)[0]) for o in overrides or []} & set(grid))
    if both:
        raise ConfigError(f"{', '.join(both)} is in both grid and overrides; give each field in one of them")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid[{shown(key)}] must be a non-empty list of values, got {shown(values)}")
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"grid key {shown(key)} must be a dotted spec field such as train.seed")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def spec_for(base: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    """The target's spec at one grid point. A sweep's runs compare settings: none is registered or gated into the model
    the target deployment promotes to (its ``promote`` section is dropped), unless the grid itself sets ``promote.*``."""
    spec = copy.deepcopy(base)
    spec.pop("promote", None)
    for key, value in point.items():
        apply_override(spec, key.split("."), value)
    return spec


def _metrics_of(client, flow_run_id: UUID) -> dict[str, Any]:
    arts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), type=ArtifactFilterType(any_=["table"]))
    )
    for art in arts:
        if art.key and art.key.endswith("-metrics"):
            rows = art.data if isinstance(art.data, list) else json.loads(art.data)
            # the same merge as a run's metrics.json: evaluator.metric always, plain names where unambiguous
            evaluators = dict.fromkeys(r["evaluator"] for r in rows)
            merged = Report(
                "", [Evaluation(e, [Metric(r["metric"], r["value"]) for r in rows if r["evaluator"] == e]) for e in evaluators]
            ).metrics()
            # one column per metric: the plain name, or evaluator.metric where evaluators disagree
            return {k: v for k, v in merged.items() if "." not in k or k.split(".", 1)[1] not in merged}
    return {}


CRASH_GRACE_S = 180.0  # how long a child may stay Crashed before the sweep counts it as ended


@flow(name="genforge-sweep", flow_run_name="sweep-{deployment}")
def sweep(
    deployment: str,
    grid: dict[str, list[Any]] | None = None,
    spec: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    metrics: list[str] | None = None,
    poll_seconds: float = 5.0,
    timeout_minutes: float = 24 * 60,
) -> list[dict[str, Any]]:
    """Run ``deployment`` once per grid point and collect the metrics into one table artifact.

    deployment: "<flow name>/<deployment name>" of a genforge pipeline deployment.
    grid: dotted spec fields -> values to try; the runs are every combination.
    spec: the base spec (default: the deployment's own ``spec`` parameter); grid values override it.
    overrides: `--set`-style changes for every run, e.g. ["train.max_minutes=0.5"] (a quick sweep that keeps the
        deployment's spec otherwise); a field may be in the grid or here, not both.
    metrics: the columns of the table (default: every metric the runs report).
    """
    logger = get_run_logger()
    points = grid_points(grid or {"train.seed": [0, 1]}, overrides)
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(deployment)
        base = spec if spec is not None else dep.parameters.get("spec") or {}
        base_overrides = list(dep.parameters.get("overrides") or [])  # the target's own, then the sweep's
        generator = dep.parameters.get("generator")
        if not generator:
            raise GenforgeError(f"deployment {deployment!r} has no 'generator' parameter: is it a genforge-pipeline deployment?")
    children = []
    for point in points:
        child = f"{generator}-" + "-".join(f"{k.rsplit('.', 1)[-1]}{redact_url(str(v))}" for k, v in point.items())
        fr = run_deployment(
            name=deployment,
            parameters={
                "generator": generator,
                "spec": spec_for(base, point),
                "overrides": base_overrides + list(overrides or []),
                "name": child,
            },
            timeout=0,
            as_subflow=True,
            flow_run_name=child,
        )
        logger.info("submitted %s: %s", fr.name, redact_secrets(point))
        children.append((point, fr.id))

    deadline = time.monotonic() + timeout_minutes * 60
    rows: list[dict[str, Any]] = []
    with get_client(sync_client=True) as client:
        waiting = {fr_id for _, fr_id in children}
        crashed_since: dict[UUID, float] = {}
        while waiting and time.monotonic() < deadline:
            for fr_id in list(waiting):
                state = client.read_flow_run(fr_id).state
                if state is not None and state.is_crashed():
                    # genforge's restart automation puts a crashed run back in the queue within seconds:
                    # a crash is final only when it stays one
                    if time.monotonic() - crashed_since.setdefault(fr_id, time.monotonic()) < CRASH_GRACE_S:
                        continue
                else:
                    crashed_since.pop(fr_id, None)
                if state is not None and state.is_final():
                    waiting.discard(fr_id)
            if waiting:
                time.sleep(poll_seconds)
        for point, fr_id in children:
            fr = client.read_flow_run(fr_id)
            row = {**redact_secrets(point), "flow_run": fr.name, "state": fr.state.name if fr.state else "unknown"}
            found = _metrics_of(client, fr_id)
            for name, value in found.items():
                if metrics is None or name in metrics:
                    row[name] = value
            rows.append(row)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = [{c: row.get(c, "") for c in columns} for row in rows]
    create_table_artifact(
        table, key=artifact_key(deployment.rsplit("/", 1)[-1], "sweep"), description=f"sweep over {', '.join(grid or {})}"
    )
    failed = [f"{r['flow_run']} ({r['state']})" for r in rows if r["state"] != "Completed"]
    if failed:  # the table is kept; the sweep itself ends Failed, so nobody reads it as a success
        raise GenforgeError(f"{len(failed)} of {len(rows)} runs of the sweep did not complete: {', '.join(failed)}")
    return table
