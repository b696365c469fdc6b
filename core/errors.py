"""Errors a user can cause. Each says what was wrong and what to do, in the user's words."""

from __future__ import annotations

import reprlib
from typing import Any

QUOTE_LIMIT = 200  # characters of a user's value an error message quotes


def shown(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for a message, at most ``limit`` characters ("…" marks a cut).

    Never builds the whole repr of a big value first (``reprlib`` stops at a few items and levels):
    a message quoting a user's 20 MB string or deeply nested list stays one short line.
    """
    if isinstance(value, str):
        return shorten(repr(value[: limit + 1]), limit)
    r = reprlib.Repr()
    r.maxstring, r.maxother = 60, limit  # reprlib cuts the middle of what it shortens ('ab...yz')
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset, r.maxfrozenset, r.maxdeque = 3, 8, 8, 8, 8, 8, 8
    return shorten(r.repr(value), limit)


def shorten(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with "…", and on one line."""
    text = str(text).replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class GenforgeError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class UnknownNameError(GenforgeError, KeyError):
    """A generator, evaluator or data source that no installed plugin registers."""

    def __init__(self, what: str, name: str, installed: list[str], hint: str = ""):
        self.what, self.name, self.installed = what, name, installed
        name = shorten(name)  # a name typed by a user: quoted, never whole
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


class EvaluatorFailed(GenforgeError):
    """An evaluator the run needs (not ``optional``) raised or overran its deadline; ``report`` holds what the others found."""

    def __init__(self, message: str, report: Any = None):
        super().__init__(message)
        self.report = report
