"""Failure tooling without a stack: on-failure documents, ranges, parked lines, redrive bookkeeping."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from helpers.core.errors import PipelineError
from helpers.notebook import failures

# What deploy/local/_lambda/destinations.failure_record sends for a Kinesis mapping (and AWS too).
KINESIS_DOCUMENT = {
    "requestContext": {
        "requestId": "c9b8c1c4-0000-4000-8000-000000000001",
        "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:stock-trend-processor",
        "condition": "RetryAttemptsExhausted",
        "approximateInvokeCount": 4,
    },
    "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
    "version": "1.0",
    "timestamp": "2026-07-29T13:31:02.123Z",
    "KinesisBatchInfo": {
        "shardId": "shardId-000000000000",
        "startSequenceNumber": "9",
        "endSequenceNumber": "12",
        "approximateArrivalOfFirstRecord": "2026-07-29T13:30:00.000Z",
        "approximateArrivalOfLastRecord": "2026-07-29T13:30:01.000Z",
        "batchSize": 4,
        "streamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/stock-trend-quotes",
    },
}


def test_a_kinesis_failure_document_becomes_its_range_and_reason() -> None:
    batch = failures.parse_failure(json.dumps(KINESIS_DOCUMENT), message_id="m-1", receipt_handle="r-1")
    assert (batch.source, batch.condition, batch.invoke_count, batch.function_error) == (
        "kinesis", "RetryAttemptsExhausted", 4, "Unhandled",
    )  # fmt: skip
    assert (batch.shard_id, batch.start, batch.end, batch.batch_size) == (
        "shardId-000000000000",
        "9",
        "12",
        4,
    )
    assert batch.stream_name == "stock-trend-quotes"
    assert (batch.message_id, batch.receipt_handle) == ("m-1", "r-1")


def test_sequence_numbers_compare_as_integers_not_text() -> None:
    batch = failures.parse_failure(KINESIS_DOCUMENT)
    assert batch.contains("9") and batch.contains("10") and batch.contains("12")
    assert not batch.contains("8") and not batch.contains("13") and not batch.contains("100")  # "100" < "12"


def test_a_dynamodb_stream_failure_is_read_but_not_fetched() -> None:
    document = {k: v for k, v in KINESIS_DOCUMENT.items() if k != "KinesisBatchInfo"}
    stream = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-07-29T00:00:00.000"
    document["DDBStreamBatchInfo"] = {**KINESIS_DOCUMENT["KinesisBatchInfo"], "streamArn": stream}
    batch = failures.parse_failure(document)
    assert batch.source == "dynamodb"
    assert failures.fetch_range(batch, kinesis=object()) == ([], "dynamodb stream")


@pytest.mark.parametrize(
    "body", ["not json", "{}", json.dumps({"requestContext": {}, "KinesisBatchInfo": {}})]
)
def test_other_messages_are_refused_with_a_hint(body: str) -> None:
    with pytest.raises(PipelineError, match=r"not a Lambda on-failure document.*failure queue"):
        failures.parse_failure(body)


class FakeKinesis:
    """GetShardIterator/GetRecords over one shard of records ``seq`` 1..n, ``page`` records per call."""

    def __init__(self, n: int, page: int, trimmed_before: int = 0) -> None:
        self.records = [{"SequenceNumber": str(i), "PartitionKey": "AAPL", "Data": f"r{i}".encode()}
                        for i in range(max(1, trimmed_before), n + 1)]  # fmt: skip
        self.page, self.calls = page, 0

    def get_shard_iterator(self, **kwargs: Any) -> dict[str, Any]:
        start = int(kwargs["StartingSequenceNumber"])
        positions = [i for i, r in enumerate(self.records) if int(r["SequenceNumber"]) >= start]
        return {"ShardIterator": str(positions[0] if positions else len(self.records))}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        self.calls += 1
        at = int(ShardIterator)
        chunk = self.records[at : at + self.page]
        behind = 0 if at + self.page >= len(self.records) else 1000
        return {"Records": chunk, "NextShardIterator": str(at + len(chunk)), "MillisBehindLatest": behind}


def test_a_range_is_read_across_pages_and_stops_past_its_end() -> None:
    kinesis = FakeKinesis(n=200, page=3)
    batch = failures.parse_failure(KINESIS_DOCUMENT)  # 9..12
    records, status = failures.fetch_range(batch, kinesis=kinesis)
    assert status == "complete"
    assert [r["sequence_number"] for r in records] == ["9", "10", "11", "12"]
    assert kinesis.calls == 2  # 9,10,11 then 12,13,14: past the end, stop


def test_a_trimmed_range_is_partial_and_the_loop_is_bounded() -> None:
    batch = failures.parse_failure(KINESIS_DOCUMENT)
    records, status = failures.fetch_range(batch, kinesis=FakeKinesis(n=200, page=3, trimmed_before=11))
    assert (status, [r["sequence_number"] for r in records]) == ("partial", ["11", "12"])
    endless = FakeKinesis(n=10_000, page=0)  # empty pages forever, never at the tip
    assert failures.fetch_range(batch, kinesis=endless, max_calls=5) == ([], "expired")
    assert endless.calls == 5


def test_a_parked_line_keeps_the_record_bytes() -> None:
    data = b'{"symbol":"AAPL","price":1.5}'
    line = json.dumps({"reason": "write_failed", "detail": "SlowDown", "sequence_number": "17",
                       "partition_key": "AAPL", "shard": "shardId-000000000001",
                       "data_base64": base64.b64encode(data).decode(), "arrival": "2026-07-29T13:30:00Z",
                       "attempts": 3})  # fmt: skip
    record = failures._parked("parked/shardId-000000000001/17.ndjson", line)
    assert (record.data, record.partition_key, record.sequence_number, record.attempts) == (
        data,
        "AAPL",
        "17",
        3,
    )
    assert record.line == line


def test_accepted_entries_are_taken_once_per_acceptance() -> None:
    class Answers:
        def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
            return {"Records": [{"ErrorCode": "ProvisionedThroughputExceededException"} if r["Data"] == b"no"
                                else {"ShardId": "shardId-0", "SequenceNumber": str(i)}
                                for i, r in enumerate(Records)]}  # fmt: skip

    accepted = failures._Accepted(Answers())
    accepted.put_records(
        StreamName="s", Records=[{"Data": d, "PartitionKey": "K"} for d in (b"a", b"a", b"no")]
    )
    assert accepted.new_records == [("shardId-0", "0"), ("shardId-0", "1")]
    assert [accepted.take(b"a", "K"), accepted.take(b"a", "K"), accepted.take(b"a", "K")] == [
        True,
        True,
        False,
    ]
    assert not accepted.take(b"no", "K")
