"""The scenario GAN survives a crash: a worker lost mid-training, then a resume finishes the budget.

(A real SIGKILL of a real process, and `genforge resume` in another, are the host's tests, on the toy:
tests/test_cli.py. Here the engine's checkpoint write is followed by a crash, in this process.)
"""

from __future__ import annotations

import json

import pytest

from genforge.core import training
from genforge.core.runner import Steps, create_run, run_all
from genforge.core.testing import overrides_from_spec
from genforge.plugins.finance.gan_generator import ScenarioGan

MAX_STEPS = 60


class WorkerLost(RuntimeError):
    pass


def test_a_crash_mid_training_then_resume_finishes_the_budget(store, one_thread, monkeypatch):
    overrides = overrides_from_spec(ScenarioGan.test_spec) + [
        f"train.max_steps={MAX_STEPS}",
        "train.checkpoint_every=10",
        "train.log_every=10",
        "model.validate_every=10",
        "sample.n=20",
        "sample.backtest_scenarios=100",
        "sample.backtest_horizons=[1]",
        "data.test_start='2017-01-03'",  # two test years: the backtest's 500 days, not 1,760
    ]
    save = training.Trainer._save

    def crash_at_step_30(self, step, *args, **kwargs):  # the worker dies right after writing this checkpoint
        path = save(self, step, *args, **kwargs)
        if step == 30:
            raise WorkerLost(f"worker lost after the checkpoint at step {step}")
        return path

    run = create_run("scenario-gan", overrides=overrides)
    monkeypatch.setattr(training.Trainer, "_save", crash_at_step_30)
    with pytest.raises(WorkerLost):
        run_all(run)
    monkeypatch.setattr(training.Trainer, "_save", save)
    run_dir = run.path
    last_step = int(sorted(run_dir.glob("checkpoints/step-*.pt"))[-1].stem.split("-")[1])
    assert last_step == 30
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"
    assert not (run_dir / "samples").exists()

    run_all(run)  # what `genforge resume` runs
    training_record = json.loads((run_dir / "training.json").read_text())
    assert training_record["resumed_from"] == last_step and training_record["step"] == MAX_STEPS
    assert training_record["stopped_by"] == "max_steps"
    meta = json.loads((run_dir / "scenario-gan.json").read_text())
    assert meta["final_step"] == MAX_STEPS and 0 < meta["best_step"] <= MAX_STEPS
    assert training_record["details"]["best_step"] == meta["best_step"]
    from safetensors import safe_open

    with safe_open(str(run_dir / "best.safetensors"), "pt") as fh:
        assert int(fh.metadata()["step"]) == meta["best_step"]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert (run_dir / "samples" / "scenarios.parquet").exists() and (run_dir / "samples" / "backtest.parquet").exists()
    assert "market.backtest_1d_1pct_fz0" in json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert not list(run_dir.glob("checkpoints/*.tmp")) and not list(run_dir.glob("checkpoints/.*"))


def test_a_best_file_cut_short_by_a_crash_does_not_break_the_resume(store, one_thread):
    run = create_run("scenario-gan", spec=ScenarioGan.test_spec)
    steps = Steps(run)
    data = steps.prepare()
    steps.train(data)
    best = run.path / "best.safetensors"
    assert best.exists()
    # as a kill in the middle of writing a new best leaves it
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    for ckpt in sorted(run.checkpoints.glob("step-*.pt"))[1:]:
        ckpt.unlink()  # resume from the one before the last
    checkpoint = Steps(run).train(data)
    assert checkpoint.step == 12
    Steps(run).sample(checkpoint)


def test_a_critic_context_longer_than_the_history_is_refused_before_training(store):
    from genforge.core import ConfigError

    with pytest.raises(ConfigError, match="critic_context"):
        create_run("scenario-gan", overrides=["model.history=10", "model.critic_context=20"])
