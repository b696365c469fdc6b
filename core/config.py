"""Run specs: a generator's pydantic config, read from YAML plus ``--set key=value`` overrides.

Every generator's config has the same five sections, so that
``--set data.path=my.smi --set train.max_steps=200 --set sample.n=1000`` reads the same
for every generator. ``data``, ``model`` and ``evaluate`` are the generator's own;
``train`` and ``sample`` start from the core models below and may be extended.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError


class Section(BaseModel):
    """Base of every config section: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainConfig(Section):
    """The core training engine's settings (see ``genforge.core.training``)."""

    max_steps: int | None = Field(2000, ge=1, description="stop after this many optimizer steps (None: no step limit)")
    max_minutes: float | None = Field(None, gt=0, description="stop after this much training wall-clock time, summed over resumes")
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = Field(50, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="the cosine schedule ends at lr * min_lr_ratio")
    grad_clip: float | None = Field(1.0, gt=0, description="clip the global gradient norm (None: no clipping)")
    ema: float | None = Field(0.999, gt=0, lt=1, description="EMA decay of the weights used for sampling (None: no EMA)")
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept on disk")
    log_every: int = Field(10, ge=1, description="steps between progress events")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    devices: int = Field(1, ge=1, description="processes (GPUs) for data-parallel training; >1 launches torchrun (DDP), batch_size is the global batch")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (None: torch's default)")
    compile: bool = Field(False, description="torch.compile the model (dynamic shapes): pays on a GPU over minutes of training, costs a compile first")


class SampleConfig(Section):
    n: int = Field(1000, ge=1, description="number of samples to draw")
    batch_size: int = Field(500, ge=1)
    seed: int = 0


class GeneratorConfig(Section):
    """A generator's whole spec. Subclasses narrow the section types."""

    data: Section = Field(default_factory=Section)
    model: Section = Field(default_factory=Section)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    evaluate: Section = Field(default_factory=Section)


# -- reading specs ---------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.max_steps=200`` -> (["train", "max_steps"], 200). Values are read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. train.max_steps=200")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: the key must be a dotted field name such as train.max_steps")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _model_fields(model: type[BaseModel]) -> dict[str, Any]:
    return dict(model.model_fields)


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_type(arg)
        if found is not None:
            return found
    return None


def _check_path(config_cls: type[BaseModel], path: list[str]) -> None:
    """Raise a ConfigError naming the allowed fields when ``path`` is not a field."""
    model: type[BaseModel] | None = config_cls
    for depth, part in enumerate(path):
        if model is None:
            raise ConfigError(f"unknown field {'.'.join(path)!r}: {'.'.join(path[:depth])} takes a value, not fields")
        fields = _model_fields(model)
        if part not in fields:
            where = ".".join(path[:depth]) or "the spec"
            raise ConfigError(f"unknown field {'.'.join(path)!r}; {where} has: {', '.join(fields)}")
        model = _section_type(fields[part].annotation)


def apply_override(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[path[-1]] = value


def _describe_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    ctx = err.get("ctx") or {}
    if err["type"] == "literal_error" and "expected" in ctx:
        msg = f"must be one of {ctx['expected']}"
    if err["type"] == "extra_forbidden":
        msg = "is not a field"
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{loc}: {msg}{shown}"


def validate_spec(config_cls: type[GeneratorConfig], tree: dict[str, Any]) -> GeneratorConfig:
    try:
        return config_cls.model_validate(tree)
    except ValidationError as exc:
        errors = [_describe_error(e) for e in exc.errors()]
        raise ConfigError("invalid spec: " + "; ".join(errors)) from None


def load_spec(
    config_cls: type[GeneratorConfig],
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> GeneratorConfig:
    """Resolve a spec: ``base`` (a dict), then a YAML file, then ``--set`` overrides, in that order."""
    tree: dict[str, Any] = dict(base or {})
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections (data, model, train, sample, evaluate)")
        loaded.pop("generator", None)
        tree = _merge(tree, loaded)
    for text in overrides:
        keys, value = parse_override(text)
        _check_path(config_cls, keys)
        apply_override(tree, keys, value)
    return validate_spec(config_cls, tree)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
