"""What every finance generator shares: its config sections, the data step, the sample step and the reference.

``scenario-gan`` (``gan_generator.py``) and the textbook ``gaussian``, ``garch`` and ``bootstrap``
(``textbook_generators.py``) differ only in the ``ScenarioModel`` they fit, so the pipeline, the
CLI and the report treat them alike. The sample step writes ``n`` scenarios of ``horizon``
days (percent log returns, the ``scenarios`` kind; drawn and written part by part, so memory
stays flat at any ``n``) from the day ``sample.given`` names, given the real history before
it, and — unless switched off — the conditional risk backtest over the test period
(``backtest.parquet``; see ``backtest.py``).
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import shutil
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from pydantic import Field, PositiveInt, field_validator, model_validator

from genforge.core import (
    Checkpoint,
    ConfigError,
    DataError,
    Generator,
    GeneratorConfig,
    PreparedData,
    Reference,
    Run,
    SampleConfig,
    Samples,
    Section,
    TrainConfig,
    Trainer,
    store,
)
from genforge.core.kinds import Scenarios

from . import backtest
from .data import MarketDataConfig, as_date_text, fingerprint, load_prices, load_split, long_form, prepare_once
from .textbook_models import ScenarioModel

HISTORY = "history.parquet"  # the returns a trained model conditions on, beside its weights
FITS = "fits.json"  # every fit a forecast used, beside the samples (parameters, standard errors, diagnostics, window)
FROM_MODEL = "from_model.json"  # the host's record of the registered version a sampling run installed


class BookConfig(Section):
    """The book whose risk is reported and backtested: long (or short) positions in the data's assets."""

    weights: dict[str, float] | None = Field(
        None, description="each asset's share of the book's value (they add up to 1; negative: short); None: equal shares"
    )
    positions: str | None = Field(
        None, description="a CSV of positions instead of weights: columns asset, notional (money), optional currency"
    )
    value: float = Field(1_000_000, gt=0, description="the book's value in its currency (with weights); a positions file sets it")
    currency: str = Field("USD", min_length=1, description="the book's currency (positions in another are refused: no FX rates)")


class ScenarioSampleConfig(SampleConfig):
    n: int = Field(1000, ge=1, description="scenarios to draw")
    horizon: int = Field(250, ge=1, description="days per scenario")
    given: str = Field(
        "test",
        description="where the scenarios start, given the real days before: 'test' (the first test day, so they can be "
        "scored against what happened), 'last' (the day after the data ends: the forward view), or a date YYYY-MM-DD",
    )
    backtest: bool = Field(True, description="run the conditional risk backtest over the test period")
    backtest_scenarios: int = Field(2000, ge=100, description="scenarios per test day in the backtest")
    backtest_horizons: list[PositiveInt] = Field([1, 10], min_length=1, description="horizons (days) of the backtest's VaR/ES")
    refit_every: int | None = Field(250, ge=1, description="the backtest refits models that can refit every this many days (None: never)")
    book: BookConfig = Field(default_factory=BookConfig)
    max_age_days: int | None = Field(
        None,
        ge=0,
        description="with given=last, refuse data more than this many calendar days old: from its last price, or from "
        "data.as_of when that is later (None: any age)",
    )

    @field_validator("given", mode="before")
    @classmethod
    def _given(cls, value):
        return as_date_text(value)  # a date is read in data.date_format (FinanceConfig)


class NoTrain(TrainConfig):
    """The textbook models fit in closed form or by ``arch``'s optimiser: nothing for the engine to run."""

    max_steps: int | None = Field(1, ge=1)


class FinanceConfig(GeneratorConfig):
    data: MarketDataConfig = Field(default_factory=MarketDataConfig)
    train: NoTrain = Field(default_factory=NoTrain)
    sample: ScenarioSampleConfig = Field(default_factory=ScenarioSampleConfig)

    @model_validator(mode="after")
    def _one_device(self) -> FinanceConfig:
        if self.train.devices > 1:
            raise ValueError("train.devices: the finance generators train on one device (their networks are small); set train.devices=1")
        return self

    @model_validator(mode="after")
    def _given_date(self) -> FinanceConfig:
        from .data import parse_date

        given = self.sample.given
        if given not in ("test", "last"):
            try:
                day = parse_date(given, self.data.date_format)
            except ValueError as exc:
                raise ValueError(f"sample.given: {given!r} is neither 'test', 'last' nor a date ({exc})") from None
            self.sample.given = day.date().isoformat()  # the spec records YYYY-MM-DD, whatever the format it was given in
        return self


class FinanceGenerator(Generator):
    """What every finance generator shares; a subclass says how to fit and load its ``ScenarioModel``."""

    kind: ClassVar[str] = "scenarios"
    libraries: ClassVar[tuple[str, ...]] = ("arch", "numpy", "scipy", "pandas")
    uses_gpu: ClassVar[bool] = False
    # the model refits during the backtest (textbook models do; a trained network does not)
    refits: ClassVar[bool] = True
    # returns (scenarios x days x assets) drawn and written at a time by the sample step: about 100 MB of work at a time
    part_values: ClassVar[int] = 1_250_000
    # the promotion gate (docs/models.md): the 1-day 1 % FZ0 of the backtest lower, with Kupiec's p 0.05 or more
    gate: ClassVar[dict] = {
        "metrics": ["market.backtest_1d_1pct_fz0"],
        "thresholds": {"market.backtest_1d_1pct_kupiec_p": 0.05},
    }
    test_spec: ClassVar[dict] = {
        "data": {"start": "2008-01-01", "test_start": "2012-01-01"},
        "sample": {"n": 50, "horizon": 30, "backtest_scenarios": 200, "given": "test"},
    }

    # -- data ---------------------------------------------------------------------------

    def model_files(self, checkpoint: Checkpoint) -> list[Path]:
        """The model's files and the returns it conditions on (``history.parquet``), which ``sample`` reads."""
        return [*super().model_files(checkpoint), Path(checkpoint.path).parent / HISTORY]

    def condition_on(self, data: PreparedData, checkpoint: Checkpoint, config: FinanceConfig) -> None:
        """Sampling from a registered model: the returns this run prepared (up to the last close of the deployment's data)
        replace the history kept with the version, so ``sample.given=last`` starts from today's prices, not the training's.
        The assets must be the model's."""
        kept = Path(checkpoint.path).parent / HISTORY
        trained_on = list(map(str, load_split(kept)[0].columns))
        now = list(map(str, load_split(data.path)[0].columns))
        if now != trained_on:
            raise DataError(
                f"this run's data has the assets {', '.join(now)}; the model was trained on {', '.join(trained_on)}: give data of "
                "the same assets (data.columns), or train a model on these"
            )
        store.atomic_write_bytes(kept, (Path(data.path) / "returns.parquet").read_bytes())

    def prepare(self, config: FinanceConfig, run: Run) -> PreparedData:
        cfg = config.data
        prices, source = load_prices(cfg)
        key = fingerprint(prices, cfg)
        out = run.cache_root / f"finance-{key}"
        stats, cache = prepare_once(prices, cfg, out, source)  # a bad file stops here: nothing in the cache
        return PreparedData(out, key, {**stats, "source": source, "cache": cache})  # the file this run read

    def reference(self, data: PreparedData, config: FinanceConfig) -> Reference:
        return Reference(self.kind, test=data.path / "test.parquet", train=data.path / "train.parquet", name=data.stats.get("source", ""))

    # -- models ---------------------------------------------------------------------------

    # the textbook model this generator fits; its constructor takes the `model` section's fields
    Model: ClassVar[type[ScenarioModel]]

    def make_model(self, config: FinanceConfig) -> ScenarioModel:
        return self.Model(**config.model.model_dump())

    def load_model(self, checkpoint: Checkpoint) -> ScenarioModel:
        return self.Model.from_state(json.loads(Path(checkpoint.path).read_text())["state"])

    def fit(self, data: PreparedData, config: FinanceConfig, trainer: Trainer) -> Checkpoint:
        """Fit on every day before the test period (train and validation), as a desk would."""
        returns, split = load_split(data.path)
        model = self.make_model(config)
        t0 = time.perf_counter()
        fitted = returns[split != "test"]
        model.fit(fitted.to_numpy())
        trainer.record_fit(time.perf_counter() - t0, stopped_by="fitted")  # arch's optimiser, no training loop
        path = trainer.run_dir / "model.json"
        record = backtest.fit_entry("fit before the test period", fitted, model)
        if trainer.is_main:
            self.keep_history(data, trainer.run_dir)
            store.atomic_write_text(path, json.dumps({"model": type(model).__name__, "state": model.state(), "fit": record}, indent=1))
        window = f"{record['window'][0]} to {record['window'][1]}"
        return Checkpoint(path, 0, details={"fitted_on": f"{len(fitted)} days before the test period ({window})"})

    # -- sampling ---------------------------------------------------------------------------

    def sample(self, checkpoint: Checkpoint, config: FinanceConfig, run: Run) -> Samples:
        cfg = config.sample
        returns, split = load_split(Path(checkpoint.path).parent / HISTORY)
        model = self.load_model(checkpoint)
        first, history_end, as_of = start_day(returns, split, cfg.given, config)
        first_test = int(np.argmax(split.to_numpy() == "test"))
        assets = list(map(str, returns.columns))
        weights, value, currency, book_source = resolve_book(cfg.book, assets)
        saved = json.loads(Path(checkpoint.path).read_text()).get("fit") if Path(checkpoint.path).suffix == ".json" else None
        fits = [saved] if saved else []
        if self.refits and first != first_test:
            # the fit saw the days before the test period; from another day, a desk refits on
            # every day before it (for `last`, the latest prices; for an earlier date, no look-ahead)
            model.fit(returns.to_numpy()[:first])
            fits.append(backtest.fit_entry(f"forecast from {as_of}", returns.iloc[:first], model))
        source = run.read_json(FROM_MODEL, None) or {}
        model_id = source.get("ref") or f"run {run.id}"
        dates = step_dates(returns.index, first, cfg.horizon, as_of)
        extra = {"as_of": pd.Timestamp(as_of), "model": model_id}
        path, pnl = self.draw(model, returns.to_numpy()[:first], cfg, assets, run.samples_dir, dates=dates, extra=extra)
        risk = backtest.pnl_risk(pnl, assets, weights, value)
        details = {
            "as_of": as_of,
            "history_end": history_end,
            "horizon": cfg.horizon,
            "assets": assets,
            "model": model_id,
            "book": {"weights": dict(zip(assets, map(float, weights))), "value": value, "currency": currency, "source": book_source},
            "risk": {b: {k: round(v, 6) for k, v in row.items()} for b, row in risk.items()},
        }
        if cfg.backtest:
            model = self.load_model(checkpoint)  # as fitted before the test period; the backtest refits as it goes
            table, draws = backtest.forecast(
                model,
                returns,
                first_test,
                n=cfg.backtest_scenarios,
                horizons=tuple(cfg.backtest_horizons),
                weights=weights,
                refit_every=cfg.refit_every if self.refits else None,
                seed=cfg.seed,
                progress=lambda done, total: run.report_progress("backtest", done, total),
                fits=fits,
            )
            table.to_parquet(run.samples_dir / backtest.FILENAME, index=False)
            draws.to_parquet(run.samples_dir / backtest.DRAWS, index=False)
            details["backtest"] = (
                f"{table['date'].nunique()} test days, {cfg.backtest_scenarios} scenarios each where drawn "
                f"({int(table['exact'].mean() * 100)} % of forecasts exact), horizons {cfg.backtest_horizons}"
            )
        store.atomic_write_text(run.samples_dir / FITS, json.dumps(fits, indent=1))
        return Samples(self.kind, path, cfg.n, details)

    def draw(
        self,
        model: ScenarioModel,
        history: np.ndarray,
        cfg: ScenarioSampleConfig,
        assets: list[str],
        folder: Path,
        dates: pd.DatetimeIndex | None = None,
        extra: dict | None = None,
    ) -> tuple[Path, np.ndarray]:
        """``cfg.n`` scenarios given ``history``, drawn and written part by part: (the scenarios file, their horizon log returns (n, A)).

        Memory stays bounded at any ``n``: each part holds at most ``part_values`` returns (5,000
        scenarios of 250 days for one asset), is written as a row group of the file and dropped;
        only the horizon log return of every scenario is kept, so the risk summary is exact. The parts
        come one after another from one generator seeded by ``sample.seed``: the same seed gives
        the same scenarios, and the Gaussian and GARCH models draw the same paths as in one piece.
        ``dates`` (one per step) and ``extra`` (constant columns: the as-of date, the model) are written beside each value.
        """
        rng = np.random.default_rng(cfg.seed)
        per_part = max(1, self.part_values // (cfg.horizon * len(assets)))
        pnl = np.empty((cfg.n, len(assets)))
        with Scenarios().stream(folder) as write:
            for start in range(0, cfg.n, per_part):
                paths = model.simulate(history, min(per_part, cfg.n - start), cfg.horizon, rng)  # (part, horizon, A)
                frame = long_form(paths, assets, first=start)
                if dates is not None:
                    frame["date"] = np.asarray(dates)[frame["step"].to_numpy()]
                for column, value in (extra or {}).items():
                    frame[column] = value
                write(frame)
                pnl[start : start + len(paths)] = backtest.horizon_pnl(paths)
        return folder / Scenarios.filename, pnl

    @staticmethod
    def keep_history(data: PreparedData, run_dir: Path) -> None:
        """Copy the returns beside the weights: the sample step conditions on them, on whichever machine it runs."""
        shutil.copyfile(data.path / "returns.parquet", run_dir / HISTORY)


def start_day(returns: pd.DataFrame, split: pd.Series, given: str, config: FinanceConfig) -> tuple[int, str, str]:
    """(the index of the first scenario day, the last real day before it, the as-of date), all dates YYYY-MM-DD.

    A date after the last price is refused unless ``data.as_of`` says the data is complete up to it (a holiday, a
    market closed since); with ``given=last``, ``sample.max_age_days`` refuses data whose last price is too old.
    """
    from .data import parse_date

    n = len(returns)
    last = returns.index[-1]
    as_of_data = getattr(config.data, "as_of", None)
    marked = parse_date(as_of_data, config.data.date_format) if as_of_data else None
    if given == "test":
        first = int(np.argmax(split.to_numpy() == "test"))
        return first, str(returns.index[first - 1].date()), str(returns.index[first - 1].date())
    if given == "last":
        first = n
        as_of = max(last, marked) if marked is not None else last
        limit = config.sample.max_age_days
        today = pd.Timestamp(datetime.date.today())
        age = (today - as_of).days
        if limit is not None and age > limit:
            raise DataError(
                f"the data end {as_of.date()}, {age} days before today ({today.date()}); sample.max_age_days={limit}: "
                "give prices up to the last close (data.path), or raise sample.max_age_days"
            )
        return first, str(last.date()), str(as_of.date())
    day = parse_date(given, config.data.date_format)
    if day > last and (marked is None or marked < day):
        raise DataError(
            f"sample.given={given} is after the last price ({last.date()}, {(day - last).days} days earlier): give prices up to "
            f"that date, or set data.as_of={day.date()} if the data is complete up to it (the market was closed since)"
        )
    first = int(np.searchsorted(returns.index.values, np.datetime64(day), side="right"))
    if first < 60:
        raise DataError(f"sample.given={given!r} leaves {first} days of history; the data start {returns.index[0].date()}")
    return first, str(returns.index[first - 1].date()), str(day.date())


def step_dates(index: pd.DatetimeIndex, first: int, horizon: int, as_of: str) -> pd.DatetimeIndex:
    """The calendar date of each scenario step: the data's own days where they exist, then business days after the as-of date."""
    known = index[first : first + horizon]
    start = known[-1] if len(known) else pd.Timestamp(as_of)
    more = pd.bdate_range(start + pd.offsets.BDay(1), periods=horizon - len(known)) if len(known) < horizon else []
    return pd.DatetimeIndex([*known, *more])


def fit_warnings(fits: list[dict]) -> list[str]:
    """A sentence per asset and problem over every fit: one that did not converge, a parameter on a bound of the optimiser."""
    found: dict[tuple[str, str], list[str]] = {}
    for entry in fits:
        for asset, record in zip(entry.get("assets", []), entry.get("fit", [])):
            if record.get("converged") is False:
                found.setdefault((asset, "did not converge"), []).append(entry["purpose"])
            for name in record.get("on_bound", []):
                found.setdefault((asset, f"{name} on a bound of the optimiser"), []).append(entry["purpose"])
    out = []
    for (asset, problem), purposes in found.items():
        refits = sum(p.startswith("backtest refit") for p in purposes)
        named = [p for p in purposes if not p.startswith("backtest refit")] + ([f"{refits} backtest refit(s)"] if refits else [])
        out.append(f"{asset}: {problem} in {len(purposes)} of {len(fits)} fits ({'; '.join(named)})")
    return out


def resolve_book(cfg: BookConfig, assets: list[str]) -> tuple[np.ndarray, float, str, str]:
    """The book's weights (one per asset, in order), value, currency, and where they came from."""
    if cfg.positions and cfg.weights:
        raise ConfigError("sample.book: give weights or a positions file, not both")
    if cfg.positions:
        notional = read_positions(Path(cfg.positions).expanduser(), assets, cfg.currency)
        value = float(sum(notional.values()))
        if value <= 0:
            raise DataError(f"{cfg.positions}: the positions' net value is {value:g} {cfg.currency}; a book of net value above 0 is needed")
        return np.array([notional.get(a, 0.0) / value for a in assets]), value, cfg.currency, str(cfg.positions)
    if not cfg.weights:
        return np.full(len(assets), 1 / len(assets)), cfg.value, cfg.currency, "equal weights"
    unknown = [a for a in cfg.weights if a not in assets]
    if unknown:
        raise ConfigError(f"sample.book.weights: no asset {', '.join(map(repr, unknown))} in the data; it has {', '.join(assets)}")
    total = sum(cfg.weights.values())
    if not math.isfinite(total) or abs(total - 1) > 1e-9:
        raise ConfigError(
            f"sample.book.weights add up to {total:g}; they are shares of the book's value (sample.book.value): make them add up to 1"
        )
    return np.array([float(cfg.weights.get(a, 0.0)) for a in assets]), cfg.value, cfg.currency, "sample.book.weights"


def read_positions(path: Path, assets: list[str], currency: str) -> dict[str, float]:
    """A positions CSV (asset, notional[, currency]) -> notional per asset; anything wrong is one line naming the row."""
    from genforge.core.inputs import open_regular

    with open_regular(path, "", "give the path of a CSV of positions (asset, notional, currency)") as raw:
        rows = list(csv.reader(raw.read().decode("utf-8-sig").splitlines()))
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "asset" not in header or "notional" not in header:
        hint = "; a quantity is not enough: give notional = quantity × price" if "quantity" in header else ""
        raise DataError(f"{path}: the header needs columns asset and notional (and optionally currency); it has {', '.join(header)}{hint}")
    out: dict[str, float] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}, row {line} has {len(row)} cells where the header has {len(header)}")
        cell = dict(zip(header, (c.strip() for c in row)))
        asset = cell["asset"]
        if asset not in assets:
            raise DataError(f"{path}, row {line}: no asset {asset!r} in the data; it has {', '.join(assets)}")
        if asset in out:
            raise DataError(f"{path}, row {line}: asset {asset!r} appears twice; give one position per asset")
        try:
            notional = float(cell["notional"].replace(",", "")) if cell["notional"] else float("nan")
        except ValueError:
            notional = float("nan")
        if not np.isfinite(notional):
            raise DataError(f"{path}, row {line}, column 'notional': {cell['notional']!r} is not a number")
        if cell.get("currency") and cell["currency"] != currency:
            raise DataError(
                f"{path}, row {line}: a position in {cell['currency']}, the book is in {currency} (sample.book.currency): "
                "convert it (genforge has no FX rates)"
            )
        out[asset] = notional
    if not out:
        raise DataError(f"{path}: no positions")
    return out
