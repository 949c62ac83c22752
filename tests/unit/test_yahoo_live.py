"""The live yfinance source through yfinance's own request and parsing code, offline.

yfinance gets a ``requests`` session (:class:`RecordedYahoo`) that answers Yahoo's chart, quote,
cookie and crumb endpoints in Yahoo's format from the real AAPL minute bars of ``aapl-1m``
(MSFT and GOOG: the same series scaled), on a simulated clock moved by the poller's sleeps.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.core.errors import SourceError
from helpers.core.quotes import Quote, parse_record
from helpers.notebook.sources._recorded_yahoo import RecordedYahoo, recorded_bars
from tests.unit.yahoo_offline import SYMBOLS, fresh_yfinance, live, offline, utc


@pytest.fixture(autouse=True)
def _fresh_yfinance(tmp_path: Path) -> Iterator[None]:
    with fresh_yfinance(tmp_path / "yfinance"):
        yield


def expected(symbols: list[str], first: str, last: str) -> list[Quote]:
    """The recorded bars from ``first`` to ``last`` (inclusive) as the live source sends them."""
    out = []
    for symbol, bars in recorded_bars(symbols).items():
        for b in bars:
            if first <= b.timestamp <= last:
                out.append(
                    Quote(
                        symbol,
                        b.timestamp,
                        b.close,
                        b.previous_close,
                        b.open,
                        b.high,
                        b.low,
                        b.volume,
                        "yfinance",
                    )
                )
    return out


def strip(quotes: list[Quote]) -> list[Quote]:
    return [dataclasses.replace(q, produced_at=None) for q in quotes]


def by_symbol(quotes: list[Quote]) -> list[Quote]:
    return sorted(strip(quotes), key=lambda q: (q.symbol, q.timestamp))


def bar_requests_per_poll(yahoo: RecordedYahoo) -> list[int]:
    """Chart requests for 1-minute bars, grouped by the (simulated) time they were made."""
    per_time = Counter(r.at for r in yahoo.requests if r.kind == "chart" and r.params.get("interval") == "1m")
    return [per_time[t] for t in sorted(per_time)]


def test_three_symbols_one_chart_request_each_per_poll_every_new_bar_once(tmp_path: Path) -> None:
    # GIVEN a Monday morning at 10:00:15 New York time, AAPL/MSFT/GOOG on the offline Yahoo
    clock, yahoo = offline("2026-08-03T14:00:15Z")

    # WHEN the source polls six times, 30 s apart
    source = live(yahoo, clock, SYMBOLS, tmp_path, max_polls=6)
    quotes = list(source)

    # THEN each poll asked once per symbol, and nothing else was asked but the first poll's
    # time-zone look-ups and one cookie and crumb
    assert bar_requests_per_poll(yahoo) == [3] * 6
    assert yahoo.counts() == Counter({"chart": 21, "cookie": 1, "crumb": 1})
    assert yahoo.count("chart") - 18 == 3  # one interval=1d time-zone look-up per symbol
    assert clock.sleeps == [30.0] * 5 and clock.now == utc("2026-08-03T14:02:45Z")
    # every complete bar of the session so far, once, with Yahoo's values; the minute still
    # forming at each poll (served with provisional values) was held back until complete
    assert len(quotes) == 3 * 32  # 13:30 .. 14:01; the 14:02 bar is still forming at 14:02:45
    assert by_symbol(quotes) == by_symbol(expected(SYMBOLS, "2026-08-03T13:30:00Z", "2026-08-03T14:01:00Z"))
    assert len({(q.symbol, q.timestamp) for q in quotes}) == len(quotes)
    aapl = [q for q in quotes if q.symbol == "AAPL"]
    assert strip(aapl[:1]) == [
        Quote("AAPL", "2026-08-03T13:30:00Z", 309.7625, 309.03, 309.8, 309.86, 309.725, 3149635, "yfinance")
    ]
    # previous close: Friday's last close from the chart answer's meta, no quote request
    assert {q.previous_close for q in aapl} == {recorded_bars(["AAPL"])["AAPL"][3 * 390].previous_close}
    assert all(parse_record(q.to_json()) == q for q in quotes)
    assert source.summary["polls"] == 6 and source.summary["chart_requests"] == 18
    assert [row["last_bar"] for row in source.status()] == ["2026-08-03T14:01:00Z"] * 3
    assert [row["bars_sent"] for row in source.status()] == [32] * 3


def test_a_correction_of_a_sent_bar_is_counted_not_resent(tmp_path: Path) -> None:
    clock, yahoo = offline("2026-08-03T14:00:15Z", ["AAPL"])
    source = live(yahoo, clock, ["AAPL"], tmp_path, max_polls=3)
    first_poll = [next(source) for _ in range(30)]
    assert first_poll[-1].timestamp == "2026-08-03T13:59:00Z"
    # GIVEN Yahoo revises the volume of the last bar already sent
    series = yahoo.series["AAPL"]
    i = series.bars.index(next(b for b in series.bars if b.timestamp == "2026-08-03T13:59:00Z"))
    series.bars[i] = series.bars[i]._replace(volume=series.bars[i].volume + 100)

    rest = list(source)

    assert [q.timestamp for q in rest] == ["2026-08-03T14:00:00Z"]
    (row,) = source.status()
    assert row["corrections"] == 1  # one revision, seen on polls 2 and 3, counted once
    assert row["bars_sent"] == 31


def test_a_429_backs_the_whole_poller_off_and_it_recovers_without_losing_a_bar(tmp_path: Path) -> None:
    clock, yahoo = offline("2026-08-03T14:00:15Z")
    source = live(yahoo, clock, SYMBOLS, tmp_path, max_polls=7)
    quotes: list[Quote] = []
    for quote in source:
        quotes.append(quote)
        if len(quotes) == 3 * 30:  # the first poll is done: Yahoo answers 429 until 14:03
            yahoo.rate_limit_until(utc("2026-08-03T14:03:00Z"))

    limited = [r for r in yahoo.requests if r.status == 429]
    # polls 2, 3 and 4 hit the limit on their first symbol (yfinance retries each once) and
    # asked nothing more: the whole poller backed off, not just AAPL
    assert [r.path for r in limited] == ["/v8/finance/chart/AAPL"] * 6
    assert source.summary["rate_limited"] == 3 and source.summary["failed_polls_in_a_row"] == 0
    first, *backoff, fifth, sixth = clock.sleeps
    assert first == fifth == sixth == 30.0
    # 30·2^k s with equal jitter (half to all of it), k = failed polls in a row
    assert [lo <= s <= 2 * lo for s, lo in zip(backoff, (30, 60, 120), strict=True)] == [True] * 3
    assert clock.now > utc("2026-08-03T14:03:00Z")
    # no bar lost: the missed minutes came with the first answer after the limit
    last = max(q.timestamp for q in quotes)
    assert last == "2026-08-03T14:05:00Z"
    assert by_symbol(quotes) == by_symbol(expected(SYMBOLS, "2026-08-03T13:30:00Z", last))
    assert len({(q.symbol, q.timestamp) for q in quotes}) == len(quotes) == 3 * 36
    assert {row["state"] for row in source.status()} == {"ok"}


def test_a_rate_limit_that_does_not_end_stops_the_source_with_a_clear_message(tmp_path: Path) -> None:
    clock, yahoo = offline("2026-08-03T14:00:15Z")
    yahoo.rate_limit_until(utc("2026-08-04T00:00:00Z"))
    source = live(yahoo, clock, SYMBOLS, tmp_path, max_failures=3)

    with pytest.raises(
        SourceError,
        match=r"3 polls in a row failed, the last with AAPL: YFRateLimitError.*"
        r"stopping instead of hammering Yahoo.*SOURCE='replay'",
    ):
        next(source)

    assert yahoo.count("chart", status=429) == 3 * 2  # one poll = one request and yfinance's retry
    assert yahoo.count("chart", symbol="MSFT") == yahoo.count("chart", symbol="GOOG") == 0
    assert len(clock.sleeps) == 2 and 30.0 <= clock.sleeps[0] <= 60.0 and 60.0 <= clock.sleeps[1] <= 120.0


def test_an_unknown_symbol_backs_off_alone_and_is_stopped(tmp_path: Path) -> None:
    clock, yahoo = offline("2026-08-03T14:00:15Z", ["AAPL"])
    source = live(yahoo, clock, ["AAPL", "NOPE"], tmp_path, max_polls=8, max_failures=3)
    quotes = list(source)

    assert {q.symbol for q in quotes} == {"AAPL"}
    assert [q.timestamp for q in quotes][-1] == "2026-08-03T14:02:00Z" and len(quotes) == 33
    assert clock.sleeps == [30.0] * 7  # a symbol's failure never slows the poller
    aapl, nope = source.status()
    assert aapl["state"] == "ok" and aapl["failures"] == 0
    assert nope["state"] == "stopped" and nope["failures"] == 3 and nope["next_try"] is None
    assert nope["last_error"] == "YFPricesMissingError: $NOPE: No data found, symbol may be delisted"
    # asked on polls 1, 3 and 6 (after 1 and 2 skipped polls), never after being stopped
    assert yahoo.count("chart", symbol="NOPE", status=404) > 0
    last_ask = max(r.at for r in yahoo.requests if r.path.endswith("/NOPE"))
    assert last_ask == utc("2026-08-03T14:02:45Z")  # poll 6


def test_every_symbol_stopped_stops_the_source(tmp_path: Path) -> None:
    clock, yahoo = offline("2026-08-03T14:00:15Z", ["AAPL"])
    with pytest.raises(
        SourceError, match=r"every symbol was stopped after repeated failures: NOPE: HTTPError: 404.*BRK-B"
    ):
        list(live(yahoo, clock, ["NOPE"], tmp_path, max_failures=1))


def test_an_empty_answer_is_not_a_failure(tmp_path: Path) -> None:
    clock, yahoo = offline("2026-08-03T14:00:15Z", ["AAPL", "MSFT"])
    yahoo.empty_until("MSFT", utc("2026-08-03T14:00:30Z"))
    source = live(yahoo, clock, ["AAPL", "MSFT"], tmp_path, max_polls=2)
    after_first_poll: list[dict[str, object]] = []
    source._sleep = lambda seconds: (after_first_poll.extend(source.status()), clock.sleep(seconds))

    quotes = list(source)

    msft = after_first_poll[1]
    assert (msft["state"], msft["failures"], msft["last_error"]) == ("no bars yet", 0, None)
    assert Counter(q.symbol for q in quotes[:30]) == Counter({"AAPL": 30})
    # poll 2 (14:00:45): MSFT's whole morning; AAPL has no new complete bar yet
    assert Counter(q.symbol for q in quotes[30:]) == Counter({"MSFT": 30})
    assert by_symbol(quotes) == by_symbol(
        expected(["AAPL", "MSFT"], "2026-08-03T13:30:00Z", "2026-08-03T13:59:00Z")
    )


def test_closed_market_sends_nothing_and_reports_the_next_open(tmp_path: Path) -> None:
    # GIVEN Saturday afternoon: XNYS is closed until Monday 09:30 New York time
    clock, yahoo = offline("2026-08-01T15:00:00Z")
    seen: list[tuple[dict[str, object], list[dict[str, object]]]] = []

    def sleep(seconds: float) -> None:
        seen.append((source.summary, source.status()))
        clock.sleep(seconds)

    source = live(yahoo, clock, SYMBOLS, tmp_path, max_polls=1)
    source._sleep = sleep  # observe the state the poller shows while it waits

    quotes = list(source)

    summary, status = seen[0]
    assert summary["market"] == "closed until 2026-08-03T13:30:00Z (XNYS)"
    assert summary["next_poll"] == "2026-08-03T13:30:00Z"
    assert {(row["state"], row["next_try"]) for row in status} == {("market closed", "2026-08-03T13:30:00Z")}
    assert sum(clock.sleeps) == (utc("2026-08-03T13:30:00Z") - utc("2026-08-01T15:00:00Z")).total_seconds()
    assert max(clock.sleeps) == 900.0  # the calendar is asked again every 15 min
    # no request at all before the open; at 09:30:00 the first bar is still forming
    assert min(r.at for r in yahoo.requests) == utc("2026-08-03T13:30:00Z")
    assert quotes == []


def test_the_poll_just_after_the_close_collects_the_last_bar(tmp_path: Path) -> None:
    clock, yahoo = offline("2026-08-03T20:00:30Z", ["AAPL"])
    quotes = list(live(yahoo, clock, ["AAPL"], tmp_path, max_polls=1))
    assert len(quotes) == 390 and quotes[-1].timestamp == "2026-08-03T19:59:00Z"
    assert clock.sleeps == []


def test_calendar_always_overrides_market_hours(tmp_path: Path) -> None:
    clock, yahoo = offline("2026-08-01T15:00:00Z", ["AAPL"])
    source = live(yahoo, clock, ["AAPL"], tmp_path, max_polls=1, calendar="always")
    quotes = list(source)
    # Saturday: Yahoo answers Friday's session
    assert len(quotes) == 390 and {q.timestamp[:10] for q in quotes} == {"2026-07-31"}
    assert source.summary["market"] == "not checked (calendar='always')"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval_seconds": 5}, r"interval_seconds=5 is faster than the floor of 30 s"),
        ({"max_polls": 0}, r"max_polls=0 must be >= 1"),
        ({"max_failures": 0}, r"max_failures=0 must be >= 1"),
        ({"max_backoff_seconds": 10}, r"max_backoff_seconds=10 must be finite and >= interval_seconds"),
        ({"calendar": "XXXX"}, r"calendar='XXXX' is not an exchange calendar; use a MIC such as 'XNYS'"),
    ],
)
def test_bad_arguments_fail_when_opened(kwargs: dict[str, object], message: str, tmp_path: Path) -> None:
    clock, yahoo = offline("2026-08-03T14:00:15Z", ["AAPL"])
    with pytest.raises(SourceError, match=message):
        live(yahoo, clock, ["AAPL"], tmp_path, **kwargs)
    assert yahoo.requests == []


def test_a_lower_floor_can_be_chosen_knowingly(tmp_path: Path) -> None:
    clock, yahoo = offline("2026-08-03T14:00:15Z", ["AAPL"])
    list(live(yahoo, clock, ["AAPL"], tmp_path, max_polls=3, interval_seconds=10, min_interval_seconds=10))
    assert clock.sleeps == [10.0, 10.0]


def test_yfinance_caches_go_to_the_given_folder(tmp_path: Path) -> None:
    from yfinance import cache

    clock, yahoo = offline("2026-08-03T14:00:15Z", ["AAPL"])
    list(live(yahoo, clock, ["AAPL"], tmp_path, max_polls=1))
    assert cache._TzDBManager.get_location() == str(tmp_path / "yfinance")
    assert cache._CookieDBManager.get_location() == str(tmp_path / "yfinance")
    assert cache.get_tz_cache().lookup("AAPL") == "America/New_York"


def test_the_offline_session_is_a_session_yfinance_accepts(tmp_path: Path) -> None:
    import yfinance as yf

    _, yahoo = offline("2026-08-03T14:00:15Z", ["AAPL"])
    frame = yf.Ticker("AAPL", session=yahoo).history(period="1d", interval="1m")
    assert len(frame) == 31  # 13:30..14:00 New York time; the 14:00 bar still provisional
    assert str(frame.index.tz) == "America/New_York"
    assert float(frame["Close"].iloc[0]) == 309.7625


def test_curl_cffi_is_in_the_pinned_range_and_yfinance_takes_its_session() -> None:
    import importlib.metadata
    import tomllib

    import curl_cffi.requests
    from packaging.requirements import Requirement
    from yfinance.data import YfData

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(Requirement(r) for r in project if r.startswith("curl_cffi"))
    locked = next(
        line.split("==")[1]
        for line in (root / "requirements.lock").read_text().splitlines()
        if line.startswith("curl_cffi==")
    )
    needed = next(
        Requirement(r) for r in importlib.metadata.requires("yfinance") or [] if r.startswith("curl_cffi")
    )
    assert str(pin.specifier) == "<0.18,>=0.15" and str(needed.specifier) == ">=0.15"
    assert locked == importlib.metadata.version("curl_cffi") and pin.specifier.contains(locked)
    # the failure mode of a curl_cffi release yfinance does not know: its Session refused
    session = curl_cffi.requests.Session(impersonate="chrome")
    assert YfData(session=session)._session is session


def test_no_network_at_all_stops_at_once_pointing_at_the_offline_sources(tmp_path: Path) -> None:
    clock, yahoo = offline("2026-08-03T14:00:15Z")
    yahoo.unreachable_until(utc("2026-08-04T00:00:00Z"))
    source = live(yahoo, clock, SYMBOLS, tmp_path)
    with pytest.raises(
        SourceError,
        match=r"Yahoo Finance is unreachable from this machine: Failed to resolve 'query2.finance.yahoo.com'"
        r" \(offline\); use SOURCE='replay'",
    ):
        next(source)
    assert clock.sleeps == [] and yahoo.requests == []


def test_a_network_blip_after_yahoo_answered_backs_off_and_recovers(tmp_path: Path) -> None:
    clock, yahoo = offline("2026-08-03T14:00:15Z")
    source = live(yahoo, clock, SYMBOLS, tmp_path, max_polls=4)
    quotes: list[Quote] = []
    for quote in source:
        quotes.append(quote)
        if len(quotes) == 90:
            yahoo.unreachable_until(utc("2026-08-03T14:01:00Z"))
    first, backoff, *rest = clock.sleeps
    assert first == 30.0 and 30.0 <= backoff <= 60.0 and rest == [30.0]
    assert by_symbol(quotes) == by_symbol(
        expected(SYMBOLS, "2026-08-03T13:30:00Z", max(q.timestamp for q in quotes))
    )
    assert len(quotes) == 3 * 31 and source.summary["rate_limited"] == 0


def test_the_offline_quote_endpoint_answers_many_symbols_in_one_request(tmp_path: Path) -> None:
    from yfinance.data import YfData

    _, yahoo = offline("2026-08-03T14:00:15Z")
    answer = YfData(session=yahoo).get_raw_json(
        "https://query1.finance.yahoo.com/v7/finance/quote", params={"symbols": "AAPL,NOPE,GOOG"}
    )
    rows = {row["symbol"]: row for row in answer["quoteResponse"]["result"]}
    assert sorted(rows) == ["AAPL", "GOOG"] and yahoo.count("quote") == 1
    aapl = recorded_bars(["AAPL"])["AAPL"]
    last = next(b for b in aapl if b.timestamp == "2026-08-03T13:59:00Z")  # the last complete bar
    assert rows["AAPL"]["regularMarketPrice"] == last.close
    assert rows["AAPL"]["regularMarketPreviousClose"] == 309.03
    assert rows["GOOG"]["regularMarketPrice"] == round(last.close * 2.0, 4)
    assert yahoo.requests[-1].params["crumb"] == "offline-crumb"  # yfinance's own request building


def test_failures_are_told_apart_for_both_http_backends() -> None:
    import curl_cffi.requests.exceptions as curl
    import requests
    from yfinance.exceptions import YFPricesMissingError, YFRateLimitError

    from helpers.notebook.sources._yahoo import _classify

    def http(status: int) -> requests.HTTPError:
        response = requests.Response()
        response.status_code = status
        return requests.HTTPError(f"{status}", response=response)

    cases = {
        "rate_limit": [YFRateLimitError(), http(429)],
        "transport": [
            curl.ConnectionError("Could not resolve host"),
            curl.Timeout("Operation timed out"),
            curl.DNSError("dns"),
            requests.ConnectionError("refused"),
            TimeoutError("timed out"),
            http(503),
        ],
        "empty": [YFPricesMissingError("AAPL", "(period=1d)")],
        "symbol": [
            YFPricesMissingError("NOPE", "", yahoo_reason="No data found, symbol may be delisted"),
            http(404),
            KeyError("chart"),
        ],
    }
    assert {kind: [_classify(err) for err in errs] for kind, errs in cases.items()} == {
        kind: [kind] * len(errs) for kind, errs in cases.items()
    }
