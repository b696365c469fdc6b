"""The genforge command line: its messages in this process (``helpers.cli.genforge``), and as a user runs it where only a
process proves the point (the console script's exit code, SIGKILL, SIGTERM, two processes on one run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.cli import genforge, sets

from genforge.core.testing import quick_run
from genforge.core.testing.toy import ToyPlugin

SCRIPT = str(Path(sys.executable).parent / "genforge")
# A long toy run: about 1 ms a step on 2 cores, a checkpoint every 100 steps.
TOY_LONG = ["train.max_steps=3000", "train.checkpoint_every=100", "train.log_every=50"]


def test_the_console_script_says_one_line_and_exits_2():
    r = subprocess.run([SCRIPT, "run", "molecule-difusion"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    line = r.stderr.strip()
    assert line.startswith("error: unknown generator 'molecule-difusion'; installed: ") and "molecule-diffusion" in line
    assert len(line.splitlines()) == 1 and "Traceback" not in r.stdout + r.stderr


def test_malformed_set_names_the_field_and_allowed_values(store):
    r = genforge("run", "molecule-diffusion", "--set", "train.optimizer=adamx")
    assert r.code == 2 and "Traceback" not in r.stderr
    assert "train.optimizer" in r.stderr and "'adamw'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = genforge("run", "molecule-diffusion", "--set", "model.layers=3")
    assert "unknown field 'model.layers'" in r.stderr and "n_layers" in r.stderr
    r = genforge("run", "molecule-diffusion", "--no-prefect", "--set", "model.d_model=100", "--set", "model.n_heads=3")
    assert r.code == 2 and "model: d_model (100) must be a multiple of n_heads (3)" in r.stderr
    assert not (store / "runs").exists()  # refused before any run folder


def test_plugins_lists_the_healthcare_plugin_and_its_hooks():
    r = genforge("plugins", "--json")
    assert r.code == 0, r.stderr
    info = {p["name"]: p for p in json.loads(r.stdout)}["healthcare"]
    assert info["generators"] == ["molecule-diffusion"]
    assert "genforge_generators" in info["hooks"]
    table = genforge("plugins").stdout
    assert "healthcare" in table and "genforge_evaluators" in table


def test_run_without_prefect_then_show_json(molecule_run):
    """The session's tiny molecule run, made by `genforge run --no-prefect`: its summary, `show --json` and `runs`."""
    assert "validity" in molecule_run.output and "run folder:" in molecule_run.output
    env = {"GENFORGE_HOME": str(molecule_run.home)}
    shown = json.loads(genforge("show", "latest", "--json", env=env).stdout)
    assert shown["spec"]["generator"] == "molecule-diffusion"
    assert shown["spec"]["train"]["max_steps"] == 12
    m = shown["metrics"]
    assert m["validity"] == 1.0 and m["rdkit.validity"] == m["moses.validity"]  # SELFIES always decode
    heavy = next(x for e in shown["evaluations"] if e["evaluator"] == "rdkit" for x in e["metrics"] if x["name"] == "heavy_atoms_mean")
    assert 20 < heavy["floor"] < 23.5  # the reference: MOSES test molecules
    assert heavy["value"] == m["heavy_atoms_mean"] < 15  # 12 steps of a 19k-parameter model: far too small molecules
    assert shown["training"]["step"] == 12 and shown["training"]["throughput"]["unit"] == "tokens/s"
    assert shown["status"]["state"] == "finished"
    listing = genforge("runs", env=env).stdout
    assert shown["run_id"] in listing and "finished" in listing
    summary = genforge("show", shown["run_id"], "--store", str(molecule_run.home)).stdout  # --store, not $GENFORGE_HOME
    assert "heavy_atoms_mean" in summary and str(molecule_run.path) in summary


def _start_long_toy_run(toy_dist) -> tuple[dict[str, str], subprocess.Popen]:
    """`genforge run toy-gaussian` for 3,000 steps in a real process (its environment, the process)."""
    env = {**os.environ, "PYTHONPATH": toy_dist.pythonpath, "GENFORGE_PLUGINS": "toy"}
    proc = subprocess.Popen(
        [SCRIPT, "run", "toy-gaussian", "--no-prefect", *sets(TOY_LONG)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return env, proc


def test_sigkill_mid_training_then_resume(store, toy_dist):
    """kill -9 during training; `genforge resume` continues from the newest checkpoint that loads (real processes)."""
    env, proc = _start_long_toy_run(toy_dist)
    ckpts = _wait_for_checkpoints(store, proc, 2)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed: {err[-2000:]}"
    run_dir = ckpts[0].parents[1]
    last_step = int(sorted(run_dir.glob("checkpoints/step-*.pt"))[-1].stem.split("-")[1])
    assert 0 < last_step < 3000
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"

    r = subprocess.run([SCRIPT, "resume", run_dir.name, "--no-prefect"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert f"newest on disk: step {last_step}" in r.stdout
    model = json.loads((run_dir / "training.json").read_text())
    assert model["resumed_from"] == last_step and model["step"] == 3000
    assert not list(run_dir.glob("checkpoints/*.tmp")) and not list(run_dir.glob("checkpoints/.*"))
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def test_sigterm_marks_the_run_interrupted_one_resume_at_a_time_and_no_duplicate_log_steps(store, toy_dist):
    """SIGTERM (docker stop, kubectl delete, timeout) stops like Ctrl-C; a second resume of a busy run is refused."""
    env, proc = _start_long_toy_run(toy_dist)
    _wait_for_checkpoints(store, proc, 2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted (stopped by signal SIGTERM); `genforge resume" in stderr and "Traceback" not in stderr
    run_dir = next((store / "runs").iterdir())
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "interrupted" and "SIGTERM" in status["error"]

    first = subprocess.Popen(
        [SCRIPT, "resume", run_dir.name, "--no-prefect"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.time() + 120
    while time.time() < deadline and f"pid {first.pid} " not in ((run_dir / ".lock").read_text() if (run_dir / ".lock").exists() else ""):
        time.sleep(0.05)
    second = genforge("resume", run_dir.name, "--no-prefect")  # from this process: another one
    assert second.code == 2 and f"run {run_dir.name} is busy: run by pid {first.pid}" in second.stderr
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"  # the refused resume touched nothing
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    steps = [json.loads(line)["step"] for line in (run_dir / "logs" / "train.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 3000  # resumed without logging any step twice
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def _wait_for_checkpoints(store: Path, proc: subprocess.Popen, n: int) -> list[Path]:
    deadline = time.time() + 120
    found: list[Path] = []
    while time.time() < deadline and len(found) < n and proc.poll() is None:
        found = sorted((store / "runs").glob("*/checkpoints/step-*.pt")) if (store / "runs").exists() else []
        time.sleep(0.02)
    assert len(found) >= n, f"training wrote {len(found)} checkpoints before the deadline (exit {proc.poll()})"
    return found


def test_evaluate_any_file_of_smiles(store, tmp_path):
    import gzip

    data = Path(__file__).resolve().parents[1] / "plugins" / "healthcare" / "moses" / "moses_test.smi.gz"
    lib = tmp_path / "vendor.csv"
    rows = gzip.open(data, "rt").read().split()[:150]
    lib.write_text("id,smiles\n" + "".join(f"v{i},{s}\n" for i, s in enumerate(rows)) + "bad,C1CC(\n")
    r = genforge("evaluate", "molecules", str(lib), "--reference", "moses-test", "--json")
    assert r.code == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["validity"] == 150 / 151 and m["unique@1k"] == 1.0
    # 150 real MOSES test molecules: real-data values (FCD is large at 150 molecules: its small-sample bias)
    assert m["Filters"] == 1.0 and m["Frag/Test"] > 0.9 and 0.8 < m["IntDiv"] < 0.9 and m["IntDiv2"] < m["IntDiv"]
    assert m["FCD/Test"] < 20 and m["FCD/TestSF"] > m["FCD/Test"] and m["KL"] > 0.8
    assert 20 < m["heavy_atoms_mean"] < 23.5 and abs(m["heavy_atoms_rel_diff"]) < 0.07
    assert m["SNN/Test"] > 0.99  # each molecule is itself in the MOSES test set
    assert not any(k.endswith("/Ref") for k in m)  # MOSES's test split: the MOSES figures are the reference's
    # An in-house library as the reference: the suite against it too, named /Ref; the MOSES figures stay MOSES's.
    own = tmp_path / "in-house.smi"
    own.write_text("\n".join(rows[:100]) + "\n")
    r = genforge("evaluate", "molecules", str(lib), "--reference", str(own), "--json", "--set", "moses.kl_score=false")
    assert r.code == 0, r.stderr
    mine = json.loads(r.stdout)
    assert mine["FCD/Test"] == pytest.approx(m["FCD/Test"]) and mine["SNN/Test"] == pytest.approx(m["SNN/Test"])
    # 100 of the 150 samples are the library's molecules: their nearest neighbour is themselves (similarity 1)
    assert 100 / 150 < mine["SNN/Ref"] < 1 and mine["SNN/Ref"] > m["SNN/Test"] - 0.3
    # ...and the samples sit much closer to the library they contain than to the MOSES test set (FCD 4.6 vs 13.6 seen)
    assert mine["FCD/Ref"] < mine["FCD/Test"] / 2 and mine["Frag/Ref"] > mine["Frag/Test"] and mine["Scaf/Ref"] > 2 * mine["Scaf/Test"]
    assert {"logP/Ref", "SA/Ref", "QED/Ref", "weight/Ref"} <= set(mine) and mine["weight/Ref"] < 10
    assert len(list((store / "cache" / "references").glob("moses-*-10000.npz"))) == 1  # computed once, by content
    bad = genforge("evaluate", "molecules", str(lib), "--reference", "mosses-test")
    assert bad.code != 0 and "unknown reference 'mosses-test'" in bad.stderr and "moses-test" in bad.stderr
    default = genforge("evaluate", "molecules", str(lib), "--json", "--set", "moses.enabled=false")
    assert default.code == 0 and json.loads(default.stdout)["validity"] == 150 / 151  # the kind's own reference
    table = genforge("evaluate", "molecules", str(lib), "--set", "moses.enabled=false").stdout
    assert "reference" in table and "heavy_atoms_mean" in table  # the table shows each metric's floor beside it


def test_evaluate_says_what_is_wrong_with_the_kind_or_the_path(store, tmp_path):
    r = genforge("evaluate", "pictures", str(tmp_path))
    assert r.code == 2 and r.stderr.strip().startswith("error: unknown sample kind 'pictures'; known: molecules, images, music, scenarios")
    r = genforge("evaluate", "molecules", str(tmp_path))
    assert r.code == 2 and "is a folder; molecules samples are a text file" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = genforge("evaluate", "molecules", str(tmp_path / "missing.smi"))
    assert r.code == 2 and "does not exist" in r.stderr
    r = genforge("evaluate", "molecules", __file__, "--set", "rdkit.grd=3")
    assert r.code == 2 and "unknown field 'evaluate.rdkit.grd'" in r.stderr


def test_damaged_state_files_are_named_and_the_other_runs_still_list(store, genforge_pm, toy_dist):
    """Damaged or wrong-shaped run files (metrics.json cut short, status.json empty or a list, spec.yaml gone or a list,
    .lock a folder): each is named on its run's row and by `show`, and every other run still lists."""
    pm = genforge_pm(ToyPlugin())
    runs = [quick_run("toy-gaussian", {"train": {"max_steps": 5}, "sample": {"n": 10}}, pm) for _ in range(6)]
    (runs[0].path / "metrics.json").write_text('{"metrics": {"validity": 0.')
    (runs[1].path / "status.json").write_text("")
    (runs[2].path / "status.json").write_text("[]")
    (runs[3].path / "spec.yaml").unlink()
    (runs[4].path / "spec.yaml").write_text("- a list\n")
    (runs[5].path / "metrics.json").write_text('"x"')
    listing = genforge("runs")
    assert listing.code == 0 and "damaged" in listing.stdout, listing.stdout + listing.stderr
    rows = {r["run_id"]: r for r in json.loads(genforge("runs", "--json").stdout)}
    assert set(rows) == {r.id for r in runs}  # a run with its spec gone is still listed
    assert "metrics.json is damaged" in rows[runs[0].id]["damaged"]
    assert rows[runs[1].id]["state"] == rows[runs[2].id]["state"] == "damaged" and "status.json is damaged" in rows[runs[2].id]["damaged"]
    assert "it holds str JSON, not an object" in rows[runs[5].id]["damaged"]
    for run, problem in ((runs[0], "metrics.json is damaged"), (runs[3], "spec.yaml is missing"), (runs[4], "spec.yaml is damaged")):
        shown = genforge("show", run.id)
        assert shown.code == 2 and problem in shown.stderr and "Traceback" not in shown.stderr, shown.stderr
        assert len(shown.stderr.strip().splitlines()) == 1
    assert genforge("show", runs[2].id).code == 0  # a damaged status is a state, said, not an error
    (runs[1].path / ".lock").unlink(missing_ok=True)
    (runs[1].path / ".lock").mkdir()  # a lock that is a folder
    resumed = genforge("resume", runs[1].id, "--no-prefect")
    assert resumed.code == 2 and ".lock" in resumed.stderr and "Traceback" not in resumed.stderr, resumed.stderr


def test_an_unreadable_run_file_is_named_and_the_other_runs_still_list(store, genforge_pm, toy_dist, monkeypatch):
    """A status.json genforge may not read (another user's, a lost mount): its run's row says so, the others list."""
    pm = genforge_pm(ToyPlugin())
    runs = [quick_run("toy-gaussian", {"train": {"max_steps": 5}, "sample": {"n": 10}}, pm) for _ in range(2)]
    locked = runs[0].path / "status.json"
    real = Path.read_text

    def read_text(self, *args, **kwargs):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    listing = genforge("runs", "--json")
    assert listing.code == 0, listing.stderr
    rows = {r["run_id"]: r for r in json.loads(listing.stdout)}
    assert rows[runs[1].id]["state"] == "finished"
    assert rows[runs[0].id]["state"] == "damaged" and "status.json cannot be read (Permission denied)" in rows[runs[0].id]["damaged"]


def test_runs_never_cuts_an_id_and_has_json(store, genforge_pm):
    pm = genforge_pm(ToyPlugin())
    runs = [quick_run("toy-gaussian", {"train": {"max_steps": 5}, "sample": {"n": 10}}, pm) for _ in range(2)]
    listing = genforge("runs", env={"COLUMNS": "80"})
    assert listing.code == 0
    for run in runs:
        assert run.id in listing.stdout  # whole, at 80 columns: the id a user copies into `show`
    assert max(len(line) for line in listing.stdout.splitlines()) <= 80
    rows = json.loads(genforge("runs", "--json").stdout)
    assert [r["run_id"] for r in rows] == [r.id for r in runs]
    assert rows[0]["state"] == "finished" and rows[0]["generator"] == "toy-gaussian" and "std_abs_error" in rows[0]["metrics"]


def test_an_unreachable_prefect_api_is_one_line_and_leaves_no_run(store):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        r = genforge("run", "molecule-diffusion", "--set", "train.max_steps=2")
    assert r.code == 2 and r.stderr.startswith("error: cannot reach the Prefect API at http://127.0.0.1:9/api")
    assert len(r.stderr.strip().splitlines()) == 1 and "--no-prefect" in r.stderr
    assert not (store / "runs").exists()


def test_evaluate_takes_the_training_split_of_the_default_reference(store, tmp_path, monkeypatch):
    """Without --reference, a kind's default source gives its reference split, and its training split as --train when it names one."""
    from typer.testing import CliRunner

    import genforge.core.plugin_manager as plugins
    import genforge.core.runner as runner
    from genforge.core import DataSource
    from genforge.flows.cli import app

    (tmp_path / "test.smi").write_text("CCO\n")
    (tmp_path / "train.smi").write_text("CCN\n")
    samples = tmp_path / "samples.smi"
    samples.write_text("CCC\n")

    class Source(DataSource):
        name, kind, reference_split, train_split = "toy-source", "molecules", "test", "train"

        def files(self):
            return {split: tmp_path / f"{split}.smi" for split in ("test", "train")}

    seen = []
    monkeypatch.setattr(plugins, "datasets", lambda pm=None: {"toy-source": Source()})
    monkeypatch.setattr(runner, "evaluate_samples", lambda samples, ref, *rest, **kw: seen.append(ref) or {})
    runs = {"default": [], "own --train": ["--train", str(samples)], "own --reference": ["--reference", "toy-source-test"]}
    for args in runs.values():
        r = CliRunner().invoke(app, ["evaluate", "molecules", str(samples), "--out", str(tmp_path / "out"), *args])
        assert r.exit_code == 0, r.output
    assert [(ref.test, ref.train) for ref in seen] == [
        (tmp_path / "test.smi", tmp_path / "train.smi"),  # the source's training split goes with its reference split
        (tmp_path / "test.smi", samples),  # a --train given is kept
        (tmp_path / "test.smi", None),  # a --reference given takes no training data it was not given
    ]
    Source.train_split = None
    r = CliRunner().invoke(app, ["evaluate", "molecules", str(samples), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0 and seen[-1].train is None
