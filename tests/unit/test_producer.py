"""The producer: PutRecords batching within AWS limits, retries of failed entries only, streaming."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers.core import batch_plan
from helpers.core.errors import ProducerError
from helpers.core.quotes import Quote, parse_record
from helpers.notebook.producer import (
    AGGREGATE_BYTES,
    AGGREGATE_QUOTES,
    MAX_BYTES_PER_PUT,
    MAX_RECORD_BYTES,
    MAX_RECORDS_PER_PUT,
    PREFETCH_RECORDS,
    produce,
    put_raw,
)
from helpers.notebook.sources import synthetic
from helpers.pipeline.config import load_settings

SETTINGS = load_settings(environ={}, stream_name="unit-quotes")


class FakeKinesis:
    """Answers PutRecords like Kinesis; ``fail(call, index, entry)`` returns an error code or None."""

    def __init__(self, fail: Callable[[int, int, dict[str, Any]], str | None] | None = None) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.fail = fail or (lambda call, index, entry: None)
        self.on_call: Callable[[], None] = lambda: None

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        assert StreamName == "unit-quotes"
        self.on_call()
        call = len(self.calls)
        self.calls.append(Records)
        answers = []
        for index, entry in enumerate(Records):
            code = self.fail(call, index, entry)
            if code:
                answers.append({"ErrorCode": code, "ErrorMessage": "injected"})
            else:
                answers.append(
                    {"ShardId": "shardId-000000000000", "SequenceNumber": str(call * 1000 + index)}
                )
        return {"FailedRecordCount": sum("ErrorCode" in a for a in answers), "Records": answers}


def no_sleep(_: float) -> None:
    pass


_quotes = batch_plan.split  # the quotes of one record, as the processor splits them


def _keys_in_order(calls: list[list[dict[str, Any]]]) -> dict[str, list[bytes]]:
    """Per key, the quotes as sent (an aggregate's one by one), resends repeated."""
    sent: dict[str, list[bytes]] = {}
    for call in calls:
        for entry in call:
            sent.setdefault(entry["PartitionKey"], []).extend(_quotes(entry["Data"]))
    return sent


def _quotes_sent(kinesis: FakeKinesis) -> int:
    return sum(len(_quotes(entry["Data"])) for call in kinesis.calls for entry in call)


def test_each_call_holds_one_aggregate_of_consecutive_quotes_per_symbol() -> None:
    kinesis = FakeKinesis()
    quotes = list(synthetic(["AAA", "BBB", "CCC"], 1201))

    # unstamped: the bytes as the source made them
    summary = produce(quotes, SETTINGS, kinesis=kinesis, linger=None, stamp=False)

    # every call holds at most one record per symbol (so a resend can never overtake a later bar),
    # each record up to 25 consecutive quotes of its symbol, as a JSON text sequence
    assert all(len({e["PartitionKey"] for e in call}) == len(call) for call in kinesis.calls)
    assert max(len(_quotes(e["Data"])) for call in kinesis.calls for e in call) == AGGREGATE_QUOTES
    first = kinesis.calls[0][0]["Data"]
    assert first.startswith(b"\x1e{") and first.endswith(b"}\n") and first.count(b"\x1e") == AGGREGATE_QUOTES
    assert len(kinesis.calls) == 7 + 7 + 3  # batches of 500, 500, 201 quotes: 167 a symbol in 7 rounds
    by_symbol = {sym: [q.to_json() for q in quotes if q.symbol == sym] for sym in ("AAA", "BBB", "CCC")}
    assert _keys_in_order(kinesis.calls) == by_symbol
    assert summary.records == 1201 and summary.stream_records == 21 + 21 + 9 and summary.calls == 17
    assert summary.batches == 3 and summary.retried == 0
    assert summary.per_key == {"AAA": 401, "BBB": 400, "CCC": 400}
    assert summary.first_timestamp == quotes[0].timestamp and summary.last_timestamp == quotes[-1].timestamp
    assert summary.shards == {"shardId-000000000000": 1201} and summary.records_per_second > 0


def test_aggregate_1_sends_one_quote_per_record() -> None:
    kinesis = FakeKinesis()
    quotes = list(synthetic(["AAA", "BBB", "CCC"], 1201))
    summary = produce(quotes, SETTINGS, kinesis=kinesis, linger=None, aggregate=1)
    assert len(kinesis.calls) == 167 + 167 + 67 == summary.calls
    assert summary.records == summary.stream_records == 1201
    assert all(e["Data"][:1] == b"{" and b"\x1e" not in e["Data"] for call in kinesis.calls for e in call)


def test_aggregates_stay_within_their_byte_bound_and_never_pack_a_separator() -> None:
    kinesis = FakeKinesis()
    big = [(b"y" * 5000, "K", None) for _ in range(20)]  # 6 fit in 32 KiB with their separators
    odd = [(b"a\x1eb", "K", None), (b"c\n", "K", None), (b"d", "K", None)]
    summary = _send_entries([*big, *odd], kinesis, aggregate=AGGREGATE_QUOTES)
    records = [e["Data"] for call in kinesis.calls for e in call]
    assert all(len(r) <= AGGREGATE_BYTES for r in records)
    assert [r.count(b"y" * 5000) for r in records[:4]] == [6, 6, 6, 2]
    assert records[4:] == [b"a\x1eb", b"\x1ec\n\n\x1ed\n"]  # data holding 0x1E travels alone
    assert [_quotes(r) for r in records[4:]] == [[b"a\x1eb"], [b"c\n", b"d"]]
    assert summary.records == 23 and summary.stream_records == 6


def test_a_failed_aggregate_is_resent_whole_before_its_symbols_next() -> None:
    # GIVEN AAA's second record (quotes 25-49) is throttled twice
    failed = {"AAA": 2}
    seen: dict[str, int] = {}

    def fail(call: int, index: int, entry: dict[str, Any]) -> str | None:
        key = entry["PartitionKey"]
        if seen.get(key, 0) == 1 and failed.get(key, 0):
            failed[key] -= 1
            return "ProvisionedThroughputExceededException"
        seen[key] = seen.get(key, 0) + 1
        return None

    kinesis = FakeKinesis(fail)
    quotes = list(synthetic(["AAA", "BBB"], 200))
    summary = produce(quotes, SETTINGS, kinesis=kinesis, linger=None, stamp=False, sleep=no_sleep)
    sent = _keys_in_order(kinesis.calls)
    mine = [q.to_json() for q in quotes if q.symbol == "AAA"]
    assert sent["AAA"] == mine[:25] + mine[25:50] * 3 + mine[50:]  # resent whole, twice, then on
    assert summary.records == 200 and summary.retried == 50 and summary.failed == 0


def test_batches_stay_within_5_mib_including_partition_keys() -> None:
    kinesis = FakeKinesis()
    record = b"x" * (300 * 1024)  # 17 fit in 5 MiB, 18 do not
    entries = ((record, f"K{n}", None) for n in range(40))
    summary = _send_entries(entries, kinesis)

    sizes = [sum(len(e["Data"]) + len(e["PartitionKey"]) for e in call) for call in kinesis.calls]
    assert [len(c) for c in kinesis.calls] == [17, 17, 6]
    assert max(sizes) <= MAX_BYTES_PER_PUT and summary.records == 40 and summary.bytes == 40 * len(record)


def _send_entries(entries: Any, kinesis: FakeKinesis, aggregate: int = 1) -> Any:
    from helpers.notebook.producer import _send

    return _send(iter(entries), SETTINGS, kinesis, None, False, None, None, 8, None, aggregate, no_sleep)


def test_a_record_over_1_mib_is_refused_before_sending() -> None:
    kinesis = FakeKinesis()
    with pytest.raises(ProducerError, match="exceeds Kinesis' 1048576-byte limit"):
        put_raw([b"x" * MAX_RECORD_BYTES], SETTINGS, kinesis=kinesis)  # + the key: one byte too many
    assert kinesis.calls == []


def test_a_failed_record_is_resent_before_the_next_record_of_its_symbol() -> None:  # one quote a record
    # GIVEN AAA's second bar is throttled twice, BBB's third once
    failures = {("AAA", 1): 2, ("BBB", 2): 1}
    position: dict[str, int] = {}

    def fail(call: int, index: int, entry: dict[str, Any]) -> str | None:
        key = entry["PartitionKey"]
        n = position.get(key, 0)
        if failures.get((key, n), 0):
            failures[(key, n)] -= 1
            return "ProvisionedThroughputExceededException"
        position[key] = n + 1
        return None

    kinesis, sleeps = FakeKinesis(fail), []
    quotes = list(synthetic(["AAA", "BBB"], 10))
    summary = produce(
        quotes, SETTINGS, kinesis=kinesis, linger=None, aggregate=1, stamp=False, sleep=sleeps.append
    )

    # THEN each symbol's bars were accepted in the source's order, the failed ones resent with backoff
    sent = _keys_in_order(kinesis.calls)
    for symbol in ("AAA", "BBB"):
        mine = [q.to_json() for q in quotes if q.symbol == symbol]
        accepted = list(dict.fromkeys(sent[symbol]))  # a resend repeats the same bytes
        assert accepted == mine
    assert sent["AAA"][1] == sent["AAA"][2] == sent["AAA"][3]  # bar 2 tried three times before bar 3
    assert summary.records == 10 and summary.retried == 3 and summary.failed == 0
    assert len(sleeps) == 2 and all(0 <= s <= 0.2 for s in sleeps)  # one backoff per round with a resend


def test_entries_failing_every_attempt_raise_naming_the_stream_and_codes() -> None:
    kinesis = FakeKinesis(lambda call, index, entry: "InternalFailure" if index == 0 else None)
    with pytest.raises(
        ProducerError, match=r"key 'AAA'.* stream unit-quotes after 4 attempts.*InternalFailure.*3 record"
    ):
        produce(synthetic(["AAA"], 3), SETTINGS, kinesis=kinesis, linger=None, max_attempts=4, sleep=no_sleep)
    assert [len(c) for c in kinesis.calls] == [1, 1, 1, 1]


def test_the_source_is_consumed_lazily_one_batch_at_a_time() -> None:
    pulled = 0

    def source() -> Iterator[Quote]:
        nonlocal pulled
        for quote in synthetic(["AAA"], 3000):
            pulled += 1
            yield quote

    seen: list[int] = []
    kinesis = FakeKinesis()
    kinesis.on_call = lambda: seen.append(pulled)
    produce(source(), SETTINGS, kinesis=kinesis, linger=None)
    # the first batch's 20 calls (one symbol: one aggregate of 25 per call) run after 501 were pulled
    per_batch = MAX_RECORDS_PER_PUT // AGGREGATE_QUOTES
    assert set(seen[:per_batch]) == {MAX_RECORDS_PER_PUT + 1}
    assert seen[per_batch] == 2 * MAX_RECORDS_PER_PUT + 1

    # with read-ahead (the default), the source runs ahead by a bounded number of records
    pulled, seen[:] = 0, []
    produce(source(), SETTINGS, kinesis=kinesis)
    assert seen[0] <= MAX_RECORDS_PER_PUT + PREFETCH_RECORDS + 2


def test_an_idle_source_does_not_hold_records_back() -> None:
    sent_before_fourth: list[int] = []
    kinesis = FakeKinesis()

    def slow() -> Iterator[Quote]:
        quotes = synthetic(["AAA"], 4)
        yield from itertools.islice(quotes, 3)
        time.sleep(0.6)  # a paced or polling source
        sent_before_fourth.append(_quotes_sent(kinesis))
        yield from quotes

    summary = produce(slow(), SETTINGS, kinesis=kinesis, linger=0.1)
    assert sent_before_fourth == [3] and summary.records == 4


def test_a_busy_source_is_sent_within_the_linger_bound() -> None:
    kinesis = FakeKinesis()

    def steady() -> Iterator[Quote]:  # never idle for the linger, never fills a batch
        for quote in synthetic(["AAA", "BBB"], 20):
            time.sleep(0.03)
            yield quote

    summary = produce(steady(), SETTINGS, kinesis=kinesis, linger=0.1)
    assert summary.records == 20 and summary.batches >= 3  # ~0.6 s of records, 0.1 s per batch


def test_rate_batches_records_within_the_linger_bound() -> None:
    kinesis = FakeKinesis()
    summary = produce(synthetic(["AAA", "BBB"], 60), SETTINGS, kinesis=kinesis, rate=200.0, linger=0.1)
    per_put = [len(call) for call in kinesis.calls]
    # 2 symbols: each PutRecords call carries one record of each; a batch is ~0.1 s of quotes (~20)
    assert summary.records == 60 and summary.batches <= 10 and max(per_put) == 2
    assert summary.calls == summary.batches  # ~10 quotes a symbol per batch: one aggregate each


def test_rate_caps_records_per_second() -> None:
    summary = produce(synthetic(["AAA"], 30), SETTINGS, kinesis=FakeKinesis(), rate=100.0, linger=None)
    assert summary.records == 30 and summary.seconds >= 0.27 and summary.records_per_second <= 110


def test_stamp_sets_produced_at_when_the_quote_is_sent() -> None:
    kinesis = FakeKinesis()
    old = Quote("AAA", "2026-01-02T14:30:00Z", 10.0, 10.0, 10.0, 10.0, 10.0, 1, "t", "2000-01-01T00:00:00Z")
    produce([old], SETTINGS, kinesis=kinesis, linger=None)
    sent = parse_record(kinesis.calls[0][0]["Data"])
    assert isinstance(sent, Quote) and sent.produced_at is not None and sent.produced_at > "2026"


def test_progress_is_a_few_plain_lines_with_the_rate() -> None:
    """Headless and without ipywidgets, progress is lines on stdout, not a tqdm bar on stderr."""
    from helpers.notebook.producer import LineProgress

    now = [0.0]
    lines: list[str] = []
    bar = LineProgress(2382, clock=lambda: now[0], write=lines.append)
    for _ in range(2382 // 100):
        now[0] += 0.01
        bar.update(100)
    bar.update(82)
    bar.close()
    assert lines == [
        "PutRecords: 600 of 2,382 records (25 %)",
        "PutRecords: 1,200 of 2,382 records (50 %)",
        "PutRecords: 1,800 of 2,382 records (75 %)",
        "PutRecords: 2,382 of 2,382 records in 0.2 s (10,357 rec/s)",
    ]
    live: list[str] = []
    now[0] = 0.0
    unknown = LineProgress(None, clock=lambda: now[0], write=live.append, every_seconds=10)
    for _ in range(25):
        now[0] += 1.0
        unknown.update(3)
    unknown.close()
    assert live == [
        "PutRecords: 30 records in 10 s",
        "PutRecords: 60 records in 20 s",
        "PutRecords: 75 records in 25.0 s (3 rec/s)",
    ]
