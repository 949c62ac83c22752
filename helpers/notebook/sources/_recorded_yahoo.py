"""An offline Yahoo Finance for yfinance: a ``requests`` session answering from recorded bars.

yfinance accepts a session (``yf.Ticker(symbol, session=...)``) and only checks that it is a
``requests`` or ``curl_cffi`` Session. :class:`RecordedYahoo` is a ``requests.Session`` whose
transport adapter answers, without a network, the endpoints yfinance calls for minute
bars, in Yahoo's JSON format:

- ``/v8/finance/chart/{symbol}`` (``range=1d`` or ``period1``/``period2``; ``1m`` or ``1d``):
  the bars of the last session up to the simulated *now*; the minute in progress is
  answered with provisional values (open for every price, half the volume), as Yahoo
  answers a bar that is still forming. ``meta`` carries ``previousClose``,
  ``currentTradingPeriod`` and ``tradingPeriods`` as Yahoo's does.
- ``/v7/finance/quote?symbols=...`` and ``/v10/finance/quoteSummary/{symbol}``,
  ``fc.yahoo.com`` (cookie), ``/v1/test/getcrumb`` (crumb), ``guce.yahoo.com`` (consent).

An unknown symbol gets Yahoo's 404 ``Not Found`` answer; :meth:`rate_limit_until` makes every
data request answer HTTP 429 ``Too Many Requests`` for a while; :meth:`unreachable_until` fails
every request with a connection error; :meth:`empty_until` answers a symbol's chart with no
bar. Every request is logged (:attr:`requests`, :meth:`count`).

The bars are the real AAPL minute bars of the ``aapl-1m`` dataset (:func:`recorded_bars`);
other symbols are the same real series scaled by a fixed factor, so several symbols can be
polled offline. The clock is injected, so a test moves time forward with its sleeps.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import requests
from requests.adapters import BaseAdapter

from helpers.core.quotes import parse_timestamp
from helpers.notebook.sources._datasets import Bar, bars_by_symbol

__all__ = ["RecordedYahoo", "YahooRequest", "recorded_bars"]

NEW_YORK = ZoneInfo("America/New_York")
_BAR = timedelta(minutes=1)
_NOT_FOUND = {"code": "Not Found", "description": "No data found, symbol may be delisted"}


def recorded_bars(scales: Mapping[str, float] | Sequence[str] = ("AAPL",)) -> dict[str, list[Bar]]:
    """Real AAPL minute bars per symbol; a symbol other than AAPL is AAPL scaled by its factor.

    ``scales`` maps symbol -> factor; a list of symbols gets factors 1, 1.5, 2 ... in order.
    """
    if not isinstance(scales, Mapping):
        scales = {s: 1.0 + 0.5 * i for i, s in enumerate(scales)}
    aapl = bars_by_symbol("aapl-1m")["AAPL"]
    out: dict[str, list[Bar]] = {}
    for symbol, k in scales.items():
        out[symbol] = [
            b._replace(
                symbol=symbol,
                open=round(b.open * k, 4),
                high=round(b.high * k, 4),
                low=round(b.low * k, 4),
                close=round(b.close * k, 4),
                previous_close=round(b.previous_close * k, 4),
            )
            for b in aapl
        ]
    return out


@dataclass(frozen=True)
class YahooRequest:
    """One request the session answered."""

    kind: str  # chart, quote, quote_summary, cookie, crumb, consent, other
    host: str
    path: str
    params: dict[str, str]
    status: int
    at: datetime


@dataclass
class _Series:
    bars: list[Bar]
    starts: list[datetime] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.starts = [parse_timestamp(b.timestamp) for b in self.bars]


class RecordedYahoo(requests.Session):
    """A ``requests.Session`` that answers yfinance's Yahoo requests from recorded bars, offline."""

    def __init__(self, bars: Mapping[str, Sequence[Bar]], clock: Callable[[], datetime]) -> None:
        super().__init__()
        self.series = {s: _Series(list(b)) for s, b in bars.items()}
        self.clock = clock
        self.requests: list[YahooRequest] = []
        self._rate_limited_until: datetime | None = None
        self._empty_until: dict[str, datetime] = {}
        self._unreachable_until: datetime | None = None
        adapter = _Adapter(self)
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    # ------------------------------------------------------------------ scripting

    def rate_limit_until(self, until: datetime) -> None:
        """Answer every chart/quote request with HTTP 429 until ``until`` (simulated time)."""
        self._rate_limited_until = until

    def unreachable_until(self, until: datetime) -> None:
        """Fail every request with a connection error until ``until`` (no network, DNS down)."""
        self._unreachable_until = until

    def empty_until(self, symbol: str, until: datetime) -> None:
        """Answer ``symbol``'s chart requests with no bar until ``until``."""
        self._empty_until[symbol] = until

    def count(self, kind: str = "chart", *, status: int | None = None, symbol: str | None = None) -> int:
        """Requests of a kind (``chart``...), optionally with an answer status and a symbol."""
        return sum(
            1
            for r in self.requests
            if r.kind == kind
            and (status is None or r.status == status)
            and (symbol is None or r.path.rstrip("/").endswith("/" + symbol))
        )

    def counts(self) -> Counter[str]:
        """Requests per kind."""
        return Counter(r.kind for r in self.requests)

    # ------------------------------------------------------------------ answers

    def answer(self, method: str, url: str) -> tuple[str, int, str, bytes]:
        """(kind, status, content type, body) for one request."""
        parts = urlsplit(url)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        host, path = parts.hostname or "", parts.path
        now = self.clock()
        if host == "fc.yahoo.com":  # Yahoo answers 404 and sets the A3 cookie yfinance keeps
            kind, status, ctype, body = "cookie", 404, "text/html", b"<html><body>404</body></html>"
            expires = int((now + timedelta(days=365)).timestamp())
            self.cookies.set("A3", "offline-cookie", domain=".yahoo.com", path="/", expires=expires)
        elif path.endswith("/v1/test/getcrumb"):
            kind, status, ctype, body = "crumb", 200, "text/plain", b"offline-crumb"
        elif host.endswith("consent.yahoo.com") or host == "guce.yahoo.com":
            kind, status, ctype, body = "consent", 200, "text/html", b"<html><body></body></html>"
        elif path.startswith("/v8/finance/chart/"):
            kind = "chart"
            status, ctype, body = self._limited(now) or self._chart(path.rsplit("/", 1)[-1], params, now)
        elif path.startswith("/v7/finance/quote"):
            kind = "quote"
            status, ctype, body = self._limited(now) or self._quote(params.get("symbols", ""), now)
        elif path.startswith("/v10/finance/quoteSummary/"):
            kind = "quote_summary"
            status, ctype, body = self._limited(now) or self._quote_summary(path.rsplit("/", 1)[-1], now)
        else:
            error = {"code": "Not Found", "description": f"HTTP 404 Not Found: {path} (not recorded)"}
            kind, status, ctype = "other", 404, "application/json"
            body = _json({"finance": {"result": None, "error": error}})
        self.requests.append(YahooRequest(kind, host, path, params, status, now))
        return kind, status, ctype, body

    def _limited(self, now: datetime) -> tuple[int, str, bytes] | None:
        if self._rate_limited_until is not None and now < self._rate_limited_until:
            return 429, "text/plain", b"Too Many Requests"
        return None

    def _visible(self, symbol: str, now: datetime) -> tuple[list[Bar], Bar | None]:
        """The session's complete bars up to ``now`` and the bar in progress (if any)."""
        series = self.series[symbol]
        n = bisect.bisect_right(series.starts, now)  # bars started at or before now
        if n == 0:
            return [], None
        last_day = series.starts[n - 1].astimezone(NEW_YORK).date()
        first = bisect.bisect_left(series.starts, _session_start(last_day))
        bars = series.bars[first:n]
        if series.starts[n - 1] + _BAR > now:  # the last one is still forming
            return bars[:-1], bars[-1]
        return bars, None

    def _chart(self, symbol: str, params: dict[str, str], now: datetime) -> tuple[int, str, bytes]:
        if symbol not in self.series:
            return 404, "application/json", _json({"chart": {"result": None, "error": _NOT_FOUND}})
        complete, forming = self._visible(symbol, now)
        if not complete and forming is None:
            return 404, "application/json", _json({"chart": {"result": None, "error": _NOT_FOUND}})
        session = parse_timestamp((complete or [forming])[0].timestamp).astimezone(NEW_YORK).date()  # type: ignore[list-item]
        shown = list(complete)
        if forming is not None:
            o = forming.open
            shown.append(forming._replace(high=o, low=o, close=o, volume=forming.volume // 2))
        if "period1" in params:
            lo = datetime.fromtimestamp(int(params["period1"]), UTC)
            hi = datetime.fromtimestamp(int(params.get("period2", now.timestamp())), UTC)
            shown = [b for b in shown if lo <= parse_timestamp(b.timestamp) < hi]
        empty = symbol in self._empty_until and now < self._empty_until[symbol]
        if empty:
            shown = []
        meta = self._meta(symbol, session, shown, params, now)
        result: dict[str, Any] = {"meta": meta, "indicators": {"quote": [{}]}}  # Yahoo's "no bar"
        if shown and params.get("interval") == "1d":
            day = _daily(shown)
            result["timestamp"] = [_epoch(_session_start(session))]
            result["indicators"] = {"quote": [day], "adjclose": [{"adjclose": day["close"]}]}
        elif shown:
            result["timestamp"] = [_epoch(parse_timestamp(b.timestamp)) for b in shown]
            result["indicators"] = {
                "quote": [
                    {
                        "open": [b.open for b in shown],
                        "high": [b.high for b in shown],
                        "low": [b.low for b in shown],
                        "close": [b.close for b in shown],
                        "volume": [b.volume for b in shown],
                    }
                ]
            }
        return 200, "application/json", _json({"chart": {"result": [result], "error": None}})

    def _meta(
        self, symbol: str, session: date, shown: list[Bar], params: dict[str, str], now: datetime
    ) -> dict[str, Any]:
        opens, closes = _session_start(session), _session_end(session)
        offset = int(opens.astimezone(NEW_YORK).utcoffset().total_seconds())  # type: ignore[union-attr]
        zone = opens.astimezone(NEW_YORK).tzname()

        def period(start: datetime, end: datetime) -> dict[str, Any]:
            return {"timezone": zone, "start": _epoch(start), "end": _epoch(end), "gmtoffset": offset}

        bars = self.series[symbol].bars
        reference = next(b.previous_close for b in bars if parse_timestamp(b.timestamp) >= opens)
        last = shown[-1] if shown else None
        return {
            "currency": "USD",
            "symbol": symbol,
            "exchangeName": "NMS",
            "fullExchangeName": "NasdaqGS",
            "instrumentType": "EQUITY",
            "firstTradeDate": 345479400,
            "regularMarketTime": _epoch(parse_timestamp(last.timestamp)) if last else _epoch(opens),
            "hasPrePostMarketData": True,
            "gmtoffset": offset,
            "timezone": zone,
            "exchangeTimezoneName": "America/New_York",
            "regularMarketPrice": last.close if last else reference,
            "regularMarketDayHigh": max((b.high for b in shown), default=reference),
            "regularMarketDayLow": min((b.low for b in shown), default=reference),
            "regularMarketVolume": sum(b.volume for b in shown),
            "longName": f"{symbol} (recorded)",
            "shortName": symbol,
            "chartPreviousClose": reference,
            "previousClose": reference,
            "scale": 3,
            "priceHint": 2,
            "currentTradingPeriod": {
                "pre": period(opens - timedelta(hours=5, minutes=30), opens),
                "regular": period(opens, closes),
                "post": period(closes, closes + timedelta(hours=4)),
            },
            "tradingPeriods": [[period(opens, closes)]],
            "dataGranularity": params.get("interval", "1m"),
            "range": params.get("range", ""),
            "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
        }

    def _quote(self, symbols: str, now: datetime) -> tuple[int, str, bytes]:
        result = []
        for symbol in [s for s in symbols.split(",") if s]:
            if symbol not in self.series:
                continue
            complete, forming = self._visible(symbol, now)
            shown = complete or ([forming] if forming else [])
            if not shown:
                continue
            last = shown[-1]
            result.append(
                {
                    "symbol": symbol,
                    "quoteType": "EQUITY",
                    "currency": "USD",
                    "exchangeTimezoneName": "America/New_York",
                    "regularMarketTime": _epoch(parse_timestamp(last.timestamp)),
                    "regularMarketPrice": last.close,
                    "regularMarketPreviousClose": last.previous_close,
                    "regularMarketOpen": shown[0].open,
                    "regularMarketDayHigh": max(b.high for b in shown),
                    "regularMarketDayLow": min(b.low for b in shown),
                    "regularMarketVolume": sum(b.volume for b in shown),
                }
            )
        return 200, "application/json", _json({"quoteResponse": {"result": result, "error": None}})

    def _quote_summary(self, symbol: str, now: datetime) -> tuple[int, str, bytes]:
        if symbol not in self.series:
            error = {"code": "Not Found", "description": f"Quote not found for symbol: {symbol}"}
            return 404, "application/json", _json({"quoteSummary": {"result": None, "error": error}})
        body = {
            "quoteType": {"symbol": symbol, "quoteType": "EQUITY", "exchangeTimezoneName": "America/New_York"}
        }
        return 200, "application/json", _json({"quoteSummary": {"result": [body], "error": None}})


class _Adapter(BaseAdapter):
    def __init__(self, yahoo: RecordedYahoo) -> None:
        super().__init__()
        self.yahoo = yahoo

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        down = self.yahoo._unreachable_until
        if down is not None and self.yahoo.clock() < down:
            host = urlsplit(request.url or "").hostname
            raise requests.ConnectionError(f"Failed to resolve '{host}' (offline)", request=request)
        _, status, ctype, body = self.yahoo.answer(request.method or "GET", request.url or "")
        response = requests.Response()
        response.status_code = status
        response.reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests"}.get(status, "")
        response.headers["Content-Type"] = ctype
        response._content = body
        response.encoding = "utf-8"
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def _session_start(day: date) -> datetime:
    return datetime.combine(day, time(9, 30), NEW_YORK).astimezone(UTC)


def _session_end(day: date) -> datetime:
    return datetime.combine(day, time(16, 0), NEW_YORK).astimezone(UTC)


def _epoch(dt: datetime) -> int:
    return int(dt.timestamp())


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _daily(bars: list[Bar]) -> dict[str, list[Any]]:
    return {
        "open": [bars[0].open],
        "high": [max(b.high for b in bars)],
        "low": [min(b.low for b in bars)],
        "close": [bars[-1].close],
        "volume": [sum(b.volume for b in bars)],
    }
