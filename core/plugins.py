"""The plugin manager: loads plugins from the ``genforge`` entry-point group.

Built-in plugins register through the same group as outside ones, so anything a
built-in plugin does, an outside plugin can do too. ``GENFORGE_DISABLE_PLUGINS``
(comma-separated plugin names) switches plugins off; ``GENFORGE_DISABLE_PLUGIN_AUTOLOAD=1``
loads none from entry points (tests then register their own).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .contracts import DataSource, Evaluator, Generator
from .errors import UnknownNameError

ENTRY_POINT_GROUP = "genforge"
_manager: pluggy.PluginManager | None = None


def disabled_plugins() -> set[str]:
    return {p.strip() for p in os.environ.get("GENFORGE_DISABLE_PLUGINS", "").split(",") if p.strip()}


def make_plugin_manager(load_entrypoints: bool | None = None) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if load_entrypoints is None:
        load_entrypoints = os.environ.get("GENFORGE_DISABLE_PLUGIN_AUTOLOAD", "") not in ("1", "true", "yes")
    if load_entrypoints:
        for name in disabled_plugins():
            pm.set_blocked(name)
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, created on first use."""
    global _manager
    if _manager is None:
        _manager = make_plugin_manager()
    return _manager


def reset_plugin_manager(pm: pluggy.PluginManager | None = None) -> None:
    """Replace the process-wide manager (tests use this)."""
    global _manager
    _manager = pm


def _plugin_name(pm: pluggy.PluginManager, plugin: object) -> str:
    return pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin))


def generators(pm: pluggy.PluginManager | None = None) -> dict[str, type[Generator]]:
    pm = pm or get_plugin_manager()
    return {g.name: g for batch in pm.hook.genforge_generators() for g in batch}


def evaluators(pm: pluggy.PluginManager | None = None) -> list[tuple[str, Evaluator]]:
    """(plugin name, evaluator) for every registered evaluator, tagged with the plugin that brings it."""
    pm = pm or get_plugin_manager()
    out = []
    for impl in pm.hook.genforge_evaluators.get_hookimpls():
        for ev in impl.function() or []:
            out.append((impl.plugin_name, ev))
    return out


def datasets(pm: pluggy.PluginManager | None = None) -> dict[str, DataSource]:
    pm = pm or get_plugin_manager()
    return {d.name: d for batch in pm.hook.genforge_datasets() for d in batch}


def get_generator(name: str, pm: pluggy.PluginManager | None = None) -> type[Generator]:
    found = generators(pm)
    if name not in found:
        raise UnknownNameError("generator", name, sorted(found))
    return found[name]


def get_dataset(name: str, pm: pluggy.PluginManager | None = None) -> DataSource:
    found = datasets(pm)
    if name not in found:
        raise UnknownNameError("data source", name, sorted(found))
    return found[name]


@dataclass
class PluginInfo:
    name: str
    version: str
    hooks: list[str]
    generators: list[str] = field(default_factory=list)
    evaluators: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def plugin_infos(pm: pluggy.PluginManager | None = None) -> list[PluginInfo]:
    """What `genforge plugins` shows: each plugin, its version, hooks and registrations."""
    pm = pm or get_plugin_manager()
    dists = {id(p): d for p, d in pm.list_plugin_distinfo()}
    infos = []
    for plugin in pm.get_plugins():
        name = _plugin_name(pm, plugin)
        dist = dists.get(id(plugin))
        version = dist.version if dist is not None else _module_version(plugin)
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        info = PluginInfo(name, version, hooks)
        if hasattr(plugin, "genforge_generators"):
            info.generators = [g.name for g in plugin.genforge_generators()]
        if hasattr(plugin, "genforge_evaluators"):
            info.evaluators = [e.name for e in plugin.genforge_evaluators()]
        if hasattr(plugin, "genforge_datasets"):
            info.datasets = [d.name for d in plugin.genforge_datasets()]
        infos.append(info)
    return sorted(infos, key=lambda i: i.name)


def _module_version(plugin: object) -> str:
    module = getattr(plugin, "__name__", None) or type(plugin).__module__
    top = module.split(".")[0]
    try:
        return metadata.version("genforge" if top == "genforge" else top)
    except metadata.PackageNotFoundError:
        return "unknown"


def versions(pm: pluggy.PluginManager | None = None) -> dict[str, str]:
    """Versions of genforge, its plugins and the libraries that decide results."""
    out = {"genforge": _dist_version("genforge")}
    for info in plugin_infos(pm):
        out[f"plugin:{info.name}"] = info.version
    for lib in ("torch", "numpy", "rdkit", "selfies", "prefect", "pluggy", "pydantic"):
        out[lib] = _dist_version(lib)
    import platform
    import sys

    out["python"] = sys.version.split()[0]
    out["platform"] = platform.platform()
    return out


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
