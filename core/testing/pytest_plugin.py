"""genforge's pytest plugin (entry point ``pytest11: genforge``): fixtures for plugin authors' tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def genforge_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh run store for one test: ``$GENFORGE_HOME`` points at an empty folder."""
    home = tmp_path / "genforge-home"
    monkeypatch.setenv("GENFORGE_HOME", str(home))
    return home


@pytest.fixture
def genforge_pm(monkeypatch: pytest.MonkeyPatch) -> Callable[..., object]:
    """A factory for an isolated plugin manager, installed as the process-wide one for the test.

    ``genforge_pm(MyPlugin(), other_module)`` holds only those plugins;
    ``genforge_pm(MyPlugin(), entrypoints=True)`` adds them to the installed ones.
    """
    from genforge.core import plugin_manager as plugins

    def make(*registered: object, entrypoints: bool = False):
        pm = plugins.make_plugin_manager(load_entrypoints=entrypoints)
        for i, plugin in enumerate(registered):
            pm.register(plugin, name=getattr(plugin, "__name__", None) or f"{type(plugin).__name__.lower()}-{i}")
        monkeypatch.setattr(plugins, "_manager", pm)
        return pm

    return make
