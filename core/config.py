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

from .errors import ConfigError, shorten, shown


class Section(BaseModel):
    """Base of every config section: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


Optimizer = Literal["sgd", "adam", "adamw"]
Schedule = Literal["constant", "cosine"]


class OptimizerConfig(Section):
    """One named optimizer of ``train.optimizers``: the networks it updates and its own settings.

    A setting left unset takes the ``train`` section's value, so a GAN writes only what differs:
    ``critic: {networks: [critic], lr: 1e-4}``.
    """

    networks: list[str] = Field(default_factory=list, description="names of the networks it updates (empty: every network)")
    optimizer: Optimizer | None = Field(None, description="sgd, adam or adamw (unset: train.optimizer)")
    lr: float | None = Field(None, gt=0, description="peak learning rate (unset: train.lr)")
    betas: tuple[float, float] | None = Field(None, description="Adam betas, or (momentum, _) for SGD (unset: train.betas)")
    weight_decay: float | None = Field(None, ge=0, description="unset: train.weight_decay")
    warmup_steps: int | None = Field(None, ge=0, description="unset: train.warmup_steps")
    schedule: Schedule | None = Field(None, description="unset: train.schedule")
    min_lr_ratio: float | None = Field(None, ge=0, le=1, description="unset: train.min_lr_ratio")
    grad_clip: float | None = Field(
        None, ge=0, description="clip the norm of this optimizer's gradients (0: no clipping; unset: train.grad_clip)"
    )


class PhaseConfig(Section):
    """One training phase of ``train.phases``: which optimizer it steps and how many times per step."""

    optimizer: str | None = Field(None, description="the optimizer it steps (unset: the one named like the phase, else the only one)")
    repeat: int = Field(1, ge=1, description="optimizer steps of this phase per training step (a WGAN critic: 5)")


class TrainConfig(Section):
    """The core training engine's settings (see ``genforge.core.training``).

    One network: the top-level optimizer fields are all there is. Several networks: name
    the optimizers (``optimizers``) and the phases of one training step (``phases``, in
    order, each with a repeat count); unset optimizer fields fall back to the top-level ones.
    """

    max_steps: int | None = Field(
        2000, ge=1, description="stop after this many training steps (a step runs each phase its repeat count; None: no step limit)"
    )
    max_minutes: float | None = Field(None, gt=0, description="stop after this much training wall-clock time, summed over resumes")
    batch_size: int = Field(128, ge=1)
    init_from: str | None = Field(
        None,
        description="start from the trained weights of a run of the same generator (its id, a unique prefix or latest) or a "
        "model version (NAME, NAME@alias, NAME:N), then train this run's own schedule; the model settings must match the source's",
    )
    optimizer: Optimizer = "adamw"
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = Field(50, ge=0)
    schedule: Schedule = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="the cosine schedule ends at lr * min_lr_ratio")
    grad_clip: float | None = Field(1.0, gt=0, description="clip the global gradient norm (None: no clipping)")
    ema: float | None = Field(0.999, gt=0, lt=1, description="EMA decay of the weights used for sampling (None: no EMA)")
    ema_warmup: bool = Field(
        True,
        description="let the EMA catch up early (decay min(ema, (1+step)/(10+step))); false when the weights start from a "
        "checkpoint's EMA (fine-tuning), so the average keeps them instead of following the first steps",
    )
    ema_networks: list[str] | None = Field(None, description="networks that keep an EMA of their weights (None: every trained network)")
    optimizers: dict[str, OptimizerConfig] = Field(
        default_factory=dict, description="named optimizers for several networks (empty: one optimizer over every network)"
    )
    phases: dict[str, PhaseConfig] = Field(
        default_factory=dict, description="the phases of one training step, in order (empty: the generator's phases, once each)"
    )
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept on disk")
    log_every: int = Field(10, ge=1, description="steps between progress events")
    seed: int = Field(0, ge=0, description="seed of the training's randomness (0 or more)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    devices: int = Field(
        1, ge=1, description="processes (GPUs) for data-parallel training; >1 launches torchrun (DDP), batch_size is the global batch"
    )
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (None: torch's default)")
    compile: bool = Field(
        False, description="torch.compile the networks (dynamic shapes): pays on a GPU over minutes of training, costs a compile first"
    )


class SampleConfig(Section):
    n: int = Field(1000, ge=1, description="number of samples to draw")
    batch_size: int = Field(500, ge=1)
    seed: int = Field(0, ge=0, description="seed of the sampling's randomness (0 or more)")


class DataConfig(Section):
    """Base of a generator's ``data`` section: what the host enforces for every generator. Subclass it to add fields.

    A ``data`` section that does not subclass it gets ``max_rejected`` all the same (``spec_model``).
    """

    max_rejected: float = Field(
        0.5, ge=0, le=1, description="stop when more than this share of the training rows is rejected (probably the wrong file)"
    )


class PromoteConfig(Section):
    """The ``promote`` section: register the finished run as the next version of ``model`` and gate it.

    The gate compares the new version with the one ``alias`` points at, on the same reference
    data, and moves the alias only when every decisive metric is better by ``margin`` and no
    guard metric is worse than its tolerance. Left as None, ``metrics``, ``margin`` and ``guards``
    are the generator's declared gate (``Generator.gate``).
    """

    model: str | None = Field(None, description="register the finished run as the next version of this model and gate it (None: neither)")
    alias: str = Field("champion", description="the alias the gate moves when the new version wins")
    metrics: list[str] | None = Field(
        None, description="the decisive metrics (evaluator.metric): each must be better by the margin (None: the generator's gate)"
    )
    margin: float | None = Field(
        None, ge=0, description="the relative improvement each decisive metric needs: 0.02 is 2 % (None: the generator's)"
    )
    guards: dict[str, float] | None = Field(
        None, description="metric (evaluator.metric) -> the relative amount it may get worse by: 0 is not worse (None: the generator's)"
    )
    thresholds: dict[str, float] | None = Field(
        None, description="metric -> the value the new version must reach, in the metric's direction (None: the generator's)"
    )


class GeneratorConfig(Section):
    """A generator's whole spec. Subclasses narrow the ``data``, ``model``, ``train`` and ``sample`` types.

    ``evaluate`` is not the generator's: it holds one section per evaluator that accepts
    the generator's kind (``evaluate.<evaluator>.<field>``), each validated by that evaluator's
    ``Config``, and the host's own settings (``evaluate.timeout_minutes``, see ``EVALUATE_SETTINGS``).
    ``spec_model`` builds it for the evaluators installed.
    """

    data: DataConfig = Field(default_factory=DataConfig)
    model: Section = Field(default_factory=Section)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    evaluate: Section = Field(default_factory=Section)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)


EVALUATE_SETTINGS: dict[str, Any] = {  # the host's settings in the ``evaluate`` section (no evaluator may take these names)
    "timeout_minutes": (
        float,
        Field(
            30.0,
            gt=0,
            description="an evaluator still running after this many minutes is named and skipped like one that failed "
            "(its metrics are lost; the run then fails unless the evaluator is optional)",
        ),
    ),
}


def spec_model(config_cls: type[GeneratorConfig], evaluators: list[Any], strict: bool = True) -> type[GeneratorConfig]:
    """The generator's config with an ``evaluate`` section of one field per evaluator (its ``Config``).

    ``strict=False`` ignores sections of evaluators that are no longer installed (resuming
    an older run) instead of rejecting them.
    """
    from pydantic import create_model

    fields: dict[str, Any] = {
        ev.name: (ev.Config, Field(default_factory=ev.Config, description=ev.description or f"settings of evaluator {ev.name}"))
        for ev in evaluators
    }
    fields.update(EVALUATE_SETTINGS)  # the host's own, beside the evaluators' sections
    base = Section if strict else _LenientSection
    evaluate = create_model(f"{config_cls.__name__}Evaluate", __base__=base, **fields)
    extra: dict[str, Any] = {"evaluate": (evaluate, Field(default_factory=evaluate))}
    data_cls = _section_type(config_cls.model_fields["data"].annotation)
    if data_cls is not None and "max_rejected" not in data_cls.model_fields:  # the host enforces it for every generator
        data = create_model(data_cls.__name__, __base__=data_cls, max_rejected=(float, DataConfig.model_fields["max_rejected"]))
        extra["data"] = (data, Field(default_factory=data))
    return create_model(config_cls.__name__, __base__=config_cls, **extra)


class _LenientSection(Section):
    model_config = ConfigDict(extra="ignore", validate_assignment=True)


# -- reading specs ---------------------------------------------------------------------


MAX_DEPTH = 32  # levels of nesting a spec may have: deeper is no spec, and would exhaust the stack on the way


class YamlRefused(ValueError):
    """YAML genforge does not read: anchors or aliases, nesting deeper than ``MAX_DEPTH``, or not YAML at all (one line)."""


class _PlainLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing anchors and aliases.

    An alias is cheap to load (the node is shared) but expands on every walk or print of the value:
    a 1 KB "billion laughs" document of nested aliases becomes gigabytes in an error message that
    quotes it. A spec has no need of them, so a user's YAML may not use them at all.
    """

    def compose_node(self, parent, index):
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:  # an anchor (&name) or an alias (*name)
            mark = event.start_mark
            raise YamlRefused(
                f"YAML anchors and aliases (&name, *name) are not accepted (line {mark.line + 1}, column {mark.column + 1}); "
                "write the values out in full"
            )
        return super().compose_node(parent, index)


def read_yaml(text: str) -> Any:
    """A user's YAML (a config file, a ``--set`` value), as plain data; ``YamlRefused`` (one line) for anything else.

    Refused: anchors and aliases (see ``_PlainLoader``), nesting deeper than ``MAX_DEPTH``, and what
    is not YAML (the parser's message, on one line).
    """
    try:
        value = yaml.load(text, Loader=_PlainLoader)  # a SafeLoader that refuses aliases
    except YamlRefused:
        raise
    except yaml.MarkedYAMLError as exc:
        where = f" at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}" if exc.problem_mark else ""
        raise YamlRefused(f"{shorten(exc.problem or exc.context or type(exc).__name__)}{where}") from None
    except RecursionError:
        raise YamlRefused(f"it is nested deeper than {MAX_DEPTH} levels") from None
    except Exception as exc:  # (the parser on a user's text: a bad date, a bad !!tag, bytes it cannot read)
        raise YamlRefused(shorten(f"{type(exc).__name__}: {exc}")) from None
    _check_depth(value)
    return value


def _check_depth(value: Any) -> None:
    todo = [(value, 0)]
    while todo:
        node, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise YamlRefused(f"it is nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            todo += [(v, depth + 1) for v in node.values()]
        elif isinstance(node, (list, tuple, set)):
            todo += [(v, depth + 1) for v in node]


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.max_steps=200`` -> (["train", "max_steps"], 200). Values are read as YAML; text that is not plain YAML is kept as text.

    (``--set data.path=*.csv`` is the text ``*.csv``, not an alias.)
    """
    if "=" not in text:
        raise ConfigError(f"--set {shown(text)}: expected key=value, e.g. train.max_steps=200")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {shown(text)}: the key must be a dotted field name such as train.max_steps")
    try:
        value = read_yaml(raw) if raw.strip() else ""
    except YamlRefused as exc:
        if "nested deeper" in str(exc):
            raise ConfigError(f"--set {shorten(key)}: the value is {exc}") from None
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
    """Raise a ConfigError naming the allowed fields when ``path`` is not a field.

    A field that maps names to sections (``train.optimizers``) takes any name as the next
    part, then the section's fields: ``train.optimizers.critic.lr``.
    """
    model: type[BaseModel] | None = config_cls
    depth = 0
    while depth < len(path):
        part = path[depth]
        if model is None:
            raise ConfigError(f"unknown field {shown('.'.join(path))}: {shorten('.'.join(path[:depth]))} takes a value, not fields")
        fields = _model_fields(model)
        if part not in fields:
            where = shorten(".".join(path[:depth])) or "the spec"
            raise ConfigError(f"unknown field {shown('.'.join(path))}; {where} has: {', '.join(fields)}")
        annotation = fields[part].annotation
        if typing.get_origin(annotation) is dict:
            model = _section_type(typing.get_args(annotation)[1])
            if model is None:
                return  # a free-form mapping: any key, any value
            depth += 2  # skip the key: any name
            continue
        model = _section_type(annotation)
        depth += 1


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
    """One validation error in a user's words; every part that comes from the user (field names, the value) cut short."""
    loc = shorten(".".join(str(p) for p in err["loc"]))
    msg = shorten(err["msg"].removeprefix("Value error, "))
    ctx = err.get("ctx") or {}
    if err["type"] == "literal_error" and "expected" in ctx:
        msg = f"must be one of {ctx['expected']}"
    if err["type"] == "extra_forbidden":
        msg = "is not a field"
    got = err.get("input")
    quoted = "" if isinstance(got, dict) else f" (got {shown(got)})"
    return f"{loc}: {msg}{quoted}"


MAX_ERRORS = 5  # validation errors a message names; the rest are counted


def validate_spec(config_cls: type[GeneratorConfig], tree: dict[str, Any]) -> GeneratorConfig:
    try:
        return config_cls.model_validate(tree)
    except ValidationError as exc:
        found = exc.errors()
        errors = [_describe_error(e) for e in found[:MAX_ERRORS]]
        more = f"; and {len(found) - MAX_ERRORS} more" if len(found) > MAX_ERRORS else ""
        raise ConfigError("invalid spec: " + "; ".join(errors) + more) from None


def load_spec(
    config_cls: type[GeneratorConfig],
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> GeneratorConfig:
    """Resolve a spec: the config's defaults, ``base`` (a dict), a YAML file, then ``--set`` overrides, in that order.

    Each layer is merged into the one below, mappings key by key: ``--set
    train.optimizers.critic.lr=1e-4`` changes one field of the generator's default
    ``critic`` optimizer and keeps its other optimizers.
    """
    tree: dict[str, Any] = _merge(_defaults(config_cls), dict(base or {}))
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {shown(str(path))} does not exist")
        try:
            loaded = read_yaml(path.read_text()) or {}
        except YamlRefused as exc:
            raise ConfigError(f"config file {shown(str(path))} is not a spec genforge reads: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {shown(str(path))} cannot be read: {shorten(exc)}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {shown(str(path))} must hold a mapping of sections (data, model, train, sample, evaluate)")
        loaded.pop("generator", None)
        tree = _merge(tree, loaded)
    for text in overrides:
        keys, value = parse_override(text)
        _check_path(config_cls, keys)
        apply_override(tree, keys, value)
    return validate_spec(config_cls, tree)


def _defaults(config_cls: type[BaseModel]) -> dict[str, Any]:
    """The fields' declared defaults, before any validator: a validator that resolves a default from other
    fields (``None``: 32 for a folder, else 128) sees the spec's own values when the spec is validated."""
    try:
        return config_cls.model_construct().model_dump(mode="json", warnings=False)
    except (ValidationError, TypeError, ValueError, AttributeError):  # a config with required fields: nothing to merge into
        return {}


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
