"""The live yfinance source end to end: yfinance's own code, the producer, the deployed processor.

The source polls the offline Yahoo (:class:`RecordedYahoo`: real AAPL minute bars in Yahoo's chart
format, MSFT and GOOG scaled from them) on a simulated clock, through yfinance's request and
parsing code; a 429 wave hits mid-run. The producer sends what it yields to the stack's Kinesis,
the deployed processor stores it. Every bar yfinance parsed is one item with Yahoo's values, and
the tape the run recorded replays to the same records.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from isolated_pipeline import renamed

from helpers.core.quotes import Quote
from helpers.notebook import history, verify
from helpers.notebook.producer import produce
from helpers.notebook.sources import replay
from helpers.notebook.sources._recorded_yahoo import recorded_bars
from helpers.pipeline.config import Settings
from tests.unit.yahoo_offline import SYMBOLS, fresh_yfinance, live, offline, utc

pytestmark = pytest.mark.integration

WAIT_SECONDS = 120.0


@pytest.fixture(scope="module")
def processor_only(local_stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    from deploy.functions import deploy_functions
    from deploy.provision import provision, teardown

    settings = renamed(local_stack, "live")
    provision(settings)
    deploy_functions(settings, functions=["processor"], build_dir=tmp_path_factory.mktemp("build"))
    try:
        yield settings
    finally:
        teardown(settings)


def _unstamped(quotes: list[Quote]) -> list[Quote]:
    return [dataclasses.replace(q, produced_at=None) for q in quotes]


def _in_order(quotes: list[Quote]) -> list[Quote]:
    return sorted(quotes, key=lambda q: (q.symbol, q.timestamp))


def test_live_bars_through_yfinance_reach_the_table_once_with_yahoos_values(
    processor_only: Settings, tmp_path: Path
) -> None:
    s = processor_only
    tape = tmp_path / "live.ndjson"
    with fresh_yfinance(tmp_path / "yfinance"):
        # GIVEN a Monday morning on the offline Yahoo, rate limited for two polls after 90 bars
        clock, yahoo = offline("2026-08-03T14:00:15Z")
        source = live(yahoo, clock, SYMBOLS, tmp_path, max_polls=6, tape=tape)
        sent: list[Quote] = []

        def polled() -> Iterator[Quote]:
            for quote in source:
                sent.append(quote)
                if len(sent) == 90:
                    yahoo.rate_limit_until(utc("2026-08-03T14:01:30Z"))
                yield quote

        # WHEN the producer sends what the live source yields
        summary = produce(polled(), s)

    # THEN the poller backed off and recovered, and every complete bar was sent once
    assert yahoo.count("chart", status=429) > 0 and source.summary["polls"] == 6
    last = max(q.timestamp for q in sent)
    assert last == "2026-08-03T14:02:00Z"  # the backoff's waits moved the clock past 14:03
    recorded = [
        Quote(symbol, b.timestamp, b.close, b.previous_close, b.open, b.high, b.low, b.volume, "yfinance")
        for symbol, bars in recorded_bars(SYMBOLS).items()
        for b in bars
        if "2026-08-03T13:30:00Z" <= b.timestamp <= last
    ]
    assert _in_order(_unstamped(sent)) == _in_order(recorded) and len(sent) == 3 * 33  # 13:30 .. 14:02
    assert summary.records == len(sent) and summary.failed == 0

    # AND the processor stored each one, once, with the values yfinance parsed from Yahoo's answer
    counts = verify.wait_for_processing(s, expected=len(sent), timeout=WAIT_SECONDS)
    assert counts["records_accepted"] == len(sent) and not counts["records_quarantined"]
    deadline = time.monotonic() + WAIT_SECONDS
    while verify.unprocessed(sent, s) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert verify.unprocessed(sent, s) == []
    for symbol in SYMBOLS:
        items = history.processed_items(s, symbol)
        mine = sorted((q for q in sent if q.symbol == symbol), key=lambda q: q.timestamp)
        assert [row["timestamp"] for row in items] == [q.timestamp for q in mine]
        assert [(row["price"], row["volume"], row["previous_close"]) for row in items] == [
            (q.price, q.volume, q.previous_close) for q in mine
        ]
        assert {row["source"] for row in items} == {"yfinance"}

    # AND the tape of the run replays to the records it sent
    assert _unstamped(list(replay(tape=tape))) == _unstamped(sent)
