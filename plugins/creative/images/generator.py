"""The ``image-diffusion`` generator: an EDM-preconditioned U-Net, class-conditional with classifier-free guidance.

prepare: digits, CIFAR-10 or a folder -> ``train.npz``/``test.npz`` at the configured size (``data.py``).
fit: the U-Net (``unet.py``) trained with EDM's objective (``edm.py``) through the core
engine (EMA, checkpoints, resume, budgets); class labels are dropped to "no class" with
probability ``model.label_dropout`` so one network serves conditional and unconditional sampling.
sample: ``sample.n`` images by the chosen sampler and step count, all of one class
(``sample.label``: a class name or index) or spread evenly over the classes; written as
the ``images`` kind (``images.npz`` with the labels asked for, and one PNG each).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from genforge.core import (
    Checkpoint,
    ConfigError,
    Generator,
    GeneratorConfig,
    PreparedData,
    Reference,
    Run,
    SampleConfig,
    Samples,
    TrainConfig,
    Trainer,
)
from genforge.core.kinds import Images
from genforge.core.training import load_weights, save_weights

from . import data as image_data
from .data import ImageDataConfig
from .edm import EDM, SAMPLERS, evaluations, guided, stochastic
from .unet import UNet, UNetConfig

WEIGHTS = "model.safetensors"  # with model.json beside it (core.training.save_weights)


class ImageModelConfig(UNetConfig):
    conditional: bool = Field(
        True, description="condition on class labels where the data has them (digits, CIFAR-10, a folder's sub-folders)"
    )
    label_dropout: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="share of training images whose label is dropped, so the network also learns the unconditional model (classifier-free guidance)",
    )


class ImageTrainConfig(TrainConfig):
    max_steps: int | None = Field(
        None,
        ge=1,
        description="None: 2,000 for digits and CIFAR-10; for a folder, as many as complete within max_minutes at this machine's measured pace (train.plan)",
    )
    max_minutes: float | None = Field(8.0, gt=0)
    batch_size: int | None = Field(None, ge=1, description="None: 128, or 32 for a folder (a few hundred pictures want many small steps)")
    lr: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(100, ge=0)
    ema: float | None = Field(0.998, gt=0, lt=1)
    checkpoint_every: int = Field(200, ge=1)
    augment: float | None = Field(
        None,
        ge=0,
        le=1,
        description="share of training images given one of the seven flips and quarter turns, with the network told which (EDM's non-leaking augmentation: samples come out untransformed). None: 0.5 for a folder, 0 for digits and CIFAR-10",
    )
    plan: bool | None = Field(
        None,
        description="measure this machine's step time and plan max_steps so the schedule completes within max_minutes (None: on for a folder unless train.max_steps is set)",
    )


class ImageSampleConfig(SampleConfig):
    n: int = Field(1000, ge=1, le=1_000_000, description="images to draw")
    batch_size: int = Field(250, ge=1)
    sampler: Literal["heun", "euler", "stochastic"] = Field(
        "heun",
        description="heun: EDM's deterministic 2nd-order sampler (2·steps−1 evaluations); euler: 1st order (DDIM), one per step; stochastic: EDM's churn sampler",
    )
    steps: int = Field(20, ge=1, le=1000, description="noise levels the sampler walks down (heun with 20: 39 network evaluations)")
    guidance: float = Field(
        1.0,
        ge=0,
        description="classifier-free guidance scale (1: the conditional model alone; >1 sharper classes, less variety; 0: unconditional)",
    )
    label: str | None = Field(
        None, description="draw only this class (a name such as '7' or 'logos', or an index); None: the classes in equal shares"
    )
    churn: float = Field(40.0, ge=0, description="stochastic sampler: how much noise is added back over the steps")

    @field_validator("label", mode="before")
    @classmethod
    def _label_as_text(cls, value):  # --set sample.label=7 reads 7 as a number: a class name or index all the same
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ImageDiffusionConfig(GeneratorConfig):
    data: ImageDataConfig = Field(default_factory=ImageDataConfig)
    model: ImageModelConfig = Field(default_factory=ImageModelConfig)
    train: ImageTrainConfig = Field(default_factory=ImageTrainConfig)
    sample: ImageSampleConfig = Field(default_factory=ImageSampleConfig)

    @model_validator(mode="after")
    def _sizes(self) -> ImageDiffusionConfig:
        self.model.check_resolution(self.data.resolution)
        # A folder is a few hundred pictures on a laptop: many small steps, as many as complete in the budget.
        folder, t = self.data.origin == "folder", self.train
        plan = t.plan if t.plan is not None else folder and t.max_steps is None
        steps = t.max_steps if t.max_steps is not None or plan else 2000
        batch = t.batch_size if t.batch_size is not None else (32 if folder else 128)
        self.__dict__["train"] = t.model_copy(update={"plan": plan, "max_steps": steps, "batch_size": batch})  # no re-validation
        return self

    def planned(self) -> bool:
        """Whether fit plans max_steps from the measured step time (``train.plan``, resolved by the validator)."""
        return bool(self.train.plan)

    def augment_share(self) -> float:
        return self.train.augment if self.train.augment is not None else (0.5 if self.data.origin == "folder" else 0.0)


def to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W[, C]) -> float (N, C, H, W) in [-1, 1] (on the input's device)."""
    x = torch.as_tensor(images).float() / 127.5 - 1
    return x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W) for one channel, (N, H, W, C) for three."""
    out = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    return out[:, 0].numpy() if out.shape[1] == 1 else out.permute(0, 2, 3, 1).numpy()


AUGMENTS = 8  # the dihedral group of the square: 4 quarter turns, each with or without a mirror; 0 is the identity


def dihedral(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images, each turned ``which % 4`` quarter turns and mirrored when ``which >= 4``."""
    out = x.clone()
    for k in which.unique().tolist():
        if k == 0:
            continue
        rows = which == k
        y = torch.rot90(x[rows], k % 4, dims=(-2, -1))
        out[rows] = y.flip(-1) if k >= 4 else y
    return out


def resolve_label(label: str | None, classes: list[str]) -> int | None:
    """``sample.label`` -> a class index (None: all classes); a one-line error names the classes."""
    if label is None:
        return None
    if not classes:
        raise ConfigError(f"sample.label={label!r}, but this model has no classes (its data had no labels, or model.conditional=false)")
    if label in classes:
        return classes.index(label)
    if label.lstrip("-").isdigit() and 0 <= int(label) < len(classes):
        return int(label)
    raise ConfigError(f"sample.label={label!r} is not a class of this model; classes: {', '.join(classes)}")


class ImageDiffusion(Generator):
    name: ClassVar[str] = "image-diffusion"
    kind: ClassVar[str] = "images"
    Config: ClassVar[type[ImageDiffusionConfig]] = ImageDiffusionConfig
    description: ClassVar[str] = (
        "EDM diffusion with a U-Net denoiser; class-conditional with classifier-free guidance; Heun, Euler or stochastic sampling"
    )
    libraries: ClassVar[tuple[str, ...]] = ("torch", "Pillow", "scikit-learn")
    # the promotion gate (docs/models.md): FD lower; recall not lower
    gate: ClassVar[dict] = {"metrics": ["image.fd"], "guards": {"image.recall": 0.0}}
    test_spec: ClassVar[dict] = {  # seconds on 2 cores
        "data": {"resolution": 8},
        "model": {"channels": 8, "channel_mult": [1, 2], "attention_at": 4, "groups": 4},
        "train": {"max_steps": 12, "max_minutes": None, "batch_size": 16, "checkpoint_every": 5, "log_every": 2},
        "sample": {"n": 40, "steps": 3},
        "evaluate": {"image": {"classifier_steps": 60}},
    }

    # -- prepare ------------------------------------------------------------------------------
    def prepare(self, config: ImageDiffusionConfig, run: Run) -> PreparedData:
        path, key, stats, cache = image_data.prepare(config.data, run.cache_root)
        return PreparedData(path, key, {**stats, "cache": cache})

    def reference(self, data: PreparedData, config: ImageDiffusionConfig) -> Reference:
        return Reference(self.kind, test=data.path / "test.npz", train=data.path / "train.npz", name=data.stats.get("source", ""))

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, data: PreparedData, config: ImageDiffusionConfig, trainer: Trainer) -> Checkpoint:
        images, labels, classes = image_data.load_split(data.path, "train")
        conditional = config.model.conditional and bool(classes) and bool((labels >= 0).all())
        classes = classes if conditional else []
        resolve_label(config.sample.label, classes)  # a wrong label stops here, before training
        # kept as uint8 (N, H, W[, C]); each batch is converted to [-1, 1] floats where it is used
        x_all = torch.from_numpy(images)
        y_all = torch.from_numpy(labels)
        channels = 1 if images.ndim == 3 else images.shape[-1]
        device, cfg, edm = trainer.device, config.train, EDM()
        channels_last = device.type == "cuda"
        if device.type == "cuda":  # the whole training set on the GPU; batches are gathered there
            x_all, y_all = x_all.to(device), y_all.to(device)
        torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone
        augment = config.augment_share()
        n_augment = AUGMENTS if augment > 0 else 0
        net = UNet(config.model, channels, config.data.resolution, len(classes), n_augment)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        flips, dropout, null = config.data.flips(), config.model.label_dropout, len(classes)

        def loss_fn(model: UNet, step: int):
            # the batch depends on (seed, step) alone, so a resumed run sees the same batches
            idx = trainer.shard(np.random.default_rng([cfg.seed, step]).integers(0, len(x_all), cfg.batch_size))
            idx = torch.from_numpy(idx).to(x_all.device)
            x = to_tensor(x_all[idx].to(device, non_blocking=True))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if flips:
                x = torch.where(torch.rand(len(x), 1, 1, 1, device=device) < 0.5, x.flip(-1), x)
            which = None
            if n_augment:  # non-leaking: the network is told the transform, and sampling asks for none
                which = torch.randint(1, AUGMENTS, (len(x),), device=device)
                which = torch.where(torch.rand(len(x), device=device) < augment, which, torch.zeros_like(which))
                x = dihedral(x, which)
            y = None
            if conditional:
                y = y_all[idx].to(device)
                y = torch.where(torch.rand(len(y), device=device) < dropout, torch.full_like(y, null), y)
            loss, metrics = edm.loss(model, x, y, which)
            return loss, {**metrics, "images": len(x)}

        if config.planned():
            trainer.plan(net, loss_fn)
        result = trainer.fit(net, loss_fn, count="images")
        weights = trainer.run_dir / WEIGHTS
        if not trainer.is_main:
            return Checkpoint(weights, result.step)
        meta = {
            "model": UNetConfig(**config.model.model_dump(include=set(UNetConfig.model_fields))).model_dump(),
            "image_channels": channels,
            "resolution": config.data.resolution,
            "classes": classes,
            "augment": n_augment,
            "edm": EDM().__dict__,
            "step": result.step,
        }
        save_weights(net, weights, meta)
        params = sum(p.numel() for p in net.parameters())
        details = {
            "parameters": params,
            "resolution": config.data.resolution,
            "channels": channels,
            "classes": len(classes) or "unconditional",
            "flip": flips,
            "augment": augment,
            "batch_size": trainer.config.batch_size,
        }
        return Checkpoint(weights, result.step, details=details)

    # -- sample -------------------------------------------------------------------------------
    @staticmethod
    def load_model(weights: Path, device: torch.device | str = "cpu") -> tuple[UNet, dict]:
        state, meta = load_weights(weights)
        net = UNet(UNetConfig(**meta["model"]), meta["image_channels"], meta["resolution"], len(meta["classes"]), meta.get("augment", 0))
        net.load_state_dict(state)
        return net.to(device).eval(), meta

    def sample(self, checkpoint: Checkpoint, config: ImageDiffusionConfig, run: Run) -> Samples:
        from genforge.core.training import choose_device

        cfg = config.sample
        device = choose_device(config.train.device)
        net, meta = self.load_model(checkpoint.path, device)
        classes = meta["classes"]
        label = resolve_label(cfg.label, classes)
        edm = EDM(**meta["edm"])
        sigmas = edm.sigmas(cfg.steps, device)
        gen = torch.Generator(device=device).manual_seed(cfg.seed)
        shape = (meta["image_channels"], meta["resolution"], meta["resolution"])
        if classes:  # one class, or every class in equal shares (in turn)
            wanted = np.full(cfg.n, label) if label is not None else np.arange(cfg.n) % len(classes)
        out, done = [], 0
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
        with autocast:
            while done < cfg.n:
                b = min(cfg.batch_size, cfg.n - done)
                labels = torch.from_numpy(wanted[done : done + b]).to(device) if classes else None
                denoise = guided(edm, net, labels, cfg.guidance, null_label=len(classes))
                noise = torch.randn((b, *shape), generator=gen, device=device)
                if cfg.sampler == "stochastic":
                    x = stochastic(denoise, noise, sigmas, churn=cfg.churn, generator=gen)
                else:
                    x = SAMPLERS[cfg.sampler](denoise, noise, sigmas)
                out.append(to_uint8(x))
                done += b
                run.report_progress("sample", done, cfg.n)
        arrays = {"images": np.concatenate(out)}
        if classes:
            arrays["labels"] = wanted.astype(np.int64)
            arrays["classes"] = np.asarray(classes, dtype=str)
        path = Images().write(arrays, run.samples_dir)
        per_image = evaluations(cfg.sampler, cfg.steps) * (2 if classes and cfg.guidance not in (0.0, 1.0) else 1)
        details = {
            "sampler": cfg.sampler,
            "steps": cfg.steps,
            "network_evaluations_per_image": per_image,
            "guidance": cfg.guidance if classes else None,
            "label": classes[label] if label is not None else ("all classes" if classes else None),
        }
        return Samples(self.kind, path, done, details)
