"""The ``genforge`` command line (typer + rich)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import genforge.flows  # noqa: F401  (Prefect defaults, before Prefect is imported)
from genforge.core import EvaluatorFailed, GeneratorConfig, GenforgeError, Report, Run, RunInfo, RunStore, Samples, hookimpl
from genforge.core.plugin_manager import get_plugin_manager, plugin_infos
from genforge.core.report import summary_lines, training_notes
from genforge.core.runner import create_run, run_all
from genforge.core.training import headline_loss

app = typer.Typer(
    help="genforge: generative models in Prefect pipelines. Runs live under $GENFORGE_HOME/runs (default ~/.genforge).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="run store root, a folder or a URL such as s3://bucket/genforge (default: $GENFORGE_HOME or ~/.genforge)"),
]
SetOpt = Annotated[list[str], typer.Option("--set", "-s", help="override a spec field: --set train.max_steps=200 (repeatable)")]
PrefectOpt = Annotated[bool, typer.Option("--prefect/--no-prefect", help="run as a Prefect flow (default) or directly in this process")]


class CliProgress:
    """A lifecycle listener that draws a rich progress bar while training."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task = None
        self.sampling: Progress | None = None  # steps after training that report progress (sampling)
        self.sampling_task = None

    @hookimpl
    def genforge_data_prepared(self, run: RunInfo, stats: dict[str, Any]) -> None:
        train = stats.get("train", {})
        rejected = train.get("rejected", {})
        console.print(
            f"[bold]data[/]: {train.get('read')} rows read, {train.get('kept')} kept"
            + (f", {train['held_out']} held out as reference" if train.get("held_out") else "")
            + f", {sum(rejected.values())} rejected"
            + (f" ({', '.join(f'{n} {r}' for r, n in rejected.items())})" if rejected else "")
            + f"; cache {stats.get('cache')}"
        )

    @hookimpl
    def genforge_train_progress(self, run: RunInfo, step: int, total: int | None, metrics: dict[str, float]) -> None:
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold]training"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                TextColumn("step {task.fields[step]}  loss {task.fields[loss]:.4f}"),
                TimeElapsedColumn(),
                console=console,
                # rich would replace sys.stdout to print above the bar: then its redraws, made in the training thread, would
                # land in the run's plugins.log with what the plugin prints (genforge.core.capture), not on the terminal
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=100, step=step, loss=headline_loss(metrics))
        self.progress.update(self.task, completed=100 * metrics.get("progress", 0.0), step=step, loss=headline_loss(metrics))
        if metrics.get("progress", 0.0) >= 1.0:
            self.stop()

    @hookimpl
    def genforge_step_progress(self, run: RunInfo, stage: str, done: int, total: int | None) -> None:
        if self.sampling is None:
            self.stop()
            of = "{task.completed:,.0f} of {task.total:,.0f}" if total else "{task.completed:,.0f}"
            self.sampling = Progress(
                TextColumn(f"[bold]{stage}"),
                BarColumn(),
                TextColumn(of),
                TimeElapsedColumn(),
                console=console,
                redirect_stdout=False,  # as above
                redirect_stderr=False,
            )
            self.sampling.start()
            self.sampling_task = self.sampling.add_task(stage, total=total or None)
        self.sampling.update(self.sampling_task, completed=done)

    @hookimpl
    def genforge_samples_ready(self, run: RunInfo, samples: Samples) -> None:
        self.stop()
        console.print(f"[bold]samples[/]: {samples.count} {samples.kind} -> {samples.path}")

    @hookimpl
    def genforge_run_finished(self, run: RunInfo, report: Report) -> None:
        self.stop()

    @hookimpl
    def genforge_run_failed(self, run: RunInfo, error: BaseException) -> None:
        self.stop()

    def stop(self) -> None:
        for bar in (self.progress, self.sampling):
            if bar is not None:
                bar.stop()
        self.progress = self.sampling = None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def print_summary(store_run: Run) -> None:
    """The run's metrics table (each metric beside its reference value), summary lines, notes and folder."""
    metrics = store_run.read_json("metrics.json", {})
    table = Table(title=f"{store_run.generator} — {store_run.id}")
    table.add_column("evaluator")
    table.add_column("metric")
    table.add_column("samples", justify="right")
    table.add_column("reference", justify="right")
    for ev in metrics.get("evaluations", []):
        first = True
        for m in ev["metrics"]:
            table.add_row(ev["evaluator"] if first else "", m["name"], _fmt(m["value"]), _fmt(m["floor"]), end_section=False)
            first = False
        table.add_section()
    console.print(table)
    for line in summary_lines(store_run):
        console.print(escape(line), highlight=False, soft_wrap=True)
    for note in training_notes(store_run):
        console.print(f"[yellow]{escape(note)}[/]", highlight=False, soft_wrap=True)
    for note in metrics.get("notes", []):
        console.print(f"[yellow]{escape(note)}[/]", highlight=False, soft_wrap=True)
    console.print(f"run folder: [bold]{store_run.path}[/]", soft_wrap=True)  # a path is copied, never wrapped


def _execute(run, use_prefect: bool) -> None:
    pm = get_plugin_manager()
    listener = CliProgress()
    pm.register(listener, name="cli-progress")
    previous = signal.signal(signal.SIGTERM, _terminated)  # only while a run executes (not around `worker`, `ui`, ...)
    try:
        if use_prefect:
            from .pipeline import run_pipeline

            run_pipeline(run)
        else:
            run_all(run, pm)
    except EvaluatorFailed:  # the other evaluators' metrics are there: shown, then the one-line error
        listener.stop()
        print_summary(Run(run.path, run.remote))
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM turned into one (see main)
        listener.stop()
        err.print(
            f"[yellow]interrupted[/] ({exc or 'Ctrl-C'}); `genforge resume {run.id}` continues from the last checkpoint",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        listener.stop()
        pm.unregister(listener)
    print_summary(Run(run.path, run.remote))


@app.command()
def plugins(as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False) -> None:
    """List installed plugins: version, distribution, hooks implemented, what each registers, and any that failed."""
    infos = plugin_infos()
    if as_json:
        print(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    if not infos:
        console.print("no plugins loaded (GENFORGE_PLUGINS, GENFORGE_DISABLE_PLUGINS or GENFORGE_DISABLE_PLUGIN_AUTOLOAD may be set)")
    for i in infos:
        state = "" if i.status == "loaded" else f" [red]{i.status}[/]" + (f" ({escape(i.reason)})" if i.reason else "")
        dist = f" ({i.distribution})" if i.distribution and i.distribution != i.name else ""
        console.print(f"[bold]{i.name}[/] {i.version}{dist}{state}", highlight=False, soft_wrap=True)
        for label, items in (
            ("hooks", i.hooks),
            ("generators", i.generators),
            ("evaluators", i.evaluators),
            ("data sources", i.datasets),
            ("sample kinds", i.kinds),
            ("errors", i.errors),
            ("conflicts", i.conflicts),
        ):
            if items:
                joined = "; ".join(items) if label in ("errors", "conflicts") else ", ".join(items)
                console.print(f"  {label}: {escape(joined)}", highlight=False, soft_wrap=True)


def check_prefect_api() -> None:
    """With an API URL set (environment, profile or .env), the server must answer before a run is created or resumed."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return  # Prefect's embedded server starts with the flow
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url.rstrip("/") + "/health", timeout=10).read()
    except urllib.error.HTTPError:
        return  # it answered (e.g. 401 behind basic auth): reachable
    except (OSError, ValueError) as exc:
        raise GenforgeError(
            f"cannot reach the Prefect API at {url} ({exc}); start the server, fix PREFECT_API_URL, or run with --no-prefect"
        ) from None


def _start(
    generator: str, config: Path | None, overrides: list[str], use_prefect: bool, store: Path | None, base: dict | None = None
) -> None:
    if store:  # the flow and every step find the store through GENFORGE_HOME
        os.environ["GENFORGE_HOME"] = str(store)
    if use_prefect:
        check_prefect_api()
    the_run = create_run(generator, config, overrides, spec=base)
    console.print(f"run [bold]{the_run.id}[/] in {the_run.path}")
    if base:
        console.print(f"demo spec: {base}")
    _execute(the_run, use_prefect)


@app.command()
def run(
    generator: Annotated[str, typer.Argument(help="a registered generator (`genforge plugins` lists them)")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML spec with sections data/model/train/sample/evaluate")] = None,
    set_: SetOpt = [],
    prefect: PrefectOpt = True,
    store: StoreOpt = None,
) -> None:
    """Prepare data, train, sample and evaluate a generator; prints a summary and the run folder."""
    _start(generator, config, set_, prefect, store)


@app.command()
def demo(
    generator: Annotated[
        str | None, typer.Argument(help="the generator whose demo to run (default: the one installed generator marked as the default demo)")
    ] = None,
    set_: SetOpt = [],
    prefect: PrefectOpt = True,
    store: StoreOpt = None,
) -> None:
    """The README's main job: a generator's demo spec on Prefect's embedded server (no server to start first)."""
    from genforge.core.plugin_manager import generators, get_generator

    if generator is None:
        marked = sorted(name for name, g in generators().items() if g.default_demo)
        if len(marked) != 1:
            with_demo = ", ".join(sorted(n for n, g in generators().items() if g.demo_spec)) or "none"
            raise GenforgeError(
                ("no installed generator is" if not marked else f"{len(marked)} generators ({', '.join(marked)}) are")
                + f" marked as the default demo; name one: genforge demo NAME (with a demo spec: {with_demo})"
            )
        generator = marked[0]
    _start(generator, None, set_, prefect, store, base=get_generator(generator).demo_spec)


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="run id, unique prefix, folder, or 'latest'")],
    prefect: PrefectOpt = True,
    store: StoreOpt = None,
    overrides: Annotated[
        list[str],
        typer.Option("--set", "-s", help="a URL the run recorded redacted (credentials, a token), given again: --set data.path=URL"),
    ] = [],
) -> None:
    """Continue an interrupted run from its newest checkpoint, then sample and evaluate."""
    from genforge.core.runner import give_redacted

    the_run = RunStore(store).get(run_id)
    give_redacted(the_run, overrides)
    if prefect:
        check_prefect_api()
    from genforge.core.training import list_checkpoints

    ckpts = list_checkpoints(the_run.checkpoints)
    console.print(
        f"resuming [bold]{the_run.id}[/] from "
        + (f"its newest checkpoint that loads (newest on disk: step {ckpts[-1][0]})" if ckpts else "the start (no checkpoint yet)")
    )
    _execute(the_run, prefect)


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="run id, unique prefix, folder, or 'latest'")] = "latest",
    as_json: Annotated[bool, typer.Option("--json", help="the resolved spec and every metric as JSON")] = False,
    store: StoreOpt = None,
) -> None:
    """Show a run: its spec, status and metrics."""
    the_run = RunStore(store).get(run_id)
    if as_json:
        out = {
            "run_id": the_run.id,
            "path": str(the_run.path),
            "status": the_run.status,
            "spec": the_run.spec,
            "metrics": the_run.metrics().get("metrics", {}),
            "evaluations": the_run.metrics().get("evaluations", []),
            "data": the_run.read_json("data.json", {}),
            "training": the_run.read_json("training.json", {}),
            "samples": the_run.read_json("samples.json", {}),
            "versions": the_run.read_json("versions.json", {}),
        }
        print(json.dumps(out, indent=2, default=str))
        return
    console.print(f"[bold]{the_run.id}[/]: {the_run.status.get('state')}")
    if the_run.metrics():
        print_summary(the_run)
    else:
        console.print(f"no metrics yet; run folder: {the_run.path}")


@app.command()
def evaluate(
    kind: Annotated[str, typer.Argument(help="sample kind: molecules, images, music, scenarios, or one a plugin adds")],
    path: Annotated[
        Path,
        typer.Argument(
            help="samples in the kind's form: molecules a .smi/.txt/.csv file, images a .npz or a folder of PNGs, music a folder of MIDI files, scenarios a .parquet"
        ),
    ],
    reference: Annotated[
        str | None,
        typer.Option(help="reference data: a file, or SOURCE-SPLIT of a data source of the kind (default: the kind's own reference)"),
    ] = None,
    train: Annotated[
        str | None,
        typer.Option(
            help="training data, as SOURCE-SPLIT or a file, for the evaluators that use it (novelty, real-vs-real floors; default: with the kind's own reference, its source's training split where it names one)"
        ),
    ] = None,
    set_: Annotated[
        list[str],
        typer.Option(
            "--set",
            "-s",
            help="an evaluator setting: --set EVALUATOR.FIELD=VALUE, e.g. --set EVALUATOR.enabled=false, or --set timeout_minutes=MINUTES "
            "for every evaluator (default 30) (repeatable; `genforge plugins` lists evaluators)",
        ),
    ] = [],
    as_json: Annotated[bool, typer.Option("--json", help="print every metric as JSON, keyed by name")] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="folder for figures, metrics.json and plugins.log (what the evaluators printed) (default: a new folder under $GENFORGE_HOME/evaluations)"
        ),
    ] = None,
) -> None:
    """Score any samples of a kind with every evaluator registered for it."""
    import datetime as dt

    from genforge.core import Reference
    from genforge.core.capture import CappedLog
    from genforge.core.config import load_spec, spec_model
    from genforge.core.errors import shown
    from genforge.core.kinds import read_as
    from genforge.core.plugin_manager import datasets, default_reference, evaluators, get_kind
    from genforge.core.runner import evaluate_samples, failure_text, metrics_record, optional_hint, required_failures
    from genforge.core.store import home
    from genforge.core.store.run import finite

    sample_kind = get_kind(kind)  # an unknown kind lists the known ones
    read_as(sample_kind, path, "check")

    def resolve(spec: str) -> Path:
        if Path(spec).exists():
            return Path(spec)
        found = datasets()
        for name, source in sorted(found.items(), key=lambda kv: -len(kv[0])):
            if spec.startswith(name + "-") and source.kind == kind:
                split = spec[len(name) + 1 :]
                files = source.files()
                if split in files:
                    return files[split]
        listing = ", ".join(f"{n}-{s}" for n, src in found.items() if src.kind == kind for s in src.splits) or "none installed"
        raise GenforgeError(f"unknown reference {shown(spec)} for {kind}; use a file or one of: {listing}")

    if reference is None:
        default = default_reference(kind)
        if default is None:
            raise GenforgeError(f"no data source is the default reference for {kind}; pass --reference FILE or SOURCE-SPLIT")
        reference = f"{default[0].name}-{default[1]}"
        if train is None and default[0].train_split:
            train = f"{default[0].name}-{default[0].train_split}"
    ref = Reference(kind, test=resolve(reference), train=resolve(train) if train else None, name=reference)
    chosen = evaluators(kind=kind)
    if not chosen:
        raise GenforgeError(f"no installed evaluator accepts {kind!r} samples")
    # Evaluator settings: the same `evaluate` section a run spec has, given as --set EVALUATOR.FIELD=VALUE.
    settings = load_spec(spec_model(_EvaluateOnly, [ev for _, ev in chosen]), overrides=[f"evaluate.{s}" for s in set_]).evaluate
    out = out or home() / "evaluations" / f"{dt.datetime.now():%Y%m%d-%H%M%S}-{path.stem}"
    out.mkdir(parents=True, exist_ok=True)
    samples = Samples(kind, path, read_as(sample_kind, path, "count"))
    report = Report(f"evaluate {path}")
    todo = [(plugin, ev, getattr(settings, ev.name)) for plugin, ev in chosen]
    enabled = [t for t in todo if t[2].enabled]
    plugin_log = CappedLog(out / "plugins.log")  # what the evaluators print, capped: not the terminal
    timings = evaluate_samples(samples, ref, out, enabled, report, timeout_minutes=settings.timeout_minutes, output=plugin_log)
    record = metrics_record(report, timings)
    (out / "metrics.json").write_text(json.dumps(finite(record), indent=2, default=str, allow_nan=False))
    failed = required_failures(report, enabled)
    if as_json:
        print(json.dumps(record["metrics"], indent=2, default=str))
        for note in report.notes:
            err.print(f"[yellow]{escape(note)}[/]", highlight=False, soft_wrap=True)
    else:
        _print_evaluation(report, f"{path} ({samples.count} {kind}) vs {reference}" + (f" (training data: {train})" if train else ""))
        console.print(f"figures and metrics.json: {out}")
    if failed:
        raise EvaluatorFailed(
            f"{failure_text(failed)}; the other metrics are in {out / 'metrics.json'} ({optional_hint(failed, '--set ')})", report
        )


def _print_evaluation(report: Report, title: str) -> None:
    """``genforge evaluate``'s table of metrics (each beside its reference value) and its notes."""
    table = Table(title=title)
    table.add_column("evaluator")
    table.add_column("metric")
    table.add_column("samples", justify="right")
    table.add_column("reference", justify="right")  # the metric on real data (its floor), where the evaluator gives one
    for ev in report.evaluations:
        for m in ev.metrics:
            table.add_row(f"{ev.evaluator} ({ev.plugin})", m.name, _fmt(m.value), _fmt(m.floor))
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]{escape(note)}[/]", highlight=False, soft_wrap=True)


@app.command("new-plugin")
def new_plugin(
    name: Annotated[str, typer.Argument(help="the plugin's name: lowercase letters, digits and dashes (e.g. acme-chem)")],
    out: Annotated[Path, typer.Option(help="folder to create the package in")] = Path("."),
) -> None:
    """Create a plugin package: pyproject with the genforge entry point, a generator, an evaluator, a sample kind, passing tests."""
    from genforge.core.scaffold import render_plugin, template_vars

    dest = render_plugin(name, out)
    v = template_vars(name)
    console.print(
        f"created {dest}: generator [bold]{v['generator']}[/], evaluator {v['evaluator']}, sample kind {v['kind']}", highlight=False
    )
    console.print(
        f"next: pip install -e '{dest}[test]' && pytest {dest} && genforge run {v['generator']}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


runs_app = typer.Typer(help="List the runs in the store, oldest first: id, state, step, and headline metrics.", no_args_is_help=False)
app.add_typer(runs_app, name="runs")


@runs_app.callback(invoke_without_command=True)
def runs(
    ctx: typer.Context,
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="every run as JSON: id, generator, state, step, created, path, metrics")] = False,
) -> None:
    """List the runs in the store, oldest first: id, state, step, and headline metrics (`genforge runs prune`: a retention rule)."""
    if ctx.invoked_subcommand is not None:
        return
    the_store = RunStore(store)
    all_runs = the_store.all()
    rows = []
    for r in all_runs:
        status = r.status
        try:
            metrics, problem = {k: v for k, v in r.metrics().get("metrics", {}).items() if "." not in k}, None
        except GenforgeError as exc:  # a damaged file of one run: say so on its row, list the others
            metrics, problem = {}, str(exc)
        if status.get("state") == "damaged":
            problem = status.get("error")
        rows.append(
            {
                "run_id": r.id,
                "generator": _generator_of(r),
                "state": status.get("state", ""),
                "step": status.get("step"),
                "created": status.get("created"),
                "path": str(r.path),
                "metrics": metrics,
                "error": status.get("error"),
                "damaged": problem,
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        console.print(f"no runs under {the_store.runs}")
        return
    table = Table()
    table.add_column("run", no_wrap=True, min_width=max(len(row["run_id"]) for row in rows))  # never cut: the id is what `show` takes
    table.add_column("state", no_wrap=True)
    table.add_column("step", justify="right")
    table.add_column("metrics", overflow="fold")
    for row in rows:
        shown = (
            f"[red]{escape(row['damaged'])}[/]"
            if row["damaged"]
            else escape(", ".join(f"{k} {_fmt(v)}" for k, v in list(row["metrics"].items())[:4]))
        )
        table.add_row(row["run_id"], row["state"], "" if row["step"] is None else str(row["step"]), shown)
    console.print(table)


@runs_app.command("prune")
def runs_prune(
    keep: Annotated[int | None, typer.Option("--keep", help="keep the newest N runs of each generator")] = None,
    older_than: Annotated[float | None, typer.Option("--older-than", help="delete only runs created more than DAYS days ago")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would be deleted, delete nothing")] = False,
    store: StoreOpt = None,
) -> None:
    """Delete old run folders by a retention rule; never a run an alias's model version came from, nor one not ended."""
    from genforge.core.models import prune_runs

    the_store = RunStore(store)
    doomed, kept = prune_runs(the_store, keep, older_than, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    for run in doomed:
        console.print(f"{verb} {run.id}", highlight=False, soft_wrap=True)
    for run_id, why in kept.items():
        console.print(f"kept {run_id}: {escape(why)}", highlight=False, soft_wrap=True)
    console.print(f"{verb} {len(doomed)} run(s); {len(kept)} kept by the rules above", highlight=False)


models_app = typer.Typer(help="Registered models: their versions, aliases and headline metrics.", no_args_is_help=False)
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="every model, version and alias as JSON")] = False,
) -> None:
    """List the registered models: each version, the aliases pointing at it, and its headline metrics (`genforge models show REF`: one)."""
    if ctx.invoked_subcommand is not None:
        return
    from genforge.core.store.registry import Registry

    registry = Registry(store)
    rows = []
    for name in registry.models():
        aliases = registry.aliases(name)
        for v in registry.versions(name):
            rows.append(
                {
                    "model": name,
                    "version": v.version,
                    "aliases": sorted(a for a, n in aliases.items() if n == v.version),
                    "generator": v.generator,
                    "run_id": v.run_id,
                    "registered": v.record.get("registered"),
                    "metrics": v.metrics,
                }
            )
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        console.print(f"no models in {registry}; register a finished run: genforge register RUN --model NAME", highlight=False)
        return
    table = Table()
    for column in ("model", "version", "aliases", "generator", "registered"):
        table.add_column(column, no_wrap=column in ("model", "version"))
    table.add_column("metrics", overflow="fold")
    from genforge.core.plugin_manager import generators

    installed = generators()
    for row in rows:
        gate = getattr(installed.get(row["generator"]), "gate", {}) or {}
        wanted = [*gate.get("metrics", []), *gate.get("guards", {}), *gate.get("thresholds", {})]  # what decides its gate first
        shown = [(k, row["metrics"][k]) for k in wanted if k in row["metrics"]] or [
            (k, v) for k, v in row["metrics"].items() if "." not in k and not k.startswith("train")
        ][:3]
        headline = ", ".join(f"{k} {_fmt(v)}" for k, v in shown)
        aliases = " ".join(f"@{a}" for a in row["aliases"])
        registered = str(row["registered"] or "")[:10]  # the day; `models show` gives the time
        table.add_row(row["model"], str(row["version"]), aliases, row["generator"], registered, escape(headline))
    console.print(table)


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="NAME (its champion), NAME@alias or NAME:version")],
    as_json: Annotated[bool, typer.Option("--json", help="the model card as JSON")] = False,
    store: StoreOpt = None,
) -> None:
    """A model version's card: its data, training, metrics, pictures, aliases, and lineage to its run."""
    from genforge.core.models import card
    from genforge.core.store.registry import Registry

    registry = Registry(store)
    info = card(registry, registry.resolve(ref))
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    aliases = " ".join(f"@{a}" for a in info["aliases"])
    console.print(f"[bold]{info['model']}:{info['version']}[/] {aliases}", highlight=False)
    console.print(f"generator {info['generator']}; trained by run {info['run_id']}", highlight=False, soft_wrap=True)
    console.print(f"registered {info['registered']} by {info['registered_by']}", highlight=False, soft_wrap=True)
    data, training = info["data"] or {}, info["training"] or {}
    console.print(f"data: {data.get('source')} (fingerprint {data.get('fingerprint')})", highlight=False, soft_wrap=True)
    if training:
        console.print(
            f"training: {training.get('step')} steps in {training.get('train_seconds')} s, stopped by {training.get('stopped_by')}",
            highlight=False,
        )
    table = Table(title="metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in info["metrics"].items():
        table.add_row(k, _fmt(v))
    console.print(table)
    for move in info["moves"]:
        console.print(
            f"@{move['alias']}: {move['from']} -> {move['to']} on {move['when']} by {move['by']}: {escape(str(move['reason']))}",
            highlight=False,
            soft_wrap=True,
        )
    if info["figures"]:
        console.print(f"figures: {', '.join(info['figures'])} (in {info['files']})", highlight=False, soft_wrap=True)


@app.command()
def register(
    run_id: Annotated[str, typer.Argument(help="a finished run: id, unique prefix, folder, or 'latest'")],
    model: Annotated[str, typer.Option("--model", "-m", help="the model's name (letters, digits, '.', '_', '-')")],
    store: StoreOpt = None,
) -> None:
    """Register a finished run as the next version of a model: its trained model's files and its records are copied."""
    from genforge.core.models import register_run
    from genforge.core.store.registry import Registry

    the_run = RunStore(store).get(run_id)
    version = register_run(the_run, model, Registry(store))
    console.print(f"registered run {the_run.id} as [bold]{version.ref}[/]", highlight=False, soft_wrap=True)


@app.command()
def promote(
    ref: Annotated[str, typer.Argument(help="the version, NAME:VERSION (or NAME@alias)")],
    alias: Annotated[str, typer.Option("--alias", "-a", help="the alias to point at it")] = "champion",
    reason: Annotated[str, typer.Option("--reason", "-r", help="why (kept in the alias's history)")] = "",
    store: StoreOpt = None,
) -> None:
    """Point an alias at a version by hand (a rollback, a person's override); the move is recorded with who and why."""
    from genforge.core.store.registry import Registry

    if not reason.strip():
        raise GenforgeError("give a --reason: every move of an alias is recorded with why (a rollback: --reason 'rollback: ...')")
    registry = Registry(store)
    version = registry.resolve(ref)
    move = registry.move_alias(version.model, alias, version.version, reason)["move"]
    console.print(f"{version.model}@{alias}: {move['from'] if move['from'] is not None else 'none'} -> {move['to']}", highlight=False)


@app.command()
def gate(
    run_id: Annotated[str, typer.Argument(help="a finished run: id, unique prefix, folder, or 'latest'")],
    model: Annotated[str, typer.Option("--model", "-m", help="the model to register it in and gate it against")],
    alias: Annotated[
        str | None, typer.Option("--alias", "-a", help="the alias it competes for (default: the run's promote.alias, champion)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the verdict as JSON")] = False,
    store: StoreOpt = None,
) -> None:
    """Register a finished run as a model's next version and gate it: the alias moves only if it beats the alias's version."""
    from genforge.core.gate import gate_run
    from genforge.core.runner import Steps
    from genforge.core.store.registry import Registry

    the_run = RunStore(store).get(run_id)
    promote = Steps(the_run).config.promote.model_copy(update={"model": model, **({"alias": alias} if alias else {})})
    verdict = gate_run(the_run, model, Registry(store), config=promote)
    if as_json:
        print(json.dumps(verdict.to_dict(), indent=2, default=str))
        return
    console.print(escape(verdict.line()), highlight=False, soft_wrap=True)
    for row in verdict.comparisons:
        console.print(f"  {'ok ' if row.passed else 'no '} {row.role}: {escape(row.why)}", highlight=False, soft_wrap=True)


@app.command()
def sample(
    ref: Annotated[
        str,
        typer.Argument(help="a model version (NAME: its champion, NAME@alias, NAME:version) or a finished run (its id, or latest)"),
    ],
    set_: Annotated[
        list[str],
        typer.Option("--set", "-s", help="change the version's sample, evaluate or data section: --set sample.n=10000 (repeatable)"),
    ] = [],
    prefect: PrefectOpt = True,
    store: StoreOpt = None,
) -> None:
    """Sample from a registered model, or a finished run, without training: a new run with its weights, then sample and evaluate.

    Change how it samples with --set sample.* (more samples, another class, guidance, steps or seed), and what it is
    scored on with --set evaluate.* or data.*; how it was trained stays as it was.
    """
    from genforge.core.models import create_sample_run

    if store:
        os.environ["GENFORGE_HOME"] = str(store)
    if prefect:
        check_prefect_api()
    the_run = create_sample_run(ref, set_)
    console.print(f"run [bold]{the_run.id}[/] in {the_run.path}, sampling from {ref}", highlight=False, soft_wrap=True)
    _execute(the_run, prefect)


def _generator_of(run) -> str:
    try:
        return run.generator
    except Exception:  # a damaged spec: the listing goes on
        return ""


@app.command()
def ui(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 4200,
) -> None:
    """Start the Prefect server and UI on the database the pipeline runs wrote to."""
    env = dict(os.environ, PREFECT_API_URL=f"http://{host}:{port}/api")
    console.print(f"Prefect UI at http://{host}:{port} (Ctrl-C to stop)")
    raise typer.Exit(subprocess.call([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)], env=env))


@app.command()
def deploy(
    pool: Annotated[
        list[str], typer.Option("--pool", help="work pools to create if missing: cpu, gpu, docker-gpu, kubernetes-gpu (repeatable)")
    ] = ["cpu", "gpu"],
    gpu_slots: Annotated[
        int | None, typer.Option(help="slots of the GPU concurrency limit when it is created (default: CUDA devices here, at least 1)")
    ] = None,
    gpu_limit: Annotated[str, typer.Option(help="name of the GPU concurrency limit training takes a slot from")] = "gpu",
    prefect_file: Annotated[Path | None, typer.Option(help="deployments file (default: genforge's deploy/prefect.yaml)")] = None,
    name: Annotated[
        list[str], typer.Option("--name", help="apply only these deployments of the file, by their name there (repeatable)")
    ] = [],
    apply: Annotated[bool, typer.Option("--apply/--no-apply", help="run `prefect deploy` after creating the pools")] = True,
    automations: Annotated[
        bool, typer.Option("--automations/--no-automations", help="create the crash-detection and restart automations")
    ] = True,
    update: Annotated[
        bool, typer.Option("--update", help="re-apply deployments that exist (replaces their schedules and scheduled runs)")
    ] = False,
    notify: Annotated[
        str | None,
        typer.Option(
            "--notify",
            help="a Prefect notification block, TYPE/NAME (slack-webhook/ml-alerts): notified when the gate holds or refuses a model",
        ),
    ] = None,
) -> None:
    """Create the work pools, the GPU concurrency limit and the crash automations (if missing), then apply deploy/prefect.yaml."""
    from .deploy import deploy as do_deploy

    if gpu_slots is None:
        import torch

        gpu_slots = max(1, torch.cuda.device_count())
    done = do_deploy(list(pool), gpu_slots, gpu_limit, prefect_file, apply, list(name) or None, automations, update, notify)
    console.print(f"pools created: {', '.join(done['pools']) or 'none (all existed)'}")
    lim = done["gpu_limit"]
    console.print(
        f"concurrency limit {lim['name']!r}: " + (f"created with {lim['slots']} slot(s)" if lim["created"] else "exists (unchanged)")
    )
    console.print(f"automations created: {', '.join(done['automations']) or 'none'}")
    deps = done["deployments"]
    console.print(f"deployments applied: {', '.join(deps['applied']) or 'none'}", highlight=False)
    if deps["kept"]:
        console.print(f"deployments kept as they are (they exist; --update re-applies them): {', '.join(deps['kept'])}", highlight=False)
    if deps["skipped"]:
        console.print(f"deployments not applied (--no-apply): {', '.join(deps['skipped'])}", highlight=False)


@app.command()
def worker(
    pool: Annotated[str, typer.Option("--pool", help="the work pool to poll")] = "genforge-gpu",
    gpu: Annotated[
        int | None, typer.Option("--gpu", help="serve only this GPU: its own 1-slot limit gpu-HOST-N and CUDA_VISIBLE_DEVICES=N")
    ] = None,
    limit: Annotated[
        str | None,
        typer.Option(
            "--limit", help="the concurrency limit this worker's trainings take a slot from (default: gpu, or per GPU with --gpu)"
        ),
    ] = None,
) -> None:
    """Start a Prefect process worker for genforge runs (one per machine, or one per GPU with --gpu N)."""
    import socket

    env = dict(os.environ)
    env.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        limit = limit or f"gpu-{socket.gethostname()}-{gpu}"
        from prefect.client.orchestration import get_client

        from .deploy import ensure_gpu_limit

        with get_client(sync_client=True) as client:
            ensure_gpu_limit(client, limit, 1)
    if limit:
        env["GENFORGE_GPU_LIMIT"] = limit
    console.print(f"worker on pool {pool}" + (f", GPU {gpu}" if gpu is not None else "") + (f", limit {limit!r}" if limit else ""))
    raise typer.Exit(subprocess.call([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"], env=env))


class _EvaluateOnly(GeneratorConfig):
    """A spec with only the ``evaluate`` section that matters: for `genforge evaluate --set`."""


_BUILTIN_COMMANDS: list | None = None  # genforge's own commands, before any plugin's


def add_plugin_commands(pm=None) -> None:
    """Commands plugins add through ``genforge_commands`` (one plugin's failure costs only its commands).

    Rebuilt from genforge's own commands on every call, so calling ``main`` again in one process
    (a test, a notebook) adds each plugin's commands once, for the plugins loaded now. A plugin
    may not replace genforge's own commands (all its commands are refused), and a command name two
    plugins add is a conflict like any other name (``resolve_names``): a built-in plugin's is kept,
    and between outside plugins neither is added.
    """
    from genforge.core.plugin_manager import PluginFailure, _say, resolve_names

    global _BUILTIN_COMMANDS
    if _BUILTIN_COMMANDS is None:
        _BUILTIN_COMMANDS = list(app.registered_commands)
    app.registered_commands[:] = _BUILTIN_COMMANDS
    pm = pm or get_plugin_manager()
    builtin = {_command_name(c) for c in app.registered_commands}
    added: list[tuple[str, str, Any]] = []  # (plugin, command name, command), held back until every plugin has added its own
    for impl in pm.hook.genforge_commands.get_hookimpls():
        before = len(app.registered_commands)
        try:
            impl.function(app=app)
            new = app.registered_commands[before:]
            clash = [_command_name(c) for c in new if _command_name(c) in builtin]
            if clash:
                raise ValueError(f"command(s) {', '.join(clash)} would replace genforge's own")
            added += [(impl.plugin_name, _command_name(c), c) for c in new]
        except Exception as exc:
            failure = PluginFailure(
                impl.plugin_name,
                pm.distribution(impl.plugin_name) if hasattr(pm, "distribution") else "unknown",
                "genforge_commands",
                f"{type(exc).__name__}: {exc}",
            )
            _say(failure.line(), pm)
        finally:
            del app.registered_commands[before:]
    kept, conflicts = resolve_names(pm, "command", added)
    app.registered_commands.extend(command for _, command in kept.values())
    pm.command_conflicts = conflicts  # `genforge plugins` shows them (plugin_infos)
    for conflict in conflicts:
        _say(conflict.line(), pm)


def _command_name(command) -> str:
    return command.name or command.callback.__name__.replace("_", "-")


def _terminated(signum, frame) -> None:
    # Docker, Kubernetes, `timeout` and Prefect cancellations send SIGTERM: stop like Ctrl-C, so
    # the run is marked interrupted (resumable) and its last checkpoint is kept.
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")  # installed by _execute


def main(argv: list[str] | None = None) -> None:
    """The console entry point (``argv``: the arguments, default ``sys.argv[1:]``); errors a user can cause are one line."""
    from genforge.core.store import redact_text  # an error may quote a URL with its token: printed redacted

    try:
        add_plugin_commands()
        app(args=argv, prog_name="genforge")
    except EvaluatorFailed as exc:  # the work is done and written; what failed is the result: exit 1, not a usage error
        err.print(f"[red]error:[/] {escape(redact_text(str(exc)))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except GenforgeError as exc:
        err.print(f"[red]error:[/] {escape(redact_text(str(exc)))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except FileNotFoundError as exc:
        err.print(f"[red]error:[/] {escape(redact_text(str(exc)))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:  # the error boundary: one line, what to do; GENFORGE_DEBUG=1 shows the traceback
        if os.environ.get("GENFORGE_DEBUG", "") not in ("", "0"):
            raise
        err.print(
            f"[red]error:[/] {escape(redact_text(describe_error(exc)))} (GENFORGE_DEBUG=1 shows the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


@dataclass
class Invocation:
    """What ``invoke`` saw: the exit code and the two streams."""

    code: int
    stdout: str
    stderr: str


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Invocation:
    """Call the command line in this process, through the console script's error boundary, capturing what it prints.

        r = invoke("run", "toy-gausian")
        assert r.code == 2 and r.stderr.startswith("error: unknown generator")

    For tests (a plugin's command, a message): plugins are loaded afresh for the call, as its
    environment says (``env`` sets variables for the call only; None removes one).
    """
    import contextlib
    import io

    from genforge.core import plugin_manager

    out, errs = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in env or {}}
    code = 0
    try:
        for k, v in (env or {}).items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(errs):
            plugin_manager.reset_plugin_manager()
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        plugin_manager.reset_plugin_manager()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return Invocation(code, out.getvalue(), errs.getvalue())


def describe_error(exc: BaseException) -> str:
    """An unexpected failure in a user's words: the disk, a permission, the Prefect API, or the exception itself."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device{f' writing {exc.filename}' if exc.filename else ''}; free some space (old runs under $GENFORGE_HOME/runs, cache/) and `genforge resume` the run"
    if isinstance(exc, PermissionError):
        return f"permission denied{f' on {exc.filename}' if exc.filename else ''}; check the owner of $GENFORGE_HOME or set it to a folder you can write"
    if (
        type(exc).__module__.split(".")[0] in ("httpx", "httpcore")
        or type(exc).__name__ in ("ConnectError", "ConnectTimeout")
        or "Failed to reach API" in str(exc)
    ):
        url = os.environ.get("PREFECT_API_URL") or "Prefect's embedded server"
        return f"cannot reach the Prefect API at {url} ({type(exc).__name__}: {exc}); start the server, fix PREFECT_API_URL, or run with --no-prefect"
    return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    main()
