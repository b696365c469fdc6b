"""The human-readable report of a run (report.md in the run folder)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from .contracts import Evaluation, Metric, Report
from .store import Run, atomic_write_text


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


def render_markdown(run: Run, report: Report, inline_images: bool = False) -> str:
    """Markdown for a person. ``inline_images`` embeds PNGs as data URLs (for the Prefect UI)."""
    spec = run.spec
    data = run.read_json("data.json", {})
    model = run.read_json("model.json", {})
    samples = run.read_json("samples.json", {})
    lines = [f"# genforge run `{run.id}`", "", f"Generator **{spec['generator']}**; run folder `{run.path}`.", ""]
    if model:
        lines.append(
            f"Trained {model.get('step')} steps in {model.get('train_seconds')} s "
            f"({model.get('parameters', 0):,} parameters, stopped by {model.get('stopped_by')}"
            + (f", resumed from step {model['resumed_from']}" if model.get("resumed_from") else "")
            + ")."
        )
    if samples:
        lines.append(f"Drew {samples.get('count')} samples ({samples.get('molecules_per_s', samples.get('per_s', ''))} per second).")
    train = data.get("train", {})
    if train:
        rejected = train.get("rejected", {})
        held = f", {train['held_out']} held out as reference" if train.get("held_out") else ""
        lines += ["", f"Data: {train.get('read')} rows read from `{data.get('source')}`, {train.get('kept')} kept for training{held}, {sum(rejected.values())} rejected."]
        for reason, n in rejected.items():
            lines.append(f"- {n} rejected: {reason}")
    # Pictures first (sample gallery, loss curve): in the Prefect UI they show without scrolling.
    for name, path in report.figures().items():
        path = Path(path)
        if inline_images:
            src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
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
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.plot(steps, [r["loss"] for r in rows], lw=1.5, label="training loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.set_title(f"training loss, {run.id}", fontsize=9)
    fig.tight_layout()
    path = run.figures / "training_loss.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    metrics = [Metric("train_loss", float(rows[-1]["loss"]), higher_is_better=False, description="mean loss over the last logging window")]
    if "tokens_per_s" in rows[-1]:
        metrics.append(Metric("train_tokens_per_s", float(rows[-1]["tokens_per_s"]), higher_is_better=True))
    return Evaluation("training", metrics, {"loss": path}, plugin="genforge")


def write_report(run: Run, report: Report) -> Path:
    path = run.path / "report.md"
    atomic_write_text(path, render_markdown(run, report))
    return path
