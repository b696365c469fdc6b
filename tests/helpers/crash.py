"""A worker lost right after a checkpoint: the engine's save is wrapped to raise once it has written ``after`` checkpoints."""

from __future__ import annotations

import contextlib

from genforge.core import training


class WorkerLost(RuntimeError):
    """What the simulated crash raises (not a genforge error: a Prefect task retries it)."""


@contextlib.contextmanager
def crash_after_checkpoints(after: int = 1, times: int = 1):
    """Within the block, the ``after``-th checkpoint written raises ``WorkerLost`` once it is on disk (``times`` crashes in all)."""
    original = training.Trainer._save
    state = {"saved": 0, "crashes": 0}

    def save(self, step, *args, **kwargs):
        path = original(self, step, *args, **kwargs)
        state["saved"] += 1
        if state["crashes"] < times and state["saved"] >= after:
            state["crashes"] += 1
            state["saved"] = 0
            raise WorkerLost(f"worker lost after the checkpoint at step {step}")
        return path

    training.Trainer._save = save
    try:
        yield state
    finally:
        training.Trainer._save = original
