"""The engine with two networks: a tiny GAN on 1-D Gaussian data, critic x 2 then generator x 1 per step.

Two optimizers with their own learning rates and betas, EMA on the generator only, one
checkpoint for everything; killed mid-training and resumed, it ends with the same weights
as an uninterrupted run; and it learns the data's mean and spread.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genforge.core import ConfigError, TrainConfig, Trainer, TrainingDiverged
from genforge.core.training import list_checkpoints, load_checkpoint

MEAN, STD, Z = 3.0, 0.5, 4
DATA = MEAN + STD * torch.randn(4096, 1, generator=torch.Generator().manual_seed(0))


def networks() -> dict[str, nn.Module]:
    torch.manual_seed(7)
    return {
        "generator": nn.Sequential(nn.Linear(Z, 16), nn.ReLU(), nn.Linear(16, 1)),
        "critic": nn.Sequential(nn.Linear(1, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1)),
    }


def critic_loss(nets, step, repeat):
    idx = torch.arange(64) + (step * 2 + repeat) * 64 % (len(DATA) - 64)  # the batch from (step, repeat) alone
    real = DATA[idx]
    with torch.no_grad():
        fake = nets["generator"](torch.randn(64, Z))
    bce = nn.functional.binary_cross_entropy_with_logits
    d_real, d_fake = nets["critic"](real), nets["critic"](fake)
    loss = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
    return loss, {"real_score": d_real.mean().detach()}


def generator_loss(nets, step, repeat):
    d_fake = nets["critic"](nets["generator"](torch.randn(64, Z)))
    return nn.functional.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake)), {}


LOSSES = {"critic": critic_loss, "generator": generator_loss}


def config(**kw) -> TrainConfig:
    base = dict(
        max_steps=300,
        max_minutes=None,
        warmup_steps=0,
        schedule="constant",
        grad_clip=None,
        ema=0.9,
        checkpoint_every=50,
        log_every=25,
        device="cpu",
        ema_networks=["generator"],
        optimizers={
            "critic": {"networks": ["critic"], "lr": 3e-3, "betas": (0.5, 0.9)},
            "generator": {"networks": ["generator"], "lr": 2.5e-3, "betas": (0.5, 0.9), "optimizer": "adam"},
        },
        phases={"critic": {"repeat": 2}, "generator": {}},
    )
    return TrainConfig.model_validate({**base, **kw})


def state(nets) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.detach().clone() for n, net in nets.items() for k, v in net.state_dict().items()}


def test_two_networks_resume_gives_the_same_weights_and_the_gan_learns(tmp_path):
    full = networks()
    seen = []
    result = Trainer(config(), tmp_path / "full", on_progress=lambda s, t, m: seen.append(m)).fit_networks(full, LOSSES)
    assert result.step == 300 and result.parameters == {"generator": 4 * 16 + 16 + 16 + 1, "critic": 16 + 16 + 16 + 1}
    # progress per phase; the critic's metrics are means over its two repeats
    assert {"critic_loss", "critic_real_score", "generator_loss", "lr_critic", "lr_generator"} <= set(seen[-1])
    assert seen[-1]["lr_critic"] == 3e-3 and seen[-1]["lr_generator"] == 2.5e-3

    ckpt = load_checkpoint(list_checkpoints(tmp_path / "full" / "checkpoints")[-1][1])
    assert set(ckpt["networks"]) == {"generator", "critic"} and set(ckpt["optimizers"]) == {"critic", "generator"}
    assert set(ckpt["ema"]) == {"generator"}  # EMA on the generator only
    assert ckpt["optimizers"]["critic"]["param_groups"][0]["betas"] == (0.5, 0.9)
    # The critic was stepped twice per step, the generator once (Adam keeps a step count per parameter).
    assert float(next(iter(ckpt["optimizers"]["critic"]["state"].values()))["step"]) == 600
    assert float(next(iter(ckpt["optimizers"]["generator"]["state"].values()))["step"]) == 300

    def crashing(nets, step, repeat):
        if step == 137 and repeat == 1:
            raise KeyboardInterrupt("killed mid-training, between two critic updates")
        return critic_loss(nets, step, repeat)

    with pytest.raises(KeyboardInterrupt):
        Trainer(config(), tmp_path / "split").fit_networks(networks(), {"critic": crashing, "generator": generator_loss})
    assert list_checkpoints(tmp_path / "split" / "checkpoints")[-1][0] == 100
    resumed = networks()  # a fresh process builds the networks from scratch
    again = Trainer(config(), tmp_path / "split").fit_networks(resumed, LOSSES)
    assert again.resumed_from == 100 and again.step == 300
    a, b = state(full), state(resumed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)

    with torch.no_grad():  # the EMA generator now draws from about N(3, 0.5), from about N(0, 0.1) at the start
        x = full["generator"](torch.randn(4000, Z, generator=torch.Generator().manual_seed(1)))
        x0 = networks()["generator"](torch.randn(4000, Z, generator=torch.Generator().manual_seed(1)))
    assert abs(float(x0.mean()) - MEAN) > 2.5
    assert abs(float(x.mean()) - MEAN) < 0.25 and 0.25 < float(x.std()) < 0.9


def test_the_nan_guard_watches_every_phase(tmp_path):
    def exploding(nets, step, repeat):
        loss, m = generator_loss(nets, step, repeat)
        return (loss * float("nan") if step == 60 else loss), m

    with pytest.raises(TrainingDiverged, match=r"at step 61.*last good checkpoint \(step 50\)"):
        Trainer(config(), tmp_path).fit_networks(networks(), {"critic": critic_loss, "generator": exploding})


def test_phases_and_optimizers_must_match_the_networks(tmp_path):
    with pytest.raises(ConfigError, match="this generator's phases are: critic, generator"):
        Trainer(config(phases={"critic": {}}), tmp_path).fit_networks(networks(), LOSSES)
    bad = config(optimizers={"critic": {"networks": ["discriminator"]}, "generator": {"networks": ["generator"]}})
    with pytest.raises(ConfigError, match="'discriminator'; the networks are: generator, critic"):
        Trainer(bad, tmp_path).fit_networks(networks(), LOSSES)
    with pytest.raises(ConfigError, match="train.ema_networks names 'gen'"):
        Trainer(config(ema_networks=["gen"]), tmp_path).fit_networks(networks(), LOSSES)


def test_misconfigured_optimizers_are_refused_before_training(tmp_path):
    both = config(
        optimizers={"a": {"networks": ["critic"]}, "b": {"networks": ["critic", "generator"]}},
        phases={"critic": {"optimizer": "a"}, "generator": {"optimizer": "b"}},
    )
    with pytest.raises(ConfigError, match="network 'critic' is updated by several optimizers \\(a, b\\)"):
        Trainer(both, tmp_path).fit_networks(networks(), LOSSES)
    idle = config(optimizers={"critic": {"networks": ["critic"]}, "generator": {"networks": ["generator"]}, "spare": {"networks": []}})
    with pytest.raises(ConfigError):
        Trainer(idle, tmp_path).fit_networks(networks(), LOSSES)


def test_a_set_override_changes_one_optimizer_field_and_keeps_the_generator_defaults():
    from pydantic import Field

    from genforge.core import GeneratorConfig, OptimizerConfig, PhaseConfig, load_spec

    class GanTrain(TrainConfig):  # a GAN generator's defaults, as its config would declare them
        optimizers: dict[str, OptimizerConfig] = Field(default_factory=lambda: config().optimizers)
        phases: dict[str, PhaseConfig] = Field(default_factory=lambda: config().phases)

    class GanConfig(GeneratorConfig):
        train: GanTrain = Field(default_factory=GanTrain)

    spec = load_spec(GanConfig, None, ["train.optimizers.critic.lr=1e-4", "train.phases.critic.repeat=5"])
    assert spec.train.optimizers["critic"].lr == 1e-4 and spec.train.optimizers["critic"].networks == ["critic"]
    assert spec.train.optimizers["generator"].lr == 2.5e-3  # untouched
    assert list(spec.train.phases) == ["critic", "generator"] and spec.train.phases["critic"].repeat == 5
