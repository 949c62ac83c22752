"""Failure tooling against the local stack: on-failure documents, ranges, parked records, redrive.

A provisioned pipeline of its own with no function deployed, so nothing consumes its stream:
the test puts quotes on it, sends the failure document exactly as the stack's Lambda runtime
does (``deploy.local._lambda.destinations``), reads it back, fetches the range from the stream,
redrives it and finds the same bytes again at new sequence numbers; then the same for parked
records written in the processor's format.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from isolated_pipeline import renamed

from helpers.core.layout import parked_key
from helpers.core.quotes import Quote
from helpers.notebook import failures, producer, verify
from helpers.pipeline import aws, resources
from helpers.pipeline.config import Settings

pytestmark = pytest.mark.integration

SYMBOLS = ("AAPL", "MSFT", "IBM")


@pytest.fixture(scope="module")
def pipeline(local_stack: Settings) -> Iterator[Settings]:
    from deploy.provision import provision, teardown

    settings = renamed(local_stack, "fail")
    provision(settings)
    try:
        yield settings
    finally:
        teardown(settings)


@pytest.fixture(autouse=True)
def _empty(pipeline: Settings) -> Iterator[None]:
    """Each test starts and ends with an empty failure queue and no parked objects."""
    yield
    sqs, s3 = aws.client("sqs", pipeline), aws.client("s3", pipeline)
    url = failures.failure_queue_url(pipeline)
    for _ in range(10):  # PurgeQueue: once per 60 s only
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        for m in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        if not messages:
            break
    for record in failures.parked_records(pipeline):
        s3.delete_object(Bucket=pipeline.raw_bucket, Key=record.key)


def _quotes(n: int, minute0: int = 0) -> list[Quote]:
    return [
        Quote(
            SYMBOLS[i % 3],
            f"2026-07-29T{13 + (minute0 + i) // 60:02d}:{(minute0 + i) % 60:02d}:00Z",
            100.0 + i,
            99.0,
            100.0,
            101.0 + i,
            99.0,
            1000 + i,
            "failures-test",
        )
        for i in range(n)
    ]


def _stream_records(settings: Settings) -> list[dict[str, Any]]:
    """Every record on the stream (TRIM_HORIZON of every shard), as the failure helpers read them."""
    kinesis = aws.client("kinesis", settings)
    found = []
    for shard in kinesis.list_shards(StreamName=settings.stream_name)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=settings.stream_name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for _ in range(50):
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            found += [{**r, "ShardId": shard["ShardId"]} for r in page["Records"]]
            iterator = page.get("NextShardIterator")
            if not page["Records"] or not iterator:
                break
    return found


def _send_failure(settings: Settings, shard: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The on-failure document of ``records`` (one shard), sent as the local Lambda runtime sends it."""
    from deploy.local._lambda.destinations import RETRIES_EXHAUSTED, Destinations, failure_record
    from deploy.local._lambda.models import MappingConfig
    from deploy.local._lambda.sources import SourceRecord

    account = aws.account_id(settings)
    arns = {
        f: resources.arn(resources.by_field(f), settings, account)
        for f in ("stream_name", "failure_queue_name")
    }
    cfg = MappingConfig(
        uuid="test-mapping", function_arn=f"arn:aws:lambda:{settings.region}:{account}:function:"
        f"{settings.processor_function}", source_arn=arns["stream_name"], region=settings.region,
        account=account, enabled=True, batch_size=100, window_seconds=0, starting_position="TRIM_HORIZON",
        starting_timestamp=None, report_item_failures=True, bisect=True, max_retries=3, max_record_age=-1,
        on_failure=arns["failure_queue_name"],
    )  # fmt: skip
    source = [
        SourceRecord(
            int(r["SequenceNumber"]), r["ApproximateArrivalTimestamp"].timestamp(), {}, len(r["Data"])
        )
        for r in records
    ]
    document = failure_record(cfg, shard, source, RETRIES_EXHAUSTED, None, 4, time.time())
    assert Destinations(settings.resolved_endpoint or "").send(arns["failure_queue_name"], document, cfg.uuid)
    return document


def test_a_failed_range_is_read_fetched_and_redriven(pipeline: Settings) -> None:
    # GIVEN 30 quotes on the stream and a failure document for 5 consecutive records of one shard
    producer.produce(_quotes(30), pipeline, linger=None, aggregate=1)  # one quote a record
    on_stream = _stream_records(pipeline)
    shard = on_stream[0]["ShardId"]
    ours = sorted((r for r in on_stream if r["ShardId"] == shard), key=lambda r: int(r["SequenceNumber"]))
    failed = ours[3:8]
    document = _send_failure(pipeline, shard, failed)
    assert failures.failure_queue_depth(pipeline) == 1
    # WHEN the tooling reads it (without consuming it)
    (batch,) = failures.failed_batches(pipeline)
    assert failures.failure_queue_depth(pipeline) == 1
    assert (batch.condition, batch.invoke_count, batch.shard_id) == ("RetryAttemptsExhausted", 4, shard)
    assert (batch.start, batch.end, batch.batch_size) == (
        failed[0]["SequenceNumber"],
        failed[-1]["SequenceNumber"],
        5,
    )
    assert batch == failures.parse_failure(
        document, message_id=batch.message_id, receipt_handle=batch.receipt_handle
    )
    # THEN the range's records come back from the stream, exactly those five
    records, status = failures.fetch_range(batch, pipeline)
    assert status == "complete"
    assert [(r["sequence_number"], r["data"]) for r in records] == [
        (f["SequenceNumber"], f["Data"]) for f in failed
    ]
    frame = failures.failed_records(pipeline)
    assert list(frame["sequence_number"]) == [f["SequenceNumber"] for f in failed]
    assert set(frame["condition"]) == {"RetryAttemptsExhausted"}
    # AND a redrive puts the same bytes back under the same partition keys, then deletes the message
    report = failures.redrive(pipeline, parked=False)
    assert (report.records_sent, report.messages_deleted, report.left) == (5, 1, {})
    assert failures.failure_queue_depth(pipeline) == 0
    after = {(r["ShardId"], r["SequenceNumber"]): r for r in _stream_records(pipeline)}
    assert len(after) == 35
    again = [after[new] for new in report.new_records]
    for key in SYMBOLS:  # one PutRecords series per partition key: each key's order is kept
        assert [r["Data"] for r in again if r["PartitionKey"] == key] == [
            f["Data"] for f in failed if f["PartitionKey"] == key
        ]
    assert len(again) == len(failed)
    assert all(int(seq) > int(failed[-1]["SequenceNumber"]) for sh, seq in report.new_records if sh == shard)


def test_an_expired_or_unknown_range_is_reported_and_kept(pipeline: Settings) -> None:
    producer.produce(_quotes(3, minute0=40), pipeline, linger=None, aggregate=1)
    record = _stream_records(pipeline)[0]
    _send_failure(pipeline, "shardId-999999999999", [record])  # a shard the stream does not have
    (batch,) = failures.failed_batches(pipeline)
    assert failures.fetch_range(batch, pipeline) == ([], "expired")
    report = failures.redrive(pipeline, parked=False)
    assert (report.records_sent, report.messages_deleted, report.left) == (0, 0, {"expired range": 1})
    assert failures.failure_queue_depth(pipeline) == 1


def _park(settings: Settings, shard: str, quotes: list[Quote], first_seq: int) -> str:
    lines = [
        json.dumps(
            {
                "reason": "write_failed",
                "detail": "AccessDenied: PutObject on raw/",
                "sequence_number": str(first_seq + i),
                "partition_key": q.symbol,
                "shard": shard,
                "data_base64": base64.b64encode(q.to_json()).decode(),
                "arrival": "2026-07-29T13:30:00Z",
                "attempts": 3,
            }
        )
        for i, q in enumerate(quotes)
    ]
    key = parked_key(shard, str(first_seq))
    aws.client("s3", settings).put_object(Bucket=settings.raw_bucket, Key=key, Body="\n".join(lines) + "\n")
    return key


def test_parked_records_are_listed_counted_and_redriven(pipeline: Settings) -> None:
    # GIVEN two parked objects of 4 and 2 records
    before = len(_stream_records(pipeline))
    quotes = _quotes(6, minute0=100)
    _park(pipeline, "shardId-000000000000", quotes[:4], 1000)
    _park(pipeline, "shardId-000000000001", quotes[4:], 2000)
    # THEN they are listed with their reason and counted by store_counts and wait_for_processing
    parked = failures.parked_records(pipeline)
    assert [r.data for r in parked] == [q.to_json() for q in quotes]
    assert {(r.reason, r.attempts) for r in parked} == {("write_failed", 3)}
    frame = failures.parked_frame(pipeline)
    assert list(frame["partition_key"]) == [q.symbol for q in quotes]
    assert verify.store_counts(pipeline)["parked"] == 6
    waited = verify.wait_for_processing(pipeline, expected=10, timeout=60, poll=0.2)
    assert (waited["gave_up"], waited["settled"], waited["parked"]) == (True, False, 6)
    assert waited["seconds"] < 30
    # WHEN redriven
    report = failures.redrive(pipeline, failures=False)
    # THEN the six records are on the stream again, bytes and partition keys unchanged, and unparked
    assert (report.records_sent, report.parked_objects_deleted, report.left) == (6, 2, {})
    assert failures.parked_records(pipeline) == []
    after = {(r["ShardId"], r["SequenceNumber"]): r for r in _stream_records(pipeline)}
    assert len(after) == before + 6
    assert sorted((after[s]["Data"], after[s]["PartitionKey"]) for s in report.new_records) == sorted(
        (q.to_json(), q.symbol) for q in quotes
    )


def test_a_parked_object_keeps_only_what_put_records_refused(pipeline: Settings) -> None:
    class RefuseIBM:  # PutRecords answering ProvisionedThroughputExceeded for every IBM entry
        def __init__(self, real: Any) -> None:
            self.real = real

        def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
            sent = [r for r in Records if r["PartitionKey"] != "IBM"]
            answers = iter(
                self.real.put_records(StreamName=StreamName, Records=sent)["Records"] if sent else []
            )
            refused = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow"}
            return {"Records": [refused if r["PartitionKey"] == "IBM" else next(answers) for r in Records]}

    quotes = _quotes(6, minute0=200)
    key = _park(pipeline, "shardId-000000000000", quotes, 3000)
    real = aws.client("kinesis", pipeline)
    report = failures.redrive(pipeline, failures=False, kinesis=RefuseIBM(real))
    left = failures.parked_records(pipeline)
    assert report.records_sent == 4 and report.parked_objects_rewritten == 1
    assert report.left == {"parked, not accepted by PutRecords": 2}
    assert [(r.key, r.partition_key, r.data) for r in left] == [
        (key, "IBM", q.to_json()) for q in quotes if q.symbol == "IBM"
    ]
