"""The whole pipeline as a Prefect flow, on Prefect's test harness, with tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_spec

pytestmark = pytest.mark.prefect


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def test_pipeline_flow_leaves_run_and_artifacts(harness, store):
    from helpers.crash import crash_after_checkpoints
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from genforge.core import hookimpl
    from genforge.core.plugin_manager import get_plugin_manager
    from genforge.flows.pipeline import pipeline

    class UnreachableLicence:  # a plugin that fails to register: said in the flow run's log, for whoever watches the UI
        @hookimpl
        def genforge_datasets(self):
            raise RuntimeError("cannot reach the licence server")

    pm = get_plugin_manager()
    pm.register(UnreachableLicence(), name="acme-licensed")
    try:
        with crash_after_checkpoints(1) as crash:  # the train task's retry must resume from the first checkpoint
            state = pipeline(generator="molecule-diffusion", spec=tiny_spec(), return_state=True)
    finally:
        pm.unregister(name="acme-licensed")
    assert state.is_completed(), state
    run_dir = Path(state.result())
    assert crash["crashes"] == 1
    model = json.loads((run_dir / "training.json").read_text())
    assert model["resumed_from"] == 5 and model["step"] == 12  # the retry resumed from the checkpoint
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert metrics["validity"] == 1.0  # SELFIES decode to molecules
    assert metrics["heavy_atoms_mean"] < 15 and metrics["heavy_atoms_rel_diff"] < -0.3  # 12 steps: molecules far too small

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        kinds = {a.type for a in arts}
        assert {"progress", "table", "markdown"} <= kinds, kinds
        report = next(a for a in arts if a.type == "markdown")
        assert "data:image/png;base64," in report.data and str(run_dir) in report.data
        progress = next(a for a in arts if a.type == "progress")
        assert float(progress.data) == 100.0
        runs = client.read_task_runs()
        names = {r.name.rsplit("-", 1)[0] for r in runs if r.flow_run_id == flow_run_id}
        assert {"prepare-data", "train", "sample", "evaluate"} <= names
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        logs = [entry.message for entry in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]
        assert any("plugin 'acme-licensed'" in m and "cannot reach the licence server" in m for m in logs), logs[:20]


def test_bad_spec_fails_before_anything_runs(harness, store):
    from genforge.core import ConfigError
    from genforge.flows.pipeline import pipeline

    with pytest.raises(ConfigError, match="train.max_step"):
        pipeline(generator="molecule-diffusion", spec={"train": {"max_step": 3}})


def test_a_deployment_cannot_point_a_worker_at_another_store(harness, store, tmp_path, monkeypatch):
    """The flow's `store` parameter: only the worker's own store, or one it allows."""
    from genforge.core import GenforgeError
    from genforge.flows.pipeline import pipeline

    with pytest.raises(GenforgeError, match="is not this worker's run store"):
        pipeline(generator="molecule-diffusion", store=str(tmp_path / "someone-elses"), spec=tiny_spec())
    assert not (tmp_path / "someone-elses").exists()
    monkeypatch.setenv("GENFORGE_ALLOWED_STORES", f"{tmp_path / 'team'}")
    with pytest.raises(Exception, match="train.max_step"):  # allowed: it gets as far as validating the spec
        pipeline(generator="molecule-diffusion", store=str(tmp_path / "team"), spec={"train": {"max_step": 3}})


def test_sweep_grid_points_and_overrides():
    from genforge.core import ConfigError
    from genforge.flows.sweep import grid_points

    assert grid_points({"train.seed": [0, 1], "train.lr": [1e-3]}, ["sample.n=10"]) == [
        {"train.seed": 0, "train.lr": 1e-3},
        {"train.seed": 1, "train.lr": 1e-3},
    ]
    with pytest.raises(ConfigError, match="train.seed is in both grid and overrides"):
        grid_points({"train.seed": [0, 1]}, ["train.seed=3"])
    with pytest.raises(ConfigError, match="non-empty list"):
        grid_points({"train.seed": 3})
    from genforge.flows.sweep import spec_for

    nightly = {"train": {"lr": 1e-3}, "promote": {"model": "molecules"}}  # a sweep's points never race for the champion
    assert spec_for(nightly, {"train.seed": 1}) == {"train": {"lr": 1e-3, "seed": 1}}


def test_a_gated_run_publishes_its_verdict_and_a_model_samples_as_its_own_flow(harness, genforge_home, genforge_pm, monkeypatch):
    """The pipeline flow gates a run whose spec names a model: the comparison and history artifacts (keyed by the model), the
    event a deployment trigger matches; the sampling flow then draws from the champion without training."""
    import prefect.events
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from genforge.core import Run
    from genforge.core.testing.toy import ToyPlugin
    from genforge.flows.pipeline import pipeline, sample_model

    genforge_pm(ToyPlugin())
    events = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: events.append(kw))
    spec = {"train": {"max_steps": 40, "checkpoint_every": 20, "lr": 0.05}, "sample": {"n": 300}, "promote": {"model": "toy"}}
    for steps in (40, 400):
        state = pipeline(generator="toy-gaussian", spec={**spec, "train": {**spec["train"], "max_steps": steps}}, return_state=True)
        assert state.is_completed(), state
    assert [(e["event"], e["payload"]["outcome"], e["payload"]["version"]) for e in events] == [
        ("genforge.model.promoted", "first version", 1),
        ("genforge.model.promoted", "promoted", 2),
    ]
    assert events[1]["resource"]["prefect.resource.id"] == "genforge.model.toy"
    with get_client(sync_client=True) as client:
        keys = {"model-toy-gate", "model-toy-history"}
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=sorted(keys))))
        assert {a.key for a in arts} == keys
        gate = next(a for a in arts if a.key == "model-toy-gate" and "toy:2" in a.data)
        assert "**promoted**" in gate.data and "moments.mean_abs_error" in gate.data and "data:image/png;base64," in gate.data
        history = next(a for a in arts if a.key == "model-toy-history" and "| 2 |" in a.data)
        assert "data:image/png;base64," in history.data
    sampled = Run(Path(sample_model(model="toy@champion", overrides=["sample.n=50"])))
    assert sampled.read_json("from_model.json")["ref"] == "toy:2" and sampled.read_json("samples.json")["count"] == 50
    assert sampled.status["state"] == "finished" and not (sampled.path / "gate.json").exists()


def test_an_evaluator_that_fails_fails_the_evaluate_task_and_the_flow_run(harness, genforge_home, genforge_pm):
    """A raising evaluator the run needs: the flow run and its evaluate task end Failed, the run `failed`; the other
    evaluator's metrics, metrics.json and the report (also as an artifact) are there. Marked optional, the flow completes."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from genforge.core import Evaluator, EvaluatorFailed, Run, hookimpl
    from genforge.core.testing.toy import ToyPlugin
    from genforge.flows.pipeline import pipeline

    class Broken(Evaluator):
        name = "broken"
        kinds = ("vectors",)

        def evaluate(self, samples, reference, out_dir, config):
            raise ZeroDivisionError("bug in a third-party evaluator")

    class Outside:
        @hookimpl
        def genforge_evaluators(self):
            return [Broken()]

    genforge_pm(ToyPlugin(), Outside())
    spec = {"train": {"max_steps": 5}, "sample": {"n": 20}}
    state = pipeline(generator="toy-gaussian", spec=spec, return_state=True)
    assert state.is_failed(), state
    with pytest.raises(EvaluatorFailed, match="evaluator 'broken' of plugin 'outside-1' failed"):
        state.result()
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        tasks = {r.name.rsplit("-", 1)[0]: r.state for r in client.read_task_runs() if r.flow_run_id == flow_run_id}
        assert tasks["evaluate"].is_failed() and tasks["sample"].is_completed(), tasks
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        report = next(a for a in arts if a.type == "markdown")
        assert "evaluator 'broken' of plugin 'outside-1' failed on vectors" in report.data
    run = Run(next((genforge_home / "runs").iterdir()))
    assert run.status["state"] == "failed" and "EvaluatorFailed" in run.status["error"]
    assert run.metrics()["metrics"]["moments.mean_abs_error"] > 0 and (run.path / "report.md").exists()

    optional = pipeline(generator="toy-gaussian", spec={**spec, "evaluate": {"broken": {"optional": True}}}, return_state=True)
    assert optional.is_completed(), optional
    assert Run(Path(optional.result())).status["state"] == "finished"
