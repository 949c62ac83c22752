"""Charts draw the computed signals where they are, over readable windows; files are written and shown."""

from __future__ import annotations

import itertools
import struct
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from helpers.core.errors import ParameterError
from helpers.core.indicators import crossovers
from helpers.notebook.analysis import BACKTEST_NOTE, backtest, signals_frame
from helpers.notebook.charts import (
    BUY_GID,
    CANDLES_GID,
    PRICE_GID,
    REPORTS_DIR,
    SELL_GID,
    SESSION_GID,
    VOLUME_GID,
    BarTimeFormatter,
    SavedChart,
    alerts_qa_chart,
    crossover_chart,
    daily_close_chart,
    overview_chart,
    publish,
    save_figure,
    sessions_chart,
)
from helpers.pipeline.config import PROJECT_ROOT

T0 = datetime(2026, 7, 29, 13, 30, tzinfo=UTC)
# Known signals (see test_indicators.FLATS): BUY at bar 45 (11.0), SELL at bar 70 (10.0).
FLATS = [10.0] * 20 + [9.0] * 25 + [11.0] * 25 + [10.0] * 5
# The minute replay: 7 New York sessions, the last one (Aug 06) cut at 10:11 EDT.
SESSION_STARTS_UTC = [f"2026-{d}T13:30:00Z" for d in ("07-30", "07-31", "08-03", "08-04", "08-05", "08-06")]


def ts(i: int) -> str:
    return (T0 + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")


def frame(prices: list[float], symbol: str = "TEST") -> pd.DataFrame:
    return pd.DataFrame({"symbol": symbol, "timestamp": [ts(i) for i in range(len(prices))], "price": prices})


@pytest.fixture(scope="module")
def minute() -> pd.DataFrame:
    from helpers.notebook.sources import replay

    return pd.DataFrame([asdict(q) for q in replay("aapl-1m")])


@pytest.fixture(scope="module")
def daily() -> pd.DataFrame:
    from helpers.notebook.sources import replay

    return pd.DataFrame([asdict(q) for q in replay("daily")])


def artist(ax: Axes, gid: str) -> Line2D:
    (found,) = [line for line in ax.get_lines() if line.get_gid() == gid]
    return found


def collection(ax: Axes, gid: str) -> PolyCollection:
    (found,) = [c for c in ax.collections if c.get_gid() == gid]
    assert isinstance(found, PolyCollection)
    return found


def bar_timestamps(ax: Axes) -> list[str]:
    formatter = ax.xaxis.get_major_formatter()
    assert isinstance(formatter, BarTimeFormatter)
    return formatter.timestamps


def plotted(ax: Axes, gid: str) -> list[tuple[str, float]]:
    """(timestamp, y) of a marker artist, x mapped back through the axis' bar timestamps."""
    stamps = bar_timestamps(ax)
    line = artist(ax, gid)
    xs, ys = line.get_xdata(), line.get_ydata()
    assert all(float(x).is_integer() for x in xs)
    return [(stamps[int(x)], float(y)) for x, y in zip(xs, ys, strict=True)]


def expected(
    df: pd.DataFrame,
    kind: str,
    scale: float = 1.0,
    windows: tuple[int, int] = (5, 20),
    within: tuple[str, str] | None = None,
) -> list[tuple[str, float]]:
    sf = signals_frame(df, *windows)
    rows = sf[sf["signal"] == kind]
    if within:
        rows = rows[(rows["timestamp"] >= within[0]) & (rows["timestamp"] <= within[1])]
    return [(t, p * scale) for t, p in zip(rows["timestamp"], rows["price"], strict=True)]


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def tick_labels(fig: Figure, ax: Axes) -> list[str]:
    FigureCanvasAgg(fig).draw()
    return [t.get_text() for t in ax.get_xticklabels() if t.get_text()]


def assert_tick_labels_do_not_overlap(fig: Figure) -> None:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        if not boxes:  # the price panel above a volume panel shares its x axis, labels below only
            continue
        assert len(boxes) >= 2, ax.get_title()
        for left, right in itertools.pairwise(boxes):
            assert left.x1 < right.x0, f"tick labels overlap on {ax.get_title()!r}"


# ---------------------------------------------------------------- crossover_chart: windows and layout


def test_default_window_is_the_last_session_in_new_york_time_with_candles_and_volume(
    minute: pd.DataFrame,
) -> None:
    fig = crossover_chart(minute)
    price, volume = fig.axes
    stamps = bar_timestamps(volume)
    # GIVEN the last session (Aug 06, 09:30-10:11 EDT = 13:30-14:11 UTC, 42 bars)
    assert (stamps[0], stamps[-1], len(stamps)) == ("2026-08-06T13:30:00Z", "2026-08-06T14:11:00Z", 42)
    # THEN few bars are candles, one body per bar; volume bars below; no separator inside one session
    assert len(collection(price, CANDLES_GID).get_paths()) == 42
    assert len(collection(volume, VOLUME_GID).get_paths()) == 42 and volume.get_ylabel() == "Volume"
    assert not [line for line in price.get_lines() if (line.get_gid() or "").startswith(SESSION_GID)]
    # AND the markers are that session's signals (one SELL at 14:01 UTC), ticks in exchange time
    window = ("2026-08-06T13:30:00Z", "2026-08-06T14:11:00Z")
    assert plotted(price, SELL_GID) == expected(minute, "SELL", within=window)
    assert len(plotted(price, SELL_GID)) == 1 and plotted(price, BUY_GID) == []
    labels = tick_labels(fig, volume)
    assert labels[0] == "09:30\nThu Aug 06" and labels[1] == "09:35"
    assert price.get_title(loc="left") == "AAPL · 1-minute bars · Thu Aug 06, 2026, 09:30–10:11 EDT"
    assert volume.get_xlabel().startswith("Time (EDT), one step per bar")
    assert price.get_ylabel() == "Price (USD)" and price.get_yscale() == "linear"
    assert_tick_labels_do_not_overlap(fig)


def test_date_range_in_exchange_time_draws_a_close_line(minute: pd.DataFrame) -> None:
    fig = crossover_chart(minute, start="2026-08-05", end="2026-08-06")
    price, volume = fig.axes
    stamps = bar_timestamps(volume)
    assert (stamps[0], stamps[-1], len(stamps)) == ("2026-08-05T13:30:00Z", "2026-08-05T19:59:00Z", 390)
    assert not [c for c in price.collections if c.get_gid() == CANDLES_GID]  # 390 bars: a line
    line = artist(price, PRICE_GID)
    assert list(line.get_ydata()) == minute.set_index("timestamp").loc[stamps, "price"].tolist()
    window = (stamps[0], stamps[-1])
    assert plotted(price, BUY_GID) == expected(minute, "BUY", within=window)
    assert plotted(price, SELL_GID) == expected(minute, "SELL", within=window)
    assert len(plotted(price, BUY_GID)) == 12 and len(plotted(price, SELL_GID)) == 11
    # Naive bounds are New York time: 10:00-11:00 EDT is 14:00-15:00 UTC.
    hour = crossover_chart(minute, start="2026-08-05 10:00", end="2026-08-05 11:00").axes[1]
    assert bar_timestamps(hour)[0] == "2026-08-05T14:00:00Z" and len(bar_timestamps(hour)) == 60


def test_all_sessions_have_separators_at_each_new_york_session(minute: pd.DataFrame) -> None:
    fig = crossover_chart(minute, sessions="all")
    price, volume = fig.axes
    stamps = bar_timestamps(volume)
    separators = sorted(
        line.get_xdata()[0] for line in price.get_lines() if (line.get_gid() or "").startswith(SESSION_GID)
    )
    assert [stamps[int(x + 0.5)] for x in separators] == SESSION_STARTS_UTC
    assert plotted(price, BUY_GID) == expected(minute, "BUY")
    assert plotted(price, SELL_GID) == expected(minute, "SELL")
    assert {"BUY (79)", "SELL (80)"} <= set(price.get_legend_handles_labels()[1])
    assert "dotted lines separate 7 sessions" in volume.get_xlabel()
    two = crossover_chart(minute, sessions=2).axes[1]
    assert bar_timestamps(two)[0] == "2026-08-05T13:30:00Z" and len(bar_timestamps(two)) == 390 + 42
    assert_tick_labels_do_not_overlap(fig)


def test_the_two_smas_are_told_apart_by_colour_and_dash(minute: pd.DataFrame) -> None:
    (price, _) = crossover_chart(minute).axes
    lines = {line.get_label(): line for line in price.get_lines()}
    short, long = lines["SMA5"], lines["SMA20"]
    assert short.get_color() != long.get_color()
    assert short.get_linestyle() == "-" and long.get_linestyle() == "--"
    # SMAs are computed over the whole series: the window's first bar already has both
    assert np.isfinite(short.get_ydata()[0]) and np.isfinite(long.get_ydata()[0])


def test_other_windows_change_the_chart_and_its_signal_count(minute: pd.DataFrame) -> None:
    deployed = crossover_chart(minute, sessions="all")
    other = crossover_chart(minute, sessions="all", short=10, long=30)
    ax5, ax10 = deployed.axes[0], other.axes[0]
    assert plotted(ax10, BUY_GID) == expected(minute, "BUY", windows=(10, 30))
    assert plotted(ax10, SELL_GID) == expected(minute, "SELL", windows=(10, 30))
    assert {"SMA10", "SMA30"} <= set(ax10.get_legend_handles_labels()[1])
    assert len(artist(ax10, BUY_GID).get_xdata()) != len(artist(ax5, BUY_GID).get_xdata())
    overview = overview_chart(minute, short=10, long=30)
    assert plotted(overview.axes[0], SELL_GID) == expected(minute, "SELL", windows=(10, 30))
    assert "SMA10/SMA30" in overview.get_suptitle()


def test_hand_series_markers_are_at_the_known_bars() -> None:
    fig = crossover_chart(frame(FLATS))
    (ax,) = fig.axes  # no volume column: no volume panel
    assert plotted(ax, BUY_GID) == [(ts(45), 11.0)]
    assert plotted(ax, SELL_GID) == [(ts(70), 10.0)]
    assert artist(ax, BUY_GID).get_marker() == "^" and artist(ax, SELL_GID).get_marker() == "v"
    assert artist(ax, PRICE_GID).get_ydata().tolist() == FLATS  # no open/high/low: a line


def test_daily_span_uses_a_log_scale_and_trading_days(daily: pd.DataFrame) -> None:
    aapl = daily[daily["symbol"] == "AAPL"]
    fig = crossover_chart(aapl)  # daily bars: the whole series by default
    price, volume = fig.axes
    assert price.get_yscale() == "log" and price.get_ylabel() == "Price (USD, log scale)"
    assert len(bar_timestamps(volume)) == len(aapl)
    assert plotted(price, BUY_GID) == expected(aapl, "BUY")
    assert volume.get_xlabel().startswith("Trading day")
    assert price.get_title(loc="left") == "AAPL · daily bars · Mar 01, 2000 – Mar 01, 2013"
    ibm = daily[daily["symbol"] == "IBM"]
    year = crossover_chart(ibm, start="2010-01-01", end="2011-01-01", title="IBM 2010")
    assert year.axes[0].get_yscale() == "linear" and year.axes[0].get_title(loc="left") == "IBM 2010"
    assert bar_timestamps(year.axes[1])[0] == "2010-01-04T00:00:00Z"  # naive daily bounds are UTC dates
    assert_tick_labels_do_not_overlap(fig)


def test_window_and_symbol_errors_say_what_to_do(minute: pd.DataFrame, daily: pd.DataFrame) -> None:
    with pytest.raises(ParameterError, match="one symbol"):
        crossover_chart(daily)
    with pytest.raises(ParameterError, match=r"no bars between .* the series runs from 2026-07-29 13:30"):
        crossover_chart(minute, start="2030-01-01")
    with pytest.raises(ParameterError, match="not a date or time"):
        crossover_chart(minute, start="yesterday-ish")
    with pytest.raises(ParameterError, match="sessions must be a whole number"):
        crossover_chart(minute, sessions=0)


# ---------------------------------------------------------------- sessions_chart, overview_chart


def test_sessions_chart_has_one_panel_per_session_with_its_signals(minute: pd.DataFrame) -> None:
    fig = sessions_chart(minute)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_gid() for ax in panels] == [
        "Wed Jul 29", "Thu Jul 30", "Fri Jul 31", "Mon Aug 03", "Tue Aug 04", "Wed Aug 05", "Thu Aug 06",
    ]  # fmt: skip
    buys = [p for ax in panels for p in plotted(ax, BUY_GID)]
    sells = [p for ax in panels for p in plotted(ax, SELL_GID)]
    assert buys == expected(minute, "BUY") and sells == expected(minute, "SELL")
    assert panels[-1].get_title(loc="left") == "Thu Aug 06: 0 BUY, 1 SELL"
    assert "79 BUY, 80 SELL" in fig.get_suptitle() and "EDT" in fig.get_suptitle()
    assert_tick_labels_do_not_overlap(fig)


@pytest.mark.parametrize("normalise", [False, True])
def test_overview_markers_per_symbol(daily: pd.DataFrame, normalise: bool) -> None:
    fig = overview_chart(daily, normalise=normalise)
    panels = {ax.get_gid(): ax for ax in fig.axes if ax.get_visible()}
    assert sorted(panels) == ["AAPL", "FB", "GOOG", "IBM", "MSFT"]
    for symbol, ax in panels.items():
        one = daily[daily["symbol"] == symbol]
        scale = 100.0 / one["price"].iloc[0] if normalise else 1.0
        for gid, kind in ((BUY_GID, "BUY"), (SELL_GID, "SELL")):
            got, want = plotted(ax, gid), expected(one, kind, scale)
            assert [t for t, _ in got] == [t for t, _ in want]
            assert [y for _, y in got] == pytest.approx([y for _, y in want], rel=1e-12)
        labels = set(ax.get_legend_handles_labels()[1])
        assert {"SMA5", "SMA20"} <= labels  # both SMAs, as the title says
    if not normalise:
        assert panels["AAPL"].get_yscale() == "log" and panels["AAPL"].get_ylabel().startswith("Price (USD")
    assert_tick_labels_do_not_overlap(fig)


# ---------------------------------------------------------------- daily_close_chart (Athena daily_ohlc)


def daily_ohlc(quotes: pd.DataFrame) -> pd.DataFrame:
    """What Athena's daily_ohlc query returns (trading_day = the UTC date, bars = quotes that day)."""
    q = quotes.assign(trading_day=quotes["timestamp"].str[:10])
    return (
        q.groupby(["symbol", "trading_day"])
        .agg(close=("price", "last"), volume=("volume", "sum"), bars=("price", "size"))
        .reset_index()
    )


def test_daily_close_skips_weekends_and_does_not_plot_the_day_in_progress(minute: pd.DataFrame) -> None:
    rows = daily_ohlc(minute)
    fig = daily_close_chart(rows)
    (ax,) = [a for a in fig.axes if a.get_visible()]
    closes = artist(ax, "AAPL closes")
    # GIVEN 6 full sessions and Aug 06 with 42 of 390 bars: the close line stops at Aug 05
    assert list(closes.get_xdata()) == [0, 1, 2, 3, 4, 5]
    assert list(closes.get_ydata()) == rows["close"].iloc[:6].tolist()
    latest = artist(ax, "AAPL partial day")
    assert list(latest.get_xdata()) == [6] and latest.get_markerfacecolor() == "white"
    assert "Aug 06 in progress (42 of 390 bars)" in ax.get_title(loc="left")
    # Ticks are the 7 trading days (no Saturday/Sunday), in USD, at report dpi, with a plain title
    assert tick_labels(fig, ax) == [
        "Jul 29\n2026", "Jul 30", "Jul 31", "Aug 03", "Aug 04", "Aug 05", "Aug 06",
    ]  # fmt: skip
    assert ax.get_ylabel() == "Close (USD)" and fig.dpi == 150 and fig.get_suptitle() == "Daily close (USD)"


def test_daily_close_of_daily_bars_has_no_partial_day_and_a_log_scale(daily: pd.DataFrame) -> None:
    rows = daily_ohlc(daily)
    fig = daily_close_chart(rows)
    panels = {ax.get_gid(): ax for ax in fig.axes if ax.get_visible()}
    assert sorted(panels) == ["AAPL", "FB", "GOOG", "IBM", "MSFT"]
    aapl = panels["AAPL"]
    assert len(artist(aapl, "AAPL closes").get_xdata()) == int((rows["symbol"] == "AAPL").sum())
    assert not [line for line in aapl.get_lines() if line.get_gid() == "AAPL partial day"]
    assert aapl.get_yscale() == "log"
    with pytest.raises(ParameterError, match="needs columns"):
        daily_close_chart(rows.drop(columns="close"))


# ---------------------------------------------------------------- alerts QA chart


def test_alerts_qa_chart_counts_missing_and_extra(minute: pd.DataFrame) -> None:
    want = signals_frame(minute)
    signals = crossovers(minute[["timestamp", "price"]].itertuples(index=False, name=None), "AAPL")
    got: list[object] = [s.to_dict() for s in signals[3:50]] + signals[50:]  # dicts and Signals
    got.append({"symbol": "AAPL", "timestamp": "2026-08-03T15:00:00Z", "signal": "BUY"})
    ax = alerts_qa_chart(want, got).axes[0]
    assert len(artist(ax, "AAPL missing").get_xdata()) == 3
    assert len(artist(ax, "AAPL extra").get_xdata()) == 1
    assert len(artist(ax, "AAPL received and expected").get_xdata()) == len(want) - 3
    assert ax.get_title(loc="left").startswith("Alerts QA: 156 received and expected, 3 missing, 1 extra")
    clean = alerts_qa_chart(want, want.to_dict("records")).axes[0]
    assert clean.get_title(loc="left").endswith("all received")


# ---------------------------------------------------------------- save_figure, publish


def test_save_figure_writes_png_and_svg(tmp_path: Path) -> None:
    fig = crossover_chart(frame(FLATS))
    paths = save_figure(fig, "charts/test.1m", directory=tmp_path)
    assert paths == [tmp_path / "charts" / "test.1m.png", tmp_path / "charts" / "test.1m.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert png_size(paths[0]) == (1650, 750)  # 11 x 5 in at 150 dpi
    assert paths[1].read_text(encoding="utf-8").lstrip().startswith("<?xml")
    svg = save_figure(fig, tmp_path / "abs" / "same")[1]  # absolute stems are honoured
    first = svg.read_bytes()
    save_figure(fig, tmp_path / "abs" / "same")
    assert svg.read_bytes() == first  # no date stamp, fixed ids: re-runs rewrite identical SVGs


def test_publish_shows_the_saved_png_inline(tmp_path: Path, minute: pd.DataFrame) -> None:
    from IPython.core.formatters import DisplayFormatter

    shown = publish(crossover_chart(minute), "06_crossovers_AAPL", directory=tmp_path)
    assert isinstance(shown, SavedChart)
    assert shown.paths == [tmp_path / "06_crossovers_AAPL.png", tmp_path / "06_crossovers_AAPL.svg"]
    # IPython's formatter (what a kernel sends) gives image/png = the file's bytes, at 100 px per inch
    data, metadata = DisplayFormatter().format(shown)
    assert data["image/png"] == shown.png.read_bytes()
    assert metadata["image/png"] == {"width": 1100}
    assert png_size(shown.png) == (1650, 975)  # 11 x 6.5 in at 150 dpi, with the volume panel


def test_reports_dir_is_the_project_reports_folder() -> None:
    assert REPORTS_DIR == PROJECT_ROOT / "reports"


# ---------------------------------------------------------------- backtest (illustrative)


def test_backtest_hand_series() -> None:
    # FLATS + flat 10s (state 0 from bar 89), 12 at bar 90 (BUY), 13 at bar 91 (still long at the end).
    prices = [*FLATS, *([10.0] * 15), 12.0, 13.0]
    bars = [(ts(i), p) for i, p in enumerate(prices)]
    assert [(s.timestamp, s.signal, s.price) for s in crossovers(bars, "TEST")] == [
        (ts(45), "BUY", 11.0),
        (ts(70), "SELL", 10.0),
        (ts(90), "BUY", 12.0),
    ]
    short = frame([5.0, 6.0, 4.0], symbol="NEW")  # fewer than 20 bars: never in the market
    result = backtest(pd.concat([frame(prices), short])).set_index("symbol")
    assert result.loc["TEST", "trades"] == 2 and bool(result.loc["TEST", "open_at_end"])
    assert result.loc["TEST", "bars"] == 92
    assert result.loc["TEST", "strategy_return"] == pytest.approx((10 / 11) * (13 / 12) - 1, rel=1e-12)
    assert result.loc["TEST", "buy_and_hold_return"] == pytest.approx(13 / 10 - 1, rel=1e-12)
    assert (result.loc["TEST", "start"], result.loc["TEST", "end"]) == (ts(0), ts(91))
    assert result.loc["NEW", "trades"] == 0 and result.loc["NEW", "strategy_return"] == 0.0
    assert result.loc["NEW", "buy_and_hold_return"] == pytest.approx(4 / 5 - 1)
    assert result.attrs["note"] == BACKTEST_NOTE and BACKTEST_NOTE.startswith("Illustrative")
