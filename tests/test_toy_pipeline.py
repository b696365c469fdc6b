"""Core end to end without any field library: the toy plugin through every step, the testing kit, evaluator isolation."""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pytest

from genforge.core import DataError, Evaluation, Evaluator, Metric, RunStore, hookimpl
from genforge.core.plugin_manager import plugin_infos, registry
from genforge.core.testing import check_generator, quick_run
from genforge.core.testing.toy import GaussianGenerator, MomentsEvaluator, ToyPlugin


def test_the_toy_passes_the_conformance_checks(genforge_home, genforge_pm):
    pm = genforge_pm(ToyPlugin())
    steps = check_generator("toy-gaussian", pm=pm)
    assert steps.run.read_json("training.json")["throughput"]["unit"] == "vectors/s"


def test_a_toy_run_learns_and_core_records_what_it_did(genforge_home, genforge_pm):
    pm = genforge_pm(ToyPlugin())
    run = quick_run("toy-gaussian", {"train": {"max_steps": 200}, "sample": {"n": 2000}}, pm)
    m = run.metrics()["metrics"]
    # synthetic data: N((1, 2), 0.5^2); the fitted Gaussian's samples match it to within the real-vs-real floor x 3
    floor = next(x for e in run.metrics()["evaluations"] for x in e["metrics"] if x["name"] == "mean_abs_error")["floor"]
    assert m["mean_abs_error"] < max(3 * floor, 0.05) and m["std_abs_error"] < 0.05
    assert m["moments.mean_abs_error"] == m["mean_abs_error"]
    training = run.read_json("training.json")
    assert training["step"] == 200 and training["stopped_by"] == "max_steps" and training["parameters"] == 4
    assert training["details"] == {"dim": 2} and training["throughput"]["value"] > 0
    data = run.read_json("data.json")
    assert data["train"]["kept"] == 1600 and data["train"]["held_out"] == 400 and data["details"] == {"dim": 2}
    report = (run.path / "report.md").read_text()
    assert "Trained 200 steps" in report and "1600 kept for training" in report and "vectors/s" in report
    for figure in ("moments/samples.png", "training/loss.png", "samples/preview.png"):  # the evaluator's, the engine's, the kind's
        assert (run.path / "figures" / figure).read_bytes()[:4] == b"\x89PNG", figure
    assert "![samples/preview](figures/samples/preview.png)" in report


def test_a_run_its_minutes_cut_short_says_it_is_undertrained(genforge_home, genforge_pm, toy_dist):
    """Stopped by train.max_minutes far from its planned steps: the summary and the report say so, and what to do."""
    from helpers.cli import genforge

    r = genforge("run", "toy-gaussian", "--no-prefect", "--set", "train.max_steps=100000000", "--set", "train.max_minutes=0.02")
    assert r.code == 0, r.stderr
    assert "undertrained: train.max_minutes (0.02) stopped training at step" in r.stdout and "of the 100,000,000 planned" in r.stdout
    (run,) = RunStore().all()
    assert "undertrained" in (run.path / "report.md").read_text()
    assert any(n.startswith("undertrained") for n in run.read_json("training.json")["notes"])


def test_corrupt_rows_are_skipped_and_counted(genforge_home, genforge_pm, tmp_path):
    rows = [f"{i * 0.1},{i * 0.2}" for i in range(40)] + ["1,two", "3", ""]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    run = quick_run(
        "toy-gaussian",
        {"data": {"path": str(tmp_path / "data.csv")}, "train": {"max_steps": 5}, "sample": {"n": 10}},
        genforge_pm(ToyPlugin()),
    )
    train = run.read_json("data.json")["train"]
    assert train["read"] == 43 and train["kept"] + train["held_out"] == 40
    assert train["rejected"] == {"not a number": 1, "wrong number of columns": 2}
    (tmp_path / "bad.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="0 usable rows of 1"):
        quick_run("toy-gaussian", {"data": {"path": str(tmp_path / "bad.csv")}}, genforge_pm(ToyPlugin()))


class Raising(Evaluator):
    name: ClassVar[str] = "flaky"
    kinds: ClassVar[tuple[str, ...]] = ("vectors",)

    def evaluate(self, samples, reference, out_dir, config):
        raise ZeroDivisionError("bug in a third-party evaluator")


class SameName(Evaluator):
    """Gives a metric named like the built-in one, with another value: it must not overwrite it."""

    name: ClassVar[str] = "rival"
    kinds: ClassVar[tuple[str, ...]] = ("vectors",)

    def evaluate(self, samples, reference, out_dir, config):
        (out_dir / "mine.txt").write_text("own folder")
        return Evaluation(
            self.name,
            [Metric("mean_abs_error", -1.0, False), Metric("n_samples", float(np.load(samples.path).shape[0]), None, description="count")],
        )


class Outside:
    @hookimpl
    def genforge_evaluators(self):
        return [Raising(), SameName()]


def test_a_raising_evaluator_fails_the_run_after_the_others_metrics_and_the_report(genforge_home, genforge_pm):
    from genforge.core import EvaluatorFailed
    from genforge.core.runner import create_run, run_all

    class Failures:
        def __init__(self):
            self.errors: list[BaseException] = []

        @hookimpl
        def genforge_run_failed(self, run, error):
            self.errors.append(error)

    listener = Failures()
    pm = genforge_pm(ToyPlugin(), Outside(), listener)
    run = create_run("toy-gaussian", spec={"train": {"max_steps": 20}, "sample": {"n": 100}}, pm=pm)
    with pytest.raises(EvaluatorFailed, match=r"evaluator 'flaky' of plugin 'outside-1' failed \(ZeroDivisionError") as info:
        run_all(run, pm)
    message = str(info.value)
    assert "\n" not in message and "evaluate.flaky.optional=true lets it finish without it" in message and str(run.path) in message
    assert run.status["state"] == "failed" and run.status["error"].startswith("EvaluatorFailed: run ")
    # what works stays: the others' metrics, metrics.json and the report, the failure named in it
    record = run.metrics()
    m = record["metrics"]
    assert 0 < m["moments.mean_abs_error"] < 1 and m["rival.mean_abs_error"] == -1.0
    flaky = next(e for e in record["evaluations"] if e["evaluator"] == "flaky")
    assert flaky["error"] == "ZeroDivisionError: bug in a third-party evaluator" and flaky["metrics"] == []
    note = "evaluator 'flaky' of plugin 'outside-1' failed on vectors: ZeroDivisionError: bug in a third-party evaluator"
    report = (run.path / "report.md").read_text()
    assert note in record["notes"] and note in report and "the run failed: evaluator 'flaky'" in report
    assert listener.errors == [info.value] and {e.evaluator for e in info.value.report.evaluations} >= {"moments", "rival", "flaky"}
    assert not (run.path / "gate.json").exists()


def test_a_raising_evaluator_marked_optional_costs_only_its_own_metrics(genforge_home, genforge_pm):
    pm = genforge_pm(ToyPlugin(), Outside())
    spec = {"train": {"max_steps": 20}, "sample": {"n": 100}, "evaluate": {"flaky": {"optional": True}}}
    run = quick_run("toy-gaussian", spec, pm)
    assert run.status["state"] == "finished"
    record = run.metrics()
    m = record["metrics"]
    assert "mean_abs_error" not in m  # ambiguous: two evaluators disagree
    assert 0 < m["moments.mean_abs_error"] < 1 and m["rival.mean_abs_error"] == -1.0
    assert m["n_samples"] == 100.0  # both give 100: unambiguous
    flaky = next(e for e in record["evaluations"] if e["evaluator"] == "flaky")
    assert flaky["error"] == "ZeroDivisionError: bug in a third-party evaluator" and flaky["metrics"] == []
    note = "evaluator 'flaky' of plugin 'outside-1' failed on vectors: ZeroDivisionError: bug in a third-party evaluator"
    assert note in record["notes"] and note in (run.path / "report.md").read_text()
    assert not any(n.startswith("the run failed") for n in record["notes"])
    assert (run.path / "figures" / "rival" / "mine.txt").exists()
    assert (run.path / "samples" / "vectors.npy").exists()


def test_an_evaluator_can_be_switched_off_in_the_spec(genforge_home, genforge_pm):
    pm = genforge_pm(ToyPlugin(), Outside())
    run = quick_run("toy-gaussian", {"train": {"max_steps": 5}, "sample": {"n": 20}, "evaluate": {"flaky": {"enabled": False}}}, pm)
    assert "flaky" not in {e["evaluator"] for e in run.metrics()["evaluations"]}


class WrongKinds:
    """Registers things of kinds nobody knows, and a hook that raises."""

    @hookimpl
    def genforge_generators(self):
        class Orphan(GaussianGenerator):
            name = "orphan"
            kind = "holograms"

        return [Orphan]

    @hookimpl
    def genforge_datasets(self):
        raise RuntimeError("cannot reach the licence server")


def test_registrations_of_unknown_kinds_and_raising_hooks_are_skipped(genforge_pm, capsys):
    pm = genforge_pm(ToyPlugin(), WrongKinds())
    reg = registry(pm)
    assert set(reg.generators) == {"toy-gaussian"}
    lines = {f.line() for f in reg.failures}
    assert any(
        "generator 'orphan' produces sample kind 'holograms', which is not a known kind (known: molecules, images, music, scenarios, vectors)"
        in x
        for x in lines
    )
    assert any(
        "at genforge_datasets: RuntimeError: cannot reach the licence server" in x and "GENFORGE_DISABLE_PLUGINS=wrongkinds-1" in x
        for x in lines
    )
    err = capsys.readouterr().err
    assert "cannot reach the licence server" in err and len([x for x in err.splitlines() if "licence" in x]) == 1
    info = {i.name: i for i in plugin_infos(pm)}["wrongkinds-1"]
    assert info.status == "failed" and len(info.errors) == 2


def test_training_log_is_a_json_line_per_progress_event(genforge_home, genforge_pm):
    run = quick_run("toy-gaussian", {"train": {"max_steps": 20, "log_every": 5}, "sample": {"n": 10}}, genforge_pm(ToyPlugin()))
    rows = [json.loads(x) for x in (run.path / "logs" / "train.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20] and all("vectors_per_s" in r for r in rows)


class BrokenTracker:
    """A tracker plugin whose server is down: every lifecycle call raises."""

    @hookimpl
    def genforge_run_started(self, run, spec):
        raise ConnectionError("tracking server unreachable")

    @hookimpl
    def genforge_train_progress(self, run, step, total, metrics):
        raise ConnectionError("tracking server unreachable")


class Stopper:
    """A listener that must be able to stop a run says so: it raises StopRun."""

    @hookimpl
    def genforge_data_prepared(self, run, stats):
        from genforge.core import StopRun

        raise StopRun("the data failed the team's audit")


def test_a_listener_that_raises_is_named_once_and_the_run_completes(genforge_home, genforge_pm, caplog):
    pm = genforge_pm(ToyPlugin(), BrokenTracker())
    with caplog.at_level("WARNING", logger="genforge"):
        run = quick_run("toy-gaussian", {"train": {"max_steps": 20, "log_every": 2}, "sample": {"n": 10}}, pm)
    assert run.status["state"] == "finished"
    notes = run.metrics()["notes"]
    named = [n for n in notes if "plugin 'brokentracker-1'" in n]
    assert len(named) == 2 and any("genforge_train_progress" in n and "ConnectionError" in n for n in named), notes
    assert len([r for r in caplog.records if "genforge_train_progress" in r.getMessage()]) == 1  # once, not every step
    assert "genforge_train_progress of plugin 'brokentracker-1'" in (run.path / "report.md").read_text()


def test_a_listener_stops_a_run_only_by_raising_stoprun(genforge_home, genforge_pm):
    from genforge.core import StopRun
    from genforge.core.runner import create_run, run_all

    pm = genforge_pm(ToyPlugin(), Stopper())
    run = create_run("toy-gaussian", spec={"train": {"max_steps": 5}}, pm=pm)
    with pytest.raises(StopRun, match="audit"):
        run_all(run, pm)
    assert run.status["state"] == "failed" and "audit" in run.status["error"]


def test_resume_uses_the_data_the_run_was_prepared_with_or_refuses(genforge_home, genforge_pm, tmp_path, monkeypatch):
    from genforge.core.runner import create_run, run_all

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rows = [f"{i * 0.1:.1f},{(i % 7) * 0.3:.1f}" for i in range(60)]
    (tmp_path / "a" / "data.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "b" / "data.csv").write_text("1,1\n" * 60)  # another file of the same name elsewhere
    monkeypatch.chdir(tmp_path / "a")
    from helpers.crash import WorkerLost, crash_after_checkpoints

    pm = genforge_pm(ToyPlugin())
    run = create_run("toy-gaussian", spec={"data": {"path": "data.csv"}, "train": {"max_steps": 20, "checkpoint_every": 5}}, pm=pm)
    assert run.spec["data"]["path"] == str(tmp_path / "a" / "data.csv")  # pinned, absolute
    with crash_after_checkpoints(1), pytest.raises(WorkerLost, match="worker lost"):
        run_all(run, pm)
    fingerprint = run.read_json("data.json")["fingerprint"]

    monkeypatch.chdir(tmp_path / "b")  # resumed from elsewhere: still the run's own file
    (tmp_path / "a" / "data.csv").write_text("\n".join(reversed(rows)) + "\n")  # ...but someone shuffled it
    with pytest.raises(DataError, match=f"the data of run {run.id} changed since it was prepared \\(fingerprint {fingerprint}"):
        run_all(run, pm)
    assert run.read_json("data.json")["fingerprint"] == fingerprint  # not overwritten
    (tmp_path / "a" / "data.csv").write_text("\n".join(rows) + "\n")  # restored: the resume goes on
    run_all(run, pm)
    assert run.read_json("training.json")["resumed_from"] == 5 and run.read_json("training.json")["step"] == 20


def test_an_empty_data_path_is_an_error_not_the_default_data(genforge_home, genforge_pm):
    from genforge.core import ConfigError
    from genforge.core.runner import create_run

    with pytest.raises(ConfigError, match="data.path is empty"):
        create_run("toy-gaussian", overrides=["data.path="], pm=genforge_pm(ToyPlugin()))


# -- what the plugin kit catches: seeded bugs ----------------------------------------------------------


class NaNMoments(MomentsEvaluator):
    """A bug: a metric that could not be computed reported as NaN."""

    name: ClassVar[str] = "nan-moments"

    def evaluate(self, samples, reference, out_dir, config):
        result = super().evaluate(samples, reference, out_dir, config)
        return Evaluation(self.name, [*result.metrics, Metric("kurtosis_error", float("nan"), False)])


class NaNPlugin:
    @hookimpl
    def genforge_evaluators(self):
        return [NaNMoments()]


class NoEngine(GaussianGenerator):
    """A bug: fit writes weights without going through the engine, so nothing records or resumes the training."""

    name: ClassVar[str] = "no-engine"

    def fit(self, data, config, trainer):
        import torch
        from safetensors.torch import save_file

        from genforge.core import Checkpoint

        weights = trainer.run_dir / "toy.safetensors"
        save_file({"mean": torch.zeros(2), "log_std": torch.zeros(2)}, str(weights))
        return Checkpoint(weights, 0)


class NoEnginePlugin:
    @hookimpl
    def genforge_generators(self):
        return [NoEngine]


def test_the_kit_refuses_a_nan_metric_and_a_run_leaves_it_out_with_a_note(genforge_home, genforge_pm):
    from genforge.core.testing import check_evaluator

    pm = genforge_pm(ToyPlugin(), NaNPlugin())
    run = quick_run("toy-gaussian", {"train": {"max_steps": 5}, "sample": {"n": 20}}, pm)
    text = (run.path / "metrics.json").read_text()
    record = json.loads(text, parse_constant=lambda c: pytest.fail(f"metrics.json holds {c}, which is not JSON"))
    assert "nan-moments.kurtosis_error" not in record["metrics"] and "nan-moments.mean_abs_error" in record["metrics"]
    assert "nan-moments: kurtosis_error could not be computed on these samples and is left out" in record["notes"]
    from genforge.core.runner import Steps

    steps = Steps(run, pm)
    with pytest.raises(AssertionError, match=r"nan-moments.kurtosis_error is nan: a metric that cannot be computed is left out"):
        check_evaluator(NaNMoments(), steps.samples(), steps.generator.reference(steps.prepared(), steps.config), run.path / "check")


def test_the_kit_flags_a_fit_that_bypassed_the_engine(genforge_home, genforge_pm):
    pm = genforge_pm(ToyPlugin(), NoEnginePlugin())
    with pytest.raises(AssertionError, match=r"no-engine: fit returned without training through the engine .* \(trainer.record_fit\)"):
        check_generator("no-engine", pm=pm)


def test_data_max_rejected_is_a_field_of_every_generator(genforge_home, genforge_pm):
    from genforge.core import ConfigError, GeneratorConfig, Section
    from genforge.core.runner import create_run

    class PlainData(Section):  # an outside plugin's data section that predates DataConfig
        n: int = 3

    class PlainConfig(GeneratorConfig):
        data: PlainData = PlainData()

    class Plain(GaussianGenerator):
        name: ClassVar[str] = "plain"
        Config: ClassVar[type] = PlainConfig

    class PlainPlugin:
        @hookimpl
        def genforge_generators(self):
            return [Plain]

    pm = genforge_pm(ToyPlugin(), PlainPlugin())
    for generator in ("toy-gaussian", "plain"):
        run = create_run(generator, overrides=["data.max_rejected=0.9"], pm=pm)
        assert run.spec["data"]["max_rejected"] == 0.9
    with pytest.raises(ConfigError, match="data.max_rejected"):
        create_run("plain", overrides=["data.max_rejected=2"], pm=pm)


def test_an_evaluate_setting_that_is_no_evaluators_section_is_said_not_dropped(genforge_home, genforge_pm, caplog):
    import yaml

    from genforge.core.runner import create_run, run_all

    pm = genforge_pm(ToyPlugin())
    run = create_run("toy-gaussian", spec={"train": {"max_steps": 5}, "sample": {"n": 10}}, pm=pm)
    spec = yaml.safe_load((run.path / "spec.yaml").read_text())
    spec["evaluate"]["figure"] = False  # a setting from before evaluators had their own sections
    (run.path / "spec.yaml").write_text(yaml.safe_dump(spec))
    with caplog.at_level("WARNING", logger="genforge"):
        run_all(run, pm)
    said = [r.getMessage() for r in caplog.records if "evaluate.figure" in r.getMessage()]
    assert len(said) == 1 and "is no evaluator's section and is ignored" in said[0]
    assert any("evaluate.figure" in n for n in run.metrics()["notes"])


def test_a_samples_file_a_kind_cannot_read_is_one_line(genforge_home, toy_dist, tmp_path):
    from genforge.flows.cli import invoke

    bad = tmp_path / "vectors.npy"
    bad.write_bytes(b"\x93NUMPY\x01\x00garbage\xff\xfe" * 10)
    r = invoke("evaluate", "vectors", str(bad), "--reference", str(bad))
    assert r.code == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: {bad} cannot be read as vectors samples (") and "samples are a .npy file" in r.stderr
