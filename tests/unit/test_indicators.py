"""The crossover definition: incremental (Lambda) and vectorised (notebook) agree exactly.

Three implementations are compared: ``helpers.core.indicators`` (incremental, stdlib),
``helpers.notebook.analysis`` (vectorised numpy/pandas) and a deliberately naive
reference written straight from DESIGN.md with
exact fractions. Signals are compared as full tuples, SMA floats included, with ``==``.
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.core.indicators import (
    LONG_WINDOW,
    MAX_WINDOW,
    SHORT_WINDOW,
    CrossoverTracker,
    Signal,
    check_windows,
    crossovers,
    crossovers_by_symbol,
    last_nonzero_state,
    lookback_needed,
    price_units,
    signals_for_new_bars,
    state_of,
    window_weights,
)
from helpers.notebook.analysis import signals_frame, sma_columns, sma_frame

T0 = datetime(2026, 7, 29, 13, 30, tzinfo=UTC)


def ts(i: int) -> str:
    """Canonical timestamp of minute bar ``i``."""
    return (T0 + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")


def series(prices: list[float]) -> list[tuple[str, float]]:
    return [(ts(i), p) for i, p in enumerate(prices)]


def frame(bars: dict[str, list[tuple[str, float]]]) -> pd.DataFrame:
    rows = [(sym, t, p) for sym, sym_bars in bars.items() for t, p in sym_bars]
    return pd.DataFrame(rows, columns=["symbol", "timestamp", "price"])


def as_tuples(signals: list[Signal]) -> list[tuple[object, ...]]:
    return [(s.symbol, s.timestamp, s.signal, s.price, s.sma_short, s.sma_long) for s in signals]


def frame_tuples(df: pd.DataFrame) -> list[tuple[object, ...]]:
    cols = ["symbol", "timestamp", "signal", "price", "sma5", "sma20"]
    return [tuple(row) for row in df[cols].itertuples(index=False, name=None)]


def reference_windows(bars: list[tuple[str, float]], short: int, long: int) -> list[tuple[str, str]]:
    """DESIGN.md read literally, for any windows: exact Fraction means of micro-units, the last
    non-zero state, no integer weights and no shortcuts."""
    latest = dict(bars)
    times = sorted(latest)
    units = [round(float(latest[t]) * 1_000_000) for t in times]
    out, memory = [], 0
    for i in range(long - 1, len(units)):
        mean_short = Fraction(sum(units[i - short + 1 : i + 1]), short)
        diff = mean_short - Fraction(sum(units[i - long + 1 : i + 1]), long)
        state = (diff > 0) - (diff < 0)
        if state != 0:
            if memory == -state:
                out.append((times[i], "BUY" if state > 0 else "SELL"))
            memory = state
    return out


def reference(bars: list[tuple[str, float]]) -> list[tuple[str, str]]:
    """The reference for the deployed windows, SMA5/SMA20."""
    return reference_windows(bars, 5, 20)


def assert_same_everywhere(bars_by_symbol: dict[str, list[tuple[str, float]]]) -> list[Signal]:
    """Incremental == vectorised == reference for every symbol; returns the incremental signals."""
    incremental = crossovers_by_symbol(
        {"symbol": sym, "timestamp": t, "price": p} for sym, bars in bars_by_symbol.items() for t, p in bars
    )
    flat = [s for sym in sorted(incremental) for s in incremental[sym]]
    assert as_tuples(flat) == frame_tuples(signals_frame(frame(bars_by_symbol)))
    for sym, bars in bars_by_symbol.items():
        assert [(s.timestamp, s.signal) for s in incremental.get(sym, [])] == reference(bars)
    return flat


# ---------------------------------------------------------------- hand-built series, known bars

# 20 x 10 (state 0), 9 at bar 20 (state -1: the first non-zero state, no signal), flat 9s until
# the state is 0 again (bars 39..44), 11 at bar 45 (state +1 after memory -1: BUY), flat 11s
# (state 0 from bar 64), 10 at bar 70 (SELL).
FLATS = [10.0] * 20 + [9.0] * 25 + [11.0] * 25 + [10.0] * 5


def test_hand_series_signals_at_known_bars_with_exact_smas() -> None:
    signals = crossovers(series(FLATS), "TEST")
    assert as_tuples(signals) == [
        ("TEST", ts(45), "BUY", 11.0, 9.4, 9.1),
        ("TEST", ts(70), "SELL", 10.0, 10.8, 10.95),
    ]
    assert assert_same_everywhere({"TEST": series(FLATS)}) == signals


def test_state_column_on_hand_series() -> None:
    states = sma_frame(frame({"TEST": series(FLATS)}))["state"]
    assert states[:19].isna().all()
    assert states[19] == 0 and states[20] == -1 and states[38] == -1
    assert (states[39:45] == 0).all() and states[45] == 1 and (states[64:70] == 0).all()
    assert states[70] == -1


def test_descending_then_rising_crosses_on_the_second_rising_bar() -> None:
    prices = [30.0 - i for i in range(20)] + [40.0, 40.0]  # states: -1 (first), -1, +1
    assert as_tuples(crossovers(series(prices), "X")) == [("X", ts(21), "BUY", 40.0, 23.2, 21.55)]


def test_zero_state_after_minus_one_then_minus_one_again_is_not_a_signal() -> None:
    prices = [10.0] * 20 + [9.0] * 25 + [8.0] * 5
    assert crossovers(series(prices), "X") == []
    assert_same_everywhere({"X": series(prices)})


def test_exact_tie_that_float_means_get_wrong() -> None:
    first = [1.1, 0.3, 0.7, 0.1, 1.1, 0.1, 0.3, 1.1, 0.7, 0.7, 0.2, 0.3, 0.3, 0.7, 0.7]
    last = [1.1, 0.1, 0.3, 1.1, 0.2]
    prices = first + last
    assert sum(last) / 5 != sum(prices) / 20  # naive float SMAs disagree...
    assert sma_frame(frame({"X": series(prices)}))["state"].iloc[-1] == 0  # ...the exact state is a tie
    tracker = CrossoverTracker("X")
    for t, p in series(prices):
        tracker.update(t, p)
    assert tracker.state == 0 and tracker.last_state == 0


def test_fewer_than_long_window_bars_give_no_state_and_no_signal() -> None:
    bars = series([float(i % 7 + 1) for i in range(LONG_WINDOW - 1)])
    assert crossovers(bars, "X") == []
    sf = sma_frame(frame({"X": bars}))
    assert sf["state"].isna().all() and sf["sma5"].isna().all() and sf["sma20"].isna().all()
    assert signals_frame(frame({"X": bars})).empty


def test_empty_inputs() -> None:
    assert crossovers([], "X") == []
    assert crossovers_by_symbol([]) == {}
    empty = pd.DataFrame({"symbol": [], "timestamp": [], "price": []})
    assert signals_frame(empty).empty


def test_unordered_and_duplicate_bars_are_sorted_and_last_one_wins() -> None:
    bars = series(FLATS)
    shuffled = bars[:]
    random.Random(7).shuffle(shuffled)
    overwritten = [(t, 99.0) for t, _ in bars[40:50]] + shuffled  # later duplicates win
    expected = crossovers(bars, "X")
    assert crossovers(overwritten, "X") == expected
    assert assert_same_everywhere({"X": overwritten}) == expected


def test_tracker_rejects_bars_out_of_order() -> None:
    tracker = CrossoverTracker("X")
    tracker.update(ts(1), 1.0)
    with pytest.raises(ValueError, match="not after"):
        tracker.update(ts(1), 1.0)
    with pytest.raises(ValueError, match="not after"):
        tracker.update(ts(0), 1.0)


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="short < long"):
        CrossoverTracker("X", short=20, long=5)
    with pytest.raises(ValueError, match="finite"):
        price_units(float("nan"))
    with pytest.raises(ValueError, match="-1, 0 or"):
        CrossoverTracker.resume("X", [], last_state=2)
    with pytest.raises(ValueError, match="lacks column"):
        sma_frame(pd.DataFrame({"symbol": ["X"], "price": [1.0]}))


def test_signal_alert_id_and_dict_round_trip() -> None:
    signal = crossovers(series(FLATS), "TEST")[0]
    assert signal.alert_id == f"TEST#{ts(45)}#BUY"
    body = signal.to_dict()
    assert next(iter(body)) == "alert_id"
    assert Signal.from_dict(json.loads(json.dumps(body))) == signal


# ---------------------------------------------------------------- micro-units


@given(st.lists(st.floats(min_value=1e-6, max_value=1e6, allow_nan=False), max_size=50))
def test_price_units_equal_numpy_rint_and_decimal(prices: list[float]) -> None:
    vectorised = np.rint(np.asarray(prices, dtype="float64") * 1_000_000).astype(np.int64).tolist()
    assert [price_units(p) for p in prices] == vectorised
    assert [price_units(Decimal(repr(p))) for p in prices] == vectorised


def test_price_units_of_typical_prices() -> None:
    assert price_units(341.5953063964844) == 341_595_306
    assert price_units(0.1) == 100_000 and price_units(Decimal("190.25")) == 190_250_000


# ---------------------------------------------------------------- random series

# Few distinct prices make ties, flat runs and equal SMAs common; floats add rounding traps.
PRICE = st.one_of(
    st.sampled_from([9.0, 10.0, 10.5, 11.0]), st.floats(0.01, 1000.0), st.sampled_from([0.1, 0.2, 0.3])
)
BARS = st.lists(st.tuples(st.integers(0, 90), PRICE), max_size=90)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["AAA", "BB.B", "C"]), BARS, max_size=3))
def test_random_series_incremental_equals_vectorised_equals_reference(
    raw: dict[str, list[tuple[int, float]]],
) -> None:
    assert_same_everywhere({sym: [(ts(i), p) for i, p in bars] for sym, bars in raw.items()})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([9.0, 10.0, 11.0]), min_size=0, max_size=80), st.data())
def test_flat_runs_resume_equals_full_for_every_split(prices: list[float], data: st.DataObject) -> None:
    runs = [p for p in prices for _ in range(data.draw(st.integers(1, 12)))]  # long flat runs
    assert_resume_equals_full(series(runs), batch=data.draw(st.integers(1, 30)))


# ---------------------------------------------------------------- resuming from a window


def assert_resume_equals_full(
    bars: list[tuple[str, float]], batch: int, symbol: str = "X", full_every: int = 1
) -> None:
    """For every split point k: new bars = bars[k:k+batch], resumed three ways, equal the full run.

    Resuming from the full prior series costs O(k), so long series check it every ``full_every`` splits.
    """
    full = crossovers(bars, symbol)
    memory_before = []  # last non-zero state before bar k, from one pass over the series
    tracker = CrossoverTracker(symbol)
    for t, p in bars:
        memory_before.append(tracker.last_state)
        tracker.update(t, p)
    window = lookback_needed()
    for k in range(len(bars)):
        new = bars[k : k + batch]
        expected = [s for s in full if new[0][0] <= s.timestamp <= new[-1][0]]
        bounded = bars[max(0, k - window) : k]
        if k % full_every == 0:
            assert signals_for_new_bars(bars[:k], new, symbol) == expected, k
        assert signals_for_new_bars(bounded, new, symbol, last_state=memory_before[k]) == expected, k
        # The window read back from the table already holds the new bars (read after write).
        overlap = bars[max(0, k - window) : k + batch]
        assert signals_for_new_bars(overlap, new, symbol, last_state=memory_before[k]) == expected, k


def test_hand_series_resume_for_every_split_point() -> None:
    for batch in (1, 3, 25):
        assert_resume_equals_full(series(FLATS), batch)


def test_bounded_window_alone_cannot_know_an_old_state() -> None:
    bars = series(FLATS)
    window = bars[45 - lookback_needed() : 45]  # bars 26..44: all 9.0, every state in it is 0
    assert last_nonzero_state(window) is None
    assert last_nonzero_state(bars[:45]) == -1
    assert signals_for_new_bars(window, bars[45:46], "TEST") == []  # wrong without last_state...
    assert as_tuples(signals_for_new_bars(window, bars[45:46], "TEST", last_state=-1)) == [
        ("TEST", ts(45), "BUY", 11.0, 9.4, 9.1)  # ...right with it
    ]


def lambda_like_run(bars: list[tuple[str, float]], symbol: str, seed: int) -> list[Signal]:
    """Batches of random size, each resumed from the last 19 stored bars + the persisted last_state."""
    rng = random.Random(seed)
    stored: list[tuple[str, float]] = []
    persisted, out, k = 0, [], 0
    while k < len(bars):
        new = bars[k : k + rng.randint(1, 40)]
        stored.extend(new)  # the processor Lambda wrote them before the stream fired
        window = stored[-(len(new) + lookback_needed()) :]
        out.extend(signals_for_new_bars(window, new, symbol, last_state=persisted))
        tracker = CrossoverTracker.resume(symbol, window, last_state=persisted)
        persisted = tracker.last_state
        k += len(new)
    return out


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([9.0, 10.0, 10.5, 11.0]), max_size=150), st.integers(0, 10**6))
def test_batched_resume_chain_equals_full(prices: list[float], seed: int) -> None:
    bars = series(prices)
    assert lambda_like_run(bars, "X", seed) == crossovers(bars, "X")


# ---------------------------------------------------------------- real recorded prices


def replay_bars(dataset: str) -> dict[str, list[tuple[str, float]]]:
    sources = pytest.importorskip("helpers.notebook.sources", reason="no quote sources yet")
    bars: dict[str, list[tuple[str, float]]] = {}
    for quote in sources.replay(dataset):
        bars.setdefault(quote.symbol, []).append((quote.timestamp, quote.price))
    return bars


@pytest.fixture(scope="module", params=["aapl-1m", "daily"])
def replay(request: pytest.FixtureRequest) -> dict[str, list[tuple[str, float]]]:
    return replay_bars(request.param)


def test_replay_incremental_equals_vectorised_per_symbol(replay: dict[str, list[tuple[str, float]]]) -> None:
    signals = assert_same_everywhere(replay)
    assert signals, "real prices cross over"
    for sym in replay:
        kinds = [s.signal for s in signals if s.symbol == sym]
        assert all(a != b for a, b in itertools.pairwise(kinds)), "signals alternate"


def test_replay_lambda_like_batches_equal_full(replay: dict[str, list[tuple[str, float]]]) -> None:
    for n, (sym, bars) in enumerate(sorted(replay.items())):
        assert lambda_like_run(bars, sym, seed=n) == crossovers(bars, sym)


def test_replay_minute_resume_for_every_split_point() -> None:
    bars = replay_bars("aapl-1m")["AAPL"]
    assert_resume_equals_full(bars, batch=7, symbol="AAPL", full_every=97)


# ---------------------------------------------------------------- Lambda safety


def test_indicators_import_no_heavy_packages() -> None:
    code = (
        "import sys, helpers.core.indicators; "
        "heavy = {'pandas', 'numpy', 'matplotlib', 'boto3'} & set(sys.modules); "
        "sys.exit(f'imported {sorted(heavy)}' if heavy else 0)"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


# ---------------------------------------------------------------- every window pair a user can pick


def walk(seed: int, n: int) -> list[float]:
    """A random walk with flat runs (state-0 stretches) and a few exact repeats."""
    rnd = random.Random(seed)
    price, prices = 100.0, []
    for _ in range(n):
        if rnd.random() > 0.15:
            price = round(price * (1 + rnd.gauss(0, 0.01)), 4)
        prices.append(price)
    return prices


def assert_windows_agree(short: int, long: int, seed: int) -> int:
    """Incremental == vectorised (full tuples) == exact reference for two symbols; the signal count."""
    bars = {"AAA": series(walk(seed, long + 120)), "BB.B": series(walk(seed + 1, long + 60))}
    incremental = crossovers_by_symbol(
        ({"symbol": sym, "timestamp": t, "price": p} for sym, rows in bars.items() for t, p in rows),
        short=short,
        long=long,
    )
    flat = [s for sym in sorted(incremental) for s in incremental[sym]]
    columns = ["symbol", "timestamp", "signal", "price", *sma_columns(short, long)]
    vectorised = signals_frame(frame(bars), short, long)[columns]
    assert as_tuples(flat) == [tuple(r) for r in vectorised.itertuples(index=False, name=None)], (short, long)
    for sym, rows in bars.items():
        assert [(s.timestamp, s.signal) for s in incremental[sym]] == reference_windows(rows, short, long)
    return len(flat)


SMALL_PAIRS = [(short, long) for long in range(2, 16) for short in range(1, long)]


@pytest.mark.parametrize(("short", "long"), SMALL_PAIRS)
def test_every_small_window_pair_incremental_equals_vectorised_equals_exact(short: int, long: int) -> None:
    assert assert_windows_agree(short, long, seed=100 * short + long) > 0


@pytest.mark.parametrize(("short", "long"), [(1, 200), (199, 200), (50, 200), (10, 30), (12, 26), (7, 13)])
def test_edge_window_pairs_agree(short: int, long: int) -> None:
    assert assert_windows_agree(short, long, seed=long) >= 0


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, MAX_WINDOW).flatmap(lambda n: st.tuples(st.integers(1, n - 1), st.just(n))),
    st.integers(0, 10**6),
)
def test_any_window_pair_a_user_can_pick_agrees(pair: tuple[int, int], seed: int) -> None:
    assert_windows_agree(*pair, seed=seed)


def test_default_windows_are_the_deployed_rule_and_columns_follow_the_windows() -> None:
    assert (SHORT_WINDOW, LONG_WINDOW) == (5, 20) and check_windows(SHORT_WINDOW, LONG_WINDOW) == (5, 20)
    assert window_weights() == (4, 1) and window_weights(10, 30) == (3, 1) and window_weights(6, 8) == (4, 3)
    assert sma_columns() == ("sma5", "sma20") and sma_columns(10, 30) == ("sma10", "sma30")
    sf = sma_frame(frame({"X": series(FLATS)}), 10, 30)
    assert {"sma10", "sma30"} <= set(sf.columns) and sf["state"][:29].isna().all() and sf["state"][29] == -1
    assert state_of(5 * 11, 20 * 10) == 1 and state_of(4, 16, 1, 4) == 0 and state_of(3, 16, 1, 4) == -1


@pytest.mark.parametrize(
    ("short", "long"), [(0, 5), (5, 5), (20, 5), (5, MAX_WINDOW + 1), (-1, 3), (5.0, 20), (True, 20)]
)
def test_windows_outside_the_allowed_range_are_refused(short: object, long: object) -> None:
    with pytest.raises(ValueError, match="windows must"):
        check_windows(short, long)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="windows must"):
        signals_frame(frame({"X": series(FLATS)}), short, long)  # type: ignore[arg-type]
