"""Conformance checks every generator and evaluator must pass: built-in or outside, the same checks.

    from genforge.core.testing import check_generator
    check_generator("acme-gen", {"train": {"max_steps": 20}, "sample": {"n": 30}}, pm)

A check raises ``AssertionError`` naming what a plugin got wrong, so it reads well in pytest.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pluggy

from genforge.core.config import spec_model
from genforge.core.contracts import Evaluation, Evaluator, Reference, Samples
from genforge.core.plugin_manager import evaluators, get_generator, get_kind
from genforge.core.runner import Steps, create_run


def _same(a: Any, b: Any) -> bool:
    """Equal samples, whatever their in-memory form (arrays, lists, frames, files)."""
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b)
    if hasattr(a, "equals"):  # pandas
        return a.equals(b)
    if isinstance(a, list) and a and isinstance(a[0], Path):
        return len(a) == len(b) and all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    return a == b


def check_config_defaults(generator: str, pm: pluggy.PluginManager | None = None) -> None:
    """The config's defaults validate, and a dump of them validates back to the same config."""
    gen = get_generator(generator, pm)
    model = spec_model(gen.Config, [ev for _, ev in evaluators(pm, gen.kind)])
    config = model()
    assert model.model_validate(config.model_dump(mode="json")) == config, f"{generator}: its default config does not round-trip"
    for section in ("data", "model", "train", "sample"):
        assert hasattr(config, section), f"{generator}: its config lacks the {section!r} section"


def check_evaluation(ev: Evaluator, evaluation: Evaluation, kind: str) -> None:
    """An evaluator's result: its own name, unique metric names, each with a direction, a reference value or a description."""
    assert isinstance(evaluation, Evaluation), f"evaluator {ev.name!r} returned {type(evaluation).__name__}, not an Evaluation"
    assert evaluation.error is None, f"evaluator {ev.name!r} failed on {kind}: {evaluation.error}"
    assert evaluation.evaluator == ev.name, f"evaluator {ev.name!r} labelled its evaluation {evaluation.evaluator!r}"
    names = [m.name for m in evaluation.metrics]
    assert len(names) == len(set(names)), f"evaluator {ev.name!r} repeats metric names: {sorted(n for n in names if names.count(n) > 1)}"
    for m in evaluation.metrics:
        assert m.name and m.name.strip() == m.name, f"evaluator {ev.name!r}: a metric needs a name without spaces around it ({m.name!r})"
        assert isinstance(m.value, (int, float)) and not isinstance(m.value, bool), f"{ev.name}.{m.name} is {m.value!r}, not a number"
        assert math.isfinite(m.value), (
            f"{ev.name}.{m.name} is {m.value!r}: a metric that cannot be computed is left out (say why in Evaluation.notes), not NaN"
        )
        assert m.higher_is_better is not None or m.floor is not None or m.description, (
            f"{ev.name}.{m.name}: say which way is better (higher_is_better), give a reference value (floor), or describe it"
        )
    for name, path in evaluation.figures.items():
        assert Path(path).exists() and Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", (
            f"{ev.name} figure {name!r} is not a PNG file: {path}"
        )


def check_generator(
    generator: str, spec: dict[str, Any] | None = None, pm: pluggy.PluginManager | None = None, root: str | Path | None = None
) -> Steps:
    """Prepare, fit and sample on tiny data (``spec``, default: the generator's ``test_spec``), then check what came out.

    - the config's defaults are valid;
    - the samples load back through their kind, as many as asked for;
    - every evaluator of the kind scores them with well-formed metrics;
    - the same seed gives the same samples (sampled again into a second run);
    - fit went through the engine (or recorded a fit without a loop: ``trainer.record_fit``);
    - ``model_files`` names files inside the run folder (what a model version keeps);
    - every metric the declared ``gate`` names is one the run gives, with a direction.

    Returns the first run's steps, for further checks of the plugin's own.
    """
    check_config_defaults(generator, pm)
    gen = get_generator(generator, pm)
    spec = gen.test_spec if spec is None else spec
    runs = []
    for _ in range(2):
        run = create_run(generator, spec=spec or {}, pm=pm, root=root)
        steps = Steps(run, pm)
        data = steps.prepare()
        assert (data.stats.get("train") or {}).get("kept", 1) > 0, f"{generator}: prepare kept no training data"
        checkpoint = steps.train(data)
        assert Path(checkpoint.path).exists(), f"{generator}: fit returned a checkpoint path that does not exist: {checkpoint.path}"
        assert "stopped_by" in steps.run.read_json("training.json", {}), (
            f"{generator}: fit returned without training through the engine (trainer.fit / trainer.fit_networks) or recording a "
            "fit that needs no training loop (trainer.record_fit): the run has no training record, and no checkpoint to resume from"
        )
        samples = steps.sample(checkpoint)
        runs.append((steps, data, samples))
    steps, data, samples = runs[0]
    assert samples.kind == gen.kind, f"{generator} declares kind {gen.kind!r} but sampled {samples.kind!r}"
    kind = get_kind(samples.kind, pm)
    kind.check(samples.path)
    n = steps.config.sample.n
    assert samples.count == n, f"{generator}: asked for {n} samples, reported {samples.count}"
    assert kind.count(samples.path) == n, f"{generator}: asked for {n} samples, the {kind.name} file holds {kind.count(samples.path)}"
    first, again = kind.load(samples.path), kind.load(runs[1][2].path)
    assert _same(first, again), f"{generator}: the same spec and seeds gave different samples"
    reference = steps.generator.reference(data, steps.config)
    scored: dict[str, bool | None] = {}  # evaluator.metric -> higher_is_better
    for _, ev in evaluators(pm, gen.kind):
        result = check_evaluator(ev, samples, reference, steps.run.figures / ev.name, getattr(steps.config.evaluate, ev.name))
        scored.update({f"{ev.name}.{m.name}": m.higher_is_better for m in result.metrics})
    for path in steps.generator.model_files(steps.checkpoint()):
        assert Path(path).is_file() and Path(path).resolve().is_relative_to(steps.run.path.resolve()), (
            f"{generator}: model_files names {path}, which is not a file inside the run folder: a model version could not keep it"
        )
    check_gate(gen, scored, steps.run.read_json("training.json", {}).get("details") or {})
    return steps


def check_gate(gen: Any, scored: dict[str, bool | None], training_details: dict[str, Any]) -> None:
    """Every metric the generator's declared ``gate`` names is one its run gives (an evaluator's, or ``training.<key>``), with a
    direction (the evaluator's ``higher_is_better``, or the gate's ``directions``): a gate that reads nothing refuses forever."""
    gate = getattr(gen, "gate", {}) or {}
    named = [*gate.get("metrics", []), *gate.get("guards", {}), *gate.get("thresholds", {})]
    given = {**scored, **{f"training.{k}": None for k, v in training_details.items() if isinstance(v, (int, float))}}
    directions = {**scored, **(gate.get("directions") or {})}
    for name in named:
        assert name in given, f"{gen.name}: its gate names {name!r}, which its run does not give; it gives {', '.join(sorted(given))}"
        assert directions.get(name) is not None, (
            f"{gen.name}: its gate names {name!r}, which has no direction: set higher_is_better on the Metric, or gate['directions']"
        )


def check_evaluator(ev: Evaluator, samples: Samples, reference: Reference, out_dir: Path, config: Any = None) -> Evaluation:
    """Run one evaluator on samples and check its result (``config``: its settings, default: its defaults)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ev.evaluate(samples, reference, out_dir, config if config is not None else ev.Config())
    check_evaluation(ev, result, samples.kind)
    return result
