"""The scenario GAN survives a crash: SIGKILL mid-training, then `genforge resume` finishes the budget."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import SafetensorError

from genforge.core.runner import Steps, create_run
from genforge.plugins.finance.gan_generator import ScenarioGan
from genforge.core.testing import overrides_from_spec

GENFORGE = [sys.executable, "-m", "genforge.flows.cli"]
MAX_STEPS = 200


def sets(overrides: list[str]) -> list[str]:
    # dates quoted: unquoted, `--set` reads 2008-01-01 as a YAML date, which the str fields refuse
    # (see test_data.py::test_a_date_set_on_the_command_line_is_accepted)
    quoted = [re.sub(r"=(\d{4}-\d{2}-\d{2})$", r"='\1'", o) for o in overrides]
    return [a for o in quoted for a in ("--set", o)]


def test_sigkill_mid_training_then_resume_finishes_the_budget(store):
    overrides = overrides_from_spec(ScenarioGan.test_spec) + [
        f"train.max_steps={MAX_STEPS}", "train.checkpoint_every=10", "train.log_every=10", "train.threads=1",
        "model.validate_every=25", "sample.n=20", "sample.backtest_scenarios=100",
    ]
    # one torch thread in the child too (2 shared cores: OpenMP threads spinning against each other are 100x slower)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*GENFORGE, "run", "scenario-gan", "--no-prefect", *sets(overrides)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    runs = Path(os.environ["GENFORGE_HOME"]) / "runs"
    deadline = time.time() + 120
    ckpts: list[Path] = []
    try:
        while time.time() < deadline and not ckpts and proc.poll() is None:
            ckpts = sorted(runs.glob("*/checkpoints/step-*.pt")) if runs.exists() else []
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    assert ckpts, f"no checkpoint before the deadline (exit {proc.returncode}): {err[-2000:]}"
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
    run_dir = ckpts[0].parents[1]
    left = sorted(run_dir.glob("checkpoints/step-*.pt"))
    last_step = int(left[-1].stem.split("-")[1])
    assert 0 < last_step < MAX_STEPS
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"
    assert not (run_dir / "samples").exists()

    r = subprocess.run([*GENFORGE, "resume", run_dir.name, "--no-prefect"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"newest on disk: step {last_step}" in r.stdout
    training = json.loads((run_dir / "training.json").read_text())
    assert training["resumed_from"] == last_step and training["step"] == MAX_STEPS and training["stopped_by"] == "max_steps"
    meta = json.loads((run_dir / "scenario-gan.json").read_text())
    assert meta["final_step"] == MAX_STEPS and 0 < meta["best_step"] <= MAX_STEPS
    assert training["details"]["best_step"] == meta["best_step"]
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
