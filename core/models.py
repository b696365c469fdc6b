"""Registering a finished run as a model version, and sampling from a version, or a finished run, without training.

The registry itself (versions, aliases, the store's atomic creates) is ``genforge.core.store.registry``;
this module ties it to runs and generators. Domain-free: what a version keeps of a trained model
is what its generator's ``model_files`` names.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pluggy

from .config import parse_override
from .contracts import Checkpoint
from .errors import ConfigError, DataError, GenforgeError, RunNotFound, UnknownNameError
from .plugin_manager import generators, get_generator
from .store import Run, RunStore
from .store.registry import ModelVersion, Registry, check_name

FROM_MODEL = "from_model.json"  # in a run sampled from a model version: which one (the run trains nothing)
SAMPLE_SECTIONS = (
    "sample",
    "evaluate",
    "data",
)  # promote: a sampling run gates nothing  # what `genforge sample` may change of a version's spec


def headline_metrics(run: Run) -> tuple[dict[str, float], dict[str, bool | None]]:
    """A run's metrics (``evaluator.metric`` -> value) and each one's direction (``higher_is_better``), from metrics.json."""
    record = run.metrics()
    values = {k: v for k, v in (record.get("metrics") or {}).items() if isinstance(v, (int, float))}
    directions: dict[str, bool | None] = {}
    for ev in record.get("evaluations") or []:
        for m in ev.get("metrics") or []:
            directions[f"{ev.get('evaluator')}.{m.get('name')}"] = m.get("higher_is_better")
    return values, directions


def register_run(
    run: Run, model: str, registry: Registry | None = None, pm: pluggy.PluginManager | None = None, by: str | None = None
) -> ModelVersion:
    """Register a finished run as the next version of ``model``: its generator's model files and the run's records."""
    check_name(model)
    registry = registry or Registry()
    state = run.status.get("state")
    if state != "finished":
        raise GenforgeError(f"run {run.id} is {state}, not finished: only a finished run (trained, sampled, evaluated) is registered")
    if (run.path / FROM_MODEL).is_file():
        source = run.read_json(FROM_MODEL, {})
        raise GenforgeError(f"run {run.id} trained nothing: it sampled from model {source.get('ref')}, which is registered already")
    recorded = run.read_json("checkpoint.json")
    if not recorded:
        raise DataError(f"run {run.id} has no checkpoint.json: it has no trained model to register")
    generator = run.generator
    try:
        gen = get_generator(generator, pm)()
    except UnknownNameError as exc:
        raise GenforgeError(f"run {run.id}'s generator is not installed here, so its model files are unknown: {exc}") from None
    checkpoint = Checkpoint(run.path / recorded["path"], recorded.get("step", 0))
    files = gen.model_files(checkpoint)
    from .gate import run_metrics

    metrics, directions = run_metrics(run)  # with its numeric training details, as training.<key>
    data = run.read_json("data.json", {})
    training = run.read_json("training.json", {})
    spec = run.spec
    record = {
        "generator": generator,
        "kind": gen.kind,
        "run_id": run.id,
        "run_path": str(run.path),
        "spec": spec,
        "checkpoint": {"path": recorded["path"], "step": recorded.get("step", 0)},
        "data": {"fingerprint": data.get("fingerprint"), "source": data.get("source")},
        "training": {k: training.get(k) for k in ("step", "train_seconds", "stopped_by", "parameters") if k in training},
        "metrics": metrics,
        "directions": directions,
        "finished": run.status.get("finished") or run.status.get("updated"),
    }
    return registry.register(run.path, model, files, record, by=by)


def create_sample_run(
    ref: str,
    overrides: list[str] | tuple[str, ...] = (),
    registry: Registry | None = None,
    pm: pluggy.PluginManager | None = None,
    root: str | Path | None = None,
    run_id: str | None = None,
    sections: dict[str, Any] | None = None,
) -> Run:
    """A new run that samples from a model version (``NAME@alias``, ``NAME:N`` or ``NAME``), or from a finished run (its
    id, ``latest`` or a unique prefix, when no model has that name), and trains nothing.

    The run's spec is the version's (or the run's; ``sections`` replace whole sections of it), with ``overrides`` to its
    ``sample``, ``evaluate`` or ``data`` sections (more samples, another class, guidance or seed, a newer reference file);
    the model files are copied in (a version's checked against their SHA-256) and ``training.json`` says no training took place.
    """
    from .runner import create_run

    registry = registry or Registry(root)
    check_sample_overrides(overrides)
    if not names_a_model(ref, registry):
        trained = _finished_run(ref, root)
        if trained is not None:
            return _sample_run_from_run(trained, ref, overrides, pm, root, run_id, sections)
    version = registry.resolve(ref)
    check_installed(version.generator, f"model {version.ref}", pm)
    spec = sampling_spec(version.record.get("spec") or {}, sections)
    registry.files(version)  # every file there and as registered, before a run is made
    run = create_run(version.generator, overrides=overrides, spec=spec, pm=pm, root=root, run_id=run_id)
    source = {
        "ref": version.ref,
        "asked": ref,
        "model": version.model,
        "version": version.version,
        "trained_by_run": version.run_id,
        "registered": version.record.get("registered"),
        "store": str(registry),
    }
    run.write_json(FROM_MODEL, source)  # first: a run interrupted from here on still never trains
    install_model(run, version, registry)
    return run


def init_weights(ref: str, generator: str, root: str | Path | None = None, registry: Registry | None = None) -> tuple[dict, dict[str, Any]]:
    """``train.init_from``: the trained weights (a state dict, as ``save_weights`` wrote them) of a run of ``generator`` (its
    id, a prefix, or ``latest``: the newest such run that trained) or a model version, and where they came from.

    The weights are the ones the source samples from (its ``checkpoint.json``, EMA weights where it keeps an EMA),
    checked against their recorded SHA-256. Another generator's run or version, one without trained weights, or a file
    that is not ``save_weights``' form is a one-line error.
    """
    from .training import load_weights

    registry = registry or Registry(root)
    where = f"train.init_from={ref!r}"
    if not names_a_model(ref, registry):
        if ref == "latest":
            trained = [r for r in RunStore(root).all() if r.generator == generator and samplable(r) is None]
            if not trained:
                raise GenforgeError(f"{where}: no {generator} run in {RunStore(root)} has trained weights yet")
            run = trained[-1]
        else:
            run = _finished_run(ref, root)
            if run is None:
                raise ConfigError(f"{where} names no run in {RunStore(root)} and no model in {registry}")
        refused = samplable(run)
        if refused:
            raise GenforgeError(f"{where}: {refused}")
        if run.generator != generator:
            raise ConfigError(f"{where}: run {run.id} is a {run.generator} run; this run trains {generator}")
        path = run.path / run.read_json("checkpoint.json")["path"]
        source = {"ref": ref, "run": run.id, "step": run.read_json("training.json", {}).get("step")}
    else:
        version = registry.resolve(ref)
        if version.generator != generator:
            raise ConfigError(f"{where}: model {version.ref} is a {version.generator} model; this run trains {generator}")
        from .store.registry import safe_relative

        checkpoint = version.record.get("checkpoint") or {}
        path = registry.files(version) / safe_relative(checkpoint.get("path", ""), f"model {version.ref}'s record")
        source = {"ref": ref, "model": version.ref, "trained_by_run": version.run_id, "step": checkpoint.get("step")}
    try:
        state, _ = load_weights(path)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{where}: the weights at {path} cannot be read as saved weights ({type(exc).__name__}: {exc})") from None
    return state, {**source, "weights": str(path)}


def names_a_model(ref: str, registry: Registry) -> bool:
    """Whether ``ref`` is a model reference (``NAME@alias``, ``NAME:N``, or a model's name) rather than a run's."""
    return "@" in ref or ":" in ref or ref in registry.models()


def check_installed(generator: str, what: str, pm: pluggy.PluginManager | None) -> None:
    """A one-line error when the generator that trained ``what`` (a version, a run) is not installed here."""
    if generator not in generators(pm):
        installed = ", ".join(sorted(generators(pm))) or "none"
        raise GenforgeError(f"{what} was trained by generator {generator!r}, which is not installed here (installed: {installed})")


def sampling_spec(spec: dict[str, Any], sections: dict[str, Any] | None) -> dict[str, Any]:
    """The spec of a run that samples from a trained model: the model's, ``sections`` replacing whole sections (the gate:
    the challenger's data and evaluate sections, to score on its reference), and no ``promote`` (it registers nothing)."""
    out = {k: v for k, v in spec.items() if k != "generator"}
    out.update(sections or {})
    out["promote"] = {}
    return out


def check_sample_overrides(overrides: list[str] | tuple[str, ...]) -> None:
    """Sampling keeps how the model was trained: only the ``SAMPLE_SECTIONS`` may change."""
    for item in overrides:
        path, _ = parse_override(item)
        if path[0] not in SAMPLE_SECTIONS:
            raise ConfigError(
                f"--set {'.'.join(path)}: sampling from a model keeps how it was trained; only {', '.join(s + '.*' for s in SAMPLE_SECTIONS)} "
                "can be changed (to train again, `genforge run`)"
            )


def _finished_run(ref: str, root: str | Path | None) -> Run | None:
    """The run ``ref`` names in the run store, if one does (None: ``ref`` is no run, so it is taken as a model).

    ``latest`` is the newest run that trained a model to sample: finished (or failed only in evaluation) with a checkpoint,
    and not itself a sampling run.
    """
    runs = RunStore(root)
    if ref == "latest":
        trained = [r for r in runs.all() if samplable(r) is None]
        if not trained:
            raise GenforgeError(f"no run in {runs} has a trained model to sample: train one first (`genforge run GENERATOR`)")
        return trained[-1]
    try:
        return runs.get(ref)
    except (RunNotFound, ConfigError):
        return None


def samplable(run: Run) -> str | None:
    """Why ``run`` has no trained model to sample from (None: it has one): a sampling run, not ended, no checkpoint.

    A run whose training finished but whose evaluation failed (``EvaluatorFailed``) has a good model: it counts.
    """
    if (run.path / FROM_MODEL).is_file():
        source = run.read_json(FROM_MODEL, {})
        origin = source.get("run") or source.get("ref")
        return f"run {run.id} trained nothing (it sampled from {origin}): sample from {origin} instead"
    status = run.status
    state = status.get("state")
    evaluation_failed = state == "failed" and str(status.get("error", "")).startswith("EvaluatorFailed")
    if not run.read_json("checkpoint.json", None):
        return f"run {run.id} cannot be sampled from: it has no checkpoint (it is {state}); only a trained run has a model to sample"
    if state != "finished" and not evaluation_failed:
        return f"run {run.id} cannot be sampled from: it is {state}; only a finished run (or one whose evaluation alone failed) has a model"
    return None


def _sample_run_from_run(
    trained: Run,
    ref: str,
    overrides: list[str] | tuple[str, ...],
    pm: pluggy.PluginManager | None,
    root: str | Path | None,
    run_id: str | None,
    sections: dict[str, Any] | None,
) -> Run:
    """``create_sample_run`` from a finished run: its spec, and its generator's model files copied from its folder."""
    from .runner import create_run

    refused = samplable(trained)
    if refused:
        raise GenforgeError(refused)
    generator = trained.generator
    check_installed(generator, f"run {trained.id}", pm)
    spec = sampling_spec(trained.spec, sections)
    run = create_run(generator, overrides=overrides, spec=spec, pm=pm, root=root, run_id=run_id)
    record = {"ref": f"run {trained.id}", "asked": ref, "run": trained.id, "trained_by_run": trained.id, "store": str(RunStore(root))}
    run.write_json(FROM_MODEL, record)  # first: a run interrupted from here on still never trains
    install_from_run(run, trained, pm)
    write_untrained_record(run, trained, record)
    return run


def write_untrained_record(run: Run, trained: Run, source: dict[str, Any]) -> None:
    """``training.json`` of a run that samples from ``trained``'s weights: no training took place, and whose they are."""
    recorded = trained.read_json("checkpoint.json")
    steps = trained.read_json("training.json", {}).get("step", recorded.get("step", 0))
    run.write_json(
        "training.json",
        {
            "step": recorded.get("step", 0),
            "trained": False,
            "from_model": source,
            "notes": [f"no training took place: the weights are run {trained.id}'s, trained {steps} steps"],
        },
    )


def install_from_run(run: Run, trained: Run, pm: pluggy.PluginManager | None = None) -> None:
    """Copy a finished run's model files (its generator's ``model_files``) into a sampling run, and record its checkpoint."""
    recorded = trained.read_json("checkpoint.json")
    gen = get_generator(trained.generator, pm)()
    checkpoint = Checkpoint(trained.path / recorded["path"], recorded.get("step", 0))
    for path in gen.model_files(checkpoint):
        rel = Path(path).resolve().relative_to(trained.path.resolve())
        target = run.writable(rel.as_posix())
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    run.write_json("checkpoint.json", {"path": recorded["path"], "step": recorded.get("step", 0)})


def install_model(run: Run, version: ModelVersion, registry: Registry) -> None:
    """Copy a version's model files into a sampling run (checked against their SHA-256) and record its checkpoint."""
    from .store.registry import safe_relative

    folder = registry.files(version)
    for rel in version.record.get("model_files") or []:
        rel = safe_relative(rel, f"model {version.ref}'s record")
        target = run.writable(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / rel, target)
    checkpoint = version.record.get("checkpoint") or {}
    trained = version.record.get("training") or {}
    source = run.read_json(FROM_MODEL, {})
    run.write_json(
        "training.json",
        {
            "step": checkpoint.get("step", 0),
            "trained": False,
            "from_model": source,
            "notes": [
                f"no training took place: the weights are model {version.ref}'s (asked as {source.get('asked', version.ref)}), trained "
                f"{trained.get('step', checkpoint.get('step', 0))} steps by run {version.run_id}"
            ],
        },
    )
    run.write_json(
        "checkpoint.json",
        {"path": safe_relative(checkpoint.get("path"), f"model {version.ref}'s record"), "step": checkpoint.get("step", 0)},
    )


def resume_sample_run(run: Run, registry: Registry | None = None) -> Run:
    """A sampling run found again (its flow run crashed and was rescheduled): its model installed if it was not yet."""
    source = from_model(run)
    if source is None:
        raise GenforgeError(f"run {run.id} was made to sample from a model but records none (it was cut short): delete it and start again")
    if not (run.path / "checkpoint.json").is_file():
        if source.get("run"):  # sampled from a finished run, not a version: in the store the run was made from
            trained = RunStore(registry.url if registry else None).get(source["run"])
            install_from_run(run, trained)
            write_untrained_record(run, trained, source)
            return run
        registry = registry or Registry()
        install_model(run, registry.version(source["model"], int(source["version"])), registry)
    return run


def from_model(run: Run) -> dict[str, Any] | None:
    """The model version a run samples from (``from_model.json``), or None for a run that trains."""
    if not (run.path / FROM_MODEL).is_file():
        return None
    return run.read_json(FROM_MODEL, {})


def prune_runs(
    store: RunStore,
    keep: int | None,
    older_than_days: float | None,
    registry: Registry | None = None,
    dry_run: bool = False,
) -> tuple[list[Run], dict[str, str]]:
    """Delete run folders by a retention rule; returns (the runs deleted or, with ``dry_run``, to delete; kept runs -> why).

    A run is deleted when it is outside the newest ``keep`` runs of its generator and (when
    given) older than ``older_than_days``. Never deleted: a run not ended (created, running,
    interrupted or died: resume it, or delete it by hand), a run whose lock is held, a run whose
    version an alias points at (its lineage) and a run a verdict cites. Model versions are never
    touched: they hold their own files.
    """
    import datetime as dt

    if keep is None and older_than_days is None:
        raise ConfigError("give a retention rule: --keep N (newest runs of each generator kept), --older-than DAYS, or both")
    if keep is not None and keep < 0:
        raise ConfigError(f"--keep {keep}: give 0 or more")
    from .gate import verdicts

    registry = registry or Registry(store.url or store.root)
    held = registry.run_ids()
    for model in registry.models():  # the runs a verdict cites (the champion sampled again on a new reference)
        for v in verdicts(registry, model):
            if v.get("rescored_by_run"):
                held.setdefault(str(v["rescored_by_run"]), []).append(f"the verdict on {model}:{v.get('challenger')}")
    now = dt.datetime.now(dt.UTC)
    by_generator: dict[str, list[Run]] = {}
    kept: dict[str, str] = {}
    for run in store.all():
        try:
            generator = run.generator
        except DataError:
            generator = "?"
        by_generator.setdefault(generator, []).append(run)
    doomed: list[Run] = []
    for runs in by_generator.values():
        newest_first = list(reversed(runs))
        for i, run in enumerate(newest_first):
            if keep is not None and i < keep:
                continue
            created = str(run.status.get("created", ""))
            if older_than_days is not None:
                try:
                    age = (now - dt.datetime.fromisoformat(created)).total_seconds() / 86400
                except ValueError:
                    kept[run.id] = "its creation time is unknown"
                    continue
                if age < older_than_days:
                    continue
            state = run.status.get("state")
            if run.id in held:
                kept[run.id] = f"{', '.join(held[run.id])} needs it (its lineage, or the evidence of a verdict)"
            elif state not in ("finished", "failed"):  # interrupted: resumable, and Prefect's restart may be on its way
                kept[run.id] = f"it is {state}"
            elif (run.path / ".lock").is_file() and (run.path / ".lock").read_text().strip():
                kept[run.id] = "a process holds it"
            else:
                doomed.append(run)
    if not dry_run:
        for run in doomed:
            delete_run(store, run)
    return doomed, kept


def delete_run(store: RunStore, run: Run) -> None:
    """Remove a run's folder (and, on a shared store, its copy there)."""
    if run.remote:
        from .store import mirror

        fs = mirror.filesystem(run.remote)
        try:
            fs.rm(mirror.strip(fs, run.remote), recursive=True)
        except FileNotFoundError:
            pass
    shutil.rmtree(run.path, ignore_errors=True)


def card(registry: Registry, version: ModelVersion) -> dict[str, Any]:
    """What `genforge models show` prints: the version's record, its aliases, the moves and the gate's verdicts that concerned it."""
    from .gate import verdicts

    aliases = {a: v for a, v in registry.aliases(version.model).items() if v == version.version}
    moves = [r["move"] for r in registry.alias_log(version.model) if version.version in (r["move"].get("from"), r["move"].get("to"))]
    return {
        "model": version.model,
        "version": version.version,
        "aliases": sorted(aliases),
        "generator": version.generator,
        "run_id": version.run_id,
        "registered": version.record.get("registered"),
        "registered_by": version.record.get("registered_by"),
        "data": version.record.get("data"),
        "training": version.record.get("training"),
        "metrics": version.metrics,
        "figures": sorted(f for f in (version.record.get("files") or {}) if f.startswith("figures/") and f.endswith(".png")),
        "files": registry.local_root.joinpath("models", version.model, str(version.record.get("blob", ""))).as_posix(),
        "moves": moves,
        "verdicts": [v for v in verdicts(registry, version.model) if version.version in (v.get("challenger"), v.get("champion"))],
    }
