"""The core training engine, shared by every generator.

A generator hands the engine its model and a ``loss_fn(model, step)``; the engine owns
everything else: device and precision, optimizer and schedule, clipping, EMA, budgets,
checkpoints and resume, the NaN guard, seeding and progress events.

Reproducibility: before each step the engine seeds torch from (seed, step), and
``loss_fn`` must choose its batch from ``step`` alone. A run stopped at any checkpoint
and resumed therefore takes exactly the same steps as an uninterrupted one.

Several devices (``train.devices > 1``): the run's train step is launched under
``torchrun`` (see ``genforge.core.distributed``); each process builds the same model, the
engine wraps it in DistributedDataParallel, and ``loss_fn`` takes its shard of the global
batch with ``trainer.shard(batch)``. Gradients are averaged over the processes, so k
steps on N processes equal k steps of one process on the same global batch. Only rank 0
writes checkpoints and sends progress events.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .config import TrainConfig
from .errors import TrainingDiverged
from .store import atomic_write_bytes

LossFn = Callable[[nn.Module, int], tuple[torch.Tensor, dict[str, "float | torch.Tensor"]]]
ProgressFn = Callable[[int, int | None, dict[str, float]], None]
CheckpointFn = Callable[[int, Path], None]
_CKPT = re.compile(r"^step-(\d+)\.pt$")


def choose_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainingDiverged("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device("cuda", local_rank) if requested == "cuda" else torch.device(requested)


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # No weight decay on biases, norms and embeddings' positional tables (1-D parameters).
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.betas[0])
    fused = {"fused": True} if device.type == "cuda" else {}
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=config.lr, betas=config.betas, **fused)


def learning_rate(config: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over ``warmup_steps``, then constant or cosine down to ``lr * min_lr_ratio``.

    ``progress`` is the fraction of the budget used (steps or wall-clock, whichever is further).
    """
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.schedule == "constant":
        return config.lr * warm
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * warm * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cos)


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.exists():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT.match(p.name))]
    return sorted(found)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by the engine; never unpickles arbitrary objects."""
    return torch.load(path, map_location=map_location, weights_only=True)


@dataclass
class TrainResult:
    step: int
    elapsed: float
    stopped_by: str  # "max_steps", "max_minutes" or "already_done"
    checkpoint: Path | None
    last_metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None


class Trainer:
    """Runs a training loop to its budget, checkpointing into ``run_dir/checkpoints``."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        on_progress: ProgressFn | None = None,
        on_checkpoint: CheckpointFn | None = None,
    ):
        self.config = config
        self.run_dir = Path(run_dir)  # where the generator writes what it exports
        self.checkpoint_dir = self.run_dir / "checkpoints"
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if distributed else 0
        self.world_size = dist.get_world_size() if distributed else 1
        self.device = choose_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.on_progress = on_progress or (lambda *a: None)
        self.on_checkpoint = on_checkpoint or (lambda *a: None)
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

    def _save(self, step: int, elapsed: float, model: nn.Module, opt: torch.optim.Optimizer, ema: dict | None) -> Path | None:
        if not self.is_main:
            return None
        state = {
            "step": step,
            "elapsed": elapsed,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "ema": ema or {},
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        path = self.checkpoint_dir / f"step-{step:08d}.pt"
        atomic_write_bytes(path, buf.getvalue())
        for _, old in list_checkpoints(self.checkpoint_dir)[: -self.config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        self.on_checkpoint(step, path)
        return path

    def _resume(self, model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, float, dict | None, int | None]:
        for step, path in reversed(list_checkpoints(self.checkpoint_dir)):
            try:
                state = load_checkpoint(path, self.device)
            except Exception:  # a damaged file (not ours: ours are written atomically); try an older one
                continue
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            return int(state["step"]), float(state["elapsed"]), (state["ema"] or None), step
        return 0, 0.0, None, None

    def fit(self, model: nn.Module, loss_fn: LossFn) -> TrainResult:
        """Train ``model`` in place; at the end it holds the EMA weights (if EMA is on)."""
        cfg = self.config
        model.to(self.device)
        opt = make_optimizer(model, cfg, self.device)
        step, elapsed, ema, resumed_from = self._resume(model, opt)
        params = dict(model.named_parameters())
        if cfg.ema and ema is None:
            ema = {k: p.detach().clone().float() for k, p in params.items()}
        ema_list = [ema[k] for k in params] if ema is not None else []
        max_seconds = cfg.max_minutes * 60 if cfg.max_minutes else None

        def budget_left() -> str | None:
            if cfg.max_steps is not None and step >= cfg.max_steps:
                return "max_steps"
            if max_seconds is not None and elapsed >= max_seconds:
                return "max_minutes"
            return None

        stopped = budget_left()
        if stopped:
            self._load_ema(model, ema)
            return TrainResult(step, elapsed, "already_done", self._newest_path(), resumed_from=resumed_from)

        model.train()
        net: nn.Module = model  # what loss_fn calls: the model, or its DDP wrapper
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:  # batches vary in length: compile once for dynamic shapes, not per length
            net = torch.compile(net, dynamic=True)
        # On a GPU, reading the loss every step would stall the launch queue: metrics stay on the
        # device and are read (and checked for NaN) at log steps and before every checkpoint.
        check_every = 1 if self.device.type == "cpu" else cfg.log_every
        sums: dict[str, torch.Tensor] = {}
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        n_window, t_window, first_unchecked = 0, time.perf_counter(), step + 1
        last_metrics: dict[str, float] = {}
        started = time.perf_counter() - elapsed
        while True:
            progress = max(
                step / cfg.max_steps if cfg.max_steps else 0.0,
                elapsed / max_seconds if max_seconds else 0.0,
            )
            lr = learning_rate(cfg, step, progress)
            for group in opt.param_groups:
                group["lr"] = lr
            # Each process draws its own noise; one process alone keeps the (seed, step) stream.
            torch.manual_seed((cfg.seed * 1_000_003 + step) * (1009 if self.world_size > 1 else 1) + self.rank)
            with self.autocast:
                loss, metrics = loss_fn(net, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            bad = bad | ~torch.isfinite(loss.detach())
            values = {"loss": loss.detach().float(), **metrics}
            if cfg.grad_clip:
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                bad = bad | ~torch.isfinite(gnorm)
                values["grad_norm"] = gnorm.detach().float()
            if check_every == 1 and bool(bad):
                raise self._diverged(step, step + 1, values)
            opt.step()
            step += 1
            if ema is not None:
                decay = min(cfg.ema, (1 + step) / (10 + step))  # short runs: let EMA catch up early
                with torch.no_grad():
                    torch._foreach_lerp_(ema_list, [p.detach().float() for p in params.values()], 1 - decay)
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
                    raise self._diverged(first_unchecked - 1, step, {k: v / n_window for k, v in sums.items()})
                first_unchecked = step + 1
            if log_now:
                now = time.perf_counter()
                report = {k: float(v) / n_window for k, v in sums.items()}
                done = max(step / cfg.max_steps if cfg.max_steps else 0.0, elapsed / max_seconds if max_seconds else 0.0)
                report.update(lr=lr, steps_per_s=n_window / max(now - t_window, 1e-9), elapsed_s=elapsed, progress=min(1.0, done))
                if "tokens" in report:
                    report["tokens_per_s"] = report.pop("tokens") * report["steps_per_s"]
                if self.is_main:
                    self.on_progress(step, cfg.max_steps if not max_seconds else None, report)
                last_metrics, sums, n_window, t_window = report, {}, 0, now
            if save_now:
                self._save(step, elapsed, model, opt, ema)
                if self.world_size > 1:
                    dist.barrier()  # no process runs ahead of a checkpoint it could need on resume
            if stopped:
                break
        self._load_ema(model, ema)
        model.eval()
        return TrainResult(step, elapsed, stopped, self._newest_path(), last_metrics, resumed_from)

    def _newest_path(self) -> Path | None:
        newest = self.newest_checkpoint()
        return newest[1] if newest else None

    @staticmethod
    def _load_ema(model: nn.Module, ema: dict | None) -> None:
        if ema:
            with torch.no_grad():
                for k, p in model.named_parameters():
                    p.copy_(ema[k].to(p.dtype))

    def _diverged(self, first: int, last: int, values: dict) -> TrainingDiverged:
        newest = self.newest_checkpoint()
        kept = f"the last good checkpoint (step {newest[0]}) is kept at {newest[1]}" if newest else "no checkpoint had been written yet"
        where = f"at step {last}" if first >= last - 1 else f"between steps {first + 1} and {last}"
        shown = ", ".join(f"{k}={float(v):.4g}" for k, v in values.items() if k in ("loss", "grad_norm"))
        return TrainingDiverged(
            f"training stopped {where}: the loss or gradients became NaN/infinite ({shown}); {kept}. "
            "Lower train.lr, set train.grad_clip, or check the data, then `genforge resume` the run."
        )
