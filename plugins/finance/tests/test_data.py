"""Market data: CSV validation (one line naming row and column), gaps, returns, the date split, the prepare step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from genforge.core import ConfigError, DataError
from genforge.core.runner import Steps, create_run
from genforge.plugins.finance.data import (
    MarketDataConfig,
    load_prices,
    long_form,
    read_price_csv,
    split_dates,
    to_returns,
    wide_form,
    write_prepared,
)

GOOD = "date,spx,ndx\n2020-01-02,100,200\n2020-01-03,101,202\n2020-01-06,102.5,199\n2020-01-07,103,201\n"


def csv(tmp_path: Path, text: str, name: str = "prices.csv") -> Path:
    f = tmp_path / name
    f.write_text(text)
    return f


def business_prices(n: int, assets=("spx", "ndx"), seed: int = 0) -> pd.DataFrame:
    """n business days of positive random-walk prices from 2000-01-03."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2000-01-03", periods=n, name="date")
    steps = rng.normal(0, 0.01, (n, len(assets)))
    return pd.DataFrame(100 * np.exp(np.cumsum(steps, axis=0)), index=dates, columns=list(assets))


def test_a_good_csv_reads_as_dated_prices(tmp_path):
    prices = read_price_csv(csv(tmp_path, GOOD))
    assert list(prices.columns) == ["spx", "ndx"] and prices.index.name == "date"
    assert prices.index[0] == pd.Timestamp("2020-01-02") and len(prices) == 4
    assert prices.loc["2020-01-06", "spx"] == 102.5
    only = read_price_csv(csv(tmp_path, GOOD), ["ndx"])
    assert list(only.columns) == ["ndx"]
    with pytest.raises(DataError, match=r"no column\(s\) 'vix'; the file has spx, ndx"):
        read_price_csv(csv(tmp_path, GOOD), ["vix"])


@pytest.mark.parametrize(
    "rows, pattern",
    [
        # the file's line numbers: the header is row 1
        ("2020-01-02,100,200\n2020-01-03,101,202\n,102,203\n", r"row 4, column 'date': the date is missing"),
        ("2020-01-02,100,200\n2020-01-03,101,abc\n", r"row 3, column 'ndx': 'abc' is not a number"),
        ("2020-01-02,100,200\n2020-01-03,101,202\n2020-01-06,-5,203\n", r"row 4, column 'spx': price -5 is not positive"),
        ("2020-01-02,100,200\n2020-01-03,0,202\n", r"row 3, column 'spx': price 0 is not positive"),
        ("2020-01-02,100,200\n2020-01-03,101,202\n2020-01-03,102,203\n", r"row 4, column 'date': date 2020-01-03 repeats row 3"),
        ("2020-01-02,100,200\n2020-02-30,101,202\n", r"row 3, column 'date': '2020-02-30' is not a date"),
        ("2020-01-02,100,200\n2020-01-03,inf,202\n", r"row 3, column 'spx': price inf is not positive"),
    ],
    ids=["missing-date", "not-a-number", "negative", "zero", "duplicate-date", "bad-date", "infinite"],
)
def test_a_wrong_cell_is_one_line_naming_row_and_column(tmp_path, rows, pattern):
    f = csv(tmp_path, "date,spx,ndx\n" + rows)
    with pytest.raises(DataError, match=pattern) as info:
        read_price_csv(f)
    message = str(info.value)
    assert message.startswith(f"{f}, row ") and "\n" not in message


def test_row_numbers_are_file_lines_across_blank_lines(tmp_path):
    f = csv(tmp_path, "date,spx\n2020-01-02,100\n\n2020-01-03,101\n\n2020-01-06,x\n")
    with pytest.raises(DataError, match=r"row 6, column 'spx': 'x' is not a number"):
        read_price_csv(f)


@pytest.mark.parametrize("text", ["date,spx\n2020-01-02,100\n", "date,spx\n2020-01-02,100\n\n\n"])
def test_a_single_row_of_prices_is_refused(tmp_path, text):
    with pytest.raises(DataError, match=r"1 row\(s\) of prices; at least two are needed for a return"):
        read_price_csv(csv(tmp_path, text))


def test_empty_and_headless_files_are_refused(tmp_path):
    with pytest.raises(DataError, match="the file is empty"):
        read_price_csv(csv(tmp_path, ""))
    with pytest.raises(DataError, match=r"the header has 1 column\(s\)"):
        read_price_csv(csv(tmp_path, "date\n2020-01-02\n2020-01-03\n"))


def test_empty_cells_are_gaps_dropped_by_to_returns_and_counted_per_asset(tmp_path):
    text = (
        "date,spx,ndx\n"
        "2020-01-02,100,200\n"
        "2020-01-03,,202\n"  # a gap in spx
        "2020-01-06,104,NA\n"  # a gap in ndx
        "2020-01-07,103,201\n"
        "2020-01-08,105,n/a\n"  # another ndx gap
        "2020-01-09,106,205\n"
    )
    prices = read_price_csv(csv(tmp_path, text))
    assert len(prices) == 6 and np.isnan(prices.loc["2020-01-03", "spx"]) and np.isnan(prices.loc["2020-01-06", "ndx"])
    returns, gaps = to_returns(prices)
    assert gaps == {"spx": 1, "ndx": 2}
    assert list(returns.index.strftime("%Y-%m-%d")) == ["2020-01-07", "2020-01-09"]  # days with every price, less the first
    assert not returns.isna().any().any()
    # the return after a gap spans it: 2020-01-02 -> 2020-01-07
    assert returns.loc["2020-01-07", "spx"] == pytest.approx(100 * np.log(103 / 100))
    assert returns.loc["2020-01-09", "ndx"] == pytest.approx(100 * np.log(205 / 201))


def test_returns_are_percent_log_differences():
    prices = pd.DataFrame({"a": [100.0, 110.0, 99.0, 99.0]}, index=pd.bdate_range("2020-01-01", periods=4, name="date"))
    returns, gaps = to_returns(prices)
    assert gaps == {}
    assert returns["a"].to_numpy() == pytest.approx(100 * np.diff(np.log([100, 110, 99, 99])))
    assert returns.index[0] == prices.index[1] and returns.dtypes["a"] == np.float64


def test_unsorted_rows_are_sorted_by_date(tmp_path):
    prices = read_price_csv(csv(tmp_path, "date,spx\n2020-01-06,3\n2020-01-02,1\n2020-01-03,2\n"))
    assert prices.index.is_monotonic_increasing and prices["spx"].tolist() == [1, 2, 3]


def test_the_shipped_sp500_splits_with_the_test_period_2015_to_2018():
    cfg = MarketDataConfig()
    assert cfg.series == ["sp500"]
    prices, source = load_prices(cfg)
    assert source == "arch.data: sp500"
    returns, gaps = to_returns(prices)
    assert gaps == {} and len(returns) == len(prices) - 1
    split = split_dates(returns, cfg)
    test = returns.index[split == "test"]
    assert (str(test[0].date()), str(test[-1].date())) == ("2015-01-02", "2018-12-31") and len(test) == 1006
    assert (split == "validation").sum() == cfg.validation_days == 250
    val = returns.index[split == "validation"]
    assert val[-1] < test[0] and returns.index[split == "train"][-1] < val[0]  # train, validation, test in date order
    assert list(split.iloc[[0, -1]]) == ["train", "test"]


def test_an_explicit_test_start_and_too_short_histories(tmp_path):
    returns, _ = to_returns(business_prices(400))
    split = split_dates(returns, MarketDataConfig(test_start=str(returns.index[320].date()), validation_days=50))
    assert split.iloc[320] == "test" and split.iloc[319] == "validation" and (split == "validation").sum() == 50
    assert (split == "train").sum() == 270
    with pytest.raises(DataError, match=r"220 training days .* at least 250 are needed"):
        split_dates(returns, MarketDataConfig(test_start=str(returns.index[270].date()), validation_days=50))
    with pytest.raises(DataError, match="is after the last day with prices"):
        split_dates(returns, MarketDataConfig(test_start="2030-01-01"))


def test_an_unknown_series_is_a_validation_error_naming_the_shipped_ones(store):
    with pytest.raises(ValidationError, match=r"unknown series 'sp501'; shipped: sp500, nasdaq, wti"):
        MarketDataConfig(series=["sp500", "sp501"])
    with pytest.raises(ValidationError, match="is not a date"):
        MarketDataConfig(test_start="2015-13-45")
    with pytest.raises(ConfigError, match="sp501"):
        create_run("gaussian", overrides=["data.series=[sp501]"])


def test_a_date_set_on_the_command_line_is_accepted(store):
    run = create_run("gaussian", overrides=["data.test_start=2012-01-03", "data.start=2004-01-02", "sample.given=2013-01-02"])
    assert run.spec["data"]["test_start"] == "2012-01-03" and run.spec["sample"]["given"] == "2013-01-02"


def test_write_prepared_holds_returns_prices_and_one_scenario_references(tmp_path):
    prices = business_prices(500)
    prices.iloc[100, 0] = np.nan  # one gap
    cfg = MarketDataConfig(test_start=str(prices.index[420].date()), validation_days=50)
    stats = write_prepared(prices, cfg, tmp_path / "out", "test prices")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["prices.parquet", "returns.parquet", "stats.json", "test.parquet", "train.parquet"]
    frame = pd.read_parquet(out / "returns.parquet")
    assert list(frame.columns) == ["spx", "ndx", "split"] and len(frame) == 498  # 500 days, less the gap, less the first
    assert stats["gaps"] == {"spx": 1} and stats["train"]["rejected"] == {"no price for spx": 1}
    assert stats["days"] == {"train": 498 - 80 - 50, "validation": 50, "test": 80}
    assert stats["periods"]["test"][0] == str(prices.index[420].date())
    train, assets = wide_form(pd.read_parquet(out / "train.parquet"))
    assert assets == ["spx", "ndx"] and train.shape == (1, 418, 2)  # every day before the test period (train + validation)
    assert np.allclose(train[0], frame.loc[frame["split"] != "test", ["spx", "ndx"]].to_numpy())
    test, _ = wide_form(pd.read_parquet(out / "test.parquet"))
    assert test.shape == (1, 80, 2)
    assert json.loads((out / "stats.json").read_text()) == stats


def test_long_and_wide_forms_round_trip():
    cube = np.random.default_rng(0).standard_normal((3, 5, 2))
    back, assets = wide_form(long_form(cube, ["b", "a"]))
    assert assets == ["b", "a"] and np.array_equal(back, cube)
    with pytest.raises(DataError, match="differ in length or miss an asset"):
        wide_form(long_form(cube, ["b", "a"]).iloc[:-1])


# -- through the generator's prepare step -----------------------------------------------------


def finance_entries(store: Path) -> list[str]:
    cache = store / "cache"
    return sorted(p.name for p in cache.iterdir() if p.name.startswith("finance-")) if cache.exists() else []


@pytest.mark.parametrize(
    "text, pattern",
    [
        (GOOD + "2020-01-08,104,-1\n", r"row 6, column 'ndx': price -1 is not positive"),
        (GOOD + "2020-01-07,104,203\n", r"row 6, column 'date': date 2020-01-07 repeats row 5"),
        (GOOD + "2020-01-08,1O4,203\n", r"row 6, column 'spx': '1O4' is not a number"),
    ],
    ids=["negative", "duplicate", "letter-o"],
)
def test_a_bad_csv_stops_prepare_and_leaves_nothing_in_the_cache(tmp_path, store, text, pattern):
    f = csv(tmp_path, text)
    run = create_run("gaussian", overrides=["data.start=null", "data.test_start=null", f"data.path={f}"])
    with pytest.raises(DataError, match=pattern) as info:
        Steps(run).prepare()
    assert "\n" not in str(info.value)
    assert finance_entries(store) == []
    assert not (run.path / "data.json").exists()


def test_a_csv_too_short_to_split_leaves_nothing_in_the_cache(tmp_path, store):
    f = tmp_path / "short.csv"
    business_prices(60).to_csv(f)
    run = create_run("gaussian", overrides=["data.start=null", "data.test_start=null", f"data.path={f}"])
    with pytest.raises(DataError, match="at least 250 are needed"):
        Steps(run).prepare()
    assert finance_entries(store) == []


def test_a_good_csv_with_gaps_is_prepared_counted_and_cached(tmp_path, store):
    f = tmp_path / "book.csv"
    prices = business_prices(700)
    prices.iloc[[50, 51], 1] = np.nan
    prices.to_csv(f, na_rep="")
    # the date quoted: unquoted, YAML reads it as a date (see test_a_date_set_on_the_command_line_is_accepted)
    overrides = ["data.start=null", f"data.test_start='{prices.index[600].date()}'", "data.validation_days=50", f"data.path={f}"]
    run = create_run("gaussian", overrides=overrides)
    data = Steps(run).prepare()
    assert data.stats["cache"] == "miss" and data.stats["gaps"] == {"ndx": 2} and data.stats["assets"] == ["spx", "ndx"]
    assert data.stats["days"]["test"] == 100 and data.path.parent == store / "cache"
    recorded = json.loads((run.path / "data.json").read_text())
    assert recorded["train"]["rejected"] == {"no price for ndx": 2}
    assert finance_entries(store) == [data.path.name] and not list((store / "cache").glob("*.partial"))
    again = Steps(create_run("gaussian", overrides=overrides)).prepare()
    assert again.path == data.path and again.stats["cache"] == "hit"
    other = Steps(create_run("gaussian", overrides=[*overrides[:-1], "data.columns=[spx]", f"data.path={f}"])).prepare()
    assert other.fingerprint != data.fingerprint and other.stats["gaps"] == {}


def test_the_cli_says_one_line_naming_row_and_column(tmp_path, store):
    f = csv(tmp_path, GOOD + "2020-01-08,oops,203\n")
    from genforge.flows.cli import invoke

    r = invoke("run", "gaussian", "--no-prefect", "--set", f"data.path={f}")
    assert r.code == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: {f}, row 6, column 'spx': 'oops' is not a number"
    assert finance_entries(store) == []


def test_a_failed_write_leaves_nothing_in_the_cache(store, monkeypatch):
    import genforge.plugins.finance.data as data

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data, "long_form", full_disk)  # after returns.parquet and prices.parquet are written
    run = create_run("gaussian", spec={"data": {"start": "2008-01-01", "test_start": "2012-01-01"}})
    with pytest.raises(OSError, match="No space left"):
        Steps(run).prepare()
    assert finance_entries(store) == []
