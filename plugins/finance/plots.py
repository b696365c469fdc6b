"""Report figures for market scenarios: price fan charts, return tails, autocorrelations, VaR backtests.

Each function draws one figure, writes it as a PNG (dpi 100, about 8–10 × 3.5 inches) to ``out`` and returns
that path. Returns are daily log returns in percent, as in :mod:`.metrics`; dates are anything numpy reads as
``datetime64`` (a pandas ``DatetimeIndex``, ``datetime.date`` objects, ISO strings), or None for day numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_FAN_BANDS = ((0.01, 0.99, 0.15), (0.05, 0.95, 0.25), (0.25, 0.75, 0.4))  # quantile pair, shade: outer to inner


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on workers; set inside so importing this module stays cheap
    import matplotlib.pyplot as plt

    return plt


def _dates(dates) -> np.ndarray:
    return np.asarray(dates, dtype="datetime64[D]")


def _date_axis(ax) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _save(fig, out) -> Path:
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def fan_chart(
    history_dates,
    history_prices,
    scenario_prices,
    out,
    real_future=None,
    future_dates=None,
    title: str = "Price scenarios from the forecast date",
    history_days: int | None = None,
) -> Path:
    """The recent price path, then the spread of scenario price paths, as a fan.

    ``history_prices`` (H,) ends on the forecast date; its last ``history_days`` are drawn (all when None).
    ``scenario_prices`` (n, T) are the n scenarios' prices on the T days after it; the fan shows their 1–99 %,
    5–95 % and 25–75 % bands and median per day, each starting from the last real price. ``real_future`` (T,), the
    prices that were realised, is drawn over the fan when given. ``future_dates`` default to the business days after
    the last history date; with ``history_dates`` None the x axis counts trading days from the forecast date.
    """
    plt = _pyplot()
    shown = slice(-history_days if history_days else None, None)
    hist = np.asarray(history_prices, dtype=float)[shown]
    scen = np.asarray(scenario_prices, dtype=float)
    t = scen.shape[1]
    if history_dates is None:
        x_hist, x_fut = np.arange(1 - len(hist), 1), np.arange(1, t + 1)
    else:
        x_hist = _dates(history_dates)[shown]
        x_fut = _dates(future_dates) if future_dates is not None else np.busday_offset(x_hist[-1], np.arange(1, t + 1), roll="forward")
    x = np.concatenate([x_hist[-1:], x_fut])  # the fan opens at the last real price
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=100)
    ax.plot(x_hist, hist, color="black", lw=1.2, label="history")
    for lo, hi, shade in _FAN_BANDS:
        low, high = np.quantile(scen, [lo, hi], axis=0)
        ax.fill_between(
            x,
            np.r_[hist[-1], low],
            np.r_[hist[-1], high],
            color="tab:blue",
            alpha=shade,
            lw=0,
            label=f"{100 * lo:g}–{100 * hi:g} % of scenarios",
        )
    ax.plot(x, np.r_[hist[-1], np.median(scen, axis=0)], color="tab:blue", lw=1.5, label="scenario median")
    if real_future is not None:
        ax.plot(x, np.r_[hist[-1], np.asarray(real_future, dtype=float)], color="tab:red", lw=1.3, label="realised")
    ax.axvline(x[0], color="grey", lw=0.8, ls=":")
    if history_dates is None:
        ax.set_xlabel("trading days from the forecast date")
    else:
        _date_axis(ax)
    ax.set_ylabel("price")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, out)


def tail_histograms(real, fake, out, label_real: str = "test period", label_fake: str = "scenarios") -> Path:
    """Histograms of 1-day returns, real (m,) against generated (k,), on shared bins and a log density axis.

    The log scale makes the tails, where risk lives, as visible as the centre.
    """
    plt = _pyplot()
    real, fake = np.ravel(np.asarray(real, dtype=float)), np.ravel(np.asarray(fake, dtype=float))
    bins = np.histogram_bin_edges(np.concatenate([real, fake]), bins=80)
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=100)
    ax.hist(fake, bins, density=True, color="tab:blue", alpha=0.45, label=label_fake)
    ax.hist(real, bins, density=True, histtype="step", color="black", lw=1.3, label=label_real)
    ax.set_yscale("log")
    ax.set_xlabel("1-day log return (%)")
    ax.set_ylabel("density (log scale)")
    ax.set_title("Distribution of daily returns: tails on a log scale")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def acf_plot(curves: dict, out, band_label: str = "5–95 % of scenarios") -> Path:
    """Autocorrelation of returns r, |r| and r² by lag, real against generated: three panels.

    ``curves`` is :func:`.metrics.acf_curves`' result; ``band_label`` names its band (its default band is 5–95 %).
    Volatility clustering shows as slowly decaying positive ACFs of |r| and r²; the ACF of r should be near 0.
    """
    plt = _pyplot()
    titles = {"r": "returns r", "abs": "absolute returns |r|", "sq": "squared returns r²"}
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4), dpi=100)
    for ax, (name, what) in zip(axes, titles.items()):
        real, mean, lo, hi = curves[name]
        lags = np.arange(1, len(real) + 1)
        ax.fill_between(lags, lo, hi, color="tab:blue", alpha=0.25, lw=0, label=band_label)
        ax.plot(lags, mean, color="tab:blue", lw=1.3, label="scenarios, mean")
        ax.plot(lags, real, color="black", lw=1.1, label="real")
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_title(f"Autocorrelation of {what}", fontsize=10)
        ax.set_xlabel("lag (trading days)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("autocorrelation")
    axes[0].legend(fontsize=7)
    return _save(fig, out)


def backtest_plot(dates, y, var, out, alpha: float) -> Path:
    """Realised daily returns y (n,) against the forecast −VaR (n,) at tail level ``alpha``, breaches marked.

    A breach is a day with y ≤ −VaR, as in :func:`.metrics.backtest_scores`; about α·n are expected.
    """
    plt = _pyplot()
    y, var = np.asarray(y, dtype=float), np.asarray(var, dtype=float)
    x = np.arange(len(y)) if dates is None else _dates(dates)
    hits = y <= -var
    level = f"{100 * (1 - alpha):g} %"
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    ax.plot(x, y, color="grey", lw=0.7, label="realised return")
    ax.plot(x, -var, color="tab:red", lw=1.2, label=f"−VaR {level}")
    ax.scatter(x[hits], y[hits], color="tab:red", s=16, zorder=3, label="breach")
    ax.axhline(0, color="black", lw=0.5)
    if dates is None:
        ax.set_xlabel("trading day")
    else:
        _date_axis(ax)
    ax.set_ylabel("1-day log return (%)")
    ax.set_title(f"VaR {level} backtest: {int(hits.sum())} breaches in {len(y)} days, {alpha * len(y):.1f} expected")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, out)
