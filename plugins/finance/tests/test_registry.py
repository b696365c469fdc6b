"""A finance model registered, then sampled later from newer prices: the desk's weekday job from the weekend's model."""

from __future__ import annotations

import pytest

from genforge.core import DataError
from genforge.core.models import create_sample_run, register_run
from genforge.core.runner import run_all
from genforge.core.store.registry import Registry
from genforge.core.testing import quick_run

from .test_data import business_prices


def test_sampling_from_a_model_starts_from_the_newest_prices_of_this_runs_data(genforge_home, genforge_pm, tmp_path):
    """garch trained on prices up to one day, registered; a week later the desk's CSV has five more days: the sampling run
    conditions on them (history_end is the new last close) and trains nothing; other assets are refused in one line."""
    from genforge.plugins import finance

    pm = genforge_pm(finance)
    prices = business_prices(900)
    old, new, other = tmp_path / "old.csv", tmp_path / "new.csv", tmp_path / "other.csv"
    prices.iloc[:-5].to_csv(old)
    prices.to_csv(new)
    prices.rename(columns={"ndx": "dax"}).to_csv(other)
    spec = {"data": {"path": str(old)}, "sample": {"n": 20, "horizon": 5, "given": "last", "backtest": False}}
    trained = quick_run("garch", spec, pm)
    assert trained.read_json("samples.json")["details"]["history_end"] == str(prices.index[-6].date())
    register_run(trained, "desk", Registry(), pm=pm)
    sampled = create_sample_run("desk:1", [f"data.path={new}", "sample.n=30"], pm=pm)
    run_all(sampled, pm)
    details = sampled.read_json("samples.json")["details"]
    assert details["history_end"] == str(prices.index[-1].date()) and sampled.read_json("samples.json")["count"] == 30
    assert sampled.read_json("training.json")["trained"] is False
    elsewhere = create_sample_run("desk:1", [f"data.path={other}"], pm=pm)
    with pytest.raises(DataError, match="this run's data has the assets spx, dax; the model was trained on spx, ndx"):
        run_all(elsewhere, pm)
