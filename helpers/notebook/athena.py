"""Analysis queries over the raw archive, run through Athena with pyathena (notebook-only module).

The same code runs against AWS and the local stack: only the settings' endpoint differs.
pyathena sends ``endpoint_url`` to its Athena (and Glue) client but deliberately not to its S3
client, which :class:`~pyathena.pandas.cursor.PandasCursor` uses to read the result CSV. When the
settings name an endpoint, the connection's boto3 session therefore reads a generated AWS config
file whose profile sets ``endpoint_url`` (the SDK's standard "configured endpoint" mechanism), so
every client pyathena builds — Athena, Glue and S3 — goes to that endpoint, without touching the
process environment.

The SQL of the named queries is generated in :mod:`helpers.notebook.athena_sql` (re-exported here).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.core.errors import ParameterError, QueryError
from helpers.core.indicators import LONG_WINDOW, SHORT_WINDOW, crossovers_by_symbol
from helpers.notebook.athena_sql import (
    ANOMALY_THRESHOLD_PCT,
    QUERIES,
    TOP_N,
    crossover_sql,
    queries,
    render,
    sma_sql,
)
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings

__all__ = [
    "ANOMALY_THRESHOLD_PCT",
    "CROSS_CHECK_TOLERANCE",
    "POLL_INTERVAL_SECONDS",
    "QUERIES",
    "TOP_N",
    "connect",
    "cross_check",
    "crossover_sql",
    "daily_close_chart",
    "queries",
    "render",
    "row_counts",
    "run_all",
    "run_query",
    "sma_sql",
]

log = logging.getLogger(__name__)

POLL_INTERVAL_SECONDS = 0.2
READ_TIMEOUT_SECONDS = 120


def _config_file(s: Settings, endpoint: str) -> Path:
    """An AWS config file whose profile points every service at ``endpoint`` (written atomically)."""
    path = Path(s.state_dir) / "athena" / "aws-config"
    section = f"profile {s.profile}" if s.profile else "default"
    text = f"[{section}]\nregion = {s.region}\nendpoint_url = {endpoint}\n"
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".aws-config-")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    return path


def _session(s: Settings) -> Any:
    endpoint = s.resolved_endpoint
    if endpoint is None:
        return aws.session(s)
    import boto3
    import botocore.session

    core = botocore.session.Session()
    core.set_config_variable("config_file", str(_config_file(s, endpoint)))
    if s.is_local:
        return aws.record_calls(
            boto3.session.Session(botocore_session=core, region_name=s.region, **aws.local_credentials(s))
        )
    return aws.record_calls(
        boto3.session.Session(botocore_session=core, region_name=s.region, profile_name=s.profile)
    )


def connect(settings: Settings | None = None, *, cursor: str = "pandas") -> Any:
    """A pyathena connection bound to the settings (workgroup, database, results location, endpoint).

    ``cursor="pandas"`` makes :class:`~pyathena.pandas.cursor.PandasCursor` the default cursor
    (results read from the result CSV in S3); ``"default"`` pages through GetQueryResults.
    """
    import pyathena
    from botocore.config import Config

    s = settings or load_settings()
    if cursor not in ("pandas", "default"):
        raise ParameterError(f"cursor must be 'pandas' or 'default', got {cursor!r}")
    cursor_class = None
    if cursor == "pandas":
        from pyathena.pandas.cursor import PandasCursor

        cursor_class = PandasCursor
    extra = {"endpoint_url": s.resolved_endpoint} if s.resolved_endpoint else {}
    return pyathena.connect(
        s3_staging_dir=s.results_location,
        region_name=s.region,
        work_group=s.athena_workgroup,
        schema_name=s.glue_database,
        session=_session(s),
        cursor_class=cursor_class,
        poll_interval=POLL_INTERVAL_SECONDS,
        config=Config(retries={"mode": "standard", "max_attempts": 8}, read_timeout=READ_TIMEOUT_SECONDS),
        **extra,
    )


def _execute(conn: Any, sql: str, label: str, cursor: str) -> pd.DataFrame:
    from pyathena.error import Error as PyAthenaError

    started = time.monotonic()
    cur = conn.cursor()
    try:
        cur.execute(sql)
        if cursor == "pandas":
            frame = cur.as_pandas()
        else:
            frame = pd.DataFrame(cur.fetchall(), columns=[d[0] for d in cur.description or []])
    except PyAthenaError as err:
        raise QueryError(
            f"Athena query {label!r} failed: {err}. Check the SQL, that the table exists "
            "(run 01_provision) and that its partitions are registered "
            "(helpers.pipeline.catalog.sync_partitions)."
        ) from err
    frame.attrs["athena"] = {
        "query_id": cur.query_id,
        "data_scanned_bytes": cur.data_scanned_in_bytes,
        "engine_ms": cur.engine_execution_time_in_millis,
        "total_ms": cur.total_execution_time_in_millis,
        "client_ms": round((time.monotonic() - started) * 1000),
        "rows": len(frame),
    }
    log.info("query %s: %d rows, %s bytes scanned", label, len(frame), cur.data_scanned_in_bytes)
    return frame


def run_query(
    name_or_sql: str,
    settings: Settings | None = None,
    *,
    cursor: str = "pandas",
    symbols: Iterable[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    short: int = SHORT_WINDOW,
    long: int = LONG_WINDOW,
) -> pd.DataFrame:
    """Run a named query (a key of :data:`QUERIES`) or raw SQL; statistics in ``frame.attrs["athena"]``.

    ``symbols``, ``start``/``end`` (``start <= timestamp < end``, partitions pruned) and the windows
    apply to named queries (:func:`~helpers.notebook.athena_sql.render`).
    """
    s = settings or load_settings()
    named = name_or_sql in QUERIES
    options: dict[str, Any] = {"symbols": symbols, "start": start, "end": end, "short": short, "long": long}
    sql = render(name_or_sql, s, **options) if named else name_or_sql
    label = name_or_sql if name_or_sql in QUERIES else "sql"
    with connect(s, cursor=cursor) as conn:
        return _execute(conn, sql, label, cursor)


def run_all(
    settings: Settings | None = None,
    *,
    cursor: str = "pandas",
    symbols: Iterable[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    short: int = SHORT_WINDOW,
    long: int = LONG_WINDOW,
) -> dict[str, pd.DataFrame]:
    """Every named query, in :data:`QUERIES` order, over one connection (options as :func:`run_query`)."""
    s = settings or load_settings()
    wanted = None if symbols is None else list(symbols)
    options: dict[str, Any] = {"symbols": wanted, "start": start, "end": end, "short": short, "long": long}
    with connect(s, cursor=cursor) as conn:
        return {name: _execute(conn, render(name, s, **options), name, cursor) for name in QUERIES}


def row_counts(frames: Mapping[str, pd.DataFrame]) -> dict[str, int]:
    """``{query name: row count}`` — what the workbook records in its reports."""
    return {name: len(frame) for name, frame in frames.items()}


# Largest differences accepted between Athena's values and the processed items: prices are the same
# floats; the processor rounds change to 6 and change_pct to 4 decimals (helpers.core.quotes.derive).
CROSS_CHECK_TOLERANCE = {
    "price": 0.0,
    "previous_close": 0.0,
    "change": 5e-7 + 1e-9,
    "change_pct": 5e-5 + 1e-9,
}


def cross_check(
    frames: Mapping[str, pd.DataFrame],
    processed: pd.DataFrame,
    *,
    short: int = SHORT_WINDOW,
    long: int = LONG_WINDOW,
) -> pd.DataFrame:
    """Compare the Athena results with the processed DynamoDB items; one row per check, ``ok`` column.

    ``processed`` is :func:`helpers.notebook.history.processed_frame`'s frame. Counts per symbol, the
    top changes and anomalies (same bars, same values within :data:`CROSS_CHECK_TOLERANCE`) and the
    crossovers (equal to :mod:`helpers.core.indicators` over the processed series, same windows as
    the ``crossovers`` frame was run with).
    """
    checks: list[dict[str, Any]] = []

    def add(check: str, athena: Any, dynamodb: Any, ok: bool) -> None:
        checks.append({"check": check, "athena": athena, "dynamodb": dynamodb, "ok": bool(ok)})

    counts = frames["avg_volume_by_symbol"].set_index("symbol")["quotes"].astype(int).to_dict()
    expected = processed.groupby("symbol").size().astype(int).to_dict() if not processed.empty else {}
    add("quotes per symbol", counts, expected, counts == expected)
    add("total quotes", sum(counts.values()), len(processed), sum(counts.values()) == len(processed))
    if processed.empty:
        return pd.DataFrame(checks)
    by_key = processed.set_index(["symbol", "timestamp"])
    for name in ("top_price_changes", "anomalies"):
        frame = frames[name]
        keys = list(zip(frame["symbol"], frame["timestamp"], strict=True))
        missing = [k for k in keys if k not in by_key.index]
        add(f"{name}: bars in DynamoDB", len(keys) - len(missing), len(keys), not missing)
        for column, allowed in CROSS_CHECK_TOLERANCE.items():
            if missing or column not in by_key.columns or not keys:
                continue
            theirs = by_key.loc[keys, column].astype(float).to_numpy()
            worst = float(abs(frame[column].astype(float).to_numpy() - theirs).max())
            add(f"{name}: {column}", f"max |diff| {worst:.3g}", f"<= {allowed:.3g}", worst <= allowed)
    pct = 100 * (processed["price"] - processed["previous_close"]) / processed["previous_close"]
    anomalies = int((pct.abs() > ANOMALY_THRESHOLD_PCT).sum())
    add("anomalies: count", len(frames["anomalies"]), anomalies, len(frames["anomalies"]) == anomalies)
    by_symbol = crossovers_by_symbol(processed.to_dict("records"), short=short, long=long)
    signals = [s for found in by_symbol.values() for s in found]
    theirs_signals = sorted((s.symbol, s.timestamp, s.signal) for s in signals)
    found = frames["crossovers"]
    ours = sorted(zip(found["symbol"], found["timestamp"], found["signal"], strict=True))
    add("crossovers = helpers.core.indicators", len(ours), len(theirs_signals), ours == theirs_signals)
    return pd.DataFrame(checks)


def daily_close_chart(daily: pd.DataFrame) -> Any:
    """Daily close per symbol from the ``daily_ohlc`` result, indexed to 100 on each symbol's first day."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for symbol, rows in daily.groupby("symbol"):
        closes = rows["close"].astype(float)
        marker = "o" if len(rows) <= 60 else None  # years of daily bars: a line, not dots
        ax.plot(
            pd.to_datetime(rows["trading_day"]),
            100 * closes / closes.iloc[0],
            marker=marker,
            label=f"{symbol} ({len(rows)} days)",
        )
    ax.set_title("Daily close from Athena (daily_ohlc), first day = 100", loc="left")
    ax.set_xlabel("Trading day (UTC)")
    ax.set_ylabel("Close, indexed")
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.legend(loc="best", fontsize=9)
    return fig
