"""Progress from plugin code that has no run in hand — an evaluator: ``report_progress(stage, done, total)``.

A generator's steps report through ``run.report_progress``; an evaluator gets samples and a
reference, no run, and may still take minutes (training a feature network, parsing a thousand
MIDI files). It calls ``genforge.core.report_progress``; the host, which knows where the evaluator
runs (a run's evaluate step, ``genforge evaluate``), has set where that goes: in a run, the run's
status and progress listeners (the CLI's bar, the Prefect log); elsewhere a line on the terminal
at most every ``EVERY`` seconds and at the end of each stage (written past the capture of what
plugins print, so it is seen).
Outside the host (a plugin's own test) it does nothing.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator

EVERY = 5.0  # seconds between a stage's progress lines on the terminal
_local = threading.local()  # per thread: an evaluator runs in a worker thread of its own


def report_progress(stage: str, done: int, total: int | None = None) -> None:
    """Say how far a long piece of plugin work is (``report_progress("feature classifier", 300, 600)``)."""
    reporter = getattr(_local, "reporter", None)
    if reporter is not None:
        reporter(stage, done, total)


@contextlib.contextmanager
def progress_lines(label: str, also: Callable[[str, int, int | None], None] | None = None) -> Iterator[None]:
    """While inside, this thread's ``report_progress`` calls ``also`` (a run's progress), or without it prints
    ``label: stage done/total`` lines on the terminal."""
    last: dict[str, float] = {}

    def reporter(stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if also is None and (finished or now - last.get(stage, 0.0) >= EVERY):  # in a run, its own listeners show it
            last[stage] = now
            shown = f"{done:,}/{total:,}" if total else f"{done:,}"
            stream = sys.__stderr__ or sys.stderr  # past the capture of plugin output: the person waiting sees it
            try:
                stream.write(f"{label}: {stage} {shown}\n")
                stream.flush()
            except (OSError, ValueError):
                pass
        if also is not None:
            also(f"{label}: {stage}", done, total)

    previous = getattr(_local, "reporter", None)
    _local.reporter = reporter
    try:
        yield
    finally:
        _local.reporter = previous
