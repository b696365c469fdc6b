"""Errors a user can cause. Each says what was wrong and what to do, in the user's words."""

from __future__ import annotations


class GenforgeError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class UnknownNameError(GenforgeError, KeyError):
    """A generator, evaluator or data source that no installed plugin registers."""

    def __init__(self, what: str, name: str, installed: list[str], hint: str = ""):
        self.what, self.name, self.installed = what, name, installed
        listing = (
            ", ".join(installed)
            if installed
            else ("none" if hint else "none (is a plugin disabled by GENFORGE_DISABLE_PLUGINS or left out of GENFORGE_PLUGINS?)")
        )
        known = "known" if what == "sample kind" else "installed"
        super().__init__(f"unknown {what} {name!r}; {known}: {listing}{hint}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class ConfigError(GenforgeError, ValueError):
    """A run spec or a --set override that does not fit the generator's config."""


class DataError(GenforgeError):
    """Input data that cannot be used at all (as opposed to single bad rows, which are skipped)."""


class TrainingDiverged(GenforgeError):
    """The loss or the gradients became NaN or infinite; the last good checkpoint is kept."""


class RunNotFound(GenforgeError):
    """No run folder by that id."""


class RunGone(RunNotFound):
    """The run's folder disappeared while the run executed: it stops, and nothing recreates the folder."""


class TrainingFailed(GenforgeError):
    """A training process (e.g. one of several launched by torchrun) exited with an error."""


class RunBusy(GenforgeError):
    """Another process holds the run (it is training it)."""


class LeaseLost(RunBusy):
    """Raised in the thread that holds a run whose lease on a shared store another machine took: this one stops."""


class StopRun(GenforgeError):
    """Raised by a lifecycle listener that must stop the run (any other exception a listener raises is noted, and the run goes on)."""
