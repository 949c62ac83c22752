"""The local Lambda runtime's event source mappings: Kinesis and DynamoDB Streams, through the AWS APIs.

Each test deploys the fixture zip, wires it to a fresh stream with an event source mapping, writes
records, and checks what the handler saw: order, event shape, starting positions, batching,
checkpoints after a disabled mapping, and a stream recreated under the same name.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from lambda_runtime_support import (
    calls,
    decoded,
    delivered,
    deploy,
    failure_messages,
    map_stream,
    mapping_health,
    put,
    queue,
    settled,
    stream,
    unique,
    wait_until,
)

from deploy.provision import PROCESSED_KEY_SCHEMA
from helpers.pipeline.config import Settings

pytestmark = pytest.mark.integration

# --- Kinesis ------------------------------------------------------------------------------------


def test_kinesis_records_arrive_in_order_with_the_aws_event_shape(
    c: SimpleNamespace, local_stack: Settings, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    function = deploy(c, role_arn, fixture_zip, "record", {"OUT_DIR": str(tmp_path), "MARKER": "kinesis-env"})
    stream_name, stream_arn = stream(c)
    mapping = map_stream(c, function, stream_arn, BatchSize=10)
    expected = [json.dumps({"symbol": "AAPL", "i": i}) for i in range(25)]
    sequence_numbers = [
        seq for start in range(0, 25, 5) for seq in put(c, stream_name, expected[start : start + 5])
    ]

    got = delivered(tmp_path, 25)

    assert [d for call in got for d in decoded(call)] == expected
    records = [r for call in got for r in call["records"]]
    assert [r["kinesis"]["sequenceNumber"] for r in records] == sequence_numbers
    assert all(1 <= len(call["records"]) <= 10 for call in got)
    first = records[0]
    assert set(first) == {
        "kinesis",
        "eventSource",
        "eventVersion",
        "eventID",
        "eventName",
        "invokeIdentityArn",
        "awsRegion",
        "eventSourceARN",
    }
    assert set(first["kinesis"]) == {
        "kinesisSchemaVersion",
        "partitionKey",
        "sequenceNumber",
        "data",
        "approximateArrivalTimestamp",
    }
    assert (first["eventSource"], first["eventName"], first["eventVersion"]) == (
        "aws:kinesis",
        "aws:kinesis:record",
        "1.0",
    )
    assert first["eventID"] == f"shardId-000000000000:{sequence_numbers[0]}"
    assert (first["eventSourceARN"], first["awsRegion"], first["invokeIdentityArn"]) == (
        stream_arn,
        local_stack.region,
        role_arn,
    )
    assert first["kinesis"]["partitionKey"] == "AAPL"
    assert abs(first["kinesis"]["approximateArrivalTimestamp"] - time.time()) < 60
    # one warm worker, the function's environment and a Lambda-like context
    call = got[0]
    assert len({x["pid"] for x in got}) == 1
    assert call["env"]["MARKER"] == "kinesis-env" and call["env"]["PYTHONPATH"] is None
    assert call["env"]["AWS_LAMBDA_FUNCTION_NAME"] == call["function_name"] == function
    assert call["env"]["AWS_REGION"] == call["env"]["AWS_DEFAULT_REGION"] == local_stack.region
    assert call["env"]["AWS_ENDPOINT_URL"] == local_stack.resolved_endpoint
    assert call["env"]["AWS_ACCESS_KEY_ID"] == "testing"
    assert call["memory"] == "128" and call["log_group"] == f"/aws/lambda/{function}"
    assert call["arn"].endswith(f":function:{function}") and 0 < call["remaining_ms"] <= 3000
    assert call["cwd"] == call["path0"] == call["env"]["LAMBDA_TASK_ROOT"]
    assert Path(call["cwd"]).is_relative_to(Path(local_stack.state_dir) / "lambda" / function)
    # the runtime's own account of it, and no redelivery on later polls
    health = settled(local_stack, mapping, 25)
    shard = health["shards"]["shardId-000000000000"]
    assert shard["checkpoint"] == int(sequence_numbers[-1]) and health["function_errors"] == 0
    polled = shard["last_poll"]
    shard_id = "shardId-000000000000"
    wait_until(
        lambda: mapping_health(local_stack, mapping)["shards"][shard_id]["last_poll"] > polled + 0.3,
        "more polls",
    )
    assert sum(len(x["records"]) for x in calls(tmp_path)) == 25


def test_latest_position_and_batching_window_gather_one_batch(
    c: SimpleNamespace, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    function = deploy(c, role_arn, fixture_zip, "record", {"OUT_DIR": str(tmp_path)})
    stream_name, stream_arn = stream(c)
    put(c, stream_name, ["before-the-mapping"] * 5)
    map_stream(
        c, function, stream_arn, StartingPosition="LATEST", BatchSize=100, MaximumBatchingWindowInSeconds=2
    )
    expected = [f"w{i}" for i in range(30)]
    for start in range(0, 30, 10):  # three writes spread over ~0.4 s, inside the 2 s window
        put(c, stream_name, expected[start : start + 10])
        time.sleep(0.2)

    got = delivered(tmp_path, 30)

    assert len(got) == 1
    assert decoded(got[0]) == expected


def test_at_timestamp_starts_at_the_first_record_after_the_timestamp(
    c: SimpleNamespace, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    function = deploy(c, role_arn, fixture_zip, "record", {"OUT_DIR": str(tmp_path)})
    stream_name, stream_arn = stream(c)
    put(c, stream_name, ["early-1", "early-2"])
    since = time.time()
    put(c, stream_name, ["late-1", "late-2"])

    map_stream(c, function, stream_arn, StartingPosition="AT_TIMESTAMP", StartingPositionTimestamp=since)

    assert [d for call in delivered(tmp_path, 2) for d in decoded(call)] == ["late-1", "late-2"]


def test_disabled_mapping_resumes_from_its_checkpoint_and_expires_old_records(
    c: SimpleNamespace, local_stack: Settings, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    function = deploy(c, role_arn, fixture_zip, "record", {"OUT_DIR": str(tmp_path)})
    stream_name, stream_arn = stream(c)
    url, queue_arn = queue(c)
    mapping = map_stream(
        c,
        function,
        stream_arn,
        Enabled=False,
        MaximumRecordAgeInSeconds=1,
        DestinationConfig={"OnFailure": {"Destination": queue_arn}},
    )
    old = put(c, stream_name, ["old-1", "old-2"])
    time.sleep(1.2)  # let them pass MaximumRecordAgeInSeconds while the mapping is disabled

    c.lam.update_event_source_mapping(UUID=mapping, Enabled=True)
    [message] = failure_messages(c, url, 1)
    put(c, stream_name, ["fresh"])
    delivered(tmp_path, 1)
    c.lam.update_event_source_mapping(UUID=mapping, Enabled=False)
    wait_until(
        lambda: mapping_health(local_stack, mapping).get("state") == "Disabled", "the mapping to pause"
    )
    put(c, stream_name, ["while-disabled"])
    c.lam.update_event_source_mapping(UUID=mapping, Enabled=True)
    got = delivered(tmp_path, 2)

    assert [decoded(x) for x in got] == [["fresh"], ["while-disabled"]]  # old-* never reached the function
    assert message["requestContext"]["condition"] == "RecordAgeExceeded"
    assert message["requestContext"]["approximateInvokeCount"] == 0 and "responseContext" not in message
    info = message["KinesisBatchInfo"]
    assert (info["batchSize"], info["startSequenceNumber"], info["endSequenceNumber"]) == (2, old[0], old[1])


def test_a_stream_recreated_under_the_same_name_is_read_from_its_start(
    c: SimpleNamespace, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    function = deploy(c, role_arn, fixture_zip, "record", {"OUT_DIR": str(tmp_path)})
    stream_name, stream_arn = stream(c)
    map_stream(c, function, stream_arn)
    put(c, stream_name, ["first-life-1", "first-life-2"])
    delivered(tmp_path, 2)

    c.kinesis.delete_stream(StreamName=stream_name)
    c.kinesis.create_stream(StreamName=stream_name, ShardCount=1)  # same ARN, sequence numbers restart
    put(c, stream_name, ["second-life"])

    assert [d for call in delivered(tmp_path, 3) for d in decoded(call)][-1] == "second-life"


# --- DynamoDB Streams ---------------------------------------------------------------------------


def test_dynamodb_stream_delivers_inserts_modifies_and_removes_with_new_images(
    c: SimpleNamespace, local_stack: Settings, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    function = deploy(c, role_arn, fixture_zip, "record", {"OUT_DIR": str(tmp_path)})
    table = unique("tbl")
    c.dynamodb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        **PROCESSED_KEY_SCHEMA,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )
    c.undo.append(lambda: c.dynamodb.delete_table(TableName=table))
    stream_arn = c.dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    map_stream(c, function, stream_arn, BatchSize=100, FunctionResponseTypes=["ReportBatchItemFailures"])
    key = {"symbol": {"S": "AAPL"}, "timestamp": {"S": "2026-07-29T13:30:00Z"}}
    c.dynamodb.put_item(TableName=table, Item={**key, "price": {"N": "195.5"}, "volume": {"N": "1200"}})
    c.dynamodb.put_item(TableName=table, Item={**key, "price": {"N": "196"}, "volume": {"N": "1300"}})
    other = {"symbol": {"S": "MSFT"}, "timestamp": {"S": "2026-07-29T13:30:00Z"}}
    c.dynamodb.put_item(TableName=table, Item={**other, "price": {"N": "410.25"}})
    c.dynamodb.delete_item(TableName=table, Key=other)

    records = [r for call in delivered(tmp_path, 4) for r in call["records"]]

    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "INSERT", "REMOVE"]
    assert records[0]["dynamodb"]["NewImage"] == {**key, "price": {"N": "195.5"}, "volume": {"N": "1200"}}
    assert records[1]["dynamodb"]["NewImage"]["price"] == {"N": "196"}
    assert records[0]["dynamodb"]["Keys"] == key and records[3]["dynamodb"]["Keys"] == other
    assert "NewImage" not in records[3]["dynamodb"]
    sequence = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert sequence == sorted(sequence) and len(set(sequence)) == 4
    for r in records:
        assert (r["eventSource"], r["eventVersion"], r["eventSourceARN"]) == (
            "aws:dynamodb",
            "1.1",
            stream_arn,
        )
        assert r["awsRegion"] == local_stack.region and r["dynamodb"]["StreamViewType"] == "NEW_IMAGE"
        assert isinstance(r["dynamodb"]["ApproximateCreationDateTime"], int)
