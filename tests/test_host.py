"""The host: plugin loading, registration, evaluation merge, errors, layering, hook docs."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import ClassVar

import pytest

from genforge.core import Evaluation, Evaluator, Metric, UnknownNameError, hookimpl, hookspecs
from genforge.core.plugin_manager import evaluators, get_generator, make_plugin_manager, plugin_infos

ROOT = Path(__file__).resolve().parents[1]


def test_builtin_plugin_loads_through_the_entry_point_group():
    pm = make_plugin_manager()
    infos = {i.name: i for i in plugin_infos(pm)}
    assert "healthcare" in infos
    hc = infos["healthcare"]
    assert hc.generators == ["molecule-diffusion"]
    assert "rdkit" in hc.evaluators
    assert {"moses", "moses-full"} <= set(hc.datasets)
    assert {"genforge_generators", "genforge_evaluators", "genforge_datasets"} <= set(hc.hooks)
    assert hc.version not in ("", "unknown")


def test_disable_plugins_by_name(monkeypatch):
    monkeypatch.setenv("GENFORGE_DISABLE_PLUGINS", "healthcare")
    pm = make_plugin_manager()
    assert pm.get_plugin("healthcare") is None
    info = {i.name: i for i in plugin_infos(pm)}["healthcare"]
    assert (info.status, info.reason) == ("skipped", "disabled by GENFORGE_DISABLE_PLUGINS")
    with pytest.raises(UnknownNameError) as err:
        get_generator("molecule-diffusion", pm)
    installed = str(err.value).split("installed: ")[1].split(";")[0]
    assert str(err.value).startswith("unknown generator 'molecule-diffusion'; installed: ") and "molecule-diffusion" not in installed
    assert "comes from plugin 'healthcare', which is disabled by GENFORGE_DISABLE_PLUGINS" in str(err.value)


def test_an_industry_whose_extra_is_missing_is_skipped_with_the_line_to_install_it(monkeypatch):
    """`pip install genforge` without extras: each industry's plugin is listed as skipped, naming its extra, and nothing else breaks.

    (The real install into a fresh virtual environment: tests/test_install.py, marked slow.)
    """
    from genforge.core import plugin_manager

    installed = plugin_manager._installed
    monkeypatch.setattr(plugin_manager, "_installed", lambda name: None if name in ("rdkit", "arch", "music21") else installed(name))
    pm = make_plugin_manager()
    infos = {i.name: i for i in plugin_infos(pm)}
    for industry, library in (("healthcare", "rdkit"), ("finance", "arch"), ("creative", "music21")):
        assert infos[industry].status == "skipped"
        assert (
            infos[industry].reason
            == f"needs the extra genforge[{industry}] (missing: {library}); install it: pip install 'genforge[{industry}]'"
        )
        assert pm.get_plugin(industry) is None
    with pytest.raises(UnknownNameError, match=r"plugin 'healthcare' may bring it, and needs the extra genforge\[healthcare\]"):
        get_generator("molecule-diffusion", pm)


def test_unknown_generator_names_the_installed_ones():
    with pytest.raises(UnknownNameError) as err:
        get_generator("molecule-difusion", make_plugin_manager())
    assert str(err.value).startswith("unknown generator 'molecule-difusion'; installed: ") and "molecule-diffusion" in str(err.value)


class CountingEvaluator(Evaluator):
    name: ClassVar[str] = "atom-counter"
    kinds: ClassVar[tuple[str, ...]] = ("molecules",)

    def evaluate(self, samples, reference, out_dir, config):
        n = sum(1 for line in open(samples.path) if line.strip())
        return Evaluation(self.name, [Metric("nonempty_samples", n, True)])


class OutsidePlugin:
    """What a third-party package would register through the `genforge` entry-point group."""

    @hookimpl
    def genforge_evaluators(self):
        return [CountingEvaluator()]


def test_outside_evaluator_is_tagged_with_its_plugin():
    pm = make_plugin_manager()
    pm.register(OutsidePlugin(), name="acme-chem")
    found = {(plugin, ev.name) for plugin, ev in evaluators(pm)}
    assert ("acme-chem", "atom-counter") in found
    assert ("healthcare", "rdkit") in found


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("folder", ["core", "plugins"])
def test_nothing_below_flows_imports_prefect(folder):
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / folder).rglob("*.py")
        if any(n == "prefect" or n.startswith("prefect.") for n in _imports(p))
    ]
    assert offenders == []


def test_core_imports_no_plugin_or_flow():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "core").rglob("*.py")
        if any(n.startswith(("genforge.plugins", "genforge.flows")) for n in _imports(p))
    ]
    assert offenders == []


def test_plugins_do_not_import_each_other():
    for plugin_dir in (ROOT / "plugins").iterdir():
        if not plugin_dir.is_dir() or plugin_dir.name.startswith("__"):
            continue
        for p in plugin_dir.rglob("*.py"):
            others = [
                n for n in _imports(p) if n.startswith("genforge.plugins.") and not n.startswith(f"genforge.plugins.{plugin_dir.name}")
            ]
            assert others == [], f"{p} imports {others}"


def test_every_hook_is_documented_with_its_arguments():
    """As datasette's test_docs: every hook has a heading with its signature, and the arguments match the spec."""
    import inspect

    doc = (ROOT / "docs" / "plugin_hooks.md").read_text()
    specs = {n: getattr(hookspecs, n) for n in dir(hookspecs) if n.startswith("genforge_")}
    assert len(specs) >= 11
    documented = dict(re.findall(r"^###? `(genforge_\w+)\(([^)]*)\)", doc, re.M))
    for name, fn in specs.items():
        assert name in documented, f"{name} is not documented in docs/plugin_hooks.md"
        args = [a.split(":")[0].strip() for a in documented[name].split(",") if a.strip()]
        assert args == list(inspect.signature(fn).parameters), f"{name}: documented ({', '.join(args)}), spec {inspect.signature(fn)}"
        assert fn.__doc__ and len(fn.__doc__.strip().splitlines()) == 1, f"{name}: keep a one-line docstring"
    assert set(documented) == set(specs), f"documented but not hooks: {set(documented) - set(specs)}"


def test_one_import_name_per_file():
    """Every module file of genforge is imported under one name: no folder mapped twice (the double import DESIGN warns of)."""
    import importlib
    import pkgutil
    import sys

    import genforge.core.testing

    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("genforge.testing")  # the kit's one name is genforge.core.testing
    for package in ("genforge.core", "genforge.flows", "genforge.plugins"):
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
            if ".tests" not in info.name:
                importlib.import_module(info.name)
    by_file: dict[str, list[str]] = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.startswith("genforge") and path:
            by_file.setdefault(str(Path(path).resolve()), []).append(name)
    assert {f: names for f, names in by_file.items() if len(names) > 1} == {}
    assert genforge.core.testing.toy.ToyPlugin is sys.modules["genforge.core.testing.toy"].ToyPlugin
