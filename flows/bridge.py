"""The Prefect bridge: a lifecycle listener that turns genforge's events into Prefect artifacts.

Registered on the plugin manager for the duration of a pipeline flow run. What a person
sees in the Prefect UI: a progress artifact while training, a metrics table, and a
markdown report whose pictures are inline PNG data URLs (they render in both the
default and the V1 UI; inline SVG would be stripped).
"""

from __future__ import annotations

import re
import time
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from genforge.core import Report, Run, RunInfo, hookimpl
from genforge.core.report import metrics_table, render_markdown
from genforge.core.training import headline_loss


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys may hold only lowercase letters, numbers and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


class PrefectBridge:
    def __init__(self, min_interval_s: float = 2.0):
        self.progress_id = None
        self.min_interval_s = min_interval_s
        self._last = 0.0

    @hookimpl
    def genforge_data_prepared(self, run: RunInfo, stats: dict[str, Any]) -> None:
        train = stats.get("train", {})
        rejected = train.get("rejected", {})
        get_run_logger().info(
            "prepared %s: %s rows read, %s kept, %s rejected %s (cache %s)",
            stats.get("source"),
            train.get("read"),
            train.get("kept"),
            sum(rejected.values()),
            rejected or "",
            stats.get("cache"),
        )

    @hookimpl
    def genforge_train_progress(self, run: RunInfo, step: int, total: int | None, metrics: dict[str, float]) -> None:
        pct = round(100 * min(1.0, metrics.get("progress", step / total if total else 0.0)), 1)
        now = time.monotonic()
        if self.progress_id is None:
            self.progress_id = create_progress_artifact(
                pct, key=artifact_key(run.generator, "training"), description=f"training {run.run_id}"
            )
        elif now - self._last >= self.min_interval_s or pct >= 100:
            update_progress_artifact(self.progress_id, pct, description=f"step {step}, loss {headline_loss(metrics):.4f}")
        else:
            return
        self._last = now
        others = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k.endswith("_loss"))  # one per phase, with several
        lrs = ", ".join(f"{k} {v:.2e}" for k, v in metrics.items() if k == "lr" or k.startswith("lr_"))
        get_run_logger().info("step %d  %.1f%%  loss %.4f  %s%s", step, pct, headline_loss(metrics), lrs, f"  ({others})" if others else "")

    @hookimpl
    def genforge_step_progress(self, run: RunInfo, stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._last >= 10 or (total and done >= total):  # the flow log, not a flood
            self._last = now
            get_run_logger().info("%s: %s of %s", stage, f"{done:,}", f"{total:,}" if total else "?")

    @hookimpl
    def genforge_checkpoint_saved(self, run: RunInfo, step: int, path: str) -> None:
        get_run_logger().info("checkpoint at step %d: %s", step, path)

    @hookimpl
    def genforge_run_finished(self, run: RunInfo, report: Report) -> None:
        self._publish(run, report)

    @hookimpl
    def genforge_run_failed(self, run: RunInfo, error: BaseException) -> None:
        report = getattr(error, "report", None)  # EvaluatorFailed: the other evaluators' metrics and the report exist
        if isinstance(report, Report):
            self._publish(run, report)

    def _publish(self, run: RunInfo, report: Report) -> None:
        """The report's notes in the flow run's log, the metrics table and the report as artifacts."""
        for note in report.notes:  # e.g. an evaluator that failed: named in the flow run's log
            get_run_logger().warning(note)
        rows = [{k: ("" if v is None else v) for k, v in row.items()} for row in metrics_table(report)]
        create_table_artifact(rows, key=artifact_key(run.generator, "metrics"), description=f"metrics of {run.run_id}")
        create_markdown_artifact(
            render_markdown(Run(run.path), report, inline_images=True),
            key=artifact_key(run.generator, "report"),
            description=f"report of {run.run_id} ({run.path})",
        )
