"""Plugins written outside genforge, installed as distributions: a working one, broken ones, one that adds a command.

The distributions are found on ``sys.path`` as pip would leave them; the command line is called in this process
(``helpers.cli.genforge``: plugins loaded afresh each call), and in a real process where only that proves the point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import genforge as cli
from helpers.fake_dist import install

ROOT = Path(__file__).resolve().parents[1]
MOSES_TEST = ROOT / "plugins" / "healthcare" / "moses" / "moses_test.smi.gz"

ACME_CHEM = '''
from genforge.core import Evaluation, Evaluator, EvaluatorConfig, Metric, hookimpl

class RingAtoms(Evaluator):
    name = "acme-rings"
    kinds = ("molecules",)

    def evaluate(self, samples, reference, out_dir, config):
        lines = [l.split()[0] for l in open(samples.path) if l.strip()]
        ring_digits = sum(ch.isdigit() for s in lines for ch in s) / max(len(lines), 1)
        # a buggy "validity": it must not overwrite RDKit's
        return Evaluation(self.name, [Metric("ring_closures", ring_digits, None, description="ring-closure digits per SMILES"),
                                      Metric("validity", -1.0, True)])

@hookimpl
def genforge_evaluators():
    return [RingAtoms()]

@hookimpl
def genforge_commands(app):
    @app.command("acme-hello")
    def hello(name: str = "world"):
        """Say hello from the acme plugin."""
        print(f"hello {name} from acme")
'''

BROKEN = """
import acme_missing_dependency  # ImportError: a plugin whose module fails to import
"""

FLAKY = """
from genforge.core import Evaluator, hookimpl

class Flaky(Evaluator):
    name = "acme-flaky"
    kinds = ("molecules",)

    def evaluate(self, samples, reference, out_dir, config):
        raise RuntimeError("acme's evaluator crashed")

@hookimpl
def genforge_evaluators():
    return [Flaky()]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    install(folder, "acme-chem", "acme_chem", ACME_CHEM)
    install(folder, "acme-broken", "acme_broken", BROKEN)
    install(folder, "acme-flaky", "acme_flaky", FLAKY)
    return folder


@pytest.fixture
def outside(site, monkeypatch) -> Path:
    """The three acme distributions installed for this test."""
    monkeypatch.syspath_prepend(str(site))
    return site


def genforge(outside: Path, *args: str, env: dict | None = None):
    return cli(*args, env=env)


def test_a_broken_plugin_is_one_line_and_every_other_plugin_works(outside):
    r = genforge(outside, "plugins", "--json")
    assert r.code == 0, r.stderr
    infos = {p["name"]: p for p in json.loads(r.stdout)}
    assert infos["healthcare"]["status"] == "loaded" and infos["acme-chem"]["status"] == "loaded"
    assert infos["acme-chem"]["evaluators"] == ["acme-rings"] and infos["acme-chem"]["distribution"] == "acme-chem"
    assert infos["acme-broken"]["status"] == "failed"
    assert infos["acme-broken"]["errors"] == ["import: ModuleNotFoundError: No module named 'acme_missing_dependency'"]
    lines = [x for x in r.stderr.splitlines() if "acme-broken" in x]
    assert lines == [
        "genforge: plugin 'acme-broken' (distribution acme-broken) skipped at import: ModuleNotFoundError: No module named "
        "'acme_missing_dependency'; to silence this, set GENFORGE_DISABLE_PLUGINS=acme-broken"
    ]
    assert "Traceback" not in r.stderr
    quiet = genforge(outside, "plugins", env={"GENFORGE_DISABLE_PLUGINS": "acme-broken,acme-brokn"})
    assert "skipped at import" not in quiet.stderr
    assert "GENFORGE_DISABLE_PLUGINS names 'acme-brokn', which matches no installed plugin" in quiet.stderr
    only = genforge(outside, "plugins", "--json", env={"GENFORGE_PLUGINS": "healthcare"})
    statuses = {p["name"]: (p["status"], p["reason"]) for p in json.loads(only.stdout)}
    assert statuses["healthcare"] == ("loaded", "") and statuses["acme-chem"] == ("skipped", "not in GENFORGE_PLUGINS")
    unknown = genforge(outside, "run", "molecule-diffusion", env={"GENFORGE_PLUGINS": "acme-chem"})
    assert unknown.code == 2
    assert "comes from plugin 'healthcare', which is not in GENFORGE_PLUGINS" in unknown.stderr


def test_an_outside_evaluator_adds_its_metric_and_overwrites_nothing(outside, tmp_path):
    import gzip

    rows = gzip.open(MOSES_TEST, "rt").read().split()[:60]
    f = tmp_path / "lib.smi"
    f.write_text("\n".join(rows) + "\nC1CC(\n")
    home = {"GENFORGE_HOME": str(tmp_path / "h")}
    r = genforge(
        outside, "evaluate", "molecules", str(f), "--json", "--set", "moses.enabled=false", "--set", "acme-flaky.optional=true", env=home
    )
    assert r.code == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["rdkit.validity"] == pytest.approx(60 / 61) and m["acme-rings.validity"] == -1.0
    assert "validity" not in m  # two evaluators disagree: only the qualified names
    assert m["ring_closures"] > 0 and m["acme-rings.ring_closures"] == m["ring_closures"]
    assert "moses.FCD/Test" not in m  # switched off by --set
    assert "evaluator 'acme-flaky' of plugin 'acme-flaky' failed on molecules: RuntimeError: acme's evaluator crashed" in r.stderr
    assert len([x for x in r.stderr.splitlines() if "acme-broken" in x]) == 1  # still one line, and the evaluation went on
    assert len([x for x in r.stderr.splitlines() if "acme-flaky" in x]) == 1 and "Traceback" not in r.stderr
    # not optional: the same metrics, then one line and exit code 1
    out = tmp_path / "required"
    r = genforge(outside, "evaluate", "molecules", str(f), "--json", "--set", "moses.enabled=false", "--out", str(out), env=home)
    assert r.code == 1 and json.loads(r.stdout)["acme-rings.ring_closures"] == m["ring_closures"]
    assert r.stderr.strip().splitlines()[-1] == (
        "error: evaluator 'acme-flaky' of plugin 'acme-flaky' failed (RuntimeError: acme's evaluator crashed); the other metrics "
        f"are in {out / 'metrics.json'} (--set acme-flaky.optional=true lets it finish without it)"
    )


@pytest.mark.parametrize("optional", [False, True], ids=["required", "optional"])
def test_a_molecule_run_reports_the_outside_metric_beside_the_built_in_ones(outside, tmp_path, tiny, optional):
    args = [a for item in [*tiny, "evaluate.moses.enabled=false", f"evaluate.acme-flaky.optional={optional}"] for a in ("--set", item)]
    r = genforge(outside, "run", "molecule-diffusion", "--no-prefect", *args, env={"GENFORGE_HOME": str(tmp_path / "h")})
    # the crashed outside evaluator fails the run unless it is optional; its summary and report are there either way
    assert r.code == (0 if optional else 1), r.stderr
    assert "Traceback" not in r.stderr and "acme's evaluator crashed" in r.stdout  # the summary names it
    shown = json.loads(genforge(outside, "show", "latest", "--json", env={"GENFORGE_HOME": str(tmp_path / "h")}).stdout)
    assert shown["status"]["state"] == ("finished" if optional else "failed")
    assert "acme-rings.ring_closures" in shown["metrics"] and shown["metrics"]["rdkit.validity"] == 1.0  # SELFIES
    report = (Path(shown["path"]) / "report.md").read_text()
    assert "| acme-rings | ring_closures |" in report and "| rdkit | validity |" in report
    assert "evaluator 'acme-flaky' of plugin 'acme-flaky' failed on molecules" in report


def test_a_plugin_adds_a_command_and_hook_calls_can_be_traced(outside):
    r = genforge(outside, "acme-hello", "--name", "chemist")
    assert r.code == 0, r.stderr
    assert r.stdout.strip() == "hello chemist from acme"
    traced = genforge(outside, "plugins", env={"GENFORGE_TRACE_HOOKS": "1"})
    assert "genforge_generators" in traced.stderr and "finish genforge_generators" in traced.stderr


def test_commands_that_need_no_prefect_never_import_it(tmp_path, toy_dist):
    """plugins, run --no-prefect, show, runs, evaluate, new-plugin, the model commands (register, promote, models, models show,
    sample --no-prefect, gate, runs prune) through the console entry point, in one fresh process."""
    smi = tmp_path / "x.smi"
    smi.write_text("CCO\nc1ccccc1\n")
    code = f"""
import sys
from genforge.flows.cli import main
def call(*args):
    try:
        main(list(args))
    except SystemExit as exc:
        assert not exc.code, (args, exc.code)
call("plugins", "--json")
call("run", "toy-gaussian", "--no-prefect", "--set", "train.max_steps=5", "--set", "sample.n=10")
call("show", "latest")
call("runs")
call("evaluate", "molecules", {str(smi)!r}, "--json", "--set", "moses.enabled=false")
call("new-plugin", "acme-x", "--out", {str(tmp_path)!r})
call("register", "latest", "--model", "toy")
call("promote", "toy:1", "--reason", "first")
call("models")
call("models", "show", "toy")
call("sample", "toy@champion", "--no-prefect", "--set", "sample.n=5")
call("run", "toy-gaussian", "--no-prefect", "--set", "train.max_steps=5", "--set", "sample.n=10")
call("gate", "latest", "--model", "toy")
call("runs", "prune", "--keep", "1", "--dry-run")
print("PREFECT-IMPORTED:", sorted(m for m in sys.modules if m == "prefect" or m.startswith("prefect.")))
"""
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "GENFORGE_HOME": str(tmp_path / "h"), "PYTHONPATH": toy_dist.pythonpath},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "PREFECT-IMPORTED: []"


def test_new_plugin_renders_a_package_whose_own_tests_pass(tmp_path):
    """genforge new-plugin, then the package's tests as generated (installed by a dist-info on PYTHONPATH instead of pip)."""
    r = cli("new-plugin", "acme-demo", "--out", str(tmp_path))
    assert r.code == 0, r.stderr
    pkg = tmp_path / "acme-demo"
    assert "genforge run acme-demo-generator" in r.stdout
    pyproject = (pkg / "pyproject.toml").read_text()
    assert '[project.entry-points.genforge]\nacme-demo = "acme_demo.plugin"' in pyproject
    src = pkg / "src"
    info = src / "acme_demo-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-demo\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[genforge]\nacme-demo = acme_demo.plugin\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]), "GENFORGE_HOME": str(tmp_path / "h")}
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(pkg)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=pkg,
    )
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "5 passed" in tests.stdout
    again = cli("new-plugin", "acme-demo", "--out", str(tmp_path))
    assert again.code == 2 and "exists; choose another name" in again.stderr
    bad = cli("new-plugin", "Acme Demo", "--out", str(tmp_path))
    assert bad.code == 2 and "use lowercase letters, digits and dashes" in bad.stderr
