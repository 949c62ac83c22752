"""Vectorised SMA crossover analysis for the notebooks (pandas/numpy; never imported by Lambda code).

The same exact integer-units rule as :mod:`helpers.core.indicators` (read its docstring), computed on
whole frames with numpy int64 prefix sums — no Python loop per bar — so the signals found here
equal, bar for bar, the alerts the trend Lambda publishes.

Every function takes the windows ``short``/``long`` (default: the deployed
:data:`~helpers.core.indicators.SHORT_WINDOW`/:data:`~helpers.core.indicators.LONG_WINDOW`; any pair
:func:`~helpers.core.indicators.check_windows` accepts); the SMA columns are named after them
(``sma5``/``sma20`` by default, :func:`sma_columns`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.core.errors import ParameterError
from helpers.core.indicators import (
    BUY,
    LONG_WINDOW,
    SELL,
    SHORT_WINDOW,
    UNITS_PER_PRICE,
    window_weights,
)

__all__ = [
    "BACKTEST_NOTE",
    "SMA_LONG",
    "SMA_SHORT",
    "backtest",
    "signal_counts",
    "signals_frame",
    "sma_columns",
    "sma_frame",
]


def sma_columns(short: int = SHORT_WINDOW, long: int = LONG_WINDOW) -> tuple[str, str]:
    """The SMA column names for the windows: ``("sma5", "sma20")`` for the deployed rule."""
    return f"sma{short}", f"sma{long}"


SMA_SHORT, SMA_LONG = sma_columns()
BACKTEST_NOTE = (
    "Illustrative only: long-only, enter at the BUY bar's price, exit at the SELL bar's price, "
    "open position marked at the last price; no costs, slippage, dividends or taxes."
)
_REQUIRED = ("symbol", "timestamp", "price")


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise ParameterError(f"frame lacks column(s) {missing}; expected at least {list(_REQUIRED)}")
    # One bar per (symbol, timestamp), the last one given wins — as in helpers.core.indicators.
    out = df.drop_duplicates(["symbol", "timestamp"], keep="last")
    return out.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)


def _window_sums(csum: np.ndarray, n: int) -> np.ndarray:
    """Sum of the last ``n`` values at each row (int64, exact; wraparound cancels in the difference)."""
    rows = np.arange(len(csum) - 1)
    return csum[rows + 1] - csum[np.maximum(rows + 1 - n, 0)]


def sma_frame(df: pd.DataFrame, short: int = SHORT_WINDOW, long: int = LONG_WINDOW) -> pd.DataFrame:
    """Bars sorted by symbol and timestamp with ``sma<short>``, ``sma<long>`` and ``state`` added.

    ``state`` is a nullable Int8 (-1, 0, +1; <NA> before the ``long``-th bar of a symbol), the SMAs
    are float means of the integer micro-units (NaN before the ``long``-th bar).
    """
    weight_short, weight_long = window_weights(short, long)
    column_short, column_long = sma_columns(short, long)
    out = _ordered(df)
    prices = out["price"].to_numpy(dtype="float64")
    if not np.isfinite(prices).all():
        raise ParameterError("prices must be finite numbers; quotes are validated upstream")
    units = np.rint(prices * UNITS_PER_PRICE).astype(np.int64)
    csum = np.concatenate(([0], np.cumsum(units, dtype=np.int64)))
    sum_short, sum_long = _window_sums(csum, short), _window_sums(csum, long)
    ready = out.groupby("symbol", sort=False).cumcount().to_numpy() >= long - 1
    diff = weight_short * sum_short - weight_long * sum_long
    out[column_short] = np.where(ready, sum_short / (short * UNITS_PER_PRICE), np.nan)
    out[column_long] = np.where(ready, sum_long / (long * UNITS_PER_PRICE), np.nan)
    out["state"] = pd.arrays.IntegerArray(np.sign(diff).astype(np.int8), ~ready)
    return out


def _signal_codes(frame: pd.DataFrame) -> np.ndarray:
    """+1 at BUY bars, -1 at SELL bars, 0 elsewhere, for an :func:`sma_frame` result."""
    state = frame["state"].fillna(0).to_numpy(dtype=np.int8)
    by_symbol = frame["symbol"].to_numpy()
    nonzero = pd.Series(np.where(state != 0, state, np.nan))
    before = nonzero.groupby(by_symbol, sort=False).ffill().groupby(by_symbol, sort=False).shift(1)
    previous = before.fillna(0).to_numpy()
    return np.where((state != 0) & (previous == -state), state, 0).astype(np.int8)


def signals_frame(df: pd.DataFrame, short: int = SHORT_WINDOW, long: int = LONG_WINDOW) -> pd.DataFrame:
    """Every BUY/SELL signal: columns symbol, timestamp, signal, price, sma<short>, sma<long>."""
    frame = sma_frame(df, short, long)
    codes = _signal_codes(frame)
    hits = frame.loc[codes != 0, ["symbol", "timestamp", "price", *sma_columns(short, long)]]
    hits.insert(2, "signal", np.where(codes[codes != 0] > 0, BUY, SELL))
    return hits.reset_index(drop=True)


def signal_counts(signals: pd.DataFrame) -> pd.DataFrame:
    """BUY and SELL counts per symbol of a :func:`signals_frame` result (both columns always there)."""
    counts = signals.groupby(["symbol", "signal"]).size().unstack(fill_value=0)
    if counts.empty:
        return pd.DataFrame({BUY: [], SELL: []}, dtype="int64").rename_axis("symbol")
    return counts.reindex(columns=[BUY, SELL], fill_value=0).astype("int64")


def backtest(df: pd.DataFrame, short: int = SHORT_WINDOW, long: int = LONG_WINDOW) -> pd.DataFrame:
    """Per symbol, an ILLUSTRATIVE long-only crossover strategy against buy-and-hold.

    Enter at the BUY bar's price, exit at the SELL bar's price, flat otherwise; a position still
    open at the end is marked at the last price. Buy-and-hold runs from the first to the last bar
    of the same series. No costs (see ``BACKTEST_NOTE``, also in the result's ``attrs``).
    Columns: symbol, start, end, bars, trades, open_at_end, strategy_return, buy_and_hold_return;
    ``attrs["windows"]`` holds ``(short, long)``.
    """
    frame = sma_frame(df, short, long)
    codes = _signal_codes(frame)
    by_symbol = frame["symbol"].to_numpy()
    # Position held after each bar: 1 from a BUY bar, 0 from a SELL bar, carried forward.
    marks = pd.Series(np.where(codes > 0, 1.0, np.where(codes < 0, 0.0, np.nan)))
    position = marks.groupby(by_symbol, sort=False).ffill().fillna(0.0)
    held_before = position.groupby(by_symbol, sort=False).shift(1).fillna(0.0).to_numpy()
    prices = frame["price"].astype("float64")
    ratio = (prices / prices.groupby(by_symbol, sort=False).shift(1)).fillna(1.0).to_numpy()
    work = pd.DataFrame(
        {
            "symbol": by_symbol,
            "timestamp": frame["timestamp"],
            "price": prices,
            "growth": np.where(held_before > 0, ratio, 1.0),
            "buy": codes > 0,
            "position": position.to_numpy(),
        }
    )
    groups = work.groupby("symbol", sort=True)
    result = pd.DataFrame(
        {
            "start": groups["timestamp"].first(),
            "end": groups["timestamp"].last(),
            "bars": groups.size(),
            "trades": groups["buy"].sum().astype("int64"),
            "open_at_end": groups["position"].last() > 0,
            "strategy_return": groups["growth"].prod() - 1.0,
            "buy_and_hold_return": groups["price"].last() / groups["price"].first() - 1.0,
        }
    ).reset_index()
    result.attrs["note"] = BACKTEST_NOTE
    result.attrs["windows"] = (short, long)
    return result
