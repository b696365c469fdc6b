"""The pipeline's steps, without Prefect: prepare -> train -> sample -> evaluate.

Each step takes a run folder and reads what it needs from the run store, so a step can
run in another process or on another machine. ``genforge.flows`` wraps each step in a
Prefect task; ``run_all`` calls them directly (a bare GPU box, a test, a benchmark).
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import pluggy

from . import distributed
from .capture import CappedLog, captured, uncaptured
from .config import EVALUATE_SETTINGS, GeneratorConfig, load_spec, parse_override, spec_model
from .contracts import DATA_KEYS, Checkpoint, Evaluation, Generator, PreparedData, Report, RunInfo, Samples
from .errors import ConfigError, DataError, EvaluatorFailed, GenforgeError, LeaseLost, TrainingFailed, shorten
from .kinds import read_as
from .plugin_manager import call_listeners, evaluators, get_generator, get_kind, get_plugin_manager, versions
from .progress import progress_lines
from .store import Run, RunStore, read_jsonl, redact_secrets, unredact
from .training import Trainer, TrainResult

log = logging.getLogger("genforge")
# Exceptions that mean "stopped from outside", not "broken": KeyboardInterrupt also stands for SIGTERM
# (the CLI turns it into one), Prefect's TerminationSignal for a cancelled or terminated flow run.
INTERRUPTIONS = ("KeyboardInterrupt", "TerminationSignal", "Abort")


MAX_REJECTED = 0.5  # default share of training rows a data source may lose before the run stops


def check_rejections(stats: dict[str, Any], max_share: float) -> None:
    """Stop when more than ``max_share`` of the training rows were rejected: that file is probably not what it should be.

    A generator's ``data`` section may set ``max_rejected`` (0-1) to change the share.
    """
    train = stats.get("train") or {}
    rejected = train.get("rejected") or {}
    read, lost = train.get("read") or 0, sum(rejected.values())
    if read and lost / read > max_share:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(rejected.items(), key=lambda kv: -kv[1])[:4])
        raise DataError(
            f"{lost} of {read} rows of {stats.get('source')} were rejected ({reasons}), more than {max_share:.0%}: "
            f"is it the right file? (data.max_rejected sets the share where the generator allows it)"
        )


def pin_data_paths(config: GeneratorConfig) -> GeneratorConfig:
    """Local files named in the ``data`` section (fields ``path`` and ``*_path``) recorded as absolute paths.

    A run resumed from another working directory (or by a worker) then reads the same file.
    An empty path is an error here, not a silent fall-back to the generator's default data.
    """
    data = config.data
    for name in type(data).model_fields:
        if name != "path" and not name.endswith("_path"):
            continue
        value = getattr(data, name)
        if not isinstance(value, str):
            continue
        if not value.strip():
            raise ConfigError(f"data.{name} is empty; give a file, folder or URL, or leave it out to use the default data")
        if "://" not in value and not Path(value).expanduser().is_absolute():
            # absolute, not resolved: a link keeps naming what it points at then, and a link loop is refused where it is read
            setattr(data, name, os.path.abspath(Path(value).expanduser()))
    return config


def give_redacted(run: Run, overrides: list[str] | tuple[str, ...]) -> None:
    """Give a run's redacted URLs again (``genforge resume RUN --set data.path=URL``) for this process.

    Only fields recorded redacted are accepted, and only with a URL whose redacted form is the
    recorded one (the same place, new credentials): a resume keeps the run's spec otherwise.
    """
    spec = run.spec
    for item in overrides:
        path, value = parse_override(item)
        name, node = ".".join(path), spec
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, str) or "<redacted>" not in node:
            raise ConfigError(f"--set {shorten(name)}: a resume keeps the run's spec; only a URL recorded redacted can be given again")
        if redact_secrets(str(value)) != node:
            raise ConfigError(f"--set {shorten(name)}: the run recorded {node}; give that URL (its credentials or token may be new)")


def create_run(
    generator: str,
    config_path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    root: str | Path | None = None,
    spec: dict[str, Any] | None = None,
    pm: pluggy.PluginManager | None = None,
    run_id: str | None = None,
) -> Run:
    """Validate the spec against the generator's config and its evaluators', then create the run folder.

    A generator whose sample kind no installed evaluator accepts is said so here, before
    training, on the ``genforge`` logger (the run still goes ahead: its samples are kept).
    """
    gen_cls = get_generator(generator, pm)
    chosen = [ev for _, ev in evaluators(pm, gen_cls.kind)]
    config = pin_data_paths(load_spec(spec_model(gen_cls.Config, chosen), config_path, overrides, base=spec))
    if not chosen:
        log.warning(
            "no installed evaluator accepts %r samples: run %s will train and sample, and report no metrics", gen_cls.kind, generator
        )
    run = RunStore(root).create(generator, run_id)
    run.write_spec(generator, config.model_dump(mode="json"))
    run.write_json("versions.json", versions(pm, gen_cls.libraries))
    return run


class Steps:
    """The steps of one run, bound to its folder and the plugin manager."""

    def __init__(self, run: Run | str | Path, pm: pluggy.PluginManager | None = None):
        self.run = run if isinstance(run, Run) else Run(Path(run))
        self.pm = pm or get_plugin_manager()
        # URLs with credentials are recorded redacted: restored from this process's memory, else named in ``unresolved``.
        spec, self.unresolved = unredact(self.run.spec)
        self.generator_cls: type[Generator] = get_generator(spec["generator"], self.pm)
        self.generator = self.generator_cls()
        model = spec_model(self.generator_cls.Config, [ev for _, ev in evaluators(self.pm, self.generator_cls.kind)], strict=False)
        sections = {k: v for k, v in spec.items() if k != "generator"}
        # Evaluator sections are mappings, beside the host's settings (timeout_minutes); anything else (a setting of an
        # older spec, before evaluators had sections) is ignored, and said so, rather than silently dropped.
        evaluate = sections.get("evaluate") or {}
        sections["evaluate"] = {k: v for k, v in evaluate.items() if isinstance(v, dict) or k in EVALUATE_SETTINGS}
        self.config: GeneratorConfig = model.model_validate(sections)
        self.info = RunInfo(self.run.id, spec["generator"], self.run.path)
        self._listener_failures: set[tuple[str, str]] = set()
        self.plugin_log = CappedLog(self.run.writable(PLUGIN_LOG))  # what the generator's steps and the evaluators print
        for field in [k for k, v in evaluate.items() if not isinstance(v, dict) and k not in EVALUATE_SETTINGS]:
            note = (
                f"evaluate.{field} in this run's spec is no evaluator's section and is ignored; an evaluator's settings are "
                f"evaluate.<evaluator>.<field> (`genforge plugins` lists the evaluators)"
            )
            if add_note(self.run, note):
                log.warning("run %s: %s", self.run.id, note)

    @property
    def trains_nothing(self) -> bool:
        """A run that samples from a model version (``from_model.json``): no training, no GPU slot for it."""
        return (self.run.path / "from_model.json").is_file()

    def _relative(self, path: Path) -> str:
        """Paths inside the run folder are recorded relative to it, so a copy elsewhere still works."""
        path = Path(path).resolve()
        try:
            return path.relative_to(self.run.path.resolve()).as_posix()
        except ValueError:
            return str(path)

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Tell the lifecycle listeners (``hook``: a ``genforge_*`` lifecycle hook); one that raises is named once and the run goes on.

        The failure is logged and kept in ``logs/notes.jsonl``, which the report's notes read; a
        listener that must stop the run raises ``StopRun`` (see ``call_listeners``).
        """
        with uncaptured():  # called from within a generator's step: the progress bar and the Prefect log are the terminal's
            failures = call_listeners(self.pm, hook, {"run": self.info, **kwargs})
        for plugin, exc in failures:
            if (plugin, hook) in self._listener_failures:
                continue
            self._listener_failures.add((plugin, hook))
            note = f"listener {hook} of plugin {plugin!r} raised {type(exc).__name__}: {exc}; the run went on without it"
            log.warning("run %s: %s", self.run.id, note)
            log.debug("listener %s of %s failed", hook, plugin, exc_info=exc)
            try:
                add_note(self.run, note)
            except (OSError, GenforgeError):  # the note is a courtesy; the run's own files come first
                log.debug("could not record the note", exc_info=True)

    def started(self) -> None:
        self.run.set_status("running")
        self.notify("genforge_run_started", spec=self.run.spec)

    def prepare(self) -> PreparedData:
        """Prepare the data; a run prepared before (a resume, a retry) must find the same data, or stops."""
        before = self.run.read_json("data.json")
        if self.unresolved:  # a URL genforge did not record: the run's pinned data, where this machine has it
            if before and Path(before.get("path", "")).exists():
                return self._recorded(before)
            fields = ", ".join(self.unresolved)
            raise ConfigError(
                f"run {self.run.id}'s {fields} held credentials or a token, which genforge does not record, and its prepared data "
                f"is not on this machine: give it again, `genforge resume {self.run.id} --set {self.unresolved[0]}=URL`"
            )
        with captured(self.plugin_log, f"generator {self.generator_cls.name!r} prepare"):
            data = self.generator.prepare(self.config, self.run)
        if before and before.get("fingerprint") != data.fingerprint:
            raise DataError(
                f"the data of run {self.run.id} changed since it was prepared (fingerprint {before.get('fingerprint')}, now {data.fingerprint}, "
                f"source {before.get('source')}); resuming would train on other data. Restore the data, or start a new run with "
                f"`genforge run {self.run.generator} --config {self.run.path / 'spec.yaml'}` (a URL recorded <redacted> given again with --set)"
            )
        check_rejections(data.stats, getattr(self.config.data, "max_rejected", MAX_REJECTED))
        for note in data.stats.get("notes") or []:  # a part of the data not used, and why: for the report and the summary
            if add_note(self.run, str(note)):
                log.warning("run %s: %s", self.run.id, note)
        if str(data.stats.get("cache", "")).startswith("rebuilt"):  # a damaged cache was set aside: say so where people look
            note = f"the cached prepared data at {data.path} was not used and was prepared again: {data.stats['cache']}"
            if add_note(self.run, note):
                log.warning("run %s: %s", self.run.id, note)
        core = {k: data.stats[k] for k in DATA_KEYS if k in data.stats}
        details = {k: v for k, v in data.stats.items() if k not in DATA_KEYS}
        self.run.write_json("data.json", {"fingerprint": data.fingerprint, "path": str(data.path), **core, "details": details})
        self.notify("genforge_data_prepared", stats=data.stats)
        return data

    def prepared(self) -> PreparedData:
        """The prepared data recorded by an earlier prepare step of this run."""
        d = self.run.read_json("data.json")
        if d is None or not Path(d["path"]).exists():
            return self.prepare()
        return self._recorded(d)

    @staticmethod
    def _recorded(d: dict[str, Any]) -> PreparedData:
        stats = {k: v for k, v in d.items() if k not in ("path", "fingerprint", "details")}
        return PreparedData(Path(d["path"]), d["fingerprint"], {**stats, **d.get("details", {})})

    def train(self, data: PreparedData | None = None) -> Checkpoint:
        """Train to the budget, resuming from the newest checkpoint; one process at a time per run (a lock).

        A run sampled from a model version (``genforge sample``) trains nothing: its checkpoint is the version's.
        """
        if self.trains_nothing:  # the version's weights; what the generator conditions on, from this run's data
            checkpoint = self.checkpoint()
            self.generator.condition_on(data or self.prepared(), checkpoint, self.config)
            return checkpoint
        if distributed.in_process_group():  # a torchrun worker: the launching process holds the lock
            return self._train(data)
        with self.run.lock("train"):
            if self.config.train.devices > 1:
                return self._train_distributed()
            return self._train(data)

    def _trim_training_log(self, last: int) -> None:
        """On (re)start at step ``last``, drop progress lines past it: they will be logged again."""
        log = self.run.path / "logs" / "train.jsonl"
        if not log.exists():
            return
        rows = read_jsonl(log)
        kept = [r for r in rows if r.get("step", 0) <= last]
        if len(kept) != len(rows) or log.read_bytes()[-1:] not in (b"", b"\n"):
            from .store import atomic_write_text

            atomic_write_text(log, "".join(json.dumps(r) + "\n" for r in kept))

    def _train(self, data: PreparedData | None = None) -> Checkpoint:
        data = data or self.prepared()
        self.run.writable("checkpoints")  # the engine writes there: not through a link
        init, source = None, None
        if self.config.train.init_from:
            from .models import init_weights

            init, source = init_weights(self.config.train.init_from, self.generator_cls.name)  # the configured store, as genforge sample
        trainer = Trainer(
            self.config.train,
            self.run.path,
            on_progress=lambda step, total, m: self._progress(step, total, m),
            on_checkpoint=self._checkpoint_saved,
            on_resume=self._trim_training_log,
            init=init,
        )
        with captured(self.plugin_log, f"generator {self.generator_cls.name!r} fit"):
            checkpoint = self.generator.fit(data, self.config, trainer)
        if trainer.is_main:
            self.run.write_json("checkpoint.json", {"path": self._relative(checkpoint.path), "step": checkpoint.step})
            record = training_record(trainer.result, checkpoint, trainer.config, self.run.path, trainer.planned)
            if source:
                record["init_from"] = source  # whose trained weights this run started from
            self.run.write_json("training.json", record)
            self.run.push()
        return checkpoint

    def _train_distributed(self) -> Checkpoint:
        """Launch ``train.devices`` processes with torchrun and relay rank 0's progress while they run."""
        n = self.config.train.devices
        log = self.run.path / "logs" / "train-distributed.log"
        log.parent.mkdir(exist_ok=True)
        seen = None
        with open(log, "ab") as out:
            proc = distributed.launch(self.run.path, n, out)
            try:
                while proc.poll() is None:
                    time.sleep(1.0)
                    status = self.run.status
                    if status.get("step") != seen and "train_metrics" in status:
                        seen = status["step"]
                        self.notify("genforge_train_progress", step=seen, total=status.get("train_total"), metrics=status["train_metrics"])
            except BaseException:  # Ctrl-C, SIGTERM, a failing listener: the training processes stop with us
                distributed.stop(proc)
                raise
        if proc.returncode:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise TrainingFailed(f"torchrun with {n} processes exited with code {proc.returncode}; log {log}:\n{tail}")
        return self.checkpoint()

    def _step_progress(self, stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - getattr(self, "_last_progress", 0.0) >= 1.0 or (total and done >= total):  # at most once a second
            self._last_progress = now
            self.run.set_status("running", stage=stage, done=done, total=total)
            self.notify("genforge_step_progress", stage=stage, done=done, total=total)

    def _checkpoint_saved(self, step: int, path: Path) -> None:
        self.run.push(fence=True)  # a shared store gets each checkpoint as soon as it is on disk; never after a lost lease
        self.notify("genforge_checkpoint_saved", step=step, path=str(path))

    def _progress(self, step: int, total: int | None, metrics: dict[str, float]) -> None:
        self.run.check_lease()  # a lease another machine took stops training here, at the engine's next progress event
        self.run.set_status("running", step=step, train_total=total, train_metrics=metrics)
        log = self.run.writable("logs/train.jsonl")
        log.parent.mkdir(exist_ok=True)
        with open(log, "a") as fh:  # appended: a resumed run continues the same curve
            fh.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")
        self.notify("genforge_train_progress", step=step, total=total, metrics=metrics)

    def checkpoint(self) -> Checkpoint:
        d = self.run.read_json("checkpoint.json")
        if d is None:
            raise FileNotFoundError(f"run {self.run.id} has no trained model yet")
        return Checkpoint(self.run.path / d["path"], d["step"])

    def sample(self, checkpoint: Checkpoint | None = None) -> Samples:
        self.run.writable("samples")  # the generator writes there: not through a link
        t0 = time.perf_counter()
        self.run.progress_listener = self._step_progress
        try:
            with captured(self.plugin_log, f"generator {self.generator_cls.name!r} sample"):
                samples = self.generator.sample(checkpoint or self.checkpoint(), self.config, self.run)
        finally:
            self.run.progress_listener = None
        seconds = time.perf_counter() - t0
        self.run.write_json(
            "samples.json",
            {
                "kind": samples.kind,
                "path": self._relative(samples.path),
                "count": samples.count,
                "seconds": round(seconds, 2),
                "per_s": round(samples.count / max(seconds, 1e-9), 2),
                "details": samples.meta,
            },
        )
        self.run.push()
        self.notify("genforge_samples_ready", samples=samples)
        return samples

    def samples(self) -> Samples:
        d = self.run.read_json("samples.json")
        return Samples(d["kind"], self.run.path / d["path"], d["count"], d.get("details", {}))

    def evaluate(self, samples: Samples | None = None, data: PreparedData | None = None) -> Report:
        """Every enabled evaluator that accepts the samples' kind adds its metrics, tagged with its plugin.

        Each writes figures in its own folder (``figures/<evaluator>/``); one that raises, or
        overruns ``evaluate.timeout_minutes``, is named (plugin, evaluator, kind) in the report
        and the log, and the others' results and the samples are kept. Then, unless its settings
        say ``optional``, the run is ``failed`` and ``EvaluatorFailed`` is raised, after
        ``metrics.json`` and the report are written.
        """
        samples = samples or self.samples()
        data = data or self.prepared()
        self.run.writable("figures")  # the evaluators write there: not through a link
        reference = self.generator.reference(data, self.config)
        report = Report(self.run.id)
        from .report import training_curve, write_report

        kind = get_kind(samples.kind, self.pm)
        pictures = {
            "training": lambda: training_curve(self.run),
            # the kind's own picture of the samples (images: a grid; scenarios: a fan chart)
            "samples": lambda: _preview(kind, samples.path, self.run.figures / "samples" / "preview.png"),
        }
        for name, draw in pictures.items():
            try:
                result = draw()
            except Exception as exc:  # a picture that cannot be drawn costs only itself
                log.debug("drawing %s failed", name, exc_info=True)
                report.notes.append(f"the {name} figure could not be drawn: {type(exc).__name__}: {exc}")
                continue
            if result is not None:
                report.evaluations.append(result)
        chosen = [(plugin, ev, getattr(self.config.evaluate, ev.name)) for plugin, ev in evaluators(self.pm, samples.kind)]
        enabled = [(p, ev, cfg) for p, ev, cfg in chosen if cfg.enabled]
        timings = evaluate_samples(
            samples,
            reference,
            self.run.figures,
            enabled,
            report,
            self.pm,
            timeout_minutes=self.config.evaluate.timeout_minutes,
            output=self.plugin_log,
            progress=self._step_progress,
        )
        report.notes.extend(n for n in run_notes(self.run) if n not in report.notes)
        rejected = data.stats.get("train", {}).get("rejected", {})
        if rejected:
            n = sum(rejected.values())
            report.notes.append(f"{n} training rows rejected: " + ", ".join(f"{c} {r}" for r, c in rejected.items()))
        failed = required_failures(report, enabled)
        if failed:
            report.notes.append(f"the run failed: {failure_text(failed)}, which the run needs; {optional_hint(failed, 'evaluate.')}")
        self.run.write_json("metrics.json", metrics_record(report, timings))
        write_report(self.run, report)
        self.run.push()
        if failed:
            error = EvaluatorFailed(
                f"run {self.run.id} failed: {failure_text(failed)}; the other metrics and the report are in {self.run.path} "
                f"({optional_hint(failed, 'evaluate.')})",
                report,
            )
            self.run.set_status("failed", error=f"EvaluatorFailed: {error}")
            raise error
        self.run.set_status("finished")
        self.notify("genforge_run_finished", report=report)
        return report

    def gate(self) -> Any:
        """With ``promote.model`` set: register the finished run as the model's next version and gate it (``gate.json``)."""
        promote = self.config.promote
        if not promote.model or self.trains_nothing:
            return None
        from .gate import gate_run

        verdict = gate_run(self.run, promote.model, pm=self.pm, config=promote)  # in the run's own store
        self.run.write_json("gate.json", verdict.to_dict())
        log.info("run %s: %s", self.run.id, verdict.line())
        return verdict

    def failed(self, error: BaseException) -> None:
        """Record how the run ended: ``interrupted`` (Ctrl-C, SIGTERM, a cancellation: resumable) or ``failed``."""
        state = "interrupted" if type(error).__name__ in INTERRUPTIONS else "failed"
        if isinstance(error, LeaseLost):  # another machine trains the run now: its status is that machine's to write
            self.notify("genforge_run_failed", error=error)
            return
        try:
            self.run.set_status(state, error=f"{type(error).__name__}: {error}")
        except (OSError, GenforgeError):  # a full disk, or a deleted run folder, refuses the status too; the error still reaches the user
            log.debug("could not record the status of run %s", self.run.id, exc_info=True)
        self.notify("genforge_run_failed", error=error)


NOTES = "logs/notes.jsonl"  # sentences for the report that steps before evaluate found (a listener that failed)
PLUGIN_LOG = "logs/plugins.log"  # what plugin code printed (capped: see genforge.core.capture)


def add_note(run: Run, note: str) -> bool:
    """A sentence for the run's report and summary, kept until the evaluate step (which may run in another process).

    False when the run has it already (each step of a run may find the same thing).
    """
    path = run.writable(NOTES)
    if note in run_notes(run):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps({"note": note}) + "\n")
    return True


def run_notes(run: Run) -> list[str]:
    path = run.path / NOTES
    notes = [r["note"] for r in read_jsonl(path) if isinstance(r.get("note"), str)] if path.exists() else []
    return list(dict.fromkeys(notes))


def _preview(kind: Any, path: Path, out: Path) -> Evaluation | None:
    png = kind.preview(path, out)
    return Evaluation("samples", [], {"preview": png}, plugin="genforge") if png is not None else None


def evaluate_samples(
    samples: Samples,
    reference: Any,
    figures: Path,
    chosen: list[tuple[str, Any, Any]],
    report: Report,
    pm: pluggy.PluginManager | None = None,
    timeout_minutes: float | None = EVALUATE_SETTINGS["timeout_minutes"][1].default,
    output: CappedLog | None = None,
    progress: Any = None,
) -> dict[str, float]:
    """Run each (plugin, evaluator, settings) on the samples into ``report``; returns seconds per evaluator.

    Shared by a run's evaluate step and ``genforge evaluate``. The samples are checked by
    their kind first (a path of the wrong form is one clear error, before any evaluator).
    An evaluator that raises, or is still running after ``timeout_minutes``, loses its own
    metrics (named in the report) and the others go on; the caller decides what that failure
    means (``required_failures``). What evaluators print goes to ``output`` (capped), not the terminal.
    """
    read_as(get_kind(samples.kind, pm), samples.path, "check")
    timings = {}
    for plugin, ev, settings in chosen:
        t0 = time.perf_counter()
        out_dir = Path(figures) / ev.name
        out_dir.mkdir(parents=True, exist_ok=True)
        label = f"evaluator {ev.name!r} of plugin {plugin!r}"
        try:
            call = functools.partial(_evaluate, ev, samples, reference, out_dir, settings, output, label, progress)
            result: Evaluation = _with_deadline(call, timeout_minutes, f"genforge-evaluator-{ev.name}")
            result.evaluator, result.plugin = ev.name, plugin  # an evaluator speaks only for itself
            report.notes.extend(f"{ev.name}: {note}" for note in result.notes)
            undefined = [m for m in result.metrics if isinstance(m.value, float) and not math.isfinite(m.value)]
            if undefined:  # a number that could not be computed is no measurement: left out, and said (the kit refuses it)
                result.metrics = [m for m in result.metrics if m not in undefined]
                report.notes.append(
                    f"{ev.name}: {', '.join(m.name for m in undefined)} could not be computed on these samples and is left out"
                )
        except _Overdue:
            message = (
                f"{label} did not finish on {samples.kind} within {timeout_minutes:g} minutes (evaluate.timeout_minutes) and was "
                "skipped: its metrics are lost"
            )
            log.debug(message)  # the note reaches the report, the summary and the Prefect log
            result = Evaluation(ev.name, [], plugin=plugin, error=f"timed out after {timeout_minutes:g} minutes")
            report.notes.append(message)
        except Exception as exc:  # an evaluator's bug costs its own metrics here; the caller decides if the run fails
            error = f"{type(exc).__name__}: {shorten(str(exc), 500)}"
            message = f"{label} failed on {samples.kind}: {error}"
            log.debug(message, exc_info=True)  # the note reaches the report, the summary and the Prefect log
            result = Evaluation(ev.name, [], plugin=plugin, error=error)
            report.notes.append(message)
        timings[ev.name] = round(time.perf_counter() - t0, 2)
        report.evaluations.append(result)
    return timings


def required_failures(report: Report, chosen: list[tuple[str, Any, Any]]) -> list[Evaluation]:
    """The evaluations in ``report`` that failed (raised, or overran their deadline) and whose settings do not say ``optional``."""
    optional = {ev.name for _, ev, settings in chosen if getattr(settings, "optional", False)}
    return [e for e in report.evaluations if e.error and e.evaluator not in optional]


def failure_text(failed: list[Evaluation]) -> str:
    """``evaluator 'x' of plugin 'p' failed (ZeroDivisionError: ...)``, for each failed evaluation."""
    return "; ".join(f"evaluator {e.evaluator!r} of plugin {e.plugin!r} failed ({e.error})" for e in failed)


def optional_hint(failed: list[Evaluation], prefix: str) -> str:
    """What lets the run (or ``genforge evaluate``, ``prefix`` "") finish without these evaluators."""
    settings = ", ".join(f"{prefix}{e.evaluator}.optional=true" for e in failed)
    return f"{settings} lets it finish without {'it' if len(failed) == 1 else 'them'}"


def _evaluate(
    ev: Any, samples: Samples, reference: Any, out_dir: Path, settings: Any, output: CappedLog | None, label: str, progress: Any = None
) -> Evaluation:
    """One evaluator's call, what it prints captured into ``output``; a note in the report when the log had to cut it.
    What it reports with ``report_progress`` goes to the terminal and to ``progress`` (``core.progress``)."""
    with captured(output, label) as section, progress_lines(f"evaluator {ev.name}", progress):
        result = ev.evaluate(samples, reference, out_dir, settings)
    if section is not None and section.cut and isinstance(result, Evaluation):
        result.notes.append(f"it printed {section.written:,} bytes; {output.path.name} keeps the first {section.kept:,}")
    return result


class _Overdue(Exception):
    """An evaluator still running at its deadline."""


def _with_deadline(call: Any, minutes: float | None, name: str) -> Any:
    """``call()`` in a worker thread, waited for at most ``minutes`` (None: as long as it takes); ``_Overdue`` past that.

    A thread, not a subprocess: an evaluator is any object a plugin registers (one registered in code
    cannot be re-imported by a spawned process, and forking a process that holds torch's and
    Prefect's threads can deadlock), and it takes samples and reference data as they are in memory.
    Python cannot kill a thread: one past its deadline is left running as a daemon (it ends with
    the process, its CPU and memory held until then; what it prints still goes to its log), and the
    run goes on without it.
    """
    box: dict[str, Any] = {}
    context = contextvars.copy_context()  # the caller's context (Prefect's task run): what the evaluator reports reaches it

    def work() -> None:
        try:
            box["result"] = context.run(call)
        except BaseException as exc:  # handed to the waiting thread, which raises it
            box["error"] = exc

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    worker.join(None if minutes is None else minutes * 60)
    if worker.is_alive():
        raise _Overdue()
    if "error" in box:
        raise box["error"]
    return box["result"]


def metrics_record(report: Report, timings: dict[str, float]) -> dict[str, Any]:
    """``metrics.json``: every metric by evaluator, the merged names, notes and timings."""
    return {
        "metrics": report.metrics(),
        "evaluations": [
            {
                "evaluator": e.evaluator,
                "plugin": e.plugin,
                "error": e.error,
                "metrics": [m.to_dict() for m in e.metrics],
                "figures": {k: str(p) for k, p in e.figures.items()},
                **({"headline": e.headline} if e.headline else {}),
            }
            for e in report.evaluations
        ],
        "notes": report.notes,
        "seconds": timings,
    }


def training_record(
    result: TrainResult | None, checkpoint: Checkpoint, train: Any = None, run_dir: Path | None = None, plan: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``training.json``: what the host prints of a training, from the engine's result (keys core defines).

    With the run's ``train`` settings and folder, a training the budget cut short of its planned steps, or whose loss
    was still falling when it stopped, is said to be undertrained in its notes (``undertrained_notes``).
    """
    record: dict[str, Any] = {"step": checkpoint.step}
    if result is not None:
        record.update(
            step=result.step,
            parameters=sum(result.parameters.values()),
            parameters_by_network=result.parameters,
            train_seconds=round(result.elapsed, 1),
            stopped_by=result.stopped_by,
            resumed_from=result.resumed_from,
            throughput={"value": result.throughput, "unit": f"{result.count}/s"}
            if result.count and result.throughput is not None
            else None,
            last_metrics=result.last_metrics,
        )
    if plan:
        record["plan"] = plan  # Trainer.plan: the steps fitted to train.max_minutes at the measured pace
    notes = list(checkpoint.notes)
    if result is not None and result.damaged:
        notes.append(
            f"checkpoint(s) at step {', '.join(map(str, result.damaged))} could not be loaded and were skipped; "
            f"training resumed from {f'step {result.resumed_from}' if result.resumed_from else 'the start'}"
        )
    if result is not None and train is not None:
        log_file = Path(run_dir) / "logs" / "train.jsonl" if run_dir else None
        notes += undertrained_notes(result, train, read_jsonl(log_file) if log_file and log_file.is_file() else [])
    record.update(details=checkpoint.details, notes=notes)
    return record


FALLING = 0.05  # the last quarter's mean loss this much below the quarter's before: still learning


def undertrained_notes(result: TrainResult, train: Any, log_rows: list[dict[str, Any]]) -> list[str]:
    """Sentences for a training that stopped before it was done: cut by ``train.max_minutes`` before its planned
    ``train.max_steps``, or stopped while its loss was still falling (the last quarter of the logged losses
    ``FALLING`` below the quarter before). Each begins "undertrained" and says what to do."""
    notes = []
    planned = getattr(train, "max_steps", None)
    if result.stopped_by == "max_minutes" and planned and result.step < planned:
        notes.append(
            f"undertrained: train.max_minutes ({train.max_minutes:g}) stopped training at step {result.step:,} of the "
            f"{planned:,} planned ({result.step / planned:.0%}): its schedule did not complete (a model trained from scratch is far "
            "from trained then; one fine-tuned from a checkpoint less so). Give it more minutes (train.max_minutes), "
            "or plan fewer steps (train.max_steps) or a smaller model, so that the schedule finishes in time"
        )
    losses = [r["loss"] for r in log_rows if isinstance(r.get("loss"), (int, float))]
    if result.stopped_by in ("max_steps", "max_minutes") and len(losses) >= 8:
        quarter = len(losses) // 4
        before, last = sum(losses[-2 * quarter : -quarter]) / quarter, sum(losses[-quarter:]) / quarter
        if before > 0 and last < before * (1 - FALLING):
            notes.append(
                f"undertrained: the training loss was still falling when it stopped (mean {last:.4g} over the last quarter of "
                f"the logged steps, {before:.4g} over the quarter before): more steps would likely give a better model"
            )
    return notes


def run_all(run: Run | str | Path, pm: pluggy.PluginManager | None = None) -> Report:
    """All steps in this process, no Prefect. Resumes training if the run has checkpoints.

    The run's lock is held throughout: a second process on the same run stops before it touches anything.
    """
    steps = Steps(run, pm)
    with steps.run.lock("run"):
        try:
            steps.started()  # inside: a listener that stops the run (StopRun) leaves it failed, not running
            data = steps.prepare()
            checkpoint = steps.train(data)
            samples = steps.sample(checkpoint)
            report = steps.evaluate(samples, data)
        except BaseException as exc:
            steps.failed(exc)
            raise
        steps.gate()  # after the run finished: a gate that cannot decide leaves a finished run, and says why
        return report
