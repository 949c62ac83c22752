"""The ``yfinance`` source: live 1-minute bars polled from Yahoo Finance through yfinance.

What a poll costs. Yahoo serves minute bars one symbol per request (``/v8/finance/chart/{symbol}``);
yfinance has no multi-symbol bar request (``yf.download`` loops over the same per-symbol
requests and turns a 429 into a logged empty frame), so a poll is one chart request per
symbol that is not backing off, each bringing the whole session so far (``period="1d"``).
``previous_close`` comes from the same answer (its ``meta``), cached once per session: no
quote or ``fast_info`` request. The first request of a symbol also looks up its exchange
time zone (one more chart request, then cached under ``cache_dir``), and yfinance asks for
a cookie and crumb once per process.

What is sent. Every *complete* bar newer than the last one sent for that symbol, oldest
first: a bar is complete once its minute is over (or a later bar exists). The minute in
progress is held back, so the values sent are the final ones; a later correction of a bar
already sent (Yahoo revises the last bars' volume now and then) is not sent again, only
counted in :meth:`LivePoller.status` (``corrections``): downstream keeps one item per
(symbol, timestamp). After a backoff the bars of the missed minutes come in the next poll's
answer, so none is lost.

Failures. A rate limit (``YFRateLimitError``, HTTP 429) or a transport error (no connection,
time-out, 5xx) backs the *whole poller* off: the rest of that poll is skipped and the next one
waits ``interval * 2**k`` (k consecutive failed polls) with equal jitter, at most
``max_backoff_seconds``; after ``max_failures`` consecutive failed polls the source stops with
SourceError. If Yahoo has never answered (no network), the first transport error stops it at
once, pointing at the offline sources. A symbol-specific failure (unknown symbol, bad answer)
backs off that symbol alone (1, 2, 4 ... polls) while the others go on; after ``max_failures``
in a row the symbol is stopped, and when every symbol is stopped the source stops. An empty
answer (no bar yet) is not a failure. Polls are never closer than ``min_interval_seconds``
(default 30 s).

Market hours come from an exchange calendar (:mod:`._calendar`): while the market is closed
the poller makes no request and sleeps until the next open, saying until when.

yfinance and pandas are imported when the source is first read; tests hand it an offline
session (:mod:`._recorded_yahoo`) so yfinance's own request and parsing code runs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from helpers.core.errors import SourceError
from helpers.core.quotes import Quote, format_timestamp, utc_now_timestamp
from helpers.notebook.sources._calendar import ALWAYS_OPEN, DEFAULT_CALENDAR, MarketHours, market_hours
from helpers.notebook.sources._common import symbol_list
from helpers.notebook.sources._tape import TapeWriter, new_tape_path

__all__ = [
    "YF_CLOSED_STEP_SECONDS",
    "YF_INTERVAL",
    "YF_MAX_BACKOFF_SECONDS",
    "YF_MAX_CONSECUTIVE_FAILURES",
    "YF_MAX_SYMBOL_BACKOFF_POLLS",
    "YF_MIN_POLL_SECONDS",
    "YF_PERIOD",
    "LivePoller",
    "yfinance_live",
]

log = logging.getLogger(__name__)

YF_PERIOD = "1d"  # one chart request brings the session so far
YF_INTERVAL = "1m"
YF_BAR_SECONDS = 60.0
YF_MIN_POLL_SECONDS = 30.0  # the floor: a 1-minute bar cannot change faster than this is useful
YF_MAX_BACKOFF_SECONDS = 900.0  # the longest wait after rate limits or transport errors
YF_MAX_CONSECUTIVE_FAILURES = 8  # failed polls (or failures of one symbol) in a row before stopping
YF_MAX_SYMBOL_BACKOFF_POLLS = 16  # a failing symbol is retried at most this many polls apart
YF_CLOSED_STEP_SECONDS = 900.0  # while closed, the calendar is asked again at least this often
YF_REQUEST_TIMEOUT_SECONDS = 10.0


def yfinance_live(
    symbols: Sequence[str] | str,
    *,
    interval_seconds: float = YF_MIN_POLL_SECONDS,
    min_interval_seconds: float = YF_MIN_POLL_SECONDS,
    max_polls: int | None = None,
    max_failures: int = YF_MAX_CONSECUTIVE_FAILURES,
    max_backoff_seconds: float = YF_MAX_BACKOFF_SECONDS,
    calendar: str | None = DEFAULT_CALENDAR,
    tape: str | Path | bool | None = True,
    session: Any = None,
    cache_dir: str | Path | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], datetime] | None = None,
    rng: random.Random | None = None,
) -> LivePoller:
    """Poll Yahoo Finance every ``interval_seconds`` for the new complete 1-minute bars of ``symbols``.

    ``calendar``: exchange calendar (MIC, default ``"XNYS"``) whose sessions the poller keeps
    to; ``"always"`` or ``None`` polls at any hour. ``tape``: ``True`` records every quote
    sent to ``<state_dir>/tapes/``, a path records there, ``False``/``None`` records nothing.
    ``session``: a ``requests`` or ``curl_cffi`` session for yfinance (default: yfinance's own
    curl_cffi session). ``max_polls`` counts polls that asked Yahoo (``None``: no end).
    yfinance's caches go to ``cache_dir`` (default ``<state_dir>/yfinance``).
    ``sleep``, ``clock`` (aware UTC now) and ``rng`` (jitter) are for tests.
    Arguments are checked here; nothing is requested before the first quote is read.
    """
    names = symbol_list(symbols)
    if not (min_interval_seconds >= 0 and math.isfinite(min_interval_seconds)):
        raise SourceError(f"min_interval_seconds={min_interval_seconds!r} must be a finite number >= 0")
    if not (math.isfinite(interval_seconds) and interval_seconds >= min_interval_seconds):
        raise SourceError(
            f"interval_seconds={interval_seconds!r} is faster than the floor of {min_interval_seconds:g} s; "
            "Yahoo rate-limits clients that poll faster and a 1-minute bar does not change sooner. "
            "Poll less often (or lower min_interval_seconds knowingly)"
        )
    if max_polls is not None and max_polls < 1:
        raise SourceError(f"max_polls={max_polls!r} must be >= 1 or None")
    if max_failures < 1:
        raise SourceError(f"max_failures={max_failures!r} must be >= 1")
    if not (max_backoff_seconds >= interval_seconds and math.isfinite(max_backoff_seconds)):
        raise SourceError(
            f"max_backoff_seconds={max_backoff_seconds!r} must be finite and >= interval_seconds"
        )
    hours = market_hours(calendar)
    return LivePoller(
        names,
        interval_seconds=interval_seconds,
        max_polls=max_polls,
        max_failures=max_failures,
        max_backoff_seconds=max_backoff_seconds,
        hours=hours,
        tape=tape,
        session=session,
        cache_dir=cache_dir,
        sleep=sleep,
        clock=clock or _utc_now,
        rng=rng or random.Random(),
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SymbolStatus:
    """What the poller knows of one symbol (a row of :meth:`LivePoller.status`)."""

    symbol: str
    state: str = "waiting"
    last_bar: str | None = None
    bars_sent: int = 0
    failures: int = 0
    last_error: str | None = None
    next_try: str | None = None
    corrections: int = 0
    retry_poll: int = 0


class _Failure(Exception):
    """A poll-wide failure (rate limit or transport): the poller backs off."""


class LivePoller:
    """An iterator of live quotes that also reports its state (:meth:`status`, :attr:`summary`).

    Built by :func:`yfinance_live`; reading it polls. Not thread-safe for reading, but
    :meth:`status` may be called from another thread while it runs (notebook 03 does).
    """

    def __init__(
        self,
        names: list[str],
        *,
        interval_seconds: float,
        max_polls: int | None,
        max_failures: int,
        max_backoff_seconds: float,
        hours: MarketHours,
        tape: str | Path | bool | None,
        session: Any,
        cache_dir: str | Path | None,
        sleep: Callable[[float], Any],
        clock: Callable[[], datetime],
        rng: random.Random,
    ) -> None:
        self.symbols = names
        self.interval_seconds = interval_seconds
        self.max_polls = max_polls
        self.max_failures = max_failures
        self.max_backoff_seconds = max_backoff_seconds
        self.hours = hours
        self._tape_option = tape
        self._session = session
        self._cache_dir = cache_dir
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._symbols = {s: SymbolStatus(s) for s in names}
        self._reference: dict[str, tuple[date, float]] = {}  # symbol -> (session, previous close)
        self._sent: dict[str, dict[str, tuple[float, ...]]] = {s: {} for s in names}  # this session's bars
        self._tickers: dict[str, Any] = {}
        self.tape: TapeWriter | None = None
        self.polls = 0
        self.requests = 0
        self.failed_polls = 0  # consecutive
        self.rate_limited = 0
        self.market = "not polled yet"
        self.next_poll: str | None = None
        self._iterator: Iterator[Quote] | None = None
        self._reached = False  # whether Yahoo ever answered this poller

    # ------------------------------------------------------------------ reporting

    def status(self) -> list[dict[str, Any]]:
        """One row per symbol: state, last bar sent, bars sent, failures, last error, next try."""
        return [
            {
                "symbol": s.symbol,
                "state": s.state,
                "last_bar": s.last_bar,
                "bars_sent": s.bars_sent,
                "failures": s.failures,
                "last_error": s.last_error,
                "next_try": s.next_try,
                "corrections": s.corrections,
            }
            for s in self._symbols.values()
        ]

    @property
    def summary(self) -> dict[str, Any]:
        """The poller as a whole: polls, chart requests, rate limits, market state, next poll, tape."""
        return {
            "polls": self.polls,
            "chart_requests": self.requests,
            "rate_limited": self.rate_limited,
            "failed_polls_in_a_row": self.failed_polls,
            "market": self.market,
            "next_poll": self.next_poll,
            "tape": None if self.tape is None else str(self.tape.path),
            "tape_records": 0 if self.tape is None else self.tape.records,
        }

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> LivePoller:
        return self

    def __next__(self) -> Quote:
        if self._iterator is None:
            self._iterator = self._run()
        return next(self._iterator)

    def close(self) -> None:
        """Stop polling and close the tape."""
        if self._iterator is not None:
            close = getattr(self._iterator, "close", None)
            if close is not None:
                close()
        if self.tape is not None:
            self.tape.close()

    def _run(self) -> Iterator[Quote]:
        history = self._open_yfinance()
        wait = 0.0
        try:
            while self.max_polls is None or self.polls < self.max_polls:
                if wait:
                    self._nap(wait)
                self._wait_for_market()
                try:
                    yield from self._poll(history)
                except _Failure as err:
                    self.failed_polls += 1
                    if self.failed_polls >= self.max_failures:
                        raise SourceError(
                            f"yfinance: {self.failed_polls} polls in a row failed, the last with {err}; "
                            "stopping instead of hammering Yahoo. Wait a while (rate limits last minutes "
                            "to hours), check the connection, or use SOURCE='replay' (a recorded tape "
                            "or dataset, offline)"
                        ) from err.__cause__
                    wait = self._backoff()
                    log.warning("yfinance: %s; every symbol waits %.0f s", err, wait)
                else:
                    self.failed_polls = 0
                    wait = self.interval_seconds
                active = [s for s in self._symbols.values() if s.state != "stopped"]
                if not active:
                    raise SourceError(
                        "yfinance: every symbol was stopped after repeated failures: "
                        + "; ".join(f"{s.symbol}: {s.last_error}" for s in self._symbols.values())
                        + ". Check the symbols (Yahoo's spelling, e.g. BRK-B) or use SOURCE='replay'"
                    )
                upcoming = self._clock() + timedelta(seconds=wait)
                self.next_poll = format_timestamp(upcoming)
                for s in active:
                    later = max(0, s.retry_poll - self.polls - 1) * self.interval_seconds
                    s.next_try = format_timestamp(upcoming + timedelta(seconds=later))
        finally:
            if self.tape is not None:
                self.tape.close()

    def _backoff(self) -> float:
        """Equal jitter: between half and all of ``interval * 2**k``, capped, never under the interval."""
        cap = min(self.max_backoff_seconds, self.interval_seconds * 2.0**self.failed_polls)
        return max(self.interval_seconds, cap * self._rng.uniform(0.5, 1.0))

    def _nap(self, seconds: float) -> None:
        self._sleep(seconds)

    def _wait_for_market(self) -> None:
        while True:
            now = self._clock()
            if self.hours.is_open(now):
                self.market = (
                    "open" if self.hours.name != ALWAYS_OPEN else f"not checked (calendar={ALWAYS_OPEN!r})"
                )
                return
            opens = self.hours.next_open(now)
            market = f"closed until {format_timestamp(opens)} ({self.hours.name})"
            seconds = (opens - now).total_seconds()
            if market != self.market:
                log.info("yfinance: market %s; no request for %.0f s", market, seconds)
            self.market = market
            self.next_poll = format_timestamp(opens)
            for s in self._symbols.values():
                if s.state != "stopped":
                    s.state, s.next_try = "market closed", self.next_poll
            self._nap(max(1.0, min(seconds, YF_CLOSED_STEP_SECONDS)))

    def _poll(self, history: Callable[[str], Any]) -> Iterator[Quote]:
        self.polls += 1
        poll = self.polls
        for s in self._symbols.values():
            if s.state == "stopped" or s.retry_poll > poll:
                continue
            self.requests += 1
            try:
                frame, meta = history(s.symbol)
            except Exception as err:
                kind = _classify(err)
                s.last_error = f"{type(err).__name__}: {err}".strip()
                answered = getattr(err, "response", None) is not None or kind != "transport"
                if not answered and not self._reached:
                    raise SourceError(
                        f"Yahoo Finance is unreachable from this machine: {str(err).rstrip('.')}; "
                        "use SOURCE='replay' (real recorded prices or a tape, offline) or SOURCE='synthetic'"
                    ) from err
                self._reached = self._reached or answered  # Yahoo answered, if only to refuse
                if kind == "empty":
                    s.state, s.last_error = "no bars yet", None
                    continue
                if kind in ("rate_limit", "transport"):
                    if kind == "rate_limit":
                        self.rate_limited += 1
                    s.state = "rate limited" if kind == "rate_limit" else "transport error"
                    raise _Failure(f"{s.symbol}: {s.last_error}") from err
                s.failures += 1
                if s.failures >= self.max_failures:
                    s.state, s.next_try = "stopped", None
                    log.error("yfinance %s stopped after %d failures in a row: %s", s.symbol, s.failures, err)
                    continue
                skip = min(2 ** (s.failures - 1), YF_MAX_SYMBOL_BACKOFF_POLLS)
                s.state, s.retry_poll = "failing", poll + 1 + skip
                log.warning("yfinance %s failed (%s); next try in %d polls", s.symbol, s.last_error, skip)
                continue
            self._reached = True
            s.failures, s.last_error, s.state = 0, None, "ok"
            for quote in self._new_bars(s, frame, meta):
                if self.tape is None and self._tape_option not in (None, False):
                    self.tape = self._open_tape()
                if self.tape is not None:
                    self.tape.write(quote)
                s.bars_sent += 1
                s.last_bar = quote.timestamp
                yield quote

    def _new_bars(self, s: SymbolStatus, frame: Any, meta: dict[str, Any]) -> Iterator[Quote]:
        if frame is None or len(frame) == 0:
            s.state = "no bars yet"
            return
        frame = frame.dropna(subset=["Close"])
        now = self._clock()
        stamps = [ts.to_pydatetime() for ts in frame.index]
        rows = frame[["Open", "High", "Low", "Close", "Volume"]].to_numpy().tolist()
        sent = self._sent[s.symbol]
        for i, (stamp, (o, h, lo, c, v)) in enumerate(zip(stamps, rows, strict=True)):
            complete = i + 1 < len(stamps) or stamp + timedelta(seconds=YF_BAR_SECONDS) <= now
            if not complete:
                break
            timestamp = format_timestamp(stamp)
            values = (round(float(o), 4), round(float(h), 4), round(float(lo), 4), round(float(c), 4))
            volume = int(v) if math.isfinite(float(v)) else 0
            if timestamp in sent:
                if sent[timestamp] != (*values, volume):
                    s.corrections += 1
                    sent[timestamp] = (*values, volume)
                continue
            if s.last_bar is not None and timestamp <= s.last_bar:
                continue  # older than what was sent (an earlier session's bar): never resent
            session = stamp.date()
            if self._reference.get(s.symbol, (None, 0.0))[0] != session:
                self._reference[s.symbol] = (session, _previous_close(meta, values[0]))
                self._sent[s.symbol] = sent = {}
            sent[timestamp] = (*values, volume)
            yield Quote(
                symbol=s.symbol,
                timestamp=timestamp,
                price=values[3],
                previous_close=self._reference[s.symbol][1],
                open=values[0],
                high=values[1],
                low=values[2],
                volume=volume,
                source="yfinance",
                produced_at=utc_now_timestamp(),
            )

    # ------------------------------------------------------------------ yfinance

    def _open_tape(self) -> TapeWriter | None:
        option = self._tape_option
        if option is True:
            return TapeWriter(new_tape_path("yfinance", self._clock()))
        if option in (None, False):
            return None
        assert isinstance(option, str | Path)
        return TapeWriter(option)

    def _open_yfinance(self) -> Callable[[str], tuple[Any, dict[str, Any]]]:
        import yfinance as yf

        cache_dir = self._cache_dir
        if cache_dir is None:
            from helpers.pipeline.config import load_settings

            cache_dir = Path(load_settings().state_dir) / "yfinance"
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        # yfinance 1.7: set_tz_cache_location moves the tz, cookie and ISIN caches together.
        yf.set_tz_cache_location(str(cache_dir))
        # yfinance 1.7 sorts with inplace=True, which pandas 3.1 warns about on every poll.
        warnings.filterwarnings("ignore", message="The inplace keyword", module="yfinance")

        def history(symbol: str) -> tuple[Any, dict[str, Any]]:
            with _yfinance_raises():
                ticker = self._tickers.get(symbol)
                if ticker is None:
                    ticker = self._tickers[symbol] = yf.Ticker(symbol, session=self._session)
                frame = ticker.history(
                    period=YF_PERIOD,
                    interval=YF_INTERVAL,
                    prepost=False,
                    auto_adjust=False,
                    actions=False,
                    timeout=YF_REQUEST_TIMEOUT_SECONDS,
                )
                # yfinance's HistoryMetadata loads some keys lazily (more requests): read only these
                found = ticker.get_history_metadata()
                meta = {k: found[k] for k in ("previousClose", "chartPreviousClose") if k in found}
            return frame, meta

        return history


def _previous_close(meta: dict[str, Any], first_open: float) -> float:
    """The previous session's close from the chart answer's meta (else the session's first open)."""
    for key in ("previousClose", "chartPreviousClose"):
        value = meta.get(key)
        if isinstance(value, int | float) and math.isfinite(value) and value > 0:
            return round(float(value), 4)
    return first_open


def _classify(err: BaseException) -> str:
    """``rate_limit``, ``transport`` (both back the poller off), ``empty`` or ``symbol``."""
    name = type(err).__name__
    if name == "YFRateLimitError":
        return "rate_limit"
    if name == "YFPricesMissingError":
        return "empty" if getattr(err, "yahoo_reason", None) is None else "symbol"
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        if status == 429:
            return "rate_limit"
        return "transport" if status >= 500 else "symbol"
    if isinstance(err, OSError | TimeoutError) or name in {"ConnectionError", "Timeout", "ReadTimeout"}:
        return "transport"
    return "symbol"


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
