"""The core training engine: resume equals an uninterrupted run, NaN guard, budgets, atomic checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genforge.core import TrainConfig, Trainer, TrainingDiverged
from genforge.core.training import learning_rate, list_checkpoints, load_checkpoint

X = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
Y = X @ torch.randn(8, 1, generator=torch.Generator().manual_seed(1))


def make_model() -> nn.Module:
    torch.manual_seed(123)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


def loss_fn(model: nn.Module, step: int):
    # The batch depends on the step alone; dropout-like noise uses torch's global RNG,
    # which the engine seeds from (seed, step).
    idx = torch.arange(step * 16, step * 16 + 16) % len(X)
    noise = 0.01 * torch.randn(16, 1)
    return ((model(X[idx]) - Y[idx] - noise) ** 2).mean(), {}


def config(**kw) -> TrainConfig:
    base = dict(max_steps=20, max_minutes=None, lr=1e-2, warmup_steps=3, checkpoint_every=5, log_every=5, ema=0.9, device="cpu")
    return TrainConfig(**{**base, **kw})


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, optimizer):
    full = make_model()
    Trainer(config(optimizer=optimizer), tmp_path / "full").fit(full, loss_fn)

    def crashing(model, step):
        if step == 13:
            raise KeyboardInterrupt("killed mid-training")
        return loss_fn(model, step)

    with pytest.raises(KeyboardInterrupt):
        Trainer(config(optimizer=optimizer), tmp_path / "split").fit(make_model(), crashing)
    assert list_checkpoints(tmp_path / "split" / "checkpoints")[-1][0] == 10
    resumed = make_model()  # a fresh process would build the model from scratch
    result = Trainer(config(optimizer=optimizer), tmp_path / "split").fit(resumed, loss_fn)
    assert result.resumed_from == 10 and result.step == 20

    a, b = weights(full), weights(resumed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_checkpoints_are_complete_and_pruned(tmp_path):
    events = []
    Trainer(config(keep_checkpoints=2), tmp_path, on_checkpoint=lambda s, p: events.append(s)).fit(make_model(), loss_fn)
    assert events == [5, 10, 15, 20]
    kept = list_checkpoints(tmp_path / "checkpoints")
    assert [s for s, _ in kept] == [15, 20]
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    state = load_checkpoint(kept[-1][1])
    assert state["step"] == 20 and set(state) == {"step", "elapsed", "networks", "optimizers", "ema"}
    assert list(state["networks"]) == ["model"] and list(state["optimizers"]) == ["main"] and list(state["ema"]) == ["model"]


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    def exploding(model, step):
        loss, m = loss_fn(model, step)
        return (loss * float("nan") if step == 12 else loss), m

    model = make_model()
    with pytest.raises(TrainingDiverged) as err:
        Trainer(config(), tmp_path).fit(model, exploding)
    msg = str(err.value)
    assert "at step 13" in msg and "last good checkpoint (step 10)" in msg and "train.lr" in msg
    kept = list_checkpoints(tmp_path / "checkpoints")
    assert kept[-1][0] == 10
    for v in load_checkpoint(kept[-1][1])["networks"]["model"].values():
        assert torch.isfinite(v).all()


def test_progress_events_and_budget(tmp_path):
    seen = []
    result = Trainer(config(max_steps=12), tmp_path, on_progress=lambda s, t, m: seen.append((s, t, m))).fit(make_model(), loss_fn)
    assert result.stopped_by == "max_steps"
    assert [s for s, _, _ in seen] == [5, 10, 12]
    assert seen[-1][1] == 12 and seen[-1][2]["progress"] == 1.0 and "loss" in seen[-1][2]
    again = Trainer(config(max_steps=12), tmp_path).fit(make_model(), loss_fn)
    assert again.stopped_by == "already_done" and again.step == 12


def test_throughput_is_named_by_the_generator(tmp_path):
    def counting(model, step):
        loss, m = loss_fn(model, step)
        return loss, {**m, "rows": 16}

    seen = []
    result = Trainer(config(max_steps=10), tmp_path, on_progress=lambda s, t, m: seen.append(m)).fit(make_model(), counting, count="rows")
    assert "rows" not in seen[-1] and "tokens_per_s" not in seen[-1]
    assert seen[-1]["rows_per_s"] == pytest.approx(16 * seen[-1]["steps_per_s"], rel=1e-6)
    assert result.count == "rows" and result.parameters == {"model": 8 * 16 + 16 + 16 + 1}
    # the throughput reported is the training's average (160 rows over its seconds), not the last window's rate
    assert result.counted == 160 and result.throughput == pytest.approx(160 / result.counted_seconds)


def test_the_throughput_is_the_average_when_the_last_steps_are_faster(tmp_path):
    import time

    def slow_then_fast(model, step):
        if step < 5:
            time.sleep(0.05)  # the first half: 20 rows/s at most
        loss, m = loss_fn(model, step)
        return loss, {**m, "rows": 1}

    result = Trainer(config(max_steps=10, log_every=5), tmp_path).fit(make_model(), slow_then_fast, count="rows")
    assert result.throughput < 45  # 10 rows in about 0.25 s or more: the run's own rate
    assert result.last_metrics["rows_per_s"] > 1.4 * result.throughput  # the last window, no sleeping, is faster (even on a loaded machine)


def test_wall_clock_budget(tmp_path):
    result = Trainer(config(max_steps=None, max_minutes=0.5 / 60), tmp_path).fit(make_model(), loss_fn)
    assert result.stopped_by == "max_minutes"
    assert 0.5 <= result.elapsed < 5


def test_learning_rate_schedule():
    cfg = config(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(cfg, 0, 0.0) == pytest.approx(0.1)
    assert learning_rate(cfg, 9, 0.0) == pytest.approx(1.0)
    assert learning_rate(cfg, 50, 0.5) == pytest.approx(0.55)
    assert learning_rate(cfg, 100, 1.0) == pytest.approx(0.1)
    assert learning_rate(config(schedule="constant", lr=0.5), 100, 1.0) == 0.5


def test_a_full_disk_while_checkpointing_keeps_the_earlier_checkpoint(tmp_path, monkeypatch):
    """ENOSPC mid-write: the error says so in one line (the CLI's), no temp file is left, and the earlier checkpoint loads."""
    import errno

    import genforge.core.store as store_module
    from genforge.flows.cli import describe_error

    real = store_module.atomic_write_bytes

    def filling(path, data):
        if "step-00000010" in str(path):
            real(path.with_name(".partial.tmp"), data[: len(data) // 2])  # what a full disk leaves behind...
            path.with_name(".partial.tmp").unlink()  # ...and the writer's cleanup removes
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr("genforge.core.training.atomic_write_bytes", filling)
    with pytest.raises(OSError) as err:
        Trainer(config(), tmp_path).fit(make_model(), loss_fn)
    line = describe_error(err.value)
    assert line.startswith("no space left on the device writing ") and "step-00000010.pt" in line and "\n" not in line
    kept = list_checkpoints(tmp_path / "checkpoints")
    assert [s for s, _ in kept] == [5] and load_checkpoint(kept[0][1])["step"] == 5
    assert not list((tmp_path / "checkpoints").glob(".*"))


def test_a_damaged_newest_checkpoint_is_skipped_and_said(tmp_path):
    from genforge.core.contracts import Checkpoint
    from genforge.core.runner import training_record

    Trainer(config(max_steps=10), tmp_path).fit(make_model(), loss_fn)
    newest = list_checkpoints(tmp_path / "checkpoints")[-1][1]
    newest.write_bytes(b"half a checkpoint")
    trainer = Trainer(config(max_steps=20), tmp_path)
    result = trainer.fit(make_model(), loss_fn)
    assert result.resumed_from == 5 and result.damaged == [10] and result.step == 20
    assert newest.with_name(newest.name + ".damaged").exists()  # set aside: neither "newest" again nor pruning good ones
    notes = training_record(result, Checkpoint(tmp_path / "x", 20))["notes"]
    assert notes == ["checkpoint(s) at step 10 could not be loaded and were skipped; training resumed from step 5"]


def test_without_ema_warmup_the_average_keeps_the_starting_weights(tmp_path):
    """Fine-tuning: the EMA starts at the loaded weights and keeps them (decay from step 0) instead of following the first steps."""
    start = make_model()
    w0 = weights(start)

    def drift(ema_warmup: bool) -> float:
        model = make_model()
        model.load_state_dict(w0)
        Trainer(config(ema=0.99, ema_warmup=ema_warmup, checkpoint_every=100), tmp_path / str(ema_warmup)).fit(model, loss_fn)
        return sum(float((v - w0[k]).norm()) for k, v in weights(model).items())

    anchored, warm = drift(False), drift(True)
    assert 0 < anchored < 0.4 * warm  # 0.99**20 = 0.82 of the average is still the starting weights


def test_a_checkpoint_half_written_by_a_killed_process_is_removed_on_resume(tmp_path):
    Trainer(config(max_steps=10), tmp_path).fit(make_model(), loss_fn)
    stale = tmp_path / "checkpoints" / ".step-00000015.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    result = Trainer(config(max_steps=12), tmp_path).fit(make_model(), loss_fn)
    assert result.resumed_from == 10 and not stale.exists()


def test_a_training_cut_short_or_still_learning_is_said_to_be_undertrained():
    from types import SimpleNamespace

    from genforge.core.runner import undertrained_notes
    from genforge.core.training import TrainResult

    cut = TrainResult(341, 480.0, "max_minutes", None)
    (note,) = undertrained_notes(cut, SimpleNamespace(max_steps=2000, max_minutes=8), [])
    assert note.startswith("undertrained: train.max_minutes (8) stopped training at step 341 of the 2,000 planned (17%)")
    done = TrainResult(2000, 480.0, "max_steps", None)
    flat = [{"loss": 1.0} for _ in range(40)]
    falling = [{"loss": 2.0 - i / 40} for i in range(40)]
    assert undertrained_notes(done, SimpleNamespace(max_steps=2000, max_minutes=8), flat) == []
    (still,) = undertrained_notes(done, SimpleNamespace(max_steps=2000, max_minutes=8), falling)
    assert still.startswith("undertrained: the training loss was still falling")


def test_a_plan_fits_the_steps_to_the_minutes_and_a_resumed_run_keeps_it(tmp_path):
    import json
    import time

    def paced(model, step):  # 20 ms a step, whatever the machine
        time.sleep(0.02)
        return loss_fn(model, step)

    trainer = Trainer(config(max_steps=None, max_minutes=1 / 60, checkpoint_every=10), tmp_path)
    steps = trainer.plan(make_model(), paced, margin=0.6)
    assert 18 <= steps <= 30 and trainer.config.max_steps == steps  # 60 % of 1 s at 20 ms a step: 30 at most
    assert json.loads((tmp_path / "checkpoints" / "plan.json").read_text())["max_steps"] == steps
    result = trainer.fit(make_model(), paced)
    assert result.stopped_by == "max_steps" and result.step == steps  # the schedule completed inside its minutes
    again = Trainer(config(max_steps=None, max_minutes=1 / 60), tmp_path)
    assert again.plan(make_model(), loss_fn) == steps  # a resumed run follows its plan, not a new pace
    capped = Trainer(config(max_steps=7, max_minutes=1.0), tmp_path / "capped")
    assert capped.plan(make_model(), loss_fn) == 7  # a max_steps the user set caps the plan
    assert Trainer(config(max_steps=12, max_minutes=None), tmp_path / "none").plan(make_model(), loss_fn) == 12
