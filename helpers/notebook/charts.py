"""Report-grade charts for the notebooks (matplotlib without pyplot: safe without a display).

Why plain matplotlib and not mplchart or mplfinance: the charts need bar-exact signal markers that
tests can read back, session separators and exchange-time ticks on a trading-time axis, small
multiples in one figure, and byte-stable SVGs. Matplotlib (already locked) does all of that with
a stable API; mplchart (0.0.x) owns its figure and date axis, and mplfinance is not in the lock.

Charts are drawn on a trading-time axis: one step per bar, so nights and weekends take no space;
intraday bars are labelled in the exchange's time zone (``America/New_York``) and dotted lines
separate the sessions. Price is drawn as candles when few bars are visible
(:data:`CANDLE_MAX_BARS`) and as a close line otherwise, on a log scale when the visible span
calls for it (:data:`LOG_SCALE_RATIO`); a volume panel sits below when the bars carry volume.
SMA<short> (solid orange) and SMA<long> (dashed blue) are computed over the whole series, so a
window's first bars have their SMAs.

Signal markers are findable by their ``gid`` (:data:`BUY_GID`, :data:`SELL_GID`); their x data are
bar positions (the axis formatter's ``timestamps[int(x)]`` gives the bar's canonical UTC
timestamp) and their y data the signal prices. Whether the alerts received match the signals is
a separate QA chart (:func:`alerts_qa_chart`), not ink on the report chart.

Figures are returned, never shown: :func:`publish` saves ``<name>.png`` and ``<name>.svg`` and
returns a :class:`SavedChart` that Jupyter displays as the saved PNG (an ``image/png`` output,
whatever the matplotlib backend — a Figure built without pyplot never displays by itself).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, Formatter, FuncFormatter, LogLocator, NullFormatter

from helpers.core.errors import ParameterError
from helpers.core.indicators import BUY, LONG_WINDOW, SELL, SHORT_WINDOW
from helpers.notebook.analysis import signals_frame, sma_columns, sma_frame
from helpers.pipeline.config import PROJECT_ROOT

__all__ = [
    "BUY_GID",
    "CANDLES_GID",
    "CANDLE_MAX_BARS",
    "CAPTIONS_FILE",
    "EXCHANGE_TZ",
    "LOG_SCALE_RATIO",
    "PRICE_GID",
    "REPORTS_DIR",
    "SELL_GID",
    "SESSION_GID",
    "VOLUME_GID",
    "BarTimeFormatter",
    "SavedChart",
    "alerts_qa_chart",
    "caption_of",
    "crossover_chart",
    "daily_close_chart",
    "is_daily",
    "overview_chart",
    "publish",
    "save_figure",
    "sessions_chart",
]

log = logging.getLogger(__name__)

REPORTS_DIR = PROJECT_ROOT / "reports"
CAPTIONS_FILE = "charts.json"  # chart name -> caption, read by report.html
EXCHANGE_TZ = "America/New_York"  # the US listings the sources carry; intraday ticks use it
BUY_GID, SELL_GID = "BUY signals", "SELL signals"
PRICE_GID, CANDLES_GID, VOLUME_GID, SESSION_GID = "price", "candles", "volume", "session separators"
CANDLE_MAX_BARS = 150  # more visible bars than this: a close line (candles thinner than ~8 px blur)
LOG_SCALE_RATIO = 3.0  # visible high / low at or above this: log price axis
FIGSIZE, DPI = (11.0, 5.0), 150
VOLUME_FIGSIZE = (11.0, 6.5)
COLORS = {
    "price": "#2b2b2b",
    "sma_short": "#e69f00",  # orange, solid
    "sma_long": "#0072b2",  # blue, dashed
    "up": "#2ca25f",
    "down": "#de2d26",
    "volume": "#9e9e9e",
    "session": "#9e9e9e",
    BUY: "#1a9641",
    SELL: "#d7191c",
    "missing": "#d7191c",
    "extra": "#6a3d9a",
}
SMA_STYLE: dict[str, dict[str, Any]] = {
    "short": {"linestyle": "-", "linewidth": 1.5},
    "long": {"linestyle": (0, (5, 2)), "linewidth": 1.9},
}

# Tick levels, finest first: (pandas period, label, context shown when it changes).
_LEVELS = (
    ("30min", "%H:%M", "%a %b %d"),
    ("h", "%H:%M", "%a %b %d"),
    ("D", "%b %d", "%Y"),
    ("M", "%b", "%Y"),
    ("Y", "%Y", ""),
)


class BarTimeFormatter(Formatter):
    """Labels bar positions with their time (exchange time for intraday bars); context when it changes.

    ``timestamps`` holds each bar's canonical UTC timestamp (``2026-07-29T13:30:00Z``), whatever the
    time zone of the labels.
    """

    def __init__(self, times: pd.DatetimeIndex, label: str, context: str) -> None:
        self.times = times
        utc = times.tz_convert("UTC") if times.tz is not None else times
        self.timestamps = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in utc]
        self.label, self.context = label, context
        self.zone = _zone_name(times)

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
        return "" if t is None else t.strftime(f"%Y-%m-%d %H:%M {self.zone}")


def _zone_name(times: pd.DatetimeIndex) -> str:
    if times.tz is None or len(times) == 0:
        return "UTC"
    return str(times[0].tzname() or times.tz)


# --------------------------------------------------------------------------- time axis and windows


def is_daily(times: pd.DatetimeIndex | pd.Series) -> bool:
    """Daily bars (every timestamp at midnight UTC), as the daily replay writes them."""
    index = pd.DatetimeIndex(pd.to_datetime(times, utc=True))
    return bool(len(index)) and bool((index == index.normalize()).all())


def _display_times(utc: pd.DatetimeIndex, tz: str) -> pd.DatetimeIndex:
    """Daily bars keep their calendar date (UTC midnight); intraday bars move to the exchange zone."""
    return utc if is_daily(utc) else utc.tz_convert(tz)


def _time_axis(ax: Axes, times: pd.DatetimeIndex, max_ticks: int) -> BarTimeFormatter:
    """Ticks at the first bar of each period, at the finest level that fits ``max_ticks``."""
    naive = times.tz_localize(None)
    levels = []
    for freq, label, context in _LEVELS[2:] if is_daily(times) else _LEVELS:
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


def _session_starts(times: pd.DatetimeIndex) -> np.ndarray:
    """Positions of the first bar of every session after the first (intraday, exchange dates)."""
    if is_daily(times):
        return np.array([], dtype=int)
    days = times.tz_localize(None).normalize().asi8
    return np.flatnonzero(days[1:] != days[:-1]) + 1


def _separators(ax: Axes, times: pd.DatetimeIndex) -> int:
    starts = _session_starts(times)
    for i, x in enumerate(starts):
        line = ax.axvline(x - 0.5, color=COLORS["session"], linestyle=":", linewidth=0.9, zorder=1)
        line.set_gid(SESSION_GID if i == 0 else f"{SESSION_GID} {i}")
    return len(starts)


def _parse_bound(value: str | pd.Timestamp | None, daily: bool, tz: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as err:
        raise ParameterError(
            f"chart window bound {value!r} is not a date or time; use e.g. '2026-08-05' or '2026-08-05 10:00'"
        ) from err
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC" if daily else tz)
    return stamp.tz_convert("UTC")


def _window(
    utc: pd.DatetimeIndex,
    tz: str,
    start: str | pd.Timestamp | None,
    end: str | pd.Timestamp | None,
    sessions: int | str | None,
) -> np.ndarray:
    """Boolean mask of the bars to draw: ``start <= t < end`` (naive bounds in exchange time for
    intraday bars, UTC dates for daily), else the last ``sessions`` sessions (default: the last
    session for intraday bars, everything for daily bars; ``"all"`` everything)."""
    daily = is_daily(utc)
    if start is not None or end is not None:
        lo, hi = _parse_bound(start, daily, tz), _parse_bound(end, daily, tz)
        mask = np.ones(len(utc), dtype=bool)
        if lo is not None:
            mask &= utc >= lo
        if hi is not None:
            mask &= utc < hi
        if not mask.any():
            raise ParameterError(
                f"no bars between start={start!r} and end={end!r}; the series runs from "
                f"{utc[0]:%Y-%m-%d %H:%M} to {utc[-1]:%Y-%m-%d %H:%M} UTC"
            )
        return mask
    if sessions == "all" or (sessions is None and daily):
        return np.ones(len(utc), dtype=bool)
    count = 1 if sessions is None else sessions
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ParameterError(f"sessions must be a whole number >= 1 or 'all', got {sessions!r}")
    local = _display_times(utc, tz)
    days = local.tz_localize(None).normalize()
    keep = np.sort(days.unique())[-count:]
    return np.asarray(days.isin(keep))


def _span(times: pd.DatetimeIndex, daily: bool) -> str:
    """'Aug 06, 2026, 09:30–10:10 EDT' (one session), 'Jul 29 – Aug 06, 2026' (several)."""
    first, last = times[0], times[-1]
    if daily:
        return f"{first:%b %d, %Y} – {last:%b %d, %Y}"
    if first.normalize() == last.normalize():
        return f"{first:%a %b %d, %Y}, {first:%H:%M}–{last:%H:%M} {_zone_name(times)}"
    year = "" if first.year == last.year else f", {first.year}"
    return f"{first:%b %d}{year} – {last:%b %d, %Y} ({_zone_name(times)})"


def _bar_unit(times: pd.DatetimeIndex, daily: bool) -> str:
    if daily:
        return "daily bars"
    if len(times) < 2:
        return "bars"
    step = pd.Series(times).diff().dropna().median()
    minutes = round(step.total_seconds() / 60)
    return f"{minutes}-minute bars" if 1 <= minutes < 60 else "intraday bars"


# --------------------------------------------------------------------------- drawing pieces


def _price_label(value: float, _pos: int | None = None) -> str:
    """300, 313.5, 1.25: as many decimals as the tick needs, up to cents."""
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _price_axis(ax: Axes, low: float, high: float, currency: str) -> bool:
    """Log scale when the visible span calls for it; plain numbers either way. True if log."""
    log_scale = low > 0 and high / low >= LOG_SCALE_RATIO
    if log_scale:
        ax.set_yscale("log")
        subs = (1.0, 2.0, 5.0) if high / low >= 20 else (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0)
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(_price_label))
    ax.set_ylabel(f"Price ({currency}{', log scale' if log_scale else ''})")
    return log_scale


def _has_ohlc(frame: pd.DataFrame) -> bool:
    columns = ["open", "high", "low"]
    return set(columns) <= set(frame.columns) and not frame[columns].isna().any().any()


def _draw_price(ax: Axes, frame: pd.DataFrame, x: np.ndarray, candles: bool) -> None:
    close = frame["price"].to_numpy(dtype=float)
    if candles:
        opens = frame["open"].to_numpy(dtype=float)
        up = close >= opens
        colors = np.where(up, COLORS["up"], COLORS["down"])
        wicks = ax.vlines(x, frame["low"], frame["high"], colors=list(colors), linewidth=0.8, zorder=2)
        wicks.set_gid(f"{CANDLES_GID} wicks")
        span = float(frame["high"].max() - frame["low"].min()) or 1.0
        height = np.maximum(np.abs(close - opens), span * 0.002)  # a doji still shows a body
        bodies = _boxes(x, np.minimum(close, opens), height, width=0.65, colors=colors, zorder=3)
        bodies.set_gid(CANDLES_GID)
        ax.add_collection(bodies)
        ax.plot([], [], color=COLORS["price"], linewidth=0, marker="s", label="price (candles)")
    else:
        (line,) = ax.plot(x, close, color=COLORS["price"], linewidth=0.9, label="price (close)", zorder=2)
        line.set_gid(PRICE_GID)


def _draw_smas(
    ax: Axes, frame: pd.DataFrame, x: np.ndarray, short: int, long: int, scale: float = 1.0
) -> None:
    column_short, column_long = sma_columns(short, long)
    ax.plot(
        x,
        frame[column_short] * scale,
        color=COLORS["sma_short"],
        label=f"SMA{short}",
        zorder=3,
        **SMA_STYLE["short"],
    )
    ax.plot(
        x,
        frame[column_long] * scale,
        color=COLORS["sma_long"],
        label=f"SMA{long}",
        zorder=3,
        **SMA_STYLE["long"],
    )


def _markers(
    ax: Axes, frame: pd.DataFrame, signals: pd.DataFrame, scale: float = 1.0, size: float = 8
) -> dict[str, int]:
    """BUY/SELL markers at the signal bars shown (always drawn, possibly empty, so tests can find them)."""
    position = {ts: i for i, ts in enumerate(frame["timestamp"])}
    counts: dict[str, int] = {}
    for kind, gid, marker in ((BUY, BUY_GID, "^"), (SELL, SELL_GID, "v")):
        rows = signals[(signals["signal"] == kind) & signals["timestamp"].isin(position)]
        (line,) = ax.plot(
            [position[ts] for ts in rows["timestamp"]],
            rows["price"].to_numpy(dtype=float) * scale,
            linestyle="none",
            marker=marker,
            markersize=size,
            color=COLORS[kind],
            markeredgecolor="white",
            markeredgewidth=0.7,
            label=f"{kind} ({len(rows)})",
            zorder=5,
        )
        line.set_gid(gid)
        counts[kind] = len(rows)
    return counts


def _volume(ax: Axes, frame: pd.DataFrame, x: np.ndarray) -> None:
    volume = frame["volume"].to_numpy(dtype=float)
    if "open" in frame.columns:
        up = frame["price"].to_numpy(dtype=float) >= frame["open"].to_numpy(dtype=float)
        colors = np.where(up, COLORS["up"], COLORS["down"])
    else:
        colors = np.full(len(frame), COLORS["volume"])
    width = 0.8 if len(x) <= CANDLE_MAX_BARS else 1.0
    bars = _boxes(x, np.zeros(len(x)), volume, width=width, colors=colors, alpha=0.55)
    bars.set_gid(VOLUME_GID)
    ax.add_collection(bars)
    ax.set_ylabel("Volume")
    ax.yaxis.set_major_formatter(FuncFormatter(_human))
    ax.set_ylim(0, max(float(volume.max()), 1.0) * 1.1)


def _boxes(
    x: np.ndarray, bottom: np.ndarray, height: np.ndarray, *, width: float, colors: Any, **kwargs: Any
) -> PolyCollection:
    """Rectangles centred on ``x`` as one artist (a BarContainer is one artist per bar)."""
    left, right, top = x - width / 2, x + width / 2, bottom + height
    verts = np.stack(
        [np.column_stack(c) for c in ((left, bottom), (left, top), (right, top), (right, bottom))], axis=1
    )
    return PolyCollection(list(verts), facecolors=colors, edgecolors="none", **kwargs)


def _human(value: float, _pos: int | None = None) -> str:
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def _style(ax: Axes) -> None:
    ax.grid(True, color="#e3e3e3", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _series(df_symbol: pd.DataFrame, short: int, long: int) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    frame = sma_frame(df_symbol, short, long)
    symbols = frame["symbol"].unique()
    if len(symbols) != 1:
        raise ParameterError(
            f"this chart draws one symbol, got {sorted(map(str, symbols))}; select one "
            "(df[df['symbol'] == 'AAPL']) or use overview_chart"
        )
    return str(symbols[0]), frame, signals_frame(df_symbol, short, long)


# --------------------------------------------------------------------------- charts


def crossover_chart(
    df_symbol: pd.DataFrame,
    *,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    sessions: int | str | None = None,
    title: str | None = None,
    currency: str = "USD",
    tz: str = EXCHANGE_TZ,
    short: int = SHORT_WINDOW,
    long: int = LONG_WINDOW,
) -> Figure:
    """One symbol's price, SMA<short>, SMA<long>, BUY/SELL signals and volume, over a readable window.

    ``df_symbol`` has columns symbol, timestamp, price and optionally open, high, low, volume.
    The window is ``start <= t < end`` if either is given (naive bounds are exchange time for
    intraday bars, UTC dates for daily bars), else the last ``sessions`` sessions (default: the
    last session of intraday bars, the whole series of daily bars; ``"all"``: everything).
    """
    symbol, full, signals = _series(df_symbol, short, long)
    utc = pd.DatetimeIndex(pd.to_datetime(full["timestamp"], utc=True))
    mask = _window(utc, tz, start, end, sessions)
    frame = full[mask].reset_index(drop=True)
    daily = is_daily(utc)
    times = _display_times(utc[mask], tz)
    x = np.arange(len(frame))
    volume = "volume" in frame.columns and bool((frame["volume"].fillna(0) > 0).any())
    candles = len(frame) <= CANDLE_MAX_BARS and _has_ohlc(frame)

    fig = Figure(figsize=VOLUME_FIGSIZE if volume else FIGSIZE, dpi=DPI, layout="constrained")
    if volume:
        ax, ax_volume = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3.2, 1]})
    else:
        ax, ax_volume = fig.add_subplot(), None
    _draw_price(ax, frame, x, candles)
    _draw_smas(ax, frame, x, short, long)
    _markers(ax, frame, signals, size=8 if len(frame) <= 2 * CANDLE_MAX_BARS else 6)
    lows = frame["low"] if candles else frame["price"]
    highs = frame["high"] if candles else frame["price"]
    _price_axis(ax, float(lows.min()), float(highs.max()), currency)
    separated = _separators(ax, times)
    bottom = ax
    if ax_volume is not None:
        _volume(ax_volume, frame, x)
        _separators(ax_volume, times)
        _style(ax_volume)
        ax.tick_params(labelbottom=False)
        bottom = ax_volume
    _time_axis(bottom, times, max_ticks=10)
    if ax_volume is not None:
        ax.set_xlim(bottom.get_xlim())
    _style(ax)

    unit = _bar_unit(utc, daily)
    ax.set_title(
        title or f"{symbol} · {unit} · {_span(times, daily)}",
        fontsize=13,
        loc="left",
    )
    zone = "" if daily else f" ({_zone_name(times)})"
    sessions_note = f"; dotted lines separate {separated + 1} sessions" if separated else ""
    bottom.set_xlabel(
        f"{'Trading day' if daily else 'Time' + zone}, one step per bar, nights and weekends closed"
        f"{sessions_note} — {len(frame)} bars"
    )
    ax.legend(loc="best", ncols=5, fontsize=9, framealpha=0.9)
    return fig


def sessions_chart(
    df_symbol: pd.DataFrame,
    *,
    ncols: int = 3,
    max_panels: int = 12,
    title: str | None = None,
    currency: str = "USD",
    tz: str = EXCHANGE_TZ,
    short: int = SHORT_WINDOW,
    long: int = LONG_WINDOW,
) -> Figure:
    """Small multiples of one symbol: one panel per session (intraday) or per year (daily bars).

    Each panel shows the close, both SMAs and the signals of its period, on its own price scale;
    only the last ``max_panels`` periods are drawn.
    """
    symbol, full, signals = _series(df_symbol, short, long)
    utc = pd.DatetimeIndex(pd.to_datetime(full["timestamp"], utc=True))
    daily = is_daily(utc)
    local = _display_times(utc, tz)
    keys = local.year if daily else local.tz_localize(None).normalize()
    periods = list(pd.unique(np.asarray(keys)))[-max_panels:]
    ncols = max(1, min(ncols, len(periods)))
    nrows = math.ceil(len(periods) / ncols)
    fig = Figure(figsize=(FIGSIZE[0], 0.9 + 2.5 * nrows), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    total = {BUY: 0, SELL: 0}
    for ax, period in zip(axes, periods, strict=False):
        mask = np.asarray(keys == period)
        frame = full[mask].reset_index(drop=True)
        times = local[mask]
        x = np.arange(len(frame))
        ax.plot(x, frame["price"], color=COLORS["price"], linewidth=0.8, label="price (close)")
        _draw_smas(ax, frame, x, short, long)
        counts = _markers(ax, frame, signals, size=5.5)
        for kind in total:
            total[kind] += counts[kind]
        _time_axis(ax, times, max_ticks=4)
        name = str(period) if daily else f"{times[0]:%a %b %d}"
        ax.set_title(f"{name}: {counts[BUY]} BUY, {counts[SELL]} SELL", fontsize=10, loc="left")
        ax.set_gid(name)
        ax.tick_params(labelsize=8)
        ax.yaxis.set_major_formatter(FuncFormatter(_price_label))
        _style(ax)
    for ax in axes[len(periods) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, [label.split(" (")[0] for label in labels], loc="outside lower center", ncols=5, fontsize=9
    )
    what = "year" if daily else f"session, time in {_zone_name(local)}"
    fig.suptitle(
        title
        or f"{symbol}: SMA{short}/SMA{long} crossovers by {what} ({currency}; "
        f"{total[BUY]} BUY, {total[SELL]} SELL)",
        fontsize=12,
    )
    return fig


def overview_chart(
    df: pd.DataFrame,
    *,
    normalise: bool = False,
    ncols: int = 2,
    title: str | None = None,
    currency: str = "USD",
    tz: str = EXCHANGE_TZ,
    short: int = SHORT_WINDOW,
    long: int = LONG_WINDOW,
) -> Figure:
    """Small multiples: one panel per symbol, its whole series, close, both SMAs and signal markers.

    Each panel has its own price axis in ``currency`` (log where the span calls for it); with
    ``normalise`` each series is indexed to 100 at its first bar instead.
    """
    frame_all = sma_frame(df, short, long)
    signals_all = signals_frame(df, short, long)
    symbols = sorted(frame_all["symbol"].unique())
    if not symbols:
        raise ParameterError("overview_chart needs at least one bar")
    ncols = max(1, min(ncols, len(symbols)))
    nrows = math.ceil(len(symbols) / ncols)
    fig = Figure(figsize=(FIGSIZE[0], 0.9 + 2.8 * nrows), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    zones = set()
    for ax, symbol in zip(axes, symbols, strict=False):
        frame = frame_all[frame_all["symbol"] == symbol].reset_index(drop=True)
        utc = pd.DatetimeIndex(pd.to_datetime(frame["timestamp"], utc=True))
        times = _display_times(utc, tz)
        zones.add("" if is_daily(utc) else _zone_name(times))
        scale = 100.0 / float(frame["price"].iloc[0]) if normalise else 1.0
        x = np.arange(len(frame))
        ax.set_gid(str(symbol))
        ax.plot(x, frame["price"] * scale, color=COLORS["price"], linewidth=0.7, label="price (close)")
        _draw_smas(ax, frame, x, short, long, scale)
        counts = _markers(ax, frame, signals_all[signals_all["symbol"] == symbol], scale=scale, size=4.5)
        _separators(ax, times)
        _time_axis(ax, times, max_ticks=5 if ncols > 1 else 10)
        ax.set_title(f"{symbol}: {counts[BUY]} BUY, {counts[SELL]} SELL", fontsize=10, loc="left")
        if normalise:
            ax.set_ylabel("Index (first bar = 100)", fontsize=9)
        else:
            prices = frame["price"].astype(float)
            _price_axis(ax, float(prices.min()), float(prices.max()), currency)
            ax.yaxis.label.set_fontsize(9)
        ax.tick_params(labelsize=8)
        _style(ax)
    for ax in axes[len(symbols) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, [label.split(" (")[0] for label in labels], loc="outside lower center", ncols=5, fontsize=9
    )
    zone = next(iter(zones - {""}), "")
    fig.suptitle(
        title
        or f"SMA{short}/SMA{long} crossovers by symbol, whole series"
        + (f" (time in {zone}, nights and weekends closed)" if zone else " (trading days)"),
        fontsize=12,
    )
    return fig


def daily_close_chart(
    daily: pd.DataFrame, *, currency: str = "USD", partial_share: float = 0.9, ncols: int = 2
) -> Figure:
    """Daily closes per symbol from Athena's ``daily_ohlc`` result, in ``currency``, one panel each.

    One step per trading day (no empty weekend ticks). A last day with fewer than ``partial_share``
    of the symbol's usual bars per day is still in progress: it is marked as the latest price
    (hollow) and named in the panel title, not drawn as a close.
    """
    needed = {"symbol", "trading_day", "close"}
    if not needed <= set(daily.columns):
        raise ParameterError(f"daily_close_chart needs columns {sorted(needed)}, got {sorted(daily.columns)}")
    symbols = sorted(daily["symbol"].unique())
    if not symbols:
        raise ParameterError("daily_close_chart needs at least one day: run 03_produce, then 05's queries")
    ncols = max(1, min(ncols, len(symbols)))
    nrows = math.ceil(len(symbols) / ncols)
    fig = Figure(figsize=(FIGSIZE[0], 1.0 + 3.0 * nrows), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, symbol in zip(axes, symbols, strict=False):
        rows = daily[daily["symbol"] == symbol].sort_values("trading_day").reset_index(drop=True)
        closes = rows["close"].astype(float).to_numpy()
        partial = False
        if "bars" in rows.columns and len(rows) > 1:
            bars = rows["bars"].astype(int).to_numpy()
            usual = float(np.median(bars[:-1]))
            partial = usual > 1 and bars[-1] < partial_share * usual
        full = len(rows) - 1 if partial else len(rows)
        x = np.arange(len(rows))
        marker = "o" if full <= 60 else None
        (line,) = ax.plot(
            x[:full],
            closes[:full],
            color=COLORS["sma_long"],
            marker=marker,
            markersize=4,
            linewidth=1.4,
            label="close",
        )
        line.set_gid(f"{symbol} closes")
        times = pd.DatetimeIndex(pd.to_datetime(rows["trading_day"], utc=True))
        note = f"{full} trading days, {times[0]:%b %d, %Y} – {times[full - 1]:%b %d, %Y}"
        if partial:
            (latest,) = ax.plot(
                x[-1:],
                closes[-1:],
                linestyle="none",
                marker="o",
                markersize=6,
                markerfacecolor="white",
                markeredgecolor=COLORS["sma_long"],
                label="latest price, day in progress",
            )
            latest.set_gid(f"{symbol} partial day")
            note += f"; {times[-1]:%b %d} in progress ({int(rows['bars'].iloc[-1])} of {usual:.0f} bars)"
        _price_axis(ax, float(np.min(closes)), float(np.max(closes)), currency)
        ax.yaxis.label.set_text(ax.yaxis.label.get_text().replace("Price", "Close"))
        _time_axis(ax, times, max_ticks=8 if ncols == 1 else 5)
        ax.set_title(f"{symbol}: {note}", fontsize=10, loc="left")
        ax.set_gid(str(symbol))
        ax.tick_params(labelsize=8)
        _style(ax)
        if partial:
            ax.legend(loc="best", fontsize=8)
    for ax in axes[len(symbols) :]:
        ax.set_visible(False)
    fig.suptitle(f"Daily close ({currency})", fontsize=13)
    return fig


def alerts_qa_chart(expected: pd.DataFrame, received: Iterable[Any], *, tz: str = EXCHANGE_TZ) -> Figure:
    """QA: the alerts received against the expected signals, per symbol, over time.

    One row per symbol: expected signal bars as grey ticks, alerts received that match as green
    dots, expected but not received in red (``missing``), received but not expected in purple
    (``extra``). A clean run shows every tick covered by a dot and nothing red or purple.
    """
    want = pd.DataFrame(expected)[["symbol", "timestamp", "signal"]]
    got_rows = [a.to_dict() if hasattr(a, "to_dict") else dict(a) for a in received]
    got = pd.DataFrame(got_rows, columns=["symbol", "timestamp", "signal"]) if got_rows else want.iloc[:0]
    got = got[["symbol", "timestamp", "signal"]].drop_duplicates()
    merged = want.merge(got, how="outer", on=["symbol", "timestamp", "signal"], indicator=True)
    symbols = sorted(merged["symbol"].unique())
    fig = Figure(figsize=(FIGSIZE[0], 1.6 + 0.6 * max(len(symbols), 1)), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    kinds = (
        ("both", "received and expected", COLORS["up"], "o"),
        ("left_only", "missing", COLORS["missing"], "X"),
        ("right_only", "extra", COLORS["extra"], "D"),
    )
    times = pd.to_datetime(merged["timestamp"], utc=True)
    local = times.dt.tz_convert(tz) if len(times) and not is_daily(times) else times
    counts: dict[str, int] = {}
    for i, symbol in enumerate(symbols):
        ours = merged["symbol"] == symbol
        expected_here = ours & merged["_merge"].isin(["both", "left_only"])
        ax.plot(
            local[expected_here],
            np.full(int(expected_here.sum()), i),
            linestyle="none",
            marker="|",
            markersize=16,
            color="#bbbbbb",
            label="expected" if i == 0 else None,
        )
        for kind, label, color, marker in kinds:
            rows = ours & (merged["_merge"] == kind)
            counts[label] = counts.get(label, 0) + int(rows.sum())
            (line,) = ax.plot(
                local[rows],
                np.full(int(rows.sum()), i),
                linestyle="none",
                marker=marker,
                markersize=5,
                color=color,
                label=label if i == 0 else None,
            )
            line.set_gid(f"{symbol} {label}")
    ax.set_yticks(range(len(symbols)), symbols)
    ax.set_ylim(-0.7, len(symbols) - 0.3)
    ax.set_xlabel(f"Signal bar time ({_zone_name(pd.DatetimeIndex(local)) if len(local) else tz})")
    state = "all received" if not (counts.get("missing") or counts.get("extra")) else "MISMATCH"
    ax.set_title(
        f"Alerts QA: {counts.get('received and expected', 0)} received and expected, "
        f"{counts.get('missing', 0)} missing, {counts.get('extra', 0)} extra — {state}",
        fontsize=11,
        loc="left",
    )
    ax.legend(loc="upper left", ncols=4, fontsize=8, framealpha=0.9)
    _style(ax)
    return fig


# --------------------------------------------------------------------------- files and display


@dataclass(frozen=True)
class SavedChart:
    """A chart written as PNG and SVG; Jupyter displays it as the saved PNG."""

    png: Path
    svg: Path
    width_px: int

    @property
    def paths(self) -> list[Path]:
        return [self.png, self.svg]

    def _repr_png_(self) -> tuple[bytes, dict[str, int]]:
        # Shown at 100 px per inch, whatever the file's dpi: a 150-dpi chart stays sharp on HiDPI screens.
        return self.png.read_bytes(), {"width": self.width_px}

    def __repr__(self) -> str:
        return f"SavedChart({self.png.name}, {self.svg.name} in {self.png.parent})"


def save_figure(fig: Figure, path_stem: str | Path, *, directory: str | Path | None = None) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.svg`` (relative stems go under ``reports/``); return the paths."""
    stem = Path(path_stem)
    if not stem.is_absolute():
        stem = Path(directory or REPORTS_DIR) / stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    # Fixed SVG ids and no date stamp: re-running a notebook rewrites byte-identical SVGs.
    with mpl.rc_context({"svg.hashsalt": "stock-trend-pipeline"}):
        for fmt, metadata in (("png", {"Software": None}), ("svg", {"Date": None})):
            path = stem.with_name(f"{stem.name}.{fmt}")
            fig.savefig(path, format=fmt, dpi=fig.dpi, metadata=metadata)
            paths.append(path)
    log.info("saved %s", ", ".join(str(p) for p in paths))
    return paths


def caption_of(fig: Figure) -> str:
    """The figure's title (its suptitle, else the first panel's title)."""
    suptitle = fig.get_suptitle()
    if suptitle:
        return suptitle
    for ax in fig.axes:
        for loc in ("left", "center"):
            if ax.get_title(loc=loc):
                return ax.get_title(loc=loc)
    return ""


def publish(fig: Figure, name: str | Path, *, directory: str | Path | None = None) -> SavedChart:
    """Save ``fig`` as ``<name>.png`` and ``.svg`` and return what Jupyter shows inline (the PNG).

    The caption (the figure's title) is recorded in the folder's ``charts.json`` for ``report.html``.
    """
    png, svg = save_figure(fig, name, directory=directory)
    captions_file = png.parent / CAPTIONS_FILE
    try:
        captions = json.loads(captions_file.read_text()) if captions_file.is_file() else {}
    except ValueError:
        captions = {}
    captions[png.stem] = caption_of(fig)
    captions_file.write_text(json.dumps(captions, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return SavedChart(png, svg, width_px=round(fig.get_figwidth() * 100))
