"""Report-quality crossover charts for the notebooks (matplotlib, no pyplot: safe without a display).

Functions return a :class:`~matplotlib.figure.Figure` (Jupyter shows it when it is a cell's value)
and never call ``plt.show()``; :func:`save_figure` writes PNG + SVG under ``reports/``.

Bars are drawn on a trading-time axis: one step per bar, so nights and weekends take no space;
tick labels give the calendar time (UTC). Signal markers are findable by their ``gid``
(``"BUY signals"``, ``"SELL signals"``, ``"alerts received"``); their x data are bar positions
(the formatter's ``timestamps[int(x)]`` gives the bar's timestamp) and their y data the prices.
Both charts take the SMA windows ``short``/``long`` (default: the deployed 5/20).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, Formatter

from helpers.core.errors import ParameterError
from helpers.core.indicators import BUY, LONG_WINDOW, SELL, SHORT_WINDOW
from helpers.notebook.analysis import signals_frame, sma_columns, sma_frame
from helpers.pipeline.config import PROJECT_ROOT

__all__ = [
    "ALERTS_GID",
    "BUY_GID",
    "REPORTS_DIR",
    "SELL_GID",
    "BarTimeFormatter",
    "crossover_chart",
    "overview_chart",
    "save_figure",
]

log = logging.getLogger(__name__)

REPORTS_DIR = PROJECT_ROOT / "reports"
BUY_GID, SELL_GID, ALERTS_GID = "BUY signals", "SELL signals", "alerts received"
FIGSIZE, DPI = (11.0, 5.0), 150
COLORS = {"price": "#2b2b2b", "sma_short": "#ff7f0e", "sma_long": "#1f77b4", BUY: "#1a9641", SELL: "#d7191c"}
ALERT_COLOR = "#6a3d9a"

# Tick levels, finest first: (pandas period, label, context shown when it changes).
_LEVELS = (
    ("30min", "%H:%M", "%b %d"),
    ("h", "%H:%M", "%b %d"),
    ("D", "%b %d", "%Y"),
    ("M", "%b", "%Y"),
    ("Y", "%Y", ""),
)


class BarTimeFormatter(Formatter):
    """Labels bar positions with their UTC time; the context line (date, year) shows when it changes."""

    def __init__(self, times: pd.DatetimeIndex, label: str, context: str) -> None:
        self.times = times
        self.timestamps = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in times]
        self.label, self.context = label, context

    def _at(self, x: float) -> pd.Timestamp | None:
        i = round(x)
        return self.times[i] if 0 <= i < len(self.times) else None

    def __call__(self, x: float, pos: int | None = None) -> str:
        t = self._at(x)
        return "" if t is None else t.strftime(self.label)

    def format_ticks(self, values: Sequence[float]) -> list[str]:
        labels, shown = [], None
        for x in values:
            t = self._at(x)
            if t is None:
                labels.append("")
                continue
            context = t.strftime(self.context) if self.context else ""
            labels.append(t.strftime(self.label) + (f"\n{context}" if context and context != shown else ""))
            shown = context or shown
        return labels

    def format_data_short(self, value: float) -> str:
        t = self._at(value)
        return "" if t is None else t.strftime("%Y-%m-%d %H:%M UTC")


def _time_axis(ax: Axes, times: pd.DatetimeIndex, max_ticks: int) -> BarTimeFormatter:
    """Ticks at the first bar of each period, at the finest level that fits ``max_ticks``."""
    naive = times.tz_localize(None)
    levels = []
    for freq, label, context in _LEVELS:
        periods = naive.to_period(freq).asi8
        starts = np.flatnonzero(np.r_[True, periods[1:] != periods[:-1]])
        levels.append((starts, label, context))
    # Finest level that fits; a coarse level showing fewer than 4 ticks yields to the finer level, thinned.
    chosen = next((i for i, (starts, _, _) in enumerate(levels) if len(starts) <= max_ticks), len(levels) - 1)
    if chosen > 0 and len(levels[chosen][0]) < 4:
        chosen -= 1
    starts, label, context = levels[chosen]
    step = max(1, math.ceil(len(starts) / max_ticks))
    formatter = BarTimeFormatter(times, label, context)
    ax.xaxis.set_major_locator(FixedLocator(starts[::step].tolist()))
    ax.xaxis.set_major_formatter(formatter)
    ax.set_xlim(-0.5, len(times) - 0.5)
    return formatter


def _symbol_frame(
    df_symbol: pd.DataFrame, short: int, long: int
) -> tuple[str, pd.DataFrame, pd.DatetimeIndex]:
    frame = sma_frame(df_symbol, short, long)
    symbols = frame["symbol"].unique()
    if len(symbols) != 1:
        raise ParameterError(f"crossover_chart draws one symbol, got {list(symbols)}; use overview_chart")
    times = pd.DatetimeIndex(pd.to_datetime(frame["timestamp"], utc=True))
    return str(symbols[0]), frame, times


def _markers(
    ax: Axes, frame: pd.DataFrame, scale: float, size: float, windows: tuple[int, int]
) -> dict[str, int]:
    """BUY/SELL markers at the signal bars (always drawn, possibly empty, so tests can find them)."""
    signals = signals_frame(frame, *windows)
    position = {ts: i for i, ts in enumerate(frame["timestamp"])}
    counts: dict[str, int] = {}
    for kind, gid, marker in ((BUY, BUY_GID, "^"), (SELL, SELL_GID, "v")):
        rows = signals[signals["signal"] == kind]
        (line,) = ax.plot(
            [position[ts] for ts in rows["timestamp"]],
            rows["price"].to_numpy(dtype=float) * scale,
            linestyle="none",
            marker=marker,
            markersize=size,
            color=COLORS[kind],
            markeredgecolor="white",
            markeredgewidth=0.6,
            label=f"{gid} ({len(rows)})",
            zorder=4,
        )
        line.set_gid(gid)
        counts[kind] = len(rows)
    return counts


def _alerts(ax: Axes, symbol: str, times: pd.DatetimeIndex, alerts: Iterable[Any]) -> None:
    """Alerts actually received (Signal objects or alert dicts), as hollow circles at their bars."""
    position = {t: i for i, t in enumerate(times)}
    xs, ys, unplaced = [], [], 0
    for alert in alerts:
        data = alert.to_dict() if hasattr(alert, "to_dict") else dict(alert)
        if data.get("symbol", symbol) != symbol:
            continue
        i = position.get(pd.to_datetime(data["timestamp"], utc=True))
        if i is None:
            unplaced += 1
            continue
        xs.append(i)
        ys.append(float(data["price"]))
    if unplaced:
        log.warning("%s: %d alert(s) have a timestamp that is not a bar of the series", symbol, unplaced)
    (line,) = ax.plot(
        xs,
        ys,
        linestyle="none",
        marker="o",
        markersize=12,
        markerfacecolor="none",
        markeredgecolor=ALERT_COLOR,
        markeredgewidth=1.4,
        label=f"{ALERTS_GID} ({len(xs)})",
        zorder=5,
    )
    line.set_gid(ALERTS_GID)


def crossover_chart(
    df_symbol: pd.DataFrame,
    alerts: Iterable[Any] | None = None,
    *,
    title: str | None = None,
    currency: str = "USD",
    short: int = SHORT_WINDOW,
    long: int = LONG_WINDOW,
) -> Figure:
    """Price, SMA<short>, SMA<long> and the BUY/SELL signals of one symbol; alerts as hollow circles.

    ``df_symbol`` has columns symbol, timestamp, price (one symbol); ``alerts`` are
    :class:`~helpers.core.indicators.Signal` objects or alert dicts (timestamp, price, optional symbol).
    """
    symbol, frame, times = _symbol_frame(df_symbol, short, long)
    column_short, column_long = sma_columns(short, long)
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(frame))
    ax.plot(x, frame["price"], color=COLORS["price"], linewidth=1.0, label="price", zorder=2)
    ax.plot(x, frame[column_short], color=COLORS["sma_short"], linewidth=1.2, label=f"SMA{short}")
    ax.plot(x, frame[column_long], color=COLORS["sma_long"], linewidth=1.2, label=f"SMA{long}")
    counts = _markers(ax, frame, scale=1.0, size=7, windows=(short, long))
    if alerts is not None:
        _alerts(ax, symbol, times, alerts)
    _time_axis(ax, times, max_ticks=10)
    daily = bool((times == times.normalize()).all())
    fmt = "%Y-%m-%d" if daily else "%Y-%m-%d %H:%M"
    first, last = times[0].strftime(fmt), times[-1].strftime(fmt)
    ax.set_title(
        title or f"{symbol}: SMA{short}/SMA{long} crossovers — {counts[BUY]} BUY, {counts[SELL]} SELL",
        fontsize=13,
        loc="left",
    )
    axis_name = "Trading day" if daily else "Time (UTC)"
    ax.set_xlabel(
        f"{axis_name}, one step per bar, non-trading gaps closed — {first} to {last}, {len(frame)} bars"
    )
    ax.set_ylabel(f"Price ({currency})")
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.legend(loc="best", ncols=3, fontsize=9, framealpha=0.9)
    return fig


def overview_chart(
    df: pd.DataFrame,
    *,
    normalise: bool = False,
    ncols: int = 2,
    title: str | None = None,
    currency: str = "USD",
    short: int = SHORT_WINDOW,
    long: int = LONG_WINDOW,
) -> Figure:
    """Small multiples: one panel per symbol with price, SMA<long> and signal markers.

    With ``normalise`` each price series is indexed to 100 at its first bar.
    """
    frame_all = sma_frame(df, short, long)
    column_long = sma_columns(short, long)[1]
    symbols = sorted(frame_all["symbol"].unique())
    if not symbols:
        raise ParameterError("overview_chart needs at least one bar")
    ncols = max(1, min(ncols, len(symbols)))
    nrows = math.ceil(len(symbols) / ncols)
    fig = Figure(figsize=(FIGSIZE[0], 0.8 + 2.7 * nrows), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, symbol in zip(axes, symbols, strict=False):
        frame = frame_all[frame_all["symbol"] == symbol].reset_index(drop=True)
        times = pd.DatetimeIndex(pd.to_datetime(frame["timestamp"], utc=True))
        scale = 100.0 / float(frame["price"].iloc[0]) if normalise else 1.0
        x = np.arange(len(frame))
        ax.set_gid(str(symbol))
        ax.plot(x, frame["price"] * scale, color=COLORS["price"], linewidth=0.8, label="price")
        ax.plot(x, frame[column_long] * scale, color=COLORS["sma_long"], linewidth=0.9, label=f"SMA{long}")
        counts = _markers(ax, frame, scale=scale, size=4.5, windows=(short, long))
        _time_axis(ax, times, max_ticks=5 if ncols > 1 else 10)
        ax.set_title(f"{symbol}: {counts[BUY]} BUY, {counts[SELL]} SELL", fontsize=10, loc="left")
        ax.set_ylabel("Index (first bar = 100)" if normalise else f"Price ({currency})", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(True, color="#dddddd", linewidth=0.5)
    for ax in axes[len(symbols) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, [label.split(" (")[0] for label in labels], loc="outside lower center", ncols=4, fontsize=9
    )
    fig.suptitle(
        title or f"SMA{short}/SMA{long} crossover signals by symbol (time in UTC, gaps closed)",
        fontsize=13,
    )
    return fig


def save_figure(fig: Figure, path_stem: str | Path, *, directory: str | Path | None = None) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.svg`` (relative stems go under ``reports/``); return the paths."""
    stem = Path(path_stem)
    if not stem.is_absolute():
        stem = Path(directory or REPORTS_DIR) / stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    # Fixed SVG ids and no date stamp: re-running a notebook rewrites byte-identical SVGs.
    with mpl.rc_context({"svg.hashsalt": "stock-trend-pipeline"}):
        for fmt, metadata in (("png", None), ("svg", {"Date": None})):
            path = stem.with_name(f"{stem.name}.{fmt}")
            fig.savefig(path, format=fmt, dpi=fig.dpi, metadata=metadata)
            paths.append(path)
    log.info("saved %s", ", ".join(str(p) for p in paths))
    return paths
