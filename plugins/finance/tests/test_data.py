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
    load_split,
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


# -- data controls: forward-filled calendars, stale prices, time stamps, date formats, late starters ------------


def calendar_prices(n: int, assets=("sp500", "nasdaq"), start: str = "2016-01-01", seed: int = 0) -> pd.DataFrame:
    """n calendar days of prices whose weekends repeat Friday's (a calendar filled forward, as some exports write it)."""
    days = pd.date_range(start, periods=n, freq="D", name="date")
    prices = business_prices(n, assets, seed).set_axis(days)
    prices[days.day_of_week >= 5] = np.nan
    return prices.ffill()


def test_forward_filled_weekends_are_refused_naming_the_assets_the_count_and_the_first_dates(tmp_path):
    prices = calendar_prices(1820)  # 520 weekend days
    f = tmp_path / "prices.csv"
    prices.to_csv(f)
    with pytest.raises(DataError) as info:
        write_prepared(read_price_csv(f), MarketDataConfig(path=str(f)), tmp_path / "out", str(f))
    assert str(info.value) == (
        f"{f}: 520 weekend days repeat the previous price (forward-filled?) for sp500 (520), nasdaq (520): "
        "2016-01-02, 2016-01-03, 2016-01-09, ...; remove them, or set data.non_trading=drop"
    )
    assert not (tmp_path / "out").exists()


def test_non_trading_drop_drops_the_weekend_repeats_counted_as_rejected_rows(tmp_path, store):
    prices = calendar_prices(1820)
    f = tmp_path / "prices.csv"
    prices.to_csv(f)
    run = create_run("gaussian", overrides=["data.start=null", "data.test_start=null", "data.non_trading=drop", f"data.path={f}"])
    data = Steps(run).prepare()
    rejected = json.loads((run.path / "data.json").read_text())["train"]["rejected"]
    assert rejected == {"weekend days repeating the previous price (data.non_trading=drop)": 520}
    returns, _ = load_split(data.path)
    weekdays = prices[prices.index.day_of_week < 5]
    assert returns.index.equals(weekdays.index[1:]) and returns.to_numpy() == pytest.approx(100 * np.diff(np.log(weekdays), axis=0))
    # the host's share applies to them: 520 of 1,820 rows is more than 25 %
    strict = create_run(
        "gaussian",
        overrides=["data.start=null", "data.test_start=null", "data.non_trading=drop", "data.max_rejected=0.25", f"data.path={f}"],
    )
    with pytest.raises(DataError, match=r"520 of 1820 rows of .* were rejected \(520 weekend days repeating the previous price"):
        Steps(strict).prepare()


def test_a_weekend_price_that_moves_is_kept(tmp_path):
    days = pd.date_range("2016-01-01", periods=800, freq="D", name="date")
    crypto = business_prices(800, ("btc",)).set_axis(days)  # a market that trades every day
    stats = write_prepared(crypto, MarketDataConfig(), tmp_path / "out", "crypto")
    assert stats["train"]["rejected"] == {} and sum(stats["days"].values()) == 799


def test_a_stale_price_is_refused_naming_the_asset_and_the_days_even_with_non_trading_drop(tmp_path):
    prices = business_prices(800)
    prices.iloc[100:106, 1] = prices.iloc[100, 1]  # six equal closes: five zero returns
    for non_trading in ("refuse", "drop"):
        with pytest.raises(DataError) as info:
            write_prepared(prices, MarketDataConfig(non_trading=non_trading), tmp_path / "out", "prices.csv")
        assert str(info.value) == (
            "prices.csv: the price stays the same for 5 or more returns in a row (stale prices?) for ndx from 2000-05-22 to "
            "2000-05-29 (5 zero returns): correct or remove those rows, or, if the asset really did not trade, raise "
            "data.max_zero_run (null: no limit); data.non_trading=drop drops only weekend days"
        )
    assert write_prepared(prices, MarketDataConfig(max_zero_run=6), tmp_path / "a", "prices.csv")["gaps"] == {}
    assert write_prepared(prices, MarketDataConfig(max_zero_run=None), tmp_path / "b", "prices.csv")["gaps"] == {}


def test_a_csv_stamped_at_the_new_york_close_in_utc_gives_the_dates_and_returns_of_the_plain_file(tmp_path):
    prices = business_prices(400).round(4)
    plain, utc = tmp_path / "plain.csv", tmp_path / "utc.csv"
    prices.to_csv(plain)
    prices.set_axis([f"{d.date()}T21:00:00Z" for d in prices.index]).rename_axis("date").to_csv(utc)
    want, _ = to_returns(load_prices(MarketDataConfig(path=str(plain)))[0])
    for zone in (None, "America/New_York"):
        got, _ = to_returns(load_prices(MarketDataConfig(path=str(utc), timezone=zone))[0])
        pd.testing.assert_frame_equal(got, want)


def test_an_unknown_time_zone_is_refused_naming_the_field(store):
    with pytest.raises(
        ConfigError, match=r"data.timezone: unknown time zone; give an IANA name such as America/New_York.*'America/NewYork'"
    ):
        create_run("gaussian", overrides=["data.timezone=America/NewYork"])
    assert MarketDataConfig(timezone="Asia/Tokyo").timezone == "Asia/Tokyo"


def test_one_date_format_for_the_settings_and_the_csv(tmp_path, store):
    import datetime

    from genforge.plugins.finance.data import parse_date

    # while the format is ISO, a day and a month are never guessed (pd.Timestamp("03/04/2016") is March 4)
    with pytest.raises(ValueError, match=r"'03/04/2016' is ambiguous: .* set data.date_format to DD/MM/YYYY or MM/DD/YYYY"):
        parse_date("03/04/2016")
    with pytest.raises(ConfigError, match=r"data.test_start: '03/04/2016' is ambiguous.*data.date_format"):
        create_run("gaussian", overrides=["data.test_start=03/04/2016"])
    assert parse_date("03/04/2016", "DD/MM/YYYY") == pd.Timestamp("2016-04-03")
    assert parse_date("03/04/2016", "MM/DD/YYYY") == pd.Timestamp("2016-03-04")
    assert parse_date("03.04.2016", "DD.MM.YYYY") == parse_date("2016-04-03", "DD.MM.YYYY") == parse_date(datetime.date(2016, 4, 3))
    with pytest.raises(ValueError, match=r"'2016-04-31' is not a date \(YYYY-MM-DD\): no such day"):
        parse_date("2016-04-31")
    with pytest.raises(ValueError, match=r"'4/3/16' is not a date \(YYYY-MM-DD or DD/MM/YYYY, data.date_format\)"):
        parse_date("4/3/16", "DD/MM/YYYY")
    # the settings are recorded as YYYY-MM-DD; the CSV is read in the same format
    prices = business_prices(700)
    f = tmp_path / "eu.csv"
    prices.to_csv(f, date_format="%d/%m/%Y")
    test_start = prices.index[600]
    overrides = ["data.date_format=DD/MM/YYYY", f"data.test_start={test_start:%d/%m/%Y}", "data.start=null", "data.validation_days=50"]
    run = create_run("gaussian", overrides=[*overrides, f"data.path={f}"])
    assert run.spec["data"]["test_start"] == str(test_start.date())
    data = Steps(run).prepare()
    assert data.stats["periods"]["test"][0] == str(test_start.date()) and data.stats["days"]["test"] == 100
    iso = create_run("gaussian", overrides=["data.start=null", "data.test_start=null", f"data.path={f}"])
    with pytest.raises(DataError, match=r"row 2, column 'date': '03/01/2000' is not a date \(YYYY-MM-DD\): is it day and month"):
        Steps(iso).prepare()


def test_an_asset_that_starts_late_or_ends_early_is_recorded_and_noted(tmp_path, store):
    prices = business_prices(900, ("spx", "ndx", "vix"))
    prices.iloc[:120, 1] = np.nan  # ndx starts 120 days late
    prices.iloc[-30:, 2] = np.nan  # vix ends 30 days early
    f = tmp_path / "book.csv"
    prices.to_csv(f, na_rep="")
    run = create_run("gaussian", overrides=["data.start=null", "data.test_start=null", f"data.path={f}"])
    data = Steps(run).prepare()
    stats = json.loads((data.path / "stats.json").read_text())
    assert stats["short_assets"] == {
        "ndx": {"first": str(prices.index[120].date()), "last": str(prices.index[-1].date()), "rows_before": 120, "rows_after": 0},
        "vix": {"first": str(prices.index[0].date()), "last": str(prices.index[-31].date()), "rows_before": 0, "rows_after": 30},
    }
    assert stats["train"]["rejected"] == {} and stats["gaps"] == {}  # outside the common period: not rejected, noted
    late = f"ndx's prices start on {prices.index[120].date()}, later than the other assets': the 120 rows before are not used"
    early = f"vix's prices end on {prices.index[-31].date()}, earlier than the other assets': the 30 rows after are not used"
    assert stats["notes"][0].startswith(late) and stats["notes"][1].startswith(early)
    assert json.loads((run.path / "data.json").read_text())["notes"] == stats["notes"]
    from genforge.core.runner import run_notes

    assert run_notes(run) == stats["notes"]  # what the report and the summary show


def test_a_late_start_that_leaves_too_few_training_days_names_the_asset_not_data_start(tmp_path):
    prices = business_prices(700)
    prices.iloc[:400, 1] = np.nan  # ndx starts on day 400
    with pytest.raises(DataError) as info:
        write_prepared(prices, MarketDataConfig(), tmp_path / "out", "book.csv")
    message = str(info.value)
    assert f"ndx's prices start on {prices.index[400].date()}, and only the period every asset covers is used" in message
    assert "data.start" not in message and message.endswith("leave ndx out (data.columns), or give a longer history of it")


def test_gap_days_are_counted_once_per_row_not_once_per_asset(tmp_path, store):
    days = pd.date_range("2000-01-03", periods=2103, freq="D", name="date")  # a Monday to a Wednesday
    prices = business_prices(2103).set_axis(days)
    prices[days.day_of_week >= 5] = np.nan  # 600 weekend rows without prices: 28.5 % of the rows, for both assets
    prices.iloc[10, 0] = np.nan  # one weekday only spx misses
    stats = write_prepared(prices, MarketDataConfig(), tmp_path / "out", "calendar")
    dropped = len(prices) - len(prices.dropna())
    assert stats["train"]["rejected"] == {"no price for spx, ndx": 600, "no price for spx": 1}
    assert sum(stats["train"]["rejected"].values()) == dropped == 601
    assert stats["gaps"] == {"spx": 601, "ndx": 600}  # per asset, the detail
    f = tmp_path / "calendar.csv"
    prices.to_csv(f, na_rep="")
    run = create_run("gaussian", overrides=["data.start=null", "data.test_start=null", f"data.path={f}"])
    assert Steps(run).prepare().stats["train"]["rejected"]["no price for spx, ndx"] == 600  # 29 %, not "more than 50 %"


def test_data_max_rejected_is_accepted_and_enforced_through_the_cli(tmp_path, store):
    from genforge.flows.cli import invoke as genforge

    def sets(items: list[str]) -> list[str]:
        return [a for item in items for a in ("--set", item)]

    days = pd.date_range("2000-01-03", periods=1500, freq="D", name="date")
    prices = business_prices(1500).set_axis(days)
    prices.iloc[::3, 0] = np.nan  # every third day spx is missing, every fourth ndx: 749 rows (the first is outside), 49.9 %
    prices.iloc[::4, 1] = np.nan
    f = tmp_path / "sparse.csv"
    prices.to_csv(f, na_rep="")
    quick = ["data.start=null", "data.test_start=null", f"data.path={f}", "sample.n=10", "sample.backtest=false"]
    r = genforge("run", "garch", "--no-prefect", *sets([*quick, "data.max_rejected=0.3"]))
    assert r.code == 2 and r.stderr.strip().startswith(f"error: 749 of 1500 rows of {f} were rejected (")
    assert "more than 30%" in r.stderr
    r = genforge("run", "garch", "--no-prefect", *sets(quick))  # the default, 50 % (counted per asset, 873 rows: 58 %)
    assert r.code == 0, r.stderr[-2000:]
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"data:\n  path: {f}\n  start: null\n  test_start: null\n  max_rejected: 0.2\n")
    r = genforge("run", "garch", "--no-prefect", "--config", str(spec), *sets(["sample.n=10", "sample.backtest=false"]))
    assert r.code == 2 and "more than 20%" in r.stderr
