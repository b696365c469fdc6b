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

import json
import shutil
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from pydantic import Field, PositiveInt, field_validator, model_validator

from genforge.core import (
    Checkpoint,
    DataError,
    Generator,
    GeneratorConfig,
    PreparedData,
    Reference,
    Run,
    SampleConfig,
    Samples,
    TrainConfig,
    Trainer,
    store,
)
from genforge.core.kinds import Scenarios

from . import backtest
from .data import MarketDataConfig, as_date_text, fingerprint, load_prices, load_split, long_form, prepare_once
from .textbook_models import ScenarioModel

HISTORY = "history.parquet"  # the returns a trained model conditions on, beside its weights


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

    @field_validator("given", mode="before")
    @classmethod
    def _given(cls, value):
        value = as_date_text(value)
        if value not in ("test", "last"):
            try:
                pd.Timestamp(value)
            except ValueError:
                raise ValueError(f"{value!r} is neither 'test', 'last' nor a date (YYYY-MM-DD)") from None
        return value


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
        model.fit(returns[split != "test"].to_numpy())
        trainer.record_fit(time.perf_counter() - t0, stopped_by="fitted")  # arch's optimiser, no training loop
        path = trainer.run_dir / "model.json"
        if trainer.is_main:
            self.keep_history(data, trainer.run_dir)
            store.atomic_write_text(path, json.dumps({"model": type(model).__name__, "state": model.state()}, indent=1))
        return Checkpoint(path, 0, details={"fitted_on": f"{int((split != 'test').sum())} days before the test period"})

    # -- sampling ---------------------------------------------------------------------------

    def sample(self, checkpoint: Checkpoint, config: FinanceConfig, run: Run) -> Samples:
        cfg = config.sample
        returns, split = load_split(Path(checkpoint.path).parent / HISTORY)
        model = self.load_model(checkpoint)
        first, label = start_day(returns, split, cfg.given)
        first_test = int(np.argmax(split.to_numpy() == "test"))
        if self.refits and first != first_test:
            # the fit saw the days before the test period; from another day, a desk refits on
            # every day before it (for `last`, the latest prices; for an earlier date, no look-ahead)
            model.fit(returns.to_numpy()[:first])
        assets = list(map(str, returns.columns))
        path, pnl = self.draw(model, returns.to_numpy()[:first], cfg, assets, run.samples_dir)
        details = {
            "history_end": label,
            "horizon": cfg.horizon,
            "assets": assets,
            "risk": {b: {k: round(v, 3) for k, v in row.items()} for b, row in backtest.pnl_risk(pnl, assets).items()},
        }
        if cfg.backtest:
            model = self.load_model(checkpoint)  # as fitted before the test period; the backtest refits as it goes
            table = backtest.forecast(
                model,
                returns,
                first_test,
                n=cfg.backtest_scenarios,
                horizons=tuple(cfg.backtest_horizons),
                refit_every=cfg.refit_every if self.refits else None,
                seed=cfg.seed,
                progress=lambda done, total: run.report_progress("backtest", done, total),
            )
            table.to_parquet(run.samples_dir / backtest.FILENAME, index=False)
            details["backtest"] = (
                f"{table['date'].nunique()} test days, {cfg.backtest_scenarios} scenarios each, horizons {cfg.backtest_horizons}"
            )
        return Samples(self.kind, path, cfg.n, details)

    def draw(
        self, model: ScenarioModel, history: np.ndarray, cfg: ScenarioSampleConfig, assets: list[str], folder: Path
    ) -> tuple[Path, np.ndarray]:
        """``cfg.n`` scenarios given ``history``, drawn and written part by part: (the scenarios file, their horizon P&L (n, A)).

        Memory stays bounded at any ``n``: each part holds at most ``part_values`` returns (5,000
        scenarios of 250 days for one asset), is written as a row group of the file and dropped;
        only the horizon P&L of every scenario is kept, so the risk summary is exact. The parts
        come one after another from one generator seeded by ``sample.seed``: the same seed gives
        the same scenarios, and the Gaussian and GARCH models draw the same paths as in one piece.
        """
        rng = np.random.default_rng(cfg.seed)
        per_part = max(1, self.part_values // (cfg.horizon * len(assets)))
        pnl = np.empty((cfg.n, len(assets)))
        with Scenarios().stream(folder) as write:
            for start in range(0, cfg.n, per_part):
                paths = model.simulate(history, min(per_part, cfg.n - start), cfg.horizon, rng)  # (part, horizon, A)
                write(long_form(paths, assets, first=start))
                pnl[start : start + len(paths)] = backtest.horizon_pnl(paths)
        return folder / Scenarios.filename, pnl

    @staticmethod
    def keep_history(data: PreparedData, run_dir: Path) -> None:
        """Copy the returns beside the weights: the sample step conditions on them, on whichever machine it runs."""
        shutil.copyfile(data.path / "returns.parquet", run_dir / HISTORY)


def start_day(returns: pd.DataFrame, split: pd.Series, given: str) -> tuple[int, str]:
    """The index of the first scenario day and the last real day before it (YYYY-MM-DD)."""
    n = len(returns)
    if given == "test":
        first = int(np.argmax(split.to_numpy() == "test"))
    elif given == "last":
        first = n
    else:
        first = int(np.searchsorted(returns.index.values, np.datetime64(pd.Timestamp(given)), side="right"))
        if first < 60:
            raise DataError(f"sample.given={given!r} leaves {first} days of history; the data start {returns.index[0].date()}")
    return first, str(returns.index[first - 1].date())
