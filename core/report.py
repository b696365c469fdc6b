"""The human-readable report of a run (report.md in the run folder)."""

from __future__ import annotations

import base64
from pathlib import Path

from .contracts import Evaluation, Metric, Report
from .store import Run, atomic_write_text, read_jsonl


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def metrics_table(report: Report) -> list[dict]:
    """One row per metric: evaluator, plugin, name, value, reference value, direction."""
    rows = []
    for ev in report.evaluations:
        for m in ev.metrics:
            rows.append(
                {
                    "evaluator": ev.evaluator,
                    "plugin": ev.plugin,
                    "metric": m.name,
                    "value": m.value,
                    "reference": m.floor,
                    "better": {True: "higher", False: "lower", None: ""}[m.higher_is_better],
                }
            )
    return rows


def _details(d: dict) -> str:
    return "; ".join(f"{k} {_fmt(v)}" for k, v in d.items() if not isinstance(v, (dict, list)))


def summary_lines(run: Run) -> list[str]:
    """Sentences about a run's data, training and sampling, from the files core writes.

    ``data.json``, ``training.json`` and ``samples.json`` have keys core defines; each
    has a free-form ``details`` section of the generator's, printed as ``key value`` pairs
    (nested values are left to ``genforge show --json``). Training ``notes`` come last.
    """
    data = run.read_json("data.json", {})
    training = run.read_json("training.json", {})
    samples = run.read_json("samples.json", {})
    lines = []
    train = data.get("train", {})
    if train:
        rejected = train.get("rejected", {})
        held = f", {train['held_out']} held out as reference" if train.get("held_out") else ""
        reasons = f" ({', '.join(f'{n} {r}' for r, n in rejected.items())})" if rejected else ""
        lines.append(
            f"Data: {train.get('read')} rows read from {data.get('source')}, {train.get('kept')} kept for training{held}, {sum(rejected.values())} rejected{reasons}."
        )
    if data.get("details") and _details(data["details"]):
        lines.append(f"Data details: {_details(data['details'])}.")
    if training.get("from_model"):
        source = training["from_model"]
        if source.get("run"):
            lines.append(f"No training: the weights of run {source['run']}.")
        else:
            lines.append(f"No training: the weights of model {source.get('ref')} (trained by run {source.get('trained_by_run')}).")
    if training.get("stopped_by"):
        thr = training.get("throughput") or {}
        lines.append(
            f"Trained {training['step']} steps in {training['train_seconds']} s ({training.get('parameters', 0):,} parameters, "
            f"stopped by {training['stopped_by']}"
            + (f", resumed from step {training['resumed_from']}" if training.get("resumed_from") else "")
            + (f", {thr['value']:,.0f} {thr['unit']}" if thr.get("value") is not None else "")
            + ")."
        )
    if isinstance(training.get("plan"), dict) and training["plan"].get("max_steps"):
        plan = training["plan"]
        lines.append(
            f"Planned {plan['max_steps']:,} steps to complete within train.max_minutes ({plan.get('max_minutes')}) at the "
            f"{plan.get('seconds_per_step', 0):.3f} s per step measured on this machine."
        )
    if training.get("details") and _details(training["details"]):
        lines.append(f"Training details: {_details(training['details'])}.")
    if samples:
        lines.append(
            f"Drew {samples.get('count')} {samples.get('kind', 'samples')} in {samples.get('seconds')} s ({samples.get('per_s', 0):,.1f} per second)."
        )
    if samples.get("details") and _details(samples["details"]):
        lines.append(f"Sampling details: {_details(samples['details'])}.")
    return lines


def training_notes(run: Run) -> list[str]:
    return list(run.read_json("training.json", {}).get("notes", []))


def png_data_url(png: bytes) -> str:
    """A PNG as a ``data:`` URL: the inline picture the Prefect UI renders in a markdown artifact (inline SVG it strips)."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


def render_markdown(run: Run, report: Report, inline_images: bool = False) -> str:
    """Markdown for a person. ``inline_images`` embeds PNGs as data URLs (for the Prefect UI)."""
    spec = run.spec
    lines = [f"# genforge run `{run.id}`", ""]
    for evaluation in report.evaluations:  # an evaluator's one page comes first: what a reader files
        if evaluation.headline:
            lines += [evaluation.headline.strip(), ""]
    lines += [f"Generator **{spec['generator']}**; run folder `{run.path}`.", ""]
    lines += [f"- {line}" for line in summary_lines(run)]
    lines += [f"> **{note}**" for note in training_notes(run)]
    # Pictures first (sample gallery, loss curve): in the Prefect UI they show without scrolling.
    for name, path in report.figures().items():
        path = Path(path)
        if inline_images:
            src = png_data_url(path.read_bytes())
        else:
            src = str(path.relative_to(run.path)) if path.is_relative_to(run.path) else str(path)
        lines += ["", f"### {name}", "", f"![{name}]({src})"]
    lines += ["", "### metrics", "", "| evaluator | metric | value | reference | better |", "|---|---|---|---|---|"]
    for row in metrics_table(report):
        ref = "" if row["reference"] is None else _fmt(row["reference"])
        lines.append(f"| {row['evaluator']} | {row['metric']} | {_fmt(row['value'])} | {ref} | {row['better']} |")
    for note in report.notes:
        lines += ["", f"> {note}"]
    return "\n".join(lines) + "\n"


def training_curve(run: Run) -> Evaluation | None:
    """The loss curve from the run's training log (``logs/train.jsonl``), as a figure and two metrics."""
    log = run.path / "logs" / "train.jsonl"
    if not log.exists():
        return None
    rows = read_jsonl(log)
    keys = [k for k in (rows[-1] if rows else {}) if k == "loss" or k.endswith("_loss")]  # one per phase
    rows = [r for r in rows if all(k in r for k in keys)]
    if not rows or not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for k in keys:
        ax.plot(steps, [r[k] for r in rows], lw=1.5, label="training loss" if k == "loss" else k.replace("_", " "))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if len(keys) > 1:
        ax.legend(fontsize=8)
    ax.set_title(f"training loss, {run.id}", fontsize=9)
    fig.tight_layout()
    path = run.figures / "training" / "loss.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    metrics = [
        Metric(f"train_{k}", float(rows[-1][k]), higher_is_better=False, description="mean loss over the last logging window") for k in keys
    ]
    throughput = (run.read_json("training.json", {}) or {}).get("throughput") or {}
    if throughput.get("value") is not None:  # the generator names its unit: tokens/s, images/s, ...
        name = "train_" + throughput["unit"].replace("/s", "_per_s")
        metrics.append(
            Metric(
                name,
                float(throughput["value"]),
                higher_is_better=True,
                description=f"training throughput, {throughput['unit']} (the average over the training)",
            )
        )
    return Evaluation("training", metrics, {"loss": path}, plugin="genforge")


def write_report(run: Run, report: Report) -> Path:
    path = run.path / "report.md"
    atomic_write_text(path, render_markdown(run, report))
    return path
