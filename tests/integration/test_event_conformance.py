"""What the local Lambda runtime delivers, checked against AWS's own models of it.

aws-lambda-powertools' parser models (pydantic, maintained by AWS) validate the Kinesis and
DynamoDB stream events; the on-failure record is checked against AWS's documented payload
("Retaining records of asynchronous invocations" / "on-failure destinations" for stream
sources), with extra keys refused; the processor's partial batch response against powertools'
``PartialItemFailureResponse``: one identifier per Kinesis record, an aggregate's once. A field
the runtime drops, renames or mistypes fails here.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import pydantic
import pytest
from aws_lambda_powertools.utilities.parser import models as parser
from lambda_runtime_support import delivered, deploy, failure_messages, map_stream, put, queue, stream, unique

from deploy.provision import PROCESSED_KEY_SCHEMA
from helpers.pipeline.config import Settings

pytestmark = pytest.mark.integration


def test_kinesis_events_validate_against_powertools(
    c: SimpleNamespace, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    function = deploy(c, role_arn, fixture_zip, "record", {"OUT_DIR": str(tmp_path)})
    stream_name, stream_arn = stream(c)
    map_stream(c, function, stream_arn, BatchSize=10)
    sent = [json.dumps({"symbol": "AAPL", "i": i}) for i in range(12)]
    put(c, stream_name, sent)
    got = delivered(tmp_path, 12)

    events = [parser.KinesisDataStreamModel.model_validate({"Records": call["records"]}) for call in got]
    records = [r for event in events for r in event.Records]
    assert [r.kinesis.data.decode() for r in records] == sent  # powertools decodes the base64 itself
    assert {r.eventSourceARN for r in records} == {stream_arn}
    assert all(r.kinesis.partitionKey == "AAPL" and r.eventName == "aws:kinesis:record" for r in records)


def test_dynamodb_stream_events_validate_against_powertools(
    c: SimpleNamespace, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    function = deploy(c, role_arn, fixture_zip, "record", {"OUT_DIR": str(tmp_path)})
    table = unique("conf")
    c.dynamodb.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST", **PROCESSED_KEY_SCHEMA,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )  # fmt: skip
    c.undo.append(lambda: c.dynamodb.delete_table(TableName=table))
    stream_arn = c.dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    map_stream(c, function, stream_arn, BatchSize=100, FunctionResponseTypes=["ReportBatchItemFailures"])
    key = {"symbol": {"S": "AAPL"}, "timestamp": {"S": "2026-07-29T13:30:00Z"}}
    c.dynamodb.put_item(TableName=table, Item={**key, "price": {"N": "195.5"}})
    c.dynamodb.put_item(TableName=table, Item={**key, "price": {"N": "196"}})
    c.dynamodb.delete_item(TableName=table, Key=key)
    got = delivered(tmp_path, 3)

    records = [
        r
        for call in got
        for r in parser.DynamoDBStreamModel.model_validate({"Records": call["records"]}).Records
    ]
    assert [str(getattr(r.eventName, "value", r.eventName)) for r in records] == [
        "INSERT",
        "MODIFY",
        "REMOVE",
    ]
    assert records[0].dynamodb.NewImage == {
        "symbol": "AAPL",
        "timestamp": "2026-07-29T13:30:00Z",
        "price": 195.5,
    }
    assert records[2].dynamodb.Keys == {"symbol": "AAPL", "timestamp": "2026-07-29T13:30:00Z"}
    views = {str(getattr(r.dynamodb.StreamViewType, "value", r.dynamodb.StreamViewType)) for r in records}
    assert views == {"NEW_IMAGE"} and {r.eventSourceARN for r in records} == {stream_arn}


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


class RequestContext(_Strict):
    requestId: str
    functionArn: str
    condition: Literal["RetryAttemptsExhausted", "RecordAgeExceeded", "MaximumPayloadSizeExceeded"]
    approximateInvokeCount: int


class ResponseContext(_Strict):
    statusCode: int
    executedVersion: str
    functionError: str


class KinesisBatchInfo(_Strict):
    shardId: str
    startSequenceNumber: str
    endSequenceNumber: str
    approximateArrivalOfFirstRecord: str
    approximateArrivalOfLastRecord: str
    batchSize: int
    streamArn: str


class KinesisOnFailure(_Strict):
    """AWS's documented on-failure record of a Kinesis event source mapping."""

    requestContext: RequestContext
    responseContext: ResponseContext
    version: Literal["1.0"]
    timestamp: str
    KinesisBatchInfo: KinesisBatchInfo


def test_the_on_failure_record_is_the_documented_payload(
    c: SimpleNamespace, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    function = deploy(c, role_arn, fixture_zip, "poison", {"OUT_DIR": str(tmp_path)})
    stream_name, stream_arn = stream(c)
    url, queue_arn = queue(c)
    map_stream(
        c, function, stream_arn, MaximumRetryAttempts=0, BisectBatchOnFunctionError=False,
        DestinationConfig={"OnFailure": {"Destination": queue_arn}},
    )  # fmt: skip
    sequence_numbers = put(c, stream_name, ["a", "poison"])
    [message] = failure_messages(c, url, 1)

    record = KinesisOnFailure.model_validate(message)
    assert record.requestContext.condition == "RetryAttemptsExhausted"
    assert record.responseContext.functionError == "Unhandled"
    info = record.KinesisBatchInfo
    assert (info.startSequenceNumber, info.endSequenceNumber, info.batchSize) == (
        sequence_numbers[0], sequence_numbers[-1], 2,
    )  # fmt: skip
    assert info.streamArn == stream_arn


def test_the_processors_partial_batch_response_validates_against_powertools(
    c: SimpleNamespace, role_arn: str, fixture_zip: bytes, tmp_path: Path, local_stack: Settings
) -> None:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse, PartialItemFailures

    from helpers.core import batch_plan

    function = deploy(c, role_arn, fixture_zip, "record", {"OUT_DIR": str(tmp_path)})
    stream_name, stream_arn = stream(c)
    map_stream(c, function, stream_arn, BatchSize=10)
    quotes = [{"symbol": "AAPL", "timestamp": f"2026-07-29T13:3{i}:00Z", "price": 1.0 + i} for i in range(4)]
    aggregate = batch_plan.aggregate(json.dumps(q).encode() for q in quotes[:3]).decode()
    sequence_numbers = put(c, stream_name, [aggregate, json.dumps(quotes[3])])
    [call] = delivered(tmp_path, 2)
    records = batch_plan.decode_event({"Records": call["records"]}, "2026-07-29T13:40:00Z")

    response = {"batchItemFailures": batch_plan.batch_item_failures(records, {1, 2, 3})}
    # powertools' TypedDicts (typing.TypedDict: pydantic validates those on Python 3.12+ only)
    assert set(response) == set(PartialItemFailureResponse.__annotations__)
    for failure in response["batchItemFailures"]:
        assert set(failure) == set(PartialItemFailures.__annotations__)
        assert isinstance(failure["itemIdentifier"], str)
    assert response == {"batchItemFailures": [{"itemIdentifier": s} for s in sequence_numbers]}
