"""The ``scenario-gan`` generator: a conditional Wasserstein GAN (gradient penalty) for market scenarios.

Training (through the core engine's several-network call): windows of ``history`` real
days and the ``train_horizon`` days after them are drawn from the training period. The
critic (5 steps per generator step, WGAN-GP) sees the last ``critic_context`` history
days followed by either the real next days or the generator's; the generator's loss is
the critic's score plus ``nll_weight`` × the Gaussian likelihood of the real next days
under its σ and μ heads. The engine keeps an EMA of the generator's weights; every
``validate_every`` steps that EMA is scored on the validation period (one-day VaR/ES at
1 % and 5 %, FZ0 loss, as in the backtest) and the best is kept as ``best.safetensors``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from genforge.core import Checkpoint, ConfigError, OptimizerConfig, PhaseConfig, PreparedData, Section, TrainConfig, Trainer
from genforge.core.training import load_weights, save_weights

from .data import load_split
from .gan_networks import Critic, PathGenerator, gradient_penalty
from .lambert_w import DELTA_CAP, Transform
from .metrics import fz0_loss, var_es_rows
from .scenario_generator import FinanceConfig, FinanceGenerator
from .textbook_models import ScenarioModel


class GanModelConfig(Section):
    history: int = Field(120, ge=5, description="real days the generator is given before the scenario starts")
    hidden: int = Field(32, ge=4, description="state size of the generator's GRU")
    noise_dim: int = Field(8, ge=0, description="noise inputs per generated day besides one per asset")
    critic_channels: int = Field(32, ge=4, description="channels of the critic's temporal convolutions")
    critic_context: int = Field(20, ge=1, description="history days the critic sees before the path it judges")
    train_horizon: int = Field(20, ge=1, description="days generated per training window")
    gp_weight: float = Field(10.0, ge=0, description="WGAN-GP gradient-penalty weight")
    nll_weight: float = Field(1.0, ge=0, description="weight of the Gaussian likelihood of the real next days (0: a pure WGAN)")
    lambert_w: bool = Field(True, description=f"gaussianise returns with Lambert W (δ by maximum likelihood, capped at {DELTA_CAP})")
    validate_every: int = Field(100, ge=1, description="steps between validation scores (checkpoint choice)")
    validation_scenarios: int = Field(1000, ge=100, description="scenarios per validation day")

    @model_validator(mode="after")
    def _context(self) -> GanModelConfig:
        if self.critic_context > self.history:
            raise ValueError(
                f"model.critic_context ({self.critic_context}) cannot exceed model.history ({self.history}): the critic sees the last history days"
            )
        return self


class GanTrain(TrainConfig):
    max_steps: int | None = Field(1500, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(5e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.9)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float | None = Field(None, gt=0)
    ema: float | None = Field(0.99, gt=0, lt=1)
    checkpoint_every: int = Field(100, ge=1)
    optimizers: dict[str, OptimizerConfig] = Field(
        default_factory=lambda: {
            "critic": OptimizerConfig(networks=["critic"]),
            "generator": OptimizerConfig(networks=["generator"], lr=1e-3),
        }
    )
    phases: dict[str, PhaseConfig] = Field(default_factory=lambda: {"critic": PhaseConfig(repeat=5), "generator": PhaseConfig()})
    ema_networks: list[str] | None = Field(["generator"])


class ScenarioGanConfig(FinanceConfig):
    model: GanModelConfig = Field(default_factory=GanModelConfig)
    train: GanTrain = Field(default_factory=GanTrain)


class GanModel(ScenarioModel):
    """A trained generator and its transform, behind the finance models' interface (numpy in, numpy out)."""

    name = "scenario-gan"

    def __init__(self, net: PathGenerator, transform: Transform, history: int):
        self.net, self.transform, self.history = net.eval(), transform, history

    def fit(self, returns: np.ndarray) -> None:
        raise NotImplementedError("the scenario GAN is trained by the engine, not refitted")

    @torch.inference_mode()
    def conditional(self, returns: np.ndarray, days: np.ndarray, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        v = self.transform.forward(returns)
        windows = np.stack([_window(v, d, self.history) for d in days])  # (D, L, A)
        h = self.net.start(torch.as_tensor(windows, dtype=torch.float32))  # (D, hidden)
        h = h.repeat_interleave(n, dim=0)
        # torch draws the noise (several times faster than numpy in float64), seeded from rng
        gen = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        noise = torch.randn(len(days) * n, horizon, self.net.noise_dim, generator=gen)
        out = self.net.roll(h, noise, torch.as_tensor(self.transform.limit, dtype=torch.float32)).numpy().astype(np.float64)
        return self.transform.inverse(out).reshape(len(days), n, horizon, -1)

    def simulate(self, history: np.ndarray, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        return self.conditional(history, np.array([len(history)]), n, horizon, rng)[0]


def _window(v: np.ndarray, day: int, length: int) -> np.ndarray:
    """The ``length`` days before ``day`` (zero-padded at the start of the data: zeros are the mean)."""
    w = v[max(0, day - length) : day]
    return np.concatenate([np.zeros((length - len(w), v.shape[1])), w]) if len(w) < length else w


class ScenarioGan(FinanceGenerator):
    name: ClassVar[str] = "scenario-gan"
    Config: ClassVar[type[ScenarioGanConfig]] = ScenarioGanConfig
    description: ClassVar[str] = (
        "conditional WGAN-GP: GRU generator (σ·ε + μ), temporal-conv critic, Lambert W returns, EMA, validation choice"
    )
    libraries: ClassVar[tuple[str, ...]] = ("torch", "arch", "numpy", "scipy", "pandas")
    uses_gpu: ClassVar[bool] = True
    refits: ClassVar[bool] = False
    demo_spec: ClassVar[dict] = {"sample": {"n": 1000}}
    test_spec: ClassVar[dict] = {
        **FinanceGenerator.test_spec,
        "model": {"history": 20, "hidden": 8, "critic_channels": 8, "validate_every": 5, "validation_scenarios": 100},
        "train": {"max_steps": 12, "batch_size": 32, "checkpoint_every": 5, "log_every": 2},
    }

    def fit(self, data: PreparedData, config: ScenarioGanConfig, trainer: Trainer) -> Checkpoint:
        m, cfg = config.model, config.train
        returns, split = load_split(data.path)
        x = returns.to_numpy()
        train_days = np.flatnonzero(split.to_numpy() == "train")
        val_days = np.flatnonzero(split.to_numpy() == "validation")
        transform = Transform.fit(x[train_days], m.lambert_w)
        v = torch.as_tensor(transform.forward(x), dtype=torch.float32)  # (T, A), gaussianised and standardised
        limit = torch.as_tensor(transform.limit, dtype=torch.float32, device=trainer.device)
        assets = x.shape[1]
        torch.manual_seed(cfg.seed)
        nets = {
            "generator": PathGenerator(assets, m.hidden, m.noise_dim),
            "critic": Critic(assets, m.critic_context + m.train_horizon, m.critic_channels),
        }
        # windows: history [t-L, t) and future [t, t+H) inside the training period
        starts = np.arange(max(m.history, m.critic_context), len(train_days) - m.train_horizon + 1)
        if len(starts) < cfg.batch_size:
            raise ConfigError(
                f"{len(starts)} training windows of model.history={m.history} + model.train_horizon={m.train_horizon} days "
                f"in {len(train_days)} training days; shorten them or give a longer history"
            )
        device = trainer.device
        v_dev = v.to(device)
        offsets_h = torch.arange(-m.history, 0, device=device)
        offsets_f = torch.arange(m.train_horizon, device=device)

        def batch(step: int, repeat: int, phase: int) -> tuple[torch.Tensor, torch.Tensor]:
            rng = np.random.default_rng([cfg.seed, step, repeat, phase])
            t = torch.as_tensor(rng.choice(starts, cfg.batch_size), device=device)[:, None]
            return v_dev[t + offsets_h], v_dev[t + offsets_f]  # (B, L, A), (B, H, A)

        def noise(b: int) -> torch.Tensor:
            return torch.randn(b, m.train_horizon, nets["generator"].noise_dim, device=device)

        def critic_loss(n: dict, step: int, repeat: int):
            hist, future = batch(step, repeat, 0)
            with torch.no_grad():
                fake = n["generator"](hist, noise(len(hist)), limit)
            ctx = hist[:, -m.critic_context :]
            real_seq, fake_seq = torch.cat([ctx, future], 1), torch.cat([ctx, fake], 1)
            real_score, fake_score = n["critic"](torch.cat([real_seq, fake_seq])).chunk(2)  # one pass for both
            distance = real_score.mean() - fake_score.mean()
            gp = gradient_penalty(n["critic"], real_seq, fake_seq)
            return -distance + m.gp_weight * gp, {"wasserstein": distance.detach(), "gradient_penalty": gp.detach()}

        best = _Best.load(trainer.run_dir)

        def generator_loss(n: dict, step: int, repeat: int):
            hist, future = batch(step, repeat, 1)
            h0 = n["generator"].start(hist)  # one read of the history serves both terms
            fake = n["generator"].roll(h0, noise(len(hist)), limit)
            adversarial = -n["critic"](torch.cat([hist[:, -m.critic_context :], fake], 1)).mean()
            nll = n["generator"].nll(h0, future) if m.nll_weight else torch.zeros((), device=device)
            if step % m.validate_every == 0 and trainer.is_main:
                weights = trainer.ema_state("generator") or nets["generator"].state_dict()
                best.offer(step, self._validate(weights, transform, x, val_days, m, step), weights)
            return adversarial + m.nll_weight * nll, {"adversarial": adversarial.detach(), "nll": nll.detach(), "paths": len(hist)}

        result = trainer.fit_networks(nets, {"critic": critic_loss, "generator": generator_loss}, count="paths")
        final = nets["generator"].cpu().state_dict()  # the EMA weights: the engine loads them at the end
        score = self._validate(final, transform, x, val_days, m, result.step)
        if trainer.is_main:
            best.offer(result.step, score, final)
        meta = {
            "assets": list(map(str, returns.columns)),
            "transform": transform.to_dict(),
            "model": m.model_dump(),
            "best_step": best.step,
            "validation_fz0": best.score,
            "final_step": result.step,
            "final_validation_fz0": score,
        }
        path = trainer.run_dir / "scenario-gan.safetensors"
        if trainer.is_main:
            self.keep_history(data, trainer.run_dir)
            save_weights(load_file(str(best.path)) if best.step is not None else final, path, meta)  # with scenario-gan.json
        notes = [
            f"weights from step {best.step} of {result.step}: the best validation FZ0 ({best.score:.3f}, {len(val_days)} days before the test period)"
        ]
        return Checkpoint(
            path,
            result.step,
            details={"best_step": best.step, "validation_fz0": round(best.score, 4), "delta": [round(d, 4) for d in transform.delta]},
            notes=notes,
        )

    @staticmethod
    @torch.no_grad()
    def _validate(weights: dict, transform: Transform, x: np.ndarray, days: np.ndarray, m: GanModelConfig, step: int) -> float:
        """Mean one-day FZ0 loss at 1 % and 5 % over the validation days and assets (lower is better)."""
        with torch.random.fork_rng():  # building the probe must not move the training's random stream
            probe = PathGenerator(x.shape[1], m.hidden, m.noise_dim)
        probe.load_state_dict({k: t.detach().cpu().to(torch.float32) for k, t in weights.items()})  # the GRU has no buffers
        model = GanModel(probe, transform, m.history)
        paths = model.conditional(x, days, m.validation_scenarios, 1, np.random.default_rng([step, 7]))[:, :, 0]  # (D, n, A)
        losses = []
        for a in range(x.shape[1]):
            for alpha in (0.01, 0.05):
                var, es = var_es_rows(paths[:, :, a], alpha)
                losses.append(fz0_loss(x[days, a], var, es, alpha))
        return float(np.mean(losses))

    def load_model(self, checkpoint: Checkpoint) -> GanModel:
        path = Path(checkpoint.path)
        state, meta = load_weights(path)
        m = GanModelConfig(**meta["model"])
        net = PathGenerator(len(meta["assets"]), m.hidden, m.noise_dim)
        net.load_state_dict(state)
        return GanModel(net, Transform.from_dict(meta["transform"]), m.history)


class _Best:
    """The best validation score so far and its weights (``best.safetensors``), kept across resumes."""

    def __init__(self, run_dir: Path, step: int | None = None, score: float = float("inf")):
        self.path, self.step, self.score = Path(run_dir) / "best.safetensors", step, score

    @classmethod
    def load(cls, run_dir: Path) -> _Best:
        """The best so far, read from its weights' metadata; a file that cannot be read counts as none."""
        path = Path(run_dir) / "best.safetensors"
        try:
            with safe_open(str(path), "pt") as fh:
                meta = fh.metadata() or {}
            return cls(run_dir, int(meta["step"]), float(meta["score"]))
        except (OSError, KeyError, ValueError, SafetensorError):
            return cls(run_dir)

    def offer(self, step: int, score: float, weights: dict) -> None:
        if not np.isfinite(score) or score >= self.score:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        state = {k: t.detach().cpu().float().contiguous() for k, t in weights.items()}
        save_file(state, str(tmp), metadata={"step": str(step), "score": repr(score)})
        os.replace(tmp, self.path)  # a crash mid-write leaves the previous best whole
        self.step, self.score = step, score
