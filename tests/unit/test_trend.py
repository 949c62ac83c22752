"""The trend Lambda's pure rules (helpers.core.trend_plan) and the alert inbox's parsing, without a stack.

Message format and attributes, grouping stream records, the history-window decision and, with an
in-memory table, the Query paging and the delivery outcomes of :mod:`helpers.pipeline.trend`. The
same Lambda against the local stack: tests/integration/test_trend_stack.py.
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from helpers.core import trend_plan
from helpers.core.errors import PipelineError
from helpers.core.indicators import Bar, Signal, crossovers, lookback_needed
from helpers.notebook import alerts
from helpers.pipeline import trend
from helpers.pipeline.config import Settings

EVENT_FILE = Path(__file__).resolve().parent.parent / "events" / "dynamodb_stream_batch.json"


def _signal(**overrides: Any) -> Signal:
    values: dict[str, Any] = dict(
        symbol="AAPL", timestamp="2026-07-29T14:05:00Z", signal="BUY",
        price=211.27, sma_short=211.148, sma_long=211.0905000001,
    )  # fmt: skip
    values.update(overrides)
    return Signal(**values)


# --------------------------------------------------------------------------- pure


def test_format_alert_is_readable_and_within_sns_limits() -> None:
    signal = _signal()
    subject, message = trend.format_alert(signal)
    assert subject == "BUY AAPL at 211.27 - SMA crossover 2026-07-29 14:05:00 UTC"
    assert subject.isascii() and len(subject) < 100 and "\n" not in subject
    for text in ("BUY signal for AAPL", "2026-07-29T14:05:00Z", "211.2700", "SMA5:", "211.1480",
                 "SMA20:", "211.0905", "SMA5 crossed above SMA20", signal.alert_id):  # fmt: skip
        assert text in message
    assert "crossed below" in trend.format_alert(_signal(signal="SELL"))[1]


def test_message_attributes_round_trip_through_parse_message() -> None:
    signal = _signal(price=1e-05)
    attributes = trend_plan.message_attributes(signal)
    assert set(attributes) == set(trend_plan.ALERT_ATTRIBUTES) and len(attributes) <= 10
    assert attributes["symbol"] == {"DataType": "String", "StringValue": "AAPL"}
    assert attributes["price"] == {"DataType": "Number", "StringValue": "0.00001"}  # no exponent
    raw = {
        "MessageId": "m-1",
        "Body": trend.format_alert(signal)[1],
        "MessageAttributes": attributes,
        "Attributes": {"SentTimestamp": "1785331800123"},
    }
    alert = alerts.parse_message(raw)
    assert alert is not None
    assert Signal.from_dict(alert) == signal
    assert alert["sent_at"] == "2026-07-29T13:30:00.123Z" and alert["message_id"] == "m-1"


def test_parse_message_understands_the_sns_envelope_and_skips_strangers() -> None:
    signal = _signal(signal="SELL")
    subject, message = trend.format_alert(signal)
    envelope = {
        "Type": "Notification",
        "MessageId": "sns-1",
        "Subject": subject,
        "Message": message,
        "MessageAttributes": {
            k: {"Type": v["DataType"], "Value": v["StringValue"]}
            for k, v in trend_plan.message_attributes(signal).items()
        },
    }
    alert = alerts.parse_message({"MessageId": "q-1", "Body": json.dumps(envelope)})
    assert alert is not None and Signal.from_dict(alert) == signal
    assert alert["subject"] == subject and alert["body"] == message
    assert alerts.parse_message({"MessageId": "q-2", "Body": "hello"}) is None


def test_compare_reports_missing_extra_and_duplicates() -> None:
    a, b, c = _signal(), _signal(timestamp="2026-07-29T15:00:00Z", signal="SELL"), _signal(symbol="MSFT")
    assert alerts.compare([a.to_dict(), b.to_dict()], [b, a]) == {
        "ok": True, "received": 2, "expected": 2, "missing": [], "extra": [], "duplicates": [],
    }  # fmt: skip
    check = alerts.compare([a.to_dict(), a.to_dict(), c.to_dict()], [a, b])
    assert not check["ok"]
    assert check["missing"] == [b.alert_id] and check["extra"] == [c.alert_id]
    assert check["duplicates"] == [a.alert_id]


def test_sample_event_groups_the_marked_runs_by_symbol() -> None:
    """GIVEN 3 INSERTs, a MODIFY and the processor's mark of AAPL, a REMOVE, a priceless marked image."""
    event = json.loads(EVENT_FILE.read_text())
    groups, malformed = trend_plan.group_stream_records(event["Records"])
    assert malformed == 1  # the MSFT image without a price
    assert list(groups) == ["AAPL"]  # unmarked writes and REMOVE skipped
    aapl = groups["AAPL"]
    assert (aapl.first, aapl.last, aapl.bars) == ("2026-07-29T13:30:00Z", "2026-07-29T13:32:00Z", 3)
    assert aapl.sequence_numbers == [event["Records"][5]["dynamodb"]["SequenceNumber"]]


def test_topic_arn_for_function_uses_the_functions_account() -> None:
    settings = dataclasses.replace(Settings(), topic_name="alerts-x", region="eu-west-1")
    arn = trend.topic_arn_for_function(settings, "arn:aws-cn:lambda:eu-west-1:210987654321:function:trend")
    assert arn == "arn:aws-cn:sns:eu-west-1:210987654321:alerts-x"


# --------------------------------------------------------------------------- stream records


def _stream_record(
    seq: int,
    symbol: str,
    timestamp: str,
    price: Any,
    event: str = "MODIFY",
    first: str | None = None,
    bars: int = 1,
) -> dict[str, Any]:
    """A stream record of an item; marked (as the processor marks a run's last bar) unless ``first`` is ""."""
    image = {"symbol": {"S": symbol}, "timestamp": {"S": timestamp}, "price": {"N": str(price)}}
    if first != "":
        image.update({"trend_from": {"S": first or timestamp}, "trend_bars": {"N": str(bars)}})
    return {
        "eventID": f"e{seq}",
        "eventName": event,
        "dynamodb": {"SequenceNumber": str(seq), "NewImage": image},
    }


def test_grouping_spans_the_marked_runs_and_skips_unmarked_and_malformed_records() -> None:
    no_sequence = _stream_record(7, "AAA", "2026-07-29T13:35:00Z", 1)
    del no_sequence["dynamodb"]["SequenceNumber"]
    records = [
        _stream_record(1, "AAA", "2026-07-29T13:30:00Z", "10.5", event="INSERT", first=""),  # a write
        _stream_record(2, "BBB", "2026-07-29T13:30:00Z", "20"),
        _stream_record(3, "AAA", "2026-07-29T13:31:00Z", "10.75", first="2026-07-29T13:30:00Z", bars=2),
        _stream_record(4, "AAA", "2026-07-29T13:31:00Z", "NaN"),
        _stream_record(5, "AAA", "2026-07-29T13:32:00Z", "Infinity"),
        _stream_record(6, "AAA", "2026-07-29T13:33:00Z", "ten"),
        no_sequence,
        _stream_record(11, "AAA", "2026-07-29T13:36:00Z", "1", first="2026-07-29T13:37:00Z"),  # after itself
        {"eventID": "e8", "eventName": "INSERT", "dynamodb": {"SequenceNumber": "8", "NewImage": None}},
        {"eventID": "e9", "eventName": "REMOVE", "dynamodb": {"SequenceNumber": "9"}},
        {"eventID": "e10", "dynamodb": {"SequenceNumber": "10"}},  # no event name: not evaluated
        _stream_record(12, "AAA", "2026-07-29T13:34:00Z", "11", first="2026-07-29T13:33:00Z", bars=2),
    ]
    groups, malformed = trend_plan.group_stream_records(records)
    assert malformed == 5
    spans = {sym: (g.first, g.last, g.bars, g.sequence_numbers) for sym, g in groups.items()}
    assert spans == {
        "AAA": ("2026-07-29T13:30:00Z", "2026-07-29T13:34:00Z", 4, ["3", "12"]),
        "BBB": ("2026-07-29T13:30:00Z", "2026-07-29T13:30:00Z", 1, ["2"]),
    }
    assert trend_plan.group_stream_records([]) == ({}, 0)


# --------------------------------------------------------------------------- history window


def _minute(i: int) -> str:
    return f"2020-01-01T{i // 60:02d}:{i % 60:02d}:00Z"


def _bars(prices: list[float]) -> list[Bar]:
    return [(_minute(i), Decimal(str(price))) for i, price in enumerate(prices)]


def test_window_limits_cover_the_new_bars_the_lookback_and_a_margin() -> None:
    assert lookback_needed() == 19
    assert trend_plan.first_limit(10) == 10 + 19 + trend_plan.QUERY_MARGIN == 69
    assert [trend_plan.next_limit(n) for n in (69, 138, 600)] == [138, 276, trend_plan.MAX_QUERY_LIMIT]


def test_window_request_reads_one_symbol_newest_first_up_to_the_last_bar() -> None:
    request = trend_plan.window_request("processed", "AAPL", "2026-07-29T14:00:00Z")
    assert request["TableName"] == "processed" and request["ScanIndexForward"] is False
    assert request["ExpressionAttributeValues"] == {
        ":s": {"S": "AAPL"},
        ":last": {"S": "2026-07-29T14:00:00Z"},
    }
    assert request["ConsistentRead"] is True and "Limit" not in request
    assert trend_plan.window_bars([{"timestamp": {"S": "t"}, "price": {"N": "1.25"}}]) == [
        ("t", Decimal("1.25"))
    ]


def test_window_state_needs_the_lookback_and_a_nonzero_state_before_the_first_new_bar() -> None:
    rising, falling, flat = (
        _bars([100.0 + i for i in range(30)]),
        _bars([130.0 - i for i in range(30)]),
        _bars([5.0] * 30),
    )
    first = _minute(25)  # bars 0..24 are prior: 25 >= 19
    assert trend_plan.window_state(rising[::-1], first) == 1
    assert trend_plan.window_state(falling[::-1], first) == -1
    assert trend_plan.window_state(flat[::-1], first) is None  # a flat run: read further back
    assert trend_plan.window_state(rising[::-1], _minute(18)) is None  # 18 prior bars < 19


class MemoryTables:
    """The processed table (Query) and the alerts table (PutItem/GetItem/UpdateItem) in memory.

    ``busy``: alert ids another invocation is claiming (the claim's condition fails).
    """

    def __init__(self, series: dict[str, list[Bar]], busy: set[str] | None = None) -> None:
        self.series = series
        self.alerts: dict[str, dict[str, Any]] = {}
        self.busy = busy or set()
        self.limits: list[int] = []
        self.batch_writes: list[int] = []
        self.batch_gets = 0

    def query(self, Limit: int, ExpressionAttributeValues: dict[str, Any], **request: Any) -> dict[str, Any]:
        self.limits.append(Limit)
        symbol, last = ExpressionAttributeValues[":s"]["S"], ExpressionAttributeValues[":last"]["S"]
        bars = sorted((b for b in self.series.get(symbol, []) if b[0] <= last), reverse=True)
        if "ExclusiveStartKey" in request:
            bars = [b for b in bars if b[0] < request["ExclusiveStartKey"]["timestamp"]["S"]]
        page = bars[:Limit]
        items = [{"timestamp": {"S": t}, "price": {"N": str(price)}} for t, price in page]
        full = {"LastEvaluatedKey": {"timestamp": {"S": page[-1][0]}}} if len(page) == Limit else {}
        return {"Items": items, **full}

    def _conflict(self, operation: str, item: dict[str, Any] | None = None) -> ClientError:
        response: dict[str, Any] = {"Error": {"Code": "ConditionalCheckFailedException", "Message": "x"}}
        return ClientError({**response, **({"Item": item} if item else {})}, operation)

    def put_item(self, Item: dict[str, Any], **_: Any) -> dict[str, Any]:
        alert_id = Item["alert_id"]["S"]
        if alert_id in self.alerts:
            raise self._conflict("PutItem", self.alerts[alert_id])
        self.alerts[alert_id] = dict(Item)
        return {}

    def get_item(self, Key: dict[str, Any], **_: Any) -> dict[str, Any]:
        item = self.alerts.get(Key["alert_id"]["S"])
        return {"Item": item} if item else {}

    def update_item(
        self, Key: dict[str, Any], ExpressionAttributeValues: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        alert_id = Key["alert_id"]["S"]
        item = self.alerts[alert_id]
        if "ConditionExpression" in kw:  # the claim
            if alert_id in self.busy or item["published"]["BOOL"]:
                raise self._conflict("UpdateItem")
            item["attempts"] = {"N": str(int(item["attempts"]["N"]) + 1)}
        else:
            item["published"] = {"BOOL": True}
        return {}

    def batch_get_item(self, RequestItems: dict[str, dict[str, Any]]) -> dict[str, Any]:
        ((table, request),) = RequestItems.items()
        assert len(request["Keys"]) <= 100 and request["ConsistentRead"] is True
        self.batch_gets += 1
        found = [
            self.alerts[k["alert_id"]["S"]] for k in request["Keys"] if k["alert_id"]["S"] in self.alerts
        ]
        return {"Responses": {table: [dict(item) for item in found]}, "UnprocessedKeys": {}}

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        ((_, requests),) = RequestItems.items()
        assert len(requests) <= 25
        self.batch_writes.append(len(requests))
        for request in requests:
            item = request["PutRequest"]["Item"]
            self.alerts[item["alert_id"]["S"]] = dict(item)
        return {"UnprocessedItems": {}}


class Vanishing(MemoryTables):
    """An alerts table that never takes a batch write, whose record disappears between the failed
    PutItem and the GetItem."""

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        return {"UnprocessedItems": RequestItems}

    def put_item(self, Item: dict[str, Any], **_: Any) -> dict[str, Any]:
        raise self._conflict("PutItem")


class MemoryTopic:
    """PublishBatch as SNS answers it; ``refuse``: alert ids answered as Failed."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.calls = 0
        self.refuse = refuse or set()

    def publish_batch(
        self, TopicArn: str, PublishBatchRequestEntries: list[dict[str, Any]]
    ) -> dict[str, Any]:
        assert 1 <= len(PublishBatchRequestEntries) <= 10
        self.calls += 1
        ok, failed = [], []
        for entry in PublishBatchRequestEntries:
            message = {k: v for k, v in entry.items() if k != "Id"}
            if message["MessageAttributes"]["alert_id"]["StringValue"] in self.refuse:
                failed.append({"Id": entry["Id"], "Code": "InternalError", "SenderFault": False})
                continue
            self.messages.append(message)
            ok.append({"Id": entry["Id"], "MessageId": f"m-{len(self.messages)}"})
        return {"Successful": ok, "Failed": failed}


FLAT_RUN = [100.0 + i for i in range(30)] + [127.0 - 2 * i for i in range(1, 31)] + [67.0] * 150
FLAT_RUN += [67.0 + i for i in range(1, 11)]  # rise, fall, 150 flat bars, rise: SELL then BUY


def test_history_pages_back_through_a_flat_run_to_the_last_nonzero_state() -> None:
    bars = _bars(FLAT_RUN)
    table = MemoryTables({"FLAT": bars})
    history, last_state, queries = trend._history(table, "t", "FLAT", bars[-10][0], bars[-1][0], 10)
    assert (last_state, queries, table.limits) == (-1, 2, [69, 138])
    assert history == bars[-(69 + 138) :]  # ascending, ending at the newest bar

    short = _bars([1.0, 2.0, 3.0])
    table = MemoryTables({"S": short})
    assert trend._history(table, "t", "S", short[-1][0], short[-1][0], 1) == (short, 0, 1)  # the whole series


def _batch(symbol: str, bars: list[Bar], first_seq: int) -> list[dict[str, Any]]:
    """The stream records the processor leaves for ``bars``: their writes, then the run's mark."""
    writes = [
        _stream_record(first_seq + i, symbol, t, price, event="INSERT", first="")
        for i, (t, price) in enumerate(bars)
    ]
    last_ts, last_price = bars[-1]
    mark = _stream_record(
        first_seq + len(bars), symbol, last_ts, last_price, first=bars[0][0], bars=len(bars)
    )
    return [*writes, mark]


def test_evaluate_delivers_each_signal_once_and_fails_only_the_busy_symbols_records() -> None:
    # GIVEN two symbols of the flat-run series, the last 10 bars of each in the batch; BBB's BUY
    # is being claimed by another invocation (its record left unpublished)
    bars = _bars(FLAT_RUN)
    expected = crossovers(bars, "AAA")[-1:]
    busy = crossovers(bars, "BBB")[-1]
    table = MemoryTables({"AAA": bars, "BBB": bars}, busy={busy.alert_id})
    table.alerts[busy.alert_id] = trend_plan.alert_item(busy, "2026-01-01T00:00:00Z")
    topic = MemoryTopic()
    event = {"Records": _batch("AAA", bars[-10:], 1) + _batch("BBB", bars[-10:], 12)}
    settings = dataclasses.replace(Settings(), table_name="t", alerts_table_name="a")

    result = trend.evaluate(event, settings, dynamodb=table, sns=topic, topic="arn:topic")

    # THEN AAA's BUY is published and marked; BBB's records are reported for a retry
    assert [s.signal for s in expected] == ["BUY"] and result.signals == expected
    assert result.outcomes == {trend.PUBLISHED: 1} and result.queries == 4
    assert result.response() == {"batchItemFailures": [{"itemIdentifier": "22"}]}  # BBB's mark
    (message,) = topic.messages
    assert "TopicArn" not in message and message["Message"] == trend_plan.format_alert(expected[0])[1]
    assert message["Subject"] == trend_plan.format_alert(expected[0])[0]
    assert message["MessageAttributes"] == trend_plan.message_attributes(expected[0])
    assert table.alerts[expected[0].alert_id]["published"] == {"BOOL": True}
    assert table.alerts[busy.alert_id]["published"] == {"BOOL": False}

    # WHEN the same batch is delivered again with BBB free THEN only BBB's alert goes out
    table.busy = set()
    again = trend.evaluate(event, settings, dynamodb=table, sns=topic, topic="arn:topic")
    assert again.outcomes == {trend.ALREADY_SENT: 1, trend.REPUBLISHED: 1} and again.response() == {
        "batchItemFailures": []
    }
    assert len(topic.messages) == 2 and table.alerts[busy.alert_id]["attempts"] == {"N": "2"}


def _signals(count: int) -> list[Any]:
    wave = [100.0 + 10 * ((i // 12) % 2) for i in range(12 * 2 * count + 20)]  # a square wave
    signals = crossovers(_bars(wave), "SQ")
    assert len(signals) >= count
    return signals[:count]


def test_deliver_all_publishes_in_order_in_batches_of_10_and_marks_each_batch() -> None:
    signals = _signals(23)
    table, topic = MemoryTables({}), MemoryTopic()
    common: dict[str, Any] = dict(dynamodb=table, sns=topic, alerts_table="alerts", topic="arn:topic")

    outcomes = trend.deliver_all(signals, **common)

    # THEN one BatchGetItem, the 23 records written in one BatchWriteItem, 3 PublishBatch calls
    # (10, 10, 3) in bar order, each followed by one BatchWriteItem marking them
    assert outcomes == [trend.PUBLISHED] * 23 and topic.calls == 3 and table.batch_gets == 1
    assert table.batch_writes == [23, 10, 10, 3]
    ids = [m["MessageAttributes"]["alert_id"]["StringValue"] for m in topic.messages]
    assert ids == [s.alert_id for s in signals]
    assert all(table.alerts[s.alert_id]["published"] == {"BOOL": True} for s in signals)
    assert table.alerts[signals[12].alert_id]["sns_message_id"] == {"S": "m-13"}
    assert table.alerts[signals[0].alert_id]["attempts"] == {"N": "1"}

    # WHEN delivered again (a redelivered batch) THEN nothing is published
    assert trend.deliver_all(signals, **common) == [trend.ALREADY_SENT] * 23 and topic.calls == 3


def test_a_message_sns_refuses_fails_the_symbol_and_its_retry_sends_only_it() -> None:
    signals = _signals(5)
    table, topic = MemoryTables({}), MemoryTopic(refuse={signals[2].alert_id})
    common: dict[str, Any] = dict(dynamodb=table, sns=topic, alerts_table="alerts", topic="arn:topic")
    with pytest.raises(trend.AlertNotPublished, match=r"SNS did not take 1 alert\(s\).*retried"):
        trend.deliver_all(signals, **common)
    assert [table.alerts[s.alert_id]["published"]["BOOL"] for s in signals] == [True, True, False, True, True]

    topic.refuse = set()
    outcomes = trend.deliver_all(signals, **common)
    assert outcomes == [trend.ALREADY_SENT] * 2 + [trend.REPUBLISHED] + [trend.ALREADY_SENT] * 2
    sent = [m["MessageAttributes"]["alert_id"]["StringValue"] for m in topic.messages]
    assert sorted(sent) == sorted(s.alert_id for s in signals) and len(sent) == 5


def test_alert_in_progress_is_a_pipeline_error_that_says_to_retry() -> None:
    signal = _signal()
    table = MemoryTables({}, busy={signal.alert_id})
    table.alerts[signal.alert_id] = trend_plan.alert_item(signal, "2026-01-01T00:00:00Z")
    common: dict[str, Any] = dict(dynamodb=table, sns=MemoryTopic(), alerts_table="alerts", topic="arn:topic")
    with pytest.raises(trend.AlertInProgress, match="being published by another invocation; retry") as err:
        trend.deliver(signal, **common)
    assert isinstance(err.value, PipelineError) and isinstance(err.value.__cause__, ClientError)
    with pytest.raises(trend.AlertInProgress, match="vanished while being claimed; retry the stream record"):
        trend.deliver(signal, **{**common, "dynamodb": Vanishing({})})


def test_alert_item_records_the_signal_unpublished_with_exact_numbers() -> None:
    signal = _signal(price=1e-05)
    assert trend_plan.alert_item(signal, "2026-07-29T14:05:01Z") == {
        "alert_id": {"S": signal.alert_id},
        "symbol": {"S": "AAPL"},
        "timestamp": {"S": "2026-07-29T14:05:00Z"},
        "signal": {"S": "BUY"},
        "price": {"N": "0.00001"},
        "sma_short": {"N": "211.148"},
        "sma_long": {"N": "211.0905000001"},
        "published": {"BOOL": False},
        "attempts": {"N": "1"},
        "created_at": {"S": "2026-07-29T14:05:01Z"},
    }


def test_publish_request_adds_group_and_deduplication_ids_on_a_fifo_topic_only() -> None:
    signal = _signal()
    standard = trend_plan.publish_request(signal, "arn:aws:sns:us-east-1:1:stock-trend-alerts")
    assert set(standard) == {"TopicArn", "Subject", "Message", "MessageAttributes"}
    fifo = trend_plan.publish_request(signal, "arn:aws:sns:us-east-1:1:stock-trend-alerts.fifo")
    assert (fifo["MessageGroupId"], fifo["MessageDeduplicationId"]) == (
        "AAPL",
        "AAPL#2026-07-29T14:05:00Z#BUY",
    )
    assert {k: v for k, v in fifo.items() if not k.startswith("MessageGroup") and "Dedup" not in k} == {
        **standard,
        "TopicArn": fifo["TopicArn"],
    }
    longest = _signal(symbol="A" * 15, signal="SELL").alert_id
    assert len(longest) <= trend_plan.MAX_DEDUPLICATION_ID_CHARS


def test_readers_keep_one_alert_per_alert_id_and_count_the_copies() -> None:
    a, b = _signal().to_dict(), _signal(timestamp="2026-07-29T15:00:00Z", signal="SELL").to_dict()
    received = alerts.dedupe([a, {**a, "message_id": "copy"}, b, {**a, "message_id": "copy-2"}])
    assert [x["alert_id"] for x in received] == [a["alert_id"], b["alert_id"]]
    assert (received.duplicates, received.duplicate_ids) == (2, {a["alert_id"]: 2})
    assert received == [a, b]
    assert alerts.compare(received, [_signal(), _signal(timestamp=b["timestamp"], signal="SELL")])["ok"]
    assert alerts.dedupe([]).duplicates == 0
