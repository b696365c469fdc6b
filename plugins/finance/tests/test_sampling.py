"""The sample step draws and writes scenarios part by part: bounded memory, the same draws, an exact risk summary, no partial file.

Before, ``FinanceGenerator.sample`` built the whole (n, horizon, assets) array and a long
frame of it (5.1 GB at 100,000 scenarios of 250 days); the peak memory figures are in
benchmarks/record/finance.md (``benchmarks/sampling_memory.py --generator garch``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from genforge.core.kinds import Scenarios
from genforge.core.plugin_manager import get_generator
from genforge.core.runner import Steps, create_run
from genforge.plugins.finance import backtest
from genforge.plugins.finance.data import long_form, wide_form
from genforge.plugins.finance.scenario_generator import FinanceGenerator, ScenarioSampleConfig
from genforge.plugins.finance.textbook_models import BootstrapModel, GarchModel, GaussianModel


@pytest.fixture(scope="module")
def history(sp500_nasdaq) -> np.ndarray:
    returns, split = sp500_nasdaq
    return returns[split != "test"].to_numpy()[-1500:]


def fitted(model, history: np.ndarray):
    model.fit(history)
    return model


def draw_in_parts(name: str, model, history, cfg: ScenarioSampleConfig, folder, per_part: int, monkeypatch) -> tuple:
    gen = get_generator(name)()
    monkeypatch.setattr(FinanceGenerator, "part_values", per_part * cfg.horizon * 2)
    return gen.draw(model, history, cfg, ["sp500", "nasdaq"], folder)


@pytest.mark.parametrize("name, model", [("gaussian", GaussianModel()), ("garch", GarchModel())], ids=["gaussian", "garch"])
def test_parts_draw_the_same_paths_as_one_piece_and_the_same_risk(name, model, history, tmp_path, monkeypatch):
    model = fitted(model, history)
    cfg = ScenarioSampleConfig(n=23, horizon=12, seed=7)
    path, pnl = draw_in_parts(name, model, history, cfg, tmp_path, 5, monkeypatch)  # parts of 5, 5, 5, 5, 3
    assert pq.ParquetFile(path).num_row_groups == 5
    drawn, assets = wide_form(Scenarios().load(path))
    whole = model.simulate(history, 23, 12, np.random.default_rng(7))
    assert assets == ["sp500", "nasdaq"] and np.array_equal(drawn, whole)
    assert np.array_equal(pnl, backtest.horizon_pnl(whole))
    assert backtest.pnl_risk(pnl, assets) == backtest.horizon_risk(whole, assets)  # exact, not approximately


def test_the_bootstrap_in_parts_is_reproducible_and_its_risk_is_that_of_its_paths(history, tmp_path, monkeypatch):
    model = fitted(BootstrapModel(window=500), history)
    cfg = ScenarioSampleConfig(n=17, horizon=9, seed=3)
    first, pnl = draw_in_parts("bootstrap", model, history, cfg, tmp_path / "a", 4, monkeypatch)
    again, _ = draw_in_parts("bootstrap", model, history, cfg, tmp_path / "b", 4, monkeypatch)
    drawn, assets = wide_form(Scenarios().load(first))
    assert np.array_equal(drawn, wide_form(Scenarios().load(again))[0]) and drawn.shape == (17, 9, 2)
    assert sorted(Scenarios().load(first)["scenario"].unique()) == list(range(17))
    assert backtest.pnl_risk(pnl, assets) == backtest.horizon_risk(drawn, assets)


def test_the_sample_step_never_holds_more_than_a_part(genforge_home, monkeypatch):
    spec = {**get_generator("garch").test_spec, "sample": {"n": 50, "horizon": 30, "backtest": False}}
    run = create_run("garch", spec=spec)
    steps = Steps(run)
    steps.train(steps.prepare())
    sizes = []
    real = GarchModel.simulate

    def counted(self, history, n, horizon, rng):
        sizes.append(n)
        return real(self, history, n, horizon, rng)

    monkeypatch.setattr(GarchModel, "simulate", counted)
    monkeypatch.setattr(FinanceGenerator, "part_values", 12 * 30, raising=False)  # 12 scenarios of 30 days, one asset
    samples = steps.sample()
    assert sizes == [12, 12, 12, 12, 2]  # before: one call for all 50
    frame = Scenarios().load(samples.path)
    assert Scenarios().count(samples.path) == 50 and pq.ParquetFile(samples.path).num_row_groups == 5
    paths, assets = wide_form(frame)
    risk = run.read_json("samples.json")["details"]["risk"]
    assert risk == {b: {k: round(v, 6) for k, v in row.items()} for b, row in backtest.horizon_risk(paths, assets, value=1e6).items()}


def test_a_stream_writes_the_file_write_makes(tmp_path):
    rng = np.random.default_rng(0)
    paths = rng.standard_normal((9, 4, 2))
    Scenarios().write(long_form(paths, ["a", "b"]), tmp_path / "whole")
    with Scenarios().stream(tmp_path / "parts") as write:
        for start in range(0, 9, 4):
            write(long_form(paths[start : start + 4], ["a", "b"], first=start))
    whole, parts = tmp_path / "whole" / "scenarios.parquet", tmp_path / "parts" / "scenarios.parquet"
    assert pq.read_schema(whole).equals(pq.read_schema(parts), check_metadata=True)
    pd.testing.assert_frame_equal(Scenarios().load(whole), Scenarios().load(parts))
    assert [p.name for p in (tmp_path / "parts").iterdir()] == ["scenarios.parquet"]  # no temporary file left
    with Scenarios().stream(tmp_path / "arrays") as write:  # arrays are numbered on from part to part
        write(paths[:5])
        write(paths[5:])
    pd.testing.assert_frame_equal(Scenarios().load(tmp_path / "arrays" / "scenarios.parquet"), Scenarios().load(_written(paths, tmp_path)))


def _written(paths: np.ndarray, tmp_path):
    return Scenarios().write(paths, tmp_path / "array-whole")


def test_a_full_disk_while_sampling_leaves_no_partial_file_and_names_it(genforge_home, monkeypatch):
    import errno

    from genforge.flows.cli import describe_error

    spec = {**get_generator("gaussian").test_spec, "sample": {"n": 50, "horizon": 30, "backtest": False}}
    run = create_run("gaussian", spec=spec)
    steps = Steps(run)
    steps.train(steps.prepare())
    monkeypatch.setattr(FinanceGenerator, "part_values", 10 * 30, raising=False)  # parts of 10 scenarios, 300 rows
    real, rows = pq.ParquetWriter.write_table, []

    def filling(self, table, *args, **kwargs):
        rows.append(len(table))
        if sum(rows) > 600:  # the disk fills up after two parts
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", filling)
    with pytest.raises(OSError) as err:
        steps.sample()
    target = run.samples_dir / "scenarios.parquet"
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target) and str(target) in str(err.value)
    line = describe_error(err.value)
    assert line.startswith(f"no space left on the device writing {target}") and "\n" not in line
    assert not target.exists() and list(run.samples_dir.iterdir()) == []  # nothing partial, no temporary file
    assert not (run.path / "samples.json").exists()
