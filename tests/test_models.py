"""The model registry on the toy plugin: versions, aliases moved atomically, sampling from a version, retention."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest
from helpers.cli import genforge

from genforge.core import RunStore
from genforge.core.models import create_sample_run, prune_runs, register_run
from genforge.core.runner import run_all
from genforge.core.store import mirror
from genforge.core.store.registry import Registry
from genforge.core.testing import quick_run
from genforge.core.testing.toy import ToyPlugin

SPEC = {"train": {"max_steps": 20, "checkpoint_every": 10}, "sample": {"n": 50}}


@pytest.fixture
def finished(genforge_home, genforge_pm):
    pm = genforge_pm(ToyPlugin())
    return lambda spec=SPEC: quick_run("toy-gaussian", spec, pm)


def test_a_registered_version_samples_again_after_its_run_folder_is_deleted(genforge_home, genforge_pm, toy_dist):
    """register -> promote -> the run folder deleted -> `genforge sample toy@champion` trains nothing, and draws from its weights."""
    pm = genforge_pm(ToyPlugin())
    trained = quick_run("toy-gaussian", SPEC, pm)
    r = genforge("register", trained.id, "--model", "toy")
    assert r.code == 0 and "as toy:1" in r.stdout, r.stderr
    r = genforge("promote", "toy:1", "--alias", "champion", "--reason", "first")
    assert r.code == 0 and "toy@champion: none -> 1" in r.stdout, r.stderr
    shutil.rmtree(trained.path)
    r = genforge("sample", "toy@champion", "--no-prefect", "--set", "sample.n=30", "--set", "sample.seed=3")
    assert r.code == 0, r.stderr
    assert "No training: the weights of model toy:1" in r.stdout
    (sampled,) = RunStore().all()
    assert sampled.read_json("training.json")["trained"] is False
    assert sampled.read_json("from_model.json")["ref"] == "toy:1"
    assert sampled.read_json("samples.json")["count"] == 30 and sampled.status["state"] == "finished"
    assert not (sampled.path / "checkpoints").exists() or not list((sampled.path / "checkpoints").glob("*.pt"))  # trained nothing
    listing = json.loads(genforge("models", "--json").stdout)
    assert [(m["model"], m["version"], m["aliases"]) for m in listing] == [("toy", 1, ["champion"])]
    card = json.loads(genforge("models", "show", "toy@champion", "--json").stdout)
    assert card["run_id"] == trained.id and card["moves"][0]["reason"] == "first" and "moments.mean_abs_error" in card["metrics"]
    registered = genforge("register", sampled.id, "--model", "toy")  # it trained nothing: nothing new to register
    assert registered.code == 2 and "trained nothing" in registered.stderr


def test_a_finished_run_samples_again_with_other_settings_without_training(finished, toy_dist):
    """`genforge sample RUN`: new draws from a trained run (another seed, another n), its model files copied, nothing trained."""
    trained = finished()
    r = genforge("sample", trained.id, "--no-prefect", "--set", "sample.n=30", "--set", "sample.seed=5")
    assert r.code == 0, r.stderr
    assert f"No training: the weights of run {trained.id}" in r.stdout
    sampled = next(run for run in RunStore().all() if run.id != trained.id)
    assert sampled.read_json("training.json")["trained"] is False and sampled.read_json("from_model.json")["run"] == trained.id
    assert sampled.read_json("samples.json")["count"] == 30 and sampled.status["state"] == "finished"
    assert sampled.read_json("checkpoint.json") == trained.read_json("checkpoint.json")
    assert (sampled.path / sampled.read_json("checkpoint.json")["path"]).read_bytes() == (
        trained.path / trained.read_json("checkpoint.json")["path"]
    ).read_bytes()
    assert not list((sampled.path / "logs").glob("train.jsonl"))  # no training loop ran
    refused = genforge("sample", sampled.id, "--no-prefect")  # a sampling run trained nothing: named with what it sampled from
    assert (
        refused.code == 2 and f"run {sampled.id} trained nothing (it sampled from {trained.id}): sample from {trained.id}" in refused.stderr
    )
    again = genforge("sample", "latest", "--no-prefect")  # latest: the newest run that trained, not the sampling run
    assert again.code == 0 and f"No training: the weights of run {trained.id}" in again.stdout
    assert genforge("sample", trained.id, "--no-prefect", "--set", "model.dim=3").code == 2  # how it was trained stays


def test_a_sampling_run_from_a_run_is_installed_again_when_resumed_and_a_run_failed_in_evaluation_is_sampled(finished):
    from genforge.core.models import resume_sample_run, samplable

    trained = finished()
    run = create_sample_run(trained.id, ["sample.n=10"])
    (run.path / "checkpoint.json").unlink()  # cut short before its model was installed (a crashed flow run, rescheduled)
    (run.path / "training.json").unlink()
    resumed = resume_sample_run(run, Registry())
    assert resumed.read_json("checkpoint.json") == trained.read_json("checkpoint.json")
    assert resumed.read_json("training.json")["trained"] is False
    trained.set_status("failed", error="EvaluatorFailed: run ... failed: evaluator 'moments' of plugin 'toy' failed")
    assert samplable(trained) is None  # its model is good: only its evaluation failed
    trained.set_status("failed", error="TrainingDiverged: loss is nan at step 3")
    assert "it is failed" in samplable(trained)


def test_bad_references_are_one_line_naming_what_exists(finished, toy_dist):
    run = finished()
    assert genforge("register", run.id, "--model", "toy").code == 0
    for args, words in (
        (("sample", "nope@champion", "--no-prefect"), "no model 'nope'"),
        (("sample", "toy@champion", "--no-prefect"), "has no alias 'champion'; its aliases: none yet; its versions: 1"),
        (("sample", "toy:7", "--no-prefect"), "has no version 7; its versions: 1"),
        (("models", "show", "../etc"), "is not a model name"),
        (("register", run.id, "--model", "a/b"), "is not a model name"),
        (("promote", "toy:1", "--alias", "champion"), "give a --reason"),
        (("sample", "toy:1", "--no-prefect", "--set", "train.max_steps=5"), "only sample.*, evaluate.*, data.* can be changed"),
    ):
        r = genforge(*args)
        assert r.code == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_a_version_whose_generator_is_not_installed_is_named_with_it(finished, toy_dist):
    run = finished()
    assert genforge("register", run.id, "--model", "toy").code == 0
    r = genforge("sample", "toy:1", "--no-prefect", env={"GENFORGE_PLUGINS": "finance"})
    assert r.code == 2 and "model toy:1 was trained by generator 'toy-gaussian', which is not installed here" in r.stderr


def test_a_version_file_changed_in_the_store_is_refused(finished, genforge_pm):
    run = finished()
    registry = Registry()
    version = register_run(run, "toy", registry)
    weights = registry.files(version) / "toy.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(Exception, match=r"toy:1: its file toy.safetensors does not match the SHA-256"):
        create_sample_run("toy:1", pm=genforge_pm(ToyPlugin()))


def test_two_registrations_at_once_get_two_numbers_and_a_killed_one_lists_nothing(finished):
    """Both registrations read "newest is 0" (a delay between listing and claiming): one gets 1, the other 2."""
    runs = [finished(), finished()]
    registry = Registry()
    real = registry._version_numbers
    barrier = threading.Barrier(2)

    waited = set()

    def slow(model):
        found = real(model)
        me = threading.current_thread().name
        if me.startswith("reg") and me not in waited:
            waited.add(me)
            barrier.wait(timeout=10)  # both have read the same newest number
        return found

    got = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "_version_numbers", slow)
        threads = [
            threading.Thread(target=lambda r=r: got.setdefault(r.id, register_run(r, "toy", registry)), name=f"reg-{r.id}") for r in runs
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(v.version for v in got.values()) == [1, 2]

    def killed(*args, **kwargs):  # the process dies after uploading the files, before claiming a number
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mirror, "create_if_absent", killed)
        with pytest.raises(KeyboardInterrupt):
            register_run(runs[0], "toy", Registry())
    assert [v.version for v in Registry().versions("toy")] == [1, 2]


@pytest.mark.parametrize("url", [False, True], ids=["folder", "file-url"])
def test_two_gates_racing_on_one_alias_exactly_one_moves_it(finished, genforge_home, url):
    """Two promotions that both saw @champion at version 1 (an injected delay between read and write): one lands, the
    other is refused; a person's override lands after them; the log keeps every move."""
    root = f"file://{genforge_home}" if url else str(genforge_home)  # a shared store by URL, or the folder
    registry = Registry(root)
    for _ in range(3):
        register_run(finished(), "toy", registry)
    registry.move_alias("toy", "champion", 1, "first")
    real = Registry._newest_aliases
    barrier = threading.Barrier(2)

    waited = set()

    def slow(self, model):
        found = real(self, model)
        me = threading.current_thread().name
        if me.startswith("gate") and me not in waited:
            waited.add(me)
            barrier.wait(timeout=10)  # both have read @champion at version 1
            time.sleep(0.01)
        return found

    outcome = {}

    def gate(version):
        try:
            Registry(root).move_alias("toy", "champion", version, f"gate for {version}", expect=1)
            outcome[version] = "moved"
        except Exception as exc:
            outcome[version] = str(exc)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Registry, "_newest_aliases", slow)
        threads = [threading.Thread(target=gate, args=(v,), name=f"gate-{v}") for v in (2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    moved = [v for v, o in outcome.items() if o == "moved"]
    assert len(moved) == 1, outcome
    other = next(o for v, o in outcome.items() if v not in moved)
    assert f"@champion moved to version {moved[0]} while this move was decided" in other
    assert registry.aliases("toy") == {"champion": moved[0]}
    registry.move_alias("toy", "champion", 1, "rollback")
    assert [r["move"]["to"] for r in registry.alias_log("toy")] == [1, moved[0], 1]
    with pytest.raises(Exception, match="has no version 9"):
        registry.move_alias("toy", "champion", 9, "no such version")


def test_prune_keeps_what_an_alias_needs_and_runs_not_ended(finished, genforge_pm, toy_dist):
    runs = [finished() for _ in range(4)]
    registry = Registry()
    version = register_run(runs[0], "toy", registry)
    registry.move_alias("toy", "champion", version.version, "first")
    from genforge.core.runner import create_run

    pending = create_run("toy-gaussian", spec=SPEC, pm=genforge_pm(ToyPlugin()))  # created, never run
    r = genforge("runs", "prune", "--keep", "1", "--dry-run")
    assert r.code == 0 and f"would delete {runs[1].id}" in r.stdout and runs[1].path.exists()
    doomed, kept = prune_runs(RunStore(), keep=1, older_than_days=None)
    assert {run.id for run in doomed} == {runs[1].id, runs[2].id, runs[3].id}
    assert "toy:1@champion needs it" in kept[runs[0].id] and pending.id not in {run.id for run in doomed}
    assert runs[0].path.exists() and pending.path.exists() and not runs[1].path.exists()
    assert all(p.is_file() for p in [registry.files(version) / f for f in version.record["files"]])
    assert genforge("runs", "prune").code == 2  # no rule: one line asking for one
    old = prune_runs(RunStore(), keep=None, older_than_days=30)[0]
    assert old == []  # nothing is 30 days old


def test_sampling_from_a_model_runs_on_the_pipeline_flow_without_training(finished, genforge_pm):
    """A sample run's steps on run_all: no training, the version's checkpoint, a finished run (the flow takes the same path)."""
    run = finished()
    register_run(run, "toy", Registry())
    pm = genforge_pm(ToyPlugin())
    sampled = create_sample_run("toy:1", ["sample.n=20"], pm=pm)
    report = run_all(sampled, pm)
    assert sampled.status["state"] == "finished" and report.metrics()
    assert sampled.read_json("checkpoint.json")["step"] == run.read_json("checkpoint.json")["step"]


# -- the promotion gate ---------------------------------------------------------------------------------------------


def _gated(pm, steps: int, **promote):
    """A toy run trained ``steps`` steps, gated into model ``toy`` by run_all (the `promote` section)."""
    spec = {"train": {"max_steps": steps, "checkpoint_every": 50, "lr": 0.05}, "sample": {"n": 400}, "promote": {"model": "toy", **promote}}
    run = quick_run("toy-gaussian", spec, pm)
    return run, run.read_json("gate.json")


def test_the_gate_takes_a_first_version_holds_a_worse_one_and_promotes_a_better_one(genforge_home, genforge_pm, toy_dist):
    pm = genforge_pm(ToyPlugin())
    first, verdict = _gated(pm, 40)
    assert verdict["outcome"] == "first version" and Registry().aliases("toy") == {"champion": 1}
    worse, verdict = _gated(pm, 2)  # far fewer steps: its mean is far from the data's
    assert verdict["outcome"] == "held" and verdict["champion"] == 1 and Registry().aliases("toy") == {"champion": 1}
    assert any(r.startswith("moments.mean_abs_error") and "worse by" in r for r in verdict["reasons"])
    assert verdict["rescored_by_run"] is None  # the same data: the champion's own metrics compare
    better, verdict = _gated(pm, 400)
    assert verdict["outcome"] == "promoted", verdict["reasons"]
    assert Registry().aliases("toy") == {"champion": 3}
    card = json.loads(genforge("models", "show", "toy:3", "--json").stdout)
    assert [v["outcome"] for v in card["verdicts"]] == ["promoted"] and card["moves"][-1]["reason"].startswith(
        "gate: moments.mean_abs_error"
    )
    held = json.loads(genforge("models", "show", "toy:2", "--json").stdout)
    assert held["verdicts"][0]["outcome"] == "held" and held["aliases"] == []
    shown = genforge("gate", better.id, "--model", "toy")  # gated already: said, not decided twice
    assert shown.code == 2 and "was gated for @champion already" in shown.stderr


def test_the_gate_never_promotes_on_missing_evidence(genforge_home, genforge_pm, toy_dist):
    pm = genforge_pm(ToyPlugin())
    first, _ = _gated(pm, 40)
    run, verdict = _gated(pm, 400, metrics=["moments.no_such_metric"])
    assert verdict["outcome"] == "refused" and verdict["reasons"] == ["moments.no_such_metric missing for the champion"]
    assert Registry().aliases("toy") == {"champion": 1}
    r = genforge("gate", run.id, "--model", "other", "--json")  # a first version too needs its evidence
    assert (
        r.code == 0
        and json.loads(r.stdout)["outcome"] == "refused"
        and "other" not in {m for m in Registry().models() if Registry().aliases(m)}
    )
    assert json.loads(r.stdout)["reasons"] == ["moments.no_such_metric missing for the challenger"]
    r = genforge("gate", first.id, "--model", "other", "--json", "--alias", "stable")  # evidence there: it takes the alias
    assert r.code == 0 and json.loads(r.stdout)["outcome"] == "first version" and Registry().aliases("other") == {"stable": 2}
    again = genforge("gate", first.id, "--model", "other", "--alias", "stable")  # gated for @stable already: refused at once
    assert again.code == 2 and "version 2 was gated for @stable already" in again.stderr
    assert [r["move"]["alias"] for r in Registry().alias_log("other")] == ["stable"]  # nothing moved the second time


def test_the_champion_is_scored_again_on_the_challengers_reference(genforge_home, genforge_pm, toy_dist, tmp_path):
    """The reference file changes between the two runs: the champion is sampled again and scored on the new one."""
    pm = genforge_pm(ToyPlugin())
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    old.write_text("".join(f"{i % 7 * 0.3:.1f},{i % 5 * 0.2:.1f}\n" for i in range(200)))
    new.write_text("".join(f"{i % 7 * 0.3 + 2:.1f},{i % 5 * 0.2 + 2:.1f}\n" for i in range(200)))  # moved by 2
    base = {"train": {"max_steps": 300, "checkpoint_every": 100, "lr": 0.05}, "sample": {"n": 400}, "promote": {"model": "toy"}}
    first = quick_run("toy-gaussian", {**base, "data": {"path": str(old)}}, pm)
    assert first.read_json("gate.json")["outcome"] == "first version"
    second = quick_run("toy-gaussian", {**base, "data": {"path": str(new)}}, pm)
    verdict = second.read_json("gate.json")
    rescored = RunStore().get(verdict["rescored_by_run"])
    assert rescored.read_json("from_model.json")["ref"] == "toy:1" and rescored.spec["data"]["path"] == str(new)
    row = next(c for c in verdict["comparisons"] if c["metric"] == "moments.mean_abs_error")
    assert row["champion"] > 1.0  # the old model, fitted to data moved by 2, on the new reference
    assert row["champion"] != Registry().version("toy", 1).metrics["moments.mean_abs_error"]
    assert verdict["outcome"] == "promoted"


def test_a_model_on_a_shared_store_is_registered_on_one_machine_and_sampled_on_another(tmp_path, monkeypatch, genforge_pm):
    """GENFORGE_HOME=file://...: machine A trains, registers and promotes; machine B (another mirror, the run folder gone
    from the store) samples from the champion, its files fetched from the store and checked."""
    shared = tmp_path / "bucket"
    url = f"file://{shared}/genforge"
    monkeypatch.setenv("GENFORGE_HOME", url)
    monkeypatch.setenv("GENFORGE_MIRROR", str(tmp_path / "machine-a"))
    pm = genforge_pm(ToyPlugin())
    trained = quick_run("toy-gaussian", SPEC, pm)
    version = register_run(trained, "toy", Registry(), pm=pm)
    Registry().move_alias("toy", "champion", version.version, "first")
    assert (shared / "genforge" / "models" / "toy" / "versions" / "000001.json").is_file()
    shutil.rmtree(shared / "genforge" / "runs" / trained.id)
    monkeypatch.setenv("GENFORGE_MIRROR", str(tmp_path / "machine-b"))
    sampled = create_sample_run("toy@champion", ["sample.n=25"], pm=pm)
    assert str(tmp_path / "machine-b") in str(sampled.path)
    run_all(sampled, pm)
    remote = shared / "genforge" / "runs" / sampled.id
    assert json.loads((remote / "samples.json").read_text())["count"] == 25
    assert json.loads((remote / "from_model.json").read_text())["ref"] == "toy:1"


def test_the_gate_reads_a_zero_champion_value_without_a_relative_allowance():
    from genforge.core.gate import GateSettings, compare

    settings = GateSettings(metrics=["e.m"], margin=0.02, guards={"e.g": 0.25}, thresholds={}, directions={})
    lower = {"e.m": False, "e.g": False}
    outcome, reasons, _ = compare({"e.m": 1.0, "e.g": 0.0}, {"e.m": 0.5, "e.g": 0.2}, lower, settings)
    assert outcome == "held" and reasons == ["e.g 0 -> 0.2: worse by 20.0%, more than the 0.0% it may lose"]
    assert compare({"e.m": 0.0, "e.g": 1.0}, {"e.m": -0.001, "e.g": 1.0}, lower, settings)[0] == "promoted"  # 0: better is enough
    assert compare({"e.m": 1.0, "e.g": 1.0}, {"e.m": 0.99, "e.g": 1.0}, lower, settings)[0] == "held"  # 1 %: under the 2 % margin


def test_a_forged_version_record_cannot_reach_outside_its_folder(finished):
    run = finished()
    registry = Registry()
    version = register_run(run, "toy", registry)
    record = dict(version.record)
    record["files"] = {**record["files"], "../../../../evil.txt": "0" * 64}
    forged = type(version)("toy", 1, record)
    with pytest.raises(Exception, match=r"names the path '../../../../evil.txt', which is not inside its folder"):
        registry.files(forged)
    record = {**version.record, "model_files": ["not-listed.bin"]}
    with pytest.raises(Exception, match="has no recorded SHA-256"):
        registry.files(type(version)("toy", 1, record))


def test_training_continues_from_a_run_or_a_version_and_a_misfit_is_named(finished):
    """`train.init_from`: a fresh run starts from another run's (or a version's) trained weights, for any generator."""
    from genforge.core import ConfigError
    from genforge.core.training import load_weights

    source = finished()
    weights = lambda run: load_weights(run.path / run.read_json("checkpoint.json")["path"])[0]  # noqa: E731
    still = {"train": {"max_steps": 1, "lr": 1e-12, "checkpoint_every": 1}, "sample": {"n": 20}}
    started = finished({**still, "train": {**still["train"], "init_from": source.id}})
    got, want = weights(started), weights(source)
    assert all(torch_close(got[k], want[k]) for k in want)  # one step at lr 1e-12: the source's weights, not a fresh start
    assert started.read_json("training.json")["init_from"]["run"] == source.id
    register_run(source, "toy", Registry())
    from_version = finished({**still, "train": {**still["train"], "init_from": "toy:1"}})
    assert from_version.read_json("training.json")["init_from"]["model"] == "toy:1"
    assert all(torch_close(weights(from_version)[k], want[k]) for k in want)
    with pytest.raises(ConfigError, match="do not fit this run's"):
        finished({**still, "data": {"dim": 3}, "train": {**still["train"], "init_from": source.id}})
    with pytest.raises(ConfigError, match="names no run"):
        finished({**still, "train": {**still["train"], "init_from": "no-such-run"}})


def torch_close(a, b) -> bool:
    import torch

    return bool(torch.allclose(a.float(), b.float(), atol=1e-6))
