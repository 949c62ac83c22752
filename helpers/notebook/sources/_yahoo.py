"""The ``yfinance`` source: live 1-minute bars polled from Yahoo Finance (needs internet).

yfinance (and pandas) are imported only when the real Ticker is used; tests inject a fake.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from helpers.core.errors import SourceError
from helpers.core.quotes import Quote, format_timestamp, utc_now_timestamp
from helpers.notebook.sources._common import symbol_list

__all__ = ["YF_INTERVAL", "YF_MAX_BACKOFF_POLLS", "YF_PERIOD", "yfinance_live"]

log = logging.getLogger(__name__)

YF_MAX_BACKOFF_POLLS = 16
YF_PERIOD = "1d"
YF_INTERVAL = "1m"


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
    names = symbol_list(symbols)
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
