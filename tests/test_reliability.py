"""Nothing silently wrong: what the host reads back is verified, states tell the truth, damage is named (docs/reliability.md).

Each test injects one fault an SRE team found (a file replaced, a bit flipped, a process killed, a
folder deleted) and checks that it is named and never used; all on the toy plugin.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genforge.core import DataError, RunGone, hookimpl
from genforge.core.runner import Steps, create_run, run_all
from genforge.core.testing import quick_run
from genforge.core.testing.toy import ToyPlugin

SPEC = {"train": {"max_steps": 20, "checkpoint_every": 5, "log_every": 5}, "sample": {"n": 10}}


def _csv(path: Path, rows: int = 60, shift: float = 0.0) -> Path:
    path.write_text("".join(f"{i * 0.1 + shift:.1f},{(i % 7) * 0.3:.1f}\n" for i in range(rows)))
    return path


def test_a_cached_file_replaced_by_other_data_is_never_used(genforge_home, genforge_pm, tmp_path):
    pm = genforge_pm(ToyPlugin())
    data = _csv(tmp_path / "prices.csv")
    first = quick_run("toy-gaussian", {**SPEC, "data": {"path": str(data)}}, pm)
    folder = Path(first.read_json("data.json")["path"])
    np_test = folder / "test.npy"
    import numpy as np

    np.save(np_test, np.full((5, 2), 1e6, dtype=np.float32))  # someone else's numbers under the same name
    second = create_run("toy-gaussian", spec={**SPEC, "data": {"path": str(data)}}, pm=pm)
    prepared = Steps(second, pm).prepare()
    assert prepared.stats["cache"] == "rebuilt (test.npy changed since it was prepared)"
    assert np.load(folder / "test.npy").max() < 100  # prepared again from the file, not the replaced numbers
    run_all(second, pm)
    assert any("was not used and was prepared again: rebuilt (test.npy changed" in n for n in second.metrics()["notes"])
    again = Steps(create_run("toy-gaussian", spec={**SPEC, "data": {"path": str(data)}}, pm=pm), pm).prepare()
    assert again.stats["cache"] == "hit"
    np.save(folder / "more.npy", np.zeros(3))  # a file added beside the prepared ones: read by a generator that globs
    added = Steps(create_run("toy-gaussian", spec={**SPEC, "data": {"path": str(data)}}, pm=pm), pm).prepare()
    assert added.stats["cache"] == "rebuilt (more.npy was added since it was prepared)" and not (folder / "more.npy").exists()


def test_an_incomplete_cache_folder_is_rebuilt_not_fatal(genforge_home, genforge_pm, tmp_path):
    pm = genforge_pm(ToyPlugin())
    data = _csv(tmp_path / "prices.csv")
    run = quick_run("toy-gaussian", {**SPEC, "data": {"path": str(data)}}, pm)
    folder = Path(run.read_json("data.json")["path"])
    (folder / "stats.json").unlink()  # as an interrupted preparation of an older version left it
    again = Steps(create_run("toy-gaussian", spec={**SPEC, "data": {"path": str(data)}}, pm=pm), pm).prepare()
    assert again.stats["cache"].startswith("rebuilt (stats.json is missing")
    assert (folder / "stats.json").exists() and not list(folder.parent.glob(".*damaged*"))


def test_the_source_recorded_is_the_file_this_run_read(genforge_home, genforge_pm, tmp_path):
    """Two files with the same content share the cache; each run names its own file, not the one that filled the cache."""
    pm = genforge_pm(ToyPlugin())
    a, b = _csv(tmp_path / "a.csv"), _csv(tmp_path / "copy-of-a.csv")
    quick_run("toy-gaussian", {**SPEC, "data": {"path": str(a)}}, pm)
    run = quick_run("toy-gaussian", {**SPEC, "data": {"path": str(b)}}, pm)
    recorded = run.read_json("data.json")
    assert recorded["cache"] == "hit" and recorded["source"] == str(b)


def test_a_checkpoint_with_flipped_bits_is_set_aside_and_noted(genforge_home, genforge_pm):
    pm = genforge_pm(ToyPlugin())
    run = create_run("toy-gaussian", spec={"train": {"max_steps": 10, "checkpoint_every": 5}, "sample": {"n": 10}}, pm=pm)
    steps = Steps(run, pm)
    steps.train(steps.prepare())
    newest = run.checkpoints / "step-00000010.pt"
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit, in the middle of a tensor: torch.load would not notice
    newest.write_bytes(bytes(raw))
    for f in run.path.glob("*.safetensors"):
        f.unlink()
    run.path.joinpath("training.json").unlink()
    (run.path / "spec.yaml").write_text((run.path / "spec.yaml").read_text().replace("max_steps: 10", "max_steps: 12"))
    Steps(run, pm).train()
    training = run.read_json("training.json")
    assert training["resumed_from"] == 5 and (run.checkpoints / "step-00000010.pt.damaged").exists()
    assert any("step 10" in n and "could not be loaded" in n for n in training["notes"])


def test_weights_that_do_not_match_their_record_are_refused_in_one_line(genforge_home, tmp_path):
    import torch

    from genforge.core.training import load_weights, save_weights

    path = save_weights(torch.nn.Linear(4, 2), tmp_path / "model.safetensors", {"in": 4})
    state, meta = load_weights(path)
    assert meta == {"in": 4} and set(state) == {"weight", "bias"}
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"model.safetensors does not match the SHA-256 recorded in model.json"):
        load_weights(path)


def test_a_run_whose_process_was_killed_shows_died_not_running(genforge_home, toy_dist):
    """kill -9 (or the OOM killer, or a lost machine): `genforge runs` and `show` say died, and resume continues it."""
    from genforge.flows.cli import invoke

    env = {**os.environ, "PYTHONPATH": toy_dist.pythonpath, "GENFORGE_PLUGINS": "toy"}
    script = str(Path(sys.executable).parent / "genforge")
    proc = subprocess.Popen(
        [script, "run", "toy-gaussian", "--no-prefect", "--set", "train.max_steps=3000", "--set", "train.checkpoint_every=100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not list(genforge_home.glob("runs/*/checkpoints/step-*.pt")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    run_dir = next((genforge_home / "runs").iterdir())
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"  # what the file says
    rows = json.loads(invoke("runs", "--json").stdout)
    assert rows[0]["state"] == "died" and f"pid {proc.pid}" in rows[0]["error"] and f"genforge resume {run_dir.name}" in rows[0]["error"]
    shown = invoke("show", run_dir.name)
    assert f"{run_dir.name}: died" in shown.stdout
    resumed = invoke("resume", run_dir.name, "--no-prefect")
    assert resumed.code == 0, resumed.stderr
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def test_a_run_between_its_steps_is_running_not_died(genforge_home, genforge_pm):
    """A step-by-step run (a flow's tasks) holds no lock between its steps: that is no evidence of a death."""
    from genforge.flows.cli import invoke

    pm = genforge_pm(ToyPlugin())
    run = create_run("toy-gaussian", spec=SPEC, pm=pm)
    Steps(run, pm).prepare()  # takes the lock and releases it: the lock is empty, the status running
    run.set_status("running", step_name="train")
    rows = json.loads(invoke("runs", "--json").stdout)
    assert rows[0]["state"] == "running", rows[0]


class DeletesTheRunFolder:
    @hookimpl
    def genforge_train_progress(self, run, step, total, metrics):
        if step >= 10 and run.path.exists():
            shutil.rmtree(run.path)


class DeletesItsFolderAndPrints(ToyPlugin):
    """The toy generator, deleting its run folder at step 10 and printing right after (to the run's capped plugin log)."""

    @hookimpl
    def genforge_generators(self):
        from genforge.core.testing.toy import GaussianGenerator

        class Printing(GaussianGenerator):
            def fit(self, data, config, trainer):
                fit = trainer.fit

                def printing_fit(model, loss_fn, **kwargs):
                    def loss(model, step):
                        if step == 10:
                            shutil.rmtree(trainer.run_dir)
                            print("still here")  # the plugin log is opened now, its folder gone
                        return loss_fn(model, step)

                    return fit(model, loss, **kwargs)

                trainer.fit = printing_fit
                return super().fit(data, config, trainer)

        return [Printing]


@pytest.mark.parametrize("by", ["listener", "generator-printing"])
def test_a_run_folder_deleted_during_training_stops_the_run_and_is_not_recreated(genforge_home, genforge_pm, by):
    pm = genforge_pm(ToyPlugin(), DeletesTheRunFolder()) if by == "listener" else genforge_pm(DeletesItsFolderAndPrints())
    run = create_run("toy-gaussian", spec={"train": {"max_steps": 200, "checkpoint_every": 5, "log_every": 5}}, pm=pm)
    with pytest.raises(RunGone, match=r"the run folder .* was deleted while the run (trained|executed)"):
        run_all(run, pm)
    assert not run.path.exists()


# -- a name belongs to one plugin --------------------------------------------------------------------------------

IMPOSTOR = """
from genforge.core import Generator, GeneratorConfig, hookimpl
from genforge.core.testing.toy import MomentsEvaluator, Vectors

class FakeGarch(Generator):
    name = "garch"  # the built-in finance plugin's
    kind = "scenarios"
    Config = GeneratorConfig

class FakeScenarios(Vectors):
    name = "scenarios"  # genforge's own kind

class FakeMoses(MomentsEvaluator):
    name = "moses"  # the built-in healthcare plugin's
    kinds = ("molecules",)

@hookimpl
def genforge_generators():
    return [FakeGarch]

@hookimpl
def genforge_sample_kinds():
    return [FakeScenarios()]

@hookimpl
def genforge_evaluators():
    return [FakeMoses()]

@hookimpl
def genforge_commands(app):
    @app.command("harmonise")  # the built-in creative plugin's command
    def harmonise():
        print("IMPOSTOR RAN")
"""

TWIN = """
from genforge.core import hookimpl
from genforge.core.testing.toy import GaussianGenerator, Vectors

class Widgets(Vectors):
    name = "widgets"

class Twin(GaussianGenerator):
    name = "twin"
    kind = "scenarios"  # a kind of genforge's own: only the generator's name is in question

@hookimpl
def genforge_sample_kinds():
    return [Widgets()]

@hookimpl
def genforge_generators():
    return [Twin]

@hookimpl
def genforge_commands(app):
    @app.command("twin-hello")
    def hello():
        print("hello from {who}")
"""


@pytest.fixture(scope="module")
def impostor_sites(tmp_path_factory) -> dict[str, Path]:
    from helpers.fake_dist import install

    sites = {name: tmp_path_factory.mktemp(name) for name in ("impostor", "twin-a", "twin-b")}
    install(sites["impostor"], "acme-impostor", "acme_impostor", IMPOSTOR)
    install(sites["twin-a"], "acme-twin-a", "acme_twin_a", TWIN.format(who="acme-twin-a"))
    install(sites["twin-b"], "acme-twin-b", "acme_twin_b", TWIN.format(who="acme-twin-b"))
    return sites


def test_an_outside_plugin_cannot_take_a_built_in_name(impostor_sites, monkeypatch):
    """`genforge run garch` runs finance's garch, never an impostor's; the line names the impostor, not finance."""
    from genforge.core.plugin_manager import evaluators, generators, kinds, make_plugin_manager
    from genforge.flows.cli import invoke

    monkeypatch.syspath_prepend(str(impostor_sites["impostor"]))
    pm = make_plugin_manager()
    assert generators(pm)["garch"].__module__.startswith("genforge.plugins.finance")
    assert type(kinds(pm)["scenarios"]).__module__ == "genforge.core.kinds"
    assert [p for p, ev in evaluators(pm) if ev.name == "moses"] == ["healthcare"]
    r = invoke("plugins", "--json")
    assert r.code == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if "garch" in x]
    assert lines == [
        "genforge: plugin 'acme-impostor' (distribution acme-impostor) registers generator 'garch', which is the built-in "
        "plugin 'finance''s: its registration is refused (the built-in one is kept); rename it there, or set "
        "GENFORGE_DISABLE_PLUGINS=acme-impostor"
    ]
    for what, name in (("sample kind", "scenarios"), ("evaluator", "moses"), ("command", "harmonise")):
        assert any(f"plugin 'acme-impostor' (distribution acme-impostor) registers {what} {name!r}" in x for x in r.stderr.splitlines())
    assert "GENFORGE_DISABLE_PLUGINS=finance" not in r.stderr and "GENFORGE_DISABLE_PLUGINS=healthcare" not in r.stderr
    infos = {p["name"]: p for p in json.loads(r.stdout)}
    assert infos["acme-impostor"]["status"] == "failed"  # it brought nothing of its own
    assert any(
        c.startswith("generator 'garch' is the built-in plugin 'finance''s: this plugin's is refused")
        for c in infos["acme-impostor"]["conflicts"]
    )
    assert infos["finance"]["status"] == "loaded"
    assert infos["finance"]["conflicts"] == [
        "generator 'garch' is also registered by 'acme-impostor' (distribution acme-impostor), whose registration is refused"
    ]
    assert any("command 'harmonise'" in c for c in infos["creative"]["conflicts"])
    shown = invoke("harmonise", "--help")
    assert "IMPOSTOR RAN" not in shown.stdout and "chorale" in shown.stdout.lower()  # creative's own command


@pytest.mark.parametrize("order", [("twin-a", "twin-b"), ("twin-b", "twin-a")])
def test_a_name_two_outside_plugins_register_goes_to_neither_whatever_the_order(impostor_sites, monkeypatch, order):
    from genforge.core import UnknownNameError
    from genforge.core.plugin_manager import generators, get_generator, kinds, make_plugin_manager
    from genforge.flows.cli import invoke

    for name in reversed(order):  # the first of `order` is first on sys.path: its entry point is found first
        monkeypatch.syspath_prepend(str(impostor_sites[name]))
    env = {"GENFORGE_PLUGINS": "acme-twin-a,acme-twin-b"}
    monkeypatch.setenv("GENFORGE_PLUGINS", env["GENFORGE_PLUGINS"])
    pm = make_plugin_manager()
    assert "twin" not in generators(pm) and "widgets" not in kinds(pm)
    with pytest.raises(UnknownNameError) as err:
        get_generator("twin", pm)
    assert (
        "generator 'twin' is registered by plugins 'acme-twin-a' (distribution acme-twin-a) and 'acme-twin-b' (distribution "
        "acme-twin-b) and given to neither: set GENFORGE_DISABLE_PLUGINS=acme-twin-a or GENFORGE_DISABLE_PLUGINS=acme-twin-b"
    ) in str(err.value)
    r = invoke("plugins", "--json", env=env)
    assert (
        "genforge: sample kind 'widgets' is registered by plugins 'acme-twin-a' (distribution acme-twin-a) and 'acme-twin-b' "
        "(distribution acme-twin-b): refused for both until one is disabled; set GENFORGE_DISABLE_PLUGINS=acme-twin-a or "
        "GENFORGE_DISABLE_PLUGINS=acme-twin-b"
    ) in r.stderr.splitlines()
    infos = {p["name"]: p for p in json.loads(r.stdout)}
    for me, other in (("acme-twin-a", "acme-twin-b"), ("acme-twin-b", "acme-twin-a")):
        assert infos[me]["status"] == "failed" and infos[me]["generators"] == []
        assert f"command 'twin-hello' is also registered by '{other}' (distribution {other}): refused for both" in "; ".join(
            infos[me]["conflicts"]
        )
    hello = invoke("twin-hello", env=env)
    assert hello.code != 0 and "hello from" not in hello.stdout
    run = invoke("run", "twin", "--no-prefect", env=env)
    assert run.code == 2 and "and given to neither" in run.stderr
    one = invoke("twin-hello", env={"GENFORGE_PLUGINS": "acme-twin-a"})  # one disabled: the other's name is its own
    assert one.code == 0 and one.stdout.strip() == "hello from acme-twin-a"


@pytest.mark.parametrize("first", ["outsider", "genforge"])
def test_an_outside_entry_point_named_like_a_built_in_plugin_is_refused(tmp_path, monkeypatch, first):
    """An outside distribution whose entry point is called `finance` never replaces finance, whichever is first on the path."""
    from helpers.fake_dist import install

    from genforge.core.plugin_manager import generators, make_plugin_manager

    site = install(tmp_path / "site", "acme-shadow", "acme_shadow", IMPOSTOR, entry_point="finance")
    if first == "outsider":
        monkeypatch.syspath_prepend(str(site))
    else:
        monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    pm = make_plugin_manager()
    assert generators(pm)["garch"].__module__.startswith("genforge.plugins.finance")
    assert pm.distributions["finance"][0] == "genforge"
    assert any("acme-shadow" in key and "refused" in why for key, why in pm.skipped.items())


def test_a_plugin_name_two_outside_distributions_use_goes_to_neither(tmp_path, monkeypatch):
    from helpers.fake_dist import install

    from genforge.core.plugin_manager import generators, make_plugin_manager

    for dist in ("acme-twin-a", "acme-twin-b"):
        monkeypatch.syspath_prepend(str(install(tmp_path / dist, dist, dist.replace("-", "_"), TWIN.format(who=dist), entry_point="twins")))
    pm = make_plugin_manager()
    assert pm.get_plugin("twins") is None and "twin" not in generators(pm)
    assert pm.skipped["twins"] == (
        "the plugin name 'twins' is the entry point of acme-twin-a and of acme-twin-b, and given to neither: uninstall all but one"
    )


# -- bounded work: an evaluator's time and output ------------------------------------------------------------------

NOISY = """
import sys, threading
from genforge.core import hookimpl
from genforge.core.testing.toy import GaussianGenerator, MomentsEvaluator

RELEASE = threading.Event()  # the test lets the hung evaluator go at its end

class Noisy(MomentsEvaluator):
    name = "noisy"

    def evaluate(self, samples, reference, out_dir, config):
        for _ in range(20):
            print("N" * (1 << 20))  # 20 MB in all
        print("noisy on stderr too", file=sys.stderr)
        return super().evaluate(samples, reference, out_dir, config)

class Hung(MomentsEvaluator):
    name = "hung"

    def evaluate(self, samples, reference, out_dir, config):
        print("hung: waiting forever")
        RELEASE.wait(120)
        return super().evaluate(samples, reference, out_dir, config)

class Chatty(GaussianGenerator):
    name = "toy-chatty"

    def sample(self, checkpoint, config, run):
        print("CHATTY " * 1000)
        return super().sample(checkpoint, config, run)

@hookimpl
def genforge_evaluators():
    return [Noisy(), Hung()]

@hookimpl
def genforge_generators():
    return [Chatty]
"""


@pytest.fixture
def noisy(toy_dist, tmp_path_factory, monkeypatch):
    from helpers.fake_dist import install

    site = install(tmp_path_factory.mktemp("noisy"), "acme-noisy", "acme_noisy", NOISY)
    monkeypatch.syspath_prepend(str(site))
    if "acme_noisy" in sys.modules:  # imported by an earlier test, whose end let its hung evaluator go
        sys.modules["acme_noisy"].RELEASE.clear()
    yield {"GENFORGE_PLUGINS": "toy,acme-noisy"}
    if "acme_noisy" in sys.modules:
        sys.modules["acme_noisy"].RELEASE.set()


@pytest.mark.parametrize("optional", [False, True], ids=["required", "optional"])
def test_a_hung_evaluator_is_skipped_at_its_deadline_and_what_evaluators_print_goes_to_a_capped_log(genforge_home, noisy, optional):
    from genforge.core.capture import LOG_CAP
    from genforge.flows.cli import invoke

    t0 = time.monotonic()
    args = ["--set", "train.max_steps=5", "--set", "sample.n=20", "--set", "evaluate.timeout_minutes=0.05"]
    args += ["--set", "evaluate.hung.optional=true"] if optional else []
    r = invoke("run", "toy-chatty", "--no-prefect", *args, env=noisy)
    # a hung evaluator the run needs fails it, after the others' metrics and the report; an optional one only loses its metrics
    assert r.code == (0 if optional else 1), r.stderr[-2000:]
    if not optional:
        error = r.stderr.strip().splitlines()[-1]
        assert error.startswith("error: run ") and "evaluator 'hung' of plugin 'acme-noisy' failed (timed out after 0.05 minutes)" in error
        assert "evaluate.hung.optional=true lets it finish without it" in error and "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 60  # 3 s for the hung one, not its 120
    assert len(r.stdout) + len(r.stderr) < 100_000 and "NNNN" not in r.stdout + r.stderr and "CHATTY" not in r.stdout
    run = next((genforge_home / "runs").iterdir())
    log = run / "logs" / "plugins.log"
    text = log.read_text()
    assert log.stat().st_size <= LOG_CAP
    assert "CHATTY CHATTY" in text and "== generator 'toy-chatty' sample ==" in text and "hung: waiting forever" in text
    assert (
        "bytes evaluator 'noisy' of plugin 'acme-noisy' wrote were cut: this log keeps at most 262,144 bytes of each and 1,048,576 in all]"
        in text
    )
    metrics = json.loads((run / "metrics.json").read_text())
    by_name = {e["evaluator"]: e for e in metrics["evaluations"]}
    assert by_name["hung"]["error"] == "timed out after 0.05 minutes" and by_name["hung"]["metrics"] == []
    assert by_name["noisy"]["metrics"] and by_name["moments"]["metrics"] and by_name["noisy"]["error"] is None
    note = (
        "evaluator 'hung' of plugin 'acme-noisy' did not finish on vectors within 0.05 minutes (evaluate.timeout_minutes) and was skipped"
    )
    assert any(n.startswith(note) for n in metrics["notes"]) and note in r.stdout  # the summary names it
    assert "noisy: it printed 20,971,560 bytes; plugins.log keeps the first 262,144" in metrics["notes"]
    assert (run / "report.md").exists() and note in (run / "report.md").read_text()
    assert json.loads((run / "status.json").read_text())["state"] == ("finished" if optional else "failed")


@pytest.mark.parametrize("optional", [False, True], ids=["required", "optional"])
def test_genforge_evaluate_takes_the_deadline_and_keeps_the_evaluators_output_in_its_folder(genforge_home, noisy, tmp_path, optional):
    import numpy as np

    from genforge.core.capture import LOG_CAP
    from genforge.flows.cli import invoke

    vectors = tmp_path / "v.npy"
    np.save(vectors, np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32))
    out = tmp_path / "eval"
    r = invoke("evaluate", "vectors", str(vectors), "--reference", str(vectors), "--out", str(out), "--json",
               "--set", "timeout_minutes=0.02", *(["--set", "hung.optional=true"] if optional else []), env=noisy)  # fmt: skip
    assert r.code == (0 if optional else 1), r.stderr[-2000:]
    assert ("--set hung.optional=true lets it finish without it" in r.stderr) != optional and "Traceback" not in r.stderr
    assert len(r.stdout) + len(r.stderr) < 100_000 and "NNNN" not in r.stdout + r.stderr
    assert "moments.mean_abs_error" in json.loads(r.stdout)
    assert "evaluator 'hung' of plugin 'acme-noisy' did not finish on vectors within 0.02 minutes" in r.stderr
    assert (out / "plugins.log").stat().st_size <= LOG_CAP and "were cut" in (out / "plugins.log").read_text()


# -- the store writes only inside itself -----------------------------------------------------------------------------


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_folder_that_is_a_link_out_of_the_store_is_refused_before_anything_is_written(genforge_home, genforge_pm, tmp_path):
    from genforge.core import RunStore
    from genforge.flows.cli import invoke

    pm = genforge_pm(ToyPlugin())
    real = quick_run("toy-gaussian", SPEC, pm)
    outside = tmp_path / "outside"
    shutil.copytree(real.path, outside)  # a run's files, outside the store
    before = _tree(outside)
    link = genforge_home / "runs" / "linked-run"
    link.symlink_to(outside)
    message = f"{link} is a symbolic link (to {outside}): genforge writes only inside its store, never through a link"
    with pytest.raises(DataError, match="is a symbolic link") as err:
        RunStore().get("linked-run")
    assert str(err.value).startswith(message)
    with pytest.raises(DataError, match="is a symbolic link"):
        RunStore().create("toy-gaussian", "linked-run")
    from genforge.core import Run

    with pytest.raises(DataError, match="is a symbolic link"):
        Run(link).set_status("running")
    with pytest.raises(DataError, match="is a symbolic link"):
        with Run(link).lock("run"):
            pass
    r = invoke("resume", "linked-run", "--no-prefect")
    assert r.code == 2 and r.stderr.startswith(f"error: {message}") and len(r.stderr.splitlines()) == 1
    assert [run.id for run in RunStore().all()] == [real.id]  # listed as no run of this store
    assert _tree(outside) == before  # no status, lock, metrics or marker written through the link

    inside = real.path / "logs"  # a folder inside a run, linked out: its writes are refused too
    shutil.rmtree(inside)
    (tmp_path / "logs-elsewhere").mkdir()
    inside.symlink_to(tmp_path / "logs-elsewhere")
    with pytest.raises(DataError, match="logs is a symbolic link"):
        Steps(real, pm)
    assert list((tmp_path / "logs-elsewhere").iterdir()) == []


def test_a_runs_or_cache_folder_that_is_a_link_is_refused_before_anything_is_written(genforge_home, genforge_pm, tmp_path):
    from genforge.core import RunStore

    pm = genforge_pm(ToyPlugin())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    genforge_home.mkdir(parents=True)
    (genforge_home / "runs").symlink_to(elsewhere)
    with pytest.raises(DataError, match=r"genforge-home/runs is a symbolic link"):
        create_run("toy-gaussian", spec=SPEC, pm=pm)
    with pytest.raises(DataError, match=r"genforge-home/runs is a symbolic link"):
        RunStore().all()
    assert list(elsewhere.iterdir()) == []
    (genforge_home / "runs").unlink()

    (genforge_home / "cache").symlink_to(elsewhere)  # the prepared-data cache
    run = create_run("toy-gaussian", spec=SPEC, pm=pm)
    with pytest.raises(DataError, match=r"genforge-home/cache is a symbolic link"):
        Steps(run, pm).prepare()
    assert list(elsewhere.iterdir()) == []
    (genforge_home / "cache").unlink()
    prepared = Steps(run, pm).prepare()  # one prepared folder linked out: the same
    folder = Path(prepared.path)
    shutil.rmtree(folder)
    folder.symlink_to(elsewhere)
    with pytest.raises(DataError, match=f"{folder.name} is a symbolic link"):
        Steps(create_run("toy-gaussian", spec=SPEC, pm=pm), pm).prepare()
    assert list(elsewhere.iterdir()) == []


def test_a_loop_of_links_given_as_a_path_is_one_line(genforge_home, toy_dist, tmp_path, monkeypatch):
    """A relative data.path, a run folder or an image folder that is a loop of links: one `error:` line, never a RuntimeError."""
    from genforge.flows.cli import invoke

    monkeypatch.chdir(tmp_path)
    Path("loop").symlink_to("loop")
    for args in (
        ("run", "toy-gaussian", "--no-prefect", "--set", "data.path=loop"),
        ("run", "image-diffusion", "--no-prefect", "--set", "data.path=loop", "--set", "train.max_steps=1"),
        ("show", "./loop"),
    ):
        r = invoke(*args)
        assert r.code == 2 and r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1, (args, r.stderr)
        assert "loop" in r.stderr and "RuntimeError" not in r.stderr and "Traceback" not in r.stderr
