"""End to end, as a team lead runs genforge, on the stack docs/deploy.md set up (the session's ``team`` fixture):
PostgreSQL 15, `prefect server` on it, `genforge deploy`, process workers, deployment runs; the report in headless
Chromium; two runs and one GPU slot; a worker killed mid-training; sweeps.

The GPU checks run on a worker of the GPU pool (`genforge worker --pool genforge-gpu --limit gpu`, the
docs' command for a GPU machine) with the shipped `scenario-gan` deployment: a generator that uses the
GPU, in a pool whose deployments the docs' CPU worker never takes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
import torch
from helpers import services

from genforge.core.testing import overrides_from_spec

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]  # one xdist worker: tests/conftest.py

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = Path(os.environ.get("GENFORGE_TEST_OUTPUT", ROOT / "test-output"))
CPU_DEPLOYMENT = "genforge-pipeline/molecule-diffusion-cpu"
GAN_DEPLOYMENT = "genforge-pipeline/scenario-gan"


def gan_spec(*overrides: str) -> dict:
    """The scenario GAN's tiny spec (its test_spec), one torch thread, no backtest, as a deployment's `spec` parameter."""
    from genforge.core.config import apply_override, parse_override
    from genforge.plugins.finance.gan_generator import ScenarioGan

    tree: dict = {}
    for item in [*overrides_from_spec(ScenarioGan.test_spec), "train.threads=1", "sample.backtest=false", *overrides]:
        keys, value = parse_override(item)
        apply_override(tree, keys, value)
    return tree


@pytest.fixture(scope="module")
def api(team):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: team.api}):
        yield team


@pytest.fixture(scope="module")
def gpu_worker(api):
    """A GPU machine's worker: its trainings take a slot of the `gpu` limit (one slot: `genforge deploy` on a machine without CUDA)."""
    return api.worker("--pool", "genforge-gpu", "--limit", "gpu")


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


def submit(deployment: str, generator: str, spec: dict, name: str):
    from prefect.deployments import run_deployment

    # tagged: the docs' runs of the same deployments are told apart from these (tests/test_team_docs.py)
    return run_deployment(deployment, parameters={"generator": generator, "spec": spec}, timeout=0, flow_run_name=name, tags=["e2e"])


def artifacts_of(flow_run_id: UUID):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with client() as c:
        return c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


def test_deploy_created_pools_limit_automations_and_deployments_and_a_second_deploy_changes_nothing(api):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from genforge.flows.deploy import AUTOMATION_CRASH, AUTOMATION_RESTART

    with client() as c:
        pools = {p.name: p.type for p in c.read_work_pools()}
        assert pools["genforge-cpu"] == "process" and pools["genforge-gpu"] == "process"
        assert pools["genforge-docker-gpu"] == "docker" and pools["genforge-kubernetes-gpu"] == "kubernetes"  # the docs' --no-apply pools
        assert c.read_global_concurrency_limit_by_name("gpu").limit == 1
        assert {AUTOMATION_CRASH, AUTOMATION_RESTART} <= {a.name for a in c.read_automations()}
        deps = {f"{c.read_flow(d.flow_id).name}/{d.name}": d for d in c.read_deployments()}
    assert {"genforge-pipeline/molecule-diffusion", CPU_DEPLOYMENT, GAN_DEPLOYMENT, "genforge-sweep/molecule-diffusion-sweep"} <= set(deps)
    nightly = deps["genforge-pipeline/molecule-diffusion"]
    assert nightly.work_pool_name == "genforge-gpu" and nightly.schedules and nightly.schedules[0].schedule.cron == "0 2 * * *"

    def scheduled(c):
        runs = c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[nightly.id])))
        return {r.id for r in runs if r.state and r.state.is_scheduled()}

    with client() as c:
        before = scheduled(c)
    again = subprocess.run([str(services.BIN / "genforge"), "deploy"], env=api.env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0 and "none (all existed)" in again.stdout, again.stdout + again.stderr
    assert "deployments applied: none" in again.stdout and "kept as they are" in again.stdout
    with client() as c:
        after = c.read_deployment(nightly.id)
        assert [s.id for s in after.schedules] == [s.id for s in nightly.schedules]  # not replaced
        assert scheduled(c) >= before


@pytest.fixture(scope="module")
def killed(api, gpu_worker):
    """A machine lost mid-training: the GPU worker and the flow-run process SIGKILLed after two checkpoints.

    Started early in the module, so that the heartbeat automation's wait (about 90 s) passes while the other
    tests run; test_the_killed_run_is_restarted_and_resumes, last, checks the outcome.
    """
    fr = submit(
        GAN_DEPLOYMENT,
        "scenario-gan",
        gan_spec(
            "train.max_steps=null", "train.max_minutes=0.4", "train.checkpoint_every=40", "train.log_every=20", "model.validate_every=40"
        ),
        "e2e-killed-worker",
    )
    deadline = time.monotonic() + 240
    checkpoint = None
    while time.monotonic() < deadline:
        run_dir = api.run_dir(fr.id)
        ckpts = sorted((run_dir / "checkpoints").glob("step-*.pt")) if run_dir else []
        if len(ckpts) >= 2:
            checkpoint = ckpts[-1]
            break
        time.sleep(0.5)
    assert checkpoint is not None, "training never wrote two checkpoints"
    # The machine is lost: worker and flow-run process die without a word. The worker goes
    # first: killed after its flow-run process, it may see the child die and report Crashed
    # itself, which is not the case under test (a lost machine reports nothing).
    flow_run_pids = services.flow_run_processes(str(fr.id))
    assert flow_run_pids, "no flow-run process found for the run"
    services.stop(gpu_worker)
    services.kill_pids(flow_run_pids)
    killed_at_step = int(json.loads((api.run_dir(fr.id) / "status.json").read_text())["step"])
    api.worker("--pool", "genforge-gpu", "--limit", "gpu")  # a new machine; the automation marks the silent run Crashed and reschedules it
    return {"flow_run": fr, "checkpoint": checkpoint, "step": killed_at_step, "at": datetime.now(UTC).isoformat()}


def test_a_worker_is_lost_mid_training(killed):
    assert killed["step"] >= int(killed["checkpoint"].name[5:13])


def test_the_quick_try_completes_with_artifacts_and_its_report_renders_in_the_ui(api):
    """The docs' quick try of the CPU deployment (section 4): metrics, a progress bar, a table, and a report with pictures."""
    with client() as c:
        quick = c.read_deployment_by_name(CPU_DEPLOYMENT).id
        tries = [r for r in c.read_flow_runs() if r.deployment_id == quick and r.parent_task_run_id is None and "e2e" not in r.tags]
    assert len(tries) == 1
    done = wait_final(tries[0].id, 600)
    assert done.state.is_completed(), done.state
    run_dir = api.run_dir(done.id)
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert metrics["validity"] == 1.0 and 0 < metrics["train_loss"] < 10  # SELFIES; a loss in nats per token
    arts = artifacts_of(done.id)
    assert {"progress", "table", "markdown"} <= {a.type for a in arts}
    report = next(a for a in arts if a.type == "markdown")
    assert report.data.count("data:image/png;base64,") >= 2  # sample gallery and loss curve

    dom, shot = ui_page(api, report.id, "prefect-ui-report.png")
    assert "<table" in dom and "validity" in dom and "train_loss" in dom, dom[-2000:]
    assert dom.count('src="data:image/png;base64,') >= 2


def ui_page(api, artifact_id, name: str, height: int = 4200) -> tuple[str, Path]:
    """An artifact's page in the Prefect UI, as headless Chromium renders it: its DOM, and a screenshot under test-output/."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("headless Chromium is not installed (apt-get install chromium; .ci/run installs it)")
    url = f"http://127.0.0.1:{api.port}/artifacts/artifact/{artifact_id}"
    flags = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--virtual-time-budget=20000",
    ]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / name
    subprocess.run([*flags, f"--window-size=1400,{height}", f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1400, height)
        colours = len(img.convert("RGB").resize((350, height // 4)).getcolors(maxcolors=1 << 20) or [])
    assert colours > 500, f"the screenshot {name} looks blank"  # text, a table and pictures, not an empty page
    return dom, shot


@pytest.fixture(scope="module")
def alerts(api):
    """A local HTTP receiver, a Prefect custom-webhook block pointing at it, and `genforge deploy --notify` wiring the automation."""
    import http.server
    import threading

    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from genforge.flows.cli import invoke
    from genforge.flows.deploy import AUTOMATION_NOTIFY

    received: list[str] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            received.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode(errors="replace"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    CustomWebhookNotificationBlock(
        name="genforge e2e", url=f"http://127.0.0.1:{server.server_address[1]}/", json_data={"text": "{{subject}}: {{body}}"}
    ).save("e2e-alerts", overwrite=True)
    r = invoke("deploy", "--no-apply", "--notify", "custom-webhook/e2e-alerts")
    assert r.code == 0 and AUTOMATION_NOTIFY in r.stdout, r.stdout + r.stderr
    yield received
    server.shutdown()


GATES = (  # the two runs below are gated into model scenario-gan: one asks for a metric no evaluator gives (refused)
    # its backtest's FZ0 decides; a 12-step GAN misses Kupiec's 0.05, so the threshold is left out here
    ["promote.model=scenario-gan", "sample.backtest=true", "promote.thresholds={}"],
    ["promote.model=scenario-gan", 'promote.metrics=["market.no_such_metric"]'],
)


def test_two_runs_take_turns_on_one_gpu_slot(api, killed, alerts):
    runs = [
        submit(
            GAN_DEPLOYMENT,
            "scenario-gan",
            gan_spec("train.max_steps=null", "train.max_minutes=0.2", "train.checkpoint_every=500", *GATES[i]),
            f"e2e-slot-{i}",
        )
        for i in range(2)
    ]
    for fr in runs:
        assert wait_final(fr.id, 600).state.is_completed()
    spans = []
    with client() as c:
        for fr in runs:
            train = [t for t in c.read_task_runs() if t.flow_run_id == fr.id and t.name.startswith("train")]
            assert len(train) == 1
            spans.append((train[0].start_time, train[0].end_time))
    (s1, e1), (s2, e2) = sorted(spans)
    assert e1 - s1 >= timedelta(seconds=10)
    assert s2 >= e1, f"second training started at {s2}, before the first ended at {e1}"


def test_the_gate_took_one_run_refused_the_other_and_the_promotion_triggered_the_sampling_deployment(api, alerts):
    """The two runs above were gated into scenario-gan, in either order: the one with a backtest is its first version
    (@champion, the event genforge.model.promoted); the other is refused (a metric missing: never promoted on missing
    evidence, a first version neither), and the automation
    `genforge deploy --notify` made posted it to the webhook. The promotion's deployment trigger ran `risk-scenarios-gan`,
    which sampled 10,000 ten-day scenarios from the champion without training."""
    from genforge.core.store.registry import Registry

    registry = Registry(str(api.store))
    verdicts = sorted(json.loads(p.read_text())["outcome"] for p in (api.store / "models" / "scenario-gan" / "verdicts").glob("*.json"))
    assert verdicts == ["first version", "refused"]
    champion = registry.aliases("scenario-gan")["champion"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any("refused" in body for body in alerts):
        time.sleep(1)
    assert any("scenario-gan" in body and "refused" in body and "missing" in body for body in alerts), alerts
    with client() as c:
        sampler = c.read_deployment_by_name("genforge-sample/risk-scenarios-gan").id
        deadline = time.monotonic() + 300
        triggered = []
        while time.monotonic() < deadline and not triggered:
            # the schedule's runs wait for a weekday 17:30 New York; an automation's run says so in its idempotency key
            triggered = [
                r for r in c.read_flow_runs() if r.deployment_id == sampler and (r.idempotency_key or "").startswith("automation ")
            ]
            time.sleep(1)
    assert len(triggered) == 1, "the promotion did not trigger the sampling deployment"
    done = wait_final(triggered[0].id, 600)
    assert done.state.is_completed(), done.state
    run_dir = api.run_dir(done.id)
    assert json.loads((run_dir / "from_model.json").read_text())["ref"] == f"scenario-gan:{champion}"
    assert json.loads((run_dir / "training.json").read_text())["trained"] is False
    samples = json.loads((run_dir / "samples.json").read_text())
    assert samples["count"] == 10000 and samples["details"]["horizon"] == 10
    with client() as c:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        keys = ["model-scenario-gan-gate", "model-scenario-gan-history"]
        arts = c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))  # every version of each key
    gates = [a for a in arts if a.key == keys[0]]
    assert sorted(a.description.rsplit(": ", 1)[-1] for a in gates) == ["first version", "refused"]
    refused = next(a for a in gates if a.description.endswith("refused"))
    dom, _ = ui_page(api, refused.id, "prefect-ui-model-gate.png", height=1600)
    assert "refused" in dom and "missing for the" in dom and "<table" in dom
    history = max((a for a in arts if a.key == keys[1]), key=lambda a: a.created)
    dom, _ = ui_page(api, history.id, "prefect-ui-model-history.png", height=1600)
    assert "Alias moves" in dom and 'src="data:image/png;base64,' in dom


def test_the_docs_sweep_fanned_out_and_collected_one_table(api):
    """The sweep section 4 started (seeds 0 and 1 of the CPU deployment): its children are named by their point, its table has both."""
    with client() as c:
        sweeps = c.read_deployment_by_name("genforge-sweep/molecule-diffusion-sweep").id
        docs_sweep = [r for r in c.read_flow_runs() if r.deployment_id == sweeps and "e2e" not in r.tags]
    assert len(docs_sweep) == 1
    done = wait_final(docs_sweep[0].id, 600)
    assert done.state.is_completed(), done.state
    table = next(a for a in artifacts_of(done.id) if a.type == "table")
    assert table.key == "molecule-diffusion-cpu-sweep"
    rows = table.data if isinstance(table.data, list) else json.loads(table.data)
    assert [row["train.seed"] for row in rows] == [0, 1]
    assert all(row["state"] == "Completed" and row["validity"] == 1.0 for row in rows)


def test_a_sweep_whose_runs_fail_ends_failed(api, killed):  # killed: a GPU-pool worker runs the sweep's child
    from prefect.deployments import run_deployment

    fr = run_deployment(  # over the GAN deployment: the GPU-pool worker here polls every 2 s
        "genforge-sweep/molecule-diffusion-sweep",
        parameters={"deployment": GAN_DEPLOYMENT, "grid": {"train.seed": [0]}, "spec": {"train": {"max_step": 3}}, "poll_seconds": 2},
        timeout=0,
        tags=["e2e"],
    )
    done = wait_final(fr.id, 300)
    assert done.state.is_failed(), done.state
    assert "1 of 1 runs of the sweep did not complete" in (done.state.message or "") + str(done.state)
    table = next(a for a in artifacts_of(fr.id) if a.type == "table")  # the table is still written
    rows = table.data if isinstance(table.data, list) else json.loads(table.data)
    assert [row["state"] for row in rows] == ["Failed"]


def test_the_killed_run_is_restarted_and_resumes(api, killed):
    fr = killed["flow_run"]
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
    (OUTPUT / "killed-worker-timeline.json").write_text(
        json.dumps({"killed_at": killed["at"], "checkpoint": killed["checkpoint"].name, "states": timeline}, indent=1)
    )
    run_dir = api.run_dir(fr.id)
    training = json.loads((run_dir / "training.json").read_text())
    checkpoint_step = int(killed["checkpoint"].name[5:13])
    assert training["resumed_from"] is not None and checkpoint_step <= training["resumed_from"] <= killed["step"]
    assert training["stopped_by"] == "max_minutes"
    assert not [p for p in run_dir.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]
    for ckpt in (run_dir / "checkpoints").glob("*.pt"):
        torch.load(ckpt, weights_only=True)  # every checkpoint on disk is whole
    assert json.loads((run_dir / "samples.json").read_text())["count"] == gan_spec()["sample"]["n"]
