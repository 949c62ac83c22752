"""Data and reference computations for ``test_athena_endpoint``: the archive it writes, the pandas
version of every named query, and starting / waiting for a query with boto3.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pandas as pd

from helpers.core import indicators
from helpers.notebook import athena
from helpers.pipeline.config import Settings

SYMBOLS = ("AAPL", "BRK.B", "EURUSD=X")
DAYS = ("2026-07-29", "2026-07-30", "2026-07-31")
BARS_PER_DAY = 130  # 3 x 3 x 130 = 1170 quotes: more than one GetQueryResults page
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def archive_records() -> list[dict[str, Any]]:
    rnd = random.Random(2026)
    out = []
    for symbol in SYMBOLS:
        price = {"AAPL": 190.0, "BRK.B": 410.0, "EURUSD=X": 1.08}[symbol]
        for day in DAYS:
            previous_close = price
            for i in range(BARS_PER_DAY):
                flat = symbol == "AAPL" and day == DAYS[1] and 40 <= i < 70  # state 0 keeps the memory
                price = price if flat else round(price * (1 + rnd.gauss(0, 0.006)), 4)
                stamp = f"{day}T{13 + i // 60:02d}:{i % 60:02d}:00Z"
                out.append(
                    {"symbol": symbol, "timestamp": stamp, "price": price, "previous_close": previous_close,
                     "open": price, "high": round(price * 1.002, 4), "low": round(price * 0.998, 4),
                     "volume": rnd.randint(0, 50_000), "source": "replay", "produced_at": stamp}
                )  # fmt: skip
    return out


def expected_frames(q: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each named query, computed with pandas."""
    q = q.copy()
    q["change"] = q["price"] - q["previous_close"]
    q["change_pct"] = 100 * (q["price"] - q["previous_close"]) / q["previous_close"]
    moves = ["symbol", "timestamp", "price", "previous_close", "change", "change_pct"]
    top = q.assign(size=q["change_pct"].abs()).sort_values(
        ["size", "symbol", "timestamp"], ascending=[False, True, True], kind="stable"
    )
    volume = q.groupby("symbol", as_index=False).agg(
        quotes=("volume", "size"), avg_volume=("volume", "mean"), min_volume=("volume", "min"),
        max_volume=("volume", "max"), first_quote=("timestamp", "min"), last_quote=("timestamp", "max"),
    )  # fmt: skip
    q["trading_day"] = q["timestamp"].str[:10]
    daily = q.groupby(["symbol", "trading_day"], as_index=False).agg(
        open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("price", "last"),
        volume=("volume", "sum"), bars=("price", "size"),
    )  # fmt: skip
    by_symbol = q.groupby("symbol")["price"]
    sma = q.assign(
        sma5=by_symbol.transform(lambda p: p.rolling(5).mean()),
        sma20=by_symbol.transform(lambda p: p.rolling(20).mean()),
        bar=q.groupby("symbol").cumcount() + 1,
    )
    signals = [
        (s.symbol, s.timestamp, s.signal, s.price, s.sma_short, s.sma_long)
        for found in indicators.crossovers_by_symbol(q.to_dict("records")).values()
        for s in found
    ]
    return {
        "top_price_changes": top[moves].head(athena.TOP_N),
        "avg_volume_by_symbol": volume,
        "anomalies": q.loc[q["change_pct"].abs() > athena.ANOMALY_THRESHOLD_PCT, moves],
        "daily_ohlc": daily,
        "sma": sma.loc[sma["bar"] >= 20, ["symbol", "timestamp", "price", "sma5", "sma20"]],
        "crossovers": pd.DataFrame(
            signals, columns=["symbol", "timestamp", "signal", "price", "sma_short", "sma_long"]
        ),
    }


def wait_query(client: Any, query_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = client.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
        if execution["Status"]["State"] in TERMINAL:
            return dict(execution)
        time.sleep(0.05)
    raise AssertionError(f"query {query_id} did not finish within {timeout} s")


def start_query(client: Any, s: Settings, sql: str, workgroup: str | None = None) -> str:
    return str(
        client.start_query_execution(
            QueryString=sql,
            QueryExecutionContext={"Database": s.glue_database},
            WorkGroup=workgroup or s.athena_workgroup,
        )["QueryExecutionId"]
    )
