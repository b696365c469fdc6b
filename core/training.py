"""The core training engine, shared by every generator.

A generator hands the engine its networks and a loss function per training phase; the
engine owns everything else: device and precision, optimizers and schedules, clipping,
EMA, budgets, checkpoints and resume, the NaN guard, seeding and progress events.

One network (most generators)::

    result = trainer.fit(model, loss_fn)             # loss_fn(model, step) -> (loss, metrics)

Several networks, named optimizers and phases (a WGAN: critic x 5, then generator x 1)::

    result = trainer.fit_networks(
        {"generator": g, "critic": d},
        {"critic": critic_loss, "generator": generator_loss},   # loss(nets, step, repeat) -> (loss, metrics)
    )

with, in the spec's ``train`` section (or the generator's config defaults)::

    optimizers: {critic: {networks: [critic], lr: 1.0e-4, betas: [0.5, 0.9]},
                 generator: {networks: [generator], lr: 1.0e-4, betas: [0.5, 0.9]}}
    phases: {critic: {repeat: 5}, generator: {}}
    ema_networks: [generator]

A training step runs every phase in order, each ``repeat`` times; each repeat zeroes all
gradients, computes its phase's loss, and steps the phase's optimizer only (so the
critic's gradients from the generator's loss never reach the critic). ``max_steps``,
``checkpoint_every`` and ``log_every`` count training steps. One checkpoint holds every
network, optimizer and EMA.

Reproducibility: before each phase repeat the engine seeds torch from (seed, step, which
repeat), and a loss function must choose its batch from ``step`` (and ``repeat``) alone.
A run stopped at any checkpoint and resumed therefore takes exactly the same steps as an
uninterrupted one.

Throughput: ``count="tokens"`` (or "images", "paths", ...) names a metric that the loss
functions return as the number of items in their batch; the engine reports
``tokens_per_s`` in progress events and the result. No other metric name is special.

Several devices (``train.devices > 1``): the run's train step is launched under
``torchrun`` (see ``genforge.core.distributed``); each process builds the same networks,
the engine wraps each in DistributedDataParallel, and a loss function takes its shard of
the global batch with ``trainer.shard(batch)``. Gradients are averaged over the
processes, so k steps on N processes equal k steps of one process on the same global
batch. Only rank 0 writes checkpoints and sends progress events.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import pickle
import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .config import OptimizerConfig, PhaseConfig, TrainConfig
from .errors import ConfigError, RunGone, TrainingDiverged
from .store import atomic_write_bytes, atomic_write_text
from .store.files import file_digest

LossFn = Callable[[nn.Module, int], tuple[torch.Tensor, dict[str, "float | torch.Tensor"]]]
PhaseLossFn = Callable[[dict[str, nn.Module], int, int], tuple[torch.Tensor, dict[str, "float | torch.Tensor"]]]
ProgressFn = Callable[[int, int | None, dict[str, float]], None]
CheckpointFn = Callable[[int, Path], None]
_CKPT = re.compile(r"^step-(\d+)\.pt$")
ONE_NETWORK, ONE_OPTIMIZER, ONE_PHASE = "model", "main", "train"


def step_seed(seed: int, step: int, sub: int = 0, rank: int = 0, world_size: int = 1) -> int:
    """The torch seed of one phase repeat: a function of (seed, step, which repeat, rank) alone.

    The first repeat of a step keeps the first engine's formula, so one-network runs are unchanged;
    later repeats take a SeedSequence hash, so no two (step, repeat) pairs share a seed.
    """
    if sub == 0:
        return (seed * 1_000_003 + step) * (1009 if world_size > 1 else 1) + rank
    import numpy as np

    return int(np.random.SeedSequence([seed, step, sub, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def headline_loss(metrics: dict[str, float]) -> float:
    """The loss a progress bar shows: ``loss`` with one phase, else the first phase's ``<phase>_loss``."""
    if "loss" in metrics:
        return float(metrics["loss"])
    return next((float(v) for k, v in metrics.items() if k.endswith("_loss")), float("nan"))


def choose_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainingDiverged("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device("cuda", local_rank) if requested == "cuda" else torch.device(requested)


@dataclass(frozen=True)
class OptimizerSettings:
    """One optimizer's resolved settings: its own where set, else the train section's."""

    name: str
    networks: tuple[str, ...]
    optimizer: str
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    warmup_steps: int
    schedule: str
    min_lr_ratio: float
    grad_clip: float | None


@dataclass(frozen=True)
class Phase:
    name: str
    optimizer: str
    repeat: int
    loss_fn: PhaseLossFn


def resolve_optimizers(config: TrainConfig, networks: list[str]) -> dict[str, OptimizerSettings]:
    """``train.optimizers`` with unset fields filled from ``train``; one optimizer over every network when empty."""
    named = config.optimizers or {ONE_OPTIMIZER: OptimizerConfig()}
    out = {}
    for name, oc in named.items():
        nets = tuple(oc.networks) or tuple(networks)
        unknown = [n for n in nets if n not in networks]
        if unknown:
            raise ConfigError(
                f"train.optimizers.{name}.networks names {', '.join(map(repr, unknown))}; the networks are: {', '.join(networks)}"
            )
        own = oc.model_dump(exclude={"networks"}, exclude_none=True)
        base = {
            k: getattr(config, k)
            for k in ("optimizer", "lr", "betas", "weight_decay", "warmup_steps", "schedule", "min_lr_ratio", "grad_clip")
        }
        out[name] = OptimizerSettings(name=name, networks=nets, **{**base, **own})
    for net in networks:
        owners = [name for name, s in out.items() if net in s.networks]
        if len(owners) > 1:
            raise ConfigError(f"network {net!r} is updated by several optimizers ({', '.join(owners)}); give each network to one optimizer")
    return out


def resolve_phases(config: TrainConfig, loss_fns: dict[str, PhaseLossFn], optimizers: dict[str, OptimizerSettings]) -> list[Phase]:
    """``train.phases`` (order, repeats, optimizers) matched with the generator's loss functions.

    A phase steps the optimizer it names, else the one named like it, else (with one phase)
    the only one. Every optimizer must be stepped by some phase.
    """
    named = config.phases or {name: PhaseConfig() for name in loss_fns}
    if set(named) != set(loss_fns):
        raise ConfigError(
            f"train.phases names {', '.join(named) or 'nothing'}; this generator's phases are: {', '.join(loss_fns)} (each exactly once)"
        )
    phases = []
    for name, pc in named.items():
        opt = pc.optimizer or (
            name if name in optimizers else (next(iter(optimizers)) if len(optimizers) == 1 and len(named) == 1 else None)
        )
        if opt not in optimizers:
            raise ConfigError(f"train.phases.{name}.optimizer must be one of: {', '.join(optimizers)} (got {opt!r})")
        phases.append(Phase(name, opt, pc.repeat, loss_fns[name]))
    unused = [o for o in optimizers if o not in {p.optimizer for p in phases}]
    if unused:
        raise ConfigError(
            f"train.optimizers {', '.join(map(repr, unused))} is stepped by no phase; name it in train.phases.<phase>.optimizer"
        )
    return phases


def make_optimizer(networks: list[nn.Module], settings: OptimizerSettings | TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """An optimizer over the networks' trainable parameters (no weight decay on 1-D ones: biases, norms)."""
    params = [p for net in networks for p in net.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.betas[0])
    fused = {"fused": True} if device.type == "cuda" else {}
    cls = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=settings.lr, betas=settings.betas, **fused)


def learning_rate(config: OptimizerSettings | TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over ``warmup_steps``, then constant or cosine down to ``lr * min_lr_ratio``.

    ``progress`` is the fraction of the budget used (steps or wall-clock, whichever is further).
    """
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.schedule == "constant":
        return config.lr * warm
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * warm * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cos)


PLAN = "plan.json"  # in checkpoints/: the steps Trainer.plan fitted to train.max_minutes, kept for a resumed run
PLAN_MARGIN = 0.9  # the share of train.max_minutes a plan fills with measured steps (EMA, logs and checkpoints take the rest)
DIGESTS = "digests.json"  # in checkpoints/: each checkpoint file's SHA-256, checked before it is loaded


def read_digests(folder: Path) -> dict[str, str]:
    try:
        found = json.loads((Path(folder) / DIGESTS).read_text())
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return {}
    return {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(found, dict) else {}


def write_digests(folder: Path, digests: dict[str, str]) -> None:
    atomic_write_text(Path(folder) / DIGESTS, json.dumps(digests, indent=1, sort_keys=True))


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.exists():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT.match(p.name))]
    return sorted(found)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by the engine; never unpickles arbitrary objects.

    Returns ``{"step", "elapsed", "networks": {name: state}, "optimizers": {name: state},
    "ema": {network: {parameter: tensor}}}``; a checkpoint of the first format (one network:
    ``model``/``optimizer`` keys) is read into the same form.
    """
    state = torch.load(path, map_location=map_location, weights_only=True)
    if "networks" not in state:  # the first checkpoint format: one model, one optimizer
        state = {
            "step": state["step"],
            "elapsed": state["elapsed"],
            "networks": {ONE_NETWORK: state["model"]},
            "optimizers": {ONE_OPTIMIZER: state["optimizer"]},
            "ema": {ONE_NETWORK: state["ema"]} if state.get("ema") else {},
        }
    return state


@dataclass
class TrainResult:
    step: int
    elapsed: float
    stopped_by: str  # "max_steps", "max_minutes" or "already_done"
    checkpoint: Path | None
    last_metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None
    parameters: dict[str, int] = field(default_factory=dict)  # network -> trainable parameters
    count: str | None = None  # what the throughput counts ("tokens", "images", ...)
    damaged: list[int] = field(default_factory=list)  # steps of checkpoints that could not be loaded and were skipped
    counted: float = 0.0  # items (``count``) this process trained on, and the seconds it trained
    counted_seconds: float = 0.0

    @property
    def throughput(self) -> float | None:
        """Items (``count``) per second, the average of this process's training (the last logging window's when it has none)."""
        if not self.count:
            return None
        if self.counted_seconds > 0:
            return self.counted / self.counted_seconds
        return self.last_metrics.get(f"{self.count}_per_s")


class Trainer:
    """Runs a training loop to its budget, checkpointing into ``run_dir/checkpoints``."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        on_progress: ProgressFn | None = None,
        on_checkpoint: CheckpointFn | None = None,
        on_resume: Callable[[int], None] | None = None,
        init: dict[str, torch.Tensor] | None = None,
    ):
        self.config = config
        self.init = init  # trained weights a fresh run starts from (train.init_from), loaded by fit_networks
        self.run_dir = Path(run_dir)  # where the generator writes what it exports
        self._run_dir_existed = self.run_dir.is_dir()  # a run's folder (the host's): never recreated once deleted
        self.checkpoint_dir = self.run_dir / "checkpoints"
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if distributed else 0
        self.world_size = dist.get_world_size() if distributed else 1
        self.device = choose_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.on_progress = on_progress or (lambda *a: None)
        self.on_checkpoint = on_checkpoint or (lambda *a: None)
        self.on_resume = on_resume or (lambda step: None)  # called with the step training starts from (0: the start)
        self.result: TrainResult | None = None  # the last fit's, for the host's training record
        self._ema: dict[str, dict[str, torch.Tensor]] = {}  # the running fit's EMA, for ema_state
        self.planned: dict[str, Any] | None = None  # what plan() measured and chose, for the training record
        if config.threads and self.device.type == "cpu":
            torch.set_num_threads(config.threads)

    @property
    def is_main(self) -> bool:
        """True in the process that writes files (rank 0; the only process without DDP)."""
        return self.rank == 0

    def shard(self, batch):
        """This process's part of a global batch (rows ``rank::world_size``); the batch itself on one process."""
        if self.world_size == 1:
            return batch
        if len(batch) % self.world_size:
            raise TrainingDiverged(f"train.batch_size={len(batch)} must be a multiple of train.devices={self.world_size}")
        return batch[self.rank :: self.world_size]

    @property
    def autocast(self) -> contextlib.AbstractContextManager:
        p = self.config.precision
        if p == "bf16" or (p == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def newest_checkpoint(self) -> tuple[int, Path] | None:
        found = list_checkpoints(self.checkpoint_dir)
        return found[-1] if found else None

    def _save(
        self, step: int, elapsed: float, networks: dict[str, nn.Module], opts: dict[str, torch.optim.Optimizer], ema: dict
    ) -> Path | None:
        if not self.is_main:
            return None
        state = {
            "step": step,
            "elapsed": elapsed,
            "networks": {name: net.state_dict() for name, net in networks.items()},
            "optimizers": {name: opt.state_dict() for name, opt in opts.items()},
            "ema": ema,
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        path = self.checkpoint_dir / f"step-{step:08d}.pt"
        if self._run_dir_existed and not self.run_dir.is_dir():  # the run folder was deleted: never recreate it as an orphan
            raise RunGone(f"the run folder {self.run_dir} was deleted while the run trained; training stopped (nothing was recreated)")
        on_disk = {p.name for _, p in list_checkpoints(self.checkpoint_dir)}
        digests = {name: d for name, d in read_digests(self.checkpoint_dir).items() if name in on_disk}
        # the digest first: a checkpoint on disk always has its entry (a crash in between leaves an entry without a file)
        write_digests(self.checkpoint_dir, {**digests, path.name: hashlib.sha256(data).hexdigest()})
        atomic_write_bytes(path, data)
        for _, old in list_checkpoints(self.checkpoint_dir)[: -self.config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        self.on_checkpoint(step, path)
        return path

    def _resume(self, networks: dict[str, nn.Module], opts: dict[str, torch.optim.Optimizer]) -> tuple[int, float, dict | None, int | None]:
        self.damaged: list[int] = []
        if self.is_main:  # half-written checkpoints of a process killed mid-write (the run's lock is held: none is ours)
            for tmp in self.checkpoint_dir.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        digests = read_digests(self.checkpoint_dir)
        for step, path in reversed(list_checkpoints(self.checkpoint_dir)):
            try:
                if path.name in digests and file_digest(path) != digests[path.name]:
                    raise ValueError(f"{path.name} does not match its recorded SHA-256")  # flipped bits load without a word otherwise
                state = load_checkpoint(path, self.device)
            except torch.cuda.OutOfMemoryError:
                raise  # not damage: the device is full
            except (RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile):
                # A damaged file (ours are written atomically, so someone else's doing): set it aside, so that
                # it is neither the "newest" checkpoint again nor a reason to prune good ones; try an older one.
                self.damaged.append(step)
                if self.is_main:
                    path.rename(path.with_name(path.name + ".damaged"))
                continue
            if set(state["networks"]) != set(networks) or set(state["optimizers"]) != set(opts):
                raise ConfigError(
                    f"checkpoint {path} holds networks {sorted(state['networks'])} and optimizers {sorted(state['optimizers'])}, "
                    f"but this run trains {sorted(networks)} with {sorted(opts)}; start a new run"
                )
            for name, net in networks.items():
                net.load_state_dict(state["networks"][name])
            for name, opt in opts.items():
                opt.load_state_dict(state["optimizers"][name])
            return int(state["step"]), float(state["elapsed"]), (state["ema"] or None), step
        return 0, 0.0, None, None

    def _load_init(self, networks: dict[str, nn.Module]) -> None:
        """Load ``init`` into the network whose parameters it names, shape for shape (the others start fresh); a
        mismatch is a ``ConfigError`` naming the differences (the model settings must match the source's)."""
        init = self.init or {}
        for name, net in networks.items():
            own = net.state_dict()
            if set(own) != set(init):
                continue
            wrong = [f"{k} {tuple(init[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if tuple(init[k].shape) != tuple(v.shape)]
            if wrong:
                raise ConfigError(
                    f"train.init_from: the source's weights do not fit this run's {name!r} network ({len(wrong)} tensor(s) differ, e.g. "
                    f"{'; '.join(wrong[:3])}): set the model section (and the data it depends on) as the source had it"
                )
            net.load_state_dict({k: v.to(own[k].dtype) for k, v in init.items()})
            return
        sample = sorted(set(init) ^ set(next(iter(networks.values())).state_dict()))[:4]
        raise ConfigError(
            f"train.init_from: the source's weights name other tensors than any network of this run has (e.g. {', '.join(sample)}): "
            "set the model section as the source had it"
        )

    def plan(self, model: nn.Module, loss_fn: LossFn, margin: float = PLAN_MARGIN, probe_steps: int = 4) -> int:
        """Fit ``train.max_steps`` to ``train.max_minutes`` at this machine's measured pace; returns the planned steps.

        Times ``probe_steps`` optimizer steps (after one untimed) of ``loss_fn`` on a copy of ``model`` with a
        throwaway AdamW, so the schedule the run follows (warm-up, cosine decay, EMA) is one that completes in
        its budget rather than one sized for another machine and cut short. ``margin`` leaves room for EMA,
        logging and checkpoints. The plan is kept in ``checkpoints/plan.json``: a resumed run follows the plan it
        started with. A ``train.max_steps`` the user set caps it. Without ``train.max_minutes`` nothing changes.
        """
        cfg = self.config
        if not cfg.max_minutes:
            return cfg.max_steps or 0
        path = self.checkpoint_dir / PLAN
        plan: dict[str, Any] | None = None
        try:
            found = json.loads(path.read_text())
            if isinstance(found, dict) and isinstance(found.get("max_steps"), int) and found["max_steps"] > 0:
                plan = found
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            pass
        if plan is None:
            import copy

            probe = copy.deepcopy(model).to(self.device).train()
            opt = torch.optim.AdamW(probe.parameters(), lr=1e-6)
            times = []
            for i in range(probe_steps + 1):
                t0 = time.perf_counter()
                with self.autocast:
                    loss, _ = loss_fn(probe, 10**9 + i)  # batches no training step draws
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                times.append(time.perf_counter() - t0)
            del probe, opt
            pace = sorted(times[1:])[len(times[1:]) // 2]  # the median of the timed steps
            steps = max(1, int(cfg.max_minutes * 60 * margin / pace))
            if cfg.max_steps:
                steps = min(steps, cfg.max_steps)
            plan = {"max_steps": steps, "seconds_per_step": round(pace, 5), "max_minutes": cfg.max_minutes, "margin": margin}
            if self.world_size > 1:  # every rank follows rank 0's plan
                shared = [plan]
                dist.broadcast_object_list(shared, src=0)
                plan = shared[0]
            if self.is_main:
                self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, json.dumps(plan, indent=1))
        self.config = cfg.model_copy(update={"max_steps": plan["max_steps"]})
        self.planned = plan
        return plan["max_steps"]

    def fit(self, model: nn.Module, loss_fn: LossFn, count: str | None = None) -> TrainResult:
        """Train one network in place; at the end it holds the EMA weights (if EMA is on).

        ``loss_fn(model, step) -> (loss, metrics)`` picks its batch from ``step`` alone;
        ``metrics`` are floats or 0-d tensors averaged into progress events; ``count`` names
        the metric that counts the batch's items (see the module's docstring).
        """
        return self.fit_networks({ONE_NETWORK: model}, {ONE_PHASE: lambda nets, step, repeat: loss_fn(nets[ONE_NETWORK], step)}, count)

    def fit_networks(self, networks: dict[str, nn.Module], loss_fns: dict[str, PhaseLossFn], count: str | None = None) -> TrainResult:
        """Train several named networks in place, phase by phase (see the module's docstring).

        ``loss_fns`` maps each phase's name to ``loss(nets, step, repeat) -> (loss, metrics)``,
        where ``nets`` are the networks as the phase should call them (wrapped for DDP or
        ``torch.compile`` where asked) and ``repeat`` counts the phase's repeats within the step.
        The order of ``loss_fns`` is the phases' order unless ``train.phases`` gives one.
        """
        cfg = self.config
        for net in networks.values():
            net.to(self.device)
        settings = resolve_optimizers(cfg, list(networks))
        phases = resolve_phases(cfg, loss_fns, settings)
        opts = {name: make_optimizer([networks[n] for n in s.networks], s, self.device) for name, s in settings.items()}
        clip_params = {name: [p for n in s.networks for p in networks[n].parameters() if p.requires_grad] for name, s in settings.items()}
        trained = [n for n in networks if any(n in s.networks for s in settings.values())]
        ema_nets = trained if cfg.ema_networks is None else list(cfg.ema_networks)
        unknown = [n for n in ema_nets if n not in networks]
        if unknown:
            raise ConfigError(f"train.ema_networks names {', '.join(map(repr, unknown))}; the networks are: {', '.join(networks)}")
        step, elapsed, ema, resumed_from = self._resume(networks, opts)
        if resumed_from is None and self.init is not None:  # a fresh start from trained weights; a resume has its own
            self._load_init(networks)
        if self.is_main:
            self.on_resume(step)
        if not cfg.ema:
            ema = {}
        elif ema is None:
            ema = {n: {k: p.detach().clone().float() for k, p in networks[n].named_parameters()} for n in ema_nets}
        elif set(ema) != set(ema_nets):
            raise ConfigError(
                f"the checkpoint keeps an EMA of {sorted(ema)}, train.ema_networks asks for {sorted(ema_nets)}; start a new run to change it"
            )
        self._ema = ema
        ema_pairs = [(ema[n][k], p) for n in ema for k, p in networks[n].named_parameters()]
        ema_list, live_list = [e for e, _ in ema_pairs], [p for _, p in ema_pairs]
        max_seconds = cfg.max_minutes * 60 if cfg.max_minutes else None
        parameters = {n: sum(p.numel() for p in net.parameters() if p.requires_grad) for n, net in networks.items()}
        one = len(phases) == 1 and phases[0].repeat == 1

        def budget_left() -> str | None:
            if cfg.max_steps is not None and step >= cfg.max_steps:
                return "max_steps"
            if max_seconds is not None and elapsed >= max_seconds:
                return "max_minutes"
            return None

        def result(stopped_by: str, last: dict[str, float]) -> TrainResult:
            self._load_ema(networks, ema)
            for net in networks.values():
                net.eval()
            self.result = TrainResult(
                step,
                elapsed,
                stopped_by,
                self._newest_path(),
                last,
                resumed_from,
                parameters,
                count,
                list(self.damaged),
                counted=total_counted,
                counted_seconds=time.perf_counter() - session_start if total_counted else 0.0,
            )
            return self.result

        total_counted, session_start = 0.0, time.perf_counter()  # the run's average throughput, from this process's steps
        if budget_left():
            return result("already_done", {})

        calls: dict[str, nn.Module] = {}  # what the loss functions call: each network, or its DDP/compiled wrapper
        for name, net in networks.items():
            net.train()
            wrapped: nn.Module = net
            if self.world_size > 1 and name in trained:
                from torch.nn.parallel import DistributedDataParallel

                wrapped = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if cfg.compile:  # batch shapes vary: compile once for dynamic shapes, not per shape
                wrapped = torch.compile(wrapped, dynamic=True)
            calls[name] = wrapped
        all_params = [p for net in networks.values() for p in net.parameters()]
        # On a GPU, reading the loss every step would stall the launch queue: metrics stay on the
        # device and are read (and checked for NaN) at log steps and before every checkpoint.
        check_every = 1 if self.device.type == "cpu" else cfg.log_every
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        counted = 0.0
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        n_window, t_window, first_unchecked = 0, time.perf_counter(), step + 1
        last_metrics: dict[str, float] = {}
        started = time.perf_counter() - elapsed
        while True:
            progress = max(
                step / cfg.max_steps if cfg.max_steps else 0.0,
                elapsed / max_seconds if max_seconds else 0.0,
            )
            lrs = {name: learning_rate(s, step, progress) for name, s in settings.items()}
            for name, opt in opts.items():
                for group in opt.param_groups:
                    group["lr"] = lrs[name]
            values: dict[str, torch.Tensor | float] = {}
            sub = 0  # which phase repeat within the step: part of the seed
            for phase in phases:
                for repeat in range(phase.repeat):
                    # Each process draws its own noise; one process alone keeps the (seed, step) stream.
                    torch.manual_seed(step_seed(cfg.seed, step, sub, self.rank, self.world_size))
                    sub += 1
                    with self.autocast:
                        loss, metrics = phase.loss_fn(calls, step, repeat)
                    for p in all_params:  # only this phase's gradients reach its optimizer
                        p.grad = None
                    loss.backward()
                    bad = bad | ~torch.isfinite(loss.detach())
                    metrics = dict(metrics)
                    if count is not None and count in metrics:
                        items = float(metrics.pop(count))
                        counted += items
                        total_counted += items
                    found = {"loss": loss.detach().float(), **metrics}
                    clip = settings[phase.optimizer].grad_clip  # None or 0: no clipping
                    if clip:
                        gnorm = torch.nn.utils.clip_grad_norm_(clip_params[phase.optimizer], clip)
                        bad = bad | ~torch.isfinite(gnorm)
                        found["grad_norm"] = gnorm.detach().float()
                    if check_every == 1 and bool(bad):
                        raise self._diverged(step, step + 1, found)
                    opts[phase.optimizer].step()
                    for k, v in found.items():
                        key = k if one else f"{phase.name}_{k}"
                        values[key] = values[key] + v if key in values else v
                        counts[key] = counts.get(key, 0) + 1
            step += 1
            if ema:
                decay = min(cfg.ema, (1 + step) / (10 + step)) if cfg.ema_warmup else cfg.ema  # short runs: let EMA catch up early
                with torch.no_grad():
                    torch._foreach_lerp_(ema_list, [p.detach().float() for p in live_list], 1 - decay)
            for k, v in values.items():
                sums[k] = sums[k] + v if k in sums else (v if isinstance(v, torch.Tensor) else torch.tensor(float(v)))
            n_window += 1
            elapsed = time.perf_counter() - started
            if self.world_size > 1 and max_seconds is not None:  # every process must stop at the same step
                t = torch.tensor([elapsed], device=self.device)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                elapsed = float(t)
            stopped = budget_left()
            log_now = step % cfg.log_every == 0 or bool(stopped)
            save_now = step % cfg.checkpoint_every == 0 or bool(stopped)
            if log_now or save_now or step % check_every == 0:
                if bool(bad):  # weights are already damaged: keep the last good checkpoint
                    raise self._diverged(first_unchecked - 1, step, {k: v / max(counts[k], 1) for k, v in sums.items()})
                first_unchecked = step + 1
            if log_now:
                now = time.perf_counter()
                seconds = max(now - t_window, 1e-9)
                report = {k: float(v) / counts[k] for k, v in sums.items()}  # mean over the window's repeats
                done = max(step / cfg.max_steps if cfg.max_steps else 0.0, elapsed / max_seconds if max_seconds else 0.0)
                report.update({"lr" if len(lrs) == 1 else f"lr_{name}": lr for name, lr in lrs.items()})
                report.update(steps_per_s=n_window / seconds, elapsed_s=elapsed, progress=min(1.0, done))
                if count is not None:
                    report[f"{count}_per_s"] = float(counted) / seconds
                if self.is_main:
                    self.on_progress(step, cfg.max_steps if not max_seconds else None, report)
                last_metrics, sums, counts, counted, n_window, t_window = report, {}, {}, 0.0, 0, now
            if save_now:
                self._save(step, elapsed, networks, opts, ema)
                if self.world_size > 1:
                    dist.barrier()  # no process runs ahead of a checkpoint it could need on resume
            if stopped:
                return result(stopped, last_metrics)

    def record_fit(
        self, seconds: float, stopped_by: str = "fitted", parameters: dict[str, int] | None = None, metrics: dict[str, float] | None = None
    ) -> TrainResult:
        """Record a fit that needs no training loop (closed form, another library's optimiser) as the run's training.

        A generator whose ``fit`` does not call ``fit``/``fit_networks`` calls this instead, so the run
        has a training record like any other (``training.json``: seconds, how it stopped, parameters).
        """
        self.damaged = []
        self.result = TrainResult(0, float(seconds), stopped_by, None, dict(metrics or {}), None, dict(parameters or {}))
        return self.result

    def ema_state(self, network: str) -> dict[str, torch.Tensor] | None:
        """The EMA of a network's parameters so far, during a fit (None: no EMA kept for it).

        For a loss function that validates the averaged weights as training goes (a GAN
        choosing its best step on held-out data); the tensors are the engine's own, so copy
        them before changing anything.
        """
        return self._ema.get(network)

    def _newest_path(self) -> Path | None:
        newest = self.newest_checkpoint()
        return newest[1] if newest else None

    @staticmethod
    def _load_ema(networks: dict[str, nn.Module], ema: dict | None) -> None:
        with torch.no_grad():
            for name, table in (ema or {}).items():
                for k, p in networks[name].named_parameters():
                    p.copy_(table[k].to(p.dtype))

    def _diverged(self, first: int, last: int, values: dict) -> TrainingDiverged:
        newest = self.newest_checkpoint()
        kept = f"the last good checkpoint (step {newest[0]}) is kept at {newest[1]}" if newest else "no checkpoint had been written yet"
        where = f"at step {last}" if first >= last - 1 else f"between steps {first + 1} and {last}"
        shown = ", ".join(f"{k}={float(v):.4g}" for k, v in values.items() if k.endswith(("loss", "grad_norm")))
        return TrainingDiverged(
            f"training stopped {where}: the loss or gradients became NaN/infinite ({shown}); {kept}. "
            "Lower train.lr, set train.grad_clip, or check the data, then `genforge resume` the run."
        )


WEIGHTS_DIGEST = "weights_sha256"  # in the JSON beside saved weights: the SHA-256 of the weights file, checked at load


def save_weights(network: nn.Module | dict[str, torch.Tensor], path: Path, meta: dict[str, Any]) -> Path:
    """Trained weights for the sample step: float32 safetensors at ``path`` and ``meta`` (what rebuilds it) as JSON beside it.

    ``network`` is a module or its state dict. Both files are written atomically; the JSON is
    ``path`` with the suffix ``.json`` (``model.safetensors`` -> ``model.json``) and records the
    weights' SHA-256 (``weights_sha256``), which ``load_weights`` checks. The JSON is written first:
    a crash between the two leaves a mismatch that ``load_weights`` names, never weights read as
    another model's.
    """
    import hashlib
    import json

    from safetensors.torch import save

    path = Path(path)
    state = network.state_dict() if isinstance(network, nn.Module) else network
    data = save({k: v.detach().float().cpu().contiguous() for k, v in state.items()})
    atomic_write_text(path.with_suffix(".json"), json.dumps({**meta, WEIGHTS_DIGEST: hashlib.sha256(data).hexdigest()}, indent=1))
    atomic_write_bytes(path, data)
    return path


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """What ``save_weights`` wrote: the state dict and the meta; weights that do not match their recorded SHA-256 are refused."""
    import hashlib
    import json

    from safetensors.torch import load

    from .errors import DataError

    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    data = path.read_bytes()
    want = meta.pop(WEIGHTS_DIGEST, None)  # weights written before the digest was recorded (a shipped checkpoint) have none
    if want is not None and hashlib.sha256(data).hexdigest() != want:
        raise DataError(
            f"{path} does not match the SHA-256 recorded in {path.with_suffix('.json').name} (damaged or replaced since it was "
            "written); restore it, or train again (`genforge resume` re-fits a run whose training is unfinished)"
        )
    return load(data), meta
