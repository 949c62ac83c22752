"""Charts draw the computed signals where they are; files are written; the illustrative backtest adds up."""

from __future__ import annotations

import itertools
import logging
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from helpers.core.indicators import crossovers
from helpers.notebook.analysis import BACKTEST_NOTE, backtest, signals_frame
from helpers.notebook.charts import (
    ALERTS_GID,
    BUY_GID,
    REPORTS_DIR,
    SELL_GID,
    BarTimeFormatter,
    crossover_chart,
    overview_chart,
    save_figure,
)
from helpers.pipeline.config import PROJECT_ROOT

T0 = datetime(2026, 7, 29, 13, 30, tzinfo=UTC)
# Known signals (see test_indicators.FLATS): BUY at bar 45 (11.0), SELL at bar 70 (10.0).
FLATS = [10.0] * 20 + [9.0] * 25 + [11.0] * 25 + [10.0] * 5


def ts(i: int) -> str:
    return (T0 + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")


def frame(prices: list[float], symbol: str = "TEST") -> pd.DataFrame:
    return pd.DataFrame({"symbol": symbol, "timestamp": [ts(i) for i in range(len(prices))], "price": prices})


@pytest.fixture(scope="module")
def minute() -> pd.DataFrame:
    from helpers.notebook.sources import replay

    return pd.DataFrame(
        [(q.symbol, q.timestamp, q.price) for q in replay("aapl-1m")],
        columns=["symbol", "timestamp", "price"],
    )


@pytest.fixture(scope="module")
def daily() -> pd.DataFrame:
    from helpers.notebook.sources import replay

    return pd.DataFrame(
        [(q.symbol, q.timestamp, q.price) for q in replay("daily")], columns=["symbol", "timestamp", "price"]
    )


def artist(ax: Axes, gid: str) -> Line2D:
    (found,) = [line for line in ax.get_lines() if line.get_gid() == gid]
    return found


def plotted(ax: Axes, gid: str) -> list[tuple[str, float]]:
    """(timestamp, y) of a marker artist, x mapped back through the axis' bar timestamps."""
    formatter = ax.xaxis.get_major_formatter()
    assert isinstance(formatter, BarTimeFormatter)
    line = artist(ax, gid)
    xs, ys = line.get_xdata(), line.get_ydata()
    assert all(float(x).is_integer() for x in xs)
    return [(formatter.timestamps[int(x)], float(y)) for x, y in zip(xs, ys, strict=True)]


def expected(
    df: pd.DataFrame, kind: str, scale: float = 1.0, windows: tuple[int, int] = (5, 20)
) -> list[tuple[str, float]]:
    sf = signals_frame(df, *windows)
    rows = sf[sf["signal"] == kind]
    return [(t, p * scale) for t, p in zip(rows["timestamp"], rows["price"], strict=True)]


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def assert_tick_labels_do_not_overlap(fig: Figure) -> None:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        assert len(boxes) >= 2
        for left, right in itertools.pairwise(boxes):
            assert left.x1 < right.x0, f"tick labels overlap on {ax.get_title()!r}"


# ---------------------------------------------------------------- crossover_chart


def test_other_windows_change_the_chart_and_its_signal_count(minute: pd.DataFrame) -> None:
    # GIVEN the minute replay drawn with the deployed windows and with 10/30
    deployed, other = crossover_chart(minute), crossover_chart(minute, short=10, long=30)
    (ax5,), (ax10,) = deployed.axes, other.axes

    # THEN the markers are the 10/30 signals, the lines and title name the windows, and the count differs
    assert plotted(ax10, BUY_GID) == expected(minute, "BUY", windows=(10, 30))
    assert plotted(ax10, SELL_GID) == expected(minute, "SELL", windows=(10, 30))
    assert {"SMA10", "SMA30"} <= set(ax10.get_legend_handles_labels()[1])
    assert ax10.get_title(loc="left").startswith("AAPL: SMA10/SMA30 crossovers")
    assert len(artist(ax10, BUY_GID).get_xdata()) != len(artist(ax5, BUY_GID).get_xdata())
    overview = overview_chart(minute, short=10, long=30)
    assert plotted(overview.axes[0], SELL_GID) == expected(minute, "SELL", windows=(10, 30))
    assert "SMA10/SMA30" in overview.get_suptitle()


def test_hand_series_markers_are_at_the_known_bars() -> None:
    fig = crossover_chart(frame(FLATS))
    (ax,) = fig.axes
    assert plotted(ax, BUY_GID) == [(ts(45), 11.0)]
    assert plotted(ax, SELL_GID) == [(ts(70), 10.0)]
    assert artist(ax, BUY_GID).get_marker() == "^" and artist(ax, SELL_GID).get_marker() == "v"
    assert [line.get_gid() for line in ax.get_lines()].count(ALERTS_GID) == 0  # no alerts given


def test_minute_replay_markers_equal_signals_and_alerts_overlay(
    minute: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    signals = crossovers(minute[["timestamp", "price"]].itertuples(index=False, name=None), "AAPL")
    received: list[object] = [s.to_dict() for s in signals[:10]] + signals[10:20]  # dicts and Signals
    # Another symbol's alert is ignored; one for a timestamp that is not a bar is logged.
    received.append({"symbol": "MSFT", "timestamp": signals[0].timestamp, "price": 1.0})
    received.append({"symbol": "AAPL", "timestamp": "2030-01-01T00:00:00Z", "price": 1.0})
    with caplog.at_level(logging.WARNING, logger="helpers.notebook.charts"):
        fig = crossover_chart(minute, received)
    (ax,) = fig.axes
    assert plotted(ax, BUY_GID) == expected(minute, "BUY")
    assert plotted(ax, SELL_GID) == expected(minute, "SELL")
    assert plotted(ax, ALERTS_GID) == [(s.timestamp, s.price) for s in signals[:20]]
    alerts = artist(ax, ALERTS_GID)
    assert alerts.get_markerfacecolor() == "none" and alerts.get_marker() == "o"
    assert "1 alert(s) have a timestamp that is not a bar" in caplog.text
    labels = ax.get_legend_handles_labels()[1]
    legend = {"price", "SMA5", "SMA20", "BUY signals (79)", "SELL signals (80)", "alerts received (20)"}
    assert set(labels) == legend
    assert ax.get_ylabel() == "Price (USD)" and ax.get_title(loc="left").startswith("AAPL")
    assert_tick_labels_do_not_overlap(fig)


def test_daily_single_symbol_chart(daily: pd.DataFrame) -> None:
    ibm = daily[daily["symbol"] == "IBM"]
    fig = crossover_chart(ibm, title="IBM daily")
    (ax,) = fig.axes
    assert plotted(ax, BUY_GID) == expected(ibm, "BUY")
    assert plotted(ax, SELL_GID) == expected(ibm, "SELL")
    assert ax.get_title(loc="left") == "IBM daily"
    assert ax.get_xlabel().startswith("Trading day")
    assert_tick_labels_do_not_overlap(fig)


def test_crossover_chart_refuses_several_symbols(daily: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="one symbol"):
        crossover_chart(daily)


# ---------------------------------------------------------------- overview_chart


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
    assert_tick_labels_do_not_overlap(fig)


# ---------------------------------------------------------------- save_figure


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
