"""The finance generators and the market evaluator pass the conformance checks any outside plugin runs; a run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genforge.core import DataError, Samples
from genforge.core.kinds import Scenarios
from genforge.core.plugin_manager import evaluators, get_generator
from genforge.core.runner import Steps, create_run, run_all
from genforge.core.testing import check_evaluator, check_generator, quick_run
from genforge.core.testing.conformance import check_config_defaults
from genforge.plugins.finance import backtest
from genforge.plugins.finance.data import long_form, wide_form
from genforge.plugins.finance.evaluator import MarketEvaluator
from genforge.plugins.finance.scenario_generator import start_day

TEXTBOOK = ["gaussian", "garch", "bootstrap"]
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sp500-nasdaq.yaml"


@pytest.mark.parametrize("name", list(TEXTBOOK) + ["scenario-gan"])
def test_default_config_round_trips(name):
    check_config_defaults(name)


@pytest.mark.parametrize("name", TEXTBOOK)
def test_textbook_generator_passes_the_conformance_checks(name, genforge_home):
    steps = check_generator(name)
    gen = get_generator(name)
    assert not gen.uses_gpu and gen.kind == "scenarios"
    training = steps.run.read_json("training.json")
    assert training["step"] == 0 and training["details"]["fitted_on"] == "1008 days before the test period (2008-01-03 to 2011-12-30)"
    samples = steps.run.read_json("samples.json")
    assert samples["count"] == 50 and samples["details"]["history_end"] == "2011-12-30"  # the day before the first test day
    frame = pd.read_parquet(steps.run.samples_dir / "scenarios.parquet")
    assert frame["step"].nunique() == 30 and set(frame["asset"]) == {"sp500"}
    table = pd.read_parquet(steps.run.samples_dir / backtest.FILENAME)
    assert table["date"].nunique() == 1760  # 2012-01-03 .. 2018-12-31


def test_scenario_gan_passes_the_conformance_checks(genforge_home, one_thread):
    steps = check_generator("scenario-gan")
    training = steps.run.read_json("training.json")
    assert training["step"] == 12 and training["stopped_by"] == "max_steps"
    assert set(training["parameters_by_network"]) == {"generator", "critic"}
    best = training["details"]["best_step"]
    assert best in (5, 10, 12) and np.isfinite(training["details"]["validation_fz0"])  # validated every 5 steps and at the end
    assert (steps.run.path / "scenario-gan.safetensors").exists() and (steps.run.path / "scenario-gan.json").exists()
    meta = json.loads((steps.run.path / "scenario-gan.json").read_text())
    assert meta["assets"] == ["sp500"] and meta["final_step"] == 12 and 0 <= meta["transform"]["delta"][0] < 0.25
    paths, _ = wide_form(pd.read_parquet(steps.run.samples_dir / "scenarios.parquet"))
    assert paths.shape == (50, 30, 1) and np.isfinite(paths).all() and 0.2 < paths.std() < 10
    table = pd.read_parquet(steps.run.samples_dir / backtest.FILENAME)
    assert (table["var"] > 0).all() and (table["es"] >= table["var"]).all()


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory):
    """One gaussian run through the in-process runner (no Prefect), shared by the checks below."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("finance-home")
    mp.setenv("GENFORGE_HOME", str(home))
    try:
        yield quick_run("gaussian", get_generator("gaussian").test_spec)
    finally:
        mp.undo()


def test_a_gaussian_run_writes_scenarios_backtest_metrics_and_figures(gaussian_run):
    run = gaussian_run
    assert run.status["state"] == "finished"
    assert (run.samples_dir / "scenarios.parquet").exists() and (run.samples_dir / "backtest.parquet").exists()
    metrics = run.metrics()["metrics"]
    for name in (
        "market.backtest_1d_1pct_fz0",
        "market.backtest_10d_5pct_kupiec_p",
        "market.w1_1d",
        "market.acf_abs",
        "market.leverage_fake",
        "market.nn_ratio",
        "market.horizon_var_99",
    ):
        assert name in metrics and np.isfinite(metrics[name]), name
    assert metrics["market.scenarios"] == 50 and metrics["market.horizon"] == 30
    assert 0 <= metrics["market.backtest_1d_1pct_hits"] <= 1760
    assert "market.correlation_error" not in metrics  # one asset
    figures = {p.stem for p in (run.figures / "market").glob("*.png")}
    assert {"fan_chart", "tails", "acf", "backtest"} <= figures
    assert "backtest" in (run.path / "report.md").read_text()


def test_the_market_evaluator_passes_its_conformance_check(gaussian_run, tmp_path):
    run = gaussian_run
    steps = Steps(run)
    data = steps.prepared()
    reference = steps.generator.reference(data, steps.config)
    samples = Samples("scenarios", run.samples_dir / "scenarios.parquet", 50, {"history_end": "2011-12-30"})
    ev = next(ev for _, ev in evaluators(None, "scenarios") if ev.name == "market")
    result = check_evaluator(ev, samples, reference, tmp_path / "market")
    names = {m.name: m for m in result.metrics}
    assert names["backtest_1d_1pct_fz0"].higher_is_better is False and names["nn_ratio"].higher_is_better is True
    assert names["w1_1d"].floor is not None  # the test period's own sampling noise
    assert set(result.figures) == {"tails", "acf", "fan_chart", "backtest"}

    # scenarios from another tool, without the backtest table beside them: path metrics only, fan chart from the test start
    other = tmp_path / "other"
    rng = np.random.default_rng(0)
    Scenarios().write(long_form(rng.standard_normal((40, 25, 1)), ["sp500"]), other)
    plain = check_evaluator(ev, Samples("scenarios", other / "scenarios.parquet", 40, {}), reference, tmp_path / "plain")
    assert not any(m.name.startswith("backtest_") for m in plain.metrics) and "backtest" not in plain.figures
    assert "fan_chart" in plain.figures

    # another tool's names for as many assets are matched in order; a different number is refused
    renamed = tmp_path / "renamed"
    Scenarios().write(rng.standard_normal((10, 25, 1)), renamed)  # core's writer names it asset0
    assert check_evaluator(ev, Samples("scenarios", renamed / "scenarios.parquet", 10, {}), reference, tmp_path / "renamed-out").metrics
    wrong = tmp_path / "wrong"
    Scenarios().write(long_form(rng.standard_normal((10, 25, 2)), ["sp500", "nasdaq"]), wrong)
    with pytest.raises(DataError, match=r"2 asset\(s\) \(sp500, nasdaq\), the reference 1 \(sp500\)"):
        MarketEvaluator().evaluate(
            Samples("scenarios", wrong / "scenarios.parquet", 10, {}), reference, tmp_path / "w", MarketEvaluator.Config()
        )


def test_two_assets_from_the_shipped_config_score_the_book(genforge_home):
    spec = get_generator("garch").test_spec
    run = create_run(
        "garch", config_path=CONFIG, spec=spec, overrides=["sample.n=40", "sample.horizon=20", "sample.backtest_scenarios=100"]
    )
    assert run.spec["data"]["series"] == ["sp500", "nasdaq"] and run.spec["data"]["start"] == "2008-01-01"
    run_all(run)
    metrics = run.metrics()["metrics"]
    assert metrics["market.correlation_error"] < 0.1
    table = pd.read_parquet(run.samples_dir / backtest.FILENAME)
    assert set(table["asset"]) == {"sp500", "nasdaq", backtest.BOOK}
    samples = run.read_json("samples.json")["details"]
    assert samples["assets"] == ["sp500", "nasdaq"] and set(samples["risk"]) == {"sp500", "nasdaq", backtest.BOOK}
    assert samples["book"]["weights"] == {"sp500": 0.5, "nasdaq": 0.5} and samples["book"]["source"] == "equal weights"
    assert "market.backtest_1d_1pct_fz0" in metrics  # scored on the book
    assert "book" in next(
        m["description"] for e in run.metrics()["evaluations"] for m in e["metrics"] if m["name"] == "backtest_1d_1pct_hits"
    )


def test_where_scenarios_start(sp500):
    from genforge.plugins.finance.textbook_generators import GaussianConfig

    returns, split = sp500
    first = int(np.argmax(split.to_numpy() == "test"))
    cfg = GaussianConfig()
    assert start_day(returns, split, "test", cfg) == (first, "2014-12-31", "2014-12-31")
    assert start_day(returns, split, "last", cfg) == (len(returns), "2018-12-31", "2018-12-31")
    day, label, as_of = start_day(returns, split, "2016-01-04", cfg)  # a trading day: scenarios start after it
    assert returns.index[day - 1] == pd.Timestamp("2016-01-04") and label == as_of == "2016-01-04"
    assert start_day(returns, split, "2016-01-03", cfg)[1:] == ("2015-12-31", "2016-01-03")  # a Sunday: history to the Thursday
    with pytest.raises(DataError, match="leaves 3 days of history"):
        start_day(returns, split, "1999-01-07", cfg)


def test_the_forward_view_refits_on_the_latest_days(genforge_home):
    """`sample.given=last` is what the desk schedules: the model is refitted on every day, not just the pre-test ones."""
    spec = {**get_generator("garch").test_spec, "sample": {"n": 20, "horizon": 5, "given": "last", "backtest": False}}
    run = quick_run("garch", spec)
    before_test = json.loads((run.path / "model.json").read_text())["state"]["params"][0]
    steps = Steps(run.path)
    model = steps.generator.load_model(steps.checkpoint())
    returns = pd.read_parquet(run.path / "history.parquet").drop(columns="split").to_numpy()
    model.fit(returns)
    refitted = model.params[0]
    assert refitted["omega"] != pytest.approx(before_test["omega"], rel=1e-6)
    assert run.read_json("samples.json")["details"]["history_end"] == "2018-12-31"
    # the scenarios are the refitted model's: the same seed through it gives the same paths
    again = model.simulate(returns, 20, 5, np.random.default_rng(spec["sample"].get("seed", 0)))
    drawn, _ = wide_form(pd.read_parquet(run.samples_dir / "scenarios.parquet"))
    assert np.allclose(drawn, again)


def test_one_day_scenarios_and_a_repeated_row_from_another_tool(gaussian_run, tmp_path):
    ev = MarketEvaluator()
    steps = Steps(gaussian_run.path)
    reference = steps.generator.reference(steps.prepared(), steps.config)
    one_day = tmp_path / "one-day"
    Scenarios().write(np.random.default_rng(0).standard_normal((200, 1, 1)), one_day)
    result = ev.evaluate(Samples("scenarios", one_day / "scenarios.parquet", 200, {}), reference, tmp_path / "o", ev.Config())
    assert "w1_1d" in {m.name for m in result.metrics} and "acf" not in result.figures  # no lags to draw
    frame = long_form(np.zeros((2, 3, 1)), ["sp500"])
    repeated = tmp_path / "repeated"
    Scenarios().write(pd.concat([frame, frame.iloc[:1]]), repeated)
    with pytest.raises(DataError, match="scenario 0, step 0, asset 'sp500' appears more than once"):
        ev.evaluate(Samples("scenarios", repeated / "scenarios.parquet", 2, {}), reference, tmp_path / "r", ev.Config())


def test_finance_generators_train_on_one_device():
    from genforge.core import ConfigError

    with pytest.raises(ConfigError, match="train.devices"):
        create_run("garch", overrides=["train.devices=2"])
