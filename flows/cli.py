"""The ``genforge`` command line (typer + rich)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import genforge.flows  # noqa: F401  (Prefect defaults, before Prefect is imported)
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from genforge.core import GenforgeError, Report, RunInfo, RunStore, Samples, hookimpl
from genforge.core.plugins import get_plugin_manager, plugin_infos
from genforge.core.runner import create_run, run_all

app = typer.Typer(
    help="genforge: generative models in Prefect pipelines. Runs live under $GENFORGE_HOME/runs (default ~/.genforge).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

DEMO_GENERATOR = "molecule-diffusion"

StoreOpt = Annotated[Optional[str], typer.Option("--store", help="run store root, a folder or a URL such as s3://bucket/genforge (default: $GENFORGE_HOME or ~/.genforge)")]
SetOpt = Annotated[list[str], typer.Option("--set", "-s", help="override a spec field: --set train.max_steps=200 (repeatable)")]
PrefectOpt = Annotated[bool, typer.Option("--prefect/--no-prefect", help="run as a Prefect flow (default) or directly in this process")]


class CliProgress:
    """A lifecycle listener that draws a rich progress bar while training."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task = None

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
                TextColumn("[bold]training"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                TextColumn("step {task.fields[step]}  loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), console=console,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=100, step=step, loss=metrics.get("loss", 0.0))
        self.progress.update(self.task, completed=100 * metrics.get("progress", 0.0), step=step, loss=metrics.get("loss", 0.0))
        if metrics.get("progress", 0.0) >= 1.0:
            self.stop()

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
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def print_summary(run_dir: Path) -> None:
    store_run = RunStore().get(str(run_dir))
    metrics = store_run.read_json("metrics.json", {})
    model = store_run.read_json("model.json", {})
    table = Table(title=f"{store_run.generator} — {store_run.id}")
    table.add_column("evaluator")
    table.add_column("metric")
    table.add_column("samples", justify="right")
    table.add_column("reference", justify="right")
    for ev in metrics.get("evaluations", []):
        first = True
        for m in ev["metrics"]:
            if m["name"].startswith("reference_"):
                continue
            table.add_row(ev["evaluator"] if first else "", m["name"], _fmt(m["value"]), _fmt(m["floor"]), end_section=False)
            first = False
        table.add_section()
    console.print(table)
    if model:
        console.print(f"trained {model.get('step')} steps in {model.get('train_seconds')} s, {model.get('parameters', 0):,} parameters")
        init = model.get("init_from")
        if init:
            prov = init.get("provenance", {})
            console.print(
                f"[yellow]started from the checkpoint '{init['name']}' ({init.get('step')} steps"
                + (f"; {prov.get('hardware')}; {prov.get('budget')}" if prov else "")
                + f"), not from scratch; {init['path']}[/]"
            )
    for note in metrics.get("notes", []):
        console.print(f"[yellow]{note}[/]")
    console.print(f"run folder: [bold]{store_run.path}[/]")


def _execute(run, use_prefect: bool) -> None:
    pm = get_plugin_manager()
    listener = CliProgress()
    pm.register(listener, name="cli-progress")
    try:
        if use_prefect:
            from .pipeline import run_pipeline

            run_pipeline(run)
        else:
            run_all(run, pm)
    finally:
        listener.stop()
        pm.unregister(listener)
    print_summary(run.path)


@app.command()
def plugins(as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False) -> None:
    """List installed plugins: version, hooks implemented, and what each registers."""
    infos = plugin_infos()
    if as_json:
        print(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    if not infos:
        console.print("no plugins loaded (GENFORGE_DISABLE_PLUGINS or GENFORGE_DISABLE_PLUGIN_AUTOLOAD may be set)")
    for i in infos:
        console.print(f"[bold]{i.name}[/] {i.version}", highlight=False)
        for label, items in (("hooks", i.hooks), ("generators", i.generators), ("evaluators", i.evaluators), ("data sources", i.datasets)):
            if items:
                console.print(f"  {label}: {', '.join(items)}", highlight=False, soft_wrap=True)


def _start(generator: str, config: Path | None, overrides: list[str], use_prefect: bool, store: Path | None, base: dict | None = None) -> None:
    if store:  # the flow and every step find the store through GENFORGE_HOME
        os.environ["GENFORGE_HOME"] = str(store)
    the_run = create_run(generator, config, overrides, spec=base)
    console.print(f"run [bold]{the_run.id}[/] in {the_run.path}")
    if base:
        console.print(f"demo spec: {base}")
    _execute(the_run, use_prefect)


@app.command()
def run(
    generator: Annotated[str, typer.Argument(help="a registered generator, e.g. molecule-diffusion")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML spec with sections data/model/train/sample/evaluate")] = None,
    set_: SetOpt = [],
    prefect: PrefectOpt = True,
    store: StoreOpt = None,
) -> None:
    """Prepare data, train, sample and evaluate a generator; prints a summary and the run folder."""
    _start(generator, config, set_, prefect, store)


@app.command()
def demo(
    generator: Annotated[str, typer.Argument(help="the generator whose demo to run")] = DEMO_GENERATOR,
    set_: SetOpt = [],
    prefect: PrefectOpt = True,
    store: StoreOpt = None,
) -> None:
    """The README's main job: a generator's demo spec (molecules by default) on Prefect's embedded server."""
    from genforge.core.plugins import get_generator

    _start(generator, None, set_, prefect, store, base=get_generator(generator).demo_spec)


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="run id, unique prefix, folder, or 'latest'")],
    prefect: PrefectOpt = True,
    store: StoreOpt = None,
) -> None:
    """Continue an interrupted run from its newest checkpoint, then sample and evaluate."""
    the_run = RunStore(store).get(run_id)
    from genforge.core.training import list_checkpoints

    ckpts = list_checkpoints(the_run.checkpoints)
    console.print(f"resuming [bold]{the_run.id}[/] from " + (f"step {ckpts[-1][0]}" if ckpts else "the start (no checkpoint yet)"))
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
            "data": the_run.read_json("data.json", {}),
            "model": {k: v for k, v in the_run.read_json("model.json", {}).items() if k not in ("tokenizer", "length_histogram")},
            "samples": the_run.read_json("samples.json", {}),
            "versions": the_run.read_json("versions.json", {}),
        }
        print(json.dumps(out, indent=2, default=str))
        return
    console.print(f"[bold]{the_run.id}[/]: {the_run.status.get('state')}")
    if the_run.metrics():
        print_summary(the_run.path)
    else:
        console.print(f"no metrics yet; run folder: {the_run.path}")


@app.command()
def evaluate(
    kind: Annotated[str, typer.Argument(help="sample kind of the file, e.g. molecules")],
    file: Annotated[Path, typer.Argument(help="samples in any format the kind's evaluators read (molecules: .smi, .txt, .csv)")],
    reference: Annotated[str, typer.Option(help="reference data as SOURCE-SPLIT, e.g. moses-test")] = "moses-test",
    train: Annotated[Optional[str], typer.Option(help="training data for novelty, as SOURCE-SPLIT or a file")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print every metric as JSON, keyed by name")] = False,
    out: Annotated[Optional[Path], typer.Option(help="folder for figures and metrics.json (default: a new folder under $GENFORGE_HOME/evaluations)")] = None,
) -> None:
    """Score any file of samples with every evaluator registered for its kind."""
    import datetime as dt

    from genforge.core import Reference
    from genforge.core.plugins import datasets, evaluators
    from genforge.core.store import home

    if not file.exists():
        raise FileNotFoundError(f"{file} does not exist")

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
        listing = ", ".join(f"{n}-{s}" for n, src in found.items() if src.kind == kind for s in src.splits)
        raise GenforgeError(f"unknown reference {spec!r} for {kind}; use a file or one of: {listing}")

    ref = Reference(kind, test=resolve(reference), train=resolve(train) if train else None, name=reference)
    chosen = [(plugin, ev) for plugin, ev in evaluators() if kind in ev.kinds]
    if not chosen:
        raise GenforgeError(f"no evaluator accepts {kind!r}")
    n = sum(1 for _ in open(file))
    out = out or home() / "evaluations" / f"{dt.datetime.now():%Y%m%d-%H%M%S}-{file.stem}"
    out.mkdir(parents=True, exist_ok=True)
    samples = Samples(kind, file, n)
    results: dict[str, Any] = {}
    table = Table(title=f"{file} ({kind}) vs {reference}")
    for col in ("evaluator", "metric", "value"):
        table.add_column(col)
    for plugin, ev in chosen:
        result = ev.evaluate(samples, ref, out, None)  # None: each evaluator's defaults
        for m in result.metrics:
            results.setdefault(m.name, m.value)
            table.add_row(f"{ev.name} ({plugin})", m.name, _fmt(m.value))
    (out / "metrics.json").write_text(json.dumps(results, indent=2, default=str))
    if as_json:
        print(json.dumps(results, indent=2, default=str))
    else:
        console.print(table)
        console.print(f"figures and metrics.json: {out}")


@app.command()
def runs(store: StoreOpt = None) -> None:
    """List the runs in the store, oldest first: id, state, step, and headline metrics."""
    all_runs = RunStore(store).all()
    if not all_runs:
        console.print(f"no runs under {RunStore(store).runs}")
        return
    table = Table()
    for col in ("run", "state", "step", "metrics"):
        table.add_column(col)
    for r in all_runs:
        status = r.status
        metrics = r.metrics().get("metrics", {})
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in list((k, v) for k, v in metrics.items() if not k.startswith("reference_"))[:4])
        table.add_row(r.id, status.get("state", ""), str(status.get("step", "")), shown)
    console.print(table)


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
    pool: Annotated[list[str], typer.Option("--pool", help="work pools to create if missing: cpu, gpu, docker-gpu, kubernetes-gpu (repeatable)")] = ["cpu", "gpu"],
    gpu_slots: Annotated[Optional[int], typer.Option(help="slots of the GPU concurrency limit when it is created (default: CUDA devices here, at least 1)")] = None,
    gpu_limit: Annotated[str, typer.Option(help="name of the GPU concurrency limit training takes a slot from")] = "gpu",
    prefect_file: Annotated[Optional[Path], typer.Option(help="deployments file (default: genforge's deploy/prefect.yaml)")] = None,
    name: Annotated[list[str], typer.Option("--name", help="apply only these deployments of the file, by their name there, e.g. molecule-diffusion-cpu (repeatable)")] = [],
    apply: Annotated[bool, typer.Option("--apply/--no-apply", help="run `prefect deploy` after creating the pools")] = True,
    automations: Annotated[bool, typer.Option("--automations/--no-automations", help="create the crash-detection and restart automations")] = True,
) -> None:
    """Create the work pools, the GPU concurrency limit and the crash automations (if missing), then apply deploy/prefect.yaml."""
    from .deploy import deploy as do_deploy

    if gpu_slots is None:
        import torch

        gpu_slots = max(1, torch.cuda.device_count())
    done = do_deploy(list(pool), gpu_slots, gpu_limit, prefect_file, apply, list(name) or None, automations)
    console.print(f"pools created: {', '.join(done['pools']) or 'none (all existed)'}")
    lim = done["gpu_limit"]
    console.print(f"concurrency limit {lim['name']!r}: " + (f"created with {lim['slots']} slot(s)" if lim["created"] else "exists (unchanged)"))
    console.print(f"automations created: {', '.join(done['automations']) or 'none'}")
    console.print(f"deployments: {done['deployments']}")


@app.command()
def worker(
    pool: Annotated[str, typer.Option("--pool", help="the work pool to poll")] = "genforge-gpu",
    gpu: Annotated[Optional[int], typer.Option("--gpu", help="serve only this GPU: its own 1-slot limit gpu-HOST-N and CUDA_VISIBLE_DEVICES=N")] = None,
    limit: Annotated[Optional[str], typer.Option("--limit", help="the concurrency limit this worker's trainings take a slot from (default: gpu, or per GPU with --gpu)")] = None,
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


def main() -> None:
    try:
        app()
    except GenforgeError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except FileNotFoundError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
