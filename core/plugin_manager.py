"""The plugin manager: loads plugins from the ``genforge`` entry-point group, and keeps a broken one from harming the rest.

Built-in plugins register through the same group as outside ones, so anything a
built-in plugin does, an outside plugin can do too.

Switches (environment variables, comma-separated entry-point names):

* ``GENFORGE_DISABLE_PLUGINS=acme,acme-beta``: load every plugin but these;
* ``GENFORGE_PLUGINS=acme``: load only these (an allow list);
* ``GENFORGE_DISABLE_PLUGIN_AUTOLOAD=1``: load none from entry points (tests register their own);
* ``GENFORGE_TRACE_HOOKS=1``: log every hook call, its arguments and results to stderr (pluggy's tracing).

A name in either list that matches no installed plugin is reported. An entry point named like
an extra of its distribution (``acme`` of ``genforge[acme]``) is skipped, with the
``pip install`` line that fixes it, while a requirement of that extra is missing. A plugin whose module
fails to import, whose registration hook raises, or which registers something malformed
(a generator of an unknown sample kind, ...) is skipped with one line on stderr naming the
entry point, its distribution and the ``GENFORGE_DISABLE_PLUGINS`` value that silences
it; ``genforge plugins`` lists it as failed, and every other plugin keeps working.

A name (generator, sample kind, evaluator, data source, command) belongs to one plugin
(``resolve_names``): a built-in plugin keeps its own, and a name two outside plugins register
goes to neither until one is disabled, whatever the order they load in.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .config import EVALUATE_SETTINGS, GeneratorConfig, Section
from .contracts import DataSource, Evaluator, Generator
from .errors import UnknownNameError
from .kinds import BUILTIN_KINDS, SampleKind

ENTRY_POINT_GROUP = "genforge"
_manager: pluggy.PluginManager | None = None
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # evaluator names: spec fields and metric-key prefixes
RESERVED_EVALUATORS = ("training", "samples", *EVALUATE_SETTINGS)  # the host's own sections of a report, its settings in `evaluate`


def _names(var: str) -> set[str]:
    return {p.strip() for p in os.environ.get(var, "").split(",") if p.strip()}


def disabled_plugins() -> set[str]:
    return _names("GENFORGE_DISABLE_PLUGINS")


def allowed_plugins() -> set[str] | None:
    """``GENFORGE_PLUGINS`` as a set, or None when unset (every plugin allowed)."""
    return _names("GENFORGE_PLUGINS") if os.environ.get("GENFORGE_PLUGINS", "").strip() else None


def _say(line: str, pm: pluggy.PluginManager | None = None) -> None:
    """Write a line to stderr once per plugin manager (once per process without one)."""
    seen = getattr(pm, "reported", None) if pm is not None else None
    seen = seen if seen is not None else _process_reported
    if line not in seen:
        seen.add(line)
        print(line, file=sys.stderr)


_process_reported: set[str] = set()


@dataclass
class PluginFailure:
    """A plugin, or one thing it registers, that genforge skipped."""

    plugin: str
    distribution: str
    stage: str  # "import", a registration hook's name, or "check"
    error: str

    def line(self) -> str:
        return (
            f"genforge: plugin {self.plugin!r} (distribution {self.distribution}) skipped at {self.stage}: {self.error}; "
            f"to silence this, set GENFORGE_DISABLE_PLUGINS={self.plugin}"
        )


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, plus what genforge knows of each entry point: distributions, failures, skipped names."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.distributions: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)
        self.load_failures: list[PluginFailure] = []
        self.skipped: dict[str, str] = {}  # entry-point name -> why it was not loaded
        self.reported: set[str] = set()  # lines already written to stderr
        self._registry: tuple[tuple, Registry] | None = None  # cached per set of registered plugins

    def distribution(self, plugin_name: str) -> str:
        dist = self.distributions.get(plugin_name)
        return dist[0] if dist else "none: registered in code"


def _entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def make_plugin_manager(load_entrypoints: bool | None = None) -> PluginManager:
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    if os.environ.get("GENFORGE_TRACE_HOOKS", "") in ("1", "true", "yes"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    if load_entrypoints is None:
        load_entrypoints = os.environ.get("GENFORGE_DISABLE_PLUGIN_AUTOLOAD", "") not in ("1", "true", "yes")
    if load_entrypoints:
        _load_entrypoints(pm)
    return pm


def _installed(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def missing_extra(ep: metadata.EntryPoint) -> tuple[str, list[str]] | None:
    """For an entry point named like an extra of its distribution: (``dist[extra]``, what of that extra is missing), else None.

    The convention that lets ``pip install genforge`` (no extras) work without an industry's
    libraries: the entry point ``acme`` needs the extra ``acme``, and is skipped, with the line to
    install it, when a requirement of that extra is not installed. An outside distribution can
    use the same convention.
    """
    dist = ep.dist
    if dist is None or ep.name not in (dist.metadata.get_all("Provides-Extra") or []):
        return None
    from packaging.requirements import InvalidRequirement, Requirement

    missing = []
    for line in dist.requires or []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is None or not req.marker.evaluate({"extra": ep.name}) or req.marker.evaluate({"extra": ""}):
            continue  # not a requirement of this extra
        version = _installed(req.name)
        if version is None:
            missing.append(req.name)
        elif req.specifier and not req.specifier.contains(version, prereleases=True):
            missing.append(f"{req.name} {version} (needs {req.specifier})")
    return (f"{dist.name}[{ep.name}]", missing) if missing else None


def _dist_name(ep: metadata.EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "unknown"


def _one_per_name(eps: list[metadata.EntryPoint], pm: PluginManager) -> list[metadata.EntryPoint]:
    """The entry points to load: one per plugin name, never decided by which is first on ``sys.path``.

    A name that genforge's own distribution uses stays the built-in plugin's: an
    outside entry point of that name is refused, with a line. A name two outside distributions
    use is refused for both until one is removed. The same entry point seen twice (a distribution
    on the path twice) counts once.
    """
    by_name: dict[str, list[metadata.EntryPoint]] = {}
    for ep in eps:
        same = by_name.setdefault(ep.name, [])
        if not any(_dist_name(o) == _dist_name(ep) and o.value == ep.value for o in same):
            same.append(ep)
    chosen = []
    for name, same in by_name.items():
        if len(same) == 1:
            chosen.append(same[0])
            continue
        builtin = [ep for ep in same if _dist_name(ep) == BUILTIN_DISTRIBUTION]
        outside = sorted({_dist_name(ep) for ep in same if _dist_name(ep) != BUILTIN_DISTRIBUTION})
        if builtin:
            chosen.append(builtin[0])
            why = f"the plugin name {name!r} is genforge's built-in plugin's; the entry point of {', '.join(outside)} is refused: rename it there"
        else:
            why = f"the plugin name {name!r} is the entry point of {' and of '.join(outside)}, and given to neither: uninstall all but one"
        pm.skipped[name if not builtin else f"{name} ({', '.join(outside)})"] = why
        _say(f"genforge: {why}", pm)
    return chosen


def _load_entrypoints(pm: PluginManager) -> None:
    disabled, allowed = disabled_plugins(), allowed_plugins()
    eps = _entry_points()
    known = {ep.name for ep in eps}
    for var, names in (("GENFORGE_DISABLE_PLUGINS", disabled), ("GENFORGE_PLUGINS", allowed or set())):
        for name in sorted(names - known):
            _say(f"genforge: {var} names {name!r}, which matches no installed plugin (installed: {', '.join(sorted(known)) or 'none'})", pm)
    for ep in _one_per_name(eps, pm):
        if ep.name in disabled:
            pm.skipped[ep.name] = "disabled by GENFORGE_DISABLE_PLUGINS"
            continue
        if allowed is not None and ep.name not in allowed:
            pm.skipped[ep.name] = "not in GENFORGE_PLUGINS"
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        needs = missing_extra(ep)
        if needs is not None:
            extra, missing = needs
            pm.skipped[ep.name] = f"needs the extra {extra} (missing: {', '.join(missing)}); install it: pip install '{extra}'"
            continue
        dist = (ep.dist.name, ep.dist.version) if ep.dist is not None else ("unknown", "unknown")
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # an outside plugin's bug must not take genforge down
            failure = PluginFailure(ep.name, dist[0], "import", f"{type(exc).__name__}: {exc}")
            pm.load_failures.append(failure)
            _say(failure.line(), pm)
            continue
        pm.distributions[ep.name] = dist


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, created on first use."""
    global _manager
    if _manager is None:
        _manager = make_plugin_manager()
    return _manager


def reset_plugin_manager(pm: pluggy.PluginManager | None = None) -> None:
    """Replace the process-wide manager (tests use this)."""
    global _manager
    _manager = pm


# -- lifecycle listeners, one at a time ------------------------------------------------


def call_listeners(pm: pluggy.PluginManager, hook: str, kwargs: dict[str, Any]) -> list[tuple[str, Exception]]:
    """Call every implementation of a lifecycle hook, in pluggy's order; returns those that raised, as (plugin, exception).

    One listener's failure (a tracker whose server is down) costs only its own part: every
    other listener is still called, and the run goes on. A listener that must stop the run
    raises ``StopRun``; that, and ``BaseException`` (Ctrl-C, a Prefect cancellation), propagate.
    """
    from .errors import StopRun

    failures: list[tuple[str, Exception]] = []
    trace = pm.trace.root.get("hook")  # writes only where GENFORGE_TRACE_HOOKS switched tracing on
    for impl in reversed(getattr(pm.hook, hook).get_hookimpls()):  # pluggy calls the last registered first
        trace(hook, f"[{impl.plugin_name}]", kwargs)
        if impl.wrapper or impl.hookwrapper:
            failures.append((impl.plugin_name, TypeError(f"{hook} is a lifecycle hook: implement it as a plain listener, not a wrapper")))
            continue
        try:
            impl.function(*[kwargs[name] for name in impl.argnames])
        except StopRun:
            raise
        except Exception as exc:
            trace("finish", hook, f"[{impl.plugin_name}]", "raised", repr(exc))
            failures.append((impl.plugin_name, exc))
    return failures


# -- what the plugins register, checked ------------------------------------------------


BUILTIN_DISTRIBUTION = "genforge"  # plugins of genforge's own distribution keep their names
CORE = "genforge"  # the owner of the built-in sample kinds (core, not a plugin)


def is_builtin(pm: pluggy.PluginManager, plugin: str) -> bool:
    """A plugin of genforge's own distribution (a built-in one); one registered in code, or of another distribution, is outside."""
    dist = getattr(pm, "distributions", {}).get(plugin)
    return dist is not None and dist[0] == BUILTIN_DISTRIBUTION


@dataclass
class NameConflict:
    """A name (of a generator, sample kind, evaluator, data source or command) that more than one plugin registers.

    ``kept``: the built-in plugin that keeps it (the outside one's registration is refused), or None:
    refused for every plugin that registers it until all but one are disabled. Never first-come.
    """

    what: str  # "generator", "sample kind", "evaluator", "data source", "command"
    name: str
    plugins: list[tuple[str, str]]  # (plugin, distribution) of each plugin that registers it, sorted by plugin
    kept: str | None = None

    @property
    def refused(self) -> list[str]:
        return [p for p, _ in self.plugins if p != self.kept]

    def _named(self, plugins: list[str]) -> str:
        dists = dict(self.plugins)
        return " and ".join(f"{p!r} (distribution {dists[p]})" for p in plugins)

    def line(self) -> str:
        """The one line on stderr: the plugins at fault, the name, and the switch that settles it."""
        refused = self.refused
        if self.kept is not None:
            owner = "genforge's own" if self.kept == CORE else f"the built-in plugin {self.kept!r}'s"
            return (
                f"genforge: plugin {self._named(refused)} registers {self.what} {self.name!r}, which is {owner}: its "
                f"registration is refused (the built-in one is kept); rename it there, or set GENFORGE_DISABLE_PLUGINS={refused[0]}"
            )
        fixes = " or ".join(f"GENFORGE_DISABLE_PLUGINS={p}" for p in refused)
        return (
            f"genforge: {self.what} {self.name!r} is registered by plugins {self._named(refused)}: refused for "
            f"{'both' if len(refused) == 2 else 'each'} until one is disabled; set {fixes}"
        )

    def note(self, plugin: str) -> str:
        """What `genforge plugins` shows on ``plugin``, one of those involved."""
        others = [p for p, _ in self.plugins if p != plugin]
        if self.kept == plugin:
            return f"{self.what} {self.name!r} is also registered by {self._named(others)}, whose registration is refused"
        if self.kept is not None:
            owner = "genforge's own" if self.kept == CORE else f"the built-in plugin {self.kept!r}'s"
            return f"{self.what} {self.name!r} is {owner}: this plugin's is refused (rename it, or GENFORGE_DISABLE_PLUGINS={plugin})"
        return (
            f"{self.what} {self.name!r} is also registered by {self._named(others)}: refused for "
            f"{'both' if len(others) == 1 else 'each'} until one is disabled (GENFORGE_DISABLE_PLUGINS={plugin} or {' or '.join(others)})"
        )


def resolve_names(
    pm: pluggy.PluginManager, what: str, claims: list[tuple[str, str, Any]], fail: Any = None
) -> tuple[dict[str, tuple[str, Any]], list[NameConflict]]:
    """Who gets each name of ``claims`` ((plugin, name, item), in registration order): ({name: (plugin, item)}, conflicts).

    A name one plugin registers is that plugin's. A name several plugins register goes to the one
    built-in plugin among them (``is_builtin``; ``CORE`` for the built-in kinds), else to none of
    them. The order in which plugins were registered decides nothing. A plugin that registers a name
    twice keeps its first (``fail(plugin, error)`` is told of the second).
    """
    by_name: dict[str, dict[str, Any]] = {}
    for plugin, name, item in claims:
        mine = by_name.setdefault(name, {})
        if plugin in mine:
            if fail is not None:
                fail(plugin, f"{what} {name!r} is registered twice by this plugin; the first is kept")
            continue
        mine[plugin] = item
    kept: dict[str, tuple[str, Any]] = {}
    conflicts: list[NameConflict] = []
    for name, mine in by_name.items():
        if len(mine) == 1:
            kept[name] = next(iter(mine.items()))
            continue
        plugins = sorted(mine)
        builtin = [p for p in plugins if p == CORE or is_builtin(pm, p)]
        dists = [(p, "genforge" if p == CORE else _dist(pm, p)) for p in plugins]
        if len(builtin) == 1:
            owner = builtin[0]
            kept[name] = (owner, mine[owner])
            conflicts += [NameConflict(what, name, [d for d in dists if d[0] in (owner, p)], owner) for p in plugins if p != owner]
        else:
            conflicts.append(NameConflict(what, name, dists))
    return kept, conflicts


@dataclass
class Registry:
    """Everything the loaded plugins register, each item tagged with its plugin; what failed, and why."""

    kinds: dict[str, SampleKind] = field(default_factory=dict)
    generators: dict[str, tuple[str, type[Generator]]] = field(default_factory=dict)
    evaluators: list[tuple[str, Evaluator]] = field(default_factory=list)
    datasets: dict[str, tuple[str, DataSource]] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    kind_plugins: dict[str, str] = field(default_factory=dict)  # kinds added by plugins -> plugin
    conflicts: list[NameConflict] = field(default_factory=list)  # names more than one plugin registers

    def conflict(self, what: str, name: str) -> NameConflict | None:
        """The conflict that kept ``name`` from every plugin, if that is why it is missing."""
        return next((c for c in self.conflicts if c.what == what and c.name == name and c.kept is None), None)


def _collect(pm: pluggy.PluginManager, hook: str, reg: Registry) -> list[tuple[str, Any]]:
    """Call a registration hook plugin by plugin, so that one that raises costs only its own registrations."""
    out = []
    trace = pm.trace.root.get("hook")  # writes only where GENFORGE_TRACE_HOOKS switched tracing on
    for impl in getattr(pm.hook, hook).get_hookimpls():
        trace(hook, f"[{impl.plugin_name}]")
        try:
            items = list(impl.function() or [])
        except Exception as exc:
            trace("finish", hook, f"[{impl.plugin_name}]", "raised", repr(exc))
            reg.failures.append(PluginFailure(impl.plugin_name, _dist(pm, impl.plugin_name), hook, f"{type(exc).__name__}: {exc}"))
            continue
        trace("finish", hook, f"[{impl.plugin_name}]", "-->", [getattr(i, "name", repr(i)) for i in items])
        out.extend((impl.plugin_name, item) for item in items)
    return out


def _dist(pm: pluggy.PluginManager, name: str) -> str:
    return pm.distribution(name) if isinstance(pm, PluginManager) else "unknown"


def registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """What the plugins register, checked; each failure reported once on stderr.

    Cached for as long as the same plugins are registered (listeners that come and go
    around a run change the key, which only costs a recomputation).
    """
    pm = pm or get_plugin_manager()
    key = tuple((pm.get_name(p), id(p)) for p in pm.get_plugins())
    cached = getattr(pm, "_registry", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    reg = _build_registry(pm)
    if isinstance(pm, PluginManager):
        pm._registry = (key, reg)
    return reg


def _kind_of(item: Any) -> str:
    return f"a {type(item).__name__}" if not isinstance(item, type) else f"the class {item.__name__}"


def _build_registry(pm: pluggy.PluginManager) -> Registry:
    reg = Registry(failures=list(getattr(pm, "load_failures", [])))

    def fail(plugin: str, error: str) -> None:
        reg.failures.append(PluginFailure(plugin, _dist(pm, plugin), "check", error))

    # Each kind of registration: first every item is checked on its own, then each name is given to
    # one plugin (``resolve_names``): a name two plugins register never goes silently to either.
    claims = [(CORE, k.name, k) for k in BUILTIN_KINDS]
    for plugin, kind in _collect(pm, "genforge_sample_kinds", reg):
        name = getattr(kind, "name", None)
        if not isinstance(kind, SampleKind) or not name:
            fail(plugin, f"genforge_sample_kinds returned {_kind_of(kind)}, not a SampleKind instance with a name")
        else:
            claims.append((plugin, name, kind))
    kept, conflicts = resolve_names(pm, "sample kind", claims, fail)
    reg.conflicts += conflicts
    reg.kinds = {name: kind for name, (_, kind) in kept.items()}
    reg.kind_plugins = {name: plugin for name, (plugin, _) in kept.items() if plugin != CORE}
    known = ", ".join(reg.kinds)

    def unknown_kind(kind: Any) -> str:
        why = reg.conflict("sample kind", kind) if isinstance(kind, str) else None
        return f" ({why.name!r} is registered by several plugins and given to none)" if why else ""

    claims = []
    for plugin, gen in _collect(pm, "genforge_generators", reg):
        name = getattr(gen, "name", None)
        if not (isinstance(gen, type) and issubclass(gen, Generator)) or not name:
            fail(plugin, f"genforge_generators returned {_kind_of(gen)}, not a Generator subclass with a name")
        elif getattr(gen, "kind", None) not in reg.kinds:
            kind = getattr(gen, "kind", None)
            fail(
                plugin, f"generator {name!r} produces sample kind {kind!r}, which is not a known kind (known: {known}){unknown_kind(kind)}"
            )
        elif not (isinstance(getattr(gen, "Config", None), type) and issubclass(gen.Config, GeneratorConfig)):
            fail(plugin, f"generator {name!r} has no Config subclassing genforge.core.GeneratorConfig")
        else:
            claims.append((plugin, name, gen))
    reg.generators, conflicts = resolve_names(pm, "generator", claims, fail)
    reg.conflicts += conflicts

    claims = []
    for plugin, ev in _collect(pm, "genforge_evaluators", reg):
        name, kinds = getattr(ev, "name", None), getattr(ev, "kinds", None)
        config = getattr(ev, "Config", None)
        if not isinstance(ev, Evaluator) or not name:
            fail(plugin, f"genforge_evaluators returned {_kind_of(ev)}, not an Evaluator instance with a name")
        elif not _NAME.match(name) or name in RESERVED_EVALUATORS:
            fail(
                plugin,
                f"evaluator name {name!r}: use letters, digits, '-' and '_' (not {', '.join(RESERVED_EVALUATORS)}, which the host uses)",
            )
        elif not kinds or isinstance(kinds, str) or any(k not in reg.kinds for k in kinds):
            missing = next((k for k in kinds if k not in reg.kinds), None) if kinds and not isinstance(kinds, str) else None
            fail(plugin, f"evaluator {name!r} accepts kinds {kinds!r}; each must be a known kind (known: {known}){unknown_kind(missing)}")
        elif not (isinstance(config, type) and issubclass(config, Section)):
            fail(plugin, f"evaluator {name!r} has no Config subclassing genforge.core.EvaluatorConfig")
        else:
            claims.append((plugin, name, ev))
    kept, conflicts = resolve_names(pm, "evaluator", claims, fail)
    reg.evaluators = list(kept.values())
    reg.conflicts += conflicts

    claims = []
    for plugin, src in _collect(pm, "genforge_datasets", reg):
        name = getattr(src, "name", None)
        if not isinstance(src, DataSource) or not name:
            fail(plugin, f"genforge_datasets returned {_kind_of(src)}, not a DataSource instance with a name")
        elif getattr(src, "kind", None) not in reg.kinds:
            kind = getattr(src, "kind", None)
            fail(plugin, f"data source {name!r} has kind {kind!r}, which is not a known kind (known: {known}){unknown_kind(kind)}")
        else:
            claims.append((plugin, name, src))
    reg.datasets, conflicts = resolve_names(pm, "data source", claims, fail)
    reg.conflicts += conflicts

    for failure in reg.failures:
        _say(failure.line(), pm)
    for conflict in reg.conflicts:
        _say(conflict.line(), pm)
    return reg


def kinds(pm: pluggy.PluginManager | None = None) -> dict[str, SampleKind]:
    return registry(pm).kinds


def get_kind(name: str, pm: pluggy.PluginManager | None = None) -> SampleKind:
    found = kinds(pm)
    if name not in found:
        raise UnknownNameError("sample kind", name, list(found))
    return found[name]


def generators(pm: pluggy.PluginManager | None = None) -> dict[str, type[Generator]]:
    return {name: gen for name, (_, gen) in registry(pm).generators.items()}


def evaluators(pm: pluggy.PluginManager | None = None, kind: str | None = None) -> list[tuple[str, Evaluator]]:
    """(plugin name, evaluator) for every registered evaluator (of ``kind``, if given), tagged with its plugin."""
    return [(p, ev) for p, ev in registry(pm).evaluators if kind is None or kind in ev.kinds]


def datasets(pm: pluggy.PluginManager | None = None) -> dict[str, DataSource]:
    return {name: src for name, (_, src) in registry(pm).datasets.items()}


def _skipped_hint(pm: pluggy.PluginManager, hook: str, name: str) -> str:
    """Where a name may come from a plugin that failed, or would come from one switched off: say so.

    A switched-off plugin is loaded aside to look (on this error path only).
    """
    hints = []
    for ep_name, why in getattr(pm, "skipped", {}).items():
        if why.startswith("needs the extra"):  # cannot be loaded aside to look: say what it needs
            hints.append(f"plugin {ep_name!r} may bring it, and {why}")
            continue
        scratch = PluginManager()
        scratch.add_hookspecs(hookspecs)
        try:
            ep = next(ep for ep in _entry_points() if ep.name == ep_name)
            scratch.register(ep.load(), name=ep_name)
            items = [i for batch in getattr(scratch.hook, hook)() for i in batch]
        except Exception:  # whatever a switched-off plugin does on import, this is only a hint
            continue
        if any(getattr(i, "name", None) == name for i in items):
            hints.append(f"{name!r} comes from plugin {ep_name!r}, which is {why}")
    failed = sorted({f"{f.plugin!r} ({f.stage})" for f in registry(pm).failures})
    if failed:
        hints.append("plugins that failed may bring it: " + ", ".join(failed))
    return "".join(f"; {h}" for h in hints)


def _conflict_hint(pm: pluggy.PluginManager, what: str, name: str) -> str:
    conflict = registry(pm).conflict(what, name)
    if conflict is None:
        return ""
    fixes = " or ".join(f"GENFORGE_DISABLE_PLUGINS={p}" for p in conflict.refused)
    return f"; {what} {name!r} is registered by plugins {conflict._named(conflict.refused)} and given to neither: set {fixes}"


def get_generator(name: str, pm: pluggy.PluginManager | None = None) -> type[Generator]:
    pm = pm or get_plugin_manager()
    found = generators(pm)
    if name not in found:
        hint = _conflict_hint(pm, "generator", name) or _skipped_hint(pm, "genforge_generators", name)
        raise UnknownNameError("generator", name, sorted(found), hint)
    return found[name]


def get_dataset(name: str, pm: pluggy.PluginManager | None = None) -> DataSource:
    pm = pm or get_plugin_manager()
    found = datasets(pm)
    if name not in found:
        hint = _conflict_hint(pm, "data source", name) or _skipped_hint(pm, "genforge_datasets", name)
        raise UnknownNameError("data source", name, sorted(found), hint)
    return found[name]


def default_reference(kind: str, pm: pluggy.PluginManager | None = None) -> tuple[DataSource, str] | None:
    """The reference a kind is scored against when none is given: the first data source of that kind with a ``reference_split``
    (its ``train_split``, if any, is the training data that goes with it)."""
    for src in datasets(pm).values():
        if src.kind == kind and src.reference_split:
            return src, src.reference_split
    return None


# -- what `genforge plugins` shows -----------------------------------------------------


@dataclass
class PluginInfo:
    name: str
    version: str
    hooks: list[str]
    distribution: str = ""
    status: str = "loaded"  # loaded, partly failed (some registrations skipped), failed, skipped (switched off)
    reason: str = ""  # why it was skipped
    generators: list[str] = field(default_factory=list)
    evaluators: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # names it shares with another plugin, and who keeps them (NameConflict.note)

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def plugin_infos(pm: pluggy.PluginManager | None = None) -> list[PluginInfo]:
    """What `genforge plugins` shows: each plugin, its version, hooks, registrations, and failures."""
    pm = pm or get_plugin_manager()
    reg = registry(pm)
    infos: dict[str, PluginInfo] = {}
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin))
        dist = getattr(pm, "distributions", {}).get(name)
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        infos[name] = PluginInfo(name, dist[1] if dist else _module_version(plugin), hooks, dist[0] if dist else "")
    for gname, (plugin, _) in reg.generators.items():
        infos[plugin].generators.append(gname)
    for plugin, ev in reg.evaluators:
        infos[plugin].evaluators.append(ev.name)
    for dname, (plugin, _) in reg.datasets.items():
        infos[plugin].datasets.append(dname)
    for name in reg.kinds:
        owner = reg.kind_plugins.get(name)
        if owner in infos:
            infos[owner].kinds.append(name)
    for f in reg.failures:
        info = infos.setdefault(f.plugin, PluginInfo(f.plugin, "", [], f.distribution))
        brought = info.generators or info.evaluators or info.datasets or info.kinds
        info.status = "partly failed" if brought and f.stage != "import" else "failed"
        info.errors.append(f"{f.stage}: {f.error}")
    for conflict in [*reg.conflicts, *getattr(pm, "command_conflicts", [])]:  # commands: see genforge.flows.cli
        for plugin, _ in conflict.plugins:
            info = infos.get(plugin)
            if info is None:
                continue
            info.conflicts.append(conflict.note(plugin))
            if plugin in conflict.refused and info.status != "failed":  # its registration of that name is not used
                brought = info.generators or info.evaluators or info.datasets or info.kinds or conflict.what == "command"
                info.status = "partly failed" if brought else "failed"
    for name, why in getattr(pm, "skipped", {}).items():
        infos.setdefault(name, PluginInfo(name, "", [], status="skipped", reason=why))
    return sorted(infos.values(), key=lambda i: i.name)


def _module_version(plugin: object) -> str:
    module = getattr(plugin, "__name__", None) or type(plugin).__module__
    top = module.split(".")[0]
    try:
        return metadata.version("genforge" if top == "genforge" else top)
    except metadata.PackageNotFoundError:
        return "unknown"


def versions(pm: pluggy.PluginManager | None = None, libraries: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of genforge, its plugins and the libraries that decide results (``libraries``: a generator's own)."""
    out = {"genforge": _dist_version("genforge")}
    for info in plugin_infos(pm):
        if info.status in ("loaded", "partly failed"):
            out[f"plugin:{info.name}"] = info.version
    for lib in ("torch", "numpy", "prefect", "pluggy", "pydantic", *libraries):
        out[lib] = _dist_version(lib)
    import platform

    out["python"] = sys.version.split()[0]
    out["platform"] = platform.platform()
    return out


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
