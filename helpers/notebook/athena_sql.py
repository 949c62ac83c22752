"""The SQL of the analysis queries (Trino/Athena dialect), generated from the shared definitions.

Every query reads the table through the ``quotes`` CTE, which keeps one row per
``(symbol, timestamp)`` (the latest produced), as the DynamoDB table does, and gives each its
``dt`` (the quote's UTC date, ``substr("timestamp", 1, 10)``: the table is partitioned by
``symbol`` and ``year``, see :mod:`helpers.core.layout`). :func:`render` restricts the CTE to some
symbols and/or a time range; a time range filters on ``"timestamp"`` *and* on the ``year``
partitions it can touch, so the engine reads only those. The ``sma`` and
``crossovers`` queries are generated for any window pair :func:`~helpers.core.indicators.check_windows`
accepts, with the integer weights of :func:`~helpers.core.indicators.window_weights`: the crossover
rule is written once, in :mod:`helpers.core.indicators`. :mod:`helpers.notebook.athena` runs them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from helpers.core import layout
from helpers.core.errors import ParameterError
from helpers.core.indicators import LONG_WINDOW, SHORT_WINDOW, UNITS_PER_PRICE, check_windows, window_weights
from helpers.core.quotes import SYMBOL_PATTERN
from helpers.notebook.analysis import sma_columns
from helpers.pipeline.config import Settings, load_settings

__all__ = ["ANOMALY_THRESHOLD_PCT", "QUERIES", "TOP_N", "crossover_sql", "queries", "render", "sma_sql"]

ANOMALY_THRESHOLD_PCT = 5
TOP_N = 5
_SYMBOL = re.compile(SYMBOL_PATTERN)
_TIME_BOUND = re.compile(r"\d{4}(-\d{2}(-\d{2}(T\d{2}(:\d{2}(:\d{2}Z?)?)?)?)?)?")
"""A canonical timestamp or a leading part of one: ``2013``, ``2013-05``, ``2013-05-01T13:30:00Z``."""

_QUOTES = """\
WITH quotes AS (
    SELECT symbol, "timestamp", price, previous_close, open, high, low, volume,
           substr("timestamp", 1, 10) AS dt
    FROM (
        SELECT *,
               row_number() OVER (PARTITION BY symbol, "timestamp" ORDER BY produced_at DESC) AS copy_rank
        FROM "{database}"."{table}"{where}
    ) AS archived
    WHERE copy_rank = 1
)"""

_CHANGE = "price - previous_close"
_CHANGE_PCT = "100 * (price - previous_close) / previous_close"


def _window(n: int) -> str:
    """The window of the last ``n`` bars of a symbol, the current one included."""
    return f'OVER (PARTITION BY symbol ORDER BY "timestamp" ROWS BETWEEN {n - 1} PRECEDING AND CURRENT ROW)'


def sma_sql(short: int = SHORT_WINDOW, long: int = LONG_WINDOW) -> str:
    """The ``sma`` query: float SMAs of the prices from each symbol's ``long``-th bar on (for charts)."""
    check_windows(short, long)
    column_short, column_long = sma_columns(short, long)
    return f"""{_QUOTES},
bars AS (
    SELECT symbol, "timestamp", price,
           avg(price) {_window(short)} AS {column_short},
           avg(price) {_window(long)} AS {column_long},
           row_number() OVER (PARTITION BY symbol ORDER BY "timestamp") AS bar
    FROM quotes
)
SELECT symbol, "timestamp", price, {column_short}, {column_long}
FROM bars
WHERE bar >= {long}
ORDER BY symbol, "timestamp\""""


def crossover_sql(short: int = SHORT_WINDOW, long: int = LONG_WINDOW) -> str:
    """The ``crossovers`` query: :mod:`helpers.core.indicators`' definition in SQL, for these windows.

    On integer micro-units: units = round-half-even(price * 1e6); from the ``long``-th bar,
    state = sign(w_short * sum_short - w_long * sum_long) with the weights of
    :func:`~helpers.core.indicators.window_weights` (5/20: ``4 * sum5 - sum20``); a signal where the
    state flips against the last non-zero state (zeros keep the memory: they are filtered out before
    lag()). Units are DECIMAL(38,0) so sums cannot overflow.
    """
    weight_short, weight_long = window_weights(short, long)
    more = f"{weight_short} * sum_short > {weight_long} * sum_long"
    less = f"{weight_short} * sum_short < {weight_long} * sum_long"
    return f"""{_QUOTES},
scaled AS (
    SELECT symbol, "timestamp", price, price * {UNITS_PER_PRICE} AS x FROM quotes
),
units AS (
    SELECT symbol, "timestamp", price,
           CAST(CASE WHEN x - floor(x) > 0.5 THEN floor(x) + 1
                     WHEN x - floor(x) < 0.5 THEN floor(x)
                     ELSE floor(x) + mod(floor(x), 2) END AS DECIMAL(38, 0)) AS units
    FROM scaled
),
sums AS (
    SELECT symbol, "timestamp", price,
           sum(units) {_window(short)} AS sum_short,
           sum(units) {_window(long)} AS sum_long,
           row_number() OVER (PARTITION BY symbol ORDER BY "timestamp") AS bar
    FROM units
),
states AS (
    SELECT symbol, "timestamp", price, sum_short, sum_long,
           CASE WHEN {more} THEN 1 WHEN {less} THEN -1 ELSE 0 END AS state
    FROM sums
    WHERE bar >= {long}
),
turns AS (
    SELECT symbol, "timestamp", price, sum_short, sum_long, state,
           lag(state) OVER (PARTITION BY symbol ORDER BY "timestamp") AS previous_state
    FROM states
    WHERE state <> 0
)
SELECT symbol, "timestamp", CASE WHEN state = 1 THEN 'BUY' ELSE 'SELL' END AS signal, price,
       CAST(sum_short AS DOUBLE) / {short * UNITS_PER_PRICE} AS sma_short,
       CAST(sum_long AS DOUBLE) / {long * UNITS_PER_PRICE} AS sma_long
FROM turns
WHERE previous_state = -state
ORDER BY symbol, "timestamp\""""


def queries(short: int = SHORT_WINDOW, long: int = LONG_WINDOW) -> dict[str, str]:
    """Every named query (SQL templates), the ``sma`` and ``crossovers`` ones for these windows."""
    return {
        "top_price_changes": f"""{_QUOTES}
SELECT symbol, "timestamp", price, previous_close,
       {_CHANGE} AS change,
       {_CHANGE_PCT} AS change_pct
FROM quotes
ORDER BY abs({_CHANGE_PCT}) DESC, symbol, "timestamp"
LIMIT {TOP_N}""",
        "avg_volume_by_symbol": f"""{_QUOTES}
SELECT symbol, count(*) AS quotes, avg(volume) AS avg_volume, min(volume) AS min_volume,
       max(volume) AS max_volume, min("timestamp") AS first_quote, max("timestamp") AS last_quote
FROM quotes
GROUP BY symbol
ORDER BY symbol""",
        "anomalies": f"""{_QUOTES}
SELECT symbol, "timestamp", price, previous_close,
       {_CHANGE} AS change,
       {_CHANGE_PCT} AS change_pct
FROM quotes
WHERE abs({_CHANGE_PCT}) > {ANOMALY_THRESHOLD_PCT}
ORDER BY symbol, "timestamp\"""",
        "daily_ohlc": f"""{_QUOTES}
SELECT symbol, substr("timestamp", 1, 10) AS trading_day,
       min_by(open, "timestamp") AS open, max(high) AS high, min(low) AS low,
       max_by(price, "timestamp") AS close, sum(volume) AS volume, count(*) AS bars
FROM quotes
GROUP BY symbol, substr("timestamp", 1, 10)
ORDER BY symbol, trading_day""",
        "sma": sma_sql(short, long),
        "crossovers": crossover_sql(short, long),
    }


QUERIES: dict[str, str] = queries()
"""The named queries for the deployed windows (``indicators.SHORT_WINDOW``/``LONG_WINDOW``)."""


def render(
    name: str,
    settings: Settings | None = None,
    *,
    symbols: Iterable[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    short: int = SHORT_WINDOW,
    long: int = LONG_WINDOW,
) -> str:
    """The SQL of a named query for the settings' table, optionally restricted to some symbols or times.

    ``start``/``end`` keep the quotes with ``start <= "timestamp" < end`` (canonical timestamps or a
    leading part of one, e.g. ``"2013-05-01"``; either may be left out) and add the ``year IN (...)``
    partitions that range touches, so Athena prunes the others. ``short``/``long`` are the SMA
    windows of the ``sma`` and ``crossovers`` queries.
    """
    s = settings or load_settings()
    if name not in QUERIES:
        raise ParameterError(f"unknown query {name!r}; known: {sorted(QUERIES)}")
    conditions = []
    if symbols is not None:
        wanted = sorted(set(symbols))
        bad = [sym for sym in wanted if not _SYMBOL.fullmatch(sym)]
        if bad or not wanted:
            raise ParameterError(
                f"symbols must be a non-empty list of tickers matching {SYMBOL_PATTERN}, got {bad}"
            )
        conditions.append("symbol IN (" + ", ".join(f"'{sym}'" for sym in wanted) + ")")
    conditions += _time_conditions(start, end)
    where = "\n        WHERE " + " AND ".join(conditions) if conditions else ""
    template = QUERIES[name] if (short, long) == (SHORT_WINDOW, LONG_WINDOW) else queries(short, long)[name]
    return template.format(database=s.glue_database, table=s.glue_table, where=where)


def _time_conditions(start: str | None, end: str | None) -> list[str]:
    """The ``"timestamp"`` bounds and the ``year`` partitions they touch, as AND-ed conditions.

    Both bounds: ``year IN (...)``, which every engine prunes on; one bound: ``year >=`` / ``<=``.
    """
    for label, bound in (("start", start), ("end", end)):
        if bound is not None and not _TIME_BOUND.fullmatch(bound):
            raise ParameterError(
                f"{label} must be a UTC timestamp like '2013-05-01T13:30:00Z' or a leading part of one "
                f"('2013', '2013-05-01'), got {bound!r}"
            )
    key = layout.TIME_PARTITION
    conditions = []
    if start is not None:
        conditions.append(f"\"timestamp\" >= '{start}'")
    if end is not None:
        conditions.append(f"\"timestamp\" < '{end}'")
    if start is not None and end is not None:
        years = layout.partition_values(start, end)
        conditions.append(f"{key} IN (" + ", ".join(f"'{y}'" for y in years) + ")" if years else "false")
    elif start is not None:
        conditions.append(f"{key} >= '{start[:4]}'")
    elif end is not None:
        conditions.append(f"{key} <= '{end[:4]}'")
    return conditions
