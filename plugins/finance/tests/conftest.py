"""Fixtures of the finance plugin's tests: a fresh store, the shipped series as returns, one torch thread for the GAN."""

from __future__ import annotations

import pandas as pd
import pytest

from genforge.plugins.finance.data import MarketDataConfig, load_prices, split_dates, to_returns


@pytest.fixture
def store(genforge_home):
    return genforge_home


def _returns(series: list[str]) -> tuple[pd.DataFrame, pd.Series]:
    cfg = MarketDataConfig(series=series)
    returns, _ = to_returns(load_prices(cfg)[0])
    return returns, split_dates(returns, cfg)


@pytest.fixture(scope="session")
def sp500() -> tuple[pd.DataFrame, pd.Series]:
    """S&P 500 percent log returns 1999-2018 and their default split (test from 2015-01-02)."""
    return _returns(["sp500"])


@pytest.fixture(scope="session")
def sp500_nasdaq() -> tuple[pd.DataFrame, pd.Series]:
    return _returns(["sp500", "nasdaq"])


@pytest.fixture
def one_thread():
    """The GAN's tiny GRUs on one torch thread: on 2 shared cores, two OpenMP threads spin against each other
    (measured here: a 32x20 GRU pass 0.32 s with 2 threads under load, 0.0008 s with 1)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
