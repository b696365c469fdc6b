"""Market data: daily prices from ``arch.data`` or a user's CSV -> percent log returns, split by date.

Returns are ``r = 100 * diff(log price)``, aligned across assets. A day on which some
asset has no price is a gap: it is dropped and counted, and the next return spans it.
A CSV that is wrong (a missing or repeated date, a cell that is not a number, a row with
more or fewer cells than the header, a price that is not positive, a single row, a file
that is not UTF-8 text) is refused with one line naming the row and the column: prices
feed risk figures, so a guess is worse than an error (``price_csv.py`` reads it).

The prepared folder holds ``returns.parquet`` (date index, one column per asset, a
``split`` column: train / validation / test), ``prices.parquet``, and the reference sets
in the ``scenarios`` kind's form (``train.parquet``, ``test.parquet``: one scenario each).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from genforge.core import DataConfig, DataError, DataSource, store
from genforge.core.kinds import Scenarios

from .price_csv import read_price_csv

ARCH_SERIES = ("sp500", "nasdaq", "wti")  # arch.data price series (daily; "Adj Close" or the price column)
PREPARE_VERSION = "finance-prepare-2"  # bump when prepare's output changes for the same inputs


class MarketDataConfig(DataConfig):
    series: list[str] = Field(
        ["sp500"], min_length=1, description=f"price series shipped with arch: {', '.join(ARCH_SERIES)} (several: modelled jointly)"
    )
    path: str | None = Field(None, description="a CSV of dated prices instead of `series`: first column the date, one column per asset")
    columns: list[str] | None = Field(None, description="the CSV's asset columns to use (default: all)")
    start: str | None = Field(None, description="first date used (YYYY-MM-DD; default: the data's first)")
    test_start: str | None = Field(
        None, description="first test date (default: the last test_fraction of the days; for the shipped 1999-2018 series, 2015-01-02)"
    )
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share of the days held out as the test period when test_start is not set")
    validation_days: int = Field(
        250,
        ge=20,
        description="days before the test period kept for the GAN's checkpoint choice (the GAN does not train on them; textbook fits use them)",
    )

    @field_validator("start", "test_start", mode="before")
    @classmethod
    def _date(cls, value):
        value = as_date_text(value)
        if value is not None:
            try:
                pd.Timestamp(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from None
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
    import datetime

    return value.isoformat()[:10] if isinstance(value, (datetime.date, datetime.datetime)) else value


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
        return read_price_csv(path, cfg.columns), str(path)
    frame = pd.concat([arch_prices(s) for s in cfg.series], axis=1, join="outer").sort_index()
    frame.index.name = "date"
    return frame, "arch.data: " + ", ".join(cfg.series)


def to_returns(prices: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Percent log returns on the days every asset has a price; gaps counted per asset.

    Only the period all assets cover counts: days before the last asset starts or after
    the first one ends are outside it, not gaps.
    """
    starts, ends = [prices[c].first_valid_index() for c in prices], [prices[c].last_valid_index() for c in prices]
    empty = [str(c) for c, d in zip(prices.columns, starts) if d is None]
    if empty:
        raise DataError(f"no price at all for {', '.join(empty)}")
    first, last = max(starts), min(ends)
    if first > last:
        raise DataError(f"the assets {', '.join(map(str, prices.columns))} have no period with prices for all of them")
    prices = prices.loc[first:last]
    gaps = {str(c): int(n) for c, n in prices.isna().sum().items() if n}
    kept = prices.dropna()
    returns = 100 * np.log(kept).diff().iloc[1:]
    return returns.astype("float64"), gaps


def split_dates(returns: pd.DataFrame, cfg: MarketDataConfig) -> pd.Series:
    """``train`` / ``validation`` / ``test`` for each day; a period too short to use is an error naming the field."""
    n = len(returns)
    if cfg.test_start:
        first_test = int(np.searchsorted(returns.index.values, np.datetime64(pd.Timestamp(cfg.test_start))))
    else:
        first_test = n - max(1, int(round(n * cfg.test_fraction)))
    first_val = first_test - cfg.validation_days
    if first_test >= n:
        raise DataError(f"data.test_start {cfg.test_start} is after the last day with prices ({returns.index[-1].date()})")
    if first_val < 250:
        raise DataError(
            f"{first_val} training days before the validation period (data.validation_days={cfg.validation_days}); "
            "at least 250 are needed: set an earlier data.start or a later data.test_start, or give a longer history"
        )
    split = np.array(["train"] * n, dtype=object)
    split[first_val:first_test] = "validation"
    split[first_test:] = "test"
    return pd.Series(split, index=returns.index, name="split")


def fingerprint(prices: pd.DataFrame, cfg: MarketDataConfig) -> str:
    digest = hashlib.sha256(pd.util.hash_pandas_object(prices, index=True).values.tobytes())
    digest.update(json.dumps(list(map(str, prices.columns))).encode())  # the values' hash ignores the assets' names
    digest.update(json.dumps({"version": PREPARE_VERSION, "config": cfg.model_dump(exclude={"path"})}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def write_prepared(prices: pd.DataFrame, cfg: MarketDataConfig, out: Path, source: str) -> dict:
    """Write the prepared folder (see the module docstring); return its stats."""
    if cfg.start:
        prices = prices[prices.index >= pd.Timestamp(cfg.start)]
    returns, gaps = to_returns(prices)
    if len(returns) < 2:
        raise DataError(f"{source}: {len(returns)} day(s) with a price for every asset; nothing to model")
    split = split_dates(returns, cfg)
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
            "read": len(prices),
            "kept": counts["train"],
            "held_out": counts["validation"] + counts["test"],
            "rejected": {f"no price for {k}": v for k, v in gaps.items()},
        },
        "test": {"read": counts["test"], "kept": counts["test"], "held_out": 0, "rejected": {}},
        "assets": list(map(str, returns.columns)),
        "periods": periods,
        "days": counts,
        "gaps": gaps,
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
