"""The host: plugin loading, registration, evaluation merge, errors, layering, hook docs."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import ClassVar

import pytest

from genforge.core import Evaluation, Evaluator, Metric, UnknownNameError, hookimpl
from genforge.core import hookspecs
from genforge.core.plugins import evaluators, get_generator, make_plugin_manager, plugin_infos

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
    assert "healthcare" not in {i.name for i in plugin_infos(pm)}
    with pytest.raises(UnknownNameError) as err:
        get_generator("molecule-diffusion", pm)
    assert "installed: none" in str(err.value)


def test_unknown_generator_names_the_installed_ones():
    with pytest.raises(UnknownNameError) as err:
        get_generator("molecule-difusion", make_plugin_manager())
    assert str(err.value) == "unknown generator 'molecule-difusion'; installed: molecule-diffusion"


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
            others = [n for n in _imports(p) if n.startswith("genforge.plugins.") and not n.startswith(f"genforge.plugins.{plugin_dir.name}")]
            assert others == [], f"{p} imports {others}"


def test_every_hook_is_documented():
    doc = (ROOT / "docs" / "plugin_hooks.md").read_text()
    specs = [n for n in dir(hookspecs) if n.startswith("genforge_")]
    assert len(specs) >= 9
    for name in specs:
        assert re.search(rf"^##+ `?{name}\(", doc, re.M), f"{name} is not documented in docs/plugin_hooks.md"
