"""`genforge deploy`: work pools, the GPU concurrency limit, crash automations, then `prefect deploy`.

Everything it creates is created only if missing, so running it again is safe; the
deployments themselves are (re)applied from ``deploy/prefect.yaml`` by Prefect's own
``prefect deploy --all``.

Pools (base job templates in ``deploy/pools/``):
    genforge-cpu              process pool for CPU machines
    genforge-gpu              process pool for GPU machines (workers started on those machines)
    genforge-docker-gpu       Docker pool; each flow run is a container with the GPU requested
    genforge-kubernetes-gpu   Kubernetes pool; each flow run is a Job asking for nvidia.com/gpu
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from genforge.core import GenforgeError

PIPELINE_FLOW = "genforge-pipeline"
HEARTBEAT_SECONDS = 30  # Prefect's minimum; a run silent for 3 beats is marked Crashed
CRASH_AFTER = timedelta(seconds=3 * HEARTBEAT_SECONDS)
AUTOMATION_CRASH = "genforge: mark unresponsive runs crashed"
AUTOMATION_RESTART = "genforge: restart crashed runs"


def deploy_dir() -> Path:
    """The deploy/ folder: beside flows/ both in a source tree and installed (as ``genforge/deploy``)."""
    return Path(__file__).resolve().parent.parent / "deploy"


@dataclass(frozen=True)
class PoolSpec:
    name: str
    type: str
    template: str | None  # a file under deploy/pools/, or None for Prefect's default of the type
    description: str


POOLS = {
    "cpu": PoolSpec("genforge-cpu", "process", None, "genforge: CPU machines"),
    "gpu": PoolSpec("genforge-gpu", "process", None, "genforge: GPU machines (one process worker per machine, or per GPU)"),
    "docker-gpu": PoolSpec("genforge-docker-gpu", "docker", "docker-gpu.json", "genforge: a container per run, with the GPU requested"),
    "kubernetes-gpu": PoolSpec(
        "genforge-kubernetes-gpu", "kubernetes", "kubernetes-gpu.json", "genforge: a Kubernetes Job per run on a GPU node"
    ),
}


def base_job_template(spec: PoolSpec) -> dict[str, Any]:
    """The pool's base job template; process pools get Prefect's default plus genforge's env."""
    if spec.template:
        return json.loads((deploy_dir() / "pools" / spec.template).read_text())
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    env = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS)}
    template["variables"]["properties"]["env"]["default"] = env
    return template


def ensure_pools(client, kinds: list[str]) -> list[str]:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    created = []
    for kind in kinds:
        if kind not in POOLS:
            raise GenforgeError(f"unknown pool {kind!r}; genforge defines: {', '.join(POOLS)}")
        spec = POOLS[kind]
        try:
            client.create_work_pool(
                WorkPoolCreate(name=spec.name, type=spec.type, base_job_template=base_job_template(spec), description=spec.description)
            )
            created.append(spec.name)
        except ObjectAlreadyExists:
            pass
    return created


def ensure_gpu_limit(client, name: str, slots: int) -> bool:
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    try:
        client.read_global_concurrency_limit_by_name(name)
        return False
    except ObjectNotFound:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots, active=True))
        return True


def crash_automations() -> list:
    """Mark genforge pipeline runs Crashed when their heartbeats stop; put Crashed ones back in the queue.

    The restarted flow run resumes training from its checkpoint (its run id is fixed by the
    flow run); the pipeline refuses a restart past ``GENFORGE_MAX_RESTARTS`` by failing.
    """
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    ours = ResourceSpecification({"prefect.resource.role": "flow", "prefect.resource.name": PIPELINE_FLOW})
    runs = ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]})
    return [
        Automation(
            name=AUTOMATION_CRASH,
            description=f"A genforge pipeline run with no heartbeat for {CRASH_AFTER.seconds} s is marked Crashed.",
            trigger=EventTrigger(
                after={"prefect.flow-run.heartbeat"},
                expect={
                    "prefect.flow-run.heartbeat",
                    "prefect.flow-run.Completed",
                    "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled",
                    "prefect.flow-run.Crashed",
                },
                match=runs,
                match_related=ours,
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=CRASH_AFTER,
            ),
            actions=[
                ChangeFlowRunState(state=StateType.CRASHED, message=f"no heartbeat for {CRASH_AFTER.seconds} s (worker or machine lost)")
            ],
        ),
        Automation(
            name=AUTOMATION_RESTART,
            description="A crashed genforge pipeline run is scheduled again; it resumes from its last checkpoint.",
            trigger=EventTrigger(
                expect={"prefect.flow-run.Crashed"},
                match=runs,
                match_related=ours,
                posture=Posture.Reactive,
                threshold=1,
                within=timedelta(0),
            ),
            actions=[ChangeFlowRunState(state=StateType.SCHEDULED, name="AwaitingRetry", message="restarted by genforge after a crash")],
        ),
    ]


AUTOMATION_NOTIFY = "genforge: a challenger held or refused"
MODEL_EVENTS_HELD = ("genforge.model.held", "genforge.model.refused")


def notify_automation(block: str) -> Any:
    """Send a notification through the Prefect notification block ``block`` (``TYPE/NAME``, e.g. ``slack-webhook/ml-alerts``)
    each time the gate holds or refuses a model version (the events ``genforge.model.held`` and ``genforge.model.refused``)."""
    from prefect.automations import Automation
    from prefect.blocks.core import Block
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    if "/" not in block:
        raise GenforgeError(
            f"--notify {block!r}: give a notification block as TYPE/NAME, e.g. slack-webhook/ml-alerts (`prefect block ls`)"
        )
    try:
        loaded = Block.load(block)
    except (ValueError, KeyError) as exc:
        raise GenforgeError(f"--notify {block!r}: no such block ({exc}); create it first (`prefect block ls` lists them)") from None
    return Automation(
        name=AUTOMATION_NOTIFY,
        description=f"genforge's gate held or refused a model version: notify through {block}.",
        trigger=EventTrigger(
            expect=set(MODEL_EVENTS_HELD),
            match=ResourceSpecification({"prefect.resource.id": "genforge.model.*"}),
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            SendNotification(
                block_document_id=loaded._block_document_id,
                subject="genforge: {{ event.payload.model }}:{{ event.payload.version }} {{ event.payload.outcome }}",
                body=(
                    "Model {{ event.payload.model }}, version {{ event.payload.version }}: {{ event.payload.outcome }} against "
                    "@{{ event.payload.alias }} (version {{ event.payload.champion }}). "
                    "{% for reason in event.payload.reasons %}{{ reason }}. {% endfor %}"
                ),
            )
        ],
    )


def ensure_automations(client, notify: str | None = None) -> list[str]:
    """Create the automations that are missing; with ``notify``, the notification automation is (re)made for that block."""
    existing = {a.name: a for a in client.read_automations()}
    created = []
    wanted = crash_automations() + ([notify_automation(notify)] if notify else [])
    for automation in wanted:
        if automation.name == AUTOMATION_NOTIFY and automation.name in existing:  # --notify names the block now wanted
            client.delete_automation(existing.pop(automation.name).id)
        if automation.name not in existing:
            automation.create()
            created.append(automation.name)
    return created


def apply_deployments(prefect_file: Path, names: list[str] | None = None) -> None:
    """``prefect deploy`` from the yaml (all deployments, or the named ones)."""
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", str(prefect_file)]
    cmd += [a for n in names for a in ("--name", n)] if names else ["--all"]
    from prefect.settings import PREFECT_API_URL

    # the API this process talks to (an environment variable, a profile, or settings set in code), for the child too
    env = {**os.environ, "PREFECT_CLI_PROMPT": "false", "PREFECT_API_URL": PREFECT_API_URL.value() or ""}
    proc = subprocess.run(cmd, cwd=prefect_file.parent, capture_output=True, text=True, env=env)
    if proc.returncode:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise GenforgeError(f"`prefect deploy` failed (exit {proc.returncode}):\n{tail}")


def deploy(
    pools: list[str],
    gpu_slots: int,
    gpu_limit: str = "gpu",
    prefect_file: Path | None = None,
    apply: bool = True,
    names: list[str] | None = None,
    automations: bool = True,
    update: bool = False,
    notify: str | None = None,
) -> dict[str, Any]:
    """Create what is missing, then apply the deployments that do not exist yet (all of them with ``update``).

    Re-applying an existing deployment replaces its schedules and deletes their scheduled
    runs, so a second ``genforge deploy`` keeps existing deployments as they are unless
    ``update`` asks for it. Returns what was created.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    if notify and not automations:
        raise GenforgeError("--notify makes an automation: it cannot go with --no-automations")
    if not PREFECT_API_URL.value():
        raise GenforgeError(
            "PREFECT_API_URL is not set: deployments need a running Prefect server. Start one "
            "(`genforge ui`, or `prefect server start` on PostgreSQL, see docs/deploy.md) and set "
            "PREFECT_API_URL=http://HOST:4200/api"
        )
    with get_client(sync_client=True) as client:
        done = {
            "pools": ensure_pools(client, pools),
            "gpu_limit": {"name": gpu_limit, "slots": gpu_slots, "created": ensure_gpu_limit(client, gpu_limit, gpu_slots)},
            "automations": ensure_automations(client, notify) if automations else [],
        }
        prefect_file = prefect_file or deploy_dir() / "prefect.yaml"
        import yaml
        from prefect.exceptions import ObjectNotFound

        in_file = {d["name"]: d["entrypoint"] for d in (yaml.safe_load(prefect_file.read_text()) or {}).get("deployments", [])}
        unknown = [n for n in names or [] if n not in in_file]
        if unknown:
            raise GenforgeError(f"--name {', '.join(unknown)}: not a deployment of {prefect_file}; it has: {', '.join(in_file)}")
        wanted = [n for n in in_file if not names or n in names]

        def exists(name: str) -> bool:  # by flow and name, as Prefect names deployments
            from prefect.flows import load_flow_from_entrypoint

            try:
                client.read_deployment_by_name(f"{load_flow_from_entrypoint(in_file[name]).name}/{name}")
                return True
            except ObjectNotFound:
                return False

        todo = wanted if update else [n for n in wanted if not exists(n)]
    kept = [n for n in wanted if n not in todo]
    if apply and todo:
        apply_deployments(prefect_file, todo)
    done["deployments"] = {"applied": todo if apply else [], "kept": kept, "skipped": [] if apply else todo}
    return done
