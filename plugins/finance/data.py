"""Market data: daily prices from ``arch.data`` or a user's CSV -> percent log returns, split by date.

Returns are ``r = 100 * diff(log price)``, aligned across assets. A day on which some
asset has no price is a gap: it is dropped and counted (once per day), and the next return
spans it. Only the period every asset covers is used: an asset that starts later or ends
earlier than the others is recorded (``short_assets``) and said in the run's notes.
Prices a calendar filled forward (weekend days that repeat the previous price) are refused
or, with ``data.non_trading=drop``, dropped and counted; a price that does not move for
``data.max_zero_run`` returns in a row (stale) is refused. A CSV that is wrong (a missing or repeated date, a cell that is not a number, a row with
more or fewer cells than the header, a price that is not positive, a single row, a file
that is not UTF-8 text) is refused with one line naming the row and the column: prices
feed risk figures, so a guess is worse than an error (``price_csv.py`` reads it).

The prepared folder holds ``returns.parquet`` (date index, one column per asset, a
``split`` column: train / validation / test), ``prices.parquet``, and the reference sets
in the ``scenarios`` kind's form (``train.parquet``, ``test.parquet``: one scenario each).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import zoneinfo
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationInfo, field_validator

from genforge.core import DataConfig, DataError, DataSource, store
from genforge.core.errors import shown
from genforge.core.kinds import Scenarios

from .price_csv import DATE_FORMATS, DAY_MONTH, read_price_csv

ARCH_SERIES = ("sp500", "nasdaq", "wti")  # arch.data price series (daily; "Adj Close" or the price column)
PREPARE_VERSION = "finance-prepare-3"  # bump when prepare's output changes for the same inputs
SETTING_DATES = {name: re.compile(pattern) for name, (_, pattern) in DATE_FORMATS.items()}  # a date alone, no time of day
WEEKEND_REPEATS = "weekend days repeating the previous price (data.non_trading=drop)"  # a reason for rejected rows
SHOWN_DATES = 3  # dates an error lists before "..."


class MarketDataConfig(DataConfig):
    series: list[str] = Field(
        ["sp500"], min_length=1, description=f"price series shipped with arch: {', '.join(ARCH_SERIES)} (several: modelled jointly)"
    )
    path: str | None = Field(None, description="a CSV of dated prices instead of `series`: first column the date, one column per asset")
    columns: list[str] | None = Field(None, description="the CSV's asset columns to use (default: all)")
    # before start and test_start: their validator reads it
    date_format: Literal["ISO", "DD/MM/YYYY", "MM/DD/YYYY", "DD.MM.YYYY"] = Field(
        "ISO",
        description="how dates are written in the CSV and in the date settings (data.start, data.test_start, sample.given): "
        "ISO (YYYY-MM-DD), DD/MM/YYYY, MM/DD/YYYY or DD.MM.YYYY; a setting may always be YYYY-MM-DD",
    )
    timezone: str | None = Field(
        None,
        description="the exchange's time zone (IANA name, e.g. America/New_York): a CSV time stamp with a UTC offset is "
        "dated in it (default: the date as written)",
    )
    start: str | None = Field(None, description="first date used (YYYY-MM-DD, or as data.date_format says; default: the data's first)")
    test_start: str | None = Field(
        None, description="first test date (default: the last test_fraction of the days; for the shipped 1999-2018 series, 2015-01-02)"
    )
    as_of: str | None = Field(
        None,
        description="the data is complete up to this date (YYYY-MM-DD, or as data.date_format says), later than its last price "
        "when the market was closed since: sample.given may then be up to it (default: the last price's date)",
    )
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share of the days held out as the test period when test_start is not set")
    validation_days: int = Field(
        250,
        ge=20,
        description="days before the test period kept for the GAN's checkpoint choice (the GAN does not train on them; textbook fits use them)",
    )
    non_trading: Literal["refuse", "drop"] = Field(
        "refuse",
        description="weekend days whose price repeats the previous one (a calendar filled forward): refuse the data, "
        "or drop those days (counted as rejected rows)",
    )
    max_zero_run: int | None = Field(
        5, ge=2, description="refuse an asset whose price stays the same for this many returns in a row (stale prices; None: no limit)"
    )

    @field_validator("start", "test_start", "as_of", mode="before")
    @classmethod
    def _date(cls, value, info: ValidationInfo):
        if value is None:
            return None
        if "date_format" not in info.data:  # the format itself is wrong: that error says what to do
            return as_date_text(value)
        return parse_date(value, info.data["date_format"]).date().isoformat()

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError("unknown time zone; give an IANA name such as America/New_York, Europe/London or Asia/Tokyo") from None
        return value

    @field_validator("series")
    @classmethod
    def _series(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in ARCH_SERIES]
        if unknown:
            raise ValueError(
                f"unknown series {', '.join(map(repr, unknown))}; shipped: {', '.join(ARCH_SERIES)} (or set data.path to a CSV)"
            )
        return value


def as_date_text(value):
    """A date as ``YYYY-MM-DD`` text: ``--set data.test_start=2015-01-02`` arrives as a YAML date."""
    return value.isoformat()[:10] if isinstance(value, (datetime.date, datetime.datetime)) else value


def parse_date(text: Any, date_format: str = "ISO") -> pd.Timestamp:
    """A date given in the settings (``data.start``, ``sample.given``) as a Timestamp; a ``ValueError`` saying what is wrong.

    ``YYYY-MM-DD`` (or a YAML date) is always read; otherwise the date must be written as
    ``date_format`` says (a key of ``price_csv.DATE_FORMATS``). ``03/04/2016`` while the format is
    ISO is refused as ambiguous, never read as March 4 (as ``pd.Timestamp`` would).
    """
    if isinstance(text, datetime.date):  # a YAML date (a datetime is a date too)
        return pd.Timestamp(text.year, text.month, text.day)
    if date_format not in DATE_FORMATS:
        raise ValueError(f"unknown data.date_format {date_format!r}; use one of {', '.join(DATE_FORMATS)}")
    written = " or ".join(dict.fromkeys(DATE_FORMATS[f][0] for f in ("ISO", date_format)))
    cell = text.strip() if isinstance(text, str) else None
    for name in dict.fromkeys(("ISO", date_format)):
        match = SETTING_DATES[name].fullmatch(cell) if cell is not None else None
        if match:
            try:
                return pd.Timestamp(datetime.date(int(match["y"]), int(match["m"]), int(match["d"])))
            except ValueError:
                raise ValueError(f"{shown(text)} is not a date ({written}): no such day") from None
    if cell is not None and date_format == "ISO" and (other := DAY_MONTH.fullmatch(cell)):
        formats = "DD.MM.YYYY" if other[1] == "." else "DD/MM/YYYY or MM/DD/YYYY"
        raise ValueError(
            f"{shown(text)} is ambiguous: is it day and month, or month and day? write it YYYY-MM-DD, or set data.date_format to {formats}"
        )
    raise ValueError(f"{shown(text)} is not a date ({written}{'' if date_format == 'ISO' else ', data.date_format'})")


def arch_prices(name: str) -> pd.Series:
    """One ``arch.data`` series as a price Series indexed by date."""
    import importlib

    frame = importlib.import_module(f"arch.data.{name}").load()
    column = "Adj Close" if "Adj Close" in frame.columns else frame.columns[0]
    prices = pd.to_numeric(frame[column], errors="coerce")
    prices.index = pd.DatetimeIndex(frame.index).normalize()
    return prices.rename(name)


def load_prices(cfg: MarketDataConfig) -> tuple[pd.DataFrame, str]:
    """The configured prices (date index, one column per asset) and where they came from."""
    if cfg.path:
        path = Path(cfg.path).expanduser()  # read_price_csv says what is wrong with it (missing, a folder, not text, a bad cell)
        return read_price_csv(path, cfg.columns, cfg.date_format, cfg.timezone), str(path)
    frame = pd.concat([arch_prices(s) for s in cfg.series], axis=1, join="outer").sort_index()
    frame.index.name = "date"
    return frame, "arch.data: " + ", ".join(cfg.series)


def common_period(prices: pd.DataFrame) -> tuple[pd.Timestamp, pd.Timestamp, dict[str, dict[str, Any]]]:
    """The first and last day every asset has a price, and each asset that starts later or ends earlier than another.

    For such an asset: its ``first`` and ``last`` date, and the rows of the data before it starts
    (``rows_before``) and after it ends (``rows_after``): days the other assets lose to it.
    """
    starts, ends = [prices[c].first_valid_index() for c in prices], [prices[c].last_valid_index() for c in prices]
    empty = [str(c) for c, d in zip(prices.columns, starts) if d is None]
    if empty:
        raise DataError(f"no price at all for {', '.join(empty)}")
    first, last = max(starts), min(ends)
    if first > last:
        late, early = prices.columns[starts.index(first)], prices.columns[ends.index(last)]
        raise DataError(
            f"the assets {', '.join(map(str, prices.columns))} have no period with prices for all of them: {late}'s prices start on "
            f"{first.date()}, after {early}'s end on {last.date()}; model them apart (data.columns)"
        )
    short = {}
    if len(prices.columns) > 1:
        earliest, latest = min(starts), max(ends)
        for c, a, b in zip(prices.columns, starts, ends):
            if a > earliest or b < latest:
                before = int(((prices.index >= earliest) & (prices.index < a)).sum())
                after = int(((prices.index > b) & (prices.index <= latest)).sum())
                short[str(c)] = {"first": str(a.date()), "last": str(b.date()), "rows_before": before, "rows_after": after}
    return first, last, short


def to_returns(prices: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Percent log returns on the days every asset has a price; gaps counted per asset.

    Only the period all assets cover counts: days before the last asset starts or after
    the first one ends are outside it, not gaps (``common_period`` names them).
    """
    first, last, _ = common_period(prices)
    prices = prices.loc[first:last]
    gaps = {str(c): int(n) for c, n in prices.isna().sum().items() if n}
    kept = prices.dropna()
    returns = 100 * np.log(kept).diff().iloc[1:]
    return returns.astype("float64"), gaps


def gap_rows(prices: pd.DataFrame) -> dict[str, int]:
    """Days dropped because some asset has no price, counted once per day, by the assets missing (``no price for spx, ndx``)."""
    missing = prices.isna().to_numpy()
    rows = missing[missing.any(axis=1)]
    if not len(rows):
        return {}
    names = [str(c) for c in prices.columns]
    counts: dict[str, int] = {}
    for pattern, n in zip(*np.unique(rows, axis=0, return_counts=True)):
        assets = [name for name, gone in zip(names, pattern) if gone]
        reason = f"no price for {', '.join(assets)}" if len(assets) <= 3 else f"no price for {len(assets)} of {len(names)} assets"
        counts[reason] = counts.get(reason, 0) + int(n)
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def forward_filled(prices: pd.DataFrame) -> dict[str, pd.DatetimeIndex]:
    """Per asset, the Saturdays and Sundays whose price repeats the asset's previous price (a calendar filled forward).

    A weekend price that differs (a market that trades every day) is not one.
    """
    found = {}
    for c in prices:
        s = prices[c].dropna()
        repeat = (s.index.day_of_week >= 5) & (s.to_numpy() == s.shift().to_numpy())
        if repeat.any():
            found[str(c)] = s.index[repeat]
    return found


def non_trading_days(prices: pd.DataFrame, cfg: MarketDataConfig, source: str) -> tuple[pd.DataFrame, int]:
    """``prices`` without forward-filled weekend days (``data.non_trading=drop``: the days dropped), or a ``DataError`` naming them."""
    found = forward_filled(prices)
    if not found:
        return prices, 0
    days = pd.DatetimeIndex(sorted(set().union(*found.values())))
    if cfg.non_trading == "drop":
        return prices.drop(index=days), len(days)
    assets = ", ".join(found) if len(found) == 1 else ", ".join(f"{a} ({len(d)})" for a, d in found.items())
    shown_days = ", ".join(str(d.date()) for d in days[:SHOWN_DATES]) + (", ..." if len(days) > SHOWN_DATES else "")
    raise DataError(
        f"{source}: {len(days)} weekend days repeat the previous price (forward-filled?) for {assets}: {shown_days}; "
        "remove them, or set data.non_trading=drop"
    )


def check_zero_runs(prices: pd.DataFrame, cfg: MarketDataConfig, source: str) -> None:
    """A ``DataError`` naming the assets whose price stays the same for ``data.max_zero_run`` returns or more in a row (stale)."""
    if cfg.max_zero_run is None:
        return
    runs = []
    for c in prices:
        s = prices[c].dropna()
        same = np.r_[False, s.to_numpy()[1:] == s.to_numpy()[:-1]]
        edges = np.diff(np.r_[0, same.astype(int), 0])
        for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):  # zero returns a..b-1, prices a-1..b-1
            if b - a >= cfg.max_zero_run:
                runs.append(f"{c} from {s.index[a - 1].date()} to {s.index[b - 1].date()} ({b - a} zero returns)")
    if runs:
        more = f", and {len(runs) - SHOWN_DATES} more" if len(runs) > SHOWN_DATES else ""
        raise DataError(
            f"{source}: the price stays the same for {cfg.max_zero_run} or more returns in a row (stale prices?) for "
            f"{'; '.join(runs[:SHOWN_DATES])}{more}: correct or remove those rows, or, if the asset really did not trade, "
            "raise data.max_zero_run (null: no limit); data.non_trading=drop drops only weekend days"
        )


def short_asset_notes(short: dict[str, dict[str, Any]]) -> list[str]:
    """The run report's sentences for the assets that start late or end early (see ``common_period``)."""
    notes = []
    for asset, d in short.items():
        if d["rows_before"]:
            notes.append(
                f"{asset}'s prices start on {d['first']}, later than the other assets': the {d['rows_before']:,} rows before are "
                "not used (only the period every asset covers is)"
            )
        if d["rows_after"]:
            notes.append(
                f"{asset}'s prices end on {d['last']}, earlier than the other assets': the {d['rows_after']:,} rows after are "
                "not used (only the period every asset covers is)"
            )
    return notes


def split_dates(returns: pd.DataFrame, cfg: MarketDataConfig, short: dict[str, dict[str, Any]] | None = None) -> pd.Series:
    """``train`` / ``validation`` / ``test`` for each day; a period too short to use is an error naming the field.

    ``short`` (``common_period``'s record): an asset that starts late or ends early is named as the
    cause where it is one, rather than ``data.start`` or ``data.test_start``.
    """
    short = short or {}
    late = max(((d["first"], a) for a, d in short.items() if d["rows_before"]), default=None)
    early = min(((d["last"], a) for a, d in short.items() if d["rows_after"]), default=None)
    n = len(returns)
    if cfg.test_start:
        first_test = int(np.searchsorted(returns.index.values, np.datetime64(pd.Timestamp(cfg.test_start))))
    else:
        first_test = n - max(1, int(round(n * cfg.test_fraction)))
    first_val = first_test - cfg.validation_days
    if first_test >= n:
        cause = f"; {early[1]}'s prices end on {early[0]} and only the period every asset covers is used" if early else ""
        raise DataError(f"data.test_start {cfg.test_start} is after the last day with prices ({returns.index[-1].date()}){cause}")
    if first_val < 250:
        needed = (
            f"{first_val} training days before the validation period (data.validation_days={cfg.validation_days}); at least 250 are needed"
        )
        if late:
            raise DataError(
                f"{needed}: {late[1]}'s prices start on {late[0]}, and only the period every asset covers is used; leave {late[1]} "
                "out (data.columns), or give a longer history of it"
            )
        raise DataError(f"{needed}: set an earlier data.start or a later data.test_start, or give a longer history")
    split = np.array(["train"] * n, dtype=object)
    split[first_val:first_test] = "validation"
    split[first_test:] = "test"
    return pd.Series(split, index=returns.index, name="split")


def fingerprint(prices: pd.DataFrame, cfg: MarketDataConfig) -> str:
    digest = hashlib.sha256(pd.util.hash_pandas_object(prices, index=True).values.tobytes())
    digest.update(json.dumps(list(map(str, prices.columns))).encode())  # the values' hash ignores the assets' names
    digest.update(json.dumps({"version": PREPARE_VERSION, "config": cfg.model_dump(exclude={"path", "as_of"})}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def write_prepared(prices: pd.DataFrame, cfg: MarketDataConfig, out: Path, source: str) -> dict:
    """Write the prepared folder (see the module docstring); return its stats."""
    if cfg.start:
        prices = prices[prices.index >= pd.Timestamp(cfg.start)]
    read = len(prices)
    prices, weekend = non_trading_days(prices, cfg, source)
    first, last, short = common_period(prices)
    check_zero_runs(prices.loc[first:last], cfg, source)
    returns, gaps = to_returns(prices)
    if len(returns) < 2:
        raise DataError(f"{source}: {len(returns)} day(s) with a price for every asset; nothing to model")
    split = split_dates(returns, cfg, short)
    out.mkdir(parents=True, exist_ok=True)
    returns.assign(split=split).to_parquet(out / "returns.parquet")
    prices.to_parquet(out / "prices.parquet")
    kind = Scenarios()
    # the reference's "train" is every day before the test period: what any model may have seen
    # (the textbook fits and the bootstrap use the validation year too), so copies of it are caught
    for name, part in (("train", returns[split != "test"]), ("test", returns[split == "test"])):
        kind.write(long_form(part.to_numpy()[None], list(part.columns)), out / name)
        (out / name / kind.filename).replace(out / f"{name}.parquet")
        (out / name).rmdir()
    periods = {
        name: [str(returns.index[split == name][0].date()), str(returns.index[split == name][-1].date())]
        for name in ("train", "validation", "test")
    }
    counts = {name: int((split == name).sum()) for name in ("train", "validation", "test")}
    stats = {
        "source": source,
        "train": {
            "read": read,
            "kept": counts["train"],
            "held_out": counts["validation"] + counts["test"],
            # one count per row dropped: a day two assets miss is one row
            "rejected": {**({WEEKEND_REPEATS: weekend} if weekend else {}), **gap_rows(prices.loc[first:last])},
        },
        "test": {"read": counts["test"], "kept": counts["test"], "held_out": 0, "rejected": {}},
        "assets": list(map(str, returns.columns)),
        "periods": periods,
        "days": counts,
        "gaps": gaps,
        "short_assets": short,
        "notes": short_asset_notes(short),
    }
    store.atomic_write_text(out / "stats.json", json.dumps(stats, indent=2))
    return stats


def prepare_once(prices: pd.DataFrame, cfg: MarketDataConfig, out: Path, source: str) -> tuple[dict, str]:
    """``out`` prepared (see ``write_prepared``) unless it already is: (its stats, "hit" or "miss"); whole or not at all."""
    return store.prepared_once(out, lambda folder: write_prepared(prices, cfg, folder, source))


def long_form(paths: np.ndarray, assets: list[str], first: int = 0) -> pd.DataFrame:
    """(scenarios, steps, assets) returns -> the ``scenarios`` kind's long table, assets by name, scenarios numbered from ``first``."""
    s, t, a = paths.shape
    return pd.DataFrame(
        {
            "scenario": np.repeat(np.arange(first, first + s), t * a),
            "step": np.tile(np.repeat(np.arange(t), a), s),
            "asset": np.tile(np.asarray(assets, dtype=object), s * t),
            "value": paths.reshape(-1).astype(float),
        }
    )


def wide_form(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The ``scenarios`` long table -> (scenarios, steps, assets) array and the asset names, in first-seen order.

    Built by indexing (no pivot table): memory is the array's and a few integer columns'.
    """
    assets_codes, assets = pd.factorize(frame["asset"], sort=False)
    scen_ids, scen_idx = np.unique(frame["scenario"].to_numpy(), return_inverse=True)
    step_ids, step_idx = np.unique(frame["step"].to_numpy(), return_inverse=True)
    shape = (len(scen_ids), len(step_ids), len(assets))
    flat = np.ravel_multi_index((scen_idx, step_idx, assets_codes), shape)
    counts = np.bincount(flat, minlength=int(np.prod(shape)))
    if counts.max(initial=0) > 1:
        first = int(np.argmax(counts[flat] > 1))
        row = frame.iloc[first]
        raise DataError(
            f"scenario {row['scenario']}, step {row['step']}, asset {row['asset']!r} appears more than once "
            f"({int((counts > 1).sum())} repeated entries)"
        )
    if (counts == 0).any():
        raise DataError("scenarios differ in length or miss an asset on some step; every scenario needs every step and asset")
    cube = np.empty(shape, dtype=np.float64)
    cube.reshape(-1)[flat] = frame["value"].to_numpy(dtype=np.float64)
    return cube, [str(a) for a in assets]


def load_split(path: Path) -> tuple[pd.DataFrame, pd.Series]:
    """Returns (date index, assets) and their split labels, from a prepared folder or a returns.parquet file."""
    path = Path(path)
    frame = pd.read_parquet(path / "returns.parquet" if path.is_dir() else path)
    return frame.drop(columns="split"), frame["split"]


class ArchSeries(DataSource):
    """A price series shipped with ``arch`` (1999–2018 business days), as returns split by date."""

    kind: ClassVar[str] = "scenarios"
    series: ClassVar[str] = "sp500"

    def files(self) -> dict[str, Path]:
        cfg = MarketDataConfig(series=[self.series])
        prices, source = load_prices(cfg)
        out = store.home() / "data" / "finance" / f"{self.series}-{fingerprint(prices, cfg)}"
        prepare_once(prices, cfg, out, source)
        return {"train": out / "train.parquet", "test": out / "test.parquet"}


class SP500(ArchSeries):
    name: ClassVar[str] = "sp500"
    series: ClassVar[str] = "sp500"
    reference_split: ClassVar[str | None] = "test"  # `genforge evaluate scenarios FILE` compares with 2015-2018
    description: ClassVar[str] = "S&P 500 index, business-daily 1999-2018 (arch.data); test 2015-01-02 to 2018-12-31"


class Nasdaq(ArchSeries):
    name: ClassVar[str] = "nasdaq"
    series: ClassVar[str] = "nasdaq"
    description: ClassVar[str] = "NASDAQ Composite, business-daily 1999-2018 (arch.data); test 2015-01-02 to 2018-12-31"
