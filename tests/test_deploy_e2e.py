"""End to end, as a team lead runs genforge: PostgreSQL 15, `prefect server` on it,
`genforge deploy`, process workers, deployment runs; the report in headless Chromium;
two runs and one GPU slot; a worker killed mid-training; a sweep.

Everything the module starts (database, server, workers, flow-run processes) it stops.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID

import pytest
import torch

from conftest import tiny_spec
from helpers import services

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = Path(os.environ.get("GENFORGE_TEST_OUTPUT", ROOT / "test-output"))
CPU_DEPLOYMENT = "genforge-pipeline/molecule-diffusion-cpu"


class Team:
    """The services of one test module and the environment their clients need."""

    def __init__(self, base: Path):
        self.base = base
        self.pg = services.Postgres()
        self.port = services.free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.store = base / "runs-store"
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(base / "prefect-home"),
            "PREFECT_API_URL": self.api,
            "PREFECT_UI_API_URL": self.api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_PREFETCH_SECONDS": "2",
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "GENFORGE_HOME": str(self.store),
            "GENFORGE_GPU_LIMIT": "gpu",  # CPU-only here: the process pool still takes the GPU slot
            "PYTHONUNBUFFERED": "1",
        }
        self.server = None
        self.workers: list[subprocess.Popen] = []

    def start(self) -> Team:
        self.pg.start()
        env = {**self.env, "PREFECT_API_DATABASE_CONNECTION_URL": self.pg.url}
        self.server = services.start(
            [str(services.BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)], env, self.base / "server.log"
        )
        services.wait_http(f"{self.api}/health", 180)
        return self

    def worker(self, pool: str = "genforge-cpu") -> subprocess.Popen:
        proc = services.start([str(services.BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"], self.env, self.base / f"worker-{len(self.workers)}.log")
        self.workers.append(proc)
        return proc

    def stop(self) -> None:
        for w in self.workers:
            services.stop(w)
        services.kill_pids(services.flow_run_processes(api_url=self.api))
        if self.server is not None:
            services.stop(self.server)
        self.pg.stop()
        assert not services.flow_run_processes(api_url=self.api)

    def run_dir(self, flow_run_id: UUID) -> Path | None:
        found = list((self.store / "runs").glob(f"*-{flow_run_id.hex[:8]}"))
        return found[0] if found else None


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    t = Team(tmp_path_factory.mktemp("team"))
    try:
        t.start()
        with temporary_settings(updates={PREFECT_API_URL: t.api}):
            deploy = subprocess.run(
                [str(services.BIN / "genforge"), "deploy", "--pool", "cpu", "--pool", "gpu", "--gpu-slots", "1"],
                env=t.env, capture_output=True, text=True, timeout=300,
            )
            assert deploy.returncode == 0, deploy.stdout + deploy.stderr
            t.deploy_output = deploy.stdout
            t.worker()
            yield t
    finally:
        t.stop()


def client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def wait_final(flow_run_id: UUID, timeout: float):
    deadline = time.monotonic() + timeout
    with client() as c:
        while time.monotonic() < deadline:
            fr = c.read_flow_run(flow_run_id)
            if fr.state and fr.state.is_final() and not fr.state.is_crashed():
                return fr
            time.sleep(2)
        raise TimeoutError(f"flow run {flow_run_id} still {fr.state.name if fr.state else None} after {timeout} s")


def submit(spec: dict, name: str | None = None):
    from prefect.deployments import run_deployment

    return run_deployment(CPU_DEPLOYMENT, parameters={"generator": "molecule-diffusion", "spec": spec}, timeout=0, flow_run_name=name)


def artifacts_of(flow_run_id: UUID):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with client() as c:
        return c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


def test_deploy_creates_pools_limit_automations_and_deployments(team):
    from genforge.flows.deploy import AUTOMATION_CRASH, AUTOMATION_RESTART

    with client() as c:
        pools = {p.name: p.type for p in c.read_work_pools()}
        assert pools["genforge-cpu"] == "process" and pools["genforge-gpu"] == "process"
        assert c.read_global_concurrency_limit_by_name("gpu").limit == 1
        assert {AUTOMATION_CRASH, AUTOMATION_RESTART} <= {a.name for a in c.read_automations()}
        deps = {f"{c.read_flow(d.flow_id).name}/{d.name}": d for d in c.read_deployments()}
    assert {"genforge-pipeline/molecule-diffusion", CPU_DEPLOYMENT, "genforge-sweep/molecule-diffusion-sweep"} <= set(deps)
    nightly = deps["genforge-pipeline/molecule-diffusion"]
    assert nightly.work_pool_name == "genforge-gpu" and nightly.schedules and nightly.schedules[0].schedule.cron == "0 2 * * *"
    # running it again changes nothing and does not fail
    # a second `genforge deploy` creates nothing and leaves the schedules and their scheduled runs alone
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    def scheduled(c):
        runs = c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[nightly.id])))
        return {r.id for r in runs if r.state and r.state.is_scheduled()}

    with client() as c:
        before = scheduled(c)
    again = subprocess.run([str(services.BIN / "genforge"), "deploy"], env=team.env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0 and "none (all existed)" in again.stdout, again.stdout + again.stderr
    assert "deployments applied: none" in again.stdout and "kept as they are" in again.stdout
    with client() as c:
        after = c.read_deployment(nightly.id)
        assert [s.id for s in after.schedules] == [s.id for s in nightly.schedules]  # not replaced
        assert scheduled(c) >= before


def test_deployment_run_completes_with_artifacts_and_report_in_the_ui(team):
    fr = submit(tiny_spec(), "e2e-tiny")
    done = wait_final(fr.id, 300)
    assert done.state.is_completed(), done.state
    run_dir = team.run_dir(fr.id)
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert metrics["validity"] == 1.0 and 0 < metrics["train_loss"] < 10  # SELFIES; a loss in nats per token
    arts = artifacts_of(fr.id)
    assert {"progress", "table", "markdown"} <= {a.type for a in arts}
    report = next(a for a in arts if a.type == "markdown")
    assert report.data.count("data:image/png;base64,") >= 2  # sample gallery and loss curve

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("headless Chromium is not installed (apt-get install chromium; .ci/run installs it)")
    url = f"http://127.0.0.1:{team.port}/artifacts/artifact/{report.id}"
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars", "--virtual-time-budget=20000"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "<table" in dom and "validity" in dom and "train_loss" in dom, dom[-2000:]
    assert dom.count('src="data:image/png;base64,') >= 2
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "prefect-ui-report.png"
    subprocess.run([*flags, "--window-size=1400,4200", f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1400, 4200)
        colours = len(img.convert("RGB").resize((350, 1050)).getcolors(maxcolors=1 << 20) or [])
    assert colours > 500, "the screenshot looks blank"  # text, a table and pictures, not an empty page


def test_two_runs_take_turns_on_one_gpu_slot(team):
    runs = [submit(tiny_spec("train.max_steps=null", "train.max_minutes=0.2", "train.checkpoint_every=200"), f"slot-{i}") for i in range(2)]
    for fr in runs:
        assert wait_final(fr.id, 420).state.is_completed()
    spans = []
    with client() as c:
        for fr in runs:
            train = [t for t in c.read_task_runs() if t.flow_run_id == fr.id and t.name.startswith("train")]
            assert len(train) == 1
            spans.append((train[0].start_time, train[0].end_time))
    (s1, e1), (s2, e2) = sorted(spans)
    assert e1 - s1 >= timedelta(seconds=10)
    assert s2 >= e1, f"second training started at {s2}, before the first ended at {e1}"


def test_worker_killed_mid_training_is_restarted_and_resumes(team):
    fr = submit(tiny_spec("train.max_steps=null", "train.max_minutes=1.2", "train.checkpoint_every=100", "train.log_every=50"), "killed-worker")
    deadline = time.monotonic() + 240
    checkpoint = None
    while time.monotonic() < deadline:
        run_dir = team.run_dir(fr.id)
        ckpts = sorted((run_dir / "checkpoints").glob("step-*.pt")) if run_dir else []
        if len(ckpts) >= 2:
            checkpoint = ckpts[-1]
            break
        time.sleep(1)
    assert checkpoint is not None, "training never wrote two checkpoints"
    # The machine is lost: worker and flow-run process die without a word. The worker goes
    # first: killed after its flow-run process, it may see the child die and report Crashed
    # itself, which is not the case under test (a lost machine reports nothing).
    flow_run_pids = services.flow_run_processes(str(fr.id))
    assert flow_run_pids, "no flow-run process found for the run"
    for w in team.workers:
        services.stop(w)
    team.workers.clear()
    services.kill_pids(flow_run_pids)
    killed_at_step = int(json.loads((team.run_dir(fr.id) / "status.json").read_text())["step"])
    killed_at = datetime.now(timezone.utc).isoformat()
    team.worker()  # a new worker; the automation marks the silent run Crashed and reschedules it
    done = wait_final(fr.id, 420)
    assert done.state.is_completed(), done.state
    assert done.run_count == 2
    with client() as c:
        states = c.read_flow_run_states(fr.id)
    names = [s.name for s in states]
    assert "Crashed" in names and "AwaitingRetry" in names, names
    crashed = next(s for s in states if s.name == "Crashed")
    assert "no heartbeat" in (crashed.message or ""), crashed.message  # detected by the heartbeat automation
    OUTPUT.mkdir(parents=True, exist_ok=True)
    timeline = [{"state": s.name, "at": s.timestamp.isoformat(), "message": s.message} for s in states]
    (OUTPUT / "killed-worker-timeline.json").write_text(json.dumps({"killed_at": killed_at, "checkpoint": checkpoint.name, "states": timeline}, indent=1))
    run_dir = team.run_dir(fr.id)
    model = json.loads((run_dir / "training.json").read_text())
    assert model["resumed_from"] is not None and model["resumed_from"] >= int(checkpoint.name[5:13]) and model["resumed_from"] <= killed_at_step
    assert model["stopped_by"] == "max_minutes"
    assert not [p for p in run_dir.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]
    for ckpt in (run_dir / "checkpoints").glob("*.pt"):
        torch.load(ckpt, weights_only=True)  # every checkpoint on disk is whole
    assert json.loads((run_dir / "samples.json").read_text())["count"] == 40


def test_sweep_fans_out_and_collects_one_table(team):
    from prefect.deployments import run_deployment

    fr = run_deployment(
        "genforge-sweep/molecule-diffusion-sweep",
        parameters={"deployment": CPU_DEPLOYMENT, "grid": {"train.seed": [0, 1]}, "spec": tiny_spec(), "poll_seconds": 2},
        timeout=0,
    )
    done = wait_final(fr.id, 420)
    assert done.state.is_completed(), done.state
    with client() as c:
        children = [r for r in c.read_flow_runs() if r.parent_task_run_id and r.id != fr.id and r.created > fr.created]
    assert len(children) >= 2
    assert {"molecule-diffusion-seed0", "molecule-diffusion-seed1"} <= {r.name for r in children}  # named by their grid point
    table = next(a for a in artifacts_of(fr.id) if a.type == "table")
    assert table.key == "molecule-diffusion-cpu-sweep"
    rows = table.data if isinstance(table.data, list) else json.loads(table.data)
    assert [row["train.seed"] for row in rows] == [0, 1]
    assert all(row["state"] == "Completed" and row["validity"] == 1.0 for row in rows)


def test_a_sweep_whose_runs_fail_ends_failed(team):
    from prefect.deployments import run_deployment

    fr = run_deployment(
        "genforge-sweep/molecule-diffusion-sweep",
        parameters={"deployment": CPU_DEPLOYMENT, "grid": {"train.seed": [0]}, "spec": {"train": {"max_step": 3}}, "poll_seconds": 2},
        timeout=0,
    )
    done = wait_final(fr.id, 300)
    assert done.state.is_failed(), done.state
    assert "1 of 1 runs of the sweep did not complete: molecule-diffusion-seed0 (Failed)" in (done.state.message or "") + str(done.state)
    table = next(a for a in artifacts_of(fr.id) if a.type == "table")  # the table is still written
    rows = table.data if isinstance(table.data, list) else json.loads(table.data)
    assert [row["state"] for row in rows] == ["Failed"]
