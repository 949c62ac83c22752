"""The trend Lambda (helpers.pipeline.trend) and the alert inbox (helpers.notebook.alerts) on the stack.

Against the session's local stack after ``provision()``: real replay bars written to the processed
table, the table's real DynamoDB stream read back and cut into batches of several sizes, each batch
given to ``evaluate_batch`` as the Lambda runtime would, and the alerts received from the SQS inbox
(subscribed to the SNS topic) compared with ``indicators.crossovers`` over the stored series. The
pure parts (message format, stream grouping, window decision) are in tests/unit/test_trend.py.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError

from helpers.core import trend_plan
from helpers.core.indicators import Signal, crossovers
from helpers.core.quotes import Quote
from helpers.notebook import alerts, history
from helpers.notebook.sources import replay
from helpers.pipeline import aws, trend
from helpers.pipeline.config import Settings
from helpers.pipeline.processor import processed_item

pytestmark = pytest.mark.integration

SPLITS = {"1": 1, "7": 7, "100": 100, "all": None}
# H1 2010 of the real daily bars: four symbols (FB starts in 2012) interleaved by date, 496 bars,
# 31 crossovers. (moto answers a Query in ~20-40 ms here, so the single-bar split costs ~15 s.)
DAILY = ("daily", None, "2010-01-01", "2010-07-01")
MAX_QUERIES_PER_SYMBOL = 2  # per batch; one in practice (measured), two leaves room for a flat run
_serializer = TypeSerializer()


# --------------------------------------------------------------------------- local stack


@dataclasses.dataclass
class Pipeline:
    settings: Settings
    topic: str
    stream_records: list[dict[str, Any]]  # every record of the table's stream so far
    expected: list[Signal]  # crossovers of the stored series


def _item(quote: Quote, processed_at: str) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in processed_item(quote, processed_at).items()}


def _write(settings: Settings, quotes: list[Quote], processed_at: str) -> None:
    """Write items as the processor does: chunks, then each symbol's run marked for the trend Lambda."""
    dynamodb = aws.client("dynamodb", settings)
    for start in range(0, len(quotes), 25):
        chunk = quotes[start : start + 25]
        response = dynamodb.batch_write_item(
            RequestItems={
                settings.table_name: [{"PutRequest": {"Item": _item(q, processed_at)}} for q in chunk]
            }
        )
        assert not response.get("UnprocessedItems")
        for symbol in dict.fromkeys(q.symbol for q in chunk):
            run = [q for q in chunk if q.symbol == symbol]
            key = {"symbol": {"S": symbol}, "timestamp": {"S": run[-1].timestamp}}
            dynamodb.update_item(
                **trend_plan.mark_request(settings.table_name, key, run[0].timestamp, len(run))
            )


def _stream_records(settings: Settings) -> list[dict[str, Any]]:
    """Every record of the processed table's stream, in order (the shape Lambda receives)."""
    dynamodb = aws.client("dynamodb", settings)
    streams = aws.client("dynamodbstreams", settings)
    arn = dynamodb.describe_table(TableName=settings.table_name)["Table"]["LatestStreamArn"]
    records: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for _ in range(10_000):  # bounded: stops at the first empty page
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            if not page["Records"]:
                break
            records.extend({**r, "eventSourceARN": arn} for r in page["Records"])
            iterator = page["NextShardIterator"]
    return records


def _expected(settings: Settings) -> list[Signal]:
    return [
        s
        for symbol in history.symbols_in_table(settings)
        for s in crossovers(history.processed_bars(settings, symbol), symbol)
    ]


def _reset_alerts(settings: Settings) -> None:
    """Empty the alerts table and the inbox between scenarios."""
    dynamodb = aws.client("dynamodb", settings)
    for page in dynamodb.get_paginator("scan").paginate(
        TableName=settings.alerts_table_name, ProjectionExpression="alert_id"
    ):
        for item in page["Items"]:
            dynamodb.delete_item(TableName=settings.alerts_table_name, Key=item)
    alerts.receive_alerts(settings, wait_seconds=0)


def _batches(records: list[dict[str, Any]], size: int | None) -> list[list[dict[str, Any]]]:
    size = size or len(records)
    return [records[i : i + size] for i in range(0, len(records), size)]


def _counting(settings: Settings, service: str, operation: str) -> tuple[Any, Counter[str]]:
    """A fresh client counting the calls of one operation (``Publish``: messages SNS took in PublishBatch)."""
    client = aws.client(service, settings, cached=False)
    calls: Counter[str] = Counter()
    if operation == "Publish":

        def messages(parsed: dict[str, Any], **_: Any) -> None:
            calls.update({"Publish": len(parsed.get("Successful") or []), "PublishBatch": 1})

        client.meta.events.register("after-call.sns.PublishBatch", messages)
        return client, calls
    client.meta.events.register(f"before-call.{service}.{operation}", lambda **_: calls.update([operation]))
    return client, calls


@pytest.fixture(scope="module")
def pipeline(local_stack: Settings) -> Iterator[Pipeline]:
    """Provisioned alert resources of their own, and the processed table holding real daily bars."""
    from deploy.provision import provision

    tag = uuid.uuid4().hex[:8]
    settings = dataclasses.replace(
        local_stack,
        table_name=f"trend-test-processed-{tag}",
        alerts_table_name=f"trend-test-alerts-{tag}",
        topic_name=f"trend-test-alerts-{tag}",
        alert_queue_name=f"trend-test-inbox-{tag}",
    )
    provision(settings)
    _write(settings, list(replay(*DAILY)), "2026-01-01T00:00:00Z")
    records, expected = _stream_records(settings), _expected(settings)
    marks = [r for r in records if trend_plan.TREND_FROM in r["dynamodb"]["NewImage"]]
    assert len(records) - len(marks) == 496 and len(marks) == 80 and len(expected) == 31
    yield Pipeline(settings, trend.topic_arn(settings), records, expected)


def _evaluate(p: Pipeline, batch: list[dict[str, Any]], **clients: Any) -> dict[str, Any]:
    return trend.evaluate_batch({"Records": batch}, p.settings, topic=p.topic, **clients)


@pytest.mark.parametrize("split", list(SPLITS))
def test_alerts_equal_crossovers_whatever_the_batch_size(pipeline: Pipeline, split: str) -> None:
    """GIVEN the table's stream cut into batches WHEN each is evaluated THEN one alert per crossover;
    AND redelivering every batch publishes nothing new."""
    p = pipeline
    _reset_alerts(p.settings)
    dynamodb, queries = _counting(p.settings, "dynamodb", "Query")
    sns, publishes = _counting(p.settings, "sns", "Publish")
    batches = _batches(p.stream_records, SPLITS[split])
    for batch in batches:
        before = queries["Query"]
        assert _evaluate(p, batch, dynamodb=dynamodb, sns=sns) == {"batchItemFailures": []}
        symbols = {r["dynamodb"]["NewImage"]["symbol"]["S"] for r in batch}
        assert queries["Query"] - before <= MAX_QUERIES_PER_SYMBOL * len(symbols)

    received = alerts.receive_alerts(p.settings, wait_seconds=1)
    check = alerts.compare(received, p.expected)
    assert check["ok"], check
    assert {Signal.from_dict(a) for a in received} == set(p.expected)  # the values too, exactly
    assert publishes["Publish"] == len(p.expected)
    recorded = alerts.published_alerts(p.settings, include_unpublished=True)
    assert [r["alert_id"] for r in recorded] == sorted(s.alert_id for s in p.expected)
    assert all(r["published"] and r["attempts"] == 1 for r in recorded)
    symbols = {r["dynamodb"]["NewImage"]["symbol"]["S"] for r in p.stream_records}
    assert publishes["PublishBatch"] <= len(batches) * len(symbols) + len(p.expected) // 10
    print(f"split {split}: {len(batches)} batches, {queries['Query']} Query, {publishes['Publish']} alerts "
          f"in {publishes['PublishBatch']} PublishBatch")  # fmt: skip

    if split == "1":
        return  # redelivery is checked with the coarser splits: 500 more Query calls add nothing
    for batch in batches:  # redelivery of every batch, as after a lost checkpoint
        assert _evaluate(p, batch, dynamodb=dynamodb, sns=sns) == {"batchItemFailures": []}
    assert publishes["Publish"] == len(p.expected)
    assert alerts.receive_alerts(p.settings, wait_seconds=1) == []


def test_modify_of_evaluated_bars_publishes_nothing(pipeline: Pipeline) -> None:
    """GIVEN every alert sent WHEN the signal bars are written again (MODIFY) THEN nothing is sent."""
    p = pipeline
    _reset_alerts(p.settings)
    assert _evaluate(p, p.stream_records) == {"batchItemFailures": []}
    assert len(alerts.receive_alerts(p.settings, wait_seconds=1)) == len(p.expected)
    signal_bars = {(s.symbol, s.timestamp) for s in p.expected}
    quotes = [q for q in replay(*DAILY) if (q.symbol, q.timestamp) in signal_bars]
    _write(p.settings, quotes, "2026-01-02T00:00:00Z")
    modified = _stream_records(p.settings)[len(p.stream_records) :]
    marks = [r for r in modified if trend_plan.TREND_FROM in r["dynamodb"]["NewImage"]]
    assert len(modified) - len(marks) == len(quotes) and {r["eventName"] for r in modified} == {"MODIFY"}

    result = trend.evaluate({"Records": modified}, p.settings, topic=p.topic)
    assert result.response() == {"batchItemFailures": []}
    assert result.outcomes == {trend.ALREADY_SENT: len(p.expected)}
    assert alerts.receive_alerts(p.settings, wait_seconds=1) == []
    p.stream_records.extend(modified)  # later tests see the table's whole stream


class _Crash(Exception):
    """Stands for the function dying (timeout, out of memory) at a given call."""


def _fail_once(client: Any, event: str, error: Exception) -> list[int]:
    calls = [0]

    def hook(**_: Any) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise error

    client.meta.events.register(event, hook)
    return calls


def _run_like_lambda(p: Pipeline, batch: list[dict[str, Any]], **clients: Any) -> int:
    """Invoke with retries as the event source mapping does; returns the invocations used."""
    for attempt in range(1, 5):
        try:
            failures = _evaluate(p, batch, **clients)["batchItemFailures"]
        except _Crash:
            continue  # a function error: the whole batch again
        if not failures:
            return attempt
        failed = {f["itemIdentifier"] for f in failures}
        batch = batch[min(i for i, r in enumerate(batch) if r["dynamodb"]["SequenceNumber"] in failed) :]
    raise AssertionError("batch still failing after 4 invocations")


@pytest.mark.parametrize(
    "error",
    [
        ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, "PublishBatch"),
        _Crash("function died between recording the alert and publishing it"),
    ],
    ids=["publish-error", "crash"],
)
def test_failure_between_record_and_publish_still_sends_once(pipeline: Pipeline, error: Exception) -> None:
    p = pipeline
    _reset_alerts(p.settings)
    sns, sent = _counting(p.settings, "sns", "Publish")
    publishes = _fail_once(sns, "before-call.sns.PublishBatch", error)
    invocations = [_run_like_lambda(p, batch, sns=sns) for batch in _batches(p.stream_records, 100)]
    assert sum(invocations) == len(invocations) + 1  # one retry, for the batch that failed
    received = alerts.receive_alerts(p.settings, wait_seconds=1)
    check = alerts.compare(received, p.expected)
    assert check["ok"], check
    assert publishes[0] == sent["PublishBatch"] + 1  # the failed attempt, then the ones that went out
    assert sent["Publish"] == len(p.expected)  # messages SNS took: each signal once
    recorded = alerts.published_alerts(p.settings, include_unpublished=True)
    assert all(r["published"] for r in recorded) and len(recorded) == len(p.expected)
    assert sorted(r["attempts"] for r in recorded)[-2:] == [1, 2]  # the interrupted one was claimed again


def test_pending_record_is_published_once_then_skipped(pipeline: Pipeline) -> None:
    """A record left unpublished (crash after the conditional write) is claimed and sent once."""
    p = pipeline
    _reset_alerts(p.settings)
    signal = p.expected[0]
    dynamodb = aws.client("dynamodb", p.settings)
    dynamodb.put_item(
        TableName=p.settings.alerts_table_name, Item=trend_plan.alert_item(signal, "2026-01-01T00:00:00Z")
    )
    sns = aws.client("sns", p.settings)
    common = dict(dynamodb=dynamodb, sns=sns, alerts_table=p.settings.alerts_table_name, topic=p.topic)
    assert trend.deliver(signal, **common) == trend.REPUBLISHED
    assert trend.deliver(signal, **common) == trend.ALREADY_SENT
    assert trend.deliver(p.expected[1], **common) == trend.PUBLISHED
    received = alerts.receive_alerts(p.settings, wait_seconds=1)
    assert sorted(a["alert_id"] for a in received) == sorted([signal.alert_id, p.expected[1].alert_id])


def _flat_quote(minute: int, price: float) -> Quote:
    timestamp = f"2020-01-01T{minute // 60:02d}:{minute % 60:02d}:00Z"
    return Quote("FLAT", timestamp, price, price, price, price, price, volume=100, source="test")


def test_flat_run_pages_back_to_the_last_nonzero_state(pipeline: Pipeline) -> None:
    """GIVEN a rise, a fall, 150 flat bars, then a rise WHEN only the last rise is in the batch THEN
    it is a BUY: the first window's states are all 0, so the Query pages back to find the -1."""
    p = pipeline
    _reset_alerts(p.settings)
    rise, fall = [100.0 + i for i in range(30)], [127.0 - 2 * i for i in range(1, 31)]
    prices = rise + fall + [67.0] * 150 + [67.0 + i for i in range(1, 11)]
    quotes = [_flat_quote(i, price) for i, price in enumerate(prices)]
    _write(p.settings, quotes[:-10], "2026-01-03T00:00:00Z")
    _write(p.settings, quotes[-10:], "2026-01-03T00:00:00Z")  # the last rise: one run, one mark
    new = _stream_records(p.settings)[len(p.stream_records) :]
    p.stream_records.extend(new)
    p.expected = _expected(p.settings)
    expected = crossovers([(q.timestamp, q.price) for q in quotes], "FLAT")
    assert [s.signal for s in expected] == ["SELL", "BUY"] and expected[1].timestamp == quotes[-10].timestamp

    dynamodb, queries = _counting(p.settings, "dynamodb", "Query")
    result = trend.evaluate({"Records": new[-11:]}, p.settings, topic=p.topic, dynamodb=dynamodb)
    assert result.signals == expected[1:] and result.outcomes == {trend.PUBLISHED: 1}
    # Limit 69 (10 new + 19 + 40): 59 flat bars, all state 0; then up to 138 more reach the fall.
    assert queries["Query"] == result.queries == 2
    assert alerts.compare(alerts.receive_alerts(p.settings, wait_seconds=1), expected[1:])["ok"]


def test_processed_frame_reads_the_series_by_query(pipeline: Pipeline) -> None:
    frame = history.processed_frame(pipeline.settings, ["IBM", "AAPL"])
    assert list(frame["symbol"].unique()) == ["AAPL", "IBM"] and len(frame) == 248
    assert frame.equals(frame.sort_values(["symbol", "timestamp"]).reset_index(drop=True))
    assert frame["price"].dtype == float and frame["volume"].dtype == "int64"
    assert history.processed_bars(pipeline.settings, "IBM") == list(
        frame.loc[frame["symbol"] == "IBM", ["timestamp", "price"]].itertuples(index=False, name=None)
    )
